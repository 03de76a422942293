//! Errors at request time: [`GatewayError`] is what a client is told, [`ProviderError`] is
//! what went wrong upstream. The status of every error is decided in one `match`
//! ([`GatewayError::status`]); `crate::envelope` writes it in each dialect's shape.

use std::fmt;

use axum::http::StatusCode;

/// One step of a path into the request body: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathSegment {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Where in the request body a problem is, e.g. `messages[1].content`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub(crate) Vec<PathSegment>);

impl FieldPath {
    /// A path of one key.
    pub(crate) fn key(name: &str) -> Self {
        FieldPath(vec![PathSegment::Key(name.to_owned())])
    }

    /// This path extended by a key.
    pub(crate) fn field(&self, name: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(PathSegment::Key(name.to_owned()));
        FieldPath(segments)
    }

    /// This path extended by an index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(PathSegment::Index(index));
        FieldPath(segments)
    }

    /// Whether the path names the whole body.
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    /// OpenAI's spelling: `messages[1].content`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) if i == 0 => f.write_str(key)?,
                PathSegment::Key(key) => write!(f, ".{key}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What kind of problem a field has; each dialect names it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    /// A required field is absent.
    Missing,
    /// The value has the wrong JSON type.
    InvalidType,
    /// The value is of the right type but not allowed (range, enum, pattern, rule).
    InvalidValue,
    /// The body is not JSON at all.
    InvalidJson,
}

/// One problem with the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where.
    pub(crate) path: FieldPath,
    /// What, in a sentence that names the field.
    pub(crate) message: String,
    /// The kind of problem.
    pub(crate) kind: FieldErrorKind,
}

impl FieldError {
    /// An invalid value at `path`.
    pub(crate) fn invalid(path: FieldPath, message: impl Into<String>) -> Self {
        FieldError {
            path,
            message: message.into(),
            kind: FieldErrorKind::InvalidValue,
        }
    }

    /// A missing field at `path`.
    pub(crate) fn missing(path: FieldPath) -> Self {
        let message = format!("`{path}` is required");
        FieldError {
            path,
            message,
            kind: FieldErrorKind::Missing,
        }
    }
}

/// What went wrong talking to an upstream provider. Only routing and error mapping inspect it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The request could not be sent (DNS, connect, TLS, reset before a response).
    #[error("could not reach the upstream: {0}")]
    Connect(String),
    /// The attempt ran out of time.
    #[error("the upstream did not answer within {0} ms")]
    Timeout(u64),
    /// The upstream answered with a non-success status (or an error as its first stream event).
    #[error("the upstream answered {status}: {}", redact_secrets(message))]
    Status {
        /// HTTP status the upstream gave (or implied).
        status: u16,
        /// The upstream's error message.
        message: String,
        /// The upstream's error code, when it gave one.
        code: Option<String>,
        /// The upstream's `retry-after` header.
        retry_after: Option<String>,
    },
    /// The upstream sent something unreadable.
    #[error("the upstream sent an unreadable answer: {0}")]
    Decode(String),
    /// A stream broke after it started (reset, idle or total deadline).
    #[error("the upstream stream failed: {0}")]
    Stream(String),
}

impl ProviderError {
    /// Whether the error says the prompt did not fit the model's context window.
    pub(crate) fn is_context_overflow(&self) -> bool {
        let ProviderError::Status {
            status,
            message,
            code,
            ..
        } = self
        else {
            return false;
        };
        if code.as_deref() == Some("context_length_exceeded") {
            return true;
        }
        if !(400..500).contains(status) {
            return false;
        }
        let message = message.to_ascii_lowercase();
        [
            "context length",
            "context_length",
            "context window",
            "maximum context",
            "prompt is too long",
            "too many tokens",
        ]
        .iter()
        .any(|needle| message.contains(needle))
    }
}

