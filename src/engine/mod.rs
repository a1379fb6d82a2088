//! The seam to the container engine: what packbox asks of an engine, in packbox's own terms.
//!
//! [`ContainerEngine`] is the whole conversation. [`DockerEngine`] speaks it to a Docker engine
//! through bollard (the only code in the crate that knows bollard); a recording fake speaks it in
//! unit tests, so the container lifecycle, the warm pool, the orphan sweep, pruning and build-once
//! locking are tested without an engine. Errors come back typed, naming the image or container
//! they concern; "not found" and "already stopped" answers that are normal for packbox are folded
//! into ordinary return values by every implementation.

mod docker;
mod docker_swarm;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncWrite;

pub use docker::DockerEngine;
pub use swarm::{
    LogChunk, LogStream, NetworkSpec, SecretFile, ServiceSpec, SharedSwarm, SwarmEngine, SwarmKind,
    TaskState, TaskStatus, TmpfsMount,
};

/// The engine as the stages hold it: shared, cheap to clone, any implementation.
pub type SharedEngine = Arc<dyn ContainerEngine>;

/// Something the engine could not do, naming what it was asked about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No engine answered at all: the most common set-up problem, so it gets its own hint.
    #[error("the Docker engine does not answer ({endpoint})")]
    Unreachable {
        endpoint: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The engine answered with an error to one request.
    #[error("docker engine: {what}")]
    Api {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An image build reported an error (a failing step, a missing base image).
    #[error("building image {tag} failed: {message}")]
    Build { tag: String, message: String },
    /// A request was refused because the thing it concerns is in use (an image a container
    /// uses, a container being removed).
    #[error("docker engine: {what}: in use")]
    InUse { what: String },
    /// The engine answered with something packbox cannot use (too large, malformed).
    #[error("docker engine: {what}: {message}")]
    Unexpected { what: String, message: String },
}

/// A signal packbox sends to a container: the polite one first, then the one that cannot be
/// ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
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
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// Everything packbox asks of a container, in engine-neutral terms; built by the sandbox stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub user: String,
    /// Ordered maps, so that equal specs print equal (the warm pool keys on them).
    pub labels: BTreeMap<String, String>,
    pub binds: Vec<BindMount>,
    /// Mount point to tmpfs options (`size=64m,mode=1777`, ...).
    pub tmpfs: BTreeMap<String, String>,
    pub read_only_rootfs: bool,
    pub network_mode: String,
    pub cap_drop_all: bool,
    pub no_new_privileges: bool,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    pub nano_cpus: i64,
    pub nofile: i64,
    /// An OCI runtime other than the engine's default (e.g. `runsc`), when asked for.
    pub oci_runtime: Option<String>,
    /// A seccomp profile in the engine's JSON format (or `unconfined`); `None` keeps the
    /// engine's default.
    pub seccomp_profile: Option<String>,
}

/// Which stream a chunk of container output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// One frame of container output, as the engine sent it (up to ~32 KiB).
#[derive(Debug)]
pub struct OutputChunk {
    pub stream: StreamKind,
    pub bytes: Bytes,
}

/// The output frames of an attached container, until it ends.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, EngineError>> + Send>>;

/// The two ends of an attached container: its output frames and its stdin.
pub struct Attached {
    pub output: OutputStream,
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
}

/// What packbox needs to know about a container after it stopped.
#[derive(Clone, Debug, Default)]
pub struct ContainerState {
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
    /// Whether its process still runs.
    pub running: bool,
}

/// A container found by label, for sweeping leftovers.
#[derive(Clone, Debug)]
pub struct ContainerSummary {
    pub id: String,
    /// The id of the image the container was created from.
    pub image_id: Option<String>,
    pub labels: HashMap<String, String>,
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
}

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
    pub id: String,
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
    pub size_bytes: i64,
    pub labels: HashMap<String, String>,
}

/// An image build request: the context is an in-memory tar holding the Dockerfile.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    pub tag: String,
    pub context_tar: Vec<u8>,
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub network_mode: String,
    /// Memory (and memory plus swap) of each build step; the API takes at most 2 GiB - 1, and
    /// larger values are capped there.
    pub memory_bytes: Option<u64>,
}

/// Where build output lines go as they arrive.
pub type LineSink<'a> = &'a mut (dyn FnMut(&str) + Send);

/// What packbox asks of a container engine. Every method is one request (or one stream drained
/// to its end); timeouts and cancellation are the caller's, so the rules for them live in one
/// place above the seam.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync + fmt::Debug {
    /// Where the engine is (`unix:///var/run/docker.sock`, `tcp://...`), for messages.
    fn endpoint(&self) -> &str;

    /// The engine's Swarm face, when it has one (the swarm backend runs actions through it).
    fn swarm(self: Arc<Self>) -> Option<SharedSwarm> {
        None
    }

    /// The id of an image, or `None` when the engine does not have it.
    async fn image_id(&self, name: &str) -> Result<Option<String>, EngineError>;

    /// Pulls an image from its registry, draining the progress stream to its end. Callers bound
    /// it: where no registry answers, a pull may fail fast or hang.
    async fn pull_image(&self, name: &str) -> Result<(), EngineError>;

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

    /// The bytes of one regular file in a container's file system (it need not have started),
    /// at most `max_bytes`; `None` when there is no such file.
    async fn read_file(
        &self,
        id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, EngineError>;
}
