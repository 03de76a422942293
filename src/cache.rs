//! The exact-match response cache.
//!
//! Keyed on the canonical request minus transport-only fields (`stream`, `stream_options`
//! and the routing policy never enter the key), so a streamed request can be answered from a
//! non-streamed answer and the other way round: a whole answer is stored either way (a stream
//! is recorded as it passes) and replayed in the form the client asked for. Bounded by entries
//! and bytes (oldest first out), with a TTL per entry. Only complete successful answers are
//! stored. Keys are compared whole, so a hash collision can never serve a wrong answer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, FunctionCall,
    FunctionCallDelta, ResponseMessage, ToolCall, ToolCallDelta, Usage,
};
use crate::stream::normalize::{MAX_CHOICES, MAX_TOOL_CALLS};

/// A stored answer and where it came from.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The normalized answer.
    pub response: ChatResponse,
    /// The provider that produced it.
    pub provider: String,
    /// The upstream model that produced it.
    pub upstream_model: String,
}

struct Entry {
    cached: Arc<Cached>,
    expires: Instant,
    size: usize,
    generation: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Vec<u8>, Entry>,
    /// Insertion order, for eviction; stale generations are skipped.
    order: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
    generation: u64,
}

/// A bounded in-memory cache of answers.
pub struct ResponseCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// The cache key of a request: its model and canonical body.
pub fn key(request: &ChatRequest) -> Vec<u8> {
    let mut key = request.model.as_bytes().to_vec();
    key.push(b'\n');
    // `Serialize` leaves out stream, stream_options and the routing policy already.
    serde_json::to_writer(&mut key, request).unwrap_or_default();
    key
}

impl ResponseCache {
    /// A cache holding at most `max_entries` answers and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ResponseCache {
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer stored under `key`, if it has not expired.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Cached>> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        if entry.expires > Instant::now() {
            return Some(entry.cached.clone());
        }
        if let Some(entry) = inner.entries.remove(key) {
            inner.bytes -= entry.size;
        }
        None
    }

    /// Stores an answer for `ttl`, evicting the oldest entries beyond the bounds.
    pub fn insert(&self, key: Vec<u8>, cached: Cached, ttl: Duration) {
        let size = key.len() + serde_json::to_vec(&cached.response).map_or(0, |v| v.len());
        if size > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let entry = Entry {
            cached: Arc::new(cached),
            expires: Instant::now() + ttl,
            size,
            generation,
        };
        if let Some(old) = inner.entries.insert(key.clone(), entry) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        inner.order.push_back((key, generation));
        while inner.entries.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some((oldest, generation)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .entries
                .get(&oldest)
                .is_some_and(|e| e.generation == generation)
                && let Some(entry) = inner.entries.remove(&oldest)
            {
                inner.bytes -= entry.size;
            }
        }
    }

    /// How many answers are stored.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rebuilds a whole answer from the normalized chunks of a stream.
#[derive(Debug, Default)]
pub struct StreamRecorder {
    response: ChatResponse,
    /// A chunk had an index beyond the bounds (normalized chunks never do): store nothing.
    out_of_bounds: bool,
}

impl StreamRecorder {
    /// Adds a normalized chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        let response = &mut self.response;
        if response.id.is_empty() {
            response.id.clone_from(&chunk.id);
            response.created = chunk.created;
            response.model.clone_from(&chunk.model);
            response.object = "chat.completion".to_owned();
            response.extra.clone_from(&chunk.extra);
        }
        if let Some(usage) = &chunk.usage {
            response.usage = Some(usage.clone());
        }
        if !indexes_in_bounds(chunk) {
            self.out_of_bounds = true;
            return;
        }
        for choice in &chunk.choices {
            let index = choice.index as usize;
            while response.choices.len() <= index {
                let position = response.choices.len() as u32;
                response.choices.push(Choice {
                    index: position,
                    message: ResponseMessage {
                        role: "assistant".to_owned(),
                        ..ResponseMessage::default()
                    },
                    ..Choice::default()
                });
            }
            append_delta(&mut response.choices[index], choice);
        }
    }

    /// Keeps the upstream's usage (the normalizer withholds it from chunks).
    pub fn usage(&mut self, usage: &Usage) {
        let mut usage = usage.clone();
        crate::stream::normalize::integer_counts(&mut usage);
        self.response.usage = Some(usage);
    }

    /// The whole answer, when every choice finished.
    pub fn finish(self) -> Option<ChatResponse> {
        let complete = !self.out_of_bounds
            && !self.response.choices.is_empty()
            && self
                .response
                .choices
                .iter()
                .all(|c| c.finish_reason.is_some());
        complete.then_some(self.response)
    }
}

/// Whether every choice and tool-call index of `chunk` is small enough to allocate for.
fn indexes_in_bounds(chunk: &ChatChunk) -> bool {
    chunk.choices.iter().all(|choice| {
        let mut calls = choice.delta.tool_calls.iter().flatten();
        choice.index < MAX_CHOICES && calls.all(|c| c.index.unwrap_or(0) < MAX_TOOL_CALLS)
    })
}