/// Everything a request can fail with, as the client sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The body is not valid JSON or does not fit the schema.
    #[error("invalid request: {}", .0.first().map(|e| e.message.as_str()).unwrap_or("invalid body"))]
    InvalidRequest(Vec<FieldError>),
    /// The body is larger than `server.max_body_bytes`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body did not arrive in time (seconds allowed).
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// The body is not `application/json`.
    #[error("expected `Content-Type: application/json`, got {0}")]
    UnsupportedMediaType(String),
    /// No or an unknown gateway key.
    #[error("missing or invalid API key")]
    InvalidApiKey,
    /// The key may not use this model.
    #[error("this API key may not use model `{0}`")]
    ModelNotAllowed(String),
    /// No route for this model name.
    #[error(
        "the model `{0}` does not exist; send `<provider>/<model>` or an alias from the config"
    )]
    ModelNotFound(String),
    /// A `<provider>/<model>` name whose provider is not configured (404 `model_not_found`).
    #[error("{}", provider_not_configured(.provider, *.key_variable, .model))]
    ProviderNotConfigured {
        /// The name the client sent.
        model: String,
        /// The provider it names.
        provider: String,
        /// The environment variable that enables a provider of that name in the embedded
        /// default, if the name is a real provider kind.
        key_variable: Option<&'static str>,
    },
    /// The chosen provider cannot take a field of the request (or, with `strict_params`,
    /// would have to drop it).
    #[error("{message}")]
    Unsupported {
        /// The field's path.
        param: String,
        /// A sentence naming the provider and the field.
        message: String,
    },
    /// An upstream failed.
    #[error("provider `{provider}`: {error}")]
    Upstream {
        /// The configured provider name.
        provider: String,
        /// What happened.
        error: ProviderError,
    },
    /// No route for this path.
    #[error("no route for `{0}`")]
    NotFound(String),
    /// A known path with the wrong method.
    #[error("method not allowed on `{0}`")]
    MethodNotAllowed(String),
    /// A bug or an unexpected state; the detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
    /// `/admin/*` called with a key that is not an admin key.
    #[error("this API key may not use the admin API")]
    AdminKeyRequired,
    /// `/admin/reload` could not apply the config (the running one stays).
    #[error("reload refused, the running config stays: {0}")]
    ReloadFailed(String),
    /// Over one of the key's limits (429); nothing was sent upstream.
    #[error("{message}")]
    RateLimited {
        /// `rate_limit_requests`, `rate_limit_tokens`, `too_many_concurrent_requests` or
        /// `budget_exceeded`.
        code: &'static str,
        /// A sentence naming the limit.
        message: &'static str,
        /// Seconds to wait, when waiting helps.
        retry_after: Option<String>,
        /// The `x-ratelimit-*` headers.
        headers: Vec<(String, String)>,
    },
    /// The shared state backend cannot be reached and `on_error = "deny"` (503).
    #[error("the gateway's shared state (rate limits and budgets) is unavailable; retry shortly")]
    StateUnavailable,
}

