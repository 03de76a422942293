//! Short recent windows of traffic, for the status page (`/admin/status`, `/admin/stats`).
//!
//! A [`Window`] is a fixed ring of [`SECONDS`] one-second slots of atomic counters: requests,
//! errors and (for models) a small log-scale latency histogram. Recording is a few relaxed
//! atomic operations, without a lock; the slot of a new second is cleared by the one caller
//! that wins a compare-and-swap on its second number. A sample racing that clearing may be
//! lost, so the counts are exact only without concurrency at a second's turn: fine for a
//! status page, which is why `/metrics` stays the place for exact counters.
//!
//! [`Recent`] holds one window per configured name only (model labels; configured
//! `provider/model` targets), at most [`MAX_WINDOWS`] of each, built once per config
//! generation (lookups need no lock) and carried over by name across reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::NameMap;

/// Seconds a window keeps (complete seconds are reported; the running one is not).
pub(crate) const SECONDS: usize = 60;
/// Each point's latency percentiles cover this many seconds up to it (one second alone holds
/// too few samples at low traffic).
pub(crate) const SMOOTHING: usize = 5;
/// Latency bins of a model window: bin 0 is under 1 ms, bin `k` is
/// `[2^((k-1)/2), 2^(k/2))` ms, and the last bin holds everything from 2^21 ms (35 min) up.
pub(crate) const LATENCY_BINS: usize = 44;
/// The most windows of each kind (models, targets); names past it have none.
pub(crate) const MAX_WINDOWS: usize = 512;

/// A model's window: requests, errors and latencies.
pub(crate) type ModelWindow = Window<LATENCY_BINS>;
/// A target's window: attempts and failures only.
pub(crate) type TargetWindow = Window<0>;

/// One second's counts.
#[derive(Debug)]
struct Slot<const B: usize> {
    /// The second (since the window's start) the counts belong to.
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU32; B],
}

impl<const B: usize> Slot<B> {
    fn new() -> Self {
        Slot {
            second: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn clear(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for bin in &self.latency {
            bin.store(0, Ordering::Relaxed);
        }
    }
}

/// The last [`SECONDS`] seconds of one name's traffic.
#[derive(Debug)]
pub(crate) struct Window<const B: usize> {
    start: Instant,
    slots: Box<[Slot<B>]>,
}

/// A window's counts, oldest second first, as plain numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counts<const B: usize> {
    pub(crate) requests: Vec<u64>,
    pub(crate) errors: Vec<u64>,
    latency: Vec<[u32; B]>,
}

impl<const B: usize> Window<B> {
    /// An empty window whose first second starts `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Window {
            start: now,
            slots: (0..SECONDS).map(|_| Slot::new()).collect(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn slot(&self, second: u64) -> &Slot<B> {
        // SECONDS fits any integer type; the remainder indexes the ring.
        &self.slots[(second % SECONDS as u64) as usize]
    }

    /// The slot of `second`, cleared first when it still holds an older second; `None` when
    /// it already holds a newer one (the caller's clock reading is stale).
    fn current(&self, second: u64) -> Option<&Slot<B>> {
        let slot = self.slot(second);
        let held = slot.second.load(Ordering::Acquire);
        if held > second {
            return None;
        }
        if held < second
            && slot
                .second
                .compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.clear();
        }
        Some(slot)
    }

