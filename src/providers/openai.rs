//! The `openai` adapter: OpenAI itself and any OpenAI-compatible server (vLLM, llama.cpp,
//! Ollama ...) by `base_url`. The canonical request *is* OpenAI's, so the body is forwarded as
//! is, with three per-call fields set here:
//!
//! | field | sent |
//! |---|---|
//! | `model` | the route's upstream model name |
//! | `stream` | `true` for streams, absent otherwise |
//! | `stream_options` | the client's, with `include_usage: true` always (the gateway needs usage; the normalizer drops it when the client did not ask) |
//! | routing policy (`retry`, `fallbacks`, ...) | never (consumed by the gateway) |
//! | unknown fields | as sent |

use async_trait::async_trait;
use serde::Serialize;

use super::http::{Upstream, chunk_stream, openai_event, read_json};
use super::{CallCx, ChunkStream, Provider};
use crate::config::ProviderConfig;
use crate::error::ProviderError;
use crate::schema::{ChatRequest, ChatResponse, StreamOptions};

/// Talks to an OpenAI-compatible `/chat/completions`.
pub struct OpenAiProvider {
    upstream: Upstream,
}

impl OpenAiProvider {
    /// An adapter for `config`.
    pub fn new(config: &ProviderConfig) -> anyhow::Result<Self> {
        Ok(OpenAiProvider {
            upstream: Upstream::new(config)?,
        })
    }
}

/// The wire body: the canonical request plus the per-call fields.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(flatten)]
    request: &'a ChatRequest,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

fn stream_options_with_usage(request: &ChatRequest) -> StreamOptions {
    let extra = request
        .stream_options
        .as_ref()
        .map(|o| o.extra.clone())
        .unwrap_or_default();
    StreamOptions {
        include_usage: Some(true),
        extra,
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(
        &self,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<ChatResponse, ProviderError> {
        let body = Body {
            model: &cx.upstream_model,
            request,
            stream: false,
            stream_options: None,
        };
        let response = self.upstream.post(&body, cx, &[]).await?;
        read_json(response).await
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<ChunkStream, ProviderError> {
        let body = Body {
            model: &cx.upstream_model,
            request,
            stream: true,
            stream_options: Some(stream_options_with_usage(request)),
        };
        let response = self.upstream.post(&body, cx, &[]).await?;
        Ok(chunk_stream(response, openai_event))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_body_carries_model_stream_and_usage_but_no_policy() {
        let request = crate::schema::parse_request(
            json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                "stream": true, "stream_options": {"include_usage": false, "x": 1},
                "retry": {"count": 2}, "vendor_field": true})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let body = Body {
            model: "gpt-4o",
            request: &request,
            stream: true,
            stream_options: Some(stream_options_with_usage(&request)),
        };
        let wire = serde_json::to_value(&body).unwrap();
        assert_eq!(wire["model"], "gpt-4o");
        assert_eq!(wire["stream"], true);
        assert_eq!(
            wire["stream_options"],
            json!({"include_usage": true, "x": 1})
        );
        assert_eq!(wire["vendor_field"], true);
        assert!(wire.get("retry").is_none());
    }
}
