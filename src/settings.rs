//! Settings resolved once: command-line flags, then the config file, then environment
//! variables, then built-in defaults, into one [`Settings`] value handed to the executor.
//!
//! This is the only module that reads the process environment (through [`Environment`]), so one
//! place says what a run's settings are and where each came from (`packbox config show`).
//!
//! The config file is never picked up from the working folder: it is `--config FILE`, else
//! `PACKBOX_CONFIG`, else the user's own `$XDG_CONFIG_HOME/packbox/config.yaml`. Whatever its
//! source, a setting that is weaker than packbox's sandbox defaults (root, capabilities kept, a
//! writable root, a network, limits above a sane ceiling) is refused unless weakening was asked
//! for explicitly (`--allow-weaker-sandbox` or `sandbox.allow_weaker: true` in the file), and is
//! then reported in every outcome. Flags, file and environment share one validation: the same
//! ranges and the same messages.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::egress::config::{EgressLayer, EgressSettings};
use crate::egress::policy::{NetworkPolicy, NetworkRule};
use crate::endpoint::{self, Endpoint, EndpointError};
use crate::envimage::{BuildSettings, DEFAULT_BUILD_MEMORY, IndexSettings};
use crate::error_text::chain;
use crate::sandbox::isolation::{IsolationPolicy, IsolationRule};
use crate::sandbox::{SandboxPolicy, SeccompProfile};

/// The largest config file packbox reads.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Proxy variables passed to environment builds as build arguments.
const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ftp_proxy",
];

/// Settings that cannot be used, naming the setting, where its value came from and what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The config file could not be read (missing, not a regular file, too large, not UTF-8 or
    /// nested too deeply).
    #[error("config file {0}")]
    Unreadable(#[from] crate::input::InputError),
    /// The config file is not valid YAML, or has a field packbox does not know.
    #[error("config file {file}: {message}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// What the YAML parser found wrong, with its position.
        message: String,
    },
    /// A setting's value is malformed or out of range.
    #[error("{setting} (from {source_name}): {message}")]
    Value {
        /// The setting's key, as `packbox config show` prints it (`sandbox.memory`).
        setting: String,
        /// Where the value came from (`the command line`, `config file PATH`, ...).
        source_name: String,
        /// What was expected and what was found.
        message: String,
    },
    /// A sandbox setting weaker than packbox's default, asked for without allowing weakening
    /// explicitly.
    #[error(
        "{setting} = {value} (from {source_name}) is weaker than packbox's sandbox default ({default}); pass --allow-weaker-sandbox or set `sandbox.allow_weaker: true` in your config file to allow it"
    )]
    Weaker {
        /// The setting's key (`sandbox.network`).
        setting: String,
        /// The value asked for.
        value: String,
        /// packbox's default (and, for a limit, the ceiling above which it weakens).
        default: String,
        /// Where the value came from.
        source_name: String,
    },
    /// The engine the settings name cannot be used (an address, a docker context, TLS files).
    #[error(transparent)]
    Endpoint(Box<EndpointError>),
}

impl SettingsError {
    /// Whether the engine's set-up is at fault (DOCKER_HOST, a docker context, TLS files from
    /// the environment: exit 125) rather than packbox's own flag or config file (exit 2).
    pub fn is_engine_setup(&self) -> bool {
        matches!(self, SettingsError::Endpoint(e) if !e.is_engine_setting())
    }

    /// The next step for an engine setting that cannot be used.
    pub fn endpoint_hint(&self) -> Option<&'static str> {
        match self {
            SettingsError::Endpoint(e) => e.hint(),
            _ => None,
        }
    }
}

/// How the pack reaches the container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackDelivery {
    /// `bind` for an engine on a local Unix socket (it sees this machine's files), `volume`
    /// for any other.
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

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The config file.
    File,
    /// An environment variable.
    Env,
    /// packbox's built-in default: nothing else set it.
    Default,
}

/// A snapshot of the process environment, taken once; tests build their own.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    /// The environment of this process.
    pub fn capture() -> Environment {
        Environment {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment holding only the given variables.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A variable's value, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl endpoint::Vars for Environment {
    fn get(&self, name: &str) -> Option<&str> {
        Environment::get(self, name)
    }
}

/// One layer of settings (the flags, or the config file): every field optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SettingsLayer {
    /// The engine: an address (`unix:///...`, `tcp://...`) or a docker context name. Without
    /// one, the environment decides as for the docker CLI (DOCKER_HOST, DOCKER_CONTEXT, ...).
    pub engine: Option<String>,
    /// Where actions run: `docker` (a container on the engine) or `swarm` (a one-shot service
    /// on the Swarm the engine manages).
    pub backend: Option<String>,
    /// A registry (`HOST:PORT`) the swarm backend pushes pack images to, so that every node can
    /// pull them by digest.
    pub registry: Option<String>,
    /// How the pack reaches the container (`PACKBOX_PACK_DELIVERY`).
    pub pack_delivery: Option<PackDelivery>,
    /// Where packbox keeps its probe cache, build logs and locks.
    pub state_dir: Option<PathBuf>,
    /// A folder of runtime definitions that extend or replace the built-in catalog.
    pub catalog: Option<PathBuf>,
    /// Which runtimes to verify (`python,node`); all when unset.
    pub runtimes: Option<String>,
    /// The `sandbox:` section: the sandbox every run gets.
    #[serde(default)]
    pub sandbox: SandboxLayer,
    /// The `run:` section: timeout, grace period and output limit of every run.
    #[serde(default)]
    pub run: RunLayer,
    /// The `build:` section: how environment images are built.
    #[serde(default)]
    pub build: BuildLayer,
    /// The `serve:` section: what `packbox serve` runs with.
    #[serde(default)]
    pub serve: ServeLayer,
    /// The `client:` section: `packbox run` sending runs to a server.
    #[serde(default)]
    pub client: ClientLayer,
    /// Isolation rules: `[{match: "payments.*", level: strict}]` (config file only).
    pub isolation: Option<Vec<IsolationRule>>,
    /// Network grants: `[{match: "core.http_*", egress: ["api.github.com:443"]}]` (config file
    /// only).
    pub network: Option<Vec<NetworkRule>>,
    /// The `egress:` section: how grants are enforced (the proxy's networks, names, refusals).
    #[serde(default)]
    pub egress: EgressLayer,
}

/// Sandbox settings of one layer; each overrides one default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SandboxLayer {
    /// The container's network: `none` (the default), `bridge` or a user network's name.
    /// Anything but `none` weakens the sandbox; `host` and `container:...` are refused.
    pub network: Option<String>,
    /// Whether the container's root file system is read-only (`false` weakens the sandbox).
    pub read_only_root: Option<bool>,
    /// Size of the /tmp tmpfs (`64m`, `1g`, or bytes).
    pub tmp_size: Option<Size>,
    /// Whether every Linux capability is dropped (`false` weakens the sandbox).
    pub cap_drop_all: Option<bool>,
    /// Whether the action is barred from gaining privileges through setuid binaries or file
    /// capabilities (`false` weakens the sandbox).
    pub no_new_privileges: Option<bool>,
    /// `UID` or `UID:GID` the action runs as, numeric (`65534:65534` by default; 0 weakens the
    /// sandbox).
    pub user: Option<String>,
    /// Memory limit of a run, no swap (`512m` by default; above `8g` weakens the sandbox).
    pub memory: Option<Size>,
    /// Most processes and threads a run may hold (256 by default; above 4096 weakens).
    pub pids: Option<u64>,
    /// CPU share of a run, in CPUs (1 by default; above 8 weakens the sandbox).
    pub cpus: Option<f64>,
    /// Open-file limit of a run (1024 by default; above 65536 weakens the sandbox).
    pub nofile: Option<u64>,
    /// An OCI runtime other than the engine's default (`runsc`); the docker backend only.
    pub oci_runtime: Option<String>,
    /// The syscall profile: `packbox` (default), `engine-default`, `unconfined` or the path of
    /// a JSON profile file.
    pub seccomp: Option<String>,
    /// Settings weaker than the defaults are allowed (and reported).
    pub allow_weaker: Option<bool>,
}

/// Run limits of one layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RunLayer {
    /// A timeout for every run, overriding each action's own `timeout_seconds`.
    pub timeout_seconds: Option<u64>,
    /// Time between SIGTERM and SIGKILL when a run is stopped (10 by default).
    pub grace_seconds: Option<u64>,
    /// Bytes kept of each output stream of a run (`10m` by default).
    pub max_output: Option<Size>,
}

/// Environment-build settings of one layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BuildLayer {
    /// A PEM bundle pip and npm trust during builds.
    pub ca_bundle: Option<PathBuf>,
    /// The index pip installs from during builds, instead of PyPI.
    pub pip_index_url: Option<String>,
    /// The registry npm installs from during builds, instead of the public one.
    pub npm_registry: Option<String>,
    /// Packs' requirements may choose package sources (`--index-url`, `--find-links`, URLs, ...).
    pub allow_pack_sources: Option<bool>,
    /// Memory (no swap) of each environment build step.
    pub memory: Option<Size>,
    /// How long one environment build may take.
    pub timeout_seconds: Option<u64>,
}