    /// Counts one request (or attempt) at `now`; `latency` only in a model window.
    pub(crate) fn record(&self, now: Instant, error: bool, latency: Option<Duration>) {
        let Some(slot) = self.current(self.second(now)) else {
            return;
        };
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(bin) = latency.and_then(|l| slot.latency.get(bin_of(l))) {
            bin.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The [`SECONDS`] complete seconds before `now`, oldest first (zeros before the window
    /// existed).
    pub(crate) fn counts(&self, now: Instant) -> Counts<B> {
        let current = self.second(now);
        let mut counts = Counts {
            requests: Vec::with_capacity(SECONDS),
            errors: Vec::with_capacity(SECONDS),
            latency: Vec::with_capacity(SECONDS),
        };
        for back in (1..=SECONDS as u64).rev() {
            let slot = current.checked_sub(back).map(|s| (s, self.slot(s)));
            let slot = slot.filter(|(s, slot)| slot.second.load(Ordering::Acquire) == *s);
            match slot {
                Some((_, slot)) => {
                    counts.requests.push(slot.requests.load(Ordering::Relaxed));
                    counts.errors.push(slot.errors.load(Ordering::Relaxed));
                    counts.latency.push(std::array::from_fn(|i| {
                        slot.latency[i].load(Ordering::Relaxed)
                    }));
                }
                None => {
                    counts.requests.push(0);
                    counts.errors.push(0);
                    counts.latency.push([0; B]);
                }
            }
        }
        counts
    }
}

impl<const B: usize> Counts<B> {
    /// Requests in the whole window.
    pub(crate) fn total_requests(&self) -> u64 {
        self.requests.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// Errors in the whole window.
    pub(crate) fn total_errors(&self) -> u64 {
        self.errors.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// The latency histogram of the seconds `range` (indexes into the window).
    fn merged(&self, range: std::ops::Range<usize>) -> [u64; B] {
        let mut sum = [0u64; B];
        for second in &self.latency[range] {
            for (total, count) in sum.iter_mut().zip(second) {
                *total = total.saturating_add(u64::from(*count));
            }
        }
        sum
    }
}

/// Errors over requests, `None` without requests.
pub(crate) fn rate(errors: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| errors as f64 / requests as f64)
}

/// The latency bin of `latency` (see [`LATENCY_BINS`]).
fn bin_of(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        return 0;
    }
    // 2 bins per doubling; the float-to-int cast saturates, and the bin is capped below.
    let k = (2.0 * ms.log2()).floor() as usize;
    k.saturating_add(1).min(LATENCY_BINS - 1)
}

/// The lower and upper edge (ms) of bin `k`; the last bin's upper edge is its lower one.
fn edges(k: usize) -> (f64, f64) {
    let at = |k: usize| 2f64.powf(k as f64 / 2.0);
    match k {
        0 => (0.0, 1.0),
        k if k + 1 >= LATENCY_BINS => (at(k - 1), at(k - 1)),
        k => (at(k - 1), at(k)),
    }
}

/// The `q` quantile (0..=1) of a latency histogram, in ms, interpolated linearly inside its
/// bin (as Prometheus' `histogram_quantile` does); `None` when it is empty.
fn quantile(bins: &[u64; LATENCY_BINS], q: f64) -> Option<f64> {
    let total = bins.iter().fold(0u64, |a, b| a.saturating_add(*b));
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0.0;
    for (k, count) in bins.iter().enumerate() {
        let count = *count as f64;
        if count > 0.0 && below + count >= rank {
            let (low, high) = edges(k);
            let within = (rank - below) / count;
            return Some(round2(low + (high - low) * within));
        }
        below += count;
    }
    Some(round2(edges(LATENCY_BINS - 1).0))
}

fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// p50, p95 and p99 (ms) of a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub(crate) struct Percentiles {
    /// Median, ms; null without requests.
    pub(crate) p50_ms: Option<f64>,
    /// 95th percentile, ms; null without requests.
    pub(crate) p95_ms: Option<f64>,
    /// 99th percentile, ms; null without requests.
    pub(crate) p99_ms: Option<f64>,
}

impl Percentiles {
    fn of(bins: &[u64; LATENCY_BINS]) -> Self {
        Percentiles {
            p50_ms: quantile(bins, 0.50),
            p95_ms: quantile(bins, 0.95),
            p99_ms: quantile(bins, 0.99),
        }
    }
}

/// One model's window as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct ModelStats {
    /// The model label (as in the metrics: an alias, a configured `provider/model`,
    /// `provider/*` or `unknown`).
    pub(crate) model: String,
    /// Requests answered in the window.
    pub(crate) requests: u64,
    /// Of those, answered with a 5xx status or a stream that ended in an error event.
    pub(crate) errors: u64,
    /// `errors / requests`; null without requests.
    pub(crate) error_rate: Option<f64>,
    /// Latency (to the last byte) over the whole window.
    pub(crate) latency: Percentiles,
    /// Per second, oldest first.
    pub(crate) series: Series,
}

/// Per-second series of one model, oldest first ([`SECONDS`] points each).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct Series {
    /// Requests answered in each second (= requests per second).
    pub(crate) requests: Vec<u64>,
    /// Errors in each second.
    pub(crate) errors: Vec<u64>,
    /// Median latency (ms) over the [`SMOOTHING`] seconds up to each point; null when none.
    pub(crate) p50_ms: Vec<Option<f64>>,
    /// 95th percentile, likewise.
    pub(crate) p95_ms: Vec<Option<f64>>,
    /// 99th percentile, likewise.
    pub(crate) p99_ms: Vec<Option<f64>>,
}

impl ModelWindow {
    /// What the admin API shows of this window at `now`.
    pub(crate) fn stats(&self, model: &str, now: Instant) -> ModelStats {
        let counts = self.counts(now);
        let (requests, errors) = (counts.total_requests(), counts.total_errors());
        let points: Vec<Percentiles> = (0..SECONDS)
            .map(|end| Percentiles::of(&counts.merged(end.saturating_sub(SMOOTHING - 1)..end + 1)))
            .collect();
        ModelStats {
            model: model.to_owned(),
            requests,
            errors,
            error_rate: rate(errors, requests),
            latency: Percentiles::of(&counts.merged(0..SECONDS)),
            series: Series {
                p50_ms: points.iter().map(|p| p.p50_ms).collect(),
                p95_ms: points.iter().map(|p| p.p95_ms).collect(),
                p99_ms: points.iter().map(|p| p.p99_ms).collect(),
                requests: counts.requests,
                errors: counts.errors,
            },
        }
    }
}

/// Recent windows by configured name, for one config generation.
#[derive(Debug, Default)]
pub(crate) struct Recent<const B: usize> {
    windows: NameMap<String, Arc<Window<B>>>,
}

impl<const B: usize> Recent<B> {
    /// A window for each of `names` (the first [`MAX_WINDOWS`] in order), reusing the ones
    /// `previous` has by the same name.
    pub(crate) fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        previous: Option<&Recent<B>>,
    ) -> Self {
        let now = Instant::now();
        let mut windows = NameMap::default();
        for name in names {
            if windows.len() >= MAX_WINDOWS {
                break;
            }
            let window = previous
                .and_then(|p| p.windows.get(name).cloned())
                .unwrap_or_else(|| Arc::new(Window::new(now)));
            windows.insert(name.to_owned(), window);
        }
        Recent { windows }
    }

