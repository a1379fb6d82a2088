//! Podman's dialect of the Docker API (Podman 4.3's compat service), measured, not assumed:
//!
//! - a seccomp profile in `SecurityOpt` is taken for a file path, never for the profile itself:
//!   packbox writes its profile to a file the engine can read and names the file;
//! - without an `nproc` rlimit of its own, Podman asks the kernel for 1,048,576 processes per
//!   user whenever any rlimit is set, which a host without `CAP_SYS_RESOURCE` in its bounding set
//!   refuses (every container fails to start): packbox sets [`PODMAN_NPROC`];
//! - settings it cannot apply are dropped with a warning in the service's log, not refused
//!   (rootless on cgroup v1: memory, processes, CPU and rlimits all go): packbox reads every
//!   setting back from the created container ([`not_applied`]) and refuses the run, or, when
//!   the operator allowed a weaker sandbox, reports each setting that did not hold.

use std::path::{Path, PathBuf};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerConfig, HostConfig};
use sha2::Digest;

use super::{ContainerSpec, EngineError};

/// The `nproc` rlimit of a container on Podman: the kernel's default `pid_max`. It counts every
/// process of the action's user on the host (not per container): the per-container cap is the
/// pids limit; this only keeps Podman from asking for more than an unprivileged host allows.
pub const PODMAN_NPROC: i64 = 32_768;

/// One sandbox setting that the engine did not apply as packbox asked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotApplied {
    /// The setting, as the configuration names it (`sandbox.memory`).
    pub setting: &'static str,
    /// What packbox asked for.
    pub asked: String,
    /// What the engine reports it applied.
    pub applied: String,
}

impl std::fmt::Display for NotApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (asked {}, applied {})",
            self.setting, self.asked, self.applied
        )
    }
}

/// Files holding seccomp profiles for a Podman engine on this machine: a folder of this process
/// (random name, readable by every user, so that a rootless engine running as another user can
/// read it too; the profiles are no secret), removed when the engine connection goes. Podman
/// reads the file when the container is created.
#[derive(Debug)]
pub(super) struct ProfileFiles {
    dir: tempfile::TempDir,
}

impl ProfileFiles {
    /// A new folder under `/tmp` (the engine must see it: Podman runs on this machine).
    pub(super) fn new() -> Result<ProfileFiles, EngineError> {
        use std::os::unix::fs::PermissionsExt;
        let unusable = |message: String| EngineError::Unexpected {
            what: "writing the seccomp profile for Podman".into(),
            message,
        };
        let dir = tempfile::Builder::new()
            .prefix("packbox-seccomp-")
            .tempdir_in("/tmp")
            .map_err(|e| unusable(format!("cannot make a folder in /tmp: {e}")))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| unusable(format!("{}: {e}", dir.path().display())))?;
        Ok(ProfileFiles { dir })
    }

    /// The file holding `profile` (written once per content).
    pub(super) fn file_for(&self, profile: &str) -> Result<PathBuf, EngineError> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let digest = hex::encode(sha2::Sha256::digest(profile.as_bytes()));
        let path = self.dir.path().join(format!("{digest}.json"));
        if path.is_file() {
            return Ok(path);
        }
        let unusable = |e: std::io::Error| EngineError::Unexpected {
            what: "writing the seccomp profile for Podman".into(),
            message: format!("{}: {e}", path.display()),
        };
        let mut file = tempfile::NamedTempFile::new_in(self.dir.path()).map_err(unusable)?;
        file.write_all(profile.as_bytes()).map_err(unusable)?;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(unusable)?;
        file.persist(&path).map_err(|e| unusable(e.error))?;
        Ok(path)
    }

    /// The folder, for tests.
    #[cfg(test)]
    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether a `SecurityOpt` entry names this profile file.
fn names_profile(option: &str, file: Option<&Path>) -> bool {
    match file {
        Some(file) => option == format!("seccomp={}", file.display()),
        None => false,
    }
}

