//! `actions/<name>.yaml`: what to run, on which runtime and version, with which parameters, and
//! how parameters go in and results come out.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use serde_yaml::Value;

use super::doc::{Doc, kind};
use super::fields;
use super::problem::Problem;
use super::safety::{is_action_name, resolve_entry_point};
use super::schema::{self, Parameters};
use super::upstream::{self, UpstreamField};
use crate::sandbox::isolation::IsolationLevel;
use crate::version::Constraint;

/// How parameters reach the action.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterDelivery {
    /// As the action's stdin (the default).
    #[default]
    Stdin,
    /// As a file under `/tmp`, its path in `ATTUNE_PARAMETER_FILE`.
    File,
}

/// The serialisation of the parameter document.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterFormat {
    /// One line of JSON (the default).
    #[default]
    Json,
    /// `KEY=VALUE` lines a shell can `source`; nested keys are joined with `.`.
    Dotenv,
    /// A YAML document.
    Yaml,
}

/// How the action's stdout is parsed into a result.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// No parsing: the result stays empty and stdout is the output (the default).
    #[default]
    Text,
    /// The whole of stdout as JSON, else its last non-empty line.
    Json,
    /// stdout as one YAML document.
    Yaml,
    /// Each line that is JSON becomes an item of a list; other lines are skipped.
    Jsonl,
}

/// `actions/<name>.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionManifest {
    /// `<pack>.<name>`.
    pub action_ref: String,
    /// A short human-readable name; informational.
    pub label: Option<String>,
    /// What the action does, as `actions list` shows it.
    pub description: Option<String>,
    /// Informational: packbox runs disabled actions when asked to.
    pub enabled: bool,
    /// As written (`python3`, `bash`, ...); the catalog resolves aliases. Default `shell`.
    pub runner_type: String,
    /// Relative to `actions/`.
    pub entry_point: String,
    /// The runtime versions the action accepts; `None`: the runtime's default, else the highest
    /// verified one.
    pub runtime_version: Option<Constraint>,
    /// The declared parameters, against which a run's values are checked and defaulted.
    pub parameters: Parameters,
    /// The JSON-Schema wrapper's `additionalProperties`: what it says of undeclared parameters
    /// (`false` forbids them, a schema checks them); `None`: accepted with a warning.
    pub additional_parameters: Option<Json>,
    /// The output schema (`output_schema` and `out_schema` in older packs); informational.
    pub output: Option<Json>,
    /// How the parameter document reaches the action.
    pub parameter_delivery: ParameterDelivery,
    /// How the parameter document is written.
    pub parameter_format: ParameterFormat,
    /// How stdout becomes the outcome's result.
    pub output_format: OutputFormat,
    /// The action's own time limit in seconds, used when neither the run nor the settings set
    /// one.
    pub timeout_seconds: Option<u64>,
    /// Free-form labels, as written.
    pub tags: Vec<String>,
    /// The isolation the action asks for (`standard` by default); the operator's rules may
    /// make it stricter, the action cannot make it looser.
    pub isolation: IsolationLevel,
    /// An Attune workflow (`workflow_file`, under `actions/workflows/`): listed, never run.
    pub workflow_file: Option<String>,
    /// Fields Attune acts on that packbox does not (scheduling, permissions, retention), as
    /// `explain` lists them.
    pub upstream_only: Vec<UpstreamField>,
    /// The destinations the action says it needs (`network: {egress: [...]}`); granted only
    /// where the operator's network policy allows.
    pub network: Vec<crate::egress::destination::Destination>,
}

impl ActionManifest {
    /// The action's name: its ref without the pack's.
    pub fn name(&self) -> &str {
        self.action_ref
            .split_once('.')
            .map_or(self.action_ref.as_str(), |(_, name)| name)
    }
}

