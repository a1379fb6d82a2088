//! Keeping secrets secret. Secrets reach an action only inside the parameter document on stdin
//! (or its private file): never env, argv, labels, the image, logs or error texts. What an action
//! prints is scrubbed of secret values, and output fields its schema marks `secret: true` are
//! redacted, before an outcome leaves packbox.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::delivery::is_dotenv_key;
pub use super::scrub::{REDACTED, Redactor, TooManySecrets, redact_secret_fields};
use crate::common::input::{self, InputError};

/// Secrets files larger than this are refused.
const MAX_SECRETS_FILE_BYTES: u64 = 1024 * 1024;

/// Secrets given on the command line or in a file that cannot be used. Messages never quote a
/// value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A `--secret` argument has no `=` or an empty name.
    #[error("--secret #{position}: expected KEY=VALUE")]
    Malformed {
        /// Which `--secret` it is, counting from 1 (the text itself may hold the value).
        position: usize,
    },
    /// Secret names become keys of the parameter document, which may be `source`d by a shell.
    #[error("secret name {name:?}: expected letters, digits, `_`, `.` and `-`")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// The secrets file was refused before parsing (missing, too large, not text).
    #[error("secrets file {0}")]
    Unreadable(#[source] InputError),
    /// The secrets file parses to something other than a mapping.
    #[error("secrets file {file}: expected a JSON or YAML mapping of names to values")]
    NotAMapping {
        /// The secrets file as given.
        file: PathBuf,
    },
    /// The secrets could not all be scrubbed from output, so the run is refused.
    #[error(transparent)]
    TooMany(#[from] TooManySecrets),
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
        if let Some(name) = secrets.keys().find(|name| !is_dotenv_key(name)) {
            return Err(SecretError::BadName { name: name.clone() });
        }
        Ok(Secrets(secrets))
    }

    /// Secrets given as JSON values (as an API receives them), their names checked like those of
    /// `--secret` and the secrets file.
    pub fn from_values(values: Map<String, Value>) -> Result<Secrets, SecretError> {
        if let Some(name) = values.keys().find(|name| !is_dotenv_key(name)) {
            return Err(SecretError::BadName {
                name: name.chars().take(200).collect(),
            });
        }
        Ok(Secrets(values))
    }

    /// The secrets by name.
    pub fn values(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Adds `values`, which win over secrets of the same name.
    pub fn overlay(&mut self, values: Map<String, Value>) {
        self.0.extend(values);
    }

    /// The secrets by name, owned.
    pub fn into_values(self) -> Map<String, Value> {
        self.0
    }
}

fn read_file(file: &Path) -> Result<Map<String, Value>, SecretError> {
    let text = input::read_yaml(file, MAX_SECRETS_FILE_BYTES).map_err(SecretError::Unreadable)?;
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
    fn secret_names_are_plain_words() {
        let err = Secrets::read(&["evil\nPWNED=1".into()], None).expect_err("newline");
        assert_eq!(
            err.to_string(),
            r#"secret name "evil\nPWNED": expected letters, digits, `_`, `.` and `-`"#
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, "\"a=$(id)\": x\n").expect("write");
        assert!(matches!(
            Secrets::read(&[], Some(&file)),
            Err(SecretError::BadName { .. })
        ));
        assert!(Secrets::read(&["api.key-2_x=v".into()], None).is_ok());
        // JSON values (an API's `secrets`) follow the same rule.
        let mut values = Map::new();
        values.insert("a=$(id)".into(), json!("x"));
        assert!(matches!(
            Secrets::from_values(values),
            Err(SecretError::BadName { .. })
        ));
    }

    #[test]
    fn empty_secrets_are_allowed() {
        let secrets = Secrets::read(&["token=".into()], None).expect("empty is a value");
        assert_eq!(secrets.values()["token"], "");
    }
}