/// Podman's compat `/commit` ignores the configuration in the request's body and keeps the
/// container's own (its command, its environment): the image's configuration goes as Dockerfile
/// instructions in `changes` instead, one per line (measured on Podman 4.3.1). Values are quoted
/// as JSON strings; a value holding a line break could not be one instruction and is refused.
pub(super) fn commit_changes(spec: &super::CommitSpec) -> Result<String, String> {
    let quoted = |value: &str| {
        if value.contains(['\n', '\r']) {
            Err(format!("a line break in the image setting `{value}`"))
        } else {
            Ok(serde_json::Value::String(value.to_string()).to_string())
        }
    };
    let mut lines = Vec::new();
    for entry in &spec.env {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        lines.push(format!("ENV {name}={}", quoted(value)?));
    }
    let cmd = serde_json::to_string(&spec.cmd).map_err(|e| e.to_string())?;
    lines.push(format!("CMD {cmd}"));
    lines.push("ENTRYPOINT []".to_string());
    lines.push(format!("WORKDIR {}", spec.working_dir));
    lines.push(format!("USER {}", spec.user));
    let mut labels: Vec<_> = spec.labels.iter().collect();
    labels.sort();
    for (name, value) in labels {
        lines.push(format!("LABEL {name}={}", quoted(value)?));
    }
    if lines.iter().any(|line| line.contains(['\n', '\r'])) {
        return Err("a line break in the image's command, folder or user".into());
    }
    Ok(lines.join("\n"))
}

