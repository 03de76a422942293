//! Metrics and the access log, on the real binary (its own process, so its metrics are only
//! this test's traffic): no secret or message text in any log line at trace level, one
//! access line per request, bounded series under a flood of made-up model names, and the
//! Grafana dashboard's queries only name metrics a real scrape has.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::process::Gateway;
use crate::support::{ask, ask_stream, eventually, hanging_upstream};

const GATEWAY_KEY: &str = "sk-gw-Qm9vYmFyYmF6cXV4";
const PROVIDER_KEY: &str = "sk-prov-WmFwcGFkb29kbGU";
const SECRET_TEXT: &str = "purple-elephant-7731 whispers";

/// The binary at trace level with JSON logs, its output read back by the tests.
struct Binary(Gateway);

impl Binary {
    async fn start(name: &str, config: &str, env: &[(&str, &str)]) -> Binary {
        let mut all = vec![("RUST_LOG", "trace"), ("LLMGATE_LOG_FORMAT", "json")];
        all.extend_from_slice(env);
        Binary(Gateway::start_with(name, config, &all).await)
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    async fn chat(&self, key: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.0.client.post(self.url("/v1/chat/completions"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.json(&body).send().await.unwrap()
    }

    async fn scrape(&self) -> String {
        let response = self
            .0
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Stops the process (SIGTERM, then waits) and returns stdout and stderr.
    async fn stop(self) -> String {
        self.0.stop().await.1
    }
}

fn config(upstream: &str) -> String {
    format!(
        r#"[auth]
keys = [{{ name = "team-a", key = "${{TEST_GATEWAY_KEY}}", models = ["*"] }}]

[providers.echo]
kind = "echo"

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "${{TEST_PROVIDER_KEY}}"
models = ["good"]
"#
    )
}

fn access_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "llmgate::access")
        .collect()
}

#[tokio::test]
async fn no_secret_or_message_text_reaches_any_log_line() {
    let upstream = MockServer::start().await;
    // The provider refuses the key and quotes it, as some do.
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"model": "bad"})))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": format!("Incorrect API key provided: {PROVIDER_KEY}"),
            "type": "invalid_request_error", "code": "invalid_api_key"}})))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "good",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": SECRET_TEXT},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})))
        .mount(&upstream)
        .await;
    let gateway = Binary::start(
        "secrets",
        &config(&upstream.uri()),
        &[
            ("TEST_GATEWAY_KEY", GATEWAY_KEY),
            ("TEST_PROVIDER_KEY", PROVIDER_KEY),
        ],
    )
    .await;
    let key = Some(GATEWAY_KEY);
    let refused = gateway.chat(key, ask("up/bad", SECRET_TEXT)).await;
    assert_eq!(refused.status(), 502);
    let refused = refused.text().await.unwrap();
    assert!(!refused.contains(PROVIDER_KEY), "{refused}");
    let ok = gateway.chat(key, ask("up/good", SECRET_TEXT)).await;
    assert_eq!(ok.status(), 200);
    let streamed = gateway
        .chat(key, ask_stream("echo/echo", SECRET_TEXT, true))
        .await;
    assert_eq!(streamed.status(), 200);
    streamed.text().await.unwrap();
    let unauthorized = gateway
        .chat(Some("sk-wrong-key-ZZZ"), ask("echo/echo", SECRET_TEXT))
        .await;
    assert_eq!(unauthorized.status(), 401);
    let output = gateway.stop().await;

    for secret in [
        GATEWAY_KEY,
        PROVIDER_KEY,
        "sk-wrong-key-ZZZ",
        "purple-elephant",
    ] {
        assert!(
            !output.contains(secret),
            "`{secret}` is in the logs:\n{output}"
        );
    }
    let lines = access_lines(&output);
    let chat: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(chat.len(), 4, "one access line per request:\n{output}");
    let good = chat
        .iter()
        .find(|l| l["fields"]["model"] == "up/good")
        .expect("the answered request's line");
    let fields = &good["fields"];
    for (name, expected) in [
        ("key", json!("team-a")),
        ("ingress", json!("openai")),
        ("provider", json!("up")),
        ("upstream_model", json!("good")),
        ("status", json!(200)),
        ("stream", json!(false)),
        ("attempts", json!(1)),
        ("cache", json!("none")),
        ("prompt_tokens", json!(11)),
        ("completion_tokens", json!(3)),
        ("spend_usd", json!(0.0)),
        ("outcome", json!("ok")),
    ] {
        assert_eq!(fields[name], expected, "{name} in {good}");
    }
    for name in ["request_id", "duration_ms", "overhead_ms"] {
        assert!(!fields[name].is_null(), "{name} in {good}");
    }
    let stream = chat.iter().find(|l| l["fields"]["stream"] == true).unwrap();
    assert!(stream["fields"]["ttft_ms"].is_number(), "{stream}");
    assert_eq!(stream["fields"]["outcome"], "ok");
    let refused = chat
        .iter()
        .find(|l| l["fields"]["model"] == "up/*")
        .unwrap();
    assert_eq!(
        (&refused["fields"]["status"], &refused["fields"]["outcome"]),
        (&json!(502), &json!("error"))
    );
    let unauthorized = chat.iter().find(|l| l["fields"]["status"] == 401).unwrap();
    assert_eq!(unauthorized["fields"]["key"], "none");
}

