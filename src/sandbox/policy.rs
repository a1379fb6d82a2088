//! The sandbox an action runs in: locked-down defaults, each one overridable by the operator.
//!
//! The policy turns into a [`ContainerSpec`]; the applied values are reported in every outcome so
//! that an operator can see exactly what an action was allowed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::isolation::IsolationReport;
use super::seccomp::{Kernel, SeccompProfile};
use crate::engine::{
    BindMount, ContainerSpec, EngineIdentity, InitProcess, SwarmNode, VolumeMount,
};

/// The network of a run with an egress grant: a per-run network whose only way out is
/// packbox's egress proxy (each backend makes it; the proxy enforces the grant).
pub const EGRESS_NETWORK: &str = "egress";

/// Where the pack is mounted (read-only) inside every container.
pub const PACK_MOUNT: &str = "/pack";

/// Limits and isolation settings for one run. `Default` is the locked-down policy of DESIGN.md.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SandboxPolicy {
    /// `none` by default; `egress` for a run with an egress grant (a per-run network whose only
    /// way out is packbox's proxy); `bridge` or a network name only when the operator opens it.
    pub network: String,
    /// The container's root file system is read-only, so the action can write only to `/tmp`.
    pub read_only_root: bool,
    /// Size of the tmpfs mounted at `/tmp`, the action's scratch space.
    pub tmpfs_tmp_bytes: u64,
    /// Every Linux capability is dropped.
    pub cap_drop_all: bool,
    /// The action cannot gain privileges (setuid binaries, file capabilities).
    pub no_new_privileges: bool,
    /// The `uid:gid` the action runs as (`65534:65534`, nobody, by default).
    pub user: String,
    /// Memory limit; the same for memory plus swap, so no swap.
    pub memory_bytes: u64,
    /// How many processes and threads the container may hold, against fork bombs.
    pub pids_limit: u32,
    /// CPU share, in CPUs (`0.5`, `2`).
    pub cpus: f64,
    /// Open file limit (soft and hard).
    pub nofile: u32,
    /// An OCI runtime other than the engine's default (e.g. `runsc`).
    pub oci_runtime: Option<String>,
    /// The syscall profile: packbox's own unless the operator names another.
    pub seccomp: SeccompProfile,
    /// The isolation level of the run, who chose it and what it meant.
    pub isolation: IsolationReport,
    /// The settings weaker than packbox's defaults that the operator allowed explicitly
    /// (`--allow-weaker-sandbox`, or `sandbox.allow_weaker: true` in an explicit config file),
    /// each as `setting = value (default ...)`; empty for the locked-down sandbox.
    pub weaker_than_default: Vec<String>,
    /// Where the action runs: `docker` (a container on the engine) or `swarm` (a one-shot
    /// service).
    pub backend: String,
    /// How the backend applied settings it has no direct word for, each as `setting: how`
    /// (empty for containers on the engine, which take every setting as it is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub applied_as: Vec<String>,
    /// The Swarm node the run's task ran on (its hostname and id); swarm backend only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<SwarmNode>,
    /// The engine that ran the action (Docker or Podman, its version and mode); set by the
    /// backend for every outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineIdentity>,
    /// The operator allowed settings weaker than the defaults: one the engine does not apply
    /// is then listed in `weaker_than_default` instead of refusing the run.
    #[serde(skip)]
    pub allow_weaker: bool,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            network: "none".into(),
            read_only_root: true,
            tmpfs_tmp_bytes: 64 << 20,
            cap_drop_all: true,
            no_new_privileges: true,
            user: "65534:65534".into(),
            memory_bytes: 512 << 20,
            pids_limit: 256,
            cpus: 1.0,
            nofile: 1024,
            oci_runtime: None,
            seccomp: SeccompProfile::Packbox,
            isolation: IsolationReport::default(),
            weaker_than_default: Vec::new(),
            backend: "docker".into(),
            applied_as: Vec::new(),
            node: None,
            engine: None,
            allow_weaker: false,
        }
    }
}

/// What a container runs, apart from the sandbox: image, command, environment and pack.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The image to run: a runtime, environment or pack image.
    pub image: String,
    /// The command, an argument per item (no shell).
    pub cmd: Vec<String>,
    /// Environment variables, in order (the action's `ATTUNE_*` variables, the runtime's own).
    pub env: Vec<(String, String)>,
    /// Labels that say who made the container and for what, so leftovers can be swept.
    pub labels: BTreeMap<String, String>,
    /// The pack, mounted read-only at `/pack` (none for image probes).
    pub pack: Option<PackSource>,
}

/// A pack folder on this machine: what the plan names, before a backend decides how the pack
/// reaches the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackFolder {
    /// The pack's name.
    pub pack_ref: String,
    /// The pack's folder on this machine, canonical.
    pub host_dir: String,
    /// The SHA-256 of the pack tree when the run was planned ([`crate::pack_delivery::tree`]): what
    /// names its volume or image, so delivery never reads the pack only to name it.
    pub digest: String,
}

