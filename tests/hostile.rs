//! Hostile actions: one attack per action of the `hostile` fixture pack. For each, the expected
//! status, packbox answers (the run ends), the host is untouched and nothing is left behind.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A private copy of the hostile pack, with a host marker beside it that no action may read.
struct Arena {
    _dir: tempfile::TempDir,
    packs: PathBuf,
}

impl Arena {
    fn new() -> Arena {
        let dir = tempfile::tempdir().expect("tempdir");
        let packs = dir.path().join("packs");
        std::fs::create_dir(&packs).expect("mkdir");
        copy_pack(&fixture_root().join("hostile"), &packs);
        std::fs::write(packs.join("host-marker"), "host secret marker").expect("marker");
        Arena { _dir: dir, packs }
    }

    fn run(&self, action: &str) -> (Finished, Value) {
        let run = run_json(&self.packs, &format!("hostile.{action}"), &[]);
        let outcome = run.json();
        assert_no_leftovers(&run);
        self.assert_host_untouched();
        (run, outcome)
    }

    /// The pack on the host is exactly as copied, and the marker beside it unchanged.
    fn assert_host_untouched(&self) {
        let marker = std::fs::read_to_string(self.packs.join("host-marker")).expect("marker");
        assert_eq!(marker, "host secret marker");
        let pack_files = files_under(&self.packs.join("hostile"));
        let fixture_files = files_under(&fixture_root().join("hostile"));
        assert_eq!(pack_files, fixture_files, "the pack folder changed");
    }
}

fn fixture_root() -> PathBuf {
    repo_root().join("tests/fixtures")
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn fork_bomb_is_capped_by_the_pids_limit_and_ended_by_the_timeout() {
    require_engine();
    let arena = Arena::new();
    let bomb = std::thread::spawn(move || arena.run("fork_bomb"));
    // While the bomb runs, packbox and the engine still serve other runs.
    wait_for_running(&["label=packbox.action=hostile.fork_bomb".to_string()]);
    let other = run_json(&example_packs(), "hello.greet_shell", &[]);
    assert_eq!(
        other.code(),
        0,
        "a run beside the fork bomb: {}",
        other.stderr()
    );
    let (run, outcome) = bomb.join().expect("fork bomb run");
    assert_eq!(outcome["status"], "timeout", "{outcome}");
    assert_eq!(run.code(), 124);
    assert_eq!(outcome["error"], "Execution timed out after 5 seconds");
}

#[test]
fn memory_hog_is_killed_as_oom() {
    require_engine();
    let (run, outcome) = Arena::new().run("memory_hog");
    assert_eq!(outcome["status"], "oom", "{outcome}");
    assert_eq!(run.code(), 137);
    assert!(outcome["result"].is_null(), "it never printed its report");
}

#[test]
fn filling_tmp_stops_at_the_tmpfs_size() {
    require_engine();
    let (_, outcome) = Arena::new().run("fill_tmp");
    let written = outcome["result"]["written_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let limit = outcome["sandbox"]["tmpfs_tmp_bytes"].as_u64().unwrap_or(0);
    assert!(
        written <= limit,
        "wrote {written} bytes into a {limit}-byte /tmp: {outcome}"
    );
}

#[test]
fn endless_output_is_bounded_and_timed_out() {
    require_engine();
    let (run, outcome) = Arena::new().run("endless_output");
    assert_eq!(outcome["status"], "timeout", "{}", run.stderr());
    assert_eq!(outcome["stdout_truncated"], true);
    assert_eq!(outcome["stderr_truncated"], true);
    let stdout = outcome["stdout"].as_str().unwrap_or("");
    assert!(
        stdout.len() <= (10 << 20) + 100,
        "stdout kept {} bytes",
        stdout.len()
    );
    assert!(stdout.ends_with("[OUTPUT TRUNCATED: stdout exceeded size limit]\n"));
}

#[test]
fn writes_to_pack_and_root_are_refused() {
    require_engine();
    let (_, outcome) = Arena::new().run("write_everywhere");
    let result = outcome["result"].as_object().cloned().unwrap_or_default();
    assert_eq!(result.len(), 5, "{outcome}");
    for (path, answer) in result {
        let answer = answer.as_str().unwrap_or("");
        assert!(answer.contains("Read-only file system"), "{path}: {answer}");
    }
}

#[test]
fn the_network_is_off() {
    require_engine();
    let (_, outcome) = Arena::new().run("network_off");
    let result = &outcome["result"];
    assert_eq!(result["interfaces"], serde_json::json!(["lo"]), "{outcome}");
    assert_ne!(result["connect"], "connected");
    assert_eq!(outcome["sandbox"]["network"], "none");
}

#[test]
fn host_files_and_the_docker_socket_are_out_of_reach() {
    require_engine();
    let (_, outcome) = Arena::new().run("host_files");
    let result = &outcome["result"];
    assert!(
        result["socket"]
            .as_str()
            .unwrap_or("")
            .contains("No such file"),
        "{result}"
    );
    assert_eq!(result["marker"], "", "the host marker must not be readable");
    assert_eq!(result["tmp"], "", "/tmp starts empty (a fresh tmpfs)");
    let devices = result["devices"].as_str().unwrap_or("");
    for device in ["sda", "vda", "nvme0n1", "mem", "kmsg"] {
        assert!(
            !devices.lines().any(|d| d == device),
            "{device} visible: {devices}"
        );
    }
    let mounts = result["mounts"].as_str().unwrap_or("");
    assert!(!mounts.contains("docker.sock"), "{mounts}");
}

#[test]
fn mount_ptrace_and_raw_sockets_stay_inside_the_container() {
    require_engine();
    let (_, outcome) = Arena::new().run("privileged_calls");
    let result = &outcome["result"];
    assert_ne!(result["mount"]["exit"], 0, "{result}");
    assert!(
        result["raw_socket"]
            .as_str()
            .unwrap_or("")
            .contains("Operation not permitted"),
        "{result}"
    );
    // ptrace reaches only the action's own processes: its PID namespace holds nothing else.
    let pids = result["visible_pids"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(99);
    assert!(
        pids <= 3,
        "only the container's own processes are visible: {result}"
    );
}

#[test]
fn setuid_binaries_grant_no_privileges() {
    require_engine();
    let (_, outcome) = Arena::new().run("setuid");
    let result = &outcome["result"];
    assert_eq!(result["uid"], "65534", "{result}");
    assert_eq!(result["no_new_privs"], "1");
    assert_eq!(result["cap_eff"], "0000000000000000");
    assert!(
        result["setuid_files"]
            .as_str()
            .unwrap_or("")
            .contains("/usr/bin/mount"),
        "the image does hold setuid binaries: {result}"
    );
    assert!(
        result["mount"]
            .as_str()
            .unwrap_or("")
            .contains("must be superuser"),
        "{result}"
    );
}

#[test]
fn a_secret_is_nowhere_but_on_stdin() {
    require_engine();
    let arena = Arena::new();
    let secret = "hunt-me-5b0c1e9f";
    let run = run_json(
        &arena.packs,
        "hostile.secret_hunt",
        &["--secret", &format!("api_key={secret}")],
    );
    assert_no_leftovers(&run);
    arena.assert_host_untouched();
    let outcome = run.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(
        outcome["result"]["secret_length"],
        secret.len(),
        "it got the secret"
    );
    assert_eq!(
        outcome["result"]["found"],
        serde_json::json!([]),
        "{outcome}"
    );
}
