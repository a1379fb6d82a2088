//! Parsing what an action printed (json, yaml, jsonl) into its result, in bounded memory.
//!
//! A parsed value takes far more memory than its text: a line `{"i":1}` of 8 bytes becomes a
//! map of about 700 bytes, so 8 MB of jsonl once took 700 MB. Values are therefore built under
//! a budget of estimated heap bytes; past it, a top-level list keeps its leading items (as the
//! captured streams keep their head) and anything else is left out, and the outcome says so.
//! Nesting is limited to [`MAX_DEPTH`] levels; YAML is checked before serde_yaml sees it, since
//! serde_yaml holds every event of a document in memory and libyaml slows down with depth.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::common::input::{MAX_DEPTH, YamlShape, yaml_shape};
use crate::pack::OutputFormat;

/// Estimated heap bytes a parsed result may take.
pub const MAX_RESULT_BYTES: usize = 32 << 20;
/// YAML documents with more nodes than this are not parsed: serde_yaml keeps every event of
/// a document (about 100 bytes each) before it builds the value.
const MAX_YAML_NODES: usize = 200_000;

/// Estimated heap cost of parts of a `serde_json::Value` (measured on x86-64: a value slot is
/// 32 bytes, a list slot up to 64 with the list's growth, a map's first B-tree node 640 bytes
/// and then about 170 bytes per entry with the key's `String`; strings round up to 16 bytes).
const LIST_ITEM_COST: usize = 64;
const MAP_COST: usize = 640;
const MAP_ENTRY_COST: usize = 176;
const STRING_COST: usize = 16;

/// A result parsed from an action's stdout.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// The parsed result; `None` for `text` output, an empty document, or stdout that did not parse
    /// (or was too large to keep any of).
    pub value: Option<Value>,
    /// The result was larger than [`MAX_RESULT_BYTES`]: only the leading items of a top-level
    /// list were kept, or nothing.
    pub truncated: bool,
    /// Why stdout could not be parsed (or not all of it), when it could not.
    pub error: Option<String>,
}

/// Parses stdout by the action's output format. A parse failure is not a failure of the action:
/// it leaves `value` empty and says why in `error`.
pub fn parse(stdout: &str, format: OutputFormat) -> Parsed {
    match format {
        OutputFormat::Text => Parsed::default(),
        OutputFormat::Json => parse_json(stdout),
        OutputFormat::Yaml => parse_yaml(stdout),
        OutputFormat::Jsonl => parse_jsonl(stdout),
    }
}

/// A native action's `text` output: the whole stdout when it is one JSON document (as Attune's
/// native runtime reads it), else no result and no error (text is text).
pub fn parse_if_json(stdout: &str) -> Parsed {
    let whole = json_document(stdout.trim());
    match whole.value.is_some() || whole.truncated {
        true => whole,
        false => Parsed::default(),
    }
}

/// The whole stdout as JSON, else its last non-empty line.
fn parse_json(stdout: &str) -> Parsed {
    let whole = json_document(stdout.trim());
    if whole.value.is_some() || whole.truncated {
        return whole;
    }
    let last_line = stdout.lines().rev().find(|line| !line.trim().is_empty());
    match last_line.map(|line| json_document(line.trim())) {
        Some(parsed) if parsed.value.is_some() || parsed.truncated => parsed,
        _ => whole,
    }
}

fn json_document(text: &str) -> Parsed {
    let budget = Budget::new(MAX_RESULT_BYTES);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = TopLevel(&budget)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    budget.finish(value.map_err(|e| format!("not valid JSON: {e}")))
}

fn parse_yaml(stdout: &str) -> Parsed {
    match yaml_shape(stdout, MAX_DEPTH, MAX_YAML_NODES) {
        YamlShape::TooDeep { line } => {
            return Parsed::error(format!(
                "nested deeper than {MAX_DEPTH} levels (line {line})"
            ));
        }
        YamlShape::TooManyNodes => {
            return Parsed {
                value: None,
                truncated: true,
                error: Some(format!(
                    "more than {MAX_YAML_NODES} YAML nodes: too large to parse"
                )),
            };
        }
        YamlShape::Fits { .. } | YamlShape::Malformed => {}
    }
    let budget = Budget::new(MAX_RESULT_BYTES);
    let value = TopLevel(&budget).deserialize(serde_yaml::Deserializer::from_str(stdout));
    let mut parsed = budget.finish(value.map_err(|e| format!("not valid YAML: {e}")));
    // An empty document is no result.
    if parsed.value.as_ref().is_some_and(Value::is_null) {
        parsed.value = None;
    }
    parsed
}

