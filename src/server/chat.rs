//! The chat completion flow both ingress dialects share: parse and validate, check the key's
//! model list, route, call the provider, normalize, and answer as JSON or as an event stream.
//!
//! For a stream the first upstream chunk is awaited before `200` is committed, so a failure to
//! open, an error as the first event or an empty stream is a real status; after that a failure
//! is one error event (see [`crate::stream`]). Every completion response carries
//! `x-llmgate-provider`, `-model`, `-attempts` and `-overhead-ms`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower_http::request_id::RequestId;

use super::AppState;
use super::auth::Caller;
use super::middleware::{RequestStart, request_id};
use crate::error::{GatewayError, ProviderError};
use crate::providers::{CallCx, Prepared};
use crate::routing::Route;
use crate::schema::{ChatRequest, parse_and_validate};
use crate::stream::normalize::{ChunkNormalizer, normalize_response};
use crate::stream::{SseBody, StreamTiming};

/// Everything about one chat call besides its body.
pub struct ChatCall {
    /// Gateway state.
    pub state: AppState,
    /// The authenticated caller.
    pub caller: Caller,
    /// The client's `X-Session-ID`.
    pub session_id: Option<String>,
    /// The request id.
    pub request_id: String,
    /// When the gateway received the request.
    pub start: Instant,
}

impl FromRequestParts<AppState> for ChatCall {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let start = parts
            .extensions
            .get::<RequestStart>()
            .map_or_else(Instant::now, |s| s.0);
        let session_id = parts
            .headers
            .get("x-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(ChatCall {
            state: state.clone(),
            // The auth layer always inserts a caller on chat routes.
            caller: parts
                .extensions
                .get::<Caller>()
                .copied()
                .unwrap_or(Caller::NONE),
            session_id,
            request_id: request_id(parts.extensions.get::<RequestId>()),
            start,
        })
    }
}

/// Answers one chat completion request.
pub async fn complete(call: ChatCall, body: Bytes) -> Result<Response, GatewayError> {
    let request = parse_and_validate(&body)?;
    if !call.caller.allows(&call.state, &request.model) {
        return Err(GatewayError::ModelNotAllowed(request.model));
    }
    let route = call.state.router.resolve(&request.model)?;
    let cx = CallCx {
        upstream_model: route.upstream_model.clone(),
        session_id: call.session_id.clone(),
        request_id: call.request_id.clone(),
    };
    let prepared = prepare(&route, &request, &cx)?;
    let mut answer = if request.is_stream() {
        stream(&call, &route, &request, &prepared, &cx).await?
    } else {
        whole(&call, &route, &request, &prepared, &cx).await?
    };
    if !prepared.dropped.is_empty()
        && let Ok(value) = HeaderValue::from_str(&prepared.dropped.join(", "))
    {
        answer
            .headers_mut()
            .insert("x-llmgate-dropped-params", value);
    }
    Ok(answer)
}

/// Translates the request for the route's provider; with `strict_params`, a field the
/// provider would drop is a 400 instead.
fn prepare(route: &Route, request: &ChatRequest, cx: &CallCx) -> Result<Prepared, GatewayError> {
    let prepared =
        route
            .provider
            .adapter
            .prepare(request, cx)
            .map_err(|u| GatewayError::Unsupported {
                param: u.param,
                message: u.message,
            })?;
    if route.provider.config.strict_params && !prepared.dropped.is_empty() {
        return Err(GatewayError::Unsupported {
            param: prepared.dropped[0].clone(),
            message: format!(
                "provider `{}` does not accept {} (it has strict_params = true)",
                route.provider.name,
                prepared
                    .dropped
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(prepared)
}

fn upstream_error(route: &Route, error: ProviderError) -> GatewayError {
    GatewayError::Upstream {
        provider: route.provider.name.clone(),
        error,
    }
}

async fn whole(
    call: &ChatCall,
    route: &Route,
    request: &ChatRequest,
    prepared: &Prepared,
    cx: &CallCx,
) -> Result<Response, GatewayError> {
    let timeout = route.provider.config.timeout;
    let upstream_start = Instant::now();
    let mut response =
        tokio::time::timeout(timeout, route.provider.adapter.chat(request, prepared, cx))
            .await
            .unwrap_or(Err(ProviderError::Timeout(millis(timeout))))
            .map_err(|e| upstream_error(route, e))?;
    let upstream_time = upstream_start.elapsed();
    normalize_response(&mut response, &request.model);
    let body = serde_json::to_vec(&response).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let mut answer = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    gateway_headers(
        answer.headers_mut(),
        route,
        call.start.elapsed().saturating_sub(upstream_time),
    );
    Ok(answer)
}

async fn stream(
    call: &ChatCall,
    route: &Route,
    request: &ChatRequest,
    prepared: &Prepared,
    cx: &CallCx,
) -> Result<Response, GatewayError> {
    let settings = &call.state.server;
    let timeout = route.provider.config.timeout;
    let upstream_start = Instant::now();
    let deadline = upstream_start + timeout;
    let upstream = tokio::time::timeout_at(
        deadline,
        route.provider.adapter.chat_stream(request, prepared, cx),
    )
    .await
    .unwrap_or(Err(ProviderError::Timeout(millis(timeout))))
    .map_err(|e| upstream_error(route, e))?;
    let timing = StreamTiming {
        keepalive: settings.stream_keepalive,
        idle_timeout: settings.stream_idle_timeout,
        deadline,
        attempt_timeout_ms: millis(timeout),
    };
    let normalizer = ChunkNormalizer::new(&request.model, request.include_usage());
    let mut body = SseBody::new(upstream, normalizer, &route.provider.name, timing);
    body.open(settings.stream_keepalive).await?;
    let upstream_time = upstream_start.elapsed();
    let mut answer = Response::new(Body::from_stream(body));
    *answer.status_mut() = StatusCode::OK;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    gateway_headers(
        headers,
        route,
        call.start.elapsed().saturating_sub(upstream_time),
    );
    Ok(answer)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn gateway_headers(headers: &mut HeaderMap, route: &Route, overhead: Duration) {
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"));
    headers.insert("x-llmgate-provider", text(&route.provider.name));
    headers.insert("x-llmgate-model", text(&route.upstream_model));
    headers.insert("x-llmgate-attempts", HeaderValue::from(1u32));
    let overhead_ms = format!("{:.3}", overhead.as_secs_f64() * 1000.0);
    headers.insert("x-llmgate-overhead-ms", text(&overhead_ms));
}
