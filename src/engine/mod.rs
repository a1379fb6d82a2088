//! The seam to the container engine: what packbox asks of an engine, in packbox's own terms.
//!
//! [`ContainerEngine`] is the whole conversation. [`DockerEngine`] speaks it to a Docker engine
//! through bollard (the only code in the crate that knows bollard); a recording fake speaks it in
//! unit tests, so the container lifecycle, the warm pool, the orphan sweep, pruning and build-once
//! locking are tested without an engine. Errors come back typed, naming the image or container
//! they concern; "not found" and "already stopped" answers that are normal for packbox are folded
//! into ordinary return values by every implementation.

mod docker;
mod docker_network;
mod docker_swarm;
pub mod endpoint;
#[cfg(test)]
pub(crate) mod fake;
mod podman;
pub(crate) mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncWrite;

pub use docker::{DockerEngine, MIN_API_VERSION};
pub use podman::NotApplied;
pub use swarm::{
    LogChunk, LogStream, NetworkSpec, NodeState, SecretFile, ServiceSpec, SharedSwarm, SwarmEngine,
    SwarmKind, SwarmNode, TaskState, TaskStatus, TmpfsMount,
};

/// The engine as the stages hold it: shared, cheap to clone, any implementation.
pub type SharedEngine = Arc<dyn ContainerEngine>;

/// Something the engine could not do, naming what it was asked about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine could not be used at all: it did not answer, TLS failed, or its API is too
    /// old. The most common set-up problems, so each kind gets its own hint.
    #[error("the Docker engine at {endpoint} {problem}")]
    Unreachable {
        /// The engine's address as a URL.
        endpoint: String,
        /// What went wrong, in terms the user can act on.
        problem: ConnectProblem,
        /// The client's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The engine answered with an error to one request.
    #[error("docker engine: {what}")]
    Api {
        /// The request, naming what it concerned (`removing image ID`).
        what: String,
        /// The engine's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An image build reported an error (a failing step, a missing base image).
    #[error("building image {tag} failed: {message}")]
    Build {
        /// The tag the image was being built for.
        tag: String,
        /// The engine's error text.
        message: String,
    },
    /// A request was refused because the thing it concerns is in use (an image a container
    /// uses, a container being removed).
    #[error("docker engine: {what}: in use")]
    InUse {
        /// The request, naming what it concerned.
        what: String,
    },
    /// This engine cannot do what packbox needs here, for a reason packbox knows.
    #[error("{what} cannot be set: {why}")]
    NotSupported {
        /// What packbox could not ask for.
        what: String,
        /// Why this engine cannot take it.
        why: String,
    },
    /// The engine answered with something packbox cannot use (too large, malformed).
    #[error("docker engine: {what}: {message}")]
    Unexpected {
        /// The request, naming what it concerned.
        what: String,
        /// What is wrong with the answer.
        message: String,
    },
}

/// Why an engine could not be used, in terms the user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectProblem {
    /// Nothing listens at the address.
    Refused,
    /// The Unix socket file does not exist.
    NoSocket,
    /// The Unix socket exists but this user may not open it.
    SocketPermission,
    /// The host name does not resolve.
    HostNotFound,
    /// Connected, but no answer came in time.
    NoAnswer {
        /// How long packbox waited.
        seconds: u64,
    },
    /// The engine's certificate is not signed by the CA packbox was given.
    UntrustedEngineCertificate {
        /// The CA file packbox was given.
        ca: String,
    },
    /// The engine's certificate does not name the host packbox connected to.
    CertificateNameMismatch,
    /// The engine's certificate was refused for another reason (expired, wrong purpose, ...).
    BadEngineCertificate {
        /// The TLS library's reason.
        detail: String,
    },
    /// The engine refused packbox's client certificate (signed by a CA it does not trust).
    ClientCertificateRefused {
        /// The client certificate file packbox showed.
        cert: String,
    },
    /// The engine closed the connection right after the TLS handshake, before answering: what
    /// an engine does (in TLS 1.3) when it refuses the client certificate, when its alert loses
    /// the race with the close.
    ClosedAfterTlsHandshake {
        /// The client certificate file packbox showed.
        cert: String,
    },
    /// The engine speaks plain HTTP and packbox spoke TLS.
    EngineNotTls,
    /// The engine speaks TLS and packbox spoke plain HTTP.
    EngineWantsTls,
    /// Another TLS failure.
    TlsHandshake {
        /// The TLS library's reason.
        detail: String,
    },
    /// The engine's API is older than packbox supports.
    ApiTooOld {
        /// The API version the engine reported.
        found: String,
    },
    /// Anything else (the cause is in the error's source).
    Failed,
}

