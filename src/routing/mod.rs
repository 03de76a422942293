//! Routing: which providers and upstream models answer a request, and in what order.
//!
//! - [`plan`]: model name and per-request policy -> an ordered [`plan::Plan`] (aliases,
//!   weights, stickiness, fallbacks, ejected targets left out while a healthy one remains).
//! - [`retry`]: the one place that decides what is retryable, and the backoff.
//! - [`health`]: circuit breaking per target.
//! - [`execute`]: runs a plan: attempts, retries, fallbacks, timeouts, hedging.
//! - [`variables`]: orq's `{{name}}` substitution, before routing.

pub(crate) mod execute;
pub(crate) mod health;
pub(crate) mod plan;
pub(crate) mod retry;
pub(crate) mod variables;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::NameMap;
use crate::config::{ModelConfig, ServerConfig};
use crate::observe::window::{LATENCY_BINS, ModelWindow, Recent};
use crate::providers::Registry;
use health::Health;

/// Resolves model names against the configured providers and aliases, and remembers the
/// health of every target.
pub(crate) struct Router {
    registry: Registry,
    aliases: BTreeMap<String, ModelConfig>,
    /// `[server] max_retry_wait_ms`.
    max_retry_wait: Duration,
    /// Circuit breakers, by `provider/model`.
    pub(crate) health: Health,
    /// Metric label of each configured name (alias or listed `provider/model`), and
    /// `provider/*` by provider name.
    labels: NameMap<String, Arc<str>>,
    wildcards: NameMap<String, Arc<str>>,
    /// Recent requests and latencies of each model label (carried over by name on reload).
    recent: Recent<LATENCY_BINS>,
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedModel {
    /// The name a client sends.
    pub(crate) id: String,
    /// `llmgate` for aliases, else the provider's name.
    pub(crate) owned_by: String,
}

impl Router {
    /// A router over `registry` and the configured aliases.
    pub(crate) fn new(
        registry: Registry,
        aliases: BTreeMap<String, ModelConfig>,
        server: &ServerConfig,
    ) -> Self {
        let health = Health::new(server.circuit_failures, server.circuit_cooldown);
        Self::build(registry, aliases, server, health, None)
    }

    /// The router over `health`, with recent windows for every label and configured target
    /// (reusing `previous`'s by name).
    fn build(
        registry: Registry,
        aliases: BTreeMap<String, ModelConfig>,
        server: &ServerConfig,
        health: Health,
        previous: Option<&Router>,
    ) -> Self {
        let mut router = Router {
            registry,
            aliases,
            max_retry_wait: server.max_retry_wait,
            health,
            labels: NameMap::default(),
            wildcards: NameMap::default(),
            recent: Recent::default(),
        };
        router.labels = (router.listed_models().into_iter())
            .map(|m| (m.id.clone(), Arc::from(m.id)))
            .collect();
        router.wildcards = (router.registry.iter())
            .map(|p| (p.name.clone(), Arc::from(format!("{}/*", p.name))))
            .collect();
        let mut labels: Vec<&str> = (router.labels.values().chain(router.wildcards.values()))
            .map(|l| &**l)
            .collect();
        labels.sort_unstable();
        labels.push(crate::observe::UNKNOWN);
        router.recent = Recent::new(labels, previous.map(|p| &p.recent));
        let targets = router.configured_targets();
        (router.health).set_windows(
            targets.iter().map(String::as_str),
            previous.map(|p| &p.health),
        );
        router
    }

    /// The recent window of a model label (see [`Router::model_label`]).
    pub(crate) fn model_window(&self, label: &str) -> Option<Arc<ModelWindow>> {
        self.recent.get(label).cloned()
    }

