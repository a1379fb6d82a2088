//! The syscall profile an action runs under: packbox's own (the default), the engine's default,
//! or a profile file the operator names.
//!
//! packbox's profile is Docker's default less what actions never need (docs/seccomp.md says why
//! each refusal is there). It is written as a readable list, `seccomp.yaml` beside this file,
//! compiled into the binary and turned into the engine's JSON format here, once for runs with a
//! network and once for runs without (which may open `AF_UNIX` sockets only). The engine takes
//! the JSON itself in `security_opt` (`seccomp=<json>`), so nothing is read from the engine's
//! disk and a remote engine applies the same profile.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};

/// The readable source of packbox's profile.
const SOURCE: &str = include_str!("seccomp.yaml");

/// Which syscall profile a container runs under (`sandbox.seccomp`, `--seccomp`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SeccompProfile {
    /// packbox's own profile: Docker's default less what actions never need.
    #[default]
    Packbox,
    /// Whatever the engine applies by default (Docker's default profile of its version).
    EngineDefault,
    /// No syscall filter at all.
    Unconfined,
    /// A profile file in the engine's JSON format, read when the settings were resolved.
    File {
        /// The profile file as given.
        path: PathBuf,
        /// The file's JSON, compacted.
        json: String,
        /// What it lets through that packbox's profile refuses (every call no rule names, calls
        /// packbox refuses on purpose, 32-bit calls), said in words; `None`: nothing.
        weaker: Option<String>,
    },
}

/// A `seccomp` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile file cannot be read (missing, not a regular file, larger than 1 MiB).
    #[error("seccomp profile {file}: cannot read")]
    Read {
        /// The profile file as given.
        file: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not a seccomp profile in the engine's JSON format.
    #[error("seccomp profile {file}: {message}")]
    Invalid {
        /// The profile file as given.
        file: PathBuf,
        /// What in it is wrong.
        message: String,
    },
}

/// Docker's own default profile is about 20 KiB.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Actions that let a call through: as a default action they make the profile a deny-list,
/// weaker than an allow-list; in a rule they allow the calls it names (a trace or a user-space
/// notification hands the decision to another process, which may allow it).
const LETS_THROUGH: [&str; 4] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_NOTIFY",
];

impl SeccompProfile {
    /// The profile a setting names: `packbox`, `engine-default`, `unconfined`, or the path of a
    /// JSON profile file (relative to the current folder), which is read and checked now.
    pub fn from_setting(setting: &str) -> Result<SeccompProfile, SeccompError> {
        match setting.trim() {
            "packbox" => Ok(SeccompProfile::Packbox),
            "engine-default" => Ok(SeccompProfile::EngineDefault),
            "unconfined" => Ok(SeccompProfile::Unconfined),
            path => read_profile_file(Path::new(path)),
        }
    }

    /// Whether the profile is weaker than packbox's own: the engine's default (which allows
    /// `ptrace` and more), no filter at all, or a file that lets through what packbox's refuses
    /// (unnamed calls, a call packbox refuses on purpose, 32-bit calls). Beyond that, a profile
    /// file is the operator's to judge.
    pub fn is_weaker_than_packbox(&self) -> bool {
        match self {
            SeccompProfile::Packbox => false,
            SeccompProfile::EngineDefault | SeccompProfile::Unconfined => true,
            SeccompProfile::File { weaker, .. } => weaker.is_some(),
        }
    }

    /// What a profile file lets through that packbox's refuses, in words (`allows ptrace,
    /// mount`), when it does.
    pub fn weakness(&self) -> Option<&str> {
        match self {
            SeccompProfile::File { weaker, .. } => weaker.as_deref(),
            _ => None,
        }
    }

    /// The profile's JSON for the engine (`seccomp=<json>`), or `None` to leave the engine's
    /// default in place. packbox's profile depends on whether the run has a network and on
    /// which kernel answers the action's calls.
    pub fn engine_json(&self, has_network: bool, kernel: Kernel) -> Option<String> {
        match self {
            SeccompProfile::Packbox => {
                Some(ENGINE_PROFILES[usize::from(has_network)][kernel as usize].clone())
            }
            SeccompProfile::EngineDefault => None,
            SeccompProfile::Unconfined => Some("unconfined".into()),
            SeccompProfile::File { json, .. } => Some(json.clone()),
        }
    }
}

/// Which kernel answers an action's system calls: the host's (runc), or gVisor's own (runsc),
/// which implements the filter itself and differs in a few answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    #[default]
    Host = 0,
    Gvisor = 1,
}