/// Every `llmgate_requests_total` series in a scrape.
fn request_series(scrape: &str) -> BTreeSet<&str> {
    scrape
        .lines()
        .filter(|l| l.starts_with("llmgate_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .collect()
}

#[tokio::test]
async fn a_flood_of_made_up_model_names_adds_no_series() {
    let gateway = Binary::start("flood", "[providers.echo]\nkind = \"echo\"\n", &[]).await;
    for i in 0..300 {
        let model = if i % 2 == 0 {
            format!("flood-model-{i}")
        } else {
            format!("echo/flood-model-{i}")
        };
        gateway.chat(None, ask(&model, "hi")).await;
    }
    // A request is recorded when its response body is dropped, just after the client read
    // it: wait for the last one.
    let mut scrape = gateway.scrape().await;
    for _ in 0..100 {
        if scrape.contains("code=\"404\"} 150") && scrape.contains("code=\"200\"} 150") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        scrape = gateway.scrape().await;
    }
    assert!(!scrape.contains("flood-model"), "{scrape}");
    let series = request_series(&scrape);
    assert_eq!(
        series,
        BTreeSet::from([
            r#"llmgate_requests_total{ingress="openai",model="echo/*",provider="echo",key="none",code="200"}"#,
            r#"llmgate_requests_total{ingress="openai",model="unknown",provider="none",key="none",code="404"}"#,
        ]),
        "{scrape}"
    );
    let count = |series: &str| -> f64 {
        let line = scrape.lines().find(|l| l.starts_with(series)).unwrap();
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(
        count(r#"llmgate_requests_total{ingress="openai",model="unknown""#),
        150.0
    );
    assert_eq!(
        count(r#"llmgate_requests_total{ingress="openai",model="echo/*""#),
        150.0
    );
    gateway.stop().await;
}

/// Metric names in the dashboard's queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = format!("{}/deploy/grafana/llmgate.json", env!("CARGO_MANIFEST_DIR"));
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("llmgate_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let config = "[providers.echo]\nkind = \"echo\"\n[models.fast]\ntargets = [{ provider = \"echo\", model = \"echo\" }]\n";
    let gateway = Binary::start("dashboard", config, &[]).await;
    gateway.chat(None, ask("fast", "hi there")).await;
    let streamed = gateway
        .chat(None, ask_stream("fast", "hi there", true))
        .await;
    streamed.text().await.unwrap();
    let scrape = gateway.scrape().await;
    let families: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for name in dashboard_metrics() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| families.contains(base))
            .unwrap_or(&name);
        assert!(
            families.contains(family),
            "the dashboard queries `{name}`, which /metrics does not have:\n{scrape}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_stream_the_client_leaves_is_logged_once_as_client_closed() {
    let first = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]});
    let upstream = hanging_upstream(format!("data: {first}\n\n"), None).await;
    let config = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"k\"\nmodels = [\"m\"]\n",
        upstream.base_url
    );
    let gateway = Binary::start("left", &config, &[]).await;
    let response = gateway.chat(None, ask_stream("up/m", "hi", false)).await;
    let mut body = response.bytes_stream();
    assert!(body.next().await.unwrap().unwrap().starts_with(b"data: "));
    let active = "llmgate_active_streams 1";
    assert!(
        gateway.scrape().await.contains(active),
        "a stream in flight"
    );
    drop(body);
    let closed = eventually(Duration::from_secs(5), || {
        upstream.closed.load(Ordering::SeqCst)
    });
    assert!(closed.await, "the upstream request was cancelled");
    let mut scrape = gateway.scrape().await;
    for _ in 0..100 {
        if scrape.contains("llmgate_active_streams 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        scrape = gateway.scrape().await;
    }
    assert!(scrape.contains("llmgate_active_streams 0"), "{scrape}");
    let output = gateway.stop().await;
    let lines = access_lines(&output);
    let chat: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(chat.len(), 1, "one line, when the stream ended:\n{output}");
    let fields = &chat[0]["fields"];
    assert_eq!(
        (&fields["outcome"], &fields["status"], &fields["stream"]),
        (&json!("client_closed"), &json!(200), &json!(true)),
        "{output}"
    );
    assert!(fields["ttft_ms"].is_number(), "{output}");
}

#[tokio::test]
async fn a_client_gone_before_the_answer_is_499_and_its_attempt_cancelled() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&upstream)
        .await;
    let gateway = Binary::start(
        "gone",
        &config(&upstream.uri()),
        &[
            ("TEST_GATEWAY_KEY", GATEWAY_KEY),
            ("TEST_PROVIDER_KEY", PROVIDER_KEY),
        ],
    )
    .await;
    let request = gateway
        .0
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .timeout(Duration::from_millis(300))
        .json(&ask("up/good", "hi"));
    assert!(request.send().await.is_err(), "the client gave up");
    let cancelled = r#"llmgate_upstream_requests_total{provider="up",outcome="cancelled"} 1"#;
    let gone = r#"model="up/good",provider="none",key="team-a",code="499"} 1"#;
    let mut scrape = gateway.scrape().await;
    for _ in 0..100 {
        if scrape.contains(cancelled) && scrape.contains(gone) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        scrape = gateway.scrape().await;
    }
    assert!(
        scrape.contains(cancelled) && scrape.contains(gone),
        "{scrape}"
    );
    let output = gateway.stop().await;
    let lines = access_lines(&output);
    let line = lines
        .iter()
        .find(|l| l["fields"]["path"] == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        (&line["fields"]["status"], &line["fields"]["outcome"]),
        (&json!(499), &json!("client_closed")),
        "{output}"
    );
}
