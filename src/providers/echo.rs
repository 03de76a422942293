//! The built-in `echo` provider: offline and deterministic, for demos, SDK tests and load
//! tests. The answer is the text of the last user message (text parts joined by a space), cut
//! to `max_completion_tokens` / `max_tokens` words; a stream sends it word by word (each
//! piece after the first starts with the whitespace before its word, so the deltas concatenate
//! to the content exactly); `n` choices are identical; usage counts whitespace-separated words
//! (prompt: the text of every message; completion: the answer's words in every choice, as
//! OpenAI counts `n`); `finish_reason` is `length` when cut, else `stop`.
//!
//! Echo is served without a key by the embedded default, so its work is bounded whatever the
//! request: `n` choices together hold at most [`MAX_WORDS`] words and [`MAX_BYTES`] bytes.
//! Each choice is cut to its share, after a whole word, with `finish_reason: "length"` (as a
//! model stops at its output limit; a 400 would be wrong for `n` = 1 and a long message). A
//! stream is generated chunk by chunk as it is sent, never built up front.

use async_trait::async_trait;
use futures_util::stream;

use super::{Answer, CallCx, ChunkStream, Prepared, Provider, StreamItem, Unsupported};
use crate::error::ProviderError;
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, ResponseMessage, Role, Usage,
};
use crate::stream::normalize::{choice_count, completion_id, unix_now};

/// The most words all choices of one answer hold together.
const MAX_WORDS: usize = 1_000_000;
/// The most bytes of content all choices of one answer hold together.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The echo provider.
pub(crate) struct EchoProvider;

/// The answer to a request: its content, whether it was cut, and how many choices repeat it.
struct Echoed {
    content: String,
    cut: bool,
    choices: u32,
}

impl Echoed {
    fn of(request: &ChatRequest) -> Echoed {
        let mut content = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text())
            .unwrap_or_default();
        let choices = choice_count(request);
        let share = usize::try_from(choices).unwrap_or(usize::MAX).max(1);
        let requested = request.token_limit().and_then(|l| usize::try_from(l).ok());
        let max_words = requested.unwrap_or(usize::MAX).min(MAX_WORDS / share);
        let (end, cut) = cut_point(&content, max_words, MAX_BYTES / share);
        content.truncate(end);
        Echoed {
            content,
            cut,
            choices,
        }
    }

    fn finish_reason(&self) -> String {
        if self.cut { "length" } else { "stop" }.to_owned()
    }

    fn usage(&self, request: &ChatRequest) -> Usage {
        let prompt: usize = request
            .messages
            .iter()
            .map(|m| count_words(&m.text()))
            .sum();
        let prompt = u64::try_from(prompt).unwrap_or(u64::MAX);
        let words = u64::try_from(count_words(&self.content)).unwrap_or(u64::MAX);
        let completion = words.saturating_mul(u64::from(self.choices));
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            ..Usage::default()
        }
    }
}

