//! Fields packbox does not know: a misspelt or foreign field (`runtime_version_constraint`, the
//! database column of the seed system) would otherwise be ignored without a word and the action
//! would quietly run on the default version. Each becomes a warning naming the file, line and
//! field, with the nearest known field when there is one. Fields that Attune packs carry and
//! packbox does not use on purpose stay quiet.

use serde_yaml::{Mapping, Value};

use super::doc::Doc;
use super::problem::Problem;
use super::upstream;

/// The fields of `pack.yaml` packbox reads.
const PACK_FIELDS: &[&str] = &[
    "ref",
    "label",
    "name",
    "description",
    "version",
    "author",
    "email",
    "license",
    "conf_schema",
    "config_schema",
    "config",
    "meta",
    "metadata",
    "tags",
    "keywords",
    "runtime_deps",
    "dependencies",
    "testing",
    "network",
];

/// The fields of an action file packbox reads.
const ACTION_FIELDS: &[&str] = &[
    "ref",
    "label",
    "description",
    "enabled",
    "runner_type",
    "entry_point",
    "runtime_version",
    "parameters",
    "output",
    "output_schema",
    "out_schema",
    "parameter_delivery",
    "parameter_format",
    "output_format",
    "timeout_seconds",
    "tags",
    "isolation",
    "workflow_file",
    "network",
];

/// The keys of one parameter declaration packbox reads and checks: the flat style's own
/// (`required: true`, `secret`) and every JSON Schema keyword (the validator enforces them).
const PARAMETER_FIELDS: &[&str] = &[
    "type",
    "default",
    "required",
    "secret",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "pattern",
    "minLength",
    "maxLength",
    "format",
    "items",
    "prefixItems",
    "additionalItems",
    "contains",
    "minContains",
    "maxContains",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedItems",
    "unevaluatedProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$defs",
    "definitions",
    "$schema",
    "$id",
    "$comment",
    "description",
];

/// Annotations a declaration may carry; they check nothing, so nothing is lost.
const PARAMETER_ANNOTATIONS: &[&str] = &[
    "title",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
    "contentEncoding",
    "contentMediaType",
    "immutable",
    "position",
    "placeholder",
];

/// The keys of the wrapper style (`{type: object, properties, required}`).
const WRAPPER_FIELDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "title",
    "description",
    "$schema",
];

/// The keys of the seed's `meta.python_dependencies` mapping packbox reads.
const PYTHON_DEPENDENCY_FIELDS: &[&str] = &["runtime", "dependencies", "requirements_file_content"];

/// Names from other systems that mean one of packbox's fields.
const MEANT: &[(&str, &str)] = &[
    ("runtime_version_constraint", "runtime_version"),
    ("runtime", "runner_type"),
    ("runner", "runner_type"),
    ("runtime_dependencies", "runtime_deps"),
    ("python_dependencies", "meta.python_dependencies"),
    ("system_packages", "meta.system_packages"),
    ("timeout", "timeout_seconds"),
];

/// Warnings for the unknown top-level fields of `pack.yaml`, and of the keys of its
/// `meta.python_dependencies` mapping packbox does not use.
pub(crate) fn pack_warnings(doc: &Doc) -> Vec<Problem> {
    let ignored = upstream::names(upstream::PACK_FIELDS);
    let mut warnings = unknown(doc, "", &doc.keys(), PACK_FIELDS, &ignored);
    for key in ["meta", "metadata"] {
        if let Some(Value::Mapping(meta)) = doc.get(key)
            && let Some(Value::Mapping(declared)) = meta.get("python_dependencies")
        {
            let field = format!("{key}.python_dependencies");
            for name in keys(declared) {
                if PYTHON_DEPENDENCY_FIELDS.contains(&name.as_str()) {
                    continue;
                }
                let message = match name.as_str() {
                    "min_version" | "max_version" => format!(
                        "`{name}` is not used by packbox: state the Python versions on each action with runtime_version (e.g. `>=3.8, <=3.11`)"
                    ),
                    _ => format!(
                        "unknown field `{name}`, ignored{}",
                        hint(&name, PYTHON_DEPENDENCY_FIELDS)
                    ),
                };
                warnings.push(doc.problem(&format!("{field}.{name}"), message));
            }
        }
    }
    if let Some((key, value)) = ["conf_schema", "config_schema"]
        .iter()
        .find_map(|key| Some((*key, doc.get(key)?)))
    {
        warnings.extend(parameter_warnings(doc, key, value));
    }
    warnings
}

/// Warnings for the unknown top-level fields of an action file and of its parameters.
pub(crate) fn action_warnings(doc: &Doc) -> Vec<Problem> {
    let ignored = upstream::names(upstream::ACTION_FIELDS);
    let mut warnings = unknown(doc, "", &doc.keys(), ACTION_FIELDS, &ignored);
    if let Some(parameters) = doc.get("parameters") {
        warnings.extend(parameter_warnings(doc, "parameters", parameters));
    }
    warnings
}

/// Warnings for a parameter schema in either style (flat, or the JSON-Schema wrapper).
fn parameter_warnings(doc: &Doc, field: &str, value: &Value) -> Vec<Problem> {
    let Value::Mapping(map) = value else {
        return Vec::new();
    };
    let wrapper = map.get("type").and_then(Value::as_str) == Some("object")
        && matches!(
            map.get("properties"),
            Some(Value::Mapping(_)) | Some(Value::Null)
        );
    if !wrapper {
        return declarations(doc, field, map);
    }
    let mut warnings = unknown(doc, field, &keys(map), WRAPPER_FIELDS, &[]);
    if let Some(Value::Mapping(properties)) = map.get("properties") {
        warnings.extend(declarations(
            doc,
            &format!("{field}.properties"),
            properties,
        ));
    }
    warnings
}

