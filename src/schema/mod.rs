//! The canonical wire types every part of the gateway speaks: requests, responses, chunks,
//! and the parsing and validation of request bodies.

pub(crate) mod de;
mod forward;
mod parse;
mod policy;
mod request;
mod response;
mod validate;

pub use parse::{parse_and_validate, parse_client_body, parse_request};
pub use request::*;
pub use response::*;
pub use validate::validate;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};
    use utoipa::PartialSchema;

    use super::*;

    /// The property names of `T`'s OpenAPI schema, which utoipa takes from the struct's fields.
    fn documented<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn parsed(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    /// A field the parser does not name would land in `extra` and be forwarded unvalidated;
    /// a name without a field would not compile. So the struct and the parser's list agree.
    #[test]
    fn every_wire_type_parses_exactly_its_documented_fields() {
        let cases = [
            (
                "ChatRequest",
                documented::<ChatRequest>(),
                parsed(ChatRequest::FIELDS),
            ),
            ("Message", documented::<Message>(), parsed(Message::FIELDS)),
            ("Tool", documented::<Tool>(), parsed(Tool::FIELDS)),
            (
                "ToolCall",
                documented::<ToolCall>(),
                parsed(ToolCall::FIELDS),
            ),
            (
                "FunctionDef",
                documented::<FunctionDef>(),
                parsed(FunctionDef::FIELDS),
            ),
            (
                "StreamOptions",
                documented::<StreamOptions>(),
                parsed(StreamOptions::FIELDS),
            ),
            (
                "ResponseFormat",
                documented::<ResponseFormat>(),
                parsed(ResponseFormat::FIELDS),
            ),
            (
                "ChatResponse",
                documented::<ChatResponse>(),
                parsed(ChatResponse::FIELDS),
            ),
            ("Choice", documented::<Choice>(), parsed(Choice::FIELDS)),
            (
                "ResponseMessage",
                documented::<ResponseMessage>(),
                parsed(ResponseMessage::FIELDS),
            ),
            ("Usage", documented::<Usage>(), parsed(Usage::FIELDS)),
            (
                "ChatChunk",
                documented::<ChatChunk>(),
                parsed(ChatChunk::FIELDS),
            ),
            (
                "ChunkChoice",
                documented::<ChunkChoice>(),
                parsed(ChunkChoice::FIELDS),
            ),
            ("Delta", documented::<Delta>(), parsed(Delta::FIELDS)),
            (
                "ToolCallDelta",
                documented::<ToolCallDelta>(),
                parsed(ToolCallDelta::FIELDS),
            ),
        ];
        for (name, documented, parsed) in cases {
            assert_eq!(documented, parsed, "{name}: struct fields vs parser fields");
        }
    }

    /// The per-call fields and the routing policy are the gateway's: never in a forwarded body.
    #[test]
    fn consumed_fields_are_never_forwarded() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "echo/x", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 1.0, "stream": true, "stream_options": {"include_usage": true},
            "retry": {"count": 1}, "fallbacks": [{"model": "echo/y"}],
            "timeout": {"call_timeout": 1000}, "cache": {"type": "exact_match"},
            "load_balancer": {"type": "weight_based", "models": [{"model": "echo/z"}]},
            "variables": {"a": "b"}, "unknown_field": 1,
        }))
        .unwrap();
        let Value::Object(body) = serde_json::to_value(&request).unwrap() else {
            panic!("a request serializes to an object");
        };
        let keys: BTreeSet<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["messages", "temperature", "unknown_field"])
        );
        let consumed = BTreeSet::from_iter(ChatRequest::CONSUMED.iter().copied());
        let sent = BTreeSet::from([
            "model",
            "messages",
            "temperature",
            "stream",
            "stream_options",
            "retry",
            "fallbacks",
            "timeout",
            "cache",
            "load_balancer",
            "variables",
            "unknown_field",
        ]);
        assert_eq!(
            consumed,
            &sent - &keys,
            "CONSUMED names the fields left out"
        );
    }
}
