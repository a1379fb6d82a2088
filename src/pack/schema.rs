//! Parameter declarations of an action (and a pack's `conf_schema`), in either style packs use:
//! flat (`{name: {type, default, required, secret, enum, minimum, maximum}}`) or the JSON-Schema
//! wrapper (`{type: object, properties: {...}, required: [...]}`), and the checks a value must pass.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;
use serde_yaml::Value;

use super::doc::{Doc, kind};
use super::problem::Problem;

/// The declared type of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number, whole or not.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object (a mapping).
    Object,
    /// A JSON array (a list).
    Array,
}

impl ParamType {
    const ALL: [ParamType; 6] = [
        ParamType::String,
        ParamType::Integer,
        ParamType::Number,
        ParamType::Boolean,
        ParamType::Object,
        ParamType::Array,
    ];

    fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Object => "object",
            ParamType::Array => "array",
        }
    }

    fn parse(text: &str) -> Option<ParamType> {
        ParamType::ALL.into_iter().find(|t| t.name() == text)
    }

    /// Whether a JSON value is of this type (an integer is also a number).
    pub fn fits(self, value: &Json) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Object => value.is_object(),
            ParamType::Array => value.is_array(),
        }
    }

    /// "a string", "an integer", ...
    pub fn with_article(self) -> String {
        match self {
            ParamType::Integer | ParamType::Object | ParamType::Array => format!("an {}", self),
            _ => format!("a {}", self),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One declared parameter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParameterSpec {
    /// `None`: any value; values given on the command line stay text.
    pub kind: Option<ParamType>,
    /// The value used when none is given.
    pub default: Option<Json>,
    /// A run is refused unless a value is given or defaulted.
    pub required: bool,
    /// Never shown: not in error messages, listings or logs.
    pub secret: bool,
    /// The only values allowed (`enum`), when listed.
    pub enum_values: Option<Vec<Json>>,
    /// The least number allowed.
    pub minimum: Option<f64>,
    /// The greatest number allowed.
    pub maximum: Option<f64>,
    /// What the parameter means, as `actions list --json` shows it.
    pub description: Option<String>,
    /// Paths inside an object value whose property is declared `secret: true` (its nested
    /// `properties`, at any depth): those values are secrets like a secret parameter's.
    pub secret_properties: Vec<Vec<String>>,
}

impl ParameterSpec {
    /// Whether any part of this parameter's value is secret: the whole (`secret: true`) or a
    /// property inside it. Such values are never quoted.
    pub fn holds_secret(&self) -> bool {
        self.secret || !self.secret_properties.is_empty()
    }

    /// The default as listings may show it: none for a secret parameter, and every secret
    /// property inside it replaced by `***`.
    pub fn public_default(&self) -> Option<Json> {
        if self.secret {
            return None;
        }
        let mut default = self.default.clone()?;
        for path in &self.secret_properties {
            if let Some(found) = value_at_mut(&mut default, path) {
                *found = Json::String(REDACTED.into());
            }
        }
        Some(default)
    }

    /// The secret parts of a value of this parameter: the whole value when the parameter is
    /// secret, else the values of its secret properties that the value holds.
    pub fn secret_parts<'v>(&self, value: &'v Json) -> Vec<&'v Json> {
        if self.secret {
            return vec![value];
        }
        self.secret_properties
            .iter()
            .filter_map(|path| value_at(value, path))
            .collect()
    }

    /// Checks a value against the type, `enum`, `minimum` and `maximum`. The error says what was
    /// expected and never quotes the value, so it is safe for secrets.
    pub fn check(&self, value: &Json) -> Result<(), String> {
        if let Some(kind) = self.kind
            && !kind.fits(value)
        {
            return Err(format!("expected {}", kind.with_article()));
        }
        if let Some(allowed) = &self.enum_values
            && !allowed.contains(value)
        {
            let listed: Vec<String> = allowed.iter().map(Json::to_string).collect();
            return Err(format!("expected one of {}", listed.join(", ")));
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = self.minimum
                && number < minimum
            {
                return Err(format!("expected at least {minimum}"));
            }
            if let Some(maximum) = self.maximum
                && number > maximum
            {
                return Err(format!("expected at most {maximum}"));
            }
        }
        Ok(())
    }
}

/// What a secret shows as where its place must be kept (a listing's default).
const REDACTED: &str = "***";

fn value_at<'v>(value: &'v Json, path: &[String]) -> Option<&'v Json> {
    path.iter()
        .try_fold(value, |at, key| at.as_object()?.get(key))
}

fn value_at_mut<'v>(value: &'v mut Json, path: &[String]) -> Option<&'v mut Json> {
    path.iter()
        .try_fold(value, |at, key| at.as_object_mut()?.get_mut(key))
}

