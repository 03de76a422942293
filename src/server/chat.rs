//! The chat completion flow both ingress dialects share: parse and validate, check the key's
//! model list, substitute variables, plan the route, answer from the cache or run the plan,
//! normalize, and answer as JSON or as an event stream.
//!
//! For a stream, an attempt lasts until the first upstream chunk: a failure to open, an error
//! as the first event or an empty stream is retried or falls back like any failure, and only
//! then is `200` committed. A first chunk slower than `stream_first_chunk_keepalive_secs`
//! (default 45 s; 0 = never) commits `200` early so keep-alive comments can hold the
//! connection open. After the commit a failure is one error event (see [`crate::stream`]).
//! Every completion response carries `x-llmgate-provider`, `-model`, `-attempts` and
//! `-overhead-ms`, and `x-llmgate-cache` when caching applies.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::AppState;
use super::auth::{Authorized, Caller};
use super::extract::JsonBody;
use super::live::Live;
use super::middleware::Arrival;
use crate::cache::{self, Cached};
use crate::error::{GatewayError, ProviderError};
use crate::observe::record::{CacheUse, Observed};
use crate::providers::{Answer, CallCx, Prepared, Unsupported};
use crate::routing::execute::{AttemptError, Failure, Success, execute};
use crate::routing::plan::{Candidate, Plan};
use crate::routing::variables;
use crate::schema::{ChatRequest, ChatResponse, Usage, parse_client_body};
use crate::state::Admission;
use crate::state::limits::{self, RateHeaders};
use crate::stream::normalize::{ChunkNormalizer, choice_count, normalize_response};
use crate::stream::{OnComplete, SseBody, StreamTiming};
use crate::telemetry;

/// Everything about one chat call besides its body.
pub(crate) struct ChatCall {
    /// The config the request runs on to its end, whatever reloads happen meanwhile.
    pub(crate) state: Arc<Live>,
    /// The authenticated caller.
    pub(crate) caller: Caller,
    /// The client's `X-Session-ID`.
    pub(crate) session_id: Option<String>,
    /// The request id.
    pub(crate) request_id: HeaderValue,
    /// When the gateway received the request.
    pub(crate) start: Instant,
    /// The request's trace span.
    pub(crate) span: Span,
    /// The request's W3C trace (for upstream `traceparent`s without OpenTelemetry spans).
    pub(crate) trace: telemetry::TraceParent,
    /// The request's record (access log and metrics).
    pub(crate) observed: Observed,
}

/// The two chat routes, one per ingress dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatRoute {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /api/v3/inference/chat/completions`.
    Nugen,
}

impl ChatRoute {
    /// The chat route at `path`, if it is one.
    pub(crate) fn of(path: &str) -> Option<Self> {
        [ChatRoute::OpenAi, ChatRoute::Nugen]
            .into_iter()
            .find(|route| route.path() == path)
    }

    pub(crate) fn path(self) -> &'static str {
        match self {
            ChatRoute::OpenAi => "/v1/chat/completions",
            ChatRoute::Nugen => "/api/v3/inference/chat/completions",
        }
    }

    /// The `ingress` label of its metrics.
    pub(crate) fn ingress(self) -> &'static str {
        match self {
            ChatRoute::OpenAi => "openai",
            ChatRoute::Nugen => "nugen",
        }
    }
}

/// Serves a request to a chat route: [`super::middleware::Front`] sends these here rather
/// than to the router, whose matching, extractor plumbing and future wrappers cost about 4k
/// instructions per request, a tenth of the gateway's own work on a JSON request
/// (`benches/load/results`). Any method but `POST` is answered 405 with `Allow: POST`.
pub(crate) async fn serve(
    route: ChatRoute,
    state: AppState,
    request: Request,
    arrival: Arrival,
) -> Response {
    if request.method() != Method::POST {
        let mut answer = super::openai::method_not_allowed(request.uri().clone())
            .await
            .into_response();
        (answer.headers_mut()).insert(header::ALLOW, HeaderValue::from_static("POST"));
        return answer;
    }
    let (parts, body) = request.into_parts();
    let call = match ChatCall::of(&parts, &state, route, &arrival) {
        Ok(call) => call,
        Err(rejection) => return rejection.into_response(),
    };
    let body = JsonBody::read(Request::from_parts(parts, body), &state).await;
    match route {
        ChatRoute::OpenAi => super::openai::chat_completions(call, body)
            .await
            .into_response(),
        ChatRoute::Nugen => super::nugen::chat_completions(call, body)
            .await
            .into_response(),
    }
}

