//! The `openai` dialect: OpenAI itself and any OpenAI-compatible server (vLLM, llama.cpp,
//! Ollama ...) by `base_url`, at `base_url + /chat/completions`. The canonical request *is*
//! OpenAI's, so almost everything passes as is:
//!
//! | canonical field | sent to OpenAI |
//! |---|---|
//! | `model` | the route's upstream model name |
//! | `stream` | `true` for streams, absent otherwise |
//! | `stream_options` | the client's, with `include_usage: true` always (the gateway needs usage; the normalizer drops it when the client did not ask) |
//! | every other OpenAI field, all roles and part kinds | as is |
//! | Nugen `reasoning.effort` | `reasoning_effort` (unless that is set) |
//! | Nugen `reasoning.max_tokens` / `exclude` / `enabled`, `top_k`, `prompt_truncate_len` | dropped (no OpenAI equivalent) |
//! | orq's own fields (`orq`, `guardrails`, `thinking`, `name` ...) | dropped |
//! | routing policy (`retry`, `fallbacks`, ...) | never (the gateway's) |
//! | unknown fields | as sent |
//!
//! Requests that need none of the translations (the common case) skip the intermediate JSON
//! object the general path builds: the body is the client's own text with the per-call
//! members (`crate::schema`'s `forward`), or, when that text cannot be forwarded as written
//! (a key twice, `variables` substituted), the canonical type serialized.

use bytes::Bytes;
use serde::Serialize;

use super::http::Dialect;
use super::translate::{ORQ_FIELDS, Translation};
use super::{CallCx, Prepared, Unsupported};
use crate::schema::{ChatRequest, StreamOptions};

/// The OpenAI dialect.
pub struct OpenAi;

/// Canonical fields OpenAI does not take.
const NOT_OPENAI: &[&str] = &["top_k", "prompt_truncate_len", "reasoning"];

