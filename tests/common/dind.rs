//! A second, real Docker engine for tests: dockerd in a container (Docker-in-Docker) serving the
//! API over TCP with mutual TLS on a loopback port, made by `scripts/dind`.
//!
//! Starting one takes about 7 s (3 s to answer, the rest loading the runtime images), so the
//! tests of a run share it: each test holds a lease (`scripts/dind acquire`), and the last lease
//! released stops and removes it (container, volume, certificates). A lease is dropped even when
//! the test panics; one whose process was killed counts as released at the next acquire, release
//! or `scripts/dind sweep` (which `scripts/test` runs at the end).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Finished, packbox_owned, repo_root};

/// Which engine configuration a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// dockerd with its defaults.
    Plain,
    /// dockerd with `--userns-remap=default`: uid 0 in a container is uid 100000+ on the host.
    UsernsRemap,
}

/// A lease on a running Docker-in-Docker engine; released on drop.
pub struct Dind {
    name: String,
    lease: String,
    /// `tcp://127.0.0.1:PORT`.
    pub host: String,
    /// Folder of the client's `ca.pem`, `cert.pem`, `key.pem` (trusted by the engine).
    pub cert_path: PathBuf,
}

static LEASES: AtomicUsize = AtomicUsize::new(0);

/// One engine per checkout and flavour, so that worktrees testing at once do not share:
/// `test-<first 8 hex digits of the SHA-256 of the checkout's path>[-userns]`, which
/// scripts/test computes the same way to hold the engine for a whole run.
pub fn engine_name(flavour: Flavour) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(repo_root().to_string_lossy().as_bytes());
    let suffix = match flavour {
        Flavour::Plain => "",
        Flavour::UsernsRemap => "-userns",
    };
    format!("test-{}{suffix}", &hex::encode(digest)[..8])
}

impl Dind {
    /// Starts the engine of this flavour unless it runs already, and holds a lease on it.
    pub fn acquire(flavour: Flavour) -> Dind {
        let name = engine_name(flavour);
        let lease = format!(
            "{}-{}",
            std::process::id(),
            LEASES.fetch_add(1, Ordering::SeqCst)
        );
        let mut args = vec!["acquire".to_string(), name.clone(), lease.clone()];
        if flavour == Flavour::UsernsRemap {
            args.push("--userns-remap".into());
        }
        let output = Command::new(repo_root().join("scripts/dind"))
            .args(&args)
            .output()
            .expect("scripts/dind runs");
        assert!(
            output.status.success(),
            "scripts/dind acquire failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {key}=")))
                .unwrap_or_else(|| panic!("scripts/dind printed no {key}:\n{stdout}"))
                .to_string()
        };
        Dind {
            name,
            lease,
            host: value("DOCKER_HOST"),
            cert_path: PathBuf::from(value("DOCKER_CERT_PATH")),
        }
    }

    /// The folder of the engine's key material (`client/`, `untrusted/`, `wrong-ca/`, `ca/`).
    pub fn certs_root(&self) -> &Path {
        self.cert_path
            .parent()
            .expect("the client folder has a parent")
    }

    /// The environment that points the docker CLI and packbox at this engine.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_with_certs(&self.cert_path)
    }

    /// Like [`Dind::env`], with another certificate folder.
    pub fn env_with_certs(&self, cert_path: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("DOCKER_HOST", self.host.clone()),
            ("DOCKER_TLS_VERIFY", "1".into()),
            ("DOCKER_CERT_PATH", cert_path.to_string_lossy().into_owned()),
        ]
    }

    /// The docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .envs(self.env())
            .output()
            .expect("docker runs")
    }

    /// The docker CLI against this engine; panics unless it succeeds; returns stdout lines.
    pub fn docker_ok(&self, args: &[&str]) -> Vec<String> {
        let output = self.docker(args);
        assert!(
            output.status.success(),
            "docker {args:?} on the dind engine failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// packbox pointed at this engine, with extra environment (which wins).
    pub fn packbox(&self, args: &[&str], extra: &[(&str, &str)]) -> Finished {
        let mut env: Vec<(String, String)> = self
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        packbox_owned(&args, &env)
    }

    /// Ids of the inner engine's containers (running or not) carrying `label`.
    pub fn containers_labelled(&self, label: &str) -> Vec<String> {
        self.docker_ok(&["ps", "-aq", "--filter", &format!("label={label}")])
    }

    /// Names of the inner engine's volumes carrying `label`.
    pub fn volumes_labelled(&self, label: &str) -> Vec<String> {
        self.docker_ok(&["volume", "ls", "-q", "--filter", &format!("label={label}")])
    }
}

impl Drop for Dind {
    fn drop(&mut self) {
        let released = Command::new(repo_root().join("scripts/dind"))
            .args(["release", &self.name, &self.lease])
            .output();
        match released {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "scripts/dind release {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("scripts/dind release {} did not run: {e}", self.name),
        }
    }
}
