//! Model discovery: an `openai`-kind provider with `discover_models = true` lists what its
//! upstream's `GET /models` lists, as `provider/id`, filtered by the caller's key; the last
//! good list survives failures, oversize and malformed answers; reloads fetch again and
//! reconcile the tasks; no log line carries the provider's key.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::process::Gateway;
use crate::support::{ask, spawn_app, spawn_app_from_file, test_env};

const ADMIN: &str = "sk-admin-discover";
const LIMITED: &str = "sk-limited-discover";

/// OpenAI's list shape with `ids`.
fn model_list(ids: &[&str]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// An upstream whose `GET /v1/models` answers `answer` (after `reset`, a new answer can be
/// mounted) and whose chat completions answer with a fixed completion.
async fn upstream(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    serve_models(&server, answer).await;
    server
}

async fn serve_models(server: &MockServer, answer: ResponseTemplate) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", "Bearer sk-upstream"))
        .respond_with(answer)
        .mount(server)
        .await;
    let completion = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(server)
        .await;
}

/// How many `GET /models` the upstream has received.
async fn fetches(server: &MockServer) -> usize {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == "/v1/models")
        .count()
}

/// A gateway config: echo, the discovering provider `up` at `upstream`, an alias, and keys.
fn config(upstream: &str, provider_extra: &str) -> String {
    format!(
        "[auth]\nadmin_keys = [\"{ADMIN}\"]\nkeys = [\n  {{ name = \"all\", key = \"${{GATEWAY_KEY}}\" }},\n  {{ name = \"limited\", key = \"{LIMITED}\", models = [\"up/gpt-4o*\", \"fast\"] }},\n]\n\n[providers.echo]\nkind = \"echo\"\n\n[providers.up]\nkind = \"openai\"\nbase_url = \"{upstream}/v1\"\napi_key = \"${{UPSTREAM_KEY}}\"\nmodels = [\"configured\"]\n{provider_extra}\n\n[models.fast]\ntargets = [{{ provider = \"echo\", model = \"echo\" }}]\n"
    )
}

/// `/v1/models` as `(id, owned_by)` pairs, with `key`.
async fn listed(client: &reqwest::Client, base: &str, key: &str) -> Vec<(String, String)> {
    let response = client
        .get(format!("{base}/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    (body["data"].as_array().unwrap().iter())
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert!(m["created"].is_i64());
            let text = |k: &str| m[k].as_str().unwrap().to_owned();
            (text("id"), text("owned_by"))
        })
        .collect()
}

fn ids(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(id, _)| id.as_str()).collect()
}

