//! Observability: Prometheus metrics (`GET /metrics`) and the access log.
//!
//! Metrics go through the `metrics` facade into one process-wide
//! `metrics-exporter-prometheus` recorder, installed by [`install`] and rendered by the
//! `/metrics` handler (no listener of its own). Two families are written at scrape time
//! instead, from state the gateway already has: `llmgate_target_ejected` (the circuit state)
//! and `llmgate_spend_usd_total` (a float counter, which the facade cannot hold).
//!
//! Each request has one record (`record::Record`), filled along the chat flow and finished once,
//! when the response body ends or is dropped: that writes the access-log line and the
//! request's metrics (and counts it in its model's recent window, `window`, which the status
//! page charts), so both always agree. Every label value is a configured name (alias,
//! configured `provider/model`, `provider/*`, provider, key name) or a fixed word, never
//! client text, so the number of series is bounded by the config.

pub(crate) mod record;
mod series;
pub(crate) mod window;

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::NameMap;
use crate::server::ChatRoute;

/// Metric names.
pub(crate) mod names {
    pub(crate) const REQUESTS: &str = "llmgate_requests_total";
    pub(crate) const DURATION: &str = "llmgate_request_duration_seconds";
    pub(crate) const OVERHEAD: &str = "llmgate_overhead_seconds";
    pub(crate) const TTFT: &str = "llmgate_time_to_first_token_seconds";
    pub(crate) const UPSTREAM: &str = "llmgate_upstream_requests_total";
    pub(crate) const TOKENS: &str = "llmgate_tokens_total";
    pub(crate) const SPEND: &str = "llmgate_spend_usd_total";
    pub(crate) const UNPRICED: &str = "llmgate_unpriced_tokens_total";
    pub(crate) const ACTIVE_REQUESTS: &str = "llmgate_active_requests";
    pub(crate) const ACTIVE_STREAMS: &str = "llmgate_active_streams";
    pub(crate) const RETRIES: &str = "llmgate_retries_total";
    pub(crate) const FALLBACKS: &str = "llmgate_fallbacks_total";
    pub(crate) const HEDGES: &str = "llmgate_hedges_total";
    pub(crate) const CACHE: &str = "llmgate_cache_lookups_total";
    pub(crate) const EJECTED: &str = "llmgate_target_ejected";
    pub(crate) const RATELIMIT: &str = "llmgate_ratelimit_rejections_total";
    pub(crate) const RELOADS: &str = "llmgate_config_reloads_total";
    pub(crate) const STATE_UP: &str = "llmgate_state_backend_up";
    pub(crate) const BUILD_INFO: &str = "llmgate_build_info";
    pub(crate) const DISCOVERED: &str = "llmgate_discovered_models";
}

/// The label value of a model that did not resolve, or of a missing provider or key.
pub(crate) const UNKNOWN: &str = "unknown";
pub(crate) const NONE: &str = "none";

/// Buckets of the gateway's own time: 10 µs to 1 s.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];
/// Buckets of request durations and time to first token: 1 ms to 10 minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
    300.0, 600.0,
];
/// How often recorded histogram samples are folded into their buckets: samples wait in a
/// buffer until then, 8 bytes each (at 35k requests/s and two or three histograms, ~150 KB
/// per quarter second). With a second, that buffer was what RSS grew by after a million
/// requests (+12 to +15 %, the same with glibc's malloc); now +1 to +5 %.
const UPKEEP_EVERY: Duration = Duration::from_millis(250);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The series that depend on the ingress only, looked up once (each request uses them).
pub(crate) struct PerIngress {
    pub(crate) active: metrics::Gauge,
    pub(crate) overhead: metrics::Histogram,
}

static PER_INGRESS: OnceLock<[PerIngress; 2]> = OnceLock::new();

