//! Where the layers come from: the config file (never one in the working folder) and the process
//! environment, captured once. The only place packbox reads its environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::layers::{
    BuildLayer, ClientLayer, KeystoreLayer, RunLayer, SandboxLayer, ServeLayer, SettingsLayer,
    SwarmLayer,
};
use super::{PackDelivery, SettingsError};
use crate::egress::config::EgressLayer;
use crate::engine::endpoint;

/// The largest config file packbox reads.
pub(super) const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Proxy variables passed to environment builds as build arguments.
pub(super) const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ftp_proxy",
];

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

/// The config file to read: `--config`, else `PACKBOX_CONFIG`, else the user's own when it
/// exists. Never one in the working folder.
pub(super) fn config_file(explicit: Option<&Path>, env: &Environment) -> Option<PathBuf> {
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

pub(super) fn read_config(path: &Path) -> Result<SettingsLayer, SettingsError> {
    // A regular file under the cap, nesting at most 64 levels (checked before serde_yaml).
    let text = crate::common::input::read_yaml(path, MAX_CONFIG_BYTES)?;
    if text.trim().is_empty() {
        return Ok(SettingsLayer::default());
    }
    serde_yaml::from_str(&text).map_err(|e| SettingsError::Invalid {
        file: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The settings the environment carries.
pub(super) fn env_layer(env: &Environment) -> Result<SettingsLayer, SettingsError> {
    let path = |name: &str| env.get(name).map(PathBuf::from);
    let text = |name: &str| env.get(name).map(str::to_string);
    // Anything but a clear yes keeps the safe default.
    let flag = |name: &str| {
        env.get(name)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    };
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
        run: RunLayer {
            strict_parameters: flag("PACKBOX_STRICT_PARAMETERS"),
            ..RunLayer::default()
        },
        // Constraints separated by `;`, which no constraint can hold (the Swarm refuses it in
        // values).
        swarm: SwarmLayer {
            placement: text("PACKBOX_PLACEMENT").map(|list| {
                list.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
        },
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
            allow_pack_sources: flag("PACKBOX_PIP_ALLOW_PACK_SOURCES"),
            allow_pack_runtimes: flag("PACKBOX_ALLOW_PACK_RUNTIMES"),
            allow_system_packages: flag("PACKBOX_ALLOW_SYSTEM_PACKAGES"),
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
        keystore: KeystoreLayer {
            key_file: path("PACKBOX_KEY_FILE"),
            inject: None,
        },
    })
}

/// The state folder when none is set: `$XDG_STATE_HOME/packbox`, else
/// `~/.local/state/packbox`, else a folder under the system's temp dir.
pub(super) fn default_state_dir(env: &Environment) -> PathBuf {
    if let Some(dir) = env.get("XDG_STATE_HOME") {
        return Path::new(dir).join("packbox");
    }
    if let Some(home) = env.get("HOME") {
        return Path::new(home).join(".local/state/packbox");
    }
    std::env::temp_dir().join("packbox-state")
}
