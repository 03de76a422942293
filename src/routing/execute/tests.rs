//! The executor against scripted providers, on paused time: exact attempt counts, backoff,
//! retry-after, fallback order, timeouts, ejection and recovery, hedging, stickiness, weights.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::config::{ModelConfig, ProviderConfig, ProviderKind, RetryConfig, ServerConfig, Target};
use crate::providers::{Answer, CallCx, ChunkStream, Prepared, Provider, ProviderHandle, Registry};
use crate::routing::Router;
use crate::schema::{ChatRequest, ChatResponse};

/// One scripted outcome: after `delay`, this result.
#[derive(Clone)]
struct Step {
    delay: Duration,
    result: Result<&'static str, ProviderError>,
}

fn ok(text: &'static str) -> Step {
    Step {
        delay: Duration::ZERO,
        result: Ok(text),
    }
}

fn slow_ok(delay_ms: u64, text: &'static str) -> Step {
    Step {
        delay: Duration::from_millis(delay_ms),
        result: Ok(text),
    }
}

fn status(code: u16) -> Step {
    fail(ProviderError::Status {
        status: code,
        message: format!("status {code}"),
        code: None,
        retry_after: None,
    })
}

fn slow_status(delay_ms: u64, code: u16) -> Step {
    Step {
        delay: Duration::from_millis(delay_ms),
        ..status(code)
    }
}

fn limited(retry_after: &str) -> Step {
    fail(ProviderError::Status {
        status: 429,
        message: "slow down".into(),
        code: None,
        retry_after: Some(retry_after.into()),
    })
}

fn fail(error: ProviderError) -> Step {
    Step {
        delay: Duration::ZERO,
        result: Err(error),
    }
}

/// A provider that plays a script (its last step repeats) and records when it was called.
#[derive(Default)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Instant>>,
    cancelled: AtomicBool,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Scripted {
            steps: Mutex::new(steps.into()),
            ..Scripted::default()
        })
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    fn next_step(&self) -> Step {
        let mut steps = self.steps.lock().unwrap();
        if steps.len() > 1 {
            steps.pop_front().unwrap()
        } else {
            steps[0].clone()
        }
    }
}

