//! `packbox explain`: the decision a run would take, checked against what the run then does, on
//! the real engine; the lock is read from an environment image without starting a container.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn explain_json(packs: &Path, action: &str) -> Finished {
    packbox(
        &[
            "explain",
            "--packs",
            &packs.to_string_lossy(),
            action,
            "--json",
        ],
        &build_env(),
    )
}

/// Engine events of containers of `kind` made by the packbox process `pid` (other tests explain
/// and run at the same time).
fn events_of_kind(since: u64, pid: u32, kind: &str, event: &str) -> usize {
    let filters = [
        "type=container".to_string(),
        format!("event={event}"),
        format!("label=packbox.kind={kind}"),
        format!("label=packbox.owner_pid={pid}"),
    ];
    engine_events(since, &filters, "{{.ID}}").len()
}

#[test]
fn explain_names_the_version_the_environment_and_the_lock_without_running() {
    require_engine();
    // The environment exists once the action has run.
    let run = run_building(&env_packs(), "attune_core.imports", &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let ran_on = run.json()["image"].as_str().unwrap_or("").to_string();
    let since = unix_now();
    let explained = explain_json(&env_packs(), "attune_core.imports");
    assert_eq!(explained.code(), 0, "{}", explained.stderr());
    let e = explained.json();
    assert_eq!(e["action"], "attune_core.imports");
    assert_eq!(e["runner_type"], "python");
    assert_eq!(e["runtime"], "python");
    assert_eq!(e["constraint"], Value::Null);
    assert_eq!(e["chosen"], "3.11");
    let candidates = e["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 3);
    let taken: Vec<&Value> = candidates.iter().filter(|c| c["taken"] == true).collect();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0]["why"], "taken: the runtime's default version");
    assert!(
        candidates
            .iter()
            .all(|c| c["verified"] == true && c["detected"].is_string()),
        "{e:#}"
    );
    let env = &e["environment"];
    assert_eq!(env["needed"], true);
    assert_eq!(env["exists"], true);
    assert_eq!(env["image"], ran_on.as_str(), "explain and run agree");
    let key = env["key"].as_str().unwrap_or("");
    assert_eq!(key.len(), 64);
    assert!(ran_on.ends_with(&key[..24]));
    let parts = &env["key_parts"];
    assert_eq!(
        parts["dependencies"],
        env["dependencies"]["dependency_hash"]
    );
    assert_eq!(parts["runtime"], "python");
    assert!(
        parts["base_image_id"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:")
    );
    assert!(
        parts["install_script"]
            .as_str()
            .unwrap_or("")
            .contains("pip install")
    );
    assert_eq!(env["lock"]["file"], "/opt/packbox/pip-freeze.txt");
    let lock = env["lock"]["content"].as_str().unwrap_or("");
    assert!(
        lock.contains("requests==") && lock.contains("croniter=="),
        "{lock}"
    );
    // The lock came from a container that was created and removed, never started.
    let pid = explained.pid;
    assert_eq!(events_of_kind(since, pid, "explain", "create"), 1);
    assert_eq!(events_of_kind(since, pid, "explain", "start"), 0);
    assert_eq!(events_of_kind(since, pid, "explain", "destroy"), 1);
    assert_no_leftovers(&explained);
}

#[test]
fn explain_predicts_the_environment_a_run_then_builds() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("seed_mapping"), packs.path());
    std::fs::write(
        pack.join("requirements.txt"),
        format!(
            "six==1.16.0\n# explain test {}-{}\n",
            std::process::id(),
            unix_now()
        ),
    )
    .expect("write");
    let before = explain_json(packs.path(), "seed_mapping.imports");
    assert_eq!(before.code(), 0, "{}", before.stderr());
    let env = before.json()["environment"].clone();
    assert_eq!(env["exists"], false);
    assert_eq!(env["lock"], Value::Null);
    let predicted = env["image"].as_str().unwrap_or("").to_string();
    cleanup_image(&predicted);
    let run = run_building(packs.path(), "seed_mapping.imports", &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.json()["image"], predicted.as_str());
    let after = explain_json(packs.path(), "seed_mapping.imports").json();
    assert_eq!(after["environment"]["exists"], true);
    assert!(
        after["environment"]["lock"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("six==1.16.0")
    );
}

#[test]
fn explain_says_why_each_version_is_rejected_and_what_a_run_would_refuse() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = packs.path().join("why");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: why\nlabel: Why\nversion: 1.0.0\n",
    )
    .expect("write");
    std::fs::write(pack.join("actions/a.py"), "print('a')\n").expect("write");
    let action = |constraint: &str| {
        std::fs::write(
            pack.join("actions/a.yaml"),
            format!("ref: why.a\nrunner_type: python3\nentry_point: a.py\nruntime_version: '{constraint}'\n"),
        )
        .expect("write");
        explain_json(packs.path(), "why.a")
    };
    let run = action("<=3.11");
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let e = run.json();
    assert_eq!(e["runner_type"], "python3");
    assert_eq!(e["chosen"], "3.11");
    let whys: Vec<(&str, &str)> = e["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| {
            (
                c["declared"].as_str().unwrap_or(""),
                c["why"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        whys[0]
            .1
            .starts_with("rejected: satisfies `<=3.11`, but 3.11."),
        "{whys:?}"
    );
    assert_eq!(
        whys[1].1,
        "taken: the highest verified version that satisfies `<=3.11`"
    );
    assert!(
        whys[2].1.starts_with("rejected: 3.13.")
            && whys[2].1.ends_with("does not satisfy `<=3.11`"),
        "{whys:?}"
    );
    assert_eq!(e["environment"]["needed"], false);
    assert_eq!(e["environment"]["image"], "packbox/python:3.11");
    let refused = action(">=3.11.99, <3.12");
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    let e = refused.json();
    assert_eq!(e["chosen"], Value::Null);
    assert!(
        e["refusal"].as_str().unwrap_or("").contains(
            "action why.a: runtime_version `>=3.11.99, <3.12` matches none of the available python versions"
        ),
        "{e:#}"
    );
    assert_eq!(e["environment"], Value::Null);
}
