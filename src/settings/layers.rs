//! One layer of settings as it is written (the flags, the config file or the environment): every
//! field optional, unknown fields refused; sizes and durations parsed as people write them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::PackDelivery;
use crate::egress::config::EgressLayer;
use crate::egress::policy::NetworkRule;
use crate::sandbox::isolation::IsolationRule;

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
    /// The `swarm:` section: where the swarm backend's services may run.
    #[serde(default)]
    pub swarm: SwarmLayer,
    /// The `keystore:` section: the key-encryption key and which keys runs receive.
    #[serde(default)]
    pub keystore: KeystoreLayer,
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
    /// The timeout of a run whose action states no `timeout_seconds` (600 by default).
    pub timeout_seconds: Option<u64>,
    /// Time between SIGTERM and SIGKILL when a run is stopped (10 by default).
    pub grace_seconds: Option<u64>,
    /// Bytes kept of each output stream of a run (`10m` by default).
    pub max_output: Option<Size>,
    /// Refuse parameters an action does not declare (accepted with a warning by default).
    pub strict_parameters: Option<bool>,
    /// Files kept of a run's `ATTUNE_ARTIFACTS_DIR` at most (64 by default).
    pub artifacts_max_files: Option<u64>,
    /// Bytes kept of a run's artifacts in all (`64m` by default).
    pub artifacts_max_bytes: Option<Size>,
    /// How long `packbox gc` keeps a local run's artifacts folder (`7d` by default).
    pub artifacts_retention: Option<Age>,
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
    /// Packs may bring runtimes (`runtimes/*.yaml`) for their own actions.
    pub allow_pack_runtimes: Option<bool>,
    /// Packs may have Debian packages installed into their environments
    /// (`meta.system_packages`).
    pub allow_system_packages: Option<bool>,
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

/// Swarm settings of one layer (the `swarm:` section of the config file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SwarmLayer {
    /// Swarm placement constraints every run's service carries (`node.role==worker`,
    /// `node.labels.zone!=dmz`), all of which a node must meet; a layer's list replaces the
    /// lists of the layers below it.
    pub placement: Option<Vec<String>>,
}

/// Key-store settings of one layer (the `keystore:` section of the config file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeystoreLayer {
    /// The key-encryption key: a file of 64 hex digits, outside the state folder.
    pub key_file: Option<PathBuf>,
    /// Which keys a run receives: `declared` (its `secret: true` parameters) or `all` (also
    /// every key of its pack and action scopes).
    pub inject: Option<String>,
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
    /// The `records:` section: how many bytes execution records may take.
    #[serde(default)]
    pub records: RecordsLayer,
    /// Requests that hold their connection (`wait`, output followers) at most at once; past
    /// it they get 429.
    pub max_waiting: Option<u64>,
    /// Followers of one execution's output at most at once.
    pub max_followers_per_execution: Option<u64>,
    /// Requests one token may hold open (followers and waits) at once.
    pub max_held_per_token: Option<u64>,
    /// Connections kept free of held requests, for health checks and short requests.
    pub reserved_connections: Option<u64>,
}

/// Record-size settings of one layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RecordsLayer {
    /// What all records may hold (output, results, errors); the oldest final ones are pruned
    /// past it.
    pub max_bytes: Option<Size>,
    /// Bytes a record keeps of each output stream (head and tail) and of a result.
    pub max_output: Option<Size>,
    /// New executions are refused (507) when the state folder's disk has less free than this.
    pub min_free_disk: Option<Size>,
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