/// The sandbox settings of `spec` that the created container does not carry, read from the
/// engine's inspect answer (`config` and `host`). `profile_file` is the file the profile was
/// sent as (Podman), or `None` when the spec kept the engine's default profile.
pub(super) fn not_applied(
    spec: &ContainerSpec,
    config: &ContainerConfig,
    host: &HostConfig,
    profile_file: Option<&Path>,
) -> Vec<NotApplied> {
    let mut missing = Vec::new();
    let mut check = |setting: &'static str, holds: bool, asked: String, applied: String| {
        if !holds {
            missing.push(NotApplied {
                setting,
                asked,
                applied,
            });
        }
    };
    let limit = |value: Option<i64>| match value {
        Some(v) if v > 0 => v.to_string(),
        _ => "no limit".to_string(),
    };
    check(
        "sandbox.memory",
        host.memory == Some(spec.memory_bytes) && host.memory_swap == Some(spec.memory_bytes),
        format!("{} bytes, no swap", spec.memory_bytes),
        format!(
            "{}, memory+swap {}",
            limit(host.memory),
            limit(host.memory_swap)
        ),
    );
    check(
        "sandbox.pids",
        host.pids_limit == Some(spec.pids_limit),
        spec.pids_limit.to_string(),
        limit(host.pids_limit),
    );
    // Podman reports a CPU limit as NanoCpus, or as the CFS quota and period it became.
    let nano_cpus = match (host.nano_cpus, host.cpu_quota, host.cpu_period) {
        (Some(nano), _, _) if nano > 0 => nano,
        (_, Some(quota), Some(period)) if quota > 0 && period > 0 => {
            quota.saturating_mul(1_000_000_000) / period
        }
        _ => 0,
    };
    check(
        "sandbox.cpus",
        nano_cpus == spec.nano_cpus,
        format!("{} CPUs", spec.nano_cpus as f64 / 1e9),
        if nano_cpus > 0 {
            format!("{} CPUs", nano_cpus as f64 / 1e9)
        } else {
            "no limit".into()
        },
    );
    let nofile = host
        .ulimits
        .iter()
        .flatten()
        .find(|u| u.name.as_deref().is_some_and(is_nofile));
    check(
        "sandbox.nofile",
        nofile.is_some_and(|u| u.soft == Some(spec.nofile) && u.hard == Some(spec.nofile)),
        spec.nofile.to_string(),
        nofile
            .and_then(|u| u.hard)
            .map_or("the engine's own".to_string(), |h| h.to_string()),
    );
    check(
        "sandbox.read_only_root",
        host.readonly_rootfs.unwrap_or(false) == spec.read_only_rootfs,
        spec.read_only_rootfs.to_string(),
        host.readonly_rootfs.unwrap_or(false).to_string(),
    );
    let network = host.network_mode.clone().unwrap_or_default();
    check(
        "sandbox.network",
        network == spec.network_mode,
        spec.network_mode.clone(),
        if network.is_empty() {
            "the engine's default".into()
        } else {
            network
        },
    );
    if spec.cap_drop_all {
        let dropped = host.cap_drop.as_deref().unwrap_or_default();
        let added = host.cap_add.as_deref().unwrap_or_default();
        // Podman reports capabilities as `CAP_CHOWN`; packbox asks for them as `CHOWN`.
        let kept = |name: &String| {
            spec.cap_add
                .iter()
                .any(|asked| name.trim_start_matches("CAP_") == asked.trim_start_matches("CAP_"))
        };
        check(
            "sandbox.cap_drop_all",
            !dropped.is_empty() && added.iter().all(kept),
            if spec.cap_add.is_empty() {
                "every capability dropped".into()
            } else {
                format!("every capability dropped but {:?}", spec.cap_add)
            },
            format!("dropped {dropped:?}, added {added:?}"),
        );
    }
    let options = host.security_opt.as_deref().unwrap_or_default();
    if spec.no_new_privileges {
        check(
            "sandbox.no_new_privileges",
            options.iter().any(|o| o == "no-new-privileges"),
            "no-new-privileges".into(),
            format!("{options:?}"),
        );
    }
    match spec.seccomp_profile.as_deref() {
        Some("unconfined") => check(
            "sandbox.seccomp",
            options.iter().any(|o| o == "seccomp=unconfined"),
            "unconfined".into(),
            format!("{options:?}"),
        ),
        Some(_) => check(
            "sandbox.seccomp",
            options.iter().any(|o| names_profile(o, profile_file)),
            "packbox's profile".into(),
            format!("{options:?}"),
        ),
        None => {}
    }
    // Podman's compat API ignores the runtime a container asks for (it reports `oci`).
    if let Some(runtime) = &spec.oci_runtime {
        let applied = host.runtime.clone().unwrap_or_default();
        check(
            "sandbox.oci_runtime",
            &applied == runtime,
            runtime.clone(),
            format!("{applied:?} (the engine's default)"),
        );
    }
    let user = config.user.clone().unwrap_or_default();
    check(
        "sandbox.user",
        user == spec.user,
        spec.user.clone(),
        if user.is_empty() {
            "the image's user".into()
        } else {
            user
        },
    );
    for (path, options) in &spec.tmpfs {
        let mounted = host.tmpfs.as_ref().and_then(|t| t.get(path));
        check(
            "sandbox.tmp_size",
            mounted.is_some_and(|m| size_of(m) == size_of(options)),
            format!("tmpfs {path} {}", size_of(options).unwrap_or_default()),
            mounted.map_or("none".to_string(), |m| format!("tmpfs {path} {m}")),
        );
    }
    missing
}

/// `nofile` as Docker names it, `RLIMIT_NOFILE` as Podman reports it.
fn is_nofile(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.strip_prefix("rlimit_").unwrap_or(&name) == "nofile"
}

/// The `size=` of tmpfs options.
fn size_of(options: &str) -> Option<&str> {
    options.split(',').find_map(|o| o.strip_prefix("size="))
}

/// What a Podman service says about itself in answer to a ping (`GET /_ping`): the Docker API
/// version it serves and its own version. Podman 4.3's version endpoint takes about half a second
/// (it asks its OCI runtime and conmon for their versions: 490 ms measured here, against 8 ms for
/// the ping), which every one-shot run paid before its first container; the ping's headers say as
/// much as packbox needs from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PodmanPing {
    /// The Docker API version served (`Api-Version`, `1.41`).
    pub api_version: String,
    /// Podman's version (`Libpod-Api-Version`, `4.3.1`).
    pub podman_version: String,
}