    /// The window of `name`, if it has one.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Window<B>>> {
        self.windows.get(name)
    }

    /// Every window, by name (unordered).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Window<B>>)> {
        self.windows
            .iter()
            .map(|(name, window)| (name.as_str(), window))
    }

    /// How many windows there are.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn counts_fall_in_their_second_and_age_out() {
        let window = ModelWindow::new(Instant::now());
        window.record(Instant::now(), false, Some(10 * MS));
        window.record(Instant::now(), true, Some(10 * MS));
        tokio::time::advance(Duration::from_millis(1500)).await;
        window.record(Instant::now(), false, Some(100 * MS));
        tokio::time::advance(Duration::from_millis(600)).await;
        let counts = window.counts(Instant::now());
        assert_eq!(counts.requests.len(), SECONDS);
        assert_eq!(&counts.requests[SECONDS - 2..], [2, 1]);
        assert_eq!(&counts.errors[SECONDS - 2..], [1, 0]);
        assert_eq!(counts.total_requests(), 3);
        // A minute later they are gone, and the ring's slots are reused cleanly.
        tokio::time::advance(Duration::from_secs(SECONDS as u64)).await;
        assert_eq!(window.counts(Instant::now()).total_requests(), 0);
        window.record(Instant::now(), false, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        let counts = window.counts(Instant::now());
        assert_eq!((counts.total_requests(), counts.total_errors()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_clock_reading_is_dropped_not_misfiled() {
        let window = TargetWindow::new(Instant::now());
        let then = Instant::now();
        tokio::time::advance(Duration::from_secs(SECONDS as u64)).await;
        window.record(Instant::now(), false, None);
        // `then` maps to the same slot, which now holds a newer second.
        window.record(then, true, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        let counts = window.counts(Instant::now());
        assert_eq!((counts.total_requests(), counts.total_errors()), (1, 0));
    }

    #[test]
    fn bins_double_every_two() {
        assert_eq!(bin_of(Duration::ZERO), 0);
        assert_eq!(bin_of(Duration::from_micros(999)), 0);
        assert_eq!(bin_of(MS), 1);
        assert_eq!(bin_of(2 * MS), 3);
        assert_eq!(bin_of(Duration::from_secs(3600)), LATENCY_BINS - 1);
        assert_eq!(bin_of(Duration::MAX), LATENCY_BINS - 1);
        for k in 1..LATENCY_BINS - 1 {
            let (low, high) = edges(k);
            assert!(low < high);
            assert_eq!(bin_of(Duration::from_secs_f64(low * 1.0001 / 1000.0)), k);
        }
    }

    #[test]
    fn quantiles_land_in_the_right_bin() {
        let mut bins = [0u64; LATENCY_BINS];
        bins[bin_of(10 * MS)] = 90;
        bins[bin_of(1000 * MS)] = 10;
        let p = Percentiles::of(&bins);
        let (low, high) = edges(bin_of(10 * MS));
        assert!((low..=high).contains(&p.p50_ms.unwrap()), "{p:?}");
        let (low, high) = edges(bin_of(1000 * MS));
        assert!((low..=high).contains(&p.p95_ms.unwrap()), "{p:?}");
        assert!((low..=high).contains(&p.p99_ms.unwrap()), "{p:?}");
        assert_eq!(Percentiles::of(&[0u64; LATENCY_BINS]).p50_ms, None);
    }

    #[tokio::test(start_paused = true)]
    async fn stats_smooth_percentiles_and_rate_errors() {
        let window = ModelWindow::new(Instant::now());
        for error in [false, false, false, true] {
            window.record(Instant::now(), error, Some(20 * MS));
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        let stats = window.stats("fast", Instant::now());
        assert_eq!((stats.requests, stats.errors), (4, 1));
        assert_eq!(stats.error_rate, Some(0.25));
        assert_eq!(stats.series.requests[SECONDS - 3], 4);
        // The sample's second and the seconds after it within SMOOTHING have percentiles.
        assert!(stats.series.p50_ms[SECONDS - 4].is_none());
        assert!(
            stats.series.p50_ms[SECONDS - 3..]
                .iter()
                .all(Option::is_some)
        );
        assert!(stats.latency.p99_ms.unwrap() >= 16.0 && stats.latency.p99_ms.unwrap() <= 23.0);
    }

    #[test]
    fn windows_are_bounded_and_carried_over_by_name() {
        let names: Vec<String> = (0..MAX_WINDOWS + 10).map(|i| format!("m{i}")).collect();
        let first: Recent<0> = Recent::new(names.iter().map(String::as_str), None);
        assert_eq!(first.len(), MAX_WINDOWS);
        let kept = Arc::clone(first.get("m1").unwrap());
        let second: Recent<0> = Recent::new(["m1", "new"], Some(&first));
        assert!(Arc::ptr_eq(second.get("m1").unwrap(), &kept));
        assert!(second.get("m2").is_none());
        assert!(second.get("new").is_some());
    }
}
