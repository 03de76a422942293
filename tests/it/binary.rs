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
    std::fs::write(
        &path,
        "[providers.x]\nkind = \"openai\"\nbase_url = \"not a url\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers.x.base_url"), "{stderr}");
    std::fs::write(
        &path,
        "[providers.x]\nkind = \"openai\"\napi_key = \"${LLMGATE_TEST_UNSET_VAR}\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
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
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(response) = reqwest::blocking_get(&url) {
            healthy = response;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(healthy, "the gateway answered /healthz");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    assert!(
        exited.is_some_and(|s| s.success()),
        "exits cleanly on SIGTERM: {exited:?}"
    );
}

/// A tiny blocking GET over a plain TCP socket (reqwest's blocking client is not built).
mod reqwest {
    use std::io::{Read, Write};

    pub fn blocking_get(url: &str) -> std::io::Result<bool> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200"))
    }
}
