//! Validation of a parsed request: the rules serde cannot check (ranges, which role needs
//! which field, cross-field rules from the OpenAI, Nugen and orq documents). Every problem is
//! collected, each naming its field path.

use serde_json::Value;

use super::policy::LoadBalancer;
use super::request::*;
use crate::error::{FieldError, FieldPath, PathSegment};

/// Collects every rule violation of a parsed request; empty means valid.
pub fn validate(request: &ChatRequest) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.request(request);
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

const MAX_TOOLS: usize = 128;
const MAX_STOP: usize = 4;
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
/// Per-request `fallbacks` and `load_balancer.models` entries.
const MAX_ROUTING_MODELS: usize = 16;
/// The shortest per-request `timeout.call_timeout`, in ms.
const MIN_CALL_TIMEOUT_MS: u64 = 100;

impl Validator {
    fn fail(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError::invalid(path, message));
    }

    fn missing(&mut self, path: FieldPath) {
        self.errors.push(FieldError::missing(path));
    }

    fn range_f64(&mut self, name: &str, value: Option<f64>, min: f64, max: f64) {
        if let Some(x) = value
            && !(min..=max).contains(&x)
        {
            self.fail(
                FieldPath::key(name),
                format!("`{name}` must be between {min} and {max}, got {x}"),
            );
        }
    }

    /// `path` is built only for an error (most requests have none).
    fn range_u64(
        &mut self,
        path: impl FnOnce() -> FieldPath,
        value: Option<u64>,
        min: u64,
        max: u64,
    ) {
        if let Some(x) = value
            && !(min..=max).contains(&x)
        {
            let path = path();
            let message = if max == u64::MAX {
                format!("`{path}` must be at least {min}, got {x}")
            } else {
                format!("`{path}` must be between {min} and {max}, got {x}")
            };
            self.fail(path, message);
        }
    }

    fn max_len(&mut self, path: FieldPath, len: usize, max: usize) {
        if len > max {
            let message = format!("`{path}` may have at most {max} entries, got {len}");
            self.fail(path, message);
        }
    }

    fn request(&mut self, r: &ChatRequest) {
        if r.model.trim().is_empty() {
            self.fail(FieldPath::key("model"), "`model` must not be empty");
        }
        self.messages(&r.messages);
        self.sampling(r);
        self.tools(r);
        self.streaming(r);
        self.output(r);
        self.metadata(r.metadata.as_ref());
        self.routing_policy(r);
    }

    fn sampling(&mut self, r: &ChatRequest) {
        self.range_f64("temperature", r.temperature, 0.0, 2.0);
        self.range_f64("top_p", r.top_p, 0.0, 1.0);
        self.range_f64("frequency_penalty", r.frequency_penalty, -2.0, 2.0);
        self.range_f64("presence_penalty", r.presence_penalty, -2.0, 2.0);
        self.range_u64(|| FieldPath::key("n"), r.n.map(u64::from), 1, 128);
        self.range_u64(|| FieldPath::key("max_tokens"), r.max_tokens, 1, u64::MAX);
        self.range_u64(
            || FieldPath::key("max_completion_tokens"),
            r.max_completion_tokens,
            1,
            u64::MAX,
        );
        self.range_u64(
            || FieldPath::key("top_logprobs"),
            r.top_logprobs.map(u64::from),
            0,
            20,
        );
        if r.top_logprobs.is_some() && r.logprobs != Some(true) {
            self.fail(
                FieldPath::key("top_logprobs"),
                "`top_logprobs` requires `logprobs` to be true",
            );
        }
        self.stop(r.stop.as_ref());
        self.logit_bias(r.logit_bias.as_ref());
        if let Some(reasoning) = &r.reasoning {
            self.range_u64(
                || FieldPath::key("reasoning").field("max_tokens"),
                reasoning.max_tokens,
                1,
                u64::MAX,
            );
        }
    }

    fn stop(&mut self, stop: Option<&Stop>) {
        let Some(Stop::Many(items)) = stop else {
            return;
        };
        if items.is_empty() {
            self.fail(
                FieldPath::key("stop"),
                "`stop` must have at least one sequence",
            );
        } else if items.len() > MAX_STOP {
            self.fail(
                FieldPath::key("stop"),
                format!(
                    "`stop` may have at most {MAX_STOP} sequences, got {}",
                    items.len()
                ),
            );
        }
    }

    fn logit_bias(&mut self, bias: Option<&serde_json::Map<String, Value>>) {
        let Some(bias) = bias else { return };
        for (token, value) in bias {
            let path = FieldPath::key("logit_bias").field(token);
            if token.parse::<u64>().is_err() {
                self.fail(
                    path.clone(),
                    format!("`logit_bias` keys must be token ids, got `{token}`"),
                );
            }
            match value.as_i64() {
                Some(b) if (-100..=100).contains(&b) => {}
                _ => self.fail(
                    path.clone(),
                    format!("`{path}` must be an integer between -100 and 100, got {value}"),
                ),
            }
        }
    }

    fn messages(&mut self, messages: &[Message]) {
        let mut path = FieldPath::key("messages");
        if messages.is_empty() {
            self.fail(path, "`messages` must have at least one message");
            return;
        }
        // One path, its last segment changed per message: a copy per message cost two
        // allocations for nothing on a valid request.
        path.0.push(PathSegment::Index(0));
        for (i, message) in messages.iter().enumerate() {
            if let Some(last) = path.0.last_mut() {
                *last = PathSegment::Index(i);
            }
            self.message(&path, message);
        }
    }

    fn message(&mut self, path: &FieldPath, m: &Message) {
        if let Some(name) = &m.name {
            self.name_pattern(path.field("name"), name);
        }
        if m.tool_calls.is_some() && m.role != Role::Assistant {
            self.fail(
                path.field("tool_calls"),
                format!(
                    "`{}` is only allowed on assistant messages, not {}",
                    path.field("tool_calls"),
                    m.role.as_str()
                ),
            );
        }
        match m.role {
            Role::System | Role::Developer => self.required_content(path, m, &[PartType::Text]),
            Role::User => self.required_content(
                path,
                m,
                &[
                    PartType::Text,
                    PartType::ImageUrl,
                    PartType::InputAudio,
                    PartType::File,
                ],
            ),
            Role::Tool => {
                self.required_content(path, m, &[PartType::Text]);
                if m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                    self.missing(path.field("tool_call_id"));
                }
            }
            Role::Function => self.function_message(path, m),
            Role::Assistant => self.assistant_message(path, m),
        }
    }

    fn required_content(&mut self, path: &FieldPath, m: &Message, allowed: &[PartType]) {
        match &m.content {
            None => self.missing(path.field("content")),
            // Text needs no check (nor a path).
            Some(MessageContent::Text(_)) => {}
            Some(content) => self.content(&path.field("content"), content, m.role, allowed),
        }
    }

    fn function_message(&mut self, path: &FieldPath, m: &Message) {
        if m.name.is_none() {
            self.missing(path.field("name"));
        }
        if let Some(MessageContent::Parts(_)) = m.content {
            self.fail(
                path.field("content"),
                format!(
                    "`{}` must be a string for function messages",
                    path.field("content")
                ),
            );
        }
    }

    fn assistant_message(&mut self, path: &FieldPath, m: &Message) {
        if m.content.is_none() && m.tool_calls.is_none() && m.function_call.is_none() {
            self.fail(
                path.field("content"),
                format!(
                    "`{}` is required unless `tool_calls` or `function_call` is set",
                    path.field("content")
                ),
            );
        }
        if let Some(content @ MessageContent::Parts(_)) = &m.content {
            let content_path = path.field("content");
            self.content(
                &content_path,
                content,
                Role::Assistant,
                &[PartType::Text, PartType::Refusal],
            );
            if let MessageContent::Parts(parts) = content {
                let refusals = parts.iter().filter(|p| p.kind == PartType::Refusal).count();
                if refusals > 0 && parts.len() > 1 {
                    self.fail(
                        content_path.clone(),
                        format!("`{content_path}` may hold text parts or exactly one refusal part"),
                    );
                }
            }
        }
        for (i, call) in m.tool_calls.iter().flatten().enumerate() {
            let call_path = path.field("tool_calls").index(i);
            if call.id.is_empty() {
                self.missing(call_path.field("id"));
            }
            match call.kind.as_str() {
                "" => self.missing(call_path.field("type")),
                "function" => {}
                _ => self.fail(
                    call_path.field("type"),
                    format!("`{}` must be `function`", call_path.field("type")),
                ),
            }
            if call.function.name.is_empty() {
                self.missing(call_path.field("function").field("name"));
            }
        }
    }

    fn content(
        &mut self,
        path: &FieldPath,
        content: &MessageContent,
        role: Role,
        allowed: &[PartType],
    ) {
        let MessageContent::Parts(parts) = content else {
            return;
        };
        if parts.is_empty() {
            self.fail(
                path.clone(),
                format!("`{path}` must have at least one content part"),
            );
        }
        for (i, part) in parts.iter().enumerate() {
            let part_path = path.index(i);
            if !allowed.contains(&part.kind) {
                let kind = serde_json::to_value(part.kind).unwrap_or_default();
                self.fail(
                    part_path.field("type"),
                    format!(
                        "`{}`: {} parts are not allowed in {} messages",
                        part_path.field("type"),
                        kind.as_str().unwrap_or("this kind of"),
                        role.as_str()
                    ),
                );
                continue;
            }
            self.part(&part_path, part);
        }
    }

    fn part(&mut self, path: &FieldPath, part: &ContentPart) {
        let (field, present) = match part.kind {
            PartType::Text => ("text", part.text.is_some()),
            PartType::ImageUrl => ("image_url", part.image_url.is_some()),
            PartType::InputAudio => ("input_audio", part.input_audio.is_some()),
            PartType::File => ("file", part.file.is_some()),
            PartType::Refusal => ("refusal", part.refusal.is_some()),
        };
        if !present {
            self.missing(path.field(field));
            return;
        }
        if let Some(image) = &part.image_url
            && image.url.is_empty()
        {
            let url = path.field("image_url").field("url");
            self.fail(url.clone(), format!("`{url}` must not be empty"));
        }
        if let Some(file) = &part.file
            && file.file_data.is_none()
            && file.file_id.is_none()
        {
            let file_path = path.field("file");
            self.fail(
                file_path.clone(),
                format!("`{file_path}` needs `file_data` or `file_id`"),
            );
        }
    }

    /// Names of functions and participants: letters, digits, `_`, `-`; 1 to 64 characters.
    fn name_pattern(&mut self, path: FieldPath, name: &str) {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            self.fail(
                path.clone(),
                format!(
                    "`{path}` must be 1 to 64 characters of a-z, A-Z, 0-9, `_` or `-`, got {name:?}"
                ),
            );
        }
    }

    fn tools(&mut self, r: &ChatRequest) {
        let tools = r.tools.as_deref().unwrap_or_default();
        if tools.len() > MAX_TOOLS {
            self.fail(
                FieldPath::key("tools"),
                format!(
                    "`tools` may have at most {MAX_TOOLS} tools, got {}",
                    tools.len()
                ),
            );
        }
        for (i, tool) in tools.iter().enumerate() {
            let function = FieldPath::key("tools").index(i).field("function");
            self.function_def(&function, &tool.function);
        }
        if let Some(ToolChoice::Named(named)) = &r.tool_choice {
            let declared = tools.iter().any(|t| t.function.name == named.function.name);
            if !declared {
                let path = FieldPath::key("tool_choice")
                    .field("function")
                    .field("name");
                self.fail(
                    path,
                    format!(
                        "`tool_choice` names the function `{}`, which is not declared in `tools`",
                        named.function.name
                    ),
                );
            }
        }
        if r.tool_choice == Some(ToolChoice::Mode(ToolChoiceMode::Required)) && tools.is_empty() {
            self.fail(
                FieldPath::key("tool_choice"),
                "`tool_choice` is `required` but no `tools` are declared",
            );
        }
        self.functions(r);
    }

    fn functions(&mut self, r: &ChatRequest) {
        let functions = r.functions.as_deref().unwrap_or_default();
        if r.functions.is_some() && !(1..=MAX_TOOLS).contains(&functions.len()) {
            self.fail(
                FieldPath::key("functions"),
                format!(
                    "`functions` must have 1 to {MAX_TOOLS} functions, got {}",
                    functions.len()
                ),
            );
        }
        for (i, function) in functions.iter().enumerate() {
            self.function_def(&FieldPath::key("functions").index(i), function);
        }
        if let Some(FunctionCallChoice::Named(named)) = &r.function_call
            && !functions.iter().any(|f| f.name == named.name)
        {
            self.fail(
                FieldPath::key("function_call").field("name"),
                format!(
                    "`function_call` names the function `{}`, which is not declared in `functions`",
                    named.name
                ),
            );
        }
    }

    fn function_def(&mut self, path: &FieldPath, f: &FunctionDef) {
        self.name_pattern(path.field("name"), &f.name);
        if let Some(parameters) = &f.parameters
            && !parameters.is_object()
        {
            let p = path.field("parameters");
            self.fail(p.clone(), format!("`{p}` must be a JSON Schema object"));
        }
    }

    fn streaming(&mut self, r: &ChatRequest) {
        if r.stream_options.is_some() && !r.is_stream() {
            self.fail(
                FieldPath::key("stream_options"),
                "`stream_options` is only allowed when `stream` is true",
            );
        }
    }

    fn output(&mut self, r: &ChatRequest) {
        if let Some(format) = &r.response_format {
            let path = FieldPath::key("response_format");
            match (&format.kind, &format.json_schema) {
                (ResponseFormatType::JsonSchema, None) => self.missing(path.field("json_schema")),
                (ResponseFormatType::JsonSchema, Some(schema)) => {
                    let schema_path = path.field("json_schema");
                    self.name_pattern(schema_path.field("name"), &schema.name);
                    if let Some(s) = &schema.schema
                        && !s.is_object()
                    {
                        let p = schema_path.field("schema");
                        self.fail(p.clone(), format!("`{p}` must be a JSON Schema object"));
                    }
                }
                _ => {}
            }
        }
        let wants_audio = r
            .modalities
            .as_deref()
            .is_some_and(|m| m.contains(&Modality::Audio));
        if wants_audio && r.audio.is_none() {
            self.fail(
                FieldPath::key("audio"),
                "`audio` is required when `modalities` includes `audio`",
            );
        }
    }

    fn metadata(&mut self, metadata: Option<&serde_json::Map<String, Value>>) {
        let Some(metadata) = metadata else { return };
        let path = FieldPath::key("metadata");
        if metadata.len() > MAX_METADATA_PAIRS {
            self.fail(
                path.clone(),
                format!(
                    "`metadata` may have at most {MAX_METADATA_PAIRS} pairs, got {}",
                    metadata.len()
                ),
            );
        }
        for (key, value) in metadata {
            let entry = path.field(key);
            if key.chars().count() > MAX_METADATA_KEY {
                self.fail(
                    entry.clone(),
                    format!("`metadata` keys may have at most {MAX_METADATA_KEY} characters"),
                );
            }
            match value.as_str() {
                None => self.fail(entry.clone(), format!("`{entry}` must be a string")),
                Some(s) if s.chars().count() > MAX_METADATA_VALUE => self.fail(
                    entry.clone(),
                    format!("`{entry}` may have at most {MAX_METADATA_VALUE} characters"),
                ),
                Some(_) => {}
            }
        }
    }

    fn routing_policy(&mut self, r: &ChatRequest) {
        if let Some(retry) = &r.retry {
            let path = FieldPath::key("retry");
            self.range_u64(|| path.field("count"), retry.count.map(u64::from), 1, 5);
            if let Some(codes) = &retry.on_codes {
                if codes.is_empty() {
                    let p = path.field("on_codes");
                    self.fail(
                        p.clone(),
                        format!("`{p}` must have at least one status code"),
                    );
                }
                for (i, code) in codes.iter().enumerate() {
                    self.range_u64(
                        || path.field("on_codes").index(i),
                        Some(u64::from(*code)),
                        100,
                        599,
                    );
                }
            }
        }
        if let Some(fallbacks) = &r.fallbacks {
            self.max_len(
                FieldPath::key("fallbacks"),
                fallbacks.len(),
                MAX_ROUTING_MODELS,
            );
        }
        for (i, fallback) in r.fallbacks.iter().flatten().enumerate() {
            if fallback.model.trim().is_empty() {
                let p = FieldPath::key("fallbacks").index(i).field("model");
                self.fail(p.clone(), format!("`{p}` must not be empty"));
            }
        }
        if let Some(timeout) = &r.timeout {
            self.range_u64(
                || FieldPath::key("timeout").field("call_timeout"),
                Some(timeout.call_timeout),
                MIN_CALL_TIMEOUT_MS,
                u64::MAX,
            );
        }
        if let Some(cache) = &r.cache {
            self.range_u64(
                || FieldPath::key("cache").field("ttl"),
                cache.ttl.map(u64::from),
                1,
                259_200,
            );
        }
        if let Some(balancer) = &r.load_balancer {
            self.load_balancer(balancer);
        }
    }

    fn load_balancer(&mut self, balancer: &LoadBalancer) {
        let path = FieldPath::key("load_balancer").field("models");
        if balancer.models.is_empty() {
            self.fail(
                path.clone(),
                format!("`{path}` must have at least one model"),
            );
        }
        self.max_len(path.clone(), balancer.models.len(), MAX_ROUTING_MODELS);
        for (i, entry) in balancer.models.iter().enumerate() {
            let entry_path = path.index(i);
            if entry.model.trim().is_empty() {
                let p = entry_path.field("model");
                self.fail(p.clone(), format!("`{p}` must not be empty"));
            }
            if let Some(weight) = entry.weight
                && !(0.001..=1.0).contains(&weight)
            {
                let p = entry_path.field("weight");
                self.fail(
                    p.clone(),
                    format!("`{p}` must be between 0.001 and 1, got {weight}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
