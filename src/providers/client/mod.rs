//! The upstream HTTP client: HTTP/1.1 of the gateway's own over TCP or rustls, with a
//! provider's fixed headers (key, extra headers) built once and a pool of idle connections.
//!
//! It is written here rather than taken from hyper's client because an upstream call is the
//! gateway's hot path and hyper's client costs it a connection task, a dispatch channel
//! between the two tasks, and about 27 KB of buffers per connection held for as long as a
//! stream is open. Here the call runs in the request's own task: the request goes out in one
//! vectored write (its head built in one buffer, its body not copied), the answer's head is
//! read by `httparse` (hyper's parser), and its body is read as the caller asks for it, each
//! read landing on the stack. What it takes from an upstream is bounded ([`http1`],
//! [`crate::http1`]).
//!
//! Its errors name no URL; [`failure_kind`] describes one in words fit for a client.

mod conn;
mod http1;

pub(crate) use self::http1::Endpoint;
pub use self::http1::Head;
use crate::http1::HeadBuffer;
pub use crate::http1::{BodyReader, Framing, Step};

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_rustls::TlsConnector;

use self::conn::{Conn, Pool};
use self::http1::RequestParts;
use crate::config::ProviderConfig;

/// A failure to send a request or to read its answer.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong on an upstream connection, other than the socket's own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the upstream address cannot be used: {0}")]
    Address(&'static str),
    #[error("the connection was not open within the connect timeout")]
    ConnectTimeout,
    #[error("the upstream closed the connection before the answer was complete")]
    Closed,
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Malformed(&'static str),
}

impl From<crate::http1::Malformed> for Failure {
    fn from(malformed: crate::http1::Malformed) -> Self {
        Failure::Malformed(malformed.0)
    }
}

/// A pooled client for one provider, which sends that provider's fixed headers on every
/// request.
#[derive(Clone)]
pub(crate) struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    /// `authorization` (marked sensitive) and the configured extra headers.
    fixed: Vec<(HeaderName, HeaderValue)>,
    pool: Arc<Pool>,
    tls: TlsConnector,
}

impl std::fmt::Debug for Client {
    /// The fixed headers hold the provider's key: they are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A request to send: its method, endpoint, the headers it adds to the fixed ones, and its body.
pub(crate) struct Request {
    method: Method,
    endpoint: Arc<Endpoint>,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    /// The headers this request adds (or replaces) on top of the provider's fixed ones.
    pub(crate) fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
}

impl Client {
    /// A client for the provider `config` describes: its key as a bearer token and its extra
    /// headers go on every request.
    pub(crate) fn for_provider(config: &ProviderConfig) -> anyhow::Result<Self> {
        let mut fixed = Vec::with_capacity(config.headers.len() + 1);
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))?;
            value.set_sensitive(true);
            fixed.push((axum::http::header::AUTHORIZATION, value));
        }
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())?;
            fixed.retain(|(kept, _)| *kept != name);
            fixed.push((name, HeaderValue::try_from(value.as_str())?));
        }
        Ok(Client {
            shared: Arc::new(Shared {
                fixed,
                pool: Arc::default(),
                tls: TlsConnector::from(tls_config()?),
            }),
        })
    }

    /// A request for `method endpoint` with `body` (sent as JSON when not empty); the caller may
    /// add headers before [`Client::send`]ing it.
    pub(crate) fn request(&self, method: Method, endpoint: &Arc<Endpoint>, body: Bytes) -> Request {
        Request {
            method,
            endpoint: endpoint.clone(),
            headers: HeaderMap::new(),
            body,
        }
    }

    /// Sends `request` on an idle connection (or a new one) and reads the answer's head; the
    /// body is read as the caller asks for it.
    pub(crate) async fn send(&self, request: Request) -> Result<Response, Error> {
        let parts = RequestParts::new(
            &request.method,
            &request.endpoint,
            &self.shared.fixed,
            &request.headers,
            request.body.len(),
        );
        let mut head = Vec::with_capacity(512);
        http1::write_head(&mut head, &parts);
        let mut conn = match self.shared.pool.checkout(&parts.origin) {
            Some(conn) => conn,
            // Boxed: opening (TCP, TLS) is most of this future's size, and most requests
            // find a pooled connection.
            None => Box::pin(Conn::open(parts.origin, &self.shared.tls)).await?,
        };
        conn.write_request(&head, &request.body).await?;
        drop(head);
        let (head, rest) = read_head(&mut conn).await?;
        Ok(Response {
            status: head.status,
            retry_after: head.retry_after,
            body: Body {
                reader: BodyReader::new(head.framing, rest),
                source: Some(Source {
                    conn,
                    keep_alive: head.keep_alive,
                    pool: self.shared.pool.clone(),
                }),
            },
        })
    }
}

