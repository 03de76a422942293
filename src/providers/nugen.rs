//! The `nugen` dialect, from `nugen-chat-completions.md`, at
//! `base_url + /api/v3/inference/chat/completions`.
//!
//! | canonical field | sent to Nugen |
//! |---|---|
//! | `model`, `temperature`, `top_p`, `top_k`, `n`, `tools`, `tool_choice`, `prompt_truncate_len`, `reasoning` | as is |
//! | `max_tokens` | as is |
//! | `max_completion_tokens` | `max_tokens` (it wins when both are set; `max_tokens` is then dropped) |
//! | `reasoning_effort` | `reasoning.effort` (unless `reasoning.effort` is set) |
//! | orq `thinking` | `{"type":"enabled","budget_tokens":N}` -> `reasoning.max_tokens`; `{"type":"disabled"}` -> `reasoning.enabled: false` (unless `reasoning` says otherwise) |
//! | `stream` | `true` for streams, with `stream_options: {"include_usage": true}` |
//! | `frequency_penalty`, `presence_penalty`, `logit_bias`, `logprobs`, `top_logprobs`, `seed`, `stop`, `parallel_tool_calls`, `functions`, `function_call`, `response_format`, `modalities`, `audio`, `prediction`, `web_search_options`, `metadata`, `store`, `user`, `service_tier` | dropped (not in Nugen's schema) |
//! | orq's own fields (`orq`, `guardrails`, `name` ...) | dropped |
//! | unknown fields | as sent |
//! | role `developer` | `system` |
//! | roles `tool`, `function`; assistant `tool_calls` / `function_call` | 400: Nugen has no tool-result messages, and dropping them would change the conversation |
//! | `input_audio` and `file` parts | 400 (Nugen takes text and image_url parts) |
//! | message `name` | as is |
//! | message `refusal`, `audio` | dropped |
//! | `X-Session-ID` header | forwarded as `X-Session-ID` |
//!
//! Answers: the float `created`, `confidence_score` and usage riding on the last content chunk
//! are normalized by [`crate::stream::normalize`]. A 422 `detail` from Nugen becomes a 400
//! naming the field.

use serde_json::{Value, json};

use super::http::Dialect;
use super::translate::{MessageRules, Translation};
use super::{CallCx, Prepared, Unsupported};
use crate::error::ProviderError;
use crate::schema::{ChatRequest, PartType};

/// The Nugen dialect.
pub struct Nugen;

/// Top-level fields Nugen takes as they are.
const ACCEPTED: &[&str] = &[
    "messages",
    "max_tokens",
    "prompt_truncate_len",
    "temperature",
    "tools",
    "tool_choice",
    "top_p",
    "top_k",
    "n",
    "reasoning",
];

const MESSAGES: MessageRules = MessageRules {
    developer: false,
    tool: false,
    function: false,
    assistant_tool_calls: false,
    user_parts: &[PartType::Text, PartType::ImageUrl],
    refusal_parts: false,
    fields: &["name"],
};

