//! A multi-node Swarm for tests, made of Docker-in-Docker engines only (a manager and two
//! workers on a network of their own, with a plain and a TLS registry every node reaches under
//! one name), by `scripts/test-swarm cluster`. It never touches the host engine's own Swarm, so
//! other people's tests on the shared engine see nothing of it but its containers.
//!
//! Bringing it up takes about 30 s on a quiet machine, so the tests of a run share it: each test
//! holds a lease (released on drop, even when the test panics; a lease whose process died
//! counts as released), and `scripts/test` holds one for the whole run. Tests that break a node
//! (kill it, cut it off its registry) hold the cluster alone: they take a lock that the others
//! take shared, and a guard puts the node right again whatever happens.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Finished, packbox_owned, repo_root};

/// A lease on the running cluster; released on drop.
pub struct Cluster {
    name: String,
    lease: String,
    env: Vec<(String, String)>,
    /// Node names (also their hostnames, as the Swarm reports them).
    pub manager: String,
    pub workers: Vec<String>,
    /// `HOST:PORT` of the plain registry, the same for every node.
    pub registry: String,
    /// `HOST:PORT` of the TLS registry (its CA trusted by every node through certs.d).
    pub tls_registry: String,
    _lock: File,
}

static LEASES: AtomicUsize = AtomicUsize::new(0);

/// One cluster per checkout, so that worktrees testing at once do not share:
/// `c-<first 8 hex digits of the SHA-256 of the checkout's path>`, which scripts/test computes
/// the same way to hold it for a whole run.
pub fn cluster_name() -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(repo_root().to_string_lossy().as_bytes());
    format!("c-{}", &hex::encode(digest)[..8])
}

fn test_swarm(args: &[&str]) -> Output {
    Command::new(repo_root().join("scripts/test-swarm"))
        .arg("cluster")
        .args(args)
        .output()
        .expect("scripts/test-swarm runs")
}

