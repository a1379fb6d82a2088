//! Podman as packbox's engine, rootful and rootless: what the engine is said to be, the limits
//! measured inside the container (or the refusal naming them), the user the action runs as on
//! the host, images built on Podman from the catalog's recipes and the environment recipe
//! (buildah behind Podman's build endpoint, no registry), and images copied between Docker and
//! Podman.
//!
//! These need a Podman engine: `scripts/test` runs them on each Podman mode with `DOCKER_HOST`
//! at its socket and `PACKBOX_TEST_ENGINE` naming it (`cargo nextest run --test podman
//! --run-ignored only`); on Docker they are ignored.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

const NEEDS_PODMAN: &str = "run by scripts/test on rootful and rootless Podman";

fn podman_packs() -> PathBuf {
    repo_root().join("tests/fixtures/podman")
}

/// The test runs on Podman, as `PACKBOX_TEST_ENGINE` says and the engine confirms.
fn require_podman() {
    require_engine();
    assert!(
        engine::is_podman(),
        "these tests need PACKBOX_TEST_ENGINE=podman-rootful or podman-rootless ({NEEDS_PODMAN})"
    );
    let version = Command::new("docker")
        .args(["version", "--format", "{{json .Server.Components}}"])
        .output()
        .expect("docker version runs");
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("Podman Engine"),
        "DOCKER_HOST is not a Podman engine"
    );
}

fn limits(args: &[&str]) -> Finished {
    run_json(&podman_packs(), "podmancheck.limits", args)
}

#[test]
#[ignore = "needs Podman: run by scripts/test on rootful and rootless Podman"]
fn doctor_names_podman_and_its_mode() {
    require_podman();
    let doctor = packbox(&["doctor", "--json"], &[]);
    let report = doctor.json();
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let engine = checks
        .iter()
        .find(|c| c["name"] == "engine")
        .cloned()
        .unwrap_or(Value::Null);
    let (_, mode) = engine::expected();
    let summary = engine["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("Podman 4.") && summary.contains(&format!("({mode})")),
        "{engine}"
    );
    if engine::drops_limits() {
        assert_eq!(engine["status"], "warn", "{engine}");
        assert!(
            engine["next_step"]
                .as_str()
                .unwrap_or_default()
                .contains("cgroup v2"),
            "{engine}"
        );
    } else {
        assert_eq!(engine["status"], "ok", "{engine}");
    }
}

#[test]
#[ignore = "needs Podman: run by scripts/test on rootful and rootless Podman"]
fn limits_hold_inside_the_container_or_the_run_is_refused() {
    require_podman();
    let asked = [
        "--memory", "96m", "--pids", "48", "--nofile", "512", "--cpus", "0.5",
    ];
    let run = limits(&asked);
    if engine::drops_limits() {
        // Rootless Podman on cgroup v1 drops every limit: refused, each named, nothing left.
        engine::assert_refused_for_limits(&run);
        // With the operator's consent it runs, and what the action sees says why consent was
        // needed: no memory or process limit, the engine's own open-file limit.
        let mut weaker = asked.to_vec();
        weaker.push("--allow-weaker-sandbox");
        let run = limits(&weaker);
        assert_eq!(run.code(), 0, "{}", run.stderr());
        let outcome = run.json();
        engine::assert_outcome_engine(&outcome);
        let seen = &outcome["result"];
        assert_ne!(seen["memory"], (96u64 << 20).to_string(), "{seen}");
        assert_ne!(seen["pids"], "48", "{seen}");
        assert_ne!(seen["nofile"], "512", "{seen}");
        assert_no_leftovers(&run);
        return;
    }
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    engine::assert_outcome_engine(&outcome);
    assert_eq!(
        outcome["sandbox"]["weaker_than_default"],
        serde_json::json!([])
    );
    let seen = &outcome["result"];
    assert_eq!(seen["memory"], (96u64 << 20).to_string(), "{seen}");
    // memory plus swap equals memory: no swap (v1 file; on v2 memory.swap.max is 0).
    assert!(
        seen["memsw"].as_str() == Some(&*(96u64 << 20).to_string()) || seen["memsw"] == "0",
        "{seen}"
    );
    assert_eq!(seen["pids"], "48", "{seen}");
    assert_eq!(seen["nofile"], "512", "{seen}");
    assert_no_leftovers(&run);
}