/// Marks the provider cancelled if its call is dropped before finishing.
struct CancelGuard<'a>(&'a AtomicBool, bool);

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Provider for Scripted {
    fn prepare(&self, _: &ChatRequest, _: &CallCx) -> Result<Prepared, Unsupported> {
        Ok(Prepared::default())
    }

    async fn chat(
        &self,
        _: &ChatRequest,
        _: &Prepared,
        _: &CallCx,
    ) -> Result<Answer, ProviderError> {
        self.calls.lock().unwrap().push(Instant::now());
        let step = self.next_step();
        let mut guard = CancelGuard(&self.cancelled, false);
        tokio::time::sleep(step.delay).await;
        guard.1 = true;
        let text = step.result?;
        let response: ChatResponse = serde_json::from_value(json!({"choices": [{"index": 0,
            "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}))
        .unwrap();
        Ok(response.into())
    }

    async fn chat_stream(
        &self,
        _: &ChatRequest,
        _: &Prepared,
        _: &CallCx,
    ) -> Result<ChunkStream, ProviderError> {
        unreachable!("the executor tests use whole answers")
    }
}

struct World {
    router: Router,
}

fn world(
    providers: Vec<(&'static str, Arc<Scripted>)>,
    aliases: Vec<(&str, ModelConfig)>,
    server: ServerConfig,
) -> World {
    world_timed(providers, aliases, server, Duration::from_secs(600))
}

/// A world whose providers have `timeout_ms` = `provider_timeout`.
fn world_timed(
    providers: Vec<(&'static str, Arc<Scripted>)>,
    aliases: Vec<(&str, ModelConfig)>,
    server: ServerConfig,
    provider_timeout: Duration,
) -> World {
    let handles = providers.iter().map(|(name, p)| ProviderHandle {
        name: (*name).to_owned(),
        adapter: p.clone(),
        config: ProviderConfig {
            timeout: provider_timeout,
            ..ProviderConfig::new(ProviderKind::OpenAi)
        },
    });
    let registry = Registry::from_handles(handles);
    let aliases: BTreeMap<String, ModelConfig> = aliases
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    World {
        router: Router::new(registry, aliases, &server),
    }
}

fn alias(targets: &[(&str, f64)], fallbacks: &[&str], attempts: u32) -> ModelConfig {
    ModelConfig {
        targets: targets
            .iter()
            .map(|(p, w)| Target {
                provider: (*p).to_owned(),
                model: "m".to_owned(),
                weight: *w,
            })
            .collect(),
        fallbacks: fallbacks.iter().map(|f| (*f).to_owned()).collect(),
        retry: RetryConfig {
            attempts,
            backoff: Duration::from_millis(100),
            ..RetryConfig::default()
        },
        timeout: None,
        hedge_after: None,
        cache_ttl: None,
    }
}

fn request(body: serde_json::Value) -> ChatRequest {
    let mut body = body;
    body["messages"] = json!([{"role": "user", "content": "hi"}]);
    *crate::schema::parse_and_validate(body.to_string().as_bytes()).unwrap()
}

/// Plans and runs `request`: the answer's text (or the error) and the attempts taken.
async fn run(
    world: &World,
    request: &ChatRequest,
    session: Option<&str>,
) -> (Result<(String, String), GatewayError>, u32) {
    match world.router.plan(request, session) {
        Ok(plan) => run_plan(world, &plan, request).await,
        Err(error) => (Err(error), 0),
    }
}

/// Runs a plan made earlier.
async fn run_plan(
    world: &World,
    plan: &Plan,
    request: &ChatRequest,
) -> (Result<(String, String), GatewayError>, u32) {
    let result = execute(plan, &world.router.health, |candidate, _| {
        let cx = CallCx::default();
        async move {
            let prepared = Prepared::default();
            Ok(candidate
                .provider
                .adapter
                .chat(request, &prepared, &cx)
                .await?
                .into_parsed()?)
        }
    })
    .await;
    LAST_TALLY.set(match &result {
        Ok(success) => success.tally,
        Err(failure) => failure.tally,
    });
    match result {
        Ok(success) => {
            let text = success.value.choices[0]
                .message
                .content
                .clone()
                .unwrap_or_default();
            (
                Ok((success.candidate.provider.name.clone(), text)),
                success.attempts,
            )
        }
        Err(failure) => (Err(failure.error), failure.attempts),
    }
}

thread_local! {
    /// The tally of the last plan [`run_plan`] ran on this thread.
    static LAST_TALLY: std::cell::Cell<Tally> = std::cell::Cell::new(Tally::default());
}

fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_with_jitter_then_succeed() {
    let a = Scripted::new(vec![status(503), status(503), ok("third time")]);
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 3))],
        ServerConfig::default(),
    );
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!(result.unwrap().1, "third time");
    assert_eq!(attempts, 3);
    let gaps = gaps(&a.calls());
    assert!(
        gaps[0] <= Duration::from_millis(100),
        "first retry within base: {gaps:?}"
    );
    assert!(
        gaps[1] <= Duration::from_millis(200),
        "second within 2x base: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let limited = ProviderError::Status {
        status: 429,
        message: "slow down".into(),
        code: None,
        retry_after: Some("2".into()),
    };
    let a = Scripted::new(vec![fail(limited), ok("later")]);
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 2))],
        ServerConfig::default(),
    );
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!((result.unwrap().1.as_str(), attempts), ("later", 2));
    assert!(gaps(&a.calls())[0] >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn fallbacks_follow_in_order_after_each_targets_retries() {
    let (a, b, c) = (
        Scripted::new(vec![status(500)]),
        Scripted::new(vec![status(502)]),
        Scripted::new(vec![ok("from c")]),
    );
    let w = world(
        vec![("a", a.clone()), ("b", b.clone()), ("c", c.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m", "c/m"], 2))],
        ServerConfig::default(),
    );
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!(result.unwrap(), ("c".to_owned(), "from c".to_owned()));
    assert_eq!(attempts, 5);
    let tally = LAST_TALLY.get();
    assert_eq!(
        (tally.attempts, tally.retries, tally.fallbacks, tally.hedges),
        (5, 2, 2, 0)
    );
    assert_eq!(
        (a.calls().len(), b.calls().len(), c.calls().len()),
        (2, 2, 1)
    );
    assert!(
        a.calls()[1] <= b.calls()[0] && b.calls()[1] <= c.calls()[0],
        "in order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_error_is_neither_retried_nor_sent_elsewhere() {
    let (a, b) = (
        Scripted::new(vec![status(400)]),
        Scripted::new(vec![ok("b")]),
    );
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 3))],
        ServerConfig::default(),
    );
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!(result.unwrap_err().status().as_u16(), 400);
    assert_eq!((attempts, b.calls().len()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn per_request_policy_overrides_the_alias() {
    // orq's retry.count is retries after the first try: count 2 = 3 tries, on its own codes.
    let (a, b) = (
        Scripted::new(vec![status(418)]),
        Scripted::new(vec![ok("b")]),
    );
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 1))],
        ServerConfig::default(),
    );
    let body = json!({"model": "fast", "retry": {"count": 2, "on_codes": [418]}, "fallbacks": [{"model": "b/m"}]});
    let (result, attempts) = run(&w, &request(body), None).await;
    assert_eq!(result.unwrap().0, "b");
    assert_eq!((a.calls().len(), attempts), (3, 4));
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_the_next_target_answers() {
    let (a, b) = (
        Scripted::new(vec![slow_ok(60_000, "too late")]),
        Scripted::new(vec![ok("b")]),
    );
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 1))],
        ServerConfig::default(),
    );
    let started = Instant::now();
    let (result, attempts) = run(
        &w,
        &request(json!({"model": "fast", "timeout": {"call_timeout": 1000}})),
        None,
    )
    .await;
    assert_eq!(result.unwrap().0, "b");
    assert_eq!(attempts, 2);
    assert_eq!(started.elapsed(), Duration::from_millis(1000));
    assert!(
        a.cancelled.load(Ordering::SeqCst),
        "the slow call was cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_is_a_504() {
    let a = Scripted::new(vec![slow_ok(60_000, "too late")]);
    let mut fast = alias(&[("a", 1.0)], &[], 5);
    fast.timeout = Some(Duration::from_secs(3));
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", fast)],
        ServerConfig::default(),
    );
    let started = Instant::now();
    let (result, _) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!(result.unwrap_err().status().as_u16(), 504);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_failing_target_is_ejected_then_probed_and_restored() {
    let a = Scripted::new(vec![status(503), status(503), ok("a is back")]);
    let b = Scripted::new(vec![ok("b")]);
    let server = ServerConfig {
        circuit_failures: 2,
        circuit_cooldown: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 1))],
        server,
    );
    let fast = request(json!({"model": "fast"}));
    for _ in 0..2 {
        assert_eq!(run(&w, &fast, None).await.0.unwrap().0, "b");
    }
    assert_eq!(a.calls().len(), 2);
    // Ejected: a is skipped entirely.
    let (result, attempts) = run(&w, &fast, None).await;
    assert_eq!(
        (result.unwrap().0.as_str(), attempts, a.calls().len()),
        ("b", 1, 2)
    );
    // After the cool-down one request probes a, which now answers: restored.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(run(&w, &fast, None).await.0.unwrap().1, "a is back");
    assert_eq!(run(&w, &fast, None).await.0.unwrap().0, "a");
    assert_eq!(a.calls().len(), 4);
}

