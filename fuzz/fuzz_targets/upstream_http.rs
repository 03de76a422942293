//! An upstream's HTTP/1.1 answer, cut into reads where the input says: its head read by the
//! gateway's client, then its body by the head's framing (a length, the chunked coding, or
//! until the connection closes). Whatever the bytes, reading ends in a head and a body, or
//! an error, and never yields more body than was sent; a body delimited by a length that
//! completes is exactly that long.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmgate::providers::client::{BodyReader, Framing, HeadReader, Step};

fuzz_target!(|input: &[u8]| {
    // The first byte sets the read size, so heads, chunk lines and CRLFs fall across reads.
    let Some((&cut, answer)) = input.split_first() else {
        return;
    };
    let mut pieces = answer.chunks(usize::from(cut).max(1));
    let mut heads = HeadReader::default();
    let (head, rest) = loop {
        let Some(piece) = pieces.next() else {
            return;
        };
        match heads.push(Bytes::copy_from_slice(piece)) {
            Ok(Some(read)) => break read,
            Ok(None) => {}
            Err(_) => return,
        }
    };
    let mut body = BodyReader::new(head.framing, rest);
    let mut read = 0usize;
    let complete = loop {
        match body.step() {
            Ok(Some(Step::Data(data))) => {
                assert!(!data.is_empty(), "an empty piece of body");
                read += data.len();
            }
            Ok(Some(Step::Done)) => break true,
            Ok(Some(Step::More) | None) => match pieces.next() {
                Some(piece) => body.push(Bytes::copy_from_slice(piece)),
                None => break body.ends_at_close(),
            },
            Err(_) => break false,
        }
    };
    assert!(read <= answer.len(), "more body than bytes");
    if let (true, Framing::Length(length)) = (complete, head.framing) {
        assert_eq!(read as u64, length, "a body of the wrong length");
    }
});
