//! Scrubbing secret values out of what an action printed, in the forms a program prints them:
//! as they are, and JSON-escaped (`"` and `\` escaped, control characters as `\n` or `\u0001`,
//! and with non-ASCII as `\uXXXX`, Python's default), also twice (JSON inside a JSON string). Every leaf string of a structured secret is
//! a secret of its own. Output that streams (`--follow`) is scrubbed as it comes: a tail that
//! could be the start of a secret is held back until the next chunk says what it is.
//!
//! What cannot be caught: a secret printed transformed (base64, hex, reversed, upper-cased,
//! hashed), split across separate prints with other text between, or shorter than three
//! characters. Scrubbing is a net for accidents, not a boundary: an action that holds a secret
//! can always print it in some form packbox does not recognise.

use std::borrow::Cow;
use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

/// What replaces a secret in an outcome.
pub const REDACTED: &str = "***";
/// Secret values shorter than this are not scrubbed from output: replacing every `a` or `1`
/// would destroy the output and reveal more than it hides.
const MIN_SCRUBBED_LEN: usize = 3;

/// Secret values too many or too large to look for (beyond what the size caps on secrets and
/// parameters allow).
#[derive(Debug, thiserror::Error)]
#[error("secret values are too many or too large to scrub from output")]
pub struct TooManySecrets;

