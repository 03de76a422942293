//! TOML -> `${VAR}` interpolation -> `Raw*` types (unknown keys rejected, paths kept by
//! `serde_path_to_error`) -> checked [`Config`]. Every error names the key it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// Where `${VAR}` values come from (the process environment, or a map in tests).
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A configuration problem, with the path of the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `providers.openai.base_url`, or the file name for syntax errors.
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Reads and checks a config file, taking `${VAR}` values from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_hashed(path).map(|(config, _)| config)
}

/// Like [`load_file`], also giving the SHA-256 (lowercase hex) of the file's bytes, so that
/// `/admin/status` tells which version of the file runs.
pub fn load_file_hashed(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(
            path.display().to_string(),
            format!("cannot read the file: {e}"),
        )
    })?;
    let config = from_toml_str(&text, &ProcessEnv).map_err(|mut e| {
        if e.path.is_empty() {
            e.path = path.display().to_string();
        }
        e
    })?;
    Ok((config, sha256_hex(text.as_bytes())))
}

/// SHA-256 of `bytes` in lowercase hex (ring: already built for rustls).
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Parses and checks a config document.
pub fn from_toml_str(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| err("", e.to_string()))?;
    let mut expanded = Vec::new();
    for (key, value) in table.iter_mut() {
        interpolate(value, key, env, &mut expanded)?;
    }
    let checked = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| {
            let path = e.path().to_string();
            err(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })
        .and_then(|raw: RawConfig| raw.check());
    checked.map_err(|mut e| {
        e.message = hide_expanded(&e.message, &expanded);
        e
    })
}

/// `message` without any value that came from `${VAR}` (those are often secrets, and an
/// error quotes a value of the wrong type): each quoted one becomes `***`.
fn hide_expanded(message: &str, expanded: &[String]) -> String {
    let mut message = message.to_owned();
    for value in expanded.iter().filter(|v| !v.is_empty()) {
        for (open, close) in [('"', '"'), ('`', '`')] {
            message = message.replace(
                &format!("{open}{value}{close}"),
                &format!("{open}***{close}"),
            );
        }
    }
    message
}

/// Replaces `${NAME}` in every string value, keeping the expanded values in `expanded`; an
/// unset variable is an error naming it.
fn interpolate(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Env,
    expanded: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand(s, path, env)?;
            expanded.push(s.clone());
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, expanded)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                interpolate(item, &format!("{path}.{key}"), env, expanded)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, path: &str, env: &dyn Env) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| err(path, "`${` without a closing `}`"))?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(err(
                path,
                format!("`${{{name}}}` is not a valid variable name"),
            ));
        }
        let value = env
            .var(name)
            .ok_or_else(|| err(path, format!("environment variable `{name}` is not set")))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    auth: Option<RawAuth>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    state: RawState,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Option<StateBackendKind>,
    url: Option<String>,
    key_prefix: Option<String>,
    on_error: Option<OnStateError>,
    timeout_ms: Option<u64>,
    lease_ms: Option<u64>,
}

