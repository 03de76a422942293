//! Translation seen from the client: dropped parameters, strict providers, session ids, and
//! fields a provider cannot take at all.

use serde_json::{Value, json};
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

async fn provider(kind: &str, extra: &str) -> (MockServer, TestApp) {
    let upstream = MockServer::start().await;
    let completion = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&upstream)
        .await;
    let config = format!(
        "[providers.up]\nkind = \"{kind}\"\nbase_url = \"{}\"\n{extra}",
        upstream.uri()
    );
    let app = spawn_app(&config).await;
    (upstream, app)
}

async fn sent_body(upstream: &MockServer) -> Value {
    serde_json::from_slice(&upstream.received_requests().await.unwrap()[0].body).unwrap()
}

#[tokio::test]
async fn dropped_parameters_are_named_in_a_header() {
    let (upstream, app) = provider("nugen", "").await;
    let mut body = ask("up/nugen-flash-instruct", "hi");
    body["seed"] = json!(7);
    body["stop"] = json!(["\n"]);
    body["max_completion_tokens"] = json!(50);
    let response = app.chat(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-dropped-params"], "seed, stop");
    let sent = sent_body(&upstream).await;
    assert_eq!(sent["max_tokens"], 50);
    assert!(sent.get("seed").is_none());
}

#[tokio::test]
async fn strict_providers_refuse_instead_of_dropping() {
    let (upstream, app) = provider("nugen", "strict_params = true\n").await;
    let mut body = ask("up/m", "hi");
    body["seed"] = json!(7);
    let response = app.chat(body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unsupported_parameter");
    assert_eq!(error["error"]["param"], "seed");
    assert!(error["error"]["message"].as_str().unwrap().contains("`up`"));
    assert!(
        upstream.received_requests().await.unwrap().is_empty(),
        "nothing was sent"
    );
    // Without dropped fields a strict provider answers normally.
    assert_eq!(app.chat(ask("up/m", "hi")).await.status(), 200);
}

#[tokio::test]
async fn what_a_provider_cannot_take_is_a_400_before_any_call() {
    let (upstream, app) = provider("nugen", "").await;
    let body = json!({"model": "up/m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "sunny"}]});
    let response = app.chat(body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "messages[1].tool_calls");
    assert!(upstream.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_session_header_reaches_nugen_and_orq() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-session-id", "conv-42"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_app(&format!(
        "[providers.up]\nkind = \"nugen\"\nbase_url = \"{}\"\n",
        upstream.uri()
    ))
    .await;
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("X-Session-ID", "conv-42")
        .json(&ask("up/m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (orq, app) = provider("orq", "").await;
    app.client
        .post(app.url("/v1/chat/completions"))
        .header("X-Session-ID", "conv-42")
        .json(&ask("up/openai/gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    let sent = sent_body(&orq).await;
    assert_eq!(sent["orq"]["thread"]["id"], "conv-42");
    assert_eq!(sent["model"], "openai/gpt-4o");
    assert!(
        orq.received_requests().await.unwrap()[0]
            .headers
            .get("x-session-id")
            .is_none()
    );
}

#[tokio::test]
async fn routing_policy_reaches_no_upstream_and_orq_fields_only_orq() {
    let policy = json!({"retry": {"count": 2}, "fallbacks": [{"model": "up/x"}], "cache": {"type": "exact_match"},
        "timeout": {"call_timeout": 9000}, "variables": {"a": "b"}, "guardrails": [], "vendor": 1});
    for kind in ["openai", "nugen", "atoma", "orq"] {
        let (upstream, app) = provider(kind, "").await;
        let mut body = ask("up/m", "hi");
        for (k, v) in policy.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = app.chat(body).await;
        assert_eq!(response.status(), 200, "{kind}");
        let dropped = response.headers().get("x-llmgate-dropped-params").cloned();
        let sent = sent_body(&upstream).await;
        for field in ["retry", "fallbacks", "cache", "timeout", "variables"] {
            assert!(sent.get(field).is_none(), "{kind} must not receive {field}");
        }
        assert_eq!(sent["vendor"], 1, "{kind}: unknown fields are forwarded");
        if kind == "orq" {
            assert_eq!(sent["guardrails"], json!([]));
            assert!(dropped.is_none());
        } else {
            assert!(sent.get("guardrails").is_none(), "{kind}");
            assert_eq!(dropped.unwrap(), "guardrails", "{kind}");
        }
    }
}
