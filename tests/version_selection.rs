//! One version selector: every constraint form chooses the same version in `actions list` (no
//! engine: declared versions) and in `run` (the real runtime images, detected versions), and
//! the action really runs on it.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// (runner type, constraint, declared catalog version it must choose).
const TABLE: &[(&str, &str, &str)] = &[
    ("python", "<=3.11", "3.11"),
    ("python", "=3.11", "3.11"),
    ("python", "==3.9", "3.9"),
    ("python", "3.11", "3.11"),
    ("python", "3.11.x", "3.11"),
    ("python", "3.11.*", "3.11"),
    ("python", "~3.11", "3.11"),
    ("python", ">3.9", "3.13"),
    ("python", "<3.12", "3.11"),
    ("python", "<3.10", "3.9"),
    ("python", "*", "3.13"),
    ("python", "3.x", "3.13"),
    ("python", "!=3.13", "3.11"),
    ("python", ">=3.9 <3.12", "3.11"),
    ("python", ">=3.9, <3.12", "3.11"),
    ("python", "3.9 || 3.13", "3.13"),
    ("python", "<3.10 || =3.11", "3.11"),
    ("python", "v3.9", "3.9"),
    ("python", "^3.9", "3.13"),
    ("python", ">= 3.10, != 3.13", "3.11"),
    ("node", "^18", "18"),
    ("node", ">=18 <20", "18"),
    ("node", "20.x", "20"),
    ("node", "<=18", "18"),
];

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A pack `table` with one action per row (`table.c0`, `table.c1`, ...) reporting its runtime.
fn table_pack(rows: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("table");
    write(
        &pack.join("pack.yaml"),
        "ref: table\nlabel: Table\nversion: 1.0.0\n",
    );
    write(
        &pack.join("actions/version.py"),
        "import json, platform\nprint(json.dumps({'version': platform.python_version()}))\n",
    );
    write(
        &pack.join("actions/version.js"),
        "console.log(JSON.stringify({version: process.versions.node}))\n",
    );
    for (index, (runner, constraint, _)) in rows.iter().enumerate() {
        let entry = if *runner == "python" {
            "version.py"
        } else {
            "version.js"
        };
        write(
            &pack.join(format!("actions/c{index}.yaml")),
            &format!(
                "ref: table.c{index}\nrunner_type: {runner}\nentry_point: {entry}\noutput_format: json\nruntime_version: '{constraint}'\n"
            ),
        );
    }
    dir
}

fn listed(packs: &Path) -> Vec<Value> {
    let list = packbox(
        &[
            "actions",
            "list",
            "--packs",
            &packs.to_string_lossy(),
            "--json",
        ],
        &[],
    );
    assert_eq!(list.code(), 0, "{}", list.stderr());
    list.json()["actions"].as_array().expect("actions").clone()
}

#[test]
fn every_constraint_form_chooses_the_same_version_in_list_and_run() {
    require_engine();
    let dir = table_pack(TABLE);
    let actions = listed(dir.path());
    for (index, (runner, constraint, expected)) in TABLE.iter().enumerate() {
        let action_ref = format!("table.c{index}");
        let entry = actions
            .iter()
            .find(|a| a["ref"] == action_ref.as_str())
            .unwrap_or_else(|| panic!("{action_ref} listed"));
        assert_eq!(
            entry["selected_version"], *expected,
            "actions list, {runner} `{constraint}`"
        );
        assert_eq!(entry["selected_version_provisional"], false);
        let run = run_json(dir.path(), &action_ref, &[]);
        assert_eq!(run.code(), 0, "{runner} `{constraint}`: {}", run.stderr());
        let outcome = run.json();
        let detected = outcome["runtime_version"].as_str().unwrap_or("");
        assert!(
            detected.starts_with(&format!("{expected}.")),
            "run, {runner} `{constraint}`: expected {expected}.x, ran on {detected}"
        );
        // The interpreter that ran is the one reported.
        assert_eq!(outcome["result"]["version"], detected, "{outcome}");
        assert_no_leftovers(&run);
    }
}

#[test]
fn a_constraint_finer_than_the_catalog_is_settled_by_the_image() {
    require_engine();
    // The catalog declares python 3.11; only its image can say whether it is 3.11.1 or later.
    let rows = [
        ("python", ">=3.11.1, <3.12", "3.11"),
        ("python", ">=3.11.99, <3.12", "3.11"),
    ];
    let dir = table_pack(&rows);
    let actions = listed(dir.path());
    for entry in &actions {
        assert_eq!(entry["selected_version"], "3.11", "{entry}");
        assert_eq!(entry["selected_version_provisional"], true, "{entry}");
    }
    let run = run_json(dir.path(), "table.c0", &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.json()["runtime_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.11."),
        "{}",
        run.stdout()
    );
    // No 3.11 image holds 3.11.99: an input error naming action, constraint and what exists.
    let run = run_json(dir.path(), "table.c1", &[]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("action table.c1: runtime_version `>=3.11.99, <3.12` matches none of the available python versions (3.9."),
        "{stderr}"
    );
    assert!(containers_of(run.pid).is_empty());
}

#[test]
fn unsatisfiable_and_invalid_constraints_are_errors_before_any_container() {
    let rows = [
        ("python", ">=3.14", ""),
        ("python", ">3.11 <3.13", ""),
        ("python", "3.x.1", ""),
        ("python", "=>3.9", ""),
    ];
    let dir = table_pack(&rows);
    let packs = dir.path().to_string_lossy().into_owned();
    let run = packbox(&["run", "--packs", &packs, "table.c1"], &[]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "action table.c1: runtime_version `>3.11 <3.13` matches none of the available python versions (3.9, 3.11, 3.13)"
        ),
        "{}",
        run.stderr()
    );
    let run = packbox(&["run", "--packs", &packs, "table.c2"], &[]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains(
            "c2.yaml:5: field `runtime_version`: `3.x.1` is not a version constraint: `3.x.1`: a number after a wildcard"
        ),
        "{}",
        run.stderr()
    );
    let validate = packbox(
        &["pack", "validate", &format!("{packs}/table"), "--json"],
        &[],
    );
    assert_eq!(validate.code(), 2);
    let problems = validate.json()["problems"].clone();
    let mut fields: Vec<(&str, &str, &str)> = problems
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            let file = p["file"].as_str().unwrap_or("");
            let file = file.rsplit('/').next().unwrap_or(file);
            (
                file,
                p["field"].as_str().unwrap_or(""),
                p["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    fields.sort();
    assert!(fields[3].2.contains("unknown operator"), "{problems:#}");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(f, field, _)| (*f, *field)).collect();
    assert_eq!(
        fields,
        [
            ("c0.yaml", "runtime_version"),
            ("c1.yaml", "runtime_version"),
            ("c2.yaml", "runtime_version"),
            ("c3.yaml", "runtime_version"),
        ],
        "{problems:#}"
    );
}
