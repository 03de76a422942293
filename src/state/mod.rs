//! Shared state: each gateway key's rate buckets, concurrency slots, token settlements and
//! spend, and (with Redis) the response cache.
//!
//! Two backends behind one API: `memory` (this process) and `redis` (every replica naming
//! the same Redis shares one limit). A request is admitted once, before anything is sent
//! upstream ([`SharedState::admit`]): every limit is checked and only when all pass is
//! anything taken, atomically (a lock here, one Lua script in Redis). The admitted request
//! holds a [`Ticket`] until it ends; the ticket settles it then (real tokens against the
//! reservation, spend, the concurrency slot freed), also when the client left. With Redis,
//! settlements go through a bounded queue to a background writer that pipelines them, so a
//! request costs one round trip, and concurrency slots are leases the writer renews while
//! their requests run: a replica that dies loses its slots when the lease runs out.

pub(crate) mod limits;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;

use crate::cache::Cached;
use crate::config::{BudgetWindow, KeyLimits, OnStateError, StateBackendKind, StateConfig};
use limits::{RateHeaders, Refusal, budget_window};
use memory::{Ask, MemoryState};
use redis::RedisState;

/// Where the state lives.
pub(crate) enum SharedState {
    Memory(MemoryState),
    /// Boxed: it is much larger than the memory backend.
    Redis(Box<RedisState>),
}

/// How an admission went.
pub(crate) enum Admission {
    /// Go on; the ticket settles the request when dropped or settled.
    Admitted(Ticket),
    /// Over a limit: 429.
    Refused(Refusal),
    /// The backend cannot be reached and `on_error = "deny"`: 503.
    Unavailable,
    /// The backend cannot be reached and `on_error = "allow"`: served without limits.
    Unlimited,
}

/// What a finished request settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// The key's tokens-per-minute limit when the request was admitted.
    pub(crate) tpm: Option<u64>,
    /// Tokens reserved at admission.
    pub(crate) reserved: u64,
    /// Tokens really used (prompt + completion).
    pub(crate) used: u64,
    /// What they cost, in nano-USD.
    pub(crate) spend_nano: u64,
    /// The spend window's name and seconds left.
    pub(crate) window: (String, Option<u64>),
}

/// An admitted request's hold on its key's state, settled exactly once: by
/// [`Ticket::settle`], or when dropped (nothing used: the reservation comes back).
pub(crate) struct Ticket {
    state: Arc<SharedState>,
    key: Arc<str>,
    /// The concurrency slot (Redis: the member of the key's slot set).
    slot: Option<String>,
    settlement: Settlement,
    /// The `x-ratelimit-*` headers at admission (empty for a key without rpm/tpm).
    pub(crate) headers: RateHeaders,
    settled: bool,
}

