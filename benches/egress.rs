//! Egress grants, measured (`cargo bench --bench egress`, `scripts/bench egress`): what a grant
//! adds to a run against the same run without a network (warm pool and one-shot), what the
//! proxy adds to one small HTTP GET against the same GET over a plain network, and 100 runs
//! with grants at concurrency 8 against 100 without (throughput, leftovers). The destination is
//! a server this bench starts in a container on a network it made. Writes bench/egress.md with
//! the load average beside each figure: figures taken while the machine is busy are preliminary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
#[path = "common/quiet.rs"]
mod quiet;

use quiet::{load, settle};

use packbox::{Catalog, Environment, Executor, RunRequest, Settings, SettingsLayer, Status};

const LATENCY_RUNS: usize = 40;
const BATCH: usize = 100;
const CONCURRENCY: usize = 8;

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The load a section began at and the load now, for a row.
fn loads(at_start: &str) -> String {
    format!("{at_start}; {}", load())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn settings(dir: &Path, name: &str, text: &str) -> Settings {
    let config = dir.join(name);
    std::fs::write(&config, text).expect("config");
    let mut layer = SettingsLayer::default();
    layer.state_dir = Some(dir.join("state"));
    Settings::resolve(layer, Some(&config), &Environment::capture()).expect("settings")
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let packs = root.join("tests/fixtures/egress");
    let bench_packs = root.join("tests/fixtures");
    let dir = tempfile::tempdir().expect("dir");
    let network = format!("egress-bench-{}", std::process::id());
    docker(&[
        "network",
        "create",
        "--label",
        "packbox.test=egress-bench",
        &network,
    ]);
    let server = format!("{network}-server");
    let script = std::fs::read_to_string(packs.join("server.py")).expect("server script");
    docker(&[
        "run",
        "-d",
        "--label",
        "packbox.test=egress-bench",
        "--name",
        &server,
        "--network",
        &network,
        "packbox/python:3.11",
        "python3",
        "-u",
        "-c",
        &script,
    ]);
    let ip = docker(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        &server,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker(&["logs", &server]).contains("ready") {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxy_binary = env!("CARGO_BIN_EXE_packbox-egress-proxy");
    let egress = format!(
        "egress:\n  networks: [{network}]\n  proxy_binary: {proxy_binary}\n  hosts: {{granted.test: [{ip}]}}\n"
    );
    let granted = settings(
        dir.path(),
        "granted.yaml",
        &format!("network:\n  - match: \"*\"\n    egress: [\"granted.test:8000\"]\n{egress}"),
    );
    let none = settings(dir.path(), "none.yaml", &format!("network: []\n{egress}"));
    let direct = settings(
        dir.path(),
        "direct.yaml",
        &format!("sandbox: {{network: {network}, allow_weaker: true}}\nnetwork: []\n{egress}"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let catalog = || Catalog::builtin().expect("catalog");
    let plan = |settings: &Settings, packs: &Path, action: &str, params: &[&str]| {
        let mut request = RunRequest::new(packs, action);
        request.params = params.iter().map(|p| p.to_string()).collect();
        packbox::plan(settings, &catalog(), &request).expect("plan")
    };
    let mut report = String::from("# Egress grants, measured\n\n");
    report.push_str(&format!(
        "`cargo bench --bench egress` (`scripts/bench egress`), {}; load average (1, 5, 15 min) \
         beside each figure: figures taken under load are preliminary.\n\n",
        docker(&[
            "version",
            "--format",
            "Docker {{.Server.Version}} (API {{.Server.APIVersion}})"
        ])
    ));
    report.push_str(
        "| figure | with a grant | without | added | load at the section's start; at the row |\n|---|---|---|---|---|\n",
    );

    // 1. A trivial run, sequentially, on executors with a warm pool, then one-shot executors.
    for (label, pooled) in [("warm pool", true), ("no pool (one-shot executor)", false)] {
        let quiet = settle();
        let mut figures = Vec::new();
        for settings in [&granted, &none] {
            let noop = plan(settings, &bench_packs, "bench.noop", &[]);
            let samples: Vec<Duration> = runtime.block_on(async {
                let mut executor = Executor::connect(settings.clone(), catalog())
                    .await
                    .expect("engine");
                if pooled {
                    executor = executor.with_warm_pool(1);
                }
                let first = executor.run(&noop, |_| {}).await.expect("run");
                assert_eq!(first.status, Status::Succeeded, "{:?}", first.error);
                let mut samples = Vec::new();
                for _ in 0..LATENCY_RUNS {
                    // Idle time between runs: a pool refills between requests (the figure is
                    // a run that finds its pool ready, as `scripts/bench serve` measures).
                    let idle = if pooled { 1000 } else { 100 };
                    tokio::time::sleep(Duration::from_millis(idle)).await;
                    let started = Instant::now();
                    let outcome = executor.run(&noop, |_| {}).await.expect("run");
                    samples.push(started.elapsed());
                    assert_eq!(outcome.status, Status::Succeeded);
                    assert_eq!(outcome.egress.is_some(), std::ptr::eq(settings, &granted));
                }
                executor.close().await;
                samples
            });
            figures.push(samples);
        }
        let (mut with, mut without) = (figures[0].clone(), figures[1].clone());
        let (p50_with, p50_without) = (percentile(&mut with, 0.5), percentile(&mut without, 0.5));
        let (p90_with, p90_without) = (percentile(&mut with, 0.9), percentile(&mut without, 0.9));
        report.push_str(&format!(
            "| trivial run, {label}, p50 ({LATENCY_RUNS} runs) | {} | {} | {:+.0} ms | {} |\n",
            ms(p50_with),
            ms(p50_without),
            (p50_with.as_secs_f64() - p50_without.as_secs_f64()) * 1000.0,
            loads(&quiet)
        ));
        report.push_str(&format!(
            "| trivial run, {label}, p90 | {} | {} | {:+.0} ms | {} |\n",
            ms(p90_with),
            ms(p90_without),
            (p90_with.as_secs_f64() - p90_without.as_secs_f64()) * 1000.0,
            loads(&quiet)
        ));
    }

    // 2. One small HTTP GET, timed inside the action: through the proxy against straight over
    //    a plain network (the operator's weaker `sandbox.network`).
    let timed = |settings: &Settings, url: &str, direct: bool| -> (f64, f64) {
        let direct = format!("direct={direct}");
        let url = format!("url={url}");
        let timing = plan(
            settings,
            &packs,
            "egress.timing",
            &[&url, &direct, "count=100"],
        );
        runtime.block_on(async {
            let executor = Executor::connect(settings.clone(), catalog())
                .await
                .expect("engine");
            let outcome = executor.run(&timing, |_| {}).await.expect("run");
            executor.close().await;
            assert_eq!(outcome.status, Status::Succeeded, "{}", outcome.stderr);
            let result = outcome.result.expect("timing");
            (
                result["median_ms"].as_f64().unwrap_or(0.0),
                result["p90_ms"].as_f64().unwrap_or(0.0),
            )
        })
    };
    let quiet = settle();
    let (proxied, proxied_p90) = timed(&granted, "http://granted.test:8000/", false);
    let (straight, straight_p90) = timed(&direct, &format!("http://{ip}:8000/"), true);
    report.push_str(&format!(
        "| small HTTP GET from the action, median of 100 | {proxied:.2} ms | {straight:.2} ms (plain network) | {:+.2} ms | {} |\n",
        proxied - straight,
        loads(&quiet)
    ));
    report.push_str(&format!(
        "| small HTTP GET, p90 | {proxied_p90:.2} ms | {straight_p90:.2} ms | {:+.2} ms | {} |\n",
        proxied_p90 - straight_p90,
        loads(&quiet)
    ));

    // 3. 100 runs at concurrency 8, with grants and without: throughput and what is left.
    let quiet = settle();
    let mut rates = Vec::new();
    for settings in [&granted, &none] {
        let noop = plan(settings, &bench_packs, "bench.noop", &[]);
        let (took, all_ok) = runtime.block_on(async {
            let executor = Executor::connect(settings.clone(), catalog())
                .await
                .expect("engine");
            executor.run(&noop, |_| {}).await.expect("first run");
            let started = Instant::now();
            let outcomes: Vec<_> = futures::stream::iter(0..BATCH)
                .map(|_| executor.run(&noop, |_| {}))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let took = started.elapsed();
            executor.close().await;
            let all_ok = outcomes
                .iter()
                .all(|o| o.as_ref().is_ok_and(|o| o.status == Status::Succeeded));
            (took, all_ok)
        });
        assert!(all_ok, "every run of the batch succeeds");
        rates.push(BATCH as f64 / took.as_secs_f64());
    }
    let pid = std::process::id().to_string();
    let left_containers = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=packbox.owner_pid={pid}"),
    ]);
    let left_networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=packbox.owner_pid={pid}"),
    ]);
    report.push_str(&format!(
        "| {BATCH} trivial runs at concurrency {CONCURRENCY} | {:.1} runs/s | {:.1} runs/s | {:.2}x the throughput | {} |\n",
        rates[0],
        rates[1],
        rates[0] / rates[1],
        loads(&quiet)
    ));
    report.push_str(&format!(
        "\nAfter the batches: {} containers and {} networks of this process left.\n",
        left_containers.lines().count(),
        left_networks.lines().count()
    ));
    let _ = docker(&["rm", "-f", &server]);
    let _ = docker(&["network", "rm", &network]);
    std::fs::create_dir_all(root.join("bench")).expect("bench folder");
    std::fs::write(root.join("bench/egress.md"), &report).expect("bench/egress.md");
    println!("{report}");
}