/// The paths of the properties declared `secret: true` under an object parameter's
/// `properties`, at any depth.
fn secret_property_paths(properties: Option<&Value>) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut pending: Vec<(Vec<String>, &Value)> =
        properties.map(|p| (Vec::new(), p)).into_iter().collect();
    while let Some((prefix, properties)) = pending.pop() {
        let Value::Mapping(properties) = properties else {
            continue;
        };
        for (name, declaration) in properties {
            let (Some(name), Value::Mapping(declaration)) = (name.as_str(), declaration) else {
                continue;
            };
            let mut path = prefix.clone();
            path.push(name.to_string());
            if declaration.get("secret") == Some(&Value::Bool(true)) {
                paths.push(path);
            } else if let Some(inner) = declaration.get("properties") {
                pending.push((path, inner));
            }
        }
    }
    paths.sort();
    paths
}

/// The declared parameters, by name.
pub type Parameters = BTreeMap<String, ParameterSpec>;

/// Reads a parameter schema in either style; `field` is where it sits (`parameters`).
pub(crate) fn parse(
    doc: &Doc,
    field: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
) -> Parameters {
    let map = match value {
        Value::Null => return Parameters::new(),
        Value::Mapping(map) => map,
        _ => {
            problems.push(doc.problem(
                field,
                format!("expected a mapping of parameters, found {}", kind(value)),
            ));
            return Parameters::new();
        }
    };
    let wrapper = map.get("type").and_then(Value::as_str) == Some("object")
        && matches!(
            map.get("properties"),
            Some(Value::Mapping(_)) | Some(Value::Null)
        );
    if !wrapper {
        return parse_properties(doc, field, map, &[], problems);
    }
    let properties_field = format!("{field}.properties");
    let required = match map.get("required") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => doc.text_list(&format!("{field}.required"), value, problems),
    };
    let properties = match map.get("properties") {
        Some(Value::Mapping(properties)) => properties.clone(),
        _ => serde_yaml::Mapping::new(),
    };
    let parameters = parse_properties(doc, &properties_field, &properties, &required, problems);
    for name in required
        .iter()
        .filter(|name| !parameters.contains_key(*name))
    {
        problems.push(doc.problem(
            &format!("{field}.required"),
            format!("names `{name}`, which is not one of the properties"),
        ));
    }
    parameters
}

fn parse_properties(
    doc: &Doc,
    field: &str,
    map: &serde_yaml::Mapping,
    required: &[String],
    problems: &mut Vec<Problem>,
) -> Parameters {
    let mut parameters = Parameters::new();
    for (name, spec) in map {
        let Some(name) = name.as_str() else {
            problems.push(doc.problem(
                field,
                format!("parameter names must be text, found {}", kind(name)),
            ));
            continue;
        };
        let here = format!("{field}.{name}");
        let mut spec = parse_spec(doc, &here, spec, problems);
        spec.required |= required.iter().any(|r| r == name);
        parameters.insert(name.to_string(), spec);
    }
    parameters
}

