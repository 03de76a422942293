//! Live reload (`SIGHUP`, `POST /admin/reload`): the config file is read and everything is
//! built from it and checked before one atomic swap. Requests already running keep the
//! config they started with; unchanged provider clients, circuit state and key counters
//! carry over (see [`Live::build`]). Settings bound to the listener cannot change live: the
//! running values stay and the answer and the log name them.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::live::{self, Live};
use super::time::rfc3339;
use crate::config::Config;
use crate::error::GatewayError;

/// What a successful reload did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// The config file now running.
    pub path: String,
    /// SHA-256 (hex) of its bytes.
    pub config_hash: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// Settings the file changes that apply only after a restart (their running values
    /// stay), e.g. `server.listen`.
    pub restart_required: Vec<String>,
}

impl AppState {
    /// Re-reads the config file and swaps it in, or refuses it and changes nothing. Logs
    /// the outcome either way.
    pub async fn reload(&self) -> Result<Reloaded, GatewayError> {
        let _one_at_a_time = self.0.reloading.lock().await;
        let current = self.live();
        let source = self.0.source.clone();
        let built = tokio::task::spawn_blocking(move || build(&source, &current)).await;
        let result = match built {
            Ok(result) => result,
            Err(error) => Err(GatewayError::Internal(format!("reload task: {error}"))),
        };
        match result {
            Ok((new, restart_required)) => {
                let answer = Reloaded {
                    path: new
                        .loaded
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    config_hash: new.loaded.hash.clone().unwrap_or_default(),
                    loaded_at: rfc3339(new.loaded.at),
                    restart_required,
                };
                self.0.live.store(Arc::new(new));
                self.0.discovery.config_changed();
                tracing::info!(path = %answer.path, hash = %answer.config_hash,
                    restart_required = ?answer.restart_required, "config reloaded");
                reloaded(true);
                Ok(answer)
            }
            Err(error) => {
                tracing::error!(error = %error.message(), "config reload refused; the running config stays");
                reloaded(false);
                Err(error)
            }
        }
    }
}

/// Reads and builds the new config on top of `current`.
fn build(source: &live::ConfigSource, current: &Live) -> Result<(Live, Vec<String>), GatewayError> {
    if source.path.is_none() {
        return Err(GatewayError::ReloadFailed(
            "the gateway runs on the embedded default: there is no config file to re-read \
             (start it with --config or LLMGATE_CONFIG)"
                .to_owned(),
        ));
    }
    let failed = |error: anyhow::Error| GatewayError::ReloadFailed(format!("{error:#}"));
    let (mut config, loaded) = live::read(source).map_err(failed)?;
    let mut restart_required = keep_listener_settings(&mut config, current);
    if !current.state.same_config(&config.state) {
        restart_required
            .push("state (backend, url, key_prefix, on_error, timeout_ms, lease_ms)".to_owned());
    }
    let new = Live::build(&config, loaded, Some(current), current.state.clone()).map_err(failed)?;
    Ok((new, restart_required))
}

/// Puts back the running values of the settings bound to the listener, naming those the
/// new config changes.
fn keep_listener_settings(config: &mut Config, current: &Live) -> Vec<String> {
    let (new, running) = (&mut config.server, &current.server);
    let mut changed = Vec::new();
    if new.listen != running.listen {
        changed.push(format!(
            "server.listen ({} -> {}; still listening on {})",
            running.listen, new.listen, running.listen
        ));
        new.listen = running.listen;
    }
    if new.max_body_bytes != running.max_body_bytes {
        changed.push("server.max_body_bytes".to_owned());
        new.max_body_bytes = running.max_body_bytes;
    }
    if new.connections != running.connections {
        changed.push(
            "server connection limits (header/body read and write stall timeouts, \
             max_connections, max_header_bytes)"
                .to_owned(),
        );
        new.connections = running.connections.clone();
    }
    if config.telemetry.otlp_endpoint != current.telemetry.otlp_endpoint {
        changed.push("telemetry.otlp_endpoint".to_owned());
        config.telemetry = current.telemetry.clone();
    }
    changed
}

/// Every reload's outcome passes here: the one place to count reloads
/// (`llmgate_config_reloads_total{result}`).
fn reloaded(ok: bool) {
    crate::observe::config_reloaded(ok);
}
