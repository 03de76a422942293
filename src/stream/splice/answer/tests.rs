use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::stream::normalize::normalize_response;

/// An answer the way OpenAI (and the bench's mock) sends it.
const TYPICAL: &str = r#"{"id":"chatcmpl-B9","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":23,"completion_tokens":19,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06"}"#;

fn scan(text: &str) -> Option<AnswerInShape> {
    AnswerInShape::scan(text.as_bytes().to_vec()).ok()
}

/// What the slow path makes of `text` for a request of `n` choices, or `None` when it
/// refuses the answer.
fn slow(text: &str, n: u32) -> Option<Value> {
    let mut response: ChatResponse = serde_json::from_str(text).ok()?;
    normalize_response(&mut response, "client/model", n).ok()?;
    Some(serde_json::to_value(&response).unwrap())
}

fn fast(text: &str, n: u32) -> Option<Value> {
    let body = scan(text)?.client_body("client/model", n)?;
    Some(serde_json::from_slice(&body).unwrap())
}

#[test]
fn a_typical_answer_is_spliced_with_the_clients_model() {
    let out = fast(TYPICAL, 1).expect("the typical answer takes the fast path");
    assert_eq!(out["model"], "client/model");
    assert_eq!(out["id"], "chatcmpl-B9");
    assert_eq!(out["created"], 1_741_569_952);
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(Some(out), slow(TYPICAL, 1));
    let answer = scan(TYPICAL).unwrap();
    assert_eq!(answer.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(answer.text_bytes, 6);
    let usage = answer.usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (23, 19));
    assert!(answer.client_body("m", 0).is_none(), "more choices than n");
}

