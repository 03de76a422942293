//! Routing: which provider and upstream model answer a model name.
//!
//! `<provider>/<model>` goes straight to that configured provider (only the first `/`
//! splits); an alias picks one of its targets by weight. Anything else is `model_not_found`.

use std::collections::BTreeMap;

use crate::config::{ModelConfig, Target};
use crate::error::GatewayError;
use crate::providers::{ProviderHandle, Registry};

/// Where one attempt goes.
#[derive(Clone)]
pub struct Route {
    /// The provider.
    pub provider: ProviderHandle,
    /// The model name to ask it for.
    pub upstream_model: String,
}

/// Resolves model names against the configured providers and aliases.
#[derive(Clone, Default)]
pub struct Router {
    registry: Registry,
    aliases: BTreeMap<String, ModelConfig>,
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedModel {
    /// The name a client sends.
    pub id: String,
    /// `llmgate` for aliases, else the provider's name.
    pub owned_by: String,
}

impl Router {
    /// A router over `registry` and the configured aliases.
    pub fn new(registry: Registry, aliases: BTreeMap<String, ModelConfig>) -> Self {
        Router { registry, aliases }
    }

    /// The configured providers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The route for `model`.
    pub fn resolve(&self, model: &str) -> Result<Route, GatewayError> {
        if let Some(alias) = self.aliases.get(model) {
            let target = pick_weighted(&alias.targets, fastrand::f64());
            return self.direct(&target.provider, &target.model, model);
        }
        match model.split_once('/') {
            Some((provider, upstream)) if !upstream.is_empty() => {
                self.direct(provider, upstream, model)
            }
            _ => Err(GatewayError::ModelNotFound(model.to_owned())),
        }
    }

    fn direct(&self, provider: &str, upstream: &str, asked: &str) -> Result<Route, GatewayError> {
        let provider = self
            .registry
            .get(provider)
            .ok_or_else(|| GatewayError::ModelNotFound(asked.to_owned()))?;
        Ok(Route {
            provider: provider.clone(),
            upstream_model: upstream.to_owned(),
        })
    }

    /// Every name a client can send: each alias, and `provider/model` for every model named
    /// in an alias target or fallback.
    pub fn listed_models(&self) -> Vec<ListedModel> {
        let mut listed: Vec<ListedModel> = self
            .aliases
            .keys()
            .map(|alias| ListedModel {
                id: alias.clone(),
                owned_by: "llmgate".to_owned(),
            })
            .collect();
        let mut direct = std::collections::BTreeSet::new();
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
        listed.extend(direct.into_iter().map(|(provider, model)| ListedModel {
            id: format!("{provider}/{model}"),
            owned_by: provider,
        }));
        listed
    }
}

/// The target a uniform draw `u` in `[0, 1)` lands on, in proportion to the weights.
pub fn pick_weighted(targets: &[Target], u: f64) -> &Target {
    let total: f64 = targets.iter().map(|t| t.weight).sum();
    let mut point = u * total;
    for target in targets {
        if point < target.weight {
            return target;
        }
        point -= target.weight;
    }
    // Rounding can leave `point` a hair above the last weight.
    &targets[targets.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(provider: &str, weight: f64) -> Target {
        Target {
            provider: provider.into(),
            model: "m".into(),
            weight,
        }
    }

    #[test]
    fn weighted_pick_follows_the_weights() {
        let targets = [target("a", 3.0), target("b", 1.0)];
        assert_eq!(pick_weighted(&targets, 0.0).provider, "a");
        assert_eq!(pick_weighted(&targets, 0.74).provider, "a");
        assert_eq!(pick_weighted(&targets, 0.75).provider, "b");
        assert_eq!(pick_weighted(&targets, 0.999_999).provider, "b");
    }
}
