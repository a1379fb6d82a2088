//! The Attune pack format end to end: `packbox pack validate`, `packbox actions list` and
//! `packbox run` give the right answer for every fixture pack, and everything wrong with a pack
//! or its parameters is said before any container exists.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn validate_json(dir: &Path) -> (i32, Value) {
    let run = packbox(&["pack", "validate", &dir.to_string_lossy(), "--json"], &[]);
    let code = run.code();
    (code, run.json())
}

/// (file suffix, field, line) of every problem, sorted.
fn problem_keys(report: &Value) -> Vec<(String, String, Option<u64>)> {
    let mut keys: Vec<_> = report["problems"]
        .as_array()
        .expect("problems is a list")
        .iter()
        .map(|p| {
            let file = p["file"].as_str().unwrap_or_default();
            let file = file
                .split("formats-broken/")
                .last()
                .unwrap_or(file)
                .to_string();
            (
                file,
                p["field"].as_str().unwrap_or("").to_string(),
                p["line"].as_u64(),
            )
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn every_good_fixture_pack_validates() {
    let (code, report) = validate_json(&format_packs());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["valid"], true);
    let refs: Vec<_> = report["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .map(|p| p["ref"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(refs, ["full", "jsonpack", "legacy"]);
    assert_eq!(
        report["packs"][0]["actions"].as_array().map(Vec::len),
        Some(5)
    );
    // One pack folder works as well as a folder of packs.
    let (code, report) = validate_json(&format_packs().join("legacy"));
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["packs"][0]["ref"], "legacy");
}

#[test]
fn validate_reports_every_problem_of_the_broken_packs_at_once() {
    let (code, report) = validate_json(&broken_format_packs());
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["valid"], false);
    let expected: Vec<(String, String, Option<u64>)> = [
        ("badpack/actions/badyaml.yaml", "", Some(3)),
        ("badpack/actions/everything.yaml", "entry_point", Some(2)),
        ("badpack/actions/everything.yaml", "out_schema", Some(10)),
        (
            "badpack/actions/everything.yaml",
            "parameter_format",
            Some(4),
        ),
        (
            "badpack/actions/everything.yaml",
            "parameters.count.type",
            Some(8),
        ),
        (
            "badpack/actions/everything.yaml",
            "runtime_version",
            Some(3),
        ),
        (
            "badpack/actions/everything.yaml",
            "timeout_seconds",
            Some(5),
        ),
        ("badpack/actions/missing_entry.yaml", "entry_point", Some(2)),
        ("badpack/actions/noref.yaml", "ref", None),
        ("badpack/pack.yaml", "label", None),
        ("badpack/pack.yaml", "metadata", Some(5)),
        ("badpack/pack.yaml", "ref", Some(1)),
        ("badpack/pack.yaml", "tags", Some(3)),
        ("badpack/pack.yaml", "version", Some(2)),
        ("versions/actions/cobol.yaml", "runner_type", Some(2)),
        ("versions/actions/invalid.yaml", "runtime_version", Some(3)),
        ("versions/actions/unsat.yaml", "runtime_version", Some(3)),
        ("wrongref/pack.yaml", "ref", None),
    ]
    .iter()
    .map(|(f, field, line)| (f.to_string(), field.to_string(), *line))
    .collect();
    assert_eq!(problem_keys(&report), expected, "{report:#}");
    for problem in report["problems"].as_array().expect("list") {
        let message = problem["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{problem}");
        assert!(!message.ends_with('.'), "{problem}");
    }
}

#[test]
fn validate_prints_one_line_per_problem_and_exits_2() {
    let packs = broken_format_packs();
    let run = packbox(
        &[
            "pack",
            "validate",
            &packs.join("versions").to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stdout = run.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines.iter().any(|l| l.ends_with(
            "versions/actions/unsat.yaml:3: field `runtime_version`: runtime_version `>=4` matches none of the available python versions (3.9, 3.11, 3.13)"
        )),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "invalid.yaml:3: field `runtime_version`: `=>3.9` is not a version constraint"
        )),
        "{stdout}"
    );
    assert!(
        run.stderr().contains("invalid: pack versions (3 problems)"),
        "{}",
        run.stderr()
    );
}

#[test]
fn validate_of_a_folder_without_packs_is_an_input_error() {
    let empty = tempfile::tempdir().expect("tempdir");
    let (code, report) = validate_json(empty.path());
    assert_eq!(code, 2);
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no pack.yaml"),
        "{report}"
    );
    let (code, _) = validate_json(Path::new("/nonexistent/packs"));
    assert_eq!(code, 2);
}

