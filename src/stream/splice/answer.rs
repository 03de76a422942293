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

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    Nullable, Refused, Text, kept_members, next_key, not_in_shape, write_created_and_model,
};
use crate::error::ProviderError;
use crate::schema::de::Timestamp;
use crate::schema::{ChatResponse, Usage};
use crate::stream::normalize::{may_hold_a_float, unix_now};

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
        // Ignored members are not checked for UTF-8 by the parser, and they are passed on.
        let text = std::str::from_utf8(body).ok()?;
        let top: Top = serde_json::from_str(text).ok()?;
        let kept = kept_members(body, &top.members)?;
        let choices = top.choices?;
        Some(AnswerInShape {
            body: Vec::new(),
            kept,
            created: top.created.filter(|&created| created > 0),
            choices: choices.count,
            model: top.model,
            usage: top.usage,
            text_bytes: choices.text_bytes,
        })
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

/// The top level of an answer in shape: its members' keys in order (and whether each is
/// passed on as written), and what the gateway needs to know.
#[derive(Default)]
struct Top<'a> {
    members: Vec<(&'a str, bool)>,
    created: Option<i64>,
    model: String,
    usage: Option<Usage>,
    choices: Option<Choices>,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an answer in shape")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut top = Top {
            members: Vec::with_capacity(8),
            ..Top::default()
        };
        let mut has_id = false;
        while let Some(key) = next_key(&mut map, top.members.iter().map(|(k, _)| *k))? {
            let kept = match key {
                "id" => {
                    // An empty id would be replaced.
                    has_id = map.next_value::<Text>()?.len > 0;
                    true
                }
                "object" => {
                    map.next_value::<Option<Text>>()?;
                    false
                }
                "created" => {
                    top.created = map.next_value::<Option<Timestamp>>()?.map(i64::from);
                    false
                }
                "model" => {
                    top.model = map.next_value::<Option<String>>()?.unwrap_or_default();
                    false
                }
                "choices" => {
                    top.choices = Some(map.next_value()?);
                    true
                }
                "usage" => {
                    top.usage = map.next_value::<Option<UsageView>>()?.map(|u| u.0);
                    top.usage.is_some()
                }
                "error" => return Err(not_in_shape()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    true
                }
            };
            top.members.push((key, kept));
        }
        if !has_id {
            return Err(not_in_shape());
        }
        Ok(top)
    }
}

/// What the fast path reads of the `choices`.
struct Choices {
    count: usize,
    text_bytes: u64,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor;
        impl<'de> Visitor<'de> for ChoicesVisitor {
            type Value = Choices;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("choices")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut out = Choices {
                    count: 0,
                    text_bytes: 0,
                };
                while let Some(choice) = seq.next_element::<ChoiceView>()? {
                    // The slow path numbers choices by position.
                    if choice.index as usize != out.count || choice.message.role.len == 0 {
                        return Err(not_in_shape());
                    }
                    out.count += 1;
                    let text = choice.message.content.len.unwrap_or(0) as u64;
                    out.text_bytes = out.text_bytes.saturating_add(text);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(ChoicesVisitor)
    }
}

/// One choice, as far as the fast path reads it (other members pass as written).
#[derive(Deserialize)]
struct ChoiceView {
    index: u32,
    message: MessageView,
    #[allow(dead_code, reason = "required to be present")]
    finish_reason: Nullable,
    #[allow(
        dead_code,
        reason = "required to be present; its value passes as written"
    )]
    logprobs: IgnoredAny,
}

/// A message, as far as the fast path reads it.
#[derive(Deserialize)]
struct MessageView {
    role: Text,
    content: Nullable,
    #[allow(dead_code, reason = "required to be present")]
    refusal: Nullable,
    #[serde(default)]
    #[allow(dead_code, reason = "never present on the fast path")]
    tool_calls: Refused,
    #[serde(default)]
    #[allow(dead_code, reason = "never present on the fast path")]
    function_call: Refused,
}

/// A `usage` whose counts are integers and whose details hold no number the slow path would
/// rewrite; the counts are read, the details stay in the text.
struct UsageView(Usage);

impl<'de> Deserialize<'de> for UsageView {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsageVisitor;
        impl<'de> Visitor<'de> for UsageVisitor {
            type Value = UsageView;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("usage")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageView, A::Error> {
                let mut keys: Vec<&'de str> = Vec::with_capacity(6);
                let mut counts = [None; 3];
                while let Some(key) = next_key(&mut map, keys.iter().copied())? {
                    keys.push(key);
                    let count = match key {
                        "prompt_tokens" => &mut counts[0],
                        "completion_tokens" => &mut counts[1],
                        "total_tokens" => &mut counts[2],
                        _ => {
                            let details = map.next_value::<&'de RawValue>()?;
                            if may_hold_a_float(details.get()) {
                                return Err(not_in_shape());
                            }
                            continue;
                        }
                    };
                    *count = Some(map.next_value::<u64>()?);
                }
                // The slow path writes a missing count as 0.
                let [Some(prompt), Some(completion), Some(total)] = counts else {
                    return Err(not_in_shape());
                };
                Ok(UsageView(Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: total,
                    ..Usage::default()
                }))
            }
        }
        deserializer.deserialize_map(UsageVisitor)
    }
}

#[cfg(test)]
mod tests;
