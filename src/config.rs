//! Operator settings for runs, resolved once: built-in defaults, then a config file
//! (`packbox.yaml` in the current folder, or `--config FILE`), then command-line flags.
//! Unknown fields are an error: a misspelt limit must not silently fall back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sandbox::seccomp::SeccompError;
use crate::sandbox::{SandboxPolicy, SeccompProfile};

/// The config file packbox reads from the current folder when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "packbox.yaml";

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {file}: cannot read")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Value { setting: String, message: String },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// `packbox.yaml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub run: RunSettings,
}

/// Sandbox settings; every field optional, each overrides one default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    pub network: Option<String>,
    pub read_only_root: Option<bool>,
    /// Size of the /tmp tmpfs (`64m`, `1g`, or bytes).
    pub tmp_size: Option<Size>,
    pub cap_drop_all: Option<bool>,
    pub no_new_privileges: Option<bool>,
    pub user: Option<String>,
    pub memory: Option<Size>,
    pub pids: Option<u32>,
    pub cpus: Option<f64>,
    pub nofile: Option<u32>,
    pub oci_runtime: Option<String>,
    /// `packbox` (default), `engine-default`, or the path of a JSON profile file.
    pub seccomp: Option<String>,
}

/// Limits of one run; every field optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub timeout_seconds: Option<u64>,
    pub grace_seconds: Option<u64>,
    pub max_output: Option<Size>,
}

/// A size in bytes, written as a number or with a binary suffix (`512m`, `64k`, `1g`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct Size(pub u64);

impl TryFrom<serde_yaml::Value> for Size {
    type Error = String;
    fn try_from(value: serde_yaml::Value) -> Result<Size, String> {
        match value {
            serde_yaml::Value::Number(n) => n
                .as_u64()
                .map(Size)
                .ok_or_else(|| format!("expected a positive size, found {n}")),
            serde_yaml::Value::String(s) => parse_size(&s).map(Size),
            _ => Err("expected a size such as 512m, 64k, 1g or a number of bytes".into()),
        }
    }
}

/// Parses `512m`, `64K`, `1g`, `1024` (bytes); binary multiples.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b').trim_end_matches('i');
    let (digits, shift) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 30),
        _ => (trimmed, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size (expected e.g. 512m, 64k, 1g or bytes)"))
}

