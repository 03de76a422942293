//! Resolution: a model name and the request's routing policy become an ordered [`Plan`].
//!
//! Targets come from the per-request `load_balancer`, else the alias's `targets`, else the
//! one `provider/model` named. They are ordered by a weighted race: each target draws
//! `u` in (0, 1) and scores `ln(u) / weight`, highest first, so the first target is picked in
//! proportion to its weight. With a session id (`X-Session-ID` or orq's `thread.id`) the draw
//! is a hash of session and target instead of a random number: the same conversation lands on
//! the same target while it is healthy, and only the conversations of an ejected target move
//! (weighted rendezvous hashing). Fallbacks (per request, else the alias's) follow, each name
//! expanded the same way. Each `provider/model` appears once, where it first comes.
//!
//! Ejection only moves traffic to a healthy alternative: ejected candidates are left out while
//! another candidate is healthy; when every one is ejected, all stay, soonest end of cool-down
//! first, and the request is still sent (the client gets the upstream's real answer).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Router;
use super::health::Availability;
use super::retry::RetryPolicy;
use crate::config::ProviderKind;
use crate::error::GatewayError;
use crate::providers::ProviderHandle;
use crate::schema::ChatRequest;

/// orq's default `retry.count` and `cache.ttl`.
const ORQ_DEFAULT_RETRY_COUNT: u32 = 3;
const ORQ_DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1800);
/// orq's default load-balancer weight.
const ORQ_DEFAULT_WEIGHT: f64 = 0.5;

/// One place a request can go.
#[derive(Clone)]
pub(crate) struct Candidate {
    /// The provider.
    pub(crate) provider: Arc<ProviderHandle>,
    /// The model name to ask it for.
    pub(crate) upstream_model: String,
    /// `provider/model`, the circuit breaker's key.
    pub(crate) key: String,
}

/// Everything the executor needs for one request.
#[derive(Clone)]
pub(crate) struct Plan {
    /// Where to try, in order.
    pub(crate) candidates: Vec<Candidate>,
    /// How each candidate is retried.
    pub(crate) retry: RetryPolicy,
    /// The client's per-attempt timeout (`timeout.call_timeout`): it shortens, never
    /// lengthens, each provider's `timeout_ms`.
    pub(crate) attempt_timeout: Option<Duration>,
    /// The whole request.
    pub(crate) total_timeout: Option<Duration>,
    /// The longest wait on an upstream's `retry-after` before a retry.
    pub(crate) max_retry_wait: Duration,
    /// Every candidate was ejected when planned: none is skipped.
    pub(crate) all_ejected: bool,
    /// Start a hedge attempt on the next candidate after this long without an answer.
    pub(crate) hedge_after: Option<Duration>,
    /// Cache a successful answer this long.
    pub(crate) cache_ttl: Option<Duration>,
}

struct Weighted {
    candidate: Candidate,
    weight: f64,
}

/// Up to this many candidates, a repeat is found by a scan, which costs less than hashing
/// their keys; past it (an alias with many targets), by a hash set.
const SCANNED_CANDIDATES: usize = 16;

/// Whether `key` names none of `candidates` (whose keys `seen` holds once there are
/// [`SCANNED_CANDIDATES`] or more).
fn first_time(seen: &mut HashSet<String>, candidates: &[Candidate], key: &str) -> bool {
    if candidates.len() < SCANNED_CANDIDATES {
        return !candidates.iter().any(|c| c.key == key);
    }
    if seen.is_empty() {
        seen.extend(candidates.iter().map(|c| c.key.clone()));
    }
    seen.insert(key.to_owned())
}

impl Router {
    /// The plan for `request` (its `model` and routing policy) in conversation `session`.
    pub(crate) fn plan(
        &self,
        request: &ChatRequest,
        session: Option<&str>,
    ) -> Result<Plan, GatewayError> {
        let alias = self.aliases.get(&request.model);
        let targets = match &request.load_balancer {
            Some(balancer) => {
                let mut all = Vec::new();
                for entry in &balancer.models {
                    let weight = entry.weight.unwrap_or(ORQ_DEFAULT_WEIGHT);
                    all.extend(self.expand(&entry.model, weight)?);
                }
                all
            }
            None => self.expand(&request.model, 1.0)?,
        };
        let fallback_names: Vec<&str> = match &request.fallbacks {
            Some(fallbacks) => fallbacks.iter().map(|f| f.model.as_str()).collect(),
            None => alias
                .map(|a| a.fallbacks.iter().map(String::as_str).collect())
                .unwrap_or_default(),
        };
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut seen = HashSet::new();
        let mut add = |ordered: Vec<Candidate>| {
            for candidate in ordered {
                if first_time(&mut seen, &candidates, &candidate.key) {
                    candidates.push(candidate);
                }
            }
        };
        add(self.order(targets, session));
        for name in fallback_names {
            add(self.order(self.expand(name, 1.0)?, session));
        }
        let (candidates, all_ejected) = self.skip_ejected(candidates);
        Ok(Plan {
            candidates,
            retry: retry_policy(request, alias.map(|a| &a.retry)),
            attempt_timeout: request
                .timeout
                .as_ref()
                .map(|t| Duration::from_millis(t.call_timeout)),
            total_timeout: alias.and_then(|a| a.timeout),
            max_retry_wait: self.max_retry_wait,
            all_ejected,
            hedge_after: alias.and_then(|a| a.hedge_after),
            cache_ttl: match &request.cache {
                Some(cache) => Some(
                    cache
                        .ttl
                        .map_or(ORQ_DEFAULT_CACHE_TTL, |t| Duration::from_secs(u64::from(t))),
                ),
                None => alias.and_then(|a| a.cache_ttl),
            },
        })
    }