/// The ingress-only series of `ingress` (`openai` or `nugen`).
pub(crate) fn per_ingress(ingress: &'static str) -> &'static PerIngress {
    let all = PER_INGRESS.get_or_init(|| {
        install();
        ["openai", "nugen"].map(|ingress| PerIngress {
            active: gauge!(names::ACTIVE_REQUESTS, "ingress" => ingress),
            overhead: histogram!(names::OVERHEAD, "ingress" => ingress),
        })
    });
    &all[usize::from(ingress == "nugen")]
}

/// Installs the process-wide recorder once (later calls return the same handle) and
/// describes every metric.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's) keeps working; then
        // `/metrics` shows only what this handle sees.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("llmgate-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

fn builder() -> PrometheusBuilder {
    let buckets = [
        (names::OVERHEAD, OVERHEAD_BUCKETS),
        (names::DURATION, LATENCY_BUCKETS),
        (names::TTFT, LATENCY_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .expect("bucket lists are not empty");
    }
    builder
}

fn describe() {
    use names::*;
    describe_counter!(
        REQUESTS,
        "Requests answered, by ingress, model, provider, key and HTTP status"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Request duration to the last byte (streams: until the stream ended)"
    );
    describe_histogram!(
        OVERHEAD,
        Unit::Seconds,
        "Time spent in the gateway itself (total minus upstream time)"
    );
    describe_histogram!(
        TTFT,
        Unit::Seconds,
        "Streams: time from the request to the first chunk"
    );
    describe_counter!(
        UPSTREAM,
        "Upstream attempts, by provider and outcome (ok, error, timeout, cancelled)"
    );
    describe_counter!(
        TOKENS,
        "Tokens, by model, provider, key and type (prompt, completion)"
    );
    describe_gauge!(ACTIVE_REQUESTS, "Chat requests in flight");
    describe_gauge!(ACTIVE_STREAMS, "Event streams in flight");
    describe_counter!(RETRIES, "Retries of the same target");
    describe_counter!(FALLBACKS, "Moves to the next candidate after a failure");
    describe_counter!(HEDGES, "Hedge attempts started");
    describe_counter!(CACHE, "Response cache lookups, by result (hit, miss)");
    describe_counter!(
        RATELIMIT,
        "Requests refused by a key's limit (requests, tokens, concurrency, budget)"
    );
    describe_counter!(RELOADS, "Config reloads, by result (ok, error)");
    describe_counter!(
        UNPRICED,
        "Tokens answered by a provider model without a price (they cost 0), by provider"
    );
    describe_gauge!(STATE_UP, "1 while the shared-state backend is reachable");
    describe_gauge!(BUILD_INFO, "Always 1; the version is the label");
}

/// The chat ingress of a path, if it is a chat path.
pub(crate) fn ingress(path: &str) -> Option<&'static str> {
    ChatRoute::of(path).map(ChatRoute::ingress)
}

/// Registers the series that exist before any traffic, so every family shows in the first
/// scrape: zero counters for each key name, configured model name and fixed label value,
/// the state backend (the in-memory one is always up) and the build info.
pub(crate) fn register(key_names: &[String], models: &[std::sync::Arc<str>]) {
    install();
    use names::*;
    for model in models {
        for name in [RETRIES, FALLBACKS, HEDGES] {
            let model = metrics::SharedString::from_shared(std::sync::Arc::clone(model));
            counter!(name, "model" => model).increment(0);
        }
    }
    for name in key_names {
        for limit in ["requests", "tokens", "concurrency", "budget"] {
            counter!(RATELIMIT, "key" => name.clone(), "limit" => limit).increment(0);
        }
    }
    for result in ["ok", "error"] {
        counter!(RELOADS, "result" => result).increment(0);
    }
    for result in ["hit", "miss"] {
        counter!(CACHE, "result" => result).increment(0);
    }
    for ingress in ["openai", "nugen"] {
        gauge!(ACTIVE_REQUESTS, "ingress" => ingress).increment(0.0);
    }
    gauge!(ACTIVE_STREAMS).increment(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Shows whether the shared-state backend answers.
pub(crate) fn state_backend_up(up: bool) {
    install();
    gauge!(names::STATE_UP).set(if up { 1.0 } else { 0.0 });
}

/// Counts a request refused by `key`'s limit (`requests`, `tokens`, `concurrency`, `budget`).
pub(crate) fn rate_limited(key: &str, limit: &'static str) {
    counter!(names::RATELIMIT, "key" => key.to_owned(), "limit" => limit).increment(1);
}

/// Spend so far per key name, in nano-USD (the facade's counters hold integers only, and
/// Prometheus wants USD): written out at scrape time.
static SPEND: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Adds to a key's spend.
pub(crate) fn add_spend(key: &str, nano_usd: u64) {
    if nano_usd == 0 {
        return;
    }
    let mut spend = SPEND.lock().unwrap_or_else(|e| e.into_inner());
    // Entries are key names (configured) or `none`: as bounded as the config.
    match spend.get_mut(key) {
        Some(total) => *total = total.saturating_add(nano_usd),
        None => {
            spend.insert(key.to_owned(), nano_usd);
        }
    }
}

/// Counts a config reload; the reload code calls this after each attempt.
pub fn config_reloaded(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!(names::RELOADS, "result" => result).increment(1);
}

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    Ok,
    Error,
    Timeout,
    /// Dropped before it ended (a hedge lost, the deadline passed, the client left).
    Cancelled,
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// The most providers whose upstream-attempt counters are kept; the map starts over when
/// full (the series stay in the registry).
const MAX_COUNTED_PROVIDERS: usize = 1024;

/// `llmgate_upstream_requests_total` of one provider, by outcome, made on first use.
type ByOutcome = [Option<Counter>; 4];

/// Counts one upstream attempt of `provider` (a configured name). Each counter is looked up
/// in the registry once and kept: building its key costs more than the increment.
pub(crate) fn upstream_attempt(provider: &str, outcome: AttemptOutcome) {
    static COUNTERS: OnceLock<Mutex<NameMap<String, ByOutcome>>> = OnceLock::new();
    let mut counters = COUNTERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    count_attempt(&mut counters, provider, outcome);
}

/// [`upstream_attempt`] in `counters`, which holds at most [`MAX_COUNTED_PROVIDERS`].
fn count_attempt(
    counters: &mut NameMap<String, ByOutcome>,
    provider: &str,
    outcome: AttemptOutcome,
) {
    let count = |slots: &mut ByOutcome| {
        slots[outcome as usize]
            .get_or_insert_with(|| {
                counter!(names::UPSTREAM, "provider" => provider.to_owned(), "outcome" => outcome.as_str())
            })
            .increment(1);
    };
    if let Some(slots) = counters.get_mut(provider) {
        count(slots);
        return;
    }
    if counters.len() >= MAX_COUNTED_PROVIDERS {
        counters.clear();
    }
    let mut slots = ByOutcome::default();
    count(&mut slots);
    counters.insert(provider.to_owned(), slots);
}

/// The `/metrics` text: the recorder's metrics, then the families written from state.
/// `ejected` is every configured target with whether it is ejected now; `keys` the key
/// names (`none` without auth); `discovered` each provider with `discover_models` and how
/// many models its last good list holds.
pub(crate) fn render(
    ejected: &[(String, bool)],
    keys: &[String],
    discovered: &[(String, usize)],
) -> String {
    let mut out = install().render();
    let _ = writeln!(
        out,
        "# HELP {} Models in the provider's last good discovered list (discover_models)",
        names::DISCOVERED
    );
    let _ = writeln!(out, "# TYPE {} gauge", names::DISCOVERED);
    for (provider, count) in discovered {
        let _ = writeln!(
            out,
            "{}{{provider=\"{}\"}} {count}",
            names::DISCOVERED,
            escape(provider)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Spend in USD (this process), by key",
        names::SPEND
    );
    let _ = writeln!(out, "# TYPE {} counter", names::SPEND);
    {
        let spend = SPEND.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            let nano = spend.get(key).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{}{{key=\"{}\"}} {}",
                names::SPEND,
                escape(key),
                nano as f64 / 1e9
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP {} 1 while the target is ejected by its circuit breaker",
        names::EJECTED
    );
    let _ = writeln!(out, "# TYPE {} gauge", names::EJECTED);
    for (target, is_ejected) in ejected {
        let _ = writeln!(
            out,
            "{}{{target=\"{}\"}} {}",
            names::EJECTED,
            escape(target),
            u8::from(*is_ejected)
        );
    }
    out
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// For the benchmark: records the metrics and access line of one typical finished request.
#[doc(hidden)]
pub fn bench_record_request() {
    record::bench_record_request();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn upstream_counters_are_kept_once_per_provider_and_at_most_the_bound() {
        let mut counters = NameMap::default();
        count_attempt(&mut counters, "p", AttemptOutcome::Ok);
        count_attempt(&mut counters, "p", AttemptOutcome::Timeout);
        assert_eq!(counters.len(), 1);
        let kept = counters["p"].iter().filter(|c| c.is_some()).count();
        assert_eq!(kept, 2, "one counter per outcome seen");
        for i in 0..MAX_COUNTED_PROVIDERS {
            count_attempt(&mut counters, &format!("bound-{i}"), AttemptOutcome::Ok);
            assert!(
                counters.len() <= MAX_COUNTED_PROVIDERS,
                "{}",
                counters.len()
            );
        }
        assert_eq!(
            counters.len(),
            1,
            "full: started over with the new provider"
        );
    }

    #[test]
    fn only_chat_paths_have_an_ingress() {
        assert_eq!(ingress("/v1/chat/completions"), Some("openai"));
        assert_eq!(ingress("/api/v3/inference/chat/completions"), Some("nugen"));
        assert_eq!(ingress("/v1/models"), None);
    }
}
