//! What settings resolve to: the checked values the executor, the server and the client run
//! with, and packbox's defaults for them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the pack reaches the container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackDelivery {
    /// `bind` for an engine on a local Unix socket run by root or by this user (it sees this
    /// machine's files), `volume` for any other.
    #[default]
    Auto,
    /// The pack folder bind-mounted read-only: free, but only an engine on this machine sees it.
    Bind,
    /// A read-only volume filled through the API, named by the pack's content: works with any
    /// engine; the first run of each pack content pays for the upload.
    Volume,
}

impl PackDelivery {
    /// Parses `auto`, `bind` or `volume`.
    pub fn parse(text: &str) -> Result<PackDelivery, String> {
        match text {
            "auto" => Ok(PackDelivery::Auto),
            "bind" => Ok(PackDelivery::Bind),
            "volume" => Ok(PackDelivery::Volume),
            other => Err(format!("`{other}`: expected auto, bind or volume")),
        }
    }
}

/// Where actions run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A container on the engine, the pack bind-mounted or in a volume (see [`PackDelivery`]).
    #[default]
    Docker,
    /// A one-shot service on the Swarm the engine manages, the pack in an image layer.
    Swarm,
}

impl Backend {
    /// The backend's name, as the settings spell it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::Swarm => "swarm",
        }
    }
}

/// Limits of every run, unless a request says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunDefaults {
    /// The timeout of actions that state no `timeout_seconds`; `None`: 600 s.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub max_output: usize,
    /// Refuse parameters an action does not declare, instead of delivering them with a warning.
    pub strict_parameters: bool,
    /// Files kept of a run's artifacts folder at most; the others are refused.
    pub artifacts_max_files: u64,
    /// Bytes kept of a run's artifacts in all; a file that would pass it is refused.
    pub artifacts_max_bytes: u64,
    /// How long `packbox gc` keeps the artifacts folder of a run no server record holds.
    pub artifacts_retention: Duration,
}

/// What `packbox serve` runs with, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSettings {
    /// The address and port the server listens on.
    pub listen: SocketAddr,
    /// The folder of packs; `packbox serve` refuses to start without one.
    pub packs: Option<PathBuf>,
    /// The file of API tokens, one `NAME:TOKEN` (or bare `TOKEN`) per line.
    pub token_file: Option<PathBuf>,
    /// A token from the environment (`PACKBOX_SERVE_TOKEN`), named `env`; never shown.
    pub env_token: Option<HiddenText>,
    /// Runs at the same time.
    pub max_concurrent: usize,
    /// Accepted runs waiting for a slot; past it, requests get 429.
    pub max_queue: usize,
    /// Longest a request may wait for its run to end before it is answered.
    pub max_wait: Duration,
    /// Longest timeout a run may have, whatever the action or request says.
    pub max_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Time a client has to send its request headers and body.
    pub client_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// On SIGTERM, time given to running executions before they are cancelled.
    pub drain: Duration,
    /// How the warm pool of pre-started containers is sized.
    pub warm: WarmSettings,
    /// How long execution records are kept.
    pub retention: Retention,
    /// How many bytes execution records may take.
    pub records: RecordBounds,
    /// How many requests may hold their connection (waits, followers).
    pub held: HeldLimits,
}

/// How many bytes execution records may take, and when the disk is too full for new runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordBounds {
    /// What all records may hold; the oldest final ones are pruned past it.
    pub max_bytes: u64,
    /// Bytes a record keeps of each output stream (head and tail) and of a result.
    pub max_output: u64,
    /// New executions are refused (507) when the state folder's disk has less free than this.
    pub min_free_disk: u64,
}

/// Bounds on requests that hold their connection: waits for an execution's end and followers
/// of its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldLimits {
    /// Held requests at most, in all.
    pub max_waiting: usize,
    /// Followers of one execution at most.
    pub per_execution: usize,
    /// Held requests of one token at most.
    pub per_token: usize,
    /// Connections kept free of held requests.
    pub reserved_connections: usize,
}

/// `packbox run` as a client of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientSettings {
    /// The server's URL; `None`: runs go to the local engine.
    pub server: Option<String>,
    /// The certificates an `https://` server must chain to; `None`: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// The bearer token (`PACKBOX_TOKEN`); never shown.
    pub token: Option<HiddenText>,
}

/// How the server's warm pool is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmSettings {
    /// Most pre-started containers per kind of run (0 turns the pool off).
    pub per_kind: usize,
    /// Most pre-started containers in all.
    pub total: usize,
    /// A kind of run unused this long loses its pre-started containers.
    pub idle: Duration,
    /// Whether pooled containers start their interpreter ahead of the run.
    pub preload: bool,
}

