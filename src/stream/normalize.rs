//! Normalization of provider output to the contract's shapes.
//!
//! Whatever an adapter produced, what leaves the gateway has: one `id` and one integer
//! `created` for a whole stream, the `model` name the client sent, `role: "assistant"` on the
//! first delta of each choice, an `index` on every tool-call delta, and usage only as the final
//! `include_usage` chunk (`choices: []`). Nugen's usage riding on its last content chunk is
//! split off here, like any other provider's.
//!
//! Indexes come from the upstream, so they are checked before anything is indexed by them: a
//! choice index must be below the request's `n`, a tool-call index below `MAX_TOOL_CALLS`.
//! Anything else is a [`ProviderError::Decode`] (502, or an error event mid-stream).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::splice::{InShape, write_created_and_model};
use crate::error::ProviderError;
use crate::schema::{ChatChunk, ChatRequest, ChatResponse, Usage};

/// The most choices a request may ask for (validation caps `n` at 128).
pub(crate) const MAX_CHOICES: u32 = 128;
/// The most tool calls one choice may make; a higher upstream index is refused.
pub(crate) const MAX_TOOL_CALLS: u32 = 128;

/// How many choices `request` asks for (`n`, default 1).
pub(crate) fn choice_count(request: &ChatRequest) -> u32 {
    request.n.unwrap_or(1).max(1)
}

fn choice_out_of_range(index: u32, choices: u32) -> ProviderError {
    ProviderError::Decode(format!(
        "a choice has index {index}, but the request asked for {choices} choice(s) (`n`)"
    ))
}

fn tool_call_out_of_range(index: u32) -> ProviderError {
    ProviderError::Decode(format!(
        "a tool call has index {index}; a choice may make at most {MAX_TOOL_CALLS} tool calls"
    ))
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A fresh completion id in OpenAI's style.
pub(crate) fn completion_id() -> String {
    format!("chatcmpl-{:032x}", fastrand::u128(..))
}

/// Writes whole-number token counts in usage details as integers (orq types them `number`
/// and sends `0.0`; OpenAI's shape, and typed clients, want integers).
pub(crate) fn integer_counts(usage: &mut Usage) {
    for details in usage.extra.values_mut() {
        // Most upstreams write integers: only details that may hold a number with a
        // fraction or an exponent are parsed and written again.
        if !may_hold_a_float(details.get()) {
            continue;
        }
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(details.get()) else {
            continue;
        };
        for value in fields.values_mut() {
            if let Some(f) = value.as_f64().filter(|_| value.is_f64())
                && f.fract() == 0.0
                && (0.0..9.0e15).contains(&f)
            {
                *value = serde_json::Value::from(f as u64);
            }
        }
        if let Ok(text) = serde_json::to_string(&fields)
            && let Ok(raw) = serde_json::value::RawValue::from_string(text)
        {
            *details = raw;
        }
    }
}

/// Whether JSON `text` may hold a number written with a fraction or an exponent: it has a
/// `.`, or a digit followed by `e` or `E` (a word in a string may match too; that only costs
/// a parse).
pub(crate) fn may_hold_a_float(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.contains(&b'.')
        || bytes
            .windows(2)
            .any(|pair| pair[0].is_ascii_digit() && matches!(pair[1], b'e' | b'E'))
}

/// `data: {` and a chunk's members the normalizer rewrites, as [`ChatChunk`] writes them.
fn event_prefix(id: &str, created: i64, model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + id.len() + model.len());
    out.extend_from_slice(b"data: {\"id\":");
    // Writing a string into a Vec cannot fail.
    serde_json::to_writer(&mut out, id).unwrap_or_default();
    out.extend_from_slice(b",\"object\":\"chat.completion.chunk\",");
    write_created_and_model(&mut out, created, model);
    out
}