/// Settings of `packbox run` as a client of a server (the `client:` section of the config file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientLayer {
    /// The server runs go to (`http://127.0.0.1:8080`, or `https://` through a TLS proxy)
    /// instead of the local engine.
    pub server: Option<String>,
    /// PEM certificates to trust for an `https://` server instead of the system's trust store
    /// (a private CA in front of the server).
    pub ca_file: Option<PathBuf>,
}

/// `packbox serve` settings of one layer (the `serve:` section of the config file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServeLayer {
    /// Address and port to listen on (`127.0.0.1:8080`).
    pub listen: Option<String>,
    /// The folder of packs the server runs actions from.
    pub packs: Option<PathBuf>,
    /// A file of API tokens, one `NAME:TOKEN` (or bare `TOKEN`) per line.
    pub token_file: Option<PathBuf>,
    /// Runs at the same time.
    pub max_concurrent: Option<u64>,
    /// Accepted runs waiting for a slot; past it, requests get 429.
    pub max_queue: Option<u64>,
    /// Longest `wait` a request may ask for.
    pub max_wait_seconds: Option<u64>,
    /// Longest timeout a run may have, whatever the action or request says.
    pub max_timeout_seconds: Option<u64>,
    /// Largest request body.
    pub max_body: Option<Size>,
    /// Time a client has to send its request headers and body.
    pub client_timeout_seconds: Option<u64>,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: Option<u64>,
    /// On SIGTERM, time given to running executions before they are cancelled.
    pub drain_seconds: Option<u64>,
    /// The `warm:` section: the pool of pre-started containers.
    #[serde(default)]
    pub warm: WarmLayer,
    /// The `retention:` section: how long execution records are kept.
    #[serde(default)]
    pub retention: RetentionLayer,
}

/// Warm-pool settings of one layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WarmLayer {
    /// Most pre-started containers per kind of run (0 turns the pool off).
    pub per_kind: Option<u64>,
    /// Most pre-started containers in all.
    pub total: Option<u64>,
    /// A kind of run unused this long loses its pre-started containers.
    pub idle: Option<Age>,
    /// Pooled containers start their interpreter ahead of the run (runtimes with a
    /// `warm_start` in the catalog: python, node).
    pub preload: Option<bool>,
}

/// Record-retention settings of one layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionLayer {
    /// Records of runs that succeeded.
    #[serde(default)]
    pub succeeded: KeepLayer,
    /// Records of every other final status (failed, timeout, oom, cancelled, error, ...).
    #[serde(default)]
    pub failed: KeepLayer,
    /// How often old records are pruned.
    pub prune_every: Option<Age>,
}

/// How long and how many records of one class are kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeepLayer {
    /// Records older than this are pruned.
    pub max_age: Option<Age>,
    /// At most this many records are kept; the oldest go first.
    pub max_count: Option<u64>,
}

/// A duration written as `90s`, `12h`, `7d` (or a number of seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct Age(pub Duration);

impl TryFrom<serde_yaml::Value> for Age {
    type Error = String;
    fn try_from(value: serde_yaml::Value) -> Result<Age, String> {
        let expected = "expected a duration such as 90s, 12h, 7d or a number of seconds";
        match value {
            serde_yaml::Value::Number(n) => n
                .as_u64()
                .map(|s| Age(Duration::from_secs(s)))
                .ok_or_else(|| format!("{expected}, found {n}")),
            serde_yaml::Value::String(s) => humantime::parse_duration(s.trim())
                .map(Age)
                .map_err(|_| format!("{expected}, found `{s}`")),
            _ => Err(expected.into()),
        }
    }
}

/// A size in bytes, written as a number or with a binary suffix (`512m`, `64k`, `1g`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct Size(pub u64);

impl TryFrom<serde_yaml::Value> for Size {
    type Error = String;
    fn try_from(value: serde_yaml::Value) -> Result<Size, String> {
        match value {
            serde_yaml::Value::Number(n) => n.as_u64().map(Size).ok_or_else(|| {
                format!("expected a size such as 512m, 64k, 1g or bytes, found {n}")
            }),
            serde_yaml::Value::String(s) => parse_size(&s).map(Size),
            _ => Err("expected a size such as 512m, 64k, 1g or a number of bytes".into()),
        }
    }
}

/// Parses `512m`, `64K`, `1g`, `1024` (bytes); binary multiples. Ranges are checked later, the
/// same way for every source.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b').trim_end_matches('i');
    let (digits, shift) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 30),
        Some('t') => (&trimmed[..trimmed.len() - 1], 40),
        _ => (trimmed, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("`{text}` is not a size (expected e.g. 512m, 64k, 1g or bytes)"))
}

/// Limits of every run, unless a request says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunDefaults {
    /// Overrides every action's `timeout_seconds` when set.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub max_output: usize,
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

/// One setting as `packbox config show` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct ShownSetting {
    /// The setting's key (`sandbox.memory`, `serve.listen`).
    pub key: &'static str,
    /// The value in effect; credentials in URLs and tokens are never shown.
    pub value: serde_json::Value,
    /// Where the value came from.
    pub source: Source,
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

/// Everything a packbox process runs with, resolved once.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// Where actions run.
    pub backend: Backend,
    /// The registry pack images go through (swarm backend only).
    pub registry: Option<String>,
    /// Where the engine is, and why (found the way the docker CLI finds engines).
    pub endpoint: Endpoint,
    /// How the pack reaches the container: `Bind` or `Volume` (`auto` already decided).
    pub pack_delivery: PackDelivery,
    /// Where packbox keeps its probe cache, build logs and locks.
    pub state_dir: PathBuf,
    /// A folder of runtime definitions that extend or replace the built-in catalog.
    pub catalog_dir: Option<PathBuf>,
    /// `PACKBOX_RUNTIMES`: the runtimes to verify.
    pub runtimes: Option<String>,
    /// The sandbox of every run, checked.
    pub sandbox: SandboxPolicy,
    /// Which actions run at which isolation level.
    pub isolation: IsolationPolicy,
    /// Which actions may reach which destinations.
    pub network: NetworkPolicy,
    /// How network grants are enforced.
    pub egress: EgressSettings,
    /// Limits of every run, unless a request says otherwise.
    pub run: RunDefaults,
    /// How environment images are built: package sources, proxies, limits.
    pub build: BuildSettings,
    /// What `packbox serve` runs with.
    pub serve: ServeSettings,
    /// Where `packbox run` sends runs, when to a server.
    pub client: ClientSettings,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    shown: Vec<ShownSetting>,
}

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default bytes kept per output stream: 10 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 10 << 20;

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
}

/// Bounds that hold whatever the source; a value outside is an input error.
mod bounds {
    /// The engine refuses a memory limit under 6 MiB.
    pub const MIN_MEMORY: u64 = 6 << 20;
    /// Memory limit at most: 1 TiB.
    pub const MAX_MEMORY: u64 = 1 << 40;
    /// `/tmp` at least: 1 MiB.
    pub const MIN_TMP: u64 = 1 << 20;
    /// `/tmp` at most: 64 GiB.
    pub const MAX_TMP: u64 = 64 << 30;
    /// CPU share at least.
    pub const MIN_CPUS: f64 = 0.01;
    /// CPU share at most.
    pub const MAX_CPUS: f64 = 1024.0;
    /// The kernel's largest pid_max.
    pub const MAX_PIDS: u64 = 4_194_304;
    /// Open-file limit at most (Linux's default `nr_open`).
    pub const MAX_NOFILE: u64 = 1 << 20;
    /// The engine accepts ids up to 2^31-1.
    pub const MAX_ID: u64 = 2_147_483_647;
    /// Bytes kept per output stream at least.
    pub const MIN_OUTPUT: u64 = 1;
    /// Bytes kept per output stream at most: 1 GiB.
    pub const MAX_OUTPUT: u64 = 1 << 30;
    /// Timeout at most, of a run or a build, in seconds: a week.
    pub const MAX_TIMEOUT: u64 = 7 * 24 * 3600;
    /// Time between SIGTERM and SIGKILL at most, in seconds.
    pub const MAX_GRACE: u64 = 3600;
    /// Memory of a build step at least: 64 MiB.
    pub const MIN_BUILD_MEMORY: u64 = 64 << 20;
    /// The engine API takes a build's memory as a 32-bit number of bytes.
    pub const MAX_BUILD_MEMORY: u64 = (1 << 31) - 1;
}

/// Ceilings above which a limit counts as weakening the sandbox.
mod ceilings {
    /// Memory: 8 GiB.
    pub const MEMORY: u64 = 8 << 30;
    /// `/tmp`: 4 GiB.
    pub const TMP: u64 = 4 << 30;
    /// CPU share: 8 CPUs.
    pub const CPUS: f64 = 8.0;
    /// Processes and threads: 4096.
    pub const PIDS: u64 = 4096;
    /// Open files: 65536.
    pub const NOFILE: u64 = 65536;
}

