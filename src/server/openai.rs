//! The OpenAI dialect: `/v1` handlers, and the 404 and 405 answers for unknown routes.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Authorized;
use super::chat::{ChatCall, complete};
use super::extract::JsonBody;
use crate::envelope::ErrorEnvelope;
use crate::error::GatewayError;

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat",
    operation_id = "createChatCompletion",
    request_body = crate::schema::ChatRequest,
    responses(
        (status = 200, description = "A completion, or with `stream: true` an event stream of `chat.completion.chunk` events ending with `data: [DONE]`",
            content(
                (crate::schema::ChatResponse = "application/json"),
                (crate::schema::ChatChunk = "text/event-stream"),
            )),
        (status = 400, description = "Invalid request", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "The key may not use this model", body = ErrorEnvelope),
        (status = 404, description = "Unknown model", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
        (status = 429, description = "Rate limited upstream", body = ErrorEnvelope),
        (status = 502, description = "Upstream failed", body = ErrorEnvelope),
        (status = 504, description = "Upstream timeout", body = ErrorEnvelope),
    ),
    security((), ("bearer" = [])))]
pub(crate) async fn chat_completions(
    call: ChatCall,
    body: Result<JsonBody, GatewayError>,
) -> Result<Response, GatewayError> {
    complete(call, body.map(|b| b.0)).await
}

/// `GET /v1/models` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    pub(crate) object: &'static str,
    /// The models.
    pub(crate) data: Vec<Model>,
}

/// A model clients can send.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Model {
    /// The name to send as `model`.
    pub(crate) id: String,
    /// Always `model`.
    pub(crate) object: &'static str,
    /// Unix seconds.
    pub(crate) created: i64,
    /// `llmgate` for aliases, else the provider's name.
    pub(crate) owned_by: String,
}

/// `GET /v1/models`: the names the caller's key may send.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    operation_id = "listModels",
    responses(
        (status = 200, description = "Model names clients can send", body = ModelList),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
    ),
    security((), ("bearer" = [])))]
pub(crate) async fn list_models(
    State(state): State<AppState>,
    Authorized { caller, live }: Authorized,
) -> Json<ModelList> {
    let discovery = state.discovery();
    let data = live
        .router
        .listed_models_with(&|provider| discovery.models(provider))
        .into_iter()
        .filter(|m| caller.allows(&live, &m.id))
        .map(|m| Model {
            id: m.id,
            object: "model",
            created: state.started(),
            owned_by: m.owned_by,
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

/// The longest path an error message repeats.
const MAX_PATH_IN_MESSAGE: usize = 256;

fn shown_path(uri: &Uri) -> String {
    let path = uri.path();
    match path.char_indices().nth(MAX_PATH_IN_MESSAGE) {
        Some((cut, _)) => format!("{}...", &path[..cut]),
        None => path.to_owned(),
    }
}

/// Unknown paths: 404.
pub(crate) async fn not_found(uri: Uri) -> GatewayError {
    GatewayError::NotFound(shown_path(&uri))
}

/// Known paths with the wrong method: 405.
pub(crate) async fn method_not_allowed(uri: Uri) -> GatewayError {
    GatewayError::MethodNotAllowed(shown_path(&uri))
}