/// How long execution records are kept, by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Records of runs that succeeded.
    pub succeeded: Keep,
    /// Records of every other final status (failed, timeout, oom, cancelled, ...).
    pub failed: Keep,
    /// How often old records are pruned.
    pub prune_every: Duration,
}

/// The records of one class kept: none older than `max_age`, at most `max_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    /// Records older than this are pruned.
    pub max_age: Duration,
    /// At most this many records are kept; the oldest go first.
    pub max_count: u64,
}

/// Text that must not show in settings output or logs (a token): `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct HiddenText(pub String);

impl std::fmt::Debug for HiddenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Default bytes kept per output stream: 10 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 10 << 20;
/// Files kept of a run's artifacts folder when the operator does not say.
pub const DEFAULT_ARTIFACTS_MAX_FILES: u64 = 64;
/// Bytes kept of a run's artifacts when the operator does not say: 64 MiB.
pub const DEFAULT_ARTIFACTS_MAX_BYTES: u64 = 64 << 20;
/// How long `packbox gc` keeps a local run's artifacts when the operator does not say: 7 days.
pub const DEFAULT_ARTIFACTS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for HeldLimits {
    fn default() -> Self {
        use serve_defaults as d;
        HeldLimits {
            max_waiting: d::MAX_WAITING as usize,
            per_execution: d::MAX_FOLLOWERS_PER_EXECUTION as usize,
            per_token: d::MAX_HELD_PER_TOKEN as usize,
            reserved_connections: d::RESERVED_CONNECTIONS as usize,
        }
    }
}

/// Defaults of `packbox serve`.
pub mod serve_defaults {
    use std::time::Duration;
    /// Listen on loopback only: exposing the server is a choice.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// Runs at the same time.
    pub const MAX_CONCURRENT: u64 = 8;
    /// Accepted runs waiting for a slot.
    pub const MAX_QUEUE: u64 = 256;
    /// Longest wait a request may ask for, in seconds.
    pub const MAX_WAIT: u64 = 60;
    /// Longest timeout a run may have, in seconds.
    pub const MAX_TIMEOUT: u64 = 3600;
    /// Largest request body: 1 MiB.
    pub const MAX_BODY: u64 = 1 << 20;
    /// Seconds a client has to send its request.
    pub const CLIENT_TIMEOUT: u64 = 30;
    /// Open connections at most.
    pub const MAX_CONNECTIONS: u64 = 1024;
    /// Seconds running executions get on SIGTERM.
    pub const DRAIN: u64 = 30;
    /// Pre-started containers per kind of run.
    pub const WARM_PER_KIND: u64 = 4;
    /// Pre-started containers in all.
    pub const WARM_TOTAL: u64 = 16;
    /// A kind of run unused this long loses its pre-started containers.
    pub const WARM_IDLE: Duration = Duration::from_secs(600);
    /// Pooled containers start their interpreter ahead of the run.
    pub const WARM_PRELOAD: bool = true;
    /// Records of successful runs are kept a week...
    pub const SUCCEEDED_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
    /// ...and at most this many.
    pub const SUCCEEDED_COUNT: u64 = 10_000;
    /// Records of other runs are kept a month, for investigation...
    pub const FAILED_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
    /// ...and at most this many.
    pub const FAILED_COUNT: u64 = 100_000;
    /// Old records are pruned every five minutes.
    pub const PRUNE_EVERY: Duration = Duration::from_secs(300);
    /// All records hold at most 1 GiB of output, results and errors.
    pub const RECORDS_MAX_BYTES: u64 = 1 << 30;
    /// A record keeps 1 MiB of each stream (512 KiB of head and of tail) and of a result.
    pub const RECORDS_MAX_OUTPUT: u64 = 1 << 20;
    /// New executions are refused when the state folder's disk has less than 512 MiB free.
    pub const RECORDS_MIN_FREE_DISK: u64 = 512 << 20;
    /// Held requests (waits, followers) at most: a quarter of the connections stay for others.
    pub const MAX_WAITING: u64 = 768;
    /// Followers of one execution at most.
    pub const MAX_FOLLOWERS_PER_EXECUTION: u64 = 32;
    /// Held requests of one token at most.
    pub const MAX_HELD_PER_TOKEN: u64 = 128;
    /// Connections never taken by held requests.
    pub const RESERVED_CONNECTIONS: u64 = 64;
}
