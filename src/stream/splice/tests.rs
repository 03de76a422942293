use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::stream::data_event;
use crate::stream::normalize::ChunkNormalizer;

/// A chunk the way OpenAI (and the bench's mock) streams it.
const TYPICAL: &str = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06","choices":[{"index":0,"delta":{"content":" mock"},"logprobs":null,"finish_reason":null}]}"#;

/// A normalizer for `n` choices that has seen a first chunk giving every choice its role, so
/// only the chunk itself decides between the paths.
fn primed(n: u32) -> ChunkNormalizer {
    let mut normalizer = ChunkNormalizer::new("client/model", false, n);
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "delta": {"content": ""}, "finish_reason": null}))
        .collect();
    let first = json!({"id": "first-id", "created": 7, "choices": choices});
    normalizer
        .push(serde_json::from_value(first).unwrap())
        .unwrap();
    normalizer
}

fn scan(text: &str) -> Option<InShape> {
    InShape::scan(SseEvent {
        event: None,
        data: Bytes::copy_from_slice(text.as_bytes()),
    })
    .ok()
}

/// The JSON of an event (`data: ...\n\n`).
fn event_json(event: &[u8]) -> Value {
    let text = std::str::from_utf8(event).unwrap();
    let json = text.strip_prefix("data: ").unwrap().strip_suffix("\n\n");
    serde_json::from_str(json.unwrap()).unwrap()
}

/// What the slow path makes of `text`: the event's JSON, or `None` when it sends nothing or
/// refuses the chunk.
fn slow(normalizer: &ChunkNormalizer, text: &str) -> Option<Value> {
    let chunk: ChatChunk = serde_json::from_str(text).ok()?;
    let out = normalizer.clone().push(chunk).ok()??;
    Some(event_json(&data_event(&out)))
}

/// The fast path's event for `text`, if it takes it.
fn fast(normalizer: &ChunkNormalizer, text: &str) -> Option<Value> {
    let chunk = scan(text)?;
    Some(event_json(&normalizer.clone().splice(&chunk)?))
}

#[test]
fn a_typical_chunk_is_spliced_with_the_streams_members() {
    let normalizer = primed(1);
    let out = fast(&normalizer, TYPICAL).expect("the typical chunk takes the fast path");
    assert_eq!(out["id"], "first-id");
    assert_eq!(out["created"], 7);
    assert_eq!(out["model"], "client/model");
    assert_eq!(out["object"], "chat.completion.chunk");
    assert_eq!(out["system_fingerprint"], "fp_06");
    assert_eq!(out["choices"][0]["delta"]["content"], " mock");
    assert_eq!(Some(out), slow(&normalizer, TYPICAL));
    let chunk = scan(TYPICAL).unwrap();
    assert_eq!((chunk.text_bytes, chunk.finished), (5, false));
}

#[test]
fn text_bytes_are_unescaped_and_a_finish_is_seen() {
    let text = r#"{"choices":[{"index":0,"delta":{"content":"a\"\u00e9"},"logprobs":null,"finish_reason":"stop"}]}"#;
    let chunk = scan(text).unwrap();
    assert_eq!((chunk.text_bytes, chunk.finished), (4, true));
    assert_eq!(fast(&primed(1), text), slow(&primed(1), text));
}

#[test]
fn a_choice_without_its_role_takes_the_slow_path() {
    let mut fresh = ChunkNormalizer::new("m", false, 2);
    let chunk = scan(TYPICAL).unwrap();
    assert!(fresh.splice(&chunk).is_none(), "no role yet");
    let mut one_role = ChunkNormalizer::new("m", false, 2);
    one_role
        .push(serde_json::from_str(TYPICAL).unwrap())
        .unwrap();
    assert!(one_role.splice(&chunk).is_some());
    let second = TYPICAL.replace(r#""index":0"#, r#""index":1"#);
    assert!(one_role.splice(&scan(&second).unwrap()).is_none());
    let beyond_n = TYPICAL.replace(r#""index":0"#, r#""index":2"#);
    assert!(one_role.splice(&scan(&beyond_n).unwrap()).is_none());
}

#[test]
fn chunks_the_slow_path_would_change_are_not_in_shape() {
    let cases = [
        // Usage is held back for the final chunk; an error ends the stream.
        r#"{"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":1}}"#,
        r#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        // Tool calls get indexes and types; `null` members are dropped; missing ones added.
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[]},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"function_call":{"name":"f"}},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"role":null},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"logprobs":null,"finish_reason":null}]}"#,
        // Numbers written as floats become integers.
        r#"{"choices":[{"index":0.0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        // A member named twice; an escaped name; no choices.
        r#"{"id":"a","id":"b","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"x":1,"x":2,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"\u0078":1,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[]}"#,
        r#"{"id":"a"}"#,
        // Wrong types are the slow path's to report.
        r#"{"model":7,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"created":"now","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":{"index":0}}"#,
        r#"[DONE]"#,
        r#"{"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]} x"#,
    ];
    for text in cases {
        assert!(scan(text).is_none(), "{text}");
    }
    let named = SseEvent {
        event: Some("error".to_owned()),
        data: TYPICAL.into(),
    };
    assert!(InShape::scan(named).is_err());
}

