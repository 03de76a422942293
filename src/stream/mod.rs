//! Streaming: decoding upstream event streams ([`decode`]), normalizing chunks
//! ([`normalize`]) and writing the client's event stream (`SseBody`).
//!
//! Before anything is sent, `SseBody::open` waits for the first upstream chunk, so a failure
//! up to then is still the attempt's (retried, or answered with a real status). Only when the
//! first chunk takes longer than `stream_first_chunk_keepalive_secs` (a reasoning model
//! thinking) is the response committed early: `200` and keep-alive comments go out, and a later
//! failure is an error event.
//!
//! The outgoing stream is a hand-written `Stream` so its timing rules are in one place: every
//! frame is yielded as soon as it exists (the connection writes it at once; nothing buffers SSE),
//! a `: keep-alive` comment goes out after `keepalive` without a frame, and the stream ends
//! with one error event when the upstream is idle too long, passes the attempt's total
//! deadline, or fails. Idle means no upstream item at all: adapters yield an empty chunk when
//! bytes arrived without completing an event, so a live upstream is never idle (and one that
//! trickles an endless event hits the event size cap instead). One timer serves all three
//! deadlines and is re-armed only when it fires. Dropping the body (client gone) drops the
//! upstream stream, which closes its connection.

pub mod decode;
pub mod normalize;
pub mod splice;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::cache::StreamRecorder;
use crate::envelope::ErrorEnvelope;
use crate::error::{GatewayError, ProviderError};
use crate::observe::record::{Observed, Record};
use crate::providers::{ChunkStream, StreamItem};
use crate::schema::{ChatChunk, ChatResponse};
use crate::telemetry;
use normalize::ChunkNormalizer;

/// The last event of a successful stream.
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
/// The comment sent while the upstream is quiet.
const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// `data: <chunk JSON>\n\n`.
pub fn data_event(chunk: &ChatChunk) -> Bytes {
    let mut out = Vec::with_capacity(256);
    write_data_event(chunk, &mut out);
    Bytes::from(out)
}

/// Appends [`data_event`]'s bytes to `out`.
fn write_data_event(chunk: &ChatChunk, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, chunk).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
}

/// `data: {"error":{...}}\n\n`.
pub(crate) fn error_event(error: &GatewayError) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_writer(&mut out, &ErrorEnvelope::from(error)).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Timing rules of one stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamTiming {
    /// Send a keep-alive comment after this long without a frame.
    pub(crate) keepalive: Duration,
    /// End the stream when the upstream sends nothing for this long.
    pub(crate) idle_timeout: Duration,
    /// End the stream at this instant (the attempt's total deadline).
    pub(crate) deadline: Instant,
    /// The attempt's timeout, for the error message.
    pub(crate) attempt_timeout_ms: u64,
}

/// How waiting for the first upstream chunk ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A first frame is queued: commit `200` and send the body.
    Ready,
    /// No chunk by the commit time: commit `200`; the body sends keep-alives meanwhile.
    StillWaiting,
}

/// The client's event stream for one upstream stream.
pub(crate) struct SseBody {
    upstream: Option<ChunkStream>,
    normalizer: ChunkNormalizer,
    provider: String,
    timing: StreamTiming,
    /// Events not yet handed to the client's connection, back to back (written as one frame).
    pending: Vec<u8>,
    timer: Pin<Box<Sleep>>,
    last_upstream: Instant,
    last_write: Instant,
    recorder: Option<(StreamRecorder, OnComplete)>,
    /// Trace spans kept open until the stream ends, told the model and usage when they come.
    spans: Vec<tracing::Span>,
    /// Whether the upstream's model is on the spans yet.
    model_traced: bool,
    /// When the first chunk was queued, and the usage the upstream reported.
    first_chunk: Option<Instant>,
    usage: Option<(u64, u64)>,
    /// Bytes of answer text relayed (tokens are estimated from it when no usage comes).
    text_bytes: u64,
    /// The request's record, once this body is the answer.
    observed: Option<Observed>,
}

/// What to do with the whole answer once a stream completed cleanly.
pub(crate) type OnComplete = Box<dyn FnOnce(ChatResponse) + Send>;