    /// The targets a name stands for, each with its share of `weight`.
    fn expand(&self, name: &str, weight: f64) -> Result<Vec<Weighted>, GatewayError> {
        if let Some(alias) = self.aliases.get(name) {
            let total: f64 = alias.targets.iter().map(|t| t.weight).sum();
            return alias
                .targets
                .iter()
                .map(|t| {
                    let candidate = self.candidate(&t.provider, &t.model, name)?;
                    Ok(Weighted {
                        candidate,
                        weight: weight * t.weight / total,
                    })
                })
                .collect();
        }
        match name.split_once('/') {
            Some((provider, model)) if !model.is_empty() => Ok(vec![Weighted {
                candidate: self.candidate(provider, model, name)?,
                weight,
            }]),
            _ => Err(GatewayError::ModelNotFound(name.to_owned())),
        }
    }

    fn candidate(
        &self,
        provider: &str,
        model: &str,
        asked: &str,
    ) -> Result<Candidate, GatewayError> {
        let handle =
            self.registry
                .get(provider)
                .ok_or_else(|| GatewayError::ProviderNotConfigured {
                    model: asked.to_owned(),
                    provider: provider.to_owned(),
                    key_variable: ProviderKind::from_name(provider)
                        .and_then(ProviderKind::key_variable),
                })?;
        let mut key = String::with_capacity(provider.len() + 1 + model.len());
        key.push_str(provider);
        key.push('/');
        key.push_str(model);
        Ok(Candidate {
            provider: handle.clone(),
            upstream_model: model.to_owned(),
            key,
        })
    }

    /// Leaves out ejected candidates while another is healthy; when every one is ejected,
    /// keeps them all, soonest end of cool-down first. True in that second case.
    fn skip_ejected(&self, candidates: Vec<Candidate>) -> (Vec<Candidate>, bool) {
        let mut judged: Vec<(Option<Instant>, Candidate)> = candidates
            .into_iter()
            .map(|c| match self.health.peek(&c.key) {
                Availability::Ejected { until } => (Some(until), c),
                Availability::Available | Availability::Probe => (None, c),
            })
            .collect();
        if judged.iter().any(|(until, _)| until.is_none()) {
            let healthy = judged.into_iter().filter(|(until, _)| until.is_none());
            return (healthy.map(|(_, c)| c).collect(), false);
        }
        judged.sort_by_key(|(until, _)| *until);
        (judged.into_iter().map(|(_, c)| c).collect(), true)
    }

    /// Orders targets by the weighted race (sticky with a session).
    fn order(&self, targets: Vec<Weighted>, session: Option<&str>) -> Vec<Candidate> {
        let mut scored: Vec<(f64, Candidate)> = targets
            .into_iter()
            .map(|t| {
                let u = match session {
                    Some(session) => unit_hash(session, &t.candidate.key),
                    None => fastrand::f64(),
                };
                (race_score(u, t.weight), t.candidate)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, c)| c).collect()
    }
}

/// The retry policy: the request's (orq: `count` retries after the first try, default 3,
/// on `on_codes`, default `[429]`), else the alias's, else one try.
fn retry_policy(request: &ChatRequest, alias: Option<&RetryPolicy>) -> RetryPolicy {
    let base = alias.cloned().unwrap_or_default();
    match &request.retry {
        None => base,
        Some(retry) => RetryPolicy {
            attempts: retry.count.unwrap_or(ORQ_DEFAULT_RETRY_COUNT) + 1,
            on_status: retry.on_codes.clone().unwrap_or_else(|| vec![429]),
            backoff: base.backoff,
        },
    }
}

/// A target's score in the weighted race for a draw `u` in (0, 1): highest wins, and the
/// chance to win is the target's share of the weights.
fn race_score(u: f64, weight: f64) -> f64 {
    u.clamp(f64::MIN_POSITIVE, 1.0).ln() / weight
}

/// A stable hash of a session and a target key mapped into (0, 1) (FNV-1a, so every replica
/// of the gateway maps a conversation the same way).
fn unit_hash(session: &str, key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in session.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finalize (FNV's low bits mix poorly), then keep 53 bits for the mantissa.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn winner(weights: &[f64], draws: &[f64]) -> usize {
        let scores: Vec<f64> = weights
            .iter()
            .zip(draws)
            .map(|(w, u)| race_score(*u, *w))
            .collect();
        (0..weights.len())
            .max_by(|a, b| scores[*a].total_cmp(&scores[*b]))
            .unwrap()
    }

    #[test]
    fn the_race_follows_the_weights_within_tolerance() {
        // 3:1 weights over 20,000 seeded races: the first target wins 75% +- 5 sigma (1.5%).
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 20_000;
        let wins = (0..n)
            .filter(|_| winner(&[3.0, 1.0], &[rng.f64(), rng.f64()]) == 0)
            .count();
        let share = wins as f64 / n as f64;
        assert!((0.735..=0.765).contains(&share), "{share}");
    }

    #[test]
    fn session_hashes_are_stable_and_spread() {
        assert_eq!(unit_hash("s1", "a/m"), unit_hash("s1", "a/m"));
        assert_ne!(unit_hash("s1", "a/m"), unit_hash("s2", "a/m"));
        let values: Vec<f64> = (0..1000)
            .map(|i| unit_hash(&format!("s{i}"), "a/m"))
            .collect();
        assert!(values.iter().all(|v| *v > 0.0 && *v < 1.0));
        let below_half = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..=600).contains(&below_half), "{below_half}");
    }
}
