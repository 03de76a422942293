//! The gateway's upstream client against raw loopback upstreams: connections kept open are
//! reused (after a JSON answer and after an event stream), connections the upstream closes
//! or frames ambiguously are not, and answers in HTTP/1.1's less common framings are read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::{
    TestApp, ask, ask_stream, openai_config, read_request, spawn_app, sse_chunks,
};

/// The most connections an upstream here accepts.
const MAX_CONNECTIONS: usize = 16;
/// The most requests it answers on one connection.
const MAX_REQUESTS: usize = 16;

/// An upstream that answers every request on a connection with `answer(request number)`
/// (raw bytes: head and body), closing the connection after each answer when `closes`, and
/// counts the connections it accepted.
async fn upstream(answer: fn(usize) -> String, closes: bool) -> (String, Arc<AtomicUsize>) {
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
                    if !read_request(&mut socket).await
                        || socket.write_all(answer(n).as_bytes()).await.is_err()
                    {
                        return;
                    }
                    if closes {
                        let _ = socket.shutdown().await;
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
    stream_answer_with(0)
}

/// The same with `after_done` bytes of comments between `[DONE]` and the last chunk.
fn stream_answer_with(after_done: usize) -> String {
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
        format!(": {}\n", "x".repeat(after_done)),
    ];
    let mut answer = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n"
        .to_owned();
    for event in events
        .iter()
        .filter(|e| after_done > 0 || !e.starts_with(':'))
    {
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
    let (base_url, accepted) = upstream(
        |n| {
            if n % 2 == 0 {
                json_answer(&completion("json"))
            } else {
                stream_answer()
            }
        },
        false,
    )
    .await;
    let app = gateway(&base_url).await;
    for _ in 0..3 {
        assert_eq!(content(&app).await, "json");
        assert_eq!(streamed(&app).await, "hi");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A JSON answer with `connection: close`; a reused connection would get a 500.
fn close_after_answer(n: usize) -> String {
    let body = completion("once");
    match n {
        0 => format!(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        _ => never_again(),
    }
}

/// A chunked JSON answer that also states a length (the coding wins); a reused connection
/// would get a 500.
fn length_beside_coding(n: usize) -> String {
    let body = completion("coded");
    match n {
        0 => format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
             {:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
        _ => never_again(),
    }
}

fn never_again() -> String {
    "HTTP/1.1 500 Never\r\ncontent-length: 0\r\n\r\n".to_owned()
}

/// How many upstream connections `requests` JSON requests take through the gateway, each
/// answered with `text`, when the upstream answers as `answer` says.
async fn connections_for(answer: fn(usize) -> String, requests: usize, text: &str) -> usize {
    let (base_url, accepted) = upstream(answer, false).await;
    let app = gateway(&base_url).await;
    for _ in 0..requests {
        assert_eq!(content(&app).await, text);
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_stream_whose_end_is_far_after_done_gives_up_its_connection() {
    // 100 KB after `[DONE]` is more than the gateway reads to keep a connection (64 KB).
    let (base_url, accepted) = upstream(|_| stream_answer_with(100 * 1024), false).await;
    let app = gateway(&base_url).await;
    assert_eq!(streamed(&app).await, "hi");
    assert_eq!(streamed(&app).await, "hi");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_the_upstream_closes_or_frames_ambiguously_are_not_reused() {
    assert_eq!(connections_for(close_after_answer, 3, "once").await, 3);
    assert_eq!(connections_for(length_beside_coding, 2, "coded").await, 2);
}

#[tokio::test]
async fn informational_answers_and_bodies_read_until_close_are_taken() {
    // Two informational answers, then an HTTP/1.0 answer without a length, ended by the
    // upstream closing the connection.
    let (base_url, accepted) = upstream(
        |_| {
            format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n\
                 HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{}",
                completion("until close")
            )
        },
        true,
    )
    .await;
    let app = gateway(&base_url).await;
    assert_eq!(content(&app).await, "until close");
    assert_eq!(content(&app).await, "until close");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_a_502_naming_its_kind() {
    let (base_url, _) = upstream(|_| "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(), false).await;
    let app = gateway(&base_url).await;
    let response = app.chat(ask("up/m", "hello")).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid HTTP answer"), "{message}");
}