/// Each line that is JSON, in order; other lines are skipped.
fn parse_jsonl(stdout: &str) -> Parsed {
    let budget = Budget::new(MAX_RESULT_BYTES);
    let mut items = Vec::new();
    for line in stdout.lines() {
        // A line that was too deep left off inside its nesting.
        budget.depth.set(0);
        let mut deserializer = serde_json::Deserializer::from_str(line.trim());
        let Ok(item) = Node(&budget)
            .deserialize(&mut deserializer)
            .and_then(|item| deserializer.end().map(|()| item))
        else {
            continue;
        };
        // A line the budget ran out in is incomplete and dropped, like every line after it.
        if !budget.spend(LIST_ITEM_COST) {
            break;
        }
        items.push(item);
    }
    Parsed {
        value: Some(Value::Array(items)),
        truncated: budget.over.get(),
        error: budget.over.get().then(|| {
            format!("larger than {MAX_RESULT_BYTES} bytes when parsed: the leading lines were kept")
        }),
    }
}

impl Parsed {
    fn error(message: String) -> Parsed {
        Parsed {
            value: None,
            truncated: false,
            error: Some(message),
        }
    }
}

/// What parsing may still spend, shared by every node of one result.
struct Budget {
    left: Cell<usize>,
    depth: Cell<usize>,
    /// Spending failed: the value being built is incomplete.
    over: Cell<bool>,
    too_deep: Cell<bool>,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        Budget {
            left: Cell::new(bytes),
            depth: Cell::new(0),
            over: Cell::new(false),
            too_deep: Cell::new(false),
        }
    }

    /// Takes `cost` from the budget; false (and nothing taken) when it does not fit.
    fn spend(&self, cost: usize) -> bool {
        match self.left.get().checked_sub(cost) {
            Some(left) if !self.over.get() => {
                self.left.set(left);
                true
            }
            _ => {
                self.over.set(true);
                false
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.over.get()
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            self.too_deep.set(true);
            return Err(E::custom(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth.set(depth);
        Ok(())
    }

    fn leave(&self) {
        self.depth.set(self.depth.get().saturating_sub(1));
    }

    /// The outcome of a whole document's parse.
    fn finish(&self, value: Result<Value, String>) -> Parsed {
        match value {
            Err(_) if self.too_deep.get() => {
                Parsed::error(format!("nested deeper than {MAX_DEPTH} levels"))
            }
            Err(message) => Parsed::error(message),
            // A list that kept its leading items.
            Ok(value) if self.over.get() && value.is_array() => Parsed {
                value: Some(value),
                truncated: true,
                error: Some(format!(
                    "larger than {MAX_RESULT_BYTES} bytes when parsed: the leading items were kept"
                )),
            },
            Ok(_) if self.over.get() => Parsed {
                value: None,
                truncated: true,
                error: Some(format!("larger than {MAX_RESULT_BYTES} bytes when parsed")),
            },
            Ok(value) => Parsed {
                value: Some(value),
                truncated: false,
                error: None,
            },
        }
    }
}

/// The whole document: a list keeps the items that fit; anything else is built as a [`Node`].
struct TopLevel<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(Builder {
            budget: self.0,
            top: true,
        })
    }
}

/// One value, built while the budget lasts; once it is spent, the rest is read and dropped.
struct Node<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(Builder {
            budget: self.0,
            top: false,
        })
    }
}

struct Builder<'b> {
    budget: &'b Budget,
    top: bool,
}

impl Builder<'_> {
    fn string(&self, text: &str) -> Value {
        match self.budget.spend(STRING_COST + text.len()) {
            true => Value::String(text.to_string()),
            false => Value::Null,
        }
    }
}

