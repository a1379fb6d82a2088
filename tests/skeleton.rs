//! The walking skeleton end to end: the example actions run in real containers, the sandbox
//! holds, nothing is left behind, and bad input gets one clear line and the right exit code.

mod common;

use common::*;

#[test]
fn shell_example_returns_its_json() {
    require_engine();
    let run = run_json(&example_packs(), "hello.greet_shell", &["-p", "name=Ada"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(outcome["exit_code"], 0);
    assert_eq!(outcome["result"]["greeting"], "Hello, Ada!");
    assert_eq!(outcome["runtime"], "shell");
    assert!(
        outcome["image"]
            .as_str()
            .unwrap_or("")
            .starts_with("packbox/shell:")
    );
    assert_no_leftovers(&run);
}

#[test]
fn python_example_returns_its_json() {
    require_engine();
    let run = run_json(&example_packs(), "hello.greet_python", &["-p", "name=Bob"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(outcome["result"]["greeting"], "Hello, Bob!");
    assert!(
        outcome["result"]["runtime"]
            .as_str()
            .unwrap_or("")
            .starts_with("python 3."),
        "{outcome}"
    );
    for key in [
        "stdout",
        "stderr",
        "error",
        "duration_ms",
        "prepare_ms",
        "runtime_version",
    ] {
        assert!(outcome.get(key).is_some(), "outcome lacks {key}: {outcome}");
    }
    assert_eq!(outcome["pack_version"], "1.0.0", "{outcome}");
    let digest = outcome["pack_digest"].as_str().unwrap_or("");
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn default_parameter_applies_when_none_given() {
    require_engine();
    let run = run_json(&example_packs(), "hello.greet_shell", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    assert_eq!(run.json()["result"]["greeting"], "Hello, world!");
}

#[test]
fn writing_to_the_pack_fails_inside_the_container() {
    require_engine();
    let run = run_json(&fixture_packs(), "sandboxcheck.write_pack", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let result = &run.json()["result"];
    assert_eq!(result["wrote"], false, "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or("")
            .contains("Read-only file system"),
        "{result}"
    );
    assert!(
        !fixture_packs()
            .join("sandboxcheck/written-by-action")
            .exists()
    );
    assert_no_leftovers(&run);
}

#[test]
fn a_failing_action_exits_1_with_its_stderr_as_error() {
    require_engine();
    let run = run_json(&fixture_packs(), "sandboxcheck.fail", &[]);
    assert_eq!(run.code(), 1, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "failed");
    assert_eq!(outcome["exit_code"], 3);
    assert_eq!(outcome["error"], "something went wrong");
    assert_no_leftovers(&run);
}

#[test]
fn missing_packs_folder_is_input_error() {
    let run = packbox(
        &["run", "--packs", "/nonexistent/packs", "hello.greet_shell"],
        &[],
    );
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("/nonexistent/packs"),
        "{}",
        run.stderr()
    );
    assert!(!run.stderr().contains("panicked"));
}

#[test]
fn unknown_pack_and_action_are_input_errors() {
    let packs = example_packs();
    let packs = packs.to_string_lossy();
    let run = packbox(&["run", "--packs", &packs, "nosuch.greet"], &[]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("pack `nosuch` not found"),
        "{}",
        run.stderr()
    );
    let run = packbox(&["run", "--packs", &packs, "hello.nosuch"], &[]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("action `nosuch` not found"),
        "{}",
        run.stderr()
    );
}

#[test]
fn malformed_yaml_is_input_error_naming_the_file() {
    let packs = fixture_packs();
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "broken.malformed",
        ],
        &[],
    );
    assert_eq!(run.code(), 2);
    let stderr = run.stderr();
    assert!(stderr.contains("broken/actions/malformed.yaml"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

#[test]
fn an_engine_that_does_not_answer_exits_125_with_a_hint() {
    let packs = example_packs();
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "hello.greet_shell",
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}
