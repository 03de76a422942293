//! HTTP/1.1's chunked transfer coding (RFC 9112 §7.1), decoded as the bytes arrive. Data
//! comes out as slices of what was read (no copy), and between reads the decoder holds a few
//! counters, so a body of any length costs the same memory.
//!
//! Everything the sender controls is bounded: a chunk size beyond 64 bits, a size line
//! longer than [`MAX_LINE_BYTES`], more than [`MAX_EXTENSION_BYTES`] of chunk extensions in
//! one body, trailers beyond [`MAX_TRAILER_BYTES`], and any byte out of the grammar (line
//! ends are CRLF) are errors.

use bytes::{Buf, Bytes};

use super::{Malformed, Step};

/// The longest chunk-size line (size, whitespace and extensions).
const MAX_LINE_BYTES: usize = 4096;
/// All chunk extensions of one body together (they are read and ignored).
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// The trailer section (read and ignored).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Where in the coding the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The chunk size's hex digits (`digits` of them so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// After the digits: whitespace or an extension, up to CR.
    SizeTail {
        size: u64,
    },
    /// CR of a size line seen; LF expected.
    SizeLf {
        size: u64,
    },
    /// Inside a chunk's data.
    Data {
        left: u64,
    },
    /// After a chunk's data: CR expected.
    DataCr,
    /// After a chunk's data and CR: LF expected.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR seen; LF ends the line (`empty`: it ends the body).
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// A chunked body's decoder.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current size line.
    line_bytes: usize,
    /// Extension bytes of the body so far.
    extension_bytes: usize,
    /// Trailer bytes so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            line_bytes: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

fn malformed(why: &'static str) -> Malformed {
    Malformed(why)
}

impl ChunkedDecoder {
    /// Decodes from the front of `input`, consuming what it reads: the next piece of data,
    /// or `More` once `input` is used up, or `Done` at the end of the body.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Step, Malformed> {
        loop {
            if self.state == State::Done {
                return Ok(Step::Done);
            }
            if let State::Data { left } = self.state {
                if input.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                // `take` is at most `left`, so this cannot underflow.
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                return Ok(Step::Data(input.split_to(take)));
            }
            let Some(&byte) = input.first() else {
                return Ok(Step::More);
            };
            input.advance(1);
            self.state = self.next_state(byte)?;
        }
    }

    /// The state after one byte outside a chunk's data.
    fn next_state(&mut self, byte: u8) -> Result<State, Malformed> {
        Ok(match self.state {
            State::Size { size, digits } => {
                self.count_line_byte()?;
                match hex_value(byte) {
                    Some(value) => {
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(value)))
                            .ok_or_else(|| malformed("a chunk size does not fit in 64 bits"))?;
                        State::Size {
                            size,
                            digits: digits.saturating_add(1),
                        }
                    }
                    None if digits == 0 => return Err(malformed("a chunk size has no digits")),
                    None => self.size_tail(size, byte)?,
                }
            }
            State::SizeTail { size } => {
                self.count_line_byte()?;
                self.size_tail(size, byte)?
            }
            State::SizeLf { size } => match (byte, size) {
                (b'\n', 0) => State::TrailerStart,
                (b'\n', left) => {
                    self.line_bytes = 0;
                    State::Data { left }
                }
                _ => return Err(malformed("a chunk size line does not end in CRLF")),
            },
            State::DataCr => expect(byte, b'\r', State::DataLf)?,
            State::DataLf => expect(byte, b'\n', State::Size { size: 0, digits: 0 })?,
            State::TrailerStart | State::Trailer => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(malformed("the trailers are too large"));
                }
                match byte {
                    b'\r' => State::TrailerLf {
                        empty: self.state == State::TrailerStart,
                    },
                    b'\n' => return Err(malformed("a trailer line does not end in CRLF")),
                    _ => State::Trailer,
                }
            }
            State::TrailerLf { empty } => match (byte, empty) {
                (b'\n', true) => State::Done,
                (b'\n', false) => State::TrailerStart,
                _ => return Err(malformed("a trailer line does not end in CRLF")),
            },
            State::Data { .. } | State::Done => unreachable!("handled by decode"),
        })
    }

    /// After a chunk size's digits: CR ends the line, anything else but LF is whitespace or
    /// an extension (counted against the body's extension bound).
    fn size_tail(&mut self, size: u64, byte: u8) -> Result<State, Malformed> {
        match byte {
            b'\r' => Ok(State::SizeLf { size }),
            b'\n' => Err(malformed("a chunk size line does not end in CRLF")),
            b' ' | b'\t' | b';' | 0x21..=0x7e | 0x80..=0xff => {
                self.extension_bytes += 1;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return Err(malformed("the chunk extensions are too large"));
                }
                Ok(State::SizeTail { size })
            }
            _ => Err(malformed("a chunk size line holds a control character")),
        }
    }

    fn count_line_byte(&mut self) -> Result<(), Malformed> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_LINE_BYTES {
            return Err(malformed("a chunk size line is too long"));
        }
        Ok(())
    }
}

