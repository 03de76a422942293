//! The upstream HTTP client: hyper-util's pooled client over rustls (HTTP/1.1, or HTTP/2 when
//! TLS negotiates it), with a provider's fixed headers (content type, key, extra headers)
//! built once. It is hyper's own client without a general-purpose client's layers: a request
//! costs no URL parsing, no redirect or proxy policy and no copying of default headers into a
//! second map.
//!
//! Its errors are hyper's, whose text names no URL; [`failure_kind`] describes one in words
//! fit for a client.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::ProviderConfig;

/// How long opening a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An upstream answer; its body is read as it arrives.
pub(crate) type Response = axum::http::Response<Incoming>;

/// A failure to send a request or to read its answer.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// A pooled client for one provider, which sends that provider's fixed headers on every
/// request.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pool: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Content type, `authorization` (marked sensitive) and the configured extra headers.
    fixed: HeaderMap,
}

impl Client {
    /// A client for the provider `config` describes: its key as a bearer token and its extra
    /// headers go on every request.
    pub(crate) fn for_provider(config: &ProviderConfig) -> anyhow::Result<Self> {
        let mut fixed = HeaderMap::new();
        fixed.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))?;
            value.set_sensitive(true);
            fixed.insert(header::AUTHORIZATION, value);
        }
        for (name, value) in &config.headers {
            fixed.insert(
                HeaderName::try_from(name.as_str())?,
                HeaderValue::try_from(value.as_str())?,
            );
        }
        Ok(Client {
            pool: pool()?,
            fixed,
        })
    }

    /// A request for `method uri` carrying the fixed headers and `body`; the caller may add
    /// headers before [`Client::send`]ing it.
    pub(crate) fn request(&self, method: Method, uri: &Uri, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = self.fixed.clone();
        request
    }

    /// Sends `request` on a pooled connection (or a new one).
    pub(crate) async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response, Error> {
        Ok(self.pool.request(request).await?)
    }
}

/// hyper-util's pool over a rustls connector (the platform's trust roots, ring).
fn pool()
-> anyhow::Result<hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // The TLS layer decides which schemes are taken.
    tcp.enforce_http(false);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(tls),
    )
}

/// The TLS settings every upstream client shares: ring, the platform's trust roots. Built
/// once (reading the roots takes milliseconds), not per provider and reload.
fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .try_with_platform_verifier()?
    .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| config).clone())
}

/// The length an answer announces, if any.
pub(crate) fn content_length(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads a whole body of at most `limit` bytes: `Ok(None)` when it is larger, known as soon
/// as it is announced or arrives (never buffered beyond `limit`).
pub(crate) async fn read_at_most(
    response: &mut Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let announced = content_length(response).unwrap_or(0);
    if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Ok(None);
    }
    // Room for what was announced, but no more than a typical answer until it arrives.
    let mut body = Vec::with_capacity(usize::try_from(announced.min(64 * 1024)).unwrap_or(0));
    while let Some(frame) = response.body_mut().frame().await {
        let Ok(piece) = frame?.into_data() else {
            continue; // trailers
        };
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
    let mut connect = false;
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
        if let Some(client) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= client.is_connect();
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return "timed out";
            }
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() {
                return "connection closed";
            }
        }
        source = cause.source();
    }
    if connect {
        "connection failed"
    } else {
        "request failed"
    }
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
