//! The executor against the recording fake under a paused clock: runs, timeouts, cancellation at
//! each stage, removal on every path, the warm pool, builds once under concurrent callers.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::engine::fake::{BuildScript, Call, Exit, FakeEngine, Program};
use crate::engine::{ContainerEngine, ContainerSpec, EngineInfo, NotApplied, OciRuntime, Signal};
use crate::executor::error::Fault;
use crate::plan::RunPlan;
use crate::plan::{RunRequest, plan};
use crate::settings::{Environment, SettingsLayer};
use crate::{Status, contract::Outcome};

/// A pack `p` with action `a`, written into a temp folder; `action_yaml` is appended to the
/// action file, and `files` are written into the pack.
fn pack(runner: &str, entry: &str, action_yaml: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("p");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(pack.join("pack.yaml"), "ref: p\nlabel: P\nversion: 1.0.0\n")
        .expect("pack.yaml");
    std::fs::write(
        pack.join("actions/a.yaml"),
        format!("ref: p.a\nrunner_type: {runner}\nentry_point: {entry}\n{action_yaml}"),
    )
    .expect("a.yaml");
    std::fs::write(pack.join("actions").join(entry), "echo hi\n").expect("entry");
    for (name, text) in files {
        std::fs::write(pack.join(name), text).expect("file");
    }
    dir
}

/// A fake engine holding the catalog's runtime images, whose probes answer with real-looking
/// versions; every other container runs `action`.
fn engine(action: Program) -> Arc<FakeEngine> {
    engine_with(move |_| action.clone())
}

/// [`engine`], with the action's program chosen by its container spec.
fn engine_with(
    action: impl Fn(&ContainerSpec) -> Program + Send + Sync + 'static,
) -> Arc<FakeEngine> {
    with_runtimes(FakeEngine::new(), action)
}

/// `fake` given the catalog's runtime images and probe answers; every other container runs
/// `action`.
fn with_runtimes(
    fake: Arc<FakeEngine>,
    action: impl Fn(&ContainerSpec) -> Program + Send + Sync + 'static,
) -> Arc<FakeEngine> {
    let mut versions = HashMap::new();
    let catalog = Catalog::builtin().expect("catalog");
    // Built from the current recipes, as `images build` makes them.
    let recipe_label = |tag: &str| {
        catalog
            .runtimes()
            .iter()
            .flat_map(|r| &r.versions)
            .find(|v| v.image == tag)
            .and_then(|v| crate::image::runtime::recipe_label(&catalog, v))
            .unwrap_or_default()
    };
    for (tag, answer) in [
        ("packbox/python:3.9", "Python 3.9.2"),
        ("packbox/python:3.11", "Python 3.11.2"),
        ("packbox/python:3.13", "Python 3.13.5"),
        ("packbox/node:18", "v18.19.0"),
        ("packbox/node:20", "v20.19.2"),
        ("packbox/shell:5.2", "GNU bash, version 5.2.15(1)-release"),
    ] {
        let (key, value) = recipe_label(tag);
        let id = fake.add_image(tag, &[("packbox.kind", "runtime"), (&key, &value)], 0);
        versions.insert(id, answer.to_string());
    }
    fake.set_program(move |spec: &ContainerSpec| {
        if spec.labels.get("packbox.kind").map(String::as_str) == Some("probe") {
            let answer = versions.get(&spec.image).cloned().unwrap_or_default();
            return Program::prints(&format!("{answer}\n"), 0);
        }
        action(spec)
    });
    fake
}

struct Harness {
    fake: Arc<FakeEngine>,
    executor: Executor,
    settings: Settings,
    _state: tempfile::TempDir,
}

fn harness(fake: Arc<FakeEngine>, layer: SettingsLayer) -> Harness {
    let state = tempfile::tempdir().expect("state dir");
    let mut layer = layer;
    layer.state_dir = Some(state.path().to_path_buf());
    let settings = Settings::resolve(layer, None, &Environment::default()).expect("valid settings");
    let catalog = Catalog::builtin().expect("catalog");
    let executor = Executor::start(settings.clone(), catalog, fake.clone());
    Harness {
        fake,
        executor,
        settings,
        _state: state,
    }
}

fn plan_for(h: &Harness, packs: &tempfile::TempDir) -> RunPlan {
    let catalog = Catalog::builtin().expect("catalog");
    plan(&h.settings, &catalog, &RunRequest::new(packs.path(), "p.a")).expect("plan")
}

async fn run(h: &Harness, plan: &RunPlan) -> Result<Outcome, Error> {
    h.executor.run(plan, |_| {}).await
}

fn action_creates(fake: &FakeEngine) -> Vec<ContainerSpec> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Create { spec, .. }
                if spec.labels.get("packbox.kind").map(String::as_str) == Some("run") =>
            {
                Some(*spec)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_run_probes_chooses_runs_and_parses() {
    let h = harness(
        engine(Program::prints("{\"ok\": true}\n", 0)),
        SettingsLayer::default(),
    );
    let packs = pack("shell", "a.sh", "output_format: json\n", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("run");
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(outcome.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(outcome.runtime_version, "5.2.15");
    assert_eq!(outcome.image, "packbox/shell:5.2");
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty(), "nothing left");
}

#[tokio::test(start_paused = true)]
async fn every_action_container_is_locked_down() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("python", "a.py", "", &[]);
    run(&h, &plan_for(&h, &packs)).await.expect("run");
    let specs = action_creates(&h.fake);
    assert_eq!(specs.len(), 1);
    let spec = &specs[0];
    assert_eq!(spec.network_mode, "none");
    assert!(spec.read_only_rootfs && spec.cap_drop_all && spec.no_new_privileges);
    assert_eq!(spec.user, "65534:65534");
    assert_eq!(spec.binds.len(), 1);
    assert!(spec.binds[0].read_only && spec.binds[0].container_path == "/pack");
    assert!(
        spec.binds
            .iter()
            .all(|b| !b.host_path.contains("docker.sock"))
    );
    assert_eq!(spec.labels["packbox.managed"], "true");
    assert_eq!(spec.cmd, ["python3", "-u", "/pack/actions/a.py"]);
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn probes_run_locked_down_too() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("python", "a.py", "", &[]);
    run(&h, &plan_for(&h, &packs)).await.expect("run");
    let probes: Vec<ContainerSpec> = h
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Create { spec, .. } if spec.labels["packbox.kind"] == "probe" => Some(*spec),
            _ => None,
        })
        .collect();
    assert_eq!(probes.len(), 3, "the three python versions");
    assert!(
        probes
            .iter()
            .all(|p| p.network_mode == "none" && p.cap_drop_all)
    );
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn the_probe_cache_spares_the_second_run_its_probes() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("python", "a.py", "", &[]);
    let plan = plan_for(&h, &packs);
    run(&h, &plan).await.expect("first run");
    let probes = |f: &FakeEngine| {
        f.count(
            |c| matches!(c, Call::Create { spec, .. } if spec.labels["packbox.kind"] == "probe"),
        )
    };
    assert_eq!(probes(&h.fake), 3);
    run(&h, &plan).await.expect("second run");
    assert_eq!(probes(&h.fake), 3, "no new probe");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_constraint_picks_the_highest_matching_verified_version() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("python", "a.py", "runtime_version: '>=3.10'\n", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("run");
    assert_eq!(outcome.runtime_version, "3.13.5");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn orphans_are_swept_once_when_the_executor_starts_not_per_run() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let plan = plan_for(&h, &packs);
    for _ in 0..3 {
        run(&h, &plan).await.expect("run");
    }
    h.executor.close().await;
    let sweeps = h.fake.count(|c| {
        matches!(c, Call::ListContainers(labels) if labels == &["packbox.managed=true".to_string()])
    });
    assert_eq!(sweeps, 1);
}

