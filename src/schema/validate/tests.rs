use serde_json::{Value, json};

use super::*;
use crate::error::{FieldErrorKind, GatewayError};
use crate::schema::parse_and_validate;

/// The `param` and message of the first error for a body, or None when it is valid.
fn first_error(body: Value) -> Option<(String, String, FieldErrorKind)> {
    match parse_and_validate(body.to_string().as_bytes()) {
        Ok(_) => None,
        Err(GatewayError::InvalidRequest(errors)) => {
            let e = &errors[0];
            Some((e.path.to_string(), e.message.clone(), e.kind))
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn with(extra: Value) -> Value {
    let mut body = json!({"model": "echo/x", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn param(body: Value) -> String {
    first_error(body).expect("expected an error").0
}

#[test]
fn a_minimal_request_is_valid() {
    assert_eq!(first_error(with(json!({}))), None);
}

#[test]
fn every_role_and_part_kind_parses() {
    let body = json!({
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {"role": "user", "name": "alice_1", "content": [
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"},
                 "thought_signature": "sig"}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "function", "name": "f", "content": null},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {}}},
        "stream": true, "stream_options": {"include_usage": true},
        "stop": ["a", "b"], "logit_bias": {"50256": -100}, "logprobs": true, "top_logprobs": 3,
        "reasoning": {"effort": "low", "max_tokens": 100}, "top_k": 40, "prompt_truncate_len": 1500,
        "retry": {"count": 2, "on_codes": [429, 503]}, "fallbacks": [{"model": "echo/y"}],
        "timeout": {"call_timeout": 1000}, "cache": {"type": "exact_match", "ttl": 60},
        "load_balancer": {"type": "weight_based", "models": [{"model": "echo/a", "weight": 0.5}]},
        "variables": {"name": "Ann"}, "some_future_field": {"kept": true}
    });
    let request = parse_and_validate(body.to_string().as_bytes()).expect("valid");
    assert_eq!(request.messages.len(), 7);
    assert!(request.include_usage());
    assert_eq!(request.extra["some_future_field"], json!({"kept": true}));
    let parts = match &request.messages[2].content {
        Some(MessageContent::Parts(parts)) => parts,
        other => panic!("expected parts, got {other:?}"),
    };
    assert_eq!(
        parts[0].extra["cache_control"],
        json!({"type": "ephemeral"})
    );
    let call = &request.messages[3].tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.extra["thought_signature"], "sig");
}

#[test]
fn serialization_forwards_unknown_fields_but_not_policy_or_per_call_fields() {
    let body = with(
        json!({"retry": {"count": 1}, "variables": {"a": 1}, "stream": true,
        "stream_options": {"include_usage": true}, "x_vendor": 7, "temperature": 0.5}),
    );
    let request = parse_and_validate(body.to_string().as_bytes()).unwrap();
    let out = serde_json::to_value(&request).unwrap();
    assert_eq!(out["x_vendor"], 7);
    assert_eq!(out["temperature"], 0.5);
    for absent in ["model", "retry", "variables", "stream", "stream_options"] {
        assert!(out.get(absent).is_none(), "{absent} must not be forwarded");
    }
}

#[test]
fn type_errors_name_the_nested_path() {
    let body = with(json!({"messages": [{"role": "user", "content": "a"},
        {"role": "user", "content": 5}]}));
    let (path, message, kind) = first_error(body).unwrap();
    assert_eq!(path, "messages[1].content");
    assert!(message.contains("messages[1].content"), "{message}");
    assert_eq!(kind, FieldErrorKind::InvalidType);

    let body = with(json!({"temperature": "hot"}));
    let (path, message, _) = first_error(body).unwrap();
    assert_eq!(path, "temperature");
    assert!(message.contains("expected a number"), "{message}");

    let body = with(json!({"messages": [{"role": "robot", "content": "x"}]}));
    let (path, message, _) = first_error(body).unwrap();
    assert_eq!(path, "messages[0].role");
    assert!(message.contains("robot"), "{message}");

    let body = with(json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]}));
    assert_eq!(param(body), "messages[0].content[0].type");
}

