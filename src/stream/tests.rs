use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

fn chunk(value: Value) -> Result<StreamItem, ProviderError> {
    Ok(StreamItem::Parsed(Box::new(
        serde_json::from_value(value).unwrap(),
    )))
}

fn timing() -> StreamTiming {
    StreamTiming {
        keepalive: Duration::from_secs(15),
        idle_timeout: Duration::from_secs(60),
        deadline: Instant::now() + Duration::from_secs(600),
        attempt_timeout_ms: 600_000,
    }
}

fn body_of(items: Vec<Result<StreamItem, ProviderError>>, include_usage: bool) -> SseBody {
    SseBody::new(
        Box::pin(futures_util::stream::iter(items)),
        ChunkNormalizer::new("client-model", include_usage, 1),
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
    assert!(matches!(body.open(None).await, Ok(Opening::Ready)));
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
    let error = body.open(None).await.err().unwrap();
    assert!(
        matches!(error, ProviderError::Status { status: 429, .. }),
        "{error:?}"
    );
    let mut empty = body_of(vec![], false);
    let error = empty.open(None).await.err().unwrap();
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
    body.open(None).await.unwrap();
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
    body.open(None).await.unwrap();
    let writes: Vec<Bytes> = body.map(|f| f.unwrap()).collect().await;
    assert_eq!(writes.len(), 1, "all six events were ready at once");
    assert_eq!(
        String::from_utf8_lossy(&writes[0]).matches("\n\n").count(),
        6
    );
}

#[tokio::test]
async fn a_lone_event_is_written_in_a_buffer_of_its_size() {
    let chunks = vec![chunk(
        json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}),
    )];
    let mut body = body_of(chunks, false);
    body.open(None).await.unwrap();
    let writes: Vec<Bytes> = body.map(|f| f.unwrap()).collect().await;
    for write in writes {
        let len = write.len();
        let room = write.try_into_mut().expect("the only reference").capacity();
        assert!(
            len < FRAME_START_BYTES / 4 && room == len,
            "{len} bytes held in {room}"
        );
    }
}

#[tokio::test]
async fn a_write_stops_growing_at_the_coalescing_bound() {
    let word = "x".repeat(200);
    let chunks =
        (0..200).map(|_| chunk(json!({"choices": [{"index": 0, "delta": {"content": word}}]})));
    let mut body = body_of(chunks.collect(), false);
    body.open(None).await.unwrap();
    let writes: Vec<Bytes> = body.map(|f| f.unwrap()).collect().await;
    assert!(
        writes.len() > 1,
        "200 events of 300 bytes are more than one write"
    );
    let longest_event = 512;
    for write in &writes {
        assert!(
            write.len() < COALESCE_BYTES + longest_event,
            "{}",
            write.len()
        );
    }
    let events: usize = writes
        .iter()
        .map(|w| String::from_utf8_lossy(w).matches("\n\n").count())
        .sum();
    assert_eq!(events, 201, "every event once, then [DONE]");
}

