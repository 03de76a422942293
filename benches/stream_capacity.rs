//! Stream capacity: how much memory N open streams cost the gateway, and whether a new
//! request's time to first token suffers while they run.
//!
//! A small mock upstream (in this process) trickles an OpenAI chunk every 100 ms on every
//! stream until the hold time ends; the real gateway binary relays them; this process opens
//! the N client streams (in batches), measures the gateway's RSS once all are open, and times
//! the first chunk of new short streams before and during the load (from a thread of their
//! own, against a mock on a thread of its own, so this process's load does not delay them).
//! Everything is on loopback and bounded in time.
//!
//! `cargo bench --bench stream_capacity` (release binary `target/release/llmgate`, or
//! `LLMGATE_BIN`); `STREAMS` (default 10,000, capped by the open-file limit: the gateway needs
//! two descriptors per stream), `HOLD_SECS` (default 20). Under `cargo test` it runs a smoke
//! version (50 streams, 1 s) against the debug binary.

// A benchmark may spawn its own servers and clients (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// One chunk the mock trickles.
const CHUNK: &[u8] = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n";
const LAST: &[u8] = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
/// The gap between trickled chunks.
const TRICKLE: Duration = Duration::from_millis(100);
/// New short streams timed before and during the load.
const PROBES: usize = 20;
/// Streams opened at once.
const BATCH: usize = 500;

struct Settings {
    streams: usize,
    hold: Duration,
    binary: String,
}

fn settings() -> Settings {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (streams, hold, binary) = if bench {
        let binary = std::env::var("LLMGATE_BIN")
            .unwrap_or_else(|_| format!("{}/target/release/llmgate", env!("CARGO_MANIFEST_DIR")));
        (env("STREAMS", 10_000), env("HOLD_SECS", 20), binary)
    } else {
        (50, 1, env!("CARGO_BIN_EXE_llmgate").to_owned())
    };
    // This process holds a client and a mock socket per stream, the gateway two: leave room.
    let affordable = open_file_limit().saturating_sub(200) / 2;
    Settings {
        streams: streams.min(affordable),
        hold: Duration::from_secs(hold as u64).min(Duration::from_secs(120)),
        binary,
    }
}

fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// The mock upstream: `/slow/...` trickles until `stop`, anything else answers a short stream.
async fn mock(listener: TcpListener, stop: Arc<AtomicBool>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let Some(slow) = read_request(&mut socket).await else {
                return;
            };
            let head =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            if socket.write_all(head).await.is_err() {
                return;
            }
            if slow {
                while !stop.load(Ordering::Relaxed) {
                    if socket.write_all(CHUNK).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(TRICKLE).await;
                }
            } else if socket.write_all(CHUNK).await.is_err() {
                return;
            }
            let _ = socket.write_all(LAST).await;
        });
    }
}

/// Reads one request (head and `content-length` body); whether it asked for the slow path.
async fn read_request(socket: &mut TcpStream) -> Option<bool> {
    let mut buffer = Vec::with_capacity(2048);
    let mut piece = [0u8; 2048];
    loop {
        let n = socket.read(&mut piece).await.ok()?;
        if n == 0 || buffer.len() > 64 * 1024 {
            return None;
        }
        buffer.extend_from_slice(&piece[..n]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            return Some(head.starts_with("post /slow/"));
        }
    }
}

fn start_gateway(
    binary: &str,
    port: u16,
    upstream: u16,
    quick_upstream: u16,
) -> (Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("llmgate-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("llmgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 30000\n\
             [providers.slow]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{upstream}/slow/v1\"\n\
             [providers.quick]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{quick_upstream}/quick/v1\"\n"
        ),
    )
    .expect("config written");
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    (child, dir)
}

fn request(model: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Opens a stream; returns the socket and the time to its first `data:` event.
async fn open_stream(port: u16, model: &str) -> Option<(TcpStream, Duration)> {
    let started = Instant::now();
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    socket.write_all(&request(model)).await.ok()?;
    let mut seen = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut piece))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&piece[..n]);
        if seen.windows(6).any(|w| w == b"data: ") {
            return Some((socket, started.elapsed()));
        }
    }
}

