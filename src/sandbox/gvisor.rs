//! gVisor (`runsc`) as the OCI runtime of a run: what packbox needs from the way the engine
//! registered it, and which sandbox settings it cannot honour, checked before any container
//! exists.
//!
//! Measured on Debian's runsc 20221219 under Docker 20.10 (see the README's sandbox section):
//! runsc needs `--network=none` (it refuses to start its own network stack in the host network
//! namespace Docker hands it), ignores the container's seccomp profile unless registered with
//! `--oci-seccomp`, and with `--ignore-cgroups` skips the container's cgroup, so that memory,
//! pids and CPU limits no longer hold. Without that flag the cgroup applies to the whole sandbox
//! (gVisor's kernel and the action): a 2 GiB allocation ends as `oom`.

use std::path::Path;

use crate::engine::OciRuntime;
use crate::sandbox::SandboxPolicy;

/// A run that gVisor, as registered, could not sandbox as asked.
#[derive(Debug, thiserror::Error)]
pub enum GvisorError {
    /// The run asks for a network; gVisor here runs without one.
    #[error(
        "OCI runtime `{runtime}` (gVisor) runs actions without a network; network `{network}` with it is refused (expected network none)"
    )]
    Network {
        /// The OCI runtime's name as registered (`runsc`).
        runtime: String,
        /// The network the run asks for.
        network: String,
    },
    /// Registered so that the container's cgroup is skipped: the limits would not hold.
    #[error(
        "OCI runtime `{runtime}` (gVisor) is registered with --ignore-cgroups, so the memory, pids and CPU limits would not hold; refusing to run under it"
    )]
    IgnoresCgroups {
        /// The OCI runtime's name as registered.
        runtime: String,
    },
    /// A strict run, whose runtime is not gVisor.
    #[error(
        "action {action} runs with isolation strict, which needs gVisor; OCI runtime `{runtime}` is not gVisor (its binary is {path})"
    )]
    StrictNeedsGvisor {
        /// The action's reference.
        action: String,
        /// The OCI runtime's name as registered.
        runtime: String,
        /// The runtime's binary, which is not gVisor's.
        path: String,
    },
    /// Registered so that the syscall profile is ignored.
    #[error(
        "OCI runtime `{runtime}` (gVisor) is registered without --oci-seccomp, so it would ignore the syscall profile; refusing to run under it"
    )]
    IgnoresSeccomp {
        /// The OCI runtime's name as registered.
        runtime: String,
    },
}

impl GvisorError {
    /// Whether the run's own settings are at fault (rather than how the engine registered runsc).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            GvisorError::Network { .. } | GvisorError::StrictNeedsGvisor { .. }
        )
    }
}

/// Whether an engine runtime is gVisor: its binary is `runsc`, whatever name it is registered by.
pub fn is_gvisor(runtime: &OciRuntime) -> bool {
    Path::new(&runtime.path)
        .file_name()
        .is_some_and(|name| name == "runsc")
}

/// Refuses a run under gVisor that would be weaker than asked: a network, a registration that
/// skips cgroups or ignores the syscall profile.
pub fn check(runtime: &OciRuntime, policy: &SandboxPolicy) -> Result<(), GvisorError> {
    let name = || runtime.name.clone();
    if flag_set(&runtime.args, "ignore-cgroups") {
        return Err(GvisorError::IgnoresCgroups { runtime: name() });
    }
    if !flag_set(&runtime.args, "oci-seccomp") {
        return Err(GvisorError::IgnoresSeccomp { runtime: name() });
    }
    if policy.network != "none" {
        return Err(GvisorError::Network {
            runtime: name(),
            network: policy.network.clone(),
        });
    }
    Ok(())
}

/// Whether a boolean flag of runsc is on, as Go's flag package reads it: `-name`, `--name`,
/// `--name=true` (or 1, t, T, TRUE, True); the last occurrence wins.
fn flag_set(args: &[String], name: &str) -> bool {
    let mut on = false;
    for arg in args {
        let bare = arg.trim_start_matches('-');
        if bare.len() == arg.len() || arg.len() - bare.len() > 2 {
            continue;
        }
        match bare.split_once('=') {
            None if bare == name => on = true,
            Some((flag, value)) if flag == name => {
                on = matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True");
            }
            _ => {}
        }
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runsc(args: &[&str]) -> OciRuntime {
        OciRuntime {
            name: "runsc".into(),
            path: "/usr/bin/runsc".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn gvisor_is_known_by_its_binary() {
        assert!(is_gvisor(&runsc(&[])));
        let mut renamed = runsc(&[]);
        renamed.name = "gvisor".into();
        assert!(is_gvisor(&renamed));
        let runc = OciRuntime {
            name: "runc".into(),
            path: "runc".into(),
            args: Vec::new(),
        };
        assert!(!is_gvisor(&runc));
    }

    #[test]
    fn the_registration_scripts_ensure_docker_makes_is_accepted() {
        let policy = SandboxPolicy::default();
        assert!(check(&runsc(&["--network=none", "--oci-seccomp"]), &policy).is_ok());
        assert!(check(&runsc(&["-network=none", "-oci-seccomp=true"]), &policy).is_ok());
    }

    #[test]
    fn skipping_cgroups_or_the_profile_is_refused() {
        let policy = SandboxPolicy::default();
        let err = check(
            &runsc(&["--network=none", "--oci-seccomp", "--ignore-cgroups"]),
            &policy,
        )
        .expect_err("limits would not hold");
        assert!(matches!(err, GvisorError::IgnoresCgroups { .. }));
        assert!(!err.is_input());
        assert!(err.to_string().contains("--ignore-cgroups"), "{err}");
        let err = check(&runsc(&["--network=none"]), &policy).expect_err("profile ignored");
        assert!(matches!(err, GvisorError::IgnoresSeccomp { .. }));
        let err = check(&runsc(&["--network=none", "--oci-seccomp=false"]), &policy)
            .expect_err("turned off again");
        assert!(matches!(err, GvisorError::IgnoresSeccomp { .. }));
    }

    #[test]
    fn a_network_under_gvisor_is_refused_as_input() {
        let policy = SandboxPolicy {
            network: "bridge".into(),
            ..SandboxPolicy::default()
        };
        let err = check(&runsc(&["--network=none", "--oci-seccomp"]), &policy)
            .expect_err("no network under gVisor");
        assert!(err.is_input());
        assert!(err.to_string().contains("network `bridge`"), "{err}");
    }

    #[test]
    fn flags_are_read_like_go_does() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(flag_set(&args(&["--oci-seccomp"]), "oci-seccomp"));
        assert!(flag_set(&args(&["-oci-seccomp=1"]), "oci-seccomp"));
        assert!(!flag_set(
            &args(&["--oci-seccomp", "--oci-seccomp=false"]),
            "oci-seccomp"
        ));
        assert!(!flag_set(&args(&["oci-seccomp"]), "oci-seccomp"));
        assert!(!flag_set(&args(&["---oci-seccomp"]), "oci-seccomp"));
        assert!(!flag_set(&args(&["--oci-seccomp-extra"]), "oci-seccomp"));
    }
}