#[tokio::test(start_paused = true)]
async fn keepalives_while_quiet_then_idle_timeout() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<StreamItem, ProviderError>>(4);
    let upstream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut timing = timing();
    timing.keepalive = Duration::from_secs(15);
    timing.idle_timeout = Duration::from_secs(40);
    let mut body = SseBody::new(upstream, ChunkNormalizer::new("m", false, 1), "p", timing);
    // No chunk within the wait: the response is committed and keep-alives flow.
    assert!(matches!(
        body.open(Some(Duration::from_secs(15))).await,
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

type Item = Result<StreamItem, ProviderError>;

/// An upstream that yields each item `secs` after the previous one, then stays silent
/// (`silent`) or ends.
fn scripted(script: Vec<(u64, Item)>, silent: bool) -> ChunkStream {
    let items = futures_util::stream::iter(script).then(|(secs, item)| async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        item
    });
    if silent {
        Box::pin(items.chain(futures_util::stream::pending()))
    } else {
        Box::pin(items)
    }
}

/// A body over `upstream` with 15 s keep-alives and a 40 s idle timeout.
fn paced_body(upstream: ChunkStream) -> SseBody {
    let mut timing = timing();
    timing.idle_timeout = Duration::from_secs(40);
    SseBody::new(upstream, ChunkNormalizer::new("m", false, 1), "p", timing)
}

fn unavailable() -> ProviderError {
    ProviderError::Status {
        status: 503,
        message: "overloaded".into(),
        code: None,
        retry_after: None,
    }
}

fn content(text: &str) -> Item {
    chunk(json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_commit_time_is_still_the_attempts() {
    // Longer than a keep-alive interval, shorter than the commit time: nothing was sent, so
    // the error goes back to the attempt (to be retried or answered with its status).
    let mut body = paced_body(scripted(vec![(30, Err(unavailable()))], true));
    let error = body.open(Some(Duration::from_secs(45))).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Status { status: 503, .. }),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_chunk_before_the_commit_time_opens_normally() {
    let mut body = paced_body(scripted(vec![(30, content("x"))], true));
    let opening = body.open(Some(Duration::from_secs(45))).await.unwrap();
    assert_eq!(opening, Opening::Ready);
    assert!(body.next().await.unwrap().unwrap().starts_with(b"data: {"));
}

#[tokio::test(start_paused = true)]
async fn past_the_commit_time_keepalives_go_out_and_a_failure_is_an_event() {
    let mut body = paced_body(scripted(vec![(36, Err(unavailable()))], true));
    let start = Instant::now();
    let opening = body.open(Some(Duration::from_secs(35))).await.unwrap();
    assert_eq!(opening, Opening::StillWaiting);
    assert_eq!(start.elapsed(), Duration::from_secs(35));
    // Committed: a keep-alive at once, then the failure as one error event.
    assert_eq!(&body.next().await.unwrap().unwrap()[..], KEEPALIVE_COMMENT);
    let end = body.next().await.unwrap().unwrap();
    assert!(end.starts_with(b"data: {\"error\":"), "{end:?}");
    assert!(body.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn without_a_commit_time_only_the_idle_timeout_ends_the_wait() {
    let mut body = paced_body(scripted(Vec::new(), true));
    let start = Instant::now();
    let error = body.open(None).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(40));
    assert!(error.to_string().contains("no event for 40 s"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn signs_of_life_keep_an_upstream_from_idling_but_send_nothing() {
    // Bytes without a complete event (an empty chunk) every 30 s, idle timeout 40 s: for two
    // minutes before the first chunk and two minutes after it.
    let alive = || (30, Ok(ChatChunk::default().into()));
    let mut script: Vec<(u64, Item)> = (0..4).map(|_| alive()).collect();
    script.push((30, content("x")));
    script.extend((0..4).map(|_| alive()));
    script.push((
        30,
        chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
    ));
    let mut body = paced_body(scripted(script, false));
    assert_eq!(body.open(None).await.unwrap(), Opening::Ready);
    let frames = frames(body).await;
    assert!(frames.iter().all(|f| !f.contains("error")), "{frames:?}");
    let keepalives = frames
        .iter()
        .filter(|f| f.as_bytes() == KEEPALIVE_COMMENT)
        .count();
    assert!(keepalives >= 8, "{frames:?}");
    assert_eq!(
        frames.len(),
        keepalives + 3,
        "two chunks and [DONE]: {frames:?}"
    );
    assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
}

#[tokio::test]
async fn a_choice_index_beyond_n_is_an_error_before_and_after_the_first_chunk() {
    let bad =
        || chunk(json!({"choices": [{"index": 4_294_967_295u64, "delta": {"content": "x"}}]}));
    let mut body = body_of(vec![bad()], false);
    let error = body.open(None).await.unwrap_err();
    assert!(matches!(error, ProviderError::Decode(_)), "{error:?}");
    let mut body = body_of(vec![content("x"), bad()], false);
    body.open(None).await.unwrap();
    let frames = frames(body).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[1].contains("index 4294967295"), "{}", frames[1]);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_stream_holds_no_frame_buffer() {
    // A chunk, then bytes that complete no event (an empty chunk) a second later, then quiet.
    let alive = (1, Ok(ChatChunk::default().into()));
    let mut body = paced_body(scripted(vec![(0, content("x")), alive], true));
    assert_eq!(body.open(None).await.unwrap(), Opening::Ready);
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"x\""));
    tokio::time::advance(Duration::from_secs(2)).await;
    // The sign of life writes nothing; the stream waits again, holding no buffer.
    assert!(futures_util::FutureExt::now_or_never(body.next()).is_none());
    assert_eq!(body.pending.capacity(), 0);
}
