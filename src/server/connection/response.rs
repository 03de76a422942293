//! A response on the wire: its head written into one buffer, and its body's pieces framed by
//! a length or the chunked coding, gathered into one vectored write.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use crate::http1::write_header;

/// Where a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delimit {
    /// No body goes out (an answer to `HEAD`, a 204 or a 304); the length is announced when
    /// known.
    Nothing(Option<u64>),
    /// After this many bytes.
    Length(u64),
    /// At the chunked coding's last chunk.
    Chunked,
    /// When the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// The header fields the connection writes itself.
fn is_framing(name: &header::HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
}

/// Writes a response head: status line, the response's fields (framing ones replaced by
/// `delimit`'s), `date` unless set, and `connection: close` when the connection ends after it.
pub(super) fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    delimit: Delimit,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if is_framing(name) {
            continue;
        }
        write_header(out, name, value);
    }
    match delimit {
        Delimit::Length(length) | Delimit::Nothing(Some(length)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Delimit::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Delimit::Nothing(None) | Delimit::Close => {}
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The most body pieces gathered into one write.
pub(super) const MAX_BATCH: usize = 4;

/// Body pieces ready to go out together, with their chunk-size lines.
#[derive(Default)]
pub(super) struct Batch {
    pieces: [Bytes; MAX_BATCH],
    /// `pieces[..len]` are set.
    len: usize,
    /// Each piece's chunk-size line (hex digits and CRLF).
    size_lines: [([u8; 18], usize); MAX_BATCH],
    /// The body ended after these pieces.
    pub(super) ended: bool,
}

impl Batch {
    pub(super) fn is_full(&self) -> bool {
        self.len == MAX_BATCH
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a piece (the batch must not be full; empty pieces are skipped).
    pub(super) fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        self.size_lines[self.len] = size_line(piece.len());
        self.pieces[self.len] = piece;
        self.len += 1;
    }

    /// The pieces' bytes.
    pub(super) fn len_bytes(&self) -> u64 {
        self.pieces[..self.len].iter().map(|p| p.len() as u64).sum()
    }

    /// The slices to write, in order: `head` (if any), then each piece as `delimit` frames it
    /// (and the chunked coding's last chunk once the body ended).
    pub(super) fn slices<'a>(&'a self, head: &'a [u8], delimit: Delimit) -> Slices<'a> {
        let mut out = Slices::default();
        out.push(head);
        for (piece, (line, line_len)) in self.pieces[..self.len].iter().zip(&self.size_lines) {
            match delimit {
                Delimit::Chunked => {
                    out.push(&line[..*line_len]);
                    out.push(piece);
                    out.push(b"\r\n");
                }
                Delimit::Length(_) | Delimit::Close => out.push(piece),
                Delimit::Nothing(_) => {}
            }
        }
        if self.ended && delimit == Delimit::Chunked {
            out.push(b"0\r\n\r\n");
        }
        out
    }
}

/// The most slices one write takes: a head, then a size line, data and CRLF per piece, then
/// the last chunk.
const MAX_SLICES: usize = 2 + 3 * MAX_BATCH;

/// Byte slices to write in one go, in order.
#[derive(Default)]
pub(super) struct Slices<'a> {
    slices: [&'a [u8]; MAX_SLICES],
    len: usize,
}

impl<'a> Slices<'a> {
    /// Adds a slice (empty ones are skipped).
    pub(super) fn push(&mut self, slice: &'a [u8]) {
        if !slice.is_empty() {
            self.slices[self.len] = slice;
            self.len += 1;
        }
    }

    pub(super) fn as_slice(&self) -> &[&'a [u8]] {
        &self.slices[..self.len]
    }
}

/// A chunk-size line for `len` bytes.
fn size_line(len: usize) -> ([u8; 18], usize) {
    let mut line = [0u8; 18];
    let digits = format_hex(len, &mut line);
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    (line, digits + 2)
}

/// Writes `n` in lowercase hex at the start of `out`; returns how many digits.
fn format_hex(n: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = ((usize::BITS - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(n >> (4 * i)) & 0xf];
    }
    digits
}

thread_local! {
    /// The `date` field's value, rendered once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(second, text)| {
        if *second != now {
            *text = http_date(now);
            *second = now;
        }
        f(&text[..]);
    });
}

/// `secs` since 1970 as an IMF-fixdate (RFC 9110 §5.6.7).
fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = crate::calendar::civil_from_days(i64::try_from(days).unwrap_or(0));
    let mut out = [0u8; 29];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    two_digits(&mut out[5..7], u64::from(day));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month as usize).saturating_sub(1) % 12]);
    out[11] = b' ';
    let year = u64::try_from(year).unwrap_or(0) % 10_000;
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    out[16] = b' ';
    two_digits(&mut out[17..19], in_day / 3600);
    out[19] = b':';
    two_digits(&mut out[20..22], in_day / 60 % 60);
    out[22] = b':';
    two_digits(&mut out[23..25], in_day % 60);
    out[25..].copy_from_slice(b" GMT");
    out
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn head(headers: &HeaderMap, delimit: Delimit, close: bool) -> String {
        let mut out = Vec::new();
        write_head(&mut out, StatusCode::OK, headers, delimit, close);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_head_carries_its_own_framing_and_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        let text = head(&headers, Delimit::Length(12), false);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"));
        assert!(text.contains("\r\ncontent-length: 12\r\n"), "{text}");
        assert!(
            !text.contains("999") && !text.contains("keep-alive"),
            "{text}"
        );
        assert!(
            text.contains("\r\ndate: ") && text.ends_with(" GMT\r\n\r\n"),
            "{text}"
        );
        let text = head(&HeaderMap::new(), Delimit::Chunked, true);
        assert!(
            text.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{text}"
        );
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
        let text = head(&HeaderMap::new(), Delimit::Nothing(Some(7)), false);
        assert!(text.contains("\r\ncontent-length: 7\r\n"), "{text}");
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(1_798_761_599), b"Thu, 31 Dec 2026 23:59:59 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn a_batch_frames_its_pieces() {
        let mut batch = Batch::default();
        batch.push(Bytes::from_static(b"hello"));
        batch.push(Bytes::new());
        batch.push(Bytes::from(vec![b'x'; 300]));
        batch.ended = true;
        let wire: Vec<u8> = batch.slices(b"HEAD", Delimit::Chunked).as_slice().concat();
        let expected = [
            &b"HEAD5\r\nhello\r\n12c\r\n"[..],
            &[b'x'; 300],
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(wire, expected);
        assert_eq!(batch.len_bytes(), 305);
        let wire = batch.slices(b"", Delimit::Length(305)).as_slice().concat();
        assert_eq!(wire.len(), 305);
    }

    proptest! {
        #[test]
        fn size_lines_are_the_length_in_hex(len in any::<usize>()) {
            let (line, n) = size_line(len);
            let text = std::str::from_utf8(&line[..n]).unwrap();
            prop_assert_eq!(text, format!("{len:x}\r\n"));
        }
    }
}
