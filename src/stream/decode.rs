//! Upstream server-sent-event decoding.
//!
//! Written here rather than taken from a crate because the decoder must be linear in its input
//! whatever the chunking: a widely used SSE crate re-scans the pending line on every chunk,
//! which is quadratic on long lines (tensorzero PR #5998). This one remembers how far it has
//! scanned, works on bytes (so a UTF-8 character split across reads is never seen half), and
//! follows the WHATWG rules: CR, LF or CRLF line ends (a CRLF split across reads included),
//! `:` comments, multi-line `data`, one optional space after the colon, and an event per blank
//! line.
//!
//! What the decoder holds (the pending line and the event being built) is bounded: an event or
//! line larger than its limit is an error as soon as it is known to be, so an upstream that
//! never ends a line cannot make it buffer more.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::Stream;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`, not yet checked as UTF-8 (see [`SseEvent::text`]):
    /// the reader of a chunk checks what it reads once. An event of one line that came in
    /// one read shares that read's bytes.
    pub data: Bytes,
}

impl SseEvent {
    /// The event's data as text; an error when it is not UTF-8.
    pub fn text(&self) -> Result<&str, DecodeError> {
        simdutf8::basic::from_utf8(&self.data).map_err(|_| DecodeError::InvalidUtf8)
    }
}

/// The default limit of one event (or line), in bytes.
const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// An incremental SSE parser: feed bytes, take events.
#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous chunk ended in CR, so a leading LF belongs to that line end.
    skip_lf: bool,
    data: Data,
    event: Option<String>,
    /// The most bytes the pending line and event may hold together.
    max_event_bytes: usize,
}

/// The `data` of the event being built.
#[derive(Debug, Default)]
enum Data {
    /// No `data` line yet.
    #[default]
    None,
    /// One line, shared with the read it came in.
    Line(Bytes),
    /// More lines, joined by `\n`.
    Lines(Vec<u8>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::None => 0,
            Data::Line(line) => line.len(),
            Data::Lines(lines) => lines.len(),
        }
    }

    fn push(&mut self, value: Bytes) {
        match self {
            Data::None => *self = Data::Line(value),
            Data::Line(first) => *self = Data::Lines([&first[..], b"\n", &value].concat()),
            Data::Lines(lines) => {
                lines.push(b'\n');
                lines.extend_from_slice(&value);
            }
        }
    }
}

/// Why the decoder refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A line (or an event's data) is not UTF-8.
    #[error("an event-stream line is not valid UTF-8")]
    InvalidUtf8,
    /// An event (or one line) is larger than the limit.
    #[error("an event is larger than {0} bytes (server.max_upstream_event_bytes)")]
    TooLarge(usize),
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder at the start of a stream, with the default event limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose events (and lines) may be at most `max_event_bytes` long.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            skip_lf: false,
            data: Data::None,
            event: None,
            max_event_bytes,
        }
    }

    /// Bytes held for the pending line and event (never more than the limit).
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.event.as_ref().map_or(0, String::len)
    }

    /// Fails when holding `more` bytes besides what is buffered would pass the limit.
    fn reserve(&self, more: usize) -> Result<(), DecodeError> {
        match self.buffered().checked_add(more) {
            Some(total) if total <= self.max_event_bytes => Ok(()),
            _ => Err(DecodeError::TooLarge(self.max_event_bytes)),
        }
    }

    /// Feeds the next bytes; completed events are appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut VecDeque<SseEvent>) -> Result<(), DecodeError> {
        let mut input = Bytes::copy_from_slice(input);
        while let Some(event) = self.next_event(&mut input)? {
            out.push_back(event);
        }
        Ok(())
    }

    /// Reads `input` up to the end of the next event and returns it; `input` is left with the
    /// bytes after it. When no event ends in `input`, all of it is taken (the start of a line
    /// is kept for the next read).
    pub fn next_event(&mut self, input: &mut Bytes) -> Result<Option<SseEvent>, DecodeError> {
        // A CR ended the previous read: an LF opening this one belongs to that line end. (An
        // empty read decides nothing, so the flag waits for real bytes.)
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if input[0] == b'\n' {
                input.advance(1);
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', input) {
            let line = if self.line.is_empty() {
                input.slice(..end)
            } else {
                self.reserve(end)?;
                self.line.extend_from_slice(&input[..end]);
                // A copy at its size; the pending line keeps its room for the next read's.
                let line = Bytes::copy_from_slice(&self.line);
                self.line.clear();
                line
            };
            let terminator = input[end];
            input.advance(end + 1);
            if terminator == b'\r' {
                match input.first() {
                    Some(b'\n') => input.advance(1),
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            if let Some(event) = self.line_complete(line)? {
                return Ok(Some(event));
            }
        }
        self.reserve(input.len())?;
        self.line.extend_from_slice(input);
        input.clear();
        Ok(None)
    }

    /// Ends the input: a last line or event without its terminator is still delivered
    /// (servers often end with `data: [DONE]\n` and no blank line).
    pub fn finish(&mut self, out: &mut VecDeque<SseEvent>) -> Result<(), DecodeError> {
        out.extend(self.last_event()?);
        Ok(())
    }

    /// [`Self::finish`]'s event: the one the last line (not a blank one) ends, if any.
    fn last_event(&mut self) -> Result<Option<SseEvent>, DecodeError> {
        if !self.line.is_empty() {
            let line = Bytes::from(std::mem::take(&mut self.line));
            self.line_complete(line)?;
        }
        Ok(self.dispatch())
    }

    /// Takes one line (without its end); an empty line dispatches the event.
    fn line_complete(&mut self, line: Bytes) -> Result<Option<SseEvent>, DecodeError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.len() > self.max_event_bytes {
            return Err(DecodeError::TooLarge(self.max_event_bytes));
        }
        if line[0] == b':' {
            return Ok(None); // a comment
        }
        // The field, and where its value starts (after one optional space).
        let (field_end, value_start) = match memchr::memchr(b':', &line) {
            Some(at) if line.get(at + 1) == Some(&b' ') => (at, at + 2),
            Some(at) => (at, at + 1),
            None => (line.len(), line.len()),
        };
        let field = &line[..field_end];
        if field == b"data" {
            // Checked as UTF-8 where it is read (`SseEvent::text`): chunk data is most of a
            // stream, and its reader checks it once.
            self.reserve(line.len() - value_start + 1)?;
            let mut value = line;
            value.advance(value_start);
            self.data.push(value);
            return Ok(None);
        }
        // The other lines are checked whole (`:` is ASCII: the line is its two sides).
        let utf8 = |bytes| simdutf8::basic::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8);
        utf8(field)?;
        let value = utf8(&line[value_start..])?;
        // `id`, `retry` and unknown fields mean nothing to a chat stream.
        if field == b"event" {
            self.reserve(value.len())?;
            self.event = Some(value.to_owned());
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let data = match std::mem::take(&mut self.data) {
            Data::None => {
                self.event = None;
                return None;
            }
            Data::Line(line) => line,
            Data::Lines(lines) => lines.into(),
        };
        Some(SseEvent {
            event: self.event.take(),
            data,
        })
    }
}

