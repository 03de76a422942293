//! Per-key limits and the shared state backend. Two gateway processes sharing one real
//! `redis-server` enforce one `rpm`, `tpm`, `max_concurrent` and budget; a replica killed
//! with SIGKILL gives its concurrency slots back after their lease; a Redis outage is served
//! per `on_error` and healed without a gateway restart; the response cache and `/admin/keys`
//! are shared. Then one suite run in process on both backends (`memory` and `redis`).
//!
//! Every wait has a deadline; all traffic stays on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::process::{Gateway, RedisServer};
use crate::support::{TestApp, ask, ask_stream, read_request, spawn_app};

/// `team-a`: the key under test (its limits vary by test).
const KEY: &str = "sk-team-a-Zm9vYmFy";
/// `team-b`: a generous `rpm` (so its requests go through the state backend), nothing else.
const OTHER: &str = "sk-team-b-YmF6cXV4";
const ADMIN: &str = "sk-admin-cXV1eHg";
/// What a request's wait for an answer, a stream's first bytes or its end may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Config

/// A config: `team-a` with `limits` (inline-table fields, may be empty), `team-b`, the admin
/// key, echo priced at 1000 USD per million tokens each way (a token costs 0.001; `slow/m`'s
/// answers twice that), an alias
/// `cached` on echo with a 60 s cache, the `slow` openai-kind provider when given, and
/// `state` (a `[state]` table).
fn config(limits: &str, state: &str, slow: Option<&SlowUpstream>) -> String {
    let limits = if limits.is_empty() {
        String::new()
    } else {
        format!(", {limits}")
    };
    let slow = slow.map_or_else(String::new, |s| {
        format!(
            "[providers.slow]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"k\"\n\
             [providers.slow.prices]\n\"m\" = {{ input = 1000.0, output = 2000.0 }}\n",
            s.base_url
        )
    });
    format!(
        r#"[auth]
admin_keys = ["{ADMIN}"]
keys = [
  {{ name = "team-a", key = "{KEY}", models = ["*"]{limits} }},
  {{ name = "team-b", key = "{OTHER}", models = ["*"], rpm = 100000 }},
]

[providers.echo]
kind = "echo"

[providers.echo.prices]
"*" = {{ input = 1000.0, output = 1000.0 }}

{slow}
[models.cached]
targets = [{{ provider = "echo", model = "cached" }}]
cache_ttl_secs = 60

{state}
"#
    )
}

const MEMORY: &str = "[state]\nbackend = \"memory\"\n";

/// `[state]` on `redis` with a key prefix no other test uses, plus `extra` lines.
fn redis_state(redis: &RedisServer, extra: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"llmgate-test-{}-{n}:\"\n{extra}",
        redis.url(),
        std::process::id()
    )
}

/// `n` one-letter words: `2n - 1` bytes (an estimate of about n/2 tokens), and `n` tokens
/// as echo counts them (so `2n` with its answer).
fn words(n: usize) -> String {
    vec!["w"; n].join(" ")
}

// ---------------------------------------------------------------------------------------
// HTTP

/// A gateway to talk to: a process or an in-process app.
#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
}

/// A whole answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// The status, the headers about limits and caching, and the body (shortened).
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name == "retry-after"
                    || name.starts_with("x-ratelimit-")
                    || name == "x-llmgate-cache"
            })
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
            .collect();
        let body = self.body.to_string();
        let body: String = body.chars().take(400).collect();
        write!(f, "[{} {headers:?} {body}]", self.status)
    }
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn total_tokens(&self) -> u64 {
        self.body["usage"]["total_tokens"].as_u64().unwrap()
    }
}

impl Api {
    fn of(gateway: &Gateway) -> Api {
        Api {
            base: gateway.url(""),
            client: gateway.client.clone(),
        }
    }

    fn of_app(app: &TestApp) -> Api {
        Api {
            base: app.url(""),
            client: app.client.clone(),
        }
    }

    async fn chat(&self, key: &str, body: &Value) -> Answer {
        let response = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .expect("the gateway answers");
        Answer::read(response).await
    }

    /// Starts a stream and waits for its first bytes: it is admitted and in flight.
    async fn hold_stream(&self, key: &str, body: &Value) -> reqwest::Response {
        let send = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
            .send();
        let mut response = tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .expect("the stream's head in time")
            .unwrap();
        if response.status() != 200 {
            panic!("stream refused: {:?}", Answer::read(response).await);
        }
        let first = tokio::time::timeout(REQUEST_TIMEOUT, response.chunk())
            .await
            .expect("the stream's first bytes in time")
            .unwrap();
        assert!(first.is_some_and(|b| !b.is_empty()), "the stream started");
        response
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut request = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// `/admin/keys`' entry for `name`.
    async fn key_usage(&self, name: &str) -> Value {
        let (status, text) = self.get("/admin/keys", Some(ADMIN)).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            !text.contains(KEY) && !text.contains(ADMIN),
            "no secret: {text}"
        );
        let keys: Value = serde_json::from_str(&text).unwrap();
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .clone()
    }

