//! The `orq` dialect, from `orq-router-chat-completions.md`, at
//! `base_url + /v2/router/chat/completions`.
//!
//! | canonical field | sent to orq |
//! |---|---|
//! | `model`, `messages`, `metadata`, `audio`, `frequency_penalty`, `presence_penalty`, `max_tokens`, `max_completion_tokens`, `logprobs`, `top_logprobs`, `n`, `response_format`, `reasoning_effort`, `seed`, `stop`, `temperature`, `top_p`, `top_k`, `tools`, `tool_choice`, `parallel_tool_calls`, `modalities` | as is |
//! | `stream` | `true` for streams, with `stream_options: {"include_usage": true}` |
//! | orq's own fields (`orq`, `guardrails`, `knowledge_bases`, `identity`, `thread`, `name`, `thinking` ...) | as is |
//! | routing policy (`retry`, `fallbacks`, `timeout`, `load_balancer`, `cache`, `variables`), also inside `orq` | never: the gateway applies it, so orq's own retries do not multiply ours |
//! | Nugen `reasoning.effort` | `reasoning_effort` (unless that is set) |
//! | Nugen `reasoning.max_tokens` | `thinking: {"type":"enabled","budget_tokens":N}` when N >= 1024 (orq's minimum) and `thinking` is unset, else dropped |
//! | Nugen `reasoning.enabled: false` | `thinking: {"type":"disabled"}` when `thinking` is unset, else dropped |
//! | Nugen `reasoning.exclude` | dropped |
//! | `logit_bias`, `functions`, `function_call`, `prediction`, `web_search_options`, `store`, `user`, `service_tier`, `prompt_truncate_len` | dropped (not in orq's schema) |
//! | unknown fields | as sent |
//! | roles `system`, `developer`, `user`, `assistant`, `tool` | as is |
//! | role `function` | 400 (orq has no function messages) |
//! | message `name`, `tool_calls`, `tool_call_id`, `refusal`, `audio` | as is |
//! | message `function_call` | dropped (orq has no function calls) |
//! | `X-Session-ID` header | `orq.thread.id` (unless the client set one) |

use serde_json::{Map, Value, json};

use super::http::Dialect;
use super::translate::{MessageRules, ORQ_POLICY_FIELDS, Translation};
use super::{CallCx, Prepared, Unsupported};
use crate::schema::{ChatRequest, PartType};

/// The orq dialect.
pub struct Orq;

/// Top-level canonical fields orq takes as they are.
const ACCEPTED: &[&str] = &[
    "messages",
    "metadata",
    "audio",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "n",
    "response_format",
    "reasoning_effort",
    "seed",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "modalities",
];

/// orq's minimum `thinking.budget_tokens`.
const MIN_THINKING_BUDGET: u64 = 1024;

const MESSAGES: MessageRules = MessageRules {
    developer: true,
    tool: true,
    function: false,
    assistant_tool_calls: true,
    user_parts: &[
        PartType::Text,
        PartType::ImageUrl,
        PartType::InputAudio,
        PartType::File,
    ],
    refusal_parts: true,
    fields: &["name", "tool_calls", "tool_call_id", "refusal", "audio"],
};

