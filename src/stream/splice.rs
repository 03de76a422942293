//! The fast path of normalization: a chunk (here) or a whole answer ([`AnswerInShape`]) that
//! is already in the contract's shape is relayed as the upstream wrote it, with only the
//! members normalization rewrites (for a chunk `id`, `object`, `created`, `model`) written
//! anew.
//!
//! [`InShape::scan`] reads an event once with the gateway's strict JSON reader
//! ([`crate::json_reader`]), copying nothing, and takes it only when the slow path (parse
//! into a [`ChatChunk`], normalize, serialize) would change nothing else: no `usage` and no
//! `error`, no member named twice, and every choice has an integer `index`
//! and a `delta` whose known members are strings (a `content` or `refusal` may be `null`) and
//! that makes no tool or function call. A choice without `finish_reason` or `logprobs` gets
//! them as `null`, and a `null` `content` or `refusal` is left out (as the slow path writes
//! them), which costs a second read of the choices. The normalizer then decides with the stream's
//! state ([`super::normalize::ChunkNormalizer::splice`]): every choice already had its role, or
//! has `"role":"assistant"` (the role the normalizer gives a first delta); the stream's `id`
//! and `created` are taken from its first chunk, as the slow path takes them. Anything else
//! takes the slow path, so the fast
//! path changes the bytes, never the JSON a client reads (a property test and the
//! `upstream_stream` fuzz target check both paths against each other).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::decode::SseEvent;
use super::normalize::MAX_CHOICES;
use crate::error::ProviderError;
use crate::json_reader::{self, Reader};
use crate::schema::ChatChunk;
use crate::schema::de::Timestamp;

/// An upstream chunk in the contract's shape, still as the upstream's JSON text.
#[derive(Clone)]
pub struct InShape {
    /// The upstream's JSON text, then (when the choices were completed) the completed
    /// `choices` member. Shared with the upstream's read, unless completed; checked as UTF-8
    /// where it was read.
    text: Bytes,
    /// Where the upstream's JSON text ends.
    json_end: usize,
    /// Its members as read: those of the template it was read by, when it was.
    members: Arc<Members>,
    /// For a chunk read by a template whose text is longer or shorter: the offsets at and
    /// after the first (the end of the template's text) start at the second here.
    moved: Option<(usize, usize)>,
    /// Whether every choice's delta has `"role":"assistant"`.
    assistant: bool,
    /// The `id` string, quotes included (none when it is `null` or missing).
    id: Option<Range<usize>>,
    /// The `created` timestamp (none when it is `null` or missing).
    created: Option<i64>,
    /// Whether a choice has a `finish_reason`.
    pub(crate) finished: bool,
    /// Bytes of answer text (`content`, unescaped) in this chunk.
    pub(crate) text_bytes: u64,
}

/// What a chunk in shape passes on as written, and its choices: shared by the chunks a
/// [`Template`] reads, so they are not copied for every chunk.
#[derive(Debug, Clone)]
struct Members {
    /// The top-level members passed on as written (`"key":value`), in the upstream's order.
    kept: Vec<Range<usize>>,
    /// Each choice's index.
    indexes: Vec<u32>,
}

impl fmt::Debug for InShape {
    /// The chunk as read, whichever way it was read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InShape")
            .field("text", &self.text)
            .field("json_end", &self.json_end)
            .field("kept", &self.kept().collect::<Vec<_>>())
            .field("indexes", &self.members.indexes)
            .field("assistant", &self.assistant)
            .field("id", &self.id)
            .field("created", &self.created)
            .field("finished", &self.finished)
            .field("text_bytes", &self.text_bytes)
            .finish()
    }
}

impl InShape {
    /// Takes `event` when it is a chunk in shape; gives it back otherwise.
    pub fn scan(event: SseEvent) -> Result<InShape, SseEvent> {
        Self::read_event(event, Known::Nothing).map(|read| read.found)
    }

