//! Request translation shared by the adapters of non-OpenAI dialects.
//!
//! The canonical request is serialized once into a JSON object (known fields that are unset
//! are absent; routing policy, `model`, `stream` and `stream_options` never appear). An
//! adapter then renames or reshapes what has an equivalent in its dialect, and
//! [`Translation::keep_only`] drops every other known field the provider does not take,
//! recording its name for `x-llmgate-dropped-params`. Unknown fields are forwarded, except
//! orq's own fields, which only an orq upstream receives. What a provider cannot take in any
//! form (a role, a content part kind) is an [`Unsupported`] error naming provider and field.

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Prepared, Unsupported};
use crate::schema::{ChatRequest, MessageContent, PartType, Role};

/// orq's own request fields that are not routing policy: forwarded to orq only.
pub(crate) const ORQ_FIELDS: &[&str] = &[
    "orq",
    "guardrails",
    "knowledge_bases",
    "identity",
    "contact",
    "thread",
    "name",
    "thinking",
    "prompt",
    "inputs",
];

/// Routing policy as orq also accepts it inside its deprecated `orq` object; the gateway's,
/// never forwarded.
pub(crate) const ORQ_POLICY_FIELDS: &[&str] =
    &["retry", "fallbacks", "cache", "load_balancer", "timeout"];

/// What a dialect accepts in `messages`.
pub(crate) struct MessageRules {
    /// Accepts the `developer` role; otherwise it becomes `system`.
    pub(crate) developer: bool,
    /// Accepts the `tool` role.
    pub(crate) tool: bool,
    /// Accepts the deprecated `function` role.
    pub(crate) function: bool,
    /// Accepts `tool_calls` (and the deprecated `function_call`) on assistant messages.
    pub(crate) assistant_tool_calls: bool,
    /// Content part kinds accepted in user messages (system, developer and tool take text).
    pub(crate) user_parts: &'static [PartType],
    /// Accepts `refusal` parts in assistant content.
    pub(crate) refusal_parts: bool,
    /// Message fields besides `role` and `content` that are sent as they are; the other
    /// known ones are dropped.
    pub(crate) fields: &'static [&'static str],
}

/// Known message fields besides `role` and `content`.
const MESSAGE_FIELDS: &[&str] = &[
    "name",
    "tool_calls",
    "tool_call_id",
    "refusal",
    "function_call",
    "audio",
];