#[test]
fn missing_fields_are_named() {
    let (path, _, kind) = first_error(json!({"messages": []})).unwrap();
    assert_eq!((path.as_str(), kind), ("model", FieldErrorKind::Missing));
    assert_eq!(param(json!({"model": "m"})), "messages");
    assert_eq!(
        param(with(json!({"messages": [{"content": "x"}]}))),
        "messages[0].role"
    );
    assert_eq!(
        param(with(json!({"messages": [{"role": "user"}]}))),
        "messages[0].content"
    );
    assert_eq!(
        param(with(
            json!({"messages": [{"role": "tool", "content": "x"}]})
        )),
        "messages[0].tool_call_id"
    );
    assert_eq!(
        param(with(
            json!({"messages": [{"role": "function", "content": "x"}]})
        )),
        "messages[0].name"
    );
    assert_eq!(
        param(with(json!({"messages": [{"role": "assistant"}]}))),
        "messages[0].content"
    );
    assert_eq!(
        param(with(
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]})
        )),
        "messages[0].content[0].text"
    );
}

#[test]
fn malformed_json_is_reported_without_a_path() {
    let Err(GatewayError::InvalidRequest(errors)) = parse_and_validate(b"{\"model\": ") else {
        panic!("expected an error");
    };
    assert_eq!(errors[0].kind, FieldErrorKind::InvalidJson);
    assert!(errors[0].path.is_root());
    let Err(GatewayError::InvalidRequest(errors)) = parse_and_validate(b"[1]") else {
        panic!("expected an error");
    };
    assert!(
        errors[0].message.contains("JSON object"),
        "{}",
        errors[0].message
    );
    assert!(
        parse_and_validate(
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]} x"
        )
        .is_err()
    );
}

#[test]
fn ranges_are_enforced() {
    for (field, bad) in [
        ("temperature", json!(2.5)),
        ("temperature", json!(-0.1)),
        ("top_p", json!(1.5)),
        ("n", json!(0)),
        ("n", json!(129)),
        ("frequency_penalty", json!(-3)),
        ("presence_penalty", json!(2.1)),
        ("max_tokens", json!(0)),
        ("max_completion_tokens", json!(0)),
    ] {
        assert_eq!(
            param(with(json!({field: bad.clone()}))),
            field,
            "{field}={bad}"
        );
    }
    for (field, good) in [
        ("temperature", json!(2)),
        ("top_p", json!(0)),
        ("n", json!(128)),
        ("presence_penalty", json!(-2)),
    ] {
        assert_eq!(first_error(with(json!({field: good}))), None, "{field}");
    }
    assert_eq!(param(with(json!({"n": -1}))), "n");
}

#[test]
fn cross_field_rules() {
    assert_eq!(param(with(json!({"top_logprobs": 2}))), "top_logprobs");
    assert_eq!(
        param(with(json!({"logprobs": true, "top_logprobs": 21}))),
        "top_logprobs"
    );
    assert_eq!(
        param(with(json!({"stream_options": {"include_usage": true}}))),
        "stream_options"
    );
    assert_eq!(
        param(with(json!({"stream": false, "stream_options": {}}))),
        "stream_options"
    );
    let tool = json!([{"type": "function", "function": {"name": "known"}}]);
    assert_eq!(
        param(with(json!({"tools": tool, "tool_choice":
            {"type": "function", "function": {"name": "unknown"}}}))),
        "tool_choice.function.name"
    );
    assert_eq!(
        param(with(json!({"tool_choice": "required"}))),
        "tool_choice"
    );
    assert_eq!(
        first_error(with(json!({"tools": tool, "tool_choice": "required"}))),
        None
    );
    assert_eq!(
        param(with(json!({"tool_choice": "sometimes"}))),
        "tool_choice"
    );
    assert_eq!(
        param(with(json!({"modalities": ["text", "audio"]}))),
        "audio"
    );
    assert_eq!(
        param(with(json!({"response_format": {"type": "json_schema"}}))),
        "response_format.json_schema"
    );
    assert_eq!(
        param(with(
            json!({"functions": [{"name": "a"}], "function_call": {"name": "b"}})
        )),
        "function_call.name"
    );
}

#[test]
fn stop_and_logit_bias_limits() {
    assert_eq!(
        param(with(json!({"stop": ["a", "b", "c", "d", "e"]}))),
        "stop"
    );
    assert_eq!(param(with(json!({"stop": []}))), "stop");
    assert_eq!(first_error(with(json!({"stop": "\n"}))), None);
    assert_eq!(
        param(with(json!({"logit_bias": {"42": 101}}))),
        "logit_bias.42"
    );
    assert_eq!(
        param(with(json!({"logit_bias": {"abc": 1}}))),
        "logit_bias.abc"
    );
}

