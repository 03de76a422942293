//! The canonical chat request: every field of OpenAI's `CreateChatCompletionRequest`, Nugen's
//! own fields and orq's per-request routing policy, in one type both ingress dialects parse.
//!
//! Unknown keys are kept in `extra` maps (top level, messages, content parts, tools, tool calls)
//! and forwarded. Shape rules that serde cannot express (which role needs which field, ranges,
//! cross-field rules) live in [`super::validate`].

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::de::{deserialize_with_extras, string_or};
use super::policy::{CachePolicy, FallbackModel, LoadBalancer, RetryPolicy, TimeoutPolicy};

/// Unknown keys of a JSON object, kept verbatim.
pub(crate) type Extra = Map<String, Value>;

/// A chat completion request as clients send it to either ingress path.
///
/// `Serialize` writes the body forwarded to an OpenAI-shaped upstream *minus* the per-call
/// fields each adapter sets itself (`model`, `stream`, `stream_options`) and minus the routing
/// policy, which the gateway consumes and never forwards: those are marked `not_forwarded`
/// (not `skip_serializing`, which would also hide them from the OpenAPI document).
///
/// The field names the parser knows are `ChatRequest::FIELDS`, generated with the parser;
/// a test keeps them equal to this struct's fields.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ChatRequest {
    /// `<provider>/<model>` or an alias from the config.
    #[serde(skip_serializing_if = "not_forwarded")]
    #[schema(required = true)]
    pub(crate) model: String,
    /// The conversation so far; at least one message.
    pub(crate) messages: Vec<Message>,

    /// Sampling temperature, 0 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f64>,
    /// Nucleus sampling mass, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_p: Option<f64>,
    /// Top-k sampling (Nugen, orq).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_k: Option<i64>,
    /// Number of choices, 1 to 128.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) n: Option<u32>,
    /// Deprecated upper bound on generated tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u64>,
    /// Upper bound on generated tokens, reasoning included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_completion_tokens: Option<u64>,
    /// -2 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) frequency_penalty: Option<f64>,
    /// -2 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) presence_penalty: Option<f64>,
    /// Token id (as a string) to a bias from -100 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logit_bias: Option<Map<String, Value>>,
    /// Return log probabilities of the output tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logprobs: Option<bool>,
    /// 0 to 20 most likely tokens per position; needs `logprobs: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_logprobs: Option<u32>,
    /// Best-effort deterministic sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<i64>,
    /// Up to 4 stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) stream: Option<bool>,
    /// Streaming options; only with `stream: true`.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) stream_options: Option<StreamOptions>,

    /// Tools (functions) the model may call; at most 128.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tools: Option<Vec<Tool>>,
    /// Which tool, if any, the model must call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_choice: Option<ToolChoice>,
    /// Allow several tool calls in one turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parallel_tool_calls: Option<bool>,
    /// Deprecated: functions the model may call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) functions: Option<Vec<FunctionDef>>,
    /// Deprecated: `none`, `auto` or `{"name": ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function_call: Option<FunctionCallChoice>,
    /// Text, JSON object or JSON schema output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_format: Option<ResponseFormat>,
    /// Reasoning effort for reasoning models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reasoning_effort: Option<ReasoningEffort>,
    /// Output modalities: `text`, `audio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) modalities: Option<Vec<Modality>>,
    /// Audio output parameters; required when `modalities` has `audio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audio: Option<AudioOutput>,
    /// Predicted output content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prediction: Option<Prediction>,
    /// Web search tool options.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) web_search_options: Option<Value>,
    /// Up to 16 string pairs; keys up to 64 characters, values up to 512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<Map<String, Value>>,
    /// Store the completion upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) store: Option<bool>,
    /// End-user identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    /// Upstream latency tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) service_tier: Option<String>,

    /// Nugen: size to which chat prompts are truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prompt_truncate_len: Option<u64>,
    /// Nugen: reasoning configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reasoning: Option<ReasoningConfig>,

    /// Routing policy (orq shape): retries of each target.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) retry: Option<RetryPolicy>,
    /// Routing policy (orq shape): models tried in order when the primary fails.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) fallbacks: Option<Vec<FallbackModel>>,
    /// Routing policy (orq shape): per-attempt timeout.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) timeout: Option<TimeoutPolicy>,
    /// Routing policy (orq shape): weighted choice among models.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) load_balancer: Option<LoadBalancer>,
    /// Routing policy (orq shape): response cache.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) cache: Option<CachePolicy>,
    /// Routing policy (orq shape): `{{name}}` substitutions in message text.
    #[serde(skip_serializing_if = "not_forwarded")]
    pub(crate) variables: Option<Map<String, Value>>,

    /// Unknown top-level fields, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,

    /// The client's body while the request is still exactly what it says, for forwarding its
    /// members as written ([`ChatRequest::write_forwarded_members`]). Whatever changes the
    /// request drops it.
    #[serde(skip)]
    #[schema(ignore)]
    pub(crate) source: Option<Bytes>,
}