/// Normalizes a whole (non-streamed) completion in place; `choices` is the request's `n`.
pub fn normalize_response(
    response: &mut ChatResponse,
    client_model: &str,
    choices: u32,
) -> Result<(), ProviderError> {
    if response.id.is_empty() {
        response.id = completion_id();
    }
    "chat.completion".clone_into(&mut response.object);
    if response.created <= 0 {
        response.created = unix_now();
    }
    client_model.clone_into(&mut response.model);
    if let Some(usage) = &mut response.usage {
        integer_counts(usage);
    }
    for (position, choice) in response.choices.iter_mut().enumerate() {
        if choice.message.role.is_empty() {
            "assistant".clone_into(&mut choice.message.role);
        }
        for call in choice.message.tool_calls.iter_mut().flatten() {
            if call.kind.is_empty() {
                "function".clone_into(&mut call.kind);
            }
        }
        if choice.index == 0 && position > 0 {
            choice.index = u32::try_from(position).unwrap_or(u32::MAX);
        }
        if choice.index >= choices {
            return Err(choice_out_of_range(choice.index, choices));
        }
    }
    Ok(())
}

/// Per-choice state of a stream.
#[derive(Debug, Default, Clone)]
struct ChoiceState {
    role_sent: bool,
    /// Tool calls seen so far in this choice; a delta without `index` but with an `id` starts
    /// the next one, a delta with neither continues the last.
    tool_calls: u32,
}

impl ChoiceState {
    /// The index of a tool-call delta: the upstream's, or the next one for a delta that
    /// starts a call (it has an `id`, or is the first), or the last one.
    fn tool_call_index(&mut self, given: Option<u32>, starts: bool) -> Result<u32, ProviderError> {
        let index = match given {
            Some(index) => index,
            None if starts || self.tool_calls == 0 => self.tool_calls,
            None => return Ok(self.tool_calls - 1),
        };
        if index >= MAX_TOOL_CALLS {
            return Err(tool_call_out_of_range(index));
        }
        self.tool_calls = self.tool_calls.max(index + 1);
        Ok(index)
    }
}

/// Rewrites the chunks of one stream to the contract's shape.
#[derive(Debug, Clone)]
pub struct ChunkNormalizer {
    id: Option<String>,
    created: i64,
    model: String,
    include_usage: bool,
    /// The request's `n`: every choice index is below it.
    max_choices: u32,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    /// Once `id` and `created` are known: `data: {` and the members every chunk gets anew,
    /// for chunks relayed as written ([`Self::splice`]).
    prefix: Option<Vec<u8>>,
}

impl ChunkNormalizer {
    /// A normalizer for a stream answering `client_model` with `choices` choices (`n`).
    pub fn new(client_model: &str, include_usage: bool, choices: u32) -> Self {
        ChunkNormalizer {
            id: None,
            created: 0,
            model: client_model.to_owned(),
            include_usage,
            max_choices: choices,
            choices: Vec::new(),
            usage: None,
            prefix: None,
        }
    }

    /// The event for a chunk in shape, when this stream's state lets it pass as written:
    /// every choice is below `n` and already had its role or has `"role":"assistant"`. The
    /// first chunk to pass gives the stream its `id` and `created`, as [`Self::push`] takes
    /// them. `None`: it takes the slow path ([`Self::push`]).
    pub fn splice(&mut self, chunk: &InShape) -> Option<Bytes> {
        let mut event = Vec::new();
        self.splice_into(chunk, &mut event)
            .then(|| Bytes::from(event))
    }

    /// [`Self::splice`], appending the event to `out`; false (and nothing appended) when
    /// the chunk takes the slow path.
    pub(crate) fn splice_into(&mut self, chunk: &InShape, out: &mut Vec<u8>) -> bool {
        let assistant = chunk.says_assistant();
        let has_role = |index: u32| {
            index < self.max_choices
                && (assistant
                    || (self.choices.get(index as usize)).is_some_and(|state| state.role_sent))
        };
        if !chunk.indexes().iter().all(|&index| has_role(index)) {
            return false;
        }
        let prefix = match &self.prefix {
            Some(prefix) => prefix.as_slice(),
            None => self.start(chunk.id(), chunk.created()),
        };
        chunk.write_event(prefix, out);
        if assistant {
            for &index in chunk.indexes() {
                // Below `n` (checked above), so the length cannot get out of hand.
                let index = index as usize;
                if self.choices.len() <= index {
                    self.choices.resize(index + 1, ChoiceState::default());
                }
                self.choices[index].role_sent = true;
            }
        }
        true
    }