impl PodmanPing {
    /// Reads a ping's headers: `None` unless they come from Podman (Docker's ping names no
    /// libpod version).
    fn from_headers(headers: &hyper::HeaderMap) -> Option<PodmanPing> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        Some(PodmanPing {
            api_version: header("api-version")?,
            podman_version: header("libpod-api-version")?,
        })
    }
}

/// Pings the engine on a Unix socket: `Some` when a Podman service answered, `None` when the
/// engine is not Podman or the ping failed (the caller then asks the version endpoint, whose
/// errors it reports).
pub(super) async fn ping(socket: &Path) -> Option<PodmanPing> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    let request = hyper::Request::get("/_ping")
        .header(hyper::header::HOST, "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .ok()?;
    let exchange = async {
        let response = sender.send_request(request).await.ok()?;
        PodmanPing::from_headers(response.headers())
    };
    tokio::select! {
        answer = exchange => answer,
        // The connection ended before the answer: no ping.
        _ = connection => None,
    }
}

/// Podman's answer (500, where Docker says 409) to a signal for a container that has already
/// exited: the kill raced the container's own end, which is no error for packbox.
pub(super) fn is_not_running(error: &BollardError) -> bool {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => *status_code == 500 && message.contains("container state improper"),
        _ => false,
    }
}

/// Podman's answer (500, where Docker says 409) to a create whose container name is taken.
pub(super) fn name_taken_on_podman(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code: 500, message }
        if message.contains("is already in use"))
}

/// Podman 4.3 names a container's state `stopped` for a moment after its process died and
/// before its clean-up ran (Docker's API has no such state, so the answer cannot be read: a
/// whole listing or inspection fails). Seen in `packbox gc` beside runs ending on rootful
/// Podman; read again, the state is `exited`.
pub(super) fn podman_state_of_a_moment(error: &BollardError) -> bool {
    error.to_string().contains("unknown variant `stopped`")
}