impl fmt::Display for ConnectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectProblem::Refused => write!(f, "does not answer (connection refused)"),
            ConnectProblem::NoSocket => write!(f, "does not answer (no such socket)"),
            ConnectProblem::SocketPermission => {
                write!(f, "refused this user (permission denied on the socket)")
            }
            ConnectProblem::HostNotFound => write!(f, "does not answer (host name not found)"),
            ConnectProblem::NoAnswer { seconds } => {
                write!(f, "does not answer (no reply within {seconds} s)")
            }
            ConnectProblem::UntrustedEngineCertificate { ca } => write!(
                f,
                "failed the TLS handshake: its certificate is not signed by the CA in {ca} (untrusted certificate)"
            ),
            ConnectProblem::CertificateNameMismatch => write!(
                f,
                "failed the TLS handshake: its certificate is not valid for this host name"
            ),
            ConnectProblem::BadEngineCertificate { detail } => write!(
                f,
                "failed the TLS handshake: its certificate was refused ({detail})"
            ),
            ConnectProblem::ClientCertificateRefused { cert } => write!(
                f,
                "failed the TLS handshake: it refused the client certificate {cert} (not signed by a CA it trusts)"
            ),
            ConnectProblem::ClosedAfterTlsHandshake { cert } => write!(
                f,
                "closed the connection after the TLS handshake: it most likely refused the client certificate {cert}"
            ),
            ConnectProblem::EngineNotTls => write!(
                f,
                "failed the TLS handshake: it does not speak TLS (a plain-HTTP engine?)"
            ),
            ConnectProblem::EngineWantsTls => write!(f, "refused plain HTTP: it requires TLS"),
            ConnectProblem::TlsHandshake { detail } => {
                write!(f, "failed the TLS handshake ({detail})")
            }
            ConnectProblem::ApiTooOld { found } => write!(
                f,
                "speaks API {found}, older than packbox needs ({}.{}, Docker 20.10)",
                MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
            ConnectProblem::Failed => write!(f, "could not be used"),
        }
    }
}

impl ConnectProblem {
    /// The next step for the user.
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectProblem::Refused
            | ConnectProblem::NoSocket
            | ConnectProblem::NoAnswer { .. }
            | ConnectProblem::HostNotFound
            | ConnectProblem::Failed => {
                "start the engine (scripts/ensure-docker does it on Debian) or point DOCKER_HOST at one; `packbox doctor` shows which engine packbox chose and why"
            }
            ConnectProblem::SocketPermission => {
                "add this user to the docker group, or run packbox as a user that may use the engine"
            }
            ConnectProblem::UntrustedEngineCertificate { .. }
            | ConnectProblem::CertificateNameMismatch
            | ConnectProblem::BadEngineCertificate { .. } => {
                "DOCKER_CERT_PATH/ca.pem must be the CA that signed the engine's certificate, and the certificate must name the host in DOCKER_HOST"
            }
            ConnectProblem::ClientCertificateRefused { .. }
            | ConnectProblem::ClosedAfterTlsHandshake { .. } => {
                "use a client certificate (cert.pem, key.pem in DOCKER_CERT_PATH) signed by the CA the engine was started with (dockerd --tlscacert)"
            }
            ConnectProblem::EngineNotTls => {
                "unset DOCKER_TLS_VERIFY for a plain engine (port 2375), or point DOCKER_HOST at its TLS port (2376)"
            }
            ConnectProblem::EngineWantsTls => {
                "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)"
            }
            ConnectProblem::TlsHandshake { .. } => {
                "check DOCKER_CERT_PATH and the engine's --tlscacert/--tlscert; `packbox doctor` shows the files in use"
            }
            ConnectProblem::ApiTooOld { .. } => "upgrade the engine to Docker 20.10 or newer",
        }
    }
}

/// The three PEM files of mutual TLS, and where their folder came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TlsFiles {
    /// The CA the engine's certificate must be signed by.
    pub ca: PathBuf,
    /// The client certificate packbox shows the engine.
    pub cert: PathBuf,
    /// The client certificate's private key.
    pub key: PathBuf,
    /// What named the folder (`DOCKER_CERT_PATH`, the docker config folder, a context).
    pub source: String,
}

