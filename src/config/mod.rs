//! Configuration: the validated [`Config`] the gateway runs on.
//!
//! A TOML file goes through `load` (syntax, `${VAR}` secrets, unknown keys and types, each
//! error naming its path) into the checked types here. Without a file the gateway runs on
//! [`Config::embedded_default`]. Command-line flags and `LLMGATE_*` variables are applied on
//! top by the binary (flag > environment > file > default).

mod describe;
mod load;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use load::{
    ConfigError, Env, ProcessEnv, from_toml_str, load_file, load_file_hashed, parse_listen,
};

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and lifecycle settings.
    pub server: ServerConfig,
    /// Gateway keys; `None` means no key is required.
    pub(crate) auth: Option<AuthConfig>,
    /// Upstream providers by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model aliases by name.
    pub(crate) models: BTreeMap<String, ModelConfig>,
    /// `[telemetry]`: where traces go.
    pub telemetry: TelemetryConfig,
    /// `[state]`: where rate limits, concurrency, spend and the response cache live.
    pub(crate) state: StateConfig,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateConfig {
    /// `memory` (this process only) or `redis` (shared by every replica naming it).
    pub(crate) backend: StateBackendKind,
    /// The Redis URL (`redis://host:port/db`); it may hold a password, so it is a secret.
    pub(crate) url: Option<Secret>,
    /// Prefix of every Redis key the gateway writes.
    pub(crate) key_prefix: String,
    /// What limits do while Redis cannot be reached.
    pub(crate) on_error: OnStateError,
    /// The longest wait on one Redis call.
    pub(crate) timeout: Duration,
    /// A concurrency slot expires this long after its last renewal (a dead replica's slots
    /// come back after it).
    pub(crate) lease: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: StateBackendKind::Memory,
            url: None,
            key_prefix: "llmgate:".to_owned(),
            on_error: OnStateError::Allow,
            timeout: Duration::from_millis(250),
            lease: Duration::from_secs(30),
        }
    }
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StateBackendKind {
    /// In this process.
    Memory,
    /// In Redis.
    Redis,
}

impl StateBackendKind {
    /// The name in the config.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StateBackendKind::Memory => "memory",
            StateBackendKind::Redis => "redis",
        }
    }
}

/// What limits do while the state backend is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnStateError {
    /// Serve; limits are not enforced meanwhile.
    Allow,
    /// Refuse keyed completions with 503 `state_unavailable`.
    Deny,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (`/v1/traces` is appended); `None`: spans are not exported.
    pub otlp_endpoint: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Larger request bodies get 413.
    pub(crate) max_body_bytes: usize,
    /// On SIGTERM, `/readyz` turns 503 but requests are still served this long.
    pub(crate) drain_delay: Duration,
    /// Then in-flight requests and streams get this long to finish.
    pub(crate) shutdown_grace: Duration,
    /// A stream sends a keep-alive comment after this long without an event.
    pub(crate) stream_keepalive: Duration,
    /// A stream whose first upstream chunk has not come by then is committed (`200` and
    /// keep-alive comments); until then a failure can still be retried. `None`: never commit
    /// before the first chunk.
    pub(crate) stream_first_chunk_keepalive: Option<Duration>,
    /// A stream whose upstream sends nothing for this long ends with an error event.
    pub(crate) stream_idle_timeout: Duration,
    /// Consecutive failures that eject a target (circuit breaker).
    pub(crate) circuit_failures: u32,
    /// How long an ejected target rests before one probe request may try it.
    pub(crate) circuit_cooldown: Duration,
    /// An upstream's whole JSON answer or error body may be at most this large.
    pub(crate) max_upstream_body_bytes: usize,
    /// One event (or line) of an upstream event stream may be at most this large.
    pub(crate) max_upstream_event_bytes: usize,
    /// The longest wait on an upstream's `retry-after`: a longer one is not waited out, the
    /// 429 goes to the client at once.
    pub(crate) max_retry_wait: Duration,
    /// The response cache holds at most this many answers ...
    pub(crate) cache_max_entries: usize,
    /// ... and at most this many bytes of them.
    pub(crate) cache_max_bytes: usize,
    /// What one client connection may take.
    pub(crate) connections: ConnectionLimits,
}

