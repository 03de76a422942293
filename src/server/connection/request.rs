//! A client's request head, read by `httparse` (hyper's own parser) into an `http::Request`
//! whose header values are slices of the bytes read (not copies), with its body's framing
//! and what it says about the connection.
//!
//! Framing follows RFC 9112 §6.3 strictly, since a request two readers could cut in two
//! different places is how requests are smuggled past a proxy: a transfer coding with a
//! length, two different lengths, or a coding whose last entry is not `chunked` are refused
//! (400), as is a coding other than `chunked` (501).

use std::mem::MaybeUninit;

use axum::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version, header};
use bytes::Bytes;

use crate::http1::{Framing, asks_to_close, content_length, last_token};

/// The most header fields in a request head (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;

/// Why a request is answered with an error before it reaches the routes; the connection
/// closes after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not HTTP/1.x, or framed ambiguously.
    BadRequest(&'static str),
    /// 431: a head over `server.max_header_bytes` or with more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// 501: a transfer coding other than `chunked`.
    NotImplemented(&'static str),
}

/// A request head read: the request (its body attached later), where its body ends, and what
/// it says about the connection.
#[derive(Debug)]
pub struct RequestHead {
    pub request: http::Request<()>,
    pub framing: Framing,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// Reads a complete request head (up to [`crate::http1::head_end`]).
pub fn parse_request(head: &Bytes) -> Result<RequestHead, Refusal> {
    // Left uninitialized: httparse writes the fields it finds (100 empty ones cost a 3.2 KB fill).
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut fields) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Refusal::BadRequest("the request head is incomplete"));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::BadRequest("the request head is not HTTP/1.x")),
    }
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::BadRequest("the method is not a token"))?;
    let target = parsed.path.unwrap_or_default();
    let uri = Uri::from_maybe_shared(head.slice_ref(target.as_bytes()))
        .map_err(|_| Refusal::BadRequest("the request target is not a URI"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Refusal::BadRequest("a header name is not a token"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
            .map_err(|_| Refusal::BadRequest("a header value holds a control character"))?;
        headers.append(name, value);
    }
    let framing = framing(&headers, version)?;
    let http11 = version == Version::HTTP_11;
    let keep_alive = http11 && !asks_to_close(&headers);
    let expects_continue = http11
        && headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(RequestHead {
        request,
        framing,
        keep_alive,
        expects_continue,
    })
}

/// Where the request's body ends (RFC 9112 §6.3): a final `chunked` coding, else one length,
/// else there is no body.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Refusal> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let value = content_length(value.as_bytes()).map_err(|m| Refusal::BadRequest(m.0))?;
        if length.is_some_and(|l| l != value) {
            return Err(Refusal::BadRequest("two different content lengths"));
        }
        length = Some(value);
    }
    let codings = headers.get_all(header::TRANSFER_ENCODING);
    let Some(last) = codings.iter().next_back() else {
        return Ok(Framing::Length(length.unwrap_or(0)));
    };
    if version != Version::HTTP_11 {
        return Err(Refusal::BadRequest(
            "a transfer coding in an HTTP/1.0 request",
        ));
    }
    if length.is_some() {
        return Err(Refusal::BadRequest(
            "both a content length and a transfer coding",
        ));
    }
    if !last_token(last.as_bytes()).is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return Err(Refusal::BadRequest(
            "the last transfer coding is not chunked",
        ));
    }
    let only_chunked = codings.iter().count() == 1 && !last.as_bytes().contains(&b',');
    if !only_chunked {
        return Err(Refusal::NotImplemented(
            "a transfer coding other than chunked",
        ));
    }
    Ok(Framing::Chunked)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Result<RequestHead, Refusal> {
        parse_request(&Bytes::copy_from_slice(text.as_bytes()))
    }

    fn framing_of(fields: &str) -> Result<Framing, Refusal> {
        parse(&format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{fields}\r\n"
        ))
        .map(|head| head.framing)
    }

    #[test]
    fn a_request_head_becomes_a_request() {
        let head = parse(
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Many: a\r\nx-many: b\r\ncontent-length: 12\r\n\r\n",
        )
        .unwrap();
        let request = &head.request;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), "/v1/chat/completions");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["content-type"], "application/json");
        let many: Vec<_> = request.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["a", "b"]);
        assert_eq!(head.framing, Framing::Length(12));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
    }

    #[test]
    fn the_connection_and_expect_fields_are_read() {
        let close = parse("GET / HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n").unwrap();
        assert!(!close.keep_alive);
        let old = parse("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").unwrap();
        assert!(
            !old.keep_alive,
            "HTTP/1.0 connections close after the answer"
        );
        let waits =
            parse("POST / HTTP/1.1\r\nexpect: 100-Continue\r\ncontent-length: 3\r\n\r\n").unwrap();
        assert!(waits.expects_continue);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(framing_of(""), Ok(Framing::Length(0)));
        assert_eq!(framing_of("content-length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(
            framing_of("content-length: 5\r\ncontent-length: 5\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing_of("transfer-encoding: Chunked\r\n"),
            Ok(Framing::Chunked)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = |fields: &str, why: &str| match framing_of(fields) {
            Err(Refusal::BadRequest(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("{fields:?}: {other:?}"),
        };
        bad(
            "content-length: 5\r\ncontent-length: 6\r\n",
            "two different",
        );
        bad("content-length: -1\r\n", "not a number");
        bad("content-length: 5, 5\r\n", "not a number");
        bad("content-length: 99999999999999999999\r\n", "64 bits");
        bad(
            "content-length: 5\r\ntransfer-encoding: chunked\r\n",
            "both a content length",
        );
        bad("transfer-encoding: chunked, gzip\r\n", "not chunked");
        bad(
            "transfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n",
            "not chunked",
        );
        assert_eq!(
            framing_of("transfer-encoding: gzip, chunked\r\n"),
            Err(Refusal::NotImplemented(
                "a transfer coding other than chunked"
            ))
        );
        assert!(matches!(
            parse("POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn heads_out_of_grammar_or_bounds_are_refused() {
        for text in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET  HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nx: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(text), Err(Refusal::BadRequest(_))),
                "{text:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: y\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            Refusal::HeadTooLarge
        );
    }

    proptest! {
        #[test]
        fn any_head_is_read_or_refused(text in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&Bytes::from(text));
        }

        #[test]
        fn header_values_are_the_bytes_sent(
            values in prop::collection::vec("[ -~]{0,20}", 1..8),
        ) {
            let fields: String = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("x-{i}: {v}\r\n"))
                .collect();
            let head = parse(&format!("GET / HTTP/1.1\r\n{fields}\r\n")).unwrap();
            for (i, value) in values.iter().enumerate() {
                prop_assert_eq!(
                    head.request.headers()[format!("x-{i}").as_str()].as_bytes(),
                    value.trim().as_bytes()
                );
            }
        }
    }
}