/// `byte` must be `wanted`; then the decoder moves to `then`.
fn expect(byte: u8, wanted: u8, then: State) -> Result<State, Malformed> {
    if byte == wanted {
        Ok(then)
    } else {
        Err(malformed("a chunk's data does not end in CRLF"))
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Decodes `input` handed over in the pieces `cuts` makes: the data, whether the body
    /// ended, and what was left after it.
    fn decode_in_pieces(
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, bool, Vec<u8>), Malformed> {
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        let mut start = 0;
        for end in bounds {
            let mut piece = Bytes::copy_from_slice(&input[start..end]);
            start = end;
            loop {
                match decoder.decode(&mut piece)? {
                    Step::Data(bytes) => {
                        assert!(!bytes.is_empty());
                        data.extend_from_slice(&bytes);
                    }
                    Step::More => break,
                    Step::Done => {
                        let mut rest = piece.to_vec();
                        rest.extend_from_slice(&input[start..]);
                        return Ok((data, true, rest));
                    }
                }
            }
        }
        Ok((data, false, Vec::new()))
    }

    fn decoded(input: &str) -> Result<(Vec<u8>, bool, Vec<u8>), Malformed> {
        decode_in_pieces(input.as_bytes(), &[])
    }

    #[test]
    fn a_body_with_extensions_and_trailers() {
        let (data, done, rest) =
            decoded("5;name=value\r\nhello\r\nA \r\n, world!..\r\n0\r\nx-checksum: 1\r\n\r\nNEXT")
                .unwrap();
        assert_eq!(data, b"hello, world!..");
        assert!(done);
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        let (data, done, _) = decoded("4\r\nabcd\r\n").unwrap();
        assert_eq!((data.as_slice(), done), (&b"abcd"[..], false));
    }

    #[test]
    fn out_of_grammar_bodies_are_refused() {
        for (input, why) in [
            ("x\r\n", "no digits"),
            ("\r\n", "no digits"),
            ("4\nabcd\r\n0\r\n\r\n", "CRLF"),
            ("4\r\nabcdX\r\n", "CRLF"),
            ("4\r\nabcd\r\n0\r\nx: y\n\r\n", "CRLF"),
            ("11111111111111111\r\n", "64 bits"),
            ("4\x01\r\n", "control"),
        ] {
            match decoded(input) {
                Err(Malformed(message)) => {
                    assert!(message.contains(why), "{input:?}: {message}")
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn lines_extensions_and_trailers_are_bounded() {
        let long_line = format!("1{}\r\na\r\n", " ".repeat(MAX_LINE_BYTES));
        let many_extensions = format!("1;{}\r\na\r\n", "e".repeat(MAX_LINE_BYTES - 3)).repeat(5);
        let big_trailers = format!("0\r\n{}\r\n\r\n", "t".repeat(MAX_TRAILER_BYTES));
        for (input, why) in [
            (long_line, "too long"),
            (many_extensions, "extensions are too large"),
            (big_trailers, "trailers are too large"),
        ] {
            match decoded(&input) {
                Err(Malformed(message)) => assert!(message.contains(why), "{message}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // Leading zeros are digits, not an overflow.
        let (data, done, _) = decoded(&format!("{}1\r\nz\r\n0\r\n\r\n", "0".repeat(40))).unwrap();
        assert_eq!((data.as_slice(), done), (&b"z"[..], true));
    }

    /// `pieces` written in the chunked coding, each chunk with an extension when asked and
    /// with `trailers` after the last chunk.
    fn encode(pieces: &[Vec<u8>], extensions: bool, trailers: &[String], upper: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces.iter().filter(|p| !p.is_empty()) {
            let size = if upper {
                format!("{:X}", piece.len())
            } else {
                format!("{:x}", piece.len())
            };
            out.extend_from_slice(size.as_bytes());
            if extensions {
                out.extend_from_slice(b" ;ext=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            out.extend_from_slice(trailer.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn any_encoding_decodes_to_its_data_however_it_is_cut(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            extensions in any::<bool>(),
            upper in any::<bool>(),
            trailers in prop::collection::vec("[a-z-]{1,10}: [ -~]{0,20}", 0..3),
            after in prop::collection::vec(any::<u8>(), 0..10),
            cuts in prop::collection::vec(0usize..3000, 0..12),
        ) {
            let mut input = encode(&pieces, extensions, &trailers, upper);
            input.extend_from_slice(&after);
            let (data, done, rest) = decode_in_pieces(&input, &cuts).unwrap();
            prop_assert_eq!(data, pieces.concat());
            prop_assert!(done);
            prop_assert_eq!(rest, after);
        }

        #[test]
        fn any_bytes_are_decoded_or_refused_without_inventing_data(
            input in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(0usize..400, 0..6),
        ) {
            if let Ok((data, _, _)) = decode_in_pieces(&input, &cuts) {
                prop_assert!(data.len() <= input.len());
            }
        }
    }
}
