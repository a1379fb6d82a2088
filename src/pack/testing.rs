//! The `testing` section of `pack.yaml`, as Attune writes it: runners keyed by runtime, each with
//! a type (`script`, `unittest`, `pytest`), an entry point relative to the pack root and a
//! timeout; how results are read (`result_format: simple`, the only one Attune implements) and
//! the share of tests that must pass (`min_pass_rate`). Install-time policy (`on_failure`,
//! `discovery`, `result_path`) has no meaning for packbox. An entry file that is missing only
//! matters to `packbox test`: elsewhere it is a warning.

use serde_yaml::Value;

use super::doc::{Doc, kind};
use super::problem::Problem;
use super::safety::resolve_in_pack;

/// How a runner runs its entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    /// The entry point under the runtime's interpreter (executed directly for native).
    Script,
    /// `python3 -m unittest ENTRY`.
    Unittest,
    /// `python3 -m pytest ENTRY` (pytest must be among the pack's dependencies).
    Pytest,
}

impl TestKind {
    /// Its name in `pack.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            TestKind::Script => "script",
            TestKind::Unittest => "unittest",
            TestKind::Pytest => "pytest",
        }
    }
}

/// One runner of the `testing` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunner {
    /// Its key, a runtime or alias (`shell`, `python`).
    pub name: String,
    /// How it runs its entry point.
    pub kind: TestKind,
    /// Relative to the pack root (`tests/run_tests.sh`).
    pub entry_point: String,
    /// Seconds it may run.
    pub timeout_seconds: Option<u64>,
}

/// The `testing` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Testing {
    /// In the order the file lists them.
    pub runners: Vec<TestRunner>,
    /// The share of tests (0 to 1) that must pass for the pack to pass (1 by default: all).
    pub min_pass_rate: Option<f64>,
}

/// Keys of the section packbox reads or, being Attune's install-time policy, passes over.
const SECTION_FIELDS: &[&str] = &[
    "runners",
    "min_pass_rate",
    "result_format",
    "enabled",
    "discovery",
    "result_path",
    "on_failure",
];

/// Keys of a runner packbox reads.
const RUNNER_FIELDS: &[&str] = &["type", "entry_point", "timeout", "result_format"];

/// Reads the `testing` section of `pack.yaml` in the canonical `pack_dir`; problems are recorded,
/// and Attune keys packbox has no use for are warnings where they could mislead.
pub(crate) fn parse(
    doc: &Doc,
    value: &Value,
    pack_dir: &std::path::Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Testing> {
    let Value::Mapping(section) = value else {
        problems.push(doc.problem(
            "testing",
            format!("expected a mapping with `runners`, found {}", kind(value)),
        ));
        return None;
    };
    let runners = match section.get("runners") {
        None | Some(Value::Null) => return Some(Testing::default()),
        Some(Value::Mapping(runners)) => runners,
        Some(other) => {
            problems.push(doc.problem(
                "testing.runners",
                format!(
                    "expected a mapping of runners by runtime (shell, python, ...), found {}",
                    kind(other)
                ),
            ));
            return None;
        }
    };
    let mut testing = Testing::default();
    match section.get("min_pass_rate") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)) => {
            testing.min_pass_rate = n.as_f64();
        }
        Some(other) => problems.push(doc.problem(
            "testing.min_pass_rate",
            format!("expected a number from 0 to 1, found {}", kind(other)),
        )),
    }
    result_format(
        doc,
        "testing.result_format",
        section.get("result_format"),
        warnings,
    );
    for key in section.keys().filter_map(Value::as_str) {
        if !SECTION_FIELDS.contains(&key) {
            warnings.push(doc.problem(&format!("testing.{key}"), "unknown field, ignored"));
        }
    }
    for (name, runner) in runners {
        let Some(name) = name.as_str() else {
            problems.push(doc.problem(
                "testing.runners",
                format!("runner names must be text, found {}", kind(name)),
            ));
            continue;
        };
        let field = format!("testing.runners.{name}");
        if let Some(runner) = parse_runner(doc, &field, name, runner, pack_dir, problems, warnings)
        {
            testing.runners.push(runner);
        }
    }
    Some(testing)
}

