//! A problem found in a pack: the file, the line where known, the field, and what was expected.
//!
//! Loading collects problems instead of stopping at the first one, so that `packbox pack validate`
//! can say everything wrong with a pack at once.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One thing wrong with a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the field, when it could be found in the file's text.
    pub line: Option<usize>,
    /// The field, as a dotted path (`parameters.count.type`), when the problem concerns one.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The 1-based line where a dotted field path is written, found by indentation in block YAML and
/// by `"key":` in JSON-style text. Best effort: the line of the deepest part that was found.
pub(crate) fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found: Option<(usize, usize)> = None; // (line index, indent)
    for segment in path {
        let start = found.map_or(0, |(line, _)| line + 1);
        let mut hit = None;
        for (index, line) in lines.iter().enumerate().skip(start) {
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indent = line.len() - content.len();
            if let Some((_, parent_indent)) = found
                && indent <= parent_indent
            {
                break;
            }
            let block_key = (found.is_some() || indent == 0) && starts_with_key(content, segment);
            if block_key || content.contains(&format!("\"{segment}\":")) {
                hit = Some((index, indent));
                break;
            }
        }
        match hit {
            Some(hit) => found = Some(hit),
            None => break,
        }
    }
    found.map(|(line, _)| line + 1)
}

fn starts_with_key(content: &str, key: &str) -> bool {
    let content = content.strip_prefix("- ").unwrap_or(content);
    [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ]
    .iter()
    .any(|prefix| content.starts_with(prefix.as_str()))
}

/// The value text written after `key:` on a line, unquoted, without a trailing comment: what the
/// author typed, before YAML turned `3.10` into the number 3.1.
pub(crate) fn raw_value(text: &str, line: usize, key: &str) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?.trim_start();
    let rest = content
        .strip_prefix(key)
        .or_else(|| content.strip_prefix(&format!("\"{key}\"")))?
        .trim_start()
        .strip_prefix(':')?;
    let value = rest.split(" #").next()?.trim().trim_end_matches(',');
    let value = value.trim_matches(|c| c == '"' || c == '\'');
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_and_field() {
        let problem = Problem {
            file: "p/actions/a.yaml".into(),
            line: Some(4),
            field: Some("timeout_seconds".into()),
            message: "expected a positive integer".into(),
        };
        assert_eq!(
            problem.to_string(),
            "p/actions/a.yaml:4: field `timeout_seconds`: expected a positive integer"
        );
        let bare = Problem {
            line: None,
            field: None,
            ..problem
        };
        assert_eq!(
            bare.to_string(),
            "p/actions/a.yaml: expected a positive integer"
        );
    }

    #[test]
    fn locates_nested_fields_by_indentation() {
        let text = "# comment\nref: p.a\nparameters:\n  ref:\n    type: string\n  count:\n    type: integer\n    minimum: 1\nentry_point: a.sh\n";
        assert_eq!(locate(text, &["ref"]), Some(2));
        assert_eq!(locate(text, &["parameters", "count", "minimum"]), Some(8));
        assert_eq!(locate(text, &["parameters", "ref", "type"]), Some(5));
        assert_eq!(locate(text, &["entry_point"]), Some(9));
        // `minimum` is not under `ref`: the deepest found part is given.
        assert_eq!(locate(text, &["parameters", "ref", "minimum"]), Some(4));
        assert_eq!(locate(text, &["nothing"]), None);
    }

    #[test]
    fn locates_keys_in_json_style_text() {
        let text = "{\n  \"ref\": \"p.a\",\n  \"timeout_seconds\": \"x\"\n}\n";
        assert_eq!(locate(text, &["timeout_seconds"]), Some(3));
    }

    #[test]
    fn raw_value_keeps_what_the_author_typed() {
        let text = "ref: p.a\nruntime_version: 3.10   # not 3.1\nversion: \"1.0\"\n";
        assert_eq!(
            raw_value(text, 2, "runtime_version").as_deref(),
            Some("3.10")
        );
        assert_eq!(raw_value(text, 3, "version").as_deref(), Some("1.0"));
        assert_eq!(raw_value(text, 1, "version"), None);
        assert_eq!(raw_value(text, 9, "version"), None);
    }
}