#[tokio::test(start_paused = true)]
async fn the_start_up_sweep_removes_a_dead_owners_container() {
    let fake = engine(Program::default());
    let dead = crate::lifecycle::owner::Owner {
        pid: u32::MAX - 1,
        start: Some(1),
        ..Owner::current()
    };
    let labels: Vec<(String, String)> = dead.labels().into_iter().collect();
    let borrowed: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fake.add_listed_container("orphan", "sha256:x", &borrowed);
    let h = harness(fake, SettingsLayer::default());
    h.executor.start_up_sweep().await;
    assert!(h.fake.container_ids().is_empty(), "gone before close");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_action_is_an_outcome_and_its_container_goes() {
    let failing = Program {
        output: vec![(crate::engine::StreamKind::Stderr, b"bad input\n".to_vec())],
        exit: Exit::Code(3),
        ..Program::default()
    };
    let h = harness(engine(failing), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("an outcome");
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.error.as_deref(), Some("bad input"));
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_timeout_ends_as_timeout_after_sigterm_and_sigkill() {
    let never = Program {
        exit: Exit::Never,
        obeys_term: false,
        ..Program::default()
    };
    let h = harness(engine(never), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "timeout_seconds: 5\n", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("an outcome");
    assert_eq!(outcome.status, Status::Timeout);
    assert_eq!(
        outcome.error.as_deref(),
        Some("Execution timed out after 5 seconds")
    );
    let signals: Vec<Signal> = h
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Kill(_, s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(signals, [Signal::Term, Signal::Kill]);
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_parameter_document_goes_on_stdin_only() {
    let h = harness(
        engine(Program {
            delay: Duration::from_secs(1),
            ..Program::default()
        }),
        SettingsLayer::default(),
    );
    let packs = pack(
        "shell",
        "a.sh",
        "parameters:\n  token: {type: string, secret: true}\n",
        &[],
    );
    let catalog = Catalog::builtin().expect("catalog");
    let mut request = RunRequest::new(packs.path(), "p.a");
    request.secrets = vec!["token=s3cr3t-value".into()];
    let plan = plan(&h.settings, &catalog, &request).expect("plan");
    let running = run(&h, &plan);
    let watching = async {
        h.fake
            .until(|f| {
                f.container_ids()
                    .iter()
                    .any(|id| String::from_utf8_lossy(&f.stdin_of(id)).contains("s3cr3t-value"))
            })
            .await;
    };
    let (outcome, ()) = tokio::join!(running, watching);
    outcome.expect("run");
    let spec = &action_creates(&h.fake)[0];
    let visible = format!("{:?} {:?} {:?}", spec.env, spec.cmd, spec.labels);
    assert!(!visible.contains("s3cr3t-value"), "{visible}");
    h.executor.close().await;
}

/// Runs the action of `packs` on an executor sharing the harness's fake engine, whose
/// shutdown is cancelled as soon as `when` holds; that executor is closed afterwards.
async fn run_cancelled_when(
    h: &Harness,
    packs: &tempfile::TempDir,
    when: impl Fn(&FakeEngine) -> bool,
) -> Result<Outcome, Error> {
    let shutdown = CancellationToken::new();
    let executor = Executor::start(
        h.settings.clone(),
        Catalog::builtin().expect("catalog"),
        h.fake.clone(),
    )
    .with_shutdown(shutdown.clone());
    let plan = plan_for(h, packs);
    let running = executor.run(&plan, |_| {});
    let cancelling = async {
        h.fake.until(when).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(running, cancelling);
    executor.close().await;
    result
}

fn builds(fake: &FakeEngine) -> usize {
    fake.count(|c| matches!(c, Call::Build(_)))
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_the_run_stops_and_removes_the_container() {
    let never = Program {
        exit: Exit::Never,
        ..Program::default()
    };
    let h = harness(engine(never), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let action_runs = |f: &FakeEngine| {
        f.running()
            .iter()
            .any(|name| !name.starts_with("packbox-probe"))
    };
    let outcome = run_cancelled_when(&h, &packs, action_runs)
        .await
        .expect("an outcome");
    assert_eq!(outcome.status, Status::Cancelled);
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_a_probe_leaves_nothing() {
    let fake = FakeEngine::new();
    fake.add_image("packbox/shell:5.2", &[], 0);
    fake.set_program(|_| Program {
        exit: Exit::Never,
        ..Program::default()
    });
    let h = harness(fake, SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let err = run_cancelled_when(&h, &packs, |f| !f.running().is_empty())
        .await
        .expect_err("cancelled");
    assert_eq!(err.fault(), Fault::Cancelled, "{err}");
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
    assert!(
        action_creates(&h.fake).is_empty(),
        "the action never started"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_while_a_runtime_image_is_built_leaves_no_tag() {
    let fake = engine(Program::default());
    // The shell image is missing: it is built from its recipe (never pulled), and the
    // build hangs.
    fake.remove_image("packbox/shell:5.2")
        .await
        .expect("removed");
    fake.set_build(BuildScript::Hang);
    let h = harness(fake, SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let err = run_cancelled_when(&h, &packs, |f| builds(f) == 1)
        .await
        .expect_err("cancelled");
    assert_eq!(err.fault(), Fault::Cancelled, "{err}");
    assert!(!h.fake.has_image("packbox/shell:5.2"));
    assert_eq!(h.fake.count(|c| matches!(c, Call::Pull(_))), 0);
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelling_an_environment_build_leaves_no_image_and_no_container() {
    // The install never ends; everything else (the probes too) runs as usual.
    let fake = engine_with(
        |spec| match spec.labels.get("packbox.kind").map(String::as_str) {
            Some("env-build") => Program {
                exit: Exit::Never,
                ..Program::default()
            },
            _ => Program::default(),
        },
    );
    let h = harness(fake, SettingsLayer::default());
    let packs = pack(
        "python",
        "a.py",
        "",
        &[("requirements.txt", "requests==2.31.0 # cancel test\n")],
    );
    let installing = |f: &FakeEngine| {
        f.running()
            .iter()
            .any(|name| name.starts_with("packbox-envbuild"))
    };
    let err = run_cancelled_when(&h, &packs, installing)
        .await
        .expect_err("cancelled");
    assert_eq!(err.fault(), Fault::Cancelled, "{err}");
    assert_eq!(h.fake.count(|c| matches!(c, Call::Commit(..))), 0);
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_oci_runtime_the_engine_lacks_is_an_input_error() {
    let mut layer = SettingsLayer::default();
    layer.sandbox.oci_runtime = Some("runsc".into());
    let h = harness(engine(Program::default()), layer);
    let packs = pack("shell", "a.sh", "", &[]);
    let err = run(&h, &plan_for(&h, &packs)).await.expect_err("refused");
    assert_eq!(err.fault(), Fault::Input);
    assert!(err.to_string().contains("runsc") && err.to_string().contains("runc"));
    assert!(action_creates(&h.fake).is_empty());
    h.executor.close().await;
}

fn memory_dropped() -> Vec<NotApplied> {
    vec![NotApplied {
        setting: "sandbox.memory",
        asked: "536870912 bytes, no swap".into(),
        applied: "no limit".into(),
    }]
}

#[tokio::test(start_paused = true)]
async fn a_setting_the_engine_did_not_apply_refuses_the_run_before_it_starts() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    h.fake.set_not_applied(memory_dropped());
    let packs = pack("shell", "a.sh", "", &[]);
    let err = run(&h, &plan_for(&h, &packs)).await.expect_err("refused");
    assert_eq!(err.fault(), Fault::Input);
    let text = err.to_string();
    assert!(text.contains("did not apply sandbox.memory"), "{text}");
    assert!(text.contains("--allow-weaker-sandbox"), "{text}");
    // Created, read back, removed; never attached or started.
    assert_eq!(action_creates(&h.fake).len(), 1);
    let creates = h.fake.count(|c| matches!(c, Call::Create { .. }));
    let probes = h.fake.count(|c| {
        matches!(c, Call::Create { spec, .. }
            if spec.labels.get("packbox.kind").map(String::as_str) == Some("probe"))
    });
    let attaches = h.fake.count(|c| matches!(c, Call::Attach(_)));
    assert_eq!(attaches, probes, "only the probes were attached");
    let removes = h.fake.count(|c| matches!(c, Call::Remove(_)));
    assert_eq!(removes, creates, "every container was removed");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn with_a_weaker_sandbox_allowed_a_dropped_setting_is_reported() {
    let mut layer = SettingsLayer::default();
    layer.sandbox.allow_weaker = Some(true);
    let h = harness(engine(Program::default()), layer);
    h.fake.set_not_applied(memory_dropped());
    let packs = pack("shell", "a.sh", "", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("runs");
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(
        outcome.sandbox.weaker_than_default,
        vec![
            "sandbox.memory = not applied by Docker 20.10.24 (rootful) (asked 536870912 bytes, no swap, applied no limit)"
                .to_string()
        ]
    );
    assert_eq!(
        outcome.sandbox.engine.as_ref().map(|e| e.version.as_str()),
        Some("20.10.24")
    );
    h.executor.close().await;
}

/// An engine offering runc and a gVisor registered as `scripts/ensure-docker` does.
fn with_gvisor(fake: &FakeEngine, runsc_path: &str) {
    fake.set_info(EngineInfo {
        server_version: "20.10.24".into(),
        oci_runtimes: vec![
            OciRuntime::named("runc"),
            OciRuntime {
                name: "runsc".into(),
                path: runsc_path.into(),
                args: vec!["--network=none".into(), "--oci-seccomp".into()],
            },
        ],
        cpus: 2,
        ..EngineInfo::default()
    });
}

#[tokio::test(start_paused = true)]
async fn a_strict_action_runs_under_gvisor_with_the_gvisor_profile_and_lower_limits() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    with_gvisor(&h.fake, "/usr/bin/runsc");
    let packs = pack("shell", "a.sh", "isolation: strict\n", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("runs");
    assert_eq!(outcome.status, Status::Succeeded);
    let creates = action_creates(&h.fake);
    assert_eq!(creates.len(), 1);
    let spec = &creates[0];
    assert_eq!(spec.oci_runtime.as_deref(), Some("runsc"));
    assert_eq!(spec.memory_bytes, 256 << 20);
    assert_eq!(spec.pids_limit, 128);
    let gvisor_profile = crate::sandbox::SeccompProfile::Packbox.engine_json(false, Kernel::Gvisor);
    assert_eq!(spec.seccomp_profile, gvisor_profile);
    assert_eq!(outcome.sandbox.isolation.level, IsolationLevel::Strict);
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_strict_action_on_a_runtime_that_is_not_gvisor_is_refused() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    with_gvisor(&h.fake, "/usr/bin/runc");
    let packs = pack("shell", "a.sh", "isolation: strict\n", &[]);
    let err = run(&h, &plan_for(&h, &packs))
        .await
        .expect_err("not gVisor");
    assert_eq!(err.fault(), Fault::Input);
    assert!(err.to_string().contains("needs gVisor"), "{err}");
    assert!(action_creates(&h.fake).is_empty());
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_standard_action_on_runc_gets_the_host_profile() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    with_gvisor(&h.fake, "/usr/bin/runsc");
    let packs = pack("shell", "a.sh", "", &[]);
    run(&h, &plan_for(&h, &packs)).await.expect("runs");
    let spec = &action_creates(&h.fake)[0];
    assert_eq!(spec.oci_runtime, None);
    assert_eq!(
        spec.seccomp_profile,
        crate::sandbox::SeccompProfile::Packbox.engine_json(false, Kernel::Host)
    );
    h.executor.close().await;
}

/// An engine offering runc (its default) and crun, as `scripts/ensure-docker` leaves it.
fn with_crun(fake: &FakeEngine) {
    fake.set_info(EngineInfo {
        server_version: "20.10.24".into(),
        oci_runtimes: vec![
            OciRuntime {
                name: "crun".into(),
                path: "/usr/bin/crun".into(),
                args: Vec::new(),
            },
            OciRuntime::named("runc"),
        ],
        default_runtime: "runc".into(),
        cpus: 2,
        ..EngineInfo::default()
    });
}

#[tokio::test(start_paused = true)]
async fn crun_is_preferred_where_the_engine_offers_it_unless_the_operator_names_one() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    with_crun(&h.fake);
    let packs = pack("shell", "a.sh", "", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("runs");
    assert_eq!(outcome.sandbox.oci_runtime.as_deref(), Some("crun"));
    assert_eq!(
        action_creates(&h.fake)[0].oci_runtime.as_deref(),
        Some("crun")
    );
    h.executor.close().await;

    let mut layer = SettingsLayer::default();
    layer.sandbox.oci_runtime = Some("runc".into());
    let h = harness(engine(Program::default()), layer);
    with_crun(&h.fake);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("runs");
    assert_eq!(outcome.sandbox.oci_runtime.as_deref(), Some("runc"));
    assert_eq!(
        action_creates(&h.fake)[0].oci_runtime.as_deref(),
        Some("runc")
    );
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn podman_gets_no_crun_but_packboxs_init_and_the_artifacts_folder() {
    // Podman's compat API ignores the runtime a container names (the read-back would refuse
    // the run); packbox's init runs the action there as on Docker, and offers the folder.
    let podman = FakeEngine::with_identity(crate::engine::EngineIdentity {
        name: crate::engine::EngineName::Podman,
        version: "4.3.1".into(),
        mode: crate::engine::EngineMode::Rootful,
    });
    let h = harness(
        with_runtimes(podman, |_| Program::default()),
        SettingsLayer::default(),
    );
    with_crun(&h.fake);
    let packs = pack("shell", "a.sh", "", &[]);
    let outcome = run(&h, &plan_for(&h, &packs)).await.expect("runs");
    assert_eq!(outcome.sandbox.oci_runtime, None);
    let created = action_creates(&h.fake);
    assert_eq!(created[0].oci_runtime, None);
    assert!(
        matches!(created[0].init, crate::engine::InitProcess::Packbox { .. }),
        "{:?}",
        created[0].init
    );
    assert!(
        created[0]
            .env
            .iter()
            .any(|(k, v)| k == "ATTUNE_ARTIFACTS_DIR" && v == "/tmp/artifacts"),
        "{:?}",
        created[0].env
    );
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn more_cpus_than_the_engine_has_is_an_input_error() {
    let mut layer = SettingsLayer::default();
    layer.sandbox.cpus = Some(4.0);
    let h = harness(engine(Program::default()), layer);
    h.fake.set_info(EngineInfo {
        server_version: "20.10.24".into(),
        oci_runtimes: vec![OciRuntime::named("runc")],
        cpus: 2,
        ..EngineInfo::default()
    });
    let packs = pack("shell", "a.sh", "", &[]);
    let err = run(&h, &plan_for(&h, &packs)).await.expect_err("refused");
    assert_eq!(err.fault(), Fault::Input);
    assert!(err.to_string().contains("only 2 CPUs"), "{err}");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn an_engine_error_mid_run_is_an_error_and_leaves_nothing() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let plan = plan_for(&h, &packs);
    run(&h, &plan).await.expect("the probes pass first");
    h.fake.fail(crate::engine::fake::Op::Output, 1);
    let err = run(&h, &plan).await.expect_err("reading output fails");
    assert_eq!(err.fault(), Fault::Engine);
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn gc_removes_unfinished_build_layers_but_nothing_in_use_or_tagged() {
    let fake = engine(Program::default());
    let dangling = fake.add_image("", &[("packbox.kind", "env")], 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let building = fake.add_image("", &[("packbox.kind", "env")], now - 60);
    let used = fake.add_image("", &[("packbox.kind", "runtime")], 0);
    fake.add_listed_container("user", &used, &[]);
    let foreign = fake.add_image("", &[("app", "web")], 0);
    let h = harness(fake, SettingsLayer::default());
    let report = h
        .executor
        .gc(
            2,
            std::time::Duration::from_secs(60),
            crate::executor::MIN_SUPERSEDED_AGE,
        )
        .await
        .expect("gc");
    assert_eq!(report.images, std::slice::from_ref(&dangling));
    assert!(!h.fake.has_image(&dangling));
    assert!(h.fake.has_image(&used), "in use: kept");
    assert!(h.fake.has_image(&building), "a build under way: kept");
    assert!(h.fake.has_image(&foreign), "not packbox's: untouched");
    assert!(h.fake.has_image("packbox/python:3.11"), "tagged: kept");
    h.executor.close().await;
}

/// A finished image whose tag a later build of the same product moved is removed once it is
/// ten minutes old, not after the hour an unfinished build's layers are given; a dangling image
/// of a product no tagged image carries keeps the longer wait.
#[tokio::test(start_paused = true)]
async fn gc_removes_images_a_later_build_of_the_same_product_superseded() {
    let fake = engine(Program::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let product = |created: &'static str| {
        [
            ("packbox.kind", "env"),
            ("packbox.key", "k1"),
            ("packbox.created", created),
        ]
    };
    let displaced = fake.add_image("packbox/env:k1", &product("earlier"), now - 900);
    let current = fake.add_image("packbox/env:k1", &product("later"), now - 800);
    let just_displaced = fake.add_image("", &product("moments ago"), now - 60);
    let other_product = fake.add_image(
        "",
        &[("packbox.kind", "env"), ("packbox.key", "k2")],
        now - 900,
    );
    let h = harness(fake, SettingsLayer::default());
    let report = h
        .executor
        .gc(
            2,
            std::time::Duration::from_secs(60),
            crate::executor::MIN_SUPERSEDED_AGE,
        )
        .await
        .expect("gc");
    assert_eq!(report.images, std::slice::from_ref(&displaced));
    assert!(h.fake.has_image(&current), "tagged: kept");
    assert!(
        h.fake.has_image(&just_displaced),
        "younger than ten minutes: kept"
    );
    assert!(
        h.fake.has_image(&other_product),
        "no later build of it: the hour's wait"
    );
    h.executor.close().await;
}

mod swarm_backend {
    use super::*;
    use crate::engine::fake::SwarmScript;

    /// The swarm backend, with the engine's syscall profile (allowed as weaker): services
    /// cannot carry packbox's.
    fn swarm_layer() -> SettingsLayer {
        let mut layer = SettingsLayer {
            backend: Some("swarm".into()),
            ..SettingsLayer::default()
        };
        layer.sandbox.seccomp = Some("engine-default".into());
        layer.sandbox.allow_weaker = Some(true);
        layer
    }

    #[tokio::test(start_paused = true)]
    async fn a_swarm_run_has_the_same_outcome_contract_and_says_where_it_ran() {
        let h = harness(engine(Program::default()), swarm_layer());
        h.fake
            .set_service_program(|_| Program::prints("{\"ok\": true}\n", 0));
        let packs = pack("shell", "a.sh", "output_format: json\n", &[]);
        let outcome = run(&h, &plan_for(&h, &packs)).await.expect("run");
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(outcome.result, Some(serde_json::json!({"ok": true})));
        assert_eq!(outcome.sandbox.backend, "swarm");
        assert!(!outcome.sandbox.applied_as.is_empty());
        assert!(
            action_creates(&h.fake).is_empty(),
            "no container ran the action"
        );
        h.executor.close().await;
        assert!(h.fake.swarm_objects().is_empty());
        assert!(h.fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_swarm_timeout_is_status_timeout() {
        let h = harness(engine(Program::default()), swarm_layer());
        h.fake.set_service_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let packs = pack("shell", "a.sh", "timeout_seconds: 5\n", &[]);
        let outcome = run(&h, &plan_for(&h, &packs)).await.expect("an outcome");
        assert_eq!(outcome.status, Status::Timeout);
        assert_eq!(outcome.status.exit_code(), 124);
        h.executor.close().await;
        assert!(h.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn swarm_settings_errors_are_input_errors_and_an_idle_engine_an_engine_error() {
        let mut layer = swarm_layer();
        layer.registry = None;
        let h = harness(engine(Program::default()), layer);
        h.fake.set_swarm(SwarmScript {
            state: crate::engine::swarm::SwarmState {
                active: true,
                manager: true,
                nodes: 2,
            },
            ..SwarmScript::default()
        });
        let packs = pack("shell", "a.sh", "", &[]);
        let err = run(&h, &plan_for(&h, &packs))
            .await
            .expect_err("registry needed");
        assert_eq!(err.fault(), Fault::Input, "{err}");
        h.executor.close().await;

        let h = harness(engine(Program::default()), swarm_layer());
        h.fake.set_swarm(SwarmScript {
            state: crate::engine::swarm::SwarmState::default(),
            ..SwarmScript::default()
        });
        let err = run(&h, &plan_for(&h, &packs)).await.expect_err("no swarm");
        assert_eq!(err.fault(), Fault::Engine, "{err}");
        assert!(err.hint().is_some_and(|h| h.contains("docker swarm init")));
        h.executor.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_warm_pool_does_not_apply_to_swarm_runs() {
        let h = harness(engine(Program::default()), swarm_layer());
        let executor = Executor::start(
            h.settings.clone(),
            Catalog::builtin().expect("catalog"),
            h.fake.clone(),
        )
        .with_warm_pool(2);
        let packs = pack("shell", "a.sh", "", &[]);
        executor
            .run(&plan_for(&h, &packs), |_| {})
            .await
            .expect("run");
        assert_eq!(executor.idle_warm_containers(), 0);
        executor.close().await;
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn cancelling_one_run_stops_it_alone() {
    // Runs of `slow.sh` never end by themselves; the others print and exit.
    let fake = engine_with(|spec| {
        if spec.cmd.iter().any(|arg| arg.ends_with("slow.sh")) {
            Program {
                exit: Exit::Never,
                ..Program::default()
            }
        } else {
            Program::prints("quick\n", 0)
        }
    });
    let h = harness(fake, SettingsLayer::default());
    let slow = pack("shell", "slow.sh", "", &[]);
    let quick = pack("shell", "a.sh", "", &[]);
    let (slow_plan, quick_plan) = (plan_for(&h, &slow), plan_for(&h, &quick));
    let cancel = CancellationToken::new();
    let slow_run = h.executor.run_with_cancel(&slow_plan, &cancel, |_| {});
    let cancelling = async {
        h.fake
            .until(|f| f.running().iter().any(|n| !n.starts_with("packbox-probe")))
            .await;
        cancel.cancel();
    };
    let (slow_outcome, ()) = tokio::join!(slow_run, cancelling);
    let slow_outcome = slow_outcome.expect("an outcome");
    assert_eq!(slow_outcome.status, Status::Cancelled);
    assert_eq!(
        slow_outcome.error.as_deref(),
        Some("Execution was cancelled")
    );
    let quick_outcome = run(&h, &quick_plan).await.expect("the executor still runs");
    assert_eq!(quick_outcome.status, Status::Succeeded);
    assert_eq!(quick_outcome.stdout, "quick\n");
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_before_its_container_starts_leaves_nothing() {
    let fake = FakeEngine::new();
    fake.add_image("packbox/shell:5.2", &[], 0);
    // Probes never answer: the run is still preparing when it is cancelled.
    fake.set_program(|_| Program {
        exit: Exit::Never,
        ..Program::default()
    });
    let h = harness(fake, SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let plan = plan_for(&h, &packs);
    let cancel = CancellationToken::new();
    let running = h.executor.run_with_cancel(&plan, &cancel, |_| {});
    let cancelling = async {
        h.fake.until(|f| !f.running().is_empty()).await;
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(running, cancelling);
    let err = result.expect_err("cancelled");
    assert_eq!(err.fault(), Fault::Cancelled, "{err}");
    h.executor.close().await;
    assert!(h.fake.container_ids().is_empty());
    assert!(
        action_creates(&h.fake).is_empty(),
        "the action never started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_token_after_the_run_changes_nothing() {
    let h = harness(engine(Program::prints("ok\n", 0)), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let cancel = CancellationToken::new();
    let outcome = h
        .executor
        .run_with_cancel(&plan_for(&h, &packs), &cancel, |_| {})
        .await
        .expect("run");
    assert_eq!(outcome.status, Status::Succeeded);
    cancel.cancel();
    let again = run(&h, &plan_for(&h, &packs)).await.expect("run");
    assert_eq!(again.status, Status::Succeeded);
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn the_started_event_names_the_outcomes_exec_id_before_any_output() {
    let h = harness(engine(Program::prints("hi\n", 0)), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let mut seen = Vec::new();
    let outcome = h
        .executor
        .run(&plan_for(&h, &packs), |event| match event {
            RunEvent::Started { exec_id } => seen.push(format!("started {exec_id}")),
            RunEvent::Output { bytes, .. } => {
                seen.push(format!("output {}", String::from_utf8_lossy(bytes)))
            }
            RunEvent::Prepare(_) => {}
        })
        .await
        .expect("run");
    assert_eq!(
        seen,
        [
            format!("started {}", outcome.exec_id),
            "output hi\n".to_string()
        ]
    );
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn the_outcome_names_the_pack_version_and_content() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "", &[]);
    let first = run(&h, &plan_for(&h, &packs)).await.expect("run");
    assert_eq!(first.pack_version, "1.0.0");
    assert_eq!(first.pack_digest.len(), 64);
    std::fs::write(packs.path().join("p/actions/a.sh"), "echo changed\n").expect("edit");
    let second = run(&h, &plan_for(&h, &packs)).await.expect("run");
    assert_ne!(first.pack_digest, second.pack_digest, "the content changed");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn json_parameters_and_secrets_are_checked_delivered_and_scrubbed() {
    let h = harness(
        engine(Program {
            delay: Duration::from_secs(1),
            ..Program::prints("token is s3cr3t-json\n", 0)
        }),
        SettingsLayer::default(),
    );
    let packs = pack(
        "shell",
        "a.sh",
        "parameters:\n  count: {type: integer, required: true}\n",
        &[],
    );
    let catalog = Catalog::builtin().expect("catalog");
    let mut request = RunRequest::new(packs.path(), "p.a");
    request.param_values = serde_json::json!({"count": "three"})
        .as_object()
        .cloned()
        .expect("object");
    let err = plan(&h.settings, &catalog, &request).expect_err("a string is no integer");
    assert!(err.to_string().contains("`count`"), "{err}");
    request.param_values = serde_json::json!({"count": 3})
        .as_object()
        .cloned()
        .expect("object");
    request.secret_values = serde_json::json!({"token": "s3cr3t-json"})
        .as_object()
        .cloned()
        .expect("object");
    let plan = plan(&h.settings, &catalog, &request).expect("plan");
    let running = run(&h, &plan);
    let delivered = async {
        h.fake
            .until(|f| {
                f.container_ids().iter().any(|id| {
                    let stdin = String::from_utf8_lossy(&f.stdin_of(id)).into_owned();
                    stdin.contains(r#""count":3"#) && stdin.contains("s3cr3t-json")
                })
            })
            .await;
    };
    let (outcome, ()) = tokio::join!(running, delivered);
    assert_eq!(outcome.expect("run").stdout, "token is ***\n", "scrubbed");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_capped_timeout_wins_over_the_actions_own() {
    let never = Program {
        exit: Exit::Never,
        ..Program::default()
    };
    let h = harness(engine(never), SettingsLayer::default());
    let packs = pack("shell", "a.sh", "timeout_seconds: 600\n", &[]);
    let mut plan = plan_for(&h, &packs);
    plan.limit_timeout(Duration::from_secs(5));
    assert_eq!(plan.timeout(), Duration::from_secs(5));
    let outcome = run(&h, &plan).await.expect("an outcome");
    assert_eq!(
        outcome.error.as_deref(),
        Some("Execution timed out after 5 seconds")
    );
    plan.limit_timeout(Duration::from_secs(3600));
    assert_eq!(plan.timeout(), Duration::from_secs(5), "a cap only lowers");
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn ping_asks_the_engine_every_time() {
    let h = harness(engine(Program::default()), SettingsLayer::default());
    h.executor.ping().await.expect("answers");
    h.fake.fail(crate::engine::fake::Op::Info, 1);
    let err = h.executor.ping().await.expect_err("no answer");
    assert_eq!(err.fault(), Fault::Engine);
    h.executor.ping().await.expect("answers again");
    assert_eq!(h.fake.count(|c| matches!(c, Call::Info)), 3);
    h.executor.close().await;
}

#[tokio::test(start_paused = true)]
async fn runs_can_be_spawned_as_tasks() {
    // A server runs each execution on its own task: the run's future must be Send.
    let h = harness(engine(Program::prints("ok\n", 0)), SettingsLayer::default());
    let packs = pack("python", "a.py", "", &[]);
    let plan = plan_for(&h, &packs);
    let executor = Arc::new(h.executor);
    let spawned = {
        let executor = Arc::clone(&executor);
        tokio::spawn(async move { executor.run(&plan, |_| {}).await })
    };
    let outcome = spawned.await.expect("joined").expect("run");
    assert_eq!(outcome.status, Status::Succeeded);
    executor.close().await;
}

mod warm_pool {
    use super::*;

    fn pooled(h: Harness) -> Harness {
        let executor = Executor::start(
            h.settings.clone(),
            Catalog::builtin().expect("catalog"),
            h.fake.clone(),
        )
        .with_warm_pool(1);
        Harness { executor, ..h }
    }

    async fn refilled(h: &Harness) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while h.executor.idle_warm_containers() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the pool refills");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_run_gets_a_pre_started_container_and_the_pool_refills() {
        let h = pooled(harness(
            engine(Program::prints("ran\n", 0)),
            SettingsLayer::default(),
        ));
        let packs = pack("shell", "a.sh", "", &[]);
        let plan = plan_for(&h, &packs);
        let first = run(&h, &plan).await.expect("cold run");
        assert_eq!(first.stdout, "ran\n");
        assert!(
            action_creates(&h.fake)
                .iter()
                .all(|spec| spec.image.starts_with("sha256:")),
            "containers start from the verified id, never a tag"
        );
        refilled(&h).await;
        let creates_before = action_creates(&h.fake).len();
        let second = run(&h, &plan).await.expect("warm run");
        assert_eq!(second.stdout, "ran\n", "the action ran after the go-line");
        let created_for_second = action_creates(&h.fake)
            .iter()
            .take(creates_before)
            .any(|spec| spec.labels["packbox.exec_id"] == second.exec_id);
        assert!(
            created_for_second,
            "the second run's container was made before it"
        );
        refilled(&h).await;
        assert_eq!(h.executor.idle_warm_containers(), 1);
        assert_eq!(
            h.executor.warm_kinds(),
            [WarmKind {
                action: "p.a".into(),
                // Shown by its tag; the container started from the id its probe verified.
                image: "packbox/shell:5.2".into(),
                idle: 1
            }]
        );
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty(), "close removes the pool");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pooled_container_waits_for_the_go_line() {
        let h = pooled(harness(
            engine(Program::prints("ran\n", 0)),
            SettingsLayer::default(),
        ));
        let packs = pack("shell", "a.sh", "", &[]);
        let plan = plan_for(&h, &packs);
        run(&h, &plan).await.expect("cold run");
        refilled(&h).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(h.fake.running().len(), 1, "still waiting, an hour later");
        let spec = action_creates(&h.fake)
            .last()
            .cloned()
            .expect("pooled spec");
        assert_eq!(spec.cmd[3], "packbox-warm");
        h.executor.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_pooled_container_is_replaced_by_a_fresh_one() {
        let h = pooled(harness(
            engine(Program::prints("ran\n", 0)),
            SettingsLayer::default(),
        ));
        let packs = pack("shell", "a.sh", "", &[]);
        let plan = plan_for(&h, &packs);
        run(&h, &plan).await.expect("cold run");
        refilled(&h).await;
        // The run's own container goes in the background; then only the pooled one is left.
        h.fake.until(|f| f.container_ids().len() == 1).await;
        // The pooled container dies before its run (OOM, killed by someone).
        let ids = h.fake.container_ids();
        h.fake.kill(&ids[0], Signal::Kill).await.expect("kill");
        h.fake.until(|f| f.running().is_empty()).await;
        let outcome = run(&h, &plan).await.expect("run");
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(outcome.stdout, "ran\n");
        assert!(
            !h.fake.container_ids().contains(&ids[0]),
            "the broken one is gone"
        );
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn runs_of_another_kind_do_not_take_a_pooled_container() {
        let h = pooled(harness(
            engine(Program::default()),
            SettingsLayer::default(),
        ));
        let shell = pack("shell", "a.sh", "", &[]);
        let python = pack("python", "a.py", "", &[]);
        run(&h, &plan_for(&h, &shell)).await.expect("shell run");
        refilled(&h).await;
        let outcome = run(&h, &plan_for(&h, &python)).await.expect("python run");
        assert_eq!(outcome.image, "packbox/python:3.11");
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }

    fn sized(h: Harness, per_kind: usize, total: usize) -> Harness {
        let executor = Executor::start(
            h.settings.clone(),
            Catalog::builtin().expect("catalog"),
            h.fake.clone(),
        )
        .with_warm_pool_sized(WarmSettings {
            per_kind,
            total,
            idle: Duration::from_secs(600),
            preload: false,
        });
        Harness { executor, ..h }
    }

    async fn settled(h: &Harness, idle: usize) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while h.executor.idle_warm_containers() != idle {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the pool never held {idle} (holds {})",
                h.executor.idle_warm_containers()
            )
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_kind_keeps_as_many_ready_as_it_recently_ran_at_once_up_to_its_limit() {
        let h = sized(
            harness(
                engine(Program {
                    delay: Duration::from_secs(1),
                    ..Program::prints("ran\n", 0)
                }),
                SettingsLayer::default(),
            ),
            3,
            100,
        );
        let packs = pack("shell", "a.sh", "", &[]);
        let plan = plan_for(&h, &packs);
        run(&h, &plan).await.expect("a first run");
        settled(&h, 1).await;
        // Five at once: the kind's demand is five, its limit three.
        let runs: Vec<_> = (0..5).map(|_| run(&h, &plan)).collect();
        for outcome in futures::future::join_all(runs).await {
            assert_eq!(outcome.expect("run").status, Status::Succeeded);
        }
        settled(&h, 3).await;
        // A minute later one at a time is the demand: trimming keeps one.
        tokio::time::sleep(crate::lifecycle::pool::DEMAND_WINDOW + Duration::from_secs(1)).await;
        run(&h, &plan).await.expect("a later run");
        h.executor.trim_warm_pool().await;
        settled(&h, 1).await;
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }

    /// A pool of up to four per kind on an engine whose starts take 150 ms, for actions
    /// that take 50 ms.
    fn paced() -> Harness {
        let fake = engine(Program {
            delay: Duration::from_millis(50),
            ..Program::prints("ran\n", 0)
        });
        fake.set_start_delay(Duration::from_millis(150));
        sized(harness(fake, SettingsLayer::default()), 4, 16)
    }

    /// How long one run of `plan` takes, and that it succeeded.
    async fn timed(h: &Harness, plan: &RunPlan) -> Duration {
        let began = tokio::time::Instant::now();
        let outcome = run(h, plan).await.expect("run");
        assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
        began.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_takes_the_container_already_starting_for_its_kind() {
        let h = paced();
        let packs = pack("shell", "a.sh", "", &[]);
        let plan = plan_for(&h, &packs);
        timed(&h, &plan).await;
        settled(&h, 1).await;
        // This run takes the idle container, and its replacement starts (ready in 150 ms).
        assert_eq!(timed(&h, &plan).await, Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The next finds none idle 100 ms into that start: it takes the starting one, ready
        // in 50 ms (its own would take 150 ms).
        assert_eq!(
            timed(&h, &plan).await,
            Duration::from_millis(100),
            "50 ms of start left + 50 ms of run"
        );
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn runs_one_after_another_get_warm_containers_once_the_kind_is_known() {
        let h = paced();
        let packs = pack("shell", "a.sh", "", &[]);
        let plan = plan_for(&h, &packs);
        let mut took = Vec::new();
        for _ in 0..40 {
            took.push(timed(&h, &plan).await);
        }
        // After a few runs, each finds a container ready: it costs the action alone.
        let warm = Duration::from_millis(50);
        assert!(
            took[..5].iter().any(|t| *t > warm),
            "the first runs waited: {took:?}"
        );
        assert!(took[8..].iter().all(|t| *t == warm), "{took:?}");
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_and_steady_concurrency_get_warm_containers_once_the_kind_is_known() {
        for concurrency in [1usize, 4, 8] {
            let h = paced();
            let packs = pack("shell", "a.sh", "", &[]);
            let plan = plan_for(&h, &packs);
            // Bursts of `concurrency` runs every 400 ms: the pool keeps what a burst takes
            // (its peak) ready for the next one, within its limit of four.
            let mut last = Vec::new();
            for _ in 0..6 {
                let burst: Vec<_> = (0..concurrency).map(|_| timed(&h, &plan)).collect();
                last = futures::future::join_all(burst).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let warm = Duration::from_millis(50);
            let ready = last.iter().filter(|t| **t == warm).count();
            assert_eq!(ready, concurrency.min(4), "c{concurrency}: {last:?}");
            // The rest took the containers already starting for them: ready no later than
            // a start of their own (150 ms) would be.
            assert!(
                last.iter().all(|t| *t <= Duration::from_millis(200)),
                "c{concurrency}: {last:?}"
            );
            h.executor.close().await;
            assert!(h.fake.container_ids().is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_rate_at_concurrency_one_four_and_eight_gets_warm_containers() {
        for concurrency in [1u32, 4, 8] {
            let fake = engine(Program {
                delay: Duration::from_millis(50),
                ..Program::prints("ran\n", 0)
            });
            fake.set_start_delay(Duration::from_millis(150));
            let h = sized(harness(fake, SettingsLayer::default()), 8, 16);
            let packs = pack("shell", "a.sh", "", &[]);
            let plan = plan_for(&h, &packs);
            // `concurrency` clients, each asking for a run every 300 ms, spread evenly.
            let period = Duration::from_millis(300);
            let clients = (0..concurrency).map(|client| {
                let (h, plan) = (&h, &plan);
                async move {
                    tokio::time::sleep(period * client / concurrency).await;
                    let mut took = Vec::new();
                    for _ in 0..12 {
                        let next = tokio::time::Instant::now() + period;
                        took.push(timed(h, plan).await);
                        tokio::time::sleep_until(next).await;
                    }
                    took
                }
            });
            let took = futures::future::join_all(clients).await;
            // Once the kind's rate is known (a second or so), every run finds one ready.
            for runs in &took {
                assert!(
                    runs[5..].iter().all(|t| *t == Duration::from_millis(50)),
                    "c{concurrency}: {took:?}"
                );
            }
            h.executor.close().await;
            assert!(h.fake.container_ids().is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pools_total_holds_across_kinds() {
        let h = sized(
            harness(engine(Program::default()), SettingsLayer::default()),
            2,
            2,
        );
        for (runner, entry, held) in [
            ("shell", "a.sh", 1),
            ("python", "a.py", 2),
            ("node", "a.js", 2),
        ] {
            let packs = pack(runner, entry, "", &[]);
            run(&h, &plan_for(&h, &packs)).await.expect("run");
            settled(&h, held).await;
        }
        let kinds = h.executor.warm_kinds();
        assert!(
            kinds.iter().all(|k| !k.image.starts_with("packbox/node")),
            "{kinds:?}"
        );
        h.executor.close().await;
        assert!(h.fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_kind_nobody_runs_loses_its_containers_after_the_idle_time() {
        let h = sized(
            harness(engine(Program::default()), SettingsLayer::default()),
            2,
            10,
        );
        let packs = pack("shell", "a.sh", "", &[]);
        run(&h, &plan_for(&h, &packs)).await.expect("run");
        settled(&h, 1).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        h.executor.trim_warm_pool().await;
        assert_eq!(h.executor.idle_warm_containers(), 1, "not idle long enough");
        tokio::time::sleep(Duration::from_secs(301)).await;
        h.executor.trim_warm_pool().await;
        assert_eq!(h.executor.idle_warm_containers(), 0);
        assert!(
            h.fake.container_ids().is_empty(),
            "the trimmed container was removed"
        );
        h.executor.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn preloading_starts_the_interpreter_ahead_only_where_the_runtime_can() {
        let h = harness(engine(Program::default()), SettingsLayer::default());
        let (settings, fake) = (h.settings.clone(), h.fake.clone());
        let executor = Executor::start(
            settings.clone(),
            Catalog::builtin().expect("catalog"),
            fake.clone(),
        )
        .with_warm_pool_sized(WarmSettings {
            per_kind: 1,
            total: 10,
            idle: Duration::from_secs(600),
            preload: true,
        });
        let catalog = Catalog::builtin().expect("catalog");
        for (runner, entry, extra, preloaded) in [
            ("python", "a.py", "", true),
            ("node", "a.js", "", true),
            ("shell", "a.sh", "", false),
            ("python", "a.py", "parameter_delivery: file\n", false),
        ] {
            let packs = pack(runner, entry, extra, &[]);
            let plan =
                plan(&settings, &catalog, &RunRequest::new(packs.path(), "p.a")).expect("plan");
            let outcome = executor.run(&plan, |_| {}).await.expect("run");
            assert_eq!(outcome.status, Status::Succeeded);
            let spec = action_creates(&fake).pop().expect("a run container");
            let entry_point = format!("/pack/actions/{entry}");
            assert_eq!(spec.cmd.last(), Some(&entry_point), "{:?}", spec.cmd);
            if preloaded {
                assert!(spec.cmd[..3].contains(&"-c".to_string()) || spec.cmd[1] == "-e");
                assert!(
                    !spec.cmd.contains(&"packbox-warm".to_string()),
                    "{:?}",
                    spec.cmd
                );
            } else {
                assert!(
                    spec.cmd.contains(&"packbox-warm".to_string()),
                    "{:?}",
                    spec.cmd
                );
            }
        }
        executor.close().await;
        h.executor.close().await;
        assert!(fake.container_ids().is_empty());
    }
}
