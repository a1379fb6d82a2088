//! The run contract against the real engine: what an action receives (parameters, secrets,
//! environment), what packbox makes of what it prints, limits, timeouts, cancellation, cleanup.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-Value-7d1e";

fn contract(action: &str, args: &[&str]) -> Finished {
    run_json(
        &fixture_packs(),
        &format!("contract.{action}"),
        &with_engine_flags(args),
    )
}

/// The arguments, and what runs need on this engine (`common::engine::run_flags`).
fn with_engine_flags<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(engine::run_flags());
    all
}

fn contract_env(action: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let packs = fixture_packs();
    let packs = packs.to_string_lossy().into_owned();
    let action = format!("contract.{action}");
    let mut all = vec!["run", "--packs", packs.as_str(), action.as_str(), "--json"];
    all.extend(with_engine_flags(args));
    packbox(&all, env)
}

/// Runs, checks no container is left, and returns the outcome (which names the engine).
fn outcome(run: &Finished) -> Value {
    assert_no_leftovers(run);
    let outcome = run.json();
    engine::assert_outcome_engine(&outcome);
    outcome
}

#[test]
fn secrets_reach_stdin_but_never_the_environment() {
    require_engine();
    for action in ["report_py", "report_sh"] {
        let run = contract(action, &["--secret", &format!("api_key={SECRET}")]);
        assert_eq!(run.code(), 0, "{action}: {}", run.stderr());
        // The action prints what it got; the outcome must scrub it, so read the raw fields.
        let outcome = outcome(&run);
        let result = &outcome["result"];
        let stdin = result["stdin"].as_str().unwrap_or("");
        assert!(
            stdin.contains("\"api_key\":\"***\""),
            "{action}: delivered on stdin: {stdin}"
        );
        for field in [
            "environ",
            "env",
            "proc_self_environ",
            "proc_1_environ",
            "proc_1_cmdline",
            "argv",
        ] {
            let text = result[field].to_string();
            assert!(
                !text.contains("***"),
                "{action}: {field} holds the secret: {text}"
            );
            assert!(!text.contains(SECRET), "{action}: {field} holds the secret");
        }
        assert!(
            !run.stdout().contains(SECRET),
            "the outcome scrubs the value"
        );
        assert!(!run.stderr().contains(SECRET));
    }
}

