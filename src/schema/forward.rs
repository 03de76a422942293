//! A request body forwarded as the client wrote it.
//!
//! An OpenAI-shaped upstream gets the client's own members minus the gateway's, so the body
//! can be the client's text with the per-call members added, instead of the typed request
//! written out again: copying text costs a fraction of encoding it, the more so the longer
//! the conversation.
//!
//! The text was parsed and validated already. It is read once more here, by the strict
//! [`Reader`], which declines text that could be read two ways: a key with an escape, or a key
//! twice in one object (serde_json, and so validation, keeps the last of two values; an
//! upstream might keep the first). A declined body is written from the typed request.

use super::request::ChatRequest;
use crate::json_reader::{Reader, all_different};

impl ChatRequest {
    /// Appends the members of the client's body an upstream gets, each as `,"key":value` as
    /// written: all but the gateway's own ([`ChatRequest::CONSUMED`]) and the known fields
    /// set to `null` (which the typed request leaves out too). `None` when the request has no
    /// body to forward as written (then `out` holds a part of one and must be dropped).
    pub(crate) fn write_forwarded_members(&self, out: &mut Vec<u8>) -> Option<()> {
        let source = simdutf8::basic::from_utf8(self.source.as_deref()?).ok()?;
        let mut reader = Reader::new(source);
        // The top level's keys; a value's own keys are checked above them and taken off.
        let mut keys = Vec::with_capacity(16);
        reader.object(|reader, key, start| {
            reader.value_with_unique_keys(&mut keys)?;
            keys.push(key);
            let member = reader.text(start)?;
            if forwarded(key, member) {
                out.push(b',');
                out.extend_from_slice(member.as_bytes());
            }
            Some(())
        })?;
        (reader.at_end() && all_different(&mut keys)).then_some(())
    }
}

/// Whether the member `key` with the text `member` (key and value) goes upstream.
fn forwarded(key: &str, member: &str) -> bool {
    let consumed = ChatRequest::CONSUMED.contains(&key);
    // Of JSON's values only `null` ends in `null`.
    let known_and_null = member.ends_with("null") && ChatRequest::FIELDS.contains(&key);
    !consumed && !known_and_null
}

#[cfg(test)]
mod tests;