/// Timeouts and bounds of client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// A request's headers must arrive within this long; also how long an idle keep-alive
    /// connection stays open (set a load balancer's idle timeout below it).
    pub(crate) header_read_timeout: Duration,
    /// A request's body must arrive within this long of its headers (408 after).
    pub(crate) body_read_timeout: Duration,
    /// A client that reads nothing of a response for this long is disconnected (its upstream
    /// request is cancelled).
    pub(crate) write_stall_timeout: Duration,
    /// Open client connections; more are answered 503 and closed at once.
    pub(crate) max_connections: usize,
    /// Larger request heads get 431.
    pub(crate) max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(60),
            max_connections: 20_000,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 10 * 1024 * 1024,
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            stream_keepalive: Duration::from_secs(15),
            stream_first_chunk_keepalive: Some(Duration::from_secs(45)),
            stream_idle_timeout: Duration::from_secs(300),
            circuit_failures: 5,
            circuit_cooldown: Duration::from_secs(30),
            max_upstream_body_bytes: 16 * 1024 * 1024,
            max_upstream_event_bytes: 16 * 1024 * 1024,
            max_retry_wait: Duration::from_millis(5000),
            cache_max_entries: 10_000,
            cache_max_bytes: 64 * 1024 * 1024,
            connections: ConnectionLimits::default(),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub(crate) struct AuthConfig {
    /// The accepted gateway keys; empty: completions need no key.
    pub(crate) keys: Vec<GatewayKey>,
    /// Keys for `/admin/*` (only there); empty: no admin API.
    pub(crate) admin_keys: Vec<Secret>,
}

/// One gateway key.
#[derive(Debug, Clone)]
pub(crate) struct GatewayKey {
    /// A name for logs.
    pub(crate) name: String,
    /// The bearer token clients send.
    pub(crate) key: Secret,
    /// Model names this key may use; `*` matches everything, `prefix*` a prefix.
    pub(crate) models: Vec<String>,
    /// Whether this key's cached answers are its own or shared with other sharing keys.
    pub(crate) cache: CacheScope,
    /// Its rate, concurrency and spend limits.
    pub(crate) limits: KeyLimits,
}

/// A key's limits; `None` is unlimited in that dimension.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeyLimits {
    /// Requests per minute: a burst of up to `rpm`, refilled at `rpm / 60` per second.
    pub(crate) rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute, the same bucket rule.
    pub(crate) tpm: Option<u64>,
    /// Requests (streams included) in flight at once.
    pub(crate) max_concurrent: Option<u64>,
    /// Spend allowed per window.
    pub(crate) budget: Option<Budget>,
}

impl KeyLimits {
    /// Whether any limit is set (then responses carry the `x-ratelimit-*` headers).
    pub(crate) fn any(&self) -> bool {
        self.rpm.is_some()
            || self.tpm.is_some()
            || self.max_concurrent.is_some()
            || self.budget.is_some()
    }
}

/// A spend limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    /// USD allowed per window, as configured.
    pub(crate) usd: f64,
    /// The same in nano-USD, the unit spend is counted in.
    pub(crate) nano_usd: u64,
    /// Which window.
    pub(crate) window: BudgetWindow,
}

/// The window a budget applies to (calendar, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BudgetWindow {
    /// The current UTC day.
    Day,
    /// The current UTC month.
    #[default]
    Month,
    /// For ever.
    Total,
}

impl BudgetWindow {
    /// The name in the config.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Day => "day",
            BudgetWindow::Month => "month",
            BudgetWindow::Total => "total",
        }
    }
}

/// A model's price: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Price {
    /// Per million prompt tokens.
    pub(crate) input: f64,
    /// Per million completion tokens.
    pub(crate) output: f64,
}

