//! `GET /metrics`: Prometheus text format, no gateway key needed.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, key_names};
use crate::observe;
use crate::routing::health::Availability;

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    let live = state.live();
    let health = &live.router.health;
    let ejected: Vec<(String, bool)> = live
        .router
        .configured_targets()
        .into_iter()
        .map(|target| {
            let ejected = health.peek(&target) != Availability::Available;
            (target, ejected)
        })
        .collect();
    let discovered: Vec<(String, usize)> = (live.router.registry().iter())
        .filter(|p| p.config.discover_models)
        .map(|p| (p.name.clone(), state.discovery().models(&p.name).len()))
        .collect();
    let text = observe::render(&ejected, &key_names(live.auth.as_ref()), &discovered);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