/// Polls `/v1/models` (key `sk-gateway`) for up to 10 s until `done` holds; the last list.
async fn listed_until(
    client: &reqwest::Client,
    base: &str,
    done: impl Fn(&[&str]) -> bool,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pairs = listed(client, base, "sk-gateway").await;
        if done(&ids(&pairs)) || tokio::time::Instant::now() > deadline {
            return pairs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to 10 s until the upstream has had `n` `GET /models`, then a moment for the
/// gateway to take the answer in.
async fn wait_fetches(server: &MockServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fetches(server).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream never got fetch {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn discovered_models_are_listed_routable_and_filtered_by_key() {
    let server = upstream(ResponseTemplate::new(200).set_body_json(model_list(&[
        "gpt-4o-mini",
        "gpt-4o",
        "configured",
        "text-embedding-3-small",
    ])))
    .await;
    let app = spawn_app(&config(
        &server.uri(),
        "discover_models = true\nheaders = { \"x-org\" = \"org-1\" }",
    ))
    .await;
    let base = app.url("");
    let pairs = listed_until(&app.client, &base, |ids| ids.contains(&"up/gpt-4o")).await;
    let expected = [
        ("fast", "llmgate"),
        ("echo/echo", "echo"),
        ("up/configured", "up"),
        ("up/gpt-4o", "up"),
        ("up/gpt-4o-mini", "up"),
        ("up/text-embedding-3-small", "up"),
    ]
    .map(|(id, owner)| (id.to_owned(), owner.to_owned()));
    assert_eq!(
        pairs, expected,
        "aliases, then provider models sorted, once each"
    );
    let requests = server.received_requests().await.unwrap();
    let fetch = requests
        .iter()
        .find(|r| r.method.as_str() == "GET")
        .unwrap();
    assert_eq!(
        fetch.headers["x-org"], "org-1",
        "the provider's headers go along"
    );

    let limited = listed(&app.client, &base, LIMITED).await;
    assert_eq!(ids(&limited), ["fast", "up/gpt-4o", "up/gpt-4o-mini"]);

    let answer = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(LIMITED)
        .json(&ask("up/gpt-4o-mini", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "a discovered model routes");
    let scrape = app.get_text("/metrics").await;
    assert!(
        scrape.contains("llmgate_discovered_models{provider=\"up\"} 4"),
        "{scrape}"
    );
}

#[tokio::test]
async fn without_discover_models_the_upstream_is_not_asked() {
    let server = upstream(ResponseTemplate::new(200).set_body_json(model_list(&["gpt-4o"]))).await;
    let app = spawn_app(&config(&server.uri(), "")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pairs = listed(&app.client, &app.url(""), "sk-gateway").await;
    assert_eq!(ids(&pairs), ["fast", "echo/echo", "up/configured"]);
    assert_eq!(fetches(&server).await, 0);
}

/// A config file in its own temporary directory, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("llmgate-discover-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = ConfigFile(dir.join("llmgate.toml"));
        file.write(text);
        file
    }

    /// Writes `text` with `${VAR}` filled from the test environment (a file loaded by the
    /// gateway reads the process environment, which tests leave alone).
    fn write(&self, text: &str) {
        let mut text = text.to_owned();
        for (name, value) in test_env() {
            text = text.replace(&format!("${{{name}}}"), &value);
        }
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test]
async fn the_last_good_list_survives_failures_and_reloads_fetch_again() {
    let server = upstream(ResponseTemplate::new(200).set_body_json(model_list(&["a", "b"]))).await;
    // A short provider timeout bounds each fetch (10 s otherwise).
    let text = config(&server.uri(), "discover_models = true\ntimeout_ms = 500");
    let file = ConfigFile::new(&text);
    let app = spawn_app_from_file(&file.0).await;
    let base = app.url("");
    let good = ["fast", "echo/echo", "up/a", "up/b", "up/configured"];
    let pairs = listed_until(&app.client, &base, |ids| ids.contains(&"up/a")).await;
    assert_eq!(ids(&pairs), good);

    let reload = || async { assert_eq!(app.reload(ADMIN).await.status(), 200) };
    let oversize = format!(
        "{{\"object\":\"list\",\"data\":[{{\"id\":\"big\"}}],\"pad\":\"{}\"}}",
        "x".repeat(5 * 1024 * 1024)
    );
    let failures = [
        ResponseTemplate::new(500).set_body_string("{\"error\":{\"message\":\"down\"}}"),
        ResponseTemplate::new(401).set_body_string("Incorrect API key provided: sk-upstream"),
        ResponseTemplate::new(200).set_body_raw(oversize, "application/json"),
        ResponseTemplate::new(200)
            .set_body_raw("{\"object\":\"list\",\"data\":5}", "application/json"),
        ResponseTemplate::new(200).set_body_raw("<html>gateway timeout</html>", "text/html"),
        ResponseTemplate::new(200)
            .set_body_json(model_list(&["late"]))
            .set_delay(Duration::from_secs(3)),
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        serve_models(&server, failure).await;
        reload().await;
        wait_fetches(&server, 1).await;
        let pairs = listed(&app.client, &base, "sk-gateway").await;
        assert_eq!(ids(&pairs), good, "failure {i} keeps the last good list");
    }
    // The slow answer would have come after 3 s: the fetch gave up at 500 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ids(&listed(&app.client, &base, "sk-gateway").await), good);

    serve_models(
        &server,
        ResponseTemplate::new(200).set_body_json(model_list(&["c"])),
    )
    .await;
    reload().await;
    let pairs = listed_until(&app.client, &base, |ids| ids.contains(&"up/c")).await;
    assert_eq!(ids(&pairs), ["fast", "echo/echo", "up/c", "up/configured"]);

    // Discovery turned off: the list goes at once, and the upstream is not asked again.
    file.write(&config(&server.uri(), ""));
    serve_models(
        &server,
        ResponseTemplate::new(200).set_body_json(model_list(&["d"])),
    )
    .await;
    reload().await;
    let pairs = listed(&app.client, &base, "sk-gateway").await;
    assert_eq!(ids(&pairs), ["fast", "echo/echo", "up/configured"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fetches(&server).await, 0);
}

#[tokio::test]
async fn a_new_upstream_starts_over() {
    let first = upstream(ResponseTemplate::new(200).set_body_json(model_list(&["old"]))).await;
    let second = upstream(ResponseTemplate::new(500)).await;
    let file = ConfigFile::new(&config(&first.uri(), "discover_models = true"));
    let app = spawn_app_from_file(&file.0).await;
    let base = app.url("");
    listed_until(&app.client, &base, |ids| ids.contains(&"up/old")).await;
    file.write(&config(&second.uri(), "discover_models = true"));
    assert_eq!(app.reload(ADMIN).await.status(), 200);
    wait_fetches(&second, 1).await;
    let pairs = listed(&app.client, &base, "sk-gateway").await;
    assert_eq!(
        ids(&pairs),
        ["fast", "echo/echo", "up/configured"],
        "another server's list is not kept"
    );
}

#[tokio::test]
async fn failures_are_logged_without_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(401).set_body_string(
            "{\"error\":{\"message\":\"Incorrect API key provided: sk-upstream-secret\"}}",
        ))
        .mount(&server)
        .await;
    let address = server.uri();
    let config = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{address}/v1\"\napi_key = \"sk-upstream-secret\"\ndiscover_models = true\n"
    );
    let gateway = Gateway::start("discover-log", &config).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gateway.output().contains("model discovery failed")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, output) = gateway.stop().await;
    assert!(output.contains("model discovery failed"), "{output}");
    assert!(output.contains("status 401"), "{output}");
    assert!(output.contains("provider=up"), "{output}");
    assert!(
        !output.contains("sk-upstream-secret"),
        "the key in the log:\n{output}"
    );
}
