//! The contract suite every adapter runs: the same client-side expectations whatever dialect
//! the upstream speaks. Mock upstreams serve the golden fixtures of `tests/fixtures/<kind>/`
//! at the kind's operation path (so a wrong path fails every case).
//!
//! Echo has no upstream: it runs the cases about answers (ok, stream, include_usage); the
//! upstream-failure cases do not apply to it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

/// One provider kind under test.
pub(crate) struct Kind {
    /// The config `kind` and fixture folder.
    pub(crate) name: &'static str,
    /// The path the adapter must POST to, relative to the mock's base URL.
    pub(crate) operation: &'static str,
    /// What `base_url` adds before the operation path.
    pub(crate) base_path: &'static str,
}

pub(crate) const OPENAI: Kind = Kind {
    name: "openai",
    operation: "/v1/chat/completions",
    base_path: "/v1",
};
pub(crate) const NUGEN: Kind = Kind {
    name: "nugen",
    operation: "/api/v3/inference/chat/completions",
    base_path: "",
};
pub(crate) const ATOMA: Kind = Kind {
    name: "atoma",
    operation: "/v1/chat/completions",
    base_path: "",
};
pub(crate) const ORQ: Kind = Kind {
    name: "orq",
    operation: "/v2/router/chat/completions",
    base_path: "",
};

fn fixture(kind: &Kind, file: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/{}/{file}",
        env!("CARGO_MANIFEST_DIR"),
        kind.name
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(kind: &Kind, base_url: &str) -> String {
    format!(
        "[providers.up]\nkind = \"{}\"\nbase_url = \"{base_url}\"\napi_key = \"${{UPSTREAM_KEY}}\"\n",
        kind.name
    )
}

/// A gateway whose provider `up` is a mock answering `response` at the operation path.
async fn gateway(kind: &Kind, response: ResponseTemplate) -> (MockServer, TestApp) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(kind.operation))
        .respond_with(response)
        .mount(&upstream)
        .await;
    let app = spawn_app(&config(
        kind,
        &format!("{}{}", upstream.uri(), kind.base_path),
    ))
    .await;
    (upstream, app)
}

/// Text the deltas of a fixture stream add up to.
fn streamed_text(body: &str) -> String {
    sse_chunks(body)
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

/// Checks the shape every normalized stream has.
fn assert_normalized_stream(text: &str, model: &str) -> Vec<Value> {
    assert_eq!(
        sse_events(text).last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    let chunks = sse_chunks(text);
    assert!(!chunks.is_empty());
    let (id, created) = (chunks[0]["id"].clone(), chunks[0]["created"].clone());
    assert!(created.is_i64(), "integer created: {created}");
    assert!(id.as_str().is_some_and(|s| !s.is_empty()));
    for chunk in &chunks {
        assert_eq!(
            (&chunk["id"], &chunk["created"]),
            (&id, &created),
            "{chunk}"
        );
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], model);
    }
    let first_choice = chunks
        .iter()
        .find(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(
        first_choice.unwrap()["choices"][0]["delta"]["role"],
        "assistant"
    );
    chunks
}

pub(crate) async fn ok(kind: &Kind) {
    let body = fixture(kind, "completion.json");
    let expected: Value = serde_json::from_str(&body).unwrap();
    let (upstream, app) = gateway(
        kind,
        ResponseTemplate::new(200).set_body_raw(body, "application/json"),
    )
    .await;
    let response = app.chat(ask("up/some-model", "hi")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-provider"], "up");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "up/some-model");
    assert!(answer["created"].is_i64());
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        expected["choices"][0]["message"]["content"]
    );
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert!(answer["choices"][0].get("logprobs").is_some());
    let usage = &answer["usage"];
    assert!(usage["total_tokens"].is_u64(), "{usage}");
    assert_eq!(
        usage["total_tokens"].as_f64(),
        expected["usage"]["total_tokens"].as_f64()
    );
    // Provider extras survive.
    for extra in ["confidence_score", "system_fingerprint", "service_tier"] {
        if let Some(value) = expected.get(extra) {
            assert_eq!(&answer[extra], value, "{extra}");
        }
    }
    let sent: Value =
        serde_json::from_slice(&upstream.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["model"], "some-model");
    let received = &upstream.received_requests().await.unwrap()[0];
    assert_eq!(received.headers["authorization"], "Bearer sk-upstream");
}

pub(crate) async fn stream(kind: &Kind) {
    let body = fixture(kind, "stream.sse");
    let (upstream, app) = gateway(kind, sse_response(body.clone())).await;
    let text = app
        .chat(ask_stream("up/m", "hi", false))
        .await
        .text()
        .await
        .unwrap();
    let chunks = assert_normalized_stream(&text, "up/m");
    assert_eq!(streamed_text(&text), streamed_text(&body));
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage unless asked"
    );
    let sent: Value =
        serde_json::from_slice(&upstream.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway always asks for usage"
    );
}