impl Settings {
    /// Resolves settings from the flags, the config file they or the environment name, the
    /// environment and the defaults; every value checked.
    pub fn resolve(
        flags: SettingsLayer,
        config: Option<&Path>,
        env: &Environment,
    ) -> Result<Settings, SettingsError> {
        let config_file = config_file(config, env);
        let file = match &config_file {
            Some(path) => read_config(path)?,
            None => SettingsLayer::default(),
        };
        let env_layer = env_layer(env)?;
        let resolver = Resolver {
            flags: &flags,
            file: &file,
            env: &env_layer,
            file_name: config_file.as_ref().map(|p| p.display().to_string()),
            shown: Vec::new(),
        };
        resolver.finish(env, config_file)
    }

    /// The engine a flag other than `--engine` names (`images copy --to ENGINE`): an address,
    /// with TLS from the environment, or a docker context name.
    pub fn resolve_engine_flag(
        flag: &str,
        value: &str,
        env: &Environment,
    ) -> Result<Endpoint, SettingsError> {
        endpoint::resolve_flag(flag, value, env).map_err(|e| SettingsError::Endpoint(Box::new(e)))
    }

    /// Settings as the command line would resolve them with no flags: the config file
    /// `PACKBOX_CONFIG` or the user's config folder names, the environment, the defaults.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::resolve(SettingsLayer::default(), None, &Environment::capture())
    }

    /// Every setting with its value and where it came from, for `packbox config show`. Secrets
    /// (credentials in URLs) are never shown.
    pub fn shown(&self) -> &[ShownSetting] {
        &self.shown
    }
}

/// The config file to read: `--config`, else `PACKBOX_CONFIG`, else the user's own when it
/// exists. Never one in the working folder.
fn config_file(explicit: Option<&Path>, env: &Environment) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(path) = env.get("PACKBOX_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let config_home = env
        .get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|home| Path::new(home).join(".config")))?;
    let user_file = config_home.join("packbox").join("config.yaml");
    user_file.is_file().then_some(user_file)
}

