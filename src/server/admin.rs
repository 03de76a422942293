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
use crate::observe::window::{self, ModelStats};
use crate::routing::health::{Circuit, Health, TargetHealth};
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
    /// The gateway's version.
    pub(crate) version: &'static str,
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
    /// `closed` (healthy), `ejected` (cool-down running) or `half_open` (cool-down over: the
    /// next request probes it, or one does now).
    #[schema(example = "closed")]
    pub(crate) circuit: &'static str,
    /// Attempts that ended in the last 60 s (configured targets only; cancelled hedges and
    /// attempts the provider could not take are not counted).
    pub(crate) recent_attempts: u64,
    /// Of those, failures that are the target's own (the ones that count toward ejection).
    pub(crate) recent_errors: u64,
    /// `recent_errors / recent_attempts`; null without attempts.
    pub(crate) recent_error_rate: Option<f64>,
}

impl TargetStatus {
    /// A target's circuit (`None`: not tracked, so healthy) and recent counts.
    fn new(target: String, health: Option<&TargetHealth>, breaker: &Health) -> Self {
        let counts = breaker
            .recent(&target)
            .map(|w| w.counts(tokio::time::Instant::now()));
        let (attempts, errors) = counts.map_or((0, 0), |c| (c.total_requests(), c.total_errors()));
        TargetStatus {
            target,
            ejected: health.is_some_and(|h| h.ejected),
            consecutive_failures: health.map_or(0, |h| h.consecutive_failures),
            cooldown_until: (health.and_then(|h| h.cooldown_until))
                .map(|until| rfc3339(unix_of(until))),
            circuit: health.map_or(Circuit::Closed, |h| h.circuit).as_str(),
            recent_attempts: attempts,
            recent_errors: errors,
            recent_error_rate: window::rate(errors, attempts),
        }
    }
}

/// `GET /admin/stats` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Stats {
    /// Seconds each series covers (complete seconds before now).
    pub(crate) window_secs: u64,
    /// Seconds per point.
    pub(crate) bucket_secs: u64,
    /// Seconds up to each point that its latency percentiles cover.
    pub(crate) percentile_window_secs: u64,
    /// Every model label of the config (aliases, configured `provider/model`, `provider/*`
    /// of each provider, and `unknown`), by name.
    pub(crate) models: Vec<ModelStats>,
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
        version: env!("CARGO_PKG_VERSION"),
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
    let breaker = &live.router.health;
    let tracked = breaker.snapshot();
    let known: BTreeSet<&str> = tracked.iter().map(|t| t.target.as_str()).collect();
    let healthy: BTreeSet<String> = live
        .router
        .configured_targets()
        .into_iter()
        .filter(|t| !known.contains(t.as_str()))
        .collect();
    let mut list: Vec<TargetStatus> = tracked
        .into_iter()
        .map(|health| TargetStatus::new(health.target.clone(), Some(&health), breaker))
        .chain((healthy.into_iter()).map(|target| TargetStatus::new(target, None, breaker)))
        .collect();
    list.sort_by(|a, b| a.target.cmp(&b.target));
    list
}

/// `GET /admin/stats`: each model's requests, errors and latency percentiles over the last
/// minute, per second (for the status page's charts).
#[utoipa::path(get, path = "/admin/stats", tag = "admin", operation_id = "adminStats",
    responses(
        (status = 200, description = "Recent traffic per model", body = Stats),
        (status = 401, description = "No key", body = ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = ErrorEnvelope),
        (status = 404, description = "No admin keys are configured", body = ErrorEnvelope),
    ),
    security(("bearer" = [])))]
pub(crate) async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let live = state.live();
    let now = tokio::time::Instant::now();
    let models = (live.router.model_windows().into_iter())
        .map(|(model, window)| window.stats(model, now))
        .collect();
    Json(Stats {
        window_secs: window::SECONDS as u64,
        bucket_secs: 1,
        percentile_window_secs: window::SMOOTHING as u64,
        models,
    })
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