/// Reported in the outcome as `packbox`, `engine-default`, `unconfined` or the file's path.
impl Serialize for SeccompProfile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SeccompProfile::Packbox => serializer.serialize_str("packbox"),
            SeccompProfile::EngineDefault => serializer.serialize_str("engine-default"),
            SeccompProfile::Unconfined => serializer.serialize_str("unconfined"),
            SeccompProfile::File { path, .. } => serializer.serialize_str(&path.to_string_lossy()),
        }
    }
}

fn read_profile_file(path: &Path) -> Result<SeccompProfile, SeccompError> {
    let invalid = |message: String| SeccompError::Invalid {
        file: path.to_path_buf(),
        message,
    };
    let bytes =
        crate::common::input::read_regular_file(path, MAX_PROFILE_BYTES).map_err(|source| {
            SeccompError::Read {
                file: path.to_path_buf(),
                source,
            }
        })?;
    let profile: Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("not a JSON seccomp profile ({e})")))?;
    let default_action = profile
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid("field `defaultAction`: missing; expected e.g. SCMP_ACT_ERRNO".into())
        })?;
    Ok(SeccompProfile::File {
        path: path.to_path_buf(),
        weaker: weaker_than_packbox(&profile, default_action),
        json: profile.to_string(),
    })
}

/// What a profile in the engine's JSON format lets through that packbox's profile refuses:
/// every call no rule names (a permissive default), a call packbox refuses on purpose named by
/// a rule that lets it through (with argument checks or not: packbox allows none of them), or
/// an architecture beyond the native ones (32-bit calls, whose arguments no 64-bit rule checks).
fn weaker_than_packbox(profile: &Value, default_action: &str) -> Option<String> {
    let mut reasons = Vec::new();
    if LETS_THROUGH.contains(&default_action) {
        reasons.push(format!(
            "lets every call no rule names through (defaultAction {default_action})"
        ));
    }
    let refused: std::collections::BTreeSet<&str> =
        PROFILE.refuse.iter().map(String::as_str).collect();
    let mut allowed: Vec<&str> = profile
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|rule| {
            rule.get("action")
                .and_then(Value::as_str)
                .is_some_and(|action| LETS_THROUGH.contains(&action))
        })
        .flat_map(|rule| {
            let names = rule.get("names").and_then(Value::as_array).into_iter();
            names
                .flatten()
                .chain(rule.get("name"))
                .filter_map(Value::as_str)
        })
        .filter(|name| refused.contains(name))
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    if !allowed.is_empty() {
        reasons.push(format!("allows {}", allowed.join(", ")));
    }
    let native: std::collections::BTreeSet<&str> = PROFILE
        .architectures
        .iter()
        .map(|a| a.architecture.as_str())
        .collect();
    let mut foreign: Vec<&str> = profile
        .get("architectures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(
            profile
                .get("archMap")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|entry| {
                    let main = entry.get("architecture").into_iter();
                    let subs = entry
                        .get("subArchitectures")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten();
                    main.chain(subs).filter_map(Value::as_str)
                }),
        )
        .filter(|arch| !native.contains(arch))
        .collect();
    foreign.sort_unstable();
    foreign.dedup();
    if !foreign.is_empty() {
        reasons.push(format!("allows 32-bit calls ({})", foreign.join(", ")));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// `seccomp.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    architectures: Vec<Architecture>,
    always: Vec<Rule>,
    on_host_kernel: Vec<Rule>,
    on_gvisor: Vec<Rule>,
    with_network: Vec<Rule>,
    without_network: Vec<Rule>,
    /// Refused on purpose: the documentation of the source, and what makes a profile file
    /// weaker. The tests check that no rule names them and that docs/seccomp.md explains each.
    refuse: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Architecture {
    architecture: String,
    sub: Vec<String>,
}

/// One rule: these syscalls, when every argument check holds, on these architectures, are
/// allowed (or refused with `errno`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    names: Vec<String>,
    #[serde(default)]
    args: Vec<ArgCheck>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    not_arches: Vec<String>,
    errno: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgCheck {
    index: u8,
    op: Op,
    value: u64,
    /// For `masked_eq`: the argument, masked, must equal `value`.
    mask: Option<u64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    MaskedEq,
}

impl Rule {
    /// The rule in the engine's format (moby's `Syscall` type).
    fn to_engine(&self) -> Value {
        let mut rule = json!({ "names": self.names });
        match self.errno {
            Some(errno) => {
                rule["action"] = json!("SCMP_ACT_ERRNO");
                rule["errnoRet"] = json!(errno);
            }
            None => rule["action"] = json!("SCMP_ACT_ALLOW"),
        }
        if !self.args.is_empty() {
            rule["args"] = self.args.iter().map(ArgCheck::to_engine).collect();
        }
        if !self.arches.is_empty() {
            rule["includes"] = json!({ "arches": self.arches });
        }
        if !self.not_arches.is_empty() {
            rule["excludes"] = json!({ "arches": self.not_arches });
        }
        rule
    }
}

impl ArgCheck {
    fn to_engine(&self) -> Value {
        // For a masked comparison the engine takes the mask as `value` and the expected value
        // as `valueTwo`.
        let (op, value, value_two) = match self.op {
            Op::Eq => ("SCMP_CMP_EQ", self.value, 0),
            Op::Ne => ("SCMP_CMP_NE", self.value, 0),
            Op::Lt => ("SCMP_CMP_LT", self.value, 0),
            Op::Gt => ("SCMP_CMP_GT", self.value, 0),
            Op::MaskedEq => (
                "SCMP_CMP_MASKED_EQ",
                self.mask.unwrap_or(u64::MAX),
                self.value,
            ),
        };
        json!({ "index": self.index, "value": value, "valueTwo": value_two, "op": op })
    }
}

impl Source {
    fn to_engine(&self, has_network: bool, kernel: Kernel) -> Value {
        let network_rules = if has_network {
            &self.with_network
        } else {
            &self.without_network
        };
        let kernel_rules = match kernel {
            Kernel::Host => &self.on_host_kernel,
            Kernel::Gvisor => &self.on_gvisor,
        };
        let arch_map: Vec<Value> = self
            .architectures
            .iter()
            .map(|a| json!({ "architecture": a.architecture, "subArchitectures": a.sub }))
            .collect();
        let syscalls: Vec<Value> = self
            .always
            .iter()
            .chain(kernel_rules)
            .chain(network_rules)
            .map(Rule::to_engine)
            .collect();
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            // EPERM, as Docker's profile.
            "defaultErrnoRet": 1,
            "archMap": arch_map,
            "syscalls": syscalls,
        })
    }
}

