//! The gateway's own HTTP/1.1 on the client side, spoken raw: pipelined requests, bodies that
//! arrive after their head (with a length, chunked, after `100 Continue`), `HEAD`, HTTP/1.0,
//! and framing that could be cut two ways (refused before any route sees it).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A chat request's JSON body for the echo provider.
fn chat_body(text: &str) -> String {
    json!({"model": "echo/x", "messages": [{"role": "user", "content": text}]}).to_string()
}

/// A chat request's head announcing `fields` (framing among them).
fn chat_head(fields: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{fields}\r\n"
    )
}

/// Reads until `wanted` has arrived (bounded by 10 s).
async fn read_until(stream: &mut TcpStream, wanted: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&out).contains(wanted) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {wanted:?}: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "{wanted:?} arrived in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// The answers' JSON bodies, in order, from what a connection carried (`content-length`
/// framed).
fn json_bodies(text: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    let mut rest = text;
    while let Some((head, after)) = rest.split_once("\r\n\r\n") {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        bodies.push(serde_json::from_str(&after[..length]).unwrap());
        rest = &after[length..];
    }
    bodies
}

fn echoed(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"].as_str().unwrap()
}

/// Reads the one answer a connection carries: a 200 whose echo holds `text`.
async fn assert_echoed_then_closed(stream: &mut TcpStream, text: &str) {
    let answer = read_to_close(stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(echoed(&json_bodies(&answer)[0]).contains(text), "{answer}");
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let app = echo_app().await;
    let mut stream = connect(&app).await;
    let (first, second) = (chat_body("first"), chat_body("second"));
    let requests = format!(
        "{}{first}{}{second}GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        chat_head(&format!("content-length: {}\r\n", first.len())),
        chat_head(&format!("content-length: {}\r\n", second.len())),
    );
    stream.write_all(requests.as_bytes()).await.unwrap();
    let text = read_to_close(&mut stream).await;
    let bodies = json_bodies(&text);
    assert_eq!(bodies.len(), 3, "{text}");
    assert!(echoed(&bodies[0]).contains("first"), "{}", bodies[0]);
    assert!(echoed(&bodies[1]).contains("second"), "{}", bodies[1]);
    assert_eq!(bodies[2]["status"], "ok", "{}", bodies[2]);
    assert!(text.contains("\r\ndate: "), "{text}");
}

#[tokio::test]
async fn a_body_that_comes_after_its_head_is_read() {
    let app = echo_app().await;
    let mut stream = connect(&app).await;
    let body = chat_body("late");
    let head = chat_head(&format!("content-length: {}\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (start, end) = body.split_at(10);
    stream.write_all(start.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(end.as_bytes()).await.unwrap();
    // The connection carries another request after it.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let bodies = json_bodies(&read_to_close(&mut stream).await);
    assert!(echoed(&bodies[0]).contains("late"), "{}", bodies[0]);
    assert_eq!(bodies[1]["status"], "ok");
}

#[tokio::test]
async fn a_chunked_body_is_read() {
    let app = echo_app().await;
    let mut stream = connect(&app).await;
    let body = chat_body("in chunks");
    let (start, end) = body.split_at(7);
    let request = format!(
        "{}{:x};ext=1\r\n{start}\r\n{:x}\r\n{end}\r\n0\r\ntrailer: t\r\n\r\n",
        chat_head("transfer-encoding: chunked\r\nconnection: close\r\n"),
        start.len(),
        end.len(),
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_echoed_then_closed(&mut stream, "in chunks").await;
}

#[tokio::test]
async fn a_client_that_expects_100_continue_gets_it_before_sending() {
    let app = echo_app().await;
    let mut stream = connect(&app).await;
    let body = chat_body("after continue");
    let head = chat_head(&format!(
        "content-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.unwrap();
    assert_echoed_then_closed(&mut stream, "after continue").await;
}

#[tokio::test]
async fn head_answers_carry_no_body_and_http_1_0_closes() {
    let app = echo_app().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut stream).await;
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    // The GET's answer follows the HEAD's head at once: the HEAD's has no body.
    assert!(rest.starts_with("HTTP/1.1 200"), "{text}");
    let (head, body) = rest.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(serde_json::from_str::<Value>(body).unwrap()["status"], "ok");
}

#[tokio::test]
async fn framing_that_could_be_cut_two_ways_is_refused() {
    let app = echo_app().await;
    for (fields, status, code) in [
        (
            "content-length: 5\r\ntransfer-encoding: chunked\r\n",
            "400",
            "bad_request",
        ),
        (
            "content-length: 5\r\ncontent-length: 6\r\n",
            "400",
            "bad_request",
        ),
        ("transfer-encoding: chunked, gzip\r\n", "400", "bad_request"),
        (
            "transfer-encoding: gzip, chunked\r\n",
            "501",
            "not_implemented",
        ),
    ] {
        let mut stream = connect(&app).await;
        // A second request hidden in the body must never be answered.
        let smuggled = "0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
        let request = format!("{}{smuggled}", chat_head(fields));
        stream.write_all(request.as_bytes()).await.unwrap();
        let text = read_to_close(&mut stream).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        let bodies = json_bodies(&text);
        assert_eq!(
            bodies.len(),
            1,
            "{fields:?}: one answer, then close: {text}"
        );
        assert_eq!(bodies[0]["error"]["code"], code);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_the_client_reads_why() {
    let app =
        spawn_app("[server]\nmax_body_bytes = 1024\n[providers.echo]\nkind = \"echo\"\n").await;
    let mut stream = connect(&app).await;
    let head = chat_head("content-length: 1000000\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // Part of the body, which the gateway does not read.
    let _ = stream.write_all(&[b'x'; 64 * 1024]).await;
    let text = read_to_close(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(json_bodies(&text)[0]["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn garbage_gets_400_and_the_gateway_keeps_serving() {
    let app = echo_app().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    still_serves(&app).await;
}