pub(crate) async fn stream_with_usage(kind: &Kind) {
    let body = fixture(kind, "stream.sse");
    let upstream_usage = sse_chunks(&body)
        .into_iter()
        .rev()
        .find_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned());
    let (_upstream, app) = gateway(kind, sse_response(body.clone())).await;
    let text = app
        .chat(ask_stream("up/m", "hi", true))
        .await
        .text()
        .await
        .unwrap();
    let chunks = assert_normalized_stream(&text, "up/m");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let usage = upstream_usage.expect("the fixture reports usage");
    assert_eq!(
        last["usage"]["total_tokens"].as_f64(),
        usage["total_tokens"].as_f64()
    );
    assert!(last["usage"]["total_tokens"].is_u64());
    assert_eq!(
        chunks
            .iter()
            .filter(|c| c.get("usage").is_some_and(|u| !u.is_null()))
            .count(),
        1
    );
    assert_eq!(streamed_text(&text), streamed_text(&body));
}

pub(crate) async fn streamed_tool_call(kind: &Kind) {
    let (_upstream, app) = gateway(kind, sse_response(fixture(kind, "stream_tool_call.sse"))).await;
    let mut body = ask_stream("up/m", "weather in Boston?", false);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
    let text = app.chat(body).await.text().await.unwrap();
    let chunks = assert_normalized_stream(&text, "up/m");
    let (mut name, mut arguments, mut finish) = (String::new(), String::new(), None);
    for chunk in &chunks {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0, "every tool-call delta has index: {call}");
            if let Some(n) = call["function"]["name"].as_str() {
                assert_eq!(call["type"], "function");
                assert!(call["id"].is_string());
                name.push_str(n);
            }
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    assert_eq!(name, "get_weather");
    let arguments: Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(arguments, json!({"location": "Boston"}));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

pub(crate) async fn rate_limited(kind: &Kind) {
    let response = ResponseTemplate::new(429)
        .insert_header("retry-after", "12")
        .set_body_raw(fixture(kind, "error_429.json"), "application/json");
    let (_upstream, app) = gateway(kind, response).await;
    for body in [ask("up/m", "hi"), ask_stream("up/m", "hi", false)] {
        let answer = app.chat(body).await;
        assert_eq!(answer.status(), 429);
        assert_eq!(answer.headers()["retry-after"], "12");
        let error: Value = answer.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
}

pub(crate) async fn server_error(kind: &Kind) {
    let (_upstream, app) = gateway(
        kind,
        ResponseTemplate::new(503).set_body_string("upstream overloaded"),
    )
    .await;
    for body in [ask("up/m", "hi"), ask_stream("up/m", "hi", false)] {
        let answer = app.chat(body).await;
        assert_eq!(answer.status(), 502);
        let error: Value = answer.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`up`") && message.contains("503"),
            "{message}"
        );
    }
}

pub(crate) async fn malformed_chunk(kind: &Kind) {
    let first = fixture(kind, "stream.sse")
        .split("\n\n")
        .next()
        .unwrap()
        .to_owned();
    let (_upstream, app) = gateway(
        kind,
        sse_response(format!("{first}\n\ndata: {{\"choices\": [oops\n\n")),
    )
    .await;
    let answer = app.chat(ask_stream("up/m", "hi", false)).await;
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 2, "{events:?}");
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`up`") && message.contains("oops"),
        "{message}"
    );
    assert!(!text.contains("[DONE]"));
}