/// How packbox reaches the engine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Transport {
    /// A Unix socket on this machine: the engine sees this machine's files.
    Unix {
        /// The socket file.
        socket: PathBuf,
    },
    /// TCP, plain or with mutual TLS: the engine may be anywhere.
    Tcp {
        /// `host:port`.
        address: String,
        /// The files of mutual TLS; `None` for plain HTTP.
        tls: Option<TlsFiles>,
    },
}

/// A signal packbox sends to a container: the polite one first, then the one that cannot be
/// ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: the action may clean up before the grace period ends.
    Term,
    /// SIGKILL: after the grace period, or when the container must go now.
    Kill,
}

impl Signal {
    /// The engine's name for the signal.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

/// One mount of a host folder into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// The folder on the engine's host (the pack's folder only when the engine runs here).
    pub host_path: String,
    /// Where it appears in the container.
    pub container_path: String,
    /// The container cannot write to it.
    pub read_only: bool,
}

/// One mount of a named volume into a container (a pack delivered by content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's name.
    pub volume: String,
    /// Where it appears in the container.
    pub container_path: String,
    /// The container cannot write to it.
    pub read_only: bool,
}

/// Everything packbox asks of a container, in engine-neutral terms; built by the sandbox stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    /// The image to run.
    pub image: String,
    /// The command, an argument per item (no shell).
    pub cmd: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The folder the command starts in.
    pub working_dir: String,
    /// The `uid:gid` the command runs as.
    pub user: String,
    /// Ordered maps, so that equal specs print equal (the warm pool keys on them).
    pub labels: BTreeMap<String, String>,
    /// Host folders mounted in (a pack read from this machine).
    pub binds: Vec<BindMount>,
    /// Named volumes; each must exist (the engine would make an empty one).
    pub volumes: Vec<VolumeMount>,
    /// Mount point to tmpfs options (`size=64m,mode=1777`, ...).
    pub tmpfs: BTreeMap<String, String>,
    /// The root file system is read-only.
    pub read_only_rootfs: bool,
    /// `none`, `bridge` or a network's name.
    pub network_mode: String,
    /// Drop every Linux capability.
    pub cap_drop_all: bool,
    /// Capabilities kept after dropping all (`CHOWN`, ...): empty for every container but the
    /// root apt step of an environment build.
    pub cap_add: Vec<String>,
    /// Forbid gaining privileges (setuid, file capabilities).
    pub no_new_privileges: bool,
    /// Memory limit in bytes, also the limit of memory plus swap (no swap).
    pub memory_bytes: i64,
    /// At most this many processes and threads.
    pub pids_limit: i64,
    /// CPU share in billionths of a CPU (the engine's `NanoCpus`).
    pub nano_cpus: i64,
    /// Open file limit, soft and hard.
    pub nofile: i64,
    /// An OCI runtime other than the engine's default (e.g. `runsc`), when asked for.
    pub oci_runtime: Option<String>,
    /// A seccomp profile in the engine's JSON format (or `unconfined`); `None` keeps the
    /// engine's default.
    pub seccomp_profile: Option<String>,
    /// The container's first process, which runs the command.
    pub init: InitProcess,
    /// The container's IPv4 address on the network `network_mode` names (a network packbox
    /// made with a subnet of its own); `None` lets the engine choose.
    pub ipv4_address: Option<String>,
    /// Kernel settings of the container's own namespaces (`net.ipv4.ip_forward`).
    pub sysctls: BTreeMap<String, String>,
    /// Name servers the engine's resolver inside the container forwards to; empty keeps the
    /// engine's.
    pub dns: Vec<String>,
    /// The operator allowed a sandbox weaker than the defaults: a setting the engine does not
    /// apply is reported with the outcome instead of refusing the run.
    pub allow_weaker: bool,
}

/// Where packbox's init is inside a container that runs it (its volume is mounted at its
/// folder, read-only).
pub const PACKBOX_INIT_DIR: &str = "/.packbox";
/// The init's path inside the container.
pub const PACKBOX_INIT_PATH: &str = "/.packbox/packbox-init";

/// The process that is PID 1 of a container and runs its command: it reaps zombies and
/// forwards SIGTERM either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InitProcess {
    /// The engine's own tiny init (`docker run --init`).
    #[default]
    Engine,
    /// packbox's init (`init/`), from the named volume, mounted read-only at
    /// [`PACKBOX_INIT_DIR`]: it relays the command's output in frames on the container's
    /// stdout and ends with a frame holding the command's exit status, which the command
    /// cannot forge (see `lifecycle::frames`).
    Packbox {
        /// The volume holding the init's binary.
        volume: String,
    },
}

