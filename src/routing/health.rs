//! Circuit breaking per target (`provider/model`).
//!
//! A target that fails `failures` times in a row (only failures that are the target's own:
//! see [`super::retry::is_target_fault`]) is ejected for `cooldown`. After that, exactly one
//! request may probe it (half-open): success restores it, failure ejects it again. A success
//! at any time resets the count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Whether a target may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Healthy.
    Available,
    /// Ejected, but its cool-down is over: this request is the probe.
    Probe,
    /// Ejected (or another request is probing it).
    Ejected,
}

#[derive(Debug, Default)]
struct TargetState {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    probing: bool,
}

/// The health of every target that has been called.
#[derive(Debug)]
pub struct Health {
    failures: u32,
    cooldown: Duration,
    targets: Mutex<HashMap<String, TargetState>>,
}

impl Health {
    /// Ejects after `failures` consecutive failures, for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Health {
            failures: failures.max(1),
            cooldown,
            targets: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, TargetState>) -> R) -> R {
        // A panic while holding this lock cannot leave the map inconsistent (every update is
        // one field store), so a poisoned lock is still usable.
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut targets)
    }

    /// Whether `target` may be tried now, without claiming a probe.
    pub fn peek(&self, target: &str) -> Availability {
        let now = Instant::now();
        self.with(|targets| match targets.get(target) {
            None => Availability::Available,
            Some(state) => availability(state, now),
        })
    }

    /// Claims `target` for an attempt: `Available`, or `Probe` (the caller is now the only
    /// probe), or `Ejected`.
    pub fn claim(&self, target: &str) -> Availability {
        let now = Instant::now();
        self.with(|targets| {
            let Some(state) = targets.get_mut(target) else {
                return Availability::Available;
            };
            let availability = availability(state, now);
            if availability == Availability::Probe {
                state.probing = true;
            }
            availability
        })
    }

    /// Records a success: the target is healthy.
    pub fn success(&self, target: &str) {
        self.with(|targets| {
            if let Some(state) = targets.get_mut(target) {
                *state = TargetState::default();
            }
        });
    }

    /// Records a failure that is the target's own.
    pub fn failure(&self, target: &str) {
        let now = Instant::now();
        self.with(|targets| {
            let state = targets.entry(target.to_owned()).or_default();
            state.consecutive_failures += 1;
            if state.probing || state.consecutive_failures >= self.failures {
                if state.ejected_until.is_none_or(|until| until <= now) {
                    tracing::warn!(target, cooldown = ?self.cooldown, "target ejected");
                }
                state.ejected_until = Some(now + self.cooldown);
                state.probing = false;
            }
        });
    }

    /// Releases a probe claim without a verdict (the attempt was cancelled).
    pub fn release(&self, target: &str) {
        self.with(|targets| {
            if let Some(state) = targets.get_mut(target) {
                state.probing = false;
            }
        });
    }
}

fn availability(state: &TargetState, now: Instant) -> Availability {
    match state.ejected_until {
        None => Availability::Available,
        Some(_) if state.probing => Availability::Ejected,
        Some(until) if until <= now => Availability::Probe,
        Some(_) => Availability::Ejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eject_then_probe_then_restore() {
        let health = Health::new(3, Duration::from_secs(30));
        health.failure("a");
        health.failure("a");
        assert_eq!(health.claim("a"), Availability::Available);
        health.failure("a");
        assert_eq!(health.claim("a"), Availability::Ejected);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(health.claim("a"), Availability::Ejected);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(health.claim("a"), Availability::Probe);
        assert_eq!(
            health.claim("a"),
            Availability::Ejected,
            "one probe at a time"
        );
        health.failure("a");
        assert_eq!(
            health.peek("a"),
            Availability::Ejected,
            "a failed probe ejects again"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(health.claim("a"), Availability::Probe);
        health.success("a");
        assert_eq!(health.claim("a"), Availability::Available);
    }

    #[test]
    fn a_success_resets_the_count() {
        let health = Health::new(2, Duration::from_secs(30));
        health.failure("a");
        health.success("a");
        health.failure("a");
        assert_eq!(health.peek("a"), Availability::Available);
    }
}
