//! The admin API (`/admin/*`, admin keys only; see `auth::require_admin_key`): keys and
//! their usage, target health and the running config, and reload.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::live::Live;
use super::reload::Reloaded;
use super::time::{rfc3339, unix_of};
use crate::envelope::ErrorEnvelope;
use crate::error::GatewayError;
use crate::routing::health::TargetHealth;
use crate::state::UsageView;

/// `GET /admin/keys` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyList {
    /// Every gateway key, in config order (empty when none is configured).
    pub(crate) keys: Vec<KeyView>,
}

/// One gateway key: its name, never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyView {
    /// The key's name.
    pub(crate) name: String,
    /// Model names the key may use (`*` everything, `prefix*` a prefix).
    pub(crate) models: Vec<String>,
    /// The key's limits.
    pub(crate) limits: KeyLimits,
    /// Its usage now (with Redis: across every replica); null when the state backend cannot
    /// be read.
    pub(crate) usage: Option<UsageView>,
}

/// A key's limits; null means unlimited.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct KeyLimits {
    /// Requests per minute.
    pub(crate) rpm: Option<u64>,
    /// Tokens per minute.
    pub(crate) tpm: Option<u64>,
    /// Requests in flight at once.
    pub(crate) max_concurrent: Option<u64>,
    /// Spend allowed per budget window (USD).
    pub(crate) budget_usd: Option<f64>,
    /// `day`, `month` or `total` (calendar, UTC), with a budget.
    pub(crate) budget_window: Option<&'static str>,
}

impl From<&crate::config::KeyLimits> for KeyLimits {
    fn from(limits: &crate::config::KeyLimits) -> Self {
        KeyLimits {
            rpm: limits.rpm,
            tpm: limits.tpm,
            max_concurrent: limits.max_concurrent,
            budget_usd: limits.budget.map(|b| b.usd),
            budget_window: limits.budget.map(|b| b.window.as_str()),
        }
    }
}

/// `GET /admin/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// Every configured `provider/model` target and every other one the circuit breaker
    /// tracks, by name.
    pub(crate) targets: Vec<TargetStatus>,
    /// Where rate-limit and cache state lives.
    pub(crate) state_backend: StateBackend,
    /// The running config.
    pub(crate) config: ConfigStatus,
}

/// One target's circuit.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TargetStatus {
    /// `provider/model`.
    pub(crate) target: String,
    /// Whether requests skip it now (while another candidate is healthy).
    pub(crate) ejected: bool,
    /// Failures since its last success.
    pub(crate) consecutive_failures: u32,
    /// The end of its latest cool-down (RFC 3339), if it was ejected.
    pub(crate) cooldown_until: Option<String>,
}

/// The state backend.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StateBackend {
    /// `memory` or `redis`.
    pub(crate) backend: &'static str,
    /// Whether it answers (the memory backend always does).
    pub(crate) up: bool,
}

impl StateBackend {
    /// The backend `live` runs on, now.
    pub(crate) fn of(live: &Live) -> Self {
        StateBackend {
            backend: live.state.backend().as_str(),
            up: live.state.is_up(),
        }
    }
}

/// The running config.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigStatus {
    /// The config file; null for the embedded default.
    pub(crate) path: Option<String>,
    /// When it was loaded (RFC 3339).
    pub(crate) loaded_at: String,
    /// SHA-256 (hex) of the file's bytes; null for the embedded default.
    pub(crate) hash: Option<String>,
}

/// `GET /admin/keys`: every gateway key's models, limits and usage.
#[utoipa::path(get, path = "/admin/keys", tag = "admin", operation_id = "adminKeys",
    responses(
        (status = 200, description = "Gateway keys (names only) and their usage", body = KeyList),
        (status = 401, description = "No key", body = ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = ErrorEnvelope),
        (status = 404, description = "No admin keys are configured", body = ErrorEnvelope),
    ),
    security(("bearer" = [])))]
pub(crate) async fn keys(State(state): State<AppState>) -> Json<KeyList> {
    let live = state.live();
    let keys = live.auth.as_ref().map_or(&[][..], |a| &a.keys[..]);
    let asked: Vec<(&str, &crate::config::KeyLimits)> =
        keys.iter().map(|k| (k.name.as_str(), &k.limits)).collect();
    let usage = live.state.usage(&asked).await;
    let keys = keys
        .iter()
        .zip(usage)
        .map(|(key, usage)| KeyView {
            name: key.name.clone(),
            models: key.models.clone(),
            limits: KeyLimits::from(&key.limits),
            usage,
        })
        .collect();
    Json(KeyList { keys })
}

/// `GET /admin/status`: target health, the state backend and the running config.
#[utoipa::path(get, path = "/admin/status", tag = "admin", operation_id = "adminStatus",
    responses(
        (status = 200, description = "Target health, state backend, running config", body = Status),
        (status = 401, description = "No key", body = ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = ErrorEnvelope),
        (status = 404, description = "No admin keys are configured", body = ErrorEnvelope),
    ),
    security(("bearer" = [])))]
pub(crate) async fn status(State(state): State<AppState>) -> Json<Status> {
    let live = state.live();
    let loaded = &live.loaded;
    Json(Status {
        targets: targets(&live),
        state_backend: StateBackend::of(&live),
        config: ConfigStatus {
            path: loaded.path.as_ref().map(|p| p.display().to_string()),
            loaded_at: rfc3339(loaded.at),
            hash: loaded.hash.clone(),
        },
    })
}

/// The tracked targets, plus the configured ones the breaker does not track (healthy).
fn targets(live: &Live) -> Vec<TargetStatus> {
    let tracked = live.router.health.snapshot();
    let known: BTreeSet<&str> = tracked.iter().map(|t| t.target.as_str()).collect();
    let healthy: BTreeSet<String> = live
        .router
        .listed_models()
        .into_iter()
        .filter(|m| m.owned_by != "llmgate" && !known.contains(m.id.as_str()))
        .map(|m| m.id)
        .collect();
    let mut list: Vec<TargetStatus> = tracked
        .into_iter()
        .map(
            |TargetHealth {
                 target,
                 ejected,
                 consecutive_failures,
                 cooldown_until,
             }| {
                TargetStatus {
                    target,
                    ejected,
                    consecutive_failures,
                    cooldown_until: cooldown_until.map(|until| rfc3339(unix_of(until))),
                }
            },
        )
        .chain(healthy.into_iter().map(|target| TargetStatus {
            target,
            ejected: false,
            consecutive_failures: 0,
            cooldown_until: None,
        }))
        .collect();
    list.sort_by(|a, b| a.target.cmp(&b.target));
    list
}

/// `POST /admin/reload`: re-reads the config file; an invalid one changes nothing.
#[utoipa::path(post, path = "/admin/reload", tag = "admin", operation_id = "adminReload",
    responses(
        (status = 200, description = "The new config runs", body = Reloaded),
        (status = 400, description = "Refused (invalid file, or no file: the embedded default); the running config stays", body = ErrorEnvelope),
        (status = 401, description = "No key", body = ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = ErrorEnvelope),
        (status = 404, description = "No admin keys are configured", body = ErrorEnvelope),
    ),
    security(("bearer" = [])))]
pub(crate) async fn reload(State(state): State<AppState>) -> Result<Json<Reloaded>, GatewayError> {
    state.reload().await.map(Json)
}
