//! Client connections: accepted under a limit and served by the gateway's own HTTP/1.1
//! ([`exchange`]), with a header read timeout (which also closes idle keep-alive connections),
//! a bounded head (431) and a write stall timeout, which drops a client that stops reading.
//!
//! It is written here rather than taken from hyper's server because a connection's cost is
//! the gateway's floor: hyper keeps an 8 KB read buffer and an 8 KB write buffer per
//! connection for as long as it is open (so for as long as a stream runs) and the last
//! response's header map besides. Here reads land on the stack, a head is written in a buffer
//! of its size and dropped once sent, and body pieces go out as they are.
//!
//! A connection over `max_connections` gets a short 503 written without waiting and is
//! closed, so excess load is refused at once instead of queueing.

mod exchange;
mod incoming;
pub mod request;
mod response;
mod socket;

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

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
/// Until the client sends something, a connection costs little more than its socket.
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
        let socket = socket::Socket::new(stream, limits.write_stall_timeout);
        // Boxed, so a connection still waiting for its first bytes does not carry its size.
        Box::pin(exchange::serve_requests(socket, app, &limits, &mut closing)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
    }
}