impl ChatCall {
    /// Checks the key first ([`Authorized`]), so a refused request costs no more.
    fn of(
        parts: &Parts,
        state: &AppState,
        route: ChatRoute,
        arrival: &Arrival,
    ) -> Result<Self, GatewayError> {
        let Authorized { caller, live } = Authorized::check(&parts.headers, Some(arrival), state)?;
        let session_id = parts
            .headers
            .get("x-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let span = telemetry::request_span(route.path(), &parts.headers);
        let trace = telemetry::TraceParent::of_request(&parts.headers);
        Ok(ChatCall {
            state: live,
            caller,
            session_id,
            request_id: arrival.id.clone(),
            start: arrival.start,
            span,
            trace,
            observed: arrival.observed.clone(),
        })
    }
}

/// Answers one chat completion request (or its body's rejection), in its trace span (which a
/// stream's body keeps open until the stream ends).
pub(crate) async fn complete(
    call: ChatCall,
    body: Result<Bytes, GatewayError>,
) -> Result<Response, GatewayError> {
    let span = call.span.clone();
    // Boxed: the router moves the handler's future a few times, and this one is kilobytes.
    let answer = Box::pin(answer(call, body)).instrument(span.clone()).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    telemetry::record_status(&span, status.as_u16());
    answer
}

async fn answer(
    call: ChatCall,
    body: Result<Bytes, GatewayError>,
) -> Result<Response, GatewayError> {
    let mut request = parse_client_body(body?)?;
    call.span
        .record("gen_ai.request.model", request.model.as_str());
    let model = call.state.router.model_label(&request.model);
    let window = call.state.router.model_window(&model);
    call.observed.update(|r| {
        r.model = Some(model);
        r.window = window;
        r.stream = request.is_stream();
    });
    check_allowed(&call, &request)?;
    variables::apply(&mut request, call.state.server.max_body_bytes)?;
    let session = call.session_id.clone().or_else(|| orq_thread_id(&request));
    let plan = call.state.router.plan(&request, session.as_deref())?;
    let rate_headers = admit(&call, &request).await?;
    let mut answer = route(&call, &plan, &request).await?;
    if let Some(headers) = rate_headers {
        headers.apply(answer.headers_mut());
    }
    Ok(answer)
}

/// Admits the request under its key's limits (a cache hit counts as a request too), or
/// refuses it before anything is sent upstream. The admission's ticket goes in the
/// request's record, which settles it when the request ends. Returns the `x-ratelimit-*`
/// headers for a key with limits.
async fn admit(
    call: &ChatCall,
    request: &ChatRequest,
) -> Result<Option<RateHeaders>, GatewayError> {
    let Some(key) = call.caller.key(&call.state) else {
        return Ok(None);
    };
    let name: Arc<str> = Arc::from(key.name.as_str());
    let prompt = limits::prompt_estimate(request);
    let admission = call
        .state
        .state
        .admit(&name, &key.limits, limits::reservation(prompt, request))
        .await;
    match admission {
        Admission::Admitted(ticket) => {
            let headers = ticket.headers;
            call.observed.update(|r| {
                r.prompt_estimate = prompt;
                r.ticket = Some(ticket);
            });
            Ok(key.limits.any().then_some(headers))
        }
        Admission::Refused(refusal) => {
            crate::observe::rate_limited(&key.name, refusal.limit.label());
            Err(GatewayError::RateLimited {
                code: refusal.limit.code(),
                message: refusal.limit.message(),
                retry_after: refusal.retry_after.map(|secs| secs.to_string()),
                headers: refusal.headers.pairs(),
            })
        }
        Admission::Unavailable => Err(GatewayError::StateUnavailable),
        Admission::Unlimited => Ok(None),
    }
}

/// Answers from the cache or runs the plan.
async fn route(
    call: &ChatCall,
    plan: &Plan,
    request: &ChatRequest,
) -> Result<Response, GatewayError> {
    // Looked up only after the key's allow-list passed, so a hit is never an answer the
    // caller could not have asked for.
    let scope = call.caller.cache_scope(&call.state);
    let cache_key = plan.cache_ttl.map(|_| cache::key(request, scope));
    if let Some(key) = &cache_key
        && let Some(hit) = cache_lookup(call, key).await
    {
        call.observed.update(|r| r.cache = CacheUse::Hit);
        // Boxed: a hit is the rarer path, and replaying takes most of this future.
        return Box::pin(replay(call, request, &hit)).await;
    }
    if cache_key.is_some() {
        call.observed.update(|r| r.cache = CacheUse::Miss);
    }
    let cache = cache_key.zip(plan.cache_ttl);
    let mut answer = if request.is_stream() {
        stream(call, plan, request, cache).await?
    } else {
        whole(call, plan, request, cache).await?
    };
    if plan.cache_ttl.is_some() {
        answer
            .headers_mut()
            .insert("x-llmgate-cache", HeaderValue::from_static("miss"));
    }
    Ok(answer)
}

/// The cached answer under `key`: in the shared state when it holds the cache (Redis),
/// else in this process's store.
async fn cache_lookup(call: &ChatCall, key: &[u8]) -> Option<Arc<Cached>> {
    let shared = &call.state.state;
    if shared.holds_cache() {
        shared.cache_get(key).await
    } else {
        call.state.cache.get(key)
    }
}

/// Stores an answer where lookups find it.
fn cache_store(live: &Live, key: Vec<u8>, cached: Cached, ttl: Duration) {
    if live.state.holds_cache() {
        live.state.cache_put(key, &cached, ttl);
    } else {
        live.cache.insert(key, cached, ttl);
    }
}

/// Every model name the request names must be allowed for the caller's key.
fn check_allowed(call: &ChatCall, request: &ChatRequest) -> Result<(), GatewayError> {
    let fallbacks = request.fallbacks.iter().flatten().map(|f| f.model.as_str());
    let balanced = request
        .load_balancer
        .iter()
        .flat_map(|b| b.models.iter().map(|m| m.model.as_str()));
    let names = std::iter::once(request.model.as_str())
        .chain(fallbacks)
        .chain(balanced);
    for name in names {
        if !call.caller.allows(&call.state, name) {
            return Err(GatewayError::ModelNotAllowed(name.to_owned()));
        }
    }
    Ok(())
}

/// orq's `orq.thread.id`, the other way to name a conversation.
fn orq_thread_id(request: &ChatRequest) -> Option<String> {
    let id = request
        .extra
        .get("orq")?
        .get("thread")?
        .get("id")?
        .as_str()?;
    Some(id.to_owned())
}

/// Translates the request for one candidate; with `strict_params`, a field the provider
/// would drop makes the candidate unable to take the request.
fn prepare(
    candidate: &Candidate,
    request: &ChatRequest,
    cx: &CallCx,
) -> Result<Prepared, Unsupported> {
    let provider = &candidate.provider;
    let prepared = provider.adapter.prepare(request, cx)?;
    if provider.config.strict_params && !prepared.dropped.is_empty() {
        let fields: Vec<String> = prepared.dropped.iter().map(|f| format!("`{f}`")).collect();
        return Err(Unsupported {
            param: prepared.dropped[0].clone(),
            message: format!(
                "provider `{}` does not accept {} (it has strict_params = true)",
                provider.name,
                fields.join(", ")
            ),
        });
    }
    Ok(prepared)
}

fn call_cx(call: &ChatCall, candidate: &Candidate) -> CallCx {
    CallCx {
        upstream_model: candidate.upstream_model.clone(),
        session_id: call.session_id.clone(),
        request_id: Some(call.request_id.clone()),
        trace: call.trace,
    }
}

/// Where an answer came from, for the gateway headers.
struct Answered<'a> {
    provider: &'a str,
    upstream_model: &'a str,
    attempts: u32,
    dropped: &'a [String],
    /// Time spent waiting on upstreams (attempts, backoffs), not the gateway's.
    upstream_time: Duration,
}

