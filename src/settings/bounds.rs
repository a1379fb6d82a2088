//! The bounds every value must keep whatever its source (an input error outside them), the
//! ceilings above which a limit weakens the sandbox, and the checks of names, users, networks
//! and registries.

use super::Backend;
use crate::sandbox::SandboxPolicy;

/// The engine refuses a memory limit under 6 MiB.
pub(super) const MIN_MEMORY: u64 = 6 << 20;
/// Memory limit at most: 1 TiB.
pub(super) const MAX_MEMORY: u64 = 1 << 40;
/// `/tmp` at least: 1 MiB.
pub(super) const MIN_TMP: u64 = 1 << 20;
/// `/tmp` at most: 64 GiB.
pub(super) const MAX_TMP: u64 = 64 << 30;
/// CPU share at least.
pub(super) const MIN_CPUS: f64 = 0.01;
/// CPU share at most.
pub(super) const MAX_CPUS: f64 = 1024.0;
/// The kernel's largest pid_max.
pub(super) const MAX_PIDS: u64 = 4_194_304;
/// Open-file limit at most (Linux's default `nr_open`).
pub(super) const MAX_NOFILE: u64 = 1 << 20;
/// The engine accepts ids up to 2^31-1.
pub(super) const MAX_ID: u64 = 2_147_483_647;
/// Bytes kept per output stream at least.
pub(super) const MIN_OUTPUT: u64 = 1;
/// Bytes kept per output stream at most: 1 GiB.
pub(super) const MAX_OUTPUT: u64 = 1 << 30;
/// Artifacts kept of one run at most (packbox's init looks at 4096 entries of the folder).
pub(super) const MAX_ARTIFACT_FILES: u64 = 4096;
/// Bytes of artifacts kept of one run at most: 1 GiB.
pub(super) const MAX_ARTIFACT_BYTES: u64 = 1 << 30;
/// The artifacts retention at least, in seconds: an hour, so `gc` never takes the folder of a
/// run that is still being recorded (a server stores its record just after the folder is named).
pub(super) const MIN_ARTIFACTS_RETENTION: u64 = 3600;
/// The artifacts retention at most, in seconds: 100 years.
pub(super) const MAX_ARTIFACTS_RETENTION: u64 = 100 * 365 * 24 * 3600;
/// Timeout at most, of a run or a build, in seconds: a week.
pub(super) const MAX_TIMEOUT: u64 = 7 * 24 * 3600;
/// Time between SIGTERM and SIGKILL at most, in seconds.
pub(super) const MAX_GRACE: u64 = 3600;
/// Memory of a build step at least: 64 MiB.
pub(super) const MIN_BUILD_MEMORY: u64 = 64 << 20;
/// The engine API takes a build's memory as a 32-bit number of bytes.
pub(super) const MAX_BUILD_MEMORY: u64 = (1 << 31) - 1;

/// Ceilings above which a limit counts as weakening the sandbox.
pub(super) mod ceilings {
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

/// The sandbox settings weaker than the defaults: (setting, value, default).
pub(super) fn weaker_settings(
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
        let mut value = serde_json::to_value(&policy.seccomp)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(weakness) = policy.seccomp.weakness() {
            value = format!("{value} ({weakness})");
        }
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
pub(super) fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

pub(super) fn in_range(
    value: u64,
    min: u64,
    max: u64,
    min_text: &str,
    max_text: &str,
) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "expected a size from {min_text} to {max_text}, found {value} bytes"
        ))
    }
}

pub(super) fn count_in_range(value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "expected a number from {min} to {max}, found {value}"
        ))
    }
}

/// `none`, `bridge` or a user network's name; never the host's network or another container's.
pub(super) fn check_network(network: &str) -> Result<(), String> {
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
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if crate::common::names::is_engine_name(name) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name (letters, digits, `_`, `.`, `-`)"
        ))
    }
}

/// `docker` or `swarm`.
pub(super) fn parse_backend(name: &str) -> Result<Backend, String> {
    match name {
        "docker" => Ok(Backend::Docker),
        "swarm" => Ok(Backend::Swarm),
        other => Err(format!(
            "`{other}` is not a backend (expected docker or swarm)"
        )),
    }
}

/// `HOST:PORT`: a host name or IPv4 address and a port; no scheme, no path.
pub(super) fn check_registry(registry: &str) -> Result<(), String> {
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

/// A Swarm placement constraint as the Swarm parses it (`KEY==VALUE` or `KEY!=VALUE`), with a
/// key the Swarm matches nodes on: a constraint with any other key would never match, and the
/// run would wait for a node that cannot come.
pub(super) fn check_placement(constraint: &str) -> Result<(), String> {
    static VALUE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        // The Swarm's own pattern for values (swarmkit's constraint.Parse).
        regex::Regex::new(r"^(?i)[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$").expect("a valid pattern")
    });
    let expected = "expected KEY==VALUE or KEY!=VALUE with KEY one of node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME, engine.labels.NAME";
    let Some((key, value)) = ["==", "!="].into_iter().find_map(|operator| {
        let (key, value) = constraint.split_once(operator)?;
        Some((key.trim(), value.trim()))
    }) else {
        return Err(format!(
            "`{constraint}` is not a placement constraint ({expected})"
        ));
    };
    let label_key = |prefix: &str| {
        key.strip_prefix(prefix).is_some_and(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    let known = matches!(
        key,
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || label_key("node.labels.")
        || label_key("engine.labels.");
    if !known {
        return Err(format!(
            "`{constraint}`: `{key}` is not a key the Swarm places by ({expected})"
        ));
    }
    if value.is_empty() || !VALUE.is_match(value) {
        return Err(format!(
            "`{constraint}`: `{value}` is not a value the Swarm accepts (letters, digits, spaces and : - _ . * ( ) ? + [ ] \\ ^ $ | /)"
        ));
    }
    if key == "node.role" && !matches!(value.to_ascii_lowercase().as_str(), "manager" | "worker") {
        return Err(format!(
            "`{constraint}`: a node's role is manager or worker"
        ));
    }
    Ok(())
}

/// `UID` or `UID:GID`, numeric, within the engine's range.
pub(super) fn check_user(user: &str) -> Result<(), String> {
    let parts: Vec<&str> = user.split(':').collect();
    let valid = parts.len() <= 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_digit())
                && part.parse::<u64>().is_ok_and(|id| id <= MAX_ID)
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{user}` is not a user: expected UID or UID:GID, numeric, at most {}",
            MAX_ID
        ))
    }
}
