//! The per-request record: filled along the request's way, finished once (when the response
//! body ended, or was dropped because the client left) into one access-log line and the
//! request's metrics.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Method};
use http_body::{Frame, SizeHint};
use metrics::{counter, gauge};
use tokio::time::Instant;

use super::names;
use super::{NONE, UNKNOWN};
use crate::config::Price;
use crate::state::Ticket;

/// Whether the response cache was asked, and what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum CacheUse {
    /// Caching did not apply.
    #[default]
    None,
    Hit,
    Miss,
}

impl CacheUse {
    fn as_str(self) -> &'static str {
        match self {
            CacheUse::None => "none",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
        }
    }
}

/// Retries, fallbacks and hedges of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally {
    /// Attempts started, hedges included.
    pub(crate) attempts: u32,
    /// Further tries of the same target.
    pub(crate) retries: u32,
    /// Moves to another candidate after a failure.
    pub(crate) fallbacks: u32,
    /// Hedge attempts started.
    pub(crate) hedges: u32,
}

/// What is known about one request. Label fields hold configured names only.
#[derive(Debug)]
pub(crate) struct Record {
    /// Plain text (see `server::middleware`), logged as such.
    request_id: HeaderValue,
    method: Method,
    /// The path alone (a query may hold a credential), copied: the request's own bytes would
    /// keep its whole head alive for as long as a stream runs.
    path: String,
    /// `openai` | `nugen` on the chat paths; only those count in the request metrics.
    ingress: Option<&'static str>,
    /// The key's name.
    pub(crate) key: Option<Arc<str>>,
    /// The model label (see `Router::model_label`).
    pub(crate) model: Option<Arc<str>>,
    /// The label's recent window (status page), when it has one.
    pub(crate) window: Option<Arc<super::window::ModelWindow>>,
    /// The provider that answered (or whose error the client got).
    pub(crate) provider: Option<String>,
    pub(crate) upstream_model: Option<String>,
    pub(crate) stream: bool,
    pub(crate) tally: Tally,
    pub(crate) cache: CacheUse,
    /// Prompt and completion tokens, when the answer reported them.
    pub(crate) usage: Option<(u64, u64)>,
    /// Time spent waiting on upstreams before the response.
    pub(crate) upstream_time: Duration,
    /// The first chunk of a stream.
    pub(crate) first_token: Option<Instant>,
    /// A stream that ended with an error event.
    pub(crate) stream_failed: bool,
    /// Counted in `llmgate_active_streams` (an event stream went out).
    stream_active: bool,
    start: Instant,
    /// Status and time of the response head.
    responded: Option<(u16, Instant)>,
    /// The key's admission, settled when the request ends.
    pub(crate) ticket: Option<Ticket>,
    /// The prompt's estimated tokens, for an answer that reports no usage.
    pub(crate) prompt_estimate: u64,
    /// Bytes of answer text, for an answer that reports no usage.
    pub(crate) answer_text_bytes: Option<u64>,
    /// The price of the provider model that answered, if it has one.
    pub(crate) price: Option<Price>,
}

/// A shared handle on a request's record, for the code along the request's way.
#[derive(Debug, Clone)]
pub(crate) struct Observed(Arc<Mutex<Record>>);

impl Observed {
    /// Updates the record.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.lock());
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // Updates are plain assignments: a poisoned record is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Record {
    fn new(request_id: HeaderValue, method: Method, path: String, start: Instant) -> Self {
        let ingress = super::ingress(&path);
        Record {
            request_id,
            method,
            path,
            ingress,
            key: None,
            model: None,
            window: None,
            provider: None,
            upstream_model: None,
            stream: false,
            tally: Tally::default(),
            cache: CacheUse::None,
            usage: None,
            upstream_time: Duration::ZERO,
            first_token: None,
            stream_failed: false,
            stream_active: false,
            start,
            responded: None,
            ticket: None,
            prompt_estimate: 0,
            answer_text_bytes: None,
            price: None,
        }
    }
}

/// Finishes the record exactly once, when dropped: after the last byte when `completed`,
/// else because the client left (or the server dropped the connection).
#[derive(Debug)]
pub(crate) struct Finish {
    observed: Observed,
    completed: bool,
}

impl Finish {
    /// Starts the record of a request; counts it as active.
    pub(crate) fn start(
        request_id: HeaderValue,
        method: Method,
        path: String,
        start: Instant,
    ) -> Self {
        let record = Record::new(request_id, method, path, start);
        if let Some(ingress) = record.ingress {
            super::per_ingress(ingress).active.increment(1.0);
        }
        Finish {
            observed: Observed(Arc::new(Mutex::new(record))),
            completed: false,
        }
    }