fn read_config(path: &Path) -> Result<SettingsLayer, SettingsError> {
    // A regular file under the cap, nesting at most 64 levels (checked before serde_yaml).
    let text = crate::input::read_yaml(path, MAX_CONFIG_BYTES)?;
    if text.trim().is_empty() {
        return Ok(SettingsLayer::default());
    }
    serde_yaml::from_str(&text).map_err(|e| SettingsError::Invalid {
        file: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The settings the environment carries.
fn env_layer(env: &Environment) -> Result<SettingsLayer, SettingsError> {
    let path = |name: &str| env.get(name).map(PathBuf::from);
    let text = |name: &str| env.get(name).map(str::to_string);
    let pack_delivery = env
        .get("PACKBOX_PACK_DELIVERY")
        .map(PackDelivery::parse)
        .transpose()
        .map_err(|message| SettingsError::Value {
            setting: "pack_delivery".into(),
            source_name: "PACKBOX_PACK_DELIVERY".into(),
            message,
        });
    Ok(SettingsLayer {
        // DOCKER_HOST, DOCKER_CONTEXT and the docker config are read by `endpoint`, with the
        // docker CLI's precedence.
        engine: None,
        pack_delivery: pack_delivery?,
        backend: text("PACKBOX_BACKEND"),
        registry: text("PACKBOX_REGISTRY"),
        state_dir: path("PACKBOX_STATE_DIR"),
        catalog: path("PACKBOX_CATALOG"),
        runtimes: text("PACKBOX_RUNTIMES"),
        sandbox: SandboxLayer::default(),
        run: RunLayer::default(),
        isolation: None,
        network: None,
        egress: EgressLayer {
            proxy_binary: path("PACKBOX_EGRESS_PROXY"),
            ..EgressLayer::default()
        },
        build: BuildLayer {
            ca_bundle: path("PACKBOX_BUILD_CA_BUNDLE"),
            pip_index_url: text("PACKBOX_PIP_INDEX_URL"),
            npm_registry: text("PACKBOX_NPM_REGISTRY"),
            // Anything but a clear yes keeps the safe default.
            allow_pack_sources: env
                .get("PACKBOX_PIP_ALLOW_PACK_SOURCES")
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")),
            memory: None,
            timeout_seconds: None,
        },
        serve: ServeLayer {
            listen: text("PACKBOX_SERVE_LISTEN"),
            packs: path("PACKBOX_PACKS"),
            token_file: path("PACKBOX_SERVE_TOKEN_FILE"),
            ..ServeLayer::default()
        },
        client: ClientLayer {
            server: text("PACKBOX_SERVER"),
            ca_file: path("PACKBOX_SERVER_CA_FILE"),
        },
    })
}

/// The state folder when none is set: `$XDG_STATE_HOME/packbox`, else
/// `~/.local/state/packbox`, else a folder under the system's temp dir.
fn default_state_dir(env: &Environment) -> PathBuf {
    if let Some(dir) = env.get("XDG_STATE_HOME") {
        return Path::new(dir).join("packbox");
    }
    if let Some(home) = env.get("HOME") {
        return Path::new(home).join(".local/state/packbox");
    }
    std::env::temp_dir().join("packbox-state")
}

/// Picks each setting from the first layer that has it, remembering where it came from.
struct Resolver<'a> {
    flags: &'a SettingsLayer,
    file: &'a SettingsLayer,
    env: &'a SettingsLayer,
    file_name: Option<String>,
    shown: Vec<ShownSetting>,
}

/// A value and where it came from.
struct Picked<T> {
    value: T,
    source: Source,
}

impl Resolver<'_> {
    fn pick<T: Clone>(&self, get: impl Fn(&SettingsLayer) -> Option<T>) -> Option<Picked<T>> {
        [
            (self.flags, Source::Flag),
            (self.file, Source::File),
            (self.env, Source::Env),
        ]
        .into_iter()
        .find_map(|(layer, source)| {
            Some(Picked {
                value: get(layer)?,
                source,
            })
        })
    }

    /// How an error names a source: the flag, the file, the environment.
    fn source_name(&self, source: Source) -> String {
        match source {
            Source::Flag => "the command line".into(),
            Source::File => format!(
                "config file {}",
                self.file_name.as_deref().unwrap_or("(none)")
            ),
            Source::Env => "the environment".into(),
            Source::Default => "the defaults".into(),
        }
    }

    fn show(&mut self, key: &'static str, value: impl Serialize, source: Source) {
        self.shown.push(ShownSetting {
            key,
            value: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            source,
        });
    }

    /// A setting with a default: picked, checked, shown.
    fn setting<T: Clone + Serialize>(
        &mut self,
        key: &'static str,
        get: impl Fn(&SettingsLayer) -> Option<T>,
        default: T,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> Result<Picked<T>, SettingsError> {
        let picked = self.pick(get).unwrap_or(Picked {
            value: default,
            source: Source::Default,
        });
        check(&picked.value).map_err(|message| SettingsError::Value {
            setting: key.into(),
            source_name: self.source_name(picked.source),
            message,
        })?;
        self.show(key, &picked.value, picked.source);
        Ok(picked)
    }

    /// The engine: `engine` of the flags or the config file (an address or a docker context),
    /// else what the environment names, as the docker CLI finds it.
    fn endpoint(&mut self, env: &Environment) -> Result<Endpoint, SettingsError> {
        let picked = [(self.flags, Source::Flag), (self.file, Source::File)]
            .into_iter()
            .find_map(|(layer, source)| Some((layer.engine.clone()?, source)));
        let resolved = match &picked {
            Some((value, Source::Flag)) => endpoint::resolve_flag("--engine", value, env),
            Some((value, _)) => {
                let name = format!(
                    "engine (config file {})",
                    self.file_name.as_deref().unwrap_or("?")
                );
                endpoint::resolve_flag(&name, value, env)
            }
            None => endpoint::resolve(None, env),
        };
        let endpoint = resolved.map_err(|e| SettingsError::Endpoint(Box::new(e)))?;
        let source = match (&picked, &endpoint.origin) {
            (Some((_, source)), _) => *source,
            (None, endpoint::Origin::Default) => Source::Default,
            (None, _) => Source::Env,
        };
        self.show("engine", &endpoint.host, source);
        if let Some(context) = &endpoint.context {
            self.show("engine_context", context, source);
        }
        if let Some(tls) = endpoint.tls() {
            self.show("engine_tls", &tls.source, source);
        }
        Ok(endpoint)
    }

    fn finish(
        mut self,
        env: &Environment,
        config_file: Option<PathBuf>,
    ) -> Result<Settings, SettingsError> {
        let d = SandboxPolicy::default();
        let endpoint = self.endpoint(env)?;
        let pack_delivery = self.setting(
            "pack_delivery",
            |l| l.pack_delivery,
            PackDelivery::Auto,
            any,
        )?;
        let backend = self.setting(
            "backend",
            |l| l.backend.clone(),
            Backend::Docker.name().to_string(),
            |b| parse_backend(b).map(|_| ()),
        )?;
        let registry = self.pick(|l| l.registry.clone());
        if let Some(picked) = &registry {
            let problem = check_registry(&picked.value).err().or_else(|| {
                (backend.value != Backend::Swarm.name()).then(|| {
                    "only the swarm backend uses a registry (set backend: swarm or --backend swarm)"
                        .to_string()
                })
            });
            if let Some(message) = problem {
                return Err(SettingsError::Value {
                    setting: "registry".into(),
                    source_name: self.source_name(picked.source),
                    message,
                });
            }
        }
        self.show(
            "registry",
            registry.as_ref().map(|p| &p.value),
            registry.as_ref().map_or(Source::Default, |p| p.source),
        );
        let pack_delivery = match pack_delivery.value {
            PackDelivery::Auto if endpoint.is_local_socket() => PackDelivery::Bind,
            PackDelivery::Auto => PackDelivery::Volume,
            chosen => chosen,
        };
        let state_dir = self.setting(
            "state_dir",
            |l| l.state_dir.clone(),
            default_state_dir(env),
            any,
        )?;
        let catalog = self.pick(|l| l.catalog.clone());
        self.show(
            "catalog",
            catalog.as_ref().map(|p| &p.value),
            catalog.as_ref().map_or(Source::Default, |p| p.source),
        );
        let runtimes = self.pick(|l| l.runtimes.clone());
        self.show(
            "runtimes",
            runtimes.as_ref().map(|p| &p.value),
            runtimes.as_ref().map_or(Source::Default, |p| p.source),
        );

        let network = self.setting(
            "sandbox.network",
            |l| l.sandbox.network.clone(),
            d.network.clone(),
            |n| check_network(n),
        )?;
        let read_only_root = self.setting(
            "sandbox.read_only_root",
            |l| l.sandbox.read_only_root,
            d.read_only_root,
            any,
        )?;
        let tmp = self.setting(
            "sandbox.tmp_size",
            |l| l.sandbox.tmp_size.map(|s| s.0),
            d.tmpfs_tmp_bytes,
            |v| in_range(*v, bounds::MIN_TMP, bounds::MAX_TMP, "1m", "64g"),
        )?;
        let cap_drop_all = self.setting(
            "sandbox.cap_drop_all",
            |l| l.sandbox.cap_drop_all,
            d.cap_drop_all,
            any,
        )?;
        let no_new_privileges = self.setting(
            "sandbox.no_new_privileges",
            |l| l.sandbox.no_new_privileges,
            d.no_new_privileges,
            any,
        )?;
        let user = self.setting(
            "sandbox.user",
            |l| l.sandbox.user.clone(),
            d.user.clone(),
            |u| check_user(u),
        )?;
        let memory = self.setting(
            "sandbox.memory",
            |l| l.sandbox.memory.map(|s| s.0),
            d.memory_bytes,
            |v| in_range(*v, bounds::MIN_MEMORY, bounds::MAX_MEMORY, "6m", "1t"),
        )?;
        let pids = self.setting(
            "sandbox.pids",
            |l| l.sandbox.pids,
            u64::from(d.pids_limit),
            |v| count_in_range(*v, 1, bounds::MAX_PIDS),
        )?;
        let cpus = self.setting(
            "sandbox.cpus",
            |l| l.sandbox.cpus,
            d.cpus,
            |v| {
                if v.is_finite() && (bounds::MIN_CPUS..=bounds::MAX_CPUS).contains(v) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a number of CPUs from {} to {}, found {v}",
                        bounds::MIN_CPUS,
                        bounds::MAX_CPUS
                    ))
                }
            },
        )?;
        let nofile = self.setting(
            "sandbox.nofile",
            |l| l.sandbox.nofile,
            u64::from(d.nofile),
            |v| count_in_range(*v, 16, bounds::MAX_NOFILE),
        )?;
        let oci_runtime = self.pick(|l| l.sandbox.oci_runtime.clone());
        if let Some(runtime) = &oci_runtime {
            check_name(&runtime.value)
                .and_then(|()| {
                    if backend.value == Backend::Swarm.name() {
                        Err("the swarm backend cannot choose an OCI runtime per service (the Swarm API has no such field); use the docker backend or make it the nodes' default runtime".to_string())
                    } else {
                        Ok(())
                    }
                })
                .map_err(|message| SettingsError::Value {
                    setting: "sandbox.oci_runtime".into(),
                    source_name: self.source_name(runtime.source),
                    message,
                })?;
        }
        self.show(
            "sandbox.oci_runtime",
            oci_runtime.as_ref().map(|p| &p.value),
            oci_runtime.as_ref().map_or(Source::Default, |p| p.source),
        );
        let seccomp_setting = self.pick(|l| l.sandbox.seccomp.clone());
        let seccomp = match &seccomp_setting {
            Some(picked) => Picked {
                value: SeccompProfile::from_setting(&picked.value).map_err(|e| {
                    SettingsError::Value {
                        setting: "sandbox.seccomp".into(),
                        source_name: self.source_name(picked.source),
                        message: chain(&e),
                    }
                })?,
                source: picked.source,
            },
            None => Picked {
                value: d.seccomp.clone(),
                source: Source::Default,
            },
        };
        self.show("sandbox.seccomp", &seccomp.value, seccomp.source);
        // Only an explicit choice allows weakening: a flag or the config file, never the
        // environment.
        let allow_weaker = self
            .flags
            .sandbox
            .allow_weaker
            .or(self.file.sandbox.allow_weaker);
        let allow_source = if self.flags.sandbox.allow_weaker.is_some() {
            Source::Flag
        } else if allow_weaker.is_some() {
            Source::File
        } else {
            Source::Default
        };
        let allow_weaker = allow_weaker.unwrap_or(false);
        self.show("sandbox.allow_weaker", allow_weaker, allow_source);

        let rules = self.pick(|l| l.isolation.clone());
        let isolation = match &rules {
            Some(picked) => {
                IsolationPolicy::new(picked.value.clone()).map_err(|e| SettingsError::Value {
                    setting: "isolation".into(),
                    source_name: self.source_name(picked.source),
                    message: e.to_string(),
                })?
            }
            None => IsolationPolicy::default(),
        };
        let shown_rules: Vec<String> = isolation
            .rules()
            .map(|rule| {
                let level = serde_json::to_value(rule.level).unwrap_or_default();
                format!("{} -> {}", rule.pattern, level.as_str().unwrap_or(""))
            })
            .collect();
        self.show(
            "isolation",
            shown_rules,
            rules.as_ref().map_or(Source::Default, |p| p.source),
        );
        let (network_policy, egress) = self.network()?;

        let timeout = self.pick(|l| l.run.timeout_seconds);
        if let Some(t) = &timeout {
            count_in_range(t.value, 1, bounds::MAX_TIMEOUT).map_err(|message| {
                SettingsError::Value {
                    setting: "run.timeout_seconds".into(),
                    source_name: self.source_name(t.source),
                    message,
                }
            })?;
        }
        self.show(
            "run.timeout_seconds",
            timeout.as_ref().map(|p| p.value),
            timeout.as_ref().map_or(Source::Default, |p| p.source),
        );
        let grace = self.setting(
            "run.grace_seconds",
            |l| l.run.grace_seconds,
            DEFAULT_GRACE.as_secs(),
            |v| count_in_range(*v, 0, bounds::MAX_GRACE),
        )?;
        let max_output = self.setting(
            "run.max_output",
            |l| l.run.max_output.map(|s| s.0),
            DEFAULT_MAX_OUTPUT as u64,
            |v| in_range(*v, bounds::MIN_OUTPUT, bounds::MAX_OUTPUT, "1 byte", "1g"),
        )?;

        let build_timeout = self.setting(
            "build.timeout_seconds",
            |l| l.build.timeout_seconds,
            crate::envimage::build::DEFAULT_BUILD_TIMEOUT.as_secs(),
            |v| count_in_range(*v, 1, bounds::MAX_TIMEOUT),
        )?;
        let ca_bundle = self.pick(|l| l.build.ca_bundle.clone());
        self.show(
            "build.ca_bundle",
            ca_bundle.as_ref().map(|p| &p.value),
            ca_bundle.as_ref().map_or(Source::Default, |p| p.source),
        );
        let pip_index_url = self.pick(|l| l.build.pip_index_url.clone());
        self.show(
            "build.pip_index_url",
            pip_index_url
                .as_ref()
                .map(|p| without_credentials(&p.value)),
            pip_index_url.as_ref().map_or(Source::Default, |p| p.source),
        );
        let npm_registry = self.pick(|l| l.build.npm_registry.clone());
        self.show(
            "build.npm_registry",
            npm_registry.as_ref().map(|p| without_credentials(&p.value)),
            npm_registry.as_ref().map_or(Source::Default, |p| p.source),
        );
        let proxies: BTreeMap<String, String> = PROXY_VARIABLES
            .iter()
            .filter_map(|name| Some((name.to_string(), env.get(name)?.to_string())))
            .collect();
        let shown_proxies: BTreeMap<&String, String> = proxies
            .iter()
            .map(|(k, v)| (k, without_credentials(v)))
            .collect();
        let proxies_source = if proxies.is_empty() {
            Source::Default
        } else {
            Source::Env
        };
        self.show("build.proxies", shown_proxies, proxies_source);
        let allow_pack_sources = self.setting(
            "build.allow_pack_sources",
            |l| l.build.allow_pack_sources,
            false,
            any,
        )?;
        let build_memory = self.setting(
            "build.memory",
            |l| l.build.memory.map(|s| s.0),
            DEFAULT_BUILD_MEMORY,
            |v| {
                in_range(
                    *v,
                    bounds::MIN_BUILD_MEMORY,
                    bounds::MAX_BUILD_MEMORY,
                    "64m",
                    "2047m",
                )
            },
        )?;

        let sandbox = SandboxPolicy {
            network: network.value.clone(),
            read_only_root: read_only_root.value,
            tmpfs_tmp_bytes: tmp.value,
            cap_drop_all: cap_drop_all.value,
            no_new_privileges: no_new_privileges.value,
            user: user.value.clone(),
            memory_bytes: memory.value,
            pids_limit: pids.value as u32,
            cpus: cpus.value,
            nofile: nofile.value as u32,
            oci_runtime: oci_runtime.map(|p| p.value),
            seccomp: seccomp.value.clone(),
            isolation: Default::default(),
            weaker_than_default: Vec::new(),
            backend: backend.value.clone(),
            applied_as: Vec::new(),
        };
        let weaker = weaker_settings(&sandbox, &d);
        let mut weakened = Vec::new();
        for (setting, value, default) in weaker {
            let source = match setting {
                "sandbox.network" => network.source,
                "sandbox.read_only_root" => read_only_root.source,
                "sandbox.tmp_size" => tmp.source,
                "sandbox.cap_drop_all" => cap_drop_all.source,
                "sandbox.no_new_privileges" => no_new_privileges.source,
                "sandbox.user" => user.source,
                "sandbox.memory" => memory.source,
                "sandbox.pids" => pids.source,
                "sandbox.cpus" => cpus.source,
                "sandbox.seccomp" => seccomp.source,
                _ => nofile.source,
            };
            if !allow_weaker {
                return Err(SettingsError::Weaker {
                    setting: setting.into(),
                    value,
                    default,
                    source_name: self.source_name(source),
                });
            }
            weakened.push(format!("{setting} = {value} (default {default})"));
        }
        let sandbox = SandboxPolicy {
            weaker_than_default: weakened,
            ..sandbox
        };
        let serve = self.serve(env)?;
        let client = self.client(env)?;
        Ok(Settings {
            endpoint,
            pack_delivery,
            backend: parse_backend(&backend.value).unwrap_or_default(),
            registry: registry.map(|p| p.value),
            state_dir: state_dir.value,
            catalog_dir: catalog.map(|p| p.value),
            runtimes: runtimes.map(|p| p.value),
            sandbox,
            isolation,
            network: network_policy,
            egress,
            run: RunDefaults {
                timeout: timeout.map(|t| Duration::from_secs(t.value)),
                grace: Duration::from_secs(grace.value),
                max_output: max_output.value as usize,
            },
            build: BuildSettings {
                ca_bundle: ca_bundle.map(|p| p.value),
                index: IndexSettings {
                    pip_index_url: pip_index_url.map(|p| p.value),
                    npm_registry: npm_registry.map(|p| p.value),
                },
                proxies,
                allow_pack_sources: allow_pack_sources.value,
                memory_bytes: Some(build_memory.value),
                timeout: Duration::from_secs(build_timeout.value),
            },
            serve,
            client,
            config_file,
            shown: self.shown,
        })
    }

    /// The network rules (config file only) and the `egress:` section, checked and shown.
    fn network(&mut self) -> Result<(NetworkPolicy, EgressSettings), SettingsError> {
        let rules = self.pick(|l| l.network.clone());
        let network = match &rules {
            Some(picked) => {
                NetworkPolicy::new(picked.value.clone()).map_err(|e| SettingsError::Value {
                    setting: "network".into(),
                    source_name: self.source_name(picked.source),
                    message: e.to_string(),
                })?
            }
            None => NetworkPolicy::default(),
        };
        let shown_rules: Vec<String> = network
            .rules()
            .map(|rule| {
                let egress: Vec<String> = rule.egress.iter().map(|d| d.to_string()).collect();
                format!("{} -> {}", rule.pattern, egress.join(" "))
            })
            .collect();
        self.show(
            "network",
            shown_rules,
            rules.as_ref().map_or(Source::Default, |p| p.source),
        );
        let source = if !self.file.egress.is_empty() {
            Source::File
        } else if !self.env.egress.is_empty() {
            Source::Env
        } else {
            Source::Default
        };
        let layers = [&self.flags.egress, &self.file.egress, &self.env.egress];
        let egress = crate::egress::config::resolve(&layers).map_err(|(setting, message)| {
            SettingsError::Value {
                setting: setting.into(),
                source_name: self.source_name(source),
                message,
            }
        })?;
        self.show("egress", &egress, source);
        Ok((network, egress))
    }

    /// The `client:` settings: the server's URL (checked), the token from the environment.
    fn client(&mut self, env: &Environment) -> Result<ClientSettings, SettingsError> {
        let server = self.pick(|l| l.client.server.clone());
        if let Some(server) = &server {
            let url = &server.value;
            let valid = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !valid {
                return Err(SettingsError::Value {
                    setting: "client.server".into(),
                    source_name: self.source_name(server.source),
                    message: format!(
                        "`{url}` is not a server URL: expected http://HOST:PORT, or https://HOST:PORT for a server behind a TLS proxy"
                    ),
                });
            }
        }
        self.show(
            "client.server",
            server.as_ref().map(|p| without_credentials(&p.value)),
            server.as_ref().map_or(Source::Default, |p| p.source),
        );
        let ca_file = self.pick(|l| l.client.ca_file.clone());
        self.show(
            "client.ca_file",
            ca_file.as_ref().map(|p| &p.value),
            ca_file.as_ref().map_or(Source::Default, |p| p.source),
        );
        let token = env.get("PACKBOX_TOKEN").map(|t| HiddenText(t.to_string()));
        self.show(
            "client.token (PACKBOX_TOKEN)",
            token.as_ref().map(|_| "(set, not shown)"),
            if token.is_some() {
                Source::Env
            } else {
                Source::Default
            },
        );
        Ok(ClientSettings {
            server: server.map(|p| p.value.trim_end_matches('/').to_string()),
            ca_file: ca_file.map(|p| p.value),
            token,
        })
    }

    /// The `serve:` settings: each one picked, checked and shown.
    fn serve(&mut self, env: &Environment) -> Result<ServeSettings, SettingsError> {
        use serve_defaults as d;
        let listen = self.setting(
            "serve.listen",
            |l| l.serve.listen.clone(),
            d::LISTEN.to_string(),
            |text| {
                text.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
                    format!("`{text}` is not an address: expected IP:PORT such as 127.0.0.1:8080")
                })
            },
        )?;
        let packs = self.pick(|l| l.serve.packs.clone());
        self.show(
            "serve.packs",
            packs.as_ref().map(|p| &p.value),
            packs.as_ref().map_or(Source::Default, |p| p.source),
        );
        let token_file = self.pick(|l| l.serve.token_file.clone());
        self.show(
            "serve.token_file",
            token_file.as_ref().map(|p| &p.value),
            token_file.as_ref().map_or(Source::Default, |p| p.source),
        );
        let env_token = env
            .get("PACKBOX_SERVE_TOKEN")
            .map(|t| HiddenText(t.to_string()));
        self.show(
            "serve.token (PACKBOX_SERVE_TOKEN)",
            env_token.as_ref().map(|_| "(set, not shown)"),
            if env_token.is_some() {
                Source::Env
            } else {
                Source::Default
            },
        );
        let count = |min: u64, max: u64| move |v: &u64| count_in_range(*v, min, max);
        let max_concurrent = self.setting(
            "serve.max_concurrent",
            |l| l.serve.max_concurrent,
            d::MAX_CONCURRENT,
            count(1, 4096),
        )?;
        let max_queue = self.setting(
            "serve.max_queue",
            |l| l.serve.max_queue,
            d::MAX_QUEUE,
            count(0, 1_000_000),
        )?;
        let max_wait = self.setting(
            "serve.max_wait_seconds",
            |l| l.serve.max_wait_seconds,
            d::MAX_WAIT,
            count(1, 3600),
        )?;
        let max_timeout = self.setting(
            "serve.max_timeout_seconds",
            |l| l.serve.max_timeout_seconds,
            d::MAX_TIMEOUT,
            count(1, bounds::MAX_TIMEOUT),
        )?;
        let max_body = self.setting(
            "serve.max_body",
            |l| l.serve.max_body.map(|s| s.0),
            d::MAX_BODY,
            |v| in_range(*v, 1 << 10, 1 << 30, "1k", "1g"),
        )?;
        let client_timeout = self.setting(
            "serve.client_timeout_seconds",
            |l| l.serve.client_timeout_seconds,
            d::CLIENT_TIMEOUT,
            count(1, 3600),
        )?;
        let max_connections = self.setting(
            "serve.max_connections",
            |l| l.serve.max_connections,
            d::MAX_CONNECTIONS,
            count(1, 1_000_000),
        )?;
        let drain = self.setting(
            "serve.drain_seconds",
            |l| l.serve.drain_seconds,
            d::DRAIN,
            count(0, 24 * 3600),
        )?;
        let warm_per_kind = self.setting(
            "serve.warm.per_kind",
            |l| l.serve.warm.per_kind,
            d::WARM_PER_KIND,
            count(0, 64),
        )?;
        let warm_total = self.setting(
            "serve.warm.total",
            |l| l.serve.warm.total,
            d::WARM_TOTAL,
            count(0, 1024),
        )?;
        let age = |key: &'static str,
                   this: &mut Self,
                   get: fn(&SettingsLayer) -> Option<Age>,
                   default: Duration| {
            this.setting(
                key,
                |l| get(l).map(|a| a.0.as_secs()),
                default.as_secs(),
                |v| count_in_range(*v, 1, 100 * 365 * 24 * 3600),
            )
            .map(|p| Duration::from_secs(p.value))
        };
        let warm_idle = age("serve.warm.idle", self, |l| l.serve.warm.idle, d::WARM_IDLE)?;
        let warm_preload = self.setting(
            "serve.warm.preload",
            |l| l.serve.warm.preload,
            d::WARM_PRELOAD,
            any,
        )?;
        let succeeded_age = age(
            "serve.retention.succeeded.max_age",
            self,
            |l| l.serve.retention.succeeded.max_age,
            d::SUCCEEDED_AGE,
        )?;
        let failed_age = age(
            "serve.retention.failed.max_age",
            self,
            |l| l.serve.retention.failed.max_age,
            d::FAILED_AGE,
        )?;
        let prune_every = age(
            "serve.retention.prune_every",
            self,
            |l| l.serve.retention.prune_every,
            d::PRUNE_EVERY,
        )?;
        let succeeded_count = self.setting(
            "serve.retention.succeeded.max_count",
            |l| l.serve.retention.succeeded.max_count,
            d::SUCCEEDED_COUNT,
            count(1, u64::MAX >> 1),
        )?;
        let failed_count = self.setting(
            "serve.retention.failed.max_count",
            |l| l.serve.retention.failed.max_count,
            d::FAILED_COUNT,
            count(1, u64::MAX >> 1),
        )?;
        Ok(ServeSettings {
            // Checked above.
            listen: listen
                .value
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            packs: packs.map(|p| p.value),
            token_file: token_file.map(|p| p.value),
            env_token,
            max_concurrent: max_concurrent.value as usize,
            max_queue: max_queue.value as usize,
            max_wait: Duration::from_secs(max_wait.value),
            max_timeout: Duration::from_secs(max_timeout.value),
            max_body: max_body.value as usize,
            client_timeout: Duration::from_secs(client_timeout.value),
            max_connections: max_connections.value as usize,
            drain: Duration::from_secs(drain.value),
            warm: WarmSettings {
                per_kind: warm_per_kind.value as usize,
                total: warm_total.value as usize,
                idle: warm_idle,
                preload: warm_preload.value,
            },
            retention: Retention {
                succeeded: Keep {
                    max_age: succeeded_age,
                    max_count: succeeded_count.value,
                },
                failed: Keep {
                    max_age: failed_age,
                    max_count: failed_count.value,
                },
                prune_every,
            },
        })
    }
}