deserialize_with_extras!(ChatRequest, "a chat completion request object",
    required { "model" => model, "messages" => messages }
    optional {
        "temperature" => temperature, "top_p" => top_p, "top_k" => top_k, "n" => n,
        "max_tokens" => max_tokens, "max_completion_tokens" => max_completion_tokens,
        "frequency_penalty" => frequency_penalty, "presence_penalty" => presence_penalty,
        "logit_bias" => logit_bias, "logprobs" => logprobs, "top_logprobs" => top_logprobs,
        "seed" => seed, "stop" => stop, "stream" => stream, "stream_options" => stream_options,
        "tools" => tools, "tool_choice" => tool_choice,
        "parallel_tool_calls" => parallel_tool_calls, "functions" => functions,
        "function_call" => function_call, "response_format" => response_format,
        "reasoning_effort" => reasoning_effort, "modalities" => modalities, "audio" => audio,
        "prediction" => prediction, "web_search_options" => web_search_options,
        "metadata" => metadata, "store" => store, "user" => user,
        "service_tier" => service_tier, "prompt_truncate_len" => prompt_truncate_len,
        "reasoning" => reasoning, "retry" => retry, "fallbacks" => fallbacks,
        "timeout" => timeout, "load_balancer" => load_balancer, "cache" => cache,
        "variables" => variables,
    }
);

/// Marks a field the gateway consumes itself: it never appears in a forwarded body.
fn not_forwarded<T>(_: &T) -> bool {
    true
}

impl ChatRequest {
    /// The fields marked `not_forwarded`: the per-call fields each adapter sets itself and the
    /// routing policy.
    pub(crate) const CONSUMED: &'static [&'static str] = &[
        "model",
        "stream",
        "stream_options",
        "retry",
        "fallbacks",
        "timeout",
        "load_balancer",
        "cache",
        "variables",
    ];
}

impl ChatRequest {
    /// Whether the client asked for a stream.
    pub(crate) fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a streamed answer must end with a usage chunk.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The effective completion-token limit (`max_completion_tokens` wins over `max_tokens`).
    pub(crate) fn token_limit(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// The author of a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Instructions from the application (o1 and newer).
    Developer,
    /// Instructions from the application.
    System,
    /// The end user.
    #[default]
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// Deprecated: a function's result.
    Function,
}

impl Role {
    /// The role as it appears on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

/// One message of the conversation. Which fields a role needs is checked by validation.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Message {
    /// The author.
    pub(crate) role: Role,
    /// Text or content parts; `null` allowed for assistant messages with tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<MessageContent>,
    /// Participant name: letters, digits, `_` and `-`, at most 64 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Assistant: the tool calls it made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<ToolCall>>,
    /// Tool: the call this message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_call_id: Option<String>,
    /// Assistant: a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<String>,
    /// Assistant (deprecated): the function call it made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function_call: Option<FunctionCall>,
    /// Assistant: a previous audio response, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) audio: Option<Value>,
    /// Unknown fields, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(Message, "a message object",
    required { "role" => role }
    optional {
        "content" => content, "name" => name, "tool_calls" => tool_calls,
        "tool_call_id" => tool_call_id, "refusal" => refusal,
        "function_call" => function_call, "audio" => audio,
    }
);

impl Message {
    /// The message's text: the string content, or its text parts joined by a space.
    pub(crate) fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => {
                let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
                texts.join(" ")
            }
        }
    }
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts (text, image_url, input_audio, file, refusal).
    Parts(Vec<ContentPart>),
}

