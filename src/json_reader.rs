//! A strict JSON reader for the fast paths (a chunk, a whole answer, a request body forwarded
//! as the client wrote it): it walks the text once, copies nothing, and checks every value it
//! passes over.
//!
//! It is conservative by design. What it accepts is valid JSON (RFC 8259) that serde_json
//! reads the same way; some valid JSON it declines (a `\u` escape naming a lone surrogate,
//! nesting deeper than [`MAX_DEPTH`]), and then the caller takes its slow path, which
//! serde_json reads. Declining costs time, never correctness. Property tests hold it to
//! serde_json.

/// The deepest nesting of arrays and objects the reader follows.
const MAX_DEPTH: usize = 32;

/// The bytes a string's fast loop stops at: the closing quote, a backslash, and the control
/// characters JSON forbids in strings.
static STOPS_A_STRING: [bool; 256] = {
    let mut stops = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        stops[byte] = true;
        byte += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// How many bytes at the start of `text` a string takes as they are: the offset of the first
/// byte in [`STOPS_A_STRING`], or `None` when there is none. Eight bytes at a time: a byte
/// that equals `"` or `\\`, or is below 0x20, sets its high bit in `found`. A borrow can only
/// set a bit above a byte that is found, so the lowest bit set is the first such byte.
fn plain_run(text: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut at = 0;
    while let Some(word) = text.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().ok()?);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let found = (zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            | below_space)
            & HIGH_BITS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = text[at..]
        .iter()
        .position(|&b| STOPS_A_STRING[usize::from(b)])?;
    Some(at + rest)
}

/// The length of `string` when it is one JSON string of ASCII without escapes, the usual
/// text of a chunk (taken without a check of UTF-8 first); `None` for any other bytes.
pub(crate) fn plain_ascii_string(string: &[u8]) -> Option<usize> {
    let inner = string.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (plain_run(inner).is_none() && inner.is_ascii()).then_some(inner.len())
}