/// The sandbox settings weaker than the defaults: (setting, value, default).
fn weaker_settings(
    policy: &SandboxPolicy,
    d: &SandboxPolicy,
) -> Vec<(&'static str, String, String)> {
    let mut weaker = Vec::new();
    let mut flag = |setting: &'static str, value: String, default: String| {
        weaker.push((setting, value, default));
    };
    if policy.network != "none" {
        flag("sandbox.network", policy.network.clone(), d.network.clone());
    }
    if !policy.read_only_root {
        flag("sandbox.read_only_root", "false".into(), "true".into());
    }
    if !policy.cap_drop_all {
        flag("sandbox.cap_drop_all", "false".into(), "true".into());
    }
    if !policy.no_new_privileges {
        flag("sandbox.no_new_privileges", "false".into(), "true".into());
    }
    if policy.seccomp.is_weaker_than_packbox() {
        let value = serde_json::to_value(&policy.seccomp)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        flag("sandbox.seccomp", value, "packbox".into());
    }
    if policy
        .user
        .split(':')
        .any(|id| id.trim_start_matches('0').is_empty())
    {
        flag(
            "sandbox.user",
            format!("{} (root)", policy.user),
            d.user.clone(),
        );
    }
    if policy.memory_bytes > ceilings::MEMORY {
        flag(
            "sandbox.memory",
            policy.memory_bytes.to_string(),
            format!("{}, ceiling {}", d.memory_bytes, ceilings::MEMORY),
        );
    }
    if policy.tmpfs_tmp_bytes > ceilings::TMP {
        flag(
            "sandbox.tmp_size",
            policy.tmpfs_tmp_bytes.to_string(),
            format!("{}, ceiling {}", d.tmpfs_tmp_bytes, ceilings::TMP),
        );
    }
    if policy.cpus > ceilings::CPUS {
        flag(
            "sandbox.cpus",
            policy.cpus.to_string(),
            format!("{}, ceiling {}", d.cpus, ceilings::CPUS),
        );
    }
    if u64::from(policy.pids_limit) > ceilings::PIDS {
        flag(
            "sandbox.pids",
            policy.pids_limit.to_string(),
            format!("{}, ceiling {}", d.pids_limit, ceilings::PIDS),
        );
    }
    if u64::from(policy.nofile) > ceilings::NOFILE {
        flag(
            "sandbox.nofile",
            policy.nofile.to_string(),
            format!("{}, ceiling {}", d.nofile, ceilings::NOFILE),
        );
    }
    weaker
}

