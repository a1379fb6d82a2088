//! One YAML file of a pack, read field by field: every field that is wrong becomes a [`Problem`]
//! (with its line where it can be found) and reading goes on, so all problems are reported at once.
//!
//! Fields packbox does not know are ignored: real packs carry more (`enabled`, `system`,
//! `testing`, ...) and must load unmodified.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::problem::{Problem, locate, raw_value};
use crate::common::input;

/// Pack YAML files larger than this are refused rather than parsed.
pub(crate) const MAX_YAML_BYTES: u64 = 1024 * 1024;

/// A parsed YAML mapping and what is needed to report problems in it.
pub(crate) struct Doc {
    /// The file it was read from, for problems.
    pub file: PathBuf,
    text: String,
    map: Mapping,
}

impl Doc {
    /// Reads and parses a file whose top level must be a mapping; `None` after recording why not.
    pub fn read(file: &Path, problems: &mut Vec<Problem>) -> Option<Doc> {
        let mut problem = |line: Option<usize>, message: String| {
            problems.push(Problem {
                file: file.to_path_buf(),
                line,
                field: None,
                message,
            })
        };
        let text = match input::read_yaml(file, MAX_YAML_BYTES) {
            Ok(text) => text,
            Err(e) => {
                problem(e.line, crate::common::error_text::chain(&e.reason));
                return None;
            }
        };
        match serde_yaml::from_str::<Value>(&text) {
            Ok(Value::Mapping(map)) => Some(Doc {
                file: file.to_path_buf(),
                text,
                map,
            }),
            Ok(Value::Null) => {
                problem(None, "is empty; expected a mapping of fields".into());
                None
            }
            Ok(_) => {
                problem(
                    Some(1),
                    "expected a mapping of fields at the top level".into(),
                );
                None
            }
            Err(e) => {
                problem(e.location().map(|l| l.line()), format!("invalid YAML: {e}"));
                None
            }
        }
    }

    /// A problem with a field (a dotted path), located in the text where possible.
    pub fn problem(&self, field: &str, message: impl Into<String>) -> Problem {
        let path: Vec<&str> = field.split('.').collect();
        Problem {
            file: self.file.clone(),
            line: locate(&self.text, &path),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// The top-level keys, as written (other keys than text as YAML writes them).
    pub fn keys(&self) -> Vec<String> {
        self.map.keys().map(super::fields::key_text).collect()
    }

    /// A top-level field's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// The value of a field that has legacy spellings (`keys[0]` is the current one). Both present
    /// with different values is a problem; the current spelling wins.
    pub fn aliased(&self, keys: &[&str], problems: &mut Vec<Problem>) -> Option<(String, &Value)> {
        let present: Vec<(&str, &Value)> = keys
            .iter()
            .filter_map(|key| Some((*key, self.get(key)?)))
            .collect();
        let (first_key, first) = *present.first()?;
        for (key, value) in &present[1..] {
            if *value != first {
                problems.push(self.problem(
                    key,
                    format!(
                        "conflicts with `{first_key}` (two spellings of one field with different values; keep one)"
                    ),
                ));
            }
        }
        Some((first_key.to_string(), first))
    }

    /// A field that must be text. Numbers are taken as the author wrote them (`3.10`, not 3.1).
    pub fn text(&self, field: &str, value: &Value, problems: &mut Vec<Problem>) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => {
                let key = field.rsplit('.').next().unwrap_or(field);
                let written = locate(&self.text, &field.split('.').collect::<Vec<_>>())
                    .and_then(|line| raw_value(&self.text, line, key));
                Some(written.unwrap_or_else(|| number.to_string()))
            }
            _ => {
                problems.push(self.problem(field, format!("expected text, found {}", kind(value))));
                None
            }
        }
    }

    /// An optional top-level text field.
    pub fn optional_text(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        self.get(key).and_then(|v| match v {
            Value::Null => None,
            _ => self.text(key, v, problems),
        })
    }

