//! Smoke tests of the real binary: `openapi`, `check`, and `serve` with SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_llmgate");

fn repo_file(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn openapi_prints_the_committed_document() {
    let output = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(output.status.success());
    let committed = std::fs::read(repo_file("openapi/openapi.json")).unwrap();
    assert!(
        output.stdout == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn check_prints_providers_and_routes() {
    let output = Command::new(BIN)
        .args([
            "check",
            "--config",
            &repo_file("config/llmgate.example.toml"),
        ])
        .env("LLMGATE_KEY_TEAM_A", "a")
        .env("LLMGATE_KEY_DEMO", "b")
        .env("LLMGATE_ADMIN_KEY", "g")
        .env("OPENAI_API_KEY", "c")
        .env("NUGEN_API_KEY", "d")
        .env("ATOMA_API_KEY", "e")
        .env("ORQ_API_KEY", "f")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "openai: kind=openai base_url=https://api.openai.com/v1 path=/chat/completions"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("fast -> openai/gpt-4o-mini (weight 3)"),
        "{stdout}"
    );
}

#[test]
fn check_fails_with_the_key_path() {
    let dir = std::env::temp_dir().join(format!("llmgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let check = |config: &str| {
        std::fs::write(&path, config).unwrap();
        let output = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "check must fail for {config}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = check("[providers.x]\nkind = \"openai\"\nbase_url = \"not a url\"\n");
    assert!(stderr.contains("providers.x.base_url"), "{stderr}");
    let stderr =
        check("[providers.x]\nkind = \"openai\"\napi_key = \"${LLMGATE_TEST_UNSET_VAR}\"\n");
    assert!(
        stderr.contains("LLMGATE_TEST_UNSET_VAR") && stderr.contains("providers.x.api_key"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_listens_where_told_and_stops_on_sigterm() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("LLMGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("LLMGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = poll_for(|| get_is_ok(&format!("127.0.0.1:{port}"), "/healthz").ok());
    assert_eq!(healthy, Some(true), "the gateway answered /healthz");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = poll_for(|| child.try_wait().unwrap());
    let _ = child.kill();
    assert!(
        exited.is_some_and(|s| s.success()),
        "exits cleanly on SIGTERM: {exited:?}"
    );
}

/// Calls `probe` every 50 ms, up to 5 s, until it returns something.
fn poll_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..100 {
        if let Some(value) = probe() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Whether a plain HTTP/1.1 GET of `path` on `host` answers 200 (the blocking reqwest client
/// is not built, and one request needs no more than a socket).
fn get_is_ok(host: &str, path: &str) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.starts_with("HTTP/1.1 200"))
}

/// `llmgate health` with `args` and `env`: (exit success, stderr).
fn health(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(BIN);
    command
        .arg("health")
        .args(args)
        .env_remove("LLMGATE_LISTEN");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn health_exits_zero_only_when_healthz_answers_200() {
    let gateway =
        crate::process::Gateway::start("health", "[providers.echo]\nkind = \"echo\"\n").await;
    let url = gateway.url("/healthz");
    assert_eq!(health(&["--url", &url], &[]), (true, String::new()));
    // Without --url: /healthz on LLMGATE_LISTEN, an unspecified address meaning this host.
    let port = gateway.addr().rsplit(':').next().unwrap().to_owned();
    let listen = format!("0.0.0.0:{port}");
    assert!(health(&[], &[("LLMGATE_LISTEN", listen.as_str())]).0);
    let (ok, why) = health(&["--url", &gateway.url("/nowhere")], &[]);
    assert!(!ok && why.contains("answered 404"), "{why}");
    gateway.stop().await;
    let closed = format!("http://127.0.0.1:{}/healthz", crate::process::free_port());
    let (ok, why) = health(&["--url", &closed], &[]);
    assert!(!ok && why.contains("unhealthy: cannot connect"), "{why}");
}

/// One worker (one CPU, or `TOKIO_WORKER_THREADS=1`) runs the single-threaded runtime; it
/// serves answers and streams and stops gracefully like the multi-threaded one.
#[tokio::test]
async fn one_worker_serves_on_the_single_threaded_runtime() {
    let config = "[providers.echo]\nkind = \"echo\"\n";
    for (workers, expected) in [("1", "workers=1"), ("3", "workers=3")] {
        let gateway = crate::process::Gateway::start_with(
            &format!("workers-{workers}"),
            config,
            &[("TOKIO_WORKER_THREADS", workers)],
        )
        .await;
        let chat = |stream: bool| {
            gateway
                .client
                .post(gateway.url("/v1/chat/completions"))
                .json(&serde_json::json!({"model": "echo/x", "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
        };
        let answer: serde_json::Value = chat(false).await.unwrap().json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion", "{answer}");
        let stream = chat(true).await.unwrap().text().await.unwrap();
        assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");
        let (exit, output) = gateway.stop().await;
        assert!(exit.is_some_and(|e| e.success()), "{output}");
        assert!(output.contains(expected), "{output}");
    }
}
