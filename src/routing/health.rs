//! Circuit breaking per target (`provider/model`).
//!
//! A target that fails `failures` times in a row (only failures that are the target's own:
//! see [`super::retry::is_target_fault`]) is ejected for `cooldown`. After that, exactly one
//! request may probe it (half-open): success restores it, failure ejects it again. A success
//! at any time restores the target.
//!
//! Targets are named by clients (`provider/<any model>`), so the state is bounded: a healthy
//! target has no entry (a success removes it), the map holds at most [`MAX_TARGETS`] entries
//! (when full, those with the oldest failure go first, ejected ones last), and names longer
//! than [`MAX_KEY_BYTES`] are never tracked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::observe::window::{Recent, TargetWindow};

/// The most targets tracked at once.
const MAX_TARGETS: usize = 10_000;
/// Longer target names (only clients make such) are not tracked: always available.
const MAX_KEY_BYTES: usize = 512;
/// The longest cool-down, whatever the config says.
const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Whether a target may take a request now, without claiming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// Healthy.
    Available,
    /// Ejected, but its cool-down is over and nobody probes it: the next claim probes it.
    Probe,
    /// Ejected until `until` (or past it, while another request probes it).
    Ejected {
        /// The end of the cool-down.
        until: Instant,
    },
}

/// The result of claiming a target for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Healthy.
    Available,
    /// The caller is the one probe; its verdict or [`Health::release`] ends the claim.
    Probe(ProbeToken),
    /// Ejected, or another request probes it.
    Ejected,
}

/// Identifies one probe claim, so that only its holder can end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeToken(u64);

#[derive(Debug)]
struct TargetState {
    consecutive_failures: u32,
    last_failure: Instant,
    ejected_until: Option<Instant>,
    /// The claim of the request probing the target, if one does.
    probe: Option<ProbeToken>,
}

#[derive(Debug, Default)]
struct Targets {
    map: HashMap<String, TargetState>,
    /// The last probe token handed out (tokens are never reused).
    probes: u64,
}

/// The health of every target that has failed since its last success.
#[derive(Debug)]
pub(crate) struct Health {
    failures: u32,
    cooldown: Duration,
    capacity: usize,
    /// Shared with the `Health` of the configs before and after a reload.
    targets: Arc<Mutex<Targets>>,
    /// Recent attempts and failures of each configured target (lock-free counters).
    recent: Recent<0>,
}

/// A circuit's state, as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Circuit {
    /// Healthy: requests go to it.
    Closed,
    /// Cool-down running: skipped while another candidate is healthy.
    Ejected,
    /// Cool-down over: the next request probes it (or one does now).
    HalfOpen,
}

impl Circuit {
    /// `closed`, `ejected` or `half_open`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Ejected => "ejected",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// What `/admin/status` shows of one tracked target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetHealth {
    /// `provider/model`.
    pub(crate) target: String,
    /// Whether requests skip it now (cool-down running, or another request probes it).
    pub(crate) ejected: bool,
    /// Failures since its last success.
    pub(crate) consecutive_failures: u32,
    /// The end of its latest cool-down, if it was ejected.
    pub(crate) cooldown_until: Option<Instant>,
    /// Closed, ejected or half-open.
    pub(crate) circuit: Circuit,
}

impl Health {
    /// Ejects after `failures` consecutive failures, for `cooldown`.
    pub(crate) fn new(failures: u32, cooldown: Duration) -> Self {
        Self::with_capacity(failures, cooldown, MAX_TARGETS)
    }

    fn with_capacity(failures: u32, cooldown: Duration, capacity: usize) -> Self {
        Health {
            failures: failures.max(1),
            cooldown: cooldown.min(MAX_COOLDOWN),
            capacity: capacity.max(1),
            targets: Arc::default(),
            recent: Recent::default(),
        }
    }

