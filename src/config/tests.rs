use std::collections::BTreeMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    from_toml_str(text, &env(&[("KEY", "sk-123")]))
}

fn error(text: &str) -> ConfigError {
    parse(text).expect_err("expected a config error")
}

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../config/llmgate.example.toml");
    let env = env(&[
        ("LLMGATE_KEY_TEAM_A", "sk-team-a"),
        ("LLMGATE_KEY_DEMO", "sk-demo"),
        ("LLMGATE_ADMIN_KEY", "sk-admin"),
        ("OPENAI_API_KEY", "sk-openai"),
        ("NUGEN_API_KEY", "sk-nugen"),
        ("ATOMA_API_KEY", "sk-atoma"),
        ("ORQ_API_KEY", "sk-orq"),
    ]);
    let config = from_toml_str(text, &env).expect("the example must stay valid");
    assert_eq!(
        config.providers["openai"]
            .api_key
            .as_ref()
            .unwrap()
            .expose(),
        "sk-openai"
    );
    assert_eq!(config.models["fast"].targets.len(), 2);
    assert_eq!(config.providers.len(), 6);
    assert!(config.providers["orq"].strict_params);
    assert_eq!(config.models["fast"].retry.attempts, 3);
    assert_eq!(
        config.models["fast"].hedge_after,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(config.server.circuit_failures, 5);
    assert_eq!(
        config.server.max_retry_wait,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(config.providers["openai"].models, ["gpt-4o-mini", "gpt-4o"]);
    assert!(config.providers["local"].discover_models);
    assert_eq!(
        config.telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318")
    );
    let auth = config.auth.as_ref().unwrap();
    assert!(auth.keys[1].allows("echo/anything"));
    assert!(!auth.keys[1].allows("openai/gpt-4o"));
    assert!(
        config
            .describe()
            .contains("fast -> openai/gpt-4o-mini (weight 3)")
    );
}

#[test]
fn secrets_come_from_the_environment_and_are_redacted() {
    let config = parse("[providers.o]\nkind = \"openai\"\napi_key = \"${KEY}\"\n").unwrap();
    let key = config.providers["o"].api_key.as_ref().unwrap();
    assert_eq!(key.expose(), "sk-123");
    assert!(!format!("{config:?}").contains("sk-123"));
    let e = error("[providers.o]\nkind = \"openai\"\napi_key = \"${MISSING_VAR}\"\n");
    assert_eq!(e.path, "providers.o.api_key");
    assert!(e.message.contains("MISSING_VAR"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let e = error("[providers.o]\nkind = \"openai\"\nbase_ur = \"http://x\"\n");
    assert_eq!(e.path, "providers.o.base_ur");
    assert!(e.message.contains("unknown field `base_ur`"), "{e}");
    let e = error("[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n");
    assert_eq!(e.path, "server.port");
    let e = error("[nonsense]\n");
    assert_eq!(e.path, "nonsense");
    assert!(e.message.contains("unknown field `nonsense`"), "{e}");
}

#[test]
fn values_are_checked() {
    assert_eq!(
        error("[server]\nlisten = \"localhost\"\n").path,
        "server.listen"
    );
    assert_eq!(
        error("[providers.o]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n").path,
        "providers.o.base_url"
    );
    assert_eq!(
        error("[providers.o]\nkind = \"gemini\"\n").path,
        "providers.o.kind"
    );
    assert_eq!(
        error("[providers.o]\nkind = \"openai\"\ntimeout_ms = 0\n").path,
        "providers.o.timeout_ms"
    );
    let alias = "[providers.o]\nkind = \"openai\"\n[models.fast]\n";
    assert_eq!(
        error(&format!(
            "{alias}targets = [{{ provider = \"x\", model = \"m\" }}]\n"
        ))
        .path,
        "models.fast.targets[0].provider"
    );
    assert_eq!(
        error(&format!(
            "{alias}targets = [{{ provider = \"o\", model = \"m\", weight = 0 }}]\n"
        ))
        .path,
        "models.fast.targets[0].weight"
    );
    assert_eq!(
        error(&format!(
            "{alias}targets = [{{ provider = \"o\", model = \"m\" }}]\nfallbacks = [\"nope/m\"]\n"
        ))
        .path,
        "models.fast.fallbacks[0]"
    );
    assert_eq!(
        error(&format!(
            "{alias}targets = [{{ provider = \"o\", model = \"m\" }}]\nretry = {{ attempts = 0 }}\n"
        ))
        .path,
        "models.fast.retry.attempts"
    );
    assert_eq!(
        error(&format!(
            "{alias}targets = [{{ provider = \"o\", model = \"m\" }}]\ncache_ttl_secs = 0\n"
        ))
        .path,
        "models.fast.cache_ttl_secs"
    );
    assert_eq!(
        error("[server]\ncircuit_failures = 0\n").path,
        "server.circuit_failures"
    );
    assert_eq!(
        error("[auth]\nkeys = [{ name = \"a\", key = \"k\" }, { name = \"a\", key = \"j\" }]\n")
            .path,
        "auth.keys[1].name"
    );
}

#[test]
fn base_urls_lose_their_trailing_slash_and_get_the_operation_path() {
    let config =
        parse("[providers.o]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1/\"\n").unwrap();
    assert_eq!(
        config.providers["o"].endpoint(),
        "http://127.0.0.1:9/v1/chat/completions"
    );
    let config = parse("[providers.n]\nkind = \"nugen\"\n").unwrap();
    assert_eq!(
        config.providers["n"].endpoint(),
        "https://api.nugen.in/api/v3/inference/chat/completions"
    );
}

#[test]
fn the_embedded_default_enables_providers_by_key_variable() {
    let config = Config::embedded_default(&env(&[]));
    assert_eq!(config.providers.keys().collect::<Vec<_>>(), ["echo"]);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert!(config.auth.is_none());
    let config = Config::embedded_default(&env(&[("OPENAI_API_KEY", "sk"), ("ORQ_API_KEY", "o")]));
    assert_eq!(
        config.providers.keys().collect::<Vec<_>>(),
        ["echo", "openai", "orq"]
    );
    assert_eq!(
        config.providers["orq"].endpoint(),
        "https://api.orq.ai/v2/router/chat/completions"
    );
}

#[test]
fn stream_and_upstream_limits_have_defaults_and_are_checked() {
    let config = parse("").unwrap();
    assert_eq!(
        config.server.stream_first_chunk_keepalive,
        Some(std::time::Duration::from_secs(45))
    );
    assert_eq!(config.server.max_upstream_body_bytes, 16 * 1024 * 1024);
    assert_eq!(config.server.max_upstream_event_bytes, 16 * 1024 * 1024);
    let config = parse("[server]\nstream_first_chunk_keepalive_secs = 0\n").unwrap();
    assert_eq!(
        config.server.stream_first_chunk_keepalive, None,
        "0 = never"
    );
    assert_eq!(
        error("[server]\nmax_upstream_event_bytes = 0\n").path,
        "server.max_upstream_event_bytes"
    );
    assert_eq!(
        error("[server]\nmax_upstream_body_bytes = 0\n").path,
        "server.max_upstream_body_bytes"
    );
}

#[test]
fn routing_server_keys_and_provider_model_lists_are_read_and_checked() {
    let config = parse(
        "[server]\nmax_retry_wait_ms = 2500\n[providers.o]\nkind = \"openai\"\nmodels = [\"a\", \"b\"]\n",
    )
    .unwrap();
    assert_eq!(
        config.server.max_retry_wait,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(config.providers["o"].models, ["a", "b"]);
    let defaults = parse("").unwrap();
    assert_eq!(
        defaults.server.max_retry_wait,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        error("[server]\nmax_retry_wait_ms = 600001\n").path,
        "server.max_retry_wait_ms"
    );
    assert_eq!(
        error("[server]\ncircuit_cooldown_ms = 86400001\n").path,
        "server.circuit_cooldown_ms"
    );
    assert_eq!(
        error("[providers.o]\nkind = \"openai\"\nmodels = [\"a\", \"\"]\n").path,
        "providers.o.models[1]"
    );
}

#[test]
fn provider_model_names_are_bounded() {
    let models = |list: &str| format!("[providers.o]\nkind = \"openai\"\nmodels = [{list}]\n");
    let long = format!("\"{}\"", "m".repeat(257));
    assert_eq!(error(&models(&long)).path, "providers.o.models[0]");
    assert!(error(&models(&long)).message.contains("256 bytes"));
    let at_limit = format!("\"{}\"", "m".repeat(256));
    assert!(parse(&models(&at_limit)).is_ok());
    let control = error(&models("\"a\", \"b\\u0007\""));
    assert_eq!(control.path, "providers.o.models[1]");
    assert!(control.message.contains("control"), "{control}");
    let many = vec!["\"m\""; 10_001].join(",");
    assert_eq!(error(&models(&many)).path, "providers.o.models");
    assert!(
        parse(&models(
            "\"meta-llama/Llama-3.3-70B-Instruct\", \"llama3:8b\""
        ))
        .is_ok()
    );
}

#[test]
fn discover_models_is_for_openai_kind_providers_only() {
    let config = parse("[providers.o]\nkind = \"openai\"\ndiscover_models = true\n").unwrap();
    assert!(config.providers["o"].discover_models);
    let off = parse("[providers.o]\nkind = \"openai\"\n").unwrap();
    assert!(!off.providers["o"].discover_models, "off by default");
    for kind in ["nugen", "atoma", "orq", "echo"] {
        let e = error(&format!(
            "[providers.p]\nkind = \"{kind}\"\ndiscover_models = true\n"
        ));
        assert_eq!(e.path, "providers.p.discover_models", "{kind}");
        assert!(e.message.contains("openai"), "{e}");
    }
    // `false` says nothing, so any kind may carry it.
    assert!(parse("[providers.n]\nkind = \"nugen\"\ndiscover_models = false\n").is_ok());
    assert_eq!(
        error("[providers.o]\nkind = \"openai\"\ndiscover_models = \"yes\"\n").path,
        "providers.o.discover_models"
    );
}

#[test]
fn check_shows_model_lists_and_discovery() {
    let config = parse(
        "[providers.o]\nkind = \"openai\"\nbase_url = \"http://llm.internal/v1\"\nmodels = [\"a\", \"b\"]\ndiscover_models = true\n",
    )
    .unwrap();
    let text = config.describe();
    assert!(text.contains("models=[a, b]"), "{text}");
    assert!(
        text.contains("discover_models=true (GET http://llm.internal/v1/models)"),
        "{text}"
    );
}

#[test]
fn base_urls_with_credentials_are_refused_without_quoting_them() {
    let error = error(
        "[providers.o]\nkind = \"openai\"\nbase_url = \"http://u:hunter2@llm.internal/v1\"\n",
    );
    assert_eq!(error.path, "providers.o.base_url");
    assert!(
        error.message.contains("must not carry credentials"),
        "{}",
        error.message
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn the_embedded_default_lists_echo() {
    let config = Config::embedded_default(&env(&[]));
    assert_eq!(config.providers["echo"].models, ["echo"]);
}

#[test]
fn an_auth_section_may_hold_only_admin_keys() {
    let config = parse("[auth]\nadmin_keys = [\"sk-admin\"]\n").unwrap();
    let auth = config.auth.as_ref().unwrap();
    assert!(auth.keys.is_empty());
    assert_eq!(auth.admin_keys[0].expose(), "sk-admin");
    assert!(
        !format!("{config:?}").contains("sk-admin"),
        "admin keys are secrets"
    );
    assert_eq!(error("[auth]\n").path, "auth.keys");
    assert_eq!(
        error("[auth]\nadmin_keys = [\"\"]\n").path,
        "auth.admin_keys[0]"
    );
    assert_eq!(
        error("[auth]\nadmin_keys = [\"k\"]\nkeys = [{ name = \"a\", key = \"k\" }]\n").path,
        "auth.keys[0].key",
        "a gateway key cannot also be an admin key"
    );
}

#[test]
fn errors_never_quote_a_value_from_the_environment() {
    let message = error("[server]\nlisten = \"${KEY}\"\n").message;
    assert!(!message.contains("sk-123"), "{message}");
    let message = error("[providers.o]\nkind = \"openai\"\ntimeout_ms = \"${KEY}\"\n").message;
    assert!(!message.contains("sk-123"), "{message}");
    assert!(message.contains("***"), "{message}");
}

#[test]
fn the_otlp_endpoint_is_an_http_url_without_credentials() {
    assert_eq!(parse("").unwrap().telemetry.otlp_endpoint, None);
    let config = parse("[telemetry]\notlp_endpoint = \"https://otel.example:4318/\"\n").unwrap();
    assert_eq!(
        config.telemetry.otlp_endpoint.as_deref(),
        Some("https://otel.example:4318")
    );
    assert!(
        config
            .describe()
            .contains("https://otel.example:4318/v1/traces")
    );
    for bad in [
        "localhost:4318",
        "grpc://x:4317",
        "http://user:pw@x:4318",
        "http://x/?a=b",
    ] {
        let e = error(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n"));
        assert_eq!(e.path, "telemetry.otlp_endpoint", "{bad}: {e}");
    }
    assert_eq!(
        error("[telemetry]\nendpoint = \"http://x\"\n").path,
        "telemetry.endpoint"
    );
}

#[test]
fn key_limits_prices_and_state_are_read_and_checked() {
    let config = parse(
        "[auth]\nkeys = [{ name = \"a\", key = \"k\", rpm = 60, tpm = 1000, max_concurrent = 2, budget_usd = 1.5, budget_window = \"day\" }]\n\
         [providers.o]\nkind = \"openai\"\nprices = { \"*\" = { input = 1.0, output = 2.0 }, \"m\" = { input = 0.5, output = 0.5 } }\n\
         [state]\nbackend = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379/1\"\non_error = \"deny\"\nlease_ms = 1500\n",
    )
    .unwrap();
    let limits = &config.auth.as_ref().unwrap().keys[0].limits;
    assert_eq!(
        (limits.rpm, limits.tpm, limits.max_concurrent),
        (Some(60), Some(1000), Some(2))
    );
    let budget = limits.budget.unwrap();
    assert_eq!(
        (budget.nano_usd, budget.window),
        (1_500_000_000, BudgetWindow::Day)
    );
    let openai = &config.providers["o"];
    assert_eq!(openai.price("m").unwrap().input, 0.5);
    assert_eq!(openai.price("other").unwrap().output, 2.0);
    // 1000 prompt and 500 completion tokens at 1 and 2 USD per million: 0.002 USD.
    assert_eq!(
        openai.price("other").unwrap().nano_usd(1000, 500),
        2_000_000
    );
    assert_eq!(config.state.backend, StateBackendKind::Redis);
    assert_eq!(config.state.on_error, OnStateError::Deny);
    assert_eq!(config.state.lease, Duration::from_millis(1500));
    assert_eq!(config.state.key_prefix, "llmgate:");
    assert!(
        !format!("{:?}", config.state).contains("pw@"),
        "the URL is a secret"
    );
    assert_eq!(parse("").unwrap().state.backend, StateBackendKind::Memory);

    let key = |extra: &str| format!("[auth]\nkeys = [{{ name = \"a\", key = \"k\", {extra} }}]\n");
    assert_eq!(error(&key("rpm = 0")).path, "auth.keys[0].rpm");
    assert_eq!(
        error(&key("tpm = 1000000000000000")).path,
        "auth.keys[0].tpm"
    );
    assert_eq!(
        error(&key("max_concurrent = 0")).path,
        "auth.keys[0].max_concurrent"
    );
    assert_eq!(
        error(&key("budget_usd = -1.0")).path,
        "auth.keys[0].budget_usd"
    );
    assert_eq!(
        error(&key("budget_usd = nan")).path,
        "auth.keys[0].budget_usd"
    );
    assert_eq!(
        error(&key("budget_window = \"day\"")).path,
        "auth.keys[0].budget_window"
    );
    assert_eq!(
        error(&key("budget_usd = 1.0, budget_window = \"week\"")).path,
        "auth.keys[0].budget_window"
    );
    assert_eq!(
        error("[providers.o]\nkind = \"openai\"\nprices = { m = { input = inf, output = 1.0 } }\n")
            .path,
        "providers.o.prices.m.input"
    );
    assert_eq!(error("[state]\nbackend = \"redis\"\n").path, "state.url");
    assert_eq!(error("[state]\nurl = \"redis://x\"\n").path, "state.url");
    let wrong = error("[state]\nbackend = \"redis\"\nurl = \"rediss://:hunter2@h/0\"\n");
    assert_eq!(wrong.path, "state.url");
    assert!(!wrong.to_string().contains("hunter2"), "{wrong}");
    assert_eq!(error("[state]\nbackend = \"etcd\"\n").path, "state.backend");
    assert_eq!(error("[state]\ntimeout_ms = 0\n").path, "state.timeout_ms");
    assert_eq!(error("[state]\nlease_ms = 10\n").path, "state.lease_ms");
    assert_eq!(error("[state]\nttl = 1\n").path, "state.ttl");
}