    /// [`InShape::scan`], where `known` says what of the event is already read, or that its
    /// leading members are wanted (then they come with the chunk, when it has some).
    fn read_event(event: SseEvent, known: Known<'_>) -> Result<EventRead, SseEvent> {
        if event.event.is_some() {
            return Err(event);
        }
        let read_leading = match known {
            Known::Leading(leading) => Some(leading),
            Known::Nothing | Known::WantLeading => None,
        };
        // Kept here, not returned: the keys take 600 bytes, and this runs for every chunk.
        let mut keys = Keys::default();
        let Ok(text) = event.text() else {
            return Err(event);
        };
        let Some(read) = read_chunk(text, read_leading, &mut keys) else {
            return Err(event);
        };
        let leading = match known {
            Known::WantLeading => Leading::of(text, &read, &keys),
            Known::Nothing | Known::Leading(_) => None,
        };
        let ChunkRead {
            kept,
            choices_at,
            choices: marks,
            id,
            created,
            ..
        } = read;
        // A chunk relayed as written with one choice whose delta has a `content` string.
        let content = match &marks[..] {
            [mark] if !mark.is_rewritten() => mark.content.clone(),
            _ => None,
        };
        let text = event.data;
        let json_end = text.len();
        let members = Members {
            kept,
            indexes: marks.iter().map(|mark| mark.index).collect(),
        };
        let mut found = InShape {
            text,
            json_end,
            members: Arc::new(members),
            moved: None,
            assistant: marks.iter().all(|mark| mark.assistant),
            id,
            created,
            finished: marks.iter().any(|mark| mark.finished),
            text_bytes: marks.iter().map(|mark| mark.text_bytes as u64).sum(),
        };
        if marks.iter().any(ChoiceMark::is_rewritten)
            && found.complete(choices_at, &marks).is_none()
        {
            return Err(found.into_event());
        }
        found.join_adjacent();
        Ok(EventRead {
            found,
            leading,
            content,
        })
    }

    /// Adds `"finish_reason":null` and `"logprobs":null` to the choices that lack them (the
    /// slow path writes both always; OpenAI sends both, some servers leave them out), and
    /// leaves out the members the slow path drops (a `null` `content` or `refusal`). The
    /// completed `choices` member (kept member `at`) is written after the upstream's text and
    /// passed on from there. When it cannot be, what was written is dropped with the rest
    /// when the event is given back ([`InShape::into_event`]).
    fn complete(&mut self, at: usize, marks: &[ChoiceMark]) -> Option<()> {
        let extra = marks.len().checked_mul(40)?;
        let room = (self.members.kept.get(at)?.len().checked_add(extra))
            .and_then(|more| more.checked_add(self.text.len()))?;
        let mut text = Vec::with_capacity(room);
        text.extend_from_slice(&self.text);
        let start = text.len();
        text.extend_from_slice(b"\"choices\":[");
        for (i, mark) in marks.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            // A choice in shape has `index` and `delta`, so a member comes before its `}`.
            let end = mark.extent.end.checked_sub(1)?;
            (text.get(end) == Some(&b'}')).then_some(())?;
            match &mark.delta {
                // The delta is written anew with the members it keeps.
                Some(delta) => {
                    text.extend_from_within(mark.extent.start..delta.object.start);
                    text.push(b'{');
                    for (i, member) in delta.kept.iter().enumerate() {
                        if i > 0 {
                            text.push(b',');
                        }
                        text.extend_from_within(member.clone());
                    }
                    text.push(b'}');
                    text.extend_from_within(delta.object.end..end);
                }
                None => text.extend_from_within(mark.extent.start..end),
            }
            if mark.lacks_finish_reason {
                text.extend_from_slice(b",\"finish_reason\":null");
            }
            if mark.lacks_logprobs {
                text.extend_from_slice(b",\"logprobs\":null");
            }
            text.push(b'}');
        }
        text.push(b']');
        // Read whole just now: the members are this chunk's alone.
        Arc::make_mut(&mut self.members).kept[at] = start..text.len();
        self.text = text.into();
        Some(())
    }

    /// Joins kept members one comma apart in the text into one range: a run of them is
    /// copied at once.
    fn join_adjacent(&mut self) {
        let text = &self.text;
        let members = Arc::make_mut(&mut self.members);
        members.kept.dedup_by(|next, run| {
            let adjacent =
                run.end.checked_add(1) == Some(next.start) && text.get(run.end) == Some(&b',');
            if adjacent {
                run.end = next.end;
            }
            adjacent
        });
    }

    /// The upstream's event, given back.
    fn into_event(self) -> SseEvent {
        let mut data = self.text;
        data.truncate(self.json_end);
        SseEvent { event: None, data }
    }

    /// Each choice's index.
    pub(crate) fn indexes(&self) -> &[u32] {
        &self.members.indexes
    }

    /// The members passed on as written.
    fn kept(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (self.members.kept.iter()).map(|member| moved(member, self.moved))
    }

    /// Whether every choice's delta has `"role":"assistant"`.
    pub(crate) fn says_assistant(&self) -> bool {
        self.assistant
    }

    /// The `id`, when it is a string.
    pub(crate) fn id(&self) -> Option<String> {
        let token = std::str::from_utf8(self.text.get(self.id.clone()?)?).ok()?;
        match token.contains('\\') {
            false => token.get(1..token.len().checked_sub(1)?).map(str::to_owned),
            true => serde_json::from_str(token).ok(),
        }
    }

    /// The `created` timestamp, when there is one.
    pub(crate) fn created(&self) -> Option<i64> {
        self.created
    }

    /// Appends the client's event to `out`: `prefix` (`data: {` and the rewritten members),
    /// the kept members (the choices among them), and the end of the event.
    pub(crate) fn write_event(&self, prefix: &[u8], out: &mut Vec<u8>) {
        let kept: usize = self.kept().map(|r| r.len() + 1).sum();
        out.reserve(prefix.len() + kept + 3);
        out.extend_from_slice(prefix);
        for member in self.kept() {
            out.push(b',');
            out.extend_from_slice(&self.text[member]);
        }
        out.extend_from_slice(b"}\n\n");
    }

    /// The chunk parsed, for the slow path.
    pub fn parse(&self) -> Result<ChatChunk, ProviderError> {
        serde_json::from_slice(&self.text[..self.json_end]).map_err(|e| {
            ProviderError::Decode(format!("an event is not a chat completion chunk ({e})"))
        })
    }
}

