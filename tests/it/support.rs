//! Test harness: a gateway on a random loopback port, mock upstreams, and SSE helpers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use llmgate::config::from_toml_str;
use llmgate::server::{self, AppState};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running gateway.
pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a JSON body to the OpenAI chat path.
    pub(crate) async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", body).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("gateway reachable")
    }

    /// The body of `GET path`, as text.
    pub(crate) async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("gateway reachable")
            .text()
            .await
            .expect("a readable body")
    }

    /// `POST /admin/reload` with `admin_key`.
    pub(crate) async fn reload(&self, admin_key: &str) -> reqwest::Response {
        self.client
            .post(self.url("/admin/reload"))
            .bearer_auth(admin_key)
            .send()
            .await
            .expect("gateway reachable")
    }

    /// Starts the graceful shutdown.
    pub(crate) fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// The secrets config files in tests may reference.
pub(crate) fn test_env() -> BTreeMap<String, String> {
    [
        ("UPSTREAM_KEY", "sk-upstream"),
        ("GATEWAY_KEY", "sk-gateway"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Starts a gateway on `config` (TOML) at `127.0.0.1:0`.
pub(crate) async fn spawn_app(config: &str) -> TestApp {
    llmgate::telemetry::install_crypto_provider();
    let config = from_toml_str(config, &test_env()).expect("valid test config");
    spawn_state(AppState::new(&config).expect("adapters build")).await
}

/// Starts a gateway on the config file `path` (which `/admin/reload` re-reads).
pub(crate) async fn spawn_app_from_file(path: &std::path::Path) -> TestApp {
    llmgate::telemetry::install_crypto_provider();
    let source = server::ConfigSource {
        path: Some(path.to_owned()),
        listen: None,
    };
    spawn_state(AppState::load(source).expect("valid config file")).await
}

/// Serves `state` at `127.0.0.1:0`.
async fn spawn_state(state: AppState) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server::run(listener, state, async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// A gateway with only the echo provider.
pub(crate) async fn echo_app() -> TestApp {
    spawn_app("[providers.echo]\nkind = \"echo\"\n").await
}

/// A config with the echo provider and an `openai`-kind provider `up` at `base_url`.
pub(crate) fn openai_config(base_url: &str, extra: &str) -> String {
    format!(
        "[providers.echo]\nkind = \"echo\"\n\n[providers.up]\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key = \"${{UPSTREAM_KEY}}\"\n{extra}"
    )
}

/// A gateway whose provider `up` (kind openai) is a mock answering every POST with `response`.
pub(crate) async fn app_with_upstream(
    response: wiremock::ResponseTemplate,
) -> (wiremock::MockServer, TestApp) {
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(response)
        .mount(&upstream)
        .await;
    let app = spawn_app(&openai_config(&format!("{}/v1", upstream.uri()), "")).await;
    (upstream, app)
}

/// An event-stream response with `body`.
pub(crate) fn sse_response(body: String) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// A user message request for `model`.
pub(crate) fn ask(model: &str, text: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Like [`ask`] with `stream: true` (and `include_usage` when asked).
pub(crate) fn ask_stream(model: &str, text: &str, include_usage: bool) -> Value {
    let mut body = ask(model, text);
    body["stream"] = Value::Bool(true);
    if include_usage {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    body
}

/// The events of an SSE body: `data` payloads as text, comments as `:<text>`.
pub(crate) fn sse_events(body: &str) -> Vec<String> {
    assert!(
        body.is_empty() || body.ends_with("\n\n"),
        "every event must end with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| match e.strip_prefix("data: ") {
            Some(data) => data.to_owned(),
            None => e.to_owned(),
        })
        .collect()
}

/// The JSON chunks of an SSE body (everything but `[DONE]` and comments).
pub(crate) fn sse_chunks(body: &str) -> Vec<Value> {
    sse_events(body)
        .iter()
        .filter(|e| e.as_str() != "[DONE]" && !e.starts_with(':'))
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect()
}

/// A raw loopback upstream that answers one request with SSE headers and `first` event(s),
/// then keeps the connection open (sending nothing) until the peer closes it; `closed` turns
/// true when it notices a close, and `connections` / `closes` count them.
pub(crate) struct HangingUpstream {
    pub(crate) base_url: String,
    pub(crate) closed: Arc<AtomicBool>,
    /// Connections accepted.
    pub(crate) connections: Arc<AtomicUsize>,
    /// Connections the peer closed.
    pub(crate) closes: Arc<AtomicUsize>,
}

pub(crate) async fn hanging_upstream(
    first: String,
    then_every: Option<(Duration, String)>,
) -> HangingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let closed2 = closed.clone();
    let (connections, closes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (connections2, closes2) = (connections.clone(), closes.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let closed = closed2.clone();
            let closes = closes2.clone();
            connections2.fetch_add(1, Ordering::SeqCst);
            let first = first.clone();
            let then_every = then_every.clone();
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(chunked(&first).as_bytes()).await;
                let mut buf = [0u8; 1024];
                loop {
                    let wait = then_every
                        .as_ref()
                        .map_or(Duration::from_secs(3600), |(d, _)| *d);
                    tokio::select! {
                        read = socket.read(&mut buf) => {
                            if matches!(read, Ok(0) | Err(_)) {
                                closed.store(true, Ordering::SeqCst);
                                closes.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        () = tokio::time::sleep(wait) => {
                            if let Some((_, event)) = &then_every
                                && socket.write_all(chunked(event).as_bytes()).await.is_err()
                            {
                                closed.store(true, Ordering::SeqCst);
                                closes.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    HangingUpstream {
        base_url: format!("http://{addr}/v1"),
        closed,
        connections,
        closes,
    }
}

fn chunked(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body); false when the client
/// closed (or failed) before a whole one came.
pub(crate) async fn read_request(socket: &mut tokio::net::TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = socket.read(&mut buf).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return true;
            }
        }
    }
}

/// Polls `check` every 10 ms for up to `limit`.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Everything the gateway sends on `stream` until it closes the connection (bounded by 10 s).
pub(crate) async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway closed the connection in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// The gateway still answers a chat request through its `echo` provider.
pub(crate) async fn still_serves(app: &TestApp) {
    let response = app.chat(ask("echo/x", "still here")).await;
    assert_eq!(response.status(), 200);
}
