//! The fast path of normalization: a chunk (here) or a whole answer ([`AnswerInShape`]) that
//! is already in the contract's shape is relayed as the upstream wrote it, with only the
//! members normalization rewrites (for a chunk `id`, `object`, `created`, `model`) written
//! anew.
//!
//! [`InShape::scan`] reads an event once, copying nothing, and takes it only when the slow
//! path (parse into a [`ChatChunk`], normalize, serialize) would change nothing else: no
//! `usage` and no `error`, no member named twice, and every choice has an integer `index`
//! and a `delta` whose known members are strings and that makes no tool or function call. A
//! choice without `finish_reason` or `logprobs` gets them as `null` (as the slow path writes
//! them), which costs a second read of the choices. The normalizer then decides with the stream's
//! state ([`super::normalize::ChunkNormalizer::splice`]): the stream's `id` and `created` are
//! known and every choice already had its role. Anything else takes the slow path, so the fast
//! path changes the bytes, never the JSON a client reads (a property test and the
//! `upstream_stream` fuzz target check both paths against each other).

use std::fmt;
use std::io::Write;
use std::ops::Range;

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
    /// The upstream's JSON text, then (when the choices were completed) the completed
    /// `choices` member.
    text: String,
    /// Where the upstream's JSON text ends.
    json_end: usize,
    /// The top-level members passed on as written (`"key":value`), in the upstream's order.
    kept: Vec<Range<usize>>,
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
        let Some((kept, choices)) = Self::read(&event.data) else {
            return Err(event);
        };
        let text = event.data;
        let json_end = text.len();
        let mut found = InShape {
            text,
            json_end,
            kept,
            indexes: choices.marks.iter().map(|mark| mark.index).collect(),
            finished: choices.finished,
            text_bytes: choices.text_bytes,
        };
        if choices.marks.iter().any(ChoiceMark::lacks_a_member)
            && found.complete(&choices.marks).is_none()
        {
            return Err(found.into_event());
        }
        Ok(found)
    }

    /// The kept members and the choices, or `None` when the chunk is not in shape. One pass
    /// reads the chunk; the members' extents follow from where their keys are, since the
    /// text is valid JSON.
    fn read(text: &str) -> Option<(Vec<Range<usize>>, Choices)> {
        let top: Top = serde_json::from_str(text).ok()?;
        Some((kept_members(text.as_bytes(), &top.members)?, top.choices?))
    }

    /// Adds `"finish_reason":null` and `"logprobs":null` to the choices that lack them (the
    /// slow path writes both always; OpenAI sends both, some servers leave them out). The
    /// completed `choices` member goes after the upstream's text and is passed on from there.
    fn complete(&mut self, marks: &[ChoiceMark]) -> Option<()> {
        let at = self
            .kept
            .iter()
            .position(|member| self.text[member.clone()].starts_with("\"choices\""))?;
        let member = self.kept[at].clone();
        // The key is `"choices"`, borrowed, so exactly 9 bytes.
        let start = after(self.text.as_bytes(), member.start + 9)?;
        let choices: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(self.text.get(start..member.end)?).ok()?;
        (choices.len() == marks.len()).then_some(())?;
        let mut out = String::with_capacity(member.len() + 40 * choices.len());
        out.push_str("\"choices\":[");
        for (i, (choice, mark)) in choices.iter().zip(marks).enumerate() {
            if i > 0 {
                out.push(',');
            }
            // A choice has `index` and `delta`, so a member always comes before the `}`.
            out.push_str(choice.get().strip_suffix('}')?);
            if mark.lacks_finish_reason {
                out.push_str(",\"finish_reason\":null");
            }
            if mark.lacks_logprobs {
                out.push_str(",\"logprobs\":null");
            }
            out.push('}');
        }
        out.push(']');
        let start = self.text.len();
        self.text.push_str(&out);
        self.kept[at] = start..self.text.len();
        Some(())
    }

    /// The upstream's event, given back.
    fn into_event(self) -> SseEvent {
        let mut data = self.text;
        data.truncate(self.json_end);
        SseEvent { event: None, data }
    }

    /// Each choice's index.
    pub(crate) fn indexes(&self) -> &[u32] {
        &self.indexes
    }

    /// Appends the client's event to `out`: `prefix` (`data: {` and the rewritten members),
    /// the kept members (the choices among them), and the end of the event.
    pub(crate) fn write_event(&self, prefix: &[u8], out: &mut Vec<u8>) {
        let kept: usize = self.kept.iter().map(|r| r.len() + 1).sum();
        out.reserve(prefix.len() + kept + 3);
        out.extend_from_slice(prefix);
        for member in &self.kept {
            out.push(b',');
            out.extend_from_slice(&self.text.as_bytes()[member.clone()]);
        }
        out.extend_from_slice(b"}\n\n");
    }

    /// The chunk parsed, for the slow path.
    pub fn parse(&self) -> Result<ChatChunk, ProviderError> {
        serde_json::from_str(&self.text[..self.json_end]).map_err(|e| {
            ProviderError::Decode(format!("an event is not a chat completion chunk ({e})"))
        })
    }
}