    /// The handle for the handlers.
    pub(crate) fn observed(&self) -> Observed {
        self.observed.clone()
    }

    /// The response head is out: wraps its body so the record finishes when the body does.
    pub(crate) fn respond(self, response: axum::response::Response) -> axum::response::Response {
        let status = response.status().as_u16();
        let is_event_stream = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let stream_active = {
            let mut record = self.observed.lock();
            record.responded = Some((status, Instant::now()));
            record.stream_active = record.stream && is_event_stream;
            record.stream_active
        };
        if stream_active {
            gauge!(names::ACTIVE_STREAMS).increment(1.0);
        }
        let (parts, body) = response.into_parts();
        axum::response::Response::from_parts(
            parts,
            Body::new(ObservedBody {
                inner: body,
                finish: self,
            }),
        )
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let mut record = self.observed.lock();
        let ending = Ending::of(&record, self.completed, Instant::now());
        let spent = Spent::of(&record);
        access_line(&record, &ending, &spent);
        if let Some(ingress) = record.ingress {
            record_metrics(&record, ingress, &ending, &spent);
        }
        if let Some(ticket) = record.ticket.take() {
            ticket.settle(spent.tokens(), spent.nano_usd);
        }
    }
}

/// What a request used: its tokens (reported, else estimated from its text) and their cost.
/// A cache hit uses nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Spent {
    prompt: u64,
    completion: u64,
    nano_usd: u64,
    /// No price applied to these tokens.
    unpriced: bool,
}

impl Spent {
    fn of(record: &Record) -> Self {
        if record.cache == CacheUse::Hit {
            return Spent::default();
        }
        let counted = record.usage.or_else(|| {
            record
                .answer_text_bytes
                .map(|bytes| (record.prompt_estimate, bytes / 4))
        });
        let Some((prompt, completion)) = counted else {
            return Spent::default();
        };
        Spent {
            prompt,
            completion,
            nano_usd: record
                .price
                .map_or(0, |price| price.nano_usd(prompt, completion)),
            unpriced: record.price.is_none(),
        }
    }

