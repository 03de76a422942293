//! The `atoma` dialect, from `atoma-chat-completions.md`, at `base_url + /v1/chat/completions`.
//! Atoma's request is OpenAI's minus a few fields:
//!
//! | canonical field | sent to Atoma |
//! |---|---|
//! | `model`, `frequency_penalty`, `presence_penalty`, `logit_bias`, `max_tokens`, `max_completion_tokens`, `n`, `seed`, `stop`, `temperature`, `top_p`, `top_logprobs`, `tools`, `tool_choice`, `parallel_tool_calls`, `functions`, `function_call`, `response_format`, `service_tier`, `user` | as is |
//! | `stream` | `true` for streams, with `stream_options: {"include_usage": true}` |
//! | `logprobs` | dropped: Atoma's schema has only `top_logprobs` (sent as is) |
//! | `top_k`, `reasoning_effort`, `reasoning`, `modalities`, `audio`, `prediction`, `web_search_options`, `metadata`, `store`, `prompt_truncate_len` | dropped (not in Atoma's schema) |
//! | orq's own fields | dropped |
//! | unknown fields | as sent |
//! | role `developer` | `system` |
//! | role `function` | 400 (Atoma has system, user, assistant and tool messages) |
//! | `input_audio`, `file` and `refusal` parts | 400 (Atoma takes text and image_url parts) |
//! | message `name`, `tool_calls`, `tool_call_id`, `refusal` | as is |
//! | message `function_call`, `audio` | dropped |
//!
//! Answers are OpenAI-shaped; Atoma's `stop_reason` and other extras are kept as they come.

use super::http::Dialect;
use super::translate::{MessageRules, Translation};
use super::{CallCx, Prepared, Unsupported};
use crate::schema::{ChatRequest, PartType};

/// The Atoma dialect.
pub struct Atoma;

/// Top-level fields Atoma takes as they are.
const ACCEPTED: &[&str] = &[
    "messages",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "stop",
    "temperature",
    "top_p",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "service_tier",
    "user",
];

const MESSAGES: MessageRules = MessageRules {
    developer: false,
    tool: true,
    function: false,
    assistant_tool_calls: true,
    user_parts: &[PartType::Text, PartType::ImageUrl],
    refusal_parts: false,
    fields: &["name", "tool_calls", "tool_call_id", "refusal"],
};

impl Dialect for Atoma {
    fn prepare(
        &self,
        name: &str,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<Prepared, Unsupported> {
        let mut t = Translation::new(name, request);
        t.messages(&MESSAGES)?;
        t.keep_only(ACCEPTED, false);
        Ok(t.finish(&cx.upstream_model))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::translate::testing::send;

    fn prepare(body: Value) -> Result<(Value, Vec<String>), Unsupported> {
        send(&Atoma, body, None).map(|sent| (sent.wire, sent.dropped))
    }

    #[test]
    fn translation_table() {
        let (wire, dropped) = prepare(json!({"model": "atoma/meta-llama/Llama-3.3-70B-Instruct",
            "messages": [{"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}],
            "logprobs": true, "top_logprobs": 2, "top_k": 5, "metadata": {"a": "b"},
            "max_completion_tokens": 64, "stop": "x", "seed": 3}))
        .unwrap();
        assert_eq!(wire["model"], "meta-llama/Llama-3.3-70B-Instruct");
        assert_eq!(wire["messages"][0]["role"], "system");
        assert_eq!(wire["messages"][2]["tool_calls"][0]["id"], "c1");
        assert_eq!(wire["messages"][3]["tool_call_id"], "c1");
        assert_eq!(wire["top_logprobs"], 2);
        assert_eq!(wire["max_completion_tokens"], 64);
        assert_eq!(
            (wire["stop"].clone(), wire["seed"].clone()),
            (json!("x"), json!(3))
        );
        assert_eq!(dropped, ["logprobs", "metadata", "top_k"]);
    }

    #[test]
    fn function_messages_and_audio_parts_are_rejected() {
        let function = json!({"model": "atoma/m", "messages": [{"role": "function", "name": "f", "content": "1"}]});
        assert_eq!(prepare(function).unwrap_err().param, "messages[0].role");
        let file = json!({"model": "atoma/m", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "f1"}}]}]});
        let err = prepare(file).unwrap_err();
        assert_eq!(err.param, "messages[0].content[0].type");
        assert!(err.message.contains("`atoma`"));
    }
}
