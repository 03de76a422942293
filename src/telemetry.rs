//! Traces (OpenTelemetry): one span per chat request and one per upstream attempt, with
//! OpenTelemetry's GenAI attributes, exported over OTLP/HTTP (protobuf) when
//! `[telemetry] otlp_endpoint` is set.
//!
//! The spans are `tracing` spans of target [`TARGET`]; the `tracing-opentelemetry` layer
//! ([`Telemetry::layer`]) turns them into OpenTelemetry spans (always-on sampler). The layer
//! is installed only when spans are exported: without an endpoint the spans are disabled
//! callsites that cost next to nothing, and every upstream request still carries a W3C
//! `traceparent` ([`TraceParent`]): the client's trace (or a new one) and a new span id per
//! attempt. Export is batched on the SDK's own thread; an unreachable collector costs a log
//! line, never a request. Attributes hold names, numbers and statuses only: never message
//! text, never a secret.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::error::ProviderError;
use crate::routing::plan::Candidate;
use crate::schema::Usage;

/// The `tracing` target of the exported spans. Only the OpenTelemetry layer takes it; the log
/// output leaves it out, so logs look the same with or without traces.
pub const TARGET: &str = "llmgate::trace";

/// The W3C trace context header.
const TRACEPARENT: axum::http::HeaderName = axum::http::HeaderName::from_static("traceparent");

/// The request id's header: taken from the client, sent upstream and on the response.
pub(crate) const X_REQUEST_ID: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-request-id");

/// How long one export may take, and how long shutdown waits for the last one.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracer provider behind the spans. [`Telemetry::shutdown`] flushes what is buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Whether spans go anywhere (else no OpenTelemetry span is made at all).
    exporting: bool,
}

impl Telemetry {
    /// A provider that exports to `otlp_endpoint` (a base URL; `/v1/traces` is appended), or
    /// only makes span ids (for `traceparent`) without one. Call outside an async runtime.
    pub fn new(otlp_endpoint: Option<&str>) -> anyhow::Result<Self> {
        let resource = Resource::builder()
            .with_service_name("llmgate")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource);
        if let Some(base) = otlp_endpoint {
            builder = builder.with_batch_exporter(LoggedExporter::new(base)?);
        }
        Ok(Telemetry {
            provider: builder.build(),
            exporting: otlp_endpoint.is_some(),
        })
    }

    /// The `tracing` layer that makes OpenTelemetry spans of the [`TARGET`] spans. When they
    /// are not exported its filter takes nothing, so the spans' callsites are disabled.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let targets = if self.exporting {
            Targets::new().with_target(TARGET, tracing::Level::INFO)
        } else {
            Targets::new()
        };
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("llmgate"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(targets)
    }

    /// Exports what is still buffered (waiting at most a few seconds) and stops exporting.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(%error, "flushing spans on shutdown failed");
        }
    }
}

/// Installs ring as the process's TLS crypto provider (idempotent). reqwest (the OTLP
/// exporter's client, and the tests') is built without a bundled provider so that aws-lc-rs
/// stays out of the build; such a client needs this first.
pub fn install_crypto_provider() {
    // `Err` means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The OTLP/HTTP exporter, logging when export starts failing and when it recovers (not
/// every failed batch).
#[derive(Debug)]
struct LoggedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    failing: AtomicBool,
}

impl LoggedExporter {
    fn new(base: &str) -> anyhow::Result<Self> {
        install_crypto_provider();
        let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
        let inner = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        Ok(LoggedExporter {
            inner,
            endpoint,
            failing: AtomicBool::new(false),
        })
    }
}

impl SpanExporter for LoggedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(error) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, %error, spans,
                    "exporting spans failed (dropped; export keeps trying)");
            }
            Err(error) => tracing::debug!(%error, spans, "exporting spans failed"),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "exporting spans works again");
            }
            Ok(()) => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The span of one chat request (`POST <route>`), continuing the trace of an incoming W3C
/// `traceparent`.
pub(crate) fn request_span(route: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(target: TARGET, "chat",
        otel.name = %format_args!("POST {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = Empty,
        llmgate.provider = Empty,
        llmgate.attempts = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed (then there is nothing to link).
        let _ = span.set_parent(parent);
    }
    span
}

/// The W3C trace a request belongs to: the client's `traceparent`'s, or a new one. Used for
/// the upstream `traceparent` when no OpenTelemetry spans are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceParent {
    /// 0: none yet (a new one is made when needed).
    trace_id: u128,
    flags: u8,
}

impl TraceParent {
    /// The trace of a request with `headers`.
    pub(crate) fn of_request(headers: &HeaderMap) -> Self {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .unwrap_or_else(|| TraceParent {
                trace_id: nonzero_u128(),
                flags: 1,
            })
    }

    /// `traceparent` of a new child span of this trace.
    fn child_header(&self) -> String {
        let trace_id = if self.trace_id == 0 {
            nonzero_u128()
        } else {
            self.trace_id
        };
        let span_id = fastrand::u64(1..);
        let mut header = String::with_capacity(55);
        header.push_str("00-");
        push_hex(&mut header, trace_id, 32);
        header.push('-');
        push_hex(&mut header, u128::from(span_id), 16);
        header.push('-');
        push_hex(&mut header, u128::from(self.flags), 2);
        header
    }
}

