//! Upstream plumbing shared by the HTTP adapters: one pooled client per provider, sending a
//! JSON body, turning a non-2xx answer into [`ProviderError::Status`] (message, code and
//! `retry-after` read from any of the error shapes providers use), reading a JSON body, and
//! opening an event stream of OpenAI-shaped chunks.
//!
//! Everything an upstream sends is bounded: a JSON answer or error body by
//! `max_upstream_body_bytes`, one stream event by `max_upstream_event_bytes` (both 502, or an
//! error event mid-stream), and an error message passed on by `MAX_MESSAGE_BYTES`. A
//! transport failure tells the client only what kind it was; the upstream's URL (an internal
//! host) goes to the log alone, without query.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::Method;
use futures_util::StreamExt;
use serde_json::Value;
use serde_json::value::RawValue;

use super::client::{self, Body, Client, Endpoint, Response, cause_chain, failure_kind};
use super::{Answer, CallCx, ChunkStream, Prepared, Provider, StreamItem, Unsupported};
use crate::config::{ProviderConfig, ServerConfig};
use crate::error::ProviderError;
use crate::schema::{ChatChunk, ChatRequest, ChatResponse};
use crate::stream::decode::{SseError, SseEvent, SseItem, SseStream};
use crate::stream::splice::{AnswerInShape, ChunkScanner};
use crate::telemetry::{self, X_REQUEST_ID};

/// How much of an unreadable body an error message quotes.
const SNIPPET_CHARS: usize = 200;
/// The longest upstream error message (or code) passed on to clients and logs.
const MAX_MESSAGE_BYTES: usize = 1024;

/// How large an upstream's answers may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// A whole JSON answer or error body.
    body_bytes: usize,
    /// One event (or line) of an event stream.
    event_bytes: usize,
}

impl Limits {
    /// The limits `[server]` sets.
    pub(crate) fn of(server: &ServerConfig) -> Self {
        Limits {
            body_bytes: server.max_upstream_body_bytes,
            event_bytes: server.max_upstream_event_bytes,
        }
    }
}

/// Who an upstream is, for the log: the provider's name and its URL without userinfo or query.
#[derive(Debug)]
struct Origin {
    provider: String,
    url: String,
}

/// `url` without userinfo or query (which may hold credentials), for the log.
pub(crate) fn shown_url(url: &url::Url) -> String {
    let mut url = url.clone();
    // Neither can fail on an http(s) URL; a failure would keep the URL as it was.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

impl Origin {
    fn new(provider: &str, endpoint: &url::Url) -> Self {
        Origin {
            provider: provider.to_owned(),
            url: shown_url(endpoint),
        }
    }

    /// Logs a transport failure in full and describes it for the client by its kind alone:
    /// a failure while `reading` an answer is a broken stream, else a failed connection.
    fn transport_error(&self, error: &client::Error, reading: bool) -> ProviderError {
        let reason = failure_kind(error.as_ref());
        tracing::warn!(
            provider = %self.provider,
            url = %self.url,
            error = %cause_chain(error.as_ref()),
            "upstream transport failure"
        );
        if reading {
            ProviderError::Stream(format!("reading the answer failed ({reason})"))
        } else {
            ProviderError::Connect(reason.to_owned())
        }
    }
}

/// An upstream endpoint with its pooled client (which carries the fixed headers).
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    client: Client,
    /// Parsed once, not on every request.
    endpoint: Arc<Endpoint>,
    origin: Arc<Origin>,
    limits: Limits,
}

impl Upstream {
    /// A client for provider `name`'s endpoint (`config`), sending its key and extra headers on
    /// every request and reading answers within `limits`.
    pub(crate) fn new(name: &str, config: &ProviderConfig, limits: Limits) -> anyhow::Result<Self> {
        // The URL parser normalizes (an international host becomes ASCII, say); the
        // request's URI is that normal form.
        let url = url::Url::parse(&config.endpoint())?;
        let endpoint = Arc::new(Endpoint::new(url.as_str())?);
        Ok(Upstream {
            client: Client::for_provider(config)?,
            origin: Arc::new(Origin::new(name, &url)),
            endpoint,
            limits,
        })
    }