impl SseBody {
    /// A body relaying `upstream` from provider `provider`.
    pub(crate) fn new(
        upstream: ChunkStream,
        normalizer: ChunkNormalizer,
        provider: &str,
        timing: StreamTiming,
    ) -> Self {
        let now = Instant::now();
        SseBody {
            upstream: Some(upstream),
            normalizer,
            provider: provider.to_owned(),
            timing,
            pending: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(timing.deadline)),
            last_upstream: now,
            last_write: now,
            recorder: None,
            spans: Vec::new(),
            model_traced: false,
            first_chunk: None,
            usage: None,
            text_bytes: 0,
            observed: None,
        }
    }

    /// Waits for the first chunk, so that an error before it (a failed open, an error as the
    /// first event, an empty stream, an idle or late upstream) can still be retried or
    /// answered with a real status. With `commit_after`, gives up waiting after that long and
    /// lets the caller commit the response ([`Opening::StillWaiting`]); without, waits until
    /// the first chunk or an error.
    pub(crate) async fn open(
        &mut self,
        commit_after: Option<Duration>,
    ) -> Result<Opening, ProviderError> {
        let commit_at = commit_after.map(|wait| Instant::now() + wait);
        loop {
            let Some(upstream) = self.upstream.as_mut() else {
                return Ok(Opening::Ready);
            };
            let idle_at = self.last_upstream + self.timing.idle_timeout;
            let wake = idle_at
                .min(self.timing.deadline)
                .min(commit_at.unwrap_or(idle_at));
            let Ok(next) = tokio::time::timeout_at(wake, upstream.next()).await else {
                let now = Instant::now();
                if now >= self.timing.deadline {
                    return Err(ProviderError::Timeout(self.timing.attempt_timeout_ms));
                }
                if now >= idle_at {
                    return Err(self.idle_error());
                }
                return Ok(Opening::StillWaiting);
            };
            self.last_upstream = Instant::now();
            match next {
                Some(Ok(chunk)) => {
                    if self.relay(chunk)? {
                        return Ok(Opening::Ready);
                    }
                }
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ProviderError::Decode(
                        "the event stream ended before its first chunk".to_owned(),
                    ));
                }
            }
        }
    }

    /// Keeps `spans` open until the stream ends, recording the upstream's model and usage and
    /// a failure on them.
    pub(crate) fn trace(&mut self, mut spans: Vec<tracing::Span>) {
        // A disabled span records nothing: without tracing, no chunk takes the slow path
        // just to show the model on it.
        spans.retain(|span| !span.is_disabled());
        self.spans = spans;
    }

    /// Makes this body the answer of the request `observed` records: its time to first
    /// chunk, usage and end go there.
    pub(crate) fn observe(&mut self, observed: Observed) {
        let (first_chunk, usage) = (self.first_chunk, self.usage);
        observed.update(|r| {
            r.first_token = first_chunk;
            r.usage = usage;
        });
        self.observed = Some(observed);
    }

    fn note(&self, f: impl FnOnce(&mut Record)) {
        if let Some(observed) = &self.observed {
            observed.update(f);
        }
    }

    /// Hands every complete answer of this stream to `on_complete` (for the cache).
    pub(crate) fn record(&mut self, on_complete: OnComplete) {
        self.recorder = Some((StreamRecorder::default(), on_complete));
    }

    /// Normalizes an upstream chunk and queues its event; false when nothing was queued.
    fn relay(&mut self, item: StreamItem) -> Result<bool, ProviderError> {
        if self.pending.capacity() == 0 {
            self.pending.reserve(FRAME_START_BYTES);
        }
        // The fast path, unless the answer is recorded (the cache keeps parsed chunks) or
        // the upstream's model is still to be traced.
        if let StreamItem::InShape(chunk) = &item
            && self.recorder.is_none()
            && (self.model_traced || self.spans.is_empty())
            && self.normalizer.splice_into(chunk, &mut self.pending)
        {
            self.text_bytes = self.text_bytes.saturating_add(chunk.text_bytes);
            self.note_first_chunk();
            return Ok(true);
        }
        let chunk = item.into_parsed()?;
        if let Some(usage) = &chunk.usage {
            let counts = (usage.prompt_tokens, usage.completion_tokens);
            self.usage = Some(counts);
            self.note(|r| r.usage = Some(counts));
            if let Some((recorder, _)) = self.recorder.as_mut() {
                recorder.usage(usage);
            }
        }
        self.trace_chunk(&chunk);
        let Some(chunk) = self.normalizer.push(chunk)? else {
            return Ok(false);
        };
        if let Some((recorder, _)) = self.recorder.as_mut() {
            recorder.push(&chunk);
        }
        for choice in &chunk.choices {
            let text = choice.delta.content.as_ref().map_or(0, String::len);
            self.text_bytes = self.text_bytes.saturating_add(text as u64);
        }
        write_data_event(&chunk, &mut self.pending);
        self.note_first_chunk();
        Ok(true)
    }

    /// Notes when the first chunk's event was queued.
    fn note_first_chunk(&mut self) {
        if self.first_chunk.is_none() {
            let now = Instant::now();
            self.first_chunk = Some(now);
            self.note(|r| r.first_token = Some(now));
        }
    }

    /// Records the upstream's model (first chunk) and usage (when it comes) on the spans.
    fn trace_chunk(&mut self, chunk: &ChatChunk) {
        let model = !self.model_traced && !chunk.model.is_empty();
        self.model_traced |= model;
        for span in &self.spans {
            if model {
                telemetry::record_response_model(span, &chunk.model);
            }
            if let Some(usage) = &chunk.usage {
                telemetry::record_usage(span, usage);
            }
        }
    }

    fn idle_error(&self) -> ProviderError {
        ProviderError::Stream(format!(
            "no event for {} s",
            self.timing.idle_timeout.as_secs()
        ))
    }

    fn upstream_error(&self, error: ProviderError) -> GatewayError {
        GatewayError::Upstream {
            provider: self.provider.clone(),
            error,
        }
    }

    /// Ends the stream with one error event.
    fn fail(&mut self, error: ProviderError) {
        tracing::warn!(provider = %self.provider, %error, "stream ended with an error");
        for span in &self.spans {
            span.record("otel.status_code", "ERROR");
        }
        let event = error_event(&self.upstream_error(error));
        self.pending.extend_from_slice(&event);
        self.upstream = None;
        self.recorder = None;
        self.note(|r| r.stream_failed = true);
    }

    fn finish(&mut self) {
        if let Some(usage) = self.normalizer.finish() {
            write_data_event(&usage, &mut self.pending);
        }
        self.pending.extend_from_slice(DONE_EVENT);
        self.upstream = None;
        if let Some((recorder, on_complete)) = self.recorder.take()
            && let Some(response) = recorder.finish()
        {
            on_complete(response);
        }
    }

    /// Applies the deadlines at `now`; true when one of them queued something.
    fn check_deadlines(&mut self, now: Instant) -> bool {
        if now >= self.timing.deadline {
            self.fail(ProviderError::Timeout(self.timing.attempt_timeout_ms));
        } else if now >= self.last_upstream + self.timing.idle_timeout {
            self.fail(self.idle_error());
        } else if now >= self.last_write + self.timing.keepalive {
            self.pending.extend_from_slice(KEEPALIVE_COMMENT);
        } else {
            return false;
        }
        true
    }

    fn next_deadline(&self) -> Instant {
        (self.last_write + self.timing.keepalive)
            .min(self.last_upstream + self.timing.idle_timeout)
            .min(self.timing.deadline)
    }
}