impl Price {
    /// What `prompt` and `completion` tokens cost, in nano-USD (saturating).
    pub(crate) fn nano_usd(&self, prompt: u64, completion: u64) -> u64 {
        // x USD per million tokens is 1000·x nano-USD per token.
        let nano =
            (prompt as f64) * self.input * 1000.0 + (completion as f64) * self.output * 1000.0;
        if nano.is_finite() && nano > 0.0 {
            // `as` saturates at u64::MAX.
            nano.round() as u64
        } else {
            0
        }
    }
}

/// Who may be answered from a key's cached answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CacheScope {
    /// Only the key itself (the default: one tenant never sees another's answers, nor
    /// learns from a hit that someone else asked the same thing).
    #[default]
    Private,
    /// Every key that shares.
    Shared,
}

impl GatewayKey {
    /// Whether this key may use `model`.
    pub(crate) fn allows(&self, model: &str) -> bool {
        self.models
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => pattern == model,
            })
    }
}

/// The kinds of upstream the gateway speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProviderKind {
    /// OpenAI or any OpenAI-compatible server.
    #[serde(rename = "openai")]
    OpenAi,
    /// Atoma.
    Atoma,
    /// Nugen.
    Nugen,
    /// orq.ai router.
    Orq,
    /// The built-in offline echo provider.
    Echo,
}

impl ProviderKind {
    /// The kinds that call a real upstream.
    const REAL: [ProviderKind; 4] = [
        ProviderKind::OpenAi,
        ProviderKind::Nugen,
        ProviderKind::Atoma,
        ProviderKind::Orq,
    ];

    /// The kind called `name`.
    pub(crate) fn from_name(name: &str) -> Option<ProviderKind> {
        Self::REAL
            .into_iter()
            .chain([ProviderKind::Echo])
            .find(|kind| kind.as_str() == name)
    }

    /// The kind's name in the config.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Atoma => "atoma",
            ProviderKind::Nugen => "nugen",
            ProviderKind::Orq => "orq",
            ProviderKind::Echo => "echo",
        }
    }

    /// The server URL the provider's API document gives.
    fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Atoma => "https://api.atoma.network",
            ProviderKind::Nugen => "https://api.nugen.in",
            ProviderKind::Orq => "https://api.orq.ai",
            ProviderKind::Echo => "",
        }
    }

    /// The path the adapter appends to `base_url`.
    fn operation_path(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "/chat/completions",
            ProviderKind::Atoma => "/v1/chat/completions",
            ProviderKind::Nugen => "/api/v3/inference/chat/completions",
            ProviderKind::Orq => "/v2/router/chat/completions",
            ProviderKind::Echo => "",
        }
    }

    /// The environment variable that enables this kind in the embedded default.
    pub(crate) fn key_variable(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("OPENAI_API_KEY"),
            ProviderKind::Atoma => Some("ATOMA_API_KEY"),
            ProviderKind::Nugen => Some("NUGEN_API_KEY"),
            ProviderKind::Orq => Some("ORQ_API_KEY"),
            ProviderKind::Echo => None,
        }
    }
}

/// `[providers.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// The dialect.
    pub(crate) kind: ProviderKind,
    /// Server URL without a trailing slash (empty for echo).
    pub(crate) base_url: String,
    /// The provider's key, sent as a bearer token.
    pub(crate) api_key: Option<Secret>,
    /// Per upstream attempt (for a stream: until its last event).
    pub(crate) timeout: Duration,
    /// Added to every upstream request.
    pub(crate) headers: BTreeMap<String, String>,
    /// A field this provider cannot take is a 400 instead of a drop.
    pub(crate) strict_params: bool,
    /// Upstream models listed in `/v1/models` as `<provider>/<model>`.
    pub(crate) models: Vec<String>,
    /// `openai` kind only: also list what the upstream's `GET {base_url}/models` lists.
    pub(crate) discover_models: bool,
    /// Prices by upstream model (`*`: any other).
    pub(crate) prices: BTreeMap<String, Price>,
}

