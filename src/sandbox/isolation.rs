//! Isolation levels: which actions run in the `standard` sandbox and which in the `strict` one.
//!
//! The operator's config file lists rules (`isolation: [{match: "payments.*", level: strict}]`,
//! globs over `PACK.ACTION`); an action may ask for a level itself (`isolation: strict` in its
//! YAML). The level a run gets is the strictest of every matching rule and the action's own: a
//! pack can make its actions stricter, never looser. Pure logic, no engine: the executor checks
//! afterwards that the engine's runtime for a strict run really is gVisor.

use serde::{Deserialize, Serialize};

use super::SandboxPolicy;
use super::seccomp::SeccompProfile;

/// How strongly an action is isolated. Ordered: `Strict` is stricter than `Standard`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationLevel {
    /// The sandbox as configured: runc (or the configured runtime), the syscall profile, limits.
    #[default]
    Standard,
    /// gVisor, packbox's syscall profile, no network, nothing weaker than the defaults, and
    /// tighter limits ([`STRICT_LIMITS`]).
    Strict,
}

/// The OCI runtime a strict run uses unless the operator names another gVisor registration.
pub const STRICT_RUNTIME: &str = "runsc";

/// The ceilings of a strict run: each limit is the lower of the configured one and these.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StrictLimits {
    /// The most memory a strict run gets.
    pub memory_bytes: u64,
    /// The most processes and threads a strict run may hold.
    pub pids: u32,
    /// The largest `/tmp` a strict run gets.
    pub tmpfs_tmp_bytes: u64,
    /// The most open files a strict run may hold.
    pub nofile: u32,
    /// The most CPUs a strict run gets.
    pub cpus: f64,
}

/// Strict runs get at most half the standard memory and /tmp, a quarter of the open files and
/// half the processes (gVisor's own threads count towards the pids limit: 128 leaves room for
/// them and for Node.js's thread pool).
pub const STRICT_LIMITS: StrictLimits = StrictLimits {
    memory_bytes: 256 << 20,
    pids: 128,
    tmpfs_tmp_bytes: 16 << 20,
    nofile: 256,
    cpus: 1.0,
};

/// One rule of the operator's policy, as written in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationRule {
    /// A glob over `PACK.ACTION` (`payments.*`, `*.deploy_?`, `[ab]*.*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The least level the actions it matches run with (the strictest matching rule, or the
    /// action's own level, wins).
    pub level: IsolationLevel,
}

/// The operator's rules, with their globs compiled.
#[derive(Clone, Debug, Default)]
pub struct IsolationPolicy {
    rules: Vec<(glob::Pattern, IsolationRule)>,
}

/// An isolation rule or level that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// A rule's glob does not parse.
    #[error("isolation rule {index} (`match: {pattern}`): not a glob ({message})")]
    BadPattern {
        /// The rule's position in the config file's list, counting from 0.
        index: usize,
        /// The glob as written.
        pattern: String,
        /// What the glob parser found wrong.
        message: String,
    },
    /// The sandbox holds settings weaker than the defaults, which a strict run never gets.
    #[error(
        "action {action} runs with isolation strict, which refuses the weaker settings {settings}"
    )]
    Weaker {
        /// The action's reference.
        action: String,
        /// The weaker settings, each with its value and the default.
        settings: String,
    },
    /// The sandbox names a syscall profile other than packbox's.
    #[error(
        "action {action} runs with isolation strict, which uses packbox's syscall profile; sandbox.seccomp = {seccomp} conflicts"
    )]
    Seccomp {
        /// The action's reference.
        action: String,
        /// The profile the sandbox names.
        seccomp: String,
    },
}

/// What the level of a run was, who chose it and what it meant: reported in the outcome's
/// `sandbox.isolation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IsolationReport {
    /// The level the run had.
    pub level: IsolationLevel,
    /// What asked for the level (a config rule, the action); empty for the default.
    pub chosen_by: Vec<String>,
    /// What the level changed or enforced, in words; empty for `standard`.
    pub means: Vec<String>,
}

impl IsolationPolicy {
    /// Compiles the operator's rules; a glob that does not parse is an error naming the rule.
    pub fn new(rules: Vec<IsolationRule>) -> Result<IsolationPolicy, IsolationError> {
        let rules = crate::common::globs::compile(rules, |rule| &rule.pattern).map_err(|bad| {
            IsolationError::BadPattern {
                index: bad.index,
                pattern: bad.pattern,
                message: bad.message,
            }
        })?;
        Ok(IsolationPolicy { rules })
    }