impl<'a> Answered<'a> {
    fn by(
        candidate: &'a Candidate,
        attempts: u32,
        dropped: &'a [String],
        upstream_time: Duration,
    ) -> Self {
        Answered {
            provider: &candidate.provider.name,
            upstream_model: &candidate.upstream_model,
            attempts,
            dropped,
            upstream_time,
        }
    }
}

/// A cache entry for an answer `candidate` gave.
fn cached(candidate: &Candidate, response: ChatResponse) -> Cached {
    Cached {
        response,
        provider: candidate.provider.name.clone(),
        upstream_model: candidate.upstream_model.clone(),
    }
}

async fn whole(
    call: &ChatCall,
    plan: &Plan,
    request: &ChatRequest,
    cache: Option<(Vec<u8>, Duration)>,
) -> Result<Response, GatewayError> {
    let routing_start = Instant::now();
    let result = execute(plan, &call.state.router.health, |candidate, _timeout| {
        let cx = call_cx(call, candidate);
        let keep = cache.is_some();
        async move {
            let prepared = prepare(candidate, request, &cx).map_err(AttemptError::Unsupported)?;
            let answer = candidate
                .provider
                .adapter
                .chat(request, &prepared, &cx)
                .await?;
            // Inside the attempt: an unusable answer is retried like any failure.
            let answer = Normalized::from(answer, request, keep)?;
            trace_answer(
                &Span::current(),
                &answer.upstream_model,
                answer.usage.as_ref(),
            );
            Ok((answer, prepared.dropped))
        }
    })
    .await;
    let upstream_time = routing_start.elapsed();
    let Success {
        value: (answer, dropped),
        candidate,
        attempts,
        ..
    } = note_result(call, result, upstream_time)?;
    telemetry::record_answered(&call.span, &candidate, attempts);
    trace_answer(&call.span, &answer.upstream_model, answer.usage.as_ref());
    call.observed
        .update(|r| r.answer_text_bytes = Some(answer.text_bytes));
    note_usage(call, answer.usage.as_ref());
    if let Some((key, ttl)) = cache
        && let Some(response) = answer.parsed.filter(is_complete)
    {
        cache_store(&call.state, key, cached(&candidate, response), ttl);
    }
    let body = answer.body;
    let answered = Answered::by(&candidate, attempts, &dropped, upstream_time);
    Ok(json_answer(call, body, &answered))
}

