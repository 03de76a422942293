//! Hostile or broken upstreams: indexes that would allocate, bodies and events without end,
//! messages without end, and unreachable hosts whose address must not leak to clients.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::scripted::{event, scripted_upstream};
use crate::support::*;

fn chunk(choice: Value) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [choice]})
}

fn content(text: &str) -> Value {
    chunk(json!({"index": 0, "delta": {"content": text}, "finish_reason": null}))
}

fn finish() -> Value {
    chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"}))
}

async fn error_message(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    (status, message)
}

/// The error event ending a stream that had started.
async fn stream_error(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = sse_events(&text);
    assert!(!text.contains("[DONE]"), "{events:?}");
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    error["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn choice_and_tool_call_indexes_out_of_range_are_refused() {
    let huge = 4_294_967_295u64;
    let whole = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": huge, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]});
    let (_up, app) = app_with_upstream(ResponseTemplate::new(200).set_body_json(whole)).await;
    let (status, message) = error_message(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(status, 502);
    assert!(message.contains("index 4294967295"), "{message}");

    let bad_choice = chunk(json!({"index": huge, "delta": {"content": "x"}}));
    let (_up, app) = app_with_upstream(sse_response(event(&bad_choice))).await;
    let (status, message) = error_message(app.chat(ask_stream("up/m", "x", false)).await).await;
    assert_eq!(status, 502, "before the first chunk: a status");
    assert!(message.contains("index 4294967295"), "{message}");

    let bad_call = chunk(json!({"index": 0, "delta": {"tool_calls": [
        {"index": huge, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}));
    let body = format!("{}{}", event(&content("hi")), event(&bad_call));
    let (_up, app) = app_with_upstream(sse_response(body)).await;
    let message = stream_error(app.chat(ask_stream("up/m", "x", false)).await).await;
    assert!(message.contains("index 4294967295"), "{message}");
}

const SMALL_BODIES: &str = "[server]\nmax_upstream_body_bytes = 1000\n";

#[tokio::test]
async fn upstream_bodies_larger_than_the_limit_are_refused() {
    let big = json!({"choices": [{"index": 0, "message": {"content": "x".repeat(2000)}, "finish_reason": "stop"}]});
    // Announced by content-length ...
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&big))
        .mount(&upstream)
        .await;
    let base_url = format!("{}/v1", upstream.uri());
    let app = spawn_app(&openai_config(&base_url, SMALL_BODIES)).await;
    let (status, message) = error_message(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(status, 502);
    assert!(message.contains("larger than 1000 bytes"), "{message}");
    // ... or found out while reading a chunked body.
    let text = big.to_string();
    let pieces = text
        .as_bytes()
        .chunks(600)
        .map(|piece| (Duration::ZERO, String::from_utf8(piece.to_vec()).unwrap()))
        .collect();
    let base_url = scripted_upstream("application/json", pieces).await;
    let app = spawn_app(&openai_config(&base_url, SMALL_BODIES)).await;
    let (status, message) = error_message(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(status, 502);
    assert!(message.contains("larger than 1000 bytes"), "{message}");
}

#[tokio::test]
async fn upstream_error_bodies_are_bounded_and_their_messages_cut() {
    let upstream = wiremock::MockServer::start().await;
    let long = "é".repeat(3000);
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": long, "code": "bad"}})),
        )
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(&format!("{}/v1", upstream.uri()), "")).await;
    let (status, message) = error_message(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(status, 400);
    assert!(message.len() <= 1024 + '…'.len_utf8(), "{}", message.len());
    assert!(
        message.starts_with("éé") && message.ends_with('…'),
        "{message}"
    );

    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("x".repeat(2000)))
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(
        &format!("{}/v1", upstream.uri()),
        SMALL_BODIES,
    ))
    .await;
    let (status, message) = error_message(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(status, 502);
    assert!(message.contains("larger than 1000 bytes"), "{message}");
}

const SMALL_EVENTS: &str =
    "[server]\nmax_upstream_event_bytes = 1000\nstream_idle_timeout_secs = 1\n";

#[tokio::test]
async fn upstream_events_larger_than_the_limit_are_refused() {
    let big = event(&content(&"x".repeat(2000)));
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(sse_response(big.clone()))
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(
        &format!("{}/v1", upstream.uri()),
        SMALL_EVENTS,
    ))
    .await;
    let (status, message) = error_message(app.chat(ask_stream("up/m", "x", false)).await).await;
    assert_eq!(status, 502, "before the first chunk: a status");
    assert!(message.contains("larger than 1000 bytes"), "{message}");

    let base_url = scripted_upstream(
        "text/event-stream",
        vec![
            (Duration::ZERO, event(&content("hi"))),
            (Duration::ZERO, big),
        ],
    )
    .await;
    let app = spawn_app(&openai_config(&base_url, SMALL_EVENTS)).await;
    let message = stream_error(app.chat(ask_stream("up/m", "x", false)).await).await;
    assert!(message.contains("larger than 1000 bytes"), "{message}");
}

#[tokio::test]
async fn an_endless_line_hits_the_event_limit_though_its_bytes_keep_the_stream_alive() {
    // 150 bytes every 200 ms: never idle for the 1 s idle timeout, over 1000 bytes at 1.4 s.
    let mut script = vec![
        (Duration::ZERO, event(&content("hi"))),
        (Duration::ZERO, "data: ".to_owned()),
    ];
    script.extend((0..10).map(|_| (Duration::from_millis(200), "x".repeat(150))));
    let base_url = scripted_upstream("text/event-stream", script).await;
    let app = spawn_app(&openai_config(&base_url, SMALL_EVENTS)).await;
    let message = stream_error(app.chat(ask_stream("up/m", "x", false)).await).await;
    assert!(message.contains("larger than 1000 bytes"), "{message}");
}

#[tokio::test]
async fn upstream_comments_keep_a_slow_stream_from_idling() {
    // A ping every 300 ms for 1.8 s, with a 1 s idle timeout, then the end.
    let mut script = vec![(Duration::ZERO, event(&content("hi")))];
    script.extend((0..6).map(|_| (Duration::from_millis(300), ": ping\n\n".to_owned())));
    script.push((Duration::ZERO, event(&finish())));
    script.push((Duration::ZERO, "data: [DONE]\n\n".to_owned()));
    let base_url = scripted_upstream("text/event-stream", script).await;
    let app = spawn_app(&openai_config(&base_url, SMALL_EVENTS)).await;
    let response = app.chat(ask_stream("up/m", "x", false)).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("error"), "{text}");
    assert_eq!(sse_events(&text).last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn an_unreachable_upstream_is_named_without_its_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let base_url = format!("http://{address}/v1");
    let app = spawn_app(&openai_config(&base_url, "")).await;
    for request in [ask("up/m", "x"), ask_stream("up/m", "x", false)] {
        let response = app.chat(request).await;
        assert_eq!(response.status(), 502);
        let body = response.text().await.unwrap();
        assert!(!body.contains(&address), "{body}");
        assert!(!body.contains("127.0.0.1"), "{body}");
        assert!(body.contains("provider `up`"), "{body}");
        assert!(body.contains("connection refused"), "{body}");
    }
}
