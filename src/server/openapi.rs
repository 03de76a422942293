//! The OpenAPI 3.1 document: served at `/openapi.json`, printed by `llmgate openapi`, and
//! committed as `openapi/openapi.json` (a test keeps the three equal).

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The body of an error envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; names the field for invalid requests.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending field's path, e.g. `messages[1].content`.
    pub param: Option<String>,
    /// A machine-readable code, e.g. `model_not_found`.
    pub code: Option<String>,
}

/// Nugen's validation error.
#[derive(Serialize, ToSchema)]
pub struct NugenValidationError {
    /// One entry per problem.
    pub detail: Vec<ValidationItem>,
}

/// One validation problem in Nugen's shape.
#[derive(Serialize, ToSchema)]
pub struct ValidationItem {
    /// `["body", "messages", 0, "role"]`.
    #[schema(value_type = Vec<Object>)]
    pub loc: Vec<serde_json::Value>,
    /// What is wrong.
    pub msg: String,
    /// `missing`, `type_error`, `value_error` or `json_invalid`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `GET /v1/models` answer.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

/// A model clients can send.
#[derive(Serialize, ToSchema)]
pub struct Model {
    /// The name to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// `llmgate` for aliases, else the provider's name.
    pub owned_by: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "llmgate",
        description = "A self-hosted, OpenAI-compatible chat-completions gateway.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        super::openai::chat_completions,
        super::nugen::chat_completions,
        super::openai::list_models,
        super::health::healthz,
        super::health::readyz,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
