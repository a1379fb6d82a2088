//! Runtime versions verified by probing the real images, and the probe cache.

mod common;

use common::*;
use serde_json::Value;

fn verify(state_dir: &std::path::Path, env: &[(&str, &str)]) -> (Finished, Vec<Value>) {
    let state = state_dir.to_string_lossy().into_owned();
    let mut all_env = vec![("PACKBOX_STATE_DIR", state.as_str())];
    all_env.extend_from_slice(env);
    let run = packbox(&["runtimes", "verify", "--json"], &all_env);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let statuses = run.json().as_array().cloned().expect("a JSON array");
    (run, statuses)
}

fn detected<'a>(statuses: &'a [Value], runtime: &str, version: &str) -> &'a Value {
    statuses
        .iter()
        .find(|s| s["runtime"] == runtime && s["version"] == version)
        .unwrap_or_else(|| panic!("{runtime} {version} missing from {statuses:?}"))
}

#[test]
fn verify_detects_the_real_python_and_node_versions() {
    require_engine();
    let state = tempfile::tempdir().expect("tempdir");
    let (run, statuses) = verify(state.path(), &[("PACKBOX_RUNTIMES", "python3,nodejs")]);
    let runtimes: Vec<_> = statuses.iter().map(|s| s["runtime"].as_str()).collect();
    assert!(
        runtimes
            .iter()
            .all(|r| *r == Some("python") || *r == Some("node")),
        "{runtimes:?}"
    );
    for (runtime, version) in [
        ("python", "3.9."),
        ("python", "3.11."),
        ("python", "3.13."),
        ("node", "18."),
        ("node", "20."),
    ] {
        let declared = version.trim_end_matches('.');
        let status = detected(&statuses, runtime, declared);
        assert_eq!(status["available"], true, "{status}");
        let found = status["detected_version"].as_str().unwrap_or("");
        assert!(
            found.starts_with(version),
            "{runtime} {declared}: detected {found}"
        );
        assert_eq!(found.split('.').count(), 3, "a full version: {found}");
        assert!(
            status["image_id"]
                .as_str()
                .unwrap_or("")
                .starts_with("sha256:"),
            "{status}"
        );
        assert!(status["verified_at"].is_string(), "{status}");
    }
    assert_no_leftovers(&run);
}

#[test]
fn a_second_verify_is_a_pure_cache_hit() {
    require_engine();
    let state = tempfile::tempdir().expect("tempdir");
    let since = unix_now();
    let (first, statuses) = verify(state.path(), &[("PACKBOX_RUNTIMES", "python")]);
    assert!(
        statuses.iter().all(|s| s["cached"] == false),
        "{statuses:?}"
    );
    assert_eq!(
        containers_created_by(first.pid, since),
        3,
        "one probe per python version"
    );

    let since = unix_now();
    let (second, again) = verify(state.path(), &[("PACKBOX_RUNTIMES", "python")]);
    assert!(again.iter().all(|s| s["cached"] == true), "{again:?}");
    assert_eq!(
        containers_created_by(second.pid, since),
        0,
        "a cache hit starts no container"
    );
    let versions = |list: &[Value]| -> Vec<Value> {
        list.iter().map(|s| s["detected_version"].clone()).collect()
    };
    assert_eq!(versions(&statuses), versions(&again));
}

#[test]
fn list_starts_nothing_and_shows_unverified_versions() {
    require_engine();
    let state = tempfile::tempdir().expect("tempdir");
    let since = unix_now();
    let state_path = state.path().to_string_lossy().into_owned();
    let run = packbox(
        &["runtimes", "list", "--json"],
        &[
            ("PACKBOX_STATE_DIR", &state_path),
            ("PACKBOX_RUNTIMES", "shell"),
        ],
    );
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let statuses = run.json();
    assert_eq!(statuses[0]["runtime"], "shell");
    assert_eq!(statuses[0]["available"], Value::Null, "{statuses}");
    assert_eq!(containers_created_by(run.pid, since), 0);
}

#[test]
fn an_unknown_runtime_filter_is_an_input_error() {
    let run = packbox(
        &["runtimes", "verify"],
        &[("PACKBOX_RUNTIMES", "python,cobol")],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("`cobol`"), "{}", run.stderr());
}