/// Where an answer drawn from `text` ends: after as many whole words as fit in `max_words`
/// and `max_bytes`, and whether words were left out.
fn cut_point(text: &str, max_words: usize, max_bytes: usize) -> (usize, bool) {
    let mut fits = 0;
    for (count, end) in word_ends(text).enumerate() {
        if count >= max_words || end > max_bytes {
            return (fits, true);
        }
        fits = end;
    }
    // Every word fits; so does trailing whitespace, unless it alone is too long.
    if text.len() <= max_bytes {
        (text.len(), false)
    } else {
        (fits, false)
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

/// The end of the stream piece starting at `start`: just past its word, or the end of the
/// text for the last word (trailing whitespace belongs to it) or a text without words.
fn piece_end(text: &str, start: usize) -> usize {
    match word_ends(&text[start..]).next() {
        Some(len) if !text[start + len..].trim_start().is_empty() => start + len,
        _ => text.len(),
    }
}

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// An echo stream, generated as it is polled: each piece goes to every choice in turn, then
/// one chunk finishes every choice, then the usage chunk.
struct EchoStream {
    answer: Echoed,
    usage: Option<Usage>,
    id: String,
    created: i64,
    model: String,
    /// The current piece of the content ...
    piece: (usize, usize),
    /// ... and the next choice to send it to.
    choice: u32,
    finished: bool,
}

impl EchoStream {
    fn new(request: &ChatRequest, cx: &CallCx) -> Self {
        let answer = Echoed::of(request);
        EchoStream {
            usage: Some(answer.usage(request)),
            piece: (0, piece_end(&answer.content, 0)),
            answer,
            id: completion_id(),
            created: unix_now(),
            model: cx.upstream_model.clone(),
            choice: 0,
            finished: false,
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            ..ChatChunk::default()
        }
    }

    /// The current piece for the next choice, moving on to the next piece when every choice
    /// had this one; `None` after the last.
    fn next_piece(&mut self) -> Option<ChatChunk> {
        let content = &self.answer.content;
        if self.choice == self.answer.choices {
            let (_, end) = self.piece;
            if end == content.len() {
                return None;
            }
            self.piece = (end, piece_end(content, end));
            self.choice = 0;
        }
        let (start, end) = self.piece;
        let choice = ChunkChoice {
            index: self.choice,
            delta: Delta {
                content: Some(content[start..end].to_owned()),
                ..Delta::default()
            },
            ..ChunkChoice::default()
        };
        self.choice += 1;
        Some(self.chunk(vec![choice]))
    }

    fn finish_chunk(&self) -> ChatChunk {
        let finals = (0..self.answer.choices)
            .map(|index| ChunkChoice {
                index,
                finish_reason: Some(self.answer.finish_reason()),
                ..ChunkChoice::default()
            })
            .collect();
        self.chunk(finals)
    }
}

impl Iterator for EchoStream {
    type Item = Result<StreamItem, ProviderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(chunk) = self.next_piece() {
            return Some(Ok(chunk.into()));
        }
        if !self.finished {
            self.finished = true;
            return Some(Ok(self.finish_chunk().into()));
        }
        let usage = self.usage.take()?;
        let mut chunk = self.chunk(Vec::new());
        chunk.usage = Some(usage);
        Some(Ok(chunk.into()))
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
    ) -> Result<Answer, ProviderError> {
        let answer = Echoed::of(request);
        let choices = (0..answer.choices)
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
        }
        .into())
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        _prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<ChunkStream, ProviderError> {
        Ok(Box::pin(stream::iter(EchoStream::new(request, cx))))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;

    fn request(body: serde_json::Value) -> ChatRequest {
        *crate::schema::parse_and_validate(body.to_string().as_bytes()).unwrap()
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
            .and_then(Answer::into_parsed)
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
            (7, 6, 13),
            "the completion counts both choices"
        );
    }

    #[tokio::test]
    async fn cuts_to_the_token_limit() {
        let r = request(json!({"model": "echo/x", "max_tokens": 2,
            "messages": [{"role": "user", "content": "one  two three"}]}));
        let response = EchoProvider
            .chat(&r, &Prepared::default(), &cx())
            .await
            .and_then(Answer::into_parsed)
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
            .and_then(Answer::into_parsed)
            .unwrap();
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn stream_deltas_concatenate_to_the_content() {
        for text in ["  hello   big\nworld  ", "one", "", "émoji 😀 ok"] {
            let r = request(json!({"model": "echo/x", "stream": true,
                "messages": [{"role": "user", "content": text}]}));
            let chunks = stream_of(&r).await;
            let content: String = chunks
                .iter()
                .filter_map(|c| c.choices.first())
                .filter_map(|c| c.delta.content.clone())
                .collect();
            assert_eq!(content, text);
            let words = chunks.len() - 2;
            assert_eq!(words, count_words(text).max(1), "{text:?}");
        }
    }

    async fn stream_of(r: &ChatRequest) -> Vec<ChatChunk> {
        let chunks: Vec<_> = EchoProvider
            .chat_stream(r, &Prepared::default(), &cx())
            .await
            .unwrap()
            .collect()
            .await;
        chunks
            .into_iter()
            .map(|item| item.unwrap().into_parsed().unwrap())
            .collect()
    }

    /// Each choice's content, concatenated from a stream's deltas.
    fn contents(chunks: &[ChatChunk], n: usize) -> Vec<String> {
        let mut out = vec![String::new(); n];
        for choice in chunks.iter().flat_map(|c| &c.choices) {
            if let Some(text) = &choice.delta.content {
                out[choice.index as usize].push_str(text);
            }
        }
        out
    }

    #[tokio::test]
    async fn every_choice_streams_the_answer_and_usage_counts_them_all() {
        let r = request(json!({"model": "echo/x", "stream": true, "n": 3,
            "messages": [{"role": "user", "content": "one two"}]}));
        let chunks = stream_of(&r).await;
        assert_eq!(contents(&chunks, 3), ["one two"; 3]);
        let usage = chunks.last().unwrap().usage.clone().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (2, 6, 8)
        );
    }

    #[tokio::test]
    async fn many_choices_of_many_words_are_cut_to_a_share_of_the_word_cap() {
        let words = 20_000;
        let text = "w ".repeat(words);
        let r = request(json!({"model": "echo/x", "n": 128,
            "messages": [{"role": "user", "content": text}]}));
        let response = EchoProvider
            .chat(&r, &Prepared::default(), &cx())
            .await
            .and_then(Answer::into_parsed)
            .unwrap();
        let share = MAX_WORDS / 128;
        assert!(share < words);
        for choice in &response.choices {
            let content = choice.message.content.as_deref().unwrap();
            assert_eq!(count_words(content), share);
            assert_eq!(choice.finish_reason.as_deref(), Some("length"));
        }
        let usage = response.usage.unwrap();
        assert_eq!(usage.completion_tokens, (share * 128) as u64);
    }

    #[tokio::test]
    async fn many_choices_of_long_words_are_cut_to_a_share_of_the_byte_cap() {
        // Two words of 100 KB: 128 copies of both would be 25 MB, over the 16 MiB cap.
        let word = "x".repeat(100_000);
        let r = request(json!({"model": "echo/x", "n": 128, "stream": true,
            "messages": [{"role": "user", "content": format!("{word} {word}")}]}));
        let chunks = stream_of(&r).await;
        assert_eq!(chunks.len(), 128 + 2, "one piece per choice, finish, usage");
        assert!(contents(&chunks, 128).iter().all(|c| *c == word));
        let finals = &chunks[128].choices;
        assert_eq!(finals.len(), 128);
        assert!(
            finals
                .iter()
                .all(|c| c.finish_reason.as_deref() == Some("length"))
        );
    }

    #[test]
    fn cut_points_keep_whole_words() {
        assert_eq!(cut_point("one  two three", 2, 100), (8, true));
        assert_eq!(cut_point("one two three ", 3, 100), (14, false));
        assert_eq!(cut_point("one two three", 9, 8), (7, true));
        assert_eq!(cut_point("toolongword", 9, 4), (0, true));
        assert_eq!(cut_point("", 1, 0), (0, false));
    }
}