impl GatewayError {
    /// The HTTP status for this error (OpenAI dialect; Nugen renders validation as 422).
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            GatewayError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::ProviderNotConfigured { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Upstream { error, .. } => upstream_status(error),
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::AdminKeyRequired => StatusCode::FORBIDDEN,
            GatewayError::ReloadFailed(_) => StatusCode::BAD_REQUEST,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable `code` of the error envelope.
    pub fn code(&self) -> String {
        let code = match self {
            GatewayError::InvalidRequest(errors) => match errors.first().map(|e| e.kind) {
                Some(FieldErrorKind::Missing) => "missing_required_parameter",
                Some(FieldErrorKind::InvalidType) => "invalid_type",
                Some(FieldErrorKind::InvalidJson) => "invalid_json",
                _ => "invalid_value",
            },
            GatewayError::BodyTooLarge { .. } => "request_too_large",
            GatewayError::RequestTimeout(_) => "request_timeout",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::InvalidApiKey => "invalid_api_key",
            GatewayError::ModelNotAllowed(_) => "model_not_allowed",
            GatewayError::ModelNotFound(_) | GatewayError::ProviderNotConfigured { .. } => {
                "model_not_found"
            }
            GatewayError::Unsupported { .. } => "unsupported_parameter",
            GatewayError::Upstream { error, .. } => return upstream_code(error),
            GatewayError::NotFound(_) => "not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::Internal(_) => "internal_error",
            GatewayError::AdminKeyRequired => "admin_key_required",
            GatewayError::ReloadFailed(_) => "reload_failed",
            GatewayError::RateLimited { code, .. } => code,
            GatewayError::StateUnavailable => "state_unavailable",
        };
        code.to_owned()
    }

    /// The envelope's `type`, following OpenAI's names.
    pub(crate) fn error_type(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The envelope's `param`: the first offending field, if any.
    pub(crate) fn param(&self) -> Option<String> {
        match self {
            GatewayError::InvalidRequest(errors) => errors
                .first()
                .filter(|e| !e.path.is_root())
                .map(|e| e.path.to_string()),
            GatewayError::ModelNotAllowed(_)
            | GatewayError::ModelNotFound(_)
            | GatewayError::ProviderNotConfigured { .. } => Some("model".to_owned()),
            GatewayError::Unsupported { param, .. } => Some(param.clone()),
            _ => None,
        }
    }

    /// The human-readable message. 5xx messages never carry internal detail.
    pub fn message(&self) -> String {
        match self {
            GatewayError::InvalidRequest(errors) => match errors.as_slice() {
                [] => "invalid request body".to_owned(),
                [one] => one.message.clone(),
                [first, rest @ ..] => format!(
                    "{} (and {} more problem{})",
                    first.message,
                    rest.len(),
                    if rest.len() == 1 { "" } else { "s" }
                ),
            },
            GatewayError::Upstream { provider, error } => upstream_message(provider, error),
            other => other.to_string(),
        }
    }

    /// The `retry-after` value to send, if any.
    pub(crate) fn retry_after(&self) -> Option<&str> {
        match self {
            GatewayError::Upstream {
                error: ProviderError::Status { retry_after, .. },
                ..
            } => retry_after.as_deref(),
            GatewayError::RateLimited { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }
}

/// How to configure a provider a client named: its key variable for a real provider kind's
/// name (the embedded default enables it), else its own table.
fn provider_not_configured(provider: &str, key_variable: Option<&str>, model: &str) -> String {
    match key_variable {
        Some(var) => format!(
            "provider `{provider}` is not configured: set {var} or add [providers.{provider}] (model `{model}`)"
        ),
        None => format!(
            "provider `{provider}` is not configured; add [providers.{provider}] (model `{model}`)"
        ),
    }
}

fn upstream_status(error: &ProviderError) -> StatusCode {
    if error.is_context_overflow() {
        return StatusCode::BAD_REQUEST;
    }
    match error {
        ProviderError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ProviderError::Status { status, .. } => match *status {
            401 | 403 => StatusCode::BAD_GATEWAY,
            400..=499 => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::BAD_GATEWAY,
        },
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn upstream_code(error: &ProviderError) -> String {
    if error.is_context_overflow() {
        return "context_length_exceeded".to_owned();
    }
    match error {
        ProviderError::Timeout(_) => "upstream_timeout".to_owned(),
        ProviderError::Status {
            status: 401 | 403, ..
        } => "upstream_auth_failed".to_owned(),
        ProviderError::Status {
            status: 429, code, ..
        } => code
            .clone()
            .unwrap_or_else(|| "rate_limit_exceeded".to_owned()),
        ProviderError::Status {
            status: 400..=499,
            code,
            ..
        } => code
            .clone()
            .unwrap_or_else(|| "upstream_rejected".to_owned()),
        _ => "upstream_error".to_owned(),
    }
}

fn upstream_message(provider: &str, error: &ProviderError) -> String {
    match error {
        // The upstream's text may quote the provider key it refused: none of it is passed on.
        ProviderError::Status {
            status: status @ (401 | 403),
            ..
        } => format!(
            "provider `{provider}` refused the gateway's credentials (status {status}); the operator must check its API key"
        ),
        ProviderError::Status {
            status: 400..=499,
            message,
            ..
        } => redact_secrets(message),
        ProviderError::Status {
            status, message, ..
        } => format!(
            "provider `{provider}` failed with status {status}: {}",
            redact_secrets(message)
        ),
        other => format!("provider `{provider}`: {other}"),
    }
}

/// What replaces a key-shaped word in upstream text.
const REDACTED: &str = "[redacted]";

/// `text` with every key-shaped word replaced: words with a known key prefix (`sk-`, `Bearer`
/// tokens ...) and long runs of key characters that mix letters and digits. Upstream error
/// messages can quote credentials (OpenAI's "Incorrect API key provided: sk-proj-…"); they
/// pass through here before any client or log line sees them.
fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_was_bearer = false;
    for (is_word, piece) in split_words(text) {
        if is_word && (previous_was_bearer || looks_like_secret(piece)) {
            out.push_str(REDACTED);
        } else {
            out.push_str(piece);
        }
        if is_word {
            previous_was_bearer = piece.eq_ignore_ascii_case("bearer");
        }
    }
    out
}

/// Characters a key can be made of.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.' | '+' | '/' | '=')
}

/// Splits `text` into alternating runs of key characters (words) and everything else.
fn split_words(text: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let is_word = is_key_char(first);
        let end = rest
            .find(|c: char| is_key_char(c) != is_word)
            .unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some((is_word, piece))
    })
}

fn looks_like_secret(word: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "sk-", "sk_", "pk-", "rk-", "key-", "xoxb-", "xoxp-", "AIza", "ghp_",
    ];
    let word = word.trim_end_matches('.');
    if PREFIXES.iter().any(|p| word.starts_with(p)) && word.len() > 8 {
        return true;
    }
    let has_digit = word.bytes().any(|b| b.is_ascii_digit());
    let has_letter = word.bytes().any(|b| b.is_ascii_alphabetic());
    word.len() >= 24 && has_digit && has_letter && !word.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, message: &str) -> ProviderError {
        ProviderError::Status {
            status,
            message: message.to_owned(),
            code: None,
            retry_after: None,
        }
    }

