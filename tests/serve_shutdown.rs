//! Graceful shutdown of `packbox serve` on SIGTERM: `/readyz` fails at once, new executions are
//! refused, running ones get the drain time and are then cancelled, the warm pool is removed,
//! the process exits 0 and leaves no container.

mod common;

use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

/// Waits until the execution's action says it is sleeping (so its signal handling is set up).
async fn until_sleeping(api: &Api, id: &str) {
    let mut events = api.events(id, None).await;
    loop {
        let event = events.next(LONG).await.expect("the action's output");
        if event.event == "stderr" && event.text().contains("sleeping") {
            return;
        }
    }
}

/// The status the records file says an execution has.
fn recorded_status(state: &std::path::Path, id: &str) -> String {
    let connection =
        rusqlite::Connection::open(state.join("executions.sqlite")).expect("the records open");
    connection
        .query_row("SELECT status FROM executions WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .expect("a record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_cancels_removes_the_pool_and_exits_zero() {
    require_engine();
    let state = state_dir();
    let mut server = Server::start(ServerOptions {
        config: "serve: {drain_seconds: 4}\nrun: {grace_seconds: 1}\n".into(),
        state: state.clone(),
        ..ServerOptions::default()
    });
    let api = Api::new(&server, None);
    // A pooled container of another kind, so there is a pool to remove.
    let pooled = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.tell", "parameters": {"label": "x"}, "wait": true}),
        )
        .await;
    assert_eq!(pooled.body["status"], "succeeded");
    let short = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 2}}),
        )
        .await;
    let long = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 300}}),
        )
        .await;
    let short_id = short.body["id"].as_str().expect("id").to_string();
    let long_id = long.body["id"].as_str().expect("id").to_string();
    until_sleeping(&api, &short_id).await;
    until_sleeping(&api, &long_id).await;
    let mut long_output = api.events(&long_id, None).await;

    let stopped_at = Instant::now();
    server.send_sigterm();
    let deadline = Instant::now() + LONG;
    loop {
        let ready = api.get("/readyz").await;
        if ready.status == 503 && ready.body["checks"]["accepting"] == "shutting_down" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never failed: {}",
            ready.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}}),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "shutting_down");
    // The short run finishes within the drain time; clients waiting on it get its end.
    let short_end = api.get(&format!("/v1/executions/{short_id}?wait=30")).await;
    assert_eq!(short_end.body["status"], "succeeded", "{}", short_end.body);
    // The long one is cancelled after the drain time; its stream ends with that.
    let rest = long_output.rest(LONG).await;
    let end = rest.last().expect("an end event");
    assert_eq!(end.event, "end");
    assert!(end.data.contains("cancelled"), "{}", end.data);

    let status = server.wait_exit(LONG);
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(4),
        "the drain time was given"
    );
    assert_eq!(recorded_status(&state, &short_id), "succeeded");
    assert_eq!(recorded_status(&state, &long_id), "cancelled");
    assert!(
        containers_of(server.pid()).is_empty(),
        "the run containers and the pool are gone"
    );
    assert!(
        server.log().contains("packbox serve: stopped"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_stops_at_once() {
    require_engine();
    let mut server = Server::start_with_config("serve: {drain_seconds: 600}\n");
    let api = Api::new(&server, None);
    let done = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
        )
        .await;
    assert_eq!(done.body["status"], "succeeded");
    let started = Instant::now();
    let status = server.terminate(LONG);
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "nothing to drain: no waiting for the drain time"
    );
    assert!(containers_of(server.pid()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_stderr_is_gone_still_stops_on_sigterm_and_removes_its_pool() {
    require_engine();
    let mut server = Server::start(ServerOptions {
        stderr_closed_once_listening: true,
        ..ServerOptions::default()
    });
    let api = Api::new(&server, None);
    // A run after the pipe closed (the server logs it to the closed stderr) leaves a pooled
    // container, so the stop has a pool to remove.
    let done = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.tell", "parameters": {"label": "x"}, "wait": true}),
        )
        .await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    let status = server.terminate(LONG);
    assert!(
        status.success(),
        "SIGTERM with stderr closed: {status} (a panic writing \"stopping\" exits 101, a panic in the signal task never stops)"
    );
    assert!(containers_of(server.pid()).is_empty());
}
