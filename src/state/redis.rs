//! The Redis backend: every check-and-update is one Lua script (`lua/`), run atomically by
//! Redis on its own clock, so replicas sharing a Redis enforce one limit.
//!
//! The connection is `redis`'s `ConnectionManager` (one multiplexed connection that
//! pipelines concurrent calls and reconnects by itself), made when the server starts
//! ([`RedisState::run`]). Every call is bounded by `timeout_ms`; while Redis is down calls
//! fail at once (no request waits on a dead server) and a health check every second notices
//! when it is back, logging each transition once. Admission is the only call on the request
//! path; settlements, slot releases and cache writes are queued (bounded) to the background
//! writer, which sends them in pipelined batches and renews the leases of running requests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::limits::{BucketView, Limit, RateHeaders, Refusal, retry_secs};
use super::{Settlement, UsageView};
use crate::cache::Cached;
use crate::config::{KeyLimits, StateConfig};
use crate::schema::ChatResponse;

/// Writes waiting for the background writer, at most.
const QUEUE_CAPACITY: usize = 65_536;
/// Writes sent in one pipeline, at most.
const BATCH: usize = 512;
/// Slot members renewed in one script call, at most.
const RENEW_CHUNK: usize = 1024;
/// A cached answer read back larger than this is ignored.
const MAX_CACHED_BYTES: usize = 64 * 1024 * 1024;
/// How often the connection is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Whether Redis answers, as last seen.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A write for the background writer.
enum Write {
    Settle {
        key: Arc<str>,
        slot: Option<String>,
        settlement: Settlement,
    },
    CachePut {
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    },
}

/// `lua/<name>.lua` after the shared `lua/bucket.lua` (Redis's clock, the bucket arithmetic).
macro_rules! script {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("lua/bucket.lua"),
            include_str!(concat!("lua/", $name, ".lua"))
        ))
    };
}

/// The scripts, loaded into Redis on first use (and again after a Redis restart).
struct Scripts {
    admit: Script,
    settle: Script,
    renew: Script,
    usage: Script,
}

/// The Redis backend.
pub(crate) struct RedisState {
    config: StateConfig,
    client: redis::Client,
    /// Made by [`RedisState::run`] inside the runtime.
    conn: OnceLock<ConnectionManager>,
    health: AtomicU8,
    /// This process's id, part of its slot members.
    replica: String,
    next_slot: AtomicU64,
    /// Slots this replica holds, by key name: renewed until their requests end.
    held: Mutex<HashMap<Arc<str>, HashSet<String>>>,
    queue: mpsc::Sender<Write>,
    queued: tokio::sync::Mutex<mpsc::Receiver<Write>>,
    /// A write was dropped since the last successful batch (logged once).
    dropping: AtomicBool,
    scripts: Scripts,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisState {
    pub(crate) fn new(config: &StateConfig) -> anyhow::Result<Self> {
        let url = config
            .url
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("state.url is required with backend = \"redis\""))?;
        // The URL may hold a password: the error does not repeat it.
        let client = redis::Client::open(url.expose())
            .map_err(|_| anyhow::anyhow!("state.url: not a usable Redis URL"))?;
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        Ok(RedisState {
            config: config.clone(),
            client,
            conn: OnceLock::new(),
            health: AtomicU8::new(UNKNOWN),
            replica: format!("{:016x}", fastrand::u64(..)),
            next_slot: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            queue,
            queued: tokio::sync::Mutex::new(queued),
            dropping: AtomicBool::new(false),
            scripts: Scripts {
                admit: script!("admit"),
                settle: script!("settle"),
                renew: script!("renew"),
                usage: script!("usage"),
            },
        })
    }

    pub(crate) fn config(&self) -> &StateConfig {
        &self.config
    }

    pub(crate) fn is_up(&self) -> bool {
        self.health.load(Ordering::Relaxed) == UP
    }