string_or!(MessageContent, "a string or an array of content parts",
    str => |v: &str| Ok(MessageContent::Text(v.to_owned())),
    seq => MessageContent::Parts);

/// The kind of a content part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PartType {
    /// `text`
    #[default]
    Text,
    /// `image_url`
    ImageUrl,
    /// `input_audio`
    InputAudio,
    /// `file`
    File,
    /// `refusal` (assistant messages)
    Refusal,
}

/// One content part; the field named by `type` must be present (checked by validation).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ContentPart {
    /// The part's kind.
    #[serde(rename = "type")]
    pub(crate) kind: PartType,
    /// `text` parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// `image_url` parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) image_url: Option<ImageUrl>,
    /// `input_audio` parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input_audio: Option<InputAudio>,
    /// `file` parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<FileData>,
    /// `refusal` parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<String>,
    /// Unknown fields (e.g. `cache_control`), forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(ContentPart, "a content part object",
    required { "type" => kind }
    optional {
        "text" => text, "image_url" => image_url, "input_audio" => input_audio,
        "file" => file, "refusal" => refusal,
    }
);

/// An image by URL or `data:` URL.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct ImageUrl {
    /// The URL or base64 data URL.
    pub(crate) url: String,
    /// `auto`, `low` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<ImageDetail>,
}

/// Image detail level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ImageDetail {
    /// Let the model choose.
    Auto,
    /// Low fidelity.
    Low,
    /// High fidelity.
    High,
}

/// Base64 audio input.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct InputAudio {
    /// Base64-encoded audio.
    pub(crate) data: String,
    /// `wav` or `mp3`.
    pub(crate) format: InputAudioFormat,
}

/// Input audio encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InputAudioFormat {
    /// WAV
    Wav,
    /// MP3
    Mp3,
}

/// A file input: inline data or an uploaded file's id.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct FileData {
    /// Name used when passing the file as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    /// Base64-encoded file content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file_data: Option<String>,
    /// Id of an uploaded file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file_id: Option<String>,
}

/// A tool call made by the assistant (request history and responses).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ToolCall {
    /// The call's id, echoed by the tool message answering it.
    pub(crate) id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The function and its JSON arguments.
    pub(crate) function: FunctionCall,
    /// Unknown fields (e.g. orq's `thought_signature`), forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

// `id` and `type` may be absent when read (validation and normalization deal with them), so
// a lenient upstream answer is not lost for want of `"type": "function"`.
deserialize_with_extras!(ToolCall, "a tool call object",
    required { "function" => function }
    optional { "id" => id, "type" => kind }
);

/// A function name with its arguments as a JSON string.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct FunctionCall {
    /// The function's name.
    pub(crate) name: String,
    /// The arguments, as JSON text generated by the model.
    pub(crate) arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub(crate) kind: ToolType,
    /// The function's declaration.
    pub(crate) function: FunctionDef,
    /// Unknown fields, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(Tool, "a tool object",
    required { "type" => kind, "function" => function }
    optional {}
);

/// Tool kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ToolType {
    /// A function tool.
    #[default]
    Function,
}

/// A function declaration.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct FunctionDef {
    /// Letters, digits, `_` and `-`, at most 64 characters.
    pub(crate) name: String,
    /// What the function does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) parameters: Option<Value>,
    /// Strict schema adherence.
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
    /// Unknown fields, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(FunctionDef, "a function object",
    required { "name" => name }
    optional { "description" => description, "parameters" => parameters, "strict" => strict }
);

/// `none`, `auto`, `required`, or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum ToolChoice {
    /// A mode.
    Mode(ToolChoiceMode),
    /// Call this function.
    Named(NamedToolChoice),
}

string_or!(ToolChoice, "\"none\", \"auto\", \"required\" or a named tool object",
    str => |v: &str| match v {
        "none" => Ok(ToolChoice::Mode(ToolChoiceMode::None)),
        "auto" => Ok(ToolChoice::Mode(ToolChoiceMode::Auto)),
        "required" => Ok(ToolChoice::Mode(ToolChoiceMode::Required)),
        other => Err(serde::de::Error::unknown_variant(other, &["none", "auto", "required"])),
    },
    map => ToolChoice::Named);

