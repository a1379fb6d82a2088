//! `pack.yaml`: the pack's identity, configuration schema and dependencies, with the legacy
//! spellings (`name`, `config_schema`, `metadata`, `keywords`) that older packs use.

use std::path::Path;

use serde_json::Value as Json;

use super::dependencies::Requirement;
use super::doc::Doc;
use super::fields;
use super::problem::Problem;
use super::safety::is_pack_ref;
use super::schema::{self, Parameters};
use super::testing::{self, Testing};
use super::upstream::{self, UpstreamField};
use crate::version::parse_version;

/// `pack.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct PackManifest {
    /// The pack's name (`ref`): the first part of its action references, and its folder's name.
    pub pack_ref: String,
    /// A short human-readable name (`name` in older packs).
    pub label: String,
    /// What the pack is for.
    pub description: Option<String>,
    /// The pack's version, like `1.0.0`.
    pub version: String,
    /// Who wrote it; informational.
    pub author: Option<String>,
    /// How to reach the author; informational.
    pub email: Option<String>,
    /// The pack's licence; informational.
    pub license: Option<String>,
    /// The pack's configuration schema (`config_schema` in older packs).
    pub conf_schema: Parameters,
    /// The pack's configuration values (`config`), as written.
    pub config: Option<Json>,
    /// Free-form metadata (`metadata` in older packs).
    pub meta: Option<Json>,
    /// The Python requirements `meta.python_dependencies` declares, in order: a list of
    /// requirement strings, or the seed's mapping (`dependencies`, `requirements_file_content`).
    pub python_dependencies: Vec<Requirement>,
    /// The Debian packages `meta.system_packages` names, sorted, each a checked package name.
    pub system_packages: Vec<String>,
    /// `keywords` in older packs.
    pub tags: Vec<String>,
    /// Runtimes the pack needs (`python`, `shell`, ...).
    pub runtime_deps: Vec<String>,
    /// Other packs this pack needs, by ref.
    pub dependencies: Vec<String>,
    /// The pack's tests (`packbox test`), when it has a `testing` section.
    pub testing: Option<Testing>,
    /// Fields Attune acts on that packbox does not, as `explain` lists them.
    pub upstream_only: Vec<UpstreamField>,
    /// The destinations every action of the pack says it needs (`network: {egress: [...]}`).
    pub network: Vec<crate::egress::destination::Destination>,
}

