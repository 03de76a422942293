//! Real processes for tests: the gateway binary on a config file in its own temporary
//! directory, and a throwaway `redis-server`, each on a free loopback port, waited for with a
//! deadline, stopped by PID (and killed on drop).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_llmgate");

/// A free loopback port (free when asked; the caller binds it soon after).
pub(crate) fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// A new, empty temporary directory named after `name`.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("llmgate-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends `signal` (a name such as `TERM` or `HUP`) to `pid` with the `kill` command.
pub(crate) fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits up to `limit` for `child` to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `llmgate serve` on a config file, listening on `LLMGATE_LISTEN=127.0.0.1:<free port>`,
/// stdout and stderr going to files in its directory.
pub(crate) struct Gateway {
    child: Child,
    dir: PathBuf,
    addr: String,
    pub(crate) client: reqwest::Client,
}

impl Gateway {
    /// Starts the gateway on `config` (`RUST_LOG=info`) and waits until `/healthz` is 200.
    pub(crate) async fn start(name: &str, config: &str) -> Gateway {
        Gateway::start_with(name, config, &[]).await
    }

    /// Like [`Gateway::start`] with extra environment variables (which may override
    /// `RUST_LOG`).
    pub(crate) async fn start_with(name: &str, config: &str, env: &[(&str, &str)]) -> Gateway {
        llmgate::telemetry::install_crypto_provider();
        let dir = temp_dir(name);
        std::fs::write(dir.join("llmgate.toml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(dir.join("llmgate.toml"))
            .env("LLMGATE_LISTEN", &addr)
            .env("RUST_LOG", "info")
            .env_remove("LLMGATE_LOG")
            .env_remove("LLMGATE_LOG_FORMAT")
            .env_remove("LLMGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let mut gateway = Gateway {
            child,
            dir,
            addr,
            client: reqwest::Client::new(),
        };
        gateway.wait_healthy().await;
        gateway
    }

    async fn wait_healthy(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!("the gateway exited ({exit}) at start:\n{}", self.output());
            }
            let probe = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the gateway did not answer /healthz:\n{}", self.output());
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file it serves (rewrite it and send SIGHUP to reload).
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("llmgate.toml")
    }

    /// Sends `name` (`TERM`, `HUP`, ...) to the process.
    pub(crate) fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Everything it wrote so far: stdout, then stderr.
    pub(crate) fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that): its exit status
    /// (`None` if it had to be killed) and its output.
    pub(crate) async fn stop(mut self) -> (Option<ExitStatus>, String) {
        self.signal("TERM");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut exit = None;
        while tokio::time::Instant::now() < deadline {
            exit = self.child.try_wait().unwrap();
            if exit.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        (exit, self.output())
    }

    /// SIGKILL, and waits for the exit.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `program` is on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A `redis-server` of its own: no persistence, loopback only, in a temporary directory.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    program: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING. Panics (fails
    /// the test) when `redis-server` is not on `PATH`.
    pub(crate) fn start() -> RedisServer {
        let program = on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server is not on PATH: these tests need a real Redis. Install Debian's \
                 `redis-server` package (scripts/test does this when run as root)."
            )
        });
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir: temp_dir("redis"),
            program,
        };
        // A port picked free may be taken before redis binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start:\n{}", server.log());
    }

    /// Starts it on its port; true once it answers PING.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new(&self.program)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops it by PID (SIGTERM, SIGKILL after 5 s) and waits until its port refuses.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_exit(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        assert!(
            !ping(self.port),
            "redis on port {} still answers",
            self.port
        );
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub(crate) fn restart(&mut self) {
        self.stop();
        for _ in 0..20 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when a Redis on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let timeout = Duration::from_millis(500);
    let Ok(mut stream) =
        TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)), timeout)
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[test]
fn a_redis_server_stops_and_restarts_on_its_port() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    assert!(ping(port));
    redis.stop();
    assert!(!ping(port));
    redis.restart();
    assert_eq!(redis.port, port);
    assert!(ping(port), "{}", redis.log());
    let pid = redis.child.as_ref().unwrap().id();
    drop(redis);
    assert!(!ping(port), "dropped: stopped");
    assert!(!std::path::Path::new(&format!("/proc/{pid}/status")).exists());
}