/// A request on its way to one provider.
pub(crate) struct Translation<'a> {
    provider: &'a str,
    request: &'a ChatRequest,
    /// The body being built.
    pub(crate) body: Map<String, Value>,
    /// Fields left out, by path.
    pub(crate) dropped: Vec<String>,
    /// Headers to send with it.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> Translation<'a> {
    /// Starts from the canonical body of `request` for `provider` (its configured name).
    pub(crate) fn new(provider: &'a str, request: &'a ChatRequest) -> Self {
        let body = match serde_json::to_value(request) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Translation {
            provider,
            request,
            body,
            dropped: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// An error naming this provider and `param`.
    pub(crate) fn unsupported(&self, param: impl Into<String>, what: &str) -> Unsupported {
        let param = param.into();
        Unsupported {
            message: format!(
                "provider `{}` does not accept {what} (`{param}`)",
                self.provider
            ),
            param,
        }
    }

    /// Removes `key`, recording it as dropped if it was there.
    pub(crate) fn drop_field(&mut self, key: &str) {
        if self.body.remove(key).is_some() {
            self.dropped.push(key.to_owned());
        }
    }

    /// Moves the value of `from` to `to` unless `to` is already set (then `from` is dropped).
    pub(crate) fn rename(&mut self, from: &str, to: &str) {
        if let Some(value) = self.body.remove(from) {
            if self.body.contains_key(to) {
                self.dropped.push(from.to_owned());
            } else {
                self.body.insert(to.to_owned(), value);
            }
        }
    }

    /// Drops every known field not in `accepted`, and orq's own fields unless `orq_fields`.
    /// Unknown fields stay.
    pub(crate) fn keep_only(&mut self, accepted: &[&str], orq_fields: bool) {
        let keys: Vec<String> = self.body.keys().cloned().collect();
        for key in keys {
            let known = ChatRequest::FIELDS.contains(&key.as_str());
            let orq_own = ORQ_FIELDS.contains(&key.as_str());
            if (known && !accepted.contains(&key.as_str())) || (orq_own && !orq_fields) {
                self.drop_field(&key);
            }
        }
    }

    /// Applies `rules` to `messages`: renames `developer` where needed, drops message fields
    /// the dialect lacks, and rejects roles and content it cannot take.
    pub(crate) fn messages(&mut self, rules: &MessageRules) -> Result<(), Unsupported> {
        let request = self.request;
        for (i, message) in request.messages.iter().enumerate() {
            self.check_message(i, message, rules)?;
        }
        let Some(Value::Array(messages)) = self.body.get_mut("messages") else {
            return Ok(());
        };
        let mut dropped = Vec::new();
        for (i, message) in messages.iter_mut().enumerate() {
            let Some(message) = message.as_object_mut() else {
                continue;
            };
            if !rules.developer && message.get("role") == Some(&json!("developer")) {
                message.insert("role".to_owned(), json!("system"));
            }
            for field in MESSAGE_FIELDS {
                if !rules.fields.contains(field) && message.remove(*field).is_some() {
                    dropped.push(format!("messages[{i}].{field}"));
                }
            }
        }
        self.dropped.extend(dropped);
        Ok(())
    }

    fn check_message(
        &self,
        i: usize,
        message: &crate::schema::Message,
        rules: &MessageRules,
    ) -> Result<(), Unsupported> {
        let role_ok = match message.role {
            Role::Tool => rules.tool,
            Role::Function => rules.function,
            _ => true,
        };
        if !role_ok {
            let what = format!("the `{}` role", message.role.as_str());
            return Err(self.unsupported(format!("messages[{i}].role"), &what));
        }
        if message.role == Role::Assistant && !rules.assistant_tool_calls {
            for field in ["tool_calls", "function_call"] {
                let present = match field {
                    "tool_calls" => message.tool_calls.is_some(),
                    _ => message.function_call.is_some(),
                };
                if present {
                    let what = format!("`{field}` in assistant messages");
                    return Err(self.unsupported(format!("messages[{i}].{field}"), &what));
                }
            }
        }
        let Some(MessageContent::Parts(parts)) = &message.content else {
            return Ok(());
        };
        for (j, part) in parts.iter().enumerate() {
            let accepted = match (message.role, part.kind) {
                (_, PartType::Text) => true,
                (Role::User, kind) => rules.user_parts.contains(&kind),
                (Role::Assistant, PartType::Refusal) => rules.refusal_parts,
                _ => false,
            };
            if !accepted {
                let kind = serde_json::to_value(part.kind).unwrap_or_default();
                let what = format!(
                    "`{}` content parts in {} messages",
                    kind.as_str().unwrap_or("these"),
                    message.role.as_str()
                );
                return Err(self.unsupported(format!("messages[{i}].content[{j}].type"), &what));
            }
        }
        Ok(())
    }

    /// Moves `reasoning_effort` into Nugen-style `reasoning.effort` (unless that is set).
    pub(crate) fn effort_into_reasoning(&mut self) {
        let Some(effort) = self.body.remove("reasoning_effort") else {
            return;
        };
        let reasoning = self
            .body
            .entry("reasoning")
            .or_insert_with(|| Value::Object(Map::new()));
        match reasoning.as_object_mut() {
            Some(r) if !r.contains_key("effort") => {
                r.insert("effort".to_owned(), effort);
            }
            _ => self.dropped.push("reasoning_effort".to_owned()),
        }
    }

    /// Takes Nugen-style `reasoning.effort` out into `reasoning_effort` (unless that is set);
    /// the rest of `reasoning` stays for the caller to map or drop.
    pub(crate) fn effort_from_reasoning(&mut self) {
        let Some(effort) = self
            .body
            .get_mut("reasoning")
            .and_then(Value::as_object_mut)
            .and_then(|r| r.remove("effort"))
        else {
            return;
        };
        if self.body.contains_key("reasoning_effort") {
            self.dropped.push("reasoning.effort".to_owned());
        } else {
            self.body.insert("reasoning_effort".to_owned(), effort);
        }
    }

    /// Drops what is left of `reasoning`, naming each remaining key.
    pub(crate) fn drop_rest_of_reasoning(&mut self) {
        if let Some(Value::Object(rest)) = self.body.remove("reasoning") {
            self.dropped
                .extend(rest.keys().map(|k| format!("reasoning.{k}")));
        }
    }

    /// Adds a header (ignored when the value is not a valid header value).
    pub(crate) fn header(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
    }

    /// Sets the per-call fields and serializes the body. A stream always asks for usage (the
    /// gateway needs it; the normalizer drops it when the client did not ask).
    pub(crate) fn finish(mut self, model: &str) -> Prepared {
        self.body.insert("model".to_owned(), json!(model));
        if self.request.is_stream() {
            self.body.insert("stream".to_owned(), json!(true));
            let mut options = self
                .request
                .stream_options
                .as_ref()
                .map(|o| o.extra.clone())
                .unwrap_or_default();
            options.insert("include_usage".to_owned(), json!(true));
            self.body
                .insert("stream_options".to_owned(), Value::Object(options));
        }
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        Prepared {
            body: Bytes::from(body),
            headers: self.headers,
            dropped: self.dropped,
        }
    }
}

/// Test support: what an upstream receives for a client body.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::Value;

    use super::super::http::Dialect;
    use super::super::{CallCx, Prepared, Unsupported};

    /// A translated request as the upstream sees it.
    pub(crate) struct Sent {
        /// The JSON body.
        pub(crate) wire: Value,
        /// The dropped fields, sorted.
        pub(crate) dropped: Vec<String>,
        /// Everything `prepare` returned.
        pub(crate) prepared: Prepared,
    }

    /// Translates `body` (whose `model` is `<provider>/<upstream model>`) with `dialect`.
    pub(crate) fn send(
        dialect: &dyn Dialect,
        body: Value,
        session: Option<&str>,
    ) -> Result<Sent, Unsupported> {
        let request = crate::schema::parse_client_body(body.to_string().into()).unwrap();
        let (provider, model) = request.model.split_once('/').unwrap();
        let cx = CallCx {
            upstream_model: model.to_owned(),
            session_id: session.map(str::to_owned),
            ..CallCx::default()
        };
        let prepared = dialect.prepare(provider, &request, &cx)?;
        let mut dropped = prepared.dropped.clone();
        dropped.sort();
        Ok(Sent {
            wire: serde_json::from_slice(&prepared.body).unwrap(),
            dropped,
            prepared,
        })
    }
}