/// A local bridge network packbox makes (per-run networks of egress grants).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Its name, unique.
    pub name: String,
    /// Its labels, which say who made it and for what, so leftovers can be swept.
    pub labels: BTreeMap<String, String>,
    /// Its IPv4 subnet (`198.18.0.8/29`); `None` lets the engine choose.
    pub subnet: Option<String>,
    /// No route beyond it: the engine forwards nothing in or out.
    pub internal: bool,
    /// Whether the host gets an address on it. Without one, a container on it cannot reach the
    /// host's own services at all (an internal bridge still gives the host an address).
    pub host_address: bool,
}

/// A local network, as packbox needs to know it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkSummary {
    /// The engine's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its driver (`bridge`, `overlay`, ...).
    pub driver: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its IPv4 and IPv6 subnets (`172.17.0.0/16`).
    pub subnets: Vec<String>,
    /// The gateway address of each subnet that has one (the host's address on it).
    pub gateways: Vec<String>,
    /// Whether the engine forwards nothing in or out of it.
    pub internal: bool,
}

/// Which stream a chunk of container output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

/// One frame of container output, as the engine sent it (up to ~32 KiB).
#[derive(Debug)]
pub struct OutputChunk {
    /// Which stream the bytes came from.
    pub stream: StreamKind,
    /// The bytes, as the action wrote them (not necessarily whole lines or UTF-8).
    pub bytes: Bytes,
}

/// The output frames of an attached container, until it ends.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, EngineError>> + Send>>;

/// The two ends of an attached container: its output frames and its stdin.
pub struct Attached {
    /// The container's output frames until it ends.
    pub output: OutputStream,
    /// The container's stdin; closing it gives the action end of file.
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
}

/// What packbox needs to know about a container after it stopped.
#[derive(Clone, Debug, Default)]
pub struct ContainerState {
    /// The kernel killed it for passing its memory limit.
    pub oom_killed: bool,
    /// Its exit code; `None` when the engine reports none.
    pub exit_code: Option<i64>,
    /// Whether its process still runs.
    pub running: bool,
    /// Whether it is being removed, or is gone: someone removed it.
    pub removed: bool,
}

/// A container found by label, for sweeping leftovers.
#[derive(Clone, Debug)]
pub struct ContainerSummary {
    /// The engine's container id.
    pub id: String,
    /// The id of the image the container was created from.
    pub image_id: Option<String>,
    /// Its labels, which say who made it and for what.
    pub labels: HashMap<String, String>,
    /// Whether its process runs.
    pub running: bool,
    /// When the engine created it (seconds since the epoch; 0 when it does not say).
    pub created: i64,
}

/// Which engine answers: Docker or Podman (whose version endpoint names a "Podman Engine"
/// component), its version, and whether it runs without root. Known from the connection on, so
/// every outcome can say where it ran and the engine module can speak each one's dialect.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EngineIdentity {
    /// `docker` or `podman`.
    pub name: EngineName,
    /// The engine's version (`20.10.24`, `4.3.1`).
    pub version: String,
    /// Whether the engine's containers are made by root or by an unprivileged user.
    pub mode: EngineMode,
}

impl EngineIdentity {
    /// A Docker engine of this version, run by root (the fake's default, and tests').
    pub fn docker(version: &str) -> EngineIdentity {
        EngineIdentity {
            name: EngineName::Docker,
            version: version.to_string(),
            mode: EngineMode::Rootful,
        }
    }

    /// Whether this is Podman (any mode).
    pub fn is_podman(&self) -> bool {
        self.name == EngineName::Podman
    }

    /// Whether this is Podman not known to run as root (rootless, or of unknown mode over TCP):
    /// such a Podman sets resource limits only on cgroup v2 with the controllers delegated to
    /// its user, and drops every one on a cgroup v1 host, which the runs, the builds and the
    /// doctor each have to say.
    pub fn is_rootless_podman(&self) -> bool {
        self.is_podman() && self.mode != EngineMode::Rootful
    }
}

impl fmt::Display for EngineIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.name {
            EngineName::Docker => "Docker",
            EngineName::Podman => "Podman",
        };
        write!(f, "{name} {} ({})", self.version, self.mode.as_str())
    }
}

