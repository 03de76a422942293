use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

fn chunk(value: Value) -> Result<ChatChunk, ProviderError> {
    Ok(serde_json::from_value(value).unwrap())
}

fn timing() -> StreamTiming {
    StreamTiming {
        keepalive: Duration::from_secs(15),
        idle_timeout: Duration::from_secs(60),
        deadline: Instant::now() + Duration::from_secs(600),
        attempt_timeout_ms: 600_000,
    }
}

fn body_of(items: Vec<Result<ChatChunk, ProviderError>>, include_usage: bool) -> SseBody {
    SseBody::new(
        Box::pin(futures_util::stream::iter(items)),
        ChunkNormalizer::new("client-model", include_usage),
        "p",
        timing(),
    )
}

/// The events a body writes, each with its blank line (events ready together share a write).
async fn frames(body: SseBody) -> Vec<String> {
    let writes: Vec<String> = body
        .map(|f| String::from_utf8(f.unwrap().to_vec()).unwrap())
        .collect()
        .await;
    writes
        .concat()
        .split_inclusive("\n\n")
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stream_ends_with_usage_then_done() {
    let mut body = body_of(
        vec![
            chunk(
                json!({"id": "a", "created": 7, "choices": [{"index": 0, "delta": {"content": "hi"}}]}),
            ),
            chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
            chunk(
                json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
            ),
        ],
        true,
    );
    assert!(matches!(
        body.open(Duration::from_secs(1)).await,
        Ok(Opening::Ready)
    ));
    let frames = frames(body).await;
    assert_eq!(frames.len(), 4);
    assert!(frames.iter().all(|f| f.ends_with("\n\n")));
    assert_eq!(frames[0].matches("data: ").count(), 1);
    assert_eq!(frames[3], "data: [DONE]\n\n");
    let usage: Value = serde_json::from_str(frames[2].trim_start_matches("data: ").trim()).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 2);
    assert_eq!(usage["model"], "client-model");
}

#[tokio::test]
async fn an_error_before_the_first_chunk_is_a_status() {
    let mut body = body_of(
        vec![Err(ProviderError::Status {
            status: 429,
            message: "slow down".into(),
            code: None,
            retry_after: None,
        })],
        false,
    );
    let error = body.open(Duration::from_secs(1)).await.err().unwrap();
    assert!(
        matches!(error, ProviderError::Status { status: 429, .. }),
        "{error:?}"
    );
    let mut empty = body_of(vec![], false);
    let error = empty.open(Duration::from_secs(1)).await.err().unwrap();
    assert!(matches!(error, ProviderError::Decode(_)), "{error:?}");
}

#[tokio::test]
async fn an_error_after_the_first_chunk_is_one_event_without_done() {
    let mut body = body_of(
        vec![
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]})),
            Err(ProviderError::Stream("reset".into())),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "never"}}]})),
        ],
        false,
    );
    body.open(Duration::from_secs(1)).await.unwrap();
    let frames = frames(body).await;
    assert_eq!(frames.len(), 2);
    assert!(frames[1].starts_with("data: {\"error\":"), "{}", frames[1]);
    assert!(frames[1].contains("reset"));
}

#[tokio::test]
async fn events_ready_together_share_one_write() {
    let chunks = (0..5)
        .map(|i| chunk(json!({"choices": [{"index": 0, "delta": {"content": format!("w{i}")}}]})));
    let mut body = body_of(chunks.collect(), false);
    body.open(Duration::from_secs(1)).await.unwrap();
    let writes: Vec<Bytes> = body.map(|f| f.unwrap()).collect().await;
    assert_eq!(writes.len(), 1, "all six events were ready at once");
    assert_eq!(
        String::from_utf8_lossy(&writes[0]).matches("\n\n").count(),
        6
    );
}

#[tokio::test(start_paused = true)]
async fn keepalives_while_quiet_then_idle_timeout() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatChunk, ProviderError>>(4);
    let upstream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut timing = timing();
    timing.keepalive = Duration::from_secs(15);
    timing.idle_timeout = Duration::from_secs(40);
    let mut body = SseBody::new(upstream, ChunkNormalizer::new("m", false), "p", timing);
    // No chunk within the wait: the response is committed and keep-alives flow.
    assert!(matches!(
        body.open(Duration::from_secs(15)).await,
        Ok(Opening::StillWaiting)
    ));
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], KEEPALIVE_COMMENT);
    tx.send(chunk(
        json!({"choices": [{"index": 0, "delta": {"content": "x"}}]}),
    ))
    .await
    .unwrap();
    let data = body.next().await.unwrap().unwrap();
    assert!(data.starts_with(b"data: {"));
    // Then silence: two keep-alives (15 s, 30 s), then the idle timeout at 40 s.
    assert_eq!(&body.next().await.unwrap().unwrap()[..], KEEPALIVE_COMMENT);
    assert_eq!(&body.next().await.unwrap().unwrap()[..], KEEPALIVE_COMMENT);
    let end = body.next().await.unwrap().unwrap();
    assert!(end.starts_with(b"data: {\"error\":"));
    assert!(body.next().await.is_none());
    drop(tx);
}
