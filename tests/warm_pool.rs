//! The warm pool of a long-lived executor: pre-started containers run one action each, with the
//! same contract as cold runs; the action starts only at the handoff; `close` leaves nothing.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use packbox::{Catalog, Executor, RunRequest, Status};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_runs_keep_the_contract_and_close_leaves_nothing() {
    require_engine();
    let catalog = Catalog::builtin().expect("catalog");
    let settings = settings();
    let plan = |n: u32| {
        let mut request = RunRequest::new(repo_root().join("tests/fixtures"), "bench.clock");
        request.params = vec![format!("n={n}")];
        packbox::plan(&settings, &catalog, &request).expect("plan")
    };
    let executor = Executor::connect(settings.clone(), catalog.clone())
        .await
        .expect("engine")
        .with_warm_pool(1);

    let mut exec_ids = Vec::new();
    for n in 0..4 {
        if n > 0 {
            // Later runs are warm: wait (bounded) until the pool holds the next container.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while executor.idle_warm_containers() == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pool never refilled"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let handed_over = now_ns();
        let outcome = executor.run(&plan(n), |_| {}).await.expect("run");
        assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
        let result = outcome.result.expect("JSON result");
        assert_eq!(result["n"], n, "each run gets its own parameters");
        assert_eq!(result["exec_id"], outcome.exec_id.as_str());
        assert_eq!(result["attune_exec_id"], outcome.attune_exec_id);
        let started = result["started_ns"].as_u64().map(u128::from).unwrap_or(0);
        assert!(
            started >= handed_over,
            "run {n}: the action started before the run was asked for"
        );
        if n > 0 {
            let created = engine_events(
                unix_now() - 60,
                &[
                    "type=container".to_string(),
                    "event=create".to_string(),
                    format!("label=packbox.exec_id={}", outcome.exec_id),
                ],
                "{{.TimeNano}}",
            );
            let created: u128 = created
                .first()
                .and_then(|t| t.parse().ok())
                .unwrap_or(u128::MAX);
            assert!(
                created < handed_over,
                "run {n} used a pre-started container"
            );
        }
        exec_ids.push(outcome.exec_id);
    }
    exec_ids.sort();
    exec_ids.dedup();
    assert_eq!(
        exec_ids.len(),
        4,
        "every run has its own container and exec id"
    );

    let pid = std::process::id();
    assert!(
        !containers_of(pid).is_empty(),
        "a container waits in the pool"
    );
    executor.close().await;
    assert!(containers_of(pid).is_empty(), "close removes the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloading_makes_the_leading_imports_ahead_of_the_run_and_no_others() {
    require_engine();
    let catalog = Catalog::builtin().expect("catalog");
    let settings = settings();
    let mut warm = settings.serve.warm;
    (warm.per_kind, warm.total, warm.preload) = (1, 4, true);
    let cold_executor = Executor::connect(settings.clone(), catalog.clone())
        .await
        .expect("engine");
    let executor = Executor::connect(settings.clone(), catalog.clone())
        .await
        .expect("engine")
        .with_warm_pool_sized(warm);
    for action in ["warm.imports", "warm.requires"] {
        let request = RunRequest::new(repo_root().join("tests/fixtures"), action);
        let plan = packbox::plan(&settings, &catalog, &request).expect("plan");
        // Without a pool, the interpreter starts at the run: nothing is imported ahead.
        let cold = cold_executor.run(&plan, |_| {}).await.expect("run");
        assert_eq!(cold.status, Status::Succeeded, "{:?}", cold.stderr);
        let cold = cold.result.expect("JSON result");
        assert_eq!(cold["early_ahead"], false, "{action}: {cold}");
        assert_eq!(cold["late_ahead"], false, "{action}: {cold}");
        // The pooled executor's first run starts its own container; then one waits for the next.
        executor.run(&plan, |_| {}).await.expect("run");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while executor.idle_warm_containers() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never refilled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let warm = executor.run(&plan, |_| {}).await.expect("run");
        assert_eq!(warm.status, Status::Succeeded, "{:?}", warm.stderr);
        let warm = warm.result.expect("JSON result");
        assert_eq!(warm["early_ahead"], true, "{action}: {warm}");
        assert_eq!(warm["late_ahead"], false, "{action}: {warm}");
    }
    cold_executor.close().await;
    executor.close().await;
    assert!(containers_of(std::process::id()).is_empty());
}