/// The parsed source. It is compiled in and checked by this module's tests, so a parse failure
/// can only be a packbox bug caught before release, never something a user causes.
static PROFILE: LazyLock<Source> = LazyLock::new(|| {
    serde_yaml::from_str(SOURCE).expect("src/sandbox/seccomp.yaml is valid (checked by tests)")
});
/// The four engine profiles, by `[has_network][kernel]`.
static ENGINE_PROFILES: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
    [false, true].map(|has_network| {
        [Kernel::Host, Kernel::Gvisor]
            .map(|kernel| PROFILE.to_engine(has_network, kernel).to_string())
    })
});

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Docker's default profile, as vendored by moby (see tests/fixtures/seccomp/README.md).
    const MOBY_DEFAULT: &str = include_str!("../../tests/fixtures/seccomp/moby-default.json");
    const DOCS: &str = include_str!("../../docs/seccomp.md");

    fn source() -> Source {
        serde_yaml::from_str(SOURCE).expect("the profile source parses")
    }

    fn named(rules: &[Rule]) -> BTreeSet<String> {
        rules.iter().flat_map(|r| r.names.iter().cloned()).collect()
    }

    fn moby_names() -> BTreeSet<String> {
        let moby: Value = serde_json::from_str(MOBY_DEFAULT).expect("moby's profile parses");
        moby["syscalls"]
            .as_array()
            .expect("a list of rules")
            .iter()
            .flat_map(|rule| rule["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|name| name.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn every_syscall_docker_names_is_kept_or_refused_on_purpose() {
        let source = source();
        let mut accounted = named(&source.always);
        accounted.extend(named(&source.on_host_kernel));
        accounted.extend(named(&source.with_network));
        accounted.extend(source.refuse.iter().cloned());
        let missing: Vec<_> = moby_names().difference(&accounted).cloned().collect();
        assert!(missing.is_empty(), "neither kept nor refused: {missing:?}");
    }

    #[test]
    fn packbox_allows_nothing_docker_does_not() {
        let source = source();
        let mut allowed = named(&source.always);
        allowed.extend(named(&source.on_host_kernel));
        allowed.extend(named(&source.on_gvisor));
        allowed.extend(named(&source.with_network));
        allowed.extend(named(&source.without_network));
        let extra: Vec<_> = allowed.difference(&moby_names()).cloned().collect();
        assert!(extra.is_empty(), "not in Docker's profile: {extra:?}");
    }

    #[test]
    fn no_rule_names_a_refused_syscall() {
        let source = source();
        let refused: BTreeSet<String> = source.refuse.iter().cloned().collect();
        for rules in [
            &source.always,
            &source.with_network,
            &source.without_network,
        ] {
            let both: Vec<_> = named(rules).intersection(&refused).cloned().collect();
            assert!(both.is_empty(), "allowed and refused: {both:?}");
        }
    }

    #[test]
    fn every_refusal_is_explained_in_the_docs() {
        let undocumented: Vec<_> = source()
            .refuse
            .into_iter()
            .filter(|name| !DOCS.contains(&format!("`{name}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/seccomp.md: {undocumented:?}"
        );
    }

    #[test]
    fn masked_comparisons_name_their_mask() {
        let source = source();
        let rules = source
            .always
            .iter()
            .chain(&source.on_host_kernel)
            .chain(&source.on_gvisor)
            .chain(&source.with_network)
            .chain(&source.without_network);
        for check in rules.flat_map(|r| &r.args) {
            assert_eq!(check.op == Op::MaskedEq, check.mask.is_some(), "{check:?}");
        }
    }

    /// The rules of an engine profile that name `syscall`.
    fn rules_for(profile: &str, syscall: &str) -> Vec<Value> {
        let profile: Value = serde_json::from_str(profile).expect("valid JSON");
        profile["syscalls"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == syscall))
            })
            .cloned()
            .collect()
    }

    #[test]
    fn the_engine_profile_refuses_by_default_with_eperm() {
        let json = SeccompProfile::Packbox
            .engine_json(false, Kernel::Host)
            .expect("packbox's profile has JSON");
        let profile: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        assert_eq!(profile["archMap"][0]["architecture"], "SCMP_ARCH_X86_64");
        for refused in [
            "ptrace",
            "process_vm_readv",
            "keyctl",
            "unshare",
            "mount",
            "bpf",
        ] {
            assert!(rules_for(&json, refused).is_empty(), "{refused} has a rule");
        }
        assert_eq!(rules_for(&json, "read")[0]["action"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn without_a_network_only_unix_sockets_open() {
        let json = SeccompProfile::Packbox
            .engine_json(false, Kernel::Host)
            .expect("packbox's profile has JSON");
        let rules = rules_for(&json, "socket");
        let summary: Vec<_> = rules
            .iter()
            .map(|r| {
                let check = &r["args"][0];
                (
                    r["action"].clone(),
                    r["errnoRet"].clone(),
                    check["op"].clone(),
                    check["value"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    json!("SCMP_ACT_ALLOW"),
                    Value::Null,
                    json!("SCMP_CMP_EQ"),
                    json!(1)
                ),
                (
                    json!("SCMP_ACT_ERRNO"),
                    json!(97),
                    json!("SCMP_CMP_LT"),
                    json!(1)
                ),
                (
                    json!("SCMP_ACT_ERRNO"),
                    json!(97),
                    json!("SCMP_CMP_GT"),
                    json!(1)
                ),
            ]
        );
        assert_eq!(rules_for(&json, "socketpair"), rules);
    }

    #[test]
    fn with_a_network_sockets_follow_docker() {
        let json = SeccompProfile::Packbox
            .engine_json(true, Kernel::Host)
            .expect("packbox's profile has JSON");
        let rules = rules_for(&json, "socket");
        let ops: Vec<_> = rules
            .iter()
            .map(|r| (r["args"][0]["op"].clone(), r["args"][0]["value"].clone()))
            .collect();
        assert_eq!(
            ops,
            [
                (json!("SCMP_CMP_LT"), json!(38)),
                (json!("SCMP_CMP_EQ"), json!(39)),
                (json!("SCMP_CMP_GT"), json!(40))
            ]
        );
        assert_eq!(rules_for(&json, "socketpair")[0]["args"], Value::Null);
    }

    #[test]
    fn clone_is_allowed_without_namespace_flags_only() {
        let json = SeccompProfile::Packbox
            .engine_json(false, Kernel::Host)
            .expect("packbox's profile has JSON");
        let clone = rules_for(&json, "clone");
        assert_eq!(
            clone[0]["args"],
            json!([{"index": 0, "value": 0x7e02_0000_u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        assert_eq!(clone[0]["excludes"], json!({"arches": ["s390", "s390x"]}));
        let clone3 = rules_for(&json, "clone3");
        assert_eq!(
            clone3,
            [json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})]
        );
    }

    #[test]
    fn personality_may_only_be_queried() {
        let json = SeccompProfile::Packbox
            .engine_json(false, Kernel::Host)
            .expect("packbox's profile has JSON");
        let rules = rules_for(&json, "personality");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["args"][0]["value"], 0xffff_ffff_u64);
    }

    #[test]
    fn settings_name_a_profile() {
        assert_eq!(
            SeccompProfile::from_setting("packbox").expect("valid"),
            SeccompProfile::Packbox
        );
        assert_eq!(
            SeccompProfile::from_setting("engine-default").expect("valid"),
            SeccompProfile::EngineDefault
        );
        assert_eq!(
            SeccompProfile::EngineDefault.engine_json(false, Kernel::Host),
            None
        );
        assert!(SeccompProfile::EngineDefault.is_weaker_than_packbox());
        let unconfined = SeccompProfile::from_setting("unconfined").expect("valid");
        assert!(unconfined.is_weaker_than_packbox());
        assert_eq!(
            unconfined.engine_json(false, Kernel::Host).as_deref(),
            Some("unconfined")
        );
        assert!(!SeccompProfile::Packbox.is_weaker_than_packbox());
    }

    #[test]
    fn a_profile_file_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": []\n}\n",
        )
        .expect("write");
        let profile = SeccompProfile::from_setting(&good.to_string_lossy()).expect("valid");
        assert_eq!(
            profile.engine_json(false, Kernel::Host).as_deref(),
            Some(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}"#)
        );
        assert_eq!(
            serde_json::to_value(&profile).expect("serialises"),
            json!(good.to_string_lossy())
        );

        assert!(!profile.is_weaker_than_packbox());

        let permissive = dir.path().join("permissive.json");
        std::fs::write(&permissive, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).expect("write");
        let profile = SeccompProfile::from_setting(&permissive.to_string_lossy()).expect("valid");
        assert!(profile.is_weaker_than_packbox());
        assert_eq!(
            profile.weakness(),
            Some("lets every call no rule names through (defaultAction SCMP_ACT_ALLOW)")
        );

        // An allow-list that names what packbox refuses on purpose is weaker too.
        let by_name = dir.path().join("by-name.json");
        std::fs::write(
            &by_name,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read", "ptrace", "unshare"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO"}
            ]}"#,
        )
        .expect("write");
        let profile = SeccompProfile::from_setting(&by_name.to_string_lossy()).expect("valid");
        assert_eq!(profile.weakness(), Some("allows mount, ptrace, unshare"));

        let compat = dir.path().join("compat.json");
        std::fs::write(
            &compat,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}]}"#,
        )
        .expect("write");
        let profile = SeccompProfile::from_setting(&compat.to_string_lossy()).expect("valid");
        assert_eq!(
            profile.weakness(),
            Some("allows 32-bit calls (SCMP_ARCH_X32, SCMP_ARCH_X86)")
        );

        // Docker's own default profile, as a file, is weaker in all these ways but the first.
        let moby = dir.path().join("moby.json");
        std::fs::write(&moby, MOBY_DEFAULT).expect("write");
        let profile = SeccompProfile::from_setting(&moby.to_string_lossy()).expect("valid");
        let weakness = profile.weakness().unwrap_or_default();
        assert!(weakness.starts_with("allows "), "{weakness}");
        assert!(weakness.contains("ptrace"), "{weakness}");
        assert!(weakness.contains("32-bit calls"), "{weakness}");

        let headless = dir.path().join("headless.json");
        std::fs::write(&headless, r#"{"syscalls": []}"#).expect("write");
        let err =
            SeccompProfile::from_setting(&headless.to_string_lossy()).expect_err("no default");
        assert!(
            err.to_string()
                .contains("headless.json: field `defaultAction`"),
            "{err}"
        );

        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{ not json").expect("write");
        let err = SeccompProfile::from_setting(&broken.to_string_lossy()).expect_err("broken");
        assert!(err.to_string().contains("broken.json: not a JSON"), "{err}");

        let err = SeccompProfile::from_setting("/nonexistent/profile.json").expect_err("missing");
        assert!(
            err.to_string()
                .contains("/nonexistent/profile.json: cannot read"),
            "{err}"
        );
    }
}
