//! The Nugen dialect: `/api/v3/inference/chat/completions` takes the same canonical request
//! and answers the same normalized responses; only request validation errors differ, in
//! Nugen's 422 shape ([`NugenError`]).

use axum::response::Response;

use super::chat::{ChatCall, complete};
use super::extract::JsonBody;
use crate::envelope::{ErrorEnvelope, NugenError, NugenValidationError};
use crate::error::GatewayError;

/// `POST /api/v3/inference/chat/completions`.
#[utoipa::path(post, path = "/api/v3/inference/chat/completions", tag = "chat",
    operation_id = "createNugenChatCompletion",
    request_body = crate::schema::ChatRequest,
    responses(
        (status = 200, description = "Same as `/v1/chat/completions`",
            content(
                (crate::schema::ChatResponse = "application/json"),
                (crate::schema::ChatChunk = "text/event-stream"),
            )),
        (status = 422, description = "Validation error", body = NugenValidationError),
        (status = "4XX", description = "Other client errors", body = ErrorEnvelope),
        (status = "5XX", description = "Upstream errors", body = ErrorEnvelope),
    ),
    security((), ("bearer" = [])))]
pub(crate) async fn chat_completions(
    call: ChatCall,
    body: Result<JsonBody, GatewayError>,
) -> Result<Response, NugenError> {
    Ok(complete(call, body.map(|b| b.0)).await?)
}
