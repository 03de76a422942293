//! Routing through real HTTP mocks: exact attempt counts, fallbacks before and (never) after
//! a stream's first byte, the cache for both response kinds, variables, and no leaked
//! connections. Timing-sensitive cases (backoff, ejection, hedging) run on paused time in
//! `src/routing/execute/tests.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
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
