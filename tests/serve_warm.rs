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
    let metrics = api.get_text("/metrics").await;
    metrics.lines().any(|line| {
        line.starts_with("packbox_warm_idle_containers{")
            && line.contains(&format!("action=\"{action}\""))
            && !line.ends_with(" 0")
    })
}