async fn stream(
    call: &ChatCall,
    plan: &Plan,
    request: &ChatRequest,
    cache: Option<(Vec<u8>, Duration)>,
) -> Result<Response, GatewayError> {
    let settings = &call.state.server;
    let routing_start = Instant::now();
    let total_deadline = plan.total_timeout.map(|t| routing_start + t);
    let cache = &cache;
    let result = execute(plan, &call.state.router.health, |candidate, timeout| {
        let cx = call_cx(call, candidate);
        async move {
            let prepared = prepare(candidate, request, &cx).map_err(AttemptError::Unsupported)?;
            let attempt_deadline = Instant::now() + timeout;
            let upstream = candidate
                .provider
                .adapter
                .chat_stream(request, &prepared, &cx)
                .await?;
            let timing = StreamTiming {
                keepalive: settings.stream_keepalive,
                idle_timeout: settings.stream_idle_timeout,
                deadline: total_deadline.map_or(attempt_deadline, |d| d.min(attempt_deadline)),
                attempt_timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let normalizer = ChunkNormalizer::new(
                &request.model,
                request.include_usage(),
                choice_count(request),
            );
            let mut body = SseBody::new(upstream, normalizer, &candidate.provider.name, timing);
            // The attempt and request spans end with the stream; usage is recorded on arrival.
            body.trace(vec![Span::current(), call.span.clone()]);
            if let Some((key, ttl)) = cache {
                // Recording starts before the first chunk, which `open` consumes.
                body.record(store_in_cache(call, candidate, key.clone(), *ttl));
            }
            body.open(settings.stream_first_chunk_keepalive).await?;
            Ok((body, prepared.dropped))
        }
    })
    .await;
    let upstream_time = routing_start.elapsed();
    let Success {
        value: (mut body, dropped),
        candidate,
        attempts,
        ..
    } = note_result(call, result, upstream_time)?;
    telemetry::record_answered(&call.span, &candidate, attempts);
    body.observe(call.observed.clone());
    let answered = Answered::by(&candidate, attempts, &dropped, upstream_time);
    Ok(sse_answer(call, body, &answered))
}

/// Records the model that answered and its token counts on `span`.
fn trace_answer(span: &Span, upstream_model: &str, usage: Option<&crate::schema::Usage>) {
    telemetry::record_response_model(span, upstream_model);
    if let Some(usage) = usage {
        telemetry::record_usage(span, usage);
    }
}

/// Notes where the plan went (or the provider whose error the client gets) in the record.
fn note_result<T>(
    call: &ChatCall,
    result: Result<Success<T>, Failure>,
    upstream_time: Duration,
) -> Result<Success<T>, GatewayError> {
    call.observed.update(|r| {
        r.upstream_time = upstream_time;
        match &result {
            Ok(success) => {
                let candidate = &success.candidate;
                r.tally = success.tally;
                r.provider = Some(candidate.provider.name.clone());
                r.upstream_model = Some(candidate.upstream_model.clone());
                r.price = candidate.provider.config.price(&candidate.upstream_model);
            }
            Err(failure) => {
                r.tally = failure.tally;
                if let GatewayError::Upstream { provider, .. } = &failure.error {
                    r.provider = Some(provider.clone());
                }
            }
        }
    });
    result.map_err(|f| f.error)
}

fn note_usage(call: &ChatCall, usage: Option<&Usage>) {
    if let Some(usage) = usage {
        let counts = (usage.prompt_tokens, usage.completion_tokens);
        call.observed.update(|r| r.usage = Some(counts));
    }
}

/// A whole answer, normalized: the client's body and what the gateway notes of it.
struct Normalized {
    body: Vec<u8>,
    upstream_model: String,
    usage: Option<Usage>,
    /// Bytes of answer text, for settling an answer that reports no usage.
    text_bytes: u64,
    /// The answer parsed, when it was asked for (to be cached).
    parsed: Option<ChatResponse>,
}

impl Normalized {
    /// Normalizes `answer` for `request`, through the fast path when the answer is in shape
    /// and need not be kept parsed (`keep`).
    fn from(mut answer: Answer, request: &ChatRequest, keep: bool) -> Result<Self, ProviderError> {
        let choices = choice_count(request);
        if let Answer::InShape(fast) = &mut answer
            && !keep
            && let Some(body) = fast.client_body(&request.model, choices)
        {
            return Ok(Normalized {
                body,
                upstream_model: std::mem::take(&mut fast.model),
                usage: fast.usage.take(),
                text_bytes: fast.text_bytes,
                parsed: None,
            });
        }
        let mut response = answer.into_parsed()?;
        let upstream_model = response.model.clone();
        normalize_response(&mut response, &request.model, choices)?;
        let text_bytes = response
            .choices
            .iter()
            .filter_map(|c| c.message.content.as_ref())
            .map(|text| text.len() as u64)
            .fold(0u64, u64::saturating_add);
        // Serializing plain data into a Vec cannot fail.
        let body = serde_json::to_vec(&response).unwrap_or_default();
        Ok(Normalized {
            body,
            upstream_model,
            usage: response.usage.clone(),
            text_bytes,
            parsed: keep.then_some(response),
        })
    }
}

/// Whether an answer is worth caching: it has choices and every one finished.
fn is_complete(response: &ChatResponse) -> bool {
    !response.choices.is_empty() && response.choices.iter().all(|c| c.finish_reason.is_some())
}

/// Stores a stream's whole answer once it completes.
fn store_in_cache(
    call: &ChatCall,
    candidate: &Candidate,
    key: Vec<u8>,
    ttl: Duration,
) -> OnComplete {
    let state = call.state.clone();
    let candidate = candidate.clone();
    Box::new(move |response| cache_store(&state, key, cached(&candidate, response), ttl))
}

/// Answers from the cache, as JSON or as a replayed stream.
async fn replay(
    call: &ChatCall,
    request: &ChatRequest,
    hit: &Arc<Cached>,
) -> Result<Response, GatewayError> {
    let answered = Answered {
        provider: &hit.provider,
        upstream_model: &hit.upstream_model,
        attempts: 0,
        dropped: &[],
        upstream_time: Duration::ZERO,
    };
    call.observed.update(|r| {
        r.provider = Some(hit.provider.clone());
        r.upstream_model = Some(hit.upstream_model.clone());
    });
    let mut answer = if request.is_stream() {
        let chunks = cache::replay_chunks(&hit.response);
        let upstream = Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(|chunk| Ok(chunk.into())),
        ));
        let settings = &call.state.server;
        let timing = StreamTiming {
            keepalive: settings.stream_keepalive,
            idle_timeout: settings.stream_idle_timeout,
            deadline: Instant::now() + settings.stream_idle_timeout,
            attempt_timeout_ms: 0,
        };
        let normalizer = ChunkNormalizer::new(
            &request.model,
            request.include_usage(),
            choice_count(request),
        );
        let mut body = SseBody::new(upstream, normalizer, &hit.provider, timing);
        body.observe(call.observed.clone());
        // A replay is all there at once: its first chunk is always ready.
        body.open(None)
            .await
            .map_err(|error| GatewayError::Upstream {
                provider: hit.provider.clone(),
                error,
            })?;
        sse_answer(call, body, &answered)
    } else {
        note_usage(call, hit.response.usage.as_ref());
        let body =
            serde_json::to_vec(&hit.response).map_err(|e| GatewayError::Internal(e.to_string()))?;
        json_answer(call, body, &answered)
    };
    answer
        .headers_mut()
        .insert("x-llmgate-cache", HeaderValue::from_static("hit"));
    Ok(answer)
}

