//! Model discovery: an `openai`-kind provider with `discover_models = true` has its upstream's
//! `GET {base_url}/models` listed in `/v1/models` as `<provider>/<id>`.
//!
//! One background task per discovering provider asks at start and then every [`INTERVAL`],
//! with the provider's key and headers. Each answer is bounded: [`FETCH_TIMEOUT`] (or the
//! provider's `timeout_ms` when shorter), [`MAX_BODY_BYTES`], at most
//! [`MAX_PROVIDER_MODELS`] ids of at most [`crate::config::MAX_MODEL_ID_BYTES`] bytes each
//! (invalid entries are left out). A failed, late, oversize or unreadable answer changes
//! nothing: the last good list stays, and one warning names the provider and why (never the
//! key, nor the URL's userinfo).
//!
//! The tasks run inside the server (`Discovery::run`) and stop with it. A config reload
//! restarts them (so a reload also fetches every list again at once): a removed provider's
//! task and list go, an added provider's task starts, and a provider whose `base_url` changed
//! starts over with an empty list.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{HeaderValue, Method, header};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::client::{self, Client, Endpoint};
use super::http;
use crate::config::{MAX_PROVIDER_MODELS, ProviderConfig, model_id_problem};

/// How often each list is fetched again.
pub(crate) const INTERVAL: Duration = Duration::from_secs(600);
/// The longest one fetch may take, answer included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How much of a parser's message a warning quotes.
const MAX_REASON_CHARS: usize = 200;

/// The discovered lists of every discovering provider, for the process's life (config
/// generations come and go; the lists outlive them).
#[derive(Default)]
pub(crate) struct Discovery {
    /// By provider name; replaced whole (by [`Discovery::run`] only) when tasks restart.
    slots: ArcSwap<BTreeMap<String, Arc<Slot>>>,
    /// Wakes [`Discovery::run`]: the config changed.
    changed: Notify,
}

/// One provider's list: written by its task, read by `/v1/models`.
struct Slot {
    /// The `base_url` the list came from (a new one starts over).
    base_url: String,
    /// The last good list: sorted, without duplicates.
    models: ArcSwap<Vec<String>>,
}

impl Discovery {
    /// The last list `provider`'s upstream gave (empty before the first good answer, or when
    /// the provider does not discover).
    pub(crate) fn models(&self, provider: &str) -> Arc<Vec<String>> {
        match self.slots.load().get(provider) {
            Some(slot) => slot.models.load_full(),
            None => Arc::default(),
        }
    }

    /// Tells [`Discovery::run`] that the config changed (after a reload swapped it in).
    pub(crate) fn config_changed(&self) {
        self.changed.notify_one();
    }

    /// Keeps one task per discovering provider of `providers()` (read again after each
    /// [`Discovery::config_changed`]) until dropped, which stops them all.
    pub(crate) async fn run(&self, providers: impl Fn() -> BTreeMap<String, ProviderConfig>) {
        let mut tasks = JoinSet::new();
        loop {
            tasks = self.restart(&providers(), tasks);
            self.changed.notified().await;
        }
    }

    /// Stops `previous` and starts a task for every discovering provider in `providers`,
    /// keeping the lists of those whose `base_url` is unchanged.
    fn restart(
        &self,
        providers: &BTreeMap<String, ProviderConfig>,
        previous: JoinSet<()>,
    ) -> JoinSet<()> {
        // Dropping a JoinSet aborts its tasks.
        drop(previous);
        let old = self.slots.load_full();
        let mut slots = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for (name, config) in providers.iter().filter(|(_, c)| c.discover_models) {
            // An aborted task that was already storing may still store once: into a slot
            // of the same upstream (harmless), or into one no longer listed (unseen).
            let slot = match old.get(name) {
                Some(slot) if slot.base_url == config.base_url => Arc::clone(slot),
                _ => Arc::new(Slot {
                    base_url: config.base_url.clone(),
                    models: ArcSwap::default(),
                }),
            };
            slots.insert(name.clone(), Arc::clone(&slot));
            match Fetcher::new(name, config) {
                Ok(fetcher) => {
                    tasks.spawn(every(INTERVAL, move || {
                        let (fetcher, slot) = (fetcher.clone(), Arc::clone(&slot));
                        async move { fetcher.refresh(&slot).await }
                    }));
                }
                Err(error) => {
                    tracing::warn!(provider = %name, %error, "model discovery cannot start");
                }
            }
        }
        self.slots.store(Arc::new(slots));
        tasks
    }
}

/// Runs `work` now and then `interval` after each run ends, for ever.
async fn every<F, Fut>(interval: Duration, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        work().await;
        tokio::time::sleep(interval).await;
    }
}

/// Fetches one provider's list.
#[derive(Clone)]
struct Fetcher {
    provider: Arc<str>,
    client: Client,
    /// `{base_url}/models`.
    url: Arc<Endpoint>,
    /// The same without userinfo or query, for the log.
    shown_url: Arc<str>,
    timeout: Duration,
}

