//! `packbox run --server URL`: the same output and exit codes as a local run, `--follow`
//! streams, Ctrl-C cancels the execution on the server, the token comes from PACKBOX_TOKEN.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

const LONG: Duration = Duration::from_secs(120);
const TOKEN: &str = "client-test-token-0123456789";

/// stderr with the run's duration masked (it differs between any two runs).
fn masked(stderr: &str) -> String {
    let duration = regex::Regex::new(r", \d+ ms,").expect("regex");
    duration.replace_all(stderr, ", N ms,").into_owned()
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Finished {
    packbox(args, env)
}

#[test]
fn a_run_through_a_server_prints_and_exits_as_a_local_one() {
    require_engine();
    let server = Server::start(ServerOptions {
        env: vec![("PACKBOX_SERVE_TOKEN".into(), TOKEN.into())],
        ..ServerOptions::default()
    });
    let packs = service_packs().display().to_string();
    let env = [("PACKBOX_TOKEN", TOKEN)];
    for (case, args) in [
        (
            "success",
            vec![
                "svc.tell",
                "-p",
                "label=hello",
                "--secret",
                "api_key=s3cr3t-9876",
            ],
        ),
        ("failure", vec!["svc.pyinfo", "-p", "fail=true"]),
        ("node failure", vec!["svc.nodeinfo", "-p", "fail=true"]),
        (
            "timeout",
            vec!["svc.sleep", "-p", "seconds=30", "--timeout", "1"],
        ),
        ("bad parameter", vec!["svc.sleep", "-p", "seconds=soon"]),
        (
            "unknown parameter",
            vec!["svc.sleep", "-p", "seconds=1", "-p", "colour=red"],
        ),
    ] {
        let mut local_args = vec!["run", "--packs", packs.as_str()];
        local_args.extend(&args);
        let mut remote_args = vec!["run", "--server", server.url.as_str()];
        remote_args.extend(&args);
        let local = run_with(&local_args, &[]);
        let remote = run_with(&remote_args, &env);
        assert_eq!(remote.code(), local.code(), "{case}: {}", remote.stderr());
        assert_eq!(remote.stdout(), local.stdout(), "{case}");
        if local.code() == 2 {
            // Input errors: the same problems, named the same way.
            for line in local.stderr().lines().filter(|l| l.contains('`')) {
                let problem = line.trim_start_matches("error: ");
                let named = problem.split('`').nth(1).unwrap_or("");
                assert!(
                    remote.stderr().contains(named),
                    "{case}: {}",
                    remote.stderr()
                );
            }
        } else {
            assert_eq!(masked(&remote.stderr()), masked(&local.stderr()), "{case}");
        }
    }
    // --json prints the outcome's fields (and the record's).
    let local = run_with(&["run", "--packs", &packs, "svc.pyinfo", "--json"], &[]).json();
    let remote = run_with(
        &["run", "--server", &server.url, "svc.pyinfo", "--json"],
        &env,
    )
    .json();
    for field in [
        "status",
        "exit_code",
        "result",
        "result_truncated",
        "result_error",
        "stdout",
        "stderr",
        "error",
        "runtime",
        "pack_version",
        "pack_digest",
        "image",
    ] {
        assert_eq!(remote[field], local[field], "{field}");
    }
    for field in local.as_object().expect("an object").keys() {
        assert!(remote.get(field).is_some(), "the record lacks `{field}`");
    }
    assert!(remote["id"].is_string() && remote["queued_at"].is_string());
}

#[test]
fn unknown_actions_missing_tokens_and_sandbox_flags_are_input_errors() {
    require_engine();
    let server = Server::start(ServerOptions {
        env: vec![("PACKBOX_SERVE_TOKEN".into(), TOKEN.into())],
        ..ServerOptions::default()
    });
    let url = server.url.as_str();
    let unknown = run_with(
        &["run", "--server", url, "svc.nope"],
        &[("PACKBOX_TOKEN", TOKEN)],
    );
    assert_eq!(unknown.code(), 2);
    assert!(
        unknown.stderr().contains("svc.nope"),
        "{}",
        unknown.stderr()
    );
    let no_token = run_with(&["run", "--server", url, "svc.tell", "-p", "label=x"], &[]);
    assert_eq!(no_token.code(), 2);
    assert!(
        no_token.stderr().contains("PACKBOX_TOKEN"),
        "{}",
        no_token.stderr()
    );
    let flag = run_with(
        &["run", "--server", url, "svc.tell", "--memory", "1g"],
        &[("PACKBOX_TOKEN", TOKEN)],
    );
    assert_eq!(flag.code(), 2);
    assert!(flag.stderr().contains("--memory"), "{}", flag.stderr());
    let from_env = run_with(
        &["run", "svc.tell", "-p", "label=env"],
        &[("PACKBOX_TOKEN", TOKEN), ("PACKBOX_SERVER", url)],
    );
    assert_eq!(from_env.code(), 0, "{}", from_env.stderr());
    let bad_url = run_with(&["run", "--server", "ftp://x", "svc.tell"], &[]);
    assert_eq!(bad_url.code(), 2);
    assert!(
        bad_url.stderr().contains("client.server"),
        "{}",
        bad_url.stderr()
    );
    let nobody = run_with(&["run", "--server", "http://127.0.0.1:9", "svc.tell"], &[]);
    assert_eq!(nobody.code(), 125, "{}", nobody.stderr());
}

#[test]
fn follow_streams_the_output_as_it_comes() {
    require_engine();
    let server = Server::start_with_config("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_packbox"))
        .args([
            "run",
            "--server",
            &server.url,
            "svc.lines",
            "-p",
            "count=30",
            "-p",
            "pause_ms=100",
            "--follow",
        ])
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("packbox runs");
    let mut stdout = child.stdout.take().expect("stdout");
    // The first line arrives while the action still runs (it prints 30 lines, 100 ms apart).
    let mut first = [0u8; 7];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("a first line");
    assert_eq!(&first, b"line 1\n");
    let records = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async { Api::new(&server, None).get("/v1/executions").await.body });
    assert_eq!(records["executions"][0]["status"], "running", "{records}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest");
    let expected: String = (2..=30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(rest, expected);
    assert!(child.wait().expect("packbox exits").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_execution_on_the_server() {
    require_engine();
    let server = Server::start_with_config("run: {grace_seconds: 1}\n");
    let api = Api::new(&server, None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_packbox"))
        .args([
            "run",
            "--server",
            &server.url,
            "svc.sleep",
            "-p",
            "seconds=300",
        ])
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("packbox runs");
    let deadline = Instant::now() + LONG;
    let id = loop {
        let listed = api.get("/v1/executions").await;
        if let Some(id) = listed.body["executions"][0]["id"].as_str()
            && listed.body["executions"][0]["status"] == "running"
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut events = api.events(&id, None).await;
    while !events
        .next(LONG)
        .await
        .is_some_and(|e| e.event == "stderr" && e.text().contains("sleeping"))
    {}
    // SAFETY: kill(2) with the pid of our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().expect("packbox exits");
    assert_eq!(status.code(), Some(130));
    let record = api.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(record.body["status"], "cancelled", "{}", record.body);
}