pub(crate) async fn error_as_first_event(kind: &Kind) {
    let (_upstream, app) =
        gateway(kind, sse_response(fixture(kind, "error_first_event.sse"))).await;
    let answer = app.chat(ask_stream("up/m", "hi", false)).await;
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let error: Value = answer.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ate limit")
            || error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("overloaded"),
        "{error}"
    );
}

pub(crate) async fn client_disconnect(kind: &Kind) {
    let first = fixture(kind, "stream.sse")
        .split("\n\n")
        .next()
        .unwrap()
        .to_owned();
    let upstream = hanging_upstream(format!("{first}\n\n"), None).await;
    let base_url = upstream.base_url.trim_end_matches("/v1").to_owned() + kind.base_path;
    let app = spawn_app(&config(kind, &base_url)).await;
    let answer = app.chat(ask_stream("up/m", "hi", false)).await;
    assert_eq!(answer.status(), 200);
    let mut body = answer.bytes_stream();
    assert!(body.next().await.unwrap().unwrap().starts_with(b"data: "));
    drop(body);
    let closed = eventually(Duration::from_secs(5), || {
        upstream.closed.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        closed,
        "the upstream request is cancelled when the client goes away"
    );
}

/// Instantiates the suite for one HTTP provider kind.
macro_rules! contract_suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn ok() {
                super::ok(&$kind).await
            }
            #[tokio::test]
            async fn stream() {
                super::stream(&$kind).await
            }
            #[tokio::test]
            async fn stream_with_usage() {
                super::stream_with_usage(&$kind).await
            }
            #[tokio::test]
            async fn streamed_tool_call() {
                super::streamed_tool_call(&$kind).await
            }
            #[tokio::test]
            async fn rate_limited() {
                super::rate_limited(&$kind).await
            }
            #[tokio::test]
            async fn server_error() {
                super::server_error(&$kind).await
            }
            #[tokio::test]
            async fn malformed_chunk() {
                super::malformed_chunk(&$kind).await
            }
            #[tokio::test]
            async fn error_as_first_event() {
                super::error_as_first_event(&$kind).await
            }
            #[tokio::test]
            async fn client_disconnect() {
                super::client_disconnect(&$kind).await
            }
        }
    };
}

contract_suite!(openai, OPENAI);
contract_suite!(nugen, NUGEN);
contract_suite!(atoma, ATOMA);
contract_suite!(orq, ORQ);

/// Echo runs the answer cases against itself.
mod echo {
    use super::*;

    #[tokio::test]
    async fn ok() {
        let app = echo_app().await;
        let answer: Value = app
            .chat(ask("echo/m", "hello there"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["model"], "echo/m");
        assert_eq!(answer["choices"][0]["message"]["content"], "hello there");
        assert_eq!(answer["usage"]["total_tokens"], 4);
    }

    #[tokio::test]
    async fn stream() {
        let app = echo_app().await;
        let text = app
            .chat(ask_stream("echo/m", "hello there", false))
            .await
            .text()
            .await
            .unwrap();
        let chunks = assert_normalized_stream(&text, "echo/m");
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        assert_eq!(streamed_text(&text), "hello there");
    }

    #[tokio::test]
    async fn stream_with_usage() {
        let app = echo_app().await;
        let text = app
            .chat(ask_stream("echo/m", "hello there", true))
            .await
            .text()
            .await
            .unwrap();
        let chunks = assert_normalized_stream(&text, "echo/m");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 2);
    }
}
