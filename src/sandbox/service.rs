//! The sandbox as a one-shot Swarm service: the same policy in the words a service has (Swarm
//! API 1.41), and what packbox does where a service has none.
//!
//! | policy | as a service |
//! |---|---|
//! | network `none` | a per-run internal overlay network: `lo` and `eth0` on a subnet of its own, no default route, no gateway, no other task |
//! | read-only root, caps dropped, user, memory, CPUs, pids, nofile, `/tmp` tmpfs, init | the service's own fields |
//! | no-new-privileges | `setpriv --no-new-privs` in the task's command (services cannot set it before API 1.44) |
//! | memory without swap | not expressible: a node with swap lets the task swap as much again |
//! | OCI runtime | not expressible: refused (settings) |
//! | parameters on stdin | a Swarm secret (tmpfs, mode 0400, owned by the action's user) fed to stdin by the command |
//! | output through attach, nothing on disk | the task's log on its node (`local` driver, two bounded files), removed with the service |

use std::time::Duration;

use super::policy::{PACK_MOUNT, SandboxPolicy, Workload};
use crate::engine::{SecretFile, ServiceSpec, TmpfsMount};

/// The parameter document's file name under `/run/secrets/`.
pub const PARAMETER_FILE: &str = "packbox-parameters";
/// The largest parameter document a Swarm secret holds (the Swarm's own limit).
pub const MAX_DOCUMENT_BYTES: usize = 500 * 1024;

/// What the swarm backend made for one run, for its service spec.
#[derive(Clone, Debug)]
pub struct ServiceParts<'a> {
    /// The service's name, unique per run.
    pub name: &'a str,
    /// What the task runs: a pack image by digest or id.
    pub image: &'a str,
    /// The id of the secret holding the parameter document.
    pub secret_id: &'a str,
    /// That secret's name.
    pub secret_name: &'a str,
    /// The per-run network, when the policy has no network.
    pub network: Option<&'a str>,
    /// Time between SIGTERM and SIGKILL when the task is stopped (a timeout, a cancellation).
    pub stop_grace: Duration,
    /// Bytes of output kept per stream: the task's log files are sized from it.
    pub max_output: usize,
    /// Placement constraints a node must meet to take the task (none: any node).
    pub placement: &'a [String],
}

impl SandboxPolicy {
    /// The service spec for a workload under this policy. The pack is in the image (at
    /// `/pack`), nothing is mounted from the node but tmpfs and the secret.
    pub fn service_spec(&self, workload: Workload, parts: ServiceParts<'_>) -> ServiceSpec {
        let (uid, gid) = match self.user.split_once(':') {
            Some((uid, gid)) => (uid.to_string(), gid.to_string()),
            // A user without a group runs with group 0, like a container does.
            None => (self.user.clone(), "0".to_string()),
        };
        let networks = match (self.network.as_str(), parts.network) {
            ("none" | super::policy::EGRESS_NETWORK, Some(own)) => vec![own.to_string()],
            ("none", None) | ("bridge", _) => Vec::new(),
            (named, _) => vec![named.to_string()],
        };
        ServiceSpec {
            name: parts.name.to_string(),
            labels: workload.labels,
            image: parts.image.to_string(),
            cmd: self.task_command(workload.cmd),
            env: workload.env,
            working_dir: PACK_MOUNT.into(),
            user: self.user.clone(),
            read_only_rootfs: self.read_only_root,
            tmpfs: vec![TmpfsMount {
                path: "/tmp".into(),
                size_bytes: self.tmpfs_tmp_bytes as i64,
                mode: 0o1777,
            }],
            cap_drop_all: self.cap_drop_all,
            memory_bytes: self.memory_bytes as i64,
            nano_cpus: (self.cpus * 1e9) as i64,
            pids_limit: i64::from(self.pids_limit),
            nofile: i64::from(self.nofile),
            networks,
            secrets: vec![SecretFile {
                secret_id: parts.secret_id.to_string(),
                secret_name: parts.secret_name.to_string(),
                file_name: PARAMETER_FILE.into(),
                uid,
                gid,
                mode: 0o400,
            }],
            stop_grace: parts.stop_grace,
            log_file_bytes: log_file_bytes(parts.max_output),
            placement: parts.placement.to_vec(),
        }
    }