/// Reads an answer's head from the connection: the head, and the bytes after it.
async fn read_head(conn: &mut Conn) -> Result<(Head, Bytes), Error> {
    let mut reader = HeadReader::default();
    loop {
        let piece = conn.read_some().await?;
        if piece.is_empty() {
            return Err(Failure::Closed.into());
        }
        if let Some(read) = reader.push(piece)? {
            return Ok(read);
        }
    }
}

/// The most informational (1xx) answers skipped before the real one.
const MAX_INFORMATIONAL: usize = 8;

/// An answer's head read from the pieces that arrive, informational answers skipped (no
/// I/O: the caller reads).
#[derive(Debug, Default)]
pub struct HeadReader {
    buffer: HeadBuffer,
    informational: usize,
}

impl HeadReader {
    /// Takes the next piece: the head and the bytes after it once the head is complete. A
    /// head that comes whole in one piece is read from it, not copied.
    pub fn push(&mut self, piece: Bytes) -> Result<Option<(Head, Bytes)>, Failure> {
        let mut piece = piece;
        loop {
            let Some((head, rest)) = self
                .buffer
                .push(piece, http1::MAX_HEAD_BYTES)
                .map_err(|_| Failure::Malformed("the head is larger than 64 KB"))?
            else {
                return Ok(None);
            };
            match http1::parse_head(&head)? {
                Some(head) => return Ok(Some((head, rest))),
                None if self.informational < MAX_INFORMATIONAL => {
                    self.informational += 1;
                    piece = rest;
                }
                None => return Err(Failure::Malformed("too many informational answers")),
            }
        }
    }
}

/// An upstream answer: status, the headers the gateway reads, and the body, read as it
/// arrives.
pub(crate) struct Response {
    status: StatusCode,
    retry_after: Option<String>,
    body: Body,
}

impl Response {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The `retry-after` header (at most 64 bytes).
    pub(crate) fn retry_after(&self) -> Option<&str> {
        self.retry_after.as_deref()
    }

    /// The length the answer announces, if its body is delimited by one.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.body.reader.length_left()
    }

    pub(crate) fn into_body(self) -> Body {
        self.body
    }
}

/// An answer's body: a stream of the pieces read. Once it is read to its end, the
/// connection goes back to the pool (when the upstream keeps it open); a body dropped
/// before its end closes it.
pub(crate) struct Body {
    reader: BodyReader,
    /// The connection, until the body ends.
    source: Option<Source>,
}

/// The most bytes [`Body::drain_ready`] reads and drops to keep a connection.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

struct Source {
    conn: Conn,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl Body {
    /// The body is complete: its connection goes back to the pool if it may carry another
    /// request and nothing came after the answer.
    fn finish(&mut self) {
        if let Some(source) = self.source.take()
            && source.keep_alive
            && self.reader.take_rest().is_empty()
        {
            source.pool.checkin(source.conn);
        }
    }

    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            match self.reader.step() {
                Ok(Some(Step::Data(piece))) => return Poll::Ready(Some(Ok(piece))),
                Ok(Some(Step::Done)) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Some(Step::More) | None) => {}
                Err(malformed) => {
                    self.source = None;
                    return Poll::Ready(Some(Err(Failure::from(malformed).into())));
                }
            }
            let Some(source) = &mut self.source else {
                return Poll::Ready(None);
            };
            match std::task::ready!(source.conn.poll_read_some(cx)) {
                Ok(piece) if piece.is_empty() => {
                    self.source = None;
                    return if self.reader.ends_at_close() {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(Failure::Closed.into())))
                    };
                }
                Ok(piece) => self.reader.push(piece),
                Err(e) => {
                    self.source = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Reads what has already arrived of the rest of the body, without waiting and at most
    /// [`MAX_DRAIN_BYTES`], and drops it: a body whose end is there gives its connection back
    /// to the pool. For a caller that has what it needs (an event stream's `[DONE]`) before
    /// the body's end (the chunked coding's last chunk, usually in the same read).
    pub(crate) fn drain_ready(&mut self) {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut left = MAX_DRAIN_BYTES;
        while let Poll::Ready(Some(Ok(piece))) = self.poll_piece(&mut cx) {
            match left.checked_sub(piece.len()) {
                Some(rest) => left = rest,
                None => {
                    self.source = None;
                    return;
                }
            }
        }
    }
}

impl Stream for Body {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_piece(cx)
    }
}

