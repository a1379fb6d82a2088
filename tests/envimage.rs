//! Environment images against the real engine and the real package indexes: dependencies baked
//! in at build time, one image per (runtime version, dependency set), built once.

mod common;

use std::process::Command;
use std::thread;

use common::*;

fn built_tag(run: &Finished) -> Option<String> {
    run.stderr()
        .lines()
        .find_map(|l| l.strip_prefix("building environment ").map(str::to_string))
}

#[test]
fn seed_scenario_each_pack_sees_its_own_requests() {
    require_engine();
    let old = run_building(&env_packs(), "requests_old.version", &[]);
    let new = run_building(&env_packs(), "requests_new.version", &[]);
    for (run, expected) in [(&old, "2.28.0"), (&new, "2.31.0")] {
        assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
        let outcome = run.json();
        assert_eq!(outcome["result"]["requests"], expected, "{outcome}");
        assert_eq!(outcome["result"]["prefix"], "/opt/packbox/venv");
        assert!(
            outcome["image"]
                .as_str()
                .unwrap_or("")
                .starts_with("packbox/env:python-3.11."),
            "{outcome}"
        );
        assert_eq!(outcome["runtime_version"], outcome["result"]["python"]);
        assert_no_leftovers(run);
    }
    assert_ne!(old.json()["image"], new.json()["image"]);
}

#[test]
fn identical_manifests_share_one_image() {
    require_engine();
    let first = run_building(&env_packs(), "requests_new.version", &[]);
    let twin = run_building(&env_packs(), "requests_new_twin.version", &[]);
    assert_eq!(first.code(), 0, "stderr: {}", first.stderr());
    assert_eq!(twin.code(), 0, "stderr: {}", twin.stderr());
    assert_eq!(first.json()["image"], twin.json()["image"]);
    assert_eq!(
        built_tag(&twin),
        None,
        "the twin must not build: {}",
        twin.stderr()
    );
}

#[test]
fn editing_a_manifest_builds_a_new_image() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("requests_new"), packs.path());
    let before = run_building(packs.path(), "requests_new.version", &[]);
    assert_eq!(before.code(), 0, "stderr: {}", before.stderr());
    let requirements = pack.join("requirements.txt");
    let edited = format!(
        "{}# edited by a test {}\n",
        std::fs::read_to_string(&requirements).expect("read"),
        uuid_like()
    );
    std::fs::write(&requirements, edited).expect("write");
    let after = run_building(packs.path(), "requests_new.version", &[]);
    assert_eq!(after.code(), 0, "stderr: {}", after.stderr());
    let new_image = after.json()["image"].as_str().unwrap_or("").to_string();
    cleanup_image(&new_image);
    assert_ne!(before.json()["image"].as_str(), Some(new_image.as_str()));
    assert_eq!(built_tag(&after).as_deref(), Some(new_image.as_str()));
    remove_image(&new_image);
}

#[test]
fn a_requirement_that_does_not_exist_fails_with_pips_message_and_no_tag() {
    require_engine();
    let run = run_building(&env_packs(), "bad_requirement.noop", &[]);
    assert_eq!(run.code(), 125, "stderr: {}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("No matching distribution found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("at `pip install`"),
        "names the failing installer: {stderr}"
    );
    let tag = built_tag(&run).expect("a build was attempted");
    assert!(
        !image_exists(&tag),
        "{tag} must not exist after a failed build"
    );
    assert_eq!(run.json()["status"], "error");
    assert_no_leftovers(&run);
}

