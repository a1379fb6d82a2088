//! What packbox does not know is said: unknown fields in pack.yaml and action files are warnings
//! naming the file, line and field (and the field probably meant); Attune's own fields that
//! packbox ignores on purpose are quiet; `--strict` makes warnings problems; runtime_deps naming
//! a runtime the catalog lacks is a warning; a disabled action does not run unless asked.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A pack `attune` whose action `legacy` uses the seed database's column name for its constraint.
fn pack(pack_extra: &str, action_extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("attune");
    write(
        &pack.join("pack.yaml"),
        &format!(
            "ref: attune\nlabel: Attune\nversion: 1.0.0\nsystem: true\nenabled: true\ntesting: {{enabled: false}}\ntags: [core]\n{pack_extra}"
        ),
    );
    write(
        &pack.join("actions/legacy.yaml"),
        &format!(
            "ref: attune.legacy\nrunner_type: python\nentry_point: legacy.py\noutput_format: json\nenabled: true\n{action_extra}"
        ),
    );
    write(
        &pack.join("actions/legacy.py"),
        "import json, platform\nprint(json.dumps({'python': platform.python_version()}))\n",
    );
    dir
}

fn validate(dir: &Path, extra: &[&str]) -> Finished {
    let pack = dir.join("attune").to_string_lossy().into_owned();
    let mut args = vec!["pack", "validate", pack.as_str()];
    args.extend_from_slice(extra);
    packbox(&args, &[("DOCKER_HOST", "unix:///nonexistent.sock")])
}

#[test]
fn a_foreign_field_is_a_warning_naming_file_line_field_and_the_field_meant() {
    let dir = pack("", "runtime_version_constraint: '>=3.12'\n");
    let run = validate(dir.path(), &[]);
    assert_eq!(
        run.code(),
        0,
        "warnings alone are no reason to refuse: {}",
        run.stdout()
    );
    let file = dir
        .path()
        .join("attune/actions/legacy.yaml")
        .canonicalize()
        .expect("canonical");
    let expected = format!(
        "warning: {}:6: field `runtime_version_constraint`: unknown field, ignored; did you mean `runtime_version`?",
        file.display()
    );
    assert!(run.stdout().contains(&expected), "{}", run.stdout());
    assert!(
        run.stderr()
            .contains("ok: pack attune (1 action, 1 warning)"),
        "{}",
        run.stderr()
    );
    let json = validate(dir.path(), &["--json"]).json();
    assert_eq!(json["valid"], true);
    let warnings = json["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "Attune's own fields are quiet: {json:#}");
    assert_eq!(warnings[0]["line"], 6);
    assert_eq!(warnings[0]["field"], "runtime_version_constraint");
    let strict = validate(dir.path(), &["--strict", "--json"]);
    assert_eq!(strict.code(), 2);
    let strict = strict.json();
    assert_eq!(strict["valid"], false);
    assert_eq!(strict["problems"][0]["field"], "runtime_version_constraint");
    let list = packbox(
        &["actions", "list", "--packs", &dir.path().to_string_lossy()],
        &[],
    );
    assert_eq!(list.code(), 0);
    assert!(
        list.stderr().contains("warning: ")
            && list.stderr().contains("did you mean `runtime_version`?"),
        "{}",
        list.stderr()
    );
}

#[test]
fn misspelt_parameter_keys_are_warnings_and_json_schema_keywords_are_known() {
    let dir = pack(
        "",
        "parameters:\n  url:\n    type: string\n    requried: true\n    pattern: '^https://'\n    title: URL\n",
    );
    let json = validate(dir.path(), &["--json"]).json();
    let warnings: Vec<(&str, &str)> = json["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| {
            (
                w["field"].as_str().unwrap_or(""),
                w["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // `pattern` is enforced (JSON Schema) and `title` an annotation: neither is warned about.
    assert_eq!(warnings.len(), 1, "{json:#}");
    assert_eq!(warnings[0].0, "parameters.url.requried");
    assert!(
        warnings[0].1.ends_with("did you mean `required`?"),
        "{warnings:?}"
    );
}

#[test]
fn a_runtime_dep_the_catalog_lacks_is_a_warning() {
    let dir = pack("runtime_deps: [python, cobol]\n", "");
    let json = validate(dir.path(), &["--json"]).json();
    let warnings = json["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{json:#}");
    assert_eq!(warnings[0]["field"], "runtime_deps");
    assert_eq!(warnings[0]["line"], 8);
    let message = warnings[0]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("`cobol` is not a runtime of the catalog"),
        "{message}"
    );
    assert_eq!(validate(dir.path(), &["--strict"]).code(), 2);
}

#[test]
fn a_disabled_action_runs_only_when_allowed() {
    let dir = pack("", "runtime_versoin: '3.9'\n");
    let action = dir.path().join("attune/actions/legacy.yaml");
    let text = std::fs::read_to_string(&action).expect("read");
    std::fs::write(&action, text.replace("enabled: true", "enabled: false")).expect("write");
    let packs = dir.path().to_string_lossy().into_owned();
    let refused = packbox(
        &["run", "--packs", &packs, "attune.legacy"],
        &[("DOCKER_HOST", "unix:///nonexistent.sock")],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("action attune.legacy is disabled (`enabled: false` in ")
            && refused
                .stderr()
                .contains("run it anyway with --allow-disabled"),
        "{}",
        refused.stderr()
    );
    require_engine();
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs,
            "attune.legacy",
            "--allow-disabled",
            "--json",
        ],
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    // The misspelt constraint is said on stderr, and the action ran on the default version.
    assert!(
        run.stderr().contains(
            "field `runtime_versoin`: unknown field, ignored; did you mean `runtime_version`?"
        ),
        "{}",
        run.stderr()
    );
    let outcome: Value = run.json();
    assert!(
        outcome["runtime_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.11."),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}