#[test]
fn answers_the_slow_path_would_change_are_not_in_shape() {
    let choice = r#"{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"logprobs":null,"finish_reason":"stop"}"#;
    let with = |members: &str| format!(r#"{{"id":"a",{members}}}"#);
    let cases = [
        format!(r#"{{"choices":[{choice}]}}"#),
        format!(r#"{{"id":"","choices":[{choice}]}}"#),
        format!(r#"{{"id":null,"choices":[{choice}]}}"#),
        with(
            r#""choices":[{"index":0,"message":{"role":"","content":"x","refusal":null},"logprobs":null,"finish_reason":"stop"}]"#,
        ),
        with(
            r#""choices":[{"index":0,"message":{"role":"assistant","content":"x"},"logprobs":null,"finish_reason":"stop"}]"#,
        ),
        with(
            r#""choices":[{"index":0,"message":{"role":"assistant","refusal":null},"logprobs":null,"finish_reason":"stop"}]"#,
        ),
        with(
            r#""choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[]},"logprobs":null,"finish_reason":"stop"}]"#,
        ),
        with(
            r#""choices":[{"index":1,"message":{"role":"assistant","content":"x","refusal":null},"logprobs":null,"finish_reason":"stop"}]"#,
        ),
        with(
            r#""choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop"}]"#,
        ),
        with(&format!(
            r#""choices":[{choice}],"usage":{{"prompt_tokens":1.0,"completion_tokens":1,"total_tokens":2}}"#
        )),
        with(&format!(
            r#""choices":[{choice}],"usage":{{"completion_tokens":1,"total_tokens":2}}"#
        )),
        with(&format!(
            r#""choices":[{choice}],"usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"d":{{"x":0.0}}}}"#
        )),
        with(&format!(
            r#""choices":[{choice}],"error":{{"message":"x"}}"#
        )),
        with(&format!(r#""choices":[{choice}],"x":1,"x":2"#)),
        with(&format!(r#""choices":[{choice}],"\u0078":1"#)),
        with(r#""object":"chat.completion""#),
    ];
    for text in &cases {
        assert!(scan(text).is_none(), "{text}");
    }
    // Found by the fuzzer: invalid UTF-8 in a member the parser only skips.
    let mut bytes = TYPICAL.as_bytes().to_vec();
    let at = TYPICAL.find("default").unwrap();
    bytes[at] = 0xfb;
    assert!(AnswerInShape::scan(bytes).is_err());
    let fits = with(&format!(r#""choices":[{choice}]"#));
    assert!(scan(&fits).is_some(), "{fits}");
}

/// A member that is mostly present and holds one of `values`.
fn member(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.92, values)
}

fn text_or_null() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => "[a-z\"\\\\é\n ]{0,8}".prop_map(Value::from),
        2 => Just(Value::Null),
        1 => any::<i8>().prop_map(Value::from),
    ]
}

fn object(members: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        members
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect(),
    )
}

fn choice(position: usize) -> impl Strategy<Value = Value> {
    let message = (
        member(prop_oneof![8 => Just(json!("assistant")), 1 => Just(json!(""))]),
        member(text_or_null()),
        member(text_or_null()),
        prop::option::weighted(
            0.05,
            Just(json!([{"id": "c", "function": {"name": "f", "arguments": "{}"}}])),
        ),
        member(prop_oneof![
            Just(json!([])),
            Just(json!(null)),
            Just(json!(1.5))
        ]),
    )
        .prop_map(|(role, content, refusal, tool_calls, annotations)| {
            object(vec![
                ("role", role),
                ("content", content),
                ("refusal", refusal),
                ("tool_calls", tool_calls),
                ("annotations", annotations),
            ])
        });
    (
        member(
            prop_oneof![10 => Just(json!(position)), 1 => Just(json!(0)), 1 => Just(json!(1.0))],
        ),
        member(message),
        member(prop_oneof![Just(Value::Null), Just(json!("stop"))]),
        member(Just(Value::Null)),
    )
        .prop_map(|(index, message, finish_reason, logprobs)| {
            object(vec![
                ("index", index),
                ("message", message),
                ("finish_reason", finish_reason),
                ("logprobs", logprobs),
            ])
        })
}

fn usage() -> impl Strategy<Value = Value> {
    let count = || prop_oneof![10 => (0u32..100).prop_map(Value::from), 1 => Just(json!(3.0))];
    (
        member(count()),
        member(count()),
        member(count()),
        member(prop_oneof![
            Just(json!({"cached_tokens": 0})),
            Just(json!({"cached_tokens": 2.0}))
        ]),
    )
        .prop_map(|(prompt, completion, total, details)| {
            object(vec![
                ("prompt_tokens", prompt),
                ("completion_tokens", completion),
                ("total_tokens", total),
                ("prompt_tokens_details", details),
            ])
        })
}

fn answer_text() -> impl Strategy<Value = String> {
    let choices = (0usize..3).prop_flat_map(|count| (0..count).map(choice).collect::<Vec<_>>());
    (
        member(prop_oneof![8 => Just(json!("chatcmpl-1")), 1 => Just(json!("")), 1 => Just(json!(null))]),
        member(prop_oneof![Just(json!(1_700_000_000)), Just(json!(1_700_000_000.5))]),
        member(text_or_null()),
        member(choices.prop_map(Value::from)),
        member(prop_oneof![4 => usage(), 1 => Just(Value::Null)]),
        member(prop_oneof![Just(json!("fp")), Just(json!(null)), Just(json!({"a": [1, 2.5]}))]),
    )
        .prop_map(|(id, created, model, choices, usage, extra)| {
            let answer = object(vec![
                ("id", id),
                ("created", created),
                ("model", model),
                ("choices", choices),
                ("usage", usage),
                ("system_fingerprint", extra),
            ]);
            serde_json::to_string(&answer).unwrap()
        })
}

proptest! {
    /// Whatever the fast path takes, the client reads the same JSON as from the slow path,
    /// and the gateway notes the same model, usage and text size.
    #[test]
    fn the_fast_path_changes_no_json(compact in answer_text(), n in 1u32..3) {
        let value: Value = serde_json::from_str(&compact).unwrap();
        let pretty = format!("\n{}\n", serde_json::to_string_pretty(&value).unwrap());
        for text in [compact, pretty] {
            let Some(mut spliced) = fast(&text, n) else {
                continue;
            };
            let mut slow = slow(&text, n).expect("the slow path takes what the fast one does");
            if value.get("created").is_none() {
                // Both stamp the time now; it may tick between them.
                prop_assert!(spliced["created"].is_i64() && slow["created"].is_i64());
                spliced["created"] = json!(0);
                slow["created"] = json!(0);
            }
            prop_assert_eq!(spliced, slow);
            let parsed: ChatResponse = serde_json::from_str(&text).unwrap();
            let answer = scan(&text).unwrap();
            prop_assert_eq!(&answer.model, &parsed.model);
            let counts = |u: &Usage| (u.prompt_tokens, u.completion_tokens, u.total_tokens);
            prop_assert_eq!(answer.usage.as_ref().map(counts), parsed.usage.as_ref().map(counts));
            let text_bytes: usize = parsed.choices.iter()
                .filter_map(|c| c.message.content.as_ref()).map(String::len).sum();
            prop_assert_eq!(answer.text_bytes, text_bytes as u64);
        }
    }
}
