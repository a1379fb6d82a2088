//! The command line's share of the settings: global flags and the sandbox and limit flags of
//! `run`, turned into one [`SettingsLayer`] and resolved with the config file and the
//! environment by the library (the command line reads no environment variable itself, so
//! `packbox config show` can say where each value came from).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use packbox::{
    Endpoint, Environment, PackDelivery, Settings, SettingsError, SettingsLayer, Size, parse_size,
};

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A config file (default: $PACKBOX_CONFIG, else $XDG_CONFIG_HOME/packbox/config.yaml; a
    /// packbox.yaml in the working folder is never read on its own).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A folder of runtime definitions (*.yaml), or one such file, that extend or replace the
    /// built-in catalog; packbox's shape or Attune's runtime YAML (default: $PACKBOX_CATALOG).
    #[arg(long, global = true, value_name = "DIR|FILE")]
    pub catalog: Option<PathBuf>,
    /// The engine to use: an address (unix:///path, tcp://host:2376) or a docker context name
    /// (default: as the docker CLI finds it: DOCKER_HOST, DOCKER_CONTEXT, the current docker
    /// context, the local socket).
    #[arg(long, global = true, value_name = "ENGINE")]
    pub engine: Option<String>,
    /// Where actions run: docker (a container on the engine; default) or swarm (a one-shot
    /// service on the Swarm the engine manages). Default: $PACKBOX_BACKEND.
    #[arg(long, global = true, value_name = "docker|swarm")]
    pub backend: Option<String>,
    /// A registry (HOST:PORT) the swarm backend pushes pack images to; needed when the Swarm has
    /// more than one node. Default: $PACKBOX_REGISTRY.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub registry: Option<String>,
    /// A Swarm placement constraint for the swarm backend's services (node.role==worker,
    /// node.labels.zone!=dmz); repeatable, a node must meet all. Replaces swarm.placement of the
    /// config file. Default: any node.
    #[arg(long, global = true, value_name = "CONSTRAINT")]
    pub placement: Vec<String>,
    /// Where packbox keeps its probe cache, build logs and locks (default: $PACKBOX_STATE_DIR,
    /// else $XDG_STATE_HOME/packbox).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The key store's key-encryption key: a file of 64 hex digits, outside the state folder
    /// (default: $PACKBOX_KEY_FILE, else keystore.key_file; none: the key store is empty).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Seconds an environment build may take before it is stopped and removed (default 1800).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub build_timeout: Option<u64>,
    /// Plain output: no spinners or colours (also $NO_COLOR).
    #[arg(long, global = true, env = "NO_COLOR", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_color: bool,
}

/// The sandbox and limit flags of commands that run actions.
#[derive(Debug, Default, Args)]
pub struct SandboxArgs {
    /// Seconds before the action is stopped (default: its timeout_seconds, else 600).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping the action (default 10).
    #[arg(long, value_name = "SECONDS")]
    grace: Option<u64>,
    /// Bytes kept per output stream (default 10m).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,
    /// Network the action may use: none (default), bridge, or a network name. Anything but
    /// none needs --allow-weaker-sandbox.
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// Memory limit, without swap (default 512m).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// CPUs (default 1).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Maximum number of processes (default 256).
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Maximum number of open files (default 1024).
    #[arg(long, value_name = "N")]
    nofile: Option<u64>,
    /// Size of the /tmp tmpfs (default 64m).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    tmp_size: Option<u64>,
    /// User (UID or UID:GID) the action runs as (default 65534:65534; root needs
    /// --allow-weaker-sandbox).
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// An OCI runtime the engine offers, e.g. runsc (default: the engine's).
    #[arg(long, value_name = "NAME")]
    oci_runtime: Option<String>,
    /// How the pack reaches the container: bind (mount the folder; only for an engine on this
    /// machine), volume (a read-only volume filled through the API, once per pack content), or
    /// auto (bind for a local Unix socket of root's or your own, volume otherwise; the default).
    #[arg(long, value_name = "MODE", value_parser = PackDelivery::parse)]
    pack_delivery: Option<PackDelivery>,
    /// Syscall profile: packbox (default), or a JSON profile file; engine-default and
    /// unconfined need --allow-weaker-sandbox.
    #[arg(long, value_name = "packbox|engine-default|unconfined|FILE")]
    seccomp: Option<String>,
    /// Allow settings weaker than packbox's sandbox defaults (root, a network, capabilities,
    /// a writable root, limits above the ceilings); each one is then reported.
    #[arg(long)]
    allow_weaker_sandbox: bool,
}

