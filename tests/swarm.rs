//! The swarm backend against the real engine, on a single-node Swarm the tests make (see
//! `common::swarm`) and the loopback registry `scripts/ensure-registry` starts: the same action
//! contract as local runs (results, deliveries, secrets, exit codes, timeout, truncation), the
//! sandbox in Swarm's terms (no route out, read-only pack, the parameter secret), and nothing
//! left behind.

mod common;

use std::process::Command;

use common::swarm::*;
use common::*;
use serde_json::Value;

const SECRET: &str = "s3cr3t-Swarm-41c9";
/// A service cannot carry packbox's syscall profile on this engine's API: swarm runs take the
/// engine's default profile, which is weaker and must be allowed (and is reported).
const ENGINE_PROFILE: [&str; 3] = ["--seccomp", "engine-default", "--allow-weaker-sandbox"];

/// `packbox --backend swarm run --packs DIR ACTION --json ARGS...`, checked for leftovers.
fn swarm_run(packs: &std::path::Path, action: &str, args: &[&str]) -> Finished {
    let packs = packs.to_string_lossy().into_owned();
    let mut all = vec![
        "--backend",
        "swarm",
        "run",
        "--packs",
        packs.as_str(),
        action,
        "--json",
    ];
    all.extend_from_slice(&ENGINE_PROFILE);
    all.extend_from_slice(args);
    let run = packbox(&all, &[]);
    assert_no_swarm_leftovers(run.pid);
    run
}

fn contract(action: &str, args: &[&str]) -> Finished {
    swarm_run(&fixture_packs(), &format!("contract.{action}"), args)
}

fn swarm_packs() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/swarm")
}

#[test]
fn results_are_parsed_as_for_local_runs() {
    require_engine();
    let _swarm = use_swarm();
    for (action, out, expected) in [
        (
            "emit_json",
            "noise\n{\"a\": 1}\n",
            serde_json::json!({"a": 1}),
        ),
        (
            "emit_yaml",
            "a: 1\nb: [x]\n",
            serde_json::json!({"a": 1, "b": ["x"]}),
        ),
        (
            "emit_jsonl",
            "{\"n\":1}\nskip\n{\"n\":2}\n",
            serde_json::json!([{"n": 1}, {"n": 2}]),
        ),
    ] {
        let run = contract(action, &["-p", &format!("out={out}")]);
        assert_eq!(run.code(), 0, "{action}: {}", run.stderr());
        let outcome = run.json();
        assert_eq!(outcome["status"], "succeeded", "{action}: {outcome}");
        assert_eq!(outcome["result"], expected, "{action}");
        assert_eq!(outcome["stdout"], out, "{action}: byte for byte");
        assert_eq!(outcome["sandbox"]["backend"], "swarm");
    }
}

#[test]
fn each_delivery_and_format_is_byte_exact() {
    require_engine();
    let _swarm = use_swarm();
    let args = [
        "-p",
        "name=it's",
        "-p",
        "count=3",
        "-p",
        r#"nested={"a":{"b":true}}"#,
        "-p",
        r#"list=[1,"x"]"#,
    ];
    let expected = [
        (
            "json",
            "{\"count\":3,\"list\":[1,\"x\"],\"name\":\"it's\",\"nested\":{\"a\":{\"b\":true}}}\n",
        ),
        (
            "dotenv",
            "count='3'\nlist='[1,\"x\"]'\nname='it'\\''s'\nnested.a.b='true'\n",
        ),
    ];
    for delivery in ["stdin", "file"] {
        for (format, bytes) in expected {
            let run = contract(&format!("params_{delivery}_{format}"), &args);
            assert_eq!(run.code(), 0, "{delivery}/{format}: {}", run.stderr());
            let outcome = run.json();
            assert_eq!(outcome["stdout"], bytes, "{delivery}/{format}");
            if delivery == "file" {
                assert_eq!(outcome["stderr"], "600 65534\n", "{delivery}/{format}");
            }
        }
    }
}

