//! The HTTP/1.1 wire format of an upstream call: the request's head written in one buffer, and the
//! answer's head read by `httparse` (hyper's own parser) into the few facts the gateway uses:
//! status, framing, whether the connection may carry another request, `retry-after`.
//!
//! The answer's head is bounded ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]); its framing follows
//! RFC 9112 §6.3, and whatever could make two readers disagree on where the body ends (two
//! different lengths, a length and a transfer coding) either is refused or closes the
//! connection after the answer.

use std::mem::MaybeUninit;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::Failure;
#[cfg(test)]
use crate::http1::head_end;
use crate::http1::{Framing, content_length, has_token, last_token, write_header};

/// The largest answer head.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in an answer head.
const MAX_HEADERS: usize = 100;
/// The longest `retry-after` value kept.
const MAX_RETRY_AFTER_BYTES: usize = 64;

/// Where an upstream is: scheme, host (IPv6 in brackets, as in a URI) and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin<'a> {
    pub(crate) tls: bool,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
}

impl<'a> Origin<'a> {
    /// The origin of an `http` or `https` URI.
    pub(crate) fn of(uri: &'a axum::http::Uri) -> Result<Self, Failure> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Failure::Address("the scheme is not http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(Failure::Address("no host"))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Origin { tls, host, port })
    }

    fn default_port(&self) -> bool {
        self.port == if self.tls { 443 } else { 80 }
    }
}

/// Where requests go, parsed once when a provider is set up rather than on every request:
/// the origin of an `http` or `https` URI, and its path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// The endpoint at `url`, an `http` or `https` URL.
    pub(crate) fn new(url: &str) -> Result<Self, Failure> {
        let uri = axum::http::Uri::try_from(url).map_err(|_| Failure::Address("not a URI"))?;
        let origin = Origin::of(&uri)?;
        Ok(Endpoint {
            tls: origin.tls,
            host: origin.host.to_owned(),
            port: origin.port,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    pub(crate) fn origin(&self) -> Origin<'_> {
        Origin {
            tls: self.tls,
            host: &self.host,
            port: self.port,
        }
    }
}

/// The parts of a request.
pub(crate) struct RequestParts<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) origin: Origin<'a>,
    /// The provider's headers, sent unless `extra` names the same header.
    pub(crate) fixed: &'a [(HeaderName, HeaderValue)],
    pub(crate) extra: &'a HeaderMap,
    /// The length of the body that follows the head.
    pub(crate) body_len: usize,
}

impl<'a> RequestParts<'a> {
    /// The parts of a request for `method endpoint` with `body_len` bytes of body.
    pub(crate) fn new(
        method: &'a Method,
        endpoint: &'a Endpoint,
        fixed: &'a [(HeaderName, HeaderValue)],
        extra: &'a HeaderMap,
        body_len: usize,
    ) -> Self {
        RequestParts {
            method,
            path: &endpoint.path,
            origin: endpoint.origin(),
            fixed,
            extra,
            body_len,
        }
    }

    /// Whether the request's own headers name `name`. They are the gateway's few (request id,
    /// trace context, a dialect's one or two): a scan costs less than hashing the name.
    fn adds(&self, name: &HeaderName) -> bool {
        self.extra.keys().any(|extra| extra == name)
    }

    /// Whether any header, fixed or the request's own, names `name`.
    fn sets(&self, name: &HeaderName) -> bool {
        self.adds(name) || self.fixed.iter().any(|(fixed, _)| fixed == name)
    }
}