impl Dialect for Orq {
    fn prepare(
        &self,
        name: &str,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<Prepared, Unsupported> {
        let mut t = Translation::new(name, request);
        t.messages(&MESSAGES)?;
        t.effort_from_reasoning();
        reasoning_into_thinking(&mut t);
        t.drop_rest_of_reasoning();
        strip_policy_from_orq_object(&mut t);
        if let Some(session) = &cx.session_id {
            set_thread_id(&mut t.body, session);
        }
        t.keep_only(ACCEPTED, true);
        Ok(t.finish(&cx.upstream_model))
    }
}

/// Nugen's `reasoning.max_tokens` / `enabled: false` become orq's `thinking` where they fit.
fn reasoning_into_thinking(t: &mut Translation) {
    if t.body.contains_key("thinking") {
        return;
    }
    let Some(reasoning) = t.body.get_mut("reasoning").and_then(Value::as_object_mut) else {
        return;
    };
    let budget = reasoning.get("max_tokens").and_then(Value::as_u64);
    let thinking = if let Some(budget) = budget.filter(|b| *b >= MIN_THINKING_BUDGET) {
        reasoning.remove("max_tokens");
        json!({"type": "enabled", "budget_tokens": budget})
    } else if reasoning.get("enabled") == Some(&json!(false)) {
        reasoning.remove("enabled");
        json!({"type": "disabled"})
    } else {
        return;
    };
    t.body.insert("thinking".to_owned(), thinking);
}

/// orq also reads routing policy inside its deprecated `orq` object; it is the gateway's.
fn strip_policy_from_orq_object(t: &mut Translation) {
    let Some(orq) = t.body.get_mut("orq").and_then(Value::as_object_mut) else {
        return;
    };
    let mut removed = Vec::new();
    for field in ORQ_POLICY_FIELDS {
        if orq.remove(*field).is_some() {
            removed.push(format!("orq.{field}"));
        }
    }
    t.dropped.extend(removed);
}

/// Sets `orq.thread.id` unless the client already set it.
fn set_thread_id(body: &mut Map<String, Value>, session: &str) {
    let orq = body.entry("orq").or_insert_with(|| json!({}));
    let Some(orq) = orq.as_object_mut() else {
        return;
    };
    let thread = orq.entry("thread").or_insert_with(|| json!({}));
    if let Some(thread) = thread.as_object_mut() {
        thread.entry("id").or_insert_with(|| json!(session));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::translate::testing::send;

    fn prepare(body: Value, session: Option<&str>) -> Result<(Value, Vec<String>), Unsupported> {
        send(&Orq, body, session).map(|sent| (sent.wire, sent.dropped))
    }

    #[test]
    fn translation_table() {
        let (wire, dropped) = prepare(
            json!({"model": "orq/openai/gpt-4o",
                "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "hi"}],
                "reasoning": {"effort": "medium", "max_tokens": 4096, "exclude": true},
                "guardrails": [{"id": "orq_pii_detection", "execute_on": "input"}],
                "name": "trace-1", "orq": {"retry": {"count": 2}, "identity": {"id": "u1"}},
                "retry": {"count": 1}, "fallbacks": [{"model": "orq/x"}], "cache": {"type": "exact_match"},
                "variables": {"a": 1}, "timeout": {"call_timeout": 500},
                "load_balancer": {"type": "weight_based", "models": [{"model": "orq/y"}]},
                "logit_bias": {"1": 1}, "top_k": 3, "user": "u"}),
            Some("sess-9"),
        )
        .unwrap();
        assert_eq!(wire["model"], "openai/gpt-4o");
        assert_eq!(wire["messages"][0]["role"], "developer");
        assert_eq!(wire["reasoning_effort"], "medium");
        assert_eq!(
            wire["thinking"],
            json!({"type": "enabled", "budget_tokens": 4096})
        );
        assert_eq!(wire["guardrails"][0]["id"], "orq_pii_detection");
        assert_eq!(wire["name"], "trace-1");
        assert_eq!(wire["top_k"], 3);
        assert_eq!(
            wire["orq"],
            json!({"identity": {"id": "u1"}, "thread": {"id": "sess-9"}})
        );
        for absent in [
            "retry",
            "fallbacks",
            "cache",
            "variables",
            "timeout",
            "load_balancer",
            "reasoning",
            "logit_bias",
            "user",
        ] {
            assert!(wire.get(absent).is_none(), "{absent}");
        }
        assert_eq!(
            dropped,
            ["logit_bias", "orq.retry", "reasoning.exclude", "user"]
        );
    }

    #[test]
    fn a_small_reasoning_budget_does_not_fit_thinking() {
        let (wire, dropped) = prepare(
            json!({"model": "orq/m", "messages": [{"role": "user", "content": "hi"}],
                "reasoning": {"max_tokens": 100}}),
            None,
        )
        .unwrap();
        assert!(wire.get("thinking").is_none());
        assert_eq!(dropped, ["reasoning.max_tokens"]);
    }

    #[test]
    fn a_client_thread_id_wins_over_the_session_header() {
        let (wire, _) = prepare(
            json!({"model": "orq/m", "messages": [{"role": "user", "content": "hi"}],
                "orq": {"thread": {"id": "mine", "tags": ["t"]}}}),
            Some("header"),
        )
        .unwrap();
        assert_eq!(wire["orq"]["thread"], json!({"id": "mine", "tags": ["t"]}));
    }

    #[test]
    fn function_messages_are_rejected() {
        let body = json!({"model": "orq/m", "messages": [{"role": "function", "name": "f", "content": "1"}]});
        let err = prepare(body, None).unwrap_err();
        assert_eq!(err.param, "messages[0].role");
        assert!(err.message.contains("`orq`"));
    }
}