fn declarations(doc: &Doc, field: &str, properties: &Mapping) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for (name, spec) in properties {
        let (Some(name), Value::Mapping(spec)) = (name.as_str(), spec) else {
            continue;
        };
        let here = format!("{field}.{name}");
        for key in keys(spec) {
            if PARAMETER_FIELDS.contains(&key.as_str())
                || PARAMETER_ANNOTATIONS.contains(&key.as_str())
                || key.starts_with("x-")
            {
                continue;
            }
            let message = format!(
                "unknown field `{key}`, ignored{}",
                hint(&key, PARAMETER_FIELDS)
            );
            warnings.push(doc.problem(&format!("{here}.{key}"), message));
        }
    }
    warnings
}

/// Warnings for the keys among `present` (at `field`, `""` for the top level) that are neither
/// known nor deliberately ignored.
fn unknown(
    doc: &Doc,
    field: &str,
    present: &[String],
    known: &[&str],
    ignored: &[&str],
) -> Vec<Problem> {
    present
        .iter()
        .filter(|key| !known.contains(&key.as_str()) && !ignored.contains(&key.as_str()))
        .map(|key| {
            let at = if field.is_empty() {
                key.clone()
            } else {
                format!("{field}.{key}")
            };
            doc.problem(&at, format!("unknown field, ignored{}", hint(key, known)))
        })
        .collect()
}

/// `; did you mean `runtime_version`?` when a known field is near enough.
fn hint(key: &str, known: &[&str]) -> String {
    nearest(key, known)
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default()
}

/// The known field a name most likely means: a name from another system that means it, else the
/// most similar (Jaro-Winkler at least 0.8, on lower case).
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    if let Some((_, meant)) = MEANT.iter().find(|(other, _)| *other == lower) {
        return known
            .iter()
            .copied()
            .find(|k| k == meant || meant.ends_with(&format!(".{k}")))
            .or(Some(meant));
    }
    known
        .iter()
        .map(|k| (*k, strsim::jaro_winkler(&lower, &k.to_ascii_lowercase())))
        .filter(|(_, similarity)| *similarity >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

/// A mapping's keys as text (non-text keys in their YAML form).
fn keys(map: &Mapping) -> Vec<String> {
    map.keys().map(key_text).collect()
}

/// A key as text: text keys as they are, others (`1`, `true`) as YAML writes them.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other)
            .map(|text| text.trim().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings_of(text: &str, action: bool) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, text).expect("write");
        let doc = Doc::read(&file, &mut Vec::new()).expect("parses");
        let found = if action {
            action_warnings(&doc)
        } else {
            pack_warnings(&doc)
        };
        found
            .iter()
            .map(|p| {
                let shown = p.to_string();
                shown
                    .split_once("x.yaml")
                    .map_or(shown.clone(), |(_, rest)| rest.to_string())
            })
            .collect()
    }

    #[test]
    fn a_foreign_or_misspelt_field_names_the_field_it_means() {
        let found = warnings_of(
            "ref: p.a\nentry_point: a.sh\nruntime_version_constraint: '>=3.12'\ntimeout_secs: 5\nrunner_typ: python\nwhatever: 1\n",
            true,
        );
        assert_eq!(
            found,
            [
                ":3: field `runtime_version_constraint`: unknown field, ignored; did you mean `runtime_version`?",
                ":4: field `timeout_secs`: unknown field, ignored; did you mean `timeout_seconds`?",
                ":5: field `runner_typ`: unknown field, ignored; did you mean `runner_type`?",
                ":6: field `whatever`: unknown field, ignored",
            ]
        );
    }

    #[test]
    fn attune_fields_packbox_ignores_on_purpose_are_quiet() {
        assert!(warnings_of("ref: p.a\nentry_point: a\nname: a\npack: p\nenabled: false\nnotify: {}\ntags: [x]\n", true).is_empty());
        assert!(warnings_of("ref: p\nlabel: P\nversion: '1'\nsystem: true\nenabled: true\ntesting: {}\nmeta: {python_dependencies: [x]}\n", false).is_empty());
    }

    #[test]
    fn parameter_keys_are_checked_in_both_styles() {
        let found = warnings_of(
            "ref: p.a\nentry_point: a\nparameters:\n  n:\n    type: integer\n    requried: true\n    pattern: '^a'\n    title: N\n",
            true,
        );
        // `pattern` is a JSON Schema keyword the validator enforces: no warning.
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(":6: field `parameters.n.requried`: unknown field `requried`, ignored; did you mean `required`?"), "{found:?}");
        let wrapped = warnings_of(
            "ref: p.a\nentry_point: a\nparameters:\n  type: object\n  propertys: {}\n  properties:\n    n: {type: string, defualt: x}\n",
            true,
        );
        assert_eq!(wrapped.len(), 2, "{wrapped:?}");
        assert!(
            wrapped
                .iter()
                .any(|w| w.contains("`parameters.propertys`")
                    && w.contains("did you mean `properties`")),
            "{wrapped:?}"
        );
        assert!(
            wrapped
                .iter()
                .any(|w| w.contains("`defualt`, ignored; did you mean `default`?")),
            "{wrapped:?}"
        );
    }

    #[test]
    fn pack_fields_and_the_seed_mapping_are_checked() {
        let found = warnings_of(
            "ref: p\nlabel: P\nversion: '1'\nruntime_dependencies: [python]\nmeta:\n  python_dependencies:\n    dependencies: [x]\n    max_version: '3.11'\n",
            false,
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains(
                "field `runtime_dependencies`: unknown field, ignored; did you mean `runtime_deps`?"
            ),
            "{found:?}"
        );
        assert!(
            found[1].contains("`max_version` is not used by packbox"),
            "{found:?}"
        );
    }
}
