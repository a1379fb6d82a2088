//! Figures of `packbox serve`, each beside its yardstick in the same run (`cargo bench --bench
//! serve`, or `scripts/bench serve`); writes bench/serve.md. Needs the engine and the runtime
//! images (scripts/build-images). Not a test: figures depend on the machine.
//!
//! 1. Warm run of a trivial action over HTTP, p50 and p99, against `docker run --rm` of the same
//!    container (the flags are read from one of the server's own containers).
//! 2. The pre-loaded interpreter: warm Python and Node.js runs with and without it.
//! 3. Throughput at concurrency 8 against the engine's own ceiling: create, start, wait and
//!    remove of the same container straight through the Engine API, at concurrency 8.
//! 4. Server RSS idle, and its peak under 16 concurrent runs each printing 100 MiB.
//! 5. 1,000 runs at concurrency 16: none lost, none duplicated, no leftovers; the same with the
//!    server killed (SIGKILL) and restarted in the middle.
//!
//! `cargo bench --bench serve -- speed` measures the speed goals instead (`speed/mod.rs`,
//! bench/speed.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/quiet.rs"]
mod quiet;
#[path = "speed/mod.rs"]
mod speed;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptions,
};
use futures::StreamExt;
use serde_json::{Value, json};

fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    url: String,
    /// Every line the server wrote on stderr after the one saying where it listens.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(state: &Path, packs: &Path, config: &str, listen: &str) -> Server {
        Server::start_with(state, packs, config, listen, &[])
    }

    /// A server started with `global` flags before `serve` (`--log ...`).
    fn start_with(
        state: &Path,
        packs: &Path,
        config: &str,
        listen: &str,
        global: &[&str],
    ) -> Server {
        std::fs::create_dir_all(state).expect("state folder");
        let config_file = state.join("config.yaml");
        std::fs::write(&config_file, config).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_packbox"))
            .arg("--config")
            .arg(&config_file)
            .arg("--state-dir")
            .arg(state)
            .args(global)
            .args(["serve", "--listen", listen, "--packs"])
            .arg(packs)
            .env_remove("PACKBOX_SERVE_TOKEN")
            .env_remove("PACKBOX_SERVE_TOKEN_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("packbox serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("packbox serve said where it listens")
                .expect("a line");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap_or("").to_string();
            }
        };
        // Keep reading stderr so the server never blocks on a full pipe.
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keeper = Arc::clone(&kept);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut kept) = keeper.lock() {
                    kept.push(line);
                }
            }
        });
        Server {
            child,
            url,
            stderr: kept,
        }
    }

    /// How many stderr lines the server wrote so far (a mark for [`Server::lines_since`]).
    fn mark(&self) -> usize {
        self.stderr.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// The stderr lines written since `mark`.
    fn lines_since(&self, mark: usize) -> Vec<String> {
        self.stderr
            .lock()
            .map(|l| l.get(mark..).unwrap_or(&[]).to_vec())
            .unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
    }

    fn kill(mut self) {
        signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with the pid of our own child.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{url}/v1/executions"))
        .json(body)
        .send()
        .await
        .expect("the server answers");
    response.json().await.expect("a record")
}

async fn wait_final(client: &reqwest::Client, url: &str, id: &str) -> Value {
    loop {
        let record: Value = client
            .get(format!("{url}/v1/executions/{id}?wait=60"))
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a record");
        match record["status"].as_str() {
            Some("queued" | "running") => continue,
            _ => return record,
        }
    }
}

/// Idle pooled containers of an action, from the server's metrics.
async fn pooled(client: &reqwest::Client, url: &str, action: &str) -> u64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("packbox_warm_idle_containers{")
                && l.contains(&format!("action=\"{action}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Latency of one run with `wait`, once the pool holds a container for it.
async fn warm_run(client: &reqwest::Client, url: &str, action: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(60);
    while pooled(client, url, action).await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let record = post(client, url, &json!({"action": action, "wait": true})).await;
    let took = started.elapsed();
    assert_eq!(record["status"], "succeeded", "{record}");
    took
}

/// The docker CLI flags of a container, from its inspection: the same sandbox as packbox's.
fn docker_run_args(inspected: &Value, seccomp_file: &Path) -> Vec<String> {
    let host = &inspected["HostConfig"];
    let config = &inspected["Config"];
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "-i".into()];
    let mut flag = |name: &str, value: String| {
        args.push(name.to_string());
        args.push(value);
    };
    flag(
        "--network",
        host["NetworkMode"].as_str().unwrap_or("none").into(),
    );
    if host["ReadonlyRootfs"] == true {
        args.push("--read-only".into());
    }
    for (path, options) in host["Tmpfs"].as_object().into_iter().flatten() {
        args.push("--tmpfs".into());
        args.push(format!("{path}:{}", options.as_str().unwrap_or("")));
    }
    for cap in host["CapDrop"].as_array().into_iter().flatten() {
        args.push("--cap-drop".into());
        args.push(cap.as_str().unwrap_or("").into());
    }
    for option in host["SecurityOpt"].as_array().into_iter().flatten() {
        let option = option.as_str().unwrap_or("");
        args.push("--security-opt".into());
        if let Some(profile) = option.strip_prefix("seccomp=") {
            std::fs::write(seccomp_file, profile).expect("profile file");
            args.push(format!("seccomp={}", seccomp_file.display()));
        } else {
            args.push(option.into());
        }
    }
    let number = |v: &Value| v.as_i64().unwrap_or(0);
    args.extend(["--memory".into(), number(&host["Memory"]).to_string()]);
    args.extend([
        "--memory-swap".into(),
        number(&host["MemorySwap"]).to_string(),
    ]);
    args.extend([
        "--pids-limit".into(),
        number(&host["PidsLimit"]).to_string(),
    ]);
    args.extend([
        "--cpus".into(),
        format!("{}", number(&host["NanoCpus"]) as f64 / 1e9),
    ]);
    for limit in host["Ulimits"].as_array().into_iter().flatten() {
        args.push("--ulimit".into());
        args.push(format!(
            "{}={}:{}",
            limit["Name"].as_str().unwrap_or(""),
            number(&limit["Soft"]),
            number(&limit["Hard"])
        ));
    }
    // packbox's own init comes from its volume; `docker run` gets the engine's, which does
    // the same for an action (reaps, forwards signals).
    args.push("--init".into());
    args.extend([
        "--log-driver".into(),
        host["LogConfig"]["Type"].as_str().unwrap_or("none").into(),
    ]);
    for bind in host["Binds"].as_array().into_iter().flatten() {
        let bind = bind.as_str().unwrap_or("");
        if bind.starts_with("packbox-init-") {
            continue;
        }
        args.push("-v".into());
        args.push(bind.into());
    }
    args.extend([
        "--user".into(),
        config["User"].as_str().unwrap_or("").into(),
    ]);
    args.extend([
        "-w".into(),
        config["WorkingDir"].as_str().unwrap_or("/").into(),
    ]);
    for env in config["Env"].as_array().into_iter().flatten() {
        args.push("-e".into());
        args.push(env.as_str().unwrap_or("").into());
    }
    args.push(config["Image"].as_str().unwrap_or("").into());
    args.extend(["bash".into(), "/pack/actions/noop.sh".into()]);
    args
}

fn docker_run(args: &[String]) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker runs");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{}\n");
    }
    assert!(
        child.wait().map(|s| s.success()).unwrap_or(false),
        "docker run failed"
    );
    started.elapsed()
}