/// Scans the chunks of one stream. Upstreams begin every chunk of a stream with the same
/// members (`id`, `object`, `created`, `model`, ...), so the scanner keeps what it read of
/// the last chunk in shape before its `"choices"` key ([`Leading`]): a chunk that begins
/// with the same bytes has the same members there, already read and checked, and only the
/// rest of it is read. Most chunks of a stream differ from the one before only in their
/// text, so the scanner also keeps the last chunk in shape that has one (a [`Template`]):
/// a chunk that is the same bytes around another text is read as it was, and only its text
/// is read.
#[derive(Debug, Default)]
pub struct ChunkScanner {
    leading: Option<Leading>,
    template: Option<Template>,
}

impl ChunkScanner {
    /// Takes `event` when it is a chunk in shape (as [`InShape::scan`] does); gives it back
    /// otherwise.
    pub fn scan(&mut self, event: SseEvent) -> Result<InShape, SseEvent> {
        let event = match &self.template {
            Some(template) => match template.read(event) {
                Ok(found) => return Ok(found),
                Err(event) => event,
            },
            None => event,
        };
        let leading = (self.leading.as_ref())
            .filter(|leading| event.data.starts_with(leading.text.as_bytes()));
        let read = match leading {
            Some(leading) => InShape::read_event(event, Known::Leading(leading))?,
            None => {
                let mut read = InShape::read_event(event, Known::WantLeading)?;
                self.leading = read.leading.take();
                read
            }
        };
        if let Some(content) = read.content {
            self.template = Template::of(&read.found, content).or(self.template.take());
        }
        Ok(read.found)
    }
}

/// What [`InShape::read_event`] read of an event in shape.
struct EventRead {
    found: InShape,
    /// Its leading members, when they were wanted.
    leading: Option<Leading>,
    /// Its `content` string (quotes included), when it has one choice with a `content`
    /// string and goes out as written (no member added).
    content: Option<Range<usize>>,
}

