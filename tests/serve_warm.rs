//! The server's warm pool on the real engine: later runs of a kind get a container started
//! before they were asked for, with the interpreter already running for Python and Node.js; the
//! outcome is the one a fresh container gives (same contract, one action per container).

mod common;

use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// When the engine created the container of an exec id (ns since the epoch).
fn created_ns(exec_id: &str) -> u128 {
    engine_events(
        unix_now() - 300,
        &[
            "type=container".to_string(),
            "event=create".to_string(),
            format!("label=packbox.exec_id={exec_id}"),
        ],
        "{{.TimeNano}}",
    )
    .first()
    .and_then(|t| t.parse().ok())
    .unwrap_or(u128::MAX)
}

/// The fields of an outcome that must not depend on how the container was started.
fn contract(outcome: &Value) -> Value {
    json!({
        "status": outcome["status"],
        "exit_code": outcome["exit_code"],
        "result": outcome["result"],
        "stdout": outcome["stdout"],
        "stderr": outcome["stderr"],
        "error": outcome["error"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_runs_with_preloaded_interpreters_keep_the_contract() {
    require_engine();
    let server = Server::start_with_config("serve: {warm: {per_kind: 1, preload: true}}\n");
    let api = Api::new(&server, None);
    let packs = service_packs();
    for action in ["svc.pyinfo", "svc.nodeinfo", "svc.tell"] {
        for fail in [false, true] {
            let parameters = if action == "svc.tell" {
                json!({"label": format!("fail={fail}")})
            } else {
                json!({"fail": fail})
            };
            let mut args = vec!["--packs".to_string(), packs.display().to_string()];
            for (name, value) in parameters.as_object().expect("object") {
                args.push("-p".into());
                args.push(format!(
                    "{name}={}",
                    value.as_str().map_or(value.to_string(), str::to_string)
                ));
            }
            let mut cli = vec!["run".to_string(), action.to_string(), "--json".to_string()];
            cli.extend(args);
            let cold = packbox_owned(&cli, &[]).json();
            // The first run of a kind may be cold; the one after it is warm.
            let mut warm = Value::Null;
            for attempt in 0..2 {
                let deadline = Instant::now() + LONG;
                while attempt > 0 && !warm_for(&api, action).await {
                    assert!(
                        Instant::now() < deadline,
                        "the pool never refilled for {action}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let asked = now_ns();
                let created = api
                    .post(
                        "/v1/executions",
                        &json!({"action": action, "parameters": parameters, "wait": true}),
                    )
                    .await;
                assert_eq!(created.status, 201, "{}", created.body);
                warm = created.body;
                if attempt > 0 {
                    let exec_id = warm["exec_id"].as_str().expect("exec id");
                    assert!(
                        created_ns(exec_id) < asked,
                        "{action}: a pre-started container"
                    );
                }
            }
            assert_eq!(contract(&warm), contract(&cold), "{action} fail={fail}");
        }
    }
    // The idle containers of Python and Node.js runs hold a running interpreter, not a shell
    // (under packbox's init, which runs the command).
    for (action, interpreter) in [("svc.pyinfo", "python3"), ("svc.nodeinfo", "node")] {
        let ids = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=packbox.owner_pid={}", server.pid()),
                "--filter",
                &format!("label=packbox.action={action}"),
            ])
            .output()
            .expect("docker ps");
        let id = String::from_utf8_lossy(&ids.stdout)
            .lines()
            .next()
            .map(str::to_string);
        let id = id.unwrap_or_else(|| panic!("an idle container for {action}"));
        let inspected = std::process::Command::new("docker")
            .args(["inspect", "--format", "{{json .Config.Cmd}}", &id])
            .output()
            .expect("docker inspect");
        let cmd: Vec<String> = serde_json::from_slice(&inspected.stdout).expect("a command");
        assert_eq!(cmd[..2], ["/.packbox/packbox-init", "--"], "{cmd:?}");
        assert_eq!(cmd[2], interpreter, "{cmd:?}");
        assert!(!cmd.contains(&"packbox-warm".to_string()), "{cmd:?}");
    }
    let pid = server.pid();
    drop(server);
    assert!(
        containers_of(pid).is_empty(),
        "the pool is removed at shutdown"
    );
}

/// Whether the pool holds a container for the action now.
async fn warm_for(api: &Api, action: &str) -> bool {
    idle_for(api, action).await > 0
}

/// How many containers the pool holds for the action now.
async fn idle_for(api: &Api, action: &str) -> u64 {
    let metrics = api.get_text("/metrics").await;
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("packbox_warm_idle_containers{")
                && line.contains(&format!("action=\"{action}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The exec ids of the running containers of a packbox process for an action.
fn running_exec_ids(pid: u32, action: &str) -> Vec<String> {
    common::docker_ps(&[
        "--filter",
        &format!("label=packbox.owner_pid={pid}"),
        "--filter",
        &format!("label=packbox.action={action}"),
        "--format",
        "{{.Label \"packbox.exec_id\"}}",
    ])
}

/// One run of the echo action, answered; its exec id.
async fn echo(api: &Api) -> String {
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.echo", "parameters": {"n": 1}, "wait": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "succeeded", "{}", created.body);
    created.body["exec_id"]
        .as_str()
        .expect("an exec id")
        .to_string()
}

/// A client that sends runs one after another (each the moment the last was answered), pauses
/// longer than the window its rate of runs is measured over and than the pool's trim period (a CI
/// pipeline between two jobs), and comes back: it finds ready as many containers as its series
/// asked for, not one: each of its next runs takes a container that was waiting before it came
/// back. The pool's limit is two here, so that any series of two or more asks for both, however
/// loaded the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_of_runs_one_after_another_finds_its_containers_ready_after_a_pause() {
    require_engine();
    let server = Server::start_with_config("serve: {warm: {per_kind: 2}}\n");
    let api = Api::new(&server, None);
    for _ in 0..6 {
        echo(&api).await;
    }
    let deadline = Instant::now() + LONG;
    while idle_for(&api, "svc.echo").await < 2 {
        assert!(Instant::now() < deadline, "the pool never held two");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client's pause: the 10 s rate window and at least one trim (every 15 s) pass.
    tokio::time::sleep(Duration::from_secs(26)).await;
    assert_eq!(
        idle_for(&api, "svc.echo").await,
        2,
        "the series' demand is remembered through the pause"
    );
    // The containers waiting for the series: the server's running ones (no run is going on).
    let waiting = running_exec_ids(server.pid(), "svc.echo");
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    let (first, second) = (echo(&api).await, echo(&api).await);
    for (index, exec_id) in [first, second].iter().enumerate() {
        assert!(
            waiting.contains(exec_id),
            "run {index} of the series after the pause took a container of the pool's ({exec_id}, \
             waiting: {waiting:?})\nthe server's log:\n{}",
            server.log()
        );
    }
}