/// The engines packbox speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineName {
    /// Docker Engine (dockerd), or anything that does not say it is Podman.
    Docker,
    /// Podman's Docker-compatible API service (`podman system service`).
    Podman,
}

/// Who makes the engine's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineMode {
    /// Root: the engine may set cgroup limits and any user id on the host.
    Rootful,
    /// An unprivileged user, in a user namespace: limits need cgroup v2 delegation.
    Rootless,
    /// Not known (a Podman service over TCP, whose socket cannot be looked at).
    Unknown,
}

impl EngineMode {
    /// `rootful`, `rootless` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineMode::Rootful => "rootful",
            EngineMode::Rootless => "rootless",
            EngineMode::Unknown => "unknown",
        }
    }
}

/// What the engine is and offers, for checks that depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineInfo {
    /// The engine's version (`20.10.24`).
    pub server_version: String,
    /// The OCI runtimes it offers (`runc`, `runsc`, ...), sorted by name.
    pub oci_runtimes: Vec<OciRuntime>,
    /// CPUs of the engine's host; 0 when it does not say.
    pub cpus: i64,
    /// The API version packbox and the engine speak (the engine's, when older than bollard's).
    pub api_version: String,
    /// The engine host's operating system, as the engine names it.
    pub os: String,
    /// The engine host's CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// The engine host's kernel version.
    pub kernel: String,
    /// The engine host's name (tells a remote engine from the local one at a glance).
    pub name: String,
    /// How the engine stores image layers (`overlay2`, ...).
    pub storage_driver: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    /// `systemd` or `cgroupfs`.
    pub cgroup_driver: String,
    /// The OCI runtime containers get when they ask for none.
    pub default_runtime: String,
    /// `name=seccomp,profile=default`, `name=userns`, `name=rootless`, ...
    pub security_options: Vec<String>,
}

/// A volume found by label, for delivering packs and collecting them.
#[derive(Clone, Debug)]
pub struct VolumeSummary {
    /// The volume's name.
    pub name: String,
    /// Its labels, which say what it holds (a pack and its digest) and who made it.
    pub labels: HashMap<String, String>,
    /// As the engine writes it (RFC 3339), which sorts by time.
    pub created_at: String,
}

/// Bytes of an archive (a tar, or `docker save` images), streamed.
pub type ArchiveStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Bytes of an image archive as they stream from an engine.
pub type ImageExport = Pin<Box<dyn Stream<Item = Result<Bytes, EngineError>> + Send>>;

/// An OCI runtime as the engine registered it (`daemon.json` `runtimes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OciRuntime {
    /// The name containers ask for (`runsc`).
    pub name: String,
    /// The runtime's binary.
    pub path: String,
    /// Arguments the engine passes to every call of the binary.
    pub args: Vec<String>,
}

impl OciRuntime {
    /// A runtime registered by name only (the engine's own `runc`).
    pub fn named(name: &str) -> OciRuntime {
        OciRuntime {
            name: name.to_string(),
            path: name.to_string(),
            args: Vec::new(),
        }
    }
}

/// An image found by label, for listing and pruning environments.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    /// The engine's image id.
    pub id: String,
    /// The names it is tagged with (`repository:tag`); empty when untagged.
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
    /// Its size as the engine reports it.
    pub size_bytes: i64,
    /// Its labels, which say what packbox built it for.
    pub labels: HashMap<String, String>,
}

/// An image's id and labels, as one inspection reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageLabels {
    /// The engine's image id.
    pub id: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// An image build request: the context is an in-memory tar holding the Dockerfile.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// The name the built image gets (`repository:tag`).
    pub tag: String,
    /// A tar holding the Dockerfile and anything it copies.
    pub context_tar: Vec<u8>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// Values for the Dockerfile's `ARG`s.
    pub build_args: HashMap<String, String>,
    /// Labels put on the built image, so packbox can find and prune it later.
    pub labels: HashMap<String, String>,
    /// The network build steps run in (`none` or `bridge`; steps that install packages need one).
    pub network_mode: String,
    /// Memory (and memory plus swap) of each build step; the API takes at most 2 GiB - 1, and
    /// larger values are capped there.
    pub memory_bytes: Option<u64>,
    /// Build every step afresh, taking nothing from the engine's cache: whoever shares the
    /// engine can plant a cache entry (an image whose parent and recorded step match) that a
    /// cached build would take as its own.
    pub no_cache: bool,
}

