//! The one service every request passes first: its request id and the start of its
//! record (access log and metrics).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::http::{self, HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tower::Service;

use super::AppState;
use super::chat::{self, ChatRoute};
use crate::observe::record::{Finish, Observed};
use crate::telemetry::X_REQUEST_ID;

/// The longest client `x-request-id` kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the client's `x-request-id` when it is short and plain (letters, digits
/// and `-_.:`, since it reaches logs, upstreams and the response), else a new random 128-bit
/// hex id.
fn request_id_of(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        // Copied, not shared: the value is a slice of the request's head, which the id would
        // keep alive for as long as a stream runs.
        Some(value) if is_valid_request_id(value.as_bytes()) => {
            HeaderValue::from_bytes(value.as_bytes()).unwrap_or(HeaderValue::from_static("0"))
        }
        _ => {
            let mut id = String::with_capacity(32);
            crate::telemetry::push_hex(&mut id, fastrand::u128(..), 32);
            // Hex digits are always a valid header value.
            HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("0"))
        }
    }
}

fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What [`Front`] knows of a request, for the handlers: an argument to the chat routes, an
/// extension for the router's.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// The request id (plain text, see [`request_id_of`]).
    pub(crate) id: HeaderValue,
    /// When the gateway received the request (for `x-llmgate-overhead-ms`).
    pub(crate) start: Instant,
    /// The request's record.
    pub(crate) observed: Observed,
}

/// The service every connection calls: the router, behind the work every request gets first. It sets
/// the request's id (in the request's [`Arrival`], and on the response),
/// records the start time and starts the request's record, which writes its one access-log
/// line and its metrics when the response body ends or is dropped (see
/// [`crate::observe::record`]). The handlers fill the record through the arrival's
/// `observed`.
///
/// A plain service around the router rather than a router layer: a layer would box and
/// clone per request what this does once.
///
/// It also serves the chat routes itself ([`chat::serve`]), at less cost than the router,
/// which has every other request.
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) router: Router,
    pub(crate) state: AppState,
}

impl<B> Service<http::Request<B>> for Front
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let id = request_id_of(request.headers());
        let finish = Finish::start(
            id.clone(),
            request.method().clone(),
            request.uri().path().to_owned(),
            start,
        );
        let arrival = Arrival {
            id: id.clone(),
            start,
            observed: finish.observed(),
        };
        // The chat routes get the arrival as it is; the router's handlers, as an extension.
        // Each future is made inside the boxed one, not moved into it: these futures are
        // large, and a move is a copy.
        match ChatRoute::of(request.uri().path()) {
            Some(route) => {
                let state = self.state.clone();
                let request = request.map(axum::body::Body::new);
                Box::pin(async move {
                    let response = chat::serve(route, state, request, arrival).await;
                    Ok(finished(response, id, finish))
                })
            }
            None => {
                request.extensions_mut().insert(arrival);
                let routed = self.router.call(request);
                Box::pin(async move {
                    let Ok(response) = routed.await;
                    Ok(finished(response, id, finish))
                })
            }
        }
    }
}

/// The response with its request id (unless a handler set one), handed to its record.
fn finished(mut response: Response, id: HeaderValue, finish: Finish) -> Response {
    response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
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
