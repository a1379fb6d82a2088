//! `packbox test`: a pack's Attune `testing` section runs for real, each runner in the sandbox and
//! on the environment image the pack's actions get; pass, fail, timeout and invalid sections.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn tested_pack() -> PathBuf {
    repo_root().join("tests/fixtures/packtest/tested")
}

fn test_json(pack: &Path) -> Finished {
    packbox(&["test", &pack.to_string_lossy(), "--json"], &build_env())
}

fn runner<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["runners"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("runner {name} in {report}"))
}

/// A copy of the fixture pack with `pack.yaml` or a test file edited.
fn edited(file: &str, from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&tested_pack(), dir.path());
    let path = pack.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} holds {from}");
    std::fs::write(&path, text.replace(from, to)).expect("write");
    (dir, pack)
}

#[test]
fn every_runner_runs_in_the_actions_sandbox_and_environment() {
    require_engine();
    let run = test_json(&tested_pack());
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let report = run.json();
    assert_eq!(report["pack"], "tested");
    assert_eq!(report["passed"], true);
    let shell = runner(&report, "shell");
    assert_eq!(shell["type"], "script");
    assert_eq!(shell["status"], "passed");
    assert_eq!(shell["image"], "packbox/shell:5.2");
    assert!(shell["duration_ms"].as_u64().is_some());
    let tail = shell["stdout_tail"].as_str().unwrap_or("");
    assert!(
        tail.contains("ok: the pack is read-only") && tail.contains("Passed: 3"),
        "{tail}"
    );
    let python = runner(&report, "python");
    assert_eq!(python["type"], "unittest");
    assert_eq!(python["status"], "passed", "{python}");
    // The same environment image a python action of the pack gets.
    assert!(
        python["image"]
            .as_str()
            .unwrap_or("")
            .starts_with("packbox/env:python-3.11."),
        "{python}"
    );
    assert!(
        python["stderr_tail"]
            .as_str()
            .unwrap_or("")
            .contains("Ran 4 tests"),
        "{python}"
    );
    assert_no_leftovers(&run);
    // Human output: one block per runner, the summary on stderr.
    let human = packbox(&["test", &tested_pack().to_string_lossy()], &build_env());
    assert_eq!(human.code(), 0);
    assert!(
        human
            .stdout()
            .contains("shell (script, tests/run_tests.sh): passed in "),
        "{}",
        human.stdout()
    );
    assert!(
        human.stderr().contains("tested: 2 of 2 runners passed"),
        "{}",
        human.stderr()
    );
}

#[test]
fn a_failing_runner_fails_the_command_with_exit_1() {
    require_engine();
    let (_dir, pack) = edited("tests/test_actions.py", "\"1.16.0\")", "\"0.0.0\")");
    let run = test_json(&pack);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let report = run.json();
    assert_eq!(report["passed"], false);
    assert_eq!(runner(&report, "shell")["status"], "passed");
    let python = runner(&report, "python");
    assert_eq!(python["status"], "failed");
    assert_eq!(python["exit_code"], 1);
    assert!(
        python["stderr_tail"]
            .as_str()
            .unwrap_or("")
            .contains("FAILED (failures=1)"),
        "{python}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn pytest_runners_run_with_the_packs_pytest() {
    require_engine();
    let (_dir, pack) = edited("pack.yaml", "type: unittest", "type: pytest");
    let run = test_json(&pack);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let python = runner(&run.json(), "python").clone();
    assert_eq!(python["type"], "pytest");
    assert!(
        python["stdout_tail"]
            .as_str()
            .unwrap_or("")
            .contains("4 passed"),
        "{python}"
    );
}

#[test]
fn a_runner_past_its_timeout_is_stopped_and_reported() {
    require_engine();
    let (_dir, pack) = edited("tests/run_tests.sh", "set -u\n", "set -u\nsleep 30\n");
    let yaml = pack.join("pack.yaml");
    let text = std::fs::read_to_string(&yaml).expect("read");
    std::fs::write(&yaml, text.replace("timeout: 60", "timeout: 1")).expect("write");
    let run = packbox(
        &["test", &pack.to_string_lossy(), "--json"],
        &[("PACKBOX_BUILD_CA_BUNDLE", CA_BUNDLE)],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let report = run.json();
    assert_eq!(runner(&report, "shell")["status"], "timed_out");
    assert_no_leftovers(&run);
}

#[test]
fn invalid_testing_sections_are_input_errors_before_any_container() {
    let no_engine = [("DOCKER_HOST", "unix:///nonexistent.sock")];
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = copy_pack(&format_packs().join("legacy"), dir.path());
    let run = packbox(&["test", &bare.to_string_lossy()], &no_engine);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("legacy/pack.yaml: the pack has no tests (a `testing` section with `runners` is expected)"),
        "{}",
        run.stderr()
    );
    for (from, to, expected) in [
        (
            "type: unittest",
            "type: jest",
            "field `testing.runners.python.type`: `jest` is not a runner type packbox runs; expected one of script, unittest, pytest",
        ),
        (
            "entry_point: tests/run_tests.sh",
            "entry_point: ../outside.sh",
            "field `testing.runners.shell.entry_point`: expected a path inside the pack folder, but ../outside.sh climbs out with `..`",
        ),
        (
            "    shell:\n",
            "    cobol:\n",
            "field `testing.runners.cobol`: `cobol` is not a runtime of the catalog",
        ),
        (
            "    python:\n      type: unittest",
            "    bash:\n      type: unittest",
            "field `testing.runners.bash`: type `unittest` runs with Python; a shell runner can only be a script",
        ),
    ] {
        let (_dir, pack) = edited("pack.yaml", from, to);
        let run = packbox(&["test", &pack.to_string_lossy(), "--json"], &no_engine);
        assert_eq!(run.code(), 2, "{to}: {}", run.stderr());
        assert!(run.stderr().contains(expected), "{to}: {}", run.stderr());
        assert_eq!(run.json()["status"], "invalid");
    }
}
