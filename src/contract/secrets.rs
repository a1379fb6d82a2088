//! Keeping secrets secret. Secrets reach an action only inside the parameter document on stdin
//! (or its private file): never env, argv, labels, the image, logs or error texts. What an action
//! prints is scrubbed of secret values, and output fields its schema marks `secret: true` are
//! redacted, before an outcome leaves packbox.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// What replaces a secret in an outcome.
pub const REDACTED: &str = "***";
/// Secret values shorter than this are not scrubbed from output: replacing every `a` or `1`
/// would destroy the output and reveal more than it hides.
const MIN_SCRUBBED_LEN: usize = 3;

/// Secrets given on the command line or in a file that cannot be used. Messages never quote a
/// value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--secret #{position}: expected KEY=VALUE")]
    Malformed { position: usize },
    #[error("secrets file {file}: cannot read")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secrets file {file}: expected a JSON or YAML mapping of names to values")]
    NotAMapping { file: PathBuf },
}

/// Secret values by name. `Debug` never shows a value.
#[derive(Clone, Default, PartialEq)]
pub struct Secrets(Map<String, Value>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Secrets from `--secrets-file FILE` (JSON or YAML mapping), then `--secret KEY=VALUE`
    /// (which win).
    pub fn read(assignments: &[String], file: Option<&Path>) -> Result<Secrets, SecretError> {
        let mut secrets = match file {
            Some(file) => read_file(file)?,
            None => Map::new(),
        };
        for (index, item) in assignments.iter().enumerate() {
            let (key, value) = item
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or(SecretError::Malformed {
                    position: index + 1,
                })?;
            secrets.insert(key.trim().to_string(), Value::String(value.to_string()));
        }
        Ok(Secrets(secrets))
    }

    /// The secrets by name.
    pub fn values(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn read_file(file: &Path) -> Result<Map<String, Value>, SecretError> {
    let text = std::fs::read_to_string(file).map_err(|source| SecretError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    // serde's messages may quote the content: say only what was expected.
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(SecretError::NotAMapping {
            file: file.to_path_buf(),
        }),
    }
}

/// Bytes that may hold secrets (the parameter document): `Debug` shows only their length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes, may hold secrets>", self.0.len())
    }
}

/// Scrubs known secret values out of texts and JSON values.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secret values)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor for these secret values (strings as they are, other values as JSON text).
    pub fn new<'v>(values: impl IntoIterator<Item = &'v Value>) -> Redactor {
        let mut needles: Vec<String> = values
            .into_iter()
            .map(|value| match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .filter(|needle| needle.chars().count() >= MIN_SCRUBBED_LEN)
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Redactor { needles }
    }

    /// This redactor, also scrubbing `values`.
    pub fn extended<'v>(&self, values: impl IntoIterator<Item = &'v Value>) -> Redactor {
        let mut needles = Redactor::new(values).needles;
        needles.extend(self.needles.iter().cloned());
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Redactor { needles }
    }

    /// The text with every secret value replaced.
    /// Takes the text by value: with nothing to scrub (the usual case) it comes back without a
    /// copy, which matters for 10 MiB of captured output.
    pub fn text(&self, mut text: String) -> String {
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), REDACTED);
            }
        }
        text
    }

    /// The value with every string scrubbed.
    pub fn value(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, self.value(v))).collect())
            }
            other => other,
        }
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
    use serde_json::json;

    #[test]
    fn secrets_from_flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secrets.yaml");
        std::fs::write(&file, "token: from-file\nother: 42\n").expect("write");
        let secrets =
            Secrets::read(&["token=from-flag".into()], Some(&file)).expect("readable secrets");
        assert_eq!(
            Value::Object(secrets.values().clone()),
            json!({"token": "from-flag", "other": 42})
        );
    }

    #[test]
    fn errors_and_debug_never_show_a_value() {
        let err = Secrets::read(&["=hunter2".into()], None).expect_err("no key");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "- hunter2\n").expect("write");
        let err = Secrets::read(&[], Some(&file)).expect_err("not a mapping");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let secrets = Secrets::read(&["token=hunter2".into()], None).expect("valid");
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretBytes(b"hunter2".to_vec())).contains("hunter2"));
    }

    #[test]
    fn empty_secrets_are_allowed() {
        let secrets = Secrets::read(&["token=".into()], None).expect("empty is a value");
        assert_eq!(secrets.values()["token"], "");
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
        let redactor = Redactor::new(values.iter());
        assert_eq!(
            redactor.text("pw=hunter22 pw=hunter2".into()),
            "pw=*** pw=***"
        );
        assert_eq!(
            redactor.text("ab and empty stay".into()),
            "ab and empty stay"
        );
        assert_eq!(
            redactor.value(json!({"a": ["id 123456"], "b": 7})),
            json!({"a": ["id ***"], "b": 7})
        );
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
