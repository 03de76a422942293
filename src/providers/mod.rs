//! Upstream adapters: the `Provider` trait and one module per provider kind.
//!
//! An adapter translates the canonical request into its provider's dialect and the provider's
//! answers back into canonical responses and chunks. Adapters never import each other; the
//! OpenAI-shaped plumbing they share (send, status to [`ProviderError`], open an event stream)
//! lives in [`http`]. Normalizing ids, roles and usage for the client is not an adapter's job
//! (see [`crate::stream::normalize`]).

pub mod atoma;
#[doc(hidden)] // public for the fuzz targets
pub mod client;
pub(crate) mod discover;
pub(crate) mod echo;
pub mod http;
pub mod nugen;
pub mod openai;
pub mod orq;
mod translate;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::Stream;

use crate::config::{ProviderConfig, ProviderKind, ServerConfig};
use crate::error::ProviderError;
use crate::schema::{ChatChunk, ChatRequest, ChatResponse};
use crate::stream::splice::{AnswerInShape, InShape};

/// The chunks of one upstream stream. Item errors are failures after the stream opened. A
/// chunk without choices and usage is a sign of life (bytes arrived, no event yet): it sends
/// nothing but keeps the stream from counting as idle.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamItem, ProviderError>> + Send>>;

/// One chunk of an upstream stream.
#[derive(Debug)]
pub(crate) enum StreamItem {
    /// A parsed chunk (boxed: it is several times an in-shape chunk's size, and every chunk
    /// is moved through the stream's layers).
    Parsed(Box<ChatChunk>),
    /// An OpenAI-shaped chunk already in the contract's shape, still as the upstream's text
    /// (the stream's fast path).
    InShape(InShape),
}

/// An upstream's whole answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A parsed answer.
    Parsed(ChatResponse),
    /// An answer already in the contract's shape, still as the upstream's text (the fast
    /// path).
    InShape(AnswerInShape),
}

impl Answer {
    /// The answer, parsed.
    pub(crate) fn into_parsed(self) -> Result<ChatResponse, ProviderError> {
        match self {
            Answer::Parsed(response) => Ok(response),
            Answer::InShape(answer) => answer.parse(),
        }
    }
}

impl From<ChatResponse> for Answer {
    fn from(response: ChatResponse) -> Self {
        Answer::Parsed(response)
    }
}

impl StreamItem {
    /// The chunk, parsed.
    pub(crate) fn into_parsed(self) -> Result<ChatChunk, ProviderError> {
        match self {
            StreamItem::Parsed(chunk) => Ok(*chunk),
            StreamItem::InShape(chunk) => chunk.parse(),
        }
    }
}

impl From<ChatChunk> for StreamItem {
    fn from(chunk: ChatChunk) -> Self {
        StreamItem::Parsed(Box::new(chunk))
    }
}

/// What one call needs besides the request.
#[derive(Debug, Clone, Default)]
pub struct CallCx {
    /// The model name to ask the upstream for.
    pub upstream_model: String,
    /// The client's `X-Session-ID`, if any.
    pub session_id: Option<String>,
    /// The gateway's request id, sent upstream as `x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// The request's trace, for the upstream `traceparent`.
    pub trace: crate::telemetry::TraceParent,
}

/// A request translated for one provider, ready to send (and to send again on a retry).
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The JSON body (empty for the echo provider, which reads the request itself).
    pub(crate) body: Bytes,
    /// Headers this request adds (e.g. Nugen's `X-Session-ID`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// Request fields the provider cannot take and that were left out, by path; named in
    /// `x-llmgate-dropped-params` (or a 400 when the provider has `strict_params`).
    pub(crate) dropped: Vec<String>,
}

/// A request the provider cannot take in any form (a role, a content part kind ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The offending field's path, e.g. `messages[2].role`.
    pub(crate) param: String,
    /// A sentence naming the provider and the field.
    pub(crate) message: String,
}

