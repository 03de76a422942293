//! The exact-match response cache.
//!
//! Keyed on the canonical request minus transport-only fields (`stream`, `stream_options`,
//! retries and timeouts never enter the key), so a streamed request can be answered from a
//! non-streamed answer and the other way round: a whole answer is stored either way (a stream
//! is recorded as it passes) and replayed in the form the client asked for. What decides who
//! answers (the model name, `fallbacks`, `load_balancer`) is part of the key, and so is the
//! caller's cache scope: a gateway key with `cache = "private"` (the default) only ever sees
//! its own answers; keys with `cache = "shared"` (and callers when no keys are configured)
//! share one space. Only complete successful answers are stored. Keys are compared whole,
//! so a hash collision can never serve a wrong answer.
//!
//! The store is a `moka` cache with a TTL per entry, bounded by bytes and entries: each
//! entry weighs its size, but at least `max_bytes / max_entries`, so neither bound is passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, FunctionCall,
    FunctionCallDelta, ResponseMessage, ToolCall, ToolCallDelta, Usage,
};
use crate::stream::normalize::{MAX_CHOICES, MAX_TOOL_CALLS};

/// A stored answer and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The normalized answer.
    pub(crate) response: ChatResponse,
    /// The provider that produced it.
    pub(crate) provider: String,
    /// The upstream model that produced it.
    pub(crate) upstream_model: String,
}

/// An entry of the store: the answer, its weight and how long it lives.
#[derive(Clone)]
struct Entry {
    cached: Arc<Cached>,
    weight: u32,
    ttl: Duration,
}

/// Each entry lives for its own TTL from its insertion.
struct PerEntryTtl;

impl Expiry<Vec<u8>, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &Vec<u8>, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A bounded in-memory cache of answers.
pub(crate) struct ResponseCache {
    store: moka::sync::Cache<Vec<u8>, Entry>,
    max_bytes: usize,
    /// The least weight of an entry, so at most `max_entries` fit.
    min_weight: usize,
}

/// Whose answers a lookup may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope<'a> {
    /// The space shared by every caller that shares.
    Shared,
    /// One gateway key's own space, by key name.
    Private(&'a str),
}

/// The cache key of a request: scope, model, the policy that picks who answers, and the
/// canonical body.
pub(crate) fn key(request: &ChatRequest, scope: Scope) -> Vec<u8> {
    let mut key = Vec::with_capacity(256);
    match scope {
        Scope::Shared => key.extend_from_slice(b"shared\n"),
        Scope::Private(name) => {
            // The length first, so no name can end where another begins.
            key.extend_from_slice(format!("key:{}:", name.len()).as_bytes());
            key.extend_from_slice(name.as_bytes());
            key.push(b'\n');
        }
    }
    key.extend_from_slice(request.model.as_bytes());
    key.push(b'\n');
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_writer(&mut key, &(&request.fallbacks, &request.load_balancer))
        .unwrap_or_default();
    key.push(b'\n');
    // `Serialize` leaves out model, stream, stream_options and the routing policy.
    serde_json::to_writer(&mut key, request).unwrap_or_default();
    key
}

impl ResponseCache {
    /// A cache holding at most `max_entries` answers and `max_bytes` bytes.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        let min_weight = max_bytes
            .checked_div(max_entries)
            .unwrap_or(usize::MAX)
            .max(1);
        let store = moka::sync::Cache::builder()
            .max_capacity(if max_entries == 0 {
                0
            } else {
                max_bytes as u64
            })
            .weigher(|_, entry: &Entry| entry.weight)
            .expire_after(PerEntryTtl)
            .build();
        ResponseCache {
            store,
            max_bytes,
            min_weight,
        }
    }

    /// The answer stored under `key`, if it has not expired.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Cached>> {
        self.store.get(key).map(|entry| entry.cached)
    }

    /// Stores an answer for `ttl`; the least recently used entries make room.
    pub(crate) fn insert(&self, key: Vec<u8>, cached: Cached, ttl: Duration) {
        let size = key.len() + serde_json::to_vec(&cached.response).map_or(0, |v| v.len());
        if size > self.max_bytes || self.min_weight == usize::MAX {
            return;
        }
        let weight = u32::try_from(size.max(self.min_weight)).unwrap_or(u32::MAX);
        let entry = Entry {
            cached: Arc::new(cached),
            weight,
            ttl,
        };
        self.store.insert(key, entry);
    }
}