impl ConfigFile {
    /// The file given with `--config` (it must exist), else `packbox.yaml` in the current folder
    /// when there is one, else no settings.
    pub fn load(explicit: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let file = match explicit {
            Some(file) => file.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.is_file() {
                    return Ok(ConfigFile::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Invalid {
            file,
            message: e.to_string(),
        })
    }

    /// The config's settings with `flags` on top (flags win field by field).
    pub fn with_flags(mut self, flags: ConfigFile) -> ConfigFile {
        let (s, f) = (&mut self.sandbox, flags.sandbox);
        macro_rules! over {
            ($target:expr, $($field:ident),*) => { $( if f.$field.is_some() { $target.$field = f.$field; } )* };
        }
        over!(
            s,
            network,
            read_only_root,
            tmp_size,
            cap_drop_all,
            no_new_privileges,
            user,
            memory,
            pids,
            cpus,
            nofile,
            oci_runtime,
            seccomp
        );
        let (r, g) = (&mut self.run, flags.run);
        if g.timeout_seconds.is_some() {
            r.timeout_seconds = g.timeout_seconds;
        }
        if g.grace_seconds.is_some() {
            r.grace_seconds = g.grace_seconds;
        }
        if g.max_output.is_some() {
            r.max_output = g.max_output;
        }
        self
    }

    /// The sandbox policy: the defaults with these settings applied, checked.
    pub fn policy(&self) -> Result<SandboxPolicy, ConfigError> {
        let s = &self.sandbox;
        let d = SandboxPolicy::default();
        let policy = SandboxPolicy {
            network: s.network.clone().unwrap_or(d.network),
            read_only_root: s.read_only_root.unwrap_or(d.read_only_root),
            tmpfs_tmp_bytes: s.tmp_size.map_or(d.tmpfs_tmp_bytes, |size| size.0),
            cap_drop_all: s.cap_drop_all.unwrap_or(d.cap_drop_all),
            no_new_privileges: s.no_new_privileges.unwrap_or(d.no_new_privileges),
            user: s.user.clone().unwrap_or(d.user),
            memory_bytes: s.memory.map_or(d.memory_bytes, |size| size.0),
            pids_limit: s.pids.unwrap_or(d.pids_limit),
            cpus: s.cpus.unwrap_or(d.cpus),
            nofile: s.nofile.unwrap_or(d.nofile),
            oci_runtime: s.oci_runtime.clone().or(d.oci_runtime),
            seccomp: match &s.seccomp {
                Some(setting) => SeccompProfile::from_setting(setting)?,
                None => d.seccomp,
            },
        };
        check_policy(&policy)?;
        Ok(policy)
    }

    /// Overrides of the run limits (`None`: the action's own or the default).
    pub fn timeout(&self) -> Option<Duration> {
        self.run.timeout_seconds.map(Duration::from_secs)
    }

    /// The grace period between SIGTERM and SIGKILL, if set.
    pub fn grace(&self) -> Option<Duration> {
        self.run.grace_seconds.map(Duration::from_secs)
    }

    /// The per-stream output limit, if set.
    pub fn max_output(&self) -> Option<usize> {
        self.run.max_output.map(|size| size.0 as usize)
    }
}

fn check_policy(policy: &SandboxPolicy) -> Result<(), ConfigError> {
    let bad = |setting: &str, message: &str| ConfigError::Value {
        setting: setting.into(),
        message: message.into(),
    };
    if policy.network.trim().is_empty() || policy.network == "host" {
        // Host networking shares the host's interfaces: not a sandbox.
        return Err(bad(
            "network",
            "expected none, bridge or a network name (host is refused)",
        ));
    }
    if policy.network.starts_with("container:") {
        return Err(bad(
            "network",
            "joining another container's network is refused",
        ));
    }
    if !(policy.cpus > 0.0 && policy.cpus.is_finite()) {
        return Err(bad("cpus", "expected a positive number of CPUs"));
    }
    if policy.pids_limit == 0 || policy.nofile == 0 {
        return Err(bad("pids/nofile", "expected a positive limit"));
    }
    if policy.memory_bytes < (6 << 20) {
        return Err(bad("memory", "expected at least 6m (the engine's minimum)"));
    }
    let user_ok = policy
        .user
        .split(':')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
    if !user_ok {
        return Err(bad("user", "expected UID or UID:GID, numeric"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn no_settings_is_the_locked_down_default() {
        let policy = ConfigFile::default().policy().expect("defaults are valid");
        assert_eq!(policy, SandboxPolicy::default());
    }

    #[test]
    fn flags_win_over_the_file_field_by_field() {
        let file = parse("sandbox: {memory: 256m, pids: 64}\nrun: {timeout_seconds: 30}\n")
            .expect("valid");
        let flags = parse("sandbox: {pids: 32}\n").expect("valid");
        let merged = file.with_flags(flags);
        let policy = merged.policy().expect("valid");
        assert_eq!(policy.memory_bytes, 256 << 20);
        assert_eq!(policy.pids_limit, 32);
        assert_eq!(merged.timeout(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_seccomp_setting_names_the_profile() {
        let policy = parse("sandbox: {seccomp: engine-default}\n")
            .expect("valid")
            .policy()
            .expect("valid");
        assert_eq!(policy.seccomp, SeccompProfile::EngineDefault);
        let flags = parse("sandbox: {seccomp: packbox}\n").expect("valid");
        let merged = parse("sandbox: {seccomp: engine-default}\n")
            .expect("valid")
            .with_flags(flags);
        assert_eq!(
            merged.policy().expect("valid").seccomp,
            SeccompProfile::Packbox
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("sandbox: {memroy: 1g}\n").expect_err("misspelt");
        assert!(err.to_string().contains("memroy"), "{err}");
        assert!(parse("sandbox: {mounts: [/var/run/docker.sock]}\n").is_err());
    }

    #[test]
    fn unsafe_or_nonsense_values_are_refused() {
        for text in [
            "sandbox: {network: host}",
            "sandbox: {network: 'container:abc'}",
            "sandbox: {cpus: 0}",
            "sandbox: {user: root}",
            "sandbox: {memory: 1k}",
            "sandbox: {seccomp: unconfined}",
            "sandbox: {seccomp: /nonexistent/profile.json}",
        ] {
            let config = parse(text).expect("parses");
            assert!(config.policy().is_err(), "{text} must be refused");
        }
    }
}