/// A server config whose circuits open after `failures` failures for `cooldown_secs`.
fn circuit(failures: u32, cooldown_secs: u64) -> ServerConfig {
    ServerConfig {
        circuit_failures: failures,
        circuit_cooldown: Duration::from_secs(cooldown_secs),
        ..ServerConfig::default()
    }
}

fn is_ejected(w: &World, target: &str) -> bool {
    matches!(
        w.router.health.peek(target),
        crate::routing::health::Availability::Ejected { .. }
    )
}

#[tokio::test(start_paused = true)]
async fn a_lone_ejected_target_still_gets_the_request() {
    let a = Scripted::new(vec![status(500), status(500), ok("a is back")]);
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 1))],
        circuit(1, 30),
    );
    let fast = request(json!({"model": "fast"}));
    assert_eq!(
        run(&w, &fast, None).await.0.unwrap_err().status().as_u16(),
        502
    );
    assert!(is_ejected(&w, "a/m"));
    // Ejected, and nothing else to send to: sent anyway, the upstream's own error comes back.
    let (result, attempts) = run(&w, &fast, None).await;
    assert_eq!((result.unwrap_err().status().as_u16(), attempts), (502, 1));
    // The blip is over: the next request gets the answer at once, and the target is restored.
    assert_eq!(run(&w, &fast, None).await.0.unwrap().1, "a is back");
    assert!(!is_ejected(&w, "a/m"));
    assert_eq!(a.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn when_every_candidate_is_ejected_the_soonest_cooldown_end_goes_first() {
    let (a, b) = (
        Scripted::new(vec![ok("a")]),
        Scripted::new(vec![status(500)]),
    );
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 1))],
        circuit(1, 30),
    );
    w.router.health.failure("b/m", None);
    tokio::time::advance(Duration::from_secs(5)).await;
    w.router.health.failure("a/m", None);
    let fast = request(json!({"model": "fast"}));
    let plan = w.router.plan(&fast, None).unwrap();
    let keys: Vec<&str> = plan.candidates.iter().map(|c| c.key.as_str()).collect();
    assert_eq!((keys, plan.all_ejected), (vec!["b/m", "a/m"], true));
    // b (its cool-down ends first) fails again, and a, ejected too, is still tried.
    let (result, attempts) = run_plan(&w, &plan, &fast).await;
    assert_eq!((result.unwrap().1.as_str(), attempts), ("a", 2));
}