impl SandboxArgs {
    /// `--timeout`: this run's own limit, which wins over the action's `timeout_seconds`.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.map(Duration::from_secs)
    }

    /// The `--timeout` given, or the first other flag given: with `--server` the sandbox and
    /// the limits are the server's.
    pub fn only_timeout(&self) -> Result<Option<u64>, &'static str> {
        let others = [
            ("--grace", self.grace.is_some()),
            ("--max-output", self.max_output.is_some()),
            ("--network", self.network.is_some()),
            ("--memory", self.memory.is_some()),
            ("--cpus", self.cpus.is_some()),
            ("--pids", self.pids.is_some()),
            ("--nofile", self.nofile.is_some()),
            ("--tmp-size", self.tmp_size.is_some()),
            ("--user", self.user.is_some()),
            ("--oci-runtime", self.oci_runtime.is_some()),
            ("--seccomp", self.seccomp.is_some()),
            ("--allow-weaker-sandbox", self.allow_weaker_sandbox),
        ];
        match others.into_iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(flag),
            None => Ok(self.timeout),
        }
    }
}

/// Resolves the settings of a command that runs no action.
pub fn resolve(global: &GlobalArgs) -> Result<Settings, SettingsError> {
    resolve_with(global, &SandboxArgs::default())
}

/// Resolves the settings of a command: its flags, the config file, the environment, defaults.
pub fn resolve_with(global: &GlobalArgs, sandbox: &SandboxArgs) -> Result<Settings, SettingsError> {
    Settings::resolve(
        layer(global, sandbox),
        global.config.as_deref(),
        &Environment::capture(),
    )
}

/// The command line's layer of settings: the global flags and the sandbox flags.
pub fn layer(global: &GlobalArgs, sandbox: &SandboxArgs) -> SettingsLayer {
    let mut layer = SettingsLayer::default();
    layer.engine = global.engine.clone();
    layer.backend = global.backend.clone();
    layer.registry = global.registry.clone();
    if !global.placement.is_empty() {
        layer.swarm.placement = Some(global.placement.clone());
    }
    layer.state_dir = global.state_dir.clone();
    layer.catalog = global.catalog.clone();
    layer.keystore.key_file = global.key_file.clone();
    layer.pack_delivery = sandbox.pack_delivery;
    let s = &mut layer.sandbox;
    s.network = sandbox.network.clone();
    s.tmp_size = sandbox.tmp_size.map(Size);
    s.user = sandbox.user.clone();
    s.memory = sandbox.memory.map(Size);
    s.pids = sandbox.pids;
    s.cpus = sandbox.cpus;
    s.nofile = sandbox.nofile;
    s.oci_runtime = sandbox.oci_runtime.clone();
    s.seccomp = sandbox.seccomp.clone();
    s.allow_weaker = sandbox.allow_weaker_sandbox.then_some(true);
    let r = &mut layer.run;
    r.timeout_seconds = sandbox.timeout;
    r.grace_seconds = sandbox.grace;
    r.max_output = sandbox.max_output.map(Size);
    layer.build.timeout_seconds = global.build_timeout;
    layer
}

/// The engine a flag other than `--engine` names (`--to ENGINE`), resolved with the environment.
pub fn engine_flag(flag: &str, value: &str) -> Result<Endpoint, SettingsError> {
    Settings::resolve_engine_flag(flag, value, &Environment::capture())
}
