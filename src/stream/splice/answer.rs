//! The fast path of a whole answer: one in the contract's shape is passed on as the upstream
//! wrote it, with `object`, `created` and `model` written anew.
//!
//! [`AnswerInShape::scan`] takes an answer only when [`normalize_response`] would change
//! nothing else: a non-empty `id`; choices whose `index` is their position, with a
//! `finish_reason`, `logprobs` and a `message` that has a role, `content` and `refusal` (each
//! a string or `null`) and no tool or function call; a `usage`, if any, with integer counts
//! and details without fractions; no `error`; no member named twice. The rest takes the slow
//! path: parsed into a [`ChatResponse`], normalized and serialized.
//!
//! [`normalize_response`]: crate::stream::normalize::normalize_response

use std::ops::Range;

use super::{Keys, once, read_created, write_created_and_model};
use crate::error::ProviderError;
use crate::json_reader::Reader;
use crate::schema::{ChatResponse, Usage};
use crate::stream::normalize::unix_now;

/// An upstream's whole answer in the contract's shape, still as the upstream's JSON text.
#[derive(Debug)]
pub struct AnswerInShape {
    body: Vec<u8>,
    /// The members passed on as written, in the upstream's order.
    kept: Vec<Range<usize>>,
    /// The upstream's `created`, when it gave one above 0.
    created: Option<i64>,
    /// How many choices there are (each one's index is its position).
    choices: usize,
    /// The model the upstream named.
    pub(crate) model: String,
    /// The token counts (the details stay in the text).
    pub(crate) usage: Option<Usage>,
    /// Bytes of answer text (`content`, unescaped).
    pub(crate) text_bytes: u64,
}

impl AnswerInShape {
    /// Takes `body` when it is an answer in shape; gives it back otherwise.
    pub fn scan(body: Vec<u8>) -> Result<AnswerInShape, Vec<u8>> {
        match Self::read(&body) {
            Some(found) => Ok(AnswerInShape { body, ..found }),
            None => Err(body),
        }
    }

    fn read(body: &[u8]) -> Option<AnswerInShape> {
        // Members passed on are written as they are, so all of the body must be UTF-8.
        let text = simdutf8::basic::from_utf8(body).ok()?;
        let mut reader = Reader::new(text);
        let mut keys = Keys::default();
        let mut found = AnswerInShape {
            body: Vec::new(),
            kept: Vec::with_capacity(6),
            created: None,
            choices: 0,
            model: String::new(),
            usage: None,
            text_bytes: 0,
        };
        let (mut has_id, mut has_choices) = (false, false);
        reader.object(|reader, key, start| {
            keys.first(key, start)?;
            let kept = match key {
                "id" => {
                    // An empty id would be replaced.
                    has_id = reader.string()? > 0;
                    true
                }
                "object" => reader.string_or_null().map(|_| false)?,
                "created" => {
                    found.created = read_created(reader)?;
                    false
                }
                "model" => {
                    found.model = read_model(reader)?;
                    false
                }
                "choices" => {
                    (found.choices, found.text_bytes) = read_choices(reader)?;
                    has_choices = true;
                    true
                }
                "usage" => {
                    found.usage = read_usage(reader)?;
                    found.usage.is_some()
                }
                "error" => return None,
                _ => reader.value().map(|()| true)?,
            };
            if kept {
                found.kept.push(start..reader.at());
            }
            Some(())
        })?;
        (reader.at_end() && has_id && has_choices).then_some(())?;
        found.created = found.created.filter(|&created| created > 0);
        Some(found)
    }

    /// The client's body for a request that asked for `choices` choices (`n`) under the
    /// name `client_model`; `None` when the answer has more choices (the slow path refuses
    /// it).
    pub fn client_body(&self, client_model: &str, choices: u32) -> Option<Vec<u8>> {
        if self.choices > choices as usize {
            return None;
        }
        let kept: usize = self.kept.iter().map(|r| r.len() + 1).sum();
        let mut out = Vec::with_capacity(96 + client_model.len() + kept);
        out.extend_from_slice(b"{\"object\":\"chat.completion\",");
        let created = self.created.unwrap_or_else(unix_now);
        write_created_and_model(&mut out, created, client_model);
        for member in &self.kept {
            out.push(b',');
            out.extend_from_slice(&self.body[member.clone()]);
        }
        out.push(b'}');
        Some(out)
    }

