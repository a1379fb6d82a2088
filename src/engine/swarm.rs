//! The engine's Swarm face: what packbox asks of a Swarm manager to run one action as a one-shot
//! service, in packbox's own terms.
//!
//! A separate trait from [`super::ContainerEngine`] because only the swarm backend needs it: an
//! engine that is no Swarm manager (or a fake that plays none) simply has no Swarm face. Like the
//! container face, every method is one request (or one stream); "not found" answers that are
//! normal for packbox are folded into ordinary return values.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use super::{EngineError, StreamKind};

/// The Swarm face as the stages hold it.
pub type SharedSwarm = Arc<dyn SwarmEngine>;

/// Where the engine stands in a Swarm.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmState {
    /// Whether the engine is an active node of a Swarm.
    pub active: bool,
    /// Whether it is a manager (only managers take services).
    pub manager: bool,
    /// Nodes in the Swarm (known to managers only; 0 otherwise).
    pub nodes: i64,
}

/// A per-run network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The network's name, unique per run.
    pub name: String,
    /// Its labels, which say who made it and for which run, so leftovers can be swept.
    pub labels: BTreeMap<String, String>,
    /// An overlay with no gateway: nothing on it reaches beyond it.
    pub internal: bool,
    /// Standalone containers may join it (packbox's egress proxy joins a run's network).
    pub attachable: bool,
}

/// A tmpfs mounted into a service's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Where it is mounted in the containers.
    pub path: String,
    /// Its size limit.
    pub size_bytes: i64,
    /// Its permission bits (`0o1777` for `/tmp`).
    pub mode: u32,
}

/// A Swarm secret mounted as a file under `/run/secrets/` of a service's containers (a tmpfs
/// the engine makes; the data never touches the node's disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    /// The secret's id, as the engine gave it on creation.
    pub secret_id: String,
    /// The secret's name.
    pub secret_name: String,
    /// The file's name under `/run/secrets/`.
    pub file_name: String,
    /// The owner uid of the file, the action's user, so it can read the file.
    pub uid: String,
    /// The owner gid of the file.
    pub gid: String,
    /// The file's permission bits (`0o400`: only its owner reads it).
    pub mode: u32,
}

/// Everything packbox asks of a one-shot service: one replica, never restarted, under the
/// sandbox's limits. Built by the sandbox stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSpec {
    /// The service's name, unique per run.
    pub name: String,
    /// Labels of the service; its task's container carries them too.
    pub labels: BTreeMap<String, String>,
    /// The image the task runs (a pack image: runtime or environment plus the pack).
    pub image: String,
    /// The command, an argument per item (no shell).
    pub cmd: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The folder the command starts in.
    pub working_dir: String,
    /// The `uid:gid` the command runs as.
    pub user: String,
    /// The root file system is read-only.
    pub read_only_rootfs: bool,
    /// The tmpfs mounts (`/tmp`, the action's scratch space).
    pub tmpfs: Vec<TmpfsMount>,
    /// Drop every Linux capability.
    pub cap_drop_all: bool,
    /// Memory limit in bytes.
    pub memory_bytes: i64,
    /// CPU share in billionths of a CPU.
    pub nano_cpus: i64,
    /// At most this many processes and threads.
    pub pids_limit: i64,
    /// Open file limit.
    pub nofile: i64,
    /// Networks (ids or names) the task joins; none gives the engine's default bridge.
    pub networks: Vec<String>,
    /// Secrets mounted as files (the parameter document, which the task reads on its stdin).
    pub secrets: Vec<SecretFile>,
    /// Time between SIGTERM and SIGKILL when the task is stopped.
    pub stop_grace: Duration,
    /// Bytes the task's log may hold on its node, per file (two files are kept).
    pub log_file_bytes: u64,
    /// Placement constraints a node must all meet to take the task (`node.role==worker`).
    pub placement: Vec<String>,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Accepted but not yet running (scheduling, pulling, preparing, starting).
    Waiting,
    /// Its process runs.
    Running,
    /// Its process ended (by itself or stopped); the exit code is known.
    Exited,
    /// It never ran, or its node lost it (rejected, orphaned, removed).
    Lost,
}