    /// Takes the stream's `id` and `created` from its first chunk, on either path (new ones
    /// when it has none), and writes the prefix of the events relayed as written.
    fn start(&mut self, id: Option<String>, created: Option<i64>) -> &[u8] {
        let id = id.filter(|id| !id.is_empty()).unwrap_or_else(completion_id);
        self.created = created
            .filter(|&created| created > 0)
            .unwrap_or_else(unix_now);
        let prefix = event_prefix(&id, self.created, &self.model);
        self.id = Some(id);
        self.prefix.insert(prefix)
    }

    /// Normalizes one upstream chunk. `Ok(None)` when nothing is left to send (a usage-only
    /// chunk, held back for [`Self::finish`]); `Err` when an index is out of range.
    pub fn push(&mut self, mut chunk: ChatChunk) -> Result<Option<ChatChunk>, ProviderError> {
        if let Some(mut usage) = chunk.usage.take() {
            integer_counts(&mut usage);
            self.usage = Some(usage);
        }
        if chunk.choices.is_empty() {
            return Ok(None);
        }
        self.stamp(&mut chunk);
        for choice in &mut chunk.choices {
            if choice.index >= self.max_choices {
                return Err(choice_out_of_range(choice.index, self.max_choices));
            }
            // Below `n`, so neither the length nor `+ 1` can get out of hand.
            let index = choice.index as usize;
            if self.choices.len() <= index {
                self.choices.resize(index + 1, ChoiceState::default());
            }
            let state = &mut self.choices[index];
            if !state.role_sent {
                state.role_sent = true;
                choice.delta.role = Some("assistant".to_owned());
            }
            for call in choice.delta.tool_calls.iter_mut().flatten() {
                call.index = Some(state.tool_call_index(call.index, call.id.is_some())?);
                // A call's first fragment (the one with its id) says what it is.
                if call.id.is_some() && call.kind.is_none() {
                    call.kind = Some("function".to_owned());
                }
            }
        }
        Ok(Some(chunk))
    }

    /// The final usage chunk, when the client asked for one and the upstream reported usage.
    pub fn finish(&mut self) -> Option<ChatChunk> {
        if !self.include_usage {
            return None;
        }
        let usage = self.usage.take()?;
        let mut chunk = ChatChunk {
            usage: Some(usage),
            ..ChatChunk::default()
        };
        self.stamp(&mut chunk);
        Some(chunk)
    }

