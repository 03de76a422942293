//! Parsing a request body: JSON into a [`ChatRequest`], with type errors reported by path.

use bytes::Bytes;

use super::request::ChatRequest;
use super::validate::validate;
use crate::error::{FieldError, FieldErrorKind, FieldPath, GatewayError, PathSegment};

/// Parses a JSON body into a request; on failure the error names the offending field.
///
/// The body is parsed once without path tracking (the common, valid case pays nothing for
/// it); only a body that fails is parsed again through `serde_path_to_error` to find where.
/// Its UTF-8 is checked once, up front, rather than string by string as they are read.
/// Boxed: the request is most of a kilobyte, and moving it from frame to frame cost more
/// than the box.
pub fn parse_request(body: &[u8]) -> Result<Box<ChatRequest>, GatewayError> {
    let parsed = simdutf8::basic::from_utf8(body).map(serde_json::from_str);
    match parsed {
        Ok(Ok(request)) => Ok(request),
        _ => Err(GatewayError::InvalidRequest(vec![locate_error(body)])),
    }
}

/// The first problem of a body that does not parse, with its path.
fn locate_error(body: &[u8]) -> FieldError {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, ChatRequest>(&mut deserializer) {
        Err(err) => field_error_from_serde(err),
        Ok(_) => match deserializer.end() {
            Err(err) => FieldError {
                path: FieldPath::default(),
                message: format!("the body is not valid JSON: {}", strip_location(&err)),
                kind: FieldErrorKind::InvalidJson,
            },
            // Unreachable in practice: both parses read the same bytes the same way.
            Ok(()) => FieldError {
                path: FieldPath::default(),
                message: "the body could not be read".to_owned(),
                kind: FieldErrorKind::InvalidJson,
            },
        },
    }
}

/// Parses and validates the body a client sent, and keeps the body with the request so it can
/// be forwarded as written (see `forward`).
pub fn parse_client_body(body: Bytes) -> Result<Box<ChatRequest>, GatewayError> {
    let mut request = parse_and_validate(&body)?;
    request.source = Some(body);
    Ok(request)
}

/// Parses and validates a body in one step.
pub fn parse_and_validate(body: &[u8]) -> Result<Box<ChatRequest>, GatewayError> {
    let request = parse_request(body)?;
    let errors = validate(&request);
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(GatewayError::InvalidRequest(errors))
    }
}

fn field_error_from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let mut path = FieldPath(
        err.path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect(),
    );
    let inner = err.into_inner();
    let text = friendly(&strip_location(&inner));
    if inner.is_syntax() || inner.is_eof() {
        return FieldError {
            path: FieldPath::default(),
            message: format!("the body is not valid JSON: {text}"),
            kind: FieldErrorKind::InvalidJson,
        };
    }
    if let Some(field) = missing_field_name(&text) {
        path = path.field(field);
        return FieldError::missing(path);
    }
    let kind = if text.starts_with("invalid type") {
        FieldErrorKind::InvalidType
    } else {
        FieldErrorKind::InvalidValue
    };
    let message = if path.is_root() {
        format!("the body must be a JSON object: {text}")
    } else {
        format!("`{path}`: {text}")
    };
    FieldError {
        path,
        message,
        kind,
    }
}

/// serde_json's message without its " at line L column C" suffix.
fn strip_location(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Replaces Rust type names in serde's messages with JSON words.
fn friendly(text: &str) -> String {
    text.replace("expected f64", "expected a number")
        .replace("expected u16", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected i64", "expected an integer")
        .replace("a sequence", "an array")
        .replace("a map", "an object")
}

fn missing_field_name(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("missing field `")?;
    rest.strip_suffix('`')
}