/// One task of a service, as the manager reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task's id.
    pub id: String,
    /// Where it is in its life.
    pub state: TaskState,
    /// Its exit code, once it has exited.
    pub exit_code: Option<i64>,
    /// The container on its node, once there is one.
    pub container_id: Option<String>,
    /// The manager's error text (why it was rejected, could not be placed, ...).
    pub error: Option<String>,
    /// The node the task was given to, once it was placed.
    pub node_id: Option<String>,
    /// The manager wants the task stopped (its service scaled down or removed, or its node
    /// gone) while the state above is still the last one its node reported.
    pub stop_wanted: bool,
}

/// Whether a node's manager hears from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// It reports to the managers.
    Ready,
    /// The managers stopped hearing from it (missed heartbeats): its tasks are lost with it.
    Down,
    /// Anything else the Swarm says (`unknown`, `disconnected`), as it says it.
    Other(String),
}

/// A node of the Swarm, as the outcome names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SwarmNode {
    /// The node's hostname.
    pub hostname: String,
    /// The node's id in the Swarm.
    pub id: String,
    /// Whether the managers hear from it.
    #[serde(skip)]
    pub state: NodeState,
}

/// One message of a task's log: its stream, the engine's timestamp (RFC 3339 with nanoseconds,
/// fixed width, so timestamps order as strings) and its bytes.
#[derive(Clone, Debug)]
pub struct LogChunk {
    /// Which stream the bytes came from.
    pub stream: StreamKind,
    /// The engine's timestamp of the message, for ordering and for reading on after a reconnect.
    pub timestamp: String,
    /// The bytes, as the action wrote them.
    pub bytes: Bytes,
}

/// The messages of a service's log.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, EngineError>> + Send>>;

/// The kinds of Swarm objects packbox makes and sweeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmKind {
    /// A one-shot service running an action.
    Service,
    /// A secret holding a run's parameter document.
    Secret,
    /// A per-run network (an overlay that reaches nothing beyond it).
    Network,
}

impl SwarmKind {
    /// The kind's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            SwarmKind::Service => "service",
            SwarmKind::Secret => "secret",
            SwarmKind::Network => "network",
        }
    }
}

/// A Swarm object found by label.
#[derive(Clone, Debug)]
pub struct SwarmObject {
    /// The engine's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels, which say who made it and for which run.
    pub labels: HashMap<String, String>,
}

/// What packbox asks of a Swarm manager.
#[async_trait::async_trait]
pub trait SwarmEngine: Send + Sync + fmt::Debug {
    /// Whether the engine is in a Swarm, as a manager, and how many nodes it has.
    async fn swarm_state(&self) -> Result<SwarmState, EngineError>;

    /// Gives an image another name (`registry:5000/repo:tag`).
    async fn tag_image(&self, image: &str, repository: &str, tag: &str) -> Result<(), EngineError>;

    /// Pushes `repository:tag` to its registry and returns the digest the registry gave it
    /// (`sha256:...`), so that every node runs exactly these bytes.
    async fn push_image(&self, repository: &str, tag: &str) -> Result<String, EngineError>;

    /// A node by id; `None` when the Swarm has no such node (any more).
    async fn node(&self, id: &str) -> Result<Option<SwarmNode>, EngineError>;

    /// Creates a Swarm-scoped network; returns its id.
    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, EngineError>;

    /// Creates a secret holding `data`; returns its id. The data is not readable back.
    async fn create_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError>;

    /// Creates a one-shot service; returns its id.
    async fn create_service(&self, spec: &ServiceSpec) -> Result<String, EngineError>;

    /// Sets a service's replicas: 0 stops its task (SIGTERM, the stop grace, SIGKILL) while the
    /// service, its log and its task's status stay readable.
    async fn scale_service(&self, id: &str, replicas: u64) -> Result<(), EngineError>;

    /// The tasks of a service, newest first.
    async fn service_tasks(&self, id: &str) -> Result<Vec<TaskStatus>, EngineError>;

    /// One stream of a service's log from its start (or from the whole second `since_seconds`
    /// on), each message with its timestamp; with `follow`, the stream stays open for new
    /// messages and only ends when the caller drops it.
    fn service_logs(
        &self,
        id: &str,
        stream: StreamKind,
        follow: bool,
        since_seconds: Option<i64>,
    ) -> LogStream;

    /// Removes an object; one that is already gone is not an error, one still in use is
    /// [`EngineError::InUse`].
    async fn remove_object(&self, kind: SwarmKind, id: &str) -> Result<(), EngineError>;

    /// All objects of a kind carrying every given `key=value` label.
    async fn objects_with_labels(
        &self,
        kind: SwarmKind,
        labels: &[String],
    ) -> Result<Vec<SwarmObject>, EngineError>;
}