fn append_delta(choice: &mut Choice, chunk: &ChunkChoice) {
    let message = &mut choice.message;
    if let Some(text) = &chunk.delta.content {
        message
            .content
            .get_or_insert_with(String::new)
            .push_str(text);
    }
    if let Some(text) = &chunk.delta.refusal {
        message
            .refusal
            .get_or_insert_with(String::new)
            .push_str(text);
    }
    for call in chunk.delta.tool_calls.iter().flatten() {
        let calls = message.tool_calls.get_or_insert_with(Vec::new);
        let index = call.index.unwrap_or(0) as usize;
        while calls.len() <= index {
            calls.push(ToolCall {
                kind: "function".to_owned(),
                ..ToolCall::default()
            });
        }
        let target = &mut calls[index];
        if let Some(id) = &call.id {
            target.id.clone_from(id);
        }
        if let Some(function) = &call.function {
            if let Some(name) = &function.name {
                target.function.name.push_str(name);
            }
            if let Some(arguments) = &function.arguments {
                target.function.arguments.push_str(arguments);
            }
        }
    }
    if chunk.finish_reason.is_some() {
        choice.finish_reason.clone_from(&chunk.finish_reason);
    }
}

/// A whole answer as the chunks of a stream: per choice one delta with everything, one with
/// the finish reason, then the usage chunk (the normalizer keeps it only when asked).
pub fn replay_chunks(response: &ChatResponse) -> Vec<ChatChunk> {
    let chunk = |choices: Vec<ChunkChoice>| ChatChunk {
        id: response.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: response.created,
        model: response.model.clone(),
        choices,
        ..ChatChunk::default()
    };
    let mut chunks = Vec::new();
    for choice in &response.choices {
        let message = &choice.message;
        let tool_calls = message.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, call)| ToolCallDelta {
                    index: Some(i as u32),
                    id: Some(call.id.clone()),
                    kind: Some("function".to_owned()),
                    function: Some(function_delta(&call.function)),
                    ..ToolCallDelta::default()
                })
                .collect()
        });
        let delta = Delta {
            role: Some("assistant".to_owned()),
            content: message.content.clone(),
            refusal: message.refusal.clone(),
            tool_calls,
            ..Delta::default()
        };
        chunks.push(chunk(vec![ChunkChoice {
            index: choice.index,
            delta,
            ..ChunkChoice::default()
        }]));
        chunks.push(chunk(vec![ChunkChoice {
            index: choice.index,
            finish_reason: choice.finish_reason.clone(),
            ..ChunkChoice::default()
        }]));
    }
    if let Some(usage) = &response.usage {
        let mut last = chunk(Vec::new());
        last.usage = Some(usage.clone());
        chunks.push(last);
    }
    chunks
}

fn function_delta(call: &FunctionCall) -> FunctionCallDelta {
    FunctionCallDelta {
        name: Some(call.name.clone()),
        arguments: Some(call.arguments.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(text: &str) -> Cached {
        let response: ChatResponse = serde_json::from_value(json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
        .unwrap();
        Cached {
            response,
            provider: "p".into(),
            upstream_model: "m".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_the_oldest_go_first() {
        let cache = ResponseCache::new(2, 1 << 20);
        cache.insert(b"a".to_vec(), answer("A"), Duration::from_secs(10));
        cache.insert(b"b".to_vec(), answer("B"), Duration::from_secs(100));
        assert!(cache.get(b"a").is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.get(b"a").is_none(), "expired");
        cache.insert(b"c".to_vec(), answer("C"), Duration::from_secs(100));
        cache.insert(b"d".to_vec(), answer("D"), Duration::from_secs(100));
        assert!(cache.get(b"b").is_none(), "evicted by the entry bound");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_byte_bound_holds() {
        let cache = ResponseCache::new(100, 600);
        for i in 0..10 {
            cache.insert(vec![i], answer("x"), Duration::from_secs(100));
        }
        let inner = cache.lock();
        assert!(
            inner.bytes <= 600 && !inner.entries.is_empty(),
            "{}",
            inner.bytes
        );
    }

    #[test]
    fn the_key_ignores_transport_and_policy_fields() {
        let parse =
            |v: serde_json::Value| crate::schema::parse_request(v.to_string().as_bytes()).unwrap();
        let plain = parse(json!({"model": "a", "messages": [{"role": "user", "content": "x"}]}));
        let streamed = parse(
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}],
            "stream": true, "stream_options": {"include_usage": true}, "cache": {"type": "exact_match"},
            "retry": {"count": 2}}),
        );
        let other = parse(json!({"model": "b", "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(key(&plain), key(&streamed));
        assert_ne!(key(&plain), key(&other));
    }

    #[test]
    fn a_chunk_with_an_index_out_of_bounds_is_not_recorded() {
        let mut recorder = StreamRecorder::default();
        let chunk: ChatChunk = serde_json::from_value(json!({"choices": [
            {"index": 4294967295u64, "delta": {"content": "x"}, "finish_reason": "stop"}]}))
        .unwrap();
        recorder.push(&chunk);
        assert!(recorder.response.choices.is_empty());
        assert!(recorder.finish().is_none());
    }

    #[test]
    fn a_recorded_stream_replays_to_the_same_answer() {
        let original = answer("hello world").response;
        let mut recorder = StreamRecorder::default();
        for chunk in replay_chunks(&original) {
            recorder.push(&chunk);
        }
        let rebuilt = recorder.finish().unwrap();
        assert_eq!(
            serde_json::to_value(&rebuilt).unwrap(),
            serde_json::to_value(&original).unwrap()
        );
    }
}
