//! The parameter document an action reads: parameters and secrets merged, then written in the
//! action's `parameter_format` (json, dotenv, yaml), byte for byte as the Attune contract says.

use serde_json::{Map, Value};

use crate::pack::ParameterFormat;

/// Serialises the merged parameter document.
pub fn encode(document: &Map<String, Value>, format: ParameterFormat) -> Vec<u8> {
    match format {
        ParameterFormat::Json => {
            let mut line = Value::Object(document.clone()).to_string().into_bytes();
            line.push(b'\n');
            line
        }
        ParameterFormat::Dotenv => encode_dotenv(document).into_bytes(),
        ParameterFormat::Yaml => {
            if document.is_empty() {
                // serde_yaml writes `{}` for an empty map; an empty mapping document reads the same.
                return b"{}\n".to_vec();
            }
            serde_yaml::to_string(document)
                .unwrap_or_default()
                .into_bytes()
        }
    }
}

/// `key='value'` lines, nested objects flattened with dots, arrays as JSON, `'` escaped as `'\''`,
/// lines sorted.
fn encode_dotenv(document: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    flatten("", document, &mut lines);
    lines.sort();
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn flatten(prefix: &str, object: &Map<String, Value>, lines: &mut Vec<String>) {
    for (key, value) in object {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            Value::Object(inner) => {
                flatten(&name, inner, lines);
                continue;
            }
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        lines.push(format!("{name}='{}'", text.replace('\'', r"'\''")));
    }
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
        let bytes = encode(&doc(json!({"b": 1, "a": "x y"})), ParameterFormat::Json);
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
        let text = String::from_utf8(encode(&document, ParameterFormat::Dotenv)).expect("utf8");
        assert_eq!(
            text,
            "alpha.inner.deep='true'\nalpha.n='2'\nlist='[1,\"two\"]'\nnothing=''\nzeta='it'\\''s'\n"
        );
    }

    #[test]
    fn yaml_is_a_mapping() {
        let text = String::from_utf8(encode(
            &doc(json!({"name": "x", "n": 3})),
            ParameterFormat::Yaml,
        ))
        .expect("utf8");
        let back: Value = serde_yaml::from_str(&text).expect("parses back");
        assert_eq!(back, json!({"name": "x", "n": 3}));
    }

    #[test]
    fn empty_documents_stay_well_formed() {
        assert_eq!(encode(&Map::new(), ParameterFormat::Json), b"{}\n");
        assert_eq!(encode(&Map::new(), ParameterFormat::Dotenv), b"");
        assert_eq!(encode(&Map::new(), ParameterFormat::Yaml), b"{}\n");
    }
}