    /// POSTs a prepared body; a non-2xx answer becomes [`ProviderError::Status`].
    pub(crate) async fn post(
        &self,
        prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<Response, ProviderError> {
        let mut request = self
            .client
            .request(Method::POST, &self.endpoint, prepared.body.clone());
        let headers = request.headers_mut();
        if let Some(id) = &cx.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
        for (name, value) in &prepared.headers {
            headers.insert(name, value.clone());
        }
        // `traceparent` of the attempt span this call runs in.
        telemetry::add_trace_headers(&cx.trace, headers);
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| self.origin.transport_error(&e, false))?;
        telemetry::record_http_status(&tracing::Span::current(), response.status().as_u16());
        if response.status().is_success() {
            Ok(response)
        } else {
            // Boxed: the error path would double the size of every call's future.
            Err(Box::pin(self.error_from_response(response)).await)
        }
    }

    /// Reads a non-2xx answer into [`ProviderError::Status`].
    async fn error_from_response(&self, response: Response) -> ProviderError {
        let status = response.status().as_u16();
        let retry_after = response.retry_after().map(str::to_owned);
        match self.read_body(response).await {
            Ok(body) => error_from_body(status, &body, retry_after),
            Err(error) => {
                let why = match error {
                    ProviderError::Decode(why)
                    | ProviderError::Stream(why)
                    | ProviderError::Connect(why) => why,
                    other => other.to_string(),
                };
                ProviderError::Status {
                    status,
                    message: format!("the error body could not be read: {why}"),
                    code: None,
                    retry_after,
                }
            }
        }
    }

    /// Reads a whole answer: passed on as written when it is in shape, parsed otherwise.
    async fn read_answer(&self, response: Response) -> Result<Answer, ProviderError> {
        match AnswerInShape::scan(self.read_body(response).await?) {
            Ok(answer) => Ok(Answer::InShape(answer)),
            Err(body) => serde_json::from_slice::<ChatResponse>(&body)
                .map(Answer::Parsed)
                .map_err(|e| unreadable(format!("{e}; the body was:"), &body)),
        }
    }

    /// Reads a whole body of at most `max_upstream_body_bytes`; a larger one is refused as
    /// soon as it is known to be larger, never buffered.
    async fn read_body(&self, response: Response) -> Result<Vec<u8>, ProviderError> {
        let limit = self.limits.body_bytes;
        let too_large = || {
            ProviderError::Decode(format!(
                "the body is larger than {limit} bytes (server.max_upstream_body_bytes)"
            ))
        };
        client::read_at_most(response, limit)
            .await
            .map_err(|e| self.origin.transport_error(&e, true))?
            .ok_or_else(too_large)
    }
}

/// The request side of an HTTP provider's dialect. Every HTTP provider answers in OpenAI's
/// shape (JSON completion or an event stream of chunks), so only translation and error
/// adjustments differ between them.
pub trait Dialect: Send + Sync + 'static {
    /// Translates `request` for the provider called `name`.
    fn prepare(
        &self,
        name: &str,
        request: &ChatRequest,
        cx: &CallCx,
    ) -> Result<Prepared, Unsupported>;

    /// Adjusts an upstream error to the contract (e.g. Nugen's 422 becomes 400).
    fn map_error(&self, error: ProviderError) -> ProviderError {
        error
    }
}

/// An HTTP provider: a dialect over a pooled upstream client.
pub(crate) struct HttpProvider<D> {
    name: String,
    upstream: Upstream,
    dialect: D,
}

impl<D: Dialect> HttpProvider<D> {
    /// The provider `name` as configured by `config`, speaking `dialect`, reading answers
    /// within `limits`.
    pub(crate) fn new(
        name: &str,
        config: &ProviderConfig,
        limits: Limits,
        dialect: D,
    ) -> anyhow::Result<Self> {
        Ok(HttpProvider {
            name: name.to_owned(),
            upstream: Upstream::new(name, config, limits)?,
            dialect,
        })
    }
}

#[async_trait]
impl<D: Dialect> Provider for HttpProvider<D> {
    fn prepare(&self, request: &ChatRequest, cx: &CallCx) -> Result<Prepared, Unsupported> {
        self.dialect.prepare(&self.name, request, cx)
    }