#[test]
fn a_missing_finish_reason_or_logprobs_is_added_as_null() {
    let normalizer = primed(2);
    for text in [
        r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}, {"index":1,"delta":{},"logprobs":{"content":[]}}]}"#,
        r#"{"choices" : [ {"index":0,"delta":{},"logprobs":null,"x":1 } ] , "z": 2}"#,
    ] {
        let out = fast(&normalizer, text).unwrap_or_else(|| panic!("fast path for {text}"));
        assert_eq!(Some(out.clone()), slow(&normalizer, text), "{text}");
        for choice in out["choices"].as_array().unwrap() {
            assert!(choice.get("finish_reason").is_some() && choice.get("logprobs").is_some());
        }
    }
    let chunk =
        scan(r#"{"choices":[{"index":0,"delta":{"content":"ab"},"finish_reason":"stop"}]}"#);
    let chunk = chunk.unwrap();
    assert_eq!((chunk.text_bytes, chunk.finished), (2, true));
}

#[test]
fn a_null_content_or_refusal_is_left_out() {
    let normalizer = primed(1);
    for delta in [
        r#"{"content":null}"#,
        r#"{"refusal":null,"content":"a"}"#,
        r#"{"role":"assistant","content":"","refusal":null}"#,
        r#"{"role":"assistant" , "content" : null , "refusal":"no"}"#,
        r#"{"content":null,"refusal":null}"#,
        r#"{ "content" : null , "x":1, "refusal":null }"#,
        r#"{"content":null,"refusal":null,"x":1}"#,
        r#"{"x":1,"content":null,"refusal":null}"#,
        r#"{"x":1,"content":null,"y":[2],"refusal":null,"z":{}}"#,
    ] {
        let text = format!(
            r#"{{"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]}}"#
        );
        let out = fast(&normalizer, &text).unwrap_or_else(|| panic!("fast path for {text}"));
        assert_eq!(Some(out.clone()), slow(&normalizer, &text), "{text}");
        let delta = &out["choices"][0]["delta"];
        assert!(
            !delta["content"].is_null() || delta.get("content").is_none(),
            "{text}"
        );
        assert!(delta.get("refusal").is_none_or(|r| !r.is_null()), "{text}");
    }
    // A delta that leaves members out has a bound on its members; one that does not, none.
    let many: String = (0..MAX_DELTA_MEMBERS)
        .map(|i| format!(r#""x{i}":{i},"#))
        .collect();
    let delta = |last: &str| {
        format!(
            r#"{{"choices":[{{"index":0,"delta":{{{many}{last}}},"logprobs":null,"finish_reason":null}}]}}"#
        )
    };
    assert!(scan(&delta(r#""content":null"#)).is_none());
    assert!(fast(&normalizer, &delta(r#""content":"a""#)).is_some());
    // A `null` role is the slow path's (the normalizer may have to give one).
    let role =
        r#"{"choices":[{"index":0,"delta":{"role":null},"logprobs":null,"finish_reason":null}]}"#;
    assert!(scan(role).is_none());
}

/// OpenAI's first chunk of a stream.
const FIRST: &str = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#;

#[test]
fn a_first_chunk_with_the_assistant_role_opens_the_stream() {
    let fresh = ChunkNormalizer::new("client/model", false, 1);
    let out = fast(&fresh, FIRST).expect("the first chunk takes the fast path");
    assert_eq!(Some(out.clone()), slow(&fresh, FIRST));
    assert_eq!(out["id"], "chatcmpl-B9");
    assert_eq!(out["created"], 1741570283);
    assert_eq!(
        out["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    // The chunks after it carry the stream's id and created, on either path.
    let mut normalizer = fresh.clone();
    normalizer.splice(&scan(FIRST).unwrap()).unwrap();
    let later = TYPICAL
        .replace("chatcmpl-B9", "other")
        .replace("1741570283", "9");
    let spliced = event_json(&normalizer.splice(&scan(&later).unwrap()).unwrap());
    let parsed = normalizer
        .push(serde_json::from_str(&later).unwrap())
        .unwrap();
    let parsed = event_json(&data_event(&parsed.unwrap()));
    for out in [spliced, parsed] {
        assert_eq!(
            (&out["id"], &out["created"]),
            (&json!("chatcmpl-B9"), &json!(1741570283))
        );
    }
    // An escaped id is unescaped; a missing one and a missing `created` are made anew.
    let escaped = FIRST.replace("chatcmpl-B9", r#"chat\u0063mpl-\"B9\""#);
    assert_eq!(fast(&fresh, &escaped).unwrap()["id"], r#"chatcmpl-"B9""#);
    let bare = FIRST
        .replace(r#""id":"chatcmpl-B9","#, "")
        .replace(r#""created":1741570283,"#, r#""created":null,"#);
    let out = fast(&fresh, &bare).unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(out["created"].as_i64().unwrap() > 1741570283);
    // Another role, or none, is given by the slow path.
    for other in [
        FIRST.replace(r#""role":"assistant","#, r#""role":"user","#),
        FIRST.replace(r#""role":"assistant","#, ""),
    ] {
        assert!(fast(&fresh, &other).is_none(), "{other}");
        assert!(scan(&other).is_some(), "{other}");
    }
}

#[test]
fn a_number_beyond_f64_passes_as_written_on_both_paths() {
    // Valid JSON that serde_json cannot hold as a `Value`: both paths keep it raw.
    let text = TYPICAL.replace(r#""service_tier":"default""#, r#""service_tier":1e999"#);
    let normalizer = primed(1);
    let spliced = normalizer.clone().splice(&scan(&text).unwrap()).unwrap();
    let slow = normalizer
        .clone()
        .push(serde_json::from_str(&text).unwrap());
    let slow = data_event(&slow.unwrap().unwrap());
    for event in [&spliced, &slow] {
        assert!(
            std::str::from_utf8(event)
                .unwrap()
                .contains(r#""service_tier":1e999"#)
        );
    }
}

#[test]
fn more_choices_than_n_can_ask_for_take_the_slow_path() {
    let choices = |count: usize| {
        let choice = r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":null}"#;
        format!(r#"{{"choices":[{}]}}"#, vec![choice; count].join(","))
    };
    assert!(scan(&choices(MAX_CHOICES as usize)).is_some());
    assert!(scan(&choices(MAX_CHOICES as usize + 1)).is_none());
}

#[test]
fn more_members_than_the_cap_take_the_slow_path() {
    let members: String = (0..MAX_MEMBERS)
        .map(|i| format!(r#""x{i}":{i},"#))
        .collect();
    let text = format!(
        r#"{{{members}"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":null}}]}}"#
    );
    assert!(scan(&text).is_none());
    let fewer = text.replacen(r#""x0":0,"#, "", 1);
    assert!(scan(&fewer).is_some());
}

/// A JSON value of the kinds chunks hold, for members whose shape is free.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z\"\\\\é ]{0,6}".prop_map(Value::from),
        Just(json!({"a": [1, 2.5, null], "b": {"c": "d"}})),
    ]
}

/// A member that is mostly present and holds one of `values`. The weights make about one
/// chunk in seven one the fast path takes.
fn member(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.9, values)
}

/// A member the fast path needs: almost always present.
fn needed(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.97, values)
}

fn text_or_null() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => "[a-z\"\\\\é\n ]{0,8}".prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<i8>().prop_map(Value::from),
    ]
}

fn delta() -> impl Strategy<Value = Value> {
    (
        member(text_or_null()),
        member(text_or_null()),
        member(text_or_null()),
        prop::option::weighted(
            0.05,
            Just(json!([{"index": 0, "function": {"arguments": "{"}}])),
        ),
        member(any_value()),
    )
        .prop_map(|(role, content, refusal, tool_calls, extra)| {
            let mut delta = serde_json::Map::new();
            for (key, value) in [
                ("role", role),
                ("content", content),
                ("refusal", refusal),
                ("tool_calls", tool_calls),
                ("reasoning_content", extra),
            ] {
                if let Some(value) = value {
                    delta.insert(key.to_owned(), value);
                }
            }
            Value::Object(delta)
        })
}

fn choice() -> impl Strategy<Value = Value> {
    (
        needed(prop_oneof![
            12 => (0u32..3).prop_map(Value::from),
            1 => Just(json!(3)),
            1 => Just(json!(1.0)),
        ]),
        needed(delta()),
        needed(prop_oneof![5 => Just(Value::Null), 5 => Just(json!("stop")), 1 => Just(json!(3))]),
        needed(any_value()),
        member(any_value()),
    )
        .prop_map(|(index, delta, finish_reason, logprobs, extra)| {
            let mut choice = serde_json::Map::new();
            for (key, value) in [
                ("index", index),
                ("delta", delta),
                ("finish_reason", finish_reason),
                ("logprobs", logprobs),
                ("provider_extra", extra),
            ] {
                if let Some(value) = value {
                    choice.insert(key.to_owned(), value);
                }
            }
            Value::Object(choice)
        })
}

fn chunk_text() -> impl Strategy<Value = String> {
    (
        member(text_or_null()),
        member(prop_oneof![4 => Just(json!(5)), 4 => Just(json!(5.5)), 1 => Just(json!("x"))]),
        member(text_or_null()),
        prop::collection::vec(choice(), 0..3),
        prop::option::weighted(0.05, Just(json!({"prompt_tokens": 1, "total_tokens": 1}))),
        member(any_value()),
    )
        .prop_map(|(id, created, model, choices, usage, extra)| {
            let mut chunk = serde_json::Map::new();
            for (key, value) in [
                ("id", id),
                ("created", created),
                ("model", model),
                ("choices", Some(Value::from(choices))),
                ("usage", usage),
                ("system_fingerprint", extra),
            ] {
                if let Some(value) = value {
                    chunk.insert(key.to_owned(), value);
                }
            }
            serde_json::to_string(&Value::Object(chunk)).unwrap()
        })
}

proptest! {
    /// Whatever the fast path takes, the client reads the same JSON as from the slow path,
    /// and the stream counts the same text and sees the same finish.
    #[test]
    fn the_fast_path_changes_no_json(compact in chunk_text()) {
        let normalizer = primed(3);
        // Whitespace between the members must not matter either.
        let value: Value = serde_json::from_str(&compact).unwrap();
        let pretty = format!(" {} ", serde_json::to_string_pretty(&value).unwrap());
        for text in [compact, pretty] {
            let Some(spliced) = fast(&normalizer, &text) else {
                continue;
            };
            prop_assert_eq!(Some(spliced), slow(&normalizer, &text));
            let chunk: ChatChunk = serde_json::from_str(&text).unwrap();
            let content: usize = chunk.choices.iter()
                .map(|c| c.delta.content.as_ref().map_or(0, String::len))
                .sum();
            let in_shape = scan(&text).unwrap();
            prop_assert_eq!(in_shape.text_bytes, content as u64);
            prop_assert_eq!(in_shape.finished, chunk.choices.iter().any(|c| c.finish_reason.is_some()));
        }
    }

    /// A stream's first chunk opens it the same on both paths: the same JSON, with the
    /// upstream's `id` and `created` when it has them.
    #[test]
    fn the_fast_path_opens_a_stream_as_the_slow_path_does(compact in chunk_text()) {
        let mut value: Value = serde_json::from_str(&compact).unwrap();
        for choice in value["choices"].as_array_mut().into_iter().flatten() {
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                delta.insert("role".to_owned(), json!("assistant"));
            }
        }
        let text = value.to_string();
        let fresh = ChunkNormalizer::new("client/model", false, 3);
        if let Some(mut spliced) = fast(&fresh, &text) {
            let mut slow = slow(&fresh, &text).unwrap();
            // Made anew on either path when the upstream gives none.
            if value["id"].as_str().is_none_or(str::is_empty) {
                prop_assert!(spliced["id"].as_str().unwrap().starts_with("chatcmpl-"));
                spliced["id"] = Value::Null;
                slow["id"] = Value::Null;
            }
            if !value["created"].as_f64().is_some_and(|created| created >= 1.0) {
                spliced["created"] = Value::Null;
                slow["created"] = Value::Null;
            }
            prop_assert_eq!(spliced, slow);
        }
    }

    /// The scan never panics, whatever the bytes.
    #[test]
    fn the_scan_takes_any_text(text in "\\PC{0,64}") {
        let _ = scan(&text);
    }
}

/// What a stateless scan makes of `text`, to compare with a stream's scanner.
fn scanned(text: &str) -> String {
    format!("{:?}", scan(text))
}

fn scan_in(scanner: &mut ChunkScanner, text: &str) -> String {
    let event = SseEvent {
        event: None,
        data: Bytes::copy_from_slice(text.as_bytes()),
    };
    format!("{:?}", scanner.scan(event).ok())
}

const LEADING: &str = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_06", "#;

#[test]
fn a_streams_scanner_reads_the_leading_members_once() {
    let mut scanner = ChunkScanner::default();
    let first = format!(
        r#"{LEADING}"choices":[{{"index":0,"delta":{{"content":"a"}},"logprobs":null,"finish_reason":null}}]}}"#
    );
    let second = format!(r#"{LEADING}"choices":[{{"index":0,"delta":{{"content":"bc"}}}}]}}"#);
    assert_eq!(scan_in(&mut scanner, &first), scanned(&first));
    let leading = scanner
        .leading
        .as_ref()
        .expect("the leading members are kept");
    assert_eq!(leading.text, LEADING);
    assert_eq!(leading.keys.len(), 6);
    assert_eq!(leading.kept.len(), 2, "service_tier and system_fingerprint");
    assert_eq!(scan_in(&mut scanner, &second), scanned(&second));
    assert_eq!(scan(&second).unwrap().text_bytes, 2);
    // A key of the leading members named again after `choices` is still refused.
    let twice = format!(r#"{LEADING}"choices":[{{"index":0,"delta":{{}}}}],"model":"x"}}"#);
    assert_eq!(scan_in(&mut scanner, &twice), "None");
    assert!(scan(&twice).is_none());
    // A chunk that begins otherwise is read whole.
    assert_eq!(scan_in(&mut scanner, TYPICAL), scanned(TYPICAL));
}

#[test]
fn leading_members_beyond_the_bound_are_not_kept() {
    let long = "x".repeat(MAX_LEADING_BYTES);
    let text = format!(r#"{{"id":"{long}","choices":[{{"index":0,"delta":{{}}}}]}}"#);
    let mut scanner = ChunkScanner::default();
    assert_eq!(scan_in(&mut scanner, &text), scanned(&text));
    assert!(scan(&text).is_some());
    assert!(scanner.leading.is_none());
}

/// Leading members as upstreams write them, in and out of shape.
fn leading_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(LEADING.to_owned()),
        Just(r#"{"id":"a","created":1.5,"usage":null,"x":[1,{"y":2}],"#.to_owned()),
        Just(r#"{ "id" : null ,"model":"m" , "#.to_owned()),
        Just(r#"{"id":"a","error":{},"#.to_owned()),
        Just(r#"{"id":"a","id":"b","#.to_owned()),
        Just("{".to_owned()),
    ]
}

/// What may follow `choices`: nothing, a new member, or one the leading members named.
fn trailing_text() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(""),
        Just(r#","z":true"#),
        Just(r#","id":"b""#),
        Just(r#","usage":null"#)
    ]
}

proptest! {
    /// A stream's scanner takes exactly what a stateless scan takes, and reads it the same,
    /// whichever chunks came before.
    #[test]
    fn a_streams_scanner_reads_chunks_as_a_scan_does(
        chunks in prop::collection::vec(
            (leading_text(), prop::collection::vec(choice(), 0..3), trailing_text()),
            1..6,
        )
    ) {
        let mut scanner = ChunkScanner::default();
        for (leading, choices, trailing) in chunks {
            let choices = serde_json::to_string(&choices).unwrap();
            let text = format!(r#"{leading}"choices":{choices}{trailing}}}"#);
            prop_assert_eq!(scan_in(&mut scanner, &text), scanned(&text), "{}", text);
        }
    }
}

/// `TYPICAL` with `token` (a JSON string, or bytes that are not one) for its text.
fn typical_with(token: &str) -> String {
    TYPICAL.replace(r#"" mock""#, token)
}

#[test]
fn a_streams_scanner_reads_only_the_text_of_a_chunk_like_the_last() {
    let mut scanner = ChunkScanner::default();
    assert_eq!(scan_in(&mut scanner, TYPICAL), scanned(TYPICAL));
    let template = scanner.template.as_ref().expect("the chunk is kept");
    assert_eq!(&TYPICAL[template.content.clone()], r#"" mock""#);
    for token in [
        r#""""#,
        r#""a much longer text than the template's""#,
        r#""\"quoted\" \\ \n \u00e9 \ud83d\ude00 é""#,
        "null",
        r#""again""#,
    ] {
        let text = typical_with(token);
        assert_eq!(scan_in(&mut scanner, &text), scanned(&text), "{text}");
    }
    let found = scanner.scan(SseEvent {
        event: None,
        data: typical_with(r#""\"é""#).into(),
    });
    assert_eq!(found.unwrap().text_bytes, 3);
    // Bytes that are not one string around the same text are read whole, and refused.
    for token in [
        "\"a\u{1}\"",
        r#""\q""#,
        r#""\ud800""#,
        r#""a"b""#,
        r#""a""#.trim_end_matches('"'),
        "7",
    ] {
        let text = typical_with(token);
        assert_eq!(scan_in(&mut scanner, &text), "None", "{text}");
        assert_eq!(scanned(&text), "None", "{text}");
    }
    // Other bytes around the text, even as many, are read whole.
    let other_index = typical_with(r#""a""#).replace(r#""index":0"#, r#""index":1"#);
    let finished =
        typical_with(r#""a""#).replace("\"finish_reason\":null", "\"finish_reason\":\"ab\"");
    let other_id = typical_with(r#""a""#).replace("chatcmpl-B9", "chatcmpl-C9");
    let number_object =
        typical_with(r#""a""#).replace(r#""chat.completion.chunk""#, "12345678901234567890123");
    for text in [other_index, finished, other_id, number_object] {
        let mut scanner = ChunkScanner::default();
        scan_in(&mut scanner, TYPICAL);
        assert_eq!(scan_in(&mut scanner, &text), scanned(&text), "{text}");
    }
    // An event with a name is not a chunk, whatever its text.
    let named = SseEvent {
        event: Some("error".to_owned()),
        data: TYPICAL.into(),
    };
    assert!(scanner.scan(named).is_err());
}

#[test]
fn a_chunk_beyond_the_bound_is_not_kept() {
    let long = "x".repeat(MAX_TEMPLATE_BYTES);
    let text = typical_with(&format!("\"{long}\""));
    let mut scanner = ChunkScanner::default();
    assert_eq!(scan_in(&mut scanner, &text), scanned(&text));
    assert!(scanner.template.is_none());
}

/// A chunk's text as a string token, or as bytes that are not one.
fn text_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,12}".prop_map(|text| serde_json::to_string(&text).unwrap()),
        1 => "[\"\\\\a-z\\x00-\\x1f\\u{e9}]{0,8}".prop_map(|raw| format!("\"{raw}\"")),
        1 => Just("null".to_owned()),
    ]
}

proptest! {
    /// Chunks alike but for their text are read as a stateless scan reads them.
    #[test]
    fn a_streams_scanner_reads_chunks_alike_as_a_scan_does(
        choice in choice(),
        leading in leading_text(),
        tokens in prop::collection::vec((text_token(), trailing_text()), 1..6),
    ) {
        let mut scanner = ChunkScanner::default();
        let choices = serde_json::to_string(&[choice]).unwrap();
        for (token, trailing) in tokens {
            // The text in place of the choice's `content`, when it has one.
            let choices = choices.replacen(r#""content":"#, &format!(r#""content":{token},"x":"#), 1);
            let text = format!(r#"{leading}"choices":{choices}{trailing}}}"#);
            prop_assert_eq!(scan_in(&mut scanner, &text), scanned(&text), "{}", text);
        }
    }
}