/// Why an event stream ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SseError<E> {
    /// Reading the body failed.
    #[error("reading the event stream failed")]
    Read(E),
    /// The bytes were not a valid event stream within the limits.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What the event stream brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// A complete event.
    Event(SseEvent),
    /// Bytes that completed no event (part of one, or a comment): the upstream is alive.
    Partial,
}

/// Turns a stream of body chunks into a stream of events, decoding each read as its events
/// are taken.
pub(crate) struct SseStream<S> {
    body: S,
    decoder: SseDecoder,
    /// What is left of the last read.
    read: Bytes,
    /// Whether the last read brought an event yet.
    read_had_event: bool,
    finished: bool,
}

impl<S> SseStream<S> {
    /// Decodes `body`, whose events may be at most `max_event_bytes` long.
    pub(crate) fn new(body: S, max_event_bytes: usize) -> Self {
        SseStream {
            body,
            decoder: SseDecoder::with_limit(max_event_bytes),
            read: Bytes::new(),
            read_had_event: false,
            finished: false,
        }
    }
}

impl<S> SseStream<S> {
    /// The body being decoded.
    pub(crate) fn body_mut(&mut self) -> &mut S {
        &mut self.body
    }

    /// The next event of the last read; `Partial` when that read, now all taken, brought
    /// none; `None` when there is nothing left of it.
    fn next_of_read<E>(&mut self) -> Option<Result<SseItem, SseError<E>>> {
        if self.read.is_empty() {
            return None;
        }
        let item = match self.decoder.next_event(&mut self.read) {
            Ok(Some(event)) => {
                self.read_had_event = true;
                Some(Ok(SseItem::Event(event)))
            }
            Ok(None) => (!self.read_had_event).then_some(Ok(SseItem::Partial)),
            Err(e) => {
                self.finished = true;
                self.read.clear();
                Some(Err(e.into()))
            }
        };
        if self.read.is_empty() {
            // Not even an empty view is kept: it would hold the read's buffer while the
            // stream waits for the next.
            self.read = Bytes::new();
        }
        item
    }
}

impl<S, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<SseItem, SseError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.next_of_read() {
                return Poll::Ready(Some(item));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    this.read = bytes;
                    this.read_had_event = false;
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(SseError::Read(e))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    match this.decoder.last_event() {
                        Ok(None) => {}
                        Ok(Some(event)) => return Poll::Ready(Some(Ok(SseItem::Event(event)))),
                        Err(e) => return Poll::Ready(Some(Err(e.into()))),
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
        decode_with_limit(input, cuts, DEFAULT_MAX_EVENT_BYTES)
    }