impl<'de> Visitor<'de> for Builder<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(self.string(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let budget = self.budget;
        budget.enter()?;
        let mut items = Vec::new();
        loop {
            if budget.exhausted() {
                // Read on, so the document is still checked to its end, keeping nothing.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                break;
            }
            let Some(item) = seq.next_element_seed(Node(budget))? else {
                break;
            };
            // An item the budget ran out in is incomplete: a top-level list drops it.
            if budget.spend(LIST_ITEM_COST) || !self.top {
                items.push(item);
            }
        }
        budget.leave();
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let budget = self.budget;
        budget.enter()?;
        budget.spend(MAP_COST);
        let mut object = Map::new();
        loop {
            if budget.exhausted() {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                break;
            }
            let Some(key) = map.next_key::<String>()? else {
                break;
            };
            let value = map.next_value_seed(Node(budget))?;
            if budget.spend(MAP_ENTRY_COST + key.len()) {
                object.insert(key, value);
            }
        }
        budget.leave();
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(stdout: &str, format: OutputFormat) -> Option<Value> {
        parse(stdout, format).value
    }

    #[test]
    fn json_takes_the_whole_stdout_else_its_last_line() {
        assert_eq!(
            value("{\"a\":\n 1}\n", OutputFormat::Json),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            value("starting\n{\"a\": 2}\n\n", OutputFormat::Json),
            Some(json!({"a": 2}))
        );
        let parsed = parse("not json", OutputFormat::Json);
        assert_eq!(parsed.value, None);
        assert!(
            parsed
                .error
                .as_deref()
                .unwrap_or("")
                .starts_with("not valid JSON"),
            "{parsed:?}"
        );
    }

    #[test]
    fn jsonl_skips_lines_that_are_not_json() {
        assert_eq!(
            value("{\"a\":1}\nnoise\n[2]\n", OutputFormat::Jsonl),
            Some(json!([{"a": 1}, [2]]))
        );
    }

    #[test]
    fn yaml_and_text() {
        assert_eq!(value("a: 1\n", OutputFormat::Yaml), Some(json!({"a": 1})));
        assert_eq!(value("", OutputFormat::Yaml), None);
        assert_eq!(parse("a: 1\n", OutputFormat::Text), Parsed::default());
    }

    #[test]
    fn deep_results_are_refused_with_a_reason() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        for format in [OutputFormat::Json, OutputFormat::Yaml] {
            let parsed = parse(&deep, format);
            assert_eq!(parsed.value, None);
            assert!(
                parsed
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .contains("nested deeper than 64"),
                "{format:?}: {parsed:?}"
            );
        }
        let just_fits = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(value(&just_fits, OutputFormat::Json).is_some());
        assert!(value(&just_fits, OutputFormat::Yaml).is_some());
        // jsonl: a line too deep is a line that is not JSON.
        let lines = format!("{deep}\n{{\"ok\":1}}\n");
        assert_eq!(value(&lines, OutputFormat::Jsonl), Some(json!([{"ok": 1}])));
    }

    #[test]
    fn large_lists_keep_their_leading_items_within_the_budget() {
        let lines = "{\"i\":1}\n".repeat(200_000);
        let parsed = parse(&lines, OutputFormat::Jsonl);
        assert!(parsed.truncated);
        let kept = parsed
            .value
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        assert!(kept > 10_000 && kept < 200_000, "{kept}");
        assert!(parsed.error.is_some());

        let array = format!("[{}1]", "1,".repeat(1_000_000));
        let parsed = parse(&array, OutputFormat::Json);
        assert!(parsed.truncated);
        let kept = parsed
            .value
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        assert_eq!(kept, MAX_RESULT_BYTES / LIST_ITEM_COST);

        let object = format!("{{\"big\": {array}}}");
        let parsed = parse(&object, OutputFormat::Json);
        assert!(parsed.truncated);
        assert_eq!(parsed.value, None);
    }

    #[test]
    fn large_yaml_is_not_handed_to_serde_yaml() {
        let list = "- 1\n".repeat(MAX_YAML_NODES + 1);
        let parsed = parse(&list, OutputFormat::Yaml);
        assert!(parsed.truncated);
        assert_eq!(parsed.value, None);
    }
}