#[test]
fn secrets_never_show_in_docker_inspect_or_labels() {
    require_engine();
    let packs = fixture_packs();
    let child = spawn_packbox(&with_engine_flags(&[
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "contract.secret_output",
        "--json",
        "-p",
        "sleep=4",
        "--secret",
        &format!("api_key={SECRET}"),
    ]));
    let container = wait_for_container(child.id());
    let inspect = Command::new("docker")
        .args(["inspect", &container])
        .output()
        .expect("docker inspect");
    let inspected = String::from_utf8_lossy(&inspect.stdout).into_owned();
    let output = child.wait_with_output().expect("packbox ends");
    assert!(inspect.status.success());
    assert!(
        inspected.contains("ATTUNE_EXEC_ID"),
        "inspected the run's container"
    );
    assert!(
        !inspected.contains(SECRET),
        "the secret shows in docker inspect"
    );
    assert!(!inspected.contains("api_key"), "not even the secret's name");
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    // The output schema marks `token` secret: redacted in the outcome, `user` kept.
    assert_eq!(outcome["result"], json!({"token": "***", "user": "ada"}));
    assert!(
        !outcome["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("generated-token")
    );
}

#[test]
fn secrets_are_isolated_between_runs_and_may_be_empty() {
    require_engine();
    let first = contract("report_py", &["--secret", &format!("api_key={SECRET}")]);
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let second = contract("report_py", &[]);
    let stdin = outcome(&second)["result"]["stdin"].clone();
    assert_eq!(
        stdin, "{\"name\":\"world\"}\n",
        "the second run sees only its own document"
    );

    let empty = contract("report_py", &["--secret", "api_key="]);
    assert_eq!(empty.code(), 0, "{}", empty.stderr());
    assert_eq!(
        outcome(&empty)["result"]["stdin"],
        "{\"api_key\":\"\",\"name\":\"world\"}\n"
    );
}

#[test]
fn a_secret_wins_over_a_parameter_and_secrets_files_are_read() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secrets.yaml");
    std::fs::write(&file, "name: from-secrets-file\n").expect("write");
    let run = contract(
        "report_py",
        &[
            "-p",
            "name=from-param",
            "--secrets-file",
            &file.to_string_lossy(),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(outcome(&run)["result"]["stdin"], "{\"name\":\"***\"}\n");
}

#[test]
fn each_delivery_and_format_is_byte_exact() {
    require_engine();
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
        (
            "yaml",
            "count: 3\nlist:\n- 1\n- x\nname: it's\nnested:\n  a:\n    b: true\n",
        ),
    ];
    for delivery in ["stdin", "file"] {
        for (format, bytes) in expected {
            let run = contract(&format!("params_{delivery}_{format}"), &args);
            assert_eq!(run.code(), 0, "{delivery}/{format}: {}", run.stderr());
            let outcome = outcome(&run);
            assert_eq!(outcome["stdout"], bytes, "{delivery}/{format}");
            if delivery == "file" {
                // Readable by the action's user only.
                assert_eq!(outcome["stderr"], "600 65534\n", "{delivery}/{format}");
            }
        }
    }
}

#[test]
fn the_environment_is_the_contract_and_nothing_of_packbox() {
    require_engine();
    let run = contract_env("report_py", &[], &[("PACKBOX_LEAK_CANARY", "leaked")]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = outcome(&run);
    let environ = outcome["result"]["environ"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(environ["ATTUNE_ACTION"], "contract.report_py");
    assert_eq!(environ["ATTUNE_PACK_REF"], "contract");
    // Attune's execution id is a positive integer; the run's UUID is packbox's own.
    let attune_exec_id = outcome["attune_exec_id"].as_u64().unwrap_or(0);
    assert!(attune_exec_id > 0, "{outcome}");
    assert_eq!(environ["ATTUNE_EXEC_ID"], attune_exec_id.to_string());
    assert_eq!(environ["PACKBOX_EXEC_ID"], outcome["exec_id"]);
    assert_eq!(environ["HOME"], "/tmp");
    assert_eq!(environ["ATTUNE_PARAMETER_DELIVERY"], "stdin");
    assert_eq!(environ["ATTUNE_PARAMETER_FORMAT"], "json");
    assert!(!environ.contains_key("ATTUNE_PARAMETER_FILE"));
    // The artifacts folder where packbox's init collects it (every engine); its bounds are
    // the init's alone.
    assert_eq!(environ["ATTUNE_ARTIFACTS_DIR"], "/tmp/artifacts");
    assert!(
        !environ.contains_key("PACKBOX_ARTIFACTS_LIMIT"),
        "{outcome}"
    );
    assert!(
        !environ.contains_key("PACKBOX_LEAK_CANARY"),
        "packbox's environment leaked"
    );
    assert!(environ.contains_key("PATH"));
    assert_eq!(outcome["result"]["cwd"], "/pack");
    let pythonpath = outcome["result"]["pythonpath"].as_str().unwrap_or("");
    assert!(
        pythonpath.split(':').any(|p| p == "/pack/lib"),
        "{pythonpath}"
    );
    assert_eq!(outcome["result"]["helper"], "lib on PYTHONPATH");
}

#[test]
fn output_formats_are_parsed_on_success_only() {
    require_engine();
    let json_last_line = contract("emit_json", &["-p", "out=starting up\n{\"ok\": true}\n"]);
    assert_eq!(outcome(&json_last_line)["result"], json!({"ok": true}));
    let yaml = contract("emit_yaml", &["-p", "out=a: 1\nb: [x, y]\n"]);
    assert_eq!(outcome(&yaml)["result"], json!({"a": 1, "b": ["x", "y"]}));
    let jsonl = contract("emit_jsonl", &["-p", "out={\"n\":1}\nnoise\n{\"n\":2}\n"]);
    assert_eq!(outcome(&jsonl)["result"], json!([{"n": 1}, {"n": 2}]));
    let text = contract("emit_text", &["-p", "out=plain"]);
    let text = outcome(&text);
    assert_eq!(text["result"], Value::Null);
    assert_eq!(text["stdout"], "plain", "no trailing newline added");

    let unparsable = contract("emit_json", &["-p", "out=not json at all"]);
    assert_eq!(unparsable.code(), 0, "a parse failure is not a failure");
    assert_eq!(outcome(&unparsable)["result"], Value::Null);

    let failed = contract(
        "emit_json",
        &["-p", "out={\"ok\": true}", "-p", "err=boom", "-p", "exit=3"],
    );
    assert_eq!(failed.code(), 1);
    let failed = outcome(&failed);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["result"], Value::Null, "parsed on exit 0 only");
    assert_eq!(failed["error"], "boom");
    assert_eq!(failed["exit_code"], 3);
}

#[test]
fn failure_messages_follow_the_contract() {
    require_engine();
    let many = "1\n2\n3\n4\n5\n6\nthe last line\n";
    let run = contract("emit_text", &["-p", &format!("err={many}"), "-p", "exit=2"]);
    assert_eq!(outcome(&run)["error"], "the last line");
    let silent = contract("emit_text", &["-p", "exit=4"]);
    assert_eq!(outcome(&silent)["error"], "Command exited with code 4");
}

#[test]
fn truncation_keeps_the_head_on_each_stream_and_both() {
    require_engine();
    let marker = |stream: &str| format!("\n\n[OUTPUT TRUNCATED: {stream} exceeded size limit]\n");
    let cases = [("300", "0"), ("0", "500"), ("1000", "1000")];
    for (out, err) in cases {
        let run = contract(
            "emit_text",
            &[
                "--max-output",
                "400",
                "-p",
                &format!("out_bytes={out}"),
                "-p",
                &format!("err_bytes={err}"),
            ],
        );
        assert_eq!(run.code(), 0, "{}", run.stderr());
        let outcome = outcome(&run);
        for (stream, bytes, fill) in [("stdout", out, "o"), ("stderr", err, "e")] {
            let bytes: usize = bytes.parse().unwrap_or(0);
            let text = outcome[stream].as_str().unwrap_or("");
            if bytes > 400 {
                assert_eq!(outcome[format!("{stream}_truncated")], true);
                assert_eq!(text, format!("{}{}", fill.repeat(400), marker(stream)));
            } else {
                assert_eq!(outcome[format!("{stream}_truncated")], false);
                assert_eq!(text, fill.repeat(bytes));
            }
        }
    }
}

#[test]
fn truncation_and_timeout_together() {
    require_engine();
    let run = contract(
        "emit_text",
        &[
            "--max-output",
            "300",
            "--timeout",
            "2",
            "--grace",
            "1",
            "-p",
            "out_bytes=5000",
            "-p",
            "sleep=60",
        ],
    );
    assert_eq!(run.code(), 124, "{}", run.stderr());
    let outcome = outcome(&run);
    assert_eq!(outcome["status"], "timeout");
    assert_eq!(outcome["error"], "Execution timed out after 2 seconds");
    assert_eq!(outcome["stdout_truncated"], true);
    assert!(
        outcome["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with(&"o".repeat(300))
    );
}

#[test]
fn a_timeout_sends_sigterm_then_sigkill_after_the_grace_period() {
    require_engine();
    // The init forwards the engine's SIGTERM to the action: one that traps it ends in the
    // grace period with its own status; one that ignores it is killed when the grace ends.
    let packs = repo_root().join("tests/fixtures/serve");
    for (ignore_term, code, stderr) in [
        ("false", 143, "sleeping\nterminated\n"),
        ("true", 137, "sleeping\n"),
    ] {
        let run = run_json(
            &packs,
            "svc.sleep",
            &with_engine_flags(&[
                "--timeout",
                "2",
                "--grace",
                "2",
                "-p",
                "seconds=60",
                "-p",
                &format!("ignore_term={ignore_term}"),
            ]),
        );
        assert_eq!(run.code(), 124, "{}", run.stderr());
        let outcome = outcome(&run);
        assert_eq!(outcome["status"], "timeout", "{outcome}");
        assert_eq!(outcome["exit_code"], code, "{outcome}");
        assert_eq!(outcome["stderr"], stderr, "{outcome}");
        assert_eq!(outcome["stdout"], "", "{outcome}");
    }
}

#[test]
fn cancelling_packbox_stops_the_action_and_leaves_nothing() {
    require_engine();
    let packs = fixture_packs();
    let child = spawn_packbox(&with_engine_flags(&[
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "contract.emit_text",
        "--json",
        "--grace",
        "1",
        "-p",
        "out=started",
        "-p",
        "sleep=60",
    ]));
    let pid = child.id();
    wait_for_running(&[format!("label=packbox.owner_pid={pid}")]);
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let output = child.wait_with_output().expect("packbox ends");
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    assert_eq!(outcome["status"], "cancelled", "{outcome}");
    assert!(containers_of(pid).is_empty(), "the container was removed");
}

#[test]
fn an_oom_kill_is_reported_as_oom() {
    require_engine();
    let run = run_json(&fixture_root(), "hostile.memory_hog", &["--memory", "64m"]);
    if engine::drops_limits() {
        // Never run without its limit: refused, naming it.
        engine::assert_refused_for_limits(&run);
        return;
    }
    let outcome = outcome(&run);
    assert_eq!(outcome["sandbox"]["memory_bytes"], 64 << 20);
    if engine::is_podman() {
        // Podman 4.3 on this cgroup v1 host never reports an OOM kill (its State.OOMKilled
        // stays false): the kill at the limit is certain, its cause is not reported.
        assert_eq!(outcome["status"], "failed", "{outcome}");
        assert_eq!(outcome["exit_code"], 137, "{outcome}");
        return;
    }
    assert_eq!(run.code(), 137, "{}", run.stderr());
    assert_eq!(outcome["status"], "oom");
}

#[test]
fn follow_streams_output_while_the_action_runs() {
    require_engine();
    let packs = fixture_packs();
    let mut child = spawn_packbox(&with_engine_flags(&[
        "run",
        "--packs",
        &packs.to_string_lossy(),
        "contract.emit_text",
        "--follow",
        "--json",
        "-p",
        "err=first line\n",
        "-p",
        "sleep=3",
    ]));
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .find(|line| line.as_ref().is_ok_and(|l| l.contains("first line")))
        .and_then(Result::ok);
    assert!(first.is_some(), "the line arrived");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the line arrived while the action was still running"
    );
    let output = child.wait_with_output().expect("packbox ends");
    let outcome: Value =
        serde_json::from_slice(&output.stdout).expect("stdout is the outcome alone");
    assert_eq!(outcome["stderr"], "first line\n");
}

#[test]
fn sandbox_settings_come_from_flags_and_packbox_yaml() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("packbox.yaml");
    std::fs::write(
        &config,
        "sandbox:\n  memory: 256m\n  pids: 64\n  tmp_size: 16m\nrun:\n  max_output: 1k\n",
    )
    .expect("write");
    let run = contract(
        "emit_text",
        &[
            "--config",
            &config.to_string_lossy(),
            "--pids",
            "32",
            "--cpus",
            "0.5",
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let sandbox = outcome(&run)["sandbox"].clone();
    assert_eq!(sandbox["memory_bytes"], 256 << 20);
    assert_eq!(sandbox["pids_limit"], 32, "the flag wins over the file");
    assert_eq!(sandbox["tmpfs_tmp_bytes"], 16 << 20);
    assert_eq!(sandbox["cpus"], 0.5);
    assert_eq!(sandbox["network"], "none");
    assert_eq!(sandbox["read_only_root"], true);
    assert_eq!(sandbox["user"], "65534:65534");

    std::fs::write(&config, "sandbox:\n  memroy: 1g\n").expect("write");
    let bad = contract("emit_text", &["--config", &config.to_string_lossy()]);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("memroy"), "{}", bad.stderr());

    let host = contract("emit_text", &["--network", "host"]);
    assert_eq!(
        host.code(),
        2,
        "host networking is refused: {}",
        host.stderr()
    );
}

#[test]
fn a_missing_oci_runtime_is_named_with_the_available_ones() {
    require_engine();
    let run = contract("emit_text", &["--oci-runtime", "runsc-not-installed"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("runsc-not-installed") && stderr.contains("runc"),
        "{stderr}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn orphans_of_dead_owners_are_swept_and_live_owners_kept() {
    require_engine();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let create = |pid: &str, start: &str| {
        let output = Command::new("docker")
            .args([
                "create",
                "--label",
                "packbox.managed=true",
                "--label",
                &format!("packbox.owner_pid={pid}"),
                "--label",
                &format!("packbox.owner_start={start}"),
                "--label",
                &format!("packbox.owner_host={}", host.trim()),
                "--label",
                "packbox.test=orphan-sweep",
                "packbox/shell:5.2",
                "true",
            ])
            .output()
            .expect("docker create");
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    // A pid that cannot exist, and this test process (alive) with its real start time.
    let dead = create("4194303", "1");
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
    let alive = create(&me, &start);

    let gc = packbox(&["gc", "--json"], &[]);
    let exists = |id: &str| {
        Command::new("docker")
            .args(["inspect", id])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    // Any packbox start sweeps orphans, so another test's run may have removed it first.
    let dead_gone = !exists(&dead);
    let alive_kept = exists(&alive);
    let _ = Command::new("docker")
        .args(["rm", "-f", &alive, &dead])
        .output();
    assert_eq!(gc.code(), 0, "{}", gc.stderr());
    assert!(dead_gone, "the orphan was removed: {}", gc.stdout());
    assert!(
        !gc.stdout().contains(&alive),
        "a live owner's container was touched"
    );
    assert!(alive_kept, "a live owner's container must stay");
}

#[test]
fn memory_stays_flat_under_an_output_flood() {
    require_engine();
    let peak = |action: &str| -> u64 {
        let packs = repo_root().join("tests/fixtures");
        let mut child = Command::new(env!("CARGO_BIN_EXE_packbox"))
            .args([
                "run",
                "--packs",
                &packs.to_string_lossy(),
                action,
                "--json",
                "--max-output",
                "1m",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("packbox starts");
        let status = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0;
        while child.try_wait().expect("try_wait").is_none() {
            if let Ok(text) = std::fs::read_to_string(&status)
                && let Some(kib) = text
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak_kib
    };
    let quiet = peak("bench.noop");
    let flood = peak("bench.flood");
    println!("peak RSS: {quiet} KiB for a quiet action, {flood} KiB under a 100 MiB flood");
    assert!(quiet > 0 && flood > 0, "RSS was sampled");
    assert!(
        flood < quiet + 8 * 1024,
        "100 MiB of output grew packbox from {quiet} KiB to {flood} KiB"
    );
}

fn fixture_root() -> std::path::PathBuf {
    repo_root().join("tests/fixtures")
}