    /// A field that must be a list of text items.
    pub fn text_list(
        &self,
        field: &str,
        value: &Value,
        problems: &mut Vec<Problem>,
    ) -> Vec<String> {
        let items = match value {
            Value::Null => return Vec::new(),
            Value::Sequence(items) => items,
            _ => {
                problems.push(self.problem(
                    field,
                    format!("expected a list of text, found {}", kind(value)),
                ));
                return Vec::new();
            }
        };
        let mut list = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => list.push(text.clone()),
                _ => problems.push(self.problem(
                    field,
                    format!(
                        "item {} of the list: expected text, found {}",
                        index + 1,
                        kind(item)
                    ),
                )),
            }
        }
        list
    }

    /// A field that must be a mapping, as JSON (for documents packbox passes on or reports).
    pub fn json_mapping(
        &self,
        field: &str,
        value: &Value,
        problems: &mut Vec<Problem>,
    ) -> Option<serde_json::Value> {
        match value {
            Value::Null => None,
            Value::Mapping(_) => self.json(field, value, problems),
            _ => {
                problems.push(
                    self.problem(field, format!("expected a mapping, found {}", kind(value))),
                );
                None
            }
        }
    }

    /// Any value, as JSON; keys that are not text cannot be, and are a problem.
    pub fn json(
        &self,
        field: &str,
        value: &Value,
        problems: &mut Vec<Problem>,
    ) -> Option<serde_json::Value> {
        match serde_json::to_value(value) {
            Ok(json) => Some(json),
            Err(e) => {
                problems.push(self.problem(field, format!("cannot be represented as JSON: {e}")));
                None
            }
        }
    }
}

/// The kind of a YAML value, for "expected X, found Y" messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> (Option<Doc>, Vec<Problem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, text).expect("write");
        let mut problems = Vec::new();
        (Doc::read(&file, &mut problems), problems)
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let (doc, problems) = doc("ref: a\nlabel: [unclosed\n");
        assert!(doc.is_none());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].line.is_some(), "{:?}", problems[0]);
        assert!(problems[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn the_top_level_must_be_a_mapping() {
        for text in ["", "- a\n- b\n", "just text\n"] {
            let (doc, problems) = doc(text);
            assert!(doc.is_none(), "{text:?}");
            assert!(problems[0].message.contains("mapping"), "{problems:?}");
        }
    }

    #[test]
    fn aliases_conflict_only_when_values_differ() {
        let (doc, _) = doc("label: A\nname: A\ntags: [x]\nkeywords: [y]\n");
        let doc = doc.expect("parses");
        let mut problems = Vec::new();
        let (key, _) = doc
            .aliased(&["label", "name"], &mut problems)
            .expect("present");
        assert_eq!(key, "label");
        assert!(problems.is_empty());
        doc.aliased(&["tags", "keywords"], &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field.as_deref(), Some("keywords"));
        assert_eq!(problems[0].line, Some(4));
        assert!(problems[0].message.contains("conflicts with `tags`"));
    }

    #[test]
    fn deep_nesting_and_non_files_are_refused_naming_file_and_line() {
        let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let (doc, problems) = doc(&format!("ref: a\ntags: {nested}\n"));
        assert!(doc.is_none());
        assert_eq!(problems[0].line, Some(2), "{problems:?}");
        assert_eq!(problems[0].message, "nested deeper than 64 levels");
        let mut problems = Vec::new();
        assert!(Doc::read(Path::new("/dev/zero"), &mut problems).is_none());
        assert_eq!(
            problems[0].message,
            "expected a regular file, found a character device"
        );
    }

    #[test]
    fn numbers_are_read_as_written() {
        let (doc, _) = doc("runtime_version: 3.10\n");
        let doc = doc.expect("parses");
        let value = doc.get("runtime_version").expect("present");
        assert_eq!(
            doc.text("runtime_version", value, &mut Vec::new())
                .as_deref(),
            Some("3.10")
        );
    }
}
