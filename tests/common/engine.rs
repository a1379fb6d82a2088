//! Which engine the tests talk to, and what follows for what they may expect.
//!
//! `scripts/test` runs the hostile and contract suites on Docker (the default), then on rootful
//! and rootless Podman, saying which with `PACKBOX_TEST_ENGINE` (`podman-rootful`,
//! `podman-rootless`); the tests check that packbox names the same engine in every outcome.

use std::process::Command;

use serde_json::Value;

/// The engine `PACKBOX_TEST_ENGINE` says the tests run on: (`docker` | `podman`, mode).
pub fn expected() -> (&'static str, &'static str) {
    match std::env::var("PACKBOX_TEST_ENGINE").as_deref() {
        Ok("podman-rootful") => ("podman", "rootful"),
        Ok("podman-rootless") => ("podman", "rootless"),
        _ => ("docker", "rootful"),
    }
}

/// Whether the tests run on Podman.
pub fn is_podman() -> bool {
    expected().0 == "podman"
}

/// Whether the engine drops resource limits: rootless Podman on a cgroup v1 host (it applies
/// none without cgroup v2 delegation). packbox then refuses every run unless the operator allows
/// a weaker sandbox.
pub fn drops_limits() -> bool {
    expected() == ("podman", "rootless") && cgroup_version() == "1"
}

/// The engine's cgroup version, as it reports it.
pub fn cgroup_version() -> String {
    let output = Command::new("docker")
        .args(["info", "--format", "{{.CgroupVersion}}"])
        .output()
        .expect("docker info runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Flags a run needs on this engine: on one that drops resource limits, the operator's
/// explicit consent (the refusal without it is proven by `assert_refused_for_limits`).
pub fn run_flags() -> Vec<&'static str> {
    if drops_limits() {
        vec!["--allow-weaker-sandbox"]
    } else {
        Vec::new()
    }
}

/// The outcome names the engine the tests run on, and, where the engine dropped the resource
/// limits with the operator's consent, lists exactly those as weaker than the defaults.
pub fn assert_outcome_engine(outcome: &Value) {
    let Some(sandbox) = outcome.get("sandbox").filter(|s| s.is_object()) else {
        return;
    };
    let (name, mode) = expected();
    assert_eq!(sandbox["engine"]["name"], name, "{outcome}");
    assert_eq!(sandbox["engine"]["mode"], mode, "{outcome}");
    if drops_limits() {
        let weaker: Vec<&str> = sandbox["weaker_than_default"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for setting in [
            "sandbox.memory",
            "sandbox.pids",
            "sandbox.cpus",
            "sandbox.nofile",
        ] {
            assert!(
                weaker
                    .iter()
                    .any(|w| w.starts_with(&format!("{setting} = not applied by Podman"))),
                "{setting} must be listed as not applied: {outcome}"
            );
        }
    }
}

/// A run refused because the engine drops the resource limits: exit 2, status `invalid`, each
/// limit named with the reason, and nothing left behind.
pub fn assert_refused_for_limits(run: &super::Finished) {
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "invalid", "{outcome}");
    assert_names_all(
        outcome["error"].as_str().unwrap_or_default(),
        &[
            "did not apply",
            "sandbox.memory",
            "sandbox.pids",
            "sandbox.cpus",
            "sandbox.nofile",
            "rootless Podman sets resource limits only on cgroup v2",
            "--allow-weaker-sandbox",
        ],
    );
    super::assert_no_leftovers(run);
}

/// Whether environment builds are refused on this engine: Podman gives the host an address on
/// every network it makes, so a build's network cannot be limited to packbox's egress proxy.
pub fn refuses_builds() -> bool {
    is_podman()
}

/// On an engine that cannot isolate a build's network, an environment build is refused before
/// the pack's code runs, naming why and where to build instead, and leaves nothing.
pub fn assert_build_refused(run: &super::Finished) {
    assert_eq!(run.code(), 125, "{}\n{}", run.stdout(), run.stderr());
    assert_names_all(
        &format!("{}{}", run.stdout(), run.stderr()),
        &[
            "cannot build environment",
            "Podman gives the host an address on every network it makes",
            "packbox images copy --to",
        ],
    );
    super::assert_no_leftovers(run);
}

/// A refusal names every one of `needles` (each missing one is the failure's message).
fn assert_names_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
}