/// The most bytes of a chunk a [`ChunkScanner`] keeps as its [`Template`].
const MAX_TEMPLATE_BYTES: usize = 2048;

/// A chunk in shape with one choice whose delta has a `content` string, as text and as read.
/// Another chunk with the same bytes before and after that string differs only in the one
/// string: it has the same members with the same values but the text, so it reads the same
/// but for where the members after the string are and how long the text is.
#[derive(Debug)]
struct Template {
    /// The chunk, read whole and relayed as written.
    chunk: InShape,
    /// Its `content` string, quotes included.
    content: Range<usize>,
}

impl Template {
    /// The template of `found`, read whole and relayed as written, whose `content` string is
    /// at `content`; `None` when it takes more than [`MAX_TEMPLATE_BYTES`].
    fn of(found: &InShape, content: Range<usize>) -> Option<Template> {
        let whole = found.moved.is_none() && found.json_end == found.text.len();
        (whole && found.json_end <= MAX_TEMPLATE_BYTES).then(|| Template {
            chunk: InShape {
                // A copy: the upstream's read the chunk came in is not kept with it.
                text: Bytes::copy_from_slice(&found.text),
                ..found.clone()
            },
            content,
        })
    }

    /// Takes `event` when it is this template's text with another `content` string; gives
    /// it back otherwise.
    fn read(&self, event: SseEvent) -> Result<InShape, SseEvent> {
        match self.read_text(&event) {
            Some((end, text_bytes)) => Ok(self.chunk(event.data, end, text_bytes)),
            None => Err(event),
        }
    }

    /// Where the event's `content` string ends and its length unescaped, when the event is
    /// the template's text around another string.
    fn read_text(&self, event: &SseEvent) -> Option<(usize, usize)> {
        event.event.is_none().then_some(())?;
        let (text, template) = (&event.data, &self.chunk.text);
        let (before, after) = (
            &template[..self.content.start],
            &template[self.content.end..],
        );
        // The string takes two bytes at least, so `before` and `after` cannot overlap.
        let end = text.len().checked_sub(after.len())?;
        (end >= before.len() + 2 && text.starts_with(before) && text.ends_with(after))
            .then_some(())?;
        (text[before.len()] == b'"').then_some(())?;
        // The template's bytes around it are UTF-8 and end and start at a character's
        // boundary (the string's quotes): the event is UTF-8 when the string is.
        let string = &text[before.len()..end];
        if let Some(text_bytes) = json_reader::plain_ascii_string(string) {
            return Some((end, text_bytes));
        }
        let string = simdutf8::basic::from_utf8(string).ok()?;
        let mut reader = Reader::new(string);
        let text_bytes = reader.string()?;
        (reader.at() == string.len()).then_some((end, text_bytes))
    }

    /// The chunk in shape `text`, whose `content` string ends at `end`: the template's, but
    /// for the offsets after the string, which move with its end.
    fn chunk(&self, text: Bytes, end: usize, text_bytes: usize) -> InShape {
        let template = &self.chunk;
        let shift = (end != self.content.end).then_some((self.content.end, end));
        InShape {
            json_end: text.len(),
            text,
            members: template.members.clone(),
            moved: shift,
            assistant: template.assistant,
            id: template.id.as_ref().map(|id| moved(id, shift)),
            created: template.created,
            finished: template.finished,
            text_bytes: text_bytes as u64,
        }
    }
}

/// `range` as [`InShape::moved`] says: offsets at and after `from` start at `to` instead.
fn moved(range: &Range<usize>, shift: Option<(usize, usize)>) -> Range<usize> {
    let at = |offset: usize| match shift {
        Some((from, to)) if offset >= from => offset - from + to,
        _ => offset,
    };
    at(range.start)..at(range.end)
}

/// What [`InShape::read_event`] knows of an event before reading it.
#[derive(Clone, Copy)]
enum Known<'a> {
    /// Nothing, and nothing is to be kept.
    Nothing,
    /// Nothing; its leading members are wanted, for the chunks after it.
    WantLeading,
    /// It begins with these leading members.
    Leading(&'a Leading),
}

