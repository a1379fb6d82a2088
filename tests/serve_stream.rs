//! `packbox serve` beyond the core: live output as Server-Sent Events (resumable, scrubbed),
//! cancellation (SIGTERM, grace, SIGKILL), `/metrics` and `/readyz`, against the real engine.

mod common;

use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

fn expected_lines(count: usize) -> (String, String) {
    let stdout = (1..=count).map(|i| format!("line {i}\n")).collect();
    let stderr = (1..=count)
        .filter(|i| i % 10 == 0)
        .map(|i| format!("err {i}\n"))
        .collect();
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_output_streams_while_running_and_resumes_after_a_dropped_connection() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.lines", "parameters": {"count": 40, "pause_ms": 100}}),
        )
        .await;
    assert_eq!(created.status, 202, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    let mut first = api.events(&id, None).await;
    let mut seen = Vec::new();
    while seen.iter().filter(|e: &&Sse| e.event == "stdout").count() < 5 {
        seen.push(first.next(LONG).await.expect("events while it runs"));
    }
    let record = api.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(record.body["status"], "running", "the output is live");
    // The connection drops; the client comes back with the last id it saw.
    drop(first);
    let last = seen.last().expect("events").id.clone();
    let mut resumed = api.events(&id, Some(&last)).await;
    let rest = resumed.rest(LONG).await;
    let end = rest.last().expect("an end event");
    assert_eq!(end.event, "end");
    let end: serde_json::Value = serde_json::from_str(&end.data).expect("JSON");
    assert_eq!(end, json!({"status": "succeeded", "exit_code": 0}));
    let all: Vec<Sse> = seen.into_iter().chain(rest).collect();
    let (stdout, stderr) = expected_lines(40);
    assert_eq!(
        stream_text(&all, "stdout"),
        stdout,
        "each line once, in order"
    );
    assert_eq!(stream_text(&all, "stderr"), stderr);
    assert!(all.iter().all(|e| e.event != "gap"));
    // Afterwards the stored output is served the same way, whole or from an id.
    let stored = api.events(&id, None).await.rest(LONG).await;
    assert_eq!(stream_text(&stored, "stdout"), stdout);
    assert_eq!(stream_text(&stored, "stderr"), stderr);
    let from_middle = api.events(&id, Some("70:8")).await.rest(LONG).await;
    assert_eq!(stream_text(&from_middle, "stdout"), stdout[70..]);
    assert_eq!(stream_text(&from_middle, "stderr"), stderr[8..]);
    let bad = api.get(&format!("/v1/executions/{id}/output")).await;
    assert_eq!(bad.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_stream() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let secret = "stream-secret-5a6b7c8d";
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.tell", "parameters": {"label": "x"}, "secrets": {"api_key": secret}}),
        )
        .await;
    let id = created.body["id"].as_str().expect("id").to_string();
    let live = api.events(&id, None).await.rest(LONG).await;
    let stored = api.events(&id, None).await.rest(LONG).await;
    for events in [&live, &stored] {
        let text = stream_text(events, "stdout") + &stream_text(events, "stderr");
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("stderr sees ***"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_sends_sigterm_then_sigkill_after_the_grace() {
    require_engine();
    let server = Server::start_with_config("run: {grace_seconds: 2}\n");
    let api = Api::new(&server, None);
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 300, "ignore_term": true}}),
        )
        .await;
    let id = created.body["id"].as_str().expect("id").to_string();
    // Cancel once the action has set up its signal handling (it says so on stderr).
    let mut events = api.events(&id, None).await;
    loop {
        let event = events.next(LONG).await.expect("the action's output");
        if event.event == "stderr" && event.text().contains("sleeping") {
            break;
        }
    }
    let exec_id = api.get(&format!("/v1/executions/{id}")).await.body["exec_id"]
        .as_str()
        .expect("the container's exec id")
        .to_string();
    let since = unix_now();
    let cancelled = api
        .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let ended = api.wait_final(&id, LONG).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["error"], "Execution was cancelled");
    let signals = engine_events(
        since,
        &[
            "type=container".into(),
            "event=kill".into(),
            format!("label=packbox.exec_id={exec_id}"),
        ],
        "{{.Actor.Attributes.signal}}",
    );
    assert_eq!(
        signals,
        ["15", "9"],
        "SIGTERM, then SIGKILL after the grace"
    );
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_executions_and_show_the_queue_and_the_pool() {
    require_engine();
    let server = Server::start_with_config(
        "serve: {max_concurrent: 1, drain_seconds: 1}\nrun: {grace_seconds: 1}\n",
    );
    let api = Api::new(&server, None);
    let ok = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
        )
        .await;
    assert_eq!(ok.body["status"], "succeeded");
    let late = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 30}, "timeout_seconds": 1, "wait": true}),
        )
        .await;
    assert_eq!(late.body["status"], "timeout", "{}", late.body);
    let running = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 60}}),
        )
        .await;
    let queued = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 60}}),
        )
        .await;
    // The pool refills off the runs' path: scrape until it holds the kind that ran.
    let warm_line =
        "packbox_warm_idle_containers{action=\"svc.sleep\",image=\"packbox/shell:5.2\"}";
    let deadline = Instant::now() + LONG;
    let text = loop {
        let scrape = http_client(LONG)
            .get(server.at("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert!(
            scrape.headers()["content-type"]
                .to_str()
                .unwrap_or("")
                .starts_with("application/openmetrics-text")
        );
        let text = scrape.text().await.expect("text");
        if text.contains(warm_line) {
            break text;
        }
        assert!(Instant::now() < deadline, "the pool never showed: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ended = |status: &str| {
        metric(
            &text,
            &format!("packbox_executions_total{{action=\"svc.sleep\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(ended("succeeded"), Some(1.0), "{text}");
    assert_eq!(ended("timeout"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "packbox_queue_depth"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "packbox_executions_in_flight"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "packbox_execution_duration_seconds_count{action=\"svc.sleep\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        metric(&text, "packbox_env_builds_total").is_some(),
        "{text}"
    );
    assert_eq!(
        metric(&text, "packbox_engine_errors_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "packbox_http_requests_total{route=\"/v1/executions\",code=\"201\"}"
        )
        .is_some(),
        "{text}"
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("packbox_"), "{line}");
    }
    for id in [&running.body["id"], &queued.body["id"]] {
        api.post(
            &format!("/v1/executions/{}/cancel", id.as_str().unwrap_or("")),
            &json!({}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_the_engine_answers_and_the_runtimes_are_verified() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    assert_eq!(api.get("/healthz").await.body, json!({"status": "ok"}));
    let deadline = Instant::now() + LONG;
    loop {
        let ready = api.get("/readyz").await;
        if ready.status == 200 {
            assert_eq!(
                ready.body,
                json!({"ready": true, "checks": {"engine": "ok", "runtimes": "ok", "accepting": "ok"}})
            );
            break;
        }
        assert_eq!(ready.status, 503);
        assert_eq!(
            ready.body["checks"]["runtimes"],
            "verifying the runtime images"
        );
        assert!(Instant::now() < deadline, "never ready: {}", ready.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