    /// Gives each of `targets` (configured names only) a recent window, reusing the ones
    /// `previous` has by the same name.
    pub(crate) fn set_windows<'a>(
        &mut self,
        targets: impl IntoIterator<Item = &'a str>,
        previous: Option<&Health>,
    ) {
        self.recent = Recent::new(targets, previous.map(|p| &p.recent));
    }

    /// Counts one finished attempt of `target` in its recent window (a configured target's
    /// only); `failed` when the failure was the target's own.
    pub(crate) fn count_attempt(&self, target: &str, failed: bool) {
        if let Some(window) = self.recent.get(target) {
            window.record(Instant::now(), failed, None);
        }
    }

    /// The recent window of `target`, if it is a configured one.
    pub(crate) fn recent(&self, target: &str) -> Option<&TargetWindow> {
        self.recent.get(target).map(|w| &**w)
    }

    /// The health for a reloaded config: the new thresholds over the same target states
    /// (requests still running on the old config keep updating them), without the targets
    /// `keep` refuses (their provider was removed or changed).
    pub(crate) fn reconfigured(
        &self,
        failures: u32,
        cooldown: Duration,
        keep: impl Fn(&str) -> bool,
    ) -> Health {
        self.with(|targets| targets.map.retain(|target, _| keep(target)));
        Health {
            failures: failures.max(1),
            cooldown: cooldown.min(MAX_COOLDOWN),
            capacity: self.capacity,
            targets: self.targets.clone(),
            recent: Recent::default(),
        }
    }

    /// Every tracked target (at most [`MAX_TARGETS`]), by name.
    pub(crate) fn snapshot(&self) -> Vec<TargetHealth> {
        let now = Instant::now();
        let mut list: Vec<TargetHealth> = self.with(|targets| {
            targets
                .map
                .iter()
                .map(|(target, state)| TargetHealth {
                    target: target.clone(),
                    ejected: matches!(availability(state, now), Availability::Ejected { .. }),
                    consecutive_failures: state.consecutive_failures,
                    cooldown_until: state.ejected_until,
                    circuit: circuit(state, now),
                })
                .collect()
        });
        list.sort_by(|a, b| a.target.cmp(&b.target));
        list
    }

    fn with<R>(&self, f: impl FnOnce(&mut Targets) -> R) -> R {
        // Every update completes before anything can panic, so a poisoned lock is still usable.
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut targets)
    }

    /// Whether `target` may be tried now, without claiming a probe.
    pub(crate) fn peek(&self, target: &str) -> Availability {
        let now = Instant::now();
        self.with(|targets| match targets.map.get(target) {
            None => Availability::Available,
            Some(state) => availability(state, now),
        })
    }

    /// Claims `target` for an attempt. `Probe` makes the caller the only probe until its
    /// verdict ([`Health::success`], [`Health::failure`]) or [`Health::release`].
    pub(crate) fn claim(&self, target: &str) -> Claim {
        let now = Instant::now();
        self.with(|targets| {
            let Some(state) = targets.map.get_mut(target) else {
                return Claim::Available;
            };
            match availability(state, now) {
                Availability::Available => Claim::Available,
                Availability::Ejected { .. } => Claim::Ejected,
                Availability::Probe => {
                    targets.probes += 1;
                    let token = ProbeToken(targets.probes);
                    state.probe = Some(token);
                    Claim::Probe(token)
                }
            }
        })
    }

    /// Records a success: the target is healthy (and forgotten).
    pub(crate) fn success(&self, target: &str) {
        self.with(|targets| {
            // Healthy targets are not in the map: no hashing for the common case.
            if !targets.map.is_empty() {
                targets.map.remove(target);
            }
        });
    }

    /// Records a failure that is the target's own; `probe` is the attempt's claim, if it was
    /// the probe.
    pub(crate) fn failure(&self, target: &str, probe: Option<ProbeToken>) {
        if target.len() > MAX_KEY_BYTES {
            return;
        }
        let now = Instant::now();
        self.with(|targets| {
            if !targets.map.contains_key(target) && targets.map.len() >= self.capacity {
                make_room(&mut targets.map, self.capacity);
            }
            let state = targets.map.entry(target.to_owned()).or_insert(TargetState {
                consecutive_failures: 0,
                last_failure: now,
                ejected_until: None,
                probe: None,
            });
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_failure = now;
            let failed_probe = probe.is_some() && state.probe == probe;
            if failed_probe {
                state.probe = None;
            }
            if failed_probe || state.consecutive_failures >= self.failures {
                if state.ejected_until.is_none_or(|until| until <= now) {
                    tracing::warn!(target, cooldown = ?self.cooldown, "target ejected");
                }
                state.ejected_until = Some(now + self.cooldown);
            }
        });
    }

    /// Ends the probe claim `probe` without a verdict (the attempt was cancelled, or failed
    /// in a way that says nothing about the target). A claim that is no longer current (a
    /// verdict ended it, or another request probes now) is left alone.
    pub(crate) fn release(&self, target: &str, probe: ProbeToken) {
        self.with(|targets| {
            if let Some(state) = targets.map.get_mut(target)
                && state.probe == Some(probe)
            {
                state.probe = None;
            }
        });
    }

    /// How many targets have state.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.with(|targets| targets.map.len())
    }
}

