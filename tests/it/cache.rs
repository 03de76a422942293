//! The response cache through the gateway: whose answers a key may see, and what enters the
//! key. Echo answers, so only `x-llmgate-cache` tells a hit from a miss.

use serde_json::{Value, json};

use crate::support::*;

const KEYS: &str = r#"
[auth]
keys = [
  { name = "private-a", key = "sk-private-a" },
  { name = "private-b", key = "sk-private-b" },
  { name = "shared-c", key = "sk-shared-c", cache = "shared" },
  { name = "shared-d", key = "sk-shared-d", cache = "shared" },
  { name = "echo-only", key = "sk-echo-only", models = ["echo/*"], cache = "shared" },
]
[providers.echo]
kind = "echo"
[models.fast]
targets = [{ provider = "echo", model = "fast" }]
"#;

fn cached(mut body: Value) -> Value {
    body["cache"] = json!({"type": "exact_match", "ttl": 60});
    body
}

async fn cache_header(app: &TestApp, key: &str, body: &Value) -> (u16, String) {
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("x-llmgate-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, header)
}

#[tokio::test]
async fn private_keys_never_see_each_others_answers_and_shared_keys_do() {
    let app = spawn_app(KEYS).await;
    let body = cached(ask("echo/x", "a question only one tenant asked"));
    assert_eq!(
        cache_header(&app, "sk-private-a", &body).await,
        (200, "miss".into())
    );
    assert_eq!(
        cache_header(&app, "sk-private-b", &body).await,
        (200, "miss".into())
    );
    assert_eq!(
        cache_header(&app, "sk-shared-c", &body).await,
        (200, "miss".into())
    );
    assert_eq!(
        cache_header(&app, "sk-private-a", &body).await,
        (200, "hit".into())
    );
    assert_eq!(
        cache_header(&app, "sk-shared-d", &body).await,
        (200, "hit".into())
    );
}

#[tokio::test]
async fn the_policy_that_picks_who_answers_is_part_of_the_key() {
    let app = spawn_app(KEYS).await;
    // A key planting an answer under `fast` through its own load balancer ...
    let mut planted = cached(ask("fast", "what is the capital"));
    planted["load_balancer"] =
        json!({"type": "weight_based", "models": [{"model": "echo/elsewhere"}]});
    assert_eq!(
        cache_header(&app, "sk-shared-c", &planted).await,
        (200, "miss".into())
    );
    // ... does not answer a plain request for `fast`, nor one with other fallbacks.
    let plain = cached(ask("fast", "what is the capital"));
    assert_eq!(
        cache_header(&app, "sk-shared-d", &plain).await,
        (200, "miss".into())
    );
    let mut fallback = plain.clone();
    fallback["fallbacks"] = json!([{"model": "echo/other"}]);
    assert_eq!(
        cache_header(&app, "sk-shared-d", &fallback).await,
        (200, "miss".into())
    );
    assert_eq!(
        cache_header(&app, "sk-shared-d", &plain).await,
        (200, "hit".into())
    );
}

#[tokio::test]
async fn a_hit_passes_the_same_allow_list_as_a_miss() {
    let app = spawn_app(KEYS).await;
    let body = cached(ask("fast", "shared but not for everyone"));
    assert_eq!(
        cache_header(&app, "sk-shared-c", &body).await,
        (200, "miss".into())
    );
    // `echo-only` shares the cache but may not use `fast`: 403, not the cached answer.
    assert_eq!(
        cache_header(&app, "sk-echo-only", &body).await,
        (403, String::new())
    );
}
