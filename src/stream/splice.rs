//! The fast path of a stream: a chunk that is already in the contract's shape is relayed as
//! the upstream wrote it, with only the members normalization rewrites (`id`, `object`,
//! `created`, `model`) written anew.
//!
//! [`InShape::scan`] reads an event once, copying nothing, and takes it only when the slow
//! path (parse into a [`ChatChunk`], normalize, serialize) would change nothing else: no
//! `usage` and no `error`, no member named twice, and every choice has an integer `index`, a
//! `finish_reason` (string or `null`), a `logprobs`, and a `delta` whose known members are
//! strings and that makes no tool or function call. The normalizer then decides with the
//! stream's state ([`super::normalize::ChunkNormalizer::splice`]): the stream's `id` and
//! `created` are known and every choice already had its role. Anything else takes the slow
//! path, so the fast path changes the bytes, never the JSON a client reads (a property test
//! checks both paths against each other).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::decode::SseEvent;
use super::normalize::MAX_CHOICES;
use crate::error::ProviderError;
use crate::schema::ChatChunk;
use crate::schema::de::Timestamp;

/// An upstream chunk in the contract's shape, still as the upstream's JSON text.
#[derive(Debug)]
pub struct InShape {
    text: String,
    /// The top-level members passed on as written (`"key":value`), in the upstream's order.
    kept: Vec<Range<usize>>,
    /// The `choices` array.
    choices: Range<usize>,
    /// Each choice's index.
    indexes: Vec<u32>,
    /// Whether a choice has a `finish_reason`.
    pub(crate) finished: bool,
    /// Bytes of answer text (`content`, unescaped) in this chunk.
    pub(crate) text_bytes: u64,
}

impl InShape {
    /// Takes `event` when it is a chunk in shape; gives it back otherwise.
    pub fn scan(event: SseEvent) -> Result<InShape, SseEvent> {
        if event.event.is_some() {
            return Err(event);
        }
        match Self::read(&event.data) {
            Some(found) => Ok(InShape {
                text: event.data,
                ..found
            }),
            None => Err(event),
        }
    }

    /// Everything but the text, or `None` when the chunk is not in shape. One pass reads it;
    /// the members' extents follow from where their keys are, since the text is valid JSON.
    fn read(text: &str) -> Option<InShape> {
        let top: Top = serde_json::from_str(text).ok()?;
        let mut kept = Vec::with_capacity(top.members.len());
        let mut choices = None;
        for (i, &(key, role)) in top.members.iter().enumerate() {
            let next = match top.members.get(i + 1) {
                Some((next, _)) => (offset(text, next)? - 1, b','),
                None => (text.len(), b'}'),
            };
            let end = before(text, next.0, next.1)?;
            match role {
                Role::Kept => kept.push(offset(text, key)? - 1..end),
                Role::Choices => {
                    choices = Some(after(text, offset(text, key)? + key.len() + 1)?..end)
                }
                Role::Rewritten => {}
            }
        }
        let Choices {
            indexes,
            finished,
            text_bytes,
        } = top.choices?;
        Some(InShape {
            text: String::new(),
            kept,
            choices: choices?,
            indexes,
            finished,
            text_bytes,
        })
    }

    /// Each choice's index.
    pub(crate) fn indexes(&self) -> &[u32] {
        &self.indexes
    }

    /// The client's event: `prefix` (`data: {` and the rewritten members), the kept members,
    /// the choices, and the end of the event.
    pub(crate) fn event(&self, prefix: &[u8]) -> Bytes {
        let kept: usize = self.kept.iter().map(|r| r.len() + 1).sum();
        let mut out = Vec::with_capacity(prefix.len() + kept + self.choices.len() + 16);
        out.extend_from_slice(prefix);
        for member in &self.kept {
            out.push(b',');
            out.extend_from_slice(&self.text.as_bytes()[member.clone()]);
        }
        out.extend_from_slice(b",\"choices\":");
        out.extend_from_slice(&self.text.as_bytes()[self.choices.clone()]);
        out.extend_from_slice(b"}\n\n");
        Bytes::from(out)
    }

    /// The chunk parsed, for the slow path.
    pub fn parse(&self) -> Result<ChatChunk, ProviderError> {
        serde_json::from_str(&self.text).map_err(|e| {
            ProviderError::Decode(format!("an event is not a chat completion chunk ({e})"))
        })
    }
}

/// Where `part`, a slice of `text`, starts in it.
fn offset(text: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start + part.len() <= text.len()).then_some(start)
}

/// Where the value ends whose member is followed, at `at`, by `separator` (`,` or `}`),
/// with only whitespace between.
fn before(text: &str, at: usize, separator: u8) -> Option<usize> {
    let bytes = text.as_bytes().get(..at)?;
    let end = bytes.trim_ascii_end();
    (end.last() == Some(&separator)).then(|| end[..end.len() - 1].trim_ascii_end().len())
}