fn json_answer(call: &ChatCall, body: Vec<u8>, answered: &Answered) -> Response {
    completion(Body::from(body), "application/json", call, answered)
}

fn sse_answer(call: &ChatCall, body: SseBody, answered: &Answered) -> Response {
    let mut answer = completion(Body::from_stream(body), "text/event-stream", call, answered);
    let headers = answer.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    answer
}

/// A completion's answer: `body` of `content_type`, with the gateway's headers in a header
/// map made once.
fn completion(
    body: Body,
    content_type: &'static str,
    call: &ChatCall,
    answered: &Answered,
) -> Response {
    let mut answer = Response::new(body);
    let headers = answer.headers_mut();
    headers.reserve(ANSWER_HEADERS);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    gateway_headers(headers, call, answered);
    answer
}

/// Room for a completion's headers, so the map is made once: the content's type (and a
/// stream's two more), the gateway's five, and `x-request-id`, a cache's and the key's
/// limits added on the way out.
const ANSWER_HEADERS: usize = 16;

/// The gateway's own response headers (names parsed once, here).
const X_LLMGATE_PROVIDER: HeaderName = HeaderName::from_static("x-llmgate-provider");
const X_LLMGATE_MODEL: HeaderName = HeaderName::from_static("x-llmgate-model");
const X_LLMGATE_ATTEMPTS: HeaderName = HeaderName::from_static("x-llmgate-attempts");
const X_LLMGATE_OVERHEAD_MS: HeaderName = HeaderName::from_static("x-llmgate-overhead-ms");
const X_LLMGATE_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-llmgate-dropped-params");