fn parse_spec(doc: &Doc, field: &str, value: &Value, problems: &mut Vec<Problem>) -> ParameterSpec {
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return ParameterSpec::default(),
        _ => {
            problems.push(doc.problem(
                field,
                format!(
                    "expected a mapping (type, default, required, ...), found {}",
                    kind(value)
                ),
            ));
            return ParameterSpec::default();
        }
    };
    let at = |key: &str| format!("{field}.{key}");
    let mut spec = ParameterSpec::default();
    let before = problems.len();
    if let Some(value) = map.get("type") {
        let names = ParamType::ALL.map(ParamType::name).join(", ");
        match value.as_str().map(ParamType::parse) {
            Some(Some(kind)) => spec.kind = Some(kind),
            _ => problems.push(doc.problem(&at("type"), format!("expected one of {names}"))),
        }
    }
    for (key, flag) in [
        ("required", &mut spec.required),
        ("secret", &mut spec.secret),
    ] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(value)) => *flag = *value,
            Some(other) => problems.push(doc.problem(
                &at(key),
                format!("expected true or false, found {}", kind(other)),
            )),
        }
    }
    for (key, bound) in [
        ("minimum", &mut spec.minimum),
        ("maximum", &mut spec.maximum),
    ] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => *bound = n.as_f64(),
            Some(other) => problems.push(doc.problem(
                &at(key),
                format!("expected a number, found {}", kind(other)),
            )),
        }
    }
    if let (Some(minimum), Some(maximum)) = (spec.minimum, spec.maximum)
        && minimum > maximum
    {
        problems.push(doc.problem(
            &at("maximum"),
            format!("expected at least the minimum ({minimum})"),
        ));
    }
    match map.get("enum") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) if !items.is_empty() => {
            let items: Vec<Json> = items
                .iter()
                .filter_map(|i| doc.json(&at("enum"), i, problems))
                .collect();
            let only_type = ParameterSpec {
                kind: spec.kind,
                ..Default::default()
            };
            if let Some(bad) = items.iter().position(|i| only_type.check(i).is_err()) {
                let expected = spec.kind.map(ParamType::with_article).unwrap_or_default();
                problems.push(doc.problem(
                    &at("enum"),
                    format!("item {}: expected {expected}", bad + 1),
                ));
            }
            spec.enum_values = Some(items);
        }
        Some(other) => problems.push(doc.problem(
            &at("enum"),
            format!("expected a non-empty list, found {}", kind(other)),
        )),
    }
    if let Some(value) = map.get("description") {
        spec.description = doc.text(&at("description"), value, problems);
    }
    spec.secret_properties = secret_property_paths(map.get("properties"));
    if let Some(value) = map.get("default")
        && !value.is_null()
    {
        spec.default = doc.json(&at("default"), value, problems);
        // A default that its own declaration refuses would fail every run that relies on it.
        if problems.len() == before
            && let Some(default) = &spec.default
            && let Err(expected) = spec.check(default)
        {
            problems.push(doc.problem(&at("default"), expected));
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_text(text: &str) -> (Parameters, Vec<Problem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, text).expect("write");
        let mut problems = Vec::new();
        let doc = Doc::read(&file, &mut problems).expect("parses");
        let value = doc.get("parameters").cloned().unwrap_or(Value::Null);
        let parameters = parse(&doc, "parameters", &value, &mut problems);
        (parameters, problems)
    }

    #[test]
    fn flat_and_json_schema_styles_mean_the_same() {
        let (flat, problems) = parse_text(
            "parameters:\n  name: {type: string, required: true}\n  count: {type: integer, default: 2, minimum: 1, maximum: 5}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let (wrapped, problems) = parse_text(
            "parameters:\n  type: object\n  properties:\n    name: {type: string}\n    count: {type: integer, default: 2, minimum: 1, maximum: 5}\n  required: [name]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(flat, wrapped);
        assert!(flat["name"].required);
        assert_eq!(flat["count"].default, Some(json!(2)));
        assert_eq!(flat["count"].minimum, Some(1.0));
    }

    #[test]
    fn every_bad_declaration_is_reported_with_its_field() {
        let (_, problems) = parse_text(
            "parameters:\n  a: {type: text}\n  b: {type: integer, required: yes please}\n  c: {type: integer, default: two}\n  d: {type: string, enum: [x, 1]}\n  e: {minimum: 5, maximum: 1}\n  f: 7\n",
        );
        let fields: Vec<_> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "parameters.a.type",
                "parameters.b.required",
                "parameters.c.default",
                "parameters.d.enum",
                "parameters.e.maximum",
                "parameters.f"
            ],
            "{problems:?}"
        );
        assert_eq!(problems[0].line, Some(2));
        assert!(
            problems[2].message.contains("expected an integer"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_required_name_must_be_a_property() {
        let (_, problems) = parse_text(
            "parameters:\n  type: object\n  properties:\n    a: {type: string}\n  required: [a, b]\n",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("`b`"));
    }

    #[test]
    fn check_enforces_type_enum_and_bounds() {
        let spec = ParameterSpec {
            kind: Some(ParamType::Integer),
            enum_values: Some(vec![json!(1), json!(2), json!(9)]),
            maximum: Some(5.0),
            ..Default::default()
        };
        assert_eq!(spec.check(&json!(2)), Ok(()));
        assert_eq!(spec.check(&json!("2")), Err("expected an integer".into()));
        assert_eq!(spec.check(&json!(1.5)), Err("expected an integer".into()));
        assert_eq!(spec.check(&json!(3)), Err("expected one of 1, 2, 9".into()));
        assert_eq!(spec.check(&json!(9)), Err("expected at most 5".into()));
        let number = ParameterSpec {
            kind: Some(ParamType::Number),
            minimum: Some(0.5),
            ..Default::default()
        };
        assert_eq!(number.check(&json!(1)), Ok(()));
        assert_eq!(
            number.check(&json!(0.25)),
            Err("expected at least 0.5".into())
        );
        for (kind, good, bad) in [
            (ParamType::String, json!("x"), json!(1)),
            (ParamType::Boolean, json!(true), json!("true")),
            (ParamType::Object, json!({}), json!([])),
            (ParamType::Array, json!([]), json!({})),
        ] {
            let spec = ParameterSpec {
                kind: Some(kind),
                ..Default::default()
            };
            assert!(spec.check(&good).is_ok(), "{kind}");
            assert!(spec.check(&bad).is_err(), "{kind}");
        }
    }
}