/// An image made of a stopped container's file system (`docker commit`), with a configuration
/// of packbox's: nothing the container ran with (its command, its labels beyond these, an
/// environment variable of its own) is meant to be kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitSpec {
    /// `repository:tag` of the image; empty for an untagged one.
    pub tag: String,
    /// The image's environment, `NAME=value`.
    pub env: Vec<String>,
    /// The image's command.
    pub cmd: Vec<String>,
    /// The image's working folder.
    pub working_dir: String,
    /// The `uid:gid` its containers run as.
    pub user: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// The log target of the engine client library: its debug and trace lines hold the body of
/// every request it sends (a Swarm secret's data, the parameter document, included), so a log
/// must never show them at those levels.
pub const ENGINE_CLIENT_LOG_TARGET: &str = "bollard";

/// Where build output lines go as they arrive.
pub type LineSink<'a> = &'a mut (dyn FnMut(&str) + Send);

/// What packbox asks of a container engine. Every method is one request (or one stream drained
/// to its end); timeouts and cancellation are the caller's, so the rules for them live in one
/// place above the seam.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync + fmt::Debug {
    /// Where the engine is (`unix:///var/run/docker.sock`, `tcp://...`), for messages.
    fn endpoint(&self) -> &str;

    /// Which engine this is (found when connecting).
    fn identity(&self) -> &EngineIdentity;

    /// The engine's Swarm face, when it has one (the swarm backend runs actions through it).
    fn swarm(self: Arc<Self>) -> Option<SharedSwarm> {
        None
    }

    /// The id of an image, or `None` when the engine does not have it.
    async fn image_id(&self, name: &str) -> Result<Option<String>, EngineError>;

    /// Pulls an image from its registry, draining the progress stream to its end. Callers bound
    /// it: where no registry answers, a pull may fail fast or hang.
    async fn pull_image(&self, name: &str) -> Result<(), EngineError>;

    /// An image's id and labels by one inspection, or `None` when the engine does not have it:
    /// what a run asks of its runtime image, where a label-filtered listing walks every image
    /// on the engine (70-100 ms with 300 images, against a few for the inspection).
    async fn image_labels(&self, name: &str) -> Result<Option<ImageLabels>, EngineError>;

    /// The registry digests the engine records for an image (`repo@sha256:...`, from pulls);
    /// empty when it has none or no such image.
    async fn image_repo_digests(&self, name: &str) -> Result<Vec<String>, EngineError>;

    /// Builds an image, passing each output line to `on_line`, and returns the new image id. An
    /// error step fails the build.
    async fn build_image(
        &self,
        spec: BuildSpec,
        on_line: LineSink<'_>,
    ) -> Result<String, EngineError>;

    /// Creates a container from a spec; returns its id. Never pulls: a missing image is an error.
    async fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<String, EngineError>;

    /// The sandbox settings of a created container that the engine did not apply as asked,
    /// read back from the engine; empty when every one holds. Docker applies every setting of
    /// the spec or refuses the create, so only Podman is asked (it drops some settings with a
    /// warning in its log, e.g. every resource limit when rootless on cgroup v1).
    async fn sandbox_not_applied(
        &self,
        id: &str,
        spec: &ContainerSpec,
    ) -> Result<Vec<NotApplied>, EngineError>;

    /// Attaches stdin, stdout and stderr; must happen before start so no output is lost.
    async fn attach(&self, id: &str) -> Result<Attached, EngineError>;

    /// Starts a created container.
    async fn start(&self, id: &str) -> Result<(), EngineError>;

    /// Waits until the container exits and returns its exit code. Call only after start.
    async fn wait(&self, id: &str) -> Result<i64, EngineError>;

    /// Sends a signal; a container that already stopped or is gone is not an error.
    async fn kill(&self, id: &str, signal: Signal) -> Result<(), EngineError>;

    /// The state of a stopped container: whether the kernel's OOM killer ended it.
    async fn container_state(&self, id: &str) -> Result<ContainerState, EngineError>;

    /// Removes a container and its anonymous volumes; one that is already gone is not an error.
    async fn remove(&self, id: &str) -> Result<(), EngineError>;

    /// All containers (running or not) that carry every given `key=value` label; every
    /// container on the engine when `labels` is empty.
    async fn containers_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError>;

    /// What the engine is and offers.
    async fn info(&self) -> Result<EngineInfo, EngineError>;

    /// All images that carry every given `key=value` label.
    async fn images_with_labels(&self, labels: &[String])
    -> Result<Vec<ImageSummary>, EngineError>;

    /// Removes an image (and its tags); refused with [`EngineError::InUse`] while a container
    /// uses it or another image builds on it. One that is already gone is not an error.
    async fn remove_image(&self, id: &str) -> Result<(), EngineError>;

    /// Removes one untagged layer and nothing under it: unlike [`remove_image`], its untagged
    /// parents stay, since a build under way may be using them from the cache. Refused with
    /// [`EngineError::InUse`] while another image builds on it; one already gone is not an error.
    ///
    /// [`remove_image`]: ContainerEngine::remove_image
    async fn remove_layer(&self, id: &str) -> Result<(), EngineError>;

    /// The size of an image in bytes (0 when the engine does not say).
    async fn image_size(&self, name: &str) -> Result<u64, EngineError>;

    /// The labels of a container by name or id, or `None` when there is no such container.
    async fn container_labels(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError>;

    /// When the engine created the volume of that name (RFC 3339, as it writes it); `None`
    /// when there is no such volume. The time tells a volume from another made later under
    /// the same name.
    async fn volume_created(&self, name: &str) -> Result<Option<String>, EngineError>;

    /// Creates a local volume with labels (creating an existing one changes nothing).
    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError>;

    /// Removes a volume; one that is gone is not an error. Returns false when the engine kept it
    /// because a container uses it.
    async fn remove_volume(&self, name: &str) -> Result<bool, EngineError>;

    /// All volumes that carry every given `key=value` label.
    async fn volumes_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<VolumeSummary>, EngineError>;

    /// Unpacks a tar archive, streamed, into a folder of a (created, not necessarily started)
    /// container; a volume mounted there receives the files.
    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        archive: ArchiveStream,
    ) -> Result<(), EngineError>;

    /// A folder of a (created, not necessarily started) container as a tar archive, streamed:
    /// a volume mounted there is read. Entries are named under the folder's last name
    /// (`pack/...` for `/pack`).
    fn download_archive(&self, id: &str, path: &str) -> ImageExport;

    /// Makes an image of the (stopped) container's file system with the configuration of
    /// `spec`, tagged; returns its id.
    async fn commit(&self, id: &str, spec: &CommitSpec) -> Result<String, EngineError>;

    /// Images as one archive (`docker save`), streamed as the engine writes it.
    fn export_images(&self, names: &[String]) -> ImageExport;

    /// Loads an image archive (`docker load`) streamed from elsewhere; returns the engine's
    /// messages (`Loaded image: ...`).
    async fn import_images(&self, archive: ArchiveStream) -> Result<Vec<String>, EngineError>;

    /// Imports a root file system tarball as an image (`docker import`) tagged `tag`, with
    /// Dockerfile-style `changes` (`ENV ...`, `CMD ...`, `LABEL ...`); returns its id.
    async fn import_rootfs(
        &self,
        tag: &str,
        rootfs: ArchiveStream,
        changes: &[String],
    ) -> Result<String, EngineError>;

    /// Creates a local bridge network; returns its id. A name that is taken, or a subnet that
    /// overlaps another network's, is [`EngineError::InUse`].
    async fn create_bridge(&self, spec: &BridgeSpec) -> Result<String, EngineError>;

    /// A network by name or id, or `None` when there is none.
    async fn network(&self, name: &str) -> Result<Option<NetworkSummary>, EngineError>;

    /// The local networks that carry every given `key=value` label.
    async fn networks_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<NetworkSummary>, EngineError>;

    /// Connects a container to a network, at `ipv4` when given.
    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        ipv4: Option<&str>,
    ) -> Result<(), EngineError>;

    /// Disconnects a container from a network; either one already gone is not an error.
    async fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError>;

    /// Removes a local network; one already gone is not an error, one a container still uses
    /// is [`EngineError::InUse`].
    async fn remove_network(&self, id: &str) -> Result<(), EngineError>;

    /// A container's IPv4 address on a network, or `None` when it is not on it.
    async fn container_address(
        &self,
        container: &str,
        network: &str,
    ) -> Result<Option<String>, EngineError>;

    /// The bytes of one regular file in a container's file system (it need not have started),
    /// at most `max_bytes`; `None` when there is no such file.
    async fn read_file(
        &self,
        id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, EngineError>;
}
