//! The in-process backend: each key's buckets and counters behind its own lock. The logic
//! is the one the Redis scripts (`lua/`) run, on this process's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::limits::{Bucket, Limit, RateHeaders, Refusal, retry_secs};
use super::{Settlement, UsageView};
use crate::config::KeyLimits;

/// Every key's state, by key name.
#[derive(Default)]
pub(crate) struct MemoryState {
    keys: Mutex<HashMap<Arc<str>, Arc<Mutex<KeyState>>>>,
}

/// One key's buckets and counters.
#[derive(Debug, Default)]
struct KeyState {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    in_flight: u64,
    /// The minute (since the epoch) the two counts below are of.
    minute: u64,
    requests_this_minute: u64,
    tokens_this_minute: u64,
    /// The budget window the spend is of, and the spend in nano-USD.
    spend_window: String,
    spend: u64,
}

/// What an admission needs to know besides the limits.
pub(crate) struct Ask<'a> {
    pub(crate) estimate: u64,
    pub(crate) now_ms: u64,
    /// The current spend window's name and seconds left.
    pub(crate) window: &'a (String, Option<u64>),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the state consistent: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryState {
    fn key(&self, name: &str) -> Arc<Mutex<KeyState>> {
        let mut keys = lock(&self.keys);
        if let Some(state) = keys.get(name) {
            return state.clone();
        }
        let state = Arc::new(Mutex::new(KeyState::default()));
        keys.insert(Arc::from(name), state.clone());
        state
    }

    /// Keeps only the keys named (after a reload): the map is as bounded as the config.
    pub(crate) fn retain(&self, names: &[String]) {
        lock(&self.keys).retain(|name, _| names.iter().any(|n| **n == **name));
    }

    /// Admits a request of key `name`, or refuses it and changes nothing.
    pub(crate) fn admit(
        &self,
        name: &str,
        limits: &KeyLimits,
        ask: &Ask,
    ) -> Result<RateHeaders, Refusal> {
        let state = self.key(name);
        let mut state = lock(&state);
        state.admit(limits, ask)
    }

    /// Settles a finished request.
    pub(crate) fn settle(&self, name: &str, settlement: &Settlement, now_ms: u64) {
        let state = self.key(name);
        let mut state = lock(&state);
        state.settle(settlement, now_ms);
    }

    /// Key `name`'s usage now.
    pub(crate) fn usage(&self, name: &str, window: &str, now_ms: u64) -> UsageView {
        let state = self.key(name);
        let state = lock(&state);
        let this_minute = state.minute == now_ms / 60_000;
        UsageView {
            requests_this_minute: if this_minute {
                state.requests_this_minute
            } else {
                0
            },
            tokens_this_minute: if this_minute {
                state.tokens_this_minute
            } else {
                0
            },
            in_flight: state.in_flight,
            spend_usd: if window == state.spend_window {
                state.spend as f64 / 1e9
            } else {
                0.0
            },
        }
    }
}

impl KeyState {
    fn bucket(slot: &mut Option<Bucket>, capacity: u64, now_ms: u64) -> Bucket {
        let mut bucket = slot.unwrap_or_else(|| Bucket::full(capacity, now_ms));
        bucket.refill(capacity, now_ms);
        *slot = Some(bucket);
        bucket
    }

    fn admit(&mut self, limits: &KeyLimits, ask: &Ask) -> Result<RateHeaders, Refusal> {
        let now = ask.now_ms;
        let requests = limits
            .rpm
            .map(|rpm| (rpm, Self::bucket(&mut self.requests, rpm, now)));
        let tokens = limits
            .tpm
            .map(|tpm| (tpm, Self::bucket(&mut self.tokens, tpm, now)));
        let headers =
            |requests: Option<(u64, Bucket)>, tokens: Option<(u64, Bucket)>| RateHeaders {
                requests: requests.map(|(cap, b)| b.view(cap)),
                tokens: tokens.map(|(cap, b)| b.view(cap)),
            };
        let refuse = |limit, retry_ms: Option<u64>| Refusal {
            limit,
            retry_after: retry_ms.map(retry_secs),
            headers: headers(requests, tokens),
        };
        if let Some(budget) = limits.budget {
            let (window, left) = ask.window;
            let spent = if *window == self.spend_window {
                self.spend
            } else {
                0
            };
            if spent >= budget.nano_usd {
                return Err(refuse(
                    Limit::Budget,
                    left.map(|secs| secs.saturating_mul(1000)),
                ));
            }
        }
        if limits
            .max_concurrent
            .is_some_and(|max| self.in_flight >= max)
        {
            return Err(refuse(Limit::Concurrency, Some(1000)));
        }
        if let Some((rpm, bucket)) = requests
            && bucket.level < 1.0
        {
            return Err(refuse(Limit::Requests, Some(bucket.wait_ms(1.0, rpm))));
        }
        if let Some((tpm, bucket)) = tokens {
            let need = ask.estimate.min(tpm) as f64;
            if bucket.level < need {
                return Err(refuse(Limit::Tokens, Some(bucket.wait_ms(need, tpm))));
            }
        }
        let requests = requests.map(|(cap, mut b)| {
            b.level -= 1.0;
            self.requests = Some(b);
            (cap, b)
        });
        let tokens = tokens.map(|(cap, mut b)| {
            b.level -= ask.estimate as f64;
            self.tokens = Some(b);
            (cap, b)
        });
        self.in_flight = self.in_flight.saturating_add(1);
        self.roll_minute(now);
        self.requests_this_minute = self.requests_this_minute.saturating_add(1);
        Ok(headers(requests, tokens))
    }

