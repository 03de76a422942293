//! Routing through real HTTP mocks: exact attempt counts, fallbacks before and (never) after
//! a stream's first byte, the cache for both response kinds, variables, no leaked
//! connections, circuits that never fail fast alone, retry-after limits, model addressing and
//! listing. Timing-sensitive cases (backoff, hedging, probe races) run on paused time in
//! `src/routing/execute/tests.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use llmgate::config::Config;
use llmgate::server::{self, AppState};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

fn completion(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
}

fn stream_of(text: &str) -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    format!(
        "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(json!({"role": "assistant", "content": text}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    )
}

/// Two OpenAI-kind providers `a` and `b` on their own mocks, plus `extra` config.
async fn two_providers(extra: &str) -> (MockServer, MockServer, TestApp) {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    let config = format!(
        "[providers.a]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[providers.b]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n{extra}",
        a.uri(),
        b.uri()
    );
    let app = spawn_app(&config).await;
    (a, b, app)
}

const ALIAS: &str = "[models.fast]\ntargets = [{ provider = \"a\", model = \"m\" }]\nfallbacks = [\"b/m\"]\nretry = { attempts = 3, backoff_ms = 1 }\n";

#[tokio::test]
async fn retries_then_success_with_exact_attempt_counts() {
    let (a, _b, app) = two_providers(ALIAS).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("third")))
        .expect(1)
        .mount(&a)
        .await;
    let response = app.chat(ask("fast", "hi")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-attempts"], "3");
    assert_eq!(response.headers()["x-llmgate-provider"], "a");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "third");
}

#[tokio::test]
async fn a_target_out_of_retries_falls_back() {
    let (a, b, app) = two_providers(ALIAS).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("from b")))
        .expect(1)
        .mount(&b)
        .await;
    let response = app.chat(ask("fast", "hi")).await;
    assert_eq!(response.headers()["x-llmgate-provider"], "b");
    assert_eq!(response.headers()["x-llmgate-attempts"], "4");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "fast");
}

#[tokio::test]
async fn a_stream_falls_back_before_its_first_byte() {
    let (a, b, app) = two_providers(ALIAS).await;
    let error_event = "data: {\"error\": {\"message\": \"overloaded\", \"code\": 503}}\n\n";
    Mock::given(method("POST"))
        .respond_with(sse_response(error_event.to_owned()))
        .expect(3)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_response(stream_of("from b")))
        .expect(1)
        .mount(&b)
        .await;
    let response = app.chat(ask_stream("fast", "hi", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-provider"], "b");
    assert_eq!(response.headers()["x-llmgate-attempts"], "4");
    let text = response.text().await.unwrap();
    assert_eq!(
        sse_chunks(&text)[0]["choices"][0]["delta"]["content"],
        "from b"
    );
}

#[tokio::test]
async fn no_fallback_after_a_streams_first_byte() {
    let (a, b, app) = two_providers(ALIAS).await;
    let first = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]});
    Mock::given(method("POST"))
        .respond_with(sse_response(format!(
            "data: {first}\n\ndata: {{\"error\": {{\"message\": \"boom\"}}}}\n\n"
        )))
        .expect(1)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_response(stream_of("b")))
        .expect(0)
        .mount(&b)
        .await;
    let response = app.chat(ask_stream("fast", "hi", false)).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].contains("boom"));
}

#[tokio::test]
async fn per_request_fallbacks_must_be_allowed_for_the_key() {
    let (_a, b, app) =
        two_providers("[auth]\nkeys = [{ name = \"k\", key = \"sk-k\", models = [\"a/*\"] }]\n")
            .await;
    let mut body = ask("a/m", "hi");
    body["fallbacks"] = json!([{"model": "b/m"}]);
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("b/m"));
    assert!(b.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cache_serves_both_response_kinds() {
    let (a, _b, app) = two_providers("").await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(sse_response(stream_of("cached words")))
        .expect(1)
        .mount(&a)
        .await;
    // Once for the "twice" miss, once for the request without `cache`.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("whole")))
        .expect(2)
        .mount(&a)
        .await;
    let cached = |mut body: Value| {
        body["cache"] = json!({"type": "exact_match", "ttl": 60});
        body
    };
    // A streamed miss is recorded ...
    let miss = app.chat(cached(ask_stream("a/m", "once", false))).await;
    assert_eq!(miss.headers()["x-llmgate-cache"], "miss");
    assert!(miss.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // ... and replayed as a proper stream, with usage when asked ...
    let hit = app.chat(cached(ask_stream("a/m", "once", true))).await;
    assert_eq!(hit.headers()["x-llmgate-cache"], "hit");
    assert_eq!(hit.headers()["x-llmgate-attempts"], "0");
    let text = hit.text().await.unwrap();
    let chunks = sse_chunks(&text);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "cached words", "{text}");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 4);
    assert!(text.ends_with("data: [DONE]\n\n"));
    // ... or as JSON.
    let json_hit: Value = app
        .chat(cached(ask("a/m", "once")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json_hit["choices"][0]["message"]["content"], "cached words");
    assert_eq!(json_hit["model"], "a/m");
    // Another prompt is a miss (the non-stream mock answers it), then a hit.
    for expected in ["miss", "hit"] {
        let response = app.chat(cached(ask("a/m", "twice"))).await;
        assert_eq!(response.headers()["x-llmgate-cache"], expected);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "whole");
    }
    // Without `cache` nothing is looked up.
    let response = app.chat(ask("a/m", "twice")).await;
    assert!(response.headers().get("x-llmgate-cache").is_none());
}

