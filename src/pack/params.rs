//! The parameter document of one run: declared defaults, then values from a parameters file,
//! then `-p KEY=VALUE` (converted by the declared type), all checked against the action's
//! declarations before any container exists. Values of secret parameters never appear in errors.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::schema::{ParamType, ParameterSpec, Parameters};
use crate::common::input::{self, InputError};

/// Parameters files larger than this are refused.
const MAX_PARAMS_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Parameter values that do not fit the action's declarations.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// A `-p` argument has no `=` or an empty key; the text is its key part alone, as the rest
    /// may be a secret.
    #[error("parameter `{0}`: expected KEY=VALUE")]
    Malformed(String),
    /// The parameters file is not a mapping of names to values.
    #[error("parameters file {file}: {expected}")]
    File {
        /// The parameters file as given.
        file: PathBuf,
        /// What was expected, with the parser's position when it failed.
        expected: String,
    },
    /// The parameters file was refused before parsing (missing, too large, not text).
    #[error("parameters file {0}")]
    Unreadable(#[from] InputError),
    /// Values that do not fit the declarations, unknown names, missing required ones.
    #[error("invalid parameters for action {action}: {}", join(.issues))]
    Invalid {
        /// The action's reference.
        action: String,
        /// Every problem found, each naming its parameter and never quoting a secret's value.
        issues: Vec<ParamIssue>,
    },
}

/// One problem with one parameter: its name (for APIs that list problems by parameter) and the
/// whole sentence, which names it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamIssue {
    /// The parameter's name.
    pub parameter: String,
    /// The whole sentence, naming the parameter and what was expected.
    pub text: String,
}

