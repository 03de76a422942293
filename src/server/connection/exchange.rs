//! A client connection's requests and their answers, one after another, in the connection's
//! own task: the head read (bounded in size and time), the request handed to the routes with
//! its body (already read, or read from the socket as the routes ask), the answer's head
//! written in one buffer and its body's pieces as they come, several to a write when they
//! are ready together.
//!
//! While the routes work and while a streamed answer waits for its next piece, the socket is
//! watched: a client that closes its side has gone, and its request (with the upstream call)
//! is dropped. Nothing is buffered for a connection between its reads: an open stream holds
//! no read or write buffer.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Version, header};
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use tokio::sync::watch;
use tower::Service;

use super::incoming::{Incoming, Reading, Shared};
use super::request::{Refusal, RequestHead, parse_request};
use super::response::{Batch, Delimit, write_head};
use super::socket::Socket;
use crate::config::ConnectionLimits;
use crate::http1::{Framing, HeadBuffer, asks_to_close};
use crate::server::middleware::Front;

/// Serves requests on `socket` until the client closes, a limit or an error ends the
/// connection, or `closing` turns true between requests.
pub(super) async fn serve_requests(
    socket: Socket,
    mut app: Front,
    limits: &ConnectionLimits,
    closing: &mut watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let mut rest = Bytes::new();
    let unread = loop {
        let (head, after) = match next_head(&socket, rest, limits, closing).await {
            Next::Head(head, after) => (head, after),
            Next::Refused(refusal) => {
                let _ = refuse(&socket, refusal).await;
                break true;
            }
            Next::End => return,
        };
        match exchange(&socket, &mut app, head, after, limits, closing).await {
            After::Keep(next) => rest = next,
            After::Close { unread } => break unread,
        }
    };
    if unread && let Ok(socket) = Arc::try_unwrap(socket) {
        socket.linger().await;
    }
}

/// What waiting for a request's head gave (returned, never kept: not boxed).
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The head and the bytes read after it.
    Head(RequestHead, Bytes),
    /// A head that is answered with an error.
    Refused(Refusal),
    /// The client closed, took longer than the header read timeout, or the gateway is closing
    /// and no request had started.
    End,
}

/// Reads the next request's head, starting with `rest` (bytes read after the last request).
async fn next_head(
    socket: &Socket,
    rest: Bytes,
    limits: &ConnectionLimits,
    closing: &mut watch::Receiver<bool>,
) -> Next {
    let mut heads = HeadBuffer::default();
    let mut piece = rest;
    let deadline = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(deadline);
    loop {
        match heads.push(piece, limits.max_header_bytes) {
            Err(_) => return Next::Refused(Refusal::HeadTooLarge),
            Ok(Some((head, after))) => {
                return match parse_request(&head) {
                    Ok(head) => Next::Head(head, after),
                    Err(refusal) => Next::Refused(refusal),
                };
            }
            Ok(None) => {}
        }
        let idle = heads.is_empty();
        piece = tokio::select! {
            read = poll_fn(|cx| socket.poll_read_some(cx)) => match read {
                Ok(piece) if !piece.is_empty() => piece,
                _ => return Next::End,
            },
            () = &mut deadline => return Next::End,
            () = super::closed(closing), if idle => return Next::End,
        };
    }
}

/// How a request and its answer left the connection.
enum After {
    /// Ready for the next request, which starts with these bytes.
    Keep(Bytes),
    /// To be closed; `unread`: part of the request was not read.
    Close { unread: bool },
}

/// Answers one request.
async fn exchange(
    socket: &Arc<Socket>,
    app: &mut Front,
    head: RequestHead,
    after: Bytes,
    limits: &ConnectionLimits,
    closing: &watch::Receiver<bool>,
) -> After {
    let RequestHead {
        request,
        framing,
        keep_alive,
        expects_continue,
    } = head;
    let (body, rest, incoming) = request_body(socket, framing, after, expects_continue);
    let head_only = request.method() == Method::HEAD;
    let http11 = request.version() == Version::HTTP_11;
    let mut watch = Watch {
        socket,
        early: BytesMut::new(),
        max: limits.max_header_bytes,
        incoming: incoming.as_ref(),
    };
    let mut call = app.call(request.map(|()| body));
    let answered = poll_fn(|cx| {
        if let Poll::Ready(answer) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        watch.poll_gone(cx).map(|()| None)
    })
    .await;
    drop(call);
    let Some(Ok(response)) = answered else {
        return After::Close { unread: false };
    };
    let (parts, body) = response.into_parts();
    let delimit = delimit(parts.status, head_only, http11, body.size_hint().exact());
    let keep_alive = keep_alive
        && delimit != Delimit::Close
        && !asks_to_close(&parts.headers)
        && !*closing.borrow();
    let mut out = Vec::with_capacity(head_capacity(&parts.headers));
    write_head(&mut out, parts.status, &parts.headers, delimit, !keep_alive);
    // The answer's fields are dropped once its head is out, off the time to the first byte.
    let complete = match delimit {
        Delimit::Nothing(_) => socket.write_all(&[&out]).await.is_ok(),
        _ => write_body(socket, (out, parts), body, delimit, &mut watch).await,
    };
    // What came after the request's body, if it was read to its end.
    let rest = match &incoming {
        None => Some(rest),
        Some(shared) => Reading::rest_after_end(shared),
    };
    match (complete && keep_alive, rest) {
        (true, Some(rest)) => After::Keep(join(rest, watch.early)),
        (_, rest) => After::Close {
            unread: complete && rest.is_none(),
        },
    }
}