#[test]
fn exit_codes_and_failures_are_the_contracts() {
    require_engine();
    let _swarm = use_swarm();
    let failed = contract("emit_text", &["-p", "exit=3", "-p", "err=it broke\n"]);
    assert_eq!(failed.code(), 1, "{}", failed.stderr());
    let outcome = failed.json();
    assert_eq!(outcome["status"], "failed");
    assert_eq!(outcome["exit_code"], 3, "the task's exit code");
    assert_eq!(outcome["error"], "it broke");
    let ok = contract("emit_text", &["-p", "out=fine"]);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    assert_eq!(ok.json()["exit_code"], 0);
}

#[test]
fn the_document_is_a_secret_fed_to_stdin_and_never_in_service_inspect() {
    require_engine();
    let _swarm = use_swarm();
    let packs = swarm_packs();
    let child = spawn_packbox(&[
        "--backend",
        "swarm",
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "swarmcheck.linger",
        "--json",
        "--seccomp",
        "engine-default",
        "--allow-weaker-sandbox",
        "--timeout",
        "6",
        "--grace",
        "2",
        "--secret",
        &format!("api_key={SECRET}"),
    ]);
    let pid = child.id();
    let service = wait_for_service(pid);
    wait_for_running_task(&service);
    let inspect = |args: &[&str]| {
        let output = Command::new("docker").args(args).output().expect("docker");
        assert!(output.status.success(), "docker {args:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let service_json = inspect(&["service", "inspect", &service]);
    let secret_json = inspect(&["secret", "inspect", &format!("{service}-parameters")]);
    let task_containers = inspect(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=packbox.owner_pid={pid}"),
    ]);
    let container = task_containers
        .lines()
        .next()
        .expect("the task's container");
    let container_json = inspect(&["inspect", container]);
    let logs = inspect(&["service", "logs", "--raw", &service]);
    let output = child.wait_with_output().expect("packbox ends");
    assert_no_swarm_leftovers(pid);
    for (what, text) in [
        ("service inspect", &service_json),
        ("secret inspect", &secret_json),
        ("container inspect", &container_json),
        ("service logs", &logs),
    ] {
        assert!(!text.contains(SECRET), "the secret shows in {what}");
        assert!(
            !text.contains("api_key"),
            "the secret's name shows in {what}"
        );
    }
    assert!(
        service_json.contains("ATTUNE_EXEC_ID"),
        "inspected the run's service"
    );
    assert!(
        service_json.contains("packbox-parameters"),
        "the secret is mounted"
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    assert_eq!(outcome["status"], "timeout", "{outcome}");
}

#[test]
fn the_task_is_sandboxed_in_swarms_terms() {
    require_engine();
    let _swarm = use_swarm();
    let run = swarm_run(
        &swarm_packs(),
        "swarmcheck.inspect",
        &["--secret", &format!("token={SECRET}")],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    let seen = &outcome["result"];
    // Read from /proc inside the task: its own network only, no route out of it.
    assert_eq!(
        seen["interfaces"],
        serde_json::json!(["lo", "eth0"]),
        "{seen}"
    );
    let routes: Vec<&str> = seen["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!routes.contains(&"00000000"), "a default route: {routes:?}");
    assert_eq!(routes.len(), 1, "only its own subnet: {routes:?}");
    // The document: a secret file only the action's user can read, fed to stdin.
    assert_eq!(seen["secret_file"], "400 65534");
    assert_eq!(seen["stdin"], "{\"token\":\"***\"}");
    assert_eq!(seen["no_new_privs"], "1");
    assert_eq!(seen["cap_eff"], "0000000000000000");
    assert_eq!(seen["uid"], "65534");
    assert_eq!(seen["pids_max"], "256");
    for place in ["pack", "root"] {
        assert!(
            seen[place]
                .as_str()
                .is_some_and(|e| e.contains("Read-only file system")),
            "a write to {place} was not refused: {seen}"
        );
    }
    assert_eq!(seen["tmp"], "writable");
    assert_eq!(outcome["sandbox"]["seccomp"], "engine-default");
    assert!(
        outcome["sandbox"]["weaker_than_default"]
            .to_string()
            .contains("sandbox.seccomp"),
        "the engine's profile is reported as weaker"
    );
    let applied = outcome["sandbox"]["applied_as"].to_string();
    assert!(
        applied.contains("overlay") && applied.contains("setpriv"),
        "{applied}"
    );
    assert!(!run.stdout().contains(SECRET));
}

#[test]
fn a_timeout_removes_the_service_after_the_grace_and_exits_124() {
    require_engine();
    let _swarm = use_swarm();
    let run = swarm_run(
        &swarm_packs(),
        "swarmcheck.linger",
        &["--timeout", "3", "--grace", "5"],
    );
    assert_eq!(run.code(), 124, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "timeout");
    assert_eq!(outcome["error"], "Execution timed out after 3 seconds");
    // SIGTERM reached the action, and what it printed in the grace period was kept.
    assert_eq!(outcome["stdout"], "started\ngot SIGTERM\n", "{outcome}");
    assert_eq!(
        outcome["exit_code"], 0,
        "the action's own exit after SIGTERM"
    );
}

#[test]
fn output_is_truncated_at_the_limit() {
    require_engine();
    let _swarm = use_swarm();
    let run = contract(
        "emit_text",
        &[
            "-p",
            "out_bytes=300000",
            "-p",
            "err_bytes=5000",
            "--max-output",
            "100k",
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["stdout_truncated"], true);
    assert_eq!(outcome["stderr_truncated"], false);
    let stdout = outcome["stdout"].as_str().expect("stdout");
    assert!(stdout.starts_with(&"o".repeat(100 * 1024)));
    assert!(stdout.ends_with("\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n"));
    assert_eq!(outcome["stderr"].as_str().map(str::len), Some(5000));
}

#[test]
fn a_registry_carries_the_pack_image_by_digest() {
    require_engine();
    require_registry();
    let _swarm = use_swarm();
    let packs = swarm_packs();
    let child = spawn_packbox(&[
        "--backend",
        "swarm",
        "--registry",
        REGISTRY,
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "swarmcheck.linger",
        "--json",
        "--seccomp",
        "engine-default",
        "--allow-weaker-sandbox",
        "--timeout",
        "3",
        "--grace",
        "1",
    ]);
    let pid = child.id();
    let service = wait_for_service(pid);
    let image = Command::new("docker")
        .args([
            "service",
            "inspect",
            &service,
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ])
        .output()
        .expect("docker service inspect");
    let image = String::from_utf8_lossy(&image.stdout).trim().to_string();
    let output = child.wait_with_output().expect("packbox ends");
    assert_no_swarm_leftovers(pid);
    assert!(
        image.starts_with(&format!("{REGISTRY}/packbox-pack/swarmcheck@sha256:")),
        "the service runs the pushed pack image by digest: {image}"
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    assert_eq!(outcome["status"], "timeout", "{outcome}");
    let catalog = Command::new("curl")
        .args(["-fsS", &format!("http://{REGISTRY}/v2/_catalog")])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&catalog.stdout).contains("packbox-pack/swarmcheck"));
}

#[test]
fn cancelling_stops_the_task_and_leaves_nothing() {
    require_engine();
    let _swarm = use_swarm();
    let packs = swarm_packs();
    let child = spawn_packbox(&[
        "--backend",
        "swarm",
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "swarmcheck.linger",
        "--json",
        "--seccomp",
        "engine-default",
        "--allow-weaker-sandbox",
        "--grace",
        "2",
    ]);
    let pid = child.id();
    let service = wait_for_service(pid);
    wait_for_running_task(&service);
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = child.wait_with_output().expect("packbox ends");
    assert_eq!(output.status.code(), Some(130));
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    assert_eq!(outcome["status"], "cancelled");
    assert_no_swarm_leftovers(pid);
}

#[test]
fn packbox_s_syscall_profile_is_refused_with_the_way_out() {
    require_engine();
    let _swarm = use_swarm();
    let packs = fixture_packs();
    let run = packbox(
        &[
            "--backend",
            "swarm",
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "contract.emit_text",
            "--json",
        ],
        &[],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stdout().contains("--seccomp engine-default")
            || run.stderr().contains("--seccomp engine-default"),
        "{} {}",
        run.stdout(),
        run.stderr()
    );
    assert_no_swarm_leftovers(run.pid);
}

#[test]
fn a_document_too_large_for_a_secret_is_an_input_error() {
    require_engine();
    let _swarm = use_swarm();
    let dir = tempfile::tempdir().expect("tempdir");
    let params = dir.path().join("params.json");
    std::fs::write(
        &params,
        serde_json::json!({"out": "x".repeat(600 * 1024)}).to_string(),
    )
    .expect("write");
    let run = contract("emit_text", &["--params-file", &params.to_string_lossy()]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("a Swarm secret holds at most"),
        "{}",
        run.stderr()
    );
}

#[test]
fn gc_sweeps_swarm_objects_of_dead_owners_only() {
    require_engine();
    let _swarm = use_swarm();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();
    let me = std::process::id().to_string();
    let start = std::fs::read_to_string(format!("/proc/{me}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(19))
                .map(str::to_string)
        })
        .expect("start time");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let labels = |pid: &str, start: &str| {
        [
            "packbox.managed=true".to_string(),
            format!("packbox.owner_pid={pid}"),
            format!("packbox.owner_start={start}"),
            format!("packbox.owner_host={host}"),
            format!("packbox.test={tag}"),
        ]
    };
    let create = |kind: &str, name: &str, labels: &[String]| {
        let mut args = vec![kind.to_string(), "create".to_string()];
        for label in labels {
            args.push("--label".into());
            args.push(label.clone());
        }
        if kind == "network" {
            args.extend(["--driver".into(), "overlay".into(), "--internal".into()]);
        }
        args.push(name.to_string());
        if kind == "secret" {
            args.push("-".into());
        }
        let mut child = Command::new("docker")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker create");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(b"leftover").expect("secret data");
        }
        assert!(
            child.wait().expect("docker").success(),
            "creating {kind} {name}"
        );
    };
    let dead = labels("4194303", "1");
    let alive = labels(&me, &start);
    create("secret", &format!("pbtest-dead-{tag}"), &dead);
    create("network", &format!("pbtest-dead-{tag}"), &dead);
    create("secret", &format!("pbtest-alive-{tag}"), &alive);
    let gc = packbox(&["gc", "--json"], &[]);
    let left = objects_with_test_label(&tag);
    for name in &left {
        let kind = name.split(' ').next().unwrap_or("secret");
        let id = name.split(' ').nth(1).unwrap_or("");
        let _ = Command::new("docker").args([kind, "rm", id]).output();
    }
    assert_eq!(gc.code(), 0, "{}", gc.stderr());
    assert_eq!(
        left,
        [format!("secret pbtest-alive-{tag}")],
        "{}",
        gc.stdout()
    );
}

fn objects_with_test_label(tag: &str) -> Vec<String> {
    let filter = format!("label=packbox.test={tag}");
    let mut found = Vec::new();
    for kind in ["service", "secret", "network"] {
        let output = Command::new("docker")
            .args([kind, "ls", "--filter", &filter, "--format", "{{.Name}}"])
            .output()
            .expect("docker ls");
        found.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|name| format!("{kind} {name}")),
        );
    }
    found
}

#[test]
fn memory_stays_flat_under_an_output_flood() {
    require_engine();
    let _swarm = use_swarm();
    let peak = |action: &str| -> (u64, Value) {
        let packs = repo_root().join("tests/fixtures");
        let child = spawn_packbox(&[
            "--backend",
            "swarm",
            "run",
            "--packs",
            &packs.to_string_lossy(),
            action,
            "--json",
            "--seccomp",
            "engine-default",
            "--allow-weaker-sandbox",
            "--max-output",
            "1m",
        ]);
        let pid = child.id();
        let status = format!("/proc/{pid}/status");
        let sampler = std::thread::spawn(move || {
            let mut peak_kib = 0;
            while let Ok(text) = std::fs::read_to_string(&status) {
                if let Some(kib) = text
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak_kib = peak_kib.max(kib);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak_kib
        });
        let output = child.wait_with_output().expect("packbox ends");
        let peak_kib = sampler.join().expect("sampler");
        assert_no_swarm_leftovers(pid);
        let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
        (peak_kib, outcome)
    };
    let (quiet, _) = peak("bench.noop");
    let (flood, outcome) = peak("bench.flood");
    println!("peak RSS: {quiet} KiB for a quiet action, {flood} KiB under a 100 MiB flood");
    assert_eq!(outcome["status"], "succeeded", "{}", outcome["error"]);
    assert_eq!(outcome["stdout_truncated"], true);
    let stdout = outcome["stdout"].as_str().expect("stdout");
    assert!(
        stdout.starts_with(&"x".repeat(1 << 20))
            && stdout.ends_with("\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n"),
        "1 MiB kept, then the marker: {}",
        &stdout[stdout.len().saturating_sub(80)..]
    );
    assert!(quiet > 0 && flood > 0, "RSS was sampled");
    assert!(
        flood < quiet + 8 * 1024,
        "100 MiB of output grew packbox from {quiet} KiB to {flood} KiB"
    );
}

#[test]
fn the_head_of_a_flood_is_kept_though_the_log_rotates() {
    require_engine();
    let _swarm = use_swarm();
    // A million lines (7 MB, and tens of MB in the log's own framing) against log files of
    // 16 MiB (the least a task's log file holds): the head is recognisable, and the log rotates
    // before the end.
    let run = swarm_run(
        &swarm_packs(),
        "swarmcheck.count",
        &["--max-output", "1m", "-p", "to=1000000"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["stdout_truncated"], true);
    let stdout = outcome["stdout"].as_str().expect("stdout");
    let expected: String = (1..=1000).map(|n| format!("{n}\n")).collect();
    let differs_at = stdout
        .lines()
        .zip(expected.lines())
        .position(|(got, want)| got != want);
    assert!(
        stdout.starts_with(&expected),
        "the head differs from line {differs_at:?} on: {}",
        stdout
            .lines()
            .skip(differs_at.unwrap_or(0).saturating_sub(2))
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

/// The engine client logs the body of every request it sends at debug level, and a Swarm run's
/// parameter document travels in one (the secret's data, base64): no `--log` level may print
/// it. The attack: `--backend swarm --log debug` wrote the secret-create body to the log.
#[test]
fn no_log_level_prints_the_parameter_secrets_request_body() {
    require_engine();
    let _swarm = use_swarm();
    // `{"token":"` and the secret are 27 bytes: whatever follows in the document, its base64
    // starts with these 36 characters.
    let document_head = format!("{{\"token\":\"{SECRET}");
    assert_eq!(document_head.len() % 3, 0);
    let encoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(document_head.as_bytes())
    };
    assert_eq!(encoded.len(), 36, "{encoded}");
    for level in ["debug", "trace", "bollard=trace"] {
        let packs = swarm_packs().to_string_lossy().into_owned();
        let mut args = vec![
            "--backend",
            "swarm",
            "run",
            "--packs",
            packs.as_str(),
            "swarmcheck.inspect",
            "--json",
            "--secret",
        ];
        let secret = format!("token={SECRET}");
        args.push(&secret);
        args.extend_from_slice(&ENGINE_PROFILE);
        let run = packbox(&args, &[("PACKBOX_LOG", level)]);
        assert_no_swarm_leftovers(run.pid);
        assert_eq!(run.code(), 0, "{level}: {}", run.stderr());
        let log = run.stderr();
        if level != "bollard=trace" {
            assert!(
                log.contains("DEBUG"),
                "{level}: the log level took effect: {log}"
            );
        }
        assert!(!log.contains(SECRET), "{level}: the secret is in the log");
        assert!(
            !log.contains(&encoded),
            "{level}: the document's base64 is in the log"
        );
        let engine_client_lines = log
            .lines()
            .filter(|line| {
                (line.contains("DEBUG") || line.contains("TRACE")) && line.contains("bollard")
            })
            .count();
        assert_eq!(
            engine_client_lines, 0,
            "{level}: the engine client's debug lines: {log}"
        );
    }
}
