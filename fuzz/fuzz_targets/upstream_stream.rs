//! An upstream event stream, cut into reads where the input says: decoded, read as OpenAI
//! events (one scanner for the stream, as the gateway reads them), normalized for a client
//! that asked for two choices, and re-encoded. Every chunk the fast path takes is also sent
//! down the slow path, and both must write the same JSON.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use llmgate::providers::http::{EventOutcome, openai_event};
use llmgate::stream::data_event;
use llmgate::stream::decode::SseDecoder;
use llmgate::stream::normalize::ChunkNormalizer;
use llmgate::stream::splice::ChunkScanner;
use serde_json::Value;
use serde_json::value::RawValue;

/// A small cap, so the fuzzer reaches it.
const MAX_EVENT_BYTES: usize = 4096;

fuzz_target!(|input: &[u8]| {
    // The first byte sets the read size, so line ends fall across reads.
    let Some((&cut, body)) = input.split_first() else {
        return;
    };
    let read = usize::from(cut).max(1);
    let mut decoder = SseDecoder::with_limit(MAX_EVENT_BYTES);
    let mut normalizer = ChunkNormalizer::new("client/model", true, 2);
    let mut events = VecDeque::new();
    let mut scanner = ChunkScanner::default();
    for piece in body.chunks(read) {
        if decoder.push(piece, &mut events).is_err() {
            return;
        }
        assert!(decoder.buffered() <= MAX_EVENT_BYTES + read);
        for event in events.drain(..) {
            let upstream: Value = serde_json::from_slice(&event.data).unwrap_or_default();
            let outcome = match scanner.scan(event) {
                Ok(chunk) => {
                    let mut before = normalizer.clone();
                    if let Some(spliced) = normalizer.splice(&chunk) {
                        let parsed = chunk.parse().expect("a chunk in shape parses");
                        // A stream's first chunk without an id or a `created` gets new ones,
                        // on either path.
                        let new_id = !upstream["id"].as_str().is_some_and(|id| !id.is_empty());
                        let new_created = !upstream["created"].as_f64().is_some_and(|c| c >= 1.0);
                        let slow = before.push(parsed);
                        let slow = slow.expect("and normalizes").expect("to an event");
                        let mut fast = json_of(&spliced);
                        let mut slow = json_of(&data_event(&slow));
                        for json in [&mut fast, &mut slow].into_iter().flatten() {
                            if new_id {
                                json["id"] = Value::Null;
                            }
                            if new_created {
                                json["created"] = Value::Null;
                            }
                        }
                        assert_eq!(fast, slow);
                        continue;
                    }
                    match chunk.parse() {
                        Ok(chunk) => EventOutcome::Chunk(chunk),
                        Err(_) => return,
                    }
                }
                Err(event) => openai_event(&event),
            };
            match outcome {
                EventOutcome::Chunk(chunk) => match normalizer.push(chunk) {
                    Ok(Some(chunk)) => drop(data_event(&chunk)),
                    Ok(None) => {}
                    Err(_) => return,
                },
                EventOutcome::Skip => {}
                EventOutcome::Done | EventOutcome::Fail(_) => return,
            }
        }
    }
    if decoder.finish(&mut events).is_ok()
        && let Some(chunk) = normalizer.finish()
    {
        drop(data_event(&chunk));
    }
});

/// The JSON of one `data: ...\n\n` event, or `None` when serde_json cannot hold it as a
/// `Value`: valid JSON with a number beyond `f64`, passed on as written by both paths.
fn json_of(event: &[u8]) -> Option<Value> {
    let json = event
        .strip_prefix(b"data: ")
        .and_then(|e| e.strip_suffix(b"\n\n"));
    let json = json.expect("an event");
    serde_json::from_slice::<&RawValue>(json).expect("JSON");
    serde_json::from_slice(json).ok()
}
