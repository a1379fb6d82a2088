//! Helpers shared by the integration tests: the packbox binary, the real engine, leftovers.
//!
//! The engine is required: a test that cannot reach it fails, it never skips.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

pub mod cluster;
pub mod dind;
pub mod engine;
pub mod server;
pub mod swarm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example packs shipped with packbox.
pub fn example_packs() -> PathBuf {
    repo_root().join("examples/packs")
}

/// The test fixture packs.
pub fn fixture_packs() -> PathBuf {
    repo_root().join("tests/fixtures/packs")
}

/// A finished `packbox` process: its output and the pid it ran as (its containers carry it).
pub struct Finished {
    pub output: Output,
    pub pid: u32,
}

impl Finished {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// stdout parsed as one JSON document (for `--json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            )
        })
    }
}

thread_local! {
    /// This test's own state folder (each test runs on its own thread, and with nextest in its
    /// own process), removed when the test ends.
    static STATE_DIR: tempfile::TempDir = seeded_state_dir();
    /// What this test made on the engine, removed when the test ends, passed or failed.
    static CLEANUP: Cleanup = Cleanup::default();
}

/// Removes, when the test's thread ends, every container of the packbox processes the test ran
/// and the images it registered: leftovers never outlive a failing test.
#[derive(Default)]
struct Cleanup {
    pids: std::cell::RefCell<Vec<u32>>,
    images: std::cell::RefCell<Vec<String>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in self.pids.borrow().iter() {
            for id in containers_of(*pid) {
                let _ = Command::new("docker").args(["rm", "-f", &id]).output();
            }
        }
        for image in self.images.borrow().iter() {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// Registers an image the test made, to be removed when the test ends, passed or failed.
pub fn cleanup_image(name: &str) {
    CLEANUP.with(|c| c.images.borrow_mut().push(name.to_string()));
}

fn cleanup_containers_of(pid: u32) {
    CLEANUP.with(|c| c.pids.borrow_mut().push(pid));
}

/// The packbox processes this test ran so far.
pub fn packbox_pids() -> Vec<u32> {
    CLEANUP.with(|c| c.pids.borrow().clone())
}

/// The state folder of the running test: its own, seeded with a probe cache so that tests do
/// not each pay for probing every runtime image.
pub fn state_dir() -> PathBuf {
    STATE_DIR.with(|dir| dir.path().to_path_buf())
}

/// A state folder of its own (a test that starts several servers), seeded like `state_dir`.
pub fn fresh_state_dir() -> tempfile::TempDir {
    seeded_state_dir()
}

/// A new state folder holding a copy of the shared probe cache (made once, under a lock, by
/// `packbox runtimes verify`; a stale entry only costs a probe, since entries are keyed by
/// image id).
fn seeded_state_dir() -> tempfile::TempDir {
    let seed = repo_root().join("target/test-state-seed");
    std::fs::create_dir_all(&seed).expect("seed folder");
    let lock = std::fs::File::create(seed.join("seed.lock")).expect("seed lock");
    lock.lock().expect("lock the seed");
    let cache = seed.join("probes.json");
    if !cache.is_file() {
        let status = Command::new(env!("CARGO_BIN_EXE_packbox"))
            .args(["runtimes", "verify", "--json"])
            .env("PACKBOX_STATE_DIR", &seed)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("packbox runtimes verify runs");
        assert!(status.success(), "seeding the probe cache failed");
    }
    let dir = tempfile::tempdir().expect("a state folder");
    std::fs::copy(&cache, dir.path().join("probes.json")).expect("copy the probe cache");
    // One record of what packbox made for every test: images one test built are packbox's
    // for the next, as for processes sharing a state folder (the record is appended to, so a
    // link to one file is shared safely).
    std::os::unix::fs::symlink(seed.join("owned"), dir.path().join("owned"))
        .expect("link the shared record of what packbox made");
    dir
}

/// Settings for library tests: the environment's, with this test's own state folder.
pub fn settings() -> packbox::Settings {
    let mut layer = packbox::SettingsLayer::default();
    layer.state_dir = Some(state_dir());
    packbox::Settings::resolve(layer, None, &packbox::Environment::capture()).expect("settings")
}

/// Runs the packbox binary with the given arguments and environment (and this test's state
/// folder, unless `env` names one).
pub fn packbox(args: &[&str], env: &[(&str, &str)]) -> Finished {
    packbox_in(&repo_root(), args, env)
}

/// [`packbox`], run from the folder `cwd`.
pub fn packbox_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_packbox"));
    command.current_dir(cwd).args(args);
    command.env("PACKBOX_STATE_DIR", state_dir());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the packbox binary starts");
    let pid = child.id();
    cleanup_containers_of(pid);
    let output = child.wait_with_output().expect("packbox finishes");
    Finished { output, pid }
}

/// `packbox run --packs DIR ACTION --json ARGS...`
pub fn run_json(packs: &Path, action: &str, args: &[&str]) -> Finished {
    let packs = packs.to_string_lossy().into_owned();
    let mut all = vec!["run", "--packs", packs.as_str(), action, "--json"];
    all.extend_from_slice(args);
    packbox(&all, &[])
}

/// The OCI runtime packbox picks when none is named, as the outcome's `sandbox.oci_runtime`
/// says it: crun where a Docker engine offers it (and it is not already the engine's default),
/// else null (the engine's default; always on Podman, which ignores the runtime a container
/// names).
pub fn default_oci_runtime() -> serde_json::Value {
    if engine::is_podman() {
        return serde_json::Value::Null;
    }
    let info = |format: &str| {
        Command::new("docker")
            .args(["info", "--format", format])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let offers_crun = info("{{json .Runtimes}}").contains("\"crun\"");
    if offers_crun && info("{{.DefaultRuntime}}") != "crun" {
        serde_json::json!("crun")
    } else {
        serde_json::Value::Null
    }
}

/// Fails the test unless the engine answers: the suite must not pass without one.
pub fn require_engine() {
    let answered = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        answered,
        "the Docker engine does not answer: these tests need it (run scripts/ensure-docker)"
    );
}

/// Ids of the containers (running or not) that the packbox process `pid` created and left.
pub fn containers_of(pid: u32) -> Vec<String> {
    docker_ps(&["-aq", "--filter", &format!("label=packbox.owner_pid={pid}")])
}

/// The lines `docker ps` prints with these options.
pub fn docker_ps(options: &[&str]) -> Vec<String> {
    let output = Command::new("docker")
        .arg("ps")
        .args(options)
        .output()
        .expect("docker ps runs");
    assert!(output.status.success(), "docker ps failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that a finished packbox process left no container behind.
pub fn assert_no_leftovers(finished: &Finished) {
    let left = containers_of(finished.pid);
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// The pack-format fixtures: packs that must validate and run.
pub fn format_packs() -> PathBuf {
    repo_root().join("tests/fixtures/formats")
}

/// The pack-format fixtures that are broken on purpose.
pub fn broken_format_packs() -> PathBuf {
    repo_root().join("tests/fixtures/formats-broken")
}

/// `packbox` with string arguments built at run time.
pub fn packbox_owned(args: &[String], env: &[(&str, &str)]) -> Finished {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    packbox(&args, env)
}

/// Seconds since the epoch, as the engine's event filters take them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Events the engine logged between `since` and now, filtered (`type=container`, ...), each
/// printed with a Go template.
pub fn engine_events(since: u64, filters: &[String], format: &str) -> Vec<String> {
    let mut args = vec![
        "events".to_string(),
        "--since".to_string(),
        since.to_string(),
        "--until".to_string(),
        (unix_now() + 1).to_string(),
        "--format".to_string(),
        format.to_string(),
    ];
    for filter in filters {
        args.push("--filter".into());
        args.push(filter.clone());
    }
    let output = Command::new("docker")
        .args(&args)
        .output()
        .expect("docker events runs");
    assert!(output.status.success(), "docker events failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many containers the packbox process `pid` created between `since` and now, counted from
/// the engine's own event log (so containers already removed are counted too).
pub fn containers_created_by(pid: u32, since: u64) -> usize {
    let filters = [
        "type=container".to_string(),
        "event=create".to_string(),
        format!("label=packbox.owner_pid={pid}"),
    ];
    engine_events(since, &filters, "{{.ID}}").len()
}

/// The environment-image fixture packs.
pub fn env_packs() -> PathBuf {
    repo_root().join("tests/fixtures/envs")
}

/// The machine's CA bundle, which pip and npm need behind this network's TLS interception.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Environment for packbox processes that may build environment images.
pub fn build_env() -> Vec<(&'static str, &'static str)> {
    if Path::new(CA_BUNDLE).is_file() {
        vec![("PACKBOX_BUILD_CA_BUNDLE", CA_BUNDLE)]
    } else {
        Vec::new()
    }
}

/// `packbox run --packs DIR ACTION --json` with the build environment.
pub fn run_building(packs: &Path, action: &str, args: &[&str]) -> Finished {
    let packs = packs.to_string_lossy().into_owned();
    let mut all = vec!["run", "--packs", packs.as_str(), action, "--json"];
    all.extend_from_slice(args);
    packbox(&all, &build_env())
}

/// Copies a fixture pack folder into `dest` (which becomes `dest/<name>`).
pub fn copy_pack(source: &Path, dest: &Path) -> PathBuf {
    let name = source.file_name().expect("a pack folder name");
    let target = dest.join(name);
    let status = Command::new("cp")
        .arg("-r")
        .arg(source)
        .arg(&target)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying {} failed", source.display());
    target
}

/// Whether the engine has an image by that name.
pub fn image_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes an image a test made (best effort).
pub fn remove_image(name: &str) {
    let _ = Command::new("docker").args(["rmi", "-f", name]).output();
}

/// Starts the packbox binary with stdout and stderr piped, without waiting for it.
pub fn spawn_packbox(args: &[&str]) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_packbox"))
        .args(args)
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the packbox binary starts");
    cleanup_containers_of(child.id());
    child
}

/// Waits (at most a minute) until a container matching every filter (`label=...`) runs;
/// returns its id.
pub fn wait_for_running(filters: &[String]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut args = vec!["ps".to_string(), "-q".to_string()];
        for filter in filters {
            args.push("--filter".into());
            args.push(filter.clone());
        }
        args.push("--filter".into());
        args.push("status=running".into());
        let output = Command::new("docker")
            .args(&args)
            .output()
            .expect("docker ps");
        if let Some(id) = String::from_utf8_lossy(&output.stdout).lines().next() {
            return id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running container matched {filters:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits, at most `within`, until `condition` holds, checking every 100 ms; panics naming `what`
/// when it never does. Tests wait for the condition they check, never assert at an instant the
/// product does not promise.
pub fn wait_until(what: &str, within: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not so after {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits (at most a minute) until the packbox process `pid` has a running action container
/// (`packbox.kind=run`: never one of its probes or builds, which come and go); returns its id.
pub fn wait_for_container(pid: u32) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let output = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=packbox.owner_pid={pid}"),
                "--filter",
                "label=packbox.kind=run",
            ])
            .output()
            .expect("docker ps runs");
        assert!(output.status.success(), "docker ps failed");
        if let Some(id) = String::from_utf8_lossy(&output.stdout).lines().next() {
            return id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running action container of packbox {pid} appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
