//! How errors are written on the wire, by the types the OpenAPI document describes.
//!
//! - [`ErrorEnvelope`]: OpenAI's `{"error":{"message","type","param","code"}}`, for every error
//!   on `/v1`, every non-validation error on `/api/v3`, and a stream's error event.
//!   `GatewayError` is an axum response in this shape, so handlers return it with `?`.
//! - [`NugenError`]: the `/api/v3` wrapper: request validation errors become Nugen's (FastAPI's)
//!   422 [`NugenValidationError`], everything else the OpenAI envelope.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{FieldError, FieldErrorKind, GatewayError, PathSegment};

/// `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// The error.
    pub(crate) error: ErrorBody,
}

/// The body of an error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong; names the field for invalid requests.
    pub(crate) message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The offending field's path, e.g. `messages[1].content`; always present, may be null.
    #[schema(required = true)]
    pub(crate) param: Option<String>,
    /// A machine-readable code, e.g. `model_not_found`.
    pub(crate) code: String,
}

impl From<&GatewayError> for ErrorEnvelope {
    fn from(error: &GatewayError) -> Self {
        ErrorEnvelope {
            error: ErrorBody {
                message: error.message(),
                kind: error.error_type(),
                param: error.param(),
                code: error.code(),
            },
        }
    }
}

impl IntoResponse for GatewayError {
    /// The OpenAI envelope, with `retry-after` when the upstream sent one. 5xx errors are
    /// logged here, once; internal detail never reaches the body.
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            match &self {
                GatewayError::Internal(detail) => tracing::error!(%detail, "internal error"),
                GatewayError::StateUnavailable => {}
                other => tracing::warn!(error = %other, "upstream failure"),
            }
        }
        let mut response = (status, Json(ErrorEnvelope::from(&self))).into_response();
        if let Some(value) = self
            .retry_after()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let GatewayError::RateLimited { headers, .. } = &self {
            crate::state::limits::apply_pairs(headers, response.headers_mut());
        }
        response
    }
}

/// Nugen's validation error: `{"detail":[{"loc":["body",...],"msg","type"}]}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NugenValidationError {
    /// One entry per problem.
    pub(crate) detail: Vec<ValidationItem>,
}

/// One validation problem in Nugen's shape.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidationItem {
    /// Where: `["body", "messages", 0, "role"]`.
    pub(crate) loc: Vec<LocSegment>,
    /// What is wrong.
    pub(crate) msg: String,
    /// `missing`, `type_error`, `value_error` or `json_invalid`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
}

/// One step of a `loc`: an object key or an array index.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum LocSegment {
    /// An object key (`"body"` first).
    Key(String),
    /// An array index.
    Index(usize),
}

impl From<&FieldError> for ValidationItem {
    fn from(error: &FieldError) -> Self {
        let mut loc = vec![LocSegment::Key("body".to_owned())];
        loc.extend(error.path.0.iter().map(|segment| match segment {
            PathSegment::Key(key) => LocSegment::Key(key.clone()),
            PathSegment::Index(index) => LocSegment::Index(*index),
        }));
        let kind = match error.kind {
            FieldErrorKind::Missing => "missing",
            FieldErrorKind::InvalidType => "type_error",
            FieldErrorKind::InvalidValue => "value_error",
            FieldErrorKind::InvalidJson => "json_invalid",
        };
        ValidationItem {
            loc,
            msg: error.message.clone(),
            kind,
        }
    }
}

/// An error on the Nugen ingress path.
#[derive(Debug)]
pub(crate) struct NugenError(pub(crate) GatewayError);

impl From<GatewayError> for NugenError {
    fn from(error: GatewayError) -> Self {
        NugenError(error)
    }
}

impl IntoResponse for NugenError {
    fn into_response(self) -> Response {
        match self.0 {
            GatewayError::InvalidRequest(errors) => {
                let detail = errors.iter().map(ValidationItem::from).collect();
                let body = NugenValidationError { detail };
                (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
            }
            other => other.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldPath;

    #[test]
    fn nugen_locations_start_with_body() {
        let error = FieldError::missing(FieldPath::key("messages").index(0).field("role"));
        let item = serde_json::to_value(ValidationItem::from(&error)).unwrap();
        assert_eq!(
            item["loc"],
            serde_json::json!(["body", "messages", 0, "role"])
        );
        assert_eq!(item["type"], "missing");
    }

    #[test]
    fn the_envelope_has_every_field_even_when_null() {
        let value =
            serde_json::to_value(ErrorEnvelope::from(&GatewayError::InvalidApiKey)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": {"message": "missing or invalid API key",
                "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
        );
    }
}
