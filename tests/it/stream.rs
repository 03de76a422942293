//! Streamed completions: normalization, errors before and after the first chunk, keep-alives,
//! and cancellation when the client goes away.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

async fn upstream_with(response: ResponseTemplate) -> (MockServer, TestApp) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(response)
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(&format!("{}/v1", upstream.uri()), "")).await;
    (upstream, app)
}

#[tokio::test]
async fn echo_streams_word_by_word_in_the_contract_shape() {
    let app = echo_app().await;
    let response = app
        .chat(ask_stream("echo/x", "hello big world", false))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-llmgate-provider"], "echo");
    let text = response.text().await.unwrap();
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = sse_chunks(&text);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "hello"})
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "hello big world");
    for chunk in &chunks {
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["created"], chunks[0]["created"]);
        assert!(chunk["created"].is_i64());
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "echo/x");
        assert!(
            chunk.get("usage").is_none(),
            "no usage without include_usage"
        );
    }
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn include_usage_adds_one_final_usage_chunk() {
    let app = echo_app().await;
    let text = app
        .chat(ask_stream("echo/x", "a b", true))
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse_chunks(&text);
    let with_usage: Vec<&Value> = chunks.iter().filter(|c| c.get("usage").is_some()).collect();
    assert_eq!(with_usage.len(), 1);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4})
    );
}

#[tokio::test]
async fn nugen_style_upstream_chunks_are_normalized() {
    // Float `created`, no `object`, usage riding on the last content chunk (Nugen's shape).
    let body = "data: {\"id\":\"nugen-abc123\",\"created\":1704123600.0,\"model\":\"nugen-flash-instruct\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Once\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"nugen-abc123\",\"created\":1704123600.0,\"model\":\"nugen-flash-instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" upon\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"nugen-abc123\",\"created\":1704123600.0,\"model\":\"nugen-flash-instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a time\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}\n\n\
data: [DONE]\n\n";
    let (_upstream, app) = upstream_with(sse(body.to_owned())).await;
    for include_usage in [true, false] {
        let text = app
            .chat(ask_stream(
                "up/nugen-flash-instruct",
                "story",
                include_usage,
            ))
            .await
            .text()
            .await
            .unwrap();
        let chunks = sse_chunks(&text);
        assert_eq!(chunks.len(), if include_usage { 4 } else { 3 });
        for chunk in &chunks {
            assert_eq!(chunk["created"], 1_704_123_600);
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "up/nugen-flash-instruct");
        }
        assert!(chunks[2].get("usage").is_none());
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        if include_usage {
            assert_eq!(chunks[3]["choices"], json!([]));
            assert_eq!(chunks[3]["usage"]["total_tokens"], 15);
        }
        assert_eq!(sse_events(&text).last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn the_upstream_is_asked_for_usage_and_tool_call_deltas_get_an_index() {
    let chunks = [
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}),
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}),
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}),
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
    ];
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .respond_with(sse(sse_body(&chunks)))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(&format!("{}/v1", upstream.uri()), "")).await;
    let text = app
        .chat(ask_stream("up/m", "weather?", false))
        .await
        .text()
        .await
        .unwrap();
    let out = sse_chunks(&text);
    let mut arguments = String::new();
    for chunk in &out[..3] {
        let call = &chunk["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            call["index"], 0,
            "every tool-call delta carries index: {chunk}"
        );
        arguments.push_str(call["function"]["arguments"].as_str().unwrap());
    }
    assert_eq!(
        out[0]["choices"][0]["delta"]["tool_calls"][0]["id"],
        "call_1"
    );
    assert_eq!(arguments, "{\"city\":\"Paris\"}");
    assert_eq!(out[3]["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn an_error_as_the_first_event_is_a_real_status() {
    let body = "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n";
    let (_upstream, app) = upstream_with(sse(body.to_owned())).await;
    let response = app.chat(ask_stream("up/m", "x", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["content-type"], "application/json");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["message"], "Rate limit reached");
}

#[tokio::test]
async fn a_failed_open_is_a_real_status() {
    let (_upstream, app) =
        upstream_with(ResponseTemplate::new(503).set_body_string("overloaded")).await;
    let response = app.chat(ask_stream("up/m", "x", false)).await;
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`up`") && message.contains("overloaded"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failure_after_the_first_chunk_is_one_error_event_and_the_end() {
    let first = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]});
    for (name, rest) in [
        (
            "malformed chunk",
            "data: {not json\n\ndata: [DONE]\n\n".to_owned(),
        ),
        ("cut connection", String::new()),
    ] {
        let (_upstream, app) = upstream_with(sse(format!("data: {first}\n\n{rest}"))).await;
        let response = app.chat(ask_stream("up/m", "x", false)).await;
        assert_eq!(response.status(), 200, "{name}");
        let text = response.text().await.unwrap();
        let events = sse_events(&text);
        assert_eq!(events.len(), 2, "{name}: {events:?}");
        let error: Value = serde_json::from_str(&events[1]).unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().contains("`up`"),
            "{name}: {error}"
        );
        assert!(!text.contains("[DONE]"), "{name}: no [DONE] after an error");
    }
}

#[tokio::test]
async fn keepalive_comments_flow_while_the_upstream_is_quiet() {
    let first = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]});
    let upstream = hanging_upstream(format!("data: {first}\n\n"), None).await;
    let app = spawn_app(&openai_config(
        &upstream.base_url,
        "[server]\nstream_keepalive_secs = 1\nstream_idle_timeout_secs = 3\n",
    ))
    .await;
    let response = app.chat(ask_stream("up/m", "x", false)).await;
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the idle timeout ends the stream")
        .unwrap();
    let events = sse_events(&text);
    assert!(events[0].starts_with('{'));
    let keepalives = events.iter().filter(|e| *e == ": keep-alive").count();
    assert!(keepalives >= 2, "{events:?}");
    assert!(
        events.last().unwrap().contains("no event for 3 s"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_request() {
    let first = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]});
    let upstream = hanging_upstream(format!("data: {first}\n\n"), None).await;
    let app = spawn_app(&openai_config(&upstream.base_url, "")).await;
    let response = app.chat(ask_stream("up/m", "x", false)).await;
    let mut body = response.bytes_stream();
    let first_bytes = body.next().await.unwrap().unwrap();
    assert!(first_bytes.starts_with(b"data: "));
    assert!(!upstream.closed.load(Ordering::SeqCst));
    drop(body);
    let closed = eventually(Duration::from_secs(5), || {
        upstream.closed.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        closed,
        "the upstream connection must close when the client goes away"
    );
}
