//! Traces from the real binary: spans exported over OTLP/HTTP (protobuf) to a receiver the test
//! runs, decoded with `opentelemetry-proto`; `traceparent` continued from the client and sent
//! to the upstream; an unreachable collector costing only a log line.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::process::Gateway;
use crate::support::{ask, ask_stream, sse_chunks, sse_response};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// Stops `gateway` with SIGTERM (which flushes the spans), asserts a clean exit and returns
/// its log.
async fn stop(gateway: Gateway) -> String {
    let (exit, log) = gateway.stop().await;
    assert!(
        exit.is_some_and(|e| e.success()),
        "clean exit: {exit:?}\n{log}"
    );
    log
}

fn completion() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
}

/// An upstream that fails once with 500, then answers.
async fn flaky_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion()))
        .mount(&upstream)
        .await;
    upstream
}

fn config(upstream: &MockServer, telemetry: &str) -> String {
    format!(
        "{telemetry}\n[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [models.fast]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\n\
         retry = {{ attempts = 2, on_status = [500], backoff_ms = 1 }}\n",
        upstream.uri()
    )
}

/// An OTLP/HTTP receiver: accepts `POST /v1/traces`.
async fn collector() -> MockServer {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    collector
}

/// Every span the collector received, decoded from protobuf.
async fn exported_spans(collector: &MockServer) -> Vec<Span> {
    let mut spans = Vec::new();
    for request in collector.received_requests().await.unwrap() {
        let content_type = request.headers.get("content-type").unwrap();
        assert_eq!(content_type, "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
        for resource in export.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    spans
}

fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("{key} is not a string on {}: {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Any::IntValue(i)) => *i,
        other => panic!("{key} is not an integer on {}: {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `traceparent` headers the upstream received, as (trace id, span id).
async fn upstream_traceparents(upstream: &MockServer) -> Vec<(String, String)> {
    upstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| {
            let value = request.headers.get("traceparent").expect("a traceparent");
            let parts: Vec<&str> = value.to_str().unwrap().split('-').collect();
            assert_eq!(parts.len(), 4, "{value:?}");
            assert_eq!((parts[0], parts[3]), ("00", "01"), "{value:?}");
            (parts[1].to_owned(), parts[2].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_retried_request_exports_one_request_span_and_two_sibling_attempts() {
    let (upstream, collector) = (flaky_upstream().await, collector().await);
    let telemetry = format!("[telemetry]\notlp_endpoint = \"{}\"", collector.uri());
    let gateway = Gateway::start("retry", &config(&upstream, &telemetry)).await;
    let response = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .json(&ask("fast", "secret words"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgate-attempts"], "2");
    // A rejected body is a request span too, with its status.
    let rejected = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 415);
    let log = stop(gateway).await;

    let mut spans = exported_spans(&collector).await;
    assert_eq!(spans.len(), 4, "{spans:#?}\n{log}");
    let rejected = spans
        .iter()
        .position(|s| hex(&s.trace_id) != TRACE_ID)
        .unwrap();
    let rejected = spans.remove(rejected);
    assert_eq!(rejected.name, "POST /v1/chat/completions");
    assert_eq!(int(&rejected, "http.response.status_code"), 415);
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .expect("the request span");
    assert_eq!(
        hex(&request.trace_id),
        TRACE_ID,
        "the client's trace continues"
    );
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN_ID);
    assert_eq!(text(request, "gen_ai.request.model"), "fast");
    assert_eq!(text(request, "gen_ai.response.model"), "m-2024");
    assert_eq!(text(request, "gen_ai.system"), "openai");
    assert_eq!(int(request, "gen_ai.usage.input_tokens"), 7);
    assert_eq!(int(request, "gen_ai.usage.output_tokens"), 3);
    assert_eq!(int(request, "http.response.status_code"), 200);

    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == request.span_id)
        .collect();
    attempts.sort_by_key(|s| int(s, "llmgate.attempt"));
    assert_eq!(attempts.len(), 2, "two sibling attempts: {spans:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.name, "chat m");
        assert_eq!(attempt.trace_id, request.trace_id);
        assert_eq!(text(attempt, "gen_ai.system"), "openai");
        assert_eq!(text(attempt, "gen_ai.request.model"), "m");
        assert_eq!(text(attempt, "llmgate.provider"), "up");
    }
    assert_eq!(int(attempts[0], "http.response.status_code"), 500);
    assert_eq!(text(attempts[0], "error.type"), "status");
    assert_eq!(int(attempts[1], "http.response.status_code"), 200);
    assert_eq!(text(attempts[1], "gen_ai.response.model"), "m-2024");
    assert_eq!(int(attempts[1], "gen_ai.usage.input_tokens"), 7);
    assert_eq!(int(attempts[1], "gen_ai.usage.output_tokens"), 3);

    // Each upstream request named its own attempt span.
    let sent = upstream_traceparents(&upstream).await;
    let attempt_ids: Vec<String> = attempts.iter().map(|s| hex(&s.span_id)).collect();
    assert_eq!(sent.len(), 2);
    for (i, (trace_id, span_id)) in sent.iter().enumerate() {
        assert_eq!(trace_id, TRACE_ID);
        assert_eq!(span_id, &attempt_ids[i]);
    }
    // No message text in any attribute.
    let dump = format!("{spans:?}");
    assert!(
        !dump.contains("secret words") && !dump.contains("\"hi\""),
        "{dump}"
    );
}

#[tokio::test]
async fn a_stream_request_span_ends_with_the_stream_and_carries_its_usage() {
    let upstream = MockServer::start().await;
    let chunk = |body: Value| format!("data: {body}\n\n");
    let events = [
        chunk(
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m-2024",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}),
        ),
        chunk(
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m-2024",
            "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}),
        ),
        "data: [DONE]\n\n".to_owned(),
    ];
    Mock::given(method("POST"))
        .respond_with(sse_response(events.concat()))
        .mount(&upstream)
        .await;
    let collector = collector().await;
    let telemetry = format!("[telemetry]\notlp_endpoint = \"{}/\"", collector.uri());
    let gateway = Gateway::start("stream", &config(&upstream, &telemetry)).await;
    let body = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .json(&ask_stream("fast", "hello", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sse_chunks(&body).len(), 2, "{body}");
    let log = stop(gateway).await;

    let spans = exported_spans(&collector).await;
    assert_eq!(spans.len(), 2, "{spans:#?}\n{log}");
    let request = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    let attempt = spans
        .iter()
        .find(|s| s.parent_span_id == request.span_id)
        .unwrap();
    for span in [request, attempt] {
        assert_eq!(text(span, "gen_ai.response.model"), "m-2024");
        assert_eq!(int(span, "gen_ai.usage.input_tokens"), 5);
        assert_eq!(int(span, "gen_ai.usage.output_tokens"), 1);
    }
    // The request span lasts as long as the stream: it ends no earlier than its attempt.
    assert!(request.end_time_unix_nano >= attempt.end_time_unix_nano);
}

#[tokio::test]
async fn an_unreachable_collector_costs_a_log_line_not_requests() {
    let upstream = flaky_upstream().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let telemetry = format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed_port}\"");
    let gateway = Gateway::start("unreachable", &config(&upstream, &telemetry)).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let response = client
            .post(gateway.url("/v1/chat/completions"))
            .json(&ask("fast", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let log = stop(gateway).await;
    assert!(log.contains("exporting spans failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn without_an_endpoint_upstream_requests_still_carry_a_traceparent() {
    let upstream = flaky_upstream().await;
    // Spans do not depend on the log filter.
    let gateway = Gateway::start_with(
        "no-endpoint",
        &config(&upstream, ""),
        &[("RUST_LOG", "off")],
    )
    .await;
    let response = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .json(&ask("fast", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stop(gateway).await;
    let sent = upstream_traceparents(&upstream).await;
    assert_eq!(sent.len(), 2);
    // One trace for the request, a span per attempt.
    assert_eq!(sent[0].0, sent[1].0);
    assert_ne!(sent[0].1, sent[1].1);
    assert!(sent.iter().all(|(t, s)| t.len() == 32 && s.len() == 16));
    assert_ne!(sent[0].0, "0".repeat(32));
}