/// The most bytes of a chunk's leading members a [`ChunkScanner`] keeps.
const MAX_LEADING_BYTES: usize = 1024;

/// A chunk in shape's members before `"choices"`, as text and as read.
#[derive(Debug)]
struct Leading {
    /// The chunk's text up to its `"choices"` key: `{`, the members, each followed by `,`.
    text: String,
    /// Each member's key: where its opening quote is, and its length.
    keys: Vec<(usize, usize)>,
    /// The members among them passed on as written.
    kept: Vec<Range<usize>>,
    /// The `id` string and `created` among them, as read.
    id: Option<Range<usize>>,
    created: Option<i64>,
}

impl Leading {
    /// The members before `"choices"` of the chunk in shape `text`, read as `read`; `None`
    /// when there are none or they take more than [`MAX_LEADING_BYTES`].
    fn of(text: &str, read: &ChunkRead, keys: &Keys<'_>) -> Option<Leading> {
        let leading = text
            .get(..read.choices_key)
            .filter(|t| t.len() <= MAX_LEADING_BYTES)?;
        let count = read.keys_before_choices;
        (count > 0).then(|| Leading {
            text: leading.to_owned(),
            keys: keys.spans(count),
            kept: read.kept[..read.choices_at].to_vec(),
            id: read.id.clone().filter(|id| id.end <= read.choices_key),
            created: read.created.filter(|_| read.created_before_choices),
        })
    }
}

/// Writes `"created":N,"model":"M"`, as the slow path's types write them.
pub(crate) fn write_created_and_model(out: &mut Vec<u8>, created: i64, model: &str) {
    out.extend_from_slice(b"\"created\":");
    out.extend_from_slice(itoa::Buffer::new().format(created).as_bytes());
    out.extend_from_slice(b",\"model\":");
    // Writing into a Vec cannot fail.
    serde_json::to_writer(out, model).unwrap_or_default();
}

/// The most members an object (a chunk, an answer, a usage) may have on the fast path.
const MAX_MEMBERS: usize = 24;

/// The keys of an object read so far, to refuse one named twice or more than
/// [`MAX_MEMBERS`] (on the stack: this runs for every chunk and answer).
#[derive(Default)]
struct Keys<'a> {
    seen: [&'a str; MAX_MEMBERS],
    /// Where each key's opening quote is.
    starts: [usize; MAX_MEMBERS],
    count: usize,
}

impl<'a> Keys<'a> {
    /// Notes `key`, whose opening quote is at `start`; `None` when it was seen already or
    /// there is no room left.
    fn first(&mut self, key: &'a str, start: usize) -> Option<()> {
        (!self.seen[..self.count].contains(&key)).then_some(())?;
        *self.seen.get_mut(self.count)? = key;
        self.starts[self.count] = start;
        self.count += 1;
        Some(())
    }

    /// The first `count` keys noted: where each one's opening quote is, and its length.
    fn spans(&self, count: usize) -> Vec<(usize, usize)> {
        let keys = self
            .seen
            .iter()
            .zip(&self.starts)
            .take(count.min(self.count));
        keys.map(|(key, &start)| (start, key.len())).collect()
    }
}

/// A chunk read by [`read_chunk`].
struct ChunkRead {
    /// How many of its top-level keys come before `choices`.
    keys_before_choices: usize,
    /// The members passed on as written (`"key":value`), in the upstream's order.
    kept: Vec<Range<usize>>,
    /// Which of them is `choices`.
    choices_at: usize,
    /// Where the `"choices"` key starts.
    choices_key: usize,
    /// At least one, at most [`MAX_CHOICES`].
    choices: Vec<ChoiceMark>,
    /// The `id` string, quotes included, and the `created` timestamp, when there are.
    id: Option<Range<usize>>,
    created: Option<i64>,
    /// Whether `created` (when there is one) comes before `choices`.
    created_before_choices: bool,
}

