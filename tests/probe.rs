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

/// A user catalog with one runtime whose versions each fail verification in their own way.
fn troubled_catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("troubled.yaml"),
        r#"
name: troubled
aliases: [troubled]
interpreter: [bash]
default_version: "3.12"
versions:
  - version: "3.12"
    image: packbox/python:3.11
    probe: {command: [python3, --version], exit_code: 0, pattern: 'Python (\d+\.\d+\.\d+)'}
  - version: "1.0"
    image: packbox-test/does-not-exist:1.0
    probe: {command: [true], pattern: '(\d+)'}
  - version: "2.0"
    image: packbox/shell:5.2
    probe: {command: [sleep, "30"], pattern: '(\d+)', timeout_seconds: 2}
  - version: "3.0"
    image: packbox/shell:5.2
    probe: {command: [bash, -c, "echo no version here"], pattern: '(\d+\.\d+\.\d+)'}
"#,
    )
    .expect("write catalog");
    dir
}

#[test]
fn versions_that_fail_verification_are_unavailable_with_their_reason() {
    require_engine();
    let state = tempfile::tempdir().expect("tempdir");
    let catalog = troubled_catalog();
    let catalog_path = catalog.path().to_string_lossy().into_owned();
    let (run, statuses) = verify(
        state.path(),
        &[
            ("PACKBOX_RUNTIMES", "troubled"),
            ("PACKBOX_CATALOG", catalog_path.as_str()),
        ],
    );
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    let reason = |version: &str| {
        let status = detected(&statuses, "troubled", version);
        assert_eq!(status["available"], false, "{status}");
        status["reason"].as_str().unwrap_or("").to_string()
    };
    let mismatch = reason("3.12");
    assert!(
        mismatch.contains("3.12") && mismatch.contains("3.11."),
        "{mismatch}"
    );
    let missing = reason("1.0");
    assert!(
        missing.contains("packbox-test/does-not-exist:1.0"),
        "{missing}"
    );
    // Not pinned by digest and no recipe: refused, never pulled.
    assert!(missing.contains("pinned by digest"), "{missing}");
    let hang = reason("2.0");
    assert!(hang.contains("did not finish within 2 s"), "{hang}");
    let no_match = reason("3.0");
    assert!(no_match.contains("does not match"), "{no_match}");
    assert_no_leftovers(&run);
}

#[test]
fn a_run_uses_only_verified_versions_and_says_which() {
    require_engine();
    let catalog = troubled_catalog();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = packs.path().join("tp");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: tp\nlabel: T\nversion: 1.0.0\n",
    )
    .expect("write");
    std::fs::write(
        pack.join("actions/a.yaml"),
        "ref: tp.a\nrunner_type: troubled\nentry_point: a.sh\n",
    )
    .expect("write");
    std::fs::write(pack.join("actions/a.sh"), "echo hi\n").expect("write");
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.path().to_string_lossy(),
            "tp.a",
            "--json",
        ],
        &[("PACKBOX_CATALOG", &catalog.path().to_string_lossy())],
    );
    assert_eq!(run.code(), 125, "no version verifies: {}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("no verified troubled version"), "{stderr}");
    assert!(stderr.contains("the image holds 3.11."), "{stderr}");
    assert_no_leftovers(&run);
}

#[test]
fn constraints_select_among_the_detected_node_versions() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = packs.path().join("np");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: np\nlabel: N\nversion: 1.0.0\n",
    )
    .expect("write");
    std::fs::write(
        pack.join("actions/v.yaml"),
        "ref: np.v\nrunner_type: node\nentry_point: v.js\nruntime_version: '>=18'\noutput_format: json\n",
    )
    .expect("write");
    std::fs::write(
        pack.join("actions/v.js"),
        "console.log(JSON.stringify({node: process.version}));\n",
    )
    .expect("write");
    let run = run_json(packs.path(), "np.v", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    let version = outcome["runtime_version"].as_str().unwrap_or("");
    assert!(version.starts_with("20."), "the newest node: {outcome}");
    assert_eq!(outcome["result"]["node"], format!("v{version}"));
}
