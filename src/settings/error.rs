//! What is wrong with the settings: one error naming the setting, where its value came from
//! and what was expected.

use std::path::PathBuf;

use crate::engine::endpoint::EndpointError;

/// Settings that cannot be used, naming the setting, where its value came from and what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The config file could not be read (missing, not a regular file, too large, not UTF-8 or
    /// nested too deeply).
    #[error("config file {0}")]
    Unreadable(#[from] crate::common::input::InputError),
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