impl RawState {
    fn check(self) -> Result<StateConfig, ConfigError> {
        let defaults = StateConfig::default();
        let backend = self.backend.unwrap_or(defaults.backend);
        let url = match (backend, self.url) {
            (StateBackendKind::Redis, None) => {
                return Err(err("state.url", "is required with backend = \"redis\""));
            }
            (StateBackendKind::Memory, Some(_)) => {
                return Err(err("state.url", "only applies with backend = \"redis\""));
            }
            (_, Some(url)) => {
                // The URL may hold a password: the error never repeats it.
                let parsed = url::Url::parse(&url)
                    .map_err(|e| err("state.url", format!("not a URL: {e}")))?;
                if parsed.scheme() != "redis" || parsed.host_str().is_none_or(str::is_empty) {
                    return Err(err(
                        "state.url",
                        "must be a `redis://host:port/db` URL (TLS is not supported)",
                    ));
                }
                Some(Secret::new(url))
            }
            (_, None) => None,
        };
        let key_prefix = self.key_prefix.unwrap_or(defaults.key_prefix);
        if key_prefix.len() > 64 {
            return Err(err("state.key_prefix", "must be at most 64 bytes"));
        }
        let timeout = match self.timeout_ms {
            Some(ms) if !(1..=10_000).contains(&ms) => {
                return Err(err("state.timeout_ms", "must be between 1 and 10000"));
            }
            other => other.map_or(defaults.timeout, Duration::from_millis),
        };
        let lease = match self.lease_ms {
            Some(ms) if !(500..=3_600_000).contains(&ms) => {
                return Err(err("state.lease_ms", "must be between 500 and 3600000"));
            }
            other => other.map_or(defaults.lease, Duration::from_millis),
        };
        Ok(StateConfig {
            backend,
            url,
            key_prefix,
            on_error: self.on_error.unwrap_or(defaults.on_error),
            timeout,
            lease,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
}

impl RawTelemetry {
    fn check(self) -> Result<TelemetryConfig, ConfigError> {
        let path = "telemetry.otlp_endpoint";
        let otlp_endpoint = self
            .otlp_endpoint
            .map(|url| check_base_url(path, &url))
            .transpose()?;
        // The endpoint is logged when export fails; credentials go in OTEL_EXPORTER_OTLP_HEADERS.
        if let Some(url) = &otlp_endpoint
            && url::Url::parse(url)
                .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
        {
            return Err(err(
                path,
                "must not contain credentials (set OTEL_EXPORTER_OTLP_HEADERS instead)",
            ));
        }
        Ok(TelemetryConfig { otlp_endpoint })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    drain_delay_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    stream_keepalive_secs: Option<u64>,
    stream_first_chunk_keepalive_secs: Option<u64>,
    stream_idle_timeout_secs: Option<u64>,
    circuit_failures: Option<u32>,
    circuit_cooldown_ms: Option<u64>,
    max_upstream_body_bytes: Option<usize>,
    max_upstream_event_bytes: Option<usize>,
    max_retry_wait_ms: Option<u64>,
    cache_max_entries: Option<usize>,
    cache_max_bytes: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    write_stall_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    admin_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    key: String,
    #[serde(default = "all_models")]
    models: Vec<String>,
    #[serde(default)]
    cache: CacheScope,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_concurrent: Option<u64>,
    budget_usd: Option<f64>,
    budget_window: Option<BudgetWindow>,
}

/// Upper bounds of key limits, far above any real use, so arithmetic on them cannot overflow.
const MAX_RPM: u64 = 1_000_000_000;
const MAX_TPM: u64 = 1_000_000_000_000;
const MAX_CONCURRENT: u64 = 1_000_000;
const MAX_BUDGET_USD: f64 = 1e9;
const MAX_PRICE_USD: f64 = 1e6;

impl RawKey {
    fn limits(&self, path: &str) -> Result<KeyLimits, ConfigError> {
        let bounded = |name: &str, value: Option<u64>, max: u64| match value {
            Some(v) if !(1..=max).contains(&v) => Err(err(
                format!("{path}.{name}"),
                format!("must be between 1 and {max}"),
            )),
            other => Ok(other),
        };
        let budget = match (self.budget_usd, self.budget_window) {
            (None, Some(_)) => {
                return Err(err(
                    format!("{path}.budget_window"),
                    "needs `budget_usd` beside it",
                ));
            }
            (None, None) => None,
            (Some(usd), window) => {
                if !(usd.is_finite() && (0.0..=MAX_BUDGET_USD).contains(&usd)) {
                    return Err(err(
                        format!("{path}.budget_usd"),
                        format!("must be a number between 0 and {MAX_BUDGET_USD}"),
                    ));
                }
                Some(Budget {
                    usd,
                    // Bounded above, so the product fits.
                    nano_usd: (usd * 1e9).round() as u64,
                    window: window.unwrap_or_default(),
                })
            }
        };
        Ok(KeyLimits {
            rpm: bounded("rpm", self.rpm, MAX_RPM)?,
            tpm: bounded("tpm", self.tpm, MAX_TPM)?,
            max_concurrent: bounded("max_concurrent", self.max_concurrent, MAX_CONCURRENT)?,
            budget,
        })
    }
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: ProviderKind,
    base_url: Option<String>,
    api_key: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    strict_params: bool,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    discover_models: bool,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    targets: Vec<RawTarget>,
    #[serde(default)]
    fallbacks: Vec<String>,
    retry: Option<RawRetry>,
    timeout_ms: Option<u64>,
    hedge_after_ms: Option<u64>,
    cache_ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    provider: String,
    model: String,
    #[serde(default = "one")]
    weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u32>,
    on_status: Option<Vec<u16>>,
    backoff_ms: Option<u64>,
}

fn positive_ms(path: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(err(path, "must be at least 1")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn positive_bytes(path: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(err(path, "must be at least 1")),
        Some(bytes) => Ok(bytes),
    }
}

fn positive_secs(
    path: &str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(err(path, "must be at least 1")),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

impl RawConfig {
    fn check(self) -> Result<Config, ConfigError> {
        let server = self.server.check()?;
        let telemetry = self.telemetry.check()?;
        let state = self.state.check()?;
        let auth = self.auth.map(RawAuth::check).transpose()?;
        let mut providers = BTreeMap::new();
        for (name, raw) in self.providers {
            let provider = raw.check(&format!("providers.{name}"))?;
            check_provider_name(&name)?;
            providers.insert(name, provider);
        }
        let mut models = BTreeMap::new();
        for (alias, raw) in &self.models {
            let path = format!("models.{alias}");
            if alias.contains('/') || alias.is_empty() {
                return Err(err(
                    &path,
                    "an alias name must be non-empty and contain no `/` (that form addresses a provider)",
                ));
            }
            models.insert(alias.clone(), raw.check(&path, &providers)?);
        }
        for (alias, model) in &models {
            for (i, fallback) in model.fallbacks.iter().enumerate() {
                check_model_name(
                    &format!("models.{alias}.fallbacks[{i}]"),
                    fallback,
                    &providers,
                    &models,
                )?;
            }
        }
        Ok(Config {
            server,
            auth,
            providers,
            models,
            telemetry,
            state,
        })
    }
}

fn check_provider_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains('/') {
        return Err(err(
            format!("providers.{name}"),
            "a provider name must be non-empty and contain no `/`",
        ));
    }
    Ok(())
}

/// A name clients could send: an alias or `<configured provider>/<model>`.
fn check_model_name(
    path: &str,
    name: &str,
    providers: &BTreeMap<String, ProviderConfig>,
    models: &BTreeMap<String, ModelConfig>,
) -> Result<(), ConfigError> {
    if models.contains_key(name) {
        return Ok(());
    }
    match name.split_once('/') {
        Some((provider, model)) if providers.contains_key(provider) && !model.is_empty() => Ok(()),
        Some((provider, _)) if !providers.contains_key(provider) => Err(err(
            path,
            format!("`{name}` names provider `{provider}`, which is not configured"),
        )),
        _ => Err(err(
            path,
            format!("`{name}` is neither an alias nor `<provider>/<model>`"),
        )),
    }
}

/// Upper bounds of `[server]` durations.
const MAX_CIRCUIT_COOLDOWN_MS: u64 = 86_400_000;
const MAX_RETRY_WAIT_MS: u64 = 600_000;

impl RawServer {
    fn check(self) -> Result<ServerConfig, ConfigError> {
        let defaults = ServerConfig::default();
        let listen = match self.listen {
            None => defaults.listen,
            Some(text) => parse_listen(&text).map_err(|m| err("server.listen", m))?,
        };
        Ok(ServerConfig {
            listen,
            max_body_bytes: positive_bytes(
                "server.max_body_bytes",
                self.max_body_bytes,
                defaults.max_body_bytes,
            )?,
            drain_delay: self
                .drain_delay_secs
                .map_or(defaults.drain_delay, Duration::from_secs),
            shutdown_grace: self
                .shutdown_grace_secs
                .map_or(defaults.shutdown_grace, Duration::from_secs),
            stream_keepalive: positive_secs(
                "server.stream_keepalive_secs",
                self.stream_keepalive_secs,
                defaults.stream_keepalive,
            )?,
            // 0 means "never before the first chunk".
            stream_first_chunk_keepalive: match self.stream_first_chunk_keepalive_secs {
                None => defaults.stream_first_chunk_keepalive,
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
            },
            stream_idle_timeout: positive_secs(
                "server.stream_idle_timeout_secs",
                self.stream_idle_timeout_secs,
                defaults.stream_idle_timeout,
            )?,
            circuit_failures: match self.circuit_failures {
                Some(0) => return Err(err("server.circuit_failures", "must be at least 1")),
                other => other.unwrap_or(defaults.circuit_failures),
            },
            circuit_cooldown: match self.circuit_cooldown_ms {
                Some(ms) if ms > MAX_CIRCUIT_COOLDOWN_MS => {
                    return Err(err(
                        "server.circuit_cooldown_ms",
                        format!("must be at most {MAX_CIRCUIT_COOLDOWN_MS} (a day)"),
                    ));
                }
                other => positive_ms(
                    "server.circuit_cooldown_ms",
                    other,
                    defaults.circuit_cooldown,
                )?,
            },
            max_retry_wait: match self.max_retry_wait_ms {
                Some(ms) if ms > MAX_RETRY_WAIT_MS => {
                    return Err(err(
                        "server.max_retry_wait_ms",
                        format!("must be at most {MAX_RETRY_WAIT_MS} (ten minutes)"),
                    ));
                }
                other => other.map_or(defaults.max_retry_wait, Duration::from_millis),
            },
            max_upstream_body_bytes: positive_bytes(
                "server.max_upstream_body_bytes",
                self.max_upstream_body_bytes,
                defaults.max_upstream_body_bytes,
            )?,
            max_upstream_event_bytes: positive_bytes(
                "server.max_upstream_event_bytes",
                self.max_upstream_event_bytes,
                defaults.max_upstream_event_bytes,
            )?,
            cache_max_entries: self.cache_max_entries.unwrap_or(defaults.cache_max_entries),
            cache_max_bytes: self.cache_max_bytes.unwrap_or(defaults.cache_max_bytes),
            connections: ConnectionLimits {
                header_read_timeout: positive_secs(
                    "server.header_read_timeout_secs",
                    self.header_read_timeout_secs,
                    defaults.connections.header_read_timeout,
                )?,
                body_read_timeout: positive_secs(
                    "server.body_read_timeout_secs",
                    self.body_read_timeout_secs,
                    defaults.connections.body_read_timeout,
                )?,
                write_stall_timeout: positive_secs(
                    "server.write_stall_timeout_secs",
                    self.write_stall_timeout_secs,
                    defaults.connections.write_stall_timeout,
                )?,
                max_connections: match self.max_connections {
                    Some(0) => return Err(err("server.max_connections", "must be at least 1")),
                    other => other.unwrap_or(defaults.connections.max_connections),
                },
                max_header_bytes: match self.max_header_bytes {
                    Some(n) if n < MIN_HEADER_BYTES => {
                        return Err(err(
                            "server.max_header_bytes",
                            format!("must be at least {MIN_HEADER_BYTES}"),
                        ));
                    }
                    other => other.unwrap_or(defaults.connections.max_header_bytes),
                },
            },
        })
    }
}

/// The smallest header buffer the HTTP/1 server accepts.
const MIN_HEADER_BYTES: usize = 8192;

/// Parses a listen address such as `127.0.0.1:8080` or `[::]:8080`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address like `127.0.0.1:8080`"))
}

impl RawAuth {
    fn check(self) -> Result<AuthConfig, ConfigError> {
        if self.keys.is_empty() && self.admin_keys.is_empty() {
            return Err(err(
                "auth.keys",
                "must list at least one key or admin key (remove `[auth]` to disable keys)",
            ));
        }
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        let mut admin_keys = Vec::new();
        for (i, key) in self.admin_keys.into_iter().enumerate() {
            let path = format!("auth.admin_keys[{i}]");
            if key.is_empty() {
                return Err(err(path, "must not be empty"));
            }
            if !secrets.insert(key.clone()) {
                return Err(err(path, "the same key is listed twice"));
            }
            admin_keys.push(Secret::new(key));
        }
        let mut keys = Vec::new();
        for (i, raw) in self.keys.into_iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            if raw.key.is_empty() {
                return Err(err(format!("{path}.key"), "must not be empty"));
            }
            if !names.insert(raw.name.clone()) {
                return Err(err(
                    format!("{path}.name"),
                    format!("`{}` is used twice", raw.name),
                ));
            }
            if !secrets.insert(raw.key.clone()) {
                return Err(err(
                    format!("{path}.key"),
                    "the same key is listed twice (or is also an admin key)",
                ));
            }
            let limits = raw.limits(&path)?;
            keys.push(GatewayKey {
                name: raw.name,
                key: Secret::new(raw.key),
                models: raw.models,
                cache: raw.cache,
                limits,
            });
        }
        Ok(AuthConfig { keys, admin_keys })
    }
}

impl RawProvider {
    fn check(self, path: &str) -> Result<ProviderConfig, ConfigError> {
        let mut provider = ProviderConfig::new(self.kind);
        if self.kind == ProviderKind::Echo {
            if self.base_url.is_some() {
                return Err(err(
                    format!("{path}.base_url"),
                    "the echo provider has no upstream",
                ));
            }
        } else if let Some(url) = self.base_url {
            provider.base_url = check_base_url(&format!("{path}.base_url"), &url)?;
        }
        provider.api_key = self.api_key.filter(|k| !k.is_empty()).map(Secret::new);
        if let Some(ms) = self.timeout_ms {
            if ms == 0 {
                return Err(err(format!("{path}.timeout_ms"), "must be at least 1"));
            }
            provider.timeout = Duration::from_millis(ms);
        }
        for (name, value) in &self.headers {
            let header_path = format!("{path}.headers.{name}");
            axum::http::HeaderName::try_from(name.as_str())
                .map_err(|_| err(&header_path, "not a valid header name"))?;
            axum::http::HeaderValue::try_from(value.as_str())
                .map_err(|_| err(&header_path, "not a valid header value"))?;
        }
        provider.headers = self.headers;
        provider.strict_params = self.strict_params;
        if self.models.len() > MAX_PROVIDER_MODELS {
            return Err(err(
                format!("{path}.models"),
                format!("must list at most {MAX_PROVIDER_MODELS} models"),
            ));
        }
        for (i, model) in self.models.iter().enumerate() {
            if let Some(problem) = model_id_problem(model) {
                return Err(err(format!("{path}.models[{i}]"), problem));
            }
        }
        provider.models = self.models;
        if self.discover_models && self.kind != ProviderKind::OpenAi {
            return Err(err(
                format!("{path}.discover_models"),
                format!(
                    "only an `openai`-kind provider can discover its models (this one is `{}`)",
                    self.kind.as_str()
                ),
            ));
        }
        provider.discover_models = self.discover_models;
        for (model, price) in &self.prices {
            for (side, value) in [("input", price.input), ("output", price.output)] {
                if !(value.is_finite() && (0.0..=MAX_PRICE_USD).contains(&value)) {
                    return Err(err(
                        format!("{path}.prices.{model}.{side}"),
                        format!(
                            "must be a number of USD per million tokens between 0 and {MAX_PRICE_USD}"
                        ),
                    ));
                }
            }
        }
        provider.prices = self.prices;
        Ok(provider)
    }
}

fn check_base_url(path: &str, url: &str) -> Result<String, ConfigError> {
    let parsed =
        url::Url::parse(url).map_err(|e| err(path, format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(err(path, format!("`{url}` must be an http or https URL")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // The URL is not quoted: it holds a credential.
        return Err(err(
            path,
            "must not carry credentials (`user:password@`): put the provider's key in \
             `api_key`, or an `authorization` header in `headers`"
                .to_owned(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err(
            path,
            format!("`{url}` must not have a query or fragment"),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl RawModel {
    fn check(
        &self,
        path: &str,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Result<ModelConfig, ConfigError> {
        if self.targets.is_empty() {
            return Err(err(
                format!("{path}.targets"),
                "must list at least one target",
            ));
        }
        let mut targets = Vec::new();
        for (i, raw) in self.targets.iter().enumerate() {
            let target_path = format!("{path}.targets[{i}]");
            if !providers.contains_key(&raw.provider) {
                return Err(err(
                    format!("{target_path}.provider"),
                    format!("provider `{}` is not configured", raw.provider),
                ));
            }
            if raw.model.is_empty() {
                return Err(err(format!("{target_path}.model"), "must not be empty"));
            }
            if !(raw.weight.is_finite() && raw.weight > 0.0) {
                return Err(err(
                    format!("{target_path}.weight"),
                    "must be a number above 0",
                ));
            }
            targets.push(Target {
                provider: raw.provider.clone(),
                model: raw.model.clone(),
                weight: raw.weight,
            });
        }
        let retry = match &self.retry {
            None => RetryConfig::default(),
            Some(raw) => raw.check(&format!("{path}.retry"))?,
        };
        let optional_ms = |key: &str, value: Option<u64>| match value {
            Some(0) => Err(err(format!("{path}.{key}"), "must be at least 1")),
            other => Ok(other.map(Duration::from_millis)),
        };
        let cache_ttl = match self.cache_ttl_secs {
            Some(secs) if !(1..=259_200).contains(&secs) => {
                return Err(err(
                    format!("{path}.cache_ttl_secs"),
                    "must be between 1 and 259200",
                ));
            }
            other => other.map(Duration::from_secs),
        };
        Ok(ModelConfig {
            targets,
            fallbacks: self.fallbacks.clone(),
            retry,
            timeout: optional_ms("timeout_ms", self.timeout_ms)?,
            hedge_after: optional_ms("hedge_after_ms", self.hedge_after_ms)?,
            cache_ttl,
        })
    }
}

impl RawRetry {
    fn check(&self, path: &str) -> Result<RetryConfig, ConfigError> {
        let defaults = RetryConfig::default();
        let attempts = self.attempts.unwrap_or(defaults.attempts);
        if attempts == 0 {
            return Err(err(
                format!("{path}.attempts"),
                "must be at least 1 (1 = no retry)",
            ));
        }
        let on_status = self.on_status.clone().unwrap_or(defaults.on_status);
        if let Some(bad) = on_status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(err(
                format!("{path}.on_status"),
                format!("{bad} is not an HTTP status"),
            ));
        }
        Ok(RetryConfig {
            attempts,
            on_status,
            backoff: self
                .backoff_ms
                .map_or(defaults.backoff, Duration::from_millis),
        })
    }
}