/// Podman's answer when an image it was listing was removed meanwhile (its list holds no lock):
/// 500 with `image not known` for an id of the list, not a fault of the request.
pub(super) fn vanished_during_listing(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code: 500, message }
        if message.contains("image not known"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_on_podman_carries_the_image_settings_as_instructions() {
        let spec = super::super::CommitSpec {
            tag: "packbox/env:x".into(),
            env: vec!["PATH=/opt/venv/bin:/usr/bin".into(), "EMPTY=".into()],
            cmd: vec!["/bin/sh".into()],
            working_dir: "/pack".into(),
            user: "65534:65534".into(),
            labels: std::collections::HashMap::from([
                ("packbox.owner_pid".to_string(), String::new()),
                ("packbox.kind".to_string(), "env".to_string()),
            ]),
        };
        assert_eq!(
            commit_changes(&spec).expect("instructions"),
            "ENV PATH=\"/opt/venv/bin:/usr/bin\"\nENV EMPTY=\"\"\nCMD [\"/bin/sh\"]\nENTRYPOINT []\n\
             WORKDIR /pack\nUSER 65534:65534\nLABEL packbox.kind=\"env\"\nLABEL packbox.owner_pid=\"\""
        );
        let broken = super::super::CommitSpec {
            env: vec!["A=1\nUSER root".into()],
            ..spec
        };
        assert!(commit_changes(&broken).is_err());
    }
    use bollard::models::ResourcesUlimits;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "img".into(),
            user: "65534:65534".into(),
            tmpfs: [("/tmp".to_string(), "rw,size=67108864,mode=1777".to_string())].into(),
            read_only_rootfs: true,
            network_mode: "none".into(),
            cap_drop_all: true,
            cap_add: Vec::new(),
            no_new_privileges: true,
            memory_bytes: 512 << 20,
            pids_limit: 256,
            nano_cpus: 1_000_000_000,
            nofile: 1024,
            seccomp_profile: Some("{}".into()),
            ..Default::default()
        }
    }

    /// What Podman 4.3 rootful reports for packbox's spec (measured).
    fn rootful(profile: &Path) -> (ContainerConfig, HostConfig) {
        let config = ContainerConfig {
            user: Some("65534:65534".into()),
            ..Default::default()
        };
        let host = HostConfig {
            memory: Some(512 << 20),
            memory_swap: Some(512 << 20),
            pids_limit: Some(256),
            nano_cpus: Some(1_000_000_000),
            cpu_quota: Some(100_000),
            cpu_period: Some(100_000),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("RLIMIT_NOFILE".into()),
                soft: Some(1024),
                hard: Some(1024),
            }]),
            readonly_rootfs: Some(true),
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["CAP_CHOWN".into(), "CAP_SETFCAP".into()]),
            cap_add: Some(Vec::new()),
            security_opt: Some(vec![
                "no-new-privileges".into(),
                format!("seccomp={}", profile.display()),
            ]),
            tmpfs: Some(
                [(
                    "/tmp".to_string(),
                    "rw,size=67108864,mode=1777,rprivate".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        (config, host)
    }

    #[test]
    fn every_setting_podman_applied_passes() {
        let profile = Path::new("/tmp/packbox-seccomp-x/ab.json");
        let (config, host) = rootful(profile);
        assert_eq!(not_applied(&spec(), &config, &host, Some(profile)), vec![]);
    }

    #[test]
    fn limits_dropped_by_rootless_podman_on_cgroup_v1_are_each_named() {
        let profile = Path::new("/tmp/p.json");
        let (config, mut host) = rootful(profile);
        // Measured: Podman 4.3 rootless on cgroup v1 reports 0 and no ulimits.
        host.memory = Some(0);
        host.memory_swap = Some(0);
        host.pids_limit = Some(0);
        host.nano_cpus = Some(0);
        host.cpu_quota = Some(0);
        host.ulimits = Some(Vec::new());
        let missing = not_applied(&spec(), &config, &host, Some(profile));
        let names: Vec<_> = missing.iter().map(|m| m.setting).collect();
        assert_eq!(
            names,
            [
                "sandbox.memory",
                "sandbox.pids",
                "sandbox.cpus",
                "sandbox.nofile"
            ]
        );
        assert_eq!(
            missing[0].to_string(),
            "sandbox.memory (asked 536870912 bytes, no swap, applied no limit, memory+swap no limit)"
        );
    }

    #[test]
    fn a_profile_taken_for_another_file_or_dropped_is_named() {
        let profile = Path::new("/tmp/p.json");
        let (config, mut host) = rootful(Path::new("/elsewhere.json"));
        let missing = not_applied(&spec(), &config, &host, Some(profile));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].setting, "sandbox.seccomp");
        host.security_opt = Some(Vec::new());
        let names: Vec<_> = not_applied(&spec(), &config, &host, Some(profile))
            .iter()
            .map(|m| m.setting)
            .collect();
        assert_eq!(names, ["sandbox.no_new_privileges", "sandbox.seccomp"]);
    }

    #[test]
    fn an_oci_runtime_podman_ignores_is_named() {
        let profile = Path::new("/tmp/p.json");
        let (config, mut host) = rootful(profile);
        // Measured: asked for `kata`, Podman 4.3 reports `oci` and runs its default runtime.
        host.runtime = Some("oci".into());
        let mut asked = spec();
        asked.oci_runtime = Some("kata".into());
        let missing = not_applied(&asked, &config, &host, Some(profile));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].setting, "sandbox.oci_runtime");
    }

    #[test]
    fn user_network_root_and_tmp_are_checked() {
        let profile = Path::new("/tmp/p.json");
        let (mut config, mut host) = rootful(profile);
        config.user = Some(String::new());
        host.network_mode = Some("bridge".into());
        host.readonly_rootfs = Some(false);
        host.tmpfs = None;
        host.cap_add = Some(vec!["CAP_SYS_ADMIN".into()]);
        let names: Vec<_> = not_applied(&spec(), &config, &host, Some(profile))
            .iter()
            .map(|m| m.setting)
            .collect();
        assert_eq!(
            names,
            [
                "sandbox.read_only_root",
                "sandbox.network",
                "sandbox.cap_drop_all",
                "sandbox.user",
                "sandbox.tmp_size"
            ]
        );
    }

    #[test]
    fn profile_files_are_readable_by_every_user_and_written_once_per_content() {
        use std::os::unix::fs::PermissionsExt;
        let files = ProfileFiles::new().expect("a folder");
        let first = files.file_for("{\"a\":1}").expect("written");
        let again = files.file_for("{\"a\":1}").expect("found");
        let other = files.file_for("{\"a\":2}").expect("written");
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert_eq!(std::fs::read_to_string(&first).expect("read"), "{\"a\":1}");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&first), 0o644);
        assert_eq!(mode(files.dir()), 0o755);
        let dir = files.dir().to_path_buf();
        drop(files);
        assert!(!dir.exists(), "the folder goes with the connection");
    }

    #[test]
    fn only_a_podman_ping_says_who_answered() {
        let mut podman = hyper::HeaderMap::new();
        podman.insert("api-version", "1.41".parse().expect("header"));
        podman.insert("libpod-api-version", "4.3.1".parse().expect("header"));
        podman.insert("server", "Libpod/4.3.1 (linux)".parse().expect("header"));
        assert_eq!(
            PodmanPing::from_headers(&podman),
            Some(PodmanPing {
                api_version: "1.41".into(),
                podman_version: "4.3.1".into(),
            })
        );
        // Docker's ping: an API version, no libpod version.
        let mut docker = hyper::HeaderMap::new();
        docker.insert("api-version", "1.41".parse().expect("header"));
        docker.insert("docker-experimental", "false".parse().expect("header"));
        docker.insert("builder-version", "2".parse().expect("header"));
        assert_eq!(PodmanPing::from_headers(&docker), None);
        // An empty libpod version says nothing.
        docker.insert("libpod-api-version", "".parse().expect("header"));
        assert_eq!(PodmanPing::from_headers(&docker), None);
    }

    #[test]
    fn podmans_500_for_a_kill_of_an_exited_container_is_not_running() {
        // Measured on rootless Podman 4.3.1: a SIGKILL after the grace period raced the exit.
        let podman = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "can only kill running containers. 07c6 is in state exited: container state improper".into(),
        };
        assert!(is_not_running(&podman));
        let other = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "runc: kill failed".into(),
        };
        assert!(!is_not_running(&other));
    }

    #[test]
    fn podmans_500_for_a_taken_container_name_is_in_use() {
        let podman = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "container create: creating container storage: the container name \"p-lock\" is already in use by 121e. You have to remove that container to be able to reuse that name: that name is already in use".into(),
        };
        assert!(name_taken_on_podman(&podman));
        let other = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "runc: create failed".into(),
        };
        assert!(!name_taken_on_podman(&other));
    }

    #[test]
    fn podmans_momentary_stopped_state_is_read_again_and_other_bad_answers_are_not() {
        let stopped = serde_json::from_str::<bollard::models::ContainerSummary>(
            r#"{"Id": "a4a4", "State": "stopped"}"#,
        )
        .map_err(|err| BollardError::JsonSerdeError { err })
        .expect_err("bollard knows no `stopped` state");
        assert!(podman_state_of_a_moment(&stopped), "{stopped}");
        let other = serde_json::from_str::<bollard::models::ContainerSummary>(
            r#"{"Id": "a4a4", "State": "melted"}"#,
        )
        .map_err(|err| BollardError::JsonSerdeError { err })
        .expect_err("nor a `melted` one");
        assert!(!podman_state_of_a_moment(&other));
    }

    #[test]
    fn podmans_list_that_raced_a_removal_is_read_again_and_nothing_else_is() {
        let raced = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "reading image \"3d69\": locating image with ID \"3d69\": image not known"
                .into(),
        };
        assert!(vanished_during_listing(&raced));
        let refused = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "invalid filter \"scope\"".into(),
        };
        assert!(!vanished_during_listing(&refused));
        let not_found = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "image not known".into(),
        };
        assert!(!vanished_during_listing(&not_found));
    }
}
