//! gVisor (`--oci-runtime runsc`) against the real engine: the action runs in gVisor's kernel and
//! the outcome says so; the syscall profile applies inside it; the memory, pids, /tmp and timeout
//! limits hold; a network with it is refused before any container exists.
//!
//! gVisor is required: `scripts/ensure-docker --with-gvisor` installs and registers it (and
//! `scripts/test` runs that first). Without it these tests fail, they do not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const RUNSC: [&str; 2] = ["--oci-runtime", "runsc"];

/// Fails the test unless the engine offers runsc.
fn require_runsc() {
    require_engine();
    let output = Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .expect("docker info runs");
    let runtimes = String::from_utf8_lossy(&output.stdout);
    assert!(
        runtimes.contains("\"runsc\""),
        "the engine has no runsc ({runtimes}): run scripts/ensure-docker --with-gvisor"
    );
}

fn syscall_packs() -> PathBuf {
    repo_root().join("tests/fixtures/seccomp/packs")
}

fn hostile_packs() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// Runs an action under runsc with extra flags; checks nothing was left behind.
fn under_runsc(packs: &Path, action: &str, args: &[&str]) -> (Finished, Value) {
    let mut all = RUNSC.to_vec();
    all.extend_from_slice(args);
    let run = run_json(packs, action, &all);
    assert_no_leftovers(&run);
    let outcome = run.json();
    (run, outcome)
}

#[test]
fn the_action_runs_in_gvisors_kernel_and_the_outcome_says_so() {
    require_runsc();
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("the host's kernel release")
        .trim()
        .to_string();
    let (_, outcome) = under_runsc(&syscall_packs(), "syscalls.kernel", &[]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["sandbox"]["oci_runtime"], "runsc");
    let release = outcome["result"]["release"].as_str().unwrap_or("");
    assert!(!release.is_empty(), "{outcome}");
    assert_ne!(release, host_release, "gVisor answers uname itself");

    let (_, runc) = {
        let run = run_json(&syscall_packs(), "syscalls.kernel", &[]);
        assert_no_leftovers(&run);
        let outcome = run.json();
        (run, outcome)
    };
    assert_eq!(runc["result"]["release"], host_release.as_str());
    assert_eq!(runc["sandbox"]["oci_runtime"], default_oci_runtime());
}

#[test]
fn the_syscall_profile_applies_inside_gvisor() {
    require_runsc();
    let (_, outcome) = under_runsc(&syscall_packs(), "syscalls.calls", &[]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["sandbox"]["seccomp"], "packbox");
    let result = &outcome["result"];
    // gVisor's kernel would allow TRACEME and answer EINVAL to personality (it has no other
    // execution domain): EPERM here is the profile's answer.
    assert_eq!(result["ptrace_traceme"], "EPERM", "{result}");
    assert_eq!(result["personality_linux32"], "EPERM", "{result}");
    // gVisor's filter answers EPERM where the host kernel's answers EAFNOSUPPORT.
    for family in ["socket_inet", "socket_inet6", "socket_netlink"] {
        assert_eq!(result[family], "EPERM", "{family}: {result}");
    }
    assert_eq!(result["socket_unix"], "ok", "{result}");

    let (_, engine_default) = under_runsc(
        &syscall_packs(),
        "syscalls.calls",
        &["--seccomp", "engine-default", "--allow-weaker-sandbox"],
    );
    let result = &engine_default["result"];
    assert_eq!(result["ptrace_traceme"], "ok", "{result}");
    assert_eq!(result["personality_linux32"], "EINVAL", "{result}");
    assert_eq!(result["socket_inet"], "ok", "{result}");
}

#[test]
fn the_memory_limit_holds_under_gvisor() {
    require_runsc();
    let (_, outcome) = under_runsc(&hostile_packs(), "hostile.memory_hog", &[]);
    // The container's cgroup holds gVisor's kernel and the action: the 2 GiB never fit, and
    // the kernel's OOM killer ends the sandbox (SIGKILL, 137). runsc reports the OOM kill to
    // the engine late or not at all, so the status is oom or, now and then, failed.
    assert!(
        outcome["result"].is_null(),
        "it never printed its report: {outcome}"
    );
    assert_eq!(outcome["exit_code"], 137, "{outcome}");
    let status = outcome["status"].as_str().unwrap_or("");
    assert!(status == "oom" || status == "failed", "{outcome}");
}

#[test]
fn the_pids_limit_holds_under_gvisor() {
    require_runsc();
    let (run, outcome) = under_runsc(&hostile_packs(), "hostile.fork_bomb", &[]);
    // Each process of the action is a host process of gVisor's (ptrace platform), counted by the
    // container's pids cgroup. When the bomb exhausts it, gVisor's kernel cannot go on and the
    // whole sandbox stops: the run ends early, as failed, and the host is untouched.
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert_eq!(outcome["exit_code"], 2, "{outcome}");
    assert_eq!(run.code(), 1);
    let after = run_json(&example_packs(), "hello.greet_shell", &RUNSC);
    assert_eq!(after.code(), 0, "a run after the bomb: {}", after.stderr());
    assert_no_leftovers(&after);
}

#[test]
fn the_tmp_size_holds_under_gvisor() {
    require_runsc();
    let (_, outcome) = under_runsc(&hostile_packs(), "hostile.fill_tmp", &[]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let written = outcome["result"]["written_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let limit = outcome["sandbox"]["tmpfs_tmp_bytes"].as_u64().unwrap_or(0);
    assert!(
        written <= limit,
        "wrote {written} bytes into a {limit}-byte /tmp"
    );
}

#[test]
fn the_timeout_holds_under_gvisor() {
    require_runsc();
    let (run, outcome) = under_runsc(&hostile_packs(), "hostile.endless_output", &[]);
    assert_eq!(outcome["status"], "timeout", "{outcome}");
    assert_eq!(run.code(), 124);
    assert_eq!(outcome["stdout_truncated"], true);
}

#[test]
fn a_network_with_gvisor_is_refused_before_any_container_exists() {
    require_runsc();
    let since = unix_now();
    let run = run_json(
        &example_packs(),
        "hello.greet_shell",
        &[
            "--oci-runtime",
            "runsc",
            "--network",
            "bridge",
            "--allow-weaker-sandbox",
        ],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = run.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("runsc") && error.contains("network `bridge`"),
        "{error}"
    );
    assert_eq!(containers_created_by(run.pid, since), 0);
}