/// A position in a JSON text. Every method returns `None` for text it does not take, and
/// then the reader's position means nothing.
pub(crate) struct Reader<'a> {
    /// The text, for slices of it that are `str` (no check of UTF-8 needed).
    source: &'a str,
    text: &'a [u8],
    at: usize,
    /// How many numbers read so far have a fraction or an exponent.
    fractional_numbers: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Reader {
            source: text,
            text: text.as_bytes(),
            at: 0,
            fractional_numbers: 0,
        }
    }

    /// Where the reader is, as a byte offset into the text.
    pub(crate) fn at(&self) -> usize {
        self.at
    }

    /// How many numbers read so far have a fraction or an exponent.
    pub(crate) fn fractional_numbers(&self) -> usize {
        self.fractional_numbers
    }

    /// Skips JSON whitespace.
    pub(crate) fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_whitespace();
        self.at == self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// Takes `byte`, after whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Reads an object, calling `member` with each key (one without escapes, borrowed: an
    /// object with another key is declined) and where its opening quote is; `member` must
    /// read the value. Whitespace is skipped first.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str, usize) -> Option<()>,
    ) -> Option<()> {
        self.members(|reader, key, start| member(reader, key?, start))
    }

    /// Reads an object, calling `member` with each key (`None` for one with escapes) and
    /// where its opening quote is.
    fn members(
        &mut self,
        member: impl FnMut(&mut Self, Option<&'a str>, usize) -> Option<()>,
    ) -> Option<()> {
        if self.open(b'{', b'}')? {
            return Some(());
        }
        self.more_members(member)
    }

    /// Goes on reading an object's members at `at`, just after a `,` that follows a member,
    /// as [`Reader::object`] does.
    pub(crate) fn object_from(
        &mut self,
        at: usize,
        mut member: impl FnMut(&mut Self, &'a str, usize) -> Option<()>,
    ) -> Option<()> {
        self.at = at;
        self.more_members(|reader, key, start| member(reader, key?, start))
    }

    /// The members of an object from the next key to the closing `}`.
    fn more_members(
        &mut self,
        mut member: impl FnMut(&mut Self, Option<&'a str>, usize) -> Option<()>,
    ) -> Option<()> {
        loop {
            self.skip_whitespace();
            let start = self.at;
            let key = self.key()?;
            self.expect(b':')?;
            member(self, key, start)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    /// Reads an array, calling `element` for each element (which it must read). Whitespace
    /// is skipped first.
    pub(crate) fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.open(b'[', b']')? {
            return Some(());
        }
        loop {
            element(self)?;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// Takes `open` (after whitespace), and `close` right after it: whether the object or
    /// array is empty.
    fn open(&mut self, open: u8, close: u8) -> Option<bool> {
        self.expect(open)?;
        self.skip_whitespace();
        let empty = self.peek()? == close;
        if empty {
            self.at += 1;
        }
        Some(empty)
    }

    /// After a member or element: takes a `,` (another follows: `true`) or `close` (the end:
    /// `false`), after whitespace.
    fn more(&mut self, close: u8) -> Option<bool> {
        self.skip_whitespace();
        let byte = self.peek()?;
        self.at += 1;
        match byte {
            b',' => Some(true),
            _ => (byte == close).then_some(false),
        }
    }

    /// A key: `Some` when it has no escapes (then it is borrowed), `None` inside otherwise.
    fn key(&mut self) -> Option<Option<&'a str>> {
        let start = self.at;
        let len = self.string()?;
        // Between the quotes, which are ASCII, so the slice is on character boundaries.
        let inner = self.source.get(start + 1..self.at - 1)?;
        // Without escapes the text is as long as the key.
        Some((inner.len() == len).then_some(inner))
    }

    /// Reads a string (after whitespace) and gives its length unescaped, in bytes.
    pub(crate) fn string(&mut self) -> Option<usize> {
        self.expect(b'"')?;
        let mut len = 0usize;
        loop {
            let plain = plain_run(self.text.get(self.at..)?)?;
            self.at += plain;
            len += plain;
            match self.text[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some(len);
                }
                b'\\' => {
                    self.at += 1;
                    len += self.escape()?;
                }
                _ => return None, // a control character
            }
        }
    }

    /// Reads one escape after its backslash and gives its length unescaped.
    fn escape(&mut self) -> Option<usize> {
        let kind = self.peek()?;
        self.at += 1;
        match kind {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
            b'u' => match self.hex4()? {
                0xD800..=0xDBFF => {
                    // Only a high surrogate followed by a low one names a character.
                    (self.text.get(self.at..self.at + 2)? == b"\\u").then_some(())?;
                    self.at += 2;
                    matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(4)
                }
                0xDC00..=0xDFFF => None,
                unit => Some(char::from_u32(unit.into())?.len_utf8()),
            },
            _ => None,
        }
    }

    /// Four hex digits.
    fn hex4(&mut self) -> Option<u16> {
        let digits = self.source.get(self.at..self.at + 4)?;
        // `from_str_radix` would take a sign.
        digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then_some(())?;
        self.at += 4;
        u16::from_str_radix(digits, 16).ok()
    }

    /// Reads a string or `null`: `Some(length)` for a string, `None` inside for `null`.
    pub(crate) fn string_or_null(&mut self) -> Option<Option<usize>> {
        self.skip_whitespace();
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        self.string().map(Some)
    }

    /// Reads `null`.
    pub(crate) fn null(&mut self) -> Option<()> {
        self.skip_whitespace();
        self.literal(b"null")
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.text.get(self.at..self.at + word.len())? == word).then(|| self.at += word.len())
    }

    /// Reads a count: a plain non-negative integer that fits a `u64` (no sign, fraction or
    /// exponent, which serde_json would also read but which no server sends).
    pub(crate) fn count(&mut self) -> Option<u64> {
        let text = self.number_text()?;
        text.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
        text.parse().ok()
    }

    /// Reads an index: a count that fits a `u32`.
    pub(crate) fn index(&mut self) -> Option<u32> {
        u32::try_from(self.count()?).ok()
    }

    /// The text from `start` to where the reader is.
    pub(crate) fn text(&self, start: usize) -> Option<&'a str> {
        self.source.get(start..self.at)
    }

    /// Reads a number (after whitespace) and gives its text.
    pub(crate) fn number_text(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let start = self.at;
        self.number()?;
        // A number is ASCII.
        self.source.get(start..self.at)
    }

    /// Reads a number by JSON's grammar: `-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let integer_end = self.at;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        if self.at > integer_end {
            self.fractional_numbers += 1;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// Reads any value (after whitespace).
    pub(crate) fn value(&mut self) -> Option<()> {
        self.value_within(MAX_DEPTH)
    }

    /// Reads any value (after whitespace) as [`Reader::value`] does, and declines one with an
    /// object that has a key with an escape or the same key twice. Such text reads two ways
    /// (serde_json keeps the last of two values, other parsers the first), so it must not be
    /// passed on as written. `keys` is room for the keys of the objects open at a time; what
    /// it held before is left as it was when the value is taken.
    pub(crate) fn value_with_unique_keys(&mut self, keys: &mut Vec<&'a str>) -> Option<()> {
        self.unique_within(MAX_DEPTH, keys)
    }

    fn unique_within(&mut self, depth: usize, keys: &mut Vec<&'a str>) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' => {
                let depth = depth.checked_sub(1)?;
                let first = keys.len();
                self.object(|reader, key, _| {
                    keys.push(key);
                    reader.unique_within(depth, keys)
                })?;
                let unique = all_different(&mut keys[first..]);
                keys.truncate(first);
                unique.then_some(())
            }
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.array(|reader| reader.unique_within(depth, keys))
            }
            _ => self.value_within(depth),
        }
    }

    fn value_within(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                let depth = depth.checked_sub(1)?;
                self.members(|reader, _, _| reader.value_within(depth))
            }
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.array(|reader| reader.value_within(depth))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }
}