fn parse_runner(
    doc: &Doc,
    field: &str,
    name: &str,
    value: &Value,
    pack_dir: &std::path::Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<TestRunner> {
    let Value::Mapping(runner) = value else {
        problems.push(doc.problem(
            field,
            format!(
                "expected a mapping (type, entry_point, timeout), found {}",
                kind(value)
            ),
        ));
        return None;
    };
    let at = |key: &str| format!("{field}.{key}");
    let before = problems.len();
    let test_kind = match runner.get("type") {
        None | Some(Value::Null) => TestKind::Script,
        Some(Value::String(text)) => match text.to_ascii_lowercase().as_str() {
            "script" => TestKind::Script,
            "unittest" => TestKind::Unittest,
            "pytest" => TestKind::Pytest,
            other => {
                problems.push(doc.problem(
                    &at("type"),
                    format!("`{other}` is not a runner type packbox runs; expected one of script, unittest, pytest"),
                ));
                TestKind::Script
            }
        },
        Some(other) => {
            problems
                .push(doc.problem(&at("type"), format!("expected text, found {}", kind(other))));
            TestKind::Script
        }
    };
    let entry_point = match runner.get("entry_point") {
        Some(value) => doc.text(&at("entry_point"), value, problems),
        None => {
            problems.push(doc.problem(
                &at("entry_point"),
                "missing; expected a file relative to the pack folder, like tests/run_tests.sh",
            ));
            None
        }
    };
    if let Some(entry_point) = &entry_point
        && let Err(expected) = resolve_in_pack(pack_dir, entry_point)
    {
        // A file that is only missing matters to `packbox test` alone (which refuses then);
        // a path that leaves the pack is wrong wherever it is read.
        match pack_dir.join(entry_point).symlink_metadata() {
            Err(_) if !expected.contains("climbs out") && !expected.contains("absolute") => {
                warnings.push(doc.problem(
                    &at("entry_point"),
                    format!("{expected}; `packbox test` cannot run this runner"),
                ))
            }
            _ => problems.push(doc.problem(&at("entry_point"), expected)),
        }
    }
    let timeout_seconds = match runner.get("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
        Some(other) => {
            problems.push(doc.problem(
                &at("timeout"),
                format!(
                    "expected a positive whole number of seconds, found {}",
                    kind(other)
                ),
            ));
            None
        }
    };
    for key in runner.keys().filter_map(Value::as_str) {
        match key {
            "result_format" => result_format(doc, &at(key), runner.get(key), warnings),
            key if RUNNER_FIELDS.contains(&key) => {}
            "config" => {}
            "requirements" => warnings.push(doc.problem(
                &at(key),
                "not used by packbox: tests run in the environment the pack's actions get, so put test requirements (pytest, ...) among the pack's dependencies",
            )),
            other => warnings.push(doc.problem(&at(other), "unknown field, ignored")),
        }
    }
    (problems.len() == before).then(|| TestRunner {
        name: name.to_string(),
        kind: test_kind,
        entry_point: entry_point.unwrap_or_default(),
        timeout_seconds,
    })
}

/// `result_format`: `simple` (counts from `Total Tests:`, `Passed:`, `Failed:`, `Skipped:`
/// lines, else the exit code) is the one Attune implements; anything else is read as simple.
fn result_format(doc: &Doc, field: &str, value: Option<&Value>, warnings: &mut Vec<Problem>) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if text.eq_ignore_ascii_case("simple") => {}
        Some(_) => warnings.push(doc.problem(
            field,
            "packbox reads results as `simple` (counts printed as `Passed: N`, else the exit code)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(yaml: &str, files: &[&str]) -> (Option<Testing>, Vec<Problem>, Vec<Problem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        for file in files {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, "").expect("write");
        }
        let file = root.join("pack.yaml");
        std::fs::write(&file, yaml).expect("write");
        let doc = Doc::read(&file, &mut Vec::new()).expect("parses");
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        let testing = doc
            .get("testing")
            .and_then(|value| parse(&doc, value, &root, &mut problems, &mut warnings));
        (testing, problems, warnings)
    }

    #[test]
    fn attunes_testing_section_loads() {
        let (testing, problems, warnings) = parse_text(
            "testing:\n  enabled: true\n  discovery: {method: directory, path: tests}\n  runners:\n    shell:\n      type: script\n      entry_point: tests/run_tests.sh\n      timeout: 60\n      result_format: simple\n    python:\n      type: unittest\n      entry_point: tests/test_actions.py\n  min_pass_rate: 1.0\n  on_failure: block\n",
            &["tests/run_tests.sh", "tests/test_actions.py"],
        );
        assert!(
            problems.is_empty() && warnings.is_empty(),
            "{problems:?} {warnings:?}"
        );
        let runners = testing.expect("loads").runners;
        assert_eq!(
            runners,
            [
                TestRunner {
                    name: "shell".into(),
                    kind: TestKind::Script,
                    entry_point: "tests/run_tests.sh".into(),
                    timeout_seconds: Some(60)
                },
                TestRunner {
                    name: "python".into(),
                    kind: TestKind::Unittest,
                    entry_point: "tests/test_actions.py".into(),
                    timeout_seconds: None
                }
            ]
        );
    }

    #[test]
    fn a_missing_test_file_is_a_warning_and_a_bad_rate_a_problem() {
        let (testing, problems, warnings) = parse_text(
            "testing:\n  runners:\n    shell: {type: script, entry_point: tests/missing.sh}\n  min_pass_rate: 0.8\n",
            &[],
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].message.contains("`packbox test` cannot run"),
            "{warnings:?}"
        );
        assert_eq!(testing.expect("loads").min_pass_rate, Some(0.8));
        let (_, problems, _) = parse_text("testing:\n  runners: {}\n  min_pass_rate: 2\n", &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn bad_runners_are_problems_on_their_lines() {
        let (_, problems, warnings) = parse_text(
            "testing:\n  runners:\n    node:\n      type: jest\n      entry_point: ../x.js\n      timeout: soon\n      requirements: tests/req.txt\n",
            &[],
        );
        let fields: Vec<(&str, Option<usize>)> = problems
            .iter()
            .map(|p| (p.field.as_deref().unwrap_or(""), p.line))
            .collect();
        assert_eq!(
            fields,
            [
                ("testing.runners.node.type", Some(4)),
                ("testing.runners.node.entry_point", Some(5)),
                ("testing.runners.node.timeout", Some(6)),
            ]
        );
        assert!(
            problems[0].message.contains("`jest` is not a runner type"),
            "{problems:?}"
        );
        assert!(problems[1].message.contains("climbs out"), "{problems:?}");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .message
                .contains("among the pack's dependencies")
        );
    }
}
