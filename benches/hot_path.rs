//! Criterion benchmarks of the gateway's per-request CPU work:
//! - `request/parse_validate_serialize`: a typical request body from bytes to the validated
//!   canonical request and back to a body written from the typed request;
//!   `request/parse_validate_forward`: the same to the OpenAI upstream body the gateway sends,
//!   the client's text with the per-call members (`request/upstream_body` alone, and
//!   `request/upstream_body_typed` as it was written before, from the typed request; and
//!   both for the load harness's 210-byte body, `..._short`, and a 24 KB conversation,
//!   `..._long`);
//! - `stream/normalize_20_chunks`: a 20-chunk upstream event stream decoded, parsed,
//!   normalized and re-encoded as the client's events (the slow path of every chunk);
//! - `stream/relay_20_chunks`: the same stream the way the gateway relays it: chunks already
//!   in shape take the fast path (`stream::splice`), the others the slow one; and
//!   `..._without_logprobs`, chunks the fast path completes first (as some servers send them);
//! - `observe/record_request`: one finished chat request's record turned into its metrics
//!   (requests, duration, overhead, tokens, active gauges) in the Prometheus recorder. No
//!   log subscriber is installed, so the access line itself is not formatted here.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use llmgate::providers::CallCx;
use llmgate::providers::http::Dialect;
use llmgate::providers::http::{EventOutcome, openai_event};
use llmgate::providers::openai::OpenAi;
use llmgate::schema::{parse_and_validate, parse_client_body, parse_request, validate};
use llmgate::stream::data_event;
use llmgate::stream::decode::{SseDecoder, SseEvent};
use llmgate::stream::normalize::ChunkNormalizer;
use llmgate::stream::splice::ChunkScanner;
use serde_json::json;

/// The body the load harness sends (`benches/load/`).
const HARNESS_REQUEST: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0.7}"#;

/// A conversation of 16 turns of about 1.5 KB each (24 KB), as a chat product sends.
fn long_conversation() -> Vec<u8> {
    let turn = "The quick brown fox jumps over the lazy dog, then explains why. ".repeat(24);
    let messages: Vec<_> = (0..16)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": turn})
        })
        .collect();
    json!({"model": "openai/gpt-4o-mini", "messages": messages, "stream": true})
        .to_string()
        .into_bytes()
}

