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
//! Requests that need none of the translations (the common case) are serialized straight
//! from the canonical type, without the intermediate JSON object the general path builds.

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
        let body = Body {
            model: &cx.upstream_model,
            request,
            stream: request.is_stream(),
            stream_options: request
                .is_stream()
                .then(|| stream_options_with_usage(request)),
        };
        Ok(Prepared {
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            ..Prepared::default()
        })
    }
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
}