    /// The task's command: the action with the parameter secret on its stdin, under
    /// no-new-privileges when the policy has it. Every step `exec`s the next, so SIGTERM from
    /// the init reaches the action itself.
    fn task_command(&self, action: Vec<String>) -> Vec<String> {
        let stdin = format!("< /run/secrets/{PARAMETER_FILE}");
        let script = if self.no_new_privileges {
            format!(
                "command -v setpriv >/dev/null 2>&1 || {{ echo 'packbox: the image has no setpriv (util-linux), so no-new-privileges cannot be applied' >&2; exit 126; }}; exec setpriv --no-new-privs -- \"$@\" {stdin}"
            )
        } else {
            format!("exec \"$@\" {stdin}")
        };
        let mut cmd = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            script,
            "packbox-task".to_string(),
        ];
        cmd.extend(action);
        cmd
    }

    /// This policy as the swarm backend applies it: every setting unchanged, the backend named,
    /// and each setting a service has no word for listed with what packbox does instead.
    pub fn as_applied_on_swarm(&self, max_output: usize) -> SandboxPolicy {
        let mut applied = Vec::new();
        match self.network.as_str() {
            "none" => applied.push(
                "network none: a per-run internal overlay network of its own (lo and eth0, no default route, no gateway, no other task on it)".to_string(),
            ),
            "bridge" => applied.push(
                "network bridge: the node's default bridge (no networks on the service)".to_string(),
            ),
            super::policy::EGRESS_NETWORK => applied.push(
                "network egress: a per-run internal overlay network, attachable, joined by packbox's egress proxy (the task's only way out)".to_string(),
            ),
            _ => {}
        }
        if self.no_new_privileges {
            applied.push(
                "no_new_privileges: set by setpriv --no-new-privs in the task's command (a service cannot set it on this API)".to_string(),
            );
        }
        applied.push(format!(
            "memory: {} bytes without a swap limit (a service cannot set one; a node with swap lets the task swap as much again)",
            self.memory_bytes
        ));
        applied.push(format!(
            "parameters: a Swarm secret at /run/secrets/{PARAMETER_FILE} (tmpfs, mode 0400, owned by user {}) fed to stdin, removed with the service",
            self.user
        ));
        applied.push(format!(
            "output: through the task's log on its node (local driver, 2 files of at most {} bytes), removed with the service",
            log_file_bytes(max_output)
        ));
        SandboxPolicy {
            backend: "swarm".into(),
            applied_as: applied,
            ..self.clone()
        }
    }
}

/// The least a task's log file holds. The engine's log follower does not finish a file it is
/// reading when the file rotates: a reader that falls behind the writer by more than the log's
/// two files loses what lay between (a flood of a million lines against 3 MiB files lost lines
/// 917 to 835,965 of its head on this 2-core machine under load). 16 MiB files give the reader
/// that much slack whatever `--max-output` is; at most 32 MiB per running task on its node.
const MIN_LOG_FILE_BYTES: u64 = 16 << 20;

