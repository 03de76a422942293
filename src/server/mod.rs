//! The HTTP server: routes, middleware, state and graceful shutdown.
//!
//! One service comes first (`middleware::Front`): the request id (the client's
//! `x-request-id` when it is plain, else a new one; also on the response), the start time and
//! the request's record (access log and metrics); then the routes.
//! The chat and model handlers take the gateway-key check first (the `auth::Authorized`
//! extractor), `/admin/*` passes the admin-key check; health, readiness, metrics, the OpenAPI
//! document and the status page (`ui`: static files, its data comes from the admin API) need
//! no key. The reloadable config sits behind an `ArcSwap` (`live`, `reload`).

mod admin;
mod auth;
mod chat;
#[doc(hidden)]
pub mod connection;
mod extract;
mod health;
mod live;
mod metrics;
mod middleware;
mod nugen;
mod openai;
pub mod openapi;
mod reload;
mod time;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::providers::discover::Discovery;
use crate::state::SharedState;
use crate::stream::normalize::unix_now;
pub(crate) use chat::ChatRoute;
pub use live::ConfigSource;
use live::{Live, Loaded};
pub use reload::Reloaded;

/// Shared state of the running gateway.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
struct Shared {
    /// The current config; swapped whole by a reload, read without a lock.
    live: ArcSwap<Live>,
    /// Where the config comes from, for reloads.
    source: ConfigSource,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// False once shutdown has begun (`/readyz` turns 503).
    ready: AtomicBool,
    /// When the process started, for `/v1/models`.
    started: i64,
    /// The model lists of providers with `discover_models`, kept fresh while [`run`] serves.
    discovery: Discovery,
}

impl AppState {
    /// State for `config` (not from a file: it cannot be reloaded), building every provider
    /// adapter.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let loaded = Loaded {
            at: unix_now(),
            hash: None,
            path: None,
        };
        Self::with(config, loaded, ConfigSource::default())
    }

    /// State for the config `source` names, which reloads re-read.
    pub fn load(source: ConfigSource) -> anyhow::Result<Self> {
        let (config, loaded) = live::read(&source)?;
        Self::with(&config, loaded, source)
    }

    fn with(config: &Config, loaded: Loaded, source: ConfigSource) -> anyhow::Result<Self> {
        let state = SharedState::new(&config.state)?;
        let live = Live::build(config, loaded, None, state)?;
        Ok(AppState(Arc::new(Shared {
            live: ArcSwap::from_pointee(live),
            source,
            reloading: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(true),
            started: unix_now(),
            discovery: Discovery::default(),
        })))
    }

    /// The current config: a request keeps this one to its end.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.0.live.load_full()
    }

    /// The address the config says to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.0.live.load().server.listen
    }

    /// Where spans are exported, if anywhere (fixed at start).
    pub fn otlp_endpoint(&self) -> Option<String> {
        self.0.live.load().telemetry.otlp_endpoint.clone()
    }

    /// When the process started (unix seconds).
    pub(crate) fn started(&self) -> i64 {
        self.0.started
    }

    /// The discovered model lists.
    pub(crate) fn discovery(&self) -> &Discovery {
        &self.0.discovery
    }

    /// Keeps the discovered model lists of the current config's providers fresh until
    /// dropped (see [`Discovery::run`]).
    async fn discover_models(&self) {
        let providers = || -> std::collections::BTreeMap<_, _> {
            let live = self.live();
            (live.router.registry().iter())
                .map(|p| (p.name.clone(), p.config.clone()))
                .collect()
        };
        self.0.discovery.run(providers).await;
    }

    /// Whether the gateway takes new traffic.
    fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// Marks the gateway as draining.
    fn set_draining(&self) {
        self.0.ready.store(false, Ordering::Relaxed);
    }
}