/// An idle pooled container of the server for `action`: its inspection.
fn pooled_container(pid: u32, action: &str) -> Value {
    // A run's container may still be listed while its removal (after the outcome) runs: a
    // container that is gone by the time it is inspected is skipped, and the listing read again
    // (bounded) until a live one answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=packbox.owner_pid={pid}"),
                "--filter",
                &format!("label=packbox.action={action}"),
            ])
            .output()
            .expect("docker ps");
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let inspected = Command::new("docker")
                .args(["inspect", id])
                .output()
                .expect("docker inspect");
            let list: Value = serde_json::from_slice(&inspected.stdout).unwrap_or(Value::Null);
            if list[0]["State"]["Running"] == true {
                return list[0].clone();
            }
        }
        assert!(Instant::now() < deadline, "no pooled container of {action}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `runs` containers like `inspected` (cmd: the action alone, under the engine's default
/// runtime and init) straight through the Engine API, `concurrency` at a time: create, (with
/// `attach`: attach, then the stdin document written and closed, the output read to its end,)
/// start, wait, remove. Returns runs per second.
async fn engine_ceiling(inspected: &Value, runs: usize, concurrency: usize, attach: bool) -> f64 {
    let docker = Docker::connect_with_local_defaults().expect("the engine");
    let mut config: ContainerCreateBody =
        serde_json::from_value(inspected["Config"].clone()).expect("a container config");
    let mut host: bollard::models::HostConfig =
        serde_json::from_value(inspected["HostConfig"].clone()).expect("a host config");
    host.runtime = None;
    host.init = Some(true);
    if let Some(binds) = host.binds.as_mut() {
        binds.retain(|b| !b.starts_with("packbox-init-"));
    }
    config.host_config = Some(host);
    config.cmd = Some(vec!["bash".into(), "/pack/actions/noop.sh".into()]);
    config.labels = Some(HashMap::from([(
        "packbox-bench".to_string(),
        "ceiling".to_string(),
    )]));
    config.open_stdin = Some(attach);
    config.stdin_once = Some(attach);
    config.attach_stdin = Some(attach);
    config.attach_stdout = Some(attach);
    config.attach_stderr = Some(attach);
    let started = Instant::now();
    futures::stream::iter(0..runs)
        .map(|n| {
            let (docker, config) = (docker.clone(), config.clone());
            async move {
                let name = format!("packbox-bench-ceiling-{}-{n}", std::process::id());
                let options = CreateContainerOptionsBuilder::default().name(&name).build();
                let id = docker
                    .create_container(Some(options), config)
                    .await
                    .expect("create")
                    .id;
                let attached = if attach {
                    let options = AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build();
                    Some(
                        docker
                            .attach_container(&id, Some(options))
                            .await
                            .expect("attach"),
                    )
                } else {
                    None
                };
                docker.start_container(&id, None).await.expect("start");
                if let Some(mut attached) = attached {
                    use tokio::io::AsyncWriteExt;
                    let _ = attached.input.write_all(b"{}\n").await;
                    let _ = attached.input.shutdown().await;
                    while attached.output.next().await.is_some() {}
                }
                let mut waiting = docker.wait_container(&id, None::<WaitContainerOptions>);
                while let Some(result) = waiting.next().await {
                    result.expect("the container exits 0");
                }
                let remove = RemoveContainerOptionsBuilder::default().force(true).build();
                docker
                    .remove_container(&id, Some(remove))
                    .await
                    .expect("remove");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    runs as f64 / started.elapsed().as_secs_f64()
}

/// Submits `runs` executions of svc.echo at `concurrency`, with idempotency keys, retrying
/// whatever fails; returns run number -> execution id.
async fn submit_all(
    client: &reqwest::Client,
    url: Arc<Mutex<String>>,
    runs: u64,
    concurrency: usize,
    prefix: &str,
    accepted: Arc<Mutex<BTreeMap<u64, String>>>,
) {
    futures::stream::iter(0..runs)
        .map(|n| {
            let (client, url, accepted) = (client.clone(), Arc::clone(&url), Arc::clone(&accepted));
            let key = format!("{prefix}-{n}");
            async move {
                loop {
                    let base = url.lock().map(|u| u.clone()).unwrap_or_default();
                    let sent = client
                        .post(format!("{base}/v1/executions"))
                        .header("Idempotency-Key", &key)
                        .json(&json!({"action": "svc.echo", "parameters": {"n": n}, "wait": true}))
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && response.status().is_success()
                        && let Ok(record) = response.json::<Value>().await
                        && let Some(id) = record["id"].as_str()
                    {
                        if let Ok(mut accepted) = accepted.lock() {
                            accepted.insert(n, id.to_string());
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

/// Checks a load: every accepted run final, once, echoing its n; returns (statuses, records).
async fn verify_load(
    client: &reqwest::Client,
    url: &str,
    accepted: &BTreeMap<u64, String>,
    runs: u64,
) -> (BTreeMap<String, u64>, usize) {
    assert_eq!(accepted.len() as u64, runs, "every run accepted");
    let mut statuses = BTreeMap::new();
    for (n, id) in accepted {
        let record = wait_final(client, url, id).await;
        let status = record["status"].as_str().unwrap_or("").to_string();
        if status == "succeeded" {
            assert_eq!(record["result"]["n"].as_u64(), Some(*n), "{record}");
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    let distinct: BTreeSet<&String> = accepted.values().collect();
    assert_eq!(distinct.len() as u64, runs, "one execution per run");
    let mut records = 0;
    let mut path = "/v1/executions?limit=500".to_string();
    loop {
        let page: Value = client
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("a page");
        for record in page["executions"].as_array().into_iter().flatten() {
            assert!(
                record["status"] != "running" && record["status"] != "queued",
                "{record}"
            );
            records += 1;
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/executions?limit=500&cursor={cursor}"),
            None => break,
        }
    }
    (statuses, records)
}

fn leftovers(pid: u32) -> usize {
    let output = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=packbox.owner_pid={pid}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout).lines().count()
}

fn copy_pack(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("a work folder");
    let packs = work.path().join("packs");
    std::fs::create_dir_all(&packs).expect("packs");
    copy_pack(&root.join("tests/fixtures/bench"), &packs);
    copy_pack(&root.join("tests/fixtures/serve/svc"), &packs);
    let seed = root.join("target/test-state-seed/probes.json");
    let state = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).expect("state");
        if seed.is_file() {
            let _ = std::fs::copy(&seed, dir.join("probes.json"));
        }
        dir
    };
    // reqwest comes without a crypto provider of its own (see src/cli/client_http.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("a client");
    copy_pack(&root.join("tests/fixtures/heavy"), &packs);
    if std::env::args().any(|arg| arg == "speed") {
        speed::run(&runtime, &root, work.path(), &packs, &state, &client);
        return;
    }
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // 1. Warm latency against docker run, and 4. idle RSS, on one server (preloading on).
    let warm_runs = count("PACKBOX_BENCH_WARM", 100);
    let docker_runs = count("PACKBOX_BENCH_DOCKER", 30);
    let main_state = state("main");
    let server = Server::start(
        &main_state,
        &packs,
        "serve: {max_concurrent: 16}\n",
        "127.0.0.1:0",
    );
    let url = server.url.clone();
    let (warm, back_to_back, docker, idle_rss) = runtime.block_on(async {
        for _ in 0..5 {
            warm_run(&client, &url, "bench.noop").await;
        }
        let warm: Vec<Duration> = {
            let mut samples = Vec::new();
            for _ in 0..warm_runs {
                samples.push(warm_run(&client, &url, "bench.noop").await);
            }
            samples
        };
        let back_to_back: Vec<Duration> = {
            let mut samples = Vec::new();
            for _ in 0..warm_runs {
                let started = Instant::now();
                let record = post(
                    &client,
                    &url,
                    &json!({"action": "bench.noop", "wait": true}),
                )
                .await;
                assert_eq!(record["status"], "succeeded");
                samples.push(started.elapsed());
            }
            samples
        };
        // The pool refills; then the server is idle.
        while pooled(&client, &url, "bench.noop").await == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_rss = memory_kib(server.pid()).0;
        let inspected = pooled_container(server.pid(), "bench.noop");
        let args = docker_run_args(&inspected, &work.path().join("seccomp.json"));
        let docker: Vec<Duration> = (0..docker_runs + 2)
            .map(|_| docker_run(&args))
            .skip(2)
            .collect();
        (warm, back_to_back, (docker, inspected), idle_rss)
    });
    let (docker, inspected) = docker;
    let (warm50, docker50) = (percentile(&warm, 0.5), percentile(&docker, 0.5));
    rows.push([
        format!("warm run of a trivial action over HTTP, p50 (pool ready; {warm_runs} runs)"),
        ms(warm50),
        format!(
            "{} (`docker run --rm`, same flags, {docker_runs} runs)",
            ms(docker50)
        ),
        format!("{:.2}", warm50.as_secs_f64() / docker50.as_secs_f64()),
        "<= 0.15 (0.1 aimed)".into(),
    ]);
    let (warm99, docker99) = (percentile(&warm, 0.99), percentile(&docker, 0.99));
    rows.push([
        "warm run, p99".into(),
        ms(warm99),
        ms(docker99),
        format!("{:.2}", warm99.as_secs_f64() / docker99.as_secs_f64()),
        String::new(),
    ]);
    let (b50, b99) = (
        percentile(&back_to_back, 0.5),
        percentile(&back_to_back, 0.99),
    );
    rows.push([
        "runs back to back (the next asked as soon as one ends), p50 / p99".into(),
        format!("{} / {}", ms(b50), ms(b99)),
        format!("{} / {}", ms(docker50), ms(docker99)),
        format!("{:.2}", b50.as_secs_f64() / docker50.as_secs_f64()),
        String::new(),
    ]);

    // 2. The pre-loaded interpreter: the same runs on a second server without it.
    let preload_runs = count("PACKBOX_BENCH_PRELOAD", 40);
    let plain = Server::start(
        &state("plain"),
        &packs,
        "serve: {warm: {preload: false}}\n",
        "127.0.0.1:0",
    );
    let plain_url = plain.url.clone();
    for action in ["svc.pyinfo", "svc.nodeinfo"] {
        let (with, without) = runtime.block_on(async {
            for _ in 0..3 {
                warm_run(&client, &url, action).await;
                warm_run(&client, &plain_url, action).await;
            }
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for _ in 0..preload_runs {
                with.push(warm_run(&client, &url, action).await);
                without.push(warm_run(&client, &plain_url, action).await);
            }
            (with, without)
        });
        let (a, b) = (percentile(&with, 0.5), percentile(&without, 0.5));
        rows.push([
            format!("warm {action} run, p50: interpreter pre-loaded vs started at the handoff"),
            ms(a),
            ms(b),
            format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
            "keep it if < 1".into(),
        ]);
    }
    plain.stop();

    // 3. Throughput at concurrency 8 against the engine's ceiling.
    let throughput_runs = count("PACKBOX_BENCH_THROUGHPUT", 200);
    let (served, ceiling) = runtime.block_on(async {
        let started = Instant::now();
        futures::stream::iter(0..throughput_runs)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let record = post(
                        &client,
                        &url,
                        &json!({"action": "bench.noop", "wait": true}),
                    )
                    .await;
                    let record = match record["status"].as_str() {
                        Some("queued" | "running") => {
                            wait_final(&client, &url, record["id"].as_str().unwrap_or("")).await
                        }
                        _ => record,
                    };
                    assert_eq!(record["status"], "succeeded", "{record}");
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        let served = throughput_runs as f64 / started.elapsed().as_secs_f64();
        let ceiling = engine_ceiling(&inspected, throughput_runs, 8, false).await;
        (served, ceiling)
    });
    rows.push([
        format!("throughput, {throughput_runs} trivial runs at concurrency 8 over HTTP"),
        format!("{served:.1} runs/s"),
        format!("{ceiling:.1} runs/s (create, start, wait, remove through the API)"),
        format!("{:.2}", served / ceiling),
        ">= 0.9".into(),
    ]);

    // 4. RSS under 16 concurrent runs printing 100 MiB each.
    let flood_runs = count("PACKBOX_BENCH_FLOOD", 16);
    let before_flood = memory_kib(server.pid()).1;
    let flood_seconds = runtime.block_on(async {
        let started = Instant::now();
        let outcomes: Vec<Value> = futures::stream::iter(0..flood_runs)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let record = post(
                        &client,
                        &url,
                        &json!({"action": "bench.flood", "wait": true}),
                    )
                    .await;
                    match record["status"].as_str() {
                        Some("queued" | "running") => {
                            wait_final(&client, &url, record["id"].as_str().unwrap_or("")).await
                        }
                        _ => record,
                    }
                }
            })
            .buffer_unordered(flood_runs)
            .collect()
            .await;
        for outcome in &outcomes {
            assert_eq!(outcome["status"], "succeeded", "{}", outcome["error"]);
            assert_eq!(outcome["stdout_truncated"], true);
        }
        started.elapsed().as_secs_f64()
    });
    let peak = memory_kib(server.pid()).1;
    rows.push([
        "server RSS, idle (after the runs above)".into(),
        format!("{} MiB", idle_rss / 1024),
        String::new(),
        String::new(),
        String::new(),
    ]);
    rows.push([
        format!("server peak RSS, {flood_runs} concurrent runs each printing 100 MiB"),
        format!("{} MiB", peak / 1024),
        format!("peak before them: {} MiB", before_flood / 1024),
        String::new(),
        "bounded".into(),
    ]);
    notes.push(format!(
        "The flood: {flood_runs} runs of `bench.flood` took {flood_seconds:.0} s; each record keeps 10 MiB of stdout (`run.max_output`), the rest is drained and dropped."
    ));
    let main_pid = server.pid();
    server.stop();
    assert_eq!(leftovers(main_pid), 0, "the server left containers");

    // 5. 1,000 runs at concurrency 16, then the same with a kill and a restart.
    let load_runs = count("PACKBOX_BENCH_LOAD", 1000) as u64;
    let load_state = state("load");
    let load_server = Server::start(&load_state, &packs, "", "127.0.0.1:0");
    let load_url = Arc::new(Mutex::new(load_server.url.clone()));
    let (load_seconds, statuses, records) = runtime.block_on(async {
        let accepted = Arc::new(Mutex::new(BTreeMap::new()));
        let started = Instant::now();
        submit_all(
            &client,
            Arc::clone(&load_url),
            load_runs,
            16,
            "load",
            Arc::clone(&accepted),
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
        let base = load_url.lock().map(|u| u.clone()).unwrap_or_default();
        let (statuses, records) = verify_load(&client, &base, &accepted, load_runs).await;
        (seconds, statuses, records)
    });
    let load_pid = load_server.pid();
    load_server.stop();
    let left = leftovers(load_pid);
    rows.push([
        format!("{load_runs} runs at concurrency 16 over HTTP"),
        format!(
            "{load_seconds:.0} s ({:.1} runs/s); {statuses:?}; {records} records; {left} containers left",
            load_runs as f64 / load_seconds
        ),
        String::new(),
        String::new(),
        "none lost, none duplicated, no leftovers".into(),
    ]);
    assert_eq!(statuses.get("succeeded").copied(), Some(load_runs));
    assert_eq!(records as u64, load_runs);
    assert_eq!(left, 0);

    let kill_state = state("kill");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let listen = format!("127.0.0.1:{port}");
    let first = Server::start(&kill_state, &packs, "", &listen);
    let first_pid = first.pid();
    let kill_url = Arc::new(Mutex::new(first.url.clone()));
    let (kill_seconds, statuses, records, second) = runtime.block_on(async {
        let accepted = Arc::new(Mutex::new(BTreeMap::new()));
        let started = Instant::now();
        let submitting = submit_all(
            &client,
            Arc::clone(&kill_url),
            load_runs,
            16,
            "kill",
            Arc::clone(&accepted),
        );
        let killing = async {
            while accepted.lock().map(|a| a.len() as u64).unwrap_or(0) < load_runs / 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            first.kill();
            let (state, packs, listen) = (kill_state.clone(), packs.clone(), listen.clone());
            tokio::task::spawn_blocking(move || Server::start(&state, &packs, "", &listen))
                .await
                .expect("the second server starts")
        };
        let ((), second) = tokio::join!(submitting, killing);
        let seconds = started.elapsed().as_secs_f64();
        let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
        let (statuses, records) = verify_load(&client, &second.url, &accepted, load_runs).await;
        (seconds, statuses, records, second)
    });
    let second_pid = second.pid();
    second.stop();
    let left = leftovers(first_pid) + leftovers(second_pid);
    rows.push([
        format!(
            "{load_runs} runs at concurrency 16, the server SIGKILLed and restarted after a third"
        ),
        format!("{kill_seconds:.0} s; {statuses:?}; {records} records; {left} containers left"),
        String::new(),
        String::new(),
        "every accepted run recorded, none running".into(),
    ]);
    assert_eq!(records as u64, load_runs);
    notes.push(
        "Runs the kill caught in flight are `abandoned` (their clients' retries with the same idempotency key get that record, so nothing runs twice); all others `succeeded`.".into(),
    );

    let engine = Command::new("docker")
        .args([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = String::new();
    out.push_str("# packbox serve benchmarks\n\n");
    out.push_str(&format!(
        "{cores} cores, Docker {engine}, load average at the end: {}. Release build; `cargo bench --bench serve` (or `scripts/bench serve`).\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    out.push_str("Ratios are packbox / yardstick (time: below 1 is faster; throughput: above 1 is more).\n\n");
    out.push_str("| figure | packbox serve | yardstick | ratio | goal |\n|---|---|---|---|---|\n");
    for row in &rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
    for note in &notes {
        out.push_str(&format!("- {note}\n"));
    }
    let file = root.join("bench/serve.md");
    std::fs::write(&file, &out).expect("bench/serve.md");
    print!("{out}");
}
