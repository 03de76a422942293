//! Hostile clients against the real server loop: slow headers and bodies, oversized heads, a
//! connection flood over `max_connections`, and a client that stops reading a stream. Each
//! case ends for that client alone, bounded in time; the gateway keeps serving others.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Short limits so each case ends in about a second.
const LIMITS: &str = "[server]\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\nwrite_stall_timeout_secs = 1\nmax_connections = 4\nmax_header_bytes = 8192\n";

async fn app(extra: &str) -> TestApp {
    spawn_app(&format!(
        "{LIMITS}[providers.echo]\nkind = \"echo\"\n{extra}"
    ))
    .await
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = app("").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    read_to_close(&mut stream).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = app("").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let app = app("").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let text = read_to_close(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    still_serves(&app).await;
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let app = app("").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let big = "a".repeat(16 * 1024);
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let text = read_to_close(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    still_serves(&app).await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once() {
    let app = app("").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        // A request answered keeps the connection open and proves it holds a slot.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    let text = read_to_close(&mut extra).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    held.clear();
    // Slots come back when connections close.
    let mut served = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        if read_to_close(&mut stream).await.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a closed connection gives its slot back");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_releases_its_upstream() {
    let content = "x".repeat(32 * 1024);
    let event = format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    );
    let upstream = hanging_upstream(
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "start"}, "finish_reason": null}]})
        ),
        Some((Duration::from_millis(1), event)),
    )
    .await;
    let app = app(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\n",
        upstream.base_url
    ))
    .await;
    let body = json!({"model": "up/m", "stream": true,
        "messages": [{"role": "user", "content": "flood me"}]})
    .to_string();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Never read: the socket buffers fill, the write stalls, the gateway gives up.
    assert!(
        eventually(Duration::from_secs(20), || upstream
            .closed
            .load(Ordering::SeqCst))
        .await,
        "the upstream request was cancelled"
    );
    still_serves(&app).await;
    drop(stream);
}
