//! Upstream adapters: the [`Provider`] trait and one module per provider kind.
//!
//! An adapter translates the canonical request into its provider's dialect and the provider's
//! answers back into canonical responses and chunks. Adapters never import each other; the
//! OpenAI-shaped plumbing they share (send, status to [`ProviderError`], open an event stream)
//! lives in [`http`]. Normalizing ids, roles and usage for the client is not an adapter's job
//! (see [`crate::stream::normalize`]).

pub mod echo;
pub mod http;
pub mod openai;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Stream;

use crate::config::{ProviderConfig, ProviderKind};
use crate::error::ProviderError;
use crate::schema::{ChatChunk, ChatRequest, ChatResponse};

/// The chunks of one upstream stream. Item errors are failures after the stream opened.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ProviderError>> + Send>>;

/// What one call needs besides the request.
#[derive(Debug, Clone, Default)]
pub struct CallCx {
    /// The model name to ask the upstream for.
    pub upstream_model: String,
    /// The client's `X-Session-ID`, if any.
    pub session_id: Option<String>,
    /// The gateway's request id, sent upstream as `x-request-id`.
    pub request_id: String,
}

/// One upstream provider.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A whole completion.
    async fn chat(&self, request: &ChatRequest, cx: &CallCx)
    -> Result<ChatResponse, ProviderError>;

    /// Opens a stream. `Err`: it could not be opened (connect, non-2xx status) and is safe to
    /// retry or fall back from.
    async fn chat_stream(
        &self,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<ChunkStream, ProviderError>;
}

/// A configured provider: its adapter and the settings routing needs.
#[derive(Clone)]
pub struct ProviderHandle {
    /// The provider's name in the config (`[providers.<name>]`).
    pub name: String,
    /// The adapter.
    pub adapter: Arc<dyn Provider>,
    /// The configuration it was built from.
    pub config: ProviderConfig,
}

/// Every configured provider, by name.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<String, ProviderHandle>,
}

impl Registry {
    /// Builds an adapter for every configured provider.
    pub fn build(configs: &BTreeMap<String, ProviderConfig>) -> anyhow::Result<Self> {
        let mut providers = BTreeMap::new();
        for (name, config) in configs {
            let adapter: Arc<dyn Provider> = match config.kind {
                ProviderKind::Echo => Arc::new(echo::EchoProvider),
                ProviderKind::OpenAi => Arc::new(openai::OpenAiProvider::new(config)?),
                other => anyhow::bail!(
                    "providers.{name}.kind: the `{}` adapter is not available in this build",
                    other.as_str()
                ),
            };
            let handle = ProviderHandle {
                name: name.clone(),
                adapter,
                config: config.clone(),
            };
            providers.insert(name.clone(), handle);
        }
        Ok(Registry { providers })
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&ProviderHandle> {
        self.providers.get(name)
    }

    /// All providers, by name.
    pub fn iter(&self) -> impl Iterator<Item = &ProviderHandle> {
        self.providers.values()
    }
}