    /// The rules, as written.
    pub fn rules(&self) -> impl Iterator<Item = &IsolationRule> {
        self.rules.iter().map(|(_, rule)| rule)
    }

    /// The level of `action_ref` (`PACK.ACTION`) given what the action asks for itself: the
    /// strictest of every matching rule and the action's own, with what chose it.
    pub fn level_for(
        &self,
        action_ref: &str,
        asked: IsolationLevel,
    ) -> (IsolationLevel, Vec<String>) {
        let mut level = IsolationLevel::Standard;
        let mut chosen_by = Vec::new();
        let mut consider = |candidate: IsolationLevel, why: String| {
            if candidate > level {
                level = candidate;
                chosen_by.clear();
            }
            if candidate == level && candidate != IsolationLevel::Standard {
                chosen_by.push(why);
            }
        };
        for (pattern, rule) in &self.rules {
            if pattern.matches(action_ref) {
                consider(rule.level, format!("config rule `match: {}`", rule.pattern));
            }
        }
        consider(asked, "the action (`isolation` in its YAML)".to_string());
        (level, chosen_by)
    }
}

/// The sandbox of a run at `level`: unchanged for `standard`; for `strict`, gVisor (unless the
/// operator names another gVisor registration), packbox's syscall profile, and every limit at
/// most [`STRICT_LIMITS`]. A strict run refuses settings weaker than the defaults (a network,
/// root, kept capabilities, ...) and another syscall profile rather than quietly dropping them.
pub fn apply(
    action_ref: &str,
    level: IsolationLevel,
    chosen_by: Vec<String>,
    policy: &SandboxPolicy,
) -> Result<SandboxPolicy, IsolationError> {
    let mut applied = policy.clone();
    if level == IsolationLevel::Standard {
        applied.isolation = IsolationReport {
            level,
            chosen_by,
            means: Vec::new(),
        };
        return Ok(applied);
    }
    if !policy.weaker_than_default.is_empty() {
        return Err(IsolationError::Weaker {
            action: action_ref.to_string(),
            settings: policy.weaker_than_default.join(", "),
        });
    }
    if policy.seccomp != SeccompProfile::Packbox {
        return Err(IsolationError::Seccomp {
            action: action_ref.to_string(),
            seccomp: serde_json::to_value(&policy.seccomp)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        });
    }
    let limits = STRICT_LIMITS;
    let runtime = policy
        .oci_runtime
        .clone()
        .unwrap_or_else(|| STRICT_RUNTIME.to_string());
    applied.oci_runtime = Some(runtime.clone());
    // A strict run never runs without a setting the engine dropped.
    applied.allow_weaker = false;
    applied.memory_bytes = policy.memory_bytes.min(limits.memory_bytes);
    applied.pids_limit = policy.pids_limit.min(limits.pids);
    applied.tmpfs_tmp_bytes = policy.tmpfs_tmp_bytes.min(limits.tmpfs_tmp_bytes);
    applied.nofile = policy.nofile.min(limits.nofile);
    applied.cpus = policy.cpus.min(limits.cpus);
    applied.isolation = IsolationReport {
        level,
        chosen_by,
        means: vec![
            format!(
                "gVisor: OCI runtime `{runtime}` (its own kernel answers the action's system calls)"
            ),
            "packbox's syscall profile".to_string(),
            "no network; no setting weaker than the defaults".to_string(),
            format!("memory at most {} MiB", limits.memory_bytes >> 20),
            format!("at most {} processes", limits.pids),
            format!("/tmp at most {} MiB", limits.tmpfs_tmp_bytes >> 20),
            format!("at most {} open files", limits.nofile),
            format!("at most {} CPU", limits.cpus),
        ],
    };
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(&str, IsolationLevel)]) -> IsolationPolicy {
        IsolationPolicy::new(
            rules
                .iter()
                .map(|(pattern, level)| IsolationRule {
                    pattern: pattern.to_string(),
                    level: *level,
                })
                .collect(),
        )
        .expect("valid globs")
    }

    use IsolationLevel::{Standard, Strict};

    #[test]
    fn rules_match_globs_over_pack_dot_action() {
        let rules = policy(&[("payments.*", Strict), ("*.deploy_?", Strict)]);
        assert_eq!(rules.level_for("payments.charge", Standard).0, Strict);
        assert_eq!(rules.level_for("ops.deploy_a", Standard).0, Strict);
        assert_eq!(rules.level_for("ops.deploy_ab", Standard).0, Standard);
        assert_eq!(rules.level_for("paymentsx.charge", Standard).0, Standard);
        assert_eq!(rules.level_for("hello.greet", Standard).0, Standard);
    }

    #[test]
    fn the_strictest_match_wins_whatever_the_order() {
        let rules = policy(&[("payments.*", Strict), ("*", Standard)]);
        assert_eq!(rules.level_for("payments.charge", Standard).0, Strict);
        let reversed = policy(&[("*", Standard), ("payments.*", Strict)]);
        let (level, chosen_by) = reversed.level_for("payments.charge", Standard);
        assert_eq!(level, Strict);
        assert_eq!(chosen_by, ["config rule `match: payments.*`"]);
    }

    #[test]
    fn an_action_may_ask_for_stricter_never_looser() {
        let rules = policy(&[("payments.*", Strict)]);
        let (level, chosen_by) = rules.level_for("hello.greet", Strict);
        assert_eq!(level, Strict);
        assert_eq!(chosen_by, ["the action (`isolation` in its YAML)"]);
        // Asking for standard where the operator says strict changes nothing.
        let (level, chosen_by) = rules.level_for("payments.charge", Standard);
        assert_eq!(level, Strict);
        assert_eq!(chosen_by, ["config rule `match: payments.*`"]);
        let (level, chosen_by) = policy(&[]).level_for("hello.greet", Standard);
        assert_eq!((level, chosen_by.len()), (Standard, 0));
    }

    #[test]
    fn a_bad_glob_names_its_rule() {
        let err = IsolationPolicy::new(vec![
            IsolationRule {
                pattern: "ok.*".into(),
                level: Strict,
            },
            IsolationRule {
                pattern: "[payments.*".into(),
                level: Strict,
            },
        ])
        .expect_err("unclosed bracket");
        assert!(
            err.to_string()
                .starts_with("isolation rule 1 (`match: [payments.*`)"),
            "{err}"
        );
    }

    #[test]
    fn standard_changes_nothing_but_the_report() {
        let base = SandboxPolicy::default();
        let applied = apply("a.b", Standard, Vec::new(), &base).expect("standard");
        assert_eq!(applied, base);
        assert_eq!(applied.isolation.level, Standard);
    }

    #[test]
    fn strict_means_gvisor_the_profile_and_lower_limits() {
        let base = SandboxPolicy {
            memory_bytes: 1 << 30,
            pids_limit: 64,
            ..SandboxPolicy::default()
        };
        let applied = apply("p.a", Strict, vec!["rule".into()], &base).expect("strict");
        assert_eq!(applied.oci_runtime.as_deref(), Some("runsc"));
        assert_eq!(applied.seccomp, SeccompProfile::Packbox);
        assert_eq!(applied.network, "none");
        assert_eq!(applied.memory_bytes, 256 << 20);
        // Already lower than the ceiling: kept.
        assert_eq!(applied.pids_limit, 64);
        assert_eq!(applied.tmpfs_tmp_bytes, 16 << 20);
        assert_eq!(applied.nofile, 256);
        assert_eq!(applied.cpus, 1.0);
        assert_eq!(applied.isolation.level, Strict);
        assert_eq!(applied.isolation.chosen_by, ["rule"]);
        assert!(
            applied.isolation.means[0].contains("gVisor"),
            "{:?}",
            applied.isolation
        );
    }

    #[test]
    fn strict_keeps_an_operators_own_gvisor_registration() {
        let base = SandboxPolicy {
            oci_runtime: Some("gvisor-kvm".into()),
            ..SandboxPolicy::default()
        };
        let applied = apply("p.a", Strict, Vec::new(), &base).expect("strict");
        assert_eq!(applied.oci_runtime.as_deref(), Some("gvisor-kvm"));
    }

    #[test]
    fn strict_refuses_weaker_settings_and_other_profiles() {
        let weakened = SandboxPolicy {
            network: "bridge".into(),
            weaker_than_default: vec!["sandbox.network = bridge (default none)".into()],
            ..SandboxPolicy::default()
        };
        let err = apply("p.a", Strict, Vec::new(), &weakened).expect_err("weaker");
        assert!(err.to_string().contains("action p.a"), "{err}");
        assert!(
            err.to_string().contains("sandbox.network = bridge"),
            "{err}"
        );
        let engine_default = SandboxPolicy {
            seccomp: SeccompProfile::EngineDefault,
            ..SandboxPolicy::default()
        };
        let err = apply("p.a", Strict, Vec::new(), &engine_default).expect_err("profile");
        assert!(
            err.to_string().contains("sandbox.seccomp = engine-default"),
            "{err}"
        );
    }
}