#[test]
fn a_constraint_below_310_runs_on_python_39_and_says_so() {
    require_engine();
    let run = run_json(&format_packs(), "full.old_python", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_runs_on(&outcome, "3.9");
    assert_eq!(outcome["image"], "packbox/python:3.9");
    assert!(
        outcome["result"]["python"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.9."),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn a_tilde_313_constraint_runs_on_python_313() {
    require_engine();
    let run = run_json(&format_packs(), "full.new_python", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_runs_on(&outcome, "3.13");
    assert!(
        outcome["result"]["python"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.13."),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn an_unquoted_bare_version_of_a_legacy_action_runs_on_that_version() {
    require_engine();
    let run = run_json(&format_packs(), "legacy.pyver", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_runs_on(&outcome, "3.11");
    assert!(
        outcome["result"]["python"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.11."),
        "{outcome}"
    );
}

#[test]
fn a_legacy_bash_action_with_output_schema_runs() {
    require_engine();
    let run = run_json(&format_packs(), "legacy.greet", &["-p", "name=Old"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["runtime"], "shell");
    assert_eq!(outcome["result"]["greeting"], "Hello, Old!");
    assert_no_leftovers(&run);
}

#[test]
fn a_pack_written_as_json_runs_on_node_18() {
    require_engine();
    let run = run_json(&format_packs(), "jsonpack.hello", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["runtime"], "node");
    assert_runs_on(&outcome, "18");
    assert_eq!(outcome["result"]["hello"], "json");
    assert!(
        outcome["result"]["node"]
            .as_str()
            .unwrap_or("")
            .starts_with("v18."),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn parameters_are_typed_defaulted_and_delivered() {
    require_engine();
    let run = run_json(
        &format_packs(),
        "full.typed",
        &[
            "-p",
            "token=t0k3n",
            "-p",
            "count=4",
            "-p",
            "ratio=0.5",
            "-p",
            "flag=true",
            "-p",
            r#"data={"a": [1, 2]}"#,
            "-p",
            r#"items=["x", 2]"#,
        ],
    );
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(
        outcome["result"]["params"],
        json!({
            "text": "hello", "count": 4, "ratio": 0.5, "flag": true, "data": {"a": [1, 2]},
            // The action received the secret parameter; the outcome scrubs its value.
            "items": ["x", 2], "mode": "fast", "token": "***"
        }),
        "{outcome}"
    );
    // `>=3.9, <3.14`: the highest available matching version.
    assert_runs_on(&outcome, "3.13");
    assert_no_leftovers(&run);
}

#[test]
fn a_params_file_gives_values_and_p_wins_over_it() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("params.yaml");
    std::fs::write(
        &file,
        "token: from-file\ncount: 9\nmode: slow\nitems: [1]\n",
    )
    .expect("write");
    let run = run_json(
        &format_packs(),
        "full.typed",
        &["--params-file", &file.to_string_lossy(), "-p", "count=2"],
    );
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let params = &run.json()["result"]["params"];
    // A secret parameter's value is scrubbed from the outcome (the action did receive it).
    assert_eq!(params["token"], "***");
    assert_eq!(params["count"], 2);
    assert_eq!(params["mode"], "slow");
    assert_eq!(params["items"], json!([1]));
    let json_file = dir.path().join("params.json");
    std::fs::write(&json_file, r#"{"token": "j", "flag": true}"#).expect("write");
    let run = run_json(
        &format_packs(),
        "full.typed",
        &["--params-file", &json_file.to_string_lossy()],
    );
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    assert_eq!(run.json()["result"]["params"]["flag"], true);
}

#[test]
fn json_schema_parameters_and_dotenv_delivery_work() {
    require_engine();
    let run = run_json(&format_packs(), "full.schema_style", &["-p", "name=n"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    assert_eq!(run.json()["result"], json!({"name": "n", "level": 2}));
    let run = run_json(&format_packs(), "full.dotenv", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    assert_eq!(run.json()["stdout"], "greeting='hi'\nnested.a.b='1'\n");
}

#[test]
fn bad_parameters_are_all_reported_before_any_container_and_secrets_stay_hidden() {
    // No engine is needed: DOCKER_HOST points nowhere and the answer is still the input error.
    let packs = format_packs();
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "full.typed",
            "-p",
            "count=0",
            "-p",
            "mode=medium",
            "-p",
            "nope=1",
            "-p",
            "ratio=lots",
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    for expected in [
        "invalid parameters for action full.typed",
        "`count`: value is less than the minimum of 1, got `0`",
        "`mode`: value is not one of \"fast\" or \"slow\", got `medium`",
        "`ratio`: expected a number, got `lots`",
        "missing required parameter `token`",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    // An undeclared parameter is not a problem (Attune delivers it; the outcome warns).
    assert!(!stderr.contains("nope"), "{stderr}");
    assert!(containers_of(run.pid).is_empty());
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "full.typed",
            "-p",
            "token=",
            "-p",
            "count=hunter2secret",
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("hunter2secret"),
        "non-secret values are shown: {}",
        run.stderr()
    );
}

#[test]
fn a_secret_value_is_never_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&format_packs().join("full"), &dir.path().join("full"));
    // `full` needs `legacy` (its `dependencies`).
    copy_dir(&format_packs().join("legacy"), &dir.path().join("legacy"));
    let typed = dir.path().join("full/actions/typed.yaml");
    let text = std::fs::read_to_string(&typed).expect("read");
    // Make the secret an integer so that a text value is refused.
    let text = text.replace(
        "  token:\n    type: string",
        "  token:\n    type: integer\n    maximum: 99",
    );
    std::fs::write(&typed, text).expect("write");
    for value in ["token=hunter2secret", "token=123456789"] {
        let run = packbox(
            &[
                "run",
                "--packs",
                &dir.path().to_string_lossy(),
                "full.typed",
                "-p",
                value,
                "--json",
            ],
            &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        );
        assert_eq!(run.code(), 2, "{}", run.stderr());
        let all = format!("{}{}", run.stdout(), run.stderr());
        assert!(all.contains("`token`"), "{all}");
        assert!(all.contains("value not shown: secret parameter"), "{all}");
        assert!(
            !all.contains("hunter2secret") && !all.contains("123456789"),
            "{all}"
        );
    }
}

#[test]
fn an_unsatisfiable_constraint_is_an_error_naming_action_constraint_and_versions() {
    let packs = broken_format_packs();
    let run = packbox(
        &["run", "--packs", &packs.to_string_lossy(), "versions.unsat"],
        &[],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "error: action versions.unsat: runtime_version `>=4` matches none of the available python versions (3.9, 3.11, 3.13)"
        ),
        "{stderr}"
    );
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "versions.invalid",
        ],
        &[],
    );
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains(
            "invalid.yaml:3: field `runtime_version`: `=>3.9` is not a version constraint"
        ),
        "{}",
        run.stderr()
    );
}

#[test]
fn an_action_without_ref_is_an_error_naming_the_file() {
    let packs = broken_format_packs();
    let run = packbox(
        &["run", "--packs", &packs.to_string_lossy(), "badpack.noref"],
        &[],
    );
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr()
            .contains("badpack/actions/noref.yaml: field `ref`: missing"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_pack_with_a_symlink_leading_out_is_refused_by_validate_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("legacy");
    copy_dir(&format_packs().join("legacy"), &pack);
    std::os::unix::fs::symlink("/etc/passwd", pack.join("actions/passwd")).expect("symlink");
    let (code, report) = validate_json(&pack);
    assert_eq!(code, 2);
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("symlink leads outside the pack"),
        "{report}"
    );
    let run = packbox(
        &[
            "run",
            "--packs",
            &dir.path().to_string_lossy(),
            "legacy.greet",
        ],
        &[],
    );
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr()
            .contains("actions/passwd: symlink leads outside the pack (to /etc/passwd)"),
        "{}",
        run.stderr()
    );
    assert!(containers_of(run.pid).is_empty());
}

#[test]
fn an_entry_point_symlinked_out_of_actions_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("legacy");
    copy_dir(&format_packs().join("legacy"), &pack);
    std::fs::remove_file(pack.join("actions/greet.sh")).expect("rm");
    // Inside the pack, but outside actions/.
    std::fs::write(pack.join("greet.sh"), "echo out\n").expect("write");
    std::os::unix::fs::symlink("../greet.sh", pack.join("actions/greet.sh")).expect("symlink");
    let run = packbox(
        &[
            "run",
            "--packs",
            &dir.path().to_string_lossy(),
            "legacy.greet",
        ],
        &[],
    );
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr()
            .contains("field `entry_point`: expected a file inside actions/"),
        "{}",
        run.stderr()
    );
}

#[test]
fn actions_list_shows_runtime_constraint_version_and_parameters() {
    let packs = format_packs();
    let run = packbox(
        &[
            "actions",
            "list",
            "--packs",
            &packs.to_string_lossy(),
            "--json",
        ],
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let listing = run.json();
    let actions = listing["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 8);
    let old = actions
        .iter()
        .find(|a| a["ref"] == "full.old_python")
        .expect("listed");
    assert_eq!(old["runtime"], "python");
    assert_eq!(old["runtime_version"], "<3.10");
    assert_eq!(old["selected_version"], "3.9");
    let typed = actions
        .iter()
        .find(|a| a["ref"] == "full.typed")
        .expect("listed");
    let token = typed["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "token"))
        .expect("token listed");
    assert_eq!(token["secret"], true);
    assert_eq!(token["required"], true);
    let hello = actions
        .iter()
        .find(|a| a["ref"] == "jsonpack.hello")
        .expect("listed");
    assert_eq!(hello["runner_type"], "node.js");
    assert_eq!(hello["runtime"], "node");
    let human = packbox(
        &["actions", "list", "--packs", &packs.to_string_lossy()],
        &[],
    );
    assert_eq!(human.code(), 0);
    assert!(
        human
            .stdout()
            .lines()
            .any(|l| l.starts_with("full.old_python") && l.contains("<3.10") && l.contains("3.9")),
        "{}",
        human.stdout()
    );
    assert!(
        human.stdout().contains("token*: string (secret)"),
        "{}",
        human.stdout()
    );
}

#[test]
fn actions_list_reports_broken_packs_and_exits_2() {
    let packs = broken_format_packs();
    let run = packbox(
        &[
            "actions",
            "list",
            "--packs",
            &packs.to_string_lossy(),
            "--json",
        ],
        &[],
    );
    assert_eq!(run.code(), 2);
    let listing = run.json();
    // Only the action that loads is listed (its pack's folder name is the problem there).
    let refs: Vec<_> = listing["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["ref"].clone())
        .collect();
    assert_eq!(refs, [json!("other.a")], "{listing}");
    assert_eq!(listing["problems"].as_array().map(Vec::len), Some(18));
}

#[test]
fn a_user_catalog_replaces_a_runtime_and_selection_follows_it() {
    require_engine();
    let catalog = tempfile::tempdir().expect("tempdir");
    // Python with only 3.9: an action without a constraint now runs there.
    std::fs::write(
        catalog.path().join("python.yaml"),
        "name: python\naliases: [python, python3]\ninterpreter: [python3, -u]\nversions:\n  - version: '3.9'\n    image: packbox/python:3.9\n    probe: {command: [python3, --version], pattern: 'Python (\\d+\\.\\d+\\.\\d+)'}\n",
    )
    .expect("write");
    let packs = format_packs();
    let catalog_dir = catalog.path().to_string_lossy().into_owned();
    let run = packbox(
        &[
            "run",
            "--catalog",
            &catalog_dir,
            "--packs",
            &packs.to_string_lossy(),
            "legacy.greet",
            "--json",
        ],
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "full.typed",
            "-p",
            "token=x",
            "--json",
        ],
        &[("PACKBOX_CATALOG", &catalog_dir)],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_runs_on(&run.json(), "3.9");
    assert_no_leftovers(&run);
    // ~3.13 cannot be met by this catalog: an error, not another interpreter.
    let run = packbox(
        &[
            "--catalog",
            &catalog_dir,
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "full.new_python",
        ],
        &[],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("`~3.13` matches none of the available python versions (3.9)"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_broken_user_catalog_is_named() {
    let catalog = tempfile::tempdir().expect("tempdir");
    std::fs::write(catalog.path().join("bad.yaml"), "name: [\n").expect("write");
    let packs = format_packs();
    let run = packbox(
        &[
            "pack",
            "validate",
            &packs.to_string_lossy(),
            "--catalog",
            &catalog.path().to_string_lossy(),
        ],
        &[],
    );
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains("bad.yaml"), "{}", run.stderr());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The outcome names the full version the image holds (`3.9.2`), detected by probing, of the
/// catalog version `declared` (`3.9`).
fn assert_runs_on(outcome: &serde_json::Value, declared: &str) {
    let version = outcome["runtime_version"].as_str().unwrap_or("");
    assert!(
        version.starts_with(&format!("{declared}.")) && version.split('.').count() == 3,
        "expected a full {declared}.x version: {outcome}"
    );
}
