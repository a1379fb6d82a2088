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
    /// `None`: any value; values given on the command line stay text. For a union
    /// (`[string, "null"]`) the first type that is not `null`.
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
    /// The declaration as a JSON Schema (every keyword, as written), without the flat style's
    /// own keys (`required: true`, `secret`): what a value is validated against.
    pub schema: Json,
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

    /// Checks a value against the declaration's JSON Schema: every problem, each with the path
    /// inside the value (`""` for the value itself, `/0/name` inside it) and what was expected.
    /// The value itself is never quoted, so this is safe for secrets.
    pub fn check(&self, value: &Json) -> Result<(), Vec<(String, String)>> {
        let validator = compile(&self.schema).map_err(|e| vec![(String::new(), e)])?;
        let problems: Vec<(String, String)> = validator
            .iter_errors(value)
            .map(|e| (e.instance_path().to_string(), e.masked().to_string()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
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

/// Keys of a flat declaration that are not JSON Schema (Attune's and packbox's own), left out
/// of the schema a value is validated against.
const NOT_SCHEMA: &[&str] = &["required", "secret", "immutable", "position", "placeholder"];

/// A declaration compiled by the JSON Schema validator; the error says why it is no schema (a
/// bad `pattern`, a negative `minLength`, a `$ref` packbox cannot resolve).
pub(crate) fn compile(schema: &Json) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// The declared parameters, by name.
pub type Parameters = BTreeMap<String, ParameterSpec>;

/// What the JSON-Schema wrapper style says of parameters it does not declare
/// (`additionalProperties`): `false` forbids them, a schema checks them; `None` when the
/// declarations are flat or the wrapper says nothing (unknown parameters are then accepted with a
/// warning, as Attune does).
pub(crate) fn additional(value: &Value) -> Option<Json> {
    let Value::Mapping(map) = value else {
        return None;
    };
    if map.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    serde_json::to_value(map.get("additionalProperties")?).ok()
}

/// Reads a parameter schema in either style; `field` is where it sits (`parameters`).
pub(crate) fn parse(
    doc: &Doc,
    field: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
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
        return parse_properties(doc, field, map, &[], problems, warnings);
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
    let parameters = parse_properties(
        doc,
        &properties_field,
        &properties,
        &required,
        problems,
        warnings,
    );
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
    warnings: &mut Vec<Problem>,
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
        let mut spec = parse_spec(doc, &here, spec, problems, warnings);
        spec.required |= required.iter().any(|r| r == name);
        parameters.insert(name.to_string(), spec);
    }
    parameters
}

fn parse_spec(
    doc: &Doc,
    field: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> ParameterSpec {
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
        // One type, or a union of them (`[string, "null"]`).
        let listed: Vec<Option<&str>> = match value {
            Value::Sequence(items) if !items.is_empty() => {
                items.iter().map(Value::as_str).collect()
            }
            other => vec![other.as_str()],
        };
        if listed
            .iter()
            .all(|name| name.is_some_and(|n| n == "null" || ParamType::parse(n).is_some()))
        {
            spec.kind = listed
                .iter()
                .flatten()
                .find_map(|name| ParamType::parse(name));
        } else {
            problems.push(doc.problem(
                &at("type"),
                format!("expected one of {names}, null, or a list of them"),
            ));
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
            spec.enum_values = Some(
                items
                    .iter()
                    .filter_map(|i| doc.json(&at("enum"), i, problems))
                    .collect(),
            );
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
    }
    if problems.len() == before
        && let Some(Json::Object(mut schema)) = doc.json(field, value, problems)
    {
        schema.retain(|key, _| !NOT_SCHEMA.contains(&key.as_str()));
        spec.schema = Json::Object(schema);
        match compile(&spec.schema) {
            Err(why) => {
                problems.push(doc.problem(field, format!("not a valid JSON Schema: {why}")))
            }
            Ok(validator) => {
                // Attune loads such a pack; a run that relies on the default is refused.
                if let Some(default) = &spec.default
                    && let Some(error) = validator.iter_errors(default).next()
                {
                    warnings.push(doc.problem(
                        &at("default"),
                        format!(
                            "the default does not match its declaration ({}); a run that relies on it is refused",
                            error.masked()
                        ),
                    ));
                }
                if let Some(items) = &spec.enum_values
                    && let Some(bad) = items.iter().position(|i| !validator.is_valid(i))
                {
                    warnings.push(doc.problem(
                        &at("enum"),
                        format!(
                            "item {} does not match the declaration's type; no value can choose it",
                            bad + 1
                        ),
                    ));
                }
            }
        }
    }
    spec
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn parse_with_warnings(text: &str) -> (Parameters, Vec<Problem>, Vec<Problem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, text).expect("write");
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let doc = Doc::read(&file, &mut problems).expect("parses");
        let value = doc.get("parameters").cloned().unwrap_or(Value::Null);
        let parameters = parse(&doc, "parameters", &value, &mut problems, &mut warnings);
        (parameters, problems, warnings)
    }

    fn parse_text(text: &str) -> (Parameters, Vec<Problem>) {
        let (parameters, problems, _) = parse_with_warnings(text);
        (parameters, problems)
    }

    /// Flat declarations from YAML (`name: {type: string}` lines), which must be valid.
    pub(crate) fn declarations(yaml: &str) -> Parameters {
        let indented: String = yaml.lines().map(|line| format!("  {line}\n")).collect();
        let (parameters, problems) = parse_text(&format!("parameters:\n{indented}"));
        assert!(problems.is_empty(), "{problems:?}");
        parameters
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
        let (_, problems, warnings) = parse_with_warnings(
            "parameters:\n  a: {type: text}\n  b: {type: integer, required: yes please}\n  c: {type: integer, default: two}\n  d: {type: string, enum: [x, 1]}\n  e: {minimum: 5, maximum: 1}\n  f: 7\n  g: {type: string, pattern: '('}\n  h: {type: string, minLength: -1}\n",
        );
        let fields: Vec<_> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "parameters.a.type",
                "parameters.b.required",
                "parameters.e.maximum",
                "parameters.f",
                "parameters.g",
                "parameters.h",
            ],
            "{problems:?}"
        );
        assert_eq!(problems[0].line, Some(2));
        assert!(
            problems[4].message.contains("not a valid JSON Schema"),
            "{problems:?}"
        );
        // Attune loads a default or an enum item of the wrong type: a warning, not a problem.
        let warned: Vec<_> = warnings.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            warned,
            ["parameters.c.default", "parameters.d.enum"],
            "{warnings:?}"
        );
        assert!(
            warnings[0]
                .message
                .contains("a run that relies on it is refused")
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

    /// Each JSON Schema keyword packs use, with a value it accepts and one it refuses; the
    /// refusal names the place inside the value.
    #[test]
    fn every_json_schema_keyword_is_enforced_with_its_path() {
        let declared = declarations(
            "pattern: {type: string, pattern: '^[a-z]+$'}\n\
             lengths: {type: string, minLength: 2, maxLength: 3}\n\
             items_count: {type: array, minItems: 1, maxItems: 2}\n\
             unique: {type: array, uniqueItems: true}\n\
             items: {type: array, items: {type: integer}}\n\
             props: {type: object, properties: {port: {type: integer}}, additionalProperties: false}\n\
             one: {oneOf: [{type: integer}, {type: string}]}\n\
             any: {anyOf: [{type: integer, minimum: 10}, {type: string}]}\n\
             all: {allOf: [{type: integer}, {minimum: 5}]}\n\
             not: {not: {type: string}}\n\
             const: {const: fixed}\n\
             multiple: {type: number, multipleOf: 5}\n\
             union: {type: [string, 'null']}\n\
             exclusive: {type: number, exclusiveMinimum: 0, exclusiveMaximum: 1}\n",
        );
        for (name, good, bad, at) in [
            ("pattern", json!("abc"), json!("ABC"), ""),
            ("lengths", json!("ab"), json!("abcd"), ""),
            ("items_count", json!([1]), json!([]), ""),
            ("unique", json!([1, 2]), json!([1, 1]), ""),
            ("items", json!([1, 2]), json!([1, "x"]), "/1"),
            ("props", json!({"port": 80}), json!({"port": "80"}), "/port"),
            ("props", json!({}), json!({"other": 1}), ""),
            ("one", json!(1), json!(true), ""),
            ("any", json!("x"), json!(3), ""),
            ("all", json!(7), json!(3), ""),
            ("not", json!(1), json!("x"), ""),
            ("const", json!("fixed"), json!("other"), ""),
            ("multiple", json!(15), json!(7), ""),
            ("union", json!(null), json!(1), ""),
            ("exclusive", json!(0.5), json!(1), ""),
        ] {
            let spec = &declared[name];
            assert_eq!(spec.check(&good), Ok(()), "{name} accepts {good}");
            let problems = spec.check(&bad).expect_err(name);
            assert_eq!(
                problems[0].0, at,
                "{name} refuses {bad} at {at}: {problems:?}"
            );
            // Messages never quote the value (it may be a secret).
            if let Some(text) = bad.as_str() {
                assert!(
                    problems.iter().all(|(_, m)| !m.contains(text)),
                    "{name}: {problems:?}"
                );
            }
        }
        assert_eq!(declared["union"].kind, Some(ParamType::String));
    }

    #[test]
    fn the_wrapper_says_what_becomes_of_undeclared_parameters() {
        let value = |text: &str| serde_yaml::from_str::<Value>(text).expect("yaml");
        assert_eq!(
            additional(&value(
                "{type: object, properties: {}, additionalProperties: false}"
            )),
            Some(json!(false))
        );
        assert_eq!(additional(&value("{type: object, properties: {}}")), None);
        assert_eq!(additional(&value("{a: {type: string}}")), None);
    }

    #[test]
    fn a_schema_that_would_fetch_something_is_refused() {
        let (_, problems) =
            parse_text("parameters:\n  a: {$ref: 'https://example.invalid/schema.json'}\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("not a valid JSON Schema"),
            "{problems:?}"
        );
    }
}
