//! Streamed completions beyond the contract suite (`contract.rs`): echo's stream shape,
//! failures after the first chunk, keep-alive comments and the idle deadline.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

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
async fn a_failure_after_the_first_chunk_is_one_error_event_and_the_end() {
    let first = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]});
    for (name, rest) in [
        (
            "malformed chunk",
            "data: {not json\n\ndata: [DONE]\n\n".to_owned(),
        ),
        ("cut connection", String::new()),
    ] {
        let (_upstream, app) =
            app_with_upstream(sse_response(format!("data: {first}\n\n{rest}"))).await;
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
async fn echo_stream_usage_counts_the_completion_of_every_choice() {
    let app = echo_app().await;
    let mut body = ask_stream("echo/x", "a b", true);
    body["n"] = json!(2);
    let text = app.chat(body).await.text().await.unwrap();
    let chunks = sse_chunks(&text);
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6})
    );
}

/// `up` with an alias `m` on it that falls back to echo, and the given `[server]` settings.
fn fallback_config(base_url: &str, server: &str) -> String {
    openai_config(
        base_url,
        &format!(
            "[models.m]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\nfallbacks = [\"echo/e\"]\n[server]\nstream_keepalive_secs = 1\n{server}"
        ),
    )
}

/// An upstream that opens its stream at once but sends an error event only after 2 s.
async fn slow_failing_upstream() -> String {
    let failure = json!({"error": {"message": "overloaded", "code": "server_error"}});
    let script = vec![
        (Duration::ZERO, ": thinking\n\n".to_owned()),
        (Duration::from_secs(2), crate::scripted::event(&failure)),
    ];
    crate::scripted::scripted_upstream("text/event-stream", script).await
}

#[tokio::test]
async fn a_failure_before_the_first_chunk_keepalive_still_falls_back() {
    // Past the 1 s keep-alive interval, yet before the commit time (or with none): nothing
    // was sent, so the failure falls back to echo.
    for server in [
        "stream_first_chunk_keepalive_secs = 3\n",
        "stream_first_chunk_keepalive_secs = 0\n",
    ] {
        let app = spawn_app(&fallback_config(&slow_failing_upstream().await, server)).await;
        let response = app.chat(ask_stream("m", "hello", false)).await;
        assert_eq!(response.status(), 200, "{server}");
        assert_eq!(response.headers()["x-llmgate-provider"], "echo", "{server}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("keep-alive") && !text.contains("error"),
            "{text}"
        );
        assert_eq!(sse_events(&text).last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn past_the_first_chunk_keepalive_the_stream_is_committed() {
    let app = spawn_app(&fallback_config(
        &slow_failing_upstream().await,
        "stream_first_chunk_keepalive_secs = 1\n",
    ))
    .await;
    let response = app.chat(ask_stream("m", "hello", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-provider"], "up");
    let events = sse_events(&response.text().await.unwrap());
    assert_eq!(events[0], ": keep-alive", "{events:?}");
    assert!(events.last().unwrap().contains("overloaded"), "{events:?}");
}