    /// Notes whether Redis answered; logs and shows a change once.
    fn set_up(&self, up: bool, error: Option<&redis::RedisError>) {
        let new = if up { UP } else { DOWN };
        let old = self.health.swap(new, Ordering::Relaxed);
        if old == new {
            return;
        }
        crate::observe::state_backend_up(up);
        if up {
            tracing::info!(backend = "redis", "state backend up");
        } else {
            let on_error = match self.config.on_error {
                crate::config::OnStateError::Allow => "allow: serving without limits",
                crate::config::OnStateError::Deny => "deny: keyed requests get 503",
            };
            let error = error.map(ToString::to_string).unwrap_or_default();
            tracing::warn!(backend = "redis", %error, on_error, "state backend down");
        }
    }

    /// The connection, unless Redis is known to be down (then callers fail at once rather
    /// than each wait out the timeout; the health check notices when it is back).
    fn connection(&self) -> Option<ConnectionManager> {
        if self.health.load(Ordering::Relaxed) == DOWN {
            return None;
        }
        self.conn.get().cloned()
    }

    /// The Redis key of `suffix` for gateway key `name`. The name is length-prefixed (no
    /// name can end where another begins) and in braces, so one key's state shares a
    /// cluster hash slot.
    fn key(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}{{{}:{name}}}:{suffix}",
            self.config.key_prefix,
            name.len()
        )
    }

    /// Runs `call` bounded by the timeout; a failure marks Redis down.
    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ()> {
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                self.set_up(false, Some(&error));
                Err(())
            }
            Err(_) => {
                let error =
                    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
                self.set_up(false, Some(&error));
                Err(())
            }
        }
    }

    /// Admits a request: `Ok(Ok((headers, slot)))`, `Ok(Err(refusal))`, or `Err(())` when
    /// Redis cannot be asked.
    pub(crate) async fn admit(
        &self,
        name: &str,
        limits: &KeyLimits,
        reserved: u64,
        window: &(String, Option<u64>),
    ) -> Result<Result<(RateHeaders, Option<String>), Refusal>, ()> {
        let mut conn = self.connection().ok_or(())?;
        let minute = super::now_ms() / 60_000;
        let slot = format!(
            "{}:{}",
            self.replica,
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        );
        let budget = limits
            .budget
            .map_or(-1, |b| i64::try_from(b.nano_usd).unwrap_or(i64::MAX));
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.scripts.admit.prepare_invoke();
        invocation
            .key(self.key(name, "rpm"))
            .key(self.key(name, "tpm"))
            .key(self.key(name, "slots"))
            .key(self.key(name, &format!("requests:{minute}")))
            .key(self.key(name, &format!("spend:{}", window.0)))
            .arg(limits.rpm.unwrap_or(0))
            .arg(limits.tpm.unwrap_or(0))
            .arg(limits.max_concurrent.unwrap_or(0))
            .arg(budget)
            .arg(reserved)
            .arg(&slot)
            .arg(lease_ms);
        let answer: Vec<i64> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        let [
            code,
            requests_left,
            requests_reset,
            tokens_left,
            tokens_reset,
            retry_ms,
        ] = answer[..]
        else {
            return Err(());
        };
        let bucket = |limit: Option<u64>, left: i64, reset: i64| {
            limit.map(|limit| BucketView {
                limit,
                remaining: u64::try_from(left).unwrap_or(0),
                reset: Duration::from_millis(u64::try_from(reset).unwrap_or(0)),
            })
        };
        let headers = RateHeaders {
            requests: bucket(limits.rpm, requests_left, requests_reset),
            tokens: bucket(limits.tpm, tokens_left, tokens_reset),
        };
        if let Some(limit) = Limit::from_code(code) {
            let retry_after = match limit {
                Limit::Budget => window.1,
                _ => Some(retry_secs(u64::try_from(retry_ms).unwrap_or(0))),
            };
            return Ok(Err(Refusal {
                limit,
                retry_after,
                headers,
            }));
        }
        lock(&self.held)
            .entry(Arc::from(name))
            .or_default()
            .insert(slot.clone());
        Ok(Ok((headers, Some(slot))))
    }

    /// Queues a settlement (and the slot's release) for the writer.
    pub(crate) fn settle(&self, key: &Arc<str>, slot: Option<String>, settlement: Settlement) {
        if let Some(slot) = &slot {
            let mut held = lock(&self.held);
            if let Some(slots) = held.get_mut(key) {
                slots.remove(slot);
                if slots.is_empty() {
                    held.remove(key);
                }
            }
        }
        self.enqueue(Write::Settle {
            key: key.clone(),
            slot,
            settlement,
        });
    }

    fn enqueue(&self, write: Write) {
        if self.queue.try_send(write).is_err() && !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                backend = "redis",
                "state write queue full: dropping writes until it drains"
            );
        }
    }

    /// Each key's usage, read in one pipelined round trip.
    pub(crate) async fn usage(
        &self,
        keys: &[(&str, &KeyLimits)],
        windows: &[String],
    ) -> Vec<Option<UsageView>> {
        let Some(mut conn) = self.connection() else {
            return vec![None; keys.len()];
        };
        let minute = super::now_ms() / 60_000;
        let invocations: Vec<_> = keys
            .iter()
            .zip(windows)
            .map(|((name, _), window)| {
                let mut invocation = self.scripts.usage.prepare_invoke();
                invocation
                    .key(self.key(name, &format!("requests:{minute}")))
                    .key(self.key(name, &format!("tokens:{minute}")))
                    .key(self.key(name, "slots"))
                    .key(self.key(name, &format!("spend:{window}")));
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.usage).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let Ok(answers) = self
            .bounded(pipe.query_async::<Vec<Vec<i64>>>(&mut conn))
            .await
        else {
            return vec![None; keys.len()];
        };
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        answers
            .into_iter()
            .map(|answer| match answer[..] {
                [requests, tokens, in_flight, spend] => Some(UsageView {
                    requests_this_minute: count(requests),
                    tokens_this_minute: count(tokens),
                    in_flight: count(in_flight),
                    spend_usd: count(spend) as f64 / 1e9,
                }),
                _ => None,
            })
            .chain(std::iter::repeat(None))
            .take(keys.len())
            .collect()
    }

    fn cache_key(&self, key: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{}cache:{hex}", self.config.key_prefix)
    }

    /// The answer stored under `key`, if it is there and its whole key matches.
    pub(crate) async fn cache_get(&self, key: &[u8]) -> Option<Arc<Cached>> {
        let mut conn = self.connection()?;
        let mut get = redis::cmd("GET");
        get.arg(self.cache_key(key));
        let value: Option<Vec<u8>> = self.bounded(get.query_async(&mut conn)).await.ok()?;
        decode_cached(&value?, key).map(Arc::new)
    }

    /// Queues an answer to store for `ttl`.
    pub(crate) fn cache_put(&self, key: Vec<u8>, cached: &Cached, ttl: Duration) {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.enqueue(Write::CachePut {
            key: self.cache_key(&key),
            value: encode_cached(&key, cached),
            ttl_ms,
        });
    }

    /// Connects, then forever: checks health every second, writes queued batches, renews
    /// leases a few times per lease.
    pub(crate) async fn run(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            .set_response_timeout(Some(self.config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(conn) => self.conn.get_or_init(|| conn).clone(),
            Err(error) => {
                tracing::error!(backend = "redis", %error, "cannot set up the Redis connection");
                return std::future::pending().await;
            }
        };
        let mut queued = self.queued.lock().await;
        let mut health = tokio::time::interval(HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval((self.config.lease / 3).max(HEALTH_EVERY / 4));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = health.tick() => self.check(conn.clone()).await,
                _ = renew.tick() => self.renew(conn.clone()).await,
                Some(first) = queued.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match queued.try_recv() {
                            Ok(write) => batch.push(write),
                            Err(_) => break,
                        }
                    }
                    self.write(conn.clone(), batch).await;
                }
            }
        }
    }

    /// Writes whatever is queued now (at shutdown).
    pub(crate) async fn flush(&self) {
        let Some(conn) = self.conn.get().cloned() else {
            return;
        };
        let mut queued = self.queued.lock().await;
        let mut batch = Vec::new();
        while let Ok(write) = queued.try_recv() {
            batch.push(write);
            if batch.len() == BATCH {
                self.write(conn.clone(), std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.write(conn, batch).await;
        }
    }

    async fn check(&self, mut conn: ConnectionManager) {
        let ping = redis::cmd("PING");
        if self
            .bounded(ping.query_async::<Value>(&mut conn))
            .await
            .is_ok()
        {
            self.set_up(true, None);
        }
    }

    /// Sends one batch of writes in one pipeline. Writes are at most once: a batch that
    /// fails is dropped (limits are not enforced while Redis is down anyway, and a slot not
    /// released comes back when its lease ends).
    async fn write(&self, conn: ConnectionManager, batch: Vec<Write>) {
        if !self.is_up() {
            return;
        }
        let mut conn = conn;
        let invocations: Vec<_> = batch
            .iter()
            .filter_map(|write| match write {
                Write::Settle {
                    key,
                    slot,
                    settlement,
                } => Some(self.settle_invocation(key, slot.as_deref(), settlement)),
                Write::CachePut { .. } => None,
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.settle).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation).ignore();
        }
        for write in &batch {
            if let Write::CachePut { key, value, ttl_ms } = write {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(*ttl_ms)
                    .ignore();
            }
        }
        if self.bounded(pipe.exec_async(&mut conn)).await.is_ok() {
            self.dropping.store(false, Ordering::Relaxed);
        }
    }

    fn settle_invocation<'a>(
        &'a self,
        name: &str,
        slot: Option<&str>,
        settlement: &Settlement,
    ) -> redis::ScriptInvocation<'a> {
        let minute = super::now_ms() / 60_000;
        let (window, left) = &settlement.window;
        let mut invocation = self.scripts.settle.prepare_invoke();
        invocation
            .key(self.key(name, "tpm"))
            .key(self.key(name, &format!("tokens:{minute}")))
            .key(self.key(name, &format!("spend:{window}")))
            .key(self.key(name, "slots"))
            .arg(settlement.tpm.unwrap_or(0))
            .arg(settlement.reserved)
            .arg(settlement.used)
            .arg(i64::try_from(settlement.spend_nano).unwrap_or(i64::MAX))
            .arg(left.unwrap_or(0))
            .arg(slot.unwrap_or(""));
        invocation
    }

    /// Extends the leases of every slot this replica holds, one pipeline.
    async fn renew(&self, mut conn: ConnectionManager) {
        if !self.is_up() {
            return;
        }
        let held: Vec<(Arc<str>, Vec<String>)> = lock(&self.held)
            .iter()
            .map(|(key, slots)| (key.clone(), slots.iter().cloned().collect()))
            .collect();
        if held.is_empty() {
            return;
        }
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let invocations: Vec<_> = held
            .iter()
            .flat_map(|(key, slots)| {
                slots.chunks(RENEW_CHUNK).map(|chunk| {
                    let mut invocation = self.scripts.renew.prepare_invoke();
                    invocation.key(self.key(key, "slots")).arg(lease_ms);
                    for slot in chunk {
                        invocation.arg(slot);
                    }
                    invocation
                })
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.renew).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation).ignore();
        }
        let _ = self.bounded(pipe.exec_async(&mut conn)).await;
    }
}

/// A cached answer as stored in Redis: with its whole cache key, compared on read.
#[derive(Serialize, Deserialize)]
struct StoredAnswer {
    key: String,
    provider: String,
    upstream_model: String,
    response: ChatResponse,
}

fn encode_cached(key: &[u8], cached: &Cached) -> Vec<u8> {
    let stored = StoredAnswer {
        key: String::from_utf8_lossy(key).into_owned(),
        provider: cached.provider.clone(),
        upstream_model: cached.upstream_model.clone(),
        response: cached.response.clone(),
    };
    // Serializing plain data cannot fail.
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode_cached(value: &[u8], key: &[u8]) -> Option<Cached> {
    if value.len() > MAX_CACHED_BYTES {
        return None;
    }
    let stored: StoredAnswer = serde_json::from_slice(value).ok()?;
    (stored.key.as_bytes() == key).then_some(Cached {
        response: stored.response,
        provider: stored.provider,
        upstream_model: stored.upstream_model,
    })
}