impl Drop for SseBody {
    /// The stream is over (ended, failed or its client left): its text size goes to the
    /// record, for settling a stream that reported no usage.
    fn drop(&mut self) {
        let text_bytes = self.text_bytes;
        self.note(|r| r.answer_text_bytes = Some(text_bytes));
    }
}

/// Events already available together are written together, up to this many bytes.
const COALESCE_BYTES: usize = 16 * 1024;
/// The room a frame starts with once an event comes: a burst of some twenty chunks fits
/// without growing. Held only until the frame is written.
const FRAME_START_BYTES: usize = 8 * 1024;

impl SseBody {
    /// Relays whatever the upstream has ready now, without waiting.
    fn drain_ready(&mut self, cx: &mut Context<'_>) {
        // Chunks ready together arrived together: the clock is read once for them.
        if self.relay_ready(cx) {
            self.last_upstream = Instant::now();
        }
    }

    /// [`Self::drain_ready`]'s loop; whether a chunk came.
    fn relay_ready(&mut self, cx: &mut Context<'_>) -> bool {
        let mut came = false;
        while self.pending.len() < COALESCE_BYTES {
            let Some(upstream) = self.upstream.as_mut() else {
                break;
            };
            match upstream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    came = true;
                    if let Err(error) = self.relay(chunk) {
                        self.fail(error);
                    }
                }
                Poll::Ready(Some(Err(error))) => self.fail(error),
                Poll::Ready(None) => self.finish(),
                Poll::Pending => break,
            }
        }
        came
    }

    /// Everything queued, as one write. The buffer goes with it, or is dropped when nothing
    /// was queued (room reserved for an event that wrote nothing): an idle stream holds none.
    /// A frame that fills less than a quarter of its room (an event or two of a trickle) goes
    /// as a copy of its size instead, so a client that stops reading holds its last events'
    /// bytes until the write goes out, not [`FRAME_START_BYTES`].
    fn take_queued(&mut self) -> Option<Bytes> {
        let frame = std::mem::take(&mut self.pending);
        if frame.is_empty() {
            None
        } else if frame.len() < frame.capacity() / 4 {
            Some(Bytes::copy_from_slice(&frame))
        } else {
            Some(Bytes::from(frame))
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    /// Yields each event as soon as it exists; events that are ready at the same moment go
    /// out in one write (nothing ever waits for more).
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            this.drain_ready(cx);
            if let Some(frames) = this.take_queued() {
                this.last_write = Instant::now();
                return Poll::Ready(Some(Ok(frames)));
            }
            if this.upstream.is_none() {
                return Poll::Ready(None);
            }
            if this.check_deadlines(Instant::now()) {
                continue;
            }
            let next = this.next_deadline();
            if this.timer.deadline() != next {
                this.timer.as_mut().reset(next);
            }
            match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests;