impl ProviderConfig {
    /// A provider of `kind` on its documented server.
    pub(crate) fn new(kind: ProviderKind) -> Self {
        ProviderConfig {
            kind,
            base_url: kind.default_base_url().to_owned(),
            api_key: None,
            timeout: Duration::from_millis(600_000),
            headers: BTreeMap::new(),
            strict_params: false,
            models: Vec::new(),
            discover_models: false,
            prices: BTreeMap::new(),
        }
    }

    /// The price of `model`: its own, else the `*` one; `None` when unpriced.
    pub(crate) fn price(&self, model: &str) -> Option<Price> {
        self.prices
            .get(model)
            .or_else(|| self.prices.get("*"))
            .copied()
    }

    /// The full URL of the chat operation.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}{}", self.base_url, self.kind.operation_path())
    }
}

/// The longest upstream model name (configured or discovered), in bytes.
pub(crate) const MAX_MODEL_ID_BYTES: usize = 256;
/// The most models one provider lists (configured, or discovered).
pub(crate) const MAX_PROVIDER_MODELS: usize = 10_000;

/// Why `id` cannot be an upstream model name, if it cannot: it must be non-empty, at most
/// [`MAX_MODEL_ID_BYTES`] long and free of control characters.
pub(crate) fn model_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("must not be empty".to_owned())
    } else if id.len() > MAX_MODEL_ID_BYTES {
        Some(format!("must be at most {MAX_MODEL_ID_BYTES} bytes"))
    } else if id.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

/// `[models.<alias>]`.
#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    /// Weighted targets.
    pub(crate) targets: Vec<Target>,
    /// `provider/model` names or aliases tried in order when every target failed.
    pub(crate) fallbacks: Vec<String>,
    /// Retries of each target.
    pub(crate) retry: RetryConfig,
    /// The whole request: every attempt and fallback together.
    pub(crate) timeout: Option<Duration>,
    /// Start a second attempt on the next target when the first has not answered by then.
    pub(crate) hedge_after: Option<Duration>,
    /// Cache successful answers this long (exact match).
    pub(crate) cache_ttl: Option<Duration>,
}

/// One target of an alias.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// A configured provider's name.
    pub(crate) provider: String,
    /// The upstream model name.
    pub(crate) model: String,
    /// Relative weight, > 0.
    pub(crate) weight: f64,
}

/// An alias's retry policy.
#[derive(Debug, Clone)]
pub(crate) struct RetryConfig {
    /// Tries of one target including the first (1 = no retry).
    pub(crate) attempts: u32,
    /// Statuses worth another try.
    pub(crate) on_status: Vec<u16>,
    /// Base of the exponential backoff.
    pub(crate) backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 1,
            on_status: vec![429, 500, 502, 503, 504],
            backoff: Duration::from_millis(200),
        }
    }
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends or compares it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Config {
    /// The configuration without a file: `127.0.0.1:8080`, the `echo` provider (listing
    /// `echo/echo`), and each real provider kind on its documented server when its key
    /// variable is set. No gateway auth.
    pub fn embedded_default(env: &dyn Env) -> Config {
        let mut providers = BTreeMap::new();
        let mut echo = ProviderConfig::new(ProviderKind::Echo);
        echo.models = vec!["echo".to_owned()];
        providers.insert("echo".to_owned(), echo);
        for kind in ProviderKind::REAL {
            let key = kind.key_variable().and_then(|var| env.var(var));
            if let Some(key) = key.filter(|k| !k.is_empty()) {
                let mut provider = ProviderConfig::new(kind);
                provider.api_key = Some(Secret::new(key));
                providers.insert(kind.as_str().to_owned(), provider);
            }
        }
        Config {
            server: ServerConfig::default(),
            auth: None,
            providers,
            models: BTreeMap::new(),
            telemetry: TelemetryConfig::default(),
            state: StateConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests;
