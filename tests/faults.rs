//! Faults: the engine going away under a run, and an engine that refuses connections.
//!
//! The tests that stop the engine are `#[ignore]`d so that they never run beside other tests
//! (stopping dockerd would break them); `scripts/test` runs them on their own, after the rest,
//! one at a time; so is the gc that removes every superseded image at once.

mod common;

use std::os::unix::net::UnixListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// Starts `packbox run --json` of a minute-long action and waits until its container runs.
fn start_long_run() -> Child {
    let packs = repo_root().join("tests/fixtures");
    let child = spawn_packbox(&[
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "faults.sleep",
        "--json",
    ]);
    wait_for_running(&[format!("label=packbox.owner_pid={}", child.id())]);
    child
}

/// Waits for a child, bounded; a child that outlives the bound is killed and the test fails.
fn wait_bounded(mut child: Child, bound: Duration) -> std::process::Output {
    let deadline = Instant::now() + bound;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("packbox hung for more than {} s", bound.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ensure_engine() {
    let status = Command::new(repo_root().join("scripts/ensure-docker"))
        .status()
        .expect("ensure-docker runs");
    assert!(status.success(), "the engine did not come back");
}

#[test]
#[ignore = "stops the Docker engine: run alone (scripts/test does)"]
fn engine_stopping_mid_run_ends_the_run_with_an_error() {
    require_engine();
    let child = start_long_run();
    let pid = child.id();
    let stopped = Command::new("pkill")
        .args(["-TERM", "-x", "dockerd"])
        .status()
        .expect("pkill runs");
    assert!(stopped.success(), "dockerd was not running under this name");
    let output = wait_bounded(child, Duration::from_secs(60));
    ensure_engine();
    let _ = Command::new(env!("CARGO_BIN_EXE_packbox"))
        .arg("gc")
        .output();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "stderr: {stderr}");
    let outcome: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON outcome even now");
    assert_eq!(outcome["status"], "error", "{outcome}");
    assert!(
        outcome["error"].as_str().unwrap_or("").contains("engine"),
        "the message names the engine: {outcome}"
    );
    assert!(containers_of(pid).is_empty(), "the orphan was swept");
}

#[test]
fn an_engine_socket_that_refuses_connections_exits_125_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    // Bound, then closed: the file stays and every connection is refused.
    drop(UnixListener::bind(&socket).expect("bind"));
    let packs = example_packs();
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "hello.greet_shell",
        ],
        &[("DOCKER_HOST", &format!("unix://{}", socket.display()))],
    );
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert!(stderr.contains("hint: start the engine"), "{stderr}");
}

#[test]
fn a_packbox_killed_mid_run_leaves_an_orphan_that_the_next_start_removes() {
    require_engine();
    let mut child = start_long_run();
    let pid = child.id();
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        !containers_of(pid).is_empty(),
        "SIGKILL leaves the container behind"
    );
    let next = run_json(&example_packs(), "hello.greet_shell", &[]);
    assert_eq!(next.code(), 0, "{}", next.stderr());
    assert!(
        containers_of(pid).is_empty(),
        "the next packbox start swept the orphan"
    );
}

/// `docker ARGS`, its stdout trimmed; the command must succeed.
fn docker_ok(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Commits an image of product `key` under `tag` (a fresh state folder's build of the same
/// product moves the tag the same way); `nonce` makes it another image.
fn commit_product(key: &str, tag: &str, nonce: &str) -> String {
    let container = docker_ok(&["create", "packbox/base:bookworm", "true"]);
    let image = docker_ok(&[
        "commit",
        "--change",
        "LABEL packbox.managed=true packbox.kind=test-superseded",
        "--change",
        &format!("LABEL packbox.key={key} nonce={nonce}"),
        &container,
        tag,
    ]);
    docker_ok(&["rm", &container]);
    image
}

#[test]
#[ignore = "removes every superseded image at once: run alone, no packbox process beside it (scripts/test does)"]
fn gc_removes_a_superseded_image_at_once_when_told_no_process_runs() {
    require_engine();
    let key = format!("k{}", std::process::id());
    let tag = format!("packbox-test/superseded:{key}");
    let first = commit_product(&key, &tag, "1");
    let second = commit_product(&key, &tag, "2");
    assert_ne!(first, second);
    let exists = |id: &str| {
        Command::new("docker")
            .args(["image", "inspect", id])
            .output()
            .expect("docker runs")
            .status
            .success()
    };
    // By default a superseded image is kept ten minutes (a process may have just verified it).
    let kept = packbox(&["gc", "--json"], &[]);
    assert_eq!(kept.code(), 0, "{}", kept.stderr());
    assert!(exists(&first), "young superseded image kept by default");
    let removed = packbox(&["gc", "--json", "--min-image-age", "0"], &[]);
    assert_eq!(removed.code(), 0, "{}", removed.stderr());
    let report = removed.json();
    assert!(
        report["images"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id == &first)),
        "{report}"
    );
    assert!(!exists(&first), "the superseded image is gone");
    assert!(exists(&second), "the image under the tag stays");
    docker_ok(&["rmi", &tag]);
}
