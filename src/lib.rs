//! llmgate: a self-hosted, OpenAI-compatible chat-completions gateway.
//!
//! One request flows one way: ingress dialect -> canonical request -> routing -> provider
//! adapter -> upstream -> adapter -> canonical response or chunks -> ingress dialect.
//!
//! # Layout
//! - [`cli`]: command-line arguments (clap), declarative only.
//! - [`config`]: TOML with `${VAR}` secrets -> validated [`config::Config`]; the embedded default.
//! - [`error`]: [`error::GatewayError`] (what clients see, status decided in one place) and
//!   [`error::ProviderError`] (what went wrong upstream).
//! - `envelope`: errors on the wire: the OpenAI envelope and Nugen's 422 shape.
//! - [`schema`]: canonical request, response and chunk types; parsing and validation.
//! - [`server`]: client connections (the gateway's own HTTP/1.1), axum routes, the two
//!   ingress dialects (`/v1`, `/api/v3`), keys, health, OpenAPI, graceful shutdown.
//! - `routing`: model name and routing policy -> an ordered plan of attempts; retries,
//!   fallbacks, timeouts, circuit breaking, hedging, variables.
//! - `cache`: the exact-match response cache.
//! - `state`: per-key limits (rate, tokens, concurrency, budget) and shared state, in memory
//!   or in Redis (one limit across replicas).
//! - [`providers`]: the `providers::Provider` trait and one adapter per provider kind.
//! - [`stream`]: upstream SSE decoding, chunk normalization, the outgoing event stream.
//! - [`observe`]: Prometheus metrics and the access log, from one record per request.
//! - [`healthcheck`]: `llmgate health`, the container's health check.
//! - `json_reader`: a strict JSON reader that copies nothing, for the fast paths (a
//!   chunk, a whole answer, a request body forwarded as written).
//! - `http1`: HTTP/1.1's wire format (a head's end, bodies by their framing) for the
//!   upstream client and the client-facing server.
//! - [`telemetry`]: OpenTelemetry spans per request and upstream attempt, OTLP export,
//!   `traceparent` in and out.

mod cache;
mod calendar;
pub mod cli;
pub mod config;
mod envelope;
pub mod error;
pub mod healthcheck;
#[doc(hidden)]
pub mod http1;
mod json_reader;
pub mod observe;
pub mod providers;
mod routing;
pub mod schema;
pub mod server;
mod state;
#[doc(hidden)]
pub use state::bench_memory_admission;
pub mod stream;
pub mod telemetry;

/// A hash map whose keys come from the config (names of models, providers, keys), looked up
/// on every request: hashed by foldhash, several times cheaper than the standard SipHash on
/// short names. Requests only look keys up; they never insert, so there is no flood to
/// resist beyond foldhash's per-process seed.
pub(crate) type NameMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