#[tokio::test]
async fn failures_are_not_cached() {
    let (a, _b, app) = two_providers("").await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&a)
        .await;
    let mut body = ask("a/m", "hi");
    body["cache"] = json!({"type": "exact_match"});
    for _ in 0..2 {
        assert_eq!(app.chat(body.clone()).await.status(), 502);
    }
}

#[tokio::test]
async fn variables_are_substituted_before_routing() {
    let (a, _b, app) = two_providers("").await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"messages": [{"role": "user", "content": "Hello Ann, plan Premium"}]}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok")))
        .expect(1)
        .mount(&a)
        .await;
    let mut body = ask("a/m", "Hello {{name}}, plan {{ plan }}");
    body["variables"] = json!({"name": "Ann", "plan": "Premium"});
    assert_eq!(app.chat(body.clone()).await.status(), 200);
    body["variables"] = json!({"name": "Ann"});
    let response = app.chat(body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "variables.plan");
}

#[tokio::test]
async fn client_disconnects_leak_no_upstream_connections() {
    let first = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]});
    let upstream = hanging_upstream(format!("data: {first}\n\n"), None).await;
    let app = spawn_app(&openai_config(&upstream.base_url, "")).await;
    for _ in 0..5 {
        let response = app.chat(ask_stream("up/m", "hi", false)).await;
        let mut body = response.bytes_stream();
        assert!(body.next().await.unwrap().unwrap().starts_with(b"data: "));
    }
    let all_closed = eventually(Duration::from_secs(5), || {
        upstream.closes.load(Ordering::SeqCst) == upstream.connections.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 5);
    assert!(
        all_closed,
        "every upstream connection closed: {} of 5",
        upstream.closes.load(Ordering::SeqCst)
    );
}

/// The error envelope of a response, after checking its status.
async fn error_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    body["error"].clone()
}

#[tokio::test]
async fn a_lone_failing_target_keeps_answering_with_its_own_error_after_ejection() {
    let (a, _b, app) =
        two_providers("[server]\ncircuit_failures = 2\ncircuit_cooldown_ms = 60000\n").await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream broke"))
        .expect(5)
        .mount(&a)
        .await;
    for i in 0..5 {
        let error = error_of(app.chat(ask("a/m", "hi")).await, 502).await;
        assert_eq!(error["code"], "upstream_error", "request {i}");
        assert!(error["message"].as_str().unwrap().contains("`a`"));
    }
}

