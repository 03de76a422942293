//! A request body that had not fully arrived with its head: read from the socket as the
//! routes ask for it (their limit and timeout apply), by its framing. `100 Continue` goes out
//! when the routes first ask, if the client waits for it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::socket::Socket;
use crate::http1::{BodyReader, Framing, Step};

/// The body as read, shared between the routes (which read it) and the connection (which
/// learns afterwards whether it was read to its end, and what came after it).
pub(super) type Shared = Arc<Mutex<Reading>>;

pub(super) struct Reading {
    reader: BodyReader,
    /// How much of `100 Continue` went out, when the client waits for it.
    continue_sent: Option<usize>,
    /// Read to its end (what is left in the reader came after it).
    done: bool,
    /// Cut short or out of grammar: the connection cannot carry another request.
    failed: bool,
}

impl Reading {
    pub(super) fn new(framing: Framing, start: Bytes, expects_continue: bool) -> Shared {
        Arc::new(Mutex::new(Reading {
            reader: BodyReader::new(framing, start),
            continue_sent: expects_continue.then_some(0),
            done: false,
            failed: false,
        }))
    }

    /// Once the body was read to its end: the bytes that came after it.
    pub(super) fn rest_after_end(shared: &Shared) -> Option<Bytes> {
        let mut reading = shared.lock().unwrap_or_else(PoisonError::into_inner);
        (reading.done && !reading.failed).then(|| reading.reader.take_rest())
    }

    /// Whether the routes read the whole body (or gave up on it after an error).
    pub(super) fn is_over(shared: &Shared) -> bool {
        shared.lock().unwrap_or_else(PoisonError::into_inner).over()
    }

    fn over(&self) -> bool {
        self.done || self.failed
    }
}

/// The interim answer to `expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The body the routes read.
pub(super) struct Incoming {
    pub(super) socket: Arc<Socket>,
    pub(super) shared: Shared,
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let mut reading = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if reading.over() {
            return Poll::Ready(None);
        }
        if let Some(sent) = &mut reading.continue_sent {
            ready!(this.socket.poll_write_from(cx, CONTINUE, sent))?;
            reading.continue_sent = None;
        }
        loop {
            match reading.reader.step() {
                Ok(Some(Step::Data(piece))) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                Ok(Some(Step::Done)) => {
                    reading.done = true;
                    return Poll::Ready(None);
                }
                Ok(Some(Step::More) | None) => {}
                Err(malformed) => {
                    reading.failed = true;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the request body is not valid HTTP/1.1: {malformed}"),
                    ))));
                }
            }
            let piece = match ready!(this.socket.poll_read_some(cx)) {
                Ok(piece) if !piece.is_empty() => piece,
                Ok(_) => {
                    reading.failed = true;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the body was complete",
                    ))));
                }
                Err(error) => {
                    reading.failed = true;
                    return Poll::Ready(Some(Err(error)));
                }
            };
            reading.reader.push(piece);
        }
    }

    fn is_end_stream(&self) -> bool {
        Reading::is_over(&self.shared)
    }

    fn size_hint(&self) -> SizeHint {
        let reading = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        match reading.reader.length_left() {
            // `left` counts what is buffered and what is still to come.
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}