#[tokio::test(start_paused = true)]
async fn a_target_ejected_after_planning_is_still_tried_when_it_is_the_only_one() {
    let a = Scripted::new(vec![ok("a")]);
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 1))],
        circuit(1, 30),
    );
    let fast = request(json!({"model": "fast"}));
    let plan = w.router.plan(&fast, None).unwrap();
    assert!(!plan.all_ejected);
    // Another request ejects a between this one's planning and its first attempt.
    w.router.health.failure("a/m", None);
    let (result, attempts) = run_plan(&w, &plan, &fast).await;
    assert_eq!((result.unwrap().1.as_str(), attempts), ("a", 1));
}

#[tokio::test(start_paused = true)]
async fn a_stale_attempt_cannot_let_a_second_probe_in() {
    // a: r1's slow 400, r0's 500 (ejects a), r2's probe (slow, then fine).
    let a = Scripted::new(vec![
        slow_status(20_000, 400),
        status(500),
        slow_ok(30_000, "probe ok"),
    ]);
    let b = Scripted::new(vec![ok("b")]);
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 1))],
        circuit(1, 10),
    );
    let fast = request(json!({"model": "fast"}));
    let at = |secs: u64| {
        let (w, fast) = (&w, &fast);
        async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            run(w, fast, None).await.0
        }
    };
    let r3 = async {
        let answer = at(21).await;
        (answer, a.calls().len())
    };
    // r1 (t=0) is on a when r0 (t=1) ejects it; r2 (t=12) probes; r1 ends at t=20, not
    // holding the probe; r3 (t=21) must not probe a second time.
    let (r1, r0, r2, (r3, a_calls)) = tokio::join!(at(0), at(1), at(12), r3);
    assert_eq!(r1.unwrap_err().status().as_u16(), 400);
    assert_eq!(r0.unwrap().0, "b");
    assert_eq!(r3.unwrap().0, "b", "a is still being probed");
    assert_eq!(a_calls, 3);
    assert_eq!(r2.unwrap().1, "probe ok");
    assert!(!is_ejected(&w, "a/m"), "the probe's success restores a");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_lets_the_next_request_probe() {
    let a = Scripted::new(vec![slow_ok(5_000, "slow"), ok("a")]);
    let b = Scripted::new(vec![ok("b")]);
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 1))],
        circuit(1, 10),
    );
    w.router.health.failure("a/m", None);
    tokio::time::advance(Duration::from_secs(11)).await;
    let fast = request(json!({"model": "fast"}));
    let cancelled = tokio::time::timeout(Duration::from_secs(1), run(&w, &fast, None)).await;
    assert!(cancelled.is_err(), "the client went away during the probe");
    assert_eq!(run(&w, &fast, None).await.0.unwrap().1, "a");
    assert_eq!(a.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn cancelled_requests_count_nothing_against_the_target() {
    let a = Scripted::new(vec![slow_ok(5_000, "slow")]);
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 1))],
        circuit(1, 30),
    );
    let fast = request(json!({"model": "fast"}));
    for _ in 0..3 {
        let cancelled = tokio::time::timeout(Duration::from_secs(1), run(&w, &fast, None)).await;
        assert!(cancelled.is_err());
    }
    assert_eq!(a.calls().len(), 3);
    assert!(!is_ejected(&w, "a/m"));
}