impl Ticket {
    /// Settles with the tokens used and what they cost.
    pub(crate) fn settle(mut self, used: u64, spend_nano: u64) {
        self.settlement.used = used;
        self.settlement.spend_nano = spend_nano;
        self.finish();
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        match &*self.state {
            SharedState::Memory(memory) => memory.settle(&self.key, &self.settlement, now_ms()),
            SharedState::Redis(redis) => {
                redis.settle(&self.key, self.slot.take(), self.settlement.clone());
            }
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .field("reserved", &self.settlement.reserved)
            .finish_non_exhaustive()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A key's usage now, for `GET /admin/keys`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub(crate) struct UsageView {
    /// Requests admitted in the current UTC minute.
    pub(crate) requests_this_minute: u64,
    /// Tokens (prompt + completion) settled in the current UTC minute.
    pub(crate) tokens_this_minute: u64,
    /// Requests (streams included) not finished yet.
    pub(crate) in_flight: u64,
    /// Spend in the current budget window (the key's, else the calendar month), USD.
    pub(crate) spend_usd: f64,
}

/// Milliseconds since the epoch by this process's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The spend window of a key: its budget's, else the calendar month.
fn window_of(limits: &KeyLimits) -> (String, Option<u64>) {
    let window = limits.budget.map_or(BudgetWindow::Month, |b| b.window);
    let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
    budget_window(window, now)
}

impl SharedState {
    /// The backend `config` names. Nothing connects yet (see [`SharedState::run`]).
    pub(crate) fn new(config: &StateConfig) -> anyhow::Result<Arc<SharedState>> {
        Ok(Arc::new(match config.backend {
            StateBackendKind::Memory => SharedState::Memory(MemoryState::default()),
            StateBackendKind::Redis => SharedState::Redis(Box::new(RedisState::new(config)?)),
        }))
    }

    /// `memory` or `redis`.
    pub(crate) fn backend(&self) -> StateBackendKind {
        match self {
            SharedState::Memory(_) => StateBackendKind::Memory,
            SharedState::Redis(_) => StateBackendKind::Redis,
        }
    }

    /// Whether the backend answers (the memory one always does).
    pub(crate) fn is_up(&self) -> bool {
        match self {
            SharedState::Memory(_) => true,
            SharedState::Redis(redis) => redis.is_up(),
        }
    }

    /// The config this backend was built from (for reloads: a change needs a restart).
    pub(crate) fn same_config(&self, config: &StateConfig) -> bool {
        match self {
            SharedState::Memory(_) => config.backend == StateBackendKind::Memory,
            SharedState::Redis(redis) => redis.config() == config,
        }
    }

    /// Admits a request of key `name` reserving `estimate` tokens, or refuses it having
    /// changed nothing.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        name: &Arc<str>,
        limits: &KeyLimits,
        estimate: u64,
    ) -> Admission {
        let window = window_of(limits);
        let reserved = if limits.tpm.is_some() { estimate } else { 0 };
        let (headers, slot) = match &**self {
            SharedState::Memory(memory) => {
                let ask = Ask {
                    estimate: reserved,
                    now_ms: now_ms(),
                    window: &window,
                };
                match memory.admit(name, limits, &ask) {
                    Ok(headers) => (headers, None),
                    Err(refusal) => return Admission::Refused(refusal),
                }
            }
            // Boxed: Redis's round trip is most of this future's size, and the memory
            // backend has none.
            SharedState::Redis(redis) => {
                match Box::pin(redis.admit(name, limits, reserved, &window)).await {
                    Ok(Ok(admitted)) => admitted,
                    Ok(Err(refusal)) => return Admission::Refused(refusal),
                    Err(()) => match redis.config().on_error {
                        OnStateError::Deny => return Admission::Unavailable,
                        // Served without limits; nothing to settle.
                        OnStateError::Allow => return Admission::Unlimited,
                    },
                }
            }
        };
        Admission::Admitted(Ticket {
            state: self.clone(),
            key: name.clone(),
            slot,
            settlement: Settlement {
                tpm: limits.tpm,
                reserved,
                used: 0,
                spend_nano: 0,
                window,
            },
            headers,
            settled: false,
        })
    }

    /// The usage of each key, in order; `None` where it cannot be read now.
    pub(crate) async fn usage(&self, keys: &[(&str, &KeyLimits)]) -> Vec<Option<UsageView>> {
        match self {
            SharedState::Memory(memory) => keys
                .iter()
                .map(|(name, limits)| {
                    let (window, _) = window_of(limits);
                    Some(memory.usage(name, &window, now_ms()))
                })
                .collect(),
            SharedState::Redis(redis) => {
                let windows: Vec<String> = keys.iter().map(|(_, l)| window_of(l).0).collect();
                redis.usage(keys, &windows).await
            }
        }
    }

    /// Keeps only the named keys' in-process state (after a reload).
    pub(crate) fn retain(&self, names: &[String]) {
        if let SharedState::Memory(memory) = self {
            memory.retain(names);
        }
    }

    /// Whether the response cache lives here (else in the process's own store).
    pub(crate) fn holds_cache(&self) -> bool {
        matches!(self, SharedState::Redis(_))
    }

    /// The cached answer under `key`, if any (a backend that cannot answer: none).
    pub(crate) async fn cache_get(&self, key: &[u8]) -> Option<Arc<Cached>> {
        match self {
            SharedState::Memory(_) => None,
            SharedState::Redis(redis) => redis.cache_get(key).await,
        }
    }

    /// Stores an answer for `ttl` (in the background).
    pub(crate) fn cache_put(&self, key: Vec<u8>, cached: &Cached, ttl: Duration) {
        if let SharedState::Redis(redis) = self {
            redis.cache_put(key, cached, ttl);
        }
    }

    /// The backend's background work, for as long as the server runs: with Redis,
    /// connecting and reconnecting, watching its health, writing settlements and renewing
    /// leases. Never ends.
    pub(crate) async fn run(self: Arc<Self>) {
        match &*self {
            SharedState::Memory(_) => std::future::pending().await,
            SharedState::Redis(redis) => redis.run().await,
        }
    }

    /// Writes what is queued (at shutdown), for at most `within`.
    pub(crate) async fn flush(&self, within: Duration) {
        if let SharedState::Redis(redis) = self {
            let _ = tokio::time::timeout(within, redis.flush()).await;
        }
    }
}

/// For the benchmark: one admission and settlement of a key with rpm, tpm and a budget on
/// the memory backend (the work a limited request adds in one process).
#[doc(hidden)]
pub fn bench_memory_admission() {
    static STATE: std::sync::OnceLock<Arc<SharedState>> = std::sync::OnceLock::new();
    static KEY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    let state = STATE.get_or_init(|| Arc::new(SharedState::Memory(MemoryState::default())));
    let key = KEY.get_or_init(|| Arc::from("team-a"));
    let limits = KeyLimits {
        rpm: Some(1_000_000_000),
        tpm: Some(1_000_000_000_000),
        max_concurrent: Some(1_000_000),
        budget: Some(crate::config::Budget {
            usd: 1e9,
            nano_usd: u64::MAX,
            window: BudgetWindow::Month,
        }),
    };
    let admitted = futures_util::FutureExt::now_or_never(state.admit(key, &limits, 100));
    if let Some(Admission::Admitted(ticket)) = admitted {
        ticket.settle(120, 1_000);
    }
}