fn typical_request() -> Vec<u8> {
    json!({
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and cite sources when you can."},
            {"role": "user", "content": "What is the capital of France, and what is it famous for?"},
            {"role": "assistant", "content": "Paris. It is famous for the Eiffel Tower, the Louvre and its cafes."},
            {"role": "user", "content": "And what is the weather there today?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto",
        "temperature": 0.7,
        "max_tokens": 256,
        "user": "user-1234"
    })
    .to_string()
    .into_bytes()
}

/// Twenty OpenAI chunks; without `logprobs` like some other servers when `logprobs` is false.
fn twenty_chunk_stream(logprobs: bool) -> Vec<u8> {
    let mut out = String::new();
    let words = ["The", " capital", " of", " France", " is", " Paris", "."];
    for i in 0..20 {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": ""})
        } else {
            json!({"content": words[i % words.len()]})
        };
        let finish = if i == 19 { json!("stop") } else { json!(null) };
        let mut chunk = json!({"id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk",
            "created": 1741570283, "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if !logprobs && let Some(choice) = chunk["choices"][0].as_object_mut() {
            choice.remove("logprobs");
        }
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn request(c: &mut Criterion) {
    let body = typical_request();
    c.bench_function("request/parse_validate_serialize", |b| {
        b.iter(|| {
            let request = parse_and_validate(black_box(&body)).expect("valid");
            black_box(serde_json::to_vec(&request).expect("serializable"))
        })
    });
    let cx = CallCx {
        upstream_model: "gpt-4o-mini".to_owned(),
        ..CallCx::default()
    };
    let shared = bytes::Bytes::from(body.clone());
    c.bench_function("request/parse_validate_forward", |b| {
        b.iter(|| {
            let request = parse_client_body(black_box(shared.clone())).expect("valid");
            black_box(OpenAi.prepare("openai", &request, &cx).expect("sendable"))
        })
    });
    upstream_body(c, "request/upstream_body", &body, &cx);
    upstream_body(c, "request/upstream_body_short", HARNESS_REQUEST, &cx);
    upstream_body(c, "request/upstream_body_long", &long_conversation(), &cx);
    let request = parse_request(&body).expect("valid");
    c.bench_function("request/parse", |b| {
        b.iter(|| parse_request(black_box(&body)))
    });
    c.bench_function("request/validate", |b| {
        b.iter(|| validate(black_box(&request)))
    });
    c.bench_function("request/serialize", |b| {
        b.iter(|| serde_json::to_vec(black_box(&request)))
    });
    c.bench_function("request/json_value_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)))
    });
}

/// The OpenAI upstream body for `body`, as written (`name`) and from the typed request
/// (`name` + `_typed`).
fn upstream_body(c: &mut Criterion, name: &str, body: &[u8], cx: &CallCx) {
    let client_request = parse_client_body(body.to_vec().into()).expect("valid");
    c.bench_function(name, |b| {
        b.iter(|| OpenAi.prepare("openai", black_box(&client_request), cx))
    });
    let without_body = parse_and_validate(body).expect("valid");
    c.bench_function(&format!("{name}_typed"), |b| {
        b.iter(|| OpenAi.prepare("openai", black_box(&without_body), cx))
    });
}

/// `input` cut the way upstreams deliver it: in network-sized pieces (512 bytes splits
/// events mid-line), or `per_event`, one event per read (as a model's tokens trickle in).
fn reads(input: &[u8], per_event: bool) -> Vec<&[u8]> {
    if !per_event {
        return input.chunks(512).collect();
    }
    let mut pieces = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(2).position(|w| w == b"\n\n") {
        let (event, after) = rest.split_at(at + 2);
        pieces.push(event);
        rest = after;
    }
    pieces.push(rest);
    pieces
}

/// The events of the upstream's `reads`.
fn decode(reads: &[&[u8]]) -> VecDeque<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = VecDeque::new();
    for piece in reads {
        decoder.push(piece, &mut events).expect("utf-8");
    }
    decoder.finish(&mut events).expect("utf-8");
    events
}

/// The client's bytes for the upstream's `reads`, relayed the way the gateway does: chunks
/// in shape take the fast path (`stream::splice`), the others the slow one.
fn relay(reads: &[&[u8]]) -> usize {
    let mut normalizer = ChunkNormalizer::new("fast", true, 1);
    let mut scanner = ChunkScanner::default();
    let mut bytes = 0;
    for event in decode(reads) {
        let chunk = match scanner.scan(event) {
            Ok(chunk) => match normalizer.splice(&chunk) {
                Some(spliced) => {
                    bytes += spliced.len();
                    continue;
                }
                None => chunk.parse().expect("a chunk"),
            },
            Err(event) => match openai_event(&event) {
                EventOutcome::Chunk(chunk) => chunk,
                _ => continue,
            },
        };
        if let Ok(Some(chunk)) = normalizer.push(chunk) {
            bytes += data_event(&chunk).len();
        }
    }
    bytes
}

fn stream(c: &mut Criterion) {
    let stream = twenty_chunk_stream(true);
    let without_logprobs = twenty_chunk_stream(false);
    let input = reads(&stream, false);
    let per_event = reads(&stream, true);
    let without_logprobs = reads(&without_logprobs, false);
    c.bench_function("stream/relay_20_chunks", |b| {
        b.iter(|| relay(black_box(&input)))
    });
    c.bench_function("stream/relay_20_chunks_one_event_per_read", |b| {
        b.iter(|| relay(black_box(&per_event)))
    });
    c.bench_function("stream/relay_20_chunks_without_logprobs", |b| {
        b.iter(|| relay(black_box(&without_logprobs)))
    });
    c.bench_function("stream/normalize_20_chunks", |b| {
        b.iter(|| {
            let events = decode(black_box(&input));
            let mut normalizer = ChunkNormalizer::new("fast", true, 1);
            let mut bytes = 0;
            for event in &events {
                if let EventOutcome::Chunk(chunk) = openai_event(event)
                    && let Ok(Some(chunk)) = normalizer.push(chunk)
                {
                    bytes += data_event(&chunk).len();
                }
            }
            black_box(bytes)
        })
    });
}

fn observe(c: &mut Criterion) {
    llmgate::observe::install();
    c.bench_function("observe/record_request", |b| {
        b.iter(llmgate::observe::bench_record_request)
    });
}

fn limits(c: &mut Criterion) {
    c.bench_function("limits/memory_admit_settle", |b| {
        b.iter(llmgate::bench_memory_admission)
    });
}

criterion_group!(benches, request, stream, observe, limits);
criterion_main!(benches);
