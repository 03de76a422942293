//! The real binary under siege: thousands of idle connections and every kind of broken
//! upstream at once, while a well-behaved client keeps being served. Each hostile request
//! must end in a clear error for itself alone, and the gateway's RSS must stay under
//! [`RSS_LIMIT_KB`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::process::Gateway;

/// The gateway's RSS bound under siege.
const RSS_LIMIT_KB: u64 = 200 * 1024;
/// Idle client connections held open during the siege (fewer if the descriptor limit is low).
const IDLE_CONNECTIONS: usize = 10_000;

/// What the hostile upstream does, chosen by the upstream model name.
fn behaviour(model: &str) -> &'static [u8] {
    match model {
        "endless-line" => b"endless-line",
        "endless-stream" => b"endless-stream",
        "huge-body" => b"huge-body",
        "huge-index" => b"huge-index",
        "retry-after" => b"retry-after",
        "bad-utf8" => b"bad-utf8",
        "no-done" => b"no-done",
        _ => b"unknown",
    }
}

fn chunk(index: u64, delta: Value, finish: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})
    )
}

async fn hostile_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_hostile(socket));
        }
    });
    format!("http://{addr}/v1")
}

async fn serve_hostile(mut socket: TcpStream) {
    let model = read_model(&mut socket).await;
    let sse = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
    let first = chunk(
        0,
        json!({"role": "assistant", "content": "hi"}),
        Value::Null,
    );
    let _ = match behaviour(&model) {
        b"endless-line" => {
            let _ = socket.write_all(sse.as_bytes()).await;
            let _ = socket.write_all(first.as_bytes()).await;
            let _ = socket.write_all(b"data: ").await;
            let block = vec![b'x'; 64 * 1024];
            while socket.write_all(&block).await.is_ok() {}
            Ok(())
        }
        b"endless-stream" => {
            let _ = socket.write_all(sse.as_bytes()).await;
            loop {
                let event = chunk(0, json!({"content": "more "}), Value::Null);
                if socket.write_all(event.as_bytes()).await.is_err() {
                    break Ok(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        b"huge-body" => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n{\"choices\": \"";
            let _ = socket.write_all(head.as_bytes()).await;
            let block = vec![b'x'; 64 * 1024];
            while socket.write_all(&block).await.is_ok() {}
            Ok(())
        }
        b"huge-index" => {
            let _ = socket.write_all(sse.as_bytes()).await;
            let event = chunk(4_294_967_295, json!({"content": "boom"}), Value::Null);
            socket.write_all(event.as_bytes()).await
        }
        b"retry-after" => {
            let body = r#"{"error":{"message":"slow down","code":"rate_limit_exceeded"}}"#;
            let head = format!(
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1e20\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(head.as_bytes()).await
        }
        b"bad-utf8" => {
            let _ = socket.write_all(sse.as_bytes()).await;
            let _ = socket.write_all(first.as_bytes()).await;
            socket.write_all(b"data: {\"x\": \"\xff\xfe\"}\n\n").await
        }
        b"no-done" => {
            let _ = socket.write_all(sse.as_bytes()).await;
            let _ = socket.write_all(first.as_bytes()).await;
            let _ = socket.shutdown().await;
            Ok(())
        }
        _ => Ok(()),
    };
    // Hold the socket until the gateway lets go.
    let mut sink = [0u8; 1024];
    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Reads one request and returns its `model`.
async fn read_model(socket: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Ok(n) = socket.read(&mut buf).await else {
            return String::new();
        };
        if n == 0 {
            return String::new();
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            let body: Value = serde_json::from_slice(&data[end + 4..end + 4 + length]).unwrap();
            return body["model"].as_str().unwrap_or_default().to_owned();
        }
    }
}

async fn start_gateway(upstream: &str) -> Gateway {
    let config = format!(
        "[server]\nstream_idle_timeout_secs = 5\nmax_upstream_body_bytes = 1048576\nmax_upstream_event_bytes = 1048576\n\
         [providers.echo]\nkind = \"echo\"\n\
         [providers.bad]\nkind = \"openai\"\nbase_url = \"{upstream}\"\ntimeout_ms = 8000\n\
         [models.long]\ntargets = [{{ provider = \"bad\", model = \"endless-stream\" }}]\ntimeout_ms = 4000\n"
    );
    // One worker: nothing a hostile peer does can hide behind a second thread.
    Gateway::start_with(
        "siege",
        &config,
        &[("RUST_LOG", "warn"), ("TOKIO_WORKER_THREADS", "1")],
    )
    .await
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How many idle connections this process can afford: its descriptor limit leaves room for
/// both ends of each (the gateway inherits the same limit).
fn affordable_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    IDLE_CONNECTIONS.min(soft.saturating_sub(512))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstreams_and_idle_connections_hurt_no_one_else() {
    llmgate::telemetry::install_crypto_provider();
    let upstream = hostile_upstream().await;
    let gateway = start_gateway(&upstream).await;
    let base = gateway.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Thousands of idle connections, held for the whole siege.
    let mut idle = Vec::new();
    for _ in 0..affordable_connections() {
        match TcpStream::connect(gateway.addr()).await {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 500, "only {} idle connections", idle.len());

    // A well-behaved client is served all through.
    let siege_over = Arc::new(AtomicBool::new(false));
    let bystander = {
        let (client, base, over) = (client.clone(), base.clone(), siege_over.clone());
        tokio::spawn(async move {
            let mut served = 0;
            while !over.load(Ordering::SeqCst) {
                let response = client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&json!({"model": "echo/x", "messages": [{"role": "user", "content": "fine"}]}))
                    .send()
                    .await
                    .expect("the bystander is served");
                assert_eq!(response.status(), 200);
                served += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            served
        })
    };

    let hostile = [
        ("bad/endless-line", true),
        ("long", true),
        ("bad/huge-body", false),
        ("bad/huge-index", true),
        ("bad/retry-after", false),
        ("bad/bad-utf8", true),
        ("bad/no-done", true),
    ];
    let mut cases = Vec::new();
    for (model, stream) in hostile {
        let (client, base) = (client.clone(), base.clone());
        cases.push(tokio::spawn(async move {
            let response = client
                .post(format!("{base}/v1/chat/completions"))
                .json(
                    &json!({"model": model, "stream": stream, "retry": {"count": 1},
                    "messages": [{"role": "user", "content": "attack"}]}),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("{model}: {e}"));
            let status = response.status().as_u16();
            let body = response
                .text()
                .await
                .unwrap_or_else(|e| panic!("{model}: {e}"));
            (model, status, body)
        }));
    }
    let mut peak = 0;
    for case in cases {
        let (model, status, body) = case.await.unwrap();
        peak = peak.max(rss_kb(gateway.pid()));
        let clear = if status == 200 {
            // Committed streams end with one error event, never with [DONE].
            let last = body.trim_end().rsplit("\n\n").next().unwrap_or_default();
            last.starts_with("data: {\"error\"")
        } else {
            let error: Value = serde_json::from_str(&body).unwrap_or_default();
            error["error"]["message"].is_string() && error["error"]["code"].is_string()
        };
        assert!(clear, "{model}: {status} {body:.300}");
    }
    siege_over.store(true, Ordering::SeqCst);
    let served = bystander.await.unwrap();
    assert!(served > 0);
    peak = peak.max(rss_kb(gateway.pid()));
    eprintln!(
        "siege: {} idle connections, {served} bystander answers, gateway RSS peak {peak} kB",
        idle.len()
    );
    assert!(peak < RSS_LIMIT_KB, "gateway RSS peaked at {peak} kB");
    drop(idle);
}