/// Reads a stream to its end, discarding it.
async fn drain(mut socket: TcpStream) {
    let mut piece = [0u8; 4096];
    while let Ok(n) = socket.read(&mut piece).await {
        if n == 0 {
            break;
        }
    }
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

/// SIGTERM (a graceful stop, so a wrapping profiler writes its output), SIGKILL after 30 s.
fn stop_gateway(gateway: &mut Child) {
    let _ = Command::new("kill").arg(gateway.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = gateway.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The process's user and system CPU time so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Times `PROBES` new short streams on a thread and runtime of their own (the load's mock
/// and readers keep this process's runtime busy, and would delay the probe's own reads).
async fn probe(port: u16) -> (Duration, Duration) {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a probe runtime")
            .block_on(probe_streams(port))
    })
    .await
    .expect("the probe thread")
}

/// Runs `mock` on a thread and runtime of its own, so the quick streams' upstream answers
/// whatever the trickling streams' mock is doing.
fn spawn_own_mock(listener: std::net::TcpListener, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a mock runtime");
        runtime.block_on(async move {
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener");
            let listener = TcpListener::from_std(listener).expect("the quick mock's listener");
            mock(listener, stop).await;
        });
    });
}

/// Times `PROBES` new short streams one after the other: (p50, max).
async fn probe_streams(port: u16) -> (Duration, Duration) {
    let mut times = Vec::new();
    for _ in 0..PROBES {
        let (socket, ttft) = open_stream(port, "quick/m")
            .await
            .expect("a probe stream answers");
        drain(socket).await;
        times.push(ttft);
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let settings = settings();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("mock port");
    let upstream = listener.local_addr().expect("mock address").port();
    tokio::spawn(mock(listener, stop.clone()));
    let quick = std::net::TcpListener::bind("127.0.0.1:0").expect("quick mock port");
    let quick_upstream = quick.local_addr().expect("quick mock address").port();
    spawn_own_mock(quick, stop.clone());
    let port = free_port();
    let (mut gateway, dir) = start_gateway(&settings.binary, port, upstream, quick_upstream);
    wait_healthy(port).await;
    let pid = gateway.id();
    let (idle_p50, idle_max) = probe(port).await;
    let idle_rss = rss_kb(pid);

    let opened = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let batch = Arc::new(Semaphore::new(BATCH));
    let mut streams = Vec::with_capacity(settings.streams);
    let mut first_chunks = Vec::with_capacity(settings.streams);
    for _ in 0..settings.streams {
        let (open, batch) = (open.clone(), batch.clone());
        streams.push(tokio::spawn(async move {
            let permit = batch.acquire_owned().await.ok()?;
            let (socket, ttft) = open_stream(port, "slow/m").await?;
            drop(permit);
            open.fetch_add(1, Ordering::Relaxed);
            Some((socket, ttft))
        }));
    }
    let mut sockets = Vec::with_capacity(settings.streams);
    for stream in streams {
        if let Ok(Some((socket, ttft))) = stream.await {
            sockets.push(socket);
            first_chunks.push(ttft);
        }
    }
    let open_took = opened.elapsed();
    let opened_count = sockets.len();
    // Every stream keeps receiving a chunk per 100 ms while this process reads them.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|s| tokio::spawn(drain(s)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded_rss = rss_kb(pid);
    let (loaded_p50, loaded_max) = probe(port).await;
    let (cpu_from, wall_from) = (cpu_ticks(pid), Instant::now());
    let left = settings.hold.saturating_sub(opened.elapsed());
    tokio::time::sleep(left.max(Duration::from_secs(1))).await;
    // The gateway's CPU while it relays (100 ticks a second on Linux).
    let cpu_share =
        cpu_ticks(pid).saturating_sub(cpu_from) as f64 / 100.0 / wall_from.elapsed().as_secs_f64();
    let peak_rss = rss_kb(pid).max(loaded_rss);
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    }
    stop_gateway(&mut gateway);
    let _ = std::fs::remove_dir_all(dir);

    first_chunks.sort();
    let per_stream = (loaded_rss.saturating_sub(idle_rss) * 1024)
        .checked_div(opened_count as u64)
        .unwrap_or(0);
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!(
        "| streams open | opened in | gateway RSS idle | with the streams | peak | per open stream | new stream TTFT p50 / max, idle | same, under load | gateway CPU under load |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    println!(
        "| {opened_count} of {} | {:.1} s | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} KB | {} / {} ms | {} / {} ms | {:.0} % |",
        settings.streams,
        open_took.as_secs_f64(),
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        per_stream as f64 / 1024.0,
        ms(idle_p50),
        ms(idle_max),
        ms(loaded_p50),
        ms(loaded_max),
        cpu_share * 100.0,
    );
    assert_eq!(
        opened_count, settings.streams,
        "every stream opened and got its first chunk"
    );
}
