//! Keys, request ids, health, the OpenAPI document and graceful shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WITH_KEYS: &str = "[providers.echo]\nkind = \"echo\"\n[auth]\nkeys = [\n  { name = \"all\", key = \"${GATEWAY_KEY}\" },\n  { name = \"echo-only\", key = \"sk-echo\", models = [\"echo/*\", \"fast\"] },\n]\n[models.fast]\ntargets = [{ provider = \"echo\", model = \"x\" }]\n[models.slow]\ntargets = [{ provider = \"echo\", model = \"y\" }]\n";

#[tokio::test]
async fn gateway_keys_are_required_and_limit_models() {
    let app = spawn_app(WITH_KEYS).await;
    let send = |key: Option<&'static str>, model: &'static str| {
        let mut request = app
            .client
            .post(app.url("/v1/chat/completions"))
            .json(&ask(model, "hi"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let response = send(None, "echo/x").await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key");
    assert_eq!(
        send(Some("sk-wrong"), "echo/x").await.unwrap().status(),
        401
    );
    assert_eq!(
        send(Some("sk-gateway"), "slow").await.unwrap().status(),
        200
    );
    assert_eq!(send(Some("sk-echo"), "echo/x").await.unwrap().status(), 200);
    let response = send(Some("sk-echo"), "slow").await.unwrap();
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_allowed");

    // The key check covers the Nugen path and the model list, which shows only allowed names.
    let nugen = app
        .client
        .post(app.url("/api/v3/inference/chat/completions"))
        .json(&ask("echo/x", "hi"));
    assert_eq!(nugen.send().await.unwrap().status(), 401);
    let models: Value = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth("sk-echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast", "echo/x", "echo/y"]);

    // Public endpoints need no key.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let status = app.client.get(app.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = echo_app().await;
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("x-request-id", "client-chosen-1")
        .json(&ask("echo/x", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-1");
    let long = "a".repeat(129);
    for malformed in [long.as_str(), "has spaces", "semi;colon"] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", malformed)
            .send()
            .await
            .unwrap();
        let replaced = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(replaced.len(), 32, "a new id replaces {malformed:?}");
    }
    for path in ["/healthz", "/readyz", "/v1/models", "/nowhere"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
    let response = app.chat(json!({"model": 1})).await;
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn the_openapi_document_is_served_and_committed() {
    let app = echo_app().await;
    let served = app.get_text("/openapi.json").await;
    assert_eq!(served, llmgate::server::openapi::document());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    assert!(
        committed == served,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    let document: Value = serde_json::from_str(&served).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(document["paths"]["/v1/chat/completions"]["post"].is_object());
    assert!(document["paths"]["/api/v3/inference/chat/completions"]["post"].is_object());
    assert!(document["components"]["schemas"]["ChatRequest"].is_object());
}

#[tokio::test]
async fn shutdown_drains_then_finishes_in_flight_streams() {
    let chunk = |text: &str| {
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]})
    };
    let finish = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
    // The upstream sends one chunk, then one every 300 ms; the test stops after the finish.
    let upstream = hanging_upstream(
        format!("data: {}\n\n", chunk("a")),
        Some((
            Duration::from_millis(300),
            format!("data: {finish}\n\ndata: [DONE]\n\n"),
        )),
    )
    .await;
    let mut app = spawn_app(&openai_config(
        &upstream.base_url,
        "[server]\ndrain_delay_secs = 1\nshutdown_grace_secs = 10\n",
    ))
    .await;
    let stream = app.chat(ask_stream("up/m", "x", false)).await;
    assert_eq!(stream.status(), 200);
    app.shutdown();
    // Draining: not ready, but still serving.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let readyz = reqwest::Client::new()
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let text = stream.text().await.unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the in-flight stream finishes: {text:?}"
    );
    let handle = app.handle.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), handle).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "the server stops after draining"
    );
}
