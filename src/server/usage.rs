//! Request counters per gateway key, shown by `GET /admin/keys`.
//!
//! One [`KeyUsage`] per configured key, counted by the auth layer when it recognizes the key
//! and held (in flight) by the request's record until the response ends (see
//! `observe::record`). Counters are atomics: the hot path takes no lock. A reload hands a
//! key's counters to the new config when the key keeps its name (see [`carried_over`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::GatewayKey;
use crate::stream::normalize::unix_now;

/// One key's counters.
#[derive(Debug, Default)]
pub(crate) struct KeyUsage {
    /// Requests since the process started.
    total: AtomicU64,
    /// The current UTC minute (minutes since the epoch) in the high 32 bits, and the
    /// requests counted in it in the low 32 bits: one atomic, so a new minute resets the
    /// count without a lock.
    minute: AtomicU64,
    /// Requests whose response has not ended yet.
    in_flight: AtomicU64,
}

/// What `/admin/keys` shows of a key's usage.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub(crate) struct UsageView {
    /// Requests since the gateway started (kept across reloads while the key keeps its name).
    pub(crate) requests_total: u64,
    /// Requests in the current UTC minute.
    pub(crate) requests_this_minute: u64,
    /// Requests (streams included) not finished yet.
    pub(crate) in_flight: u64,
}

impl KeyUsage {
    /// Counts a request now starting; it is in flight until the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.count(current_minute());
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn count(&self, minute: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .minute
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let count = if packed >> 32 == minute {
                    (packed & 0xffff_ffff).saturating_add(1).min(0xffff_ffff)
                } else {
                    1
                };
                Some((minute << 32) | count)
            });
    }

    /// The counters now.
    pub(crate) fn view(&self) -> UsageView {
        self.view_at(current_minute())
    }

    fn view_at(&self, minute: u64) -> UsageView {
        let packed = self.minute.load(Ordering::Relaxed);
        UsageView {
            requests_total: self.total.load(Ordering::Relaxed),
            requests_this_minute: if packed >> 32 == minute {
                packed & 0xffff_ffff
            } else {
                0
            },
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Minutes since the epoch, kept to 32 bits (good for eight thousand years).
fn current_minute() -> u64 {
    (u64::try_from(unix_now()).unwrap_or(0) / 60) & 0xffff_ffff
}

/// A request in flight; dropping it ends the request.
pub(crate) struct InFlight(Arc<KeyUsage>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The counters for `keys`, in order: a key whose name was in `previous` keeps its counters.
/// As many entries as keys, so the set is as bounded as the config.
pub(crate) fn carried_over(
    keys: &[GatewayKey],
    previous: &[(String, Arc<KeyUsage>)],
) -> Vec<(String, Arc<KeyUsage>)> {
    keys.iter()
        .map(|key| {
            let usage = previous
                .iter()
                .find(|(name, _)| *name == key.name)
                .map_or_else(Arc::default, |(_, usage)| usage.clone());
            (key.name.clone(), usage)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_minute_and_in_flight() {
        let usage = Arc::new(KeyUsage::default());
        usage.count(100);
        usage.count(100);
        usage.count(101);
        let view = usage.view_at(101);
        assert_eq!((view.requests_total, view.requests_this_minute), (3, 1));
        assert_eq!(usage.view_at(102).requests_this_minute, 0);
        let guard = usage.start();
        assert_eq!(usage.view().in_flight, 1);
        drop(guard);
        assert_eq!(usage.view().in_flight, 0);
    }
}