/// Where the pack a container sees at `/pack` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackSource {
    /// A folder of this machine, bind-mounted: only an engine on this machine sees it.
    Folder(PackFolder),
    /// A volume on the engine holding the pack's content (see `pack_delivery::volume`).
    Volume(String),
}

impl SandboxPolicy {
    /// The container spec for a workload under this policy, for the kernel that will answer its
    /// calls (the syscall profile differs slightly under gVisor). The pack is always mounted
    /// read-only and the Docker socket is never mounted: neither is a setting.
    pub fn container_spec(&self, workload: Workload, kernel: Kernel) -> ContainerSpec {
        let tmpfs = BTreeMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={},mode=1777", self.tmpfs_tmp_bytes),
        )]);
        ContainerSpec {
            image: workload.image,
            cmd: workload.cmd,
            env: workload.env,
            working_dir: PACK_MOUNT.into(),
            user: self.user.clone(),
            labels: workload.labels,
            binds: match &workload.pack {
                Some(PackSource::Folder(folder)) => vec![BindMount {
                    host_path: folder.host_dir.clone(),
                    container_path: PACK_MOUNT.into(),
                    read_only: true,
                }],
                _ => Vec::new(),
            },
            volumes: match workload.pack {
                Some(PackSource::Volume(volume)) => vec![VolumeMount {
                    volume,
                    container_path: PACK_MOUNT.into(),
                    read_only: true,
                }],
                _ => Vec::new(),
            },
            tmpfs,
            read_only_rootfs: self.read_only_root,
            network_mode: self.network.clone(),
            cap_drop_all: self.cap_drop_all,
            cap_add: Vec::new(),
            no_new_privileges: self.no_new_privileges,
            memory_bytes: self.memory_bytes as i64,
            pids_limit: i64::from(self.pids_limit),
            nano_cpus: (self.cpus * 1e9) as i64,
            nofile: i64::from(self.nofile),
            oci_runtime: self.oci_runtime.clone(),
            seccomp_profile: self.seccomp.engine_json(self.network != "none", kernel),
            // The backend that runs the container chooses its init.
            init: InitProcess::default(),
            ipv4_address: None,
            sysctls: BTreeMap::new(),
            dns: Vec::new(),
            allow_weaker: self.allow_weaker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            image: "img".into(),
            cmd: vec!["bash".into()],
            env: Vec::new(),
            labels: BTreeMap::new(),
            pack: Some(PackSource::Folder(PackFolder {
                pack_ref: "p".into(),
                host_dir: "/host/packs/p".into(),
                digest: "0".repeat(64),
            })),
        }
    }

    #[test]
    fn defaults_are_locked_down() {
        let spec = SandboxPolicy::default().container_spec(workload(), Kernel::Host);
        assert_eq!(spec.network_mode, "none");
        assert!(spec.read_only_rootfs && spec.cap_drop_all && spec.no_new_privileges);
        assert_eq!(spec.user, "65534:65534");
        assert_eq!(spec.memory_bytes, 512 << 20);
        assert_eq!(spec.pids_limit, 256);
        assert_eq!(spec.nano_cpus, 1_000_000_000);
        assert_eq!(spec.nofile, 1024);
        assert!(spec.tmpfs["/tmp"].contains("size=67108864"));
        assert_eq!(spec.working_dir, "/pack");
    }

    #[test]
    fn packbox_profile_by_default_unix_sockets_only_without_network() {
        let spec = SandboxPolicy::default().container_spec(workload(), Kernel::Host);
        let offline = spec.seccomp_profile.expect("a profile by default");
        assert_eq!(
            Some(offline.clone()),
            SeccompProfile::Packbox.engine_json(false, Kernel::Host)
        );
        let networked = SandboxPolicy {
            network: "bridge".into(),
            ..SandboxPolicy::default()
        }
        .container_spec(workload(), Kernel::Host);
        assert_eq!(
            networked.seccomp_profile,
            SeccompProfile::Packbox.engine_json(true, Kernel::Host)
        );
        assert_ne!(networked.seccomp_profile, Some(offline));
        let engine_default = SandboxPolicy {
            seccomp: SeccompProfile::EngineDefault,
            ..SandboxPolicy::default()
        }
        .container_spec(workload(), Kernel::Host);
        assert_eq!(engine_default.seccomp_profile, None);
    }

    #[test]
    fn pack_is_mounted_read_only_and_nothing_else() {
        let spec = SandboxPolicy::default().container_spec(workload(), Kernel::Host);
        assert_eq!(
            spec.binds,
            vec![BindMount {
                host_path: "/host/packs/p".into(),
                container_path: "/pack".into(),
                read_only: true
            }]
        );
        assert!(
            !spec
                .binds
                .iter()
                .any(|b| b.host_path.contains("docker.sock"))
        );
    }
}