    fn decode_with_limit(input: &[u8], cuts: &[usize], limit: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::with_limit(limit);
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
            data: Bytes::copy_from_slice(d.as_bytes()),
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
        // Data where it is read as text; any other line at once.
        let mut out = VecDeque::new();
        SseDecoder::new().push(b"data: \xff\n\n", &mut out).unwrap();
        assert_eq!(out[0].text(), Err(DecodeError::InvalidUtf8));
        for line in [&b"event: \xff\n"[..], b"\xff: x\n", b"id: \xc3\n"] {
            assert_eq!(
                SseDecoder::new().push(line, &mut out),
                Err(DecodeError::InvalidUtf8),
                "{line:?}"
            );
        }
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
                expected.push(SseEvent { event: event.clone(), data: lines.join("\n").into() });
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode_in_pieces(input.as_bytes(), &cuts), expected.clone());
            // A limit no event reaches changes nothing.
            let limit = input.len().max(1);
            prop_assert_eq!(decode_with_limit(input.as_bytes(), &cuts, limit), expected);
        }
    }

    #[test]
    fn events_and_lines_beyond_the_limit_are_refused() {
        let mut out = VecDeque::new();
        // One event in two lines, each small, together too large.
        let mut decoder = SseDecoder::with_limit(16);
        decoder.push(b"data: 0123456789\n", &mut out).unwrap();
        assert_eq!(
            decoder.push(b"data: 0123456789\n", &mut out),
            Err(DecodeError::TooLarge(16))
        );
        // A line that never ends is refused once it is longer than the limit.
        let mut decoder = SseDecoder::with_limit(16);
        decoder.push(b"data: x", &mut out).unwrap();
        decoder.push(b"xxxx", &mut out).unwrap();
        assert_eq!(decoder.buffered(), 11);
        assert_eq!(
            decoder.push(b"xxxxxxxxxx", &mut out),
            Err(DecodeError::TooLarge(16))
        );
        // A whole long line in one read, even a comment.
        let mut decoder = SseDecoder::with_limit(16);
        assert!(decoder.push(b": 0123456789abcdefgh\n", &mut out).is_err());
        // Within the limit, events come out as usual.
        let mut decoder = SseDecoder::with_limit(16);
        decoder.push(b"data: 0123456789\n\n", &mut out).unwrap();
        assert_eq!(out.pop_front(), Some(data("0123456789")));
    }

    #[tokio::test]
    async fn a_waiting_stream_holds_none_of_its_last_read() {
        let read = Bytes::from(b"data: a\n\n".to_vec());
        let probe = read.clone();
        use futures_util::StreamExt;
        let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(read)])
            .chain(futures_util::stream::pending());
        let mut stream = SseStream::new(body, 64);
        let event = stream.next().await;
        assert_eq!(event, Some(Ok(SseItem::Event(data("a")))));
        // The event shares the read; once it is gone, the waiting stream holds nothing of it.
        assert!(!probe.is_unique());
        drop(event);
        let waiting = futures_util::poll!(stream.next());
        assert!(waiting.is_pending());
        assert!(probe.is_unique());
    }

    #[tokio::test]
    async fn a_stream_reports_bytes_that_complete_no_event() {
        let pieces: Vec<Result<Bytes, std::convert::Infallible>> = ["data: a", "bc\n", "\n"]
            .into_iter()
            .map(|p| Ok(Bytes::from(p)))
            .collect();
        let stream = SseStream::new(futures_util::stream::iter(pieces), 64);
        let items: Vec<_> = futures_util::StreamExt::collect(stream).await;
        assert_eq!(
            items,
            vec![
                Ok(SseItem::Partial),
                Ok(SseItem::Partial),
                Ok(SseItem::Event(data("abc")))
            ]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_buffer_beyond_the_limit(
            pieces in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), Just(b'a'), any::<u8>()],
                    0..40,
                ),
                0..20,
            ),
            prefix in prop_oneof![Just(&b""[..]), Just(&b"data: "[..]), Just(&b"event: "[..])],
            limit in 1usize..64,
        ) {
            let mut decoder = SseDecoder::with_limit(limit);
            let mut out = VecDeque::new();
            let mut failed = false;
            for (i, piece) in pieces.iter().enumerate() {
                let piece = if i == 0 { [prefix, piece].concat() } else { piece.clone() };
                if decoder.push(&piece, &mut out).is_err() {
                    failed = true;
                    break;
                }
                prop_assert!(decoder.buffered() <= limit, "{} > {limit}", decoder.buffered());
                prop_assert!(out.iter().all(|e| e.data.len() <= limit));
            }
            if !failed {
                let _ = decoder.finish(&mut out);
            }
        }
    }
}