/// Appends `value`'s lowest `digits` hex digits, zero-padded, to `out` (ids for headers,
/// without `format!`'s machinery).
pub(crate) fn push_hex(out: &mut String, value: u128, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'0'; 32];
    let digits = text.len().min(digits as usize);
    let mut rest = value;
    for slot in text[..digits].iter_mut().rev() {
        *slot = DIGITS[(rest & 0xf) as usize];
        rest >>= 4;
    }
    // Hex digits are ASCII: one push, not one per digit.
    out.push_str(std::str::from_utf8(&text[..digits]).unwrap_or_default());
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, later versions may append fields);
/// `None` when malformed or naming the invalid all-zero ids.
fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id,
        flags: u8::from_str_radix(flags, 16).ok()?,
    })
}

/// The span of attempt number `attempt` of a request, a child of `parent` (the request span).
pub(crate) fn attempt_span(parent: &Span, candidate: &Candidate, attempt: u32) -> Span {
    let model = candidate.upstream_model.as_str();
    tracing::info_span!(target: TARGET, parent: parent, "attempt",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        "error.type" = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = candidate.provider.config.kind.as_str(),
        gen_ai.request.model = model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        http.response.status_code = Empty,
        llmgate.provider = candidate.provider.name.as_str(),
        llmgate.attempt = i64::from(attempt),
    )
}

/// Marks an attempt span failed, with the kind of failure (never its message, which may quote
/// the upstream or the request).
pub(crate) fn attempt_failed(span: &Span, error: Option<&ProviderError>) {
    let kind = match error {
        None => "unsupported",
        Some(ProviderError::Connect(_)) => "connect",
        Some(ProviderError::Timeout(_)) => "timeout",
        Some(ProviderError::Status { status, .. }) => {
            span.record("http.response.status_code", i64::from(*status));
            "status"
        }
        Some(ProviderError::Decode(_)) => "decode",
        Some(ProviderError::Stream(_)) => "stream",
    };
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
}

/// Records the model that answered (as the upstream named it) on `span`.
pub(crate) fn record_response_model(span: &Span, model: &str) {
    span.record("gen_ai.response.model", model);
}

/// Records the token counts of an answer on `span`.
pub(crate) fn record_usage(span: &Span, usage: &Usage) {
    span.record("gen_ai.usage.input_tokens", int(usage.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", int(usage.completion_tokens));
}

/// Records on the request span who answered.
pub(crate) fn record_answered(span: &Span, candidate: &Candidate, attempts: u32) {
    span.record("gen_ai.system", candidate.provider.config.kind.as_str());
    span.record("llmgate.provider", candidate.provider.name.as_str());
    span.record("llmgate.attempts", i64::from(attempts));
}

/// Records the status the client got on the request span.
pub(crate) fn record_status(span: &Span, status: u16) {
    record_http_status(span, status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records an HTTP status on `span`.
pub(crate) fn record_http_status(span: &Span, status: u16) {
    span.record("http.response.status_code", i64::from(status));
}

/// An OpenTelemetry integer (`tracing-opentelemetry` turns a `u64` into a string).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Adds the `traceparent` (and `tracestate`) for an upstream request: the current attempt span's
/// when OpenTelemetry spans are made, else a new span id in the request's `trace`.
pub(crate) fn add_trace_headers(trace: &TraceParent, headers: &mut HeaderMap) {
    let current = Span::current();
    if !current.is_disabled() {
        let cx = current.context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
            return;
        }
    }
    if let Ok(value) = axum::http::HeaderValue::try_from(trace.child_header()) {
        headers.insert(TRACEPARENT, value);
    }
}

/// Spans collected in memory, for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    use super::*;

    /// The finished spans, in the order they ended.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Collected(Arc<Mutex<Vec<SpanData>>>);

    impl Collected {
        pub(crate) fn spans(&self) -> Vec<SpanData> {
            self.0.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl SpanExporter for Collected {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Ok(mut spans) = self.0.lock() {
                spans.extend(batch);
            }
            Ok(())
        }
    }

    /// Sends this thread's spans to the returned collection while the guard lives.
    pub(crate) fn capture() -> (tracing::subscriber::DefaultGuard, Collected) {
        // While at most one dispatcher is registered, tracing-core asks only the registering
        // thread's own dispatcher about a new callsite and caches its answer for every
        // thread: a span first met by a test without a subscriber would stay off for the
        // test that captures. A second dispatcher, kept for the process, makes it ask all.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let collected = Collected::default();
        let telemetry = Telemetry {
            provider: SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOn)
                .with_simple_exporter(collected.clone())
                .build(),
            exporting: true,
        };
        let guard = tracing_subscriber::registry()
            .with(telemetry.layer())
            .set_default();
        (guard, collected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_parsed_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse_traceparent(good).unwrap();
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn hex_is_zero_padded_lowercase() {
        let hex = |value: u128, digits: u32| {
            let mut out = String::new();
            push_hex(&mut out, value, digits);
            out
        };
        assert_eq!(hex(0xab, 4), "00ab");
        assert_eq!(hex(0, 2), "00");
        assert_eq!(hex(u128::MAX, 32), "f".repeat(32));
        assert_eq!(hex(0x1234_5678_9abc_def0, 16), "123456789abcdef0");
        assert_eq!(hex(0x1ff, 2), "ff");
    }

    #[test]
    fn children_keep_the_trace_and_get_new_span_ids() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        let trace = TraceParent::of_request(&headers);
        let (a, b) = (trace.child_header(), trace.child_header());
        assert!(
            a.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && a.ends_with("-00"),
            "{a}"
        );
        assert_ne!(a, b);
        assert!(!a.contains("00f067aa0ba902b7"));
        let fresh = TraceParent::of_request(&HeaderMap::new()).child_header();
        assert_eq!(fresh.len(), 55);
        assert!(parse_traceparent(&fresh).is_some());
    }
}