/// Whether no two of `keys` are the same. A few keys (an object's usual count) are compared
/// pair by pair; more are sorted first.
pub(crate) fn all_different(keys: &mut [&str]) -> bool {
    const PAIRWISE_UP_TO: usize = 8;
    if keys.len() <= PAIRWISE_UP_TO {
        return keys
            .iter()
            .enumerate()
            .all(|(i, key)| !keys[..i].contains(key));
    }
    keys.sort_unstable();
    keys.windows(2).all(|pair| pair[0] != pair[1])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::de::IgnoredAny;
    use serde_json::Value;

    use super::*;

    /// Whether the reader takes `text` as one value.
    fn takes(text: &str) -> bool {
        let mut reader = Reader::new(text);
        reader.value().is_some() && reader.at_end()
    }

    #[test]
    fn valid_json_is_taken() {
        for text in [
            "0",
            "-0.5e+10",
            "12E3",
            " true ",
            "null",
            r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#,
            r#"{"a":[1,{"b":null}],"c":{}, "d" : [ ] }"#,
        ] {
            assert!(takes(text), "{text}");
        }
    }

    #[test]
    fn invalid_json_is_refused() {
        for text in [
            "",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"open",
            "\"a\u{1}b\"",
            r#""\x""#,
            r#""\u12g4""#,
            r#""\u+123""#,
            "[1,]",
            "[1 2]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{1:2}"#,
            "[1] x",
            "NaN",
        ] {
            assert!(!takes(text), "{text}");
            assert!(serde_json::from_str::<IgnoredAny>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn lone_surrogates_and_deep_nesting_are_declined() {
        assert!(!takes(r#""\ud800""#));
        assert!(!takes(r#""\udc00\ud800""#));
        assert!(!takes(r#""\ud800\u0041""#));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!takes(&deep));
        let within = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(takes(&within));
    }

    #[test]
    fn keys_with_escapes_are_declined_where_keys_are_read() {
        let mut reader = Reader::new(r#"{"a\u0062":1}"#);
        assert!(reader.object(|r, _, _| r.value()).is_none());
        assert!(
            takes(r#"{"a\u0062":1}"#),
            "a value's own keys may have escapes"
        );
        let mut keys = Vec::new();
        let mut reader = Reader::new(r#" { "ab" :1 ,"é":2}"#);
        let read = reader.object(|r, key, start| {
            keys.push((key, start));
            r.value()
        });
        assert!(read.is_some() && reader.at_end());
        assert_eq!(keys, [("ab", 3), ("é", 12)]);
    }

    #[test]
    fn values_with_a_key_twice_in_one_object_are_declined() {
        let unique = |text: &str| {
            let mut keys = Vec::new();
            let mut reader = Reader::new(text);
            let read = reader.value_with_unique_keys(&mut keys).is_some() && reader.at_end();
            assert!(!read || keys.is_empty(), "{text}: the room is left empty");
            read
        };
        for taken in [
            r#"{"a":1,"b":{"a":2,"b":[{"a":3},{"a":4}]}}"#,
            r#"[{"a":1},{"a":1}]"#,
            r#"{"ab":1,"a":2,"b":3,"ba":4}"#,
            r#"{}"#,
            r#""x""#,
        ] {
            assert!(unique(taken), "{taken}");
        }
        for declined in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{"c":2,"d":3,"c":4}}"#,
            r#"[1,{"x":{},"y":null,"x":[]}]"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"a":1,"b":2"#,
        ] {
            assert!(!unique(declined), "{declined}");
        }
    }

    #[test]
    fn numbers_with_a_fraction_or_an_exponent_are_counted() {
        let mut reader = Reader::new(r#"[0, -1, 2.5, "3.5", 1e3, 10, {"a": 4E-1}]"#);
        reader.value().unwrap();
        assert_eq!(reader.fractional_numbers(), 3);
    }

    #[test]
    fn an_index_is_a_plain_u32() {
        let index = |text: &str| Reader::new(text).index();
        assert_eq!(index(" 7"), Some(7));
        assert_eq!(index("4294967295"), Some(u32::MAX));
        for text in ["4294967296", "-1", "1.0", "1e2", "-0", "x"] {
            assert_eq!(index(text), None, "{text}");
        }
    }

    proptest! {
        /// Eight bytes at a time finds the byte that one at a time finds.
        #[test]
        fn a_plain_run_ends_at_the_first_stop(text in prop::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), Just(0x1f), Just(0x20), Just(b'a'), Just(0x80), Just(0xff), any::<u8>()],
            0..40,
        )) {
            let expected = text.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(plain_run(&text), expected);
        }

        /// A string taken without a check of UTF-8 is one the reader takes, as long.
        #[test]
        fn a_plain_ascii_string_is_a_string(inner in prop::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), Just(0x1f), Just(b'a'), Just(0xc3), Just(0xa9), any::<u8>()],
            0..24,
        )) {
            let string = [&b"\""[..], &inner, b"\""].concat();
            let taken = plain_ascii_string(&string);
            let plain = inner.iter().all(|&b| b.is_ascii() && b >= 0x20 && b != b'"' && b != b'\\');
            prop_assert_eq!(taken, plain.then_some(inner.len()));
            if let Some(len) = taken {
                let text = std::str::from_utf8(&string).expect("ASCII");
                let mut reader = Reader::new(text);
                prop_assert_eq!(reader.string(), Some(len));
                prop_assert_eq!(reader.at(), string.len());
            }
        }
    }

    #[test]
    fn only_plain_ascii_strings_are_taken_unchecked() {
        assert_eq!(plain_ascii_string(br#""Hello""#), Some(5));
        assert_eq!(plain_ascii_string(br#""""#), Some(0));
        for string in [
            &b"\"caf\xc3\xa9\""[..],
            br#""a\"b""#,
            br#""a"b""#,
            b"\"a\nb\"",
            br#""a"#,
            b"\"",
            b"",
        ] {
            assert_eq!(plain_ascii_string(string), None, "{string:?}");
        }
    }

    /// JSON text with the characters that matter to a reader, valid or not.
    fn json_like() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("{"),
                Just("}"),
                Just("["),
                Just("]"),
                Just(","),
                Just(":"),
                Just("\""),
                Just("\\"),
                Just("u"),
                Just("d83d"),
                Just("dc00"),
                Just("0"),
                Just("12"),
                Just("-"),
                Just("."),
                Just("e"),
                Just("true"),
                Just("null"),
                Just(" "),
                Just("\n"),
                Just("a"),
                Just("é"),
                Just("\u{1}"),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    /// Any JSON value, with strings holding escapes and characters beyond ASCII.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the reader takes, serde_json takes too.
        #[test]
        fn what_the_reader_takes_is_json(text in json_like()) {
            if takes(&text) {
                prop_assert!(serde_json::from_str::<IgnoredAny>(&text).is_ok(), "{}", text);
            }
        }

        /// The reader takes the JSON serde_json writes (without lone surrogates, which it
        /// cannot write from a `String`), compact or pretty.
        #[test]
        fn the_reader_takes_written_json(value in any_json()) {
            prop_assert!(takes(&serde_json::to_string(&value).unwrap()));
            prop_assert!(takes(&serde_json::to_string_pretty(&value).unwrap()));
        }

        /// A string's length is its length unescaped, whichever escapes it is written with.
        #[test]
        fn a_strings_length_is_unescaped(text in any::<String>(), ascii in any::<bool>()) {
            let written = if ascii {
                // Every character beyond ASCII as `\u` escapes (pairs above the BMP).
                let mut out = String::from("\"");
                for unit in text.encode_utf16() {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
                out + "\""
            } else {
                serde_json::to_string(&text).unwrap()
            };
            let mut reader = Reader::new(&written);
            prop_assert_eq!(reader.string(), Some(text.len()));
            prop_assert!(reader.at_end());
        }
    }
}
