//! The Nugen dialect: `/api/v3/inference/chat/completions` takes the same canonical request
//! and answers the same normalized responses; only request validation errors differ, in
//! Nugen's (FastAPI's) 422 shape: `{"detail":[{"loc":["body",...],"msg","type"}]}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::chat::{ChatCall, complete};
use super::extract::JsonBody;
use super::openai::error_response;
use crate::error::{FieldError, FieldErrorKind, GatewayError, PathSegment};

/// `POST /api/v3/inference/chat/completions`.
#[utoipa::path(post, path = "/api/v3/inference/chat/completions", tag = "chat",
    request_body = crate::schema::ChatRequest,
    responses(
        (status = 200, description = "Same as `/v1/chat/completions`",
            content(
                (crate::schema::ChatResponse = "application/json"),
                (crate::schema::ChatChunk = "text/event-stream"),
            )),
        (status = 422, description = "Validation error", body = super::openapi::NugenValidationError),
        (status = "4XX", description = "Other client errors", body = super::openapi::ErrorEnvelope),
        (status = "5XX", description = "Upstream errors", body = super::openapi::ErrorEnvelope),
    ),
    security((), ("bearer" = [])))]
pub async fn chat_completions(call: ChatCall, body: Result<JsonBody, GatewayError>) -> Response {
    let result = match body {
        Ok(JsonBody(bytes)) => complete(call, bytes).await,
        Err(error) => Err(error),
    };
    result.unwrap_or_else(|error| match &error {
        GatewayError::InvalidRequest(errors) => validation_response(errors),
        other => error_response(other),
    })
}

fn validation_response(errors: &[FieldError]) -> Response {
    let detail: Vec<Value> = errors.iter().map(detail_item).collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"detail": detail})),
    )
        .into_response()
}

fn detail_item(error: &FieldError) -> Value {
    let mut loc = vec![json!("body")];
    loc.extend(error.path.0.iter().map(|segment| match segment {
        PathSegment::Key(key) => json!(key),
        PathSegment::Index(index) => json!(index),
    }));
    let kind = match error.kind {
        FieldErrorKind::Missing => "missing",
        FieldErrorKind::InvalidType => "type_error",
        FieldErrorKind::InvalidValue => "value_error",
        FieldErrorKind::InvalidJson => "json_invalid",
    };
    json!({"loc": loc, "msg": error.message, "type": kind})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldPath;

    #[test]
    fn detail_locations_start_with_body() {
        let error = FieldError::missing(FieldPath::key("messages").index(0).field("role"));
        let item = detail_item(&error);
        assert_eq!(item["loc"], json!(["body", "messages", 0, "role"]));
        assert_eq!(item["type"], "missing");
    }
}
