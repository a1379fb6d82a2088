//! The syscall profile against the real engine: packbox's profile by default and reported, what
//! it refuses beyond the engine's default (the same action under `--seccomp engine-default` is the
//! yardstick), the socket rule by network, a profile file, weaker profiles refused unless
//! allowed, and every runtime (probes included) working under it.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

fn syscall_packs() -> PathBuf {
    repo_root().join("tests/fixtures/seccomp/packs")
}

/// `syscalls.calls` with extra flags: the outcome, after checking that nothing was left behind.
fn calls(args: &[&str]) -> Value {
    let run = run_json(&syscall_packs(), "syscalls.calls", args);
    assert_no_leftovers(&run);
    let outcome = run.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    outcome
}

#[test]
fn the_packbox_profile_is_applied_by_default_and_reported() {
    require_engine();
    let outcome = calls(&[]);
    assert_eq!(outcome["sandbox"]["seccomp"], "packbox");
    let result = &outcome["result"];
    for refused in ["ptrace_traceme", "personality_linux32", "unshare_user"] {
        assert_eq!(result[refused], "EPERM", "{refused}: {result}");
    }
    for kept in [
        "personality_query",
        "mkfifo",
        "mkdir",
        "socket_unix",
        "socketpair_unix",
    ] {
        assert_eq!(result[kept], "ok", "{kept}: {result}");
    }
}

#[test]
fn the_engine_default_profile_allows_what_packbox_refuses() {
    require_engine();
    let outcome = calls(&["--seccomp", "engine-default", "--allow-weaker-sandbox"]);
    assert_eq!(outcome["sandbox"]["seccomp"], "engine-default");
    let result = &outcome["result"];
    for allowed in ["ptrace_traceme", "personality_linux32", "socket_inet"] {
        assert_eq!(result[allowed], "ok", "{allowed}: {result}");
    }
}

#[test]
fn without_a_network_only_unix_sockets_open() {
    require_engine();
    let result = calls(&[])["result"].clone();
    for family in ["socket_inet", "socket_inet6", "socket_netlink"] {
        assert_eq!(result[family], "EAFNOSUPPORT", "{family}: {result}");
    }
    assert_eq!(result["socket_unix"], "ok");
}

#[test]
fn with_a_network_other_socket_families_open_and_the_rest_still_holds() {
    require_engine();
    // Creating a socket sends nothing; the action connects nowhere.
    let outcome = calls(&["--network", "bridge", "--allow-weaker-sandbox"]);
    let result = &outcome["result"];
    assert_eq!(outcome["sandbox"]["network"], "bridge");
    assert_eq!(result["socket_inet"], "ok", "{result}");
    assert_eq!(result["socket_inet6"], "ok", "{result}");
    assert_eq!(result["ptrace_traceme"], "EPERM", "{result}");
}

#[test]
fn a_profile_file_is_applied_and_reported_by_its_path() {
    require_engine();
    let moby: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/seccomp/moby-default.json"))
            .expect("moby's profile"),
    )
    .expect("JSON");
    // Docker's default made no weaker than packbox's (what packbox refuses on purpose left out,
    // 64-bit calls only), less mkdir: the action's mkdir must fail where it succeeded before,
    // and the file is taken without --allow-weaker-sandbox.
    let source: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("src/sandbox/seccomp.yaml"))
            .expect("packbox's profile source"),
    )
    .expect("YAML");
    let refused: Vec<&str> = source["refuse"]
        .as_sequence()
        .expect("the refuse list")
        .iter()
        .filter_map(serde_yaml::Value::as_str)
        .collect();
    let mut profile = moby.clone();
    for rule in profile["syscalls"].as_array_mut().expect("rules") {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| {
                let name = n.as_str().unwrap_or_default();
                name != "mkdir" && name != "mkdirat" && !refused.contains(&name)
            });
        }
    }
    for entry in profile["archMap"].as_array_mut().expect("archMap") {
        entry["subArchitectures"] = json!([]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("no-mkdir.json");
    std::fs::write(&file, profile.to_string()).expect("write");
    let path = file.to_string_lossy().into_owned();
    let outcome = calls(&["--seccomp", &path]);
    assert_eq!(outcome["sandbox"]["seccomp"], json!(path));
    assert_eq!(outcome["result"]["mkdir"], "EPERM", "{outcome}");
    assert_eq!(outcome["result"]["mkfifo"], "ok", "{outcome}");
}

#[test]
fn unconfined_is_weaker_and_refused_unless_allowed() {
    require_engine();
    let since = unix_now();
    let run = run_json(
        &syscall_packs(),
        "syscalls.calls",
        &["--seccomp", "unconfined"],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = run.json()["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("sandbox.seccomp = unconfined"), "{error}");
    assert!(error.contains("--allow-weaker-sandbox"), "{error}");
    assert_eq!(containers_created_by(run.pid, since), 0);

    // Allowed explicitly: no filter at all, and the outcome says so.
    let outcome = calls(&["--seccomp", "unconfined", "--allow-weaker-sandbox"]);
    assert_eq!(outcome["sandbox"]["seccomp"], "unconfined");
    assert_eq!(
        outcome["sandbox"]["weaker_than_default"],
        json!(["sandbox.seccomp = unconfined (default packbox)"])
    );
    assert_eq!(outcome["result"]["ptrace_traceme"], "ok", "{outcome}");
}

#[test]
fn a_permissive_profile_file_counts_as_weaker() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("allow-all.json");
    std::fs::write(
        &file,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}"#,
    )
    .expect("write");
    let config = dir.path().join("packbox.yaml");
    std::fs::write(
        &config,
        format!("sandbox:\n  seccomp: {}\n", file.display()),
    )
    .expect("write");
    let config = config.to_string_lossy().into_owned();
    let run = run_json(&syscall_packs(), "syscalls.calls", &["--config", &config]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = run.json()["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("allow-all.json"), "{error}");
    assert!(
        error.contains("weaker than packbox's sandbox default"),
        "{error}"
    );

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{ not json").expect("write");
    let path = broken.to_string_lossy().into_owned();
    let run = run_json(&syscall_packs(), "syscalls.calls", &["--seccomp", &path]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = run.json()["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("broken.json: not a JSON"), "{error}");
}

#[test]
fn node_and_shell_actions_run_under_the_profile() {
    require_engine();
    let node = run_json(&syscall_packs(), "syscalls.node", &[]);
    assert_no_leftovers(&node);
    let outcome = node.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["sandbox"]["seccomp"], "packbox");
    assert_eq!(outcome["result"]["child"], "child ran");
    assert_eq!(outcome["result"]["unix_socket"], "pong");

    let shell = run_json(&syscall_packs(), "syscalls.shell", &[]);
    assert_no_leftovers(&shell);
    let outcome = shell.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(
        outcome["result"],
        json!({"words": "a b ", "sub": "42", "fifo": "through-fifo"})
    );
}

#[test]
fn every_runtime_version_verifies_under_the_profile() {
    require_engine();
    // A fresh state folder: no cached verdict, every probe runs now (under the default sandbox,
    // so under packbox's profile).
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().to_string_lossy().into_owned();
    let run = packbox(
        &["runtimes", "verify", "--json"],
        &[("PACKBOX_STATE_DIR", state_dir.as_str())],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let report = run.json();
    let versions = report.as_array().cloned().unwrap_or_default();
    assert!(versions.len() >= 5, "{report}");
    for version in &versions {
        assert_eq!(version["available"], true, "{version}");
        assert_eq!(version["cached"], false, "{version}");
    }
}