/// Writes `"created":N,"model":"M"`, as the slow path's types write them.
pub(crate) fn write_created_and_model(out: &mut Vec<u8>, created: i64, model: &str) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "\"created\":{created},\"model\":");
    serde_json::to_writer(out, model).unwrap_or_default();
}

/// Where the kept members of the JSON object `text` are, each from its key's opening quote to
/// the end of its value. `members` are all its keys in order, each borrowed from `text` (so
/// without escapes), with whether it is kept. Since the text is valid JSON, only a `,` (or
/// the closing `}`) and whitespace follow a value.
pub(super) fn kept_members(text: &[u8], members: &[(&str, bool)]) -> Option<Vec<Range<usize>>> {
    let start = |key: &str| offset(text, key.as_bytes())?.checked_sub(1);
    let mut out = Vec::with_capacity(members.len());
    for (i, &(key, kept)) in members.iter().enumerate() {
        if !kept {
            continue;
        }
        let begin = start(key)?;
        let end = match members.get(i + 1) {
            Some(&(next, _)) => before(text, start(next)?, b',')?,
            None => before(text, text.len(), b'}')?,
        };
        (begin < end).then_some(())?;
        out.push(begin..end);
    }
    Some(out)
}

/// Where the value starts whose key ends at `at` (after its closing quote).
fn after(text: &[u8], at: usize) -> Option<usize> {
    let rest = text.get(at..)?.trim_ascii_start();
    let value = rest.strip_prefix(b":")?.trim_ascii_start();
    Some(text.len() - value.len())
}

/// Where `part`, a slice of `text`, starts in it.
fn offset(text: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= text.len()).then_some(start)
}

/// Where the value ends that is followed, at `at`, by `separator` with only whitespace
/// around it.
fn before(text: &[u8], at: usize, separator: u8) -> Option<usize> {
    let end = text.get(..at)?.trim_ascii_end();
    (end.last() == Some(&separator)).then(|| end[..end.len() - 1].trim_ascii_end().len())
}

/// The most members an object (a chunk, an answer, a usage) may have on the fast path.
const MAX_MEMBERS: usize = 24;

/// The top level of a chunk in shape: its members' keys in order, each with whether it is
/// passed on as written (the others are written anew by the normalizer, or dropped, like
/// `usage: null`), and its choices.
struct Top<'a> {
    members: Vec<(&'a str, bool)>,
    choices: Option<Choices>,
}