/// Reads an action file of the pack `pack_ref` in the canonical folder `pack_dir`; `None` when it
/// has problems, which are recorded.
pub(crate) fn load(
    file: &Path,
    pack_ref: &str,
    pack_dir: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<ActionManifest> {
    let doc = Doc::read(file, problems)?;
    warnings.extend(fields::action_warnings(&doc));
    let before = problems.len();
    let expected_prefix = format!("{pack_ref}.");
    let action_ref = match doc.get("ref") {
        Some(value) => doc.text("ref", value, problems),
        None => {
            problems.push(doc.problem("ref", format!("missing; expected `{pack_ref}.<name>`")));
            None
        }
    };
    // Attune lets an action's ref differ from its file's name; the ref alone names the action.
    if let Some(action_ref) = &action_ref {
        let name = action_ref.strip_prefix(&expected_prefix);
        if !name.is_some_and(is_action_name) {
            problems.push(doc.problem(
                "ref",
                format!(
                    "expected `{pack_ref}.<name>` (the pack's ref, a dot, then letters, digits, `_` or `-`), found `{action_ref}`"
                ),
            ));
        }
    }
    let workflow_file = doc
        .get("workflow_file")
        .filter(|v| !v.is_null())
        .and_then(|value| doc.text("workflow_file", value, problems));
    if let Some(workflow_file) = &workflow_file
        && let Err(expected) = check_workflow_file(pack_dir, workflow_file)
    {
        problems.push(doc.problem("workflow_file", expected));
    }
    let runner_type = match doc.get("runner_type") {
        None | Some(Value::Null) => Some("shell".to_string()),
        Some(value) => doc.text("runner_type", value, problems),
    };
    // A workflow's entry point is its workflow file (Attune's too); it runs no interpreter.
    let entry_point = match (doc.get("entry_point"), &workflow_file) {
        (_, Some(workflow_file)) => Some(workflow_file.clone()),
        (Some(value), None) => doc.text("entry_point", value, problems),
        (None, None) => {
            problems.push(doc.problem(
                "entry_point",
                "missing; expected a file name relative to actions/ (or `workflow_file` for a workflow)",
            ));
            None
        }
    };
    if workflow_file.is_none()
        && let Some(entry_point) = &entry_point
        && let Err(expected) = resolve_entry_point(pack_dir, entry_point)
    {
        problems.push(doc.problem("entry_point", expected));
    }
    let runtime_version = doc
        .get("runtime_version")
        .filter(|v| !v.is_null())
        .and_then(|value| doc.text("runtime_version", value, problems))
        .filter(|text| !text.trim().is_empty())
        .and_then(|text| match Constraint::parse(&text) {
            Ok(constraint) => Some(constraint),
            Err(e) => {
                problems.push(doc.problem("runtime_version", e.to_string()));
                None
            }
        });
    let parameters = doc
        .get("parameters")
        .map(|value| schema::parse(&doc, "parameters", value, problems, warnings))
        .unwrap_or_default();
    let additional_parameters = doc.get("parameters").and_then(schema::additional);
    let output = doc
        .aliased(&["output", "output_schema", "out_schema"], problems)
        .and_then(|(key, value)| doc.json(&key, value, problems))
        .filter(|output| !output.is_null());
    let timeout_seconds = match doc.get("timeout_seconds") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
        Some(other) => {
            problems.push(doc.problem(
                "timeout_seconds",
                format!(
                    "expected a positive whole number of seconds, found {}",
                    describe(other)
                ),
            ));
            None
        }
    };
    let enabled = match doc.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(enabled)) => *enabled,
        Some(other) => {
            problems.push(doc.problem(
                "enabled",
                format!("expected true or false, found {}", kind(other)),
            ));
            true
        }
    };
    let label = doc.optional_text("label", problems);
    let description = doc.optional_text("description", problems);
    let parameter_delivery = choice(&doc, "parameter_delivery", "stdin, file", problems);
    let parameter_format = choice(&doc, "parameter_format", "json, dotenv, yaml", problems);
    let output_format = choice(&doc, "output_format", "text, json, yaml, jsonl", problems);
    let isolation = choice(&doc, "isolation", "standard, strict", problems);
    let network = super::network::needs(&doc, problems);
    let tags = doc
        .get("tags")
        .map(|value| doc.text_list("tags", value, problems))
        .unwrap_or_default();
    let upstream_only = upstream::behaviour_changing(upstream::ACTION_FIELDS, &doc.keys());
    // Reported in the order of the file; problems without a line (missing fields) come last.
    problems[before..].sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    let manifest = ActionManifest {
        action_ref: action_ref?,
        label,
        description,
        enabled,
        runner_type: runner_type?,
        entry_point: entry_point?,
        runtime_version,
        parameters,
        additional_parameters,
        output,
        parameter_delivery,
        parameter_format,
        output_format,
        timeout_seconds,
        tags,
        isolation,
        workflow_file,
        upstream_only,
        network,
    };
    (problems.len() == before).then_some(manifest)
}