#[test]
fn names_follow_the_pattern() {
    let long = "a".repeat(65);
    assert_eq!(
        param(with(
            json!({"messages": [{"role": "user", "content": "x", "name": "bad name"}]})
        )),
        "messages[0].name"
    );
    assert_eq!(
        param(with(
            json!({"tools": [{"type": "function", "function": {"name": long}}]})
        )),
        "tools[0].function.name"
    );
    assert_eq!(
        first_error(with(
            json!({"tools": [{"type": "function", "function": {"name": "a-b_9"}}]})
        )),
        None
    );
}

#[test]
fn role_specific_part_kinds() {
    let body = with(json!({"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://x"}}]}]}));
    assert_eq!(param(body), "messages[0].content[0].type");
    let body = with(json!({"messages": [{"role": "assistant", "content": [
        {"type": "text", "text": "a"}, {"type": "refusal", "refusal": "b"}]}]}));
    assert_eq!(param(body), "messages[0].content");
    let body = with(json!({"messages": [{"role": "user", "content": "x",
        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": ""}}]}]}));
    assert_eq!(param(body), "messages[0].tool_calls");
    assert_eq!(param(with(json!({"messages": []}))), "messages");
    let body = with(json!({"messages": [{"role": "assistant",
        "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]}]}));
    assert_eq!(param(body), "messages[0].tool_calls[0].type");
    let body = with(json!({"messages": [{"role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}));
    assert_eq!(param(body), "messages[0].tool_calls[0].id");
}

#[test]
fn metadata_limits() {
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(param(with(json!({"metadata": many}))), "metadata");
    let long_key = "k".repeat(65);
    assert_eq!(
        param(with(json!({"metadata": {long_key.clone(): "v"}}))),
        format!("metadata.{long_key}")
    );
    assert_eq!(
        param(with(json!({"metadata": {"k": "v".repeat(513)}}))),
        "metadata.k"
    );
    assert_eq!(param(with(json!({"metadata": {"k": 1}}))), "metadata.k");
}

#[test]
fn routing_policy_uses_orq_ranges() {
    assert_eq!(param(with(json!({"retry": {"count": 6}}))), "retry.count");
    assert_eq!(param(with(json!({"retry": {"count": 0}}))), "retry.count");
    assert_eq!(
        param(with(json!({"retry": {"on_codes": [99]}}))),
        "retry.on_codes[0]"
    );
    assert_eq!(
        param(with(json!({"retry": {"on_codes": []}}))),
        "retry.on_codes"
    );
    assert_eq!(
        param(with(
            json!({"cache": {"type": "exact_match", "ttl": 259201}})
        )),
        "cache.ttl"
    );
    assert_eq!(
        param(with(json!({"cache": {"type": "semantic"}}))),
        "cache.type"
    );
    assert_eq!(
        param(with(json!({"timeout": {"call_timeout": 0}}))),
        "timeout.call_timeout"
    );
    assert_eq!(
        param(with(json!({"load_balancer": {"type": "weight_based",
            "models": [{"model": "a", "weight": 0.0001}]}}))),
        "load_balancer.models[0].weight"
    );
    assert_eq!(
        param(with(json!({"fallbacks": [{"model": ""}]}))),
        "fallbacks[0].model"
    );
}

#[test]
fn all_problems_are_collected() {
    let body = with(json!({"temperature": 3, "top_p": 2, "n": 0}));
    let Err(GatewayError::InvalidRequest(errors)) = parse_and_validate(body.to_string().as_bytes())
    else {
        panic!("expected errors");
    };
    let paths: Vec<String> = errors.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(paths, ["temperature", "top_p", "n"]);
}

#[test]
fn routing_lists_and_call_timeout_are_bounded() {
    let models = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"model": format!("echo/m{i}")}))
            .collect()
    };
    assert_eq!(first_error(with(json!({"fallbacks": models(16)}))), None);
    let (path, message, _) = first_error(with(json!({"fallbacks": models(17)}))).unwrap();
    assert_eq!(path, "fallbacks");
    assert!(message.contains("at most 16"), "{message}");
    let balanced = |n| json!({"load_balancer": {"type": "weight_based", "models": models(n)}});
    assert_eq!(first_error(with(balanced(16))), None);
    assert_eq!(param(with(balanced(17))), "load_balancer.models");
    assert_eq!(
        param(with(json!({"timeout": {"call_timeout": 99}}))),
        "timeout.call_timeout"
    );
    assert_eq!(
        first_error(with(json!({"timeout": {"call_timeout": 100}}))),
        None
    );
}
