//! The OpenAPI 3.1 document: served at `/openapi.json`, printed by `llmgate openapi`, and
//! committed as `openapi/openapi.json` (tests keep the three equal and validate it). It only
//! gathers handlers; their types are the ones they send.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        super::admin::keys,
        super::admin::status,
        super::admin::stats,
        super::admin::reload,
        super::metrics::serve,
    ),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// The document as pretty JSON with a trailing newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
