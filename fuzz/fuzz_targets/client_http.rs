//! A client's HTTP/1.1 requests, cut into reads where the input says: each head gathered and
//! read by the gateway's server, then its body by the head's framing (a length or the
//! chunked coding), then the next request from what is left. Whatever the bytes, reading
//! ends in requests and bodies, or a refusal, and never yields more body than was sent; a
//! body delimited by a length that completes is exactly that long, and no head is over the
//! bound.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmgate::http1::{BodyReader, Framing, HeadBuffer, Step};
use llmgate::server::connection::request::parse_request;

/// The head bound the fuzzer runs with (the gateway's default is 64 KB).
const MAX_HEAD: usize = 1024;

fuzz_target!(|input: &[u8]| {
    // The first byte sets the read size, so heads, chunk lines and CRLFs fall across reads.
    let Some((&cut, sent)) = input.split_first() else {
        return;
    };
    let mut pieces = sent.chunks(usize::from(cut).max(1));
    let mut next = Bytes::new();
    let mut body_read = 0usize;
    // At most a few requests per input.
    for _ in 0..8 {
        let mut heads = HeadBuffer::default();
        let (head, rest) = loop {
            match heads.push(std::mem::take(&mut next), MAX_HEAD) {
                Ok(Some(read)) => break read,
                Ok(None) => {}
                Err(_) => return,
            }
            let Some(piece) = pieces.next() else {
                return;
            };
            next = Bytes::copy_from_slice(piece);
        };
        assert!(head.len() <= MAX_HEAD, "a head over the bound");
        let Ok(request) = parse_request(&head) else {
            return;
        };
        let mut body = BodyReader::new(request.framing, rest);
        let mut read = 0usize;
        loop {
            match body.step() {
                Ok(Some(Step::Data(data))) => {
                    assert!(!data.is_empty(), "an empty piece of body");
                    read += data.len();
                }
                Ok(Some(Step::Done)) => break,
                Ok(Some(Step::More) | None) => match pieces.next() {
                    Some(piece) => body.push(Bytes::copy_from_slice(piece)),
                    None => return,
                },
                Err(_) => return,
            }
        }
        if let Framing::Length(length) = request.framing {
            assert_eq!(read as u64, length, "a body of the wrong length");
        }
        assert_ne!(request.framing, Framing::UntilClose, "a request read until close");
        body_read += read;
        assert!(body_read <= sent.len(), "more body than bytes");
        next = body.take_rest();
    }
});
