//! The chat body extractor: `Content-Type` must be JSON (415), the body must fit
//! `server.max_body_bytes` (413) and arrive within `server.body_read_timeout_secs` (408); parsing and validation happen in the handler so each dialect
//! can render the field errors its own way.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

use super::AppState;
use crate::error::{FieldError, FieldErrorKind, GatewayError};

/// The raw bytes of a JSON request body.
pub(crate) struct JsonBody(pub(crate) Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, GatewayError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        match content_type.as_deref() {
            Some(ct) if is_json(ct) => {}
            Some(other) => return Err(GatewayError::UnsupportedMediaType(format!("`{other}`"))),
            None => {
                return Err(GatewayError::UnsupportedMediaType(
                    "no Content-Type".to_owned(),
                ));
            }
        }
        let server = &state.live().server;
        let (limit, deadline) = (server.max_body_bytes, server.connections.body_read_timeout);
        let read = tokio::time::timeout(deadline, Bytes::from_request(request, state)).await;
        let Ok(read) = read else {
            return Err(GatewayError::RequestTimeout(deadline.as_secs()));
        };
        match read {
            Ok(bytes) => Ok(JsonBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(GatewayError::BodyTooLarge { limit })
            }
            Err(rejection) => Err(GatewayError::InvalidRequest(vec![FieldError {
                path: Default::default(),
                message: format!("could not read the request body: {}", rejection.body_text()),
                kind: FieldErrorKind::InvalidJson,
            }])),
        }
    }
}

/// `application/json` or `application/<anything>+json`, any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