fn circuit(state: &TargetState, now: Instant) -> Circuit {
    match state.ejected_until {
        None => Circuit::Closed,
        Some(until) if until > now => Circuit::Ejected,
        Some(_) => Circuit::HalfOpen,
    }
}

fn availability(state: &TargetState, now: Instant) -> Availability {
    match state.ejected_until {
        None => Availability::Available,
        Some(until) if until > now || state.probe.is_some() => Availability::Ejected { until },
        Some(_) => Availability::Probe,
    }
}

/// Drops a tenth of the entries at once (so a flood of new names costs one scan per many
/// inserts): those not ejected before ejected ones, oldest failure first.
fn make_room(map: &mut HashMap<String, TargetState>, capacity: usize) {
    let count = (capacity / 10).max(1).min(map.len());
    let mut order: Vec<(bool, Instant, &String)> = map
        .iter()
        .map(|(key, state)| (state.ejected_until.is_some(), state.last_failure, key))
        .collect();
    order.select_nth_unstable_by_key(count - 1, |(ejected, last, _)| (*ejected, *last));
    let doomed: Vec<String> = order[..count]
        .iter()
        .map(|(_, _, key)| (*key).clone())
        .collect();
    for key in doomed {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(health: &Health, target: &str) -> ProbeToken {
        match health.claim(target) {
            Claim::Probe(token) => token,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn eject_then_probe_then_restore() {
        let health = Health::new(3, Duration::from_secs(30));
        health.failure("a", None);
        health.failure("a", None);
        assert_eq!(health.claim("a"), Claim::Available);
        health.failure("a", None);
        assert_eq!(health.claim("a"), Claim::Ejected);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(health.claim("a"), Claim::Ejected);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(health.peek("a"), Availability::Probe);
        let token = probe(&health, "a");
        assert_eq!(health.claim("a"), Claim::Ejected, "one probe at a time");
        health.failure("a", Some(token));
        assert!(
            matches!(health.peek("a"), Availability::Ejected { .. }),
            "a failed probe ejects again"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        probe(&health, "a");
        health.success("a");
        assert_eq!(health.claim("a"), Claim::Available);
    }

    #[test]
    fn a_success_resets_the_count_and_forgets_the_target() {
        let health = Health::new(2, Duration::from_secs(30));
        health.failure("a", None);
        assert_eq!(health.tracked(), 1);
        health.success("a");
        assert_eq!(health.tracked(), 0, "a healthy target has no entry");
        health.failure("a", None);
        assert_eq!(health.peek("a"), Availability::Available);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_claim_cannot_free_the_current_probe() {
        let health = Health::new(1, Duration::from_secs(30));
        health.failure("a", None);
        tokio::time::advance(Duration::from_secs(31)).await;
        let first = probe(&health, "a");
        health.failure("a", Some(first));
        tokio::time::advance(Duration::from_secs(31)).await;
        let second = probe(&health, "a");
        // The first probe's attempt ends late: its release must not free the second's claim.
        health.release("a", first);
        assert_eq!(health.claim("a"), Claim::Ejected, "still one probe");
        // Nor does a failure of an attempt that is not the probe.
        health.failure("a", None);
        assert_eq!(health.claim("a"), Claim::Ejected);
        health.release("a", second);
        tokio::time::advance(Duration::from_secs(31)).await;
        probe(&health, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_failing_names_keeps_the_map_bounded() {
        let health = Health::with_capacity(3, Duration::from_secs(30), 1_000);
        for _ in 0..3 {
            health.failure("real/m", None);
        }
        for i in 0..20_000 {
            tokio::time::advance(Duration::from_millis(1)).await;
            health.failure(&format!("up/flood-{i}"), None);
            assert!(health.tracked() <= 1_000);
        }
        assert!(
            matches!(health.peek("real/m"), Availability::Ejected { .. }),
            "an ejected target outlives the flood"
        );
        assert_eq!(
            health.peek("up/flood-19999"),
            Availability::Available,
            "one failure, below the threshold"
        );
        health.failure("up/flood-19999", None);
        health.failure("up/flood-19999", None);
        assert!(
            matches!(health.peek("up/flood-19999"), Availability::Ejected { .. }),
            "the newest entries are kept"
        );
        health.failure(&format!("up/{}", "x".repeat(MAX_KEY_BYTES)), None);
        assert!(health.tracked() <= 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconfigured_health_shares_the_kept_targets() {
        let old = Health::new(1, Duration::from_secs(30));
        old.failure("kept/m", None);
        old.failure("gone/m", None);
        let new = old.reconfigured(2, Duration::from_secs(60), |t| t.starts_with("kept/"));
        let tracked: Vec<(String, bool)> = new
            .snapshot()
            .into_iter()
            .map(|t| (t.target, t.ejected))
            .collect();
        assert_eq!(tracked, [("kept/m".to_owned(), true)]);
        old.success("kept/m");
        assert!(
            new.snapshot().is_empty(),
            "the old config's verdicts still count"
        );
        new.failure("x/m", None);
        assert_eq!(
            new.peek("x/m"),
            Availability::Available,
            "the new threshold"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_circuit_goes_ejected_then_half_open_then_closed() {
        let health = Health::new(1, Duration::from_secs(30));
        let circuit = |health: &Health| health.snapshot().first().map(|t| t.circuit);
        health.failure("a", None);
        assert_eq!(circuit(&health), Some(Circuit::Ejected));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(circuit(&health), Some(Circuit::HalfOpen));
        probe(&health, "a");
        assert_eq!(
            circuit(&health),
            Some(Circuit::HalfOpen),
            "while it is probed"
        );
        health.success("a");
        assert_eq!(
            circuit(&health),
            None,
            "healthy again: not tracked, so closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_configured_targets_have_recent_counts_and_they_survive_a_reload() {
        let mut health = Health::new(3, Duration::from_secs(30));
        health.set_windows(["p/m"], None);
        health.count_attempt("p/m", false);
        health.count_attempt("p/m", true);
        health.count_attempt("p/client-made", true);
        assert!(health.recent("p/client-made").is_none());
        let mut next = health.reconfigured(3, Duration::from_secs(30), |_| true);
        next.set_windows(["p/m"], Some(&health));
        tokio::time::advance(Duration::from_secs(1)).await;
        let counts = next.recent("p/m").unwrap().counts(Instant::now());
        assert_eq!((counts.total_requests(), counts.total_errors()), (2, 1));
    }

    #[test]
    fn names_too_long_are_not_tracked() {
        let health = Health::new(1, Duration::from_secs(30));
        let long = format!("up/{}", "x".repeat(MAX_KEY_BYTES));
        health.failure(&long, None);
        assert_eq!(
            (health.tracked(), health.peek(&long)),
            (0, Availability::Available)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_cooldown_does_not_overflow() {
        let health = Health::new(1, Duration::MAX);
        health.failure("a", None);
        assert_eq!(health.claim("a"), Claim::Ejected);
    }
}
