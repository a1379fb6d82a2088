//! Isolation levels against the real engine: the operator's rules (globs over PACK.ACTION in the
//! config file) and an action's own `isolation: strict` put a run under gVisor with packbox's
//! profile and lower limits, reported in the outcome; a pack cannot loosen the operator's level;
//! a strict run refuses weaker settings before any container exists.
//!
//! Strict runs need gVisor: `scripts/ensure-docker --with-gvisor` (scripts/test runs it).

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn syscall_packs() -> PathBuf {
    repo_root().join("tests/fixtures/seccomp/packs")
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("the host's kernel release")
        .trim()
        .to_string()
}

/// A config file holding `text`, alive as long as the returned folder.
fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, text).expect("write config");
    let path = file.to_string_lossy().into_owned();
    (dir, path)
}

fn run_action(action: &str, args: &[&str]) -> (Finished, Value) {
    let run = run_json(&syscall_packs(), action, args);
    assert_no_leftovers(&run);
    let outcome = run.json();
    (run, outcome)
}

fn assert_strict(outcome: &Value) {
    let sandbox = &outcome["sandbox"];
    assert_eq!(sandbox["isolation"]["level"], "strict", "{sandbox}");
    assert_eq!(sandbox["oci_runtime"], "runsc");
    assert_eq!(sandbox["seccomp"], "packbox");
    assert_eq!(sandbox["memory_bytes"], 256 << 20);
    assert_eq!(sandbox["pids_limit"], 128);
    assert_eq!(sandbox["tmpfs_tmp_bytes"], 16 << 20);
    assert_eq!(sandbox["nofile"], 256);
    let means = sandbox["isolation"]["means"].to_string();
    assert!(means.contains("gVisor"), "{means}");
}

#[test]
fn a_config_rule_makes_matching_actions_strict_and_leaves_the_others() {
    require_engine();
    let (_dir, file) = config("isolation:\n  - {match: \"syscalls.ker*\", level: strict}\n");
    let (_, strict) = run_action("syscalls.kernel", &["--config", &file]);
    assert_eq!(strict["status"], "succeeded", "{strict}");
    assert_strict(&strict);
    assert_eq!(
        strict["sandbox"]["isolation"]["chosen_by"],
        serde_json::json!(["config rule `match: syscalls.ker*`"])
    );
    // It really ran in gVisor's kernel.
    assert_ne!(strict["result"]["release"], host_release().as_str());

    let (_, standard) = run_action("syscalls.shell", &["--config", &file]);
    assert_eq!(standard["status"], "succeeded", "{standard}");
    assert_eq!(standard["sandbox"]["isolation"]["level"], "standard");
    assert_eq!(standard["sandbox"]["oci_runtime"], default_oci_runtime());
    assert_eq!(standard["sandbox"]["memory_bytes"], 512 << 20);
}

#[test]
fn an_action_may_ask_for_strict_and_a_rule_cannot_loosen_it() {
    require_engine();
    let (_, asked) = run_action("syscalls.asks_strict", &[]);
    assert_eq!(asked["status"], "succeeded", "{asked}");
    assert_strict(&asked);
    assert_ne!(asked["result"]["release"], host_release().as_str());

    let (_dir, file) = config("isolation:\n  - {match: \"*\", level: standard}\n");
    let (_, still) = run_action("syscalls.asks_strict", &["--config", &file]);
    assert_eq!(still["status"], "succeeded", "{still}");
    assert_strict(&still);
    assert_eq!(
        still["sandbox"]["isolation"]["chosen_by"],
        serde_json::json!(["the action (`isolation` in its YAML)"])
    );
}

#[test]
fn node_python_and_shell_actions_run_strict() {
    require_engine();
    // Threads need clone3 under gVisor (Node.js starts a thread pool at once): the gVisor
    // variant of the profile allows it.
    let (_dir, file) = config("isolation:\n  - {match: \"syscalls.*\", level: strict}\n");
    for action in ["syscalls.node", "syscalls.calls", "syscalls.shell"] {
        let (_, outcome) = run_action(action, &["--config", &file]);
        assert_eq!(outcome["status"], "succeeded", "{action}: {outcome}");
        assert_strict(&outcome);
    }
}

#[test]
fn strict_refuses_weaker_settings_before_any_container_exists() {
    require_engine();
    let since = unix_now();
    let (run, outcome) = run_action(
        "syscalls.asks_strict",
        &["--network", "bridge", "--allow-weaker-sandbox"],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = outcome["error"].as_str().unwrap_or("");
    assert!(
        error.contains("isolation strict") && error.contains("sandbox.network = bridge"),
        "{error}"
    );
    assert_eq!(containers_created_by(run.pid, since), 0);
}

#[test]
fn a_rule_with_a_bad_glob_or_level_is_an_input_error_naming_it() {
    require_engine();
    let (_dir, file) = config("isolation:\n  - {match: \"[payments\", level: strict}\n");
    let (run, outcome) = run_action("syscalls.kernel", &["--config", &file]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = outcome["error"].as_str().unwrap_or("");
    assert!(
        error.contains("isolation rule 0 (`match: [payments`)"),
        "{error}"
    );

    let (_dir, file) = config("isolation:\n  - {match: \"x.*\", level: paranoid}\n");
    let (run, outcome) = run_action("syscalls.kernel", &["--config", &file]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = outcome["error"].as_str().unwrap_or("");
    assert!(error.contains("paranoid"), "{error}");
}