    fn tokens(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// A response body that finishes its request's record when it ends or is dropped.
struct ObservedBody {
    inner: Body,
    finish: Finish,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.finish.completed = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The connection need not poll a body past its last frame when the body says it has ended.
        if self.inner.is_end_stream() {
            self.finish.completed = true;
        }
    }
}

/// How a request ended, derived once for both the access line and the metrics.
struct Ending {
    /// The status sent, or 499 when the client left before the response head.
    status: u16,
    outcome: &'static str,
    duration: Duration,
    overhead: Duration,
    ttft: Option<Duration>,
}

/// Status of a request whose client left before the response (nginx's convention).
const CLIENT_CLOSED: u16 = 499;

impl Ending {
    fn of(record: &Record, completed: bool, now: Instant) -> Self {
        let (status, head_at) = record.responded.unwrap_or((CLIENT_CLOSED, now));
        let outcome = if !completed || record.responded.is_none() {
            "client_closed"
        } else if status >= 400 || record.stream_failed {
            "error"
        } else {
            "ok"
        };
        Ending {
            status,
            outcome,
            duration: now.saturating_duration_since(record.start),
            overhead: head_at
                .saturating_duration_since(record.start)
                .saturating_sub(record.upstream_time),
            ttft: record
                .first_token
                .filter(|_| record.stream)
                .map(|t| t.saturating_duration_since(record.start)),
        }
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// One line on target `llmgate::access`: names and numbers only, never keys or text.
fn access_line(record: &Record, ending: &Ending, spent: &Spent) {
    let (prompt_tokens, completion_tokens) = record.usage.unzip();
    tracing::info!(
        target: "llmgate::access",
        request_id = record.request_id.to_str().unwrap_or_default(),
        method = record.method.as_str(),
        path = record.path.as_str(),
        key = record.key.as_deref().unwrap_or(NONE),
        ingress = record.ingress.unwrap_or(NONE),
        model = record.model.as_deref().unwrap_or(UNKNOWN),
        provider = record.provider.as_deref().unwrap_or(NONE),
        upstream_model = record.upstream_model.as_deref().unwrap_or(""),
        status = ending.status,
        stream = record.stream,
        attempts = record.tally.attempts,
        cache = record.cache.as_str(),
        prompt_tokens,
        completion_tokens,
        spend_usd = spent.nano_usd as f64 / 1e9,
        duration_ms = millis(ending.duration),
        overhead_ms = millis(ending.overhead),
        ttft_ms = ending.ttft.map(millis),
        outcome = ending.outcome,
        "request"
    );
}

/// The request's metrics (chat paths only).
fn record_metrics(record: &Record, ingress: &'static str, ending: &Ending, spent: &Spent) {
    use names::*;
    // A cache hit did not reach the provider: its latency is not the provider's.
    let provider = match (&record.provider, record.cache) {
        (Some(p), CacheUse::None | CacheUse::Miss) => p.as_str(),
        _ => NONE,
    };
    let series = super::series::of(super::series::Labels {
        ingress,
        model: record.model.as_deref().unwrap_or(UNKNOWN),
        provider,
        key: record.key.as_deref().unwrap_or(NONE),
    });
    series.requests(ending.status).increment(1);
    series.duration.record(ending.duration.as_secs_f64());
    if let Some(window) = &record.window {
        let error = ending.status >= 500 || record.stream_failed;
        window.record(Instant::now(), error, Some(ending.duration));
    }
    let per_ingress = super::per_ingress(ingress);
    per_ingress.overhead.record(ending.overhead.as_secs_f64());
    per_ingress.active.decrement(1.0);
    if record.stream_active {
        gauge!(ACTIVE_STREAMS).decrement(1.0);
    }
    if let Some(ttft) = ending.ttft {
        series.ttft.record(ttft.as_secs_f64());
    }
    if spent.tokens() > 0 {
        series.prompt_tokens.increment(spent.prompt);
        series.completion_tokens.increment(spent.completion);
        if spent.unpriced {
            series.unpriced().increment(spent.tokens());
        }
        super::add_spend(record.key.as_deref().unwrap_or(NONE), spent.nano_usd);
    }
    let tally = record.tally;
    for (name, count) in [
        (RETRIES, tally.retries),
        (FALLBACKS, tally.fallbacks),
        (HEDGES, tally.hedges),
    ] {
        if count > 0 {
            let model = record.model.as_deref().unwrap_or(UNKNOWN).to_owned();
            counter!(name, "model" => model).increment(u64::from(count));
        }
    }
    if record.cache != CacheUse::None {
        counter!(CACHE, "result" => record.cache.as_str()).increment(1);
    }
}

/// See [`super::bench_record_request`].
pub(crate) fn bench_record_request() {
    let start = Instant::now();
    let finish = Finish::start(
        HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
        Method::POST,
        "/v1/chat/completions".to_owned(),
        start,
    );
    static WINDOW: std::sync::OnceLock<Arc<super::window::ModelWindow>> =
        std::sync::OnceLock::new();
    let window = WINDOW.get_or_init(|| Arc::new(super::window::ModelWindow::new(start)));
    finish.observed().update(|r| {
        r.key = Some(Arc::from("team-a"));
        r.model = Some(Arc::from("fast"));
        r.window = Some(Arc::clone(window));
        r.provider = Some("openai".to_owned());
        r.upstream_model = Some("gpt-4o-mini".to_owned());
        r.tally.attempts = 1;
        r.usage = Some((42, 7));
        r.upstream_time = Duration::from_millis(1);
        r.responded = Some((200, start));
    });
    let mut finish = finish;
    finish.completed = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record::new(
            HeaderValue::from_static("id"),
            Method::POST,
            "/v1/chat/completions".to_owned(),
            Instant::now(),
        )
    }

    #[test]
    fn a_request_without_a_response_is_client_closed() {
        let ending = Ending::of(&record(), false, Instant::now());
        assert_eq!(
            (ending.status, ending.outcome),
            (CLIENT_CLOSED, "client_closed")
        );
    }

    #[test]
    fn outcomes_follow_status_and_stream_errors() {
        let mut r = record();
        r.responded = Some((200, Instant::now()));
        assert_eq!(Ending::of(&r, true, Instant::now()).outcome, "ok");
        assert_eq!(
            Ending::of(&r, false, Instant::now()).outcome,
            "client_closed"
        );
        r.stream_failed = true;
        assert_eq!(Ending::of(&r, true, Instant::now()).outcome, "error");
        r.stream_failed = false;
        r.responded = Some((502, Instant::now()));
        assert_eq!(Ending::of(&r, true, Instant::now()).outcome, "error");
    }

    #[test]
    fn overhead_is_time_to_the_head_minus_upstream_time() {
        let mut r = record();
        r.upstream_time = Duration::from_secs(3600);
        r.responded = Some((200, Instant::now()));
        assert_eq!(
            Ending::of(&r, true, Instant::now()).overhead,
            Duration::ZERO
        );
    }
}