    /// Gives `chunk` the stream's `id`, `created`, object and model; the first chunk of the
    /// stream gives it its `id` and `created` ([`Self::start`]).
    fn stamp(&mut self, chunk: &mut ChatChunk) {
        if self.prefix.is_none() {
            self.start(Some(chunk.id.clone()), Some(chunk.created));
        }
        if let Some(id) = &self.id
            && chunk.id != *id
        {
            chunk.id.clone_from(id);
        }
        chunk.created = self.created;
        "chat.completion.chunk".clone_into(&mut chunk.object);
        chunk.model.clone_from(&self.model);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chunk(value: serde_json::Value) -> ChatChunk {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn nugen_usage_on_the_last_content_chunk_is_split_off() {
        let mut n = ChunkNormalizer::new("nugen/nugen-flash-instruct", true, 1);
        let first = n
            .push(chunk(json!({"id":"nugen-abc123","created":1704123600.0,"model":"nugen-flash-instruct",
                "choices":[{"index":0,"delta":{"role":"assistant","content":"Once"},"finish_reason":null}]})))
            .unwrap()
            .unwrap();
        let last = n
            .push(chunk(
                json!({"id":"nugen-abc123","created":1704123600.0,"model":"nugen-flash-instruct",
                "choices":[{"index":0,"delta":{"content":" a time"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}),
            ))
            .unwrap()
            .unwrap();
        assert!(last.usage.is_none());
        assert_eq!(last.choices[0].finish_reason.as_deref(), Some("stop"));
        let usage = n.finish().unwrap();
        assert!(usage.choices.is_empty());
        assert_eq!(usage.usage.as_ref().unwrap().total_tokens, 15);
        for c in [&first, &last, &usage] {
            assert_eq!(c.id, "nugen-abc123");
            assert_eq!(c.created, 1_704_123_600);
            assert_eq!(c.model, "nugen/nugen-flash-instruct");
            assert_eq!(c.object, "chat.completion.chunk");
        }
    }

    #[test]
    fn usage_is_dropped_without_include_usage() {
        let mut n = ChunkNormalizer::new("m", false, 2);
        let out = n.push(chunk(
            json!({"choices":[{"index":0,"delta":{"content":"x"}}],
            "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}),
        ));
        assert!(out.unwrap().unwrap().usage.is_none());
        assert!(
            n.push(chunk(json!({"choices":[],"usage":{"prompt_tokens":1}})))
                .unwrap()
                .is_none()
        );
        assert!(n.finish().is_none());
    }

    #[test]
    fn role_comes_first_per_choice_and_ids_are_unified() {
        let mut n = ChunkNormalizer::new("m", false, 2);
        let a = n
            .push(chunk(
                json!({"id":"a","created":5,"choices":[{"index":1,"delta":{"content":"x"}}]}),
            ))
            .unwrap()
            .unwrap();
        let b = n
            .push(chunk(
                json!({"id":"b","created":9,"choices":[{"index":1,"delta":{"content":"y"}},
            {"index":0,"delta":{"content":"z"}}]}),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(a.choices[0].delta.role.as_deref(), Some("assistant"));
        assert_eq!(b.choices[0].delta.role, None);
        assert_eq!(b.choices[1].delta.role.as_deref(), Some("assistant"));
        assert_eq!((b.id.as_str(), b.created), ("a", 5));
    }

    #[test]
    fn tool_call_deltas_without_index_get_one() {
        let mut n = ChunkNormalizer::new("m", false, 2);
        let first = n
            .push(chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]})))
            .unwrap()
            .unwrap();
        let more = n
            .push(chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"function":{"arguments":"{\"a\""}}]}}]})))
            .unwrap()
            .unwrap();
        let second = n
            .push(chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"id":"call_2","function":{"name":"g","arguments":""}}]}}]})))
            .unwrap()
            .unwrap();
        let index = |c: &ChatChunk| c.choices[0].delta.tool_calls.as_ref().unwrap()[0].index;
        assert_eq!(
            (index(&first), index(&more), index(&second)),
            (Some(0), Some(0), Some(1))
        );
        let kind = |c: &ChatChunk| {
            c.choices[0].delta.tool_calls.as_ref().unwrap()[0]
                .kind
                .clone()
        };
        assert_eq!(
            kind(&second).as_deref(),
            Some("function"),
            "filled in on a first fragment"
        );
        assert_eq!(kind(&more), None);
    }

    #[test]
    fn usage_detail_counts_become_integers() {
        let mut r: ChatResponse = serde_json::from_value(json!({"choices": [],
            "usage": {"prompt_tokens": 3.0, "completion_tokens": 1, "total_tokens": 4,
                "completion_tokens_details": {"reasoning_tokens": 0.0, "audio_tokens": null, "odd": 1.5}}}))
        .unwrap();
        normalize_response(&mut r, "m", 1).unwrap();
        let usage = serde_json::to_value(r.usage.unwrap()).unwrap();
        assert_eq!(usage["prompt_tokens"], json!(3));
        assert_eq!(
            usage["completion_tokens_details"],
            json!({"reasoning_tokens": 0, "audio_tokens": null, "odd": 1.5})
        );
        assert!(usage["completion_tokens_details"]["reasoning_tokens"].is_u64());
    }

    #[test]
    fn only_details_that_may_hold_a_float_are_parsed_again() {
        assert!(!may_hold_a_float(
            r#"{"cached_tokens":0,"audio_tokens":12}"#
        ));
        assert!(may_hold_a_float(r#"{"cached_tokens":0.0}"#));
        assert!(may_hold_a_float(r#"{"cached_tokens":1e2}"#));
        assert!(may_hold_a_float(r#"{"cached_tokens":1E2}"#));
        let mut r: ChatResponse = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,
                "prompt_tokens_details":{"cached_tokens":1e2}}}"#,
        )
        .unwrap();
        normalize_response(&mut r, "m", 1).unwrap();
        let usage = r.usage.unwrap();
        assert_eq!(
            usage.extra["prompt_tokens_details"].get(),
            r#"{"cached_tokens":100}"#
        );
    }

    #[test]
    fn whole_responses_get_the_client_model_and_integer_created() {
        let mut r: ChatResponse = serde_json::from_value(json!({"created": 1704123600.5,
            "choices":[{"message":{"content":"hi"}}]}))
        .unwrap();
        normalize_response(&mut r, "alias", 1).unwrap();
        assert_eq!(r.model, "alias");
        assert_eq!(r.created, 1_704_123_600);
        assert!(r.id.starts_with("chatcmpl-"));
        assert_eq!(r.object, "chat.completion");
        assert_eq!(r.choices[0].message.role, "assistant");
    }

    fn decode_message(error: ProviderError) -> String {
        match error {
            ProviderError::Decode(message) => message,
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn choice_indexes_must_be_below_n() {
        let mut n = ChunkNormalizer::new("m", false, 2);
        assert!(
            n.push(chunk(
                json!({"choices":[{"index":1,"delta":{"content":"x"}}]})
            ))
            .is_ok()
        );
        for index in [2u64, 4_294_967_295] {
            let error = n
                .push(chunk(
                    json!({"choices":[{"index":index,"delta":{"content":"x"}}]}),
                ))
                .unwrap_err();
            let message = decode_message(error);
            assert!(message.contains(&format!("index {index}")), "{message}");
            assert!(message.contains("`n`"), "{message}");
        }
        assert!(n.choices.len() <= 2, "nothing allocated for a bad index");
    }

    #[test]
    fn tool_call_indexes_are_bounded_and_never_overflow() {
        let mut n = ChunkNormalizer::new("m", false, 1);
        let at = |index: u64| {
            chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
                {"index":index,"function":{"arguments":"x"}}]}}]}))
        };
        assert!(n.push(at(u64::from(MAX_TOOL_CALLS) - 1)).is_ok());
        for index in [u64::from(MAX_TOOL_CALLS), 4_294_967_295] {
            let message = decode_message(n.push(at(index)).unwrap_err());
            assert!(message.contains(&format!("index {index}")), "{message}");
        }
        // Deltas without an index that keep starting calls stop at the bound too.
        let mut n = ChunkNormalizer::new("m", false, 1);
        let start = || {
            chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
                {"id":"c","function":{"name":"f"}}]}}]}))
        };
        for _ in 0..MAX_TOOL_CALLS {
            assert!(n.push(start()).is_ok());
        }
        assert!(n.push(start()).is_err());
    }

    #[test]
    fn whole_responses_with_a_choice_index_beyond_n_are_refused() {
        let mut r: ChatResponse = serde_json::from_value(json!({"choices":[
            {"index": 4294967295u64, "message":{"content":"hi"}}]}))
        .unwrap();
        let message = decode_message(normalize_response(&mut r, "m", 1).unwrap_err());
        assert!(message.contains("index 4294967295"), "{message}");
        // More choices than asked for, numbered by position, are refused as well.
        let mut r: ChatResponse = serde_json::from_value(
            json!({"choices":[{"message":{"content":"a"}}, {"message":{"content":"b"}}]}),
        )
        .unwrap();
        assert!(normalize_response(&mut r, "m", 1).is_err());
        assert!(normalize_response(&mut r, "m", 2).is_ok());
    }
}
