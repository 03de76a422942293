//! Errors in both dialects, and how upstream failures are passed on.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn validation_errors_name_the_field_in_each_dialect() {
    let app = echo_app().await;
    let mut body = ask("echo/x", "hi");
    body["messages"][0]["content"] = json!(5);
    let (status, error) = error_of(app.chat(body.clone()).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "messages[0].content");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "invalid_type");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content")
    );

    let (status, error) =
        error_of(app.post("/api/v3/inference/chat/completions", body).await).await;
    assert_eq!(status, 422);
    assert_eq!(
        error["detail"][0]["loc"],
        json!(["body", "messages", 0, "content"])
    );
    assert_eq!(error["detail"][0]["type"], "type_error");

    let body = json!({"model": "echo/x", "temperature": 3, "messages": [{"role": "tool", "content": "x"}]});
    let (status, error) =
        error_of(app.post("/api/v3/inference/chat/completions", body).await).await;
    assert_eq!(status, 422);
    let locs: Vec<&Value> = error["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "messages", 0, "tool_call_id"]),
            &json!(["body", "temperature"])
        ]
    );
}

#[tokio::test]
async fn malformed_json_oversized_bodies_and_wrong_content_types() {
    let app =
        spawn_app("[server]\nmax_body_bytes = 200\n[providers.echo]\nkind = \"echo\"\n").await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, error) = error_of(send("{\"model\": ", "application/json").await.unwrap()).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (status, error) = error_of(send("{}", "text/plain").await.unwrap()).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let big = ask("echo/x", &"word ".repeat(100));
    let (status, error) = error_of(app.chat(big).await).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );
    let (status, _) = error_of(
        app.post(
            "/api/v3/inference/chat/completions",
            ask("echo/x", &"w ".repeat(200)),
        )
        .await,
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn unknown_models_are_404_naming_the_model() {
    let app = echo_app().await;
    for model in ["nope", "missing/gpt-4o", "echo/"] {
        let (status, error) = error_of(app.chat(ask(model, "x")).await).await;
        assert_eq!(status, 404, "{model}");
        assert_eq!(error["error"]["code"], "model_not_found");
        assert!(error["error"]["message"].as_str().unwrap().contains(model));
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_envelope() {
    let app = echo_app().await;
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // Both chat paths answer every method but POST with 405 and `Allow: POST`.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/chat/completions"),
        (reqwest::Method::PUT, "/api/v3/inference/chat/completions"),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], "POST", "{path}");
        let (status, error) = error_of(response).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{path}"
        );
        assert!(
            error["error"]["message"].as_str().unwrap().contains(path),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn upstream_failures_map_per_contract() {
    let openai_error = |message: &str, code: &str| json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    let cases = [
        (
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(openai_error("Rate limit reached", "rate_limit_exceeded")),
            429,
            "rate_limit_exceeded",
        ),
        (
            ResponseTemplate::new(401)
                .set_body_json(openai_error("Incorrect API key", "invalid_api_key")),
            502,
            "upstream_auth_failed",
        ),
        (
            ResponseTemplate::new(400).set_body_json(openai_error(
                "This model's maximum context length is 8192 tokens",
                "context_length_exceeded",
            )),
            400,
            "context_length_exceeded",
        ),
        (
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "prompt is too long: 9000 tokens"})),
            400,
            "context_length_exceeded",
        ),
        (
            ResponseTemplate::new(404).set_body_json(openai_error(
                "The model `x` does not exist",
                "model_not_found",
            )),
            404,
            "model_not_found",
        ),
        (
            ResponseTemplate::new(500).set_body_string("boom"),
            502,
            "upstream_error",
        ),
        (
            ResponseTemplate::new(200).set_body_string("<html>not json</html>"),
            502,
            "upstream_error",
        ),
    ];
    for (response, status, code) in cases {
        let (_upstream, app) = app_with_upstream(response).await;
        let answer = app.chat(ask("up/m", "x")).await;
        let retry_after = answer.headers().get("retry-after").cloned();
        let (got, error) = error_of(answer).await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{error}"
        );
        if status == 429 {
            assert_eq!(retry_after.unwrap(), "7");
        }
        if status >= 500 {
            assert!(
                error["error"]["message"].as_str().unwrap().contains("`up`"),
                "{error}"
            );
        }
    }
}

#[tokio::test]
async fn an_unreadable_upstream_body_is_quoted_in_the_502() {
    let (_upstream, app) =
        app_with_upstream(ResponseTemplate::new(200).set_body_string("<html>oops</html>")).await;
    let (_, error) = error_of(app.chat(ask("up/m", "x")).await).await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("<html>oops</html>") && message.contains("`up`"),
        "{message}"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_an_unreachable_one_a_502() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(
        &format!("{}/v1", upstream.uri()),
        "timeout_ms = 200\n",
    ))
    .await;
    let (status, error) = error_of(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (504, Some("upstream_timeout"))
    );
    let (status, _) = error_of(app.chat(ask_stream("up/m", "x", false)).await).await;
    assert_eq!(status, 504);

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app(&openai_config(&format!("http://127.0.0.1:{port}/v1"), "")).await;
    let (status, error) = error_of(app.chat(ask("up/m", "x")).await).await;
    assert_eq!(status, 502);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not reach"),
        "{error}"
    );
}
