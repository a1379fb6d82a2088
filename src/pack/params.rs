//! The parameter document of one run: declared defaults, then the caller's values, checked
//! against the action's declarations before any container exists.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ParameterSpec;

/// A parameter value that does not fit the action's declarations.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter `{name}` for action {action}; known parameters: {known}")]
    Unknown {
        action: String,
        name: String,
        known: String,
    },
    #[error("missing required parameter `{name}` for action {action}")]
    Missing { action: String, name: String },
    #[error("parameter `{0}`: expected KEY=VALUE")]
    Malformed(String),
}

/// Splits `-p KEY=VALUE` arguments.
pub fn parse_assignments(raw: &[String]) -> Result<Vec<(String, String)>, ParamError> {
    raw.iter()
        .map(|item| {
            item.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| ParamError::Malformed(item.clone()))
        })
        .collect()
}

/// Builds the parameter document: defaults first, then given values, then checks that every
/// required parameter has a value.
pub fn resolve(
    action: &str,
    declared: &BTreeMap<String, ParameterSpec>,
    given: &[(String, String)],
) -> Result<Map<String, Value>, ParamError> {
    let mut document = Map::new();
    for (name, spec) in declared {
        if let Some(default) = &spec.default {
            document.insert(name.clone(), default.clone());
        }
    }
    for (name, value) in given {
        if !declared.contains_key(name) {
            return Err(ParamError::Unknown {
                action: action.to_string(),
                name: name.clone(),
                known: known_list(declared),
            });
        }
        document.insert(name.clone(), Value::String(value.clone()));
    }
    for (name, spec) in declared {
        if spec.required && !document.contains_key(name) {
            return Err(ParamError::Missing {
                action: action.to_string(),
                name: name.clone(),
            });
        }
    }
    Ok(document)
}

fn known_list(declared: &BTreeMap<String, ParameterSpec>) -> String {
    if declared.is_empty() {
        "(none)".into()
    } else {
        declared.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> BTreeMap<String, ParameterSpec> {
        BTreeMap::from([
            (
                "name".to_string(),
                ParameterSpec {
                    default: Some(json!("world")),
                    ..Default::default()
                },
            ),
            (
                "token".to_string(),
                ParameterSpec {
                    required: true,
                    ..Default::default()
                },
            ),
        ])
    }

    #[test]
    fn defaults_then_given_values() {
        let given = parse_assignments(&["token=abc".into()]).expect("well formed");
        let doc = resolve("p.a", &declared(), &given).expect("valid");
        assert_eq!(Value::Object(doc), json!({"name": "world", "token": "abc"}));
    }

    #[test]
    fn unknown_parameter_lists_the_known_ones() {
        let given = vec![("nope".to_string(), "1".to_string())];
        let err = resolve("p.a", &declared(), &given).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown parameter `nope` for action p.a; known parameters: name, token"
        );
    }

    #[test]
    fn required_parameter_must_be_given() {
        let err = resolve("p.a", &declared(), &[]).expect_err("token missing");
        assert!(err.to_string().contains("`token`"), "{err}");
    }

    #[test]
    fn malformed_assignment_is_refused() {
        assert!(parse_assignments(&["novalue".into()]).is_err());
        assert!(parse_assignments(&["=x".into()]).is_err());
        assert_eq!(
            parse_assignments(&["a=b=c".into()]).expect("ok"),
            vec![("a".to_string(), "b=c".to_string())]
        );
    }
}