/// Reads a chunk in one pass, or `None` when it is not in shape: its members are `id`,
/// `object` and `model` (each a string or `null`), `created` (a timestamp or `null`),
/// `usage: null`, `choices`, and others passed on as written; no `error` and no member named
/// twice. `id`, `object`, `created` and `model` are written anew by the normalizer, and a
/// `usage: null` is dropped (as the slow path does), so they are not kept. When `leading`
/// is given, the text begins with its text, and the read starts after it.
/// Its top-level keys are noted in `keys`.
fn read_chunk<'a>(
    text: &'a str,
    leading: Option<&Leading>,
    keys: &mut Keys<'a>,
) -> Option<ChunkRead> {
    let mut reader = Reader::new(text);
    let mut kept = Vec::with_capacity(4);
    let (mut id, mut created) = (None, None);
    if let Some(leading) = leading {
        for &(start, len) in &leading.keys {
            keys.first(text.get(start + 1..start + 1 + len)?, start)?;
        }
        kept.extend_from_slice(&leading.kept);
        (id, created) = (leading.id.clone(), leading.created);
    }
    let mut choices = None;
    let member = |reader: &mut Reader<'_>, key, start| {
        keys.first(key, start)?;
        match key {
            "id" => {
                reader.skip_whitespace();
                let start = reader.at();
                if reader.string_or_null()?.is_some() {
                    id = Some(start..reader.at());
                }
                Some(())
            }
            "object" | "model" => reader.string_or_null().map(drop),
            "created" => {
                created = read_created(reader)?;
                Some(())
            }
            "usage" => reader.null(),
            "error" => None,
            "choices" => {
                let before = keys.count - 1;
                choices = Some((before, kept.len(), start, read_choices(reader)?));
                kept.push(start..reader.at());
                Some(())
            }
            _ => {
                reader.value()?;
                kept.push(start..reader.at());
                Some(())
            }
        }
    };
    match leading {
        Some(leading) => reader.object_from(leading.text.len(), member)?,
        None => reader.object(member)?,
    }
    reader.at_end().then_some(())?;
    let (keys_before_choices, choices_at, choices_key, choices) = choices?;
    let created_before_choices = keys.seen[..keys_before_choices].contains(&"created");
    Some(ChunkRead {
        keys_before_choices,
        kept,
        choices_at,
        choices_key,
        choices,
        id,
        created,
        created_before_choices,
    })
}

/// A `created` the slow path takes: `null` or a [`Timestamp`].
fn read_created(reader: &mut Reader) -> Option<Option<i64>> {
    if reader.null().is_some() {
        return Some(None);
    }
    let number = reader.number_text()?;
    // A plain count of seconds fits an `i64`; any other number is read as the slow path
    // reads it.
    if number.len() <= 18 && number.bytes().all(|b| b.is_ascii_digit()) {
        return number.parse().ok().map(Some);
    }
    serde_json::from_str::<Timestamp>(number)
        .ok()
        .map(|t| Some(t.into()))
}

/// The choices: at least one, at most [`MAX_CHOICES`].
fn read_choices(reader: &mut Reader) -> Option<Vec<ChoiceMark>> {
    let mut marks = Vec::with_capacity(1);
    reader.array(|reader| {
        (marks.len() < MAX_CHOICES as usize).then_some(())?;
        marks.push(read_choice(reader)?);
        Some(())
    })?;
    (!marks.is_empty()).then_some(marks)
}

/// One choice, as far as the fast path reads it (other members pass as written).
struct ChoiceMark {
    /// The choice's object in the text.
    extent: Range<usize>,
    index: u32,
    /// Whether it has a `finish_reason` that is not `null`.
    finished: bool,
    /// Bytes of its `content`, unescaped.
    text_bytes: usize,
    /// Where its `content` string is, quotes included.
    content: Option<Range<usize>>,
    /// Whether its delta has `"role":"assistant"`.
    assistant: bool,
    /// Its delta's members, when the slow path leaves some out (a `null` `content` or
    /// `refusal`).
    delta: Option<DeltaMembers>,
    /// Which members it lacks that the slow path always writes.
    lacks_finish_reason: bool,
    lacks_logprobs: bool,
}

impl ChoiceMark {
    /// Whether the choice goes out other than as written.
    fn is_rewritten(&self) -> bool {
        self.lacks_finish_reason || self.lacks_logprobs || self.delta.is_some()
    }
}