/// A workflow file must be under `actions/workflows/` (where Attune looks for it), stay in the
/// pack and exist; packbox never reads it.
fn check_workflow_file(pack_dir: &Path, workflow_file: &str) -> Result<(), String> {
    if !workflow_file.starts_with("workflows/") {
        return Err(format!(
            "`{workflow_file}` must be under actions/workflows/ (like workflows/deploy.workflow.yaml)"
        ));
    }
    resolve_entry_point(pack_dir, workflow_file).map(|_| ())
}

/// A field whose value is one of a few words (case-insensitive); absent means the default.
fn choice<T: DeserializeOwned + Default>(
    doc: &Doc,
    key: &str,
    allowed: &str,
    problems: &mut Vec<Problem>,
) -> T {
    let Some(value) = doc.get(key).filter(|v| !v.is_null()) else {
        return T::default();
    };
    let parsed = value
        .as_str()
        .and_then(|word| serde_yaml::from_value(Value::String(word.to_ascii_lowercase())).ok());
    parsed.unwrap_or_else(|| {
        problems.push(doc.problem(
            key,
            format!("expected one of {allowed}, found {}", describe(value)),
        ));
        T::default()
    })
}

/// A short description of a value a pack wrote: packs are not secret, values may be shown.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("`{}`", text.chars().take(60).collect::<String>()),
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        other => kind(other).to_string(),
    }
}

/// The action file of `name` in a pack: `actions/<name>.yaml` or `actions/<name>.yml`; both
/// is a problem naming both (neither may silently win).
pub(crate) fn action_file(pack_dir: &Path, name: &str) -> Result<Option<PathBuf>, Problem> {
    let [yaml, yml] =
        ["yaml", "yml"].map(|ext| pack_dir.join("actions").join(format!("{name}.{ext}")));
    match (yaml.is_file(), yml.is_file()) {
        (true, true) => Err(duplicate(&yaml, &yml)),
        (true, false) => Ok(Some(yaml)),
        (false, true) => Ok(Some(yml)),
        (false, false) => Ok(None),
    }
}

/// The file of the action `<pack_ref>.<name>`: `actions/<name>.yaml` (or `.yml`) when its `ref`
/// says so, else the one action file of the pack whose `ref` does (Attune lets the two differ).
/// Two files claiming the ref are a problem naming both.
pub(crate) fn find(
    pack_dir: &Path,
    pack_ref: &str,
    name: &str,
) -> Result<Option<PathBuf>, Problem> {
    let wanted = format!("{pack_ref}.{name}");
    let named = action_file(pack_dir, name)?;
    if let Some(file) = &named
        && ref_of(file).as_deref() == Some(wanted.as_str())
    {
        return Ok(named);
    }
    let files = action_files(pack_dir).unwrap_or_default();
    let (files, _) = without_duplicates(files);
    let claiming: Vec<PathBuf> = files
        .into_iter()
        .filter(|file| ref_of(file).as_deref() == Some(wanted.as_str()))
        .collect();
    match claiming.as_slice() {
        // The file of that name, when it states no usable ref: loading it says what is wrong.
        [] => Ok(named.filter(|file| {
            !ref_of(file).is_some_and(|stated| {
                stated
                    .strip_prefix(&format!("{pack_ref}."))
                    .is_some_and(is_action_name)
            })
        })),
        [one] => Ok(Some(one.clone())),
        [first, second, ..] => Err(same_ref(first, second, &wanted)),
    }
}

/// The `ref` an action file states, when it can be read.
pub(crate) fn ref_of(file: &Path) -> Option<String> {
    let doc = Doc::read(file, &mut Vec::new())?;
    doc.get("ref")?.as_str().map(str::to_string)
}