/// No check: any value of the type is fine.
fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

fn in_range(value: u64, min: u64, max: u64, min_text: &str, max_text: &str) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "expected a size from {min_text} to {max_text}, found {value} bytes"
        ))
    }
}

fn count_in_range(value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "expected a number from {min} to {max}, found {value}"
        ))
    }
}

/// `none`, `bridge` or a user network's name; never the host's network or another container's.
fn check_network(network: &str) -> Result<(), String> {
    if network.eq_ignore_ascii_case("host") {
        // Host networking shares the host's interfaces: not a sandbox.
        return Err("expected none, bridge or a network name (host is refused)".into());
    }
    if network.starts_with("container:") {
        return Err("joining another container's network is refused".into());
    }
    check_name(network)
        .map_err(|_| format!("`{network}` is not a network name (expected none, bridge or a name of letters, digits, `_`, `.`, `-`)"))
}

/// An engine object's name: letters, digits, `_`, `.`, `-`, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name (letters, digits, `_`, `.`, `-`)"
        ))
    }
}

/// `docker` or `swarm`.
fn parse_backend(name: &str) -> Result<Backend, String> {
    match name {
        "docker" => Ok(Backend::Docker),
        "swarm" => Ok(Backend::Swarm),
        other => Err(format!(
            "`{other}` is not a backend (expected docker or swarm)"
        )),
    }
}

/// `HOST:PORT`: a host name or IPv4 address and a port; no scheme, no path.
fn check_registry(registry: &str) -> Result<(), String> {
    let expected = || {
        format!("`{registry}` is not a registry address (expected HOST:PORT, e.g. 127.0.0.1:5000)")
    };
    let (host, port) = registry.rsplit_once(':').ok_or_else(expected)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(expected())
    }
}

