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

/// What the action's declarations say of parameters they do not declare, and whether the
/// operator refuses them anyway.
#[derive(Clone, Copy, Debug, Default)]
pub struct Undeclared<'a> {
    /// The wrapper style's `additionalProperties`: `false` forbids them, a schema checks them.
    pub additional: Option<&'a Value>,
    /// The operator's `run.strict_parameters`: refuse every undeclared parameter.
    pub strict: bool,
}

/// A parameter document that passed the checks, with what was accepted but deserves a word.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// The document delivered to the action.
    pub document: Map<String, Value>,
    /// Undeclared parameters that were accepted and delivered, each said once.
    pub warnings: Vec<String>,
}

/// Builds the parameter document: defaults, then `from_file`, then `assignments` (which win),
/// then checks every value against its declaration's JSON Schema and that every required
/// parameter has one. Parameters the action does not declare are delivered as given, with a
/// warning, unless its schema forbids them or the operator is strict (Attune accepts them too).
/// All problems are reported together. A parameter named in `given_as_secret` got its value from
/// a secret: like a secret parameter's (or one holding a secret property), that value is never
/// quoted.
pub fn resolve(
    action: &str,
    declared: &Parameters,
    undeclared: Undeclared<'_>,
    from_file: Map<String, Value>,
    assignments: &[(String, String)],
    given_as_secret: &[&str],
) -> Result<Resolved, ParamError> {
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
    let mut unknown: Vec<(String, Value)> = Vec::new();
    for (name, value) in from_file {
        match declared.contains_key(&name) {
            true => {
                document.insert(name, value);
            }
            false => unknown.push((name, value)),
        }
    }
    for (name, raw) in assignments {
        let Some(spec) = declared.get(name) else {
            unknown.retain(|(other, _)| other != name);
            unknown.push((name.clone(), Value::String(raw.clone())));
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
    unknown.sort_by(|a, b| a.0.cmp(&b.0));
    let forbidden = match (undeclared.strict, undeclared.additional) {
        (true, _) => Some("the operator's run.strict_parameters refuses undeclared parameters"),
        (false, Some(Value::Bool(false))) => {
            Some("the action's schema forbids undeclared parameters (additionalProperties: false)")
        }
        _ => None,
    };
    let additional_schema = undeclared
        .additional
        .filter(|schema| schema.is_object())
        .map(|schema| ParameterSpec {
            schema: schema.clone(),
            ..ParameterSpec::default()
        });
    // A request may carry any number of undeclared names, each as long as it likes: the
    // problems and warnings reported about them stay few and short, whatever it held.
    let known = known_list(declared);
    let (mut warnings, mut reported, mut more, mut more_warnings) = (Vec::new(), 0, 0, 0);
    for (name, value) in unknown {
        let shown = shortened(&name);
        let refused = match forbidden {
            Some(why) => vec![issue(
                &shown,
                format!("unknown parameter `{shown}`: {why} (known parameters: {known})"),
            )],
            None => additional_schema
                .as_ref()
                .map(|spec| schema_issues(&shown, spec, &value, None))
                .unwrap_or_default(),
        };
        match refused.is_empty() {
            false if reported < MAX_UNKNOWN_REPORTED => {
                reported += 1;
                issues.extend(refused);
            }
            false => more += 1,
            true if warnings.len() < MAX_UNKNOWN_REPORTED => warnings.push(format!(
                "parameter `{shown}` is not declared by action {action}; delivered as given"
            )),
            true => more_warnings += 1,
        }
        document.insert(name, value);
    }
    if more_warnings > 0 {
        warnings.push(format!(
            "and {more_warnings} more parameters not declared by action {action}, delivered as given"
        ));
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
            Some(value) => issues.extend(schema_issues(name, spec, value, hidden(name, spec))),
            None if spec.required && !failed_conversion.contains(name) => {
                issues.push(issue(name, format!("missing required parameter `{name}`")));
            }
            None => {}
        }
    }
    if issues.is_empty() {
        Ok(Resolved { document, warnings })
    } else {
        Err(ParamError::Invalid {
            action: action.to_string(),
            issues,
        })
    }
}

/// The problems of one parameter's value against its declaration's JSON Schema, each naming the
/// place inside the value (`headers.accept`, `hosts[2]`).
/// The schema's problems with a value, each naming its place; `hidden` says why the value may
/// not be quoted (it is, or holds, a secret), if it may not.
fn schema_issues(
    name: &str,
    spec: &ParameterSpec,
    value: &Value,
    hidden: Option<&str>,
) -> Vec<ParamIssue> {
    let Err(problems) = spec.check(value) else {
        return Vec::new();
    };
    problems
        .into_iter()
        .map(|(pointer, expected)| {
            let at = format!("{name}{}", path_of(&pointer));
            let found = value.pointer(&pointer).map(as_text).unwrap_or_default();
            issue(name, describe(&at, &expected, hidden.ok_or(found.as_str())))
        })
        .collect()
}

/// A JSON pointer (`/hosts/2/name`) as a path after a parameter's name (`.hosts[2].name`).
fn path_of(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|part| part.replace("~1", "/").replace("~0", "~"))
        .map(|part| match part.parse::<usize>() {
            Ok(index) => format!("[{index}]"),
            Err(_) => format!(".{part}"),
        })
        .collect()
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

    fn declared() -> Parameters {
        declarations(
            "name: {type: string, default: world}\n\
             token: {type: string, required: true, secret: true}\n\
             count: {type: integer, minimum: 1, maximum: 10}\n\
             mode: {enum: [fast, slow]}\n",
        )
    }

    fn declarations(yaml: &str) -> Parameters {
        crate::pack::schema::tests::declarations(yaml)
    }

    fn strict() -> Undeclared<'static> {
        Undeclared {
            additional: None,
            strict: true,
        }
    }

    fn assign(pairs: &[&str]) -> Vec<(String, String)> {
        parse_assignments(&pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            .expect("well formed")
    }

    fn issues(result: Result<Resolved, ParamError>) -> Vec<String> {
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
        let err = resolve(
            "p.a",
            &declared(),
            strict(),
            from_file,
            &assign(&["bogus=1"]),
            &[],
        )
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
            Undeclared::default(),
            from_file,
            &assign(&["token=abc", "count=7"]),
            &[],
        )
        .expect("valid");
        assert_eq!(
            Value::Object(doc.document),
            json!({"name": "file", "token": "abc", "count": 7})
        );
    }

    #[test]
    fn assignments_are_converted_by_type() {
        let declared = declarations(
            "i: {type: integer}\nn: {type: number}\nb: {type: boolean}\no: {type: object}\n\
             a: {type: array}\ns: {type: string}\nu: {}\nnullable: {type: [integer, 'null']}\n",
        );
        let doc = resolve(
            "p.a",
            &declared,
            Undeclared::default(),
            Map::new(),
            &assign(&[
                "i=-4",
                "n=2.5",
                "b=TRUE",
                "o={\"k\":[1]}",
                "a=[1,\"x\"]",
                "s=42",
                "u=7",
                "nullable=5",
            ]),
            &[],
        )
        .expect("valid");
        assert_eq!(
            Value::Object(doc.document),
            json!({"i": -4, "n": 2.5, "b": true, "o": {"k": [1]}, "a": [1, "x"], "s": "42", "u": "7", "nullable": 5})
        );
        let found = issues(resolve(
            "p.a",
            &declared,
            Undeclared::default(),
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
            Undeclared::default(),
            Map::new(),
            &assign(&["count=11", "mode=medium"]),
            &[],
        ));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("`count`: ")
                && found[0].contains("maximum of 10")
                && found[0].ends_with("got `11`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("`mode`: ")
                && found[1].contains("fast")
                && found[1].ends_with("got `medium`"),
            "{found:?}"
        );
        assert_eq!(found[2], "missing required parameter `token`");
    }

    #[test]
    fn many_unknown_parameters_give_few_short_problems() {
        let declared = declared();
        let mut given = Map::new();
        for n in 0..5000 {
            given.insert(format!("{}{n}", "x".repeat(300)), Value::Bool(true));
        }
        let Err(ParamError::Invalid { issues, .. }) =
            resolve("p.a", &declared, strict(), given.clone(), &[], &[])
        else {
            panic!("unknown parameters are refused when strict");
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
        // Accepted (not strict): all delivered, with as few and as short warnings.
        given.insert("token".into(), Value::String("t".into()));
        let resolved = resolve("p.a", &declared, Undeclared::default(), given, &[], &[])
            .expect("undeclared parameters are accepted");
        // The 5,000 undeclared, the token and the name's default.
        assert_eq!(resolved.document.len(), 5002);
        assert_eq!(resolved.warnings.len(), MAX_UNKNOWN_REPORTED + 1);
        assert_eq!(
            resolved.warnings[MAX_UNKNOWN_REPORTED],
            "and 4980 more parameters not declared by action p.a, delivered as given"
        );
        let bytes: usize = resolved.warnings.iter().map(String::len).sum();
        assert!(bytes < 20_000, "{bytes} bytes of warnings");
    }

    #[test]
    fn unknown_parameters_list_the_known_ones() {
        let err = resolve(
            "p.a",
            &declared(),
            strict(),
            Map::new(),
            &assign(&["token=x", "nope=1"]),
            &[],
        )
        .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "invalid parameters for action p.a: unknown parameter `nope`: the operator's run.strict_parameters refuses undeclared parameters (known parameters: count, mode, name, token)"
        );
        let err = resolve(
            "p.a",
            &Parameters::new(),
            strict(),
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
        let declared = declarations(
            "pin: {type: integer, secret: true, maximum: 9999}\n\
             code: {type: string, secret: true, pattern: '^[0-9]+$', minLength: 4}\n",
        );
        for given in ["pin=hunter2secret", "pin=123456789", "code=abcxyz"] {
            let err = resolve(
                "p.a",
                &declared,
                Undeclared::default(),
                Map::new(),
                &assign(&[given]),
                &[],
            )
            .expect_err("invalid");
            let text = err.to_string();
            let name = given.split('=').next().unwrap_or_default();
            assert!(text.contains(&format!("`{name}`")), "{text}");
            assert!(text.contains("secret parameter"), "{text}");
            assert!(
                !text.contains("hunter2")
                    && !text.contains("123456789")
                    && !text.contains("abcxyz"),
                "{text}"
            );
        }
        // A value given as a secret for a parameter that is not secret: not quoted either.
        let declared = declarations("pin: {type: integer}\n");
        let from_secret = Map::from_iter([("pin".to_string(), json!("4821-TOPSECRET-PIN"))]);
        let err = resolve(
            "p.a",
            &declared,
            Undeclared::default(),
            from_secret,
            &[],
            &["pin"],
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("value not shown: given as a secret"),
            "{text}"
        );
        assert!(!text.contains("TOPSECRET"), "{text}");
        // An object with a secret property: its value is never quoted, whatever is wrong.
        let declared = declarations(
            "creds: {type: object, properties: {password: {type: string, secret: true}, \
             port: {type: integer}}}\n",
        );
        for given in [
            "creds={\"password\": \"hunter2secret\"}x",
            "creds={\"password\": \"hunter2secret\", \"port\": \"hunter2port\"}",
        ] {
            let err = resolve(
                "p.a",
                &declared,
                Undeclared::default(),
                Map::new(),
                &assign(&[given]),
                &[],
            )
            .expect_err("invalid");
            let text = err.to_string();
            assert!(text.contains("it holds a secret property"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
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