/// Two action files that state the same ref.
pub(crate) fn same_ref(first: &Path, second: &Path, action_ref: &str) -> Problem {
    Problem {
        file: second.to_path_buf(),
        line: None,
        field: Some("ref".into()),
        message: format!(
            "`{action_ref}` is the ref of {} too; refs must be unique within the pack",
            first.display()
        ),
    }
}

/// The action files without those whose name another file has too (`a.yaml` beside `a.yml`),
/// and a problem for each such pair.
pub(crate) fn without_duplicates(files: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<Problem>) {
    let stem = |file: &PathBuf| file.file_stem().map(|s| s.to_os_string());
    let mut problems = Vec::new();
    let mut kept = Vec::new();
    for file in &files {
        let twins: Vec<&PathBuf> = files
            .iter()
            .filter(|other| stem(other) == stem(file))
            .collect();
        match twins.as_slice() {
            [_] => kept.push(file.clone()),
            [first, second, ..] if *first == file => problems.push(duplicate(first, second)),
            _ => {}
        }
    }
    (kept, problems)
}

fn duplicate(first: &Path, second: &Path) -> Problem {
    Problem {
        file: first.to_path_buf(),
        line: None,
        field: None,
        message: format!(
            "{} defines the same action too; keep one of them",
            second.display()
        ),
    }
}