/// The TLS settings every upstream client shares: ring, the platform's trust roots, HTTP/1.1
/// by ALPN. Built once (reading the roots takes milliseconds), not per provider and reload.
fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_platform_verifier::BuilderVerifierExt;
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_platform_verifier()?
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// Reads a whole body of at most `limit` bytes: `Ok(None)` when it is larger, known as soon
/// as it is announced or arrives (never buffered beyond `limit`).
pub(crate) async fn read_at_most(
    response: Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let announced = response.content_length().unwrap_or(0);
    if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Ok(None);
    }
    // Room for what was announced, but no more than a typical answer until it arrives.
    let mut body = Vec::with_capacity(usize::try_from(announced.min(64 * 1024)).unwrap_or(0));
    let mut pieces = response.into_body();
    while let Some(piece) = pieces.next().await {
        let piece = piece?;
        if body.len().saturating_add(piece.len()) > limit {
            return Ok(None);
        }
        body.extend_from_slice(&piece);
    }
    Ok(Some(body))
}

/// A transport failure's kind, in words that name no host or URL.
pub(crate) fn failure_kind(error: &(dyn std::error::Error + 'static)) -> &'static str {
    use std::io::ErrorKind;
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "connection reset",
                ErrorKind::TimedOut => "timed out",
                ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => "connection closed",
                _ => "connection failed",
            };
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return match failure {
                Failure::Address(_) => "connection failed",
                Failure::ConnectTimeout => "timed out",
                Failure::Closed => "connection closed",
                Failure::Malformed(_) => "invalid HTTP answer",
            };
        }
        source = cause.source();
    }
    "request failed"
}

/// An error with its whole cause chain (the top message alone says only "client error"),
/// for the log.
pub(crate) fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Reads `answer` handed over in the pieces `cuts` makes, as the client does: the head,
    /// the body, and whether the body ended before the input did.
    fn read(answer: &[u8], cuts: &[usize]) -> Result<(Head, Vec<u8>, bool), Failure> {
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(answer.len())).collect();
        bounds.sort_unstable();
        bounds.push(answer.len());
        let mut pieces = bounds
            .iter()
            .scan(0, |start, &end| {
                let piece = Bytes::copy_from_slice(&answer[*start..end]);
                *start = end;
                Some(piece)
            })
            .filter(|p| !p.is_empty());
        let mut heads = HeadReader::default();
        let (head, rest) = loop {
            let piece = pieces.next().ok_or(Failure::Closed)?;
            if let Some(read) = heads.push(piece)? {
                break read;
            }
        };
        let mut body = BodyReader::new(head.framing, rest);
        let mut data = Vec::new();
        loop {
            match body.step()? {
                Some(Step::Data(piece)) => data.extend_from_slice(&piece),
                Some(Step::Done) => return Ok((head, data, true)),
                Some(Step::More) | None => match pieces.next() {
                    Some(piece) => body.push(piece),
                    None if body.ends_at_close() => return Ok((head, data, false)),
                    None => return Err(Failure::Closed),
                },
            }
        }
    }

    #[test]
    fn a_head_is_bounded_however_it_arrives() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        answer.extend(b"x: y\r\n".repeat(http1::MAX_HEAD_BYTES / 6 + 1));
        let cuts: Vec<usize> = (1..answer.len()).step_by(97).collect();
        for cuts in [&[][..], &cuts] {
            assert_eq!(
                read(&answer, cuts).unwrap_err(),
                Failure::Malformed("the head is larger than 64 KB")
            );
        }
        let informational = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INFORMATIONAL + 1);
        assert_eq!(
            read(&informational, &[]).unwrap_err(),
            Failure::Malformed("too many informational answers")
        );
    }

    proptest! {
        #[test]
        fn an_answer_reads_the_same_however_it_is_cut(
            body in prop::collection::vec(any::<u8>(), 0..600),
            framing in 0u8..3,
            informational in 0usize..3,
            cuts in prop::collection::vec(0usize..900, 0..10),
        ) {
            let mut answer = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".repeat(informational);
            answer.extend_from_slice(b"HTTP/1.1 200 OK\r\nx-a: b\r\n");
            match framing {
                0 => {
                    answer.extend(format!("content-length: {}\r\n\r\n", body.len()).bytes());
                    answer.extend_from_slice(&body);
                }
                1 => {
                    answer.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    for piece in body.chunks(77) {
                        answer.extend(format!("{:x}\r\n", piece.len()).bytes());
                        answer.extend_from_slice(piece);
                        answer.extend_from_slice(b"\r\n");
                    }
                    answer.extend_from_slice(b"0\r\n\r\n");
                }
                _ => {
                    answer.extend_from_slice(b"\r\n");
                    answer.extend_from_slice(&body);
                }
            }
            let (head, data, ended) = read(&answer, &cuts).unwrap();
            prop_assert_eq!(head.status, StatusCode::OK);
            prop_assert_eq!(data, body);
            prop_assert_eq!(ended, framing != 2);
        }
    }
}
