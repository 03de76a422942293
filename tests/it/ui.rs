//! The status page (`/ui`: static files with locked-down headers) and the admin data it
//! shows: circuit state and recent error rate per target (`/admin/status`), and the recent
//! window of each model (`/admin/stats`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestApp, ask, spawn_app};

const ADMIN: &str = "sk-admin-secret";
const TEAM: &str = "sk-team-secret";

/// Admin and team keys, the echo provider, alias `quick` (echo) and alias `flaky` on `bad`
/// (every answer a 500), no retries; `server` goes in `[server]`.
fn config(bad_base_url: &str, server: &str) -> String {
    format!(
        r#"[server]
{server}

[auth]
admin_keys = ["{ADMIN}"]
keys = [{{ name = "team", key = "{TEAM}", models = ["*"], rpm = 100 }}]

[providers.echo]
kind = "echo"

[providers.bad]
kind = "openai"
base_url = "{bad_base_url}"
api_key = "sk-up"

[models.quick]
targets = [{{ provider = "echo", model = "e" }}]

[models.flaky]
targets = [{{ provider = "bad", model = "m" }}]
retry = {{ attempts = 1 }}
"#
    )
}

/// A mock upstream answering every POST with 500.
async fn failing_upstream() -> wiremock::MockServer {
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    upstream
}

async fn chat(app: &TestApp, body: Value) -> u16 {
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(TEAM)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    // The request is recorded when its body is done.
    let _ = response.bytes().await;
    status
}