/// Tool choice modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ToolChoiceMode {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// Call at least one tool.
    Required,
}

/// `{"type": "function", "function": {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct NamedToolChoice {
    /// Always `function`.
    #[serde(rename = "type")]
    pub(crate) kind: ToolType,
    /// The function to call.
    pub(crate) function: FunctionName,
}

/// A function named by a choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct FunctionName {
    /// The function's name.
    pub(crate) name: String,
}

/// Deprecated `function_call`: `none`, `auto` or `{"name": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum FunctionCallChoice {
    /// `none` or `auto`.
    Mode(FunctionCallMode),
    /// Call this function.
    Named(FunctionName),
}

string_or!(FunctionCallChoice, "\"none\", \"auto\" or {\"name\": ...}",
    str => |v: &str| match v {
        "none" => Ok(FunctionCallChoice::Mode(FunctionCallMode::None)),
        "auto" => Ok(FunctionCallChoice::Mode(FunctionCallMode::Auto)),
        other => Err(serde::de::Error::unknown_variant(other, &["none", "auto"])),
    },
    map => FunctionCallChoice::Named);

/// Function call modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FunctionCallMode {
    /// Never call a function.
    None,
    /// The model decides.
    Auto,
}

/// Stop sequences: one string or up to four.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Stop {
    /// One sequence.
    One(String),
    /// Several sequences.
    Many(Vec<String>),
}

string_or!(Stop, "a string or an array of strings",
    str => |v: &str| Ok(Stop::One(v.to_owned())),
    seq => Stop::Many);

/// Streaming options.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct StreamOptions {
    /// End the stream with a usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) include_usage: Option<bool>,
    /// Unknown options, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(StreamOptions, "a stream options object",
    required {}
    optional { "include_usage" => include_usage }
);

/// The output format.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub(crate) kind: ResponseFormatType,
    /// Required for `json_schema`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) json_schema: Option<JsonSchemaFormat>,
    /// Unknown fields, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(ResponseFormat, "a response format object",
    required { "type" => kind }
    optional { "json_schema" => json_schema }
);

/// Response format kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResponseFormatType {
    /// Plain text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema,
}

/// Structured output configuration.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct JsonSchemaFormat {
    /// Letters, digits, `_` and `-`, at most 64 characters.
    pub(crate) name: String,
    /// What the format is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// The JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) schema: Option<Value>,
    /// Strict schema adherence.
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
    /// Unknown fields, forwarded unchanged.
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) extra: Extra,
}

deserialize_with_extras!(JsonSchemaFormat, "a json_schema object",
    required { "name" => name }
    optional { "description" => description, "schema" => schema, "strict" => strict }
);

/// Reasoning effort levels (OpenAI, orq and Nugen spellings together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReasoningEffort {
    /// No reasoning.
    None,
    /// Minimal.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Extra high.
    Xhigh,
}

/// Output modalities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Modality {
    /// Text output.
    Text,
    /// Audio output.
    Audio,
}

/// Audio output parameters.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct AudioOutput {
    /// The voice.
    voice: String,
    /// `wav`, `mp3`, `flac`, `opus` or `pcm16`.
    pub(crate) format: AudioFormat,
}

/// Audio output encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AudioFormat {
    /// WAV
    Wav,
    /// MP3
    Mp3,
    /// FLAC
    Flac,
    /// Opus
    Opus,
    /// 16-bit PCM
    Pcm16,
}

/// Predicted output.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct Prediction {
    /// Always `content`.
    #[serde(rename = "type")]
    pub(crate) kind: PredictionType,
    /// The predicted text or text parts.
    pub(crate) content: MessageContent,
}

/// Prediction kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PredictionType {
    /// Static content.
    Content,
}

/// Nugen's reasoning configuration.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct ReasoningConfig {
    /// Effort level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) effort: Option<ReasoningEffort>,
    /// Token limit for reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u64>,
    /// Exclude reasoning tokens from the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exclude: Option<bool>,
    /// Enable reasoning with defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) enabled: Option<bool>,
}