#[test]
fn a_node_pack_uses_its_npm_dependency() {
    require_engine();
    let run = run_building(&env_packs(), "node_dep.check", &["-p", "value=abc"]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let result = &run.json()["result"];
    assert_eq!(result["is_number"], false, "{result}");
    assert!(
        result["module"]
            .as_str()
            .unwrap_or("")
            .starts_with("/opt/packbox/node/node_modules/is-number/"),
        "{result}"
    );
    let run = run_building(&env_packs(), "node_dep.check", &["-p", "value=42"]);
    assert_eq!(run.json()["result"]["is_number"], true);
}

#[test]
fn two_concurrent_runs_build_a_missing_environment_once() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("requests_new"), packs.path());
    // A fresh comment makes a manifest no earlier run has built.
    std::fs::write(
        pack.join("requirements.txt"),
        format!("six==1.16.0\n# concurrency test {}\n", uuid_like()),
    )
    .expect("write");
    std::fs::write(
        pack.join("actions/version.py"),
        "import json, six\nprint(json.dumps({'six': six.__version__}))\n",
    )
    .expect("write");
    let since = unix_now();
    // Both processes share this test's state folder, where the build lock lives.
    let state = state_dir();
    let runs: Vec<Finished> = (0..2)
        .map(|_| {
            let packs = packs.path().to_string_lossy().into_owned();
            let state = state.to_string_lossy().into_owned();
            thread::spawn(move || {
                let mut env = build_env();
                env.push(("PACKBOX_STATE_DIR", &state));
                packbox(
                    &["run", "--packs", &packs, "requests_new.version", "--json"],
                    &env,
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().expect("run thread"))
        .collect();
    for run in &runs {
        assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
        assert_eq!(run.json()["result"]["six"], "1.16.0");
    }
    let builders: Vec<String> = runs.iter().filter_map(built_tag).collect();
    builders.iter().for_each(|tag| cleanup_image(tag));
    assert_eq!(builders.len(), 1, "exactly one run builds: {builders:?}");
    let tag = &builders[0];
    assert_eq!(tag_events(tag, since), 1, "the image was tagged once");
    remove_image(tag);
}

#[test]
fn build_ahead_of_time_then_runs_build_nothing() {
    require_engine();
    let packs = env_packs();
    let packs = packs.to_string_lossy();
    let mut env = build_env();
    env.push(("NO_COLOR", "1"));
    let build = packbox(
        &[
            "build",
            "--packs",
            &packs,
            "requests_old",
            "node_dep",
            "--json",
        ],
        &env,
    );
    assert_eq!(build.code(), 0, "stderr: {}", build.stderr());
    let events: Vec<serde_json::Value> = build
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let finished: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "finished").collect();
    assert_eq!(finished.len(), 2, "{events:?}");
    for event in &finished {
        let status = event["report"]["status"].as_str().unwrap_or("");
        assert!(status == "built" || status == "present", "{event}");
    }
    let run = run_building(&env_packs(), "requests_old.version", &[]);
    assert_eq!(built_tag(&run), None, "already built: {}", run.stderr());
}

#[test]
fn envs_list_shows_labels_and_prune_spares_images_in_use() {
    require_engine();
    let run = run_building(&env_packs(), "requests_old.version", &[]);
    let image = run.json()["image"].as_str().unwrap_or("").to_string();
    let list = packbox(&["envs", "list", "--json"], &[]);
    assert_eq!(list.code(), 0, "stderr: {}", list.stderr());
    let envs = list.json();
    let entry = envs
        .as_array()
        .and_then(|all| all.iter().find(|e| e["tag"] == image.as_str()))
        .unwrap_or_else(|| panic!("{image} not listed: {envs}"))
        .clone();
    assert_eq!(entry["runtime"], "python");
    assert_eq!(entry["dependency_hash"].as_str().map(str::len), Some(64));
    assert!(entry["size_bytes"].as_i64().unwrap_or(0) > 0);

    // A stopped container still uses the image: prune must keep it.
    let created = Command::new("docker")
        .args(["create", "--label", "packbox.test=prune", &image, "true"])
        .output()
        .expect("docker create");
    assert!(created.status.success());
    let container = String::from_utf8_lossy(&created.stdout).trim().to_string();
    // By id: tests with other state folders may build the environment again meanwhile, which
    // moves its tag to their own image.
    let used = Command::new("docker")
        .args(["inspect", "--format", "{{.Image}}", &container])
        .output()
        .expect("docker inspect");
    let used = String::from_utf8_lossy(&used.stdout).trim().to_string();
    assert!(used.starts_with("sha256:"), "{used}");
    let prune = packbox(
        &["envs", "prune", "--keep", "0", "--dry-run", "--json"],
        &[],
    );
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .output();
    assert_eq!(prune.code(), 0, "stderr: {}", prune.stderr());
    let report = prune.json();
    let removed: Vec<&str> = report["removed"]
        .as_array()
        .map(|all| all.iter().filter_map(|e| e["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(!removed.contains(&used.as_str()), "{report}");
    assert_eq!(report["dry_run"], true);
    assert!(image_exists(&image), "a dry run removes nothing");
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), unix_now())
}

fn tag_events(tag: &str, since: u64) -> usize {
    let filters = ["type=image".to_string(), "event=tag".to_string()];
    engine_events(since, &filters, "{{.Actor.Attributes.name}}")
        .iter()
        .filter(|name| *name == tag)
        .count()
}
