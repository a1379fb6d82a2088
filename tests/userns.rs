//! User namespaces: under an engine started with `--userns-remap`, uid 0 in a container is an
//! unprivileged uid on the host (100000 here). Shown on real engines (Docker-in-Docker): an action
//! run as root (`--user 0:0`, which needs `--allow-weaker-sandbox`) is looked up from the host's
//! /proc while it runs. The same action on an engine without the remap is uid 0 on the host: the
//! control that shows what the remap changes. (scripts/test also runs the whole hostile suite on
//! the remapped engine.)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::dind::{Dind, Flavour};
use common::*;

/// What the host sees of a process: its real uid and its uid map.
struct HostView {
    uid: u32,
    uid_map: String,
}

/// Waits (bounded) for a process whose argv[0] is `name`; reads its uid from the host's /proc.
fn find_on_host(name: &str, deadline: Instant) -> HostView {
    loop {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let path = entry.path();
            let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
                continue;
            };
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            if argv0 != name.as_bytes() {
                continue;
            }
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse().ok())
                .expect("a Uid line");
            let uid_map = std::fs::read_to_string(path.join("uid_map")).unwrap_or_default();
            return HostView { uid, uid_map };
        }
        assert!(Instant::now() < deadline, "no process {name} appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the lingering action as root on `dind`, looks at it from the host, and lets the run's
/// timeout end it. Returns the host's view and the finished packbox.
fn root_action_seen_from_the_host(dind: &Dind) -> (HostView, Finished) {
    let packs = repo_root().join("tests/fixtures/userns");
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let packs_arg = packs.to_string_lossy().into_owned();
    let marker_arg = format!("marker={marker}");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_packbox"));
    command
        .args([
            "run",
            "--packs",
            &packs_arg,
            "idmap.linger",
            "--json",
            "-p",
            &marker_arg,
            "--user",
            "0:0",
            "--allow-weaker-sandbox",
            "--timeout",
            "20",
        ])
        .envs(dind.env())
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("packbox starts");
    let pid = child.id();
    let seen = find_on_host(
        &format!("idmap-{marker}"),
        Instant::now() + Duration::from_secs(20),
    );
    let output = child.wait_with_output().expect("packbox ends");
    (seen, Finished { output, pid })
}

fn assert_timed_out_cleanly(dind: &Dind, run: &Finished) {
    assert_eq!(run.code(), 124, "{}", run.stderr());
    assert_eq!(run.json()["status"], "timeout");
    let left = dind.containers_labelled(&format!("packbox.owner_pid={}", run.pid));
    assert!(left.is_empty(), "containers left: {left:?}");
}

#[test]
fn root_in_a_container_is_an_unprivileged_uid_on_the_host_under_userns_remap() {
    let dind = Dind::acquire(Flavour::UsernsRemap);
    let info = dind.docker_ok(&["info", "--format", "{{.SecurityOptions}}"]);
    assert!(info.join(" ").contains("userns"), "{info:?}");
    let (seen, run) = root_action_seen_from_the_host(&dind);
    assert_eq!(seen.uid, 100_000, "uid 0 inside is 100000 on the host");
    let map: Vec<&str> = seen.uid_map.split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{}", seen.uid_map);
    assert_timed_out_cleanly(&dind, &run);
}

#[test]
fn without_the_remap_root_in_a_container_is_root_on_the_host() {
    let dind = Dind::acquire(Flavour::Plain);
    let (seen, run) = root_action_seen_from_the_host(&dind);
    assert_eq!(seen.uid, 0, "the control: no remap, root is root");
    assert_timed_out_cleanly(&dind, &run);
}

#[test]
fn the_sandbox_holds_under_userns_remap() {
    let dind = Dind::acquire(Flavour::UsernsRemap);
    let hostile = repo_root().join("tests/fixtures/hostile");
    let packs = tempfile::tempdir().expect("tempdir");
    copy_pack(&hostile, packs.path());
    let run = |action: &str| {
        let packs = packs.path().to_string_lossy().into_owned();
        let run = dind.packbox(
            &[
                "run",
                "--packs",
                &packs,
                &format!("hostile.{action}"),
                "--json",
            ],
            &[],
        );
        let left = dind.containers_labelled(&format!("packbox.owner_pid={}", run.pid));
        assert!(left.is_empty(), "containers left: {left:?}");
        run.json()
    };
    let setuid = run("setuid");
    assert_eq!(setuid["result"]["uid"], "65534", "{setuid}");
    assert_eq!(setuid["result"]["cap_eff"], "0000000000000000");
    let writes = run("write_everywhere");
    for (path, answer) in writes["result"].as_object().cloned().unwrap_or_default() {
        assert!(
            answer
                .as_str()
                .unwrap_or("")
                .contains("Read-only file system"),
            "{path}: {answer}"
        );
    }
    let memory = run("memory_hog");
    assert_eq!(memory["status"], "oom", "{memory}");
    assert!(Path::new(&hostile).is_dir());
}