    /// Polls `/admin/keys` until `name`'s entry passes `check` (or the deadline: panics).
    async fn until_key(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let key = self.key_usage(name).await;
            if check(&key) {
                return key;
            }
            assert!(Instant::now() < deadline, "never {what}: {key}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls with `body` as `key` until admitted: 429 `code` meanwhile, within `limit`.
    async fn until_admitted(&self, key: &str, body: &Value, code: &str, limit: Duration) -> Answer {
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.chat(key, body).await;
            if answer.status == 200 {
                return answer;
            }
            assert_refused(&answer, code);
            assert!(Instant::now() < deadline, "never admitted: {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/readyz`: status and body.
    async fn readyz(&self) -> (u16, Value) {
        let (status, text) = self.get("/readyz", None).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    /// The value of `series` (the name and labels, as written) in `/metrics`; 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let (status, text) = self.get("/metrics", None).await;
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// The value of `llmgate_state_backend_up` in `/metrics`.
    async fn backend_up_metric(&self) -> String {
        let (status, text) = self.get("/metrics", None).await;
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix("llmgate_state_backend_up "))
            .unwrap_or_else(|| panic!("llmgate_state_backend_up in /metrics:\n{text}"))
            .to_owned()
    }
}

/// Asserts a refusal: 429, the OpenAI envelope with `code`. Its `retry-after` (integer
/// seconds), if any.
fn assert_refused(answer: &Answer, code: &str) -> Option<u64> {
    assert_eq!((answer.status, answer.code()), (429, code), "{answer:?}");
    let error = &answer.body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()) && error["param"].is_null(),
        "{answer:?}"
    );
    assert!(answer.body.get("choices").is_none(), "{answer:?}");
    answer.header("retry-after").map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("retry-after is whole seconds: {v:?}"))
    })
}

/// Asserts a refusal that waiting helps: with `retry-after` of 1 to 60 seconds.
fn assert_refused_for_now(answer: &Answer, code: &str) -> u64 {
    let wait = assert_refused(answer, code);
    assert!(
        wait.is_some_and(|w| (1..=60).contains(&w)),
        "retry-after: {answer:?}"
    );
    wait.unwrap()
}

/// Reads a stream to its end (within the deadline); its text.
async fn finish_stream(mut response: reqwest::Response) -> String {
    let mut text = Vec::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.extend_from_slice(&chunk);
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .expect("the stream ended in time");
    String::from_utf8(text).unwrap()
}

/// Waits, if needed, until the current UTC minute has more than 5 s left, so counts of
/// "this minute" made now are read in the same minute.
async fn away_from_a_minute_boundary() {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if second > 55.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.2 - second)).await;
    }
}

