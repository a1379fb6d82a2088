//! A single-node Swarm and the loopback registry, for the swarm backend's tests.
//!
//! The engine is shared with other people's tests, so the Swarm is made only when there is none
//! (`docker swarm init --advertise-addr 127.0.0.1`) and left again only by whoever made it:
//! every test process that uses it registers in `target/test-swarm/users/` for as long as it
//! runs; the last one to leave, if the tests made the Swarm, first checks that no service,
//! secret or network labelled `packbox.managed` is left (a leftover fails the test) and then
//! leaves the Swarm. Registrations of processes that died are dropped. Swarm mode changes
//! nothing for plain containers: other tests keep running as before.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::repo_root;

/// The registry `scripts/ensure-registry` starts.
pub const REGISTRY: &str = "127.0.0.1:5000";

fn folder() -> PathBuf {
    let dir = repo_root().join("target/test-swarm");
    std::fs::create_dir_all(dir.join("users")).expect("test-swarm folder");
    dir
}

/// Holds the Swarm for the test that holds this.
pub struct SwarmUse {
    registration: PathBuf,
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

fn swarm_state() -> String {
    let output = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert!(
        output.status.success(),
        "docker info failed: the engine is required"
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Registrations of processes that are gone are dropped; returns whether any live one is left.
fn others_registered(users: &std::path::Path, me: &std::path::Path) -> bool {
    let mut others = false;
    for entry in std::fs::read_dir(users).expect("users folder").flatten() {
        let path = entry.path();
        if path == me {
            continue;
        }
        let pid = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            others = true;
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    others
}

/// The Swarm for this test: made if there is none, registered for this process.
pub fn use_swarm() -> SwarmUse {
    let dir = folder();
    let lock = File::create(dir.join("lock")).expect("lock file");
    lock.lock().expect("lock");
    let registration = dir.join("users").join(std::process::id().to_string());
    let made_marker = dir.join("made-by-tests");
    if !others_registered(&dir.join("users"), &registration) && swarm_state() == "inactive" {
        let init = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(
            init.status.success(),
            "docker swarm init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        std::fs::write(&made_marker, "").expect("marker");
    }
    assert_eq!(swarm_state(), "active", "the engine is in no Swarm");
    std::fs::write(&registration, "").expect("registration");
    SwarmUse { registration }
}

impl Drop for SwarmUse {
    fn drop(&mut self) {
        // What the test's packbox processes left (when it failed half-way) goes first: services,
        // whose tasks hold the rest, then networks and secrets.
        for pid in super::packbox_pids() {
            let filter = format!("label=packbox.owner_pid={pid}");
            for kind in ["service", "network", "secret"] {
                let listed = docker(&[kind, "ls", "-q", "--filter", &filter]);
                for id in String::from_utf8_lossy(&listed.stdout).lines() {
                    let _ = docker(&[kind, "rm", id]);
                }
            }
        }
        let dir = folder();
        let Ok(lock) = File::create(dir.join("lock")) else {
            return;
        };
        if lock.lock().is_err() {
            return;
        }
        let _ = std::fs::remove_file(&self.registration);
        let made_marker = dir.join("made-by-tests");
        if others_registered(&dir.join("users"), &self.registration) || !made_marker.exists() {
            return;
        }
        // The last user of a Swarm the tests made: nothing of packbox may be left on it.
        let left = managed_swarm_objects();
        let _ = docker(&["swarm", "leave", "--force"]);
        let _ = std::fs::remove_file(&made_marker);
        remove_test_pack_images();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("packbox left Swarm objects behind: {left:?}");
        }
    }
}

/// The packs of the test fixtures that swarm runs turn into pack images.
const TEST_PACKS: [&str; 3] = ["contract", "swarmcheck", "bench"];

/// Removes the pack images (and their registry tags) the tests' swarm runs made: done by the
/// last user only, since a test running beside another may use the same image.
fn remove_test_pack_images() {
    for pack in TEST_PACKS {
        let listed = docker(&[
            "images",
            "--filter",
            "label=packbox.kind=pack-image",
            "--filter",
            &format!("label=packbox.pack={pack}"),
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]);
        for image in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = docker(&["rmi", image]);
        }
    }
}

/// Every service, secret and network labelled `packbox.managed=true`, as `kind name`.
pub fn managed_swarm_objects() -> Vec<String> {
    objects_with_label("packbox.managed=true")
}

/// The services, secrets and networks a packbox process made and left, as `kind name`.
pub fn swarm_objects_of(pid: u32) -> Vec<String> {
    objects_with_label(&format!("packbox.owner_pid={pid}"))
}

fn objects_with_label(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut found = Vec::new();
    for kind in ["service", "secret", "network"] {
        // Local networks (egress grants' per-run networks of packbox processes still running
        // beside the Swarm tests) are not Swarm objects.
        let mut args = vec![kind, "ls", "--filter", &filter, "--format", "{{.Name}}"];
        if kind == "network" {
            args.extend(["--filter", "scope=swarm"]);
        }
        let output = docker(&args);
        assert!(output.status.success(), "docker {kind} ls failed");
        found.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|name| format!("{kind} {name}")),
        );
    }
    found
}

/// Asserts that a packbox process left no service, secret or network, and that the Swarm
/// removed its task containers (it does so shortly after the service is gone; waited for,
/// bounded).
pub fn assert_no_swarm_leftovers(pid: u32) {
    let left = swarm_objects_of(pid);
    assert!(left.is_empty(), "Swarm objects left behind: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let containers = super::containers_of(pid);
        if containers.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task containers left behind: {containers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fails the test unless the loopback registry answers (`scripts/ensure-registry` starts it).
pub fn require_registry() {
    let answered = Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("http://{REGISTRY}/v2/")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        answered,
        "no registry answers on {REGISTRY}: these tests need it (run scripts/ensure-registry)"
    );
}

/// Waits (at most a minute) until the packbox process `pid` has a service; returns its name.
pub fn wait_for_service(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = docker(&[
            "service",
            "ls",
            "--filter",
            &format!("label=packbox.owner_pid={pid}"),
            "--format",
            "{{.Name}}",
        ]);
        if let Some(name) = String::from_utf8_lossy(&output.stdout).lines().next() {
            return name.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no service of packbox {pid} appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (at most a minute) until a service's task runs.
pub fn wait_for_running_task(service: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = docker(&["service", "ps", service, "--format", "{{.CurrentState}}"]);
        if String::from_utf8_lossy(&output.stdout).starts_with("Running") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the task of service {service} never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