/// `UID` or `UID:GID`, numeric, within the engine's range.
fn check_user(user: &str) -> Result<(), String> {
    let parts: Vec<&str> = user.split(':').collect();
    let valid = parts.len() <= 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_digit())
                && part.parse::<u64>().is_ok_and(|id| id <= bounds::MAX_ID)
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{user}` is not a user: expected UID or UID:GID, numeric, at most {}",
            bounds::MAX_ID
        ))
    }
}

/// A URL with any `user:password@` removed, for display.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::isolation::IsolationLevel;

    fn layer(yaml: &str) -> SettingsLayer {
        serde_yaml::from_str(yaml).expect("valid layer")
    }

    fn resolve(flags: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::resolve(
            layer(flags),
            None,
            &Environment::from_pairs(env.iter().copied()),
        )
    }

    fn with_file(flags: &str, file: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, file).expect("write config");
        Settings::resolve(
            layer(flags),
            Some(&path),
            &Environment::from_pairs(env.iter().copied()),
        )
    }

    fn source_of(settings: &Settings, key: &str) -> Source {
        settings
            .shown()
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.source)
            .expect("setting shown")
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999g").is_err(), "overflow");
    }

    #[test]
    fn the_engine_flag_beats_the_file_which_beats_docker_host() {
        let env = [("DOCKER_HOST", "unix:///run/env.sock")];
        let settings = with_file(
            "engine: unix:///run/flag.sock",
            "engine: tcp://file:2375",
            &env,
        )
        .expect("valid");
        assert_eq!(settings.endpoint.host, "unix:///run/flag.sock");
        assert_eq!(source_of(&settings, "engine"), Source::Flag);
        let settings = with_file("{}", "engine: tcp://file:2375", &env).expect("valid");
        assert_eq!(settings.endpoint.host, "tcp://file:2375");
        assert_eq!(source_of(&settings, "engine"), Source::File);
        assert_eq!(
            settings.pack_delivery,
            PackDelivery::Volume,
            "auto, remote engine"
        );
    }

    #[test]
    fn a_bad_engine_is_the_users_fault_from_a_flag_and_the_setups_from_the_environment() {
        let err = resolve("engine: ssh://builder", &[]).expect_err("ssh");
        assert!(
            err.to_string().starts_with("--engine: `ssh://builder`"),
            "{err}"
        );
        assert!(!err.is_engine_setup());
        let err = resolve("{}", &[("DOCKER_HOST", "ssh://builder")]).expect_err("ssh");
        assert!(err.to_string().starts_with("DOCKER_HOST: "), "{err}");
        assert!(err.is_engine_setup());
    }

    #[test]
    fn pack_delivery_is_chosen_or_asked_for() {
        let settings = resolve("pack_delivery: volume", &[]).expect("valid");
        assert_eq!(settings.pack_delivery, PackDelivery::Volume);
        let settings = resolve(
            "{}",
            &[
                ("PACKBOX_PACK_DELIVERY", "bind"),
                ("DOCKER_HOST", "tcp://h:2375"),
            ],
        )
        .expect("valid");
        assert_eq!(settings.pack_delivery, PackDelivery::Bind);
        let err = resolve("{}", &[("PACKBOX_PACK_DELIVERY", "copy")]).expect_err("bad");
        assert!(
            err.to_string().contains("expected auto, bind or volume"),
            "{err}"
        );
    }

    #[test]
    fn no_settings_is_the_locked_down_default() {
        let settings = resolve("{}", &[]).expect("defaults are valid");
        assert_eq!(settings.sandbox, SandboxPolicy::default());
        assert_eq!(settings.endpoint.host, "unix:///var/run/docker.sock");
        assert_eq!(
            settings.pack_delivery,
            PackDelivery::Bind,
            "auto, local socket"
        );
        assert!(settings.sandbox.weaker_than_default.is_empty());
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_environment() {
        let settings = with_file(
            "sandbox: {pids: 32}",
            "sandbox: {memory: 256m, pids: 64}\nrun: {timeout_seconds: 30}\nstate_dir: /from/file\n",
            &[
                ("PACKBOX_STATE_DIR", "/from/env"),
                ("PACKBOX_CATALOG", "/catalog/env"),
            ],
        )
        .expect("valid");
        assert_eq!(settings.sandbox.pids_limit, 32);
        assert_eq!(source_of(&settings, "sandbox.pids"), Source::Flag);
        assert_eq!(settings.sandbox.memory_bytes, 256 << 20);
        assert_eq!(source_of(&settings, "sandbox.memory"), Source::File);
        assert_eq!(settings.run.timeout, Some(Duration::from_secs(30)));
        assert_eq!(settings.state_dir, PathBuf::from("/from/file"));
        assert_eq!(settings.catalog_dir, Some(PathBuf::from("/catalog/env")));
        assert_eq!(source_of(&settings, "catalog"), Source::Env);
        assert_eq!(source_of(&settings, "sandbox.cpus"), Source::Default);
    }

    #[test]
    fn packs_choose_no_package_sources_and_builds_have_a_memory_limit_unless_set() {
        let settings = resolve("{}", &[]).expect("valid");
        assert!(!settings.build.allow_pack_sources);
        assert_eq!(settings.build.memory_bytes, Some(DEFAULT_BUILD_MEMORY));
        for yes in ["1", "true", "YES"] {
            let settings =
                resolve("{}", &[("PACKBOX_PIP_ALLOW_PACK_SOURCES", yes)]).expect("valid");
            assert!(settings.build.allow_pack_sources, "{yes}");
        }
        let settings =
            resolve("{}", &[("PACKBOX_PIP_ALLOW_PACK_SOURCES", "maybe")]).expect("valid");
        assert!(!settings.build.allow_pack_sources);
        let settings =
            resolve("build: {memory: 256m, allow_pack_sources: true}", &[]).expect("valid");
        assert_eq!(settings.build.memory_bytes, Some(256 << 20));
        assert!(settings.build.allow_pack_sources);
        for bad in ["build: {memory: 32m}", "build: {memory: 2g}"] {
            let err = resolve(bad, &[]).expect_err(bad);
            assert!(err.to_string().contains("build.memory"), "{err}");
        }
    }

    #[test]
    fn the_environment_names_the_engine_and_the_build_settings() {
        let settings = resolve(
            "{}",
            &[
                ("DOCKER_HOST", "unix:///run/other.sock"),
                ("PACKBOX_BUILD_CA_BUNDLE", "/ca.pem"),
                (
                    "PACKBOX_PIP_INDEX_URL",
                    "https://user:pw@pypi.example/simple",
                ),
                ("HTTPS_PROXY", "http://u:secret@proxy:3128"),
            ],
        )
        .expect("valid");
        assert_eq!(settings.endpoint.host, "unix:///run/other.sock");
        assert_eq!(source_of(&settings, "engine"), Source::Env);
        assert_eq!(settings.build.ca_bundle, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            settings.build.proxies["HTTPS_PROXY"],
            "http://u:secret@proxy:3128"
        );
        let shown = serde_json::to_string(settings.shown()).expect("json");
        assert!(
            !shown.contains("secret") && !shown.contains(":pw@"),
            "{shown}"
        );
        assert!(shown.contains("pypi.example"), "{shown}");
    }

    #[test]
    fn the_state_folder_follows_xdg_then_home() {
        let xdg = resolve("{}", &[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]).expect("ok");
        assert_eq!(xdg.state_dir, PathBuf::from("/xdg/packbox"));
        let home = resolve("{}", &[("HOME", "/home/u")]).expect("ok");
        assert_eq!(
            home.state_dir,
            PathBuf::from("/home/u/.local/state/packbox")
        );
    }

    #[test]
    fn a_config_file_in_the_working_folder_is_never_read() {
        // Only --config, PACKBOX_CONFIG and the user's config folder name a file.
        let env = Environment::from_pairs([("HOME", "/nonexistent-home")]);
        assert_eq!(config_file(None, &env), None);
        let env = Environment::from_pairs([("PACKBOX_CONFIG", "/etc/pb.yaml")]);
        assert_eq!(config_file(None, &env), Some(PathBuf::from("/etc/pb.yaml")));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("packbox")).expect("mkdir");
        std::fs::write(dir.path().join("packbox/config.yaml"), "{}").expect("write");
        let home = dir.path().to_string_lossy().into_owned();
        let env = Environment::from_pairs([("XDG_CONFIG_HOME", home.as_str())]);
        assert_eq!(
            config_file(None, &env),
            Some(dir.path().join("packbox/config.yaml"))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = with_file("{}", "sandbox: {memroy: 1g}\n", &[]).expect_err("misspelt");
        assert!(err.to_string().contains("memroy"), "{err}");
        assert!(with_file("{}", "sandbox: {mounts: [/var/run/docker.sock]}\n", &[]).is_err());
    }

    #[test]
    fn weaker_settings_need_an_explicit_allowance() {
        for weaker in [
            "sandbox: {user: '0:0'}",
            "sandbox: {user: '0'}",
            "sandbox: {cap_drop_all: false}",
            "sandbox: {no_new_privileges: false}",
            "sandbox: {read_only_root: false}",
            "sandbox: {network: bridge}",
            "sandbox: {memory: 16g}",
            "sandbox: {pids: 100000}",
            "sandbox: {seccomp: engine-default}",
            "sandbox: {seccomp: unconfined}",
        ] {
            let err = with_file("{}", weaker, &[]).expect_err(weaker);
            assert!(
                matches!(err, SettingsError::Weaker { .. }),
                "{weaker}: {err}"
            );
            assert!(err.to_string().contains("--allow-weaker-sandbox"), "{err}");
            let flag = with_file("sandbox: {allow_weaker: true}", weaker, &[]).expect(weaker);
            assert_eq!(flag.sandbox.weaker_than_default.len(), 1, "{weaker}");
        }
    }

    #[test]
    fn allowing_weaker_in_the_file_reports_what_was_weakened() {
        let settings = with_file(
            "{}",
            "sandbox: {allow_weaker: true, user: '0:0', network: bridge}\n",
            &[],
        )
        .expect("allowed");
        assert_eq!(settings.sandbox.weaker_than_default.len(), 2);
        assert!(
            settings
                .sandbox
                .weaker_than_default
                .iter()
                .any(|w| w.contains("root"))
        );
    }

    #[test]
    fn flags_and_file_share_one_validation() {
        for (flags, file) in [
            (
                "sandbox: {tmp_size: 999999g}",
                "sandbox: {tmp_size: 999999g}",
            ),
            ("sandbox: {tmp_size: 1}", "sandbox: {tmp_size: 1}"),
            ("run: {max_output: 0}", "run: {max_output: 0}"),
            ("sandbox: {cpus: 0.0001}", "sandbox: {cpus: 0.0001}"),
            (
                "sandbox: {user: '4294967295'}",
                "sandbox: {user: '4294967295'}",
            ),
            ("sandbox: {pids: 4294967295}", "sandbox: {pids: 4294967295}"),
            ("sandbox: {network: HOST}", "sandbox: {network: HOST}"),
            ("run: {timeout_seconds: 0}", "run: {timeout_seconds: 0}"),
            ("sandbox: {user: root}", "sandbox: {user: root}"),
        ] {
            let from_flag = resolve(flags, &[]).expect_err(flags).to_string();
            let from_file = with_file("{}", file, &[]).expect_err(file).to_string();
            let strip = |text: &str| text.split_once("): ").map(|(_, m)| m.to_string());
            assert_eq!(strip(&from_flag), strip(&from_file), "{flags}");
            assert!(from_flag.contains("(from the command line)"), "{from_flag}");
            assert!(from_file.contains("(from config file "), "{from_file}");
        }
    }

    #[test]
    fn the_seccomp_setting_names_the_profile() {
        let settings = resolve("{}", &[]).expect("defaults");
        assert_eq!(settings.sandbox.seccomp, SeccompProfile::Packbox);
        let settings = with_file(
            "sandbox: {seccomp: packbox}",
            "sandbox: {seccomp: engine-default}",
            &[],
        )
        .expect("the flag wins");
        assert_eq!(settings.sandbox.seccomp, SeccompProfile::Packbox);
        assert_eq!(source_of(&settings, "sandbox.seccomp"), Source::Flag);
        let allowed = resolve(
            "sandbox: {seccomp: engine-default, allow_weaker: true}",
            &[],
        )
        .expect("allowed");
        assert_eq!(allowed.sandbox.seccomp, SeccompProfile::EngineDefault);
        assert_eq!(
            allowed.sandbox.weaker_than_default,
            ["sandbox.seccomp = engine-default (default packbox)"]
        );
        let err = resolve("sandbox: {seccomp: /nonexistent/profile.json}", &[])
            .expect_err("missing file");
        let text = chain(&err);
        assert!(
            text.contains("sandbox.seccomp (from the command line)"),
            "{text}"
        );
        assert!(
            text.contains("/nonexistent/profile.json: cannot read"),
            "{text}"
        );
    }

    #[test]
    fn isolation_rules_come_from_the_config_file() {
        let settings = with_file(
            "{}",
            "isolation:\n  - {match: \"payments.*\", level: strict}\n",
            &[],
        )
        .expect("valid");
        let (level, _) = settings
            .isolation
            .level_for("payments.charge", IsolationLevel::Standard);
        assert_eq!(level, IsolationLevel::Strict);
        let shown = serde_json::to_string(settings.shown()).expect("json");
        assert!(shown.contains("payments.* -> strict"), "{shown}");
        let err = with_file(
            "{}",
            "isolation:\n  - {match: \"[x\", level: strict}\n",
            &[],
        )
        .expect_err("bad glob");
        assert!(
            err.to_string().contains("isolation (from config file"),
            "{err}"
        );
        let err = with_file(
            "{}",
            "isolation:\n  - {match: \"x.*\", level: loose}\n",
            &[],
        )
        .expect_err("bad level");
        assert!(err.to_string().contains("loose"), "{err}");
    }

    #[test]
    fn networks_are_names_and_never_the_host_or_another_container() {
        assert!(check_network("none").is_ok());
        assert!(check_network("bridge").is_ok());
        assert!(check_network("my-net_1.a").is_ok());
        assert!(check_network("host").is_err());
        assert!(check_network("Host").is_err());
        assert!(check_network("container:abc").is_err());
        assert!(check_network("").is_err());
        assert!(check_network("a b").is_err());
    }

    #[test]
    fn the_backend_is_docker_unless_swarm_is_asked_for() {
        let settings = resolve("{}", &[]).expect("defaults");
        assert_eq!(settings.backend, Backend::Docker);
        assert_eq!(source_of(&settings, "backend"), Source::Default);
        let swarm = with_file("{}", "backend: swarm\nregistry: 127.0.0.1:5000\n", &[])
            .expect("swarm from the file");
        assert_eq!(swarm.backend, Backend::Swarm);
        assert_eq!(swarm.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(source_of(&swarm, "backend"), Source::File);
        let from_env = resolve("{}", &[("PACKBOX_BACKEND", "swarm")]).expect("env");
        assert_eq!(from_env.backend, Backend::Swarm);
        let flag_wins = with_file("backend: docker", "backend: swarm\n", &[]).expect("flag");
        assert_eq!(flag_wins.backend, Backend::Docker);
    }

    #[test]
    fn a_bad_backend_or_registry_is_refused_naming_it() {
        let err = resolve("backend: kubernetes", &[]).expect_err("unknown");
        assert!(
            err.to_string().contains("backend") && err.to_string().contains("kubernetes"),
            "{err}"
        );
        for bad in [
            "http://127.0.0.1:5000",
            "127.0.0.1",
            "host:0",
            "host:99999",
            "a b:5000",
            "host:5000/path",
        ] {
            let err =
                resolve(&format!("{{backend: swarm, registry: '{bad}'}}"), &[]).expect_err(bad);
            assert!(err.to_string().contains("HOST:PORT"), "{bad}: {err}");
        }
        let err = resolve("{backend: swarm, sandbox: {oci_runtime: runsc}}", &[])
            .expect_err("no OCI runtime per service");
        assert!(
            err.to_string().contains("sandbox.oci_runtime")
                && err.to_string().contains("swarm backend"),
            "{err}"
        );
        let err = resolve("registry: 127.0.0.1:5000", &[]).expect_err("docker backend");
        assert!(err.to_string().contains("only the swarm backend"), "{err}");
        assert!(resolve("{backend: swarm, registry: 'registry.example:443'}", &[]).is_ok());
    }

    #[test]
    fn users_are_numeric_and_in_range() {
        assert!(check_user("65534:65534").is_ok());
        assert!(check_user("1000").is_ok());
        assert!(check_user("2147483647").is_ok());
        assert!(check_user("2147483648").is_err());
        assert!(check_user("root").is_err());
        assert!(check_user("1:2:3").is_err());
        assert!(check_user(":1").is_err());
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            without_credentials("https://u:p@host:8080/simple"),
            "https://***@host:8080/simple"
        );
        assert_eq!(without_credentials("https://host/x"), "https://host/x");
        assert_eq!(without_credentials("plain"), "plain");
    }

    #[test]
    fn serve_settings_come_from_the_serve_section_and_the_environment() {
        let settings = with_file(
            "{}",
            "serve:\n  max_concurrent: 3\n  max_body: 64k\n  warm: {per_kind: 1, idle: 90s}\n  retention: {failed: {max_age: 60d, max_count: 5}}\n",
            &[
                ("PACKBOX_SERVE_LISTEN", "0.0.0.0:9000"),
                ("PACKBOX_PACKS", "/srv/packs"),
                ("PACKBOX_SERVE_TOKEN", "a-token-from-the-environment"),
            ],
        )
        .expect("valid");
        let serve = &settings.serve;
        assert_eq!(serve.max_concurrent, 3);
        assert_eq!(serve.max_body, 64 << 10);
        assert_eq!(serve.warm.per_kind, 1);
        assert_eq!(serve.warm.idle, Duration::from_secs(90));
        assert_eq!(
            serve.retention.failed.max_age,
            Duration::from_secs(60 * 86400)
        );
        assert_eq!(serve.retention.failed.max_count, 5);
        assert_eq!(
            serve.retention.succeeded.max_age,
            serve_defaults::SUCCEEDED_AGE
        );
        assert_eq!(serve.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(serve.packs, Some(PathBuf::from("/srv/packs")));
        assert_eq!(source_of(&settings, "serve.max_concurrent"), Source::File);
        assert_eq!(source_of(&settings, "serve.listen"), Source::Env);
        let shown = serde_json::to_string(settings.shown()).expect("json");
        assert!(!shown.contains("a-token-from-the-environment"), "{shown}");
        assert!(!format!("{settings:?}").contains("a-token-from-the-environment"));
    }

    #[test]
    fn bad_serve_values_name_the_setting_and_what_was_expected() {
        for (file, setting, expected) in [
            ("serve: {listen: 'localhost'}", "serve.listen", "IP:PORT"),
            (
                "serve: {max_concurrent: 0}",
                "serve.max_concurrent",
                "from 1",
            ),
            (
                "serve: {retention: {succeeded: {max_age: soon}}}",
                "serve.retention.succeeded",
                "7d",
            ),
            ("serve: {warm: {total: 100000}}", "serve.warm.total", "1024"),
        ] {
            let err = with_file("{}", file, &[]).expect_err(file).to_string();
            assert!(
                err.contains(setting) && err.contains(expected),
                "{file}: {err}"
            );
        }
        assert!(with_file("{}", "serve: {listne: x}", &[]).is_err());
    }

    #[test]
    fn a_huge_or_nested_config_file_is_refused() {
        let nested = format!("sandbox: {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let started = std::time::Instant::now();
        let err = with_file("{}", &nested, &[]).expect_err("too deep");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("config file"), "{err}");
    }
}