#[tokio::test(start_paused = true)]
async fn a_clients_short_call_timeout_never_ejects_the_target() {
    let a = Scripted::new(vec![slow_ok(1_000, "a")]);
    let w = world_timed(
        vec![("a", a.clone())],
        vec![],
        circuit(5, 30),
        Duration::from_secs(10),
    );
    let impatient = request(json!({"model": "a/m", "retry": {"count": 5},
        "timeout": {"call_timeout": 100}}));
    let (result, attempts) = run(&w, &impatient, None).await;
    assert_eq!((result.unwrap_err().status().as_u16(), attempts), (504, 6));
    assert!(
        !is_ejected(&w, "a/m"),
        "six timeouts of the client's own making"
    );
    let (result, _) = run(&w, &request(json!({"model": "a/m"})), None).await;
    assert_eq!(result.unwrap().1, "a");
}

#[tokio::test(start_paused = true)]
async fn the_call_timeout_shortens_but_never_lengthens_the_providers() {
    let a = Scripted::new(vec![slow_ok(3_000, "a")]);
    let w = world_timed(
        vec![("a", a.clone())],
        vec![],
        circuit(1, 30),
        Duration::from_secs(1),
    );
    let started = Instant::now();
    let patient = request(json!({"model": "a/m", "timeout": {"call_timeout": 5000}}));
    let (result, attempts) = run(&w, &patient, None).await;
    assert_eq!((result.unwrap_err().status().as_u16(), attempts), (504, 1));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(
        is_ejected(&w, "a/m"),
        "the provider's own timeout counts against it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_gateway_waits_is_returned_at_once() {
    let a = Scripted::new(vec![limited("60"), ok("later")]);
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 3))],
        ServerConfig::default(),
    );
    let started = Instant::now();
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    let error = result.unwrap_err();
    assert_eq!((error.status().as_u16(), attempts), (429, 1));
    assert_eq!(
        error.retry_after(),
        Some("60"),
        "the client sees the upstream's wait"
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_up_to_the_limit_is_waited_out() {
    let a = Scripted::new(vec![limited("8"), ok("later")]);
    let server = ServerConfig {
        max_retry_wait: Duration::from_secs(8),
        ..ServerConfig::default()
    };
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", alias(&[("a", 1.0)], &[], 3))],
        server,
    );
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!((result.unwrap().1.as_str(), attempts), ("later", 2));
    assert!(gaps(&a.calls())[0] >= Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_total_timeout_is_returned_at_once() {
    let a = Scripted::new(vec![limited("3"), ok("later")]);
    let mut fast = alias(&[("a", 1.0)], &[], 3);
    fast.timeout = Some(Duration::from_secs(2));
    let w = world(
        vec![("a", a.clone())],
        vec![("fast", fast)],
        ServerConfig::default(),
    );
    let started = Instant::now();
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!((result.unwrap_err().status().as_u16(), attempts), (429, 1));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn odd_retry_after_values_neither_panic_nor_stall() {
    for huge in ["1e20", "inf", "-1", "NaN"] {
        let a = Scripted::new(vec![limited(huge)]);
        let b = Scripted::new(vec![ok("b")]);
        let w = world(
            vec![("a", a.clone()), ("b", b.clone())],
            vec![("fast", alias(&[("a", 1.0)], &["b/m"], 2))],
            ServerConfig::default(),
        );
        let started = Instant::now();
        let (result, _) = run(&w, &request(json!({"model": "fast"})), None).await;
        assert_eq!(result.unwrap().0, "b", "{huge}");
        assert!(started.elapsed() <= Duration::from_millis(100), "{huge}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_target_is_planned_once_however_often_it_is_named() {
    let (a, b) = (
        Scripted::new(vec![status(500)]),
        Scripted::new(vec![status(500)]),
    );
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![],
        ServerConfig::default(),
    );
    let body = json!({"model": "a/m",
        "load_balancer": {"type": "weight_based", "models": [{"model": "a/m"}, {"model": "a/m"}]},
        "fallbacks": [{"model": "a/m"}, {"model": "b/m"}, {"model": "a/m"}, {"model": "b/m"}]});
    let (result, attempts) = run(&w, &request(body), None).await;
    assert_eq!((result.unwrap_err().status().as_u16(), attempts), (502, 2));
    assert_eq!((a.calls().len(), b.calls().len()), (1, 1));
}

/// Alias `fast` over a slow `a` (5 s, nearly all the weight) and a quick `b` (10 ms), hedged
/// after 100 ms: the hedge on `b` wins.
fn hedged_world() -> (Arc<Scripted>, World) {
    let (a, b) = (
        Scripted::new(vec![slow_ok(5_000, "slow a")]),
        Scripted::new(vec![slow_ok(10, "quick b")]),
    );
    let mut fast = alias(&[("a", 1_000_000.0), ("b", 0.000_001)], &[], 1);
    fast.hedge_after = Some(Duration::from_millis(100));
    let w = world(
        vec![("a", a.clone()), ("b", b)],
        vec![("fast", fast)],
        ServerConfig::default(),
    );
    (a, w)
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_and_the_slow_attempt_is_cancelled() {
    let (a, w) = hedged_world();
    let started = Instant::now();
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!(result.unwrap(), ("b".to_owned(), "quick b".to_owned()));
    assert_eq!(attempts, 2);
    let tally = LAST_TALLY.get();
    assert_eq!((tally.retries, tally.fallbacks, tally.hedges), (0, 0, 1));
    assert_eq!(started.elapsed(), Duration::from_millis(110));
    assert!(
        a.cancelled.load(Ordering::SeqCst),
        "the losing attempt is cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_first_attempt_is_quick() {
    let (a, b) = (
        Scripted::new(vec![slow_ok(50, "a")]),
        Scripted::new(vec![ok("b")]),
    );
    let mut fast = alias(&[("a", 1_000_000.0), ("b", 0.000_001)], &[], 1);
    fast.hedge_after = Some(Duration::from_millis(100));
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![("fast", fast)],
        ServerConfig::default(),
    );
    let (result, attempts) = run(&w, &request(json!({"model": "fast"})), None).await;
    assert_eq!(
        (result.unwrap().0.as_str(), attempts, b.calls().len()),
        ("a", 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn sessions_stick_to_a_healthy_target_and_move_when_it_is_ejected() {
    let providers: Vec<(&'static str, Arc<Scripted>)> = ["p0", "p1", "p2"]
        .into_iter()
        .map(|n| (n, Scripted::new(vec![ok(n)])))
        .collect();
    let server = ServerConfig {
        circuit_failures: 1,
        ..ServerConfig::default()
    };
    let w = world(
        providers,
        vec![(
            "chat",
            alias(&[("p0", 1.0), ("p1", 1.0), ("p2", 1.0)], &[], 1),
        )],
        server,
    );
    let chat = request(json!({"model": "chat"}));
    let first_of = |session: &str| {
        w.router.plan(&chat, Some(session)).unwrap().candidates[0]
            .key
            .clone()
    };
    let sessions: Vec<String> = (0..60).map(|i| format!("conversation-{i}")).collect();
    let before: Vec<String> = sessions.iter().map(|s| first_of(s)).collect();
    for (session, target) in sessions.iter().zip(&before) {
        for _ in 0..5 {
            assert_eq!(
                &first_of(session),
                target,
                "the same conversation keeps its target"
            );
        }
    }
    for p in ["p0/m", "p1/m", "p2/m"] {
        assert!(
            before.iter().any(|t| t == p),
            "sessions spread over every target"
        );
    }
    // Eject p0: only p0's conversations move.
    w.router.health.failure("p0/m", None);
    for (session, target) in sessions.iter().zip(&before) {
        let now = first_of(session);
        if target == "p0/m" {
            assert_ne!(now, "p0/m");
        } else {
            assert_eq!(&now, target);
        }
    }
    let (result, _) = run(&w, &chat, Some("conversation-1")).await;
    assert!(result.is_ok());
}

#[tokio::test(start_paused = true)]
async fn weights_are_followed_within_tolerance() {
    let providers: Vec<(&'static str, Arc<Scripted>)> = vec![
        ("heavy", Scripted::new(vec![ok("h")])),
        ("light", Scripted::new(vec![ok("l")])),
    ];
    let w = world(
        providers,
        vec![("chat", alias(&[("heavy", 3.0), ("light", 1.0)], &[], 1))],
        ServerConfig::default(),
    );
    let chat = request(json!({"model": "chat"}));
    let n = 4_000;
    let heavy = (0..n)
        .filter(|_| w.router.plan(&chat, None).unwrap().candidates[0].key == "heavy/m")
        .count();
    // Expected 75%; 5 standard deviations at n = 4000 is 3.4 points.
    let share = heavy as f64 / n as f64;
    assert!((0.716..=0.784).contains(&share), "{share}");
}

#[tokio::test(start_paused = true)]
async fn the_load_balancer_of_a_request_replaces_the_targets() {
    let (a, b) = (Scripted::new(vec![ok("a")]), Scripted::new(vec![ok("b")]));
    let w = world(
        vec![("a", a.clone()), ("b", b.clone())],
        vec![],
        ServerConfig::default(),
    );
    let body = json!({"model": "a/m", "load_balancer": {"type": "weight_based", "models": [{"model": "b/m", "weight": 1}]}});
    let (result, _) = run(&w, &request(body), None).await;
    assert_eq!(result.unwrap().0, "b");
    assert_eq!(a.calls().len(), 0);
}

/// Runs `request` inside a request span and returns the spans: the request span last.
async fn traced_run(
    world: &World,
    body: serde_json::Value,
) -> Vec<opentelemetry_sdk::trace::SpanData> {
    use tracing::Instrument;
    let (_guard, collected) = crate::telemetry::testing::capture();
    let span = tracing::info_span!(target: crate::telemetry::TARGET, "chat");
    let (result, _) = run(world, &request(body), None).instrument(span).await;
    result.unwrap();
    collected.spans()
}

fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn retries_and_fallbacks_are_sibling_attempt_spans() {
    let (a, b) = (
        Scripted::new(vec![status(503)]),
        Scripted::new(vec![ok("b")]),
    );
    let w = world(
        vec![("a", a), ("b", b)],
        vec![("fast", alias(&[("a", 1.0)], &["b/m"], 2))],
        ServerConfig::default(),
    );
    let spans = traced_run(&w, json!({"model": "fast"})).await;
    let (request, attempts) = spans.split_last().unwrap();
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    let described: Vec<(String, String, String)> = attempts
        .iter()
        .map(|s| {
            assert_eq!(s.parent_span_id, request.span_context.span_id());
            assert_eq!(s.span_context.trace_id(), request.span_context.trace_id());
            (
                attribute(s, "llmgate.provider"),
                attribute(s, "llmgate.attempt"),
                attribute(s, "error.type"),
            )
        })
        .collect();
    let expected = [("a", "1", "status"), ("a", "2", "status"), ("b", "3", "")]
        .map(|(p, n, e)| (p.to_owned(), n.to_owned(), e.to_owned()));
    assert_eq!(described, expected);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_a_sibling_attempt_span() {
    let (_, w) = hedged_world();
    let spans = traced_run(&w, json!({"model": "fast"})).await;
    let (request, attempts) = spans.split_last().unwrap();
    let mut providers: Vec<String> = attempts
        .iter()
        .filter(|s| s.parent_span_id == request.span_context.span_id())
        .map(|s| attribute(s, "llmgate.provider"))
        .collect();
    providers.sort();
    assert_eq!(providers, ["a", "b"], "{spans:#?}");
}

#[test]
fn a_plan_names_each_target_once_however_many_there_are() {
    // Below and above the count up to which repeats are found by a scan.
    for count in [3, 40] {
        let names: Vec<&'static str> = (0..count)
            .map(|i| &*Box::leak(format!("p{i}").into_boxed_str()))
            .collect();
        let providers = names.iter().map(|n| (*n, Scripted::new(vec![]))).collect();
        // Every target twice, and fallbacks that repeat the first and the last.
        let targets: Vec<(&str, f64)> = names.iter().chain(&names).map(|n| (*n, 1.0)).collect();
        let first = format!("{}/m", names[0]);
        let last = format!("{}/m", names[count - 1]);
        let big = alias(&targets, &[&first, &last], 1);
        let w = world(providers, vec![("big", big)], ServerConfig::default());
        let plan = w
            .router
            .plan(&request(json!({"model": "big"})), None)
            .unwrap();
        let mut keys: Vec<&str> = plan.candidates.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys.len(), count, "{keys:?}");
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), count);
    }
}
