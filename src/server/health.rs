//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// `GET /healthz`: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The process is running")))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when taking traffic, 503 while draining on shutdown; the details
/// show the state backend (a Redis outage is served per `on_error`, so it stays 200).
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses((status = 200, description = "Ready"), (status = 503, description = "Draining")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let backend = super::admin::StateBackend::of(&state.live());
    let details = json!({"backend": backend.backend, "up": backend.up});
    if state.is_ready() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "state": details})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "state": details})),
        )
    }
}