impl Fetcher {
    fn new(name: &str, config: &ProviderConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(&format!("{}/models", config.base_url))?;
        Ok(Fetcher {
            provider: Arc::from(name),
            client: Client::for_provider(config)?,
            shown_url: Arc::from(http::shown_url(&url)),
            url: Arc::new(Endpoint::new(url.as_str())?),
            timeout: config.timeout.min(FETCH_TIMEOUT),
        })
    }

    /// Fetches the list into `slot`, or logs why not and leaves the last one.
    async fn refresh(&self, slot: &Slot) {
        match self.fetch().await {
            Ok(listing) => {
                let changed = **slot.models.load() != listing.ids;
                if changed || listing.left_out() > 0 {
                    tracing::info!(provider = %self.provider, models = listing.ids.len(),
                        invalid = listing.invalid, over_limit = listing.over_limit,
                        "models discovered");
                }
                slot.models.store(Arc::new(listing.ids));
            }
            Err(reason) => {
                tracing::warn!(provider = %self.provider, url = %self.shown_url, error = %reason,
                    "model discovery failed; the last list stays");
            }
        }
    }

    /// One bounded `GET {base_url}/models`.
    async fn fetch(&self) -> Result<Listing, String> {
        match tokio::time::timeout(self.timeout, self.get()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no complete answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    async fn get(&self) -> Result<Listing, String> {
        let transport = |error: client::Error| {
            format!(
                "{} ({})",
                client::failure_kind(error.as_ref()),
                client::cause_chain(error.as_ref())
            )
        };
        let mut request = self.client.request(Method::GET, &self.url, Bytes::new());
        let headers = request.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = self.client.send(request).await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            // The body is not quoted: some upstreams repeat (part of) the key in it.
            return Err(format!("status {}", status.as_u16()));
        }
        let body = client::read_at_most(response, MAX_BODY_BYTES)
            .await
            .map_err(transport)?
            .ok_or_else(|| format!("the answer is larger than {MAX_BODY_BYTES} bytes"))?;
        parse_model_list(&body)
    }
}

/// A parsed model list.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The valid ids, sorted, without duplicates.
    pub(crate) ids: Vec<String>,
    /// Entries left out as invalid (not an object with a string `id` that is a valid
    /// model name).
    pub(crate) invalid: usize,
    /// Valid entries left out after the first [`MAX_PROVIDER_MODELS`].
    pub(crate) over_limit: usize,
}

impl Listing {
    fn left_out(&self) -> usize {
        self.invalid.saturating_add(self.over_limit)
    }
}

/// Parses OpenAI's list shape, `{"object":"list","data":[{"id":"...", ...}, ...]}`: the
/// document must be an object with a `data` array (and `object`, when present, `"list"`);
/// entries that are not objects with a valid string `id` are left out and counted. Memory
/// stays within a small multiple of the body: nothing but the kept ids is stored.
pub(crate) fn parse_model_list(body: &[u8]) -> Result<Listing, String> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        match text.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("not a model list: {}...", &text[..cut]),
            None => format!("not a model list: {text}"),
        }
    })?;
    if envelope.object.as_deref().is_some_and(|o| o != "list") {
        return Err("not a model list: `object` is not \"list\"".to_owned());
    }
    let mut listing = envelope.data;
    listing.ids.sort_unstable();
    listing.ids.dedup();
    Ok(listing)
}

/// The document; other fields are ignored.
#[derive(Deserialize)]
struct Envelope {
    object: Option<String>,
    data: Listing,
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(DataVisitor)
    }
}

/// Reads the `data` array entry by entry, keeping only valid ids.
struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Listing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of models")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listing, A::Error> {
        let mut listing = Listing::default();
        while let Some(Lenient(id)) = seq.next_element_seed(Lenient(Want::Entry))? {
            match id {
                Some(id) if model_id_problem(&id).is_some() => listing.invalid += 1,
                Some(_) if listing.ids.len() >= MAX_PROVIDER_MODELS => listing.over_limit += 1,
                Some(id) => listing.ids.push(id),
                None => listing.invalid += 1,
            }
        }
        Ok(listing)
    }
}

/// What a [`Lenient`] value yields when it has the expected shape.
#[derive(Clone, Copy)]
enum Want {
    /// An entry: an object whose `id` is a string (given once).
    Entry,
    /// A string.
    Str,
}

/// Reads any JSON value, yielding `Some(text)` when it has the wanted shape and `None`
/// otherwise (nested values are skipped without being stored). Used as the seed and as the
/// result.
struct Lenient<T>(T);

impl<'de> de::DeserializeSeed<'de> for Lenient<Want> {
    type Value = Lenient<Option<String>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self).map(Lenient)
    }
}

impl<'de> Visitor<'de> for Lenient<Want> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Str).then(|| value.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        let mut ids = 0usize;
        while let Some(key) = map.next_key::<Key>()? {
            if matches!((self.0, key), (Want::Entry, Key::Id)) {
                ids = ids.saturating_add(1);
                id = map.next_value_seed(Lenient(Want::Str))?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        // A second `id` makes the entry ambiguous.
        Ok(if ids == 1 { id } else { None })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key: `id` or any other (not stored).
#[derive(Clone, Copy)]
enum Key {
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(if key == "id" { Key::Id } else { Key::Other })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

#[cfg(test)]
mod tests;
