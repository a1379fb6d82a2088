//! packbox's init as the PID 1 of action containers: a run ends at the action's exit, with the
//! status the engine confirms afterwards; an action cannot end its run early by forging the
//! init's exit-status frame; timeouts still stop it; what it leaves running ends with it.
//! scripts/test runs them on Docker and on rootful and rootless Podman (`PACKBOX_TEST_ENGINE`).

mod common;

use common::*;
use packbox::{Catalog, Executor, RunRequest, Status};

fn init_packs() -> std::path::PathBuf {
    repo_root().join("tests/fixtures")
}

/// `packbox run --json` of a fixture action, with what runs need on this engine.
fn run_init(action: &str, args: &[&str]) -> Finished {
    let mut all = args.to_vec();
    all.extend(
        engine::run_flags()
            .into_iter()
            .filter(|f| !args.contains(f)),
    );
    run_json(&init_packs(), action, &all)
}

#[test]
fn a_forged_exit_status_does_not_end_the_run_and_the_timeout_still_stops_the_action() {
    require_engine();
    let run = run_init("init.forge", &["--grace", "1"]);
    let outcome = run.json();
    assert_eq!(outcome["status"], "timeout", "{outcome}");
    assert_eq!(run.code(), 124);
    // What it printed is output like any other, and the container's streams were out of reach.
    let stdout = outcome["stdout"].as_str().unwrap_or_default();
    assert!(stdout.starts_with("\u{3}\0\0\0\u{4}\0\0\0\0"), "{outcome}");
    assert!(
        stdout.contains("/proc/1/fd/1: Permission denied")
            && stdout.contains("/proc/1/fd/2: Permission denied"),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn a_run_ends_with_the_action_not_with_what_it_left_running() {
    require_engine();
    let run = run_init("init.leave_behind", &[]);
    let outcome = run.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["stdout"], "left two children\n");
    assert_no_leftovers(&run);
}

#[test]
fn a_stop_the_action_asked_its_init_to_trace_is_not_an_exit() {
    require_engine();
    // ptrace is allowed by the engine's default profile only (packbox's refuses it: EPERM).
    for args in [
        &["--seccomp", "engine-default", "--allow-weaker-sandbox"][..],
        &[][..],
    ] {
        let run = run_init("init.traceme", args);
        let outcome = run.json();
        assert_eq!(outcome["status"], "succeeded", "{args:?}: {outcome}");
        let expected = if args.is_empty() { "EPERM" } else { "ok" };
        assert_eq!(outcome["result"]["traceme"], expected, "{outcome}");
        assert_eq!(outcome["result"]["handled"], true, "{outcome}");
        assert_no_leftovers(&run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_reach_the_outcome_and_the_engine_agrees_with_each() {
    require_engine();
    let catalog = Catalog::builtin().expect("catalog");
    let mut settings = settings();
    if engine::drops_limits() {
        settings.sandbox.allow_weaker = true;
    }
    let executor = Executor::connect(settings.clone(), catalog.clone())
        .await
        .expect("engine");
    let cases: [(&[&str], Status, i64); 5] = [
        (&[], Status::Succeeded, 0),
        (&["code=3"], Status::Failed, 3),
        (&["signal=TERM"], Status::Failed, 143),
        (&["signal=SEGV"], Status::Failed, 139),
        // A kill may be the OOM killer's: the engine settles it (not an OOM here).
        (&["signal=KILL"], Status::Failed, 137),
    ];
    for (params, status, code) in cases {
        let mut request = RunRequest::new(init_packs(), "init.exit_with");
        request.params = params.iter().map(|p| p.to_string()).collect();
        let plan = packbox::plan(&settings, &catalog, &request).expect("plan");
        let outcome = executor.run(&plan, |_| {}).await.expect("run");
        assert_eq!(outcome.status, status, "{params:?}: {:?}", outcome.error);
        assert_eq!(outcome.exit_code, Some(code), "{params:?}");
        assert_eq!(outcome.stdout, "ending\n", "{params:?}");
        assert_eq!(outcome.stderr, "on stderr\n", "{params:?}");
    }
    // Removal, after each engine's exit status was checked against the init's.
    executor.close().await;
    assert_eq!(executor.exit_status_mismatches(), 0);
}
