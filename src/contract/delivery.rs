//! The parameter document an action reads: parameters and secrets merged, then written in the
//! action's `parameter_format` (json, dotenv, yaml), byte for byte as the Attune contract says.
//!
//! dotenv documents are often `source`d by a shell or read line by line. Values are always
//! single-quoted. Keys of letters, digits, `_`, `.` and `-` are written bare (as Attune writes
//! every key); any other key is single-quoted too (`'User Agent'='x'`), so a shell reads it as
//! one word that is no assignment and runs nothing of it. A key that could start a new line
//! (a control character, a line separator), name a file (`/`) or is empty is refused.

use serde_json::{Map, Value};

use crate::pack::ParameterFormat;

/// A parameter document that cannot be written in the action's format.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A key that could start a new line (a control character, a line separator), name a file
    /// (`/`) or is empty.
    #[error(
        "parameter document: key {key:?} cannot be written as dotenv (a key may not be empty or hold a control character, a line separator or `/`)"
    )]
    DotenvKey {
        /// The key at fault: a parameter's name, or a key inside an object parameter.
        key: String,
    },
}

/// Whether a key is written bare in dotenv (or is one dotted part of such a name); secret
/// names must be.
pub fn is_dotenv_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Serialises the merged parameter document.
pub fn encode(
    document: &Map<String, Value>,
    format: ParameterFormat,
) -> Result<Vec<u8>, DeliveryError> {
    Ok(match format {
        ParameterFormat::Json => {
            let mut line = Value::Object(document.clone()).to_string().into_bytes();
            line.push(b'\n');
            line
        }
        ParameterFormat::Dotenv => encode_dotenv(document)?.into_bytes(),
        ParameterFormat::Yaml => {
            if document.is_empty() {
                // serde_yaml writes `{}` for an empty map; an empty mapping document reads the same.
                return Ok(b"{}\n".to_vec());
            }
            serde_yaml::to_string(document)
                .unwrap_or_default()
                .into_bytes()
        }
    })
}

/// `key='value'` lines, nested objects flattened with dots, arrays as JSON, `'` escaped as `'\''`,
/// lines sorted.
fn encode_dotenv(document: &Map<String, Value>) -> Result<String, DeliveryError> {
    let mut lines = Vec::new();
    flatten("", document, &mut lines)?;
    lines.sort();
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// Whether a key can be written at all: quoted, it is one shell word and one line.
fn is_writable_key(key: &str) -> bool {
    !key.is_empty()
        && !key
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\u{2028}' | '\u{2029}'))
}

/// A single-quoted shell word: `'` written as `'\''`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn flatten(
    prefix: &str,
    object: &Map<String, Value>,
    lines: &mut Vec<String>,
) -> Result<(), DeliveryError> {
    for (key, value) in object {
        if !is_writable_key(key) {
            return Err(DeliveryError::DotenvKey { key: key.clone() });
        }
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            Value::Object(inner) => {
                flatten(&name, inner, lines)?;
                continue;
            }
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        // A name that is not all bare parts is quoted whole: one word, never an assignment.
        let written = match name.split('.').all(is_dotenv_key) {
            true => name,
            false => quoted(&name),
        };
        lines.push(format!("{written}={}", quoted(&text)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn json_is_one_compact_line() {
        let bytes = encode(&doc(json!({"b": 1, "a": "x y"})), ParameterFormat::Json).expect("json");
        assert_eq!(bytes, b"{\"a\":\"x y\",\"b\":1}\n");
    }

    #[test]
    fn dotenv_flattens_quotes_and_sorts() {
        let document = doc(json!({
            "zeta": "it's",
            "alpha": {"inner": {"deep": true}, "n": 2},
            "list": [1, "two"],
            "nothing": null
        }));
        let text = String::from_utf8(encode(&document, ParameterFormat::Dotenv).expect("dotenv"))
            .expect("utf8");
        assert_eq!(
            text,
            "alpha.inner.deep='true'\nalpha.n='2'\nlist='[1,\"two\"]'\nnothing=''\nzeta='it'\\''s'\n"
        );
    }

    #[test]
    fn yaml_is_a_mapping() {
        let text = String::from_utf8(
            encode(&doc(json!({"name": "x", "n": 3})), ParameterFormat::Yaml).expect("yaml"),
        )
        .expect("utf8");
        let back: Value = serde_yaml::from_str(&text).expect("parses back");
        assert_eq!(back, json!({"name": "x", "n": 3}));
    }

    #[test]
    fn empty_documents_stay_well_formed() {
        for (format, expected) in [
            (ParameterFormat::Json, &b"{}\n"[..]),
            (ParameterFormat::Dotenv, b""),
            (ParameterFormat::Yaml, b"{}\n"),
        ] {
            assert_eq!(encode(&Map::new(), format).expect("encodes"), expected);
        }
    }

    #[test]
    fn dotenv_quotes_keys_that_are_not_bare_names() {
        let document = doc(json!({
            "headers": {"User Agent": "x", "a=$(id)": 1, "it's": true, "ü": 2},
            "x;y": "z"
        }));
        let text = String::from_utf8(encode(&document, ParameterFormat::Dotenv).expect("dotenv"))
            .expect("utf8");
        assert_eq!(
            text,
            "'headers.User Agent'='x'\n'headers.a=$(id)'='1'\n'headers.it'\\''s'='true'\n'headers.ü'='2'\n'x;y'='z'\n"
        );
    }

    /// A document with hostile keys, sourced by a real shell: the bare keys are assigned, the
    /// quoted ones run nothing.
    #[test]
    fn sourcing_a_document_with_quoted_keys_runs_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("pwned");
        let marker_text = "pwned";
        let document = doc(json!({
            format!("$(touch {marker_text})"): "1",
            format!("`touch {marker_text}`"): "2",
            format!("x; touch {marker_text}"): "3",
            format!("a && touch {marker_text} #"): "4",
            "plain": format!("$(touch {marker_text})"),
        }));
        let file = dir.path().join("params.env");
        std::fs::write(
            &file,
            encode(&document, ParameterFormat::Dotenv).expect("dotenv"),
        )
        .expect("write");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(". \"$1\"; printf '%s' \"$plain\"")
            .arg("sh")
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .expect("sh runs");
        assert!(!marker.exists(), "a key ran a command");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("$(touch {marker_text})")
        );
    }

    #[test]
    fn dotenv_refuses_keys_that_could_start_a_line_or_name_a_file() {
        for hostile in [
            "a=$(id)\nb",
            "a\rb",
            "",
            "a\u{2028}b",
            "../x",
            "/bin/sh",
            "tab\there",
        ] {
            let document = doc(json!({"headers": {hostile: 1}}));
            let err = encode(&document, ParameterFormat::Dotenv).expect_err(hostile);
            assert!(err.to_string().contains(&format!("{hostile:?}")), "{err}");
            // Other formats escape keys themselves.
            assert!(encode(&document, ParameterFormat::Json).is_ok());
        }
        let fine = doc(json!({"Content-Type": {"v1.x_y": "a'$(b)"}}));
        assert_eq!(
            encode(&fine, ParameterFormat::Dotenv).expect("fine"),
            b"Content-Type.v1.x_y='a'\\''$(b)'\n"
        );
    }
}
