//! Non-streamed completions through echo and an OpenAI-compatible upstream.

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn echo_answers_in_the_openai_shape_with_gateway_headers() {
    let app = echo_app().await;
    let response = app.chat(ask("echo/anything", "hello big world")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-llmgate-provider"], "echo");
    assert_eq!(headers["x-llmgate-model"], "anything");
    assert_eq!(headers["x-llmgate-attempts"], "1");
    let overhead: f64 = headers["x-llmgate-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    assert_eq!(headers["x-request-id"].len(), 32);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "echo/anything");
    assert!(body["created"].is_i64());
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "hello big world", "refusal": null})
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );
}

#[tokio::test]
async fn the_nugen_path_answers_the_same_normalized_response() {
    let app = echo_app().await;
    let mut body = ask("echo/x", "one two three");
    body["max_tokens"] = json!(2);
    body["top_k"] = json!(5);
    let response = app.post("/api/v3/inference/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "one two");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn aliases_route_to_a_target_and_answer_under_the_alias_name() {
    let app = spawn_app(
        "[providers.echo]\nkind = \"echo\"\n[models.fast]\ntargets = [{ provider = \"echo\", model = \"e1\" }]\n",
    )
    .await;
    let response = app.chat(ask("fast", "hi")).await;
    assert_eq!(response.headers()["x-llmgate-model"], "e1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "fast");
}

#[tokio::test]
async fn an_openai_upstream_gets_the_translated_body_and_the_provider_key() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-upstream"))
        .and(body_partial_json(json!({"model": "gpt-4o-mini", "vendor_field": {"a": 1}, "temperature": 0.2})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-up", "object": "chat.completion", "created": 1741570283.0,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris.", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 0}}
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(
        &format!("{}/v1", upstream.uri()),
        "[auth]\nkeys = [{ name = \"t\", key = \"${GATEWAY_KEY}\" }]\n",
    ))
    .await;
    let mut body = ask("up/gpt-4o-mini", "capital of France?");
    body["vendor_field"] = json!({"a": 1});
    body["temperature"] = json!(0.2);
    body["retry"] = json!({"count": 2});
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-gateway")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-provider"], "up");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "up/gpt-4o-mini");
    assert_eq!(answer["id"], "chatcmpl-up");
    assert_eq!(answer["created"], 1_741_570_283);
    assert_eq!(answer["system_fingerprint"], "fp_1");
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(answer["choices"][0]["message"]["content"], "Paris.");

    let received = &upstream.received_requests().await.unwrap()[0];
    let sent: Value = serde_json::from_slice(&received.body).unwrap();
    assert!(
        sent.get("retry").is_none(),
        "routing policy must not be forwarded"
    );
    assert!(sent.get("stream").is_none());
    let auth = received
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(!auth.contains("sk-gateway"));
    assert!(received.headers.get("x-request-id").is_some());
}

#[tokio::test]
async fn models_lists_aliases_and_their_provider_models() {
    let app = spawn_app(
        "[providers.echo]\nkind = \"echo\"\n[models.fast]\ntargets = [{ provider = \"echo\", model = \"a\" }, { provider = \"echo\", model = \"b\" }]\nfallbacks = [\"echo/c\", \"slow\"]\n[models.slow]\ntargets = [{ provider = \"echo\", model = \"a\" }]\n",
    )
    .await;
    let body: Value = app
        .client
        .get(app.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<(&str, &str)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert!(m["created"].is_i64());
            (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("fast", "llmgate"),
            ("slow", "llmgate"),
            ("echo/a", "echo"),
            ("echo/b", "echo"),
            ("echo/c", "echo")
        ]
    );
}

#[tokio::test]
async fn echo_usage_counts_the_completion_of_every_choice() {
    let app = echo_app().await;
    let mut body = ask("echo/x", "one two three");
    body["n"] = json!(3);
    let answer: Value = app.chat(body).await.json().await.unwrap();
    assert_eq!(answer["choices"].as_array().unwrap().len(), 3);
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12})
    );
}

#[tokio::test]
async fn echo_cuts_many_choices_of_a_long_message_to_its_work_cap() {
    // 128 choices of 20,000 words would be 2.56 million words; echo holds at most 1 million.
    let app = echo_app().await;
    let mut body = ask("echo/x", &"w ".repeat(20_000));
    body["n"] = json!(128);
    let response = app.chat(body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 128);
    let share = 1_000_000 / 128;
    for choice in choices {
        let content = choice["message"]["content"].as_str().unwrap();
        assert_eq!(content.split_whitespace().count(), share);
        assert_eq!(choice["finish_reason"], "length");
    }
    assert_eq!(answer["usage"]["completion_tokens"], share * 128);
}

#[tokio::test]
async fn variable_substitution_may_not_outgrow_the_body_limit() {
    let app =
        spawn_app("[server]\nmax_body_bytes = 100000\n[providers.echo]\nkind = \"echo\"\n").await;
    // 40 kB sent, 120 kB once substituted.
    let mut body = ask("echo/x", "{{a}} {{a}} {{a}}");
    body["variables"] = json!({"a": "v".repeat(40_000)});
    let response = app.chat(body.clone()).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "variables");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100000 bytes"),
        "{error}"
    );
    // Twice fits.
    body["messages"][0]["content"] = json!("{{a}} {{a}}");
    assert_eq!(app.chat(body).await.status(), 200);
}
