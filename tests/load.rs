//! Load through the library API: 200 runs at concurrency 8 on one executor. Every outcome comes
//! back exactly once, nothing is left on the engine, and packbox's memory stays bounded.

mod common;

use std::collections::BTreeSet;

use common::*;
use futures::StreamExt;
use packbox::{Catalog, Executor, RunRequest, Status};

const RUNS: usize = 200;
const CONCURRENCY: usize = 8;

/// Peak resident memory of this process so far, in KiB (VmHWM).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_runs_at_concurrency_eight() {
    require_engine();
    let catalog = Catalog::builtin().expect("catalog");
    let settings = settings();
    let plans: Vec<_> = (0..RUNS)
        .map(|n| {
            let mut request = RunRequest::new(repo_root().join("tests/fixtures"), "bench.echo");
            request.params = vec![format!("n={n}")];
            packbox::plan(&settings, &catalog, &request).expect("a valid plan")
        })
        .collect();
    let executor = Executor::connect(settings, catalog).await.expect("engine");
    let before = peak_rss_kib();

    let outcomes: Vec<_> = futures::stream::iter(plans.iter())
        .map(|plan| executor.run(plan, |_| {}))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    assert_eq!(outcomes.len(), RUNS);
    let mut seen = BTreeSet::new();
    let mut exec_ids = BTreeSet::new();
    for outcome in outcomes {
        let outcome = outcome.expect("every run happens");
        assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
        let n = outcome
            .result
            .as_ref()
            .and_then(|r| r["n"].as_u64())
            .expect("n echoed");
        assert!(seen.insert(n), "outcome for n={n} came back twice");
        assert!(
            exec_ids.insert(outcome.exec_id.clone()),
            "duplicate exec id"
        );
    }
    assert_eq!(seen, (0..RUNS as u64).collect::<BTreeSet<_>>(), "none lost");
    executor.close().await;
    let left = containers_of(std::process::id());
    assert!(left.is_empty(), "containers left behind: {left:?}");

    let peak = peak_rss_kib();
    println!(
        "peak RSS: {} MiB before the runs, {} MiB after {RUNS} runs",
        before / 1024,
        peak / 1024
    );
    // Generous: the point is that it does not grow with the number of runs.
    assert!(peak < 256 * 1024, "peak RSS {} MiB", peak / 1024);
}