/// The tail of each gateway's log, for failure messages.
fn logs(gateways: &[&Gateway]) -> String {
    gateways
        .iter()
        .map(|g| {
            let output = g.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("--- gateway {} ---\n{tail}\n", g.addr())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A slow upstream

/// An `openai`-kind upstream that streams slowly: every request gets a role chunk at once,
/// then a word every 200 ms until [`SlowUpstream::release`], then a finish chunk, a usage
/// chunk (3 prompt and 5 completion tokens) and `[DONE]`.
struct SlowUpstream {
    base_url: String,
    release: watch::Sender<bool>,
    /// Requests it received.
    requests: Arc<AtomicUsize>,
}

fn chunk(delta: Value, finish: Value) -> String {
    let chunk = json!({"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

/// `data` as one HTTP/1.1 chunk.
fn http_chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

impl SlowUpstream {
    async fn start() -> SlowUpstream {
        SlowUpstream::start_with(true).await
    }

    /// With `usage` false, its streams end without a usage chunk.
    async fn start_with(usage: bool) -> SlowUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = watch::channel(false);
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut released = released.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    read_request(&mut socket).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                    let first = chunk(json!({"role": "assistant", "content": "slow"}), Value::Null);
                    if socket.write_all(head.as_bytes()).await.is_err()
                        || socket
                            .write_all(http_chunk(&first).as_bytes())
                            .await
                            .is_err()
                    {
                        return;
                    }
                    while !*released.borrow_and_update() {
                        tokio::select! {
                            _ = released.changed() => {}
                            () = tokio::time::sleep(Duration::from_millis(200)) => {
                                let word = chunk(json!({"content": " word"}), Value::Null);
                                if socket.write_all(http_chunk(&word).as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let usage_chunk = json!({"id": "chatcmpl-slow", "object": "chat.completion.chunk",
                        "created": 1, "model": "m", "choices": [],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}});
                    let mut tail = vec![chunk(json!({}), json!("stop"))];
                    if usage {
                        tail.push(format!("data: {usage_chunk}\n\n"));
                    }
                    tail.push("data: [DONE]\n\n".to_owned());
                    for event in tail {
                        if socket
                            .write_all(http_chunk(&event).as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = socket.write_all(b"0\r\n\r\n").await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        SlowUpstream {
            base_url: format!("http://{addr}/v1"),
            release,
            requests,
        }
    }

    /// Lets every stream, held or to come, finish.
    fn release(&self) {
        self.release.send_replace(true);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A stream through the slow upstream.
fn slow_stream() -> Value {
    ask_stream("slow/m", "hold the line", true)
}

// ---------------------------------------------------------------------------------------
// Two replicas sharing one Redis

async fn two_replicas(name: &str, config: &str) -> (Gateway, Gateway) {
    let (a, b) = (format!("{name}-a"), format!("{name}-b"));
    tokio::join!(Gateway::start(&a, config), Gateway::start(&b, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_enforce_one_rpm_exactly() {
    let redis = RedisServer::start();
    let config = config("rpm = 10", &redis_state(&redis, ""), None);
    let (ga, gb) = two_replicas("rpm", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    let started = Instant::now();
    let mut burst = Vec::new();
    for i in 0..30 {
        let api = if i % 2 == 0 { a.clone() } else { b.clone() };
        burst.push(tokio::spawn(async move {
            api.chat(KEY, &ask("echo/x", "hello there")).await
        }));
    }
    let mut answers = Vec::new();
    for request in burst {
        answers.push(request.await.unwrap());
    }
    let elapsed = started.elapsed();
    let admitted = answers.iter().filter(|a| a.status == 200).count();
    let refill = (elapsed.as_secs_f64() * 10.0 / 60.0).ceil() as usize;
    assert!(
        (10..=10 + refill).contains(&admitted),
        "admitted {admitted} of 30 in {elapsed:?} with rpm 10 on two replicas\n{}",
        logs(&[&ga, &gb])
    );
    for answer in answers.iter().filter(|a| a.status != 200) {
        assert_refused_for_now(answer, "rate_limit_requests");
    }
    // Each replica counted its own refusals.
    let series = r#"llmgate_ratelimit_rejections_total{key="team-a",limit="requests"}"#;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let counted = a.metric(series).await + b.metric(series).await;
        if counted == (30 - admitted) as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} refusals counted, not {}",
            30 - admitted
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("two replicas, rpm 10, burst of 30: {admitted} admitted in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_used_on_one_replica_are_refused_on_the_other() {
    let redis = RedisServer::start();
    let config = config("tpm = 100", &redis_state(&redis, ""), None);
    let (ga, gb) = two_replicas("tpm", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    away_from_a_minute_boundary().await;
    // An estimate of about 30 tokens, admitted; it really uses 120.
    let spent = a.chat(KEY, &ask("echo/x", &words(60))).await;
    assert_eq!(spent.status, 200, "{spent:?}\n{}", logs(&[&ga, &gb]));
    assert_eq!(spent.total_tokens(), 120);
    assert_eq!(spent.header("x-ratelimit-limit-tokens"), Some("100"));
    // Settled in the shared state: replica B sees it ...
    b.until_key("team-a", "120 tokens this minute", |k| {
        k["usage"]["tokens_this_minute"] == 120
    })
    .await;
    // ... and refuses even a small request.
    let mut small = ask("echo/x", "hello");
    small["max_tokens"] = json!(20);
    let refused = b.chat(KEY, &small).await;
    assert_refused_for_now(&refused, "rate_limit_tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_held_on_one_replica_are_refused_on_the_other() {
    let redis = RedisServer::start();
    let upstream = SlowUpstream::start().await;
    let config = config(
        "max_concurrent = 2",
        &redis_state(&redis, ""),
        Some(&upstream),
    );
    let (ga, gb) = two_replicas("concurrent", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    let held = [
        a.hold_stream(KEY, &slow_stream()).await,
        a.hold_stream(KEY, &slow_stream()).await,
    ];
    assert_eq!(upstream.requests(), 2);
    let refused = b.chat(KEY, &ask("echo/x", "one more")).await;
    assert_refused(&refused, "too_many_concurrent_requests");
    let refused = b.chat(KEY, &slow_stream()).await;
    assert_refused(&refused, "too_many_concurrent_requests");
    assert_eq!(
        upstream.requests(),
        2,
        "a refused request reaches no upstream"
    );
    // A key's limit is its own: another key is served meanwhile.
    assert_eq!(b.chat(OTHER, &ask("echo/x", "hi")).await.status, 200);

    upstream.release();
    for stream in held {
        let text = finish_stream(stream).await;
        assert!(text.contains("data: [DONE]"), "{text}");
    }
    let admitted = b
        .until_admitted(
            KEY,
            &ask("echo/x", "one more"),
            "too_many_concurrent_requests",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        admitted.body["choices"][0]["message"]["content"],
        "one more"
    );
    // Both slots are free again.
    let both = [
        b.hold_stream(KEY, &slow_stream()).await,
        a.hold_stream(KEY, &slow_stream()).await,
    ];
    drop(both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_spent_on_one_replica_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let config = config(
        "budget_usd = 0.05, budget_window = \"total\"",
        &redis_state(&redis, ""),
        None,
    );
    let (ga, gb) = two_replicas("budget", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    // 60 tokens at 0.001 USD: 0.06, over the budget by the end of the request.
    let spent = a.chat(KEY, &ask("echo/x", &words(30))).await;
    assert_eq!(spent.status, 200, "{spent:?}\n{}", logs(&[&ga, &gb]));
    assert_eq!(spent.total_tokens(), 60);
    let key = b
        .until_key("team-a", "0.06 USD spent", |k| {
            k["usage"]["spend_usd"].as_f64().unwrap_or(0.0) > 0.0599
        })
        .await;
    assert!(
        (key["usage"]["spend_usd"].as_f64().unwrap() - 0.06).abs() < 1e-9,
        "{key}"
    );
    assert_eq!(key["limits"]["budget_usd"], json!(0.05));
    assert_eq!(key["limits"]["budget_window"], "total");
    let refused = b.chat(KEY, &ask("echo/x", "hi")).await;
    assert_refused(&refused, "budget_exceeded");
    let refused = a.chat(KEY, &ask("echo/x", "hi")).await;
    assert_refused(&refused, "budget_exceeded");
    assert_eq!(b.chat(OTHER, &ask("echo/x", "hi")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_a_replica_killed_with_sigkill_come_back_after_their_lease() {
    let redis = RedisServer::start();
    let upstream = SlowUpstream::start().await;
    let config = config(
        "max_concurrent = 2",
        &redis_state(&redis, "lease_ms = 1500\n"),
        Some(&upstream),
    );
    let (mut ga, gb) = two_replicas("lease", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    let held = [
        a.hold_stream(KEY, &slow_stream()).await,
        a.hold_stream(KEY, &slow_stream()).await,
    ];
    let body = ask("echo/x", "after the lease");
    assert_refused(&b.chat(KEY, &body).await, "too_many_concurrent_requests");
    ga.kill();
    let killed = Instant::now();
    // The dead replica's slots are still leased ...
    assert_refused(&b.chat(KEY, &body).await, "too_many_concurrent_requests");
    // ... until their lease runs out.
    let admitted = b
        .until_admitted(
            KEY,
            &body,
            "too_many_concurrent_requests",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(admitted.status, 200);
    eprintln!(
        "slots of a killed replica back after {:?}",
        killed.elapsed()
    );
    drop(held);
    // Both slots are free: two streams at once on B.
    let both = [
        b.hold_stream(KEY, &slow_stream()).await,
        b.hold_stream(KEY, &slow_stream()).await,
    ];
    drop(both);
}

/// The outage tests' config: `team-a` with `rpm = 3`, Redis per `on_error`.
fn outage_config(redis: &RedisServer, on_error: &str) -> String {
    config(
        "rpm = 3",
        &redis_state(
            redis,
            &format!("on_error = \"{on_error}\"\ntimeout_ms = 250\n"),
        ),
        None,
    )
}

/// Asserts `/readyz` and `/metrics` show the state backend `up` (polling until they do).
async fn until_backend(api: &Api, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A request through the backend, for a gateway that notices by using it.
        let _ = api.chat(OTHER, &ask("echo/x", "probe")).await;
        let (status, body) = api.readyz().await;
        if body["state"]["up"] == json!(up) {
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body,
                json!({"status": "ready", "state": {"backend": "redis", "up": up}})
            );
            break;
        }
        assert!(Instant::now() < deadline, "readyz never up={up}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metric = api.backend_up_metric().await;
    assert_eq!(metric, if up { "1" } else { "0" });
}

/// Three requests of `team-a` admitted, the fourth refused: `rpm = 3` is enforced.
async fn assert_rpm_of_three(api: &Api, gateway: &Gateway) {
    for i in 0..3 {
        let answer = api.chat(KEY, &ask("echo/x", "counted")).await;
        assert_eq!(answer.status, 200, "#{i}: {answer:?}\n{}", logs(&[gateway]));
    }
    let refused = api.chat(KEY, &ask("echo/x", "counted")).await;
    assert_refused_for_now(&refused, "rate_limit_requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_under_allow_serves_without_limits_until_it_is_back() {
    let mut redis = RedisServer::start();
    let gateway = Gateway::start("outage-allow", &outage_config(&redis, "allow")).await;
    let api = Api::of(&gateway);
    until_backend(&api, true).await;
    assert_rpm_of_three(&api, &gateway).await;

    redis.stop();
    // Beyond the limit, and still served.
    for i in 0..5 {
        let answer = api.chat(KEY, &ask("echo/x", "served anyway")).await;
        assert_eq!(
            answer.status,
            200,
            "#{i}: {answer:?}\n{}",
            logs(&[&gateway])
        );
    }
    until_backend(&api, false).await;
    // The admin API still answers: limits from the config, usage unknown.
    let key = api.key_usage("team-a").await;
    assert_eq!(key["limits"]["rpm"], 3, "{key}");
    assert_eq!(key["usage"], Value::Null, "{key}");
    let (status, text) = api.get("/admin/status", Some(ADMIN)).await;
    assert_eq!(status, 200, "{text}");
    let admin: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        admin["state_backend"],
        json!({"backend": "redis", "up": false})
    );

    redis.restart();
    until_backend(&api, true).await;
    away_from_a_minute_boundary().await;
    // The restarted Redis is empty: a fresh bucket, enforced again.
    assert_rpm_of_three(&api, &gateway).await;
    let key = api.key_usage("team-a").await;
    assert_eq!(key["usage"]["requests_this_minute"], 3, "{key}");
    let (_, text) = api.get("/admin/status", Some(ADMIN)).await;
    let admin: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        admin["state_backend"],
        json!({"backend": "redis", "up": true})
    );
    // Each transition logged once: down, then up (the first up at start included).
    let log = gateway.output();
    assert_eq!(log.matches("state backend down").count(), 1, "{log}");
    assert_eq!(log.matches("state backend up").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_under_deny_refuses_with_503_until_it_is_back() {
    let mut redis = RedisServer::start();
    let gateway = Gateway::start("outage-deny", &outage_config(&redis, "deny")).await;
    let api = Api::of(&gateway);
    until_backend(&api, true).await;
    assert_rpm_of_three(&api, &gateway).await;

    redis.stop();
    for key in [KEY, OTHER] {
        let answer = api.chat(key, &ask("echo/x", "not now")).await;
        assert_eq!(
            (answer.status, answer.code()),
            (503, "state_unavailable"),
            "{answer:?}"
        );
    }
    until_backend(&api, false).await;

    redis.restart();
    until_backend(&api, true).await;
    assert_rpm_of_three(&api, &gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_without_redis_and_connects_when_it_comes() {
    let mut redis = RedisServer::start();
    redis.stop();
    let gateway = Gateway::start("no-redis-yet", &outage_config(&redis, "deny")).await;
    let api = Api::of(&gateway);
    until_backend(&api, false).await;
    let answer = api.chat(KEY, &ask("echo/x", "not yet")).await;
    assert_eq!((answer.status, answer.code()), (503, "state_unavailable"));
    redis.restart();
    until_backend(&api, true).await;
    assert_rpm_of_three(&api, &gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cached_by_one_replica_is_a_hit_on_the_other() {
    let redis = RedisServer::start();
    let config = config("", &redis_state(&redis, ""), None);
    let (ga, gb) = two_replicas("cache", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    let body = ask("cached", "a question asked twice");
    let miss = a.chat(KEY, &body).await;
    assert_eq!(
        (miss.status, miss.header("x-llmgate-cache")),
        (200, Some("miss")),
        "{miss:?}"
    );
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    // Stored when the miss ended: poll, in case that is just after its body arrived.
    let hit = loop {
        let answer = b.chat(KEY, &body).await;
        if answer.header("x-llmgate-cache") == Some("hit") || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        (hit.status, hit.header("x-llmgate-cache")),
        (200, Some("hit")),
        "{hit:?}\n{}",
        logs(&[&ga, &gb])
    );
    assert_eq!(hit.body["choices"], miss.body["choices"]);
    // Private to the key: another key misses, then hits on the other replica.
    let other = b.chat(OTHER, &body).await;
    assert_eq!(other.header("x-llmgate-cache"), Some("miss"));
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let other = loop {
        let answer = a.chat(OTHER, &body).await;
        if answer.header("x-llmgate-cache") == Some("hit") || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(other.header("x-llmgate-cache"), Some("hit"), "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_on_one_replica_shows_usage_caused_on_the_other() {
    let redis = RedisServer::start();
    let upstream = SlowUpstream::start().await;
    let config = config(
        "rpm = 100, tpm = 100000, max_concurrent = 5",
        &redis_state(&redis, ""),
        Some(&upstream),
    );
    let (ga, gb) = two_replicas("admin", &config).await;
    let (a, b) = (Api::of(&ga), Api::of(&gb));
    away_from_a_minute_boundary().await;
    for _ in 0..3 {
        assert_eq!(a.chat(KEY, &ask("echo/x", "hello world")).await.status, 200);
    }
    let held = a.hold_stream(KEY, &slow_stream()).await;
    // Three answers of 4 tokens each, settled; the stream's reservation is pending.
    let key = b
        .until_key("team-a", "four requests and 12 tokens", |k| {
            k["usage"]["requests_this_minute"] == 4
                && k["usage"]["tokens_this_minute"].as_u64() >= Some(12)
        })
        .await;
    assert_eq!(
        key["limits"],
        json!({"rpm": 100, "tpm": 100000, "max_concurrent": 5, "budget_usd": null,
            "budget_window": null}),
        "{key}"
    );
    assert_eq!(key["models"], json!(["*"]));
    assert_eq!(key["usage"]["in_flight"], 1, "{key}");
    assert!(
        key["usage"]["spend_usd"].as_f64().unwrap() > 0.0119,
        "{key}"
    );
    // Every replica answers the same.
    let on_a = a.key_usage("team-a").await;
    assert_eq!(on_a["usage"]["requests_this_minute"], 4, "{on_a}");
    assert_eq!(on_a["usage"]["in_flight"], 1, "{on_a}");
    // B saw no traffic of team-b.
    let other = b.key_usage("team-b").await;
    assert_eq!(other["usage"]["requests_this_minute"], 0, "{other}");

    upstream.release();
    finish_stream(held).await;
    b.until_key("team-a", "nothing in flight", |k| {
        k["usage"]["in_flight"] == 0
    })
    .await;
}

#[tokio::test]
async fn limits_hold_from_the_first_request_after_start() {
    let redis = RedisServer::start();
    for on_error in ["allow", "deny"] {
        let state = redis_state(&redis, &format!("on_error = \"{on_error}\"\n"));
        // No wait for anything: the first requests come at once, as to a replica that just
        // joined a load balancer (`/readyz` is 200 whether Redis is up or not).
        let app = spawn_app(&config("rpm = 2", &state, None)).await;
        let api = Api::of_app(&app);
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(api.chat(KEY, &ask("echo/x", "early")).await);
        }
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            [200, 200, 429],
            "on_error = {on_error}: {answers:?}"
        );
        assert_refused_for_now(&answers[2], "rate_limit_requests");
    }
}

// ---------------------------------------------------------------------------------------
// One suite, two backends: in process, once on `memory` and once on a real Redis.

/// For each test body `name(state: &str)`, a module `name` with two tests: `memory` and
/// `redis` (a `redis-server` of its own).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(super::MEMORY).await;
            }

            #[tokio::test]
            async fn redis() {
                let redis = crate::process::RedisServer::start();
                super::$name(&super::redis_state(&redis, "")).await;
            }
        }
    )*};
}

on_both_backends!(
    an_rpm_burst_admits_exactly_rpm,
    tokens_are_reserved_then_settled_with_real_usage,
    a_slot_is_released_when_its_stream_ends,
    a_slot_is_released_when_its_client_leaves,
    a_budget_refuses_once_spent,
    limited_completions_carry_rate_limit_headers,
    cache_hits_count_as_requests_but_spend_nothing,
    a_stream_is_settled_from_its_usage_at_its_end,
    a_stream_without_usage_is_settled_from_its_text,
);

/// Starts an in-process gateway on `config` and waits until its state backend is up (as
/// `/readyz` shows it).
async fn start_app(config: &str) -> (TestApp, Api) {
    let app = spawn_app(config).await;
    let api = Api::of_app(&app);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let (status, body) = api.readyz().await;
        if status == 200 && body["state"]["up"] == true {
            return (app, api);
        }
        assert!(
            Instant::now() < deadline,
            "the state backend never up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn an_rpm_burst_admits_exactly_rpm(state: &str) {
    let (_app, api) = start_app(&config("rpm = 5", state, None)).await;
    let started = Instant::now();
    let mut burst = Vec::new();
    for _ in 0..20 {
        let api = api.clone();
        burst.push(tokio::spawn(async move {
            api.chat(KEY, &ask("echo/x", "burst")).await
        }));
    }
    let mut answers = Vec::new();
    for request in burst {
        answers.push(request.await.unwrap());
    }
    // One more request needs 12 s of refill at 5 per minute.
    assert!(started.elapsed() < Duration::from_secs(12));
    let admitted = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(admitted, 5, "{answers:?}");
    for answer in answers.iter().filter(|a| a.status != 200) {
        assert_refused_for_now(answer, "rate_limit_requests");
    }
    // The other key has its own bucket.
    assert_eq!(api.chat(OTHER, &ask("echo/x", "mine")).await.status, 200);
}

async fn tokens_are_reserved_then_settled_with_real_usage(state: &str) {
    let (_app, api) = start_app(&config("tpm = 100", state, None)).await;
    away_from_a_minute_boundary().await;
    // Estimated at about 30 tokens: admitted. It really uses 120.
    let spent = api.chat(KEY, &ask("echo/x", &words(60))).await;
    assert_eq!(spent.status, 200, "{spent:?}");
    assert_eq!(spent.total_tokens(), 120);
    api.until_key("team-a", "120 tokens this minute", |k| {
        k["usage"]["tokens_this_minute"] == 120
    })
    .await;
    let mut small = ask("echo/x", "hello");
    small["max_tokens"] = json!(20);
    assert_refused_for_now(&api.chat(KEY, &small).await, "rate_limit_tokens");
    // An estimate over the whole `tpm` can never pass: refused without a wait that helps.
    let mut huge = ask("echo/x", "hello");
    huge["max_tokens"] = json!(5000);
    let refused = api.chat(KEY, &huge).await;
    assert_refused(&refused, "rate_limit_tokens");
}

async fn a_slot_is_released_when_its_stream_ends(state: &str) {
    let upstream = SlowUpstream::start().await;
    let (_app, api) = start_app(&config("max_concurrent = 1", state, Some(&upstream))).await;
    let held = api.hold_stream(KEY, &slow_stream()).await;
    let body = ask("echo/x", "next");
    assert_refused(&api.chat(KEY, &body).await, "too_many_concurrent_requests");
    assert_refused(
        &api.chat(KEY, &slow_stream()).await,
        "too_many_concurrent_requests",
    );
    assert_eq!(
        upstream.requests(),
        1,
        "a refused request reaches no upstream"
    );
    assert_eq!(api.key_usage("team-a").await["usage"]["in_flight"], 1);
    upstream.release();
    let text = finish_stream(held).await;
    assert!(text.contains("data: [DONE]"), "{text}");
    let limit = Duration::from_secs(5);
    let answer = api
        .until_admitted(KEY, &body, "too_many_concurrent_requests", limit)
        .await;
    assert_eq!(answer.status, 200);
    api.until_key("team-a", "nothing in flight", |k| {
        k["usage"]["in_flight"] == 0
    })
    .await;
}

async fn a_slot_is_released_when_its_client_leaves(state: &str) {
    let upstream = SlowUpstream::start().await;
    let (_app, api) = start_app(&config("max_concurrent = 1", state, Some(&upstream))).await;
    let held = api.hold_stream(KEY, &slow_stream()).await;
    let body = ask("echo/x", "next");
    assert_refused(&api.chat(KEY, &body).await, "too_many_concurrent_requests");
    drop(held);
    let limit = Duration::from_secs(5);
    let answer = api
        .until_admitted(KEY, &body, "too_many_concurrent_requests", limit)
        .await;
    assert_eq!(answer.status, 200);
    // The stream that comes next holds the one slot again.
    let again = api.hold_stream(KEY, &slow_stream()).await;
    assert_refused(&api.chat(KEY, &body).await, "too_many_concurrent_requests");
    drop(again);
}

async fn a_budget_refuses_once_spent(state: &str) {
    let (_app, api) = start_app(&config(
        "budget_usd = 0.05, budget_window = \"total\"",
        state,
        None,
    ))
    .await;
    let first = api.chat(KEY, &ask("echo/x", &words(10))).await;
    assert_eq!(first.status, 200, "{first:?}");
    let spent = api.chat(KEY, &ask("echo/x", &words(30))).await;
    assert_eq!(spent.status, 200, "{spent:?}");
    // 20 + 60 tokens at 0.001 USD.
    let key = api
        .until_key("team-a", "0.08 USD spent", |k| {
            k["usage"]["spend_usd"].as_f64().unwrap_or(0.0) > 0.0799
        })
        .await;
    assert!(
        (key["usage"]["spend_usd"].as_f64().unwrap() - 0.08).abs() < 1e-9,
        "{key}"
    );
    assert_refused(
        &api.chat(KEY, &ask("echo/x", "hi")).await,
        "budget_exceeded",
    );
    assert_refused(
        &api.chat(KEY, &ask_stream("echo/x", "hi", false)).await,
        "budget_exceeded",
    );
    assert_eq!(api.chat(OTHER, &ask("echo/x", "hi")).await.status, 200);
}

/// A duration as OpenAI writes it (`6s`, `1m30s`, `20ms`, `0.5s`), in seconds.
fn duration_secs(text: &str) -> f64 {
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("a duration: {text:?}"));
        number.clear();
        total += value
            * match c {
                'h' => 3600.0,
                'm' if chars.peek() == Some(&'s') => {
                    chars.next();
                    0.001
                }
                'm' => 60.0,
                's' => 1.0,
                _ => panic!("a duration: {text:?}"),
            };
    }
    assert!(
        number.is_empty() && !text.is_empty(),
        "a duration: {text:?}"
    );
    total
}

async fn limited_completions_carry_rate_limit_headers(state: &str) {
    let (app, api) = start_app(&config("rpm = 10, tpm = 1000", state, None)).await;
    let header = |answer: &Answer, name: &str| {
        answer
            .header(name)
            .unwrap_or_else(|| panic!("{name} in {answer:?}"))
            .to_owned()
    };
    let reset = |answer: &Answer, name: &str| {
        let secs = duration_secs(&header(answer, name));
        assert!(secs > 0.0 && secs <= 60.0, "{name}: {answer:?}");
    };
    for (i, remaining) in ["9", "8"].into_iter().enumerate() {
        let answer = api.chat(KEY, &ask("echo/x", "hello world")).await;
        assert_eq!(answer.status, 200, "#{i}: {answer:?}");
        assert_eq!(header(&answer, "x-ratelimit-limit-requests"), "10");
        assert_eq!(header(&answer, "x-ratelimit-remaining-requests"), remaining);
        reset(&answer, "x-ratelimit-reset-requests");
        assert_eq!(header(&answer, "x-ratelimit-limit-tokens"), "1000");
        let tokens: u64 = header(&answer, "x-ratelimit-remaining-tokens")
            .parse()
            .unwrap();
        assert!((980..1000).contains(&tokens), "{answer:?}");
        reset(&answer, "x-ratelimit-reset-tokens");
    }
    // A stream carries them in its head.
    let stream = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&ask_stream("echo/x", "hello world", true))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let headers = stream.headers().clone();
    assert_eq!(headers["x-ratelimit-limit-requests"], "10");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "7");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    stream.text().await.unwrap();
    // A refusal says how long to wait in both forms.
    for _ in 0..7 {
        assert_eq!(api.chat(KEY, &ask("echo/x", "x")).await.status, 200);
    }
    let refused = api.chat(KEY, &ask("echo/x", "x")).await;
    let wait = assert_refused_for_now(&refused, "rate_limit_requests");
    assert!(wait <= 6, "one request refills in 6 s: {refused:?}");
}

async fn cache_hits_count_as_requests_but_spend_nothing(state: &str) {
    let limits = "rpm = 5, tpm = 100, budget_usd = 0.1, budget_window = \"total\"";
    let (_app, api) = start_app(&config(limits, state, None)).await;
    // 60 tokens, 0.06 USD: a second one would pass neither `tpm` nor the budget.
    let body = ask("cached", &words(30));
    let miss = api.chat(KEY, &body).await;
    assert_eq!(
        (miss.status, miss.header("x-llmgate-cache")),
        (200, Some("miss")),
        "{miss:?}"
    );
    api.until_key("team-a", "0.06 USD spent", |k| {
        k["usage"]["spend_usd"].as_f64().unwrap_or(0.0) > 0.0599
    })
    .await;
    for i in 0..4 {
        let hit = api.chat(KEY, &body).await;
        assert_eq!(
            (hit.status, hit.header("x-llmgate-cache")),
            (200, Some("hit")),
            "hit #{i}: {hit:?}"
        );
    }
    // Five requests: the sixth is over `rpm`.
    assert_refused_for_now(&api.chat(KEY, &body).await, "rate_limit_requests");
    let key = api.key_usage("team-a").await;
    assert!(
        (key["usage"]["spend_usd"].as_f64().unwrap() - 0.06).abs() < 1e-9,
        "{key}"
    );
}

async fn a_stream_is_settled_from_its_usage_at_its_end(state: &str) {
    let upstream = SlowUpstream::start().await;
    let (_app, api) = start_app(&config("tpm = 1000", state, Some(&upstream))).await;
    away_from_a_minute_boundary().await;
    let held = api.hold_stream(KEY, &slow_stream()).await;
    let key = api.key_usage("team-a").await;
    assert_eq!(key["usage"]["in_flight"], 1, "{key}");
    assert_eq!(
        key["usage"]["spend_usd"], 0.0,
        "nothing spent before the end: {key}"
    );
    upstream.release();
    let text = finish_stream(held).await;
    assert!(text.contains("data: [DONE]"), "{text}");
    // 3 prompt tokens at 0.001 and 5 completion tokens at 0.002 USD.
    let key = api
        .until_key("team-a", "the stream's 8 tokens", |k| {
            k["usage"]["in_flight"] == 0 && k["usage"]["tokens_this_minute"] == 8
        })
        .await;
    let spend = key["usage"]["spend_usd"].as_f64().unwrap();
    assert!((spend - 0.013).abs() < 1e-9, "{key}");
}

async fn a_stream_without_usage_is_settled_from_its_text(state: &str) {
    let upstream = SlowUpstream::start_with(false).await;
    let (_app, api) = start_app(&config("tpm = 1000", state, Some(&upstream))).await;
    away_from_a_minute_boundary().await;
    let held = api
        .hold_stream(KEY, &ask_stream("slow/m", &words(40), false))
        .await;
    upstream.release();
    finish_stream(held).await;
    let key = api
        .until_key("team-a", "the stream settled", |k| {
            k["usage"]["in_flight"] == 0 && k["usage"]["spend_usd"].as_f64() > Some(0.0)
        })
        .await;
    // 40 words of prompt and a word of answer: tokens counted from the text, not zero.
    assert!(
        key["usage"]["tokens_this_minute"].as_u64() > Some(0),
        "{key}"
    );
    assert!(key["usage"]["spend_usd"].as_f64() > Some(0.0), "{key}");
}