    /// The answer parsed, for the slow path.
    pub fn parse(&self) -> Result<ChatResponse, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::Decode(format!("the answer is not a chat completion ({e})"))
        })
    }
}

/// A `model`: a string, or `null` (read as empty).
fn read_model(reader: &mut Reader) -> Option<String> {
    reader.skip_whitespace();
    let start = reader.at();
    let Some(len) = reader.string_or_null()? else {
        return Some(String::new());
    };
    let written = reader.text(start)?;
    // Without escapes the name is the text between the quotes.
    if written.len() == len + 2 {
        return Some(written[1..=len].to_owned());
    }
    serde_json::from_str(written).ok()
}

/// The choices: how many, and the bytes of their `content`, unescaped. Each one's `index`
/// is its position (as the slow path numbers them), its message has a role, and it has a
/// `finish_reason` (a string or `null`) and a `logprobs` (of any value); no known member is
/// named twice.
fn read_choices(reader: &mut Reader) -> Option<(usize, u64)> {
    let (mut count, mut text_bytes) = (0usize, 0u64);
    reader.array(|reader| {
        let (mut index, mut message, mut finish_reason, mut logprobs) = (None, None, None, None);
        reader.object(|reader, key, _| match key {
            "index" => once(&mut index, reader.index()?),
            "message" => once(&mut message, read_message(reader)?),
            "finish_reason" => once(&mut finish_reason, reader.string_or_null()?),
            "logprobs" => once(&mut logprobs, reader.value()?),
            _ => reader.value(),
        })?;
        (usize::try_from(index?).ok()? == count && finish_reason.is_some() && logprobs.is_some())
            .then_some(())?;
        text_bytes = text_bytes.saturating_add(message? as u64);
        count += 1;
        Some(())
    })?;
    Some((count, text_bytes))
}

/// A message with a role that is not empty, `content` and `refusal` (each a string or
/// `null`) and no tool or function call: its `content`'s length, unescaped.
fn read_message(reader: &mut Reader) -> Option<usize> {
    let (mut role, mut content, mut refusal) = (None, None, None);
    reader.object(|reader, key, _| match key {
        "role" => once(&mut role, reader.string()?),
        "content" => once(&mut content, reader.string_or_null()?),
        "refusal" => once(&mut refusal, reader.string_or_null()?),
        "tool_calls" | "function_call" => None,
        _ => reader.value(),
    })?;
    (role? > 0 && refusal.is_some()).then_some(())?;
    Some(content?.unwrap_or(0))
}

/// A `usage`: `null`, or integer counts (all three: the slow path writes a missing one as
/// 0) and details without a number written with a fraction or an exponent. The counts are read,
/// the details stay in the text.
fn read_usage(reader: &mut Reader) -> Option<Option<Usage>> {
    if reader.null().is_some() {
        return Some(None);
    }
    let mut keys = Keys::default();
    let mut counts = [None; 3];
    reader.object(|reader, key, start| {
        keys.first(key, start)?;
        let count = match key {
            "prompt_tokens" => &mut counts[0],
            "completion_tokens" => &mut counts[1],
            "total_tokens" => &mut counts[2],
            _ => {
                // The slow path writes a whole number with a fraction (`0.0`) as an integer.
                let before = reader.fractional_numbers();
                reader.value()?;
                return (reader.fractional_numbers() == before).then_some(());
            }
        };
        *count = Some(reader.count()?);
        Some(())
    })?;
    let [Some(prompt), Some(completion), Some(total)] = counts else {
        return None;
    };
    Some(Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
        ..Usage::default()
    }))
}

#[cfg(test)]
mod tests;