fn gateway_headers(headers: &mut HeaderMap, call: &ChatCall, answered: &Answered) {
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"));
    headers.insert(X_LLMGATE_PROVIDER, text(answered.provider));
    headers.insert(X_LLMGATE_MODEL, text(answered.upstream_model));
    headers.insert(X_LLMGATE_ATTEMPTS, HeaderValue::from(answered.attempts));
    let overhead = call.start.elapsed().saturating_sub(answered.upstream_time);
    headers.insert(X_LLMGATE_OVERHEAD_MS, milliseconds(overhead));
    if !answered.dropped.is_empty() {
        headers.insert(X_LLMGATE_DROPPED_PARAMS, text(&answered.dropped.join(", ")));
    }
}

/// `duration` in milliseconds with three decimals (`0.125`), written without float
/// formatting.
fn milliseconds(duration: Duration) -> HeaderValue {
    let micros = duration.as_micros();
    let mut whole = itoa::Buffer::new();
    let whole = whole.format(micros / 1000);
    let fraction = micros % 1000;
    let mut text = Vec::with_capacity(whole.len() + 4);
    text.extend_from_slice(whole.as_bytes());
    text.push(b'.');
    for unit in [100, 10, 1] {
        // A digit: below 10.
        text.push(b'0' + (fraction / unit % 10) as u8);
    }
    HeaderValue::from_maybe_shared(Bytes::from(text)).unwrap_or(HeaderValue::from_static("0.000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_milliseconds_with_three_decimals() {
        let shown = |d: Duration| milliseconds(d).to_str().unwrap().to_owned();
        assert_eq!(shown(Duration::ZERO), "0.000");
        assert_eq!(shown(Duration::from_nanos(125_999)), "0.125");
        assert_eq!(shown(Duration::from_micros(1_234_567)), "1234.567");
        assert_eq!(shown(Duration::from_millis(7)), "7.000");
    }

    #[test]
    fn chat_routes_are_their_exact_paths() {
        for route in [ChatRoute::OpenAi, ChatRoute::Nugen] {
            assert_eq!(ChatRoute::of(route.path()), Some(route));
        }
        assert_eq!(ChatRoute::OpenAi.ingress(), "openai");
        assert_eq!(ChatRoute::Nugen.ingress(), "nugen");
        for other in [
            "/v1/chat/completions/",
            "/v1/chat",
            "/V1/chat/completions",
            "",
            "/",
        ] {
            assert_eq!(ChatRoute::of(other), None, "{other}");
        }
    }
}
