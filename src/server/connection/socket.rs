//! A client connection's socket, shared by the connection (heads, responses) and the request
//! body being read: reads land on a buffer of the thread's and are copied into a piece of
//! their size, so a waiting connection holds no read buffer; a write the client takes nothing of for
//! `write_stall_timeout` fails, so a client that stops reading is dropped.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most bytes read and dropped while a connection closes after an answer.
const LINGER_BYTES: usize = 1024 * 1024;
/// How long a closing connection reads and drops what the client sends.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// The most bytes one read takes.
const READ_BYTES: usize = 16 * 1024;

thread_local! {
    /// Where reads land before they are copied into a piece of their size: one per thread,
    /// so a read neither allocates nor clears a buffer.
    static READ_BUFFER: RefCell<Box<[u8; READ_BYTES]>> = RefCell::new(Box::new([0; READ_BYTES]));
}

pub(crate) struct Socket {
    stream: TcpStream,
    write_stall_timeout: Duration,
}

impl Socket {
    pub(crate) fn new(stream: TcpStream, write_stall_timeout: Duration) -> Self {
        Socket {
            stream,
            write_stall_timeout,
        }
    }

    /// The next bytes that arrive; empty once the client closed its side.
    pub(crate) fn poll_read_some(&self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        self.poll_read_at_most(cx, READ_BYTES)
    }