/// The request's body: the bytes at hand when it arrived with the head, else one read from the
/// socket as the routes ask for it. Also the bytes after the body, when it is at hand.
fn request_body(
    socket: &Arc<Socket>,
    framing: Framing,
    mut after: Bytes,
    expects_continue: bool,
) -> (Body, Bytes, Option<Shared>) {
    let at_hand = match framing {
        Framing::Length(length) => usize::try_from(length).ok().filter(|&l| l <= after.len()),
        _ => None,
    };
    match at_hand {
        Some(0) => (Body::empty(), after, None),
        Some(length) => {
            let rest = after.split_off(length);
            (Body::from(after), rest, None)
        }
        None => {
            let shared = Reading::new(framing, after, expects_continue);
            let body = Incoming {
                socket: socket.clone(),
                shared: shared.clone(),
            };
            (Body::new(body), Bytes::new(), Some(shared))
        }
    }
}

/// Watches a connection for its client going away while a request is answered.
struct Watch<'a> {
    socket: &'a Socket,
    /// What the client sent meanwhile: the start of its next request.
    early: BytesMut,
    max: usize,
    /// The request's body, while the routes read it from the socket.
    incoming: Option<&'a Shared>,
}

impl Watch<'_> {
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // While the routes read the request's body, what arrives is theirs.
        if self
            .incoming
            .is_some_and(|shared| !Reading::is_over(shared))
        {
            return Poll::Pending;
        }
        self.socket.poll_gone(cx, &mut self.early, self.max)
    }
}

/// Where the answer's body ends: nothing for `HEAD` and answers that have none, else its
/// exact length when known, else the chunked coding (or the connection's end for HTTP/1.0).
fn delimit(status: StatusCode, head_only: bool, http11: bool, exact: Option<u64>) -> Delimit {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Delimit::Nothing(None);
    }
    match (head_only, exact, http11) {
        (true, exact, _) => Delimit::Nothing(exact),
        (false, Some(length), _) => Delimit::Length(length),
        (false, None, true) => Delimit::Chunked,
        (false, None, false) => Delimit::Close,
    }
}

/// Room for a head with these fields (so it is written without growing).
fn head_capacity(headers: &HeaderMap) -> usize {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    fields + 128
}

/// Writes the answer's head and body; true when all of it went out. The head's fields
/// (`Parts`) are dropped once the head is out.
async fn write_body(
    socket: &Socket,
    head: (Vec<u8>, Parts),
    mut body: Body,
    delimit: Delimit,
    watch: &mut Watch<'_>,
) -> bool {
    let mut head = Some(head);
    let mut sent = 0u64;
    loop {
        let mut batch = Batch::default();
        if poll_fn(|cx| Poll::Ready(gather(&mut body, cx, &mut batch)))
            .await
            .is_err()
        {
            return false;
        }
        if batch.is_empty() && !batch.ended {
            // Nothing to send yet: the head goes out alone, then the body or the client's
            // going is awaited.
            if let Some((head, _fields)) = head.take()
                && socket.write_all(&[&head]).await.is_err()
            {
                return false;
            }
            let waited = poll_fn(|cx| {
                if gather(&mut body, cx, &mut batch).is_err() {
                    return Poll::Ready(false);
                }
                if !batch.is_empty() || batch.ended {
                    return Poll::Ready(true);
                }
                watch.poll_gone(cx).map(|()| false)
            })
            .await;
            if !waited {
                return false;
            }
        }
        sent = sent.saturating_add(batch.len_bytes());
        if let Delimit::Length(length) = delimit
            && (sent > length || (batch.ended && sent != length))
        {
            tracing::debug!("a response body's length differs from the one announced");
            return false;
        }
        let (head, _fields) = head
            .take()
            .map_or((Vec::new(), None), |(h, f)| (h, Some(f)));
        if socket
            .write_all(batch.slices(&head, delimit).as_slice())
            .await
            .is_err()
        {
            return false;
        }
        if batch.ended {
            return true;
        }
    }
}

/// The body failed: the answer cannot be completed.
struct BodyFailed;

/// Takes what the body has ready, up to a batch.
fn gather(body: &mut Body, cx: &mut Context<'_>, batch: &mut Batch) -> Result<(), BodyFailed> {
    // Empty frames take no room in the batch: the polls are bounded too.
    for _ in 0..4 * super::response::MAX_BATCH {
        if batch.is_full() || batch.ended {
            break;
        }
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => break,
            Poll::Ready(None) => batch.ended = true,
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers are not sent.
                if let Ok(data) = frame.into_data() {
                    batch.push(data);
                }
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!(%error, "a response body failed");
                return Err(BodyFailed);
            }
        }
    }
    Ok(())
}

/// `first` then `second`, copied only when both hold bytes.
fn join(first: Bytes, second: BytesMut) -> Bytes {
    match (first.is_empty(), second.is_empty()) {
        (_, true) => first,
        (true, false) => second.freeze(),
        (false, false) => {
            let mut joined = BytesMut::with_capacity(first.len() + second.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&second);
            joined.freeze()
        }
    }
}

/// Answers a refused head with the error's status and a JSON error, and closes.
async fn refuse(socket: &Socket, refusal: Refusal) -> std::io::Result<()> {
    let (status, code, message) = match refusal {
        Refusal::BadRequest(why) => (StatusCode::BAD_REQUEST, "bad_request", why),
        Refusal::HeadTooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            "the request head is larger than server.max_header_bytes or has more than 100 fields",
        ),
        Refusal::NotImplemented(why) => (StatusCode::NOT_IMPLEMENTED, "not_implemented", why),
    };
    let body = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": code,
    }})
    .to_string();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let mut out = Vec::with_capacity(256 + body.len());
    write_head(
        &mut out,
        status,
        &headers,
        Delimit::Length(body.len() as u64),
        true,
    );
    out.extend_from_slice(body.as_bytes());
    socket.write_all(&[&out]).await
}