impl Dialect for Nugen {
    fn prepare(
        &self,
        name: &str,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<Prepared, Unsupported> {
        let mut t = Translation::new(name, request);
        t.messages(&MESSAGES)?;
        if t.body.contains_key("max_completion_tokens") {
            t.drop_field("max_tokens");
            t.rename("max_completion_tokens", "max_tokens");
        }
        t.effort_into_reasoning();
        thinking_into_reasoning(&mut t);
        t.keep_only(ACCEPTED, false);
        if let Some(session) = &cx.session_id {
            t.header("x-session-id", session);
        }
        Ok(t.finish(&cx.upstream_model))
    }

    fn map_error(&self, error: ProviderError) -> ProviderError {
        match error {
            ProviderError::Status {
                status: 422,
                message,
                code,
                retry_after,
            } => ProviderError::Status {
                status: 400,
                message: format!("Nugen rejected the request: {message}"),
                code: code.or_else(|| Some("invalid_request".to_owned())),
                retry_after,
            },
            other => other,
        }
    }
}

/// orq's `thinking` becomes Nugen's `reasoning.max_tokens` / `reasoning.enabled`.
fn thinking_into_reasoning(t: &mut Translation) {
    let Some(thinking) = t.body.get("thinking").cloned() else {
        return;
    };
    let setting = match thinking.get("type").and_then(Value::as_str) {
        Some("enabled") => thinking
            .get("budget_tokens")
            .and_then(Value::as_u64)
            .map(|budget| ("max_tokens", json!(budget))),
        Some("disabled") => Some(("enabled", json!(false))),
        _ => None,
    };
    let Some((key, value)) = setting else {
        return; // `keep_only` drops it and names it
    };
    let reasoning = t.body.entry("reasoning").or_insert_with(|| json!({}));
    if let Some(reasoning) = reasoning.as_object_mut()
        && !reasoning.contains_key(key)
    {
        reasoning.insert(key.to_owned(), value);
        t.body.remove("thinking");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::translate::testing::send;

    fn prepare(
        body: Value,
        session: Option<&str>,
    ) -> Result<(Value, Vec<String>, Prepared), Unsupported> {
        send(&Nugen, body, session).map(|sent| (sent.wire, sent.dropped, sent.prepared))
    }

    #[test]
    fn translation_table() {
        let (wire, dropped, prepared) = prepare(
            json!({"model": "nugen/nugen-flash-instruct",
                "messages": [{"role": "developer", "content": "be brief"},
                    {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                    {"role": "assistant", "content": "hello", "refusal": "no"}],
                "max_tokens": 10, "max_completion_tokens": 500, "reasoning_effort": "low",
                "top_k": 40, "prompt_truncate_len": 1500, "stop": ["x"], "seed": 1,
                "frequency_penalty": 0.5, "guardrails": [], "vendor": "kept",
                "stream": true, "stream_options": {"include_usage": false}}),
            Some("session-1"),
        )
        .unwrap();
        assert_eq!(wire["model"], "nugen-flash-instruct");
        assert_eq!(wire["messages"][0]["role"], "system");
        assert_eq!(wire["messages"][1]["name"], "ann");
        assert!(wire["messages"][2].get("refusal").is_none());
        assert_eq!(wire["max_tokens"], 500);
        assert!(wire.get("max_completion_tokens").is_none());
        assert_eq!(wire["reasoning"], json!({"effort": "low"}));
        assert_eq!(
            (wire["top_k"].clone(), wire["prompt_truncate_len"].clone()),
            (json!(40), json!(1500))
        );
        assert_eq!(wire["vendor"], "kept");
        assert_eq!(wire["stream"], true);
        assert_eq!(wire["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            dropped,
            [
                "frequency_penalty",
                "guardrails",
                "max_tokens",
                "messages[2].refusal",
                "seed",
                "stop"
            ]
        );
        assert_eq!(prepared.headers[0].0, "x-session-id");
        assert_eq!(prepared.headers[0].1, "session-1");
    }

    #[test]
    fn thinking_becomes_reasoning_max_tokens() {
        let (wire, dropped, _) = prepare(
            json!({"model": "nugen/m", "messages": [{"role": "user", "content": "hi"}],
                "thinking": {"type": "enabled", "budget_tokens": 2048}}),
            None,
        )
        .unwrap();
        assert_eq!(wire["reasoning"], json!({"max_tokens": 2048}));
        assert!(wire.get("thinking").is_none());
        assert!(dropped.is_empty());
    }

    #[test]
    fn what_nugen_cannot_take_is_a_400_naming_provider_and_field() {
        let tool = json!({"model": "nugen/m", "messages": [{"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "c", "content": "42"}]});
        let err = prepare(tool, None).unwrap_err();
        assert_eq!(err.param, "messages[1].role");
        assert!(
            err.message.contains("`nugen`") && err.message.contains("`tool` role"),
            "{}",
            err.message
        );
        let calls = json!({"model": "nugen/m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]});
        assert_eq!(
            prepare(calls, None).unwrap_err().param,
            "messages[0].tool_calls"
        );
        let audio = json!({"model": "nugen/m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]});
        assert_eq!(
            prepare(audio, None).unwrap_err().param,
            "messages[0].content[0].type"
        );
    }

    #[test]
    fn a_422_becomes_a_400_naming_the_field() {
        let error = Nugen.map_error(ProviderError::Status {
            status: 422,
            message: "messages.0.role: Input should be 'system', 'user' or 'assistant'".into(),
            code: None,
            retry_after: None,
        });
        let ProviderError::Status {
            status, message, ..
        } = error
        else {
            panic!()
        };
        assert_eq!(status, 400);
        assert!(message.contains("messages.0.role"));
    }
}
