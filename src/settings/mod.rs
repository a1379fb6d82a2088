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
//!
//! By job: `layers.rs` (a layer as written), `sources.rs` (the config file and the environment),
//! `resolve.rs` (the resolver and the top-level, `run:` and `build:` settings), `sandbox.rs` (the
//! `sandbox:` section and isolation rules), `network.rs` (the network rules and the `egress:`
//! section), `serve.rs` (the `serve:` and `client:` sections), `keystore.rs` (the `keystore:`
//! section), `bounds.rs` (ranges, ceilings and checks), `values.rs` (what settings resolve to, with
//! defaults), `show.rs` (what `config show` prints), `error.rs`.

mod bounds;
mod error;
mod keystore;
mod layers;
mod network;
mod resolve;
mod sandbox;
mod serve;
mod show;
mod sources;
mod values;

use std::path::{Path, PathBuf};

pub use error::SettingsError;
pub use keystore::{KeyInjection, KeystoreSettings};
pub use layers::{
    Age, BuildLayer, ClientLayer, KeepLayer, KeystoreLayer, RecordsLayer, RetentionLayer, RunLayer,
    SandboxLayer, ServeLayer, SettingsLayer, Size, SwarmLayer, WarmLayer, parse_size,
};
pub use show::{ShownSetting, Source};
pub use sources::Environment;
pub use values::{
    Backend, ClientSettings, DEFAULT_GRACE, DEFAULT_MAX_OUTPUT, HeldLimits, HiddenText, Keep,
    PackDelivery, RecordBounds, Retention, RunDefaults, ServeSettings, WarmSettings,
    serve_defaults,
};

use crate::egress::config::EgressSettings;
use crate::egress::policy::NetworkPolicy;
use crate::engine::endpoint::{self, Endpoint};
use crate::image::env::BuildSettings;
use crate::sandbox::SandboxPolicy;
use crate::sandbox::isolation::IsolationPolicy;
use resolve::Resolver;
use sources::{config_file, env_layer, read_config};

/// Everything a packbox process runs with, resolved once.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// Where actions run.
    pub backend: Backend,
    /// The registry pack images go through (swarm backend only).
    pub registry: Option<String>,
    /// Swarm placement constraints every service carries (swarm backend only; none: any node).
    pub placement: Vec<String>,
    /// Where the engine is, and why (found the way the docker CLI finds engines).
    pub endpoint: Endpoint,
    /// How the pack reaches the container: `Bind` or `Volume` (`auto` already decided).
    pub pack_delivery: PackDelivery,
    /// Where packbox keeps its probe cache, build logs and locks.
    pub state_dir: PathBuf,
    /// A folder of runtime definitions (or one such file, in packbox's or Attune's shape) that
    /// extend or replace the built-in catalog.
    pub catalog_dir: Option<PathBuf>,
    /// `PACKBOX_RUNTIMES`: the runtimes to verify.
    pub runtimes: Option<String>,
    /// Whether a pack's own `runtimes/*.yaml` are added, for its own runs, to the catalog
    /// (`build.allow_pack_runtimes`, off by default).
    pub allow_pack_runtimes: bool,
    /// Whether packs may have the Debian packages they declare (`meta.system_packages`)
    /// installed (`build.allow_system_packages`, off by default).
    pub allow_system_packages: bool,
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
    /// The key store: its key-encryption key and which keys runs receive.
    pub keystore: KeystoreSettings,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    shown: Vec<ShownSetting>,
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

#[cfg(test)]
mod tests;