/// Bytes per log file: room for both streams' kept output and the log's own framing, and at
/// least [`MIN_LOG_FILE_BYTES`], so the head packbox keeps is read long before a file rotates.
fn log_file_bytes(max_output: usize) -> u64 {
    (max_output as u64)
        .saturating_mul(2)
        .saturating_add(1 << 20)
        .max(MIN_LOG_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sandbox::{PackFolder, PackSource};

    fn workload() -> Workload {
        Workload {
            image: "packbox/shell:5.2".into(),
            cmd: vec!["bash".into(), "/pack/actions/a.sh".into()],
            env: vec![("ATTUNE_ACTION".into(), "p.a".into())],
            labels: BTreeMap::from([("packbox.managed".into(), "true".into())]),
            pack: Some(PackSource::Folder(PackFolder {
                pack_ref: "p".into(),
                host_dir: "/host/packs/p".into(),
                digest: "0".repeat(64),
            })),
        }
    }

    fn parts() -> ServiceParts<'static> {
        ServiceParts {
            name: "packbox-1",
            image: "sha256:abc",
            secret_id: "secret1",
            secret_name: "packbox-1-parameters",
            network: Some("net1"),
            stop_grace: Duration::from_secs(10),
            max_output: 10 << 20,
            placement: &[],
        }
    }

    #[test]
    fn defaults_are_locked_down_as_a_service() {
        let spec = SandboxPolicy::default().service_spec(workload(), parts());
        assert!(spec.read_only_rootfs && spec.cap_drop_all);
        assert_eq!(spec.user, "65534:65534");
        assert_eq!(spec.memory_bytes, 512 << 20);
        assert_eq!(spec.pids_limit, 256);
        assert_eq!(spec.nofile, 1024);
        assert_eq!(spec.nano_cpus, 1_000_000_000);
        assert_eq!(spec.networks, ["net1"]);
        assert_eq!(spec.working_dir, "/pack");
        assert_eq!(
            spec.tmpfs,
            [TmpfsMount {
                path: "/tmp".into(),
                size_bytes: 64 << 20,
                mode: 0o1777
            }]
        );
        let secret = &spec.secrets[0];
        assert_eq!(
            (secret.uid.as_str(), secret.gid.as_str(), secret.mode),
            ("65534", "65534", 0o400)
        );
        assert_eq!(spec.image, "sha256:abc", "the pack image, not the base");
    }

    #[test]
    fn the_command_feeds_the_secret_to_stdin_under_no_new_privileges() {
        let spec = SandboxPolicy::default().service_spec(workload(), parts());
        assert_eq!(spec.cmd[..2], ["/bin/sh", "-c"]);
        assert!(spec.cmd[2].contains("exec setpriv --no-new-privs -- \"$@\""));
        assert!(spec.cmd[2].ends_with("< /run/secrets/packbox-parameters"));
        assert_eq!(spec.cmd[4..], ["bash", "/pack/actions/a.sh"]);
        let weaker = SandboxPolicy {
            no_new_privileges: false,
            ..SandboxPolicy::default()
        };
        let spec = weaker.service_spec(workload(), parts());
        assert!(!spec.cmd[2].contains("setpriv"));
    }

    #[test]
    fn networks_other_than_none_are_the_operators() {
        let mut policy = SandboxPolicy {
            network: "bridge".into(),
            ..SandboxPolicy::default()
        };
        assert!(policy.service_spec(workload(), parts()).networks.is_empty());
        policy.network = "shared-overlay".into();
        assert_eq!(
            policy.service_spec(workload(), parts()).networks,
            ["shared-overlay"]
        );
    }

    #[test]
    fn the_report_names_the_backend_and_what_it_did_instead() {
        let applied = SandboxPolicy::default().as_applied_on_swarm(10 << 20);
        assert_eq!(applied.backend, "swarm");
        let text = applied.applied_as.join("\n");
        for needle in ["overlay", "setpriv", "swap", "secret", "log"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert_eq!(applied.memory_bytes, SandboxPolicy::default().memory_bytes);
        assert!(SandboxPolicy::default().applied_as.is_empty());
    }

    #[test]
    fn a_tasks_log_files_hold_its_kept_output_and_never_less_than_the_least() {
        assert_eq!(log_file_bytes(10 << 20), 21 << 20);
        assert_eq!(log_file_bytes(1 << 20), MIN_LOG_FILE_BYTES);
        assert_eq!(log_file_bytes(0), MIN_LOG_FILE_BYTES);
    }
}