/// Where the value starts whose key ends at `at` (after its closing quote).
fn after(text: &str, at: usize) -> Option<usize> {
    let rest = text.as_bytes().get(at..)?.trim_ascii_start();
    let value = rest.strip_prefix(b":")?.trim_ascii_start();
    Some(text.len() - value.len())
}

/// The most members a chunk may have on the fast path.
const MAX_MEMBERS: usize = 24;

/// What becomes of a top-level member.
#[derive(Clone, Copy)]
enum Role {
    /// Passed on as written.
    Kept,
    /// Written anew by the normalizer (`id`, `object`, `created`, `model`), or dropped
    /// (`usage: null`).
    Rewritten,
    /// The `choices`.
    Choices,
}

/// The top level of a chunk in shape: its members' keys in order, and its choices.
struct Top<'a> {
    members: Vec<(&'a str, Role)>,
    choices: Option<Choices>,
}

/// Why a chunk is not in shape (the caller only sees that it is not).
fn not_in_shape<E: de::Error>() -> E {
    E::custom("not in shape")
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
        f.write_str("a chunk in shape")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut members: Vec<(&'de str, Role)> = Vec::with_capacity(8);
        let mut choices = None;
        // Keys with escapes are not borrowed, so they are refused here.
        while let Some(key) = map.next_key::<&'de str>()? {
            if members.len() == MAX_MEMBERS || members.iter().any(|(k, _)| *k == key) {
                return Err(not_in_shape());
            }
            let role = match key {
                "id" | "object" | "model" => {
                    map.next_value::<Option<Text>>()?;
                    Role::Rewritten
                }
                "created" => {
                    map.next_value::<Option<Timestamp>>()?;
                    Role::Rewritten
                }
                "usage" => {
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        return Err(not_in_shape());
                    }
                    Role::Rewritten
                }
                "choices" => {
                    choices = Some(map.next_value::<Choices>()?);
                    Role::Choices
                }
                "error" => return Err(not_in_shape()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    Role::Kept
                }
            };
            members.push((key, role));
        }
        Ok(Top { members, choices })
    }
}

/// What the fast path reads of the `choices`: at least one, at most [`MAX_CHOICES`].
struct Choices {
    indexes: Vec<u32>,
    finished: bool,
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
                    indexes: Vec::with_capacity(1),
                    finished: false,
                    text_bytes: 0,
                };
                while let Some(choice) = seq.next_element::<ChoiceView>()? {
                    if out.indexes.len() == MAX_CHOICES as usize {
                        return Err(not_in_shape());
                    }
                    out.indexes.push(choice.index);
                    out.finished |= choice.finish_reason.is_some;
                    out.text_bytes += choice.delta.content.len as u64;
                }
                if out.indexes.is_empty() {
                    return Err(not_in_shape());
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
    delta: DeltaView,
    finish_reason: FinishReason,
    #[allow(
        dead_code,
        reason = "required to be present; its value passes as written"
    )]
    logprobs: IgnoredAny,
}

/// A delta, as far as the fast path reads it: its known members must be strings (a `null`
/// one would be dropped by the slow path), and it makes no tool or function call.
#[derive(Deserialize)]
struct DeltaView {
    #[serde(default)]
    #[allow(dead_code, reason = "checked to be a string")]
    role: Text,
    #[serde(default)]
    content: Text,
    #[serde(default)]
    #[allow(dead_code, reason = "checked to be a string")]
    refusal: Text,
    #[serde(default)]
    #[allow(dead_code, reason = "never present on the fast path")]
    tool_calls: Refused,
    #[serde(default)]
    #[allow(dead_code, reason = "never present on the fast path")]
    function_call: Refused,
}

/// A string member's unescaped length (0 when absent).
#[derive(Default)]
struct Text {
    len: usize,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text { len: v.len() })
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A member the fast path does not take whatever its value.
#[derive(Default)]
struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(not_in_shape())
    }
}

/// A `finish_reason` that must be present: a string or `null`.
struct FinishReason {
    is_some: bool,
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FinishVisitor;
        impl Visitor<'_> for FinishVisitor {
            type Value = FinishReason;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<FinishReason, E> {
                Ok(FinishReason { is_some: true })
            }
            fn visit_unit<E: de::Error>(self) -> Result<FinishReason, E> {
                Ok(FinishReason { is_some: false })
            }
        }
        // `deserialize_any`, not `deserialize_option`: a missing member is then an error
        // rather than `null`.
        deserializer.deserialize_any(FinishVisitor)
    }
}

#[cfg(test)]
mod tests;
