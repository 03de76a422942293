//! The gateway's upstream client against raw loopback upstreams: connections kept open are
//! reused (after a JSON answer and after an event stream), connections the upstream closes
//! or frames ambiguously are not, and answers in HTTP/1.1's less common framings are read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{TestApp, ask, ask_stream, openai_config, spawn_app, sse_chunks};

/// The most connections an upstream here accepts.
const MAX_CONNECTIONS: usize = 16;
/// The most requests it answers on one connection.
const MAX_REQUESTS: usize = 16;

/// Reads one request (head and `content-length` body); `false` when the client closed.
async fn read_one_request(socket: &mut TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return true;
            }
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// An upstream that answers every request on a connection with `answer(request number)`
/// (raw bytes: head and body) and counts the connections it accepted.
async fn upstream(answer: fn(usize) -> String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                for n in 0..MAX_REQUESTS {
                    if !read_one_request(&mut socket).await
                        || socket.write_all(answer(n).as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (base_url, accepted)
}

fn completion(text: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

/// A JSON answer with a length, on a connection kept open.
fn json_answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// An event stream of two chunks and `[DONE]` in the chunked coding, `[DONE]` and the last
/// chunk in one write.
fn stream_answer() -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1,
               "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = [
        format!(
            "data: {}\n\n",
            chunk(json!({"role": "assistant", "content": "hi"}), Value::Null)
        ),
        format!("data: {}\n\n", chunk(json!({}), json!("stop"))),
        "data: [DONE]\n\n".to_owned(),
    ];
    let mut answer = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n"
        .to_owned();
    for event in events {
        answer.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    answer.push_str("0\r\n\r\n");
    answer
}

async fn gateway(base_url: &str) -> TestApp {
    spawn_app(&openai_config(base_url, "")).await
}

async fn content(app: &TestApp) -> String {
    let response = app.chat(ask("up/m", "hello")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn streamed(app: &TestApp) -> String {
    let response = app.chat(ask_stream("up/m", "hello", false)).await;
    assert_eq!(response.status(), 200);
    let chunks = sse_chunks(&response.text().await.unwrap());
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn one_upstream_connection_carries_answers_and_streams_in_turn() {
    let (base_url, accepted) = upstream(|n| {
        if n % 2 == 0 {
            json_answer(&completion("json"))
        } else {
            stream_answer()
        }
    })
    .await;
    let app = gateway(&base_url).await;
    for _ in 0..3 {
        assert_eq!(content(&app).await, "json");
        assert_eq!(streamed(&app).await, "hi");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connections_the_upstream_closes_or_frames_ambiguously_are_not_reused() {
    // `connection: close`, then a length beside a transfer coding (the coding wins).
    let (base_url, accepted) = upstream(|n| {
        let body = completion("once");
        if n == 0 {
            format!(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 500 Never\r\ncontent-length: 0\r\n\r\n".to_owned()
        }
    })
    .await;
    let app = gateway(&base_url).await;
    for _ in 0..3 {
        assert_eq!(content(&app).await, "once");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    let (base_url, accepted) = upstream(|n| {
        let body = completion("coded");
        if n == 0 {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
                 {:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
        } else {
            "HTTP/1.1 500 Never\r\ncontent-length: 0\r\n\r\n".to_owned()
        }
    })
    .await;
    let app = gateway(&base_url).await;
    for _ in 0..2 {
        assert_eq!(content(&app).await, "coded");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn informational_answers_and_bodies_read_until_close_are_taken() {
    let (base_url, accepted) = closing_upstream().await;
    let app = gateway(&base_url).await;
    assert_eq!(content(&app).await, "until close");
    assert_eq!(content(&app).await, "until close");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// An upstream that sends two informational answers, then an HTTP/1.0 answer without a
/// length, and closes the connection.
async fn closing_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_one_request(&mut socket).await {
                    let answer = format!(
                        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n\
                         HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{}",
                        completion("until close")
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
            });
        }
    });
    (base_url, accepted)
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_a_502_naming_its_kind() {
    let (base_url, _) = upstream(|_| "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned()).await;
    let app = gateway(&base_url).await;
    let response = app.chat(ask("up/m", "hello")).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid HTTP answer"), "{message}");
}