fn test_swarm_ok(args: &[&str]) -> String {
    let output = test_swarm(args);
    assert!(
        output.status.success(),
        "scripts/test-swarm cluster {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Cluster {
    /// Brings the cluster up unless it is, and holds a lease on it beside other tests.
    pub fn acquire() -> Cluster {
        Self::with_lock(false)
    }

    /// As [`Cluster::acquire`], alone: for a test that breaks a node for a while.
    pub fn acquire_alone() -> Cluster {
        Self::with_lock(true)
    }

    fn with_lock(alone: bool) -> Cluster {
        let dir = repo_root().join("target/test-swarm");
        std::fs::create_dir_all(&dir).expect("test-swarm folder");
        let lock = File::create(dir.join("cluster.lock")).expect("cluster lock file");
        if alone {
            lock.lock().expect("lock the cluster");
        } else {
            lock.lock_shared().expect("lock the cluster, shared");
        }
        let name = cluster_name();
        let lease = format!(
            "{}-{}",
            std::process::id(),
            LEASES.fetch_add(1, Ordering::SeqCst)
        );
        let stdout = test_swarm_ok(&["acquire", &name, &lease]);
        let env: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        let value = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("scripts/test-swarm printed no {key}:\n{stdout}"))
        };
        Cluster {
            manager: value("PACKBOX_CLUSTER_MANAGER"),
            workers: value("PACKBOX_CLUSTER_WORKERS")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            registry: value("PACKBOX_CLUSTER_REGISTRY"),
            tls_registry: value("PACKBOX_CLUSTER_TLS_REGISTRY"),
            env,
            name,
            lease,
            _lock: lock,
        }
    }

    /// The environment that points the docker CLI and packbox at the manager.
    fn manager_env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .filter(|(k, _)| k.starts_with("DOCKER_"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// packbox pointed at the manager, with extra environment (which wins).
    pub fn packbox(&self, args: &[String], extra: &[(&str, &str)]) -> Finished {
        let mut env = self.manager_env();
        env.extend_from_slice(extra);
        packbox_owned(args, &env)
    }

    /// packbox pointed at the manager, started without waiting for it.
    pub fn spawn_packbox(&self, args: &[String]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_packbox"))
            .args(args)
            .env("PACKBOX_STATE_DIR", super::state_dir())
            .envs(self.manager_env())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the packbox binary starts")
    }

    /// The docker CLI against one node's engine (`None`: the manager).
    pub fn docker_on(&self, node: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new("docker");
        command.args(args);
        match node {
            None => {
                command.envs(self.manager_env());
            }
            Some(node) => {
                let env = Command::new(repo_root().join("scripts/dind"))
                    .args(["env", node])
                    .output()
                    .expect("scripts/dind runs");
                for line in String::from_utf8_lossy(&env.stdout).lines() {
                    if let Some((k, v)) =
                        line.strip_prefix("export ").and_then(|l| l.split_once('='))
                    {
                        command.env(k, v);
                    }
                }
            }
        }
        command.output().expect("docker runs")
    }

    /// stdout lines of the docker CLI against one node (`None`: the manager); panics on failure.
    pub fn docker_ok(&self, node: Option<&str>, args: &[&str]) -> Vec<String> {
        let output = self.docker_on(node, args);
        assert!(
            output.status.success(),
            "docker {args:?} on {} failed: {}",
            node.unwrap_or(&self.manager),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The services, secrets and networks a packbox process left on the manager, as
    /// `kind name`.
    pub fn swarm_objects_of(&self, pid: u32) -> Vec<String> {
        let filter = format!("label=packbox.owner_pid={pid}");
        let mut found = Vec::new();
        for kind in ["service", "secret", "network"] {
            let names = self.docker_ok(
                None,
                &[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"],
            );
            found.extend(names.into_iter().map(|name| format!("{kind} {name}")));
        }
        found
    }

    /// Asserts that a packbox process left no service, secret or network on the manager, and
    /// that every node running then removed its task containers (the Swarm does so shortly
    /// after the service is gone: waited for, bounded).
    pub fn assert_no_leftovers(&self, pid: u32) {
        let left = self.swarm_objects_of(pid);
        assert!(left.is_empty(), "Swarm objects left behind: {left:?}");
        let filter = format!("label=packbox.owner_pid={pid}");
        let mut nodes = vec![None];
        nodes.extend(self.workers.iter().map(|w| Some(w.as_str())));
        for node in nodes {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let output = self.docker_on(node, &["ps", "-aq", "--filter", &filter]);
                if !output.status.success() {
                    break; // a node that is down holds nothing it can run
                }
                if output.stdout.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "task containers left on {}: {}",
                    node.unwrap_or(&self.manager),
                    String::from_utf8_lossy(&output.stdout)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Kills a node's engine (a machine that died); the guard starts it again when dropped.
    pub fn kill_node(&self, node: &str) -> NodeDown<'_> {
        test_swarm_ok(&["kill-node", &self.name, node]);
        NodeDown {
            cluster: self,
            node: node.to_string(),
        }
    }

    /// Cuts a node off the registries (a registry down, as the node sees it); the guard mends
    /// it when dropped.
    pub fn cut_registry(&self, node: &str) -> RegistryCut<'_> {
        test_swarm_ok(&["cut-registry", &self.name, node]);
        RegistryCut {
            cluster: self,
            node: node.to_string(),
        }
    }

    /// The state of the Swarm's task of a service, as `docker service ps` says it.
    pub fn task_state(&self, service: &str) -> String {
        self.docker_on(
            None,
            &["service", "ps", service, "--format", "{{.CurrentState}}"],
        )
        .stdout
        .iter()
        .map(|&b| b as char)
        .collect()
    }

    /// Waits (at most two minutes) until the packbox process `pid` has a service whose task
    /// runs; returns the service's name.
    pub fn wait_for_running_service(&self, pid: u32) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        let filter = format!("label=packbox.owner_pid={pid}");
        loop {
            let names = self.docker_ok(
                None,
                &[
                    "service",
                    "ls",
                    "--filter",
                    &filter,
                    "--format",
                    "{{.Name}}",
                ],
            );
            if let Some(name) = names.first()
                && self.task_state(name).starts_with("Running")
            {
                return name.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no running task of packbox {pid} appeared"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let released = test_swarm(&["release", &self.name, &self.lease]);
        if !released.status.success() {
            let message = format!(
                "scripts/test-swarm cluster release {} failed: {}",
                self.name,
                String::from_utf8_lossy(&released.stderr)
            );
            // The last lease checks for packbox's leftovers on the manager: that is a failure.
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// A node killed by a test; started again (and waited for) when dropped.
pub struct NodeDown<'a> {
    cluster: &'a Cluster,
    node: String,
}

impl Drop for NodeDown<'_> {
    fn drop(&mut self) {
        let revived = test_swarm(&["revive-node", &self.cluster.name, &self.node]);
        if !revived.status.success() {
            eprintln!(
                "reviving {} failed: {}",
                self.node,
                String::from_utf8_lossy(&revived.stderr)
            );
        }
    }
}

/// A node cut off its registries by a test; mended when dropped.
pub struct RegistryCut<'a> {
    cluster: &'a Cluster,
    node: String,
}

impl Drop for RegistryCut<'_> {
    fn drop(&mut self) {
        let mended = test_swarm(&["mend-registry", &self.cluster.name, &self.node]);
        if !mended.status.success() {
            eprintln!(
                "mending {}'s registry access failed: {}",
                self.node,
                String::from_utf8_lossy(&mended.stderr)
            );
        }
    }
}

/// A copy of a fixture pack with a file no other copy has: its pack image is new to every node,
/// so a run of it must pull.
pub fn fresh_pack(source: &std::path::Path, root: &std::path::Path) -> PathBuf {
    let dest = super::copy_pack(source, root);
    let stamp = format!(
        "{}-{}\n",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    std::fs::write(dest.join("fresh"), stamp).expect("stamp the pack copy");
    root.to_path_buf()
}