#[test]
#[ignore = "needs Podman: run by scripts/test on rootful and rootless Podman"]
fn the_action_is_uid_65534_inside_and_a_mapped_uid_on_the_host() {
    require_podman();
    let packs = podman_packs();
    let mut args = vec![
        "run",
        "--packs",
        packs.to_str().expect("utf-8 path"),
        "podmancheck.limits",
        "--json",
        "-p",
        "sleep=4",
    ];
    args.extend(engine::run_flags());
    let child = spawn_packbox(&args);
    let container = wait_for_running(&[format!("label=packbox.owner_pid={}", child.id())]);
    let pid = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Pid}}", &container])
        .output()
        .expect("docker inspect");
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let host_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let output = child.wait_with_output().expect("packbox ends");
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let seen = &outcome["result"];
    assert_eq!(seen["uid"], "65534", "{seen}");
    let (_, mode) = engine::expected();
    if mode == "rootful" {
        // No user namespace: nobody inside is nobody on the host.
        assert_eq!(host_uid, "65534", "{status}");
        assert_eq!(seen["uid_map"], " 0 0 4294967295", "{seen}");
        return;
    }
    // Rootless: the container's root is the service's user, 1-65536 its subordinate ids, so
    // nobody (65534) is the 65534th subordinate id on the host, never a real user.
    let map = seen["uid_map"].as_str().unwrap_or_default();
    let sub_start = map
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"1"))
        .and_then(|fields| fields.get(1).and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or_else(|| panic!("no subordinate range in the map: {map}"));
    assert_eq!(
        host_uid,
        (sub_start + 65533).to_string(),
        "{status} / {map}"
    );
}

#[test]
#[ignore = "needs Podman: run by scripts/test on rootful and rootless Podman"]
fn an_environment_build_on_podman_is_refused_before_any_step() {
    require_podman();
    // A manifest of its own, so no image built elsewhere answers for it.
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("requests_new"), packs.path());
    let requirements = pack.join("requirements.txt");
    let text = std::fs::read_to_string(&requirements).expect("read");
    std::fs::write(
        &requirements,
        format!("{text}# podman test {}\n", uuid::Uuid::new_v4()),
    )
    .expect("write");
    let mut args = engine::run_flags();
    args.push("--timeout");
    args.push("60");
    let run = run_building(packs.path(), "requests_new.version", &args);
    // A build's network cannot be limited to packbox's egress proxy there (the host has an
    // address on every Podman network): refused before any step, nothing left.
    assert!(engine::refuses_builds());
    engine::assert_build_refused(&run);
}

/// `docker` against another engine than the tests' own.
fn docker_at(host: &str, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .expect("docker runs")
}

const DOCKER: &str = "unix:///var/run/docker.sock";

#[test]
#[ignore = "needs Podman: run by scripts/test on rootful and rootless Podman"]
fn a_runtime_image_builds_on_podman_from_its_recipe_and_copies_back_to_docker() {
    require_podman();
    let podman = std::env::var("DOCKER_HOST").expect("DOCKER_HOST names the Podman engine");
    // The recipe's base comes from Docker, streamed by packbox (no registry).
    let base = "packbox/base:bookworm";
    let copy = packbox(
        &["images", "copy", "--to", &podman, base],
        &[("DOCKER_HOST", DOCKER)],
    );
    assert_eq!(copy.code(), 0, "{}", copy.stderr());
    // The built-in shell recipe under a test tag of its own, built on Podman.
    let catalog = tempfile::tempdir().expect("tempdir");
    let tag = format!(
        "packbox-test/shell-podman:{}",
        uuid::Uuid::new_v4().simple()
    );
    std::fs::create_dir(catalog.path().join("shell")).expect("mkdir");
    std::fs::copy(
        repo_root().join("images/shell/Dockerfile"),
        catalog.path().join("shell/Dockerfile"),
    )
    .expect("copy the recipe");
    let runtime = std::fs::read_to_string(repo_root().join("images/runtimes/shell.yaml"))
        .expect("read")
        .replace("packbox/shell:5.2", &tag);
    std::fs::write(catalog.path().join("shell.yaml"), runtime).expect("write");
    cleanup_image(&tag);
    let catalog_dir = catalog.path().to_string_lossy().into_owned();
    let build = packbox(
        &["--catalog", &catalog_dir, "images", "build"],
        &[("PACKBOX_RUNTIMES", "shell")],
    );
    assert_eq!(build.code(), 0, "{}", build.stderr());
    assert!(image_exists(&tag), "{tag} was built on Podman");
    let verify = packbox(
        &["--catalog", &catalog_dir, "runtimes", "verify", "--json"],
        &[("PACKBOX_RUNTIMES", "shell")],
    );
    assert!(
        verify.stdout().contains("5.2."),
        "its bash was probed: {}",
        verify.stdout()
    );
    // And back to Docker, same image id.
    let back = packbox(&["images", "copy", "--to", DOCKER, &tag], &[]);
    let on_docker = docker_at(DOCKER, &["image", "inspect", "--format", "{{.Id}}", &tag]);
    let _ = docker_at(DOCKER, &["rmi", "-f", &tag]);
    assert_eq!(back.code(), 0, "{}", back.stderr());
    let here = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .expect("docker image inspect");
    let id = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .trim_start_matches("sha256:")
            .to_string()
    };
    assert!(on_docker.status.success(), "{tag} reached Docker");
    assert_eq!(id(&on_docker), id(&here), "the same image on both engines");
    remove_image(&tag);
}