    fn roll_minute(&mut self, now_ms: u64) {
        let minute = now_ms / 60_000;
        if self.minute != minute {
            self.minute = minute;
            self.requests_this_minute = 0;
            self.tokens_this_minute = 0;
        }
    }

    fn settle(&mut self, settlement: &Settlement, now_ms: u64) {
        if let Some(tpm) = settlement.tpm
            && settlement.reserved != settlement.used
        {
            let mut bucket = Self::bucket(&mut self.tokens, tpm, now_ms);
            bucket.level = (bucket.level + settlement.reserved as f64 - settlement.used as f64)
                .min(tpm as f64);
            self.tokens = Some(bucket);
        }
        self.roll_minute(now_ms);
        self.tokens_this_minute = self.tokens_this_minute.saturating_add(settlement.used);
        if settlement.spend_nano > 0 {
            let (window, _) = &settlement.window;
            if *window != self.spend_window {
                self.spend_window.clone_from(window);
                self.spend = 0;
            }
            self.spend = self.spend.saturating_add(settlement.spend_nano);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Budget, BudgetWindow};

    fn limits() -> KeyLimits {
        KeyLimits {
            rpm: Some(2),
            tpm: Some(100),
            max_concurrent: Some(5),
            budget: Some(Budget {
                usd: 1.0,
                nano_usd: 1_000_000_000,
                window: BudgetWindow::Total,
            }),
        }
    }

    fn ask(estimate: u64, now_ms: u64, window: &(String, Option<u64>)) -> Ask<'_> {
        Ask {
            estimate,
            now_ms,
            window,
        }
    }

    fn settlement(reserved: u64, used: u64, spend_nano: u64) -> Settlement {
        Settlement {
            tpm: Some(100),
            reserved,
            used,
            spend_nano,
            window: ("total".to_owned(), None),
        }
    }

    #[test]
    fn a_refusal_takes_nothing_and_names_the_first_limit_hit() {
        let state = MemoryState::default();
        let window = ("total".to_owned(), None);
        let limits = limits();
        let first = state.admit("k", &limits, &ask(60, 0, &window)).unwrap();
        assert_eq!(first.requests.unwrap().remaining, 1);
        assert_eq!(first.tokens.unwrap().remaining, 40);
        // Tokens refuse: the request bucket is not charged for it.
        let refused = state.admit("k", &limits, &ask(50, 0, &window)).unwrap_err();
        assert_eq!(refused.limit, Limit::Tokens);
        assert_eq!(refused.headers.requests.unwrap().remaining, 1);
        assert_eq!(
            refused.retry_after,
            Some(6),
            "10 tokens take 6 s at 100 per minute"
        );
        assert_eq!(state.usage("k", "total", 0).requests_this_minute, 1);
        // Settling with less than reserved gives tokens back.
        state.settle("k", &settlement(60, 10, 0), 0);
        // A request larger than the bucket needs it full (here 90 of 100: 6 s more).
        let refused = state
            .admit("k", &limits, &ask(200, 0, &window))
            .unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            (Limit::Tokens, Some(6))
        );
        let admitted = state.admit("k", &limits, &ask(90, 0, &window)).unwrap();
        assert_eq!(admitted.tokens.unwrap().remaining, 0);
        let refused = state.admit("k", &limits, &ask(1, 0, &window)).unwrap_err();
        assert_eq!(refused.limit, Limit::Requests);
        assert_eq!(refused.retry_after, Some(30), "rpm 2 refills one per 30 s");
        assert_eq!(state.usage("k", "total", 0).in_flight, 1);
    }

    #[test]
    fn concurrency_and_budget_hold_until_settled() {
        let state = MemoryState::default();
        let window = ("total".to_owned(), None);
        let limits = KeyLimits {
            rpm: None,
            tpm: None,
            max_concurrent: Some(1),
            ..limits()
        };
        state.admit("k", &limits, &ask(0, 0, &window)).unwrap();
        let refused = state.admit("k", &limits, &ask(0, 0, &window)).unwrap_err();
        assert_eq!(refused.limit, Limit::Concurrency);
        state.settle("k", &settlement(0, 0, 999_999_999), 0);
        state.admit("k", &limits, &ask(0, 0, &window)).unwrap();
        state.settle("k", &settlement(0, 0, 1), 0);
        let refused = state.admit("k", &limits, &ask(0, 0, &window)).unwrap_err();
        assert_eq!(refused.limit, Limit::Budget);
        assert_eq!(refused.retry_after, None, "a total budget never comes back");
        assert_eq!(state.usage("k", "total", 0).spend_usd, 1.0);
        // Another window starts from nothing.
        let tomorrow = ("2026-11-30".to_owned(), Some(10));
        state.admit("k", &limits, &ask(0, 0, &tomorrow)).unwrap();
    }

    #[test]
    fn forgotten_keys_are_dropped() {
        let state = MemoryState::default();
        let window = ("total".to_owned(), None);
        state.admit("gone", &limits(), &ask(0, 0, &window)).unwrap();
        state.retain(&["kept".to_owned()]);
        assert_eq!(state.usage("gone", "total", 0).in_flight, 0);
    }
}
