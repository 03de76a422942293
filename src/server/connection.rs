//! Client connections: accepted under a limit, served by hyper's HTTP/1 with a header read
//! timeout (which also closes idle keep-alive connections) and a bounded header size (431),
//! and written through [`StallGuard`], which drops a client that stops reading.
//!
//! A connection over `max_connections` gets a short 503 written without waiting and is
//! closed, so excess load is refused at once instead of queueing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;

use super::middleware::Front;
use crate::config::ConnectionLimits;

/// What a refused connection is told.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 124\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"the gateway is at its connection limit\",\"type\":\"api_error\",\"param\":null,\"code\":\"too_many_connections\"}}";

/// Open connections, bounded.
#[derive(Clone)]
pub(crate) struct ConnectionSlots(Arc<Semaphore>);

impl ConnectionSlots {
    /// Room for `max` connections.
    pub(crate) fn new(max: usize) -> Self {
        ConnectionSlots(Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))))
    }

    /// A slot for a new connection, or `None` at the limit.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// The future serving one accepted connection (run it on its own task), or `None` when the
/// connection was refused at the limit. The connection's slot is held until it ends. Once
/// `closing` turns true, the connection finishes its in-flight request and closes.
///
/// hyper's connection state (with its read and write buffers) is only built once the client
/// has sent something, so idle connections cost little more than their socket.
pub(crate) fn serve(
    stream: TcpStream,
    app: Front,
    limits: &ConnectionLimits,
    slots: &ConnectionSlots,
    mut closing: watch::Receiver<bool>,
) -> Option<impl Future<Output = ()> + Send + use<>> {
    let Some(slot) = slots.take() else {
        refuse(&stream);
        return None;
    };
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let limits = limits.clone();
    Some(async move {
        // `peek` waits for a real byte (`readable` can wake spuriously on a new socket).
        let mut probe = [0u8; 1];
        let first_bytes = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut probe));
        tokio::select! {
            peeked = first_bytes => if !matches!(peeked, Ok(Ok(1..))) { return; },
            () = closed(&mut closing) => return,
        }
        let io = TokioIo::new(StallGuard::new(stream, limits.write_stall_timeout));
        // Boxed, so a connection still waiting for its first bytes does not carry its size.
        let mut connection = Box::pin(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes)
                .serve_connection(io, TowerToHyperService::new(app)),
        );
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = closed(&mut closing) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "client connection ended with an error");
        }
        drop(slot);
    })
}

/// Resolves once `closing` turns true (or its sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Writes the 503 if the socket takes it right away, then closes.
fn refuse(stream: &TcpStream) {
    tracing::warn!("connection limit reached; refusing a connection");
    let _ = stream.try_write(OVER_CAPACITY);
}

/// A connection's I/O that fails a write the client has not taken for `limit` (its receive
/// window stayed full), so hyper closes the connection and the response body, with its
/// upstream request, is dropped.
struct StallGuard<IO> {
    inner: IO,
    limit: Duration,
    /// Running while a write is pending.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> StallGuard<IO> {
    /// Guards `inner`.
    pub(crate) fn new(inner: IO, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a pending write: starts the stall timer, or fails once it has run out.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for the write stall timeout",
        ))
    }

    fn progress<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stall(cx).map(Err),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_fails_the_write_after_the_limit() {
        // A pipe with a 16-byte buffer nobody reads.
        let (client, _unread) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(client, Duration::from_secs(5));
        guarded.write_all(&[0; 16]).await.unwrap();
        let start = tokio::time::Instant::now();
        let error = guarded.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        use tokio::io::AsyncReadExt;
        let (client, mut reader) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(client, Duration::from_secs(5));
        let read = async move {
            let mut buf = [0; 16];
            let mut total = 0;
            while total < 64 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += reader.read(&mut buf).await.unwrap();
            }
        };
        let (written, ()) = tokio::join!(guarded.write_all(&[0; 64]), read);
        written.unwrap();
    }
}
