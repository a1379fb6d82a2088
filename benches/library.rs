//! Library figures, side by side with the docker CLI in the same run (`cargo bench`):
//! warm run latency of a trivial action, and throughput of 100 runs at concurrency 4.
//! Writes bench/library.md. Needs the engine and the runtime images (scripts/build-images).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use packbox::{Catalog, Executor, RunRequest, Settings, Status};

const LATENCY_RUNS: usize = 20;
const THROUGHPUT_RUNS: usize = 100;
const CONCURRENCY: usize = 4;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn docker_run(pack: &str) -> bool {
    let mut child = match Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "-v",
            pack,
            "-w",
            "/pack",
            "packbox/shell:5.2",
            "bash",
            "/pack/actions/noop.sh",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return false,
    };
    drop(child.stdin.take());
    child.wait().map(|s| s.success()).unwrap_or(false)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures");
    let pack_mount = format!("{}:/pack:ro", fixtures.join("bench").display());
    let catalog = Catalog::builtin().expect("catalog");
    let settings = Settings::from_env().expect("settings");
    let plan = packbox::plan(
        &settings,
        &catalog,
        &RunRequest::new(&fixtures, "bench.noop"),
    )
    .expect("plan");
    let executor = runtime.block_on(async {
        Executor::connect(settings.clone(), catalog)
            .await
            .expect("a Docker engine")
    });

    let run_once = || {
        runtime.block_on(async {
            let outcome = executor.run(&plan, |_| {}).await.expect("run");
            assert_eq!(outcome.status, Status::Succeeded);
        })
    };
    run_once(); // verifies the runtime once, as any first run does

    let mut library = Vec::new();
    let mut cli = Vec::new();
    for _ in 0..LATENCY_RUNS {
        let started = Instant::now();
        run_once();
        library.push(started.elapsed());
        let started = Instant::now();
        assert!(docker_run(&pack_mount), "docker run failed");
        cli.push(started.elapsed());
    }
    let (library, cli) = (median(library), median(cli));

    // The same, on an executor with a warm pool (the docker run between two runs gives the pool
    // time to pre-start the next container, as idle time would).
    let pooled_executor = runtime.block_on(async {
        Executor::connect(settings.clone(), Catalog::builtin().expect("catalog"))
            .await
            .expect("a Docker engine")
            .with_warm_pool(1)
    });
    let run_pooled = || {
        runtime.block_on(async {
            let outcome = pooled_executor.run(&plan, |_| {}).await.expect("run");
            assert_eq!(outcome.status, Status::Succeeded);
        })
    };
    run_pooled();
    let mut pooled = Vec::new();
    let mut cli_beside_pool = Vec::new();
    for _ in 0..LATENCY_RUNS {
        let started = Instant::now();
        assert!(docker_run(&pack_mount), "docker run failed");
        cli_beside_pool.push(started.elapsed());
        let started = Instant::now();
        run_pooled();
        pooled.push(started.elapsed());
    }
    runtime.block_on(pooled_executor.close());
    let (pooled, cli_beside_pool) = (median(pooled), median(cli_beside_pool));

    let started = Instant::now();
    runtime.block_on(async {
        let outcomes: Vec<_> = futures::stream::iter(0..THROUGHPUT_RUNS)
            .map(|_| executor.run(&plan, |_| {}))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        assert!(
            outcomes
                .iter()
                .all(|o| o.as_ref().is_ok_and(|o| o.status == Status::Succeeded))
        );
    });
    let library_batch = started.elapsed();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..CONCURRENCY {
            let pack_mount = &pack_mount;
            scope.spawn(move || {
                for _ in (worker..THROUGHPUT_RUNS).step_by(CONCURRENCY) {
                    assert!(docker_run(pack_mount), "docker run failed");
                }
            });
        }
    });
    let cli_batch = started.elapsed();

    let per_second = |d: Duration| THROUGHPUT_RUNS as f64 / d.as_secs_f64();
    let report = format!(
        "# packbox library benchmarks\n\n\
         Same run, same machine; `cargo bench --bench library`.\n\n\
         | benchmark | library | docker CLI | ratio |\n|---|---|---|---|\n\
         | warm run of a trivial action (median of {LATENCY_RUNS}) | {} ms | {} ms | {:.2}x the time |\n\
         | warm run, executor with a warm pool (median of {LATENCY_RUNS}) | {} ms | {} ms | {:.2}x the time |\n\
         | {THROUGHPUT_RUNS} runs at concurrency {CONCURRENCY} | {:.1} runs/s | {:.1} runs/s | {:.2}x the throughput |\n",
        library.as_millis(),
        cli.as_millis(),
        library.as_secs_f64() / cli.as_secs_f64(),
        pooled.as_millis(),
        cli_beside_pool.as_millis(),
        pooled.as_secs_f64() / cli_beside_pool.as_secs_f64(),
        per_second(library_batch),
        per_second(cli_batch),
        per_second(library_batch) / per_second(cli_batch),
    );
    print!("{report}");
    if std::fs::create_dir_all(root.join("bench")).is_ok() {
        let _ = std::fs::write(root.join("bench/library.md"), &report);
    }
}
