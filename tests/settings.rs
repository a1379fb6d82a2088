//! Settings resolved once, as a user meets them: where each value comes from, a config file in
//! the working folder that is never read on its own, weaker sandboxes only when asked for
//! explicitly, one validation for flags and file, and a run that explains itself in its logs.

mod common;

use common::*;

/// A `packbox.yaml` that would hand the action root, capabilities, a writable root and a
/// network.
const HOSTILE_CONFIG: &str = "sandbox:\n  user: \"0:0\"\n  cap_drop_all: false\n  no_new_privileges: false\n  read_only_root: false\n  network: bridge\n";

#[test]
fn a_packbox_yaml_in_the_working_folder_is_never_read() {
    require_engine();
    let cwd = tempfile::tempdir().expect("tempdir");
    std::fs::write(cwd.path().join("packbox.yaml"), HOSTILE_CONFIG).expect("write");
    let packs = fixture_packs().to_string_lossy().into_owned();
    let run = packbox_in(
        cwd.path(),
        &["run", "--packs", &packs, "contract.whoami", "--json"],
        &[("HOME", "/nonexistent")],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    let report = &outcome["result"];
    assert_eq!(report["uid"], 65534, "{report}");
    assert_eq!(report["cap_eff"], "0000000000000000", "{report}");
    assert_eq!(report["root_writable"], false, "{report}");
    assert_eq!(report["interfaces"], "lo ", "{report}");
    assert_eq!(
        outcome["sandbox"]["weaker_than_default"],
        serde_json::json!([])
    );
    assert_no_leftovers(&run);
}

#[test]
fn a_weaker_sandbox_from_an_explicit_file_needs_the_allowance() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, HOSTILE_CONFIG).expect("write");
    let config = config.to_string_lossy().into_owned();
    let packs = fixture_packs().to_string_lossy().into_owned();
    let refused = packbox(
        &[
            "run",
            "--config",
            &config,
            "--packs",
            &packs,
            "contract.whoami",
        ],
        &[],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("weaker than packbox's sandbox default")
            && refused.stderr().contains("--allow-weaker-sandbox"),
        "{}",
        refused.stderr()
    );
    assert!(containers_of(refused.pid).is_empty());

    let allowed = packbox(
        &[
            "run",
            "--config",
            &config,
            "--allow-weaker-sandbox",
            "--packs",
            &packs,
            "contract.whoami",
            "--json",
        ],
        &[],
    );
    assert_eq!(allowed.code(), 0, "{}", allowed.stderr());
    let outcome = allowed.json();
    assert_eq!(outcome["result"]["uid"], 0);
    let weaker = outcome["sandbox"]["weaker_than_default"]
        .as_array()
        .expect("a list")
        .len();
    assert_eq!(weaker, 5, "{}", outcome["sandbox"]);
    assert_no_leftovers(&allowed);
}

#[test]
fn the_human_output_warns_about_a_weaker_sandbox() {
    require_engine();
    let packs = fixture_packs().to_string_lossy().into_owned();
    let run = packbox(
        &[
            "run",
            "--user",
            "0",
            "--allow-weaker-sandbox",
            "--packs",
            &packs,
            "contract.whoami",
        ],
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("warning: weaker sandbox: sandbox.user = 0 (root)"),
        "{}",
        run.stderr()
    );
}

#[test]
fn flags_and_file_are_refused_alike_before_any_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = fixture_packs().to_string_lossy().into_owned();
    for (flag, value, yaml) in [
        ("--tmp-size", "999999g", "sandbox: {tmp_size: 999999g}"),
        ("--tmp-size", "1", "sandbox: {tmp_size: 1}"),
        ("--max-output", "0", "run: {max_output: 0}"),
        ("--cpus", "0.0001", "sandbox: {cpus: 0.0001}"),
        ("--user", "4294967295", "sandbox: {user: '4294967295'}"),
        ("--pids", "4294967295", "sandbox: {pids: 4294967295}"),
        ("--network", "HOST", "sandbox: {network: HOST}"),
        ("--timeout", "0", "run: {timeout_seconds: 0}"),
    ] {
        let from_flag = packbox(
            &["run", flag, value, "--packs", &packs, "contract.whoami"],
            &[],
        );
        let config = dir.path().join("c.yaml");
        std::fs::write(&config, yaml).expect("write");
        let from_file = packbox(
            &[
                "run",
                "--config",
                &config.to_string_lossy(),
                "--packs",
                &packs,
                "contract.whoami",
            ],
            &[],
        );
        for run in [&from_flag, &from_file] {
            assert_eq!(run.code(), 2, "{flag} {value}: {}", run.stderr());
            assert!(containers_of(run.pid).is_empty());
        }
        let message = |run: &Finished| {
            run.stderr()
                .split_once("): ")
                .map(|(_, m)| m.lines().next().unwrap_or("").to_string())
        };
        assert_eq!(message(&from_flag), message(&from_file), "{flag} {value}");
    }
}

#[test]
fn config_show_says_where_each_value_came_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "sandbox: {memory: 256m}\n").expect("write");
    let shown = packbox(
        &[
            "config",
            "show",
            "--json",
            "--config",
            &config.to_string_lossy(),
            "--catalog",
            "/tmp/catalog-flag",
        ],
        &[
            (
                "PACKBOX_PIP_INDEX_URL",
                "https://user:hunter2@pypi.example/simple",
            ),
            ("PACKBOX_STATE_DIR", "/tmp/state-from-env"),
        ],
    );
    assert_eq!(shown.code(), 0, "{}", shown.stderr());
    let json = shown.json();
    let setting = |key: &str| json["settings"][key].clone();
    assert_eq!(setting("sandbox.memory")["value"], 256 << 20);
    assert_eq!(setting("sandbox.memory")["source"], "file");
    assert_eq!(setting("catalog")["source"], "flag");
    assert_eq!(setting("state_dir")["value"], "/tmp/state-from-env");
    assert_eq!(setting("state_dir")["source"], "env");
    assert_eq!(setting("sandbox.network")["source"], "default");
    assert!(
        !shown.stdout().contains("hunter2"),
        "credentials never shown"
    );
    let text = packbox(&["config", "show"], &[]);
    assert_eq!(text.code(), 0, "{}", text.stderr());
    assert!(text.stdout().contains("sandbox.network") && text.stdout().contains("default"));
}

#[test]
fn a_debug_log_explains_the_run() {
    require_engine();
    let packs = example_packs().to_string_lossy().into_owned();
    let run = packbox(
        &["run", "--packs", &packs, "hello.greet_shell"],
        &[("PACKBOX_LOG", "packbox=debug")],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let log = run.stderr();
    for expected in [
        "choosing a version",
        "version chosen",
        "packbox/shell:5.2",
        "container started",
        "run finished",
    ] {
        assert!(log.contains(expected), "missing `{expected}` in:\n{log}");
    }
}

#[test]
fn json_logs_carry_the_same_decisions() {
    require_engine();
    let packs = example_packs().to_string_lossy().into_owned();
    let run = packbox(
        &[
            "run",
            "--log-format",
            "json",
            "--packs",
            &packs,
            "hello.greet_shell",
        ],
        &[("PACKBOX_LOG", "packbox=debug")],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let events: Vec<serde_json::Value> = run
        .stderr()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
        .collect();
    let chosen = events
        .iter()
        .find(|e| e["fields"]["message"] == "version chosen")
        .expect("the version decision is logged");
    assert_eq!(chosen["fields"]["version"], "5.2.15");
    assert_eq!(chosen["span"]["action"], "hello.greet_shell");
}