/// The key label values: every key's name, or `none` without auth.
pub(crate) fn key_names(auth: Option<&crate::config::AuthConfig>) -> Vec<String> {
    match auth {
        Some(auth) => auth.keys.iter().map(|k| k.name.clone()).collect(),
        None => vec![crate::observe::NONE.to_owned()],
    }
}

/// The gateway's routes, behind [`middleware::Front`].
fn app(state: AppState) -> middleware::Front {
    middleware::Front {
        router: routes(state.clone()),
        state,
    }
}

/// The gateway's routes.
fn routes(state: AppState) -> Router {
    let api = Router::new().route("/v1/models", get(openai::list_models));
    let admin = Router::new()
        .route(
            "/admin/keys",
            get(admin::keys).fallback(openai::method_not_allowed),
        )
        .route(
            "/admin/status",
            get(admin::status).fallback(openai::method_not_allowed),
        )
        .route(
            "/admin/stats",
            get(admin::stats).fallback(openai::method_not_allowed),
        )
        .route(
            "/admin/reload",
            post(admin::reload).fallback(openai::method_not_allowed),
        )
        // `layer` and the routes' own 405 fallback: a wrong method passes the admin check
        // (404 without admin keys) too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_key,
        ));
    let public = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics::serve))
        .route("/ui", get(ui::page))
        .route("/ui/ui.js", get(ui::script))
        .route("/ui/ui.css", get(ui::style));
    Router::new()
        .merge(api)
        .merge(admin)
        .merge(public)
        .fallback(openai::not_found)
        .method_not_allowed_fallback(openai::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.live().server.max_body_bytes))
        .with_state(state)
}

/// A tick every second, which keeps the timer driver's next wake-up near. tokio wakes its
/// own driver (an eventfd write and one more `epoll_wait`) whenever a timer is set earlier
/// than that wake-up, and every keep-alive response sets one (the header read timeout):
/// without the tick, each request on a quiet gateway pays those two system calls.
fn timer_tick() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then drains: `/readyz` turns
/// 503 at once, requests are still accepted for `drain_delay`, then no new connection is
/// accepted and in-flight requests and streams get `shutdown_grace` to finish before the
/// remaining connections are dropped.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.live().server.connections.clone();
    let shared_state = state.live().state.clone();
    // The state backend's background work (connecting, writing, renewing) runs as long as
    // the server accepts connections.
    let background = futures_util::FutureExt::fuse(shared_state.clone().run());
    tokio::pin!(background);
    // Model discovery runs while connections are accepted; dropping it stops its tasks.
    let mut discovery = Box::pin(futures_util::FutureExt::fuse(state.discover_models()));
    let slots = connection::ConnectionSlots::new(limits.max_connections);
    let router = app(state.clone());
    // Turns true when no new connection is taken: open ones finish what they serve and close.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    // Every connection's task; dropping the set ends the ones still running.
    let mut connections = tokio::task::JoinSet::new();
    let drain = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.set_draining();
            let drain_delay = state.live().server.drain_delay;
            tracing::info!(?drain_delay, "shutdown requested; draining");
            tokio::time::sleep(drain_delay).await;
        }
    };
    tokio::pin!(drain);
    let mut tick = timer_tick();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let closing = closing_rx.clone();
                    if let Some(serving) = connection::serve(stream, router.clone(), &limits, &slots, closing) {
                        connections.spawn(serving);
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut background => {}
            () = &mut discovery => {}
            () = &mut drain => break,
            _ = tick.tick() => {}
        }
    }
    drop(discovery);
    drop(listener);
    let grace = state.live().server.shutdown_grace;
    tracing::info!(?grace, "no longer accepting connections");
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    // The backend keeps writing while the last requests finish.
    let finished = async {
        tokio::select! {
            () = finished => {}
            () = &mut background => {}
        }
    };
    if tokio::time::timeout(grace, finished).await.is_err() {
        tracing::warn!("shutdown grace elapsed; dropping the remaining connections");
    }
    connections.shutdown().await;
    shared_state.flush(Duration::from_secs(2)).await;
    Ok(())
}