/// Scrubs known secret values out of texts, bytes and JSON values.
#[derive(Clone, Default)]
pub struct Redactor {
    /// The secrets as given, each a text.
    secrets: Vec<String>,
    /// Every printed form of every secret, longest first.
    needles: Vec<String>,
    /// Finds them all in one pass, preferring the longest at a position, so that a secret
    /// containing another is replaced whole. `None` when there is nothing to find.
    matcher: Option<AhoCorasick>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secret forms)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor for these secret values: strings, every leaf string or number of objects and
    /// lists, and the compact JSON text of those, each in every printed form.
    pub fn new<'v>(
        values: impl IntoIterator<Item = &'v Value>,
    ) -> Result<Redactor, TooManySecrets> {
        Redactor::default().extended(values)
    }

    /// This redactor, also scrubbing `values`.
    pub fn extended<'v>(
        &self,
        values: impl IntoIterator<Item = &'v Value>,
    ) -> Result<Redactor, TooManySecrets> {
        let mut secrets = self.secrets.clone();
        for value in values {
            collect_secrets(value, &mut secrets);
        }
        secrets.retain(|secret| secret.chars().count() >= MIN_SCRUBBED_LEN);
        secrets.sort();
        secrets.dedup();
        let mut needles: Vec<String> = secrets.iter().flat_map(|s| printed_forms(s)).collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        let matcher = match needles.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&needles)
                    .map_err(|_| TooManySecrets)?,
            ),
        };
        Ok(Redactor {
            secrets,
            needles,
            matcher,
        })
    }

    /// Whether there is anything to scrub.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The text with every secret replaced.
    /// Takes the text by value: with nothing to scrub (the usual case) it comes back without a
    /// copy, which matters for 10 MiB of captured output.
    pub fn text(&self, text: String) -> String {
        match &self.matcher {
            Some(matcher) if matcher.is_match(&text) => {
                matcher.replace_all(&text, &vec![REDACTED; self.needles.len()])
            }
            _ => text,
        }
    }

    /// The bytes with every secret replaced.
    pub fn bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        match &self.matcher {
            Some(matcher) if matcher.is_match(bytes) => Cow::Owned(
                matcher.replace_all_bytes(bytes, &vec![REDACTED.as_bytes(); self.needles.len()]),
            ),
            _ => Cow::Borrowed(bytes),
        }
    }

    /// Scrubs the value in place: every string, every object key (an action may print a
    /// secret as a key) and every number (a secret PIN printed as a JSON number). A number that
    /// holds a secret becomes the scrubbed text of its digits; keys that scrub to the same text
    /// are kept apart (`***`, `***#2`, ...), so no value is lost.
    pub fn value(&self, value: &mut Value) {
        let Some(matcher) = &self.matcher else {
            return;
        };
        match value {
            Value::String(s) => *s = self.text(std::mem::take(s)),
            Value::Number(n) => {
                let digits = n.to_string();
                if matcher.is_match(&digits) {
                    *value = Value::String(self.text(digits));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.value(item)),
            Value::Object(map) => {
                map.values_mut().for_each(|item| self.value(item));
                if map.keys().any(|key| matcher.is_match(key)) {
                    let entries = std::mem::take(map);
                    for (key, item) in entries {
                        let key = self.text(key);
                        let mut unique = key.clone();
                        let mut count = 1;
                        while map.contains_key(&unique) {
                            count += 1;
                            unique = format!("{key}#{count}");
                        }
                        map.insert(unique, item);
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// How many bytes at the end of `bytes` could be the start of a secret (a proper prefix of
    /// one of its forms): what must be held back from a stream, or dropped where output was cut.
    pub fn partial_secret_len(&self, bytes: &[u8]) -> usize {
        self.needles
            .iter()
            .map(|needle| overlap(bytes, needle.as_bytes()))
            .max()
            .unwrap_or(0)
    }

    /// Where the first secret that crosses `cut` starts, if one does.
    fn match_across(&self, bytes: &[u8], cut: usize) -> Option<usize> {
        let matcher = self.matcher.as_ref()?;
        matcher
            .find_iter(bytes)
            .take_while(|found| found.start() < cut)
            .find(|found| found.end() > cut)
            .map(|found| found.start())
    }
}

/// The longest proper prefix of `needle` that `bytes` ends with.
fn overlap(bytes: &[u8], needle: &[u8]) -> usize {
    let longest = needle.len().saturating_sub(1).min(bytes.len());
    (1..=longest)
        .rev()
        .find(|&k| bytes.ends_with(&needle[..k]))
        .unwrap_or(0)
}

/// The scalar texts of a secret value: a string or number itself; for objects and lists their
/// compact JSON text and each leaf.
fn collect_secrets(value: &Value, secrets: &mut Vec<String>) {
    match value {
        Value::String(s) => secrets.push(s.clone()),
        Value::Number(n) => secrets.push(n.to_string()),
        Value::Array(items) => {
            secrets.push(value.to_string());
            items.iter().for_each(|item| collect_secrets(item, secrets));
        }
        Value::Object(map) => {
            secrets.push(value.to_string());
            map.values().for_each(|item| collect_secrets(item, secrets));
        }
        // `true` or nothing is no secret that could be found in text.
        Value::Null | Value::Bool(_) => {}
    }
}

/// A secret as programs print it: as is, inside a JSON string, inside a JSON string with
/// non-ASCII escaped (Python's `ensure_ascii`; lower- and upper-case hex), and each of those
/// inside a JSON string once more (a JSON document printed as a string of another).
fn printed_forms(secret: &str) -> Vec<String> {
    let escapes = |text: &str| {
        let escaped = json_escaped(text);
        [
            ascii_escaped(&escaped, false),
            ascii_escaped(&escaped, true),
            escaped,
        ]
    };
    let mut forms = vec![secret.to_string()];
    for once in escapes(secret) {
        forms.extend(escapes(&once));
        forms.push(once);
    }
    forms.sort();
    forms.dedup();
    forms
}

/// The text as it stands between the quotes of a JSON string.
fn json_escaped(text: &str) -> String {
    let quoted = Value::String(text.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// JSON-escaped text with every non-ASCII character as `\uXXXX` (UTF-16 units).
fn ascii_escaped(escaped: &str, upper_hex: bool) -> String {
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            match upper_hex {
                true => out.push_str(&format!("\\u{unit:04X}")),
                false => out.push_str(&format!("\\u{unit:04x}")),
            }
        }
    }
    out
}

/// Scrubs one output stream as it arrives, chunk by chunk, for live display. Bytes that could
/// still turn out to be a secret (the start of one at the end of a chunk, or a secret cut by
/// the chunk boundary) are held back until the next chunk; held bytes are bounded by twice the
/// longest secret form. What it shows, chunk after chunk, is what scrubbing the whole output at
/// once shows.
#[derive(Debug, Default)]
pub struct StreamScrubber {
    redactor: Redactor,
    pending: Vec<u8>,
}

impl StreamScrubber {
    /// A scrubber for one stream.
    pub fn new(redactor: Redactor) -> StreamScrubber {
        StreamScrubber {
            redactor,
            pending: Vec::new(),
        }
    }

    /// Takes the next chunk; returns what can be shown now, scrubbed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.redactor.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let pending = &self.pending;
        let mut cut = pending.len() - self.redactor.partial_secret_len(pending);
        if let Some(start) = self.redactor.match_across(pending, cut) {
            cut = start;
        }
        let shown = self.redactor.bytes(&pending[..cut]).into_owned();
        self.pending.drain(..cut);
        shown
    }

    /// What was held back at the end of the stream, scrubbed.
    pub fn finish(self) -> Vec<u8> {
        self.redactor.bytes(&self.pending).into_owned()
    }
}

/// Replaces the fields of a parsed result that the action's output schema marks `secret: true`,
/// and returns the values it replaced (to scrub them from the raw output too). The schema is
/// flat (`{field: {type, secret}}`) or JSON Schema (`{properties: {field: ...}}`).
pub fn redact_secret_fields(result: &mut Value, output_schema: Option<&Value>) -> Vec<Value> {
    let mut replaced = Vec::new();
    let Some(schema) = output_schema else {
        return replaced;
    };
    let fields = schema
        .get("properties")
        .and_then(Value::as_object)
        .or_else(|| schema.as_object());
    let (Some(fields), Some(object)) = (fields, result.as_object_mut()) else {
        return replaced;
    };
    for (name, spec) in fields {
        if spec.get("secret").and_then(Value::as_bool) == Some(true)
            && let Some(value) = object.get_mut(name)
        {
            replaced.push(std::mem::replace(value, Value::String(REDACTED.into())));
        }
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn text(redactor: &Redactor, text: &str) -> String {
        redactor.text(text.to_string())
    }

    #[test]
    fn redactor_scrubs_texts_and_values_but_not_tiny_secrets() {
        let values = [
            json!("hunter2"),
            json!("hunter22"),
            json!(""),
            json!("ab"),
            json!(123456),
        ];
        let redactor = Redactor::new(values.iter()).expect("builds");
        assert_eq!(text(&redactor, "pw=hunter22 pw=hunter2"), "pw=*** pw=***");
        assert_eq!(text(&redactor, "ab and empty stay"), "ab and empty stay");
        let mut value = json!({"a": ["id 123456"], "b": 7});
        redactor.value(&mut value);
        assert_eq!(value, json!({"a": ["id ***"], "b": 7}));
    }

    #[test]
    fn secrets_as_keys_and_numbers_are_scrubbed_without_losing_entries() {
        let values = [json!("4821"), json!("TOPSECRET-KEY")];
        let redactor = Redactor::new(values.iter()).expect("builds");
        let mut value = json!({
            "TOPSECRET-KEY": 1,
            "***": 2,
            "pin": 4821,
            "long": 99482100,
            "nested": [{"TOPSECRET-KEY": "x"}],
            "other": 7,
        });
        redactor.value(&mut value);
        // Which of the two colliding keys keeps `***` depends on the map's order.
        let mut collided = [value["***"].clone(), value["***#2"].clone()];
        collided.sort_by_key(|v| v.as_i64());
        assert_eq!(collided, [json!(1), json!(2)]);
        assert_eq!(value["pin"], "***");
        assert_eq!(value["long"], "99***00");
        assert_eq!(value["nested"], json!([{"***": "x"}]));
        assert_eq!(value["other"], 7);
        assert_eq!(value.as_object().map(|m| m.len()), Some(6));
    }
    #[test]
    fn every_leaf_of_a_structured_secret_is_scrubbed() {
        let secret = json!({"inner": "s3cr3t-inner", "list": ["leaf-two", 987654], "flag": true});
        let redactor = Redactor::new([&secret]).expect("builds");
        assert_eq!(
            text(&redactor, "inner=s3cr3t-inner two=leaf-two n=987654 true"),
            "inner=*** two=*** n=*** true"
        );
        assert_eq!(text(&redactor, &secret.to_string()), "***");
    }

    #[test]
    fn json_escaped_and_ascii_escaped_forms_are_scrubbed() {
        let redactor = Redactor::new([&json!("pa\"ss\\wörd😀\n")]).expect("builds");
        for printed in [
            r#"{"p": "pa\"ss\\wörd😀\n"}"#,
            r#"{"p": "pa\"ss\\w\u00f6rd\ud83d\ude00\n"}"#,
            r#"{"p": "pa\"ss\\w\u00F6rd\uD83D\uDE00\n"}"#,
            r#"{"doc": "{\"p\": \"pa\\\"ss\\\\w\\u00f6rd\\ud83d\\ude00\\n\"}"}"#,
            "raw: pa\"ss\\wörd😀\n",
        ] {
            let scrubbed = text(&redactor, printed);
            assert!(!scrubbed.contains("rd"), "{printed} -> {scrubbed}");
            assert!(scrubbed.contains(REDACTED), "{printed} -> {scrubbed}");
        }
    }

    #[test]
    fn a_longer_secret_wins_over_one_it_contains() {
        let redactor = Redactor::new([&json!("abc"), &json!("abcdef")]).expect("builds");
        assert_eq!(text(&redactor, "xabcdefy xabcy"), "x***y x***y");
    }

    #[test]
    fn partial_secrets_are_measured_at_the_end() {
        let redactor = Redactor::new([&json!("secret-value")]).expect("builds");
        assert_eq!(redactor.partial_secret_len(b"output sec"), 3);
        assert_eq!(redactor.partial_secret_len(b"output secret-valu"), 11);
        assert_eq!(redactor.partial_secret_len(b"output secret-value"), 0);
        assert_eq!(redactor.partial_secret_len(b"nothing"), 0);
        assert_eq!(Redactor::default().partial_secret_len(b"x"), 0);
    }

    #[test]
    fn streams_hold_back_only_what_could_be_a_secret() {
        let mut stream = StreamScrubber::new(Redactor::new([&json!("hunter2")]).expect("builds"));
        assert_eq!(stream.push(b"line one\npw=hun"), b"line one\npw=");
        assert_eq!(stream.push(b"ter2 done\nhu"), b"*** done\n");
        assert_eq!(stream.push(b"go"), b"hugo");
        assert_eq!(stream.finish(), b"");
        let mut plain = StreamScrubber::new(Redactor::default());
        assert_eq!(plain.push(b"as is"), b"as is");
    }

    proptest! {
        /// However output is cut into chunks, the stream shows what scrubbing it whole shows.
        #[test]
        fn streaming_equals_scrubbing_the_whole(
            output in "[abc\\n]{0,60}",
            cuts in prop::collection::vec(0usize..60, 0..8),
        ) {
            let redactor = Redactor::new([&json!("abcab"), &json!("bca"), &json!("cc\nc")]).expect("builds");
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= output.len()).collect();
            cuts.sort();
            let mut stream = StreamScrubber::new(redactor.clone());
            let mut shown = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([output.len()]) {
                shown.extend(stream.push(&output.as_bytes()[from..cut]));
                from = cut;
            }
            shown.extend(stream.finish());
            prop_assert_eq!(String::from_utf8(shown).expect("utf-8"), redactor.text(output.clone()));
        }
    }

    #[test]
    fn output_fields_marked_secret_are_redacted_in_both_schema_styles() {
        let mut result = json!({"token": "t", "user": "u"});
        redact_secret_fields(
            &mut result,
            Some(&json!({"token": {"type": "string", "secret": true}})),
        );
        assert_eq!(result, json!({"token": "***", "user": "u"}));
        let mut result = json!({"token": "t", "user": "u"});
        let schema = json!({"type": "object", "properties": {"user": {"secret": true}}});
        redact_secret_fields(&mut result, Some(&schema));
        assert_eq!(result, json!({"token": "t", "user": "***"}));
    }
}
