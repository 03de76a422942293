//! Upstream connections (TCP, or TLS by rustls) and the pool that keeps the idle ones.
//!
//! A connection holds no buffer between reads: each read lands on the stack and what came is
//! copied into a piece of exactly its size, so an open stream waiting for its next token
//! costs the socket and a few words. The pool hands out the most recently returned
//! connection first (warm in the caches), checks it is still open without a system call in
//! the usual case, and keeps at most [`MAX_IDLE`] connections for at most [`IDLE_TIMEOUT`].

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Failure;
use super::http1::Origin;

/// How long opening a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often idle connections are checked for age and for the upstream having closed them.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);
/// The most idle connections one client keeps.
const MAX_IDLE: usize = 1024;
/// The most bytes one read takes (on the stack).
const READ_BYTES: usize = 16 * 1024;

/// The byte stream under a connection.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One upstream connection.
pub(crate) struct Conn {
    transport: Transport,
    /// Its origin, to hand it out again only for the same one.
    key: Key,
}

/// An origin, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    tls: bool,
    host: Box<str>,
    port: u16,
}

impl Key {
    fn is(&self, origin: &Origin<'_>) -> bool {
        self.tls == origin.tls && self.port == origin.port && *self.host == *origin.host
    }
}

impl Conn {
    /// Opens a connection to `origin` (a TLS one with `tls` for `https`), within
    /// [`CONNECT_TIMEOUT`].
    pub(crate) async fn open(origin: Origin<'_>, tls: &TlsConnector) -> Result<Conn, super::Error> {
        // A URI writes an IPv6 host in brackets; the socket address and the TLS name do not.
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let connect = async {
            let tcp = TcpStream::connect((host, origin.port)).await?;
            tcp.set_nodelay(true)?;
            let transport = if origin.tls {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| Failure::Address("the host is not a valid TLS server name"))?;
                Transport::Tls(Box::new(tls.connect(name, tcp).await?))
            } else {
                Transport::Plain(tcp)
            };
            Ok::<_, super::Error>(transport)
        };
        let transport = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Failure::ConnectTimeout)??;
        Ok(Conn {
            transport,
            key: Key {
                tls: origin.tls,
                host: origin.host.into(),
                port: origin.port,
            },
        })
    }

    /// Writes a request's head and body (vectored where the transport takes it: the body
    /// is not copied) and flushes them.
    pub(crate) async fn write_request(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let mut bytes = head.chain(body);
        match &mut self.transport {
            Transport::Plain(tcp) => tcp.write_all_buf(&mut bytes).await,
            Transport::Tls(tls) => {
                tls.write_all_buf(&mut bytes).await?;
                tls.flush().await
            }
        }
    }

    /// Reads what has arrived (at most [`READ_BYTES`]) into a piece of its size; an empty
    /// piece when the upstream closed the connection.
    pub(crate) fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let mut storage = [MaybeUninit::<u8>::uninit(); READ_BYTES];
        let mut buf = ReadBuf::uninit(&mut storage);
        match &mut self.transport {
            Transport::Plain(tcp) => ready!(Pin::new(tcp).poll_read(cx, &mut buf))?,
            Transport::Tls(tls) => ready!(Pin::new(tls.as_mut()).poll_read(cx, &mut buf))?,
        }
        Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled())))
    }

    /// Reads what has arrived, as [`Conn::poll_read_some`].
    pub(crate) async fn read_some(&mut self) -> io::Result<Bytes> {
        std::future::poll_fn(|cx| self.poll_read_some(cx)).await
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it
    /// nor sent anything unasked. Readiness is cached by the runtime, so an idle connection
    /// costs no system call here unless something arrived on it.
    fn is_open_and_quiet(&self) -> bool {
        let tcp = match &self.transport {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => tls.get_ref().0,
        };
        let mut byte = [0u8; 1];
        // Pending: nothing to read, so open and quiet.
        tcp.peek(&mut byte).now_or_never().is_none()
    }
}

/// An idle connection and when it became idle.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections of one client, newest last.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    /// Whether the sweeper runs (it starts with the first connection returned).
    sweeping: std::sync::atomic::AtomicBool,
}

impl Pool {
    /// An open idle connection to `origin`, the most recently returned first.
    pub(crate) fn checkout(&self, origin: &Origin<'_>) -> Option<Conn> {
        loop {
            let conn = {
                let mut idle = self.lock();
                let at = idle.iter().rposition(|entry| entry.conn.key.is(origin))?;
                idle.remove(at)?.conn
            };
            if conn.is_open_and_quiet() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request (dropping the oldest one when [`MAX_IDLE`] are kept).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Conn) {
        let dropped = {
            let mut idle = self.lock();
            let dropped = if idle.len() >= MAX_IDLE {
                idle.pop_front()
            } else {
                None
            };
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
            dropped
        };
        drop(dropped);
        self.start_sweeping();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // The list holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the task that closes idle connections that are too old or that the upstream
    /// closed; it ends when the client is gone.
    fn start_sweeping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Relaxed);
            return;
        };
        let pool = Arc::downgrade(self);
        runtime.spawn(sweep(pool));
    }

    /// Closes the idle connections that are too old or no longer usable.
    fn sweep(&self, now: Instant) {
        let closed: VecDeque<Idle> = {
            let mut idle = self.lock();
            let (keep, close) = std::mem::take(&mut *idle).into_iter().partition(|entry| {
                now.saturating_duration_since(entry.since) < IDLE_TIMEOUT
                    && entry.conn.is_open_and_quiet()
            });
            *idle = keep;
            close
        };
        drop(closed);
    }

    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().len()
    }
}

async fn sweep(pool: Weak<Pool>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    fn tls() -> TlsConnector {
        TlsConnector::from(super::super::tls_config().unwrap())
    }

    #[tokio::test]
    async fn the_pool_hands_out_open_connections_of_the_same_origin() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let origin = Origin {
            tls: false,
            host: "127.0.0.1",
            port,
        };
        let pool = Arc::new(Pool::default());
        let first = Conn::open(origin, &tls()).await.unwrap();
        let (mut first_peer, _) = listener.accept().await.unwrap();
        let second = Conn::open(origin, &tls()).await.unwrap();
        let (second_peer, _) = listener.accept().await.unwrap();
        pool.checkin(first);
        pool.checkin(second);
        let other = Origin { port: 1, ..origin };
        assert!(pool.checkout(&other).is_none());
        // The upstream closes the newest; the pool skips it and hands out the other one.
        drop(second_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut conn = pool.checkout(&origin).expect("the first connection");
        assert_eq!(pool.idle_count(), 0);
        conn.write_request(b"pi", b"ng").await.unwrap();
        let mut got = [0u8; 4];
        first_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // A connection the upstream wrote to unasked is not handed out either.
        pool.checkin(conn);
        first_peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout(&origin).is_none());
    }

    #[tokio::test]
    async fn old_connections_are_swept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin {
            tls: false,
            host: "127.0.0.1",
            port: listener.local_addr().unwrap().port(),
        };
        let pool = Arc::new(Pool::default());
        pool.checkin(Conn::open(origin, &tls()).await.unwrap());
        pool.checkin(Conn::open(origin, &tls()).await.unwrap());
        pool.sweep(Instant::now());
        assert_eq!(pool.idle_count(), 2);
        pool.sweep(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(pool.idle_count(), 0);
    }
}