impl std::fmt::Display for ParamIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn join(issues: &[ParamIssue]) -> String {
    issues
        .iter()
        .map(|i| i.text.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Unknown parameter names reported one by one; the rest are counted.
const MAX_UNKNOWN_REPORTED: usize = 20;
/// The longest parameter name quoted in a problem.
const MAX_QUOTED_NAME: usize = 100;

/// A name as problems quote it: at most [`MAX_QUOTED_NAME`] bytes.
fn shortened(name: &str) -> String {
    if name.len() <= MAX_QUOTED_NAME {
        return name.to_string();
    }
    let mut end = MAX_QUOTED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

/// Splits `-p KEY=VALUE` arguments.
pub fn parse_assignments(raw: &[String]) -> Result<Vec<(String, String)>, ParamError> {
    raw.iter()
        .map(|item| {
            item.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                // The key alone is shown: what follows it may be a secret.
                .ok_or_else(|| {
                    ParamError::Malformed(item.split('=').next().unwrap_or("").to_string())
                })
        })
        .collect()
}

/// Reads a parameters file: a JSON or YAML mapping of names to values.
pub fn read_file(file: &Path) -> Result<Map<String, Value>, ParamError> {
    let refuse = |expected: String| ParamError::File {
        file: file.to_path_buf(),
        expected,
    };
    let text = input::read_yaml(file, MAX_PARAMS_FILE_BYTES)?;
    // YAML reads JSON too. Its messages give positions, not content, so secrets stay unshown.
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(refuse(
            "expected a mapping of parameter names to values".into(),
        )),
        Err(e) => Err(refuse(format!("invalid JSON or YAML: {e}"))),
    }
}

/// Builds the parameter document: defaults, then `from_file`, then `assignments` (which win),
/// then checks every value and that every required parameter has one. All problems are reported
/// together. A parameter named in `given_as_secret` got its value from a secret: like a secret
/// parameter's, that value is never quoted.
pub fn resolve(
    action: &str,
    declared: &Parameters,
    from_file: Map<String, Value>,
    assignments: &[(String, String)],
    given_as_secret: &[&str],
) -> Result<Map<String, Value>, ParamError> {
    // Why a value may not be quoted, if it may not.
    let hidden = |name: &str, spec: &ParameterSpec| match () {
        _ if spec.secret => Some("secret parameter"),
        _ if given_as_secret.contains(&name) => Some("given as a secret"),
        _ if spec.holds_secret() => Some("it holds a secret property"),
        _ => None,
    };
    let mut issues = Vec::new();
    let mut document = Map::new();
    for (name, spec) in declared {
        if let Some(default) = &spec.default {
            document.insert(name.clone(), default.clone());
        }
    }
    let mut unknown = Vec::new();
    for (name, value) in from_file {
        match declared.contains_key(&name) {
            true => {
                document.insert(name, value);
            }
            false => unknown.push(name),
        }
    }
    for (name, raw) in assignments {
        let Some(spec) = declared.get(name) else {
            unknown.push(name.clone());
            continue;
        };
        match convert(spec, raw) {
            Ok(value) => {
                document.insert(name.clone(), value);
            }
            Err(expected) => {
                // Marked as failed, so the check below does not report it a second time.
                document.remove(name);
                let shown = hidden(name, spec).ok_or(raw.as_str());
                issues.push(issue(name, describe(name, &expected, shown)));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    // A request may carry any number of unknown names, each as long as it likes: the problems
    // reported stay few and short, whatever it held.
    let more = unknown.len().saturating_sub(MAX_UNKNOWN_REPORTED);
    let known = known_list(declared);
    for name in unknown.into_iter().take(MAX_UNKNOWN_REPORTED) {
        let name = shortened(&name);
        let text = format!("unknown parameter `{name}` (known parameters: {known})");
        issues.push(issue(&name, text));
    }
    if more > 0 {
        issues.push(issue("", format!("and {more} more unknown parameters")));
    }
    let failed_conversion: Vec<String> = assignments
        .iter()
        .filter(|(name, _)| declared.contains_key(name) && !document.contains_key(name))
        .map(|(name, _)| name.clone())
        .collect();
    for (name, spec) in declared {
        match document.get(name) {
            Some(value) => {
                if let Err(expected) = spec.check(value) {
                    let text = match hidden(name, spec) {
                        Some(why) => describe(name, &expected, Ok(why)),
                        None => describe(name, &expected, Err(&as_text(value))),
                    };
                    issues.push(issue(name, text));
                }
            }
            None if spec.required && !failed_conversion.contains(name) => {
                issues.push(issue(name, format!("missing required parameter `{name}`")));
            }
            None => {}
        }
    }
    if issues.is_empty() {
        Ok(document)
    } else {
        Err(ParamError::Invalid {
            action: action.to_string(),
            issues,
        })
    }
}

fn issue(parameter: &str, text: String) -> ParamIssue {
    ParamIssue {
        parameter: parameter.to_string(),
        text,
    }
}

/// A `-p` value as the declared type: text stays text; numbers and booleans are parsed; objects
/// and arrays are JSON.
fn convert(spec: &ParameterSpec, raw: &str) -> Result<Value, String> {
    let expected = |kind: ParamType| format!("expected {}", kind.with_article());
    let Some(kind) = spec.kind else {
        return Ok(Value::String(raw.to_string()));
    };
    let trimmed = raw.trim();
    match kind {
        ParamType::String => Ok(Value::String(raw.to_string())),
        ParamType::Integer => trimmed
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| trimmed.parse::<u64>().map(Value::from))
            .map_err(|_| expected(kind)),
        ParamType::Number => trimmed
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| {
                let number = trimmed.parse::<f64>().ok()?;
                serde_json::Number::from_f64(number).map(Value::Number)
            })
            .ok_or_else(|| expected(kind)),
        ParamType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{} (true or false)", expected(kind))),
        },
        ParamType::Object | ParamType::Array => serde_json::from_str::<Value>(trimmed)
            .ok()
            .filter(|value| kind.fits(value))
            .ok_or_else(|| format!("{} as JSON", expected(kind))),
    }
}

/// One issue with a value: `Err(value)` quotes the value, `Ok(why)` says why it is not shown
/// (it is, or holds, a secret).
fn describe(name: &str, expected: &str, value: Result<&str, &str>) -> String {
    let value = match value {
        Ok(why) => return format!("`{name}`: {expected} (value not shown: {why})"),
        Err(value) => value,
    };
    let mut shown: String = value.chars().take(60).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("`{name}`: {expected}, got `{shown}`")
}

/// A value as text for messages: strings without their JSON quotes.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn known_list(declared: &Parameters) -> String {
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

    fn spec(kind: Option<ParamType>) -> ParameterSpec {
        ParameterSpec {
            kind,
            ..Default::default()
        }
    }

    fn declared() -> Parameters {
        Parameters::from([
            (
                "name".to_string(),
                ParameterSpec {
                    default: Some(json!("world")),
                    ..spec(Some(ParamType::String))
                },
            ),
            (
                "token".to_string(),
                ParameterSpec {
                    required: true,
                    secret: true,
                    ..spec(Some(ParamType::String))
                },
            ),
            (
                "count".to_string(),
                ParameterSpec {
                    minimum: Some(1.0),
                    maximum: Some(10.0),
                    ..spec(Some(ParamType::Integer))
                },
            ),
            (
                "mode".to_string(),
                ParameterSpec {
                    enum_values: Some(vec![json!("fast"), json!("slow")]),
                    ..spec(None)
                },
            ),
        ])
    }

    fn assign(pairs: &[&str]) -> Vec<(String, String)> {
        parse_assignments(&pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            .expect("well formed")
    }

    fn issues(result: Result<Map<String, Value>, ParamError>) -> Vec<String> {
        match result {
            Err(ParamError::Invalid { issues, .. }) => {
                issues.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected invalid parameters, got {other:?}"),
        }
    }

    #[test]
    fn each_issue_names_its_parameter() {
        let from_file = Map::from_iter([("count".to_string(), json!(99))]);
        let err = resolve("p.a", &declared(), from_file, &assign(&["bogus=1"]), &[])
            .expect_err("three problems");
        let ParamError::Invalid { issues, .. } = err else {
            panic!("expected invalid parameters");
        };
        let mut named: Vec<&str> = issues.iter().map(|i| i.parameter.as_str()).collect();
        named.sort();
        assert_eq!(named, ["bogus", "count", "token"]);
        assert!(
            issues
                .iter()
                .all(|i| i.text.contains(&format!("`{}`", i.parameter)))
        );
    }

    #[test]
    fn defaults_then_file_then_assignments() {
        let from_file = Map::from_iter([
            ("count".to_string(), json!(3)),
            ("name".to_string(), json!("file")),
        ]);
        let doc = resolve(
            "p.a",
            &declared(),
            from_file,
            &assign(&["token=abc", "count=7"]),
            &[],
        )
        .expect("valid");
        assert_eq!(
            Value::Object(doc),
            json!({"name": "file", "token": "abc", "count": 7})
        );
    }

    #[test]
    fn assignments_are_converted_by_type() {
        let declared = Parameters::from([
            ("i".into(), spec(Some(ParamType::Integer))),
            ("n".into(), spec(Some(ParamType::Number))),
            ("b".into(), spec(Some(ParamType::Boolean))),
            ("o".into(), spec(Some(ParamType::Object))),
            ("a".into(), spec(Some(ParamType::Array))),
            ("s".into(), spec(Some(ParamType::String))),
            ("u".into(), spec(None)),
        ]);
        let doc = resolve(
            "p.a",
            &declared,
            Map::new(),
            &assign(&[
                "i=-4",
                "n=2.5",
                "b=TRUE",
                "o={\"k\":[1]}",
                "a=[1,\"x\"]",
                "s=42",
                "u=7",
            ]),
            &[],
        )
        .expect("valid");
        assert_eq!(
            Value::Object(doc),
            json!({"i": -4, "n": 2.5, "b": true, "o": {"k": [1]}, "a": [1, "x"], "s": "42", "u": "7"})
        );
        let found = issues(resolve(
            "p.a",
            &declared,
            Map::new(),
            &assign(&["i=1.5", "n=x", "b=yes", "o=[1]", "a={}"]),
            &[],
        ));
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(
            found[0].contains("`i`: expected an integer, got `1.5`"),
            "{found:?}"
        );
    }

    #[test]
    fn required_enum_and_bounds_are_enforced_together() {
        let found = issues(resolve(
            "p.a",
            &declared(),
            Map::new(),
            &assign(&["count=11", "mode=medium"]),
            &[],
        ));
        assert_eq!(
            found,
            [
                "`count`: expected at most 10, got `11`",
                "`mode`: expected one of \"fast\", \"slow\", got `medium`",
                "missing required parameter `token`",
            ]
        );
    }

    #[test]
    fn many_unknown_parameters_give_few_short_problems() {
        let declared = declared();
        let mut given = Map::new();
        for n in 0..5000 {
            given.insert(format!("{}{n}", "x".repeat(300)), Value::Bool(true));
        }
        let Err(ParamError::Invalid { issues, .. }) = resolve("p.a", &declared, given, &[], &[])
        else {
            panic!("unknown parameters are refused");
        };
        let unknown = issues
            .iter()
            .filter(|i| i.text.starts_with("unknown parameter"))
            .count();
        assert_eq!(unknown, MAX_UNKNOWN_REPORTED);
        assert_eq!(
            issues[MAX_UNKNOWN_REPORTED].text,
            "and 4980 more unknown parameters"
        );
        let bytes: usize = issues
            .iter()
            .map(|i| i.text.len() + i.parameter.len())
            .sum();
        assert!(bytes < 20_000, "{bytes} bytes of problems");
    }

    #[test]
    fn unknown_parameters_list_the_known_ones() {
        let err = resolve(
            "p.a",
            &declared(),
            Map::new(),
            &assign(&["token=x", "nope=1"]),
            &[],
        )
        .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "invalid parameters for action p.a: unknown parameter `nope` (known parameters: count, mode, name, token)"
        );
        let err = resolve(
            "p.a",
            &Parameters::new(),
            Map::new(),
            &assign(&["x=1"]),
            &[],
        )
        .expect_err("none declared");
        assert!(
            err.to_string().contains("known parameters: (none)"),
            "{err}"
        );
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let declared = Parameters::from([(
            "pin".to_string(),
            ParameterSpec {
                secret: true,
                maximum: Some(9999.0),
                ..spec(Some(ParamType::Integer))
            },
        )]);
        for given in ["pin=hunter2secret", "pin=123456789"] {
            let err =
                resolve("p.a", &declared, Map::new(), &assign(&[given]), &[]).expect_err("invalid");
            let text = err.to_string();
            assert!(text.contains("`pin`"), "{text}");
            assert!(text.contains("secret parameter"), "{text}");
            assert!(
                !text.contains("hunter2") && !text.contains("123456789"),
                "{text}"
            );
        }
        // A value given as a secret for a parameter that is not secret: not quoted either.
        let declared = Parameters::from([("pin".to_string(), spec(Some(ParamType::Integer)))]);
        let from_secret = Map::from_iter([("pin".to_string(), json!("4821-TOPSECRET-PIN"))]);
        let err = resolve("p.a", &declared, from_secret, &[], &["pin"]).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("value not shown: given as a secret"),
            "{text}"
        );
        assert!(!text.contains("TOPSECRET"), "{text}");
        // An object with a secret property: its value is never quoted.
        let declared = Parameters::from([(
            "creds".to_string(),
            ParameterSpec {
                secret_properties: vec![vec!["password".to_string()]],
                ..spec(Some(ParamType::Object))
            },
        )]);
        let err = resolve(
            "p.a",
            &declared,
            Map::new(),
            &assign(&["creds={\"password\": \"hunter2secret\"}x"]),
            &[],
        )
        .expect_err("invalid");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = parse_assignments(&["pin".into()]).expect_err("no =");
        assert_eq!(err.to_string(), "parameter `pin`: expected KEY=VALUE");
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

    #[test]
    fn parameters_files_are_json_or_yaml_mappings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json_file = dir.path().join("p.json");
        std::fs::write(&json_file, r#"{"count": 2, "name": "j"}"#).expect("write");
        assert_eq!(
            Value::Object(read_file(&json_file).expect("json")),
            json!({"count": 2, "name": "j"})
        );
        let yaml_file = dir.path().join("p.yaml");
        std::fs::write(&yaml_file, "count: 2\nflags: [a]\n").expect("write");
        assert_eq!(
            Value::Object(read_file(&yaml_file).expect("yaml")),
            json!({"count": 2, "flags": ["a"]})
        );
        let list_file = dir.path().join("l.yaml");
        std::fs::write(&list_file, "- 1\n").expect("write");
        let err = read_file(&list_file).expect_err("not a mapping");
        assert!(
            err.to_string().contains("l.yaml: expected a mapping"),
            "{err}"
        );
        let err = read_file(&dir.path().join("missing.json")).expect_err("missing");
        assert!(
            err.to_string().contains("missing.json: cannot read"),
            "{err}"
        );
        let err = read_file(Path::new("/dev/zero")).expect_err("a device");
        assert_eq!(
            err.to_string(),
            "parameters file /dev/zero: expected a regular file, found a character device"
        );
    }
}