/// A choice: an object with an `index` and a `delta`, a `finish_reason` (when there) that is
/// a string or `null`, a `logprobs` (when there) of any value, and no known member twice.
fn read_choice(reader: &mut Reader) -> Option<ChoiceMark> {
    reader.skip_whitespace();
    let start = reader.at();
    let (mut index, mut delta, mut finish_reason, mut logprobs) = (None, None, None, None);
    reader.object(|reader, key, _| match key {
        "index" => once(&mut index, reader.index()?),
        "delta" => once(&mut delta, read_delta(reader)?),
        "finish_reason" => once(&mut finish_reason, reader.string_or_null()?),
        "logprobs" => once(&mut logprobs, reader.value()?),
        _ => reader.value(),
    })?;
    let Delta {
        text_bytes,
        content,
        assistant,
        members,
    } = delta?;
    Some(ChoiceMark {
        extent: start..reader.at(),
        index: index?,
        finished: finish_reason.flatten().is_some(),
        text_bytes,
        content,
        assistant,
        delta: members,
        lacks_finish_reason: finish_reason.is_none(),
        lacks_logprobs: logprobs.is_none(),
    })
}

/// A delta as far as the fast path reads it.
struct Delta {
    /// Bytes of its `content`, unescaped.
    text_bytes: usize,
    /// Where its `content` string is, quotes included.
    content: Option<Range<usize>>,
    /// Whether it has `"role":"assistant"`.
    assistant: bool,
    /// Its members, when it has some the slow path leaves out.
    members: Option<DeltaMembers>,
}

/// A delta with members the slow path leaves out.
#[derive(Debug)]
struct DeltaMembers {
    /// The delta's object, braces included.
    object: Range<usize>,
    /// The members it keeps (`"key":value`), in order.
    kept: Vec<Range<usize>>,
}

/// The most members of a delta that leaves some out (any number when it leaves none out).
const MAX_DELTA_MEMBERS: usize = 8;

/// A delta whose `role` is a string, whose `content` and `refusal` are strings or `null` (the
/// slow path leaves a `null` one out), and that makes no tool or function call.
fn read_delta(reader: &mut Reader) -> Option<Delta> {
    let (mut role, mut content, mut refusal) = (None, None, None);
    // Each member (where it is, and whether it is left out), up to the bound.
    let mut members: [(Range<usize>, bool); MAX_DELTA_MEMBERS] =
        std::array::from_fn(|_| (0..0, false));
    let (mut count, mut dropping) = (0usize, false);
    reader.skip_whitespace();
    let object_start = reader.at();
    reader.object(|reader, key, member_start| {
        reader.skip_whitespace();
        let start = reader.at();
        let left_out = match key {
            "role" => {
                reader.string()?;
                once(&mut role, reader.text(start) == Some("\"assistant\""))?;
                false
            }
            "content" | "refusal" => {
                let string = reader.string_or_null()?;
                let slot = if key == "content" {
                    &mut content
                } else {
                    &mut refusal
                };
                once(slot, string.map(|len| (len, start..reader.at())))?;
                string.is_none()
            }
            "tool_calls" | "function_call" => return None,
            _ => {
                reader.value()?;
                false
            }
        };
        dropping |= left_out;
        if let Some(slot) = members.get_mut(count) {
            *slot = (member_start..reader.at(), left_out);
        }
        count += 1;
        Some(())
    })?;
    let members = match dropping {
        false => None,
        true => Some(DeltaMembers {
            object: object_start..reader.at(),
            kept: (members.get(..count)?.iter())
                .filter(|(_, left_out)| !left_out)
                .map(|(member, _)| member.clone())
                .collect(),
        }),
    };
    let (text_bytes, content) = content
        .flatten()
        .map_or((0, None), |(len, at)| (len, Some(at)));
    Some(Delta {
        text_bytes,
        content,
        assistant: role == Some(true),
        members,
    })
}

/// Fills `slot`, which must still be empty: a member named twice is not in shape.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

mod answer;

#[cfg(test)]
mod tests;

pub use answer::AnswerInShape;