#[tokio::test]
async fn an_ejected_target_with_a_healthy_fallback_is_skipped_then_probed_once() {
    let config = "[server]\ncircuit_failures = 2\ncircuit_cooldown_ms = 1000\n[models.fast]\ntargets = [{ provider = \"a\", model = \"m\" }]\nfallbacks = [\"b/m\"]\n";
    let (a, b, app) = two_providers(config).await;
    // Two failures eject a; after the cool-down exactly one request probes it.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("from b")))
        .mount(&b)
        .await;
    let attempts = |response: &reqwest::Response| {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-llmgate-provider"], "b");
        response.headers()["x-llmgate-attempts"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    for _ in 0..2 {
        assert_eq!(attempts(&app.chat(ask("fast", "hi")).await), "2");
    }
    for _ in 0..3 {
        assert_eq!(
            attempts(&app.chat(ask("fast", "hi")).await),
            "1",
            "a is skipped"
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        attempts(&app.chat(ask("fast", "hi")).await),
        "2",
        "the probe"
    );
    for _ in 0..3 {
        assert_eq!(
            attempts(&app.chat(ask("fast", "hi")).await),
            "1",
            "ejected again"
        );
    }
}

#[tokio::test]
async fn a_clients_short_call_timeout_does_not_eject_the_target() {
    let (a, _b, app) = two_providers("[server]\ncircuit_failures = 2\n").await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("slow"))
                .set_delay(Duration::from_millis(400)),
        )
        .expect(4)
        .mount(&a)
        .await;
    let mut impatient = ask("a/m", "hi");
    impatient["timeout"] = json!({"call_timeout": 100});
    impatient["retry"] = json!({"count": 2});
    let error = error_of(app.chat(impatient).await, 504).await;
    assert_eq!(error["code"], "upstream_timeout");
    // Three timeouts of the client's own making: a is not ejected, the next request gets it.
    let response = app.chat(ask("a/m", "hi")).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_long_retry_after_is_returned_at_once_with_the_upstreams_header() {
    let config = "[models.fast]\ntargets = [{ provider = \"a\", model = \"m\" }]\nretry = { attempts = 3, backoff_ms = 1 }\n";
    let (a, _b, app) = two_providers(config).await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "60")
                .set_body_json(json!({"error": {"message": "slow down"}})),
        )
        .expect(1)
        .mount(&a)
        .await;
    let response = app.chat(ask("fast", "hi")).await;
    assert_eq!(response.headers()["retry-after"], "60");
    error_of(response, 429).await;
}

#[tokio::test]
async fn an_unconfigured_provider_is_named_with_how_to_configure_it() {
    let app = echo_app().await;
    let error = error_of(app.chat(ask("openai/gpt-4o-mini", "hi")).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(
            "provider `openai` is not configured: set OPENAI_API_KEY or add [providers.openai]"
        ),
        "{message}"
    );
    assert!(message.contains("openai/gpt-4o-mini"), "{message}");
    for (kind, var) in [
        ("nugen", "NUGEN_API_KEY"),
        ("atoma", "ATOMA_API_KEY"),
        ("orq", "ORQ_API_KEY"),
    ] {
        let error = error_of(app.chat(ask(&format!("{kind}/m"), "hi")).await, 404).await;
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("set {var} or add [providers.{kind}]")),
            "{message}"
        );
    }
    let mut body = ask("echo/m", "hi");
    body["fallbacks"] = json!([{"model": "x/m"}]);
    let error = error_of(app.chat(body).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("provider `x` is not configured; add [providers.x]"),
        "{message}"
    );
}

#[tokio::test]
async fn routing_lists_are_bounded() {
    let app = echo_app().await;
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"model": format!("echo/m{i}")}))
        .collect();
    let mut body = ask("echo/m", "hi");
    body["fallbacks"] = json!(many);
    assert_eq!(
        error_of(app.chat(body).await, 400).await["param"],
        "fallbacks"
    );
    let mut body = ask("echo/m", "hi");
    body["load_balancer"] = json!({"type": "weight_based", "models": many});
    let error = error_of(app.chat(body).await, 400).await;
    assert_eq!(error["param"], "load_balancer.models");
    let mut body = ask("echo/m", "hi");
    body["timeout"] = json!({"call_timeout": 1});
    let error = error_of(app.chat(body).await, 400).await;
    assert_eq!(error["param"], "timeout.call_timeout");
}

/// A gateway on an already-built config (the embedded default, here).
async fn spawn_config(config: &Config) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    llmgate::telemetry::install_crypto_provider();
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let _ = server::run(listener, state, std::future::pending::<()>()).await;
    });
    (addr, handle)
}

async fn listed(url: String) -> Vec<(String, String)> {
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap().to_owned();
            (text("id"), text("owned_by"))
        })
        .collect()
}

#[tokio::test]
async fn models_lists_echo_on_the_embedded_default_and_each_providers_models() {
    let config = Config::embedded_default(&std::collections::BTreeMap::new());
    let (addr, handle) = spawn_config(&config).await;
    let ids = listed(format!("http://{addr}/v1/models")).await;
    handle.abort();
    assert_eq!(ids, [("echo/echo".to_owned(), "echo".to_owned())]);

    let app = spawn_app("[providers.echo]\nkind = \"echo\"\nmodels = [\"big\", \"small\"]\n").await;
    let ids = listed(app.url("/v1/models")).await;
    let expected = [("echo/big", "echo"), ("echo/small", "echo")]
        .map(|(id, owner)| (id.to_owned(), owner.to_owned()));
    assert_eq!(ids, expected);
}
