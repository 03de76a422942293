//! The built-in `echo` provider: offline and deterministic, for demos, SDK tests and load
//! tests. The answer is the text of the last user message (text parts joined by a space), cut
//! to `max_completion_tokens` / `max_tokens` words; a stream sends it word by word (each
//! piece after the first starts with the whitespace before its word, so the deltas concatenate
//! to the content exactly); `n` choices are identical; usage counts whitespace-separated words
//! (prompt: the text of every message; completion: the answer); `finish_reason` is `length`
//! when cut, else `stop`.

use async_trait::async_trait;
use futures_util::stream;

use super::{CallCx, ChunkStream, Prepared, Provider, Unsupported};
use crate::error::ProviderError;
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, ResponseMessage, Role, Usage,
};
use crate::stream::normalize::{completion_id, unix_now};

/// The echo provider.
pub struct EchoProvider;

/// The answer to a request and whether it was cut.
struct Answer {
    content: String,
    cut: bool,
}

impl Answer {
    fn of(request: &ChatRequest) -> Answer {
        let text = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text())
            .unwrap_or_default();
        let limit = request.token_limit().and_then(|l| usize::try_from(l).ok());
        match limit.and_then(|l| word_ends(&text).nth(l.checked_sub(1)?)) {
            Some(end) if !text[end..].trim().is_empty() => Answer {
                content: text[..end].to_owned(),
                cut: true,
            },
            _ => Answer {
                content: text,
                cut: false,
            },
        }
    }

    fn finish_reason(&self) -> String {
        if self.cut { "length" } else { "stop" }.to_owned()
    }

    /// The content in pieces of one word each, with the whitespace before each word.
    fn pieces(&self) -> Vec<&str> {
        let text = self.content.as_str();
        let mut ends: Vec<usize> = word_ends(text).collect();
        match ends.last_mut() {
            // Trailing whitespace belongs to the last piece.
            Some(last) => *last = text.len(),
            None => return vec![text],
        }
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let piece = &text[start..end];
                start = end;
                piece
            })
            .collect()
    }

    fn usage(&self, request: &ChatRequest) -> Usage {
        let prompt: usize = request
            .messages
            .iter()
            .map(|m| count_words(&m.text()))
            .sum();
        let completion = count_words(&self.content);
        Usage {
            prompt_tokens: prompt as u64,
            completion_tokens: completion as u64,
            total_tokens: (prompt + completion) as u64,
            ..Usage::default()
        }
    }
}

/// Byte offsets just past each whitespace-separated word.
fn word_ends(text: &str) -> impl Iterator<Item = usize> + '_ {
    let mut in_word = false;
    text.char_indices()
        .chain(std::iter::once((text.len(), ' ')))
        .filter_map(move |(i, c)| {
            let was = in_word;
            in_word = !c.is_whitespace();
            (was && !in_word).then_some(i)
        })
}

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn choices_count(request: &ChatRequest) -> u32 {
    request.n.unwrap_or(1).max(1)
}

fn chunk(cx: &CallCx, id: &str, created: i64, choices: Vec<ChunkChoice>) -> ChatChunk {
    ChatChunk {
        id: id.to_owned(),
        object: "chat.completion.chunk".to_owned(),
        created,
        model: cx.upstream_model.clone(),
        choices,
        ..ChatChunk::default()
    }
}

#[async_trait]
impl Provider for EchoProvider {
    /// Echo reads the canonical request itself and takes every field (it ignores most).
    fn prepare(&self, _request: &ChatRequest, _cx: &CallCx) -> Result<Prepared, Unsupported> {
        Ok(Prepared::default())
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        _prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<ChatResponse, ProviderError> {
        let answer = Answer::of(request);
        let choices = (0..choices_count(request))
            .map(|index| Choice {
                index,
                message: ResponseMessage {
                    role: "assistant".to_owned(),
                    content: Some(answer.content.clone()),
                    ..ResponseMessage::default()
                },
                finish_reason: Some(answer.finish_reason()),
                ..Choice::default()
            })
            .collect();
        Ok(ChatResponse {
            id: completion_id(),
            object: "chat.completion".to_owned(),
            created: unix_now(),
            model: cx.upstream_model.clone(),
            choices,
            usage: Some(answer.usage(request)),
            ..ChatResponse::default()
        })
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        _prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<ChunkStream, ProviderError> {
        let answer = Answer::of(request);
        let (id, created, n) = (completion_id(), unix_now(), choices_count(request));
        let mut chunks = Vec::new();
        for piece in answer.pieces() {
            for index in 0..n {
                let delta = Delta {
                    content: Some(piece.to_owned()),
                    ..Delta::default()
                };
                let choice = ChunkChoice {
                    index,
                    delta,
                    ..ChunkChoice::default()
                };
                chunks.push(chunk(cx, &id, created, vec![choice]));
            }
        }
        let finals = (0..n)
            .map(|index| ChunkChoice {
                index,
                finish_reason: Some(answer.finish_reason()),
                ..ChunkChoice::default()
            })
            .collect();
        chunks.push(chunk(cx, &id, created, finals));
        let mut usage = chunk(cx, &id, created, Vec::new());
        usage.usage = Some(answer.usage(request));
        chunks.push(usage);
        Ok(Box::pin(stream::iter(chunks.into_iter().map(Ok))))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;

    fn request(body: serde_json::Value) -> ChatRequest {
        crate::schema::parse_and_validate(body.to_string().as_bytes()).unwrap()
    }

    fn cx() -> CallCx {
        CallCx {
            upstream_model: "x".into(),
            ..CallCx::default()
        }
    }

    #[tokio::test]
    async fn answers_with_the_last_user_message() {
        let r = request(json!({"model": "echo/x", "n": 2, "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "big world"}]}
        ]}));
        let response = EchoProvider
            .chat(&r, &Prepared::default(), &cx())
            .await
            .unwrap();
        assert_eq!(response.choices.len(), 2);
        assert_eq!(
            response.choices[1].message.content.as_deref(),
            Some("hello big world")
        );
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some("stop"));
        let usage = response.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (7, 3, 10)
        );
    }

    #[tokio::test]
    async fn cuts_to_the_token_limit() {
        let r = request(json!({"model": "echo/x", "max_tokens": 2,
            "messages": [{"role": "user", "content": "one  two three"}]}));
        let response = EchoProvider
            .chat(&r, &Prepared::default(), &cx())
            .await
            .unwrap();
        assert_eq!(
            response.choices[0].message.content.as_deref(),
            Some("one  two")
        );
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some("length"));
        let r = request(json!({"model": "echo/x", "max_completion_tokens": 3,
            "messages": [{"role": "user", "content": "one two three "}]}));
        let response = EchoProvider
            .chat(&r, &Prepared::default(), &cx())
            .await
            .unwrap();
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn stream_deltas_concatenate_to_the_content() {
        for text in ["  hello   big\nworld  ", "one", "", "émoji 😀 ok"] {
            let r = request(json!({"model": "echo/x", "stream": true,
                "messages": [{"role": "user", "content": text}]}));
            let chunks: Vec<_> = EchoProvider
                .chat_stream(&r, &Prepared::default(), &cx())
                .await
                .unwrap()
                .collect()
                .await;
            let content: String = chunks
                .iter()
                .filter_map(|c| c.as_ref().unwrap().choices.first())
                .filter_map(|c| c.delta.content.clone())
                .collect();
            assert_eq!(content, text);
            let words = chunks.len() - 2;
            assert_eq!(words, count_words(text).max(1), "{text:?}");
        }
    }
}
