//! Upstream server-sent-event decoding.
//!
//! Written here rather than taken from a crate because the decoder must be linear in its input
//! whatever the chunking: a widely used SSE crate re-scans the pending line on every chunk,
//! which is quadratic on long lines (tensorzero PR #5998). This one remembers how far it has
//! scanned, works on bytes (so a UTF-8 character split across reads is never seen half), and
//! follows the WHATWG rules: CR, LF or CRLF line ends (a CRLF split across reads included),
//! `:` comments, multi-line `data`, one optional space after the colon, and an event per blank
//! line.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// An incremental SSE parser: feed bytes, collect events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous chunk ended in CR, so a leading LF belongs to that line end.
    skip_lf: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

/// The upstream sent a line that is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is not valid UTF-8")]
pub struct InvalidUtf8;

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; completed events are appended to `out`.
    pub fn push(
        &mut self,
        mut input: &[u8],
        out: &mut VecDeque<SseEvent>,
    ) -> Result<(), InvalidUtf8> {
        // A CR ended the previous read: an LF opening this one belongs to that line end. (An
        // empty read decides nothing, so the flag waits for real bytes.)
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if let [b'\n', rest @ ..] = input {
                input = rest;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', input) {
            let terminator = input[end];
            if self.line.is_empty() {
                self.line_complete(&input[..end], out)?;
            } else {
                self.line.extend_from_slice(&input[..end]);
                let line = std::mem::take(&mut self.line);
                self.line_complete(&line, out)?;
                self.line = line;
                self.line.clear();
            }
            input = &input[end + 1..];
            if terminator == b'\r' {
                match input {
                    [b'\n', rest @ ..] => input = rest,
                    [] => self.skip_lf = true,
                    _ => {}
                }
            }
        }
        self.line.extend_from_slice(input);
        Ok(())
    }

    /// Ends the input: a last line or event without its terminator is still delivered
    /// (servers often end with `data: [DONE]\n` and no blank line).
    pub fn finish(&mut self, out: &mut VecDeque<SseEvent>) -> Result<(), InvalidUtf8> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_complete(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn line_complete(
        &mut self,
        line: &[u8],
        out: &mut VecDeque<SseEvent>,
    ) -> Result<(), InvalidUtf8> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment
        }
        let line = std::str::from_utf8(line).map_err(|_| InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {} // `id`, `retry` and unknown fields mean nothing to a chat stream
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        if self.has_data {
            out.push_back(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
            self.has_data = false;
        } else {
            self.event = None;
        }
    }
}

/// Why an event stream ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// Reading the body failed.
    #[error("reading the event stream failed: {0}")]
    Read(String),
    /// A line was not UTF-8.
    #[error(transparent)]
    Utf8(#[from] InvalidUtf8),
}

/// Turns a stream of body chunks into a stream of events.
pub struct SseStream<S> {
    body: S,
    decoder: SseDecoder,
    ready: VecDeque<SseEvent>,
    finished: bool,
}

impl<S> SseStream<S> {
    /// Decodes `body`.
    pub fn new(body: S) -> Self {
        SseStream {
            body,
            decoder: SseDecoder::new(),
            ready: VecDeque::new(),
            finished: false,
        }
    }
}

impl<S, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<SseEvent, SseError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    if let Err(e) = this.decoder.push(&bytes, &mut this.ready) {
                        this.finished = true;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(SseError::Read(e.to_string()))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    if let Err(e) = this.decoder.finish(&mut this.ready) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = VecDeque::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            decoder.push(&input[start..cut], &mut out).unwrap();
            start = cut;
        }
        decoder.push(&input[start..], &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        out.into_iter().collect()
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: d.to_owned(),
        }
    }

    #[test]
    fn decodes_the_spec_cases() {
        let input = b": keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: error\ndata: line one\ndata:line two\n\ndata\n\nid: 7\nretry: 10\n\ndata: [DONE]\n\n";
        let events = decode_in_pieces(input, &[]);
        assert_eq!(
            events,
            vec![
                data("{\"a\":1}"),
                SseEvent {
                    event: Some("error".into()),
                    data: "line one\nline two".into()
                },
                data(""),
                data("[DONE]"),
            ]
        );
    }

    #[test]
    fn lone_cr_ends_lines_and_split_crlf_is_one_line_end() {
        assert_eq!(
            decode_in_pieces(b"data: a\r\rdata: b\r\n\r\n", &[]),
            vec![data("a"), data("b")]
        );
        assert_eq!(
            decode_in_pieces(b"data: a\r\n\r\n", &[7, 8, 9]),
            vec![data("a")]
        );
    }

    #[test]
    fn an_empty_read_between_cr_and_lf_keeps_them_one_line_end() {
        // Found by the property test below: "\r" | "" | "\n" is one line end, not two.
        let input = b"data: a\r\ndata: b\r\n\r\n";
        let cr = input.iter().position(|b| *b == b'\r').unwrap() + 1;
        assert_eq!(decode_in_pieces(input, &[cr, cr]), vec![data("a\nb")]);
    }

    #[test]
    fn unterminated_last_event_is_delivered_at_the_end() {
        assert_eq!(
            decode_in_pieces(b"data: [DONE]", &[3]),
            vec![data("[DONE]")]
        );
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut out = VecDeque::new();
        assert_eq!(
            SseDecoder::new().push(b"data: \xff\n\n", &mut out),
            Err(InvalidUtf8)
        );
    }

    #[test]
    fn a_long_line_in_many_pieces_is_scanned_once() {
        // Linear: one line of 1 MiB in 1-byte pieces decodes quickly and exactly.
        let payload = "x".repeat(1 << 20);
        let input = format!("data: {payload}\n\n");
        let mut decoder = SseDecoder::new();
        let mut out = VecDeque::new();
        for byte in input.as_bytes().chunks(1) {
            decoder.push(byte, &mut out).unwrap();
        }
        assert_eq!(out.pop_front().map(|e| e.data.len()), Some(1 << 20));
    }

    fn event_text() -> impl Strategy<Value = String> {
        // Text with multi-byte characters, colons and spaces, but no line ends.
        proptest::string::string_regex("[a-zé€😀:{}\" ]{0,12}").unwrap()
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            events in proptest::collection::vec((proptest::option::of("[a-z]{1,6}"), proptest::collection::vec(event_text(), 1..4)), 0..6),
            line_end in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            comments in any::<bool>(),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut input = String::new();
            let mut expected = Vec::new();
            for (event, lines) in &events {
                if comments {
                    input.push_str(": ping");
                    input.push_str(line_end);
                }
                if let Some(name) = event {
                    input.push_str(&format!("event: {name}{line_end}"));
                }
                for line in lines {
                    input.push_str(&format!("data: {line}{line_end}"));
                }
                input.push_str(line_end);
                expected.push(SseEvent { event: event.clone(), data: lines.join("\n") });
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode_in_pieces(input.as_bytes(), &cuts), expected);
        }
    }
}