/// Writes a request's head into `out`: request line, `host` (unless a header sets it), the
/// fixed and extra headers, `content-type` and `content-length` when there is a body.
pub(crate) fn write_head(out: &mut Vec<u8>, request: &RequestParts<'_>) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let set_host = request.sets(&header::HOST);
    if !set_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(request.origin.host.as_bytes());
        if !request.origin.default_port() {
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(request.origin.port).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in request.fixed {
        if !request.adds(name) {
            write_header(out, name, value);
        }
    }
    for (name, value) in request.extra {
        write_header(out, name, value);
    }
    if request.body_len > 0 {
        if !request.sets(&header::CONTENT_TYPE) {
            out.extend_from_slice(b"content-type: application/json\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(request.body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What the gateway reads from an answer's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: StatusCode,
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
    pub retry_after: Option<String>,
}

/// Reads a complete head (`buf` up to [`crate::http1::head_end`]); `None` for an informational (1xx)
/// answer, which precedes the real one.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    // Left uninitialized: httparse writes the fields it finds (100 empty ones cost a 3.2 KB fill).
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Failure::Malformed("an incomplete head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Failure::Malformed("more than 100 header fields"));
        }
        Err(_) => return Err(Failure::Malformed("the head is not HTTP/1.x")),
    }
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Failure::Malformed("the status code is out of range"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Failure::Malformed("the upstream switched protocols"));
    }
    if status.is_informational() {
        return Ok(None);
    }
    let http11 = response.version == Some(1);
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked = false;
    let mut close = !http11;
    let mut retry_after = None;
    for field in response.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = content_length(field.value)?;
            if length.is_some_and(|l| l != value) {
                return Err(Failure::Malformed("two different content lengths"));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(Failure::Malformed(
                    "a transfer coding in an HTTP/1.0 answer",
                ));
            }
            coded = true;
            // Only a final `chunked` delimits the body (RFC 9112 §6.3).
            chunked = last_token(field.value).is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(field.value, "close");
            if !http11 && has_token(field.value, "keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(field.value)
                .ok()
                .filter(|v| v.len() <= MAX_RETRY_AFTER_BYTES)
                .map(|v| v.trim().to_owned());
        }
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = match (bodiless, coded, chunked, length) {
        (true, ..) => Framing::Length(0),
        (false, true, true, _) => Framing::Chunked,
        (false, true, false, _) => Framing::UntilClose,
        (false, false, _, Some(length)) => Framing::Length(length),
        (false, false, _, None) => Framing::UntilClose,
    };
    // A length beside a transfer coding is a sign of smuggling: the connection is not reused.
    let keep_alive = !close && framing != Framing::UntilClose && !(coded && length.is_some());
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        retry_after,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Failure> {
        let bytes = text.as_bytes();
        assert_eq!(head_end(bytes, 0), Some(bytes.len()), "{text:?}");
        parse_head(bytes)
    }

    fn framing(text: &str) -> (Framing, bool) {
        let head = head(text).unwrap().unwrap();
        (head.framing, head.keep_alive)
    }

    /// The head `write_head` writes for these parts.
    fn written_head(
        method: Method,
        uri: &str,
        fixed: &[(HeaderName, HeaderValue)],
        extra: &HeaderMap,
        body_len: usize,
    ) -> String {
        let mut out = Vec::new();
        let endpoint = Endpoint::new(uri).unwrap();
        let parts = RequestParts::new(&method, &endpoint, fixed, extra, body_len);
        write_head(&mut out, &parts);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_carry_host_fixed_and_extra_headers_and_the_body() {
        let fixed = [
            (header::AUTHORIZATION, HeaderValue::from_static("Bearer k")),
            (
                HeaderName::from_static("x-team"),
                HeaderValue::from_static("a"),
            ),
        ];
        let mut extra = HeaderMap::new();
        extra.insert("x-team", HeaderValue::from_static("b"));
        assert_eq!(
            written_head(
                Method::POST,
                "http://127.0.0.1:9100/v1/chat/completions",
                &fixed,
                &extra,
                2
            ),
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:9100\r\n\
             authorization: Bearer k\r\nx-team: b\r\ncontent-type: application/json\r\n\
             content-length: 2\r\n\r\n"
        );
        // A default port is left out of `host`; a configured `host` replaces it; a GET
        // without a body has neither content type nor length.
        let fixed = [(header::HOST, HeaderValue::from_static("inside"))];
        assert_eq!(
            written_head(
                Method::GET,
                "https://[::1]/v1/models",
                &fixed,
                &HeaderMap::new(),
                0
            ),
            "GET /v1/models HTTP/1.1\r\nhost: inside\r\n\r\n"
        );
        assert_eq!(
            written_head(
                Method::GET,
                "https://api.example.com/v1?a=b",
                &[],
                &HeaderMap::new(),
                0
            ),
            "GET /v1?a=b HTTP/1.1\r\nhost: api.example.com\r\n\r\n"
        );
        let plain: axum::http::Uri = "http://[::1]/".parse().unwrap();
        let origin = Origin::of(&plain).unwrap();
        assert_eq!((origin.host, origin.port, origin.tls), ("[::1]", 80, false));
        let other: axum::http::Uri = "ftp://x/".parse().unwrap();
        assert!(Origin::of(&other).is_err());
        assert!(Endpoint::new("ftp://x/").is_err());
        assert!(Endpoint::new("http://").is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(
            framing(&format!("{ok}content-length: 12\r\n\r\n")),
            (Framing::Length(12), true)
        );
        assert_eq!(
            framing(&format!("{ok}Transfer-Encoding: gzip, chunked\r\n\r\n")),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing(&format!("{ok}transfer-encoding: chunked, gzip\r\n\r\n")),
            (Framing::UntilClose, false)
        );
        assert_eq!(framing(&format!("{ok}\r\n")), (Framing::UntilClose, false));
        assert_eq!(
            framing(&format!(
                "{ok}transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"
            )),
            (Framing::Chunked, false)
        );
        assert_eq!(
            framing(&format!(
                "{ok}content-length: 3\r\nconnection: Close\r\n\r\n"
            )),
            (Framing::Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n"),
            (Framing::Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n"),
            (Framing::Length(3), true)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Framing::Length(0), true)
        );
        assert_eq!(
            framing(&format!(
                "{ok}content-length: 5\r\ncontent-length: 5\r\n\r\n"
            )),
            (Framing::Length(5), true)
        );
    }

    #[test]
    fn ambiguous_or_foreign_heads_are_refused() {
        for (text, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                "two",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
                "64 bits",
            ),
            (
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                "HTTP/1.0",
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched"),
            ("HTTP/2 200\r\n\r\n", "not HTTP/1.x"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.x"),
        ] {
            match head(text) {
                Err(Failure::Malformed(message)) => assert!(message.contains(why), "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(head(&many), Err(Failure::Malformed(m)) if m.contains("100")));
    }

    #[test]
    fn informational_answers_are_skipped_and_retry_after_kept() {
        assert_eq!(
            head("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n").unwrap(),
            None
        );
        let head = head("HTTP/1.1 429 Too Many\r\nRetry-After:  7 \r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(head.retry_after.as_deref(), Some("7"));
    }

    proptest! {
        #[test]
        fn any_head_is_read_or_refused(text in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Some(end) = head_end(&text, 0) {
                let _ = parse_head(&text[..end]);
            }
        }
    }
}