/// Rebuilds a whole answer from the normalized chunks of a stream.
#[derive(Debug, Default)]
pub(crate) struct StreamRecorder {
    response: ChatResponse,
    /// A chunk had an index beyond the bounds (normalized chunks never do): store nothing.
    out_of_bounds: bool,
}

impl StreamRecorder {
    /// Adds a normalized chunk.
    pub(crate) fn push(&mut self, chunk: &ChatChunk) {
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
    pub(crate) fn usage(&mut self, usage: &Usage) {
        let mut usage = usage.clone();
        crate::stream::normalize::integer_counts(&mut usage);
        self.response.usage = Some(usage);
    }

    /// The whole answer, when every choice finished.
    pub(crate) fn finish(self) -> Option<ChatResponse> {
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
pub(crate) fn replay_chunks(response: &ChatResponse) -> Vec<ChatChunk> {
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

    impl ResponseCache {
        /// How many answers are stored, once pending evictions have run.
        fn len(&self) -> usize {
            self.store.run_pending_tasks();
            usize::try_from(self.store.entry_count()).unwrap_or(usize::MAX)
        }

        /// The bytes the stored answers weigh, once pending evictions have run.
        fn weight(&self) -> u64 {
            self.store.run_pending_tasks();
            self.store.weighted_size()
        }
    }

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

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let cache = ResponseCache::new(10, 1 << 20);
        cache.insert(b"short".to_vec(), answer("A"), Duration::from_millis(50));
        cache.insert(b"long".to_vec(), answer("B"), Duration::from_secs(100));
        assert!(cache.get(b"short").is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(cache.get(b"short").is_none(), "expired");
        assert!(cache.get(b"long").is_some());
    }

    #[test]
    fn the_entry_bound_holds() {
        let cache = ResponseCache::new(2, 1 << 20);
        for i in 0..50u8 {
            cache.insert(vec![i], answer("x"), Duration::from_secs(100));
        }
        assert!(cache.len() <= 2, "{}", cache.len());
    }

    #[test]
    fn the_byte_bound_holds_and_replacing_a_key_does_not_grow_the_store() {
        let cache = ResponseCache::new(1000, 2000);
        for i in 0..50u8 {
            cache.insert(vec![i], answer("x"), Duration::from_secs(100));
        }
        assert!(cache.weight() <= 2000, "{}", cache.weight());
        let cache = ResponseCache::new(1000, 1 << 20);
        for _ in 0..1000 {
            cache.insert(b"same".to_vec(), answer("x"), Duration::from_secs(100));
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.weight() < 2000, "{}", cache.weight());
    }

    #[test]
    fn the_key_ignores_transport_fields_but_not_who_answers_or_whose_it_is() {
        let parse =
            |v: serde_json::Value| crate::schema::parse_request(v.to_string().as_bytes()).unwrap();
        let plain = parse(json!({"model": "a", "messages": [{"role": "user", "content": "x"}]}));
        let streamed = parse(
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}],
            "stream": true, "stream_options": {"include_usage": true}, "cache": {"type": "exact_match"},
            "retry": {"count": 2}, "timeout": {"call_timeout": 5000}}),
        );
        let other = parse(json!({"model": "b", "messages": [{"role": "user", "content": "x"}]}));
        let balanced = parse(
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}],
            "load_balancer": {"type": "weight_based", "models": [{"model": "echo/x"}]}}),
        );
        let fallback = parse(
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}],
            "fallbacks": [{"model": "echo/x"}]}),
        );
        let shared = |r: &ChatRequest| key(r, Scope::Shared);
        assert_eq!(shared(&plain), shared(&streamed));
        assert_ne!(shared(&plain), shared(&other));
        assert_ne!(shared(&plain), shared(&balanced));
        assert_ne!(shared(&plain), shared(&fallback));
        assert_ne!(shared(&plain), key(&plain, Scope::Private("team-a")));
        assert_ne!(
            key(&plain, Scope::Private("team-a")),
            key(&plain, Scope::Private("team-b"))
        );
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
