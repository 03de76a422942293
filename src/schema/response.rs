//! Canonical responses: a whole completion and the chunks of a streamed one.
//!
//! These types read what upstreams send (leniently: absent or `null` fields take defaults the
//! normalizer later fills in) and write the normalized OpenAI shape. Unknown keys at every
//! level are kept in `extra` (Nugen's `confidence_score`, vLLM's `stop_reason`, reasoning
//! deltas ...).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::de::{Count, Timestamp, deserialize_with_extras};
use super::request::{FunctionCall, ToolCall};

/// The keys a response type does not know, each value kept as the upstream wrote it: checked
/// as JSON and passed on with one copy, never built into a tree of values.
pub(crate) type RawExtra = BTreeMap<String, Box<RawValue>>;

/// A non-streamed chat completion.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ChatResponse {
    /// Completion id.
    pub(crate) id: String,
    /// Always `chat.completion`.
    pub(crate) object: String,
    /// Unix seconds.
    pub(crate) created: i64,
    /// The model name the client sent.
    pub(crate) model: String,
    /// One choice per `n`.
    pub(crate) choices: Vec<Choice>,
    /// Token usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Usage>,
    /// Provider extras (`system_fingerprint`, `service_tier`, `confidence_score` ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(ChatResponse, "a chat completion object",
    required { "choices" => choices }
    optional {
        "id" => id, "object" => object, "created" => created as Timestamp,
        "model" => model, "usage" => usage,
    }
);

/// One choice of a completion.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Choice {
    /// Position in `choices`.
    pub(crate) index: u32,
    /// The assistant's message.
    pub(crate) message: ResponseMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter` or `function_call`.
    pub(crate) finish_reason: Option<String>,
    /// Log probabilities, or `null`.
    #[schema(value_type = Option<Object>)]
    pub(crate) logprobs: Option<Value>,
    /// Provider extras.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(Choice, "a choice object",
    required {}
    optional {
        "index" => index as Count, "message" => message, "finish_reason" => finish_reason,
        "logprobs" => logprobs,
    }
);

/// The assistant message of a choice.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ResponseMessage {
    /// Always `assistant`.
    pub(crate) role: String,
    /// The text, or `null` when the model only called tools.
    pub(crate) content: Option<String>,
    /// A refusal, or `null` (always present, as in OpenAI's shape).
    pub(crate) refusal: Option<String>,
    /// Tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<ToolCall>>,
    /// Deprecated function call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function_call: Option<FunctionCall>,
    /// Provider extras (`annotations`, `audio`, `reasoning_content` ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(ResponseMessage, "a message object",
    required {}
    optional {
        "role" => role, "content" => content, "refusal" => refusal,
        "tool_calls" => tool_calls, "function_call" => function_call,
    }
);

/// Token usage.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Usage {
    /// Prompt tokens.
    pub(crate) prompt_tokens: u64,
    /// Generated tokens.
    pub(crate) completion_tokens: u64,
    /// Prompt plus generated.
    pub(crate) total_tokens: u64,
    /// Provider details (`prompt_tokens_details`, `completion_tokens_details` ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(Usage, "a usage object",
    required {}
    optional {
        "prompt_tokens" => prompt_tokens as Count,
        "completion_tokens" => completion_tokens as Count,
        "total_tokens" => total_tokens as Count,
    }
);

/// One chunk of a streamed completion.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ChatChunk {
    /// The same for every chunk of a stream.
    pub(crate) id: String,
    /// Always `chat.completion.chunk`.
    pub(crate) object: String,
    /// Unix seconds, the same for every chunk.
    pub(crate) created: i64,
    /// The model name the client sent.
    pub(crate) model: String,
    /// Deltas; empty in the final usage chunk.
    pub(crate) choices: Vec<ChunkChoice>,
    /// Only in the final chunk, and only with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Usage>,
    /// Provider extras (`system_fingerprint` ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(ChatChunk, "a chat completion chunk object",
    required {}
    optional {
        "id" => id, "object" => object, "created" => created as Timestamp,
        "model" => model, "choices" => choices, "usage" => usage,
    }
);

/// One choice's delta within a chunk.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ChunkChoice {
    /// Position in `choices`.
    pub(crate) index: u32,
    /// What this chunk adds.
    pub(crate) delta: Delta,
    /// Set on the choice's last chunk.
    pub(crate) finish_reason: Option<String>,
    /// Log probabilities of this chunk's tokens, or `null` (always present, as in OpenAI's shape).
    #[schema(value_type = Option<Object>)]
    pub(crate) logprobs: Option<Value>,
    /// Provider extras.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(ChunkChoice, "a chunk choice object",
    required {}
    optional {
        "index" => index as Count, "delta" => delta, "finish_reason" => finish_reason,
        "logprobs" => logprobs,
    }
);

/// A message delta.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Delta {
    /// `assistant`, on the first delta of each choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<String>,
    /// Text to append.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<String>,
    /// Refusal text to append.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<String>,
    /// Tool-call fragments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<ToolCallDelta>>,
    /// Deprecated function-call fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function_call: Option<FunctionCallDelta>,
    /// Provider extras (`reasoning_content` ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(Delta, "a delta object",
    required {}
    optional {
        "role" => role, "content" => content, "refusal" => refusal,
        "tool_calls" => tool_calls, "function_call" => function_call,
    }
);

/// A fragment of one tool call; `id`, `type` and `function.name` come on its first fragment.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ToolCallDelta {
    /// Which call of the message this fragment belongs to (always set on output).
    pub(crate) index: Option<u32>,
    /// The call id (first fragment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// `function` (first fragment).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    /// Name (first fragment) and a piece of the arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function: Option<FunctionCallDelta>,
    /// Provider extras.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: RawExtra,
}

deserialize_with_extras!(ToolCallDelta, "a tool call delta object",
    required {}
    optional { "index" => index as Count, "id" => id, "type" => kind, "function" => function }
);

/// A fragment of a function call.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct FunctionCallDelta {
    /// The name (first fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// A piece of the JSON arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nugen_float_created_and_extras_are_kept() {
        let body = r#"{"id":"nugen-abc123","object":"chat.completion","created":1704123600.0,
            "model":"nugen-flash-instruct","choices":[{"index":0,"message":{"role":"assistant",
            "content":"The capital of France is Paris."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":20,"completion_tokens":8,"total_tokens":28},
            "confidence_score":89.5454}"#;
        let r: ChatResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.created, 1_704_123_600);
        assert_eq!(r.extra["confidence_score"].get(), "89.5454");
        let out = serde_json::to_value(&r).unwrap();
        assert_eq!(out["created"], serde_json::json!(1_704_123_600));
        assert_eq!(out["choices"][0]["logprobs"], Value::Null);
        assert_eq!(out["confidence_score"], serde_json::json!(89.5454));
    }

    #[test]
    fn orq_number_typed_counts_read_as_integers() {
        let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0.0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":3.0,"completion_tokens":1,"total_tokens":4.0}}"#;
        let r: ChatResponse = serde_json::from_str(body).unwrap();
        let usage = r.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (3, 4));
        let out = serde_json::to_value(&r.choices[0]).unwrap();
        assert_eq!(out["index"], serde_json::json!(0));
    }

    #[test]
    fn chunk_keeps_unknown_delta_fields() {
        let chunk = r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":null}]}"#;
        let c: ChatChunk = serde_json::from_str(chunk).unwrap();
        assert_eq!(
            c.choices[0].delta.extra["reasoning_content"].get(),
            "\"hmm\""
        );
    }
}
