//! Request ids and the access log.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes a random 128-bit hex request id when the client sent none.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", fastrand::u128(..));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// When the gateway received the request (for `x-llmgate-overhead-ms`).
#[derive(Debug, Clone, Copy)]
pub struct RequestStart(pub Instant);

/// The request id as text, from the extension `SetRequestIdLayer` put there.
pub fn request_id(request_id: Option<&RequestId>) -> String {
    request_id
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Records the start time and logs one line per request (never headers or bodies, so keys
/// and prompts stay out of logs).
pub async fn access_log(mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    request.extensions_mut().insert(RequestStart(start));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let id = request_id(request.extensions().get::<RequestId>());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    let provider = response
        .headers()
        .get("x-llmgate-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info!(target: "llmgate::access", %method, %path, status, elapsed_ms, request_id = %id, provider, "request");
    response
}