/// The action files of a pack: `actions/*.yaml` and `actions/*.yml`, sorted.
pub(crate) fn action_files(pack_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pack_dir.join("actions"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> (Option<ActionManifest>, Vec<Problem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
        std::fs::write(pack.join("actions/a.sh"), "echo\n").expect("write");
        let file = pack.join("actions/a.yaml");
        std::fs::write(&file, text).expect("write");
        let mut problems = Vec::new();
        (
            load(&file, "p", &pack, &mut problems, &mut Vec::new()),
            problems,
        )
    }

    #[test]
    fn defaults_apply() {
        let (action, problems) = load_text("ref: p.a\nentry_point: a.sh\n");
        assert!(problems.is_empty(), "{problems:?}");
        let action = action.expect("loads");
        assert_eq!(action.runner_type, "shell");
        assert_eq!(action.parameter_delivery, ParameterDelivery::Stdin);
        assert_eq!(action.parameter_format, ParameterFormat::Json);
        assert_eq!(action.output_format, OutputFormat::Text);
        assert!(action.enabled);
        assert_eq!(action.runtime_version, None);
        assert_eq!(action.isolation, IsolationLevel::Standard);
    }

    #[test]
    fn every_field_loads() {
        let (action, problems) = load_text(
            "ref: p.a\nlabel: A\ndescription: D\nenabled: false\nrunner_type: python3\nentry_point: a.sh\n\
             runtime_version: '>=3.9,<3.12'\nparameters: {x: {type: integer}}\noutput: {y: {type: string}}\n\
             parameter_delivery: file\nparameter_format: dotenv\noutput_format: JSONL\ntimeout_seconds: 30\ntags: [t]\n\
             isolation: strict\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let action = action.expect("loads");
        assert!(!action.enabled);
        assert_eq!(action.runner_type, "python3");
        assert_eq!(
            action.runtime_version.as_ref().map(Constraint::as_str),
            Some(">=3.9,<3.12")
        );
        assert_eq!(action.parameter_delivery, ParameterDelivery::File);
        assert_eq!(action.parameter_format, ParameterFormat::Dotenv);
        assert_eq!(action.output_format, OutputFormat::Jsonl);
        assert_eq!(action.timeout_seconds, Some(30));
        assert!(action.output.is_some());
        assert_eq!(action.isolation, IsolationLevel::Strict);
    }

    #[test]
    fn output_aliases_load_and_conflict() {
        for key in ["output_schema", "out_schema"] {
            let (action, problems) =
                load_text(&format!("ref: p.a\nentry_point: a.sh\n{key}: {{y: 1}}\n"));
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(
                action.expect("loads").output,
                Some(serde_json::json!({"y": 1}))
            );
        }
        let (_, problems) =
            load_text("ref: p.a\nentry_point: a.sh\noutput: {y: 1}\nout_schema: {y: 2}\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field.as_deref(), Some("out_schema"));
    }

    #[test]
    fn a_missing_ref_names_the_file() {
        let (action, problems) = load_text("entry_point: a.sh\n");
        assert!(action.is_none());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .contains("actions/a.yaml: field `ref`: missing; expected `p.<name>`"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_ref_of_another_pack_is_refused_and_another_name_is_fine() {
        let (_, problems) = load_text("ref: q.b\nentry_point: a.sh\n");
        assert!(
            problems[0].message.contains("expected `p.<name>`"),
            "{problems:?}"
        );
        let (_, problems) = load_text("ref: p.b/c\nentry_point: a.sh\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        // Attune lets the ref differ from the file's name.
        let (action, problems) = load_text("ref: p.other\nentry_point: a.sh\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(action.expect("loads").name(), "other");
    }

    #[test]
    fn a_workflow_action_needs_no_entry_point_and_its_file_under_workflows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(pack.join("actions/workflows")).expect("mkdir");
        std::fs::write(
            pack.join("actions/workflows/deploy.yaml"),
            "ref: p.deploy\n",
        )
        .expect("write");
        std::fs::write(pack.join("actions/elsewhere.yaml"), "x: 1\n").expect("write");
        let load_here = |text: &str| {
            let file = pack.join("actions/a.yaml");
            std::fs::write(&file, text).expect("write");
            let mut problems = Vec::new();
            let action = load(&file, "p", &pack, &mut problems, &mut Vec::new());
            (action, problems)
        };
        let (action, problems) = load_here("ref: p.a\nworkflow_file: workflows/deploy.yaml\n");
        assert!(problems.is_empty(), "{problems:?}");
        let action = action.expect("loads");
        assert_eq!(
            action.workflow_file.as_deref(),
            Some("workflows/deploy.yaml")
        );
        for (bad, expected) in [
            ("elsewhere.yaml", "must be under actions/workflows/"),
            ("workflows/missing.yaml", "does not exist"),
            ("workflows/../../pack.yaml", "climbs out"),
        ] {
            let (action, problems) = load_here(&format!("ref: p.a\nworkflow_file: {bad}\n"));
            assert!(action.is_none(), "{bad}");
            assert!(
                problems[0].message.contains(expected),
                "{bad}: {problems:?}"
            );
            assert_eq!(problems[0].field.as_deref(), Some("workflow_file"));
        }
    }

    #[test]
    fn attune_fields_that_change_behaviour_there_are_recorded() {
        let (action, problems) = load_text(
            "ref: p.a\nentry_point: a.sh\nworker_selector: {gpu: 'true'}\nname: a\nlog_retention_limit: 5\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let fields: Vec<String> = action
            .expect("loads")
            .upstream_only
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["worker_selector", "log_retention_limit"]);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let (action, problems) = load_text(
            "ref: p.a\nentry_point: ../pack.yaml\nruntime_version: '>>3'\nparameter_delivery: env\n\
             parameter_format: xml\noutput_format: csv\ntimeout_seconds: -1\nenabled: maybe\n\
             isolation: loose\n",
        );
        assert!(action.is_none());
        let fields: Vec<_> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "entry_point",
                "runtime_version",
                "parameter_delivery",
                "parameter_format",
                "output_format",
                "timeout_seconds",
                "enabled",
                "isolation"
            ],
            "{problems:?}"
        );
        assert_eq!(problems[1].line, Some(3));
    }

    #[test]
    fn an_unquoted_runtime_version_keeps_its_digits() {
        let (action, problems) = load_text("ref: p.a\nentry_point: a.sh\nruntime_version: 3.10\n");
        assert!(problems.is_empty(), "{problems:?}");
        let constraint = action.expect("loads").runtime_version.expect("has one");
        assert_eq!(constraint.as_str(), "3.10");
    }

    #[test]
    fn yaml_written_as_json_loads() {
        let (action, problems) = load_text(
            r#"{"ref": "p.a", "entry_point": "a.sh", "output_format": "json", "parameters": {"n": {"type": "number"}}}"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(action.expect("loads").output_format, OutputFormat::Json);
    }
}
