//! Durability of `packbox serve`'s records: a server killed with SIGKILL leaves its accepted runs
//! recorded; the next server on the same state folder marks them abandoned and sweeps their
//! containers before it listens. Old records are pruned in the background by class.

mod common;

use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_runs_are_abandoned_and_its_containers_swept_at_the_next_start() {
    require_engine();
    let state = state_dir();
    let options = || ServerOptions {
        config: "serve: {max_concurrent: 1}\n".into(),
        state: state.clone(),
        ..ServerOptions::default()
    };
    let mut first = Server::start(options());
    let api = Api::new(&first, None);
    let done = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
        )
        .await;
    assert_eq!(done.body["status"], "succeeded");
    let running = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 300}}),
        )
        .await;
    let queued = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 300}}),
        )
        .await;
    assert_eq!(running.status, 202);
    assert_eq!(queued.status, 202);
    let running_id = running.body["id"].as_str().expect("id").to_string();
    let queued_id = queued.body["id"].as_str().expect("id").to_string();
    // Wait until the first one's action runs, then kill the server as a crash would.
    let mut events = api.events(&running_id, None).await;
    loop {
        let event = events.next(LONG).await.expect("output");
        if event.event == "stderr" && event.text().contains("sleeping") {
            break;
        }
    }
    drop(events);
    let first_pid = first.pid();
    first.kill();
    assert!(
        !containers_of(first_pid).is_empty(),
        "the killed server's containers are still there"
    );

    let second = Server::start(options());
    // The start-up sweep removes what is there when the server starts; a container whose
    // creation the killed server had in flight may appear just after, and the re-sweep a few
    // seconds later removes it: wait for that, bounded.
    wait_until(
        "the killed server's containers are swept by the new server",
        Duration::from_secs(30),
        || containers_of(first_pid).is_empty(),
    );
    let api = Api::new(&second, None);
    for id in [&running_id, &queued_id] {
        let record = api.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(record.status, 200, "accepted runs are never lost");
        assert_eq!(record.body["status"], "abandoned", "{}", record.body);
        assert_eq!(
            record.body["error"],
            "the server stopped before the run ended"
        );
        assert!(record.body["finished_at"].is_string());
    }
    assert!(api.get(&format!("/v1/executions/{running_id}")).await.body["exec_id"].is_string());
    let kept = api
        .get(&format!(
            "/v1/executions/{}",
            done.body["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(
        kept.body["status"], "succeeded",
        "finished runs keep their ending"
    );
    // The output of an abandoned run ends with its status.
    let events = api.events(&running_id, None).await.rest(LONG).await;
    let end = events.last().expect("an end");
    assert_eq!(end.event, "end");
    assert!(end.data.contains("abandoned"), "{}", end.data);
    // And the new server works.
    let again = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
        )
        .await;
    assert_eq!(again.body["status"], "succeeded", "{}", again.body);
    let log = second.log();
    assert!(
        log.contains("abandoned"),
        "the start-up says what it found:\n{log}"
    );
}

/// Polls the listing until `done` says it is complete.
async fn until_listed(api: &Api, query: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + LONG;
    loop {
        let listed = api.get(&format!("/v1/executions?{query}")).await;
        let executions = listed.body["executions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done(&executions) {
            return;
        }
        assert!(Instant::now() < deadline, "never pruned: {}", listed.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_records_are_pruned_by_count_and_age_failures_kept_longer() {
    require_engine();
    let server = Server::start_with_config(
        "serve:\n  retention:\n    succeeded: {max_count: 2}\n    failed: {max_count: 100, max_age: 1h}\n    prune_every: 1s\n",
    );
    let api = Api::new(&server, None);
    let mut succeeded = Vec::new();
    for _ in 0..4 {
        let ok = api
            .post(
                "/v1/executions",
                &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
            )
            .await;
        assert_eq!(ok.body["status"], "succeeded");
        succeeded.push(ok.body["id"].as_str().expect("id").to_string());
    }
    for _ in 0..3 {
        let failed = api
            .post(
                "/v1/executions",
                &json!({"action": "svc.sleep", "parameters": {"seconds": 30}, "timeout_seconds": 1, "wait": true}),
            )
            .await;
        assert_eq!(failed.body["status"], "timeout", "{}", failed.body);
    }
    until_listed(&api, "status=succeeded", |e| e.len() == 2).await;
    let listed = api.get("/v1/executions?status=succeeded").await;
    let kept: Vec<String> = listed.body["executions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect();
    let newest: Vec<String> = succeeded[2..].iter().rev().cloned().collect();
    assert_eq!(kept, newest, "the newest successes stay");
    let failures = api.get("/v1/executions?status=timeout").await;
    assert_eq!(
        failures.body["executions"].as_array().map(Vec::len),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_past_their_age_go_while_failures_of_the_same_age_stay() {
    require_engine();
    let server = Server::start_with_config(
        "serve:\n  retention:\n    succeeded: {max_age: 1s}\n    failed: {max_age: 1h}\n    prune_every: 1s\n",
    );
    let api = Api::new(&server, None);
    let ok = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
        )
        .await;
    let failed = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 30}, "timeout_seconds": 1, "wait": true}),
        )
        .await;
    assert_eq!(failed.body["status"], "timeout");
    let ok_id = ok.body["id"].as_str().expect("id").to_string();
    until_listed(&api, "limit=10", |e| {
        e.iter().all(|x| x["id"] != ok_id.as_str())
    })
    .await;
    let still = api
        .get(&format!(
            "/v1/executions/{}",
            failed.body["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(still.status, 200, "the failure is kept");
    assert_eq!(
        api.get(&format!("/v1/executions/{ok_id}")).await.status,
        404
    );
}