    async fn chat(
        &self,
        _request: &ChatRequest,
        prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<Answer, ProviderError> {
        let call = async {
            let response = self.upstream.post(prepared, cx).await?;
            self.upstream.read_answer(response).await
        };
        call.await.map_err(|e| self.dialect.map_error(e))
    }

    async fn chat_stream(
        &self,
        _request: &ChatRequest,
        prepared: &Prepared,
        cx: &CallCx,
    ) -> Result<ChunkStream, ProviderError> {
        match self.upstream.post(prepared, cx).await {
            Ok(response) => Ok(self.upstream.chunk_stream(response)),
            Err(error) => Err(self.dialect.map_error(error)),
        }
    }
}

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] on a character boundary, marked with `…`.
fn truncate_message(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Builds [`ProviderError::Status`] from an error body in any provider's shape.
pub fn error_from_body(status: u16, body: &[u8], retry_after: Option<String>) -> ProviderError {
    let (message, code) = match serde_json::from_slice::<Value>(body) {
        Ok(value) => error_fields(&value),
        Err(_) => (None, None),
    };
    let message = message.unwrap_or_else(|| {
        let text = snippet(body);
        if text.is_empty() {
            format!("status {status} with an empty body")
        } else {
            text
        }
    });
    ProviderError::Status {
        status,
        message: truncate_message(message),
        code: code.map(truncate_message),
        retry_after,
    }
}

/// The message and code of an error body: OpenAI `{"error":{"message","code"}}`, `{"error":"..."}`,
/// FastAPI `{"detail":"..."}` or `{"detail":[{"loc","msg"}]}`, or `{"message": ...}`.
fn error_fields(value: &Value) -> (Option<String>, Option<String>) {
    let error = value.get("error");
    let code = error
        .and_then(|e| e.get("code"))
        .or_else(|| value.get("code"))
        .and_then(|c| match c {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let message = match (error, value.get("detail")) {
        (Some(Value::String(s)), _) => Some(s.clone()),
        (Some(e), _) if e.get("message").is_some() => e["message"].as_str().map(str::to_owned),
        (_, Some(Value::String(s))) => Some(s.clone()),
        (_, Some(Value::Array(items))) => Some(detail_message(items)),
        _ => value
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    (message, code)
}

/// FastAPI's `detail` list as one sentence naming each field.
fn detail_message(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| {
            let loc: Vec<String> = item
                .get("loc")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter(|p| p.as_str() != Some("body"))
                        .map(|p| match p {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
            if loc.is_empty() {
                msg.to_owned()
            } else {
                format!("{}: {msg}", loc.join("."))
            }
        })
        .collect();
    parts.join("; ")
}

/// A [`ProviderError::Decode`] saying `why` (a parser's message, which may quote the
/// upstream's text at any length, so it is cut) and quoting the start of `body`.
fn unreadable(why: String, body: &[u8]) -> ProviderError {
    ProviderError::Decode(format!("{} {:?}", truncate_message(why), snippet(body)))
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What one event of an OpenAI-shaped stream means.
pub enum EventOutcome {
    /// A chunk to pass on.
    Chunk(ChatChunk),
    /// Nothing to pass on (an empty or unknown event).
    Skip,
    /// The end (`[DONE]`).
    Done,
    /// An error event or an unreadable one.
    Fail(ProviderError),
}

/// Interprets an OpenAI-shaped event: `[DONE]`, `{"error": ...}` or a chunk. The data is
/// parsed once, as a chunk; an `error` key lands in the chunk's extras and makes it an error.
pub fn openai_event(event: &SseEvent) -> EventOutcome {
    let data = match event.text() {
        Ok(text) => text.trim(),
        Err(e) => return EventOutcome::Fail(ProviderError::Stream(e.to_string())),
    };
    if data == "[DONE]" {
        return EventOutcome::Done;
    }
    if data.is_empty() {
        return EventOutcome::Skip;
    }
    match serde_json::from_str::<ChatChunk>(data) {
        Ok(mut chunk) => match chunk.extra.remove("error") {
            Some(error) => {
                EventOutcome::Fail(error_event(&serde_json::json!({ "error": parsed(&error) })))
            }
            None if event.event.as_deref() == Some("error") => {
                let fields = chunk.extra.iter().map(|(k, v)| (k.clone(), parsed(v)));
                EventOutcome::Fail(error_event(&Value::Object(fields.collect())))
            }
            None => EventOutcome::Chunk(chunk),
        },
        // Not a chunk: an error object in another shape, or not JSON at all.
        Err(e) => match serde_json::from_str::<Value>(data) {
            Ok(value)
                if value.get("error").is_some() || event.event.as_deref() == Some("error") =>
            {
                EventOutcome::Fail(error_event(&value))
            }
            Ok(_) => EventOutcome::Fail(unreadable(
                format!("an event is not a chat completion chunk ({e}):"),
                data.as_bytes(),
            )),
            Err(e) => EventOutcome::Fail(unreadable(
                format!("an event is not JSON ({e}):"),
                data.as_bytes(),
            )),
        },
    }
}

/// A kept raw value as a tree (it was checked as JSON when it was read).
fn parsed(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// An error sent as an event: its status is the one it names, or implied by its code.
fn error_event(value: &Value) -> ProviderError {
    let (message, code) = error_fields(value);
    let named = value
        .get("error")
        .and_then(|e| e.get("status").or_else(|| e.get("code")))
        .or_else(|| value.get("status"))
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (400..=599).contains(s));
    let implied = match code.as_deref() {
        Some("rate_limit_exceeded") => 429,
        Some("context_length_exceeded") | Some("invalid_request_error") => 400,
        _ => 502,
    };
    let message = message.unwrap_or_else(|| "the upstream sent an error event".to_owned());
    ProviderError::Status {
        status: named.unwrap_or(implied),
        message: truncate_message(message),
        code: code.map(truncate_message),
        retry_after: None,
    }
}

/// The reading state of one upstream event stream.
/// It is the stream itself (not a future re-made for every chunk), so the state stays in place.
struct ChunkReader {
    events: SseStream<Body>,
    scanner: ChunkScanner,
    origin: Arc<Origin>,
    finished_choice: bool,
    /// The stream ended (after an error, `[DONE]` or the body's end).
    ended: bool,
}

impl ChunkReader {
    /// What the next item of the event stream means: a chunk, or `None` at the end. Bytes
    /// that complete no event, and events that carry nothing, are an empty chunk: a sign of
    /// life (see [`ChunkStream`]). A chunk already in shape is passed on unparsed
    /// ([`InShape`](crate::stream::splice::InShape)).
    fn interpret(
        &mut self,
        next: Option<Result<SseItem, SseError<client::Error>>>,
    ) -> Option<Result<StreamItem, ProviderError>> {
        let item = match next {
            None if self.finished_choice => return None,
            None => Err(ProviderError::Stream(
                "the upstream closed the stream before it finished".to_owned(),
            )),
            Some(Err(SseError::Read(e))) => Err(self.origin.transport_error(&e, true)),
            Some(Err(SseError::Decode(e))) => Err(ProviderError::Stream(e.to_string())),
            Some(Ok(SseItem::Partial)) => Ok(ChatChunk::default().into()),
            Some(Ok(SseItem::Event(event))) => match self.scanner.scan(event) {
                Ok(chunk) => {
                    self.finished_choice |= chunk.finished;
                    Ok(StreamItem::InShape(chunk))
                }
                Err(event) => match openai_event(&event) {
                    EventOutcome::Chunk(chunk) => {
                        if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                            self.finished_choice = true;
                        }
                        Ok(chunk.into())
                    }
                    EventOutcome::Skip => Ok(ChatChunk::default().into()),
                    EventOutcome::Done => {
                        // The body's end usually came with `[DONE]`: the connection is kept.
                        self.events.body_mut().drain_ready();
                        return None;
                    }
                    EventOutcome::Fail(e) => Err(e),
                },
            },
        };
        Some(item)
    }
}

impl futures_util::Stream for ChunkReader {
    type Item = Result<StreamItem, ProviderError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return std::task::Poll::Ready(None);
        }
        let next = std::task::ready!(this.events.poll_next_unpin(cx));
        let item = this.interpret(next);
        this.ended = !matches!(item, Some(Ok(_)));
        std::task::Poll::Ready(item)
    }
}

impl Upstream {
    /// Opens a chunk stream over an event-stream response, reading each event with
    /// [`openai_event`]. The stream ends at `Done`; a body that ends before any choice
    /// finished is an error (a cut connection must not look like a complete answer); after
    /// an error the stream ends.
    fn chunk_stream(&self, response: Response) -> ChunkStream {
        let reader = ChunkReader {
            events: SseStream::new(response.into_body(), self.limits.event_bytes),
            scanner: ChunkScanner::default(),
            origin: self.origin.clone(),
            finished_choice: false,
            ended: false,
        };
        Box::pin(reader)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message_of(error: ProviderError) -> (u16, String, Option<String>) {
        match error {
            ProviderError::Status {
                status,
                message,
                code,
                ..
            } => (status, message, code),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_bodies_of_every_shape() {
        let openai = json!({"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"}});
        let (_, message, code) =
            message_of(error_from_body(429, openai.to_string().as_bytes(), None));
        assert_eq!(
            (message.as_str(), code.as_deref()),
            ("Rate limit", Some("rate_limit_exceeded"))
        );
        let fastapi = json!({"detail": [{"loc": ["body", "messages", 0, "role"], "msg": "Input should be 'user'", "type": "literal_error"}]});
        let (_, message, _) =
            message_of(error_from_body(422, fastapi.to_string().as_bytes(), None));
        assert_eq!(message, "messages.0.role: Input should be 'user'");
        let (_, message, _) = message_of(error_from_body(500, b"<html>oops</html>", None));
        assert_eq!(message, "<html>oops</html>");
        let (_, message, _) = message_of(error_from_body(503, b"", None));
        assert!(message.contains("empty body"));
    }

    #[test]
    fn error_events_get_a_status() {
        let event = |v: Value| SseEvent {
            event: None,
            data: v.to_string().into(),
        };
        let EventOutcome::Fail(e) = openai_event(&event(
            json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}),
        )) else {
            panic!()
        };
        assert_eq!(message_of(e).0, 429);
        let EventOutcome::Fail(e) = openai_event(&event(json!({"error": {"message": "boom"}})))
        else {
            panic!()
        };
        assert_eq!(message_of(e).0, 502);
        let EventOutcome::Fail(ProviderError::Decode(_)) = openai_event(&SseEvent {
            event: None,
            data: "{nope".into(),
        }) else {
            panic!()
        };
        assert!(matches!(
            openai_event(&SseEvent {
                event: None,
                data: "[DONE]".into()
            }),
            EventOutcome::Done
        ));
        // Data that is not UTF-8 ends the stream with the decoder's error.
        let EventOutcome::Fail(ProviderError::Stream(message)) = openai_event(&SseEvent {
            event: None,
            data: bytes::Bytes::from_static(b"{\"x\":\"\xff\"}"),
        }) else {
            panic!()
        };
        assert_eq!(message, "an event-stream line is not valid UTF-8");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let short = "fine".to_owned();
        assert_eq!(truncate_message(short.clone()), short);
        // 'é' is two bytes: byte 1024 falls inside one, so the cut moves back to 1023.
        let cut = truncate_message(format!("x{}", "é".repeat(2000)));
        assert_eq!(cut.len(), 1023 + '…'.len_utf8());
        assert!(cut.ends_with("é…"));
        let exact = "y".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(truncate_message(exact.clone()), exact);
    }

    #[test]
    fn upstream_error_messages_and_codes_are_cut() {
        let body = json!({"error": {"message": "m".repeat(5000), "code": "c".repeat(5000)}});
        let ProviderError::Status { message, code, .. } =
            error_from_body(400, body.to_string().as_bytes(), None)
        else {
            panic!()
        };
        assert!(message.len() <= MAX_MESSAGE_BYTES + 3 && message.ends_with('…'));
        assert!(code.unwrap().len() <= MAX_MESSAGE_BYTES + 3);
    }

    #[test]
    fn parser_messages_quoting_upstream_text_are_cut() {
        // serde quotes a string of the wrong type in full.
        let data = json!({"choices": "z".repeat(5000)}).to_string();
        let EventOutcome::Fail(ProviderError::Decode(message)) = openai_event(&SseEvent {
            event: None,
            data: data.into(),
        }) else {
            panic!()
        };
        assert!(message.len() < 2 * MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.contains("not a chat completion chunk"), "{message}");
        assert!(message.contains('…'), "cut: {message}");
    }

    #[test]
    fn logged_urls_carry_no_credentials_or_query() {
        let url = url::Url::parse("https://user:secret@10.0.0.7:8443/v1/chat?key=k").unwrap();
        let origin = Origin::new("p", &url);
        assert_eq!(origin.url, "https://10.0.0.7:8443/v1/chat");
    }
}