async fn admin(app: &TestApp, path: &str) -> Value {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn find<'a>(list: &'a Value, field: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item[field] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_locked_down_without_a_key() {
    let upstream = failing_upstream().await;
    let app = spawn_app(&config(&format!("{}/v1", upstream.uri()), "")).await;
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/ui.js", "text/javascript; charset=utf-8"),
        ("/ui/ui.css", "text/css; charset=utf-8"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}: no key needed");
        let header = |name: &str| {
            (response.headers().get(name))
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("cache-control"), "no-cache");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "no inline script or style: {csp}");
        assert!(response.headers().contains_key("x-request-id"));
    }
    let page = app.get_text("/ui").await;
    assert_eq!(
        page.matches("<script").count(),
        1,
        "one script, no inline one"
    );
    assert!(page.contains(r#"<script src="/ui/ui.js" defer></script>"#));
    assert!(!page.contains("style="), "no inline style");
    for asset in [&page, include_str!("../../src/server/ui/ui.css")] {
        assert!(
            !asset.contains("src=\"http")
                && !asset.contains("href=\"http")
                && !asset.contains("url("),
            "no external asset"
        );
    }
    let script = include_str!("../../src/server/ui/ui.js");
    assert!(
        !script.contains("innerHTML") && !script.contains("insertAdjacentHTML"),
        "API data goes into the page as text only"
    );
    assert!(script.contains("sessionStorage") && !script.contains("localStorage"));
    let post = app.client.post(app.url("/ui")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn the_page_loads_without_admin_keys_and_the_admin_api_says_404() {
    let app = spawn_app("[providers.echo]\nkind = \"echo\"\n").await;
    let page = app.client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "the page explains that the admin API is off"
    );
    let stats = app
        .client
        .get(app.url("/admin/stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 404);
}

#[tokio::test]
async fn stats_need_an_admin_key() {
    let upstream = failing_upstream().await;
    let app = spawn_app(&config(&format!("{}/v1", upstream.uri()), "")).await;
    let get = |key: Option<&'static str>| {
        let mut request = app.client.get(app.url("/admin/stats"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some(TEAM)).await.unwrap().status(), 403);
    assert_eq!(get(Some(ADMIN)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn recent_windows_count_known_traffic_by_configured_name() {
    let upstream = failing_upstream().await;
    let app = spawn_app(&config(
        &format!("{}/v1", upstream.uri()),
        "circuit_failures = 2\ncircuit_cooldown_ms = 60000",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&app, ask("quick", "hello there")).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(chat(&app, ask("flaky", "hello")).await, 502);
    }
    assert_eq!(chat(&app, ask("nope/zzz-client-made", "hello")).await, 404);
    let stream = json!({"model": "quick", "stream": true,
        "messages": [{"role": "user", "content": "a b c"}]});
    assert_eq!(chat(&app, stream).await, 200);

    // Windows show complete seconds only: wait for the running one to end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (stats, status) = loop {
        let stats = admin(&app, "/admin/stats").await;
        let status = admin(&app, "/admin/status").await;
        let settled = find(&stats["models"], "model", "quick")["requests"] == 4
            && find(&status["targets"], "target", "bad/m")["recent_attempts"] == 2;
        if settled || tokio::time::Instant::now() > deadline {
            break (stats, status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(
        (stats["window_secs"].as_u64(), stats["bucket_secs"].as_u64()),
        (Some(60), Some(1))
    );
    let names: BTreeSet<&str> = (stats["models"].as_array().unwrap().iter())
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    let expected = [
        "bad/*", "bad/m", "echo/*", "echo/e", "flaky", "quick", "unknown",
    ];
    assert_eq!(
        names,
        expected.into_iter().collect(),
        "configured labels only, never client text"
    );
    for model in stats["models"].as_array().unwrap() {
        let series = &model["series"];
        for field in ["requests", "errors", "p50_ms", "p95_ms", "p99_ms"] {
            assert_eq!(series[field].as_array().unwrap().len(), 60, "{field}");
        }
        let sum: u64 = (series["requests"].as_array().unwrap().iter())
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(sum, model["requests"].as_u64().unwrap(), "{model}");
    }
    let quick = find(&stats["models"], "model", "quick");
    assert_eq!(
        (quick["requests"].as_u64(), quick["errors"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(quick["error_rate"], 0.0);
    let p50 = quick["latency"]["p50_ms"].as_f64().unwrap();
    let p99 = quick["latency"]["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 5000.0, "{quick}");
    let flaky = find(&stats["models"], "model", "flaky");
    assert_eq!(
        (flaky["requests"].as_u64(), flaky["errors"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(flaky["error_rate"], 1.0);
    let unknown = find(&stats["models"], "model", "unknown");
    assert_eq!(
        (unknown["requests"].as_u64(), unknown["errors"].as_u64()),
        (Some(1), Some(0)),
        "a 404 is the client's error, not the gateway's"
    );
    let idle = find(&stats["models"], "model", "echo/*");
    assert_eq!(idle["requests"], 0);
    assert_eq!(idle["error_rate"], Value::Null);
    assert_eq!(idle["latency"]["p50_ms"], Value::Null);

    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let bad = find(&status["targets"], "target", "bad/m");
    assert_eq!(bad["circuit"], "ejected");
    assert_eq!(bad["ejected"], true);
    assert_eq!(
        (
            bad["recent_attempts"].as_u64(),
            bad["recent_errors"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(bad["recent_error_rate"], 1.0);
    let echo = find(&status["targets"], "target", "echo/e");
    assert_eq!(echo["circuit"], "closed");
    assert_eq!(
        (
            echo["recent_attempts"].as_u64(),
            echo["recent_errors"].as_u64()
        ),
        (Some(4), Some(0))
    );
    assert_eq!(echo["recent_error_rate"], 0.0);
    assert_eq!(
        status["targets"].as_array().unwrap().len(),
        2,
        "configured targets only: {status}"
    );
}

#[tokio::test]
async fn a_target_past_its_cooldown_is_half_open_until_probed() {
    let upstream = failing_upstream().await;
    let app = spawn_app(&config(
        &format!("{}/v1", upstream.uri()),
        "circuit_failures = 1\ncircuit_cooldown_ms = 200",
    ))
    .await;
    assert_eq!(chat(&app, ask("flaky", "hello")).await, 502);
    let status = admin(&app, "/admin/status").await;
    assert_eq!(
        find(&status["targets"], "target", "bad/m")["circuit"],
        "ejected"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = admin(&app, "/admin/status").await;
    let bad = find(&status["targets"], "target", "bad/m");
    assert_eq!(bad["circuit"], "half_open", "{bad}");
    assert_eq!(bad["ejected"], false, "the next request probes it");
    assert_eq!(bad["consecutive_failures"], 1);
}
