//! Cancellation reaches environment builds: the first Ctrl-C stops a build within seconds, exits
//! 130 with status `cancelled`, and leaves no tag, no lock and nothing `gc` could not remove; a
//! build timeout does the same.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A python pack whose requirements no earlier build has seen (a fresh comment), so running it
/// starts an environment build.
fn fresh_env_pack(dir: &std::path::Path) -> std::path::PathBuf {
    let pack = copy_pack(&env_packs().join("requests_new"), dir);
    let marker = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    std::fs::write(
        pack.join("requirements.txt"),
        format!("six==1.16.0\n# cancellation test {marker}\n"),
    )
    .expect("write requirements");
    pack
}

/// Starts `packbox run --json` of the fresh pack, waits until its build begins (the tag is
/// printed) and returns the child and the tag.
fn start_build(packs: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_packbox"));
    command
        .args([
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "requests_new.version",
            "--json",
        ])
        .args(extra)
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in build_env() {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("packbox starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let tag = loop {
        let line = lines
            .next()
            .expect("packbox said something before it ended")
            .expect("readable stderr");
        if let Some(tag) = line.strip_prefix("building environment ") {
            break tag.trim().to_string();
        }
    };
    cleanup_image(&tag);
    // Keep draining stderr so packbox never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, tag)
}

fn wait_bounded(child: std::process::Child, bound: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("packbox ends"));
    while !waiter.is_finished() {
        if started.elapsed() > bound {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("packbox did not stop within {} s", bound.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (waiter.join().expect("waiter"), started.elapsed())
}

#[test]
fn the_first_ctrl_c_stops_an_environment_build() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    fresh_env_pack(packs.path());
    let (child, tag) = start_build(packs.path(), &[]);
    let pid = child.id();
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let (output, took) = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(130), "took {took:?}");
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON answer");
    assert_eq!(outcome["status"], "cancelled", "{outcome}");
    assert!(took < Duration::from_secs(15), "stopped in {took:?}");
    assert!(!image_exists(&tag), "no tag for a cancelled build");
    assert!(containers_of(pid).is_empty());
    let locks = state_dir().join("locks");
    let held: Vec<_> = std::fs::read_dir(&locks)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(held.is_empty(), "lock files left: {held:?}");
    // Whatever the engine kept of the interrupted build, gc can remove.
    let gc = packbox(&["gc", "--json"], &[]);
    assert_eq!(gc.code(), 0, "{}", gc.stderr());
}

#[test]
fn a_build_timeout_stops_an_environment_build() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    fresh_env_pack(packs.path());
    let (child, tag) = start_build(packs.path(), &["--build-timeout", "1"]);
    let (output, _) = wait_bounded(child, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(125));
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON answer");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("did not finish within 1 s") && error.contains("--build-timeout"),
        "{outcome}"
    );
    assert!(!image_exists(&tag));
}