/// One upstream provider.
#[async_trait]
pub(crate) trait Provider: Send + Sync + 'static {
    /// Translates `request` into this provider's dialect.
    fn prepare(&self, request: &ChatRequest, cx: &CallCx) -> Result<Prepared, Unsupported>;

    /// A whole completion.
    async fn chat(
        &self,
        request: &ChatRequest,
        prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<Answer, ProviderError>;

    /// Opens a stream. `Err`: it could not be opened (connect, non-2xx status) and is safe to
    /// retry or fall back from.
    async fn chat_stream(
        &self,
        request: &ChatRequest,
        prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<ChunkStream, ProviderError>;
}

/// A new adapter for the provider `name`.
fn adapter(
    name: &str,
    config: &ProviderConfig,
    limits: http::Limits,
) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(match config.kind {
        ProviderKind::Echo => Arc::new(echo::EchoProvider),
        ProviderKind::OpenAi => Arc::new(http::HttpProvider::new(
            name,
            config,
            limits,
            openai::OpenAi,
        )?),
        ProviderKind::Nugen => {
            Arc::new(http::HttpProvider::new(name, config, limits, nugen::Nugen)?)
        }
        ProviderKind::Atoma => {
            Arc::new(http::HttpProvider::new(name, config, limits, atoma::Atoma)?)
        }
        ProviderKind::Orq => Arc::new(http::HttpProvider::new(name, config, limits, orq::Orq)?),
    })
}

/// A configured provider: its adapter and the settings routing needs.
#[derive(Clone)]
pub(crate) struct ProviderHandle {
    /// The provider's name in the config (`[providers.<name>]`).
    pub(crate) name: String,
    /// The adapter.
    pub(crate) adapter: Arc<dyn Provider>,
    /// The configuration it was built from.
    pub(crate) config: ProviderConfig,
}

/// Every configured provider, by name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    /// Shared, so a route's candidates hold a provider without copying its config.
    providers: BTreeMap<String, Arc<ProviderHandle>>,
}

impl Registry {
    /// Builds an adapter for every configured provider, within the `[server]` limits.
    #[cfg(test)]
    pub(crate) fn build(
        configs: &BTreeMap<String, ProviderConfig>,
        server: &ServerConfig,
    ) -> anyhow::Result<Self> {
        Self::build_reusing(configs, server, None)
    }

    /// Like [`Registry::build`], reusing the adapters of `previous` (and so their connection
    /// pools) whose provider and limits are unchanged.
    pub(crate) fn build_reusing(
        configs: &BTreeMap<String, ProviderConfig>,
        server: &ServerConfig,
        previous: Option<(&Registry, &ServerConfig)>,
    ) -> anyhow::Result<Self> {
        let limits = http::Limits::of(server);
        let mut providers = BTreeMap::new();
        for (name, config) in configs {
            let reusable = previous.and_then(|(registry, old_server)| {
                let old = registry.get(name)?;
                (old.config == *config && http::Limits::of(old_server) == limits)
                    .then(|| old.adapter.clone())
            });
            let adapter = match reusable {
                Some(adapter) => adapter,
                None => adapter(name, config, limits)?,
            };
            let handle = ProviderHandle {
                name: name.clone(),
                adapter,
                config: config.clone(),
            };
            providers.insert(name.clone(), Arc::new(handle));
        }
        Ok(Registry { providers })
    }

    /// A registry of ready-made providers (test doubles).
    #[cfg(test)]
    pub(crate) fn from_handles(handles: impl IntoIterator<Item = ProviderHandle>) -> Self {
        let providers = (handles.into_iter())
            .map(|h| (h.name.clone(), Arc::new(h)))
            .collect();
        Registry { providers }
    }

    /// The provider called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ProviderHandle>> {
        self.providers.get(name)
    }

    /// Every provider, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &ProviderHandle> {
        self.providers.values().map(Arc::as_ref)
    }
}