    /// Every model label's recent window, by label.
    pub(crate) fn model_windows(&self) -> Vec<(&str, &ModelWindow)> {
        let mut all: Vec<(&str, &ModelWindow)> =
            self.recent.iter().map(|(name, w)| (name, &**w)).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// The metric label of the model name a client sent: the name itself when configured
    /// (an alias, or a listed `provider/model`), `provider/*` for another model of a
    /// configured provider, else `unknown`, so client-made names never add series.
    pub(crate) fn model_label(&self, name: &str) -> Arc<str> {
        if let Some(label) = self.labels.get(name) {
            return Arc::clone(label);
        }
        let provider = name.split_once('/').map(|(provider, _)| provider);
        match provider.and_then(|p| self.wildcards.get(p)) {
            Some(label) => Arc::clone(label),
            None => Arc::from(crate::observe::UNKNOWN),
        }
    }

    /// The label of every configured name, for series registered before any traffic.
    pub(crate) fn model_labels(&self) -> Vec<Arc<str>> {
        self.labels.values().cloned().collect()
    }

    /// Every configured `provider/model` (the circuit breaker's keys), for
    /// `llmgate_target_ejected`.
    pub(crate) fn configured_targets(&self) -> Vec<String> {
        (self.listed_models().into_iter())
            .filter(|m| !self.aliases.contains_key(&m.id))
            .map(|m| m.id)
            .collect()
    }

    /// A router for a reloaded config: circuit state carries over from `previous` for the
    /// targets of providers that are still configured the same way.
    pub(crate) fn reloaded(
        registry: Registry,
        aliases: BTreeMap<String, ModelConfig>,
        server: &ServerConfig,
        previous: &Router,
    ) -> Self {
        let unchanged = |target: &str| {
            let provider = target.split_once('/').map_or(target, |(p, _)| p);
            match (registry.get(provider), previous.registry.get(provider)) {
                (Some(new), Some(old)) => new.config == old.config,
                _ => false,
            }
        };
        let health = previous.health.reconfigured(
            server.circuit_failures,
            server.circuit_cooldown,
            unchanged,
        );
        Self::build(registry, aliases, server, health, Some(previous))
    }

    /// The registry of configured providers.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every configured name a client can send: each alias, and `provider/model` for every
    /// model named in an alias target or fallback or in a provider's `models` list.
    pub(crate) fn listed_models(&self) -> Vec<ListedModel> {
        self.listed_models_with(&|_| Arc::default())
    }

    /// [`Router::listed_models`] and, for each provider with `discover_models`, the models
    /// `discovered` gives for its name: aliases first, then `provider/model` names, each
    /// group sorted and without duplicates.
    pub(crate) fn listed_models_with(
        &self,
        discovered: &dyn Fn(&str) -> Arc<Vec<String>>,
    ) -> Vec<ListedModel> {
        let mut listed: Vec<ListedModel> = self
            .aliases
            .keys()
            .map(|alias| ListedModel {
                id: alias.clone(),
                owned_by: "llmgate".to_owned(),
            })
            .collect();
        let mut direct = BTreeSet::new();
        for alias in self.aliases.values() {
            for target in &alias.targets {
                direct.insert((target.provider.clone(), target.model.clone()));
            }
            for fallback in &alias.fallbacks {
                if let Some((provider, model)) = fallback.split_once('/')
                    && !self.aliases.contains_key(fallback)
                {
                    direct.insert((provider.to_owned(), model.to_owned()));
                }
            }
        }
        for provider in self.registry.iter() {
            for model in &provider.config.models {
                direct.insert((provider.name.clone(), model.clone()));
            }
            if provider.config.discover_models {
                for model in discovered(&provider.name).iter() {
                    direct.insert((provider.name.clone(), model.clone()));
                }
            }
        }
        listed.extend(direct.into_iter().map(|(provider, model)| ListedModel {
            id: format!("{provider}/{model}"),
            owned_by: provider,
        }));
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, from_toml_str};

    fn listed(config: &Config) -> Vec<(String, String)> {
        let registry = Registry::build(&config.providers, &config.server).unwrap();
        Router::new(registry, config.models.clone(), &config.server)
            .listed_models()
            .into_iter()
            .map(|m| (m.id, m.owned_by))
            .collect()
    }

    #[test]
    fn the_embedded_default_lists_echo() {
        let config = Config::embedded_default(&BTreeMap::new());
        assert_eq!(listed(&config), [("echo/echo".into(), "echo".into())]);
    }

    #[test]
    fn model_labels_are_configured_names_only() {
        let config = from_toml_str(
            "[providers.o]\nkind = \"openai\"\nmodels = [\"b\"]\n[models.fast]\ntargets = [{ provider = \"o\", model = \"a\" }]\n",
            &BTreeMap::new(),
        )
        .unwrap();
        let registry = Registry::build(&config.providers, &config.server).unwrap();
        let router = Router::new(registry, config.models.clone(), &config.server);
        assert_eq!(&*router.model_label("fast"), "fast");
        assert_eq!(&*router.model_label("o/b"), "o/b");
        assert_eq!(&*router.model_label("o/anything-else"), "o/*");
        assert_eq!(&*router.model_label("nope/b"), "unknown");
        assert_eq!(&*router.model_label("free text"), "unknown");
        assert_eq!(router.configured_targets(), ["o/a", "o/b"]);
    }

    #[test]
    fn provider_model_lists_join_the_alias_names_once() {
        let config = from_toml_str(
            "[providers.o]\nkind = \"openai\"\nmodels = [\"b\", \"a\"]\n[models.fast]\ntargets = [{ provider = \"o\", model = \"a\" }]\n",
            &BTreeMap::new(),
        )
        .unwrap();
        let expected: Vec<(String, String)> = [("fast", "llmgate"), ("o/a", "o"), ("o/b", "o")]
            .map(|(id, owner)| (id.into(), owner.into()))
            .into();
        assert_eq!(listed(&config), expected);
    }
}
