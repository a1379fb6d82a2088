//! Go actions against the real engine: compiled into their environment image when it is built
//! (the run's `/tmp` stays noexec and its root read-only), run with the stdin document like every
//! runtime; a pack that is one Go module with its own package and a vendored module; an edit of
//! the source rebuilds; a compile error names the pack, the file and the compiler's words and
//! leaves nothing behind. One test: the Go runtime image is built on first use (on_demand), once.

mod common;

use std::path::PathBuf;

use common::*;
use packbox::{Catalog, Executor, RunRequest, Status};

fn go_packs() -> PathBuf {
    repo_root().join("tests/fixtures/golang")
}

/// The environment image a `packbox run --json` outcome names.
fn image_of(run: &Finished) -> String {
    run.json()["image"].as_str().unwrap_or_default().to_string()
}

#[test]
fn go_actions_are_compiled_at_build_time_rebuilt_on_edit_and_a_compile_error_leaves_nothing() {
    require_engine();

    // Upstream's shape: a .go entry point, no go.mod, the standard library only.
    let hello = run_json(
        &go_packs(),
        "gosolo.hello",
        &["-p", "name=Ada", "-p", "times=2"],
    );
    assert_eq!(hello.code(), 0, "{}", hello.stderr());
    let outcome = hello.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["runtime"], "go");
    assert_eq!(
        outcome["result"]["greeting"], "hello Ada hello Ada ",
        "{outcome}"
    );
    assert_eq!(outcome["result"]["action"], "gosolo.hello");
    assert_eq!(outcome["result"]["args"], serde_json::json!([]));
    // The binary baked into the image ran, from its read-only root.
    assert_eq!(
        outcome["result"]["exe"], "/opt/packbox/go/bin/hello.go",
        "{outcome}"
    );
    assert_eq!(outcome["sandbox"]["read_only_root"], true);
    let built = image_of(&hello);
    assert!(built.starts_with("packbox/env:go-1."), "{built}");

    // Pooled: a container started ahead waits for the go-line, then runs the baked binary.
    warm_runs_take_a_container_started_ahead();

    // A pack that is one Go module: the action imports the pack's own package and a module
    // the pack vendors; nothing is downloaded (the build is granted nothing).
    let shout = run_json(&go_packs(), "gomod.shout", &["-p", "name=Ada"]);
    assert_eq!(shout.code(), 0, "{}", shout.stderr());
    assert_eq!(
        shout.json()["result"]["message"],
        "HELLO ADA!",
        "{}",
        shout.stdout()
    );

    // Editing the source makes another environment, holding the edited program.
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&go_packs().join("gosolo"), dir.path());
    let source = pack.join("actions/hello.go");
    let text = std::fs::read_to_string(&source).expect("read the source");
    std::fs::write(&source, text.replace("\"hello \"", "\"bonjour \"")).expect("edit");
    let edited = run_json(dir.path(), "gosolo.hello", &["-p", "name=Ada"]);
    assert_eq!(edited.code(), 0, "{}", edited.stderr());
    assert_eq!(edited.json()["result"]["greeting"], "bonjour Ada ");
    assert_ne!(image_of(&edited), built, "the edit changed the key");

    // A compile error: one build failure naming the pack, the file and the compiler's message,
    // with no container and no image left.
    std::fs::write(&source, text.replace("strings.Repeat(", "strings.Repeet(")).expect("break");
    let broken = run_json(dir.path(), "gosolo.hello", &["-p", "name=Ada"]);
    let stderr = broken.stderr();
    assert_ne!(broken.code(), 0, "{stderr}");
    assert_eq!(broken.json()["status"], "error", "{}", broken.stdout());
    for said in [
        "go build actions/hello.go (pack gosolo)",
        "actions/hello.go:",
        "undefined: strings.Repeet",
    ] {
        assert!(stderr.contains(said), "{said} in {stderr}");
    }
    let tag = stderr
        .split_whitespace()
        .find(|w| w.starts_with("packbox/env:go-"))
        .expect("the error names the environment")
        .to_string();
    assert!(!image_exists(&tag), "{tag} was left behind");
    assert!(
        containers_of(broken.pid).is_empty(),
        "a build container was left"
    );
}

/// Two runs of `gosolo.hello` through an executor with a warm pool of one: the second starts in
/// a container created before it was asked for, and both keep the contract.
fn warm_runs_take_a_container_started_ahead() {
    let settings = settings();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let catalog = Catalog::builtin().expect("catalog");
        let mut request = RunRequest::new(go_packs(), "gosolo.hello");
        request.params = vec!["name=Bo".into()];
        let plan = packbox::plan(&settings, &catalog, &request).expect("plan");
        let executor = Executor::connect(settings.clone(), catalog.clone())
            .await
            .expect("engine")
            .with_warm_pool(1);
        for n in 0..2 {
            if n > 0 {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while executor.idle_warm_containers() == 0 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the pool never filled"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            let asked = unix_now_ns();
            let outcome = executor.run(&plan, |_| {}).await.expect("run");
            assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
            let result = outcome.result.expect("a JSON result");
            assert_eq!(result["greeting"], "hello Bo ");
            if n > 0 {
                let created: u128 = engine_events(
                    unix_now() - 120,
                    &[
                        "type=container".to_string(),
                        "event=create".to_string(),
                        format!("label=packbox.exec_id={}", outcome.exec_id),
                    ],
                    "{{.TimeNano}}",
                )
                .first()
                .and_then(|t| t.parse().ok())
                .unwrap_or(u128::MAX);
                assert!(
                    created < asked,
                    "the warm run used a container started ahead"
                );
            }
        }
        executor.close().await;
    });
    assert!(
        containers_of(std::process::id()).is_empty(),
        "close removes the pool"
    );
}

fn unix_now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
