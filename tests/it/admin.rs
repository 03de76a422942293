//! The admin API and live reload: admin-key auth, `/admin/keys`, `/admin/status`,
//! `POST /admin/reload` (streams survive it, counters carry over, a broken file changes
//! nothing) and SIGHUP on the real binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::process::Gateway;
use crate::support::{
    TestApp, ask, ask_stream, eventually, read_request, spawn_app, spawn_app_from_file, sse_chunks,
    sse_events,
};

const ADMIN: &str = "sk-admin-secret";
const TEAM: &str = "sk-team-secret";

/// A config file in its own temporary directory, removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("llmgate-admin-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = ConfigFile {
            path: dir.join("llmgate.toml"),
            dir,
        };
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `[auth]` with the admin key and the `team` key, plus `extra`.
fn with_keys(extra: &str) -> String {
    format!(
        "[auth]\nadmin_keys = [\"{ADMIN}\"]\nkeys = [{{ name = \"team\", key = \"{TEAM}\", models = [\"echo/*\", \"quick\"], budget_usd = 100.0, budget_window = \"total\" }}]\n\n[providers.echo]\nkind = \"echo\"\nprices = {{ \"*\" = {{ input = 1000.0, output = 1000.0 }} }}\n{extra}"
    )
}

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn admin_json(app: &TestApp, path: &str) -> Value {
    let response = get(app, path, Some(ADMIN)).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn chat_as(app: &TestApp, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app.client.post(app.url("/v1/chat/completions")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn admin_keys_only_open_the_admin_api() {
    let app = spawn_app(&with_keys("")).await;
    for path in ["/admin/keys", "/admin/status"] {
        assert_eq!(get(&app, path, None).await.status(), 401, "{path}");
        let forbidden = get(&app, path, Some(TEAM)).await;
        assert_eq!(
            forbidden.status(),
            403,
            "{path}: a gateway key is not an admin key"
        );
        let body: Value = forbidden.json().await.unwrap();
        assert_eq!(body["error"]["code"], "admin_key_required");
        assert_eq!(get(&app, path, Some("sk-nobody")).await.status(), 403);
        assert_eq!(get(&app, path, Some(ADMIN)).await.status(), 200, "{path}");
    }
    assert_eq!(get(&app, "/admin/reload", None).await.status(), 401);
    assert_eq!(get(&app, "/admin/reload", Some(ADMIN)).await.status(), 405);
    let refused = chat_as(&app, Some(ADMIN), ask("echo/echo", "hi")).await;
    assert_eq!(refused.status(), 401, "an admin key is not for completions");
    assert_eq!(
        chat_as(&app, Some(TEAM), ask("echo/echo", "hi"))
            .await
            .status(),
        200
    );

    let no_admin = spawn_app("[providers.echo]\nkind = \"echo\"\n").await;
    for path in ["/admin/keys", "/admin/status", "/admin/reload"] {
        assert_eq!(
            get(&no_admin, path, Some(ADMIN)).await.status(),
            404,
            "{path}"
        );
    }
    assert_eq!(no_admin.reload(ADMIN).await.status(), 404);

    // Only admin keys: completions need no key, but refuse the admin key.
    let admin_only = spawn_app(&format!(
        "[auth]\nadmin_keys = [\"{ADMIN}\"]\n[providers.echo]\nkind = \"echo\"\n"
    ))
    .await;
    let open = chat_as(&admin_only, None, ask("echo/echo", "hi")).await;
    assert_eq!(open.status(), 200);
    let refused = chat_as(&admin_only, Some(ADMIN), ask("echo/echo", "hi")).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        get(&admin_only, "/admin/keys", Some(ADMIN)).await.status(),
        200
    );
}

#[tokio::test]
async fn keys_show_names_models_and_counts_never_secrets_and_counts_survive_a_reload() {
    let file = ConfigFile::new(&with_keys(""));
    let app = spawn_app_from_file(&file.path).await;
    for _ in 0..3 {
        let answer = chat_as(&app, Some(TEAM), ask("echo/echo", "hi")).await;
        assert_eq!(answer.status(), 200);
    }
    let text = get(&app, "/admin/keys", Some(ADMIN))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains(TEAM) && !text.contains(ADMIN), "{text}");
    let keys: Value = serde_json::from_str(&text).unwrap();
    let team = &keys["keys"][0];
    assert_eq!(team["name"], "team");
    assert_eq!(team["models"], json!(["echo/*", "quick"]));
    assert_eq!(
        team["limits"],
        json!({"rpm": null, "tpm": null, "max_concurrent": null, "budget_usd": 100.0, "budget_window": "total"})
    );
    // 1 prompt and 1 completion token at 1000 USD per million each, three times.
    assert_eq!(team["usage"]["spend_usd"], 0.006);
    assert!(team["usage"]["requests_this_minute"].as_u64().unwrap() <= 3);
    assert_eq!(team["usage"]["in_flight"], 0);

    // Another key joins; `team` keeps its name, so its counters carry over.
    file.write(&with_keys("").replace(
        "\nkeys = [",
        "\nkeys = [{ name = \"new\", key = \"sk-new-secret\" }, ",
    ));
    assert_eq!(app.reload(ADMIN).await.status(), 200);
    let keys = admin_json(&app, "/admin/keys").await;
    assert_eq!(keys["keys"][0]["name"], "new");
    assert_eq!(keys["keys"][0]["usage"]["spend_usd"], 0.0);
    assert_eq!(keys["keys"][0]["limits"]["budget_usd"], Value::Null);
    assert_eq!(keys["keys"][1]["name"], "team");
    assert_eq!(keys["keys"][1]["usage"]["spend_usd"], 0.006);
    assert!(!keys.to_string().contains("sk-new-secret"));
    let answer = chat_as(&app, Some("sk-new-secret"), ask("echo/echo", "hi")).await;
    assert_eq!(answer.status(), 200, "the new key works at once");
}

#[tokio::test]
async fn a_reload_adds_an_alias_and_a_broken_file_changes_nothing() {
    let file = ConfigFile::new(&with_keys(""));
    let app = spawn_app_from_file(&file.path).await;
    let before = admin_json(&app, "/admin/status").await;
    let hash = before["config"]["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "SHA-256 hex");
    assert_eq!(before["config"]["path"], file.path.display().to_string());
    assert!(
        before["config"]["loaded_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        before["state_backend"],
        json!({"backend": "memory", "up": true})
    );
    let quick = ask("quick", "hello there");
    assert_eq!(chat_as(&app, Some(TEAM), quick.clone()).await.status(), 404);

    file.write(&with_keys(
        "[models.quick]\ntargets = [{ provider = \"echo\", model = \"echo\" }]\n",
    ));
    let answer = app.reload(ADMIN).await;
    assert_eq!(answer.status(), 200);
    let reloaded: Value = answer.json().await.unwrap();
    assert_ne!(reloaded["config_hash"], hash.as_str());
    assert_eq!(reloaded["restart_required"], json!([]));
    let answer = chat_as(&app, Some(TEAM), quick.clone()).await;
    assert_eq!(answer.status(), 200, "the new alias answers");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello there");
    let status = admin_json(&app, "/admin/status").await;
    assert_eq!(status["config"]["hash"], reloaded["config_hash"]);
    let running_hash = reloaded["config_hash"].clone();

    // A broken file: 400 naming the problem, and the running config keeps serving.
    file.write(&with_keys("[providers.bad]\nkind = \"nope\"\n"));
    let refused = app.reload(ADMIN).await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "reload_failed");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("providers.bad.kind"), "{message}");
    assert!(
        !message.contains(TEAM) && !message.contains(ADMIN),
        "{message}"
    );
    assert_eq!(chat_as(&app, Some(TEAM), quick).await.status(), 200);
    let status = admin_json(&app, "/admin/status").await;
    assert_eq!(status["config"]["hash"], running_hash, "nothing changed");

    // A listen change cannot apply live: the answer says so, the listener stays.
    file.write(&format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n{}",
        with_keys("")
    ));
    let answer = app.reload(ADMIN).await;
    assert_eq!(answer.status(), 200);
    let reloaded: Value = answer.json().await.unwrap();
    let notes = reloaded["restart_required"].to_string();
    assert!(notes.contains("server.listen"), "{notes}");
    assert_eq!(get(&app, "/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn the_embedded_default_cannot_be_reloaded() {
    let app = spawn_app(&with_keys("")).await;
    let refused = app.reload(ADMIN).await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no config file"), "{message}");
}

#[tokio::test]
async fn circuit_state_of_an_unchanged_provider_survives_a_reload() {
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let config = |extra: &str| {
        with_keys(&format!(
            "[server]\ncircuit_failures = 1\n[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n{extra}",
            upstream.uri()
        ))
        .replace("\"echo/*\"", "\"*\"")
    };
    let file = ConfigFile::new(&config(""));
    let app = spawn_app_from_file(&file.path).await;
    let failed = chat_as(&app, Some(TEAM), ask("up/m", "x")).await;
    assert!(failed.status().is_server_error());
    let ejected = |status: &Value| {
        status["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == "up/m")
            .cloned()
    };
    let target = ejected(&admin_json(&app, "/admin/status").await).unwrap();
    assert_eq!(target["ejected"], true);
    assert_eq!(target["consecutive_failures"], 1);
    assert!(target["cooldown_until"].as_str().unwrap().ends_with('Z'));

    file.write(&config(
        "[models.quick]\ntargets = [{ provider = \"echo\", model = \"e\" }]\n",
    ));
    assert_eq!(app.reload(ADMIN).await.status(), 200);
    let status = admin_json(&app, "/admin/status").await;
    assert_eq!(ejected(&status).unwrap()["ejected"], true, "{status}");
    assert!(
        status["targets"].to_string().contains("echo/e"),
        "configured targets are listed: {status}"
    );
}

/// A raw upstream whose every stream sends `events` chunks `every` apart, then `[DONE]`.
async fn trickle_upstream(events: usize, every: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                for i in 0..events {
                    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                        "model": "m", "choices": [{"index": 0, "delta": {"content": format!("w{i} ")},
                        "finish_reason": if i + 1 == events { json!("stop") } else { Value::Null }}]});
                    let event = format!("data: {chunk}\n\n");
                    let data = format!("{:x}\r\n{event}\r\n", event.len());
                    if socket.write_all(data.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
                let done = "data: [DONE]\n\n";
                let end = format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len());
                let _ = socket.write_all(end.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_reload_during_fifty_open_streams_loses_none() {
    const STREAMS: usize = 50;
    const EVENTS: usize = 10;
    let base_url = trickle_upstream(EVENTS, Duration::from_millis(100)).await;
    let config = |timeout_ms: u64, alias: &str| {
        format!(
            "[auth]\nadmin_keys = [\"{ADMIN}\"]\n[providers.up]\nkind = \"openai\"\nbase_url = \"{base_url}\"\ntimeout_ms = {timeout_ms}\n[models.{alias}]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\n"
        )
    };
    let file = ConfigFile::new(&config(60_000, "old"));
    let app = spawn_app_from_file(&file.path).await;
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/v1/chat/completions"))
                .json(&ask_stream("old", "x", false));
            tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    // Every stream has its first chunk; then the provider changes (new client) and the
    // alias goes away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    file.write(&config(30_000, "new"));
    assert_eq!(app.reload(ADMIN).await.status(), 200);
    let gone = chat_as(&app, None, ask("old", "x")).await;
    assert_eq!(gone.status(), 404, "new requests use the new config");
    for stream in streams {
        let text = stream.await.unwrap();
        let chunks = sse_chunks(&text);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        let expected: String = (0..EVENTS).map(|i| format!("w{i} ")).collect();
        assert_eq!(content, expected, "{text}");
        assert_eq!(sse_events(&text).last().map(String::as_str), Some("[DONE]"));
    }
}

#[tokio::test]
async fn a_stream_is_in_flight_until_its_last_event() {
    let base_url = trickle_upstream(5, Duration::from_millis(100)).await;
    let app = spawn_app(
        &with_keys(&format!(
            "[providers.up]\nkind = \"openai\"\nbase_url = \"{base_url}\"\n"
        ))
        .replace("\"echo/*\"", "\"up/*\""),
    )
    .await;
    let response = chat_as(&app, Some(TEAM), ask_stream("up/m", "x", false)).await;
    assert_eq!(response.status(), 200);
    let in_flight = |keys: &Value| keys["keys"][0]["usage"]["in_flight"].clone();
    assert_eq!(in_flight(&admin_json(&app, "/admin/keys").await), 1);
    let text = response.text().await.unwrap();
    assert_eq!(sse_events(&text).last().map(String::as_str), Some("[DONE]"));
    let mut ended = false;
    for _ in 0..100 {
        if in_flight(&admin_json(&app, "/admin/keys").await) == 0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ended, "the stream's end ends the request");
}

/// The body of a plain HTTP/1.1 GET of `path` on `host`, if it answered 200.
fn get_body(host: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .starts_with("HTTP/1.1 200")
        .then(|| response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
        .flatten()
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let config =
        |extra: &str| format!("[providers.echo]\nkind = \"echo\"\nmodels = [\"echo\"]\n{extra}");
    let gateway = Gateway::start_with("admin-sighup", &config(""), &[("RUST_LOG", "warn")]).await;
    let host = gateway.addr().to_owned();
    let models = |host: &str| get_body(host, "/v1/models").unwrap_or_default();
    let up = eventually(Duration::from_secs(10), || {
        models(&host).contains("echo/echo")
    })
    .await;
    assert!(up, "the gateway answered /v1/models");
    assert!(!models(&host).contains("quick"));

    // A broken file: SIGHUP logs the error and the gateway keeps serving.
    let write = |text: &str| std::fs::write(gateway.config_path(), text).unwrap();
    write("[providers.echo]\nkind = ");
    gateway.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(models(&host).contains("echo/echo"));

    write(&config(
        "[models.quick]\ntargets = [{ provider = \"echo\", model = \"echo\" }]\n",
    ));
    gateway.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || models(&host).contains("quick")).await;
    let _ = gateway.stop().await;
    assert!(reloaded, "SIGHUP reloaded the config: {}", models(&host));
}
