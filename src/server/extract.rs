//! The chat body, read: `Content-Type` must be JSON (415), the body must fit
//! `server.max_body_bytes` (413) and arrive within `server.body_read_timeout_secs` (408);
//! parsing and validation happen in the handler so each dialect can render the field errors
//! its own way.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::AppState;
use crate::error::{FieldError, FieldErrorKind, GatewayError};

/// The raw bytes of a JSON request body.
pub(crate) struct JsonBody(pub(crate) Bytes);

impl JsonBody {
    /// Checks the type, then reads the body within the size and time limits.
    pub(crate) async fn read(request: Request, state: &AppState) -> Result<Self, GatewayError> {
        match request.headers().get(header::CONTENT_TYPE) {
            Some(ct) if is_json(ct.as_bytes()) => {}
            Some(other) => {
                let shown = other.to_str().unwrap_or("(not text)");
                return Err(GatewayError::UnsupportedMediaType(format!("`{shown}`")));
            }
            None => {
                return Err(GatewayError::UnsupportedMediaType(
                    "no Content-Type".to_owned(),
                ));
            }
        }
        let server = &state.live().server;
        let (limit, deadline) = (server.max_body_bytes, server.connections.body_read_timeout);
        let body = Limited::new(request.into_body(), limit);
        let Ok(read) = tokio::time::timeout(deadline, body.collect()).await else {
            return Err(GatewayError::RequestTimeout(deadline.as_secs()));
        };
        match read {
            Ok(collected) => Ok(JsonBody(collected.to_bytes())),
            Err(error) if error.is::<LengthLimitError>() => {
                Err(GatewayError::BodyTooLarge { limit })
            }
            Err(error) => Err(GatewayError::InvalidRequest(vec![FieldError {
                path: Default::default(),
                message: format!("could not read the request body: {error}"),
                kind: FieldErrorKind::InvalidJson,
            }])),
        }
    }
}

/// `application/json` or `application/<anything>+json`, any parameters, any case.
fn is_json(content_type: &[u8]) -> bool {
    const TYPE: &[u8] = b"application/";
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let Some((kind, subtype)) = essence.split_at_checked(TYPE.len()) else {
        return false;
    };
    let ends_json = |suffix: &[u8]| {
        subtype.len() >= suffix.len()
            && subtype[subtype.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    kind.eq_ignore_ascii_case(TYPE)
        && (subtype.eq_ignore_ascii_case(b"json") || ends_json(b"+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(is_json(b" application/json ;"));
        assert!(is_json(b"application/vnd.api+json"));
        assert!(is_json(b"application/VND.API+JSON"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"text/json"));
        assert!(!is_json(b"application/"));
        assert!(!is_json(b"application/jsonx"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
    }
}
