//! The OpenAI dialect: `/v1` handlers and the error envelope every non-validation error uses,
//! on both ingress paths.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::chat::{ChatCall, complete};
use super::extract::JsonBody;
use crate::error::GatewayError;

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat",
    request_body = crate::schema::ChatRequest,
    responses(
        (status = 200, description = "A completion, or with `stream: true` an event stream of `chat.completion.chunk` events ending with `data: [DONE]`",
            content(
                (crate::schema::ChatResponse = "application/json"),
                (crate::schema::ChatChunk = "text/event-stream"),
            )),
        (status = 400, description = "Invalid request", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "The key may not use this model", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "Body too large", body = super::openapi::ErrorEnvelope),
        (status = 415, description = "Not JSON", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "Rate limited upstream", body = super::openapi::ErrorEnvelope),
        (status = 502, description = "Upstream failed", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "No healthy upstream", body = super::openapi::ErrorEnvelope),
        (status = 504, description = "Upstream timeout", body = super::openapi::ErrorEnvelope),
    ),
    security((), ("bearer" = [])))]
pub async fn chat_completions(call: ChatCall, body: Result<JsonBody, GatewayError>) -> Response {
    let result = match body {
        Ok(JsonBody(bytes)) => complete(call, bytes).await,
        Err(error) => Err(error),
    };
    result.unwrap_or_else(|error| error_response(&error))
}

/// `GET /v1/models`: the aliases and the `provider/model` names they use.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "Model names clients can send", body = super::openapi::ModelList)),
    security((), ("bearer" = [])))]
pub async fn list_models(
    State(state): State<AppState>,
    caller: axum::Extension<Caller>,
) -> Json<Value> {
    let data: Vec<Value> = state
        .router
        .listed_models()
        .into_iter()
        .filter(|m| caller.allows(&state, &m.id))
        .map(|m| json!({"id": m.id, "object": "model", "created": state.started, "owned_by": m.owned_by}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// Unknown paths: 404 in the envelope.
pub async fn not_found(uri: Uri) -> Response {
    let error = json!({"error": {"message": format!("no route for `{}`", uri.path()),
        "type": "invalid_request_error", "param": null, "code": "not_found"}});
    (axum::http::StatusCode::NOT_FOUND, Json(error)).into_response()
}

/// Known paths with the wrong method: 405 in the envelope.
pub async fn method_not_allowed(uri: Uri) -> Response {
    let error = json!({"error": {"message": format!("method not allowed on `{}`", uri.path()),
        "type": "invalid_request_error", "param": null, "code": "method_not_allowed"}});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(error)).into_response()
}

/// Renders an error in the OpenAI envelope, with `retry-after` when the upstream sent one.
/// 5xx errors are logged here, once; internal detail never reaches the body.
pub fn error_response(error: &GatewayError) -> Response {
    let status = error.status();
    if status.is_server_error() {
        match error {
            GatewayError::Internal(detail) => tracing::error!(%detail, "internal error"),
            other => tracing::warn!(error = %other, "upstream failure"),
        }
    }
    let mut response = (status, Json(error.envelope())).into_response();
    if let Some(value) = error
        .retry_after()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl IntoResponse for GatewayError {
    /// The OpenAI envelope (the Nugen handler renders its own validation shape first).
    fn into_response(self) -> Response {
        error_response(&self)
    }
}
