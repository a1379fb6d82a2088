//! The parameter document an action reads: parameters and secrets merged, then written in the
//! action's `parameter_format` (json, dotenv, yaml), byte for byte as the Attune contract says.
//!
//! dotenv documents are often `source`d by a shell, so their keys are limited to characters no
//! shell gives a meaning to; values are always single-quoted.

use serde_json::{Map, Value};

use crate::pack::ParameterFormat;

/// A parameter document that cannot be written in the action's format.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A key a shell could read as more than a name (`a=$(id)`, a newline, a space).
    #[error(
        "parameter document: key {key:?} cannot be written as dotenv (expected letters, digits, `_`, `.` and `-`)"
    )]
    DotenvKey {
        /// The key at fault: a parameter's name, or a key inside an object parameter.
        key: String,
    },
}

/// Whether a key can be a dotenv name (or one dotted part of it).
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

fn flatten(
    prefix: &str,
    object: &Map<String, Value>,
    lines: &mut Vec<String>,
) -> Result<(), DeliveryError> {
    for (key, value) in object {
        if !is_dotenv_key(key) {
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
        lines.push(format!("{name}='{}'", text.replace('\'', r"'\''")));
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
    fn dotenv_refuses_keys_a_shell_would_read_as_more_than_a_name() {
        for hostile in ["a=$(id)\nb", "a b", "x;y", "$HOME", "a'b", "", "ü"] {
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
