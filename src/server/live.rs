//! The reloadable part of the gateway: everything a config file decides, built completely
//! and checked before it is swapped in (see [`super::AppState::reload`]).
//!
//! A request takes an `Arc` of the [`Live`] config once, when it starts, and runs on it to
//! its end (a stream to its last event), whatever reloads happen meanwhile.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::ResponseCache;
use crate::config::{self, AuthConfig, Config, ServerConfig};
use crate::providers::Registry;
use crate::routing;
use crate::state::SharedState;
use crate::stream::normalize::unix_now;

/// Where the running config comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The config file; `None` runs on the embedded default, which cannot be reloaded.
    pub path: Option<PathBuf>,
    /// `--listen` / `LLMGATE_LISTEN`, applied over every file's `server.listen`.
    pub listen: Option<SocketAddr>,
}

/// Which config runs, for `/admin/status`.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// Unix seconds of the load.
    pub(crate) at: i64,
    /// SHA-256 (hex) of the file's bytes; `None` for the embedded default.
    pub(crate) hash: Option<String>,
    /// The file; `None` for the embedded default.
    pub(crate) path: Option<PathBuf>,
}

/// One generation of the config and what is built from it.
pub(crate) struct Live {
    /// Model name resolution and target health.
    pub(crate) router: routing::Router,
    /// The exact-match response cache.
    pub(crate) cache: ResponseCache,
    /// Gateway and admin keys, if any.
    pub(crate) auth: Option<AuthConfig>,
    /// Server settings.
    pub(crate) server: ServerConfig,
    /// Where spans are exported (fixed at start: the exporter is built once).
    pub(crate) telemetry: config::TelemetryConfig,
    /// Key limits' state and, with Redis, the response cache (one for the process's life:
    /// every config generation shares it).
    pub(crate) state: Arc<SharedState>,
    /// Which config this is.
    pub(crate) loaded: Loaded,
}

impl Live {
    /// Builds everything `config` needs on `state`; with `previous`, reuses its unchanged
    /// provider clients and circuit state.
    pub(crate) fn build(
        config: &Config,
        loaded: Loaded,
        previous: Option<&Live>,
        state: Arc<SharedState>,
    ) -> anyhow::Result<Live> {
        let old = previous.map(|p| (p.router.registry(), &p.server));
        let registry = Registry::build_reusing(&config.providers, &config.server, old)?;
        let router = match previous {
            Some(p) => routing::Router::reloaded(
                registry,
                config.models.clone(),
                &config.server,
                &p.router,
            ),
            None => routing::Router::new(registry, config.models.clone(), &config.server),
        };
        crate::observe::register(
            &super::key_names(config.auth.as_ref()),
            &router.model_labels(),
        );
        let names: Vec<String> = config
            .auth
            .iter()
            .flat_map(|a| &a.keys)
            .map(|k| k.name.clone())
            .collect();
        // Usage of keys that keep their name carries over; the others' is forgotten.
        state.retain(&names);
        crate::observe::state_backend_up(state.is_up());
        Ok(Live {
            router,
            cache: ResponseCache::new(
                config.server.cache_max_entries,
                config.server.cache_max_bytes,
            ),
            auth: config.auth.clone(),
            server: config.server.clone(),
            telemetry: config.telemetry.clone(),
            state,
            loaded,
        })
    }

    /// Whether completions need a gateway key.
    pub(crate) fn requires_key(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| !a.keys.is_empty())
    }

    /// The admin keys (empty: no admin API).
    pub(crate) fn admin_keys(&self) -> &[config::Secret] {
        self.auth.as_ref().map_or(&[], |a| &a.admin_keys)
    }
}

/// Reads the config `source` names (the embedded default without a file) and applies the
/// `--listen` override.
pub(crate) fn read(source: &ConfigSource) -> anyhow::Result<(Config, Loaded)> {
    let (mut config, hash) = match &source.path {
        Some(path) => {
            let (config, hash) = config::load_file_hashed(path)?;
            (config, Some(hash))
        }
        None => (Config::embedded_default(&config::ProcessEnv), None),
    };
    if let Some(listen) = source.listen {
        config.server.listen = listen;
    }
    let loaded = Loaded {
        at: unix_now(),
        hash,
        path: source.path.clone(),
    };
    Ok((config, loaded))
}