/// The next key of an object in shape: borrowed (a key with escapes is refused), not one of
/// the keys `seen` so far, and not over [`MAX_MEMBERS`].
pub(super) fn next_key<'de, A: MapAccess<'de>>(
    map: &mut A,
    mut seen: impl ExactSizeIterator<Item = &'de str>,
) -> Result<Option<&'de str>, A::Error> {
    let Some(key) = map.next_key::<&'de str>()? else {
        return Ok(None);
    };
    if seen.len() >= MAX_MEMBERS || seen.any(|k| k == key) {
        return Err(not_in_shape());
    }
    Ok(Some(key))
}

/// Why an object is not in shape (the caller only sees that it is not).
pub(super) fn not_in_shape<E: de::Error>() -> E {
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
        let mut members: Vec<(&'de str, bool)> = Vec::with_capacity(8);
        let mut choices = None;
        while let Some(key) = next_key(&mut map, members.iter().map(|(k, _)| *k))? {
            let kept = match key {
                "id" | "object" | "model" => {
                    map.next_value::<Option<Text>>()?;
                    false
                }
                "created" => {
                    map.next_value::<Option<Timestamp>>()?;
                    false
                }
                "usage" => {
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        return Err(not_in_shape());
                    }
                    false
                }
                "choices" => {
                    choices = Some(map.next_value::<Choices>()?);
                    true
                }
                "error" => return Err(not_in_shape()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    true
                }
            };
            members.push((key, kept));
        }
        Ok(Top { members, choices })
    }
}

/// What the fast path reads of the `choices`: at least one, at most [`MAX_CHOICES`].
struct Choices {
    marks: Vec<ChoiceMark>,
    finished: bool,
    text_bytes: u64,
}

/// One choice's index, and which members the slow path always writes it lacks.
struct ChoiceMark {
    index: u32,
    lacks_finish_reason: bool,
    lacks_logprobs: bool,
}

impl ChoiceMark {
    fn lacks_a_member(&self) -> bool {
        self.lacks_finish_reason || self.lacks_logprobs
    }
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
                    marks: Vec::with_capacity(1),
                    finished: false,
                    text_bytes: 0,
                };
                while let Some(choice) = seq.next_element::<ChoiceView>()? {
                    if out.marks.len() == MAX_CHOICES as usize {
                        return Err(not_in_shape());
                    }
                    out.marks.push(ChoiceMark {
                        index: choice.index,
                        lacks_finish_reason: choice.finish_reason.is_none(),
                        lacks_logprobs: !choice.logprobs,
                    });
                    let finish = choice.finish_reason.as_ref().and_then(|f| f.len);
                    out.finished |= finish.is_some();
                    out.text_bytes += choice.delta.content.len as u64;
                }
                if out.marks.is_empty() {
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
    /// `None` when it is not there (then it is added).
    #[serde(default, deserialize_with = "present")]
    finish_reason: Option<Nullable>,
    /// Whether it is there (it is added otherwise); its value passes as written.
    #[serde(default, deserialize_with = "seen")]
    logprobs: bool,
}

/// A member that is there, as a string or `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Nullable>, D::Error> {
    Nullable::deserialize(deserializer).map(Some)
}

/// A member that is there, whatever its value.
fn seen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
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
pub(super) struct Text {
    pub(super) len: usize,
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
pub(super) struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(not_in_shape())
    }
}

/// A member that must be present and be a string or `null`: the string's unescaped length.
pub(super) struct Nullable {
    pub(super) len: Option<usize>,
}

impl<'de> Deserialize<'de> for Nullable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NullableVisitor;
        impl Visitor<'_> for NullableVisitor {
            type Value = Nullable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Nullable, E> {
                Ok(Nullable { len: Some(v.len()) })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Nullable, E> {
                Ok(Nullable { len: None })
            }
        }
        // `deserialize_any`, not `deserialize_option`: a missing member is then an error
        // rather than `null`.
        deserializer.deserialize_any(NullableVisitor)
    }
}

mod answer;
#[cfg(test)]
mod tests;

pub use answer::AnswerInShape;