    fn upstream(error: ProviderError) -> GatewayError {
        GatewayError::Upstream {
            provider: "p".to_owned(),
            error,
        }
    }

    #[test]
    fn upstream_errors_map_per_contract() {
        assert_eq!(upstream(status(404, "no")).status(), StatusCode::NOT_FOUND);
        let auth = upstream(status(401, "bad key"));
        assert_eq!(auth.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(auth.code(), "upstream_auth_failed");
        assert_eq!(upstream(status(429, "slow")).status().as_u16(), 429);
        assert_eq!(upstream(status(503, "x")).status(), StatusCode::BAD_GATEWAY);
        assert!(upstream(status(503, "x")).message().contains("`p`"));
        let overflow = upstream(status(400, "This model's maximum context length is 8192"));
        assert_eq!(overflow.code(), "context_length_exceeded");
        assert_eq!(overflow.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            upstream(ProviderError::Timeout(5)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn upstream_credentials_never_reach_the_client_or_the_log() {
        let refused = upstream(status(
            401,
            "Incorrect API key provided: sk-proj-AbCd1234******************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
        ));
        assert!(
            !refused.message().contains("sk-proj"),
            "{}",
            refused.message()
        );
        assert!(!refused.message().contains("wxyz"));
        assert!(!refused.to_string().contains("sk-proj"), "{refused}");
        let quoted = upstream(status(
            400,
            "bad token Bearer abc.def.ghi for org-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        ));
        assert_eq!(
            quoted.message(),
            "bad token Bearer [redacted] for [redacted]"
        );
        let plain = "This model's maximum context length is 8192 tokens (gpt-4o-mini).";
        assert_eq!(redact_secrets(plain), plain);
    }

    #[test]
    fn paths_render_openai_style() {
        let path = FieldPath::key("messages").index(1).field("content");
        assert_eq!(path.to_string(), "messages[1].content");
    }
}
