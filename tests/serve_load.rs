//! Load through `packbox serve` over HTTP (a smaller count than the benchmark's 1,000): every
//! run comes back exactly once and nothing is left on the engine; with the server killed
//! (SIGKILL) and restarted in the middle, every accepted run has a record and none stays
//! queued or running.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

const RUNS: u64 = 150;
const CONCURRENCY: usize = 16;
const LONG: Duration = Duration::from_secs(300);

/// Every record of the server, newest first (all pages).
async fn all_records(api: &Api) -> Vec<Value> {
    let mut records = Vec::new();
    let mut path = "/v1/executions?limit=500".to_string();
    loop {
        let page = api.get(&path).await;
        records.extend(
            page.body["executions"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/executions?limit=500&cursor={cursor}"),
            None => return records,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_at_concurrency_sixteen_come_back_once_each_and_leave_nothing() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let outcomes: Vec<Value> = futures::stream::iter(0..RUNS)
        .map(|n| {
            let api = api.clone();
            async move {
                let body = json!({"action": "svc.echo", "parameters": {"n": n}, "wait": true});
                let created = api
                    .post_with_key("/v1/executions", &body, &format!("load-{n}"))
                    .await;
                assert!([201, 202].contains(&created.status), "{}", created.body);
                let id = created.body["id"].as_str().expect("id").to_string();
                api.wait_final(&id, LONG).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut echoed = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut exec_ids = BTreeSet::new();
    for outcome in &outcomes {
        assert_eq!(outcome["status"], "succeeded", "{outcome}");
        echoed.insert(outcome["result"]["n"].as_u64().expect("n echoed"));
        ids.insert(outcome["id"].as_str().unwrap_or("").to_string());
        exec_ids.insert(outcome["exec_id"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(echoed, (0..RUNS).collect::<BTreeSet<_>>(), "none lost");
    assert_eq!(ids.len() as u64, RUNS, "none duplicated");
    assert_eq!(exec_ids.len() as u64, RUNS, "one container each");
    let records = all_records(&api).await;
    assert_eq!(records.len() as u64, RUNS, "one record each");
    let pid = server.pid();
    drop(server);
    assert!(containers_of(pid).is_empty(), "nothing left on the engine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_loses_no_accepted_run() {
    require_engine();
    let state = state_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let options = move || ServerOptions {
        state: state.clone(),
        listen: format!("127.0.0.1:{port}"),
        ..ServerOptions::default()
    };
    let first = Arc::new(Mutex::new(Server::start(options())));
    let base = first.lock().map(|s| s.url.clone()).expect("url");
    let client = http_client(Duration::from_secs(60));
    let accepted: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let first_pid = first.lock().map(|s| s.pid()).expect("pid");

    // Clients submit with idempotency keys and retry whatever fails (the kill, the restart).
    let submitting = futures::stream::iter(0..RUNS)
        .map(|n| {
            let (client, base, accepted) = (client.clone(), base.clone(), Arc::clone(&accepted));
            async move {
                let deadline = Instant::now() + LONG;
                loop {
                    let sent = client
                        .post(format!("{base}/v1/executions"))
                        .header("Idempotency-Key", format!("kill-{n}"))
                        .json(&json!({"action": "svc.echo", "parameters": {"n": n}}))
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
                    assert!(Instant::now() < deadline, "run {n} was never accepted");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>();
    let killing = {
        let (accepted, first, options) =
            (Arc::clone(&accepted), Arc::clone(&first), options.clone());
        async move {
            let deadline = Instant::now() + LONG;
            while accepted.lock().map(|a| a.len() as u64).unwrap_or(0) < RUNS / 3 {
                assert!(Instant::now() < deadline, "the load never got going");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Ok(mut server) = first.lock() {
                server.kill();
            }
            let second = options();
            tokio::task::spawn_blocking(move || Server::start(second))
                .await
                .expect("the second server starts")
        }
    };
    let ((), second) = tokio::join!(
        async {
            submitting.await;
        },
        killing
    );
    let api = Api::new(&second, None);
    let accepted = accepted.lock().map(|a| a.clone()).expect("accepted");
    assert_eq!(
        accepted.len() as u64,
        RUNS,
        "every run was accepted in the end"
    );
    let mut statuses = BTreeMap::new();
    for (n, id) in &accepted {
        let record = api.wait_final(id, LONG).await;
        let status = record["status"].as_str().unwrap_or("").to_string();
        assert!(
            status == "succeeded" || status == "abandoned",
            "run {n}: {record}"
        );
        if status == "succeeded" {
            assert_eq!(record["result"]["n"].as_u64(), Some(*n));
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    let distinct: BTreeSet<&String> = accepted.values().collect();
    assert_eq!(distinct.len() as u64, RUNS, "one execution per key");
    let records = all_records(&api).await;
    assert_eq!(records.len() as u64, RUNS, "no duplicate: {statuses:?}");
    assert!(
        records
            .iter()
            .all(|r| r["status"] != "running" && r["status"] != "queued"),
        "none stays running"
    );
    let second_pid = second.pid();
    drop(second);
    assert!(
        containers_of(first_pid).is_empty(),
        "the killed server's leftovers were swept"
    );
    assert!(containers_of(second_pid).is_empty());
}