    fn poll_read_at_most(&self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Bytes>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let read = READ_BUFFER.with_borrow_mut(|buf| {
                let buf = &mut buf[..max.min(READ_BYTES)];
                self.try_read_draining(buf)
                    .map(|n| Bytes::copy_from_slice(&buf[..n]))
            });
            match read {
                Ok(piece) => return Poll::Ready(Ok(piece)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads into `buf`. A read that returns less than `buf` holds emptied the socket, so the
    /// runtime's cached readiness is cleared as it is (as tokio's own `AsyncRead` does): the
    /// next read waits for the client instead of costing a system call that would block.
    fn try_read_draining(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = None;
        // Readiness is cleared only when the closure says `WouldBlock`, and only as it was
        // before the read: bytes that arrive after it set it again.
        let cleared = self.stream.try_io(Interest::READABLE, || {
            let n = self.stream.try_read(buf)?;
            read = Some(n);
            if n > 0 && n < buf.len() {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match read {
            Some(n) => Ok(n),
            None => cleared.map(|()| 0),
        }
    }

    /// Resolves once the client is gone (closed its side, or the connection failed) while a
    /// request is being answered. Bytes it sends meanwhile (its next request) are kept in
    /// `early`, up to `max`; after that this stops looking.
    pub(crate) fn poll_gone(
        &self,
        cx: &mut Context<'_>,
        early: &mut BytesMut,
        max: usize,
    ) -> Poll<()> {
        loop {
            let room = max.saturating_sub(early.len());
            if room == 0 {
                return Poll::Pending;
            }
            match ready!(self.poll_read_at_most(cx, room)) {
                Ok(piece) if !piece.is_empty() => early.extend_from_slice(&piece),
                _ => return Poll::Ready(()),
            }
        }
    }

    /// Writes what is left of `bytes` after the first `*sent` (a few bytes: no stall timeout).
    pub(crate) fn poll_write_from(
        &self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        sent: &mut usize,
    ) -> Poll<io::Result<()>> {
        while let Some(left) = bytes.get(*sent..).filter(|left| !left.is_empty()) {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(left) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes all of `slices` in order, in as few system calls as the socket allows.
    pub(crate) async fn write_all(&self, slices: &[&[u8]]) -> io::Result<()> {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let mut written = 0;
        while written < total {
            match self.write_some(slices, written) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One vectored write of what is left of `slices` after `written` bytes. (Not inline in
    /// [`Self::write_all`]: its slices would be kept in that future across the wait.)
    fn write_some(&self, slices: &[&[u8]], written: usize) -> io::Result<usize> {
        let mut io = [IoSlice::new(&[]); 16];
        let count = unwritten(slices, written, &mut io);
        self.stream.try_write_vectored(&io[..count])
    }

    /// Waits until the socket takes more, at most the write stall timeout.
    async fn writable(&self) -> io::Result<()> {
        match tokio::time::timeout(self.write_stall_timeout, self.stream.writable()).await {
            Ok(ready) => ready,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the write stall timeout",
            )),
        }
    }

    /// Closes the connection after an answer that left some of the request unread (a refused
    /// head, a body the routes did not read): ends the sending side, then reads and drops what
    /// the client still sends for a moment (at most [`LINGER_BYTES`]), so that the client reads the
    /// answer rather than a reset. Gives how many bytes it dropped.
    pub(crate) async fn linger(mut self) -> usize {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
        let mut dropped = 0;
        let discard = async {
            while dropped < LINGER_BYTES {
                match std::future::poll_fn(|cx| self.poll_read_some(cx)).await {
                    Ok(piece) if !piece.is_empty() => dropped += piece.len(),
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
        dropped
    }
}

/// Fills `out` with what is left of `slices` after the first `skip` bytes; returns how many
/// slices it set.
fn unwritten<'a>(slices: &[&'a [u8]], mut skip: usize, out: &mut [IoSlice<'a>]) -> usize {
    let mut count = 0;
    for slice in slices {
        if skip >= slice.len() {
            skip -= slice.len();
            continue;
        }
        if count == out.len() {
            break;
        }
        out[count] = IoSlice::new(&slice[skip..]);
        skip = 0;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback connection: the gateway's side as a [`Socket`], and the client's.
    async fn connected(stall: Duration) -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::new(server, stall), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_fails_a_write_after_the_stall_timeout() {
        let (socket, _client) = connected(Duration::from_secs(5)).await;
        let piece = vec![0u8; 1 << 20];
        let started = tokio::time::Instant::now();
        // The socket's buffers fill up, then a write waits for the client, which never reads.
        let error = loop {
            if let Err(error) = socket.write_all(&[&piece]).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn what_a_client_sends_while_it_waits_is_kept_and_its_close_seen() {
        use tokio::io::AsyncWriteExt;
        let (socket, mut client) = connected(Duration::from_secs(5)).await;
        client.write_all(b"GET /next HTTP/1.1\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut early = BytesMut::new();
        std::future::poll_fn(|cx| socket.poll_gone(cx, &mut early, 1024)).await;
        assert_eq!(&early[..], b"GET /next HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_waiting_client_s_bytes_are_kept_up_to_the_bound_and_no_further() {
        use tokio::io::AsyncWriteExt;
        let (socket, mut client) = connected(Duration::from_secs(5)).await;
        client.write_all(&[b'x'; 4096]).await.unwrap();
        let mut early = BytesMut::new();
        let watched = tokio::time::timeout(
            Duration::from_millis(200),
            std::future::poll_fn(|cx| socket.poll_gone(cx, &mut early, 1024)),
        )
        .await;
        assert!(
            watched.is_err(),
            "at the bound it stops looking, so it never resolves"
        );
        assert_eq!(early.len(), 1024);
    }

    #[tokio::test]
    async fn a_closing_connection_drops_at_most_a_megabyte_of_what_the_client_still_sends() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (socket, client) = connected(Duration::from_secs(5)).await;
        let (mut from_gateway, mut to_gateway) = client.into_split();
        // The client keeps sending, four times the cap, and stops at the reset.
        let sender = async move {
            let piece = vec![b'x'; 64 * 1024];
            for _ in 0..(4 * LINGER_BYTES / piece.len()) {
                if to_gateway.write_all(&piece).await.is_err() {
                    return;
                }
            }
        };
        let ((), dropped) = tokio::join!(sender, socket.linger());
        assert!(
            (LINGER_BYTES..LINGER_BYTES + READ_BYTES).contains(&dropped),
            "dropped {dropped} bytes"
        );
        // The gateway's side was ended first: the client reads an end, not a reset.
        let mut rest = Vec::new();
        assert_eq!(from_gateway.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_closing_connection_stops_lingering_when_the_client_closes() {
        use tokio::io::AsyncWriteExt;
        let (socket, mut client) = connected(Duration::from_secs(5)).await;
        client.write_all(&[b'x'; 1000]).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(socket.linger().await, 1000);
    }

    proptest! {
        #[test]
        fn what_is_left_to_write_is_the_rest_of_the_bytes(
            slices in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..20),
            skip in 0usize..400,
        ) {
            let slices: Vec<&[u8]> = slices.iter().map(Vec::as_slice).collect();
            let all = slices.concat();
            let mut out = [IoSlice::new(&[]); 16];
            let count = unwritten(&slices, skip, &mut out);
            let left: Vec<u8> = out[..count].iter().flat_map(|s| s.iter().copied()).collect();
            let expected = &all[skip.min(all.len())..];
            // At most 16 slices at once: what is left starts the rest of the bytes.
            prop_assert!(expected.starts_with(&left));
            if count < 16 {
                prop_assert_eq!(&left[..], expected);
            }
        }
    }
}