/// Reads `pack.yaml`; `None` when it has problems, which are recorded. Fields packbox does not
/// know are recorded as warnings.
pub(crate) fn load(
    file: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<PackManifest> {
    let doc = Doc::read(file, problems)?;
    warnings.extend(fields::pack_warnings(&doc));
    let before = problems.len();
    let required_text = |keys: &[&str], expected: &str, problems: &mut Vec<Problem>| match doc
        .aliased(keys, problems)
    {
        Some((key, value)) => doc.text(&key, value, problems),
        None => {
            problems.push(doc.problem(keys[0], format!("missing; expected {expected}")));
            None
        }
    };
    let pack_ref = required_text(&["ref"], "the pack's ref, like `my_pack`", problems);
    if let Some(pack_ref) = &pack_ref
        && !is_pack_ref(pack_ref)
    {
        problems.push(doc.problem(
            "ref",
            format!("`{pack_ref}` breaks the naming rule: lowercase letters, digits, `_` and `-`, starting with a letter, no dots"),
        ));
    }
    let label = required_text(&["label", "name"], "a human-readable label", problems);
    let version = required_text(&["version"], "the pack's version, like 1.0.0", problems);
    if let Some(version) = &version
        && parse_version(version).is_err()
    {
        problems.push(doc.problem(
            "version",
            format!("`{version}` is not a version like 1.0.0"),
        ));
    }
    let conf_schema = match doc.aliased(&["conf_schema", "config_schema"], problems) {
        Some((key, value)) => schema::parse(&doc, &key, value, problems, warnings),
        None => Parameters::new(),
    };
    let mapping = |keys: &[&str], problems: &mut Vec<Problem>| {
        doc.aliased(keys, problems)
            .and_then(|(key, value)| doc.json_mapping(&key, value, problems))
    };
    let config = mapping(&["config"], problems);
    let meta = mapping(&["meta", "metadata"], problems);
    let meta_key = if doc.get("meta").is_some() {
        "meta"
    } else {
        "metadata"
    };
    let python_dependencies = meta
        .as_ref()
        .and_then(|meta| meta.get("python_dependencies"))
        .map(|declared| {
            let field = format!("{meta_key}.python_dependencies");
            python_dependencies(declared, &field).unwrap_or_else(|message| {
                problems.push(doc.problem(&field, message));
                Vec::new()
            })
        })
        .unwrap_or_default();
    let system_packages = meta
        .as_ref()
        .and_then(|meta| meta.get("system_packages"))
        .map(|declared| {
            super::system_packages::parse(declared).unwrap_or_else(|message| {
                problems.push(doc.problem(&format!("{meta_key}.system_packages"), message));
                Vec::new()
            })
        })
        .unwrap_or_default();
    let list = |keys: &[&str], problems: &mut Vec<Problem>| {
        doc.aliased(keys, problems)
            .map(|(key, value)| doc.text_list(&key, value, problems))
            .unwrap_or_default()
    };
    let tags = list(&["tags", "keywords"], problems);
    let runtime_deps = list(&["runtime_deps"], problems);
    let dependencies = list(&["dependencies"], problems);
    let pack_dir = file.parent().unwrap_or(file);
    let testing = doc
        .get("testing")
        .filter(|value| !value.is_null())
        .and_then(|value| testing::parse(&doc, value, pack_dir, problems, warnings));
    let [description, author, email, license] =
        ["description", "author", "email", "license"].map(|key| doc.optional_text(key, problems));
    // `enabled: true` changes nothing; only a disabled pack would behave otherwise in Attune.
    let keys: Vec<String> = doc
        .keys()
        .into_iter()
        .filter(|key| key != "enabled" || doc.get(key) == Some(&serde_yaml::Value::Bool(false)))
        .collect();
    let upstream_only = upstream::behaviour_changing(upstream::PACK_FIELDS, &keys);
    let network = super::network::needs(&doc, problems);
    // Reported in the order of the file; problems without a line (missing fields) come last.
    problems[before..].sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    let manifest = PackManifest {
        pack_ref: pack_ref?,
        label: label?,
        description,
        version: version?,
        author,
        email,
        license,
        conf_schema,
        config,
        meta,
        python_dependencies,
        system_packages,
        tags,
        runtime_deps,
        dependencies,
        testing,
        upstream_only,
        network,
    };
    (problems.len() == before).then_some(manifest)
}

/// The requirements of `meta.python_dependencies`: a list of requirement strings, or a mapping
/// with `dependencies` (such a list) and `requirements_file_content` (requirements.txt text).
fn python_dependencies(declared: &Json, field: &str) -> Result<Vec<Requirement>, String> {
    let list = |items: &Json, field: &str| -> Result<Vec<Requirement>, String> {
        let Json::Array(items) = items else {
            return Err(format!(
                "expected a list of requirement strings like `requests>=2.28`, found {}",
                json_kind(items)
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Json::String(text) if !text.trim().is_empty() => Ok(Requirement {
                    text: text.trim().to_string(),
                    source: format!("pack.yaml {field}"),
                }),
                other => Err(format!(
                    "item {}: expected a requirement string like `requests>=2.28`, found {}",
                    index + 1,
                    json_kind(other)
                )),
            })
            .collect()
    };
    match declared {
        Json::Null => Ok(Vec::new()),
        Json::Array(_) => list(declared, field),
        Json::Object(mapping) => {
            if let Some(runtime) = mapping.get("runtime")
                && !matches!(
                    runtime.as_str().map(str::to_ascii_lowercase).as_deref(),
                    Some("python" | "python3")
                )
            {
                return Err(format!("`runtime`: expected python, found {runtime}"));
            }
            let mut requirements = match mapping.get("dependencies") {
                None | Some(Json::Null) => Vec::new(),
                Some(items) => list(items, &format!("{field}.dependencies"))
                    .map_err(|e| format!("`dependencies`: {e}"))?,
            };
            match mapping.get("requirements_file_content") {
                None | Some(Json::Null) => {}
                Some(Json::String(content)) => {
                    requirements.extend(requirement_lines(content).map(|(line, text)| {
                        Requirement {
                            text: text.to_string(),
                            source: format!(
                                "pack.yaml {field}.requirements_file_content line {line}"
                            ),
                        }
                    }))
                }
                Some(other) => {
                    return Err(format!(
                        "`requirements_file_content`: expected the text of a requirements file, found {}",
                        json_kind(other)
                    ));
                }
            }
            Ok(requirements)
        }
        other => Err(format!(
            "expected a list of requirement strings, or a mapping with `dependencies` and `requirements_file_content`, found {}",
            json_kind(other)
        )),
    }
}

/// The lines of requirements text that say something (not blank, not a comment), 1-based.
fn requirement_lines(content: &str) -> impl Iterator<Item = (usize, &str)> {
    content
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "text",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load_text(text: &str) -> (Option<PackManifest>, Vec<Problem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pack.yaml");
        std::fs::write(&file, text).expect("write");
        let mut problems = Vec::new();
        (load(&file, &mut problems, &mut Vec::new()), problems)
    }

    #[test]
    fn every_field_loads() {
        let (pack, problems) = load_text(
            "ref: full\nlabel: Full\ndescription: D\nversion: 2.1.0\nauthor: A\nemail: a@example.org\nlicense: MIT\n\
             conf_schema:\n  level: {type: integer, default: 1}\nconfig: {level: 2}\nmeta: {python_dependencies: [requests]}\n\
             tags: [x, y]\nruntime_deps: [python, shell]\ndependencies: [core]\nsystem: true\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let pack = pack.expect("loads");
        assert_eq!(pack.pack_ref, "full");
        assert_eq!(pack.email.as_deref(), Some("a@example.org"));
        assert_eq!(pack.conf_schema["level"].default, Some(json!(1)));
        assert_eq!(pack.config, Some(json!({"level": 2})));
        assert_eq!(
            pack.meta,
            Some(json!({"python_dependencies": ["requests"]}))
        );
        assert_eq!(
            pack.python_dependencies,
            [Requirement {
                text: "requests".into(),
                source: "pack.yaml meta.python_dependencies".into()
            }]
        );
        assert_eq!(pack.tags, ["x", "y"]);
        assert_eq!(pack.runtime_deps, ["python", "shell"]);
        assert_eq!(pack.dependencies, ["core"]);
    }

    #[test]
    fn legacy_names_load_as_the_current_ones() {
        let (pack, problems) = load_text(
            "ref: old\nname: Old\nversion: '1.0'\nconfig_schema: {a: {type: string}}\nmetadata: {k: v}\nkeywords: [t]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let pack = pack.expect("loads");
        assert_eq!(pack.label, "Old");
        assert!(pack.conf_schema.contains_key("a"));
        assert_eq!(pack.meta, Some(json!({"k": "v"})));
        assert_eq!(pack.tags, ["t"]);
    }

    #[test]
    fn both_spellings_with_different_values_conflict() {
        let (pack, problems) = load_text(
            "ref: p\nlabel: A\nname: B\nversion: 1.0.0\nmeta: {a: 1}\nmetadata: {a: 1}\n",
        );
        assert!(pack.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field.as_deref(), Some("name"));
        assert_eq!(problems[0].line, Some(3));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (pack, problems) = load_text(
            "ref: My.Pack\nversion: one\ntags: notalist\nconfig: [1]\ndependencies: [core, 3]\n",
        );
        assert!(pack.is_none());
        let fields: Vec<_> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            ["ref", "version", "tags", "config", "dependencies", "label"],
            "{problems:?}"
        );
        assert!(problems[0].message.contains("naming rule"));
        assert!(problems[5].message.contains("missing"));
    }

    #[test]
    fn python_dependencies_as_the_seed_writes_them() {
        let (pack, problems) = load_text(
            "ref: p\nlabel: P\nversion: 1.0.0\nmetadata:\n  python_dependencies:\n    runtime: python\n    dependencies: [requests==2.31.0]\n    requirements_file_content: \"six==1.16.0\\n# comment\\n\\nidna>=3\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let found: Vec<(String, String)> = pack
            .expect("loads")
            .python_dependencies
            .into_iter()
            .map(|r| (r.text, r.source))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "requests==2.31.0",
                    "pack.yaml metadata.python_dependencies.dependencies"
                ),
                (
                    "six==1.16.0",
                    "pack.yaml metadata.python_dependencies.requirements_file_content line 1"
                ),
                (
                    "idna>=3",
                    "pack.yaml metadata.python_dependencies.requirements_file_content line 4"
                ),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn python_dependencies_of_the_wrong_shape_are_problems_on_their_line() {
        for (declared, expected) in [
            ("[requests, 3]", "item 2: expected a requirement string"),
            (
                "requests",
                "expected a list of requirement strings, or a mapping",
            ),
            ("{runtime: node}", "`runtime`: expected python"),
            (
                "{dependencies: requests}",
                "`dependencies`: expected a list",
            ),
            (
                "{requirements_file_content: [a]}",
                "`requirements_file_content`: expected the text",
            ),
        ] {
            let (pack, problems) = load_text(&format!(
                "ref: p\nlabel: P\nversion: 1.0.0\nmeta:\n  python_dependencies: {declared}\n"
            ));
            assert!(pack.is_none(), "{declared}");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(
                problems[0].field.as_deref(),
                Some("meta.python_dependencies")
            );
            assert_eq!(problems[0].line, Some(5), "{problems:?}");
            assert!(
                problems[0].message.contains(expected),
                "{declared}: {problems:?}"
            );
        }
    }
}
