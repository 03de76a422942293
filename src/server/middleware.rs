//! Request ids and the start of each request's record (access log and metrics).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::observe::record::Finish;

/// Makes a random 128-bit hex request id when the client sent none.
#[derive(Clone, Copy, Default)]
pub(crate) struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", fastrand::u128(..));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The longest client `x-request-id` kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Drops a client `x-request-id` that is too long or has characters other than letters,
/// digits and `-_.:`, so a new id is made: the id reaches logs, upstreams and the response.
pub(crate) async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let valid = request
        .headers()
        .get(X_REQUEST_ID)
        .is_none_or(|value| is_valid_request_id(value.as_bytes()));
    if !valid {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    next.run(request).await
}

const X_REQUEST_ID: &str = "x-request-id";

fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// When the gateway received the request (for `x-llmgate-overhead-ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestStart(pub(crate) Instant);

/// The request id as text, from the extension `SetRequestIdLayer` put there.
pub(crate) fn request_id(request_id: Option<&RequestId>) -> String {
    request_id
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Records the start time and starts the request's record, which writes its one access-log
/// line and its metrics when the response body ends or is dropped (see
/// [`crate::observe::record`]). The handlers fill it through its `Observed` extension.
pub(crate) async fn observe(mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let finish = Finish::start(
        request_id(request.extensions().get::<RequestId>()),
        request.method().to_string(),
        request.uri().path().to_owned(),
        start,
    );
    request.extensions_mut().insert(RequestStart(start));
    request.extensions_mut().insert(finish.observed());
    let response = next.run(request).await;
    finish.respond(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(is_valid_request_id(b"req-123_abc.def:9"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"line\nbreak"));
        assert!(!is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
    }
}
