//! HTTP/1.1's wire format as both sides of the gateway read it: where a head ends, and a
//! body read by its framing (a length, the chunked coding, or until the connection closes).
//! Nothing here does I/O: the caller reads and hands over what arrived, so the same code
//! serves the upstream client, the client-facing server, property tests and fuzz targets.

pub mod chunked;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use bytes::{Bytes, BytesMut};

use self::chunked::ChunkedDecoder;

/// Bytes that break HTTP/1.1's grammar or one of the bounds set on it, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// Where a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// After this many bytes (0 for a message without a body).
    Length(u64),
    /// At the chunked coding's last chunk.
    Chunked,
    /// When the sender closes the connection.
    UntilClose,
}

/// What reading the bytes at hand gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A piece of the body.
    Data(Bytes),
    /// Nothing more until more bytes arrive.
    More,
    /// The body is complete; bytes after it are left in the input.
    Done,
}

/// Where the head in `buf` ends (after its empty line), if it is all there. `from` is how
/// much of `buf` an earlier call saw (so a head arriving byte by byte is scanned once).
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3).min(buf.len());
    memchr::memchr_iter(b'\n', &buf[start..]).find_map(|offset| {
        let lf = start + offset;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => Some(lf + 2),
            Some([b'\r', b'\n', ..]) => Some(lf + 3),
            _ => None,
        }
    })
}

/// A `content-length` value: digits only (no sign, no list), at most 64 bits.
pub fn content_length(value: &[u8]) -> Result<u64, Malformed> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Malformed("the content length is not a number"));
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(Malformed("the content length does not fit in 64 bits"))
    })
}

/// The last entry of a comma-separated header value.
pub fn last_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    value.rsplit(',').next().map(str::trim)
}

/// Whether a comma-separated header value lists `token`.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Writes one header line (`HeaderValue` holds no CR or LF).
pub fn write_header(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a message's `connection` fields ask to close the connection after it.
pub fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| has_token(value.as_bytes(), "close"))
}

/// A head gathered from the pieces that arrive.
#[derive(Debug, Default)]
pub struct HeadBuffer {
    /// The start of a head that is not complete yet.
    pending: BytesMut,
    /// How much of `pending` was scanned for the head's end.
    scanned: usize,
}

/// More than the most bytes a head may have arrived without its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadTooLarge;

impl HeadBuffer {
    /// Takes the next piece: once a head of at most `max` bytes is complete, the head and the
    /// bytes after it. A head that comes whole in one piece is cut from it, not copied.
    pub fn push(
        &mut self,
        piece: Bytes,
        max: usize,
    ) -> Result<Option<(Bytes, Bytes)>, HeadTooLarge> {
        let mut buf = if self.pending.is_empty() {
            piece
        } else {
            self.pending.extend_from_slice(&piece);
            std::mem::take(&mut self.pending).freeze()
        };
        match head_end(&buf, self.scanned) {
            Some(end) if end > max => Err(HeadTooLarge),
            Some(end) => {
                self.scanned = 0;
                let rest = buf.split_off(end);
                Ok(Some((buf, rest)))
            }
            None if buf.len() > max => Err(HeadTooLarge),
            None => {
                self.scanned = buf.len();
                self.pending = BytesMut::from(buf);
                Ok(None)
            }
        }
    }

    /// Whether no part of a head has arrived.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A body read from the pieces that arrive, by its framing.
#[derive(Debug)]
pub struct BodyReader {
    framing: Reading,
    /// Bytes read and not yet passed on.
    buffered: Bytes,
}

/// How far a body is read.
#[derive(Debug)]
enum Reading {
    /// This many bytes are left.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyReader {
    /// A body framed by `framing`, of which `rest` (read with the head) is the start.
    pub fn new(framing: Framing, rest: Bytes) -> Self {
        BodyReader {
            framing: match framing {
                Framing::Length(left) => Reading::Length(left),
                Framing::Chunked => Reading::Chunked(ChunkedDecoder::default()),
                Framing::UntilClose => Reading::UntilClose,
            },
            buffered: rest,
        }
    }

    /// The next piece of the body, or its end, from what was pushed: `Ok(None)` when more
    /// must be read.
    pub fn step(&mut self) -> Result<Option<Step>, Malformed> {
        Ok(Some(match &mut self.framing {
            Reading::Length(0) => Step::Done,
            Reading::Length(_) | Reading::UntilClose if self.buffered.is_empty() => {
                return Ok(None);
            }
            Reading::Length(left) => {
                let take = usize::try_from(*left)
                    .map_or(self.buffered.len(), |l| l.min(self.buffered.len()));
                // `take` is at most `left`.
                *left -= take as u64;
                Step::Data(self.buffered.split_to(take))
            }
            Reading::UntilClose => Step::Data(std::mem::take(&mut self.buffered)),
            Reading::Chunked(decoder) => match decoder.decode(&mut self.buffered)? {
                Step::More => return Ok(None),
                step => step,
            },
        }))
    }

    /// Takes what was read next (once [`BodyReader::step`] asked for more).
    pub fn push(&mut self, piece: Bytes) {
        debug_assert!(self.buffered.is_empty());
        self.buffered = piece;
    }

    /// Whether the sender closing the connection now ends the body properly (a body read
    /// until then), rather than cutting it short.
    pub fn ends_at_close(&self) -> bool {
        matches!(self.framing, Reading::UntilClose)
    }

    /// The bytes left announced by a length, if the body is delimited by one.
    pub fn length_left(&self) -> Option<u64> {
        match self.framing {
            Reading::Length(left) => Some(left),
            _ => None,
        }
    }

    /// What came after the end of the body (once it is done): the start of the next
    /// message, or bytes that stop the connection from being reused.
    pub fn take_rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buffered)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_head_ends_at_its_empty_line_with_either_line_end() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody", 0), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody", 0), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nx: y\r\n", 0), None);
    }

    proptest! {
        #[test]
        fn the_end_of_a_head_is_found_however_it_arrives(
            fields in prop::collection::vec("[a-z]{1,8}: [ -~]{0,12}", 0..6),
            lf_only in any::<bool>(),
            cuts in prop::collection::vec(0usize..200, 0..8),
        ) {
            let eol = if lf_only { "\n" } else { "\r\n" };
            let mut text = format!("HTTP/1.1 200 OK{eol}");
            for field in &fields {
                text.push_str(field.trim_end());
                text.push_str(eol);
            }
            text.push_str(eol);
            let end = text.len();
            text.push_str("body\r\n\r\n");
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut seen = 0;
            let mut found = None;
            for cut in cuts {
                found = head_end(&bytes[..cut], seen);
                if found.is_some() {
                    break;
                }
                seen = cut;
            }
            prop_assert_eq!(found, Some(end));
        }

    }
}