impl Dialect for OpenAi {
    fn prepare(
        &self,
        name: &str,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<Prepared, Unsupported> {
        if needs_translation(request) {
            return Ok(translate(name, request, cx));
        }
        let stream_options = request
            .is_stream()
            .then(|| stream_options_with_usage(request));
        let body = as_written(request, &cx.upstream_model, stream_options.as_ref())
            .unwrap_or_else(|| typed(request, &cx.upstream_model, stream_options));
        Ok(Prepared {
            body: Bytes::from(body),
            ..Prepared::default()
        })
    }
}

/// The body as the client wrote it, with the per-call members: `None` when the request has
/// no body to forward as written.
fn as_written(
    request: &ChatRequest,
    model: &str,
    stream_options: Option<&StreamOptions>,
) -> Option<Vec<u8>> {
    let source_len = request.source.as_ref()?.len();
    let mut body = Vec::with_capacity(source_len.saturating_add(model.len()).saturating_add(80));
    body.extend_from_slice(b"{\"model\":");
    serde_json::to_writer(&mut body, model).ok()?;
    request.write_forwarded_members(&mut body)?;
    if let Some(options) = stream_options {
        body.extend_from_slice(b",\"stream\":true,\"stream_options\":");
        serde_json::to_writer(&mut body, options).ok()?;
    }
    body.push(b'}');
    Some(body)
}

/// The body written from the typed request.
fn typed(request: &ChatRequest, model: &str, stream_options: Option<StreamOptions>) -> Vec<u8> {
    let body = Body {
        model,
        request,
        stream: request.is_stream(),
        stream_options,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

fn needs_translation(request: &ChatRequest) -> bool {
    request.top_k.is_some()
        || request.prompt_truncate_len.is_some()
        || request.reasoning.is_some()
        || request
            .extra
            .keys()
            .any(|k| ORQ_FIELDS.contains(&k.as_str()))
}

fn translate(name: &str, request: &ChatRequest, cx: &CallCx) -> Prepared {
    let mut t = Translation::new(name, request);
    t.effort_from_reasoning();
    t.drop_rest_of_reasoning();
    let accepted: Vec<&str> = ChatRequest::FIELDS
        .iter()
        .copied()
        .filter(|f| !NOT_OPENAI.contains(f))
        .collect();
    t.keep_only(&accepted, false);
    t.finish(&cx.upstream_model)
}

/// The wire body on the direct path: the canonical request plus the per-call fields.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(flatten)]
    request: &'a ChatRequest,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

fn stream_options_with_usage(request: &ChatRequest) -> StreamOptions {
    let extra = request
        .stream_options
        .as_ref()
        .map(|o| o.extra.clone())
        .unwrap_or_default();
    StreamOptions {
        include_usage: Some(true),
        extra,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::translate::testing::send;

    fn prepare(body: Value) -> (Value, Vec<String>) {
        let sent = send(&OpenAi, body, None).unwrap();
        (sent.wire, sent.dropped)
    }

    #[test]
    fn the_body_carries_model_stream_and_usage_but_no_policy() {
        let (wire, dropped) = prepare(json!({"model": "openai/gpt-4o",
            "messages": [{"role": "developer", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": false, "x": 1},
            "retry": {"count": 2}, "vendor_field": true}));
        assert_eq!(wire["model"], "gpt-4o");
        assert_eq!(wire["stream"], true);
        assert_eq!(
            wire["stream_options"],
            json!({"include_usage": true, "x": 1})
        );
        assert_eq!(wire["vendor_field"], true);
        assert_eq!(wire["messages"][0]["role"], "developer");
        assert!(wire.get("retry").is_none());
        assert!(dropped.is_empty());
    }

    #[test]
    fn nugen_and_orq_fields_are_translated_or_dropped() {
        let (wire, dropped) = prepare(json!({"model": "openai/o3",
            "messages": [{"role": "user", "content": "hi"}], "top_k": 4,
            "reasoning": {"effort": "high", "max_tokens": 2048}, "guardrails": [],
            "vendor_field": 1, "temperature": 1}));
        assert_eq!(wire["reasoning_effort"], "high");
        assert_eq!(wire["vendor_field"], 1);
        assert_eq!(wire["temperature"], 1.0);
        for absent in [
            "top_k",
            "reasoning",
            "guardrails",
            "stream",
            "stream_options",
        ] {
            assert!(wire.get(absent).is_none(), "{absent}");
        }
        assert_eq!(dropped, ["guardrails", "reasoning.max_tokens", "top_k"]);
    }

    #[test]
    fn both_paths_agree_when_nothing_needs_translating() {
        let body = json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.5, "tools": [{"type": "function", "function": {"name": "f"}}],
            "stream": true, "x": [1]});
        let request = crate::schema::parse_and_validate(body.to_string().as_bytes()).unwrap();
        let cx = CallCx {
            upstream_model: "gpt-4o".into(),
            ..CallCx::default()
        };
        let direct: Value =
            serde_json::from_slice(&OpenAi.prepare("o", &request, &cx).unwrap().body).unwrap();
        let general: Value = serde_json::from_slice(&translate("o", &request, &cx).body).unwrap();
        assert_eq!(direct, general);
    }

    /// What an upstream reads from a body: the request it parses to, as the typed path writes
    /// it, and the body's own top-level keys.
    fn as_read(body: &[u8]) -> (Value, Vec<String>) {
        let request = crate::schema::parse_request(body).unwrap();
        let read = Body {
            model: &request.model,
            request: &request,
            stream: request.is_stream(),
            stream_options: request.stream_options.clone(),
        };
        let Value::Object(members) = serde_json::from_slice(body).unwrap() else {
            panic!("a body is an object");
        };
        (
            serde_json::to_value(read).unwrap(),
            members.keys().cloned().collect(),
        )
    }

    /// A JSON value a few levels deep, with plain keys.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A valid request body: messages, some known fields (some `null`), the policy and
    /// per-call fields, unknown fields; written compact or pretty.
    fn any_request() -> impl Strategy<Value = String> {
        let message = (
            prop::sample::select(vec!["system", "user"]),
            any::<String>(),
        )
            .prop_map(|(role, text)| json!({"role": role, "content": text}));
        let maybe =
            |value: Value| prop_oneof![Just(None), Just(Some(Value::Null)), Just(Some(value))];
        (
            prop::collection::vec(message, 1..4),
            (
                maybe(json!(0.5)),
                maybe(json!(7)),
                maybe(json!("u")),
                maybe(json!(["x", "y"])),
            ),
            (
                any::<bool>(),
                maybe(json!({"include_usage": false, "x": 1})),
            ),
            (maybe(json!({"count": 1})), maybe(json!({"a": "b"}))),
            prop::collection::btree_map("x[a-z]{0,3}", any_json(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(messages, known, stream, policy, extra, pretty)| {
                let mut body = json!({"model": "o/m", "messages": messages});
                let known = [
                    ("temperature", known.0),
                    ("seed", known.1),
                    ("user", known.2),
                    ("stop", known.3),
                    ("stream_options", stream.1),
                    ("retry", policy.0),
                    ("metadata", policy.1),
                ];
                for (name, value) in known {
                    if let Some(value) = value {
                        body[name] = value;
                    }
                }
                body["stream"] = json!(stream.0);
                if !stream.0 && body.get("stream_options").is_some_and(|o| !o.is_null()) {
                    body.as_object_mut().unwrap().remove("stream_options");
                }
                for (name, value) in extra {
                    body[name] = value;
                }
                if pretty {
                    serde_json::to_string_pretty(&body).unwrap()
                } else {
                    body.to_string()
                }
            })
    }

    proptest! {
        #[test]
        fn a_body_as_written_reads_as_the_typed_one(body in any_request()) {
            let parsed = crate::schema::parse_client_body(body.into());
            prop_assume!(parsed.is_ok(), "valid bodies only");
            let request = parsed.unwrap();
            let options = request.is_stream().then(|| stream_options_with_usage(&request));
            let written = as_written(&request, "up", options.as_ref());
            let written = written.expect("a body without a key twice is forwarded as written");
            let typed = typed(&request, "up", options);
            prop_assert_eq!(as_read(&written), as_read(&typed));
        }
    }
}
