//! API v1 of `packbox serve`, through real HTTP on loopback against the real engine: creating,
//! waiting, reading and listing executions, idempotency, tokens, admission and bad input.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::json;

const TOKEN: &str = "ci-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_execution_comes_back_final_and_stays_readable() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let record = &created.body;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["result"], json!({"slept": 0}));
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["pack_version"], "2.1.0");
    assert_eq!(record["pack_digest"].as_str().map(str::len), Some(64));
    assert_eq!(record["runtime"], "shell");
    assert_eq!(record["image"], "packbox/shell:5.2");
    assert_eq!(record["sandbox"]["network"], "none");
    for time in ["queued_at", "started_at", "finished_at"] {
        assert!(
            record[time].as_str().is_some_and(|t| t.ends_with('Z')),
            "{time}: {record}"
        );
    }
    let id = record["id"].as_str().expect("an id");
    assert_eq!(
        created.headers["location"].to_str().ok(),
        Some(format!("/v1/executions/{id}").as_str())
    );
    let read = api.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        &read.body, record,
        "the record reads back as it was answered"
    );
    let exec_id = record["exec_id"].as_str().expect("an exec id");
    let created = engine_events(
        unix_now() - 120,
        &[
            "type=container".to_string(),
            "event=create".to_string(),
            format!("label=packbox.exec_id={exec_id}"),
        ],
        "{{.ID}}",
    );
    assert_eq!(created.len(), 1, "one container ran the action");
    let pid = server.pid();
    drop(server);
    assert!(containers_of(pid).is_empty(), "the server left containers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_the_answer_is_accepted_and_a_get_can_wait() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 2}}),
        )
        .await;
    assert_eq!(created.status, 202, "{}", created.body);
    let status = created.body["status"].as_str().unwrap_or("");
    assert!(
        status == "queued" || status == "running",
        "{}",
        created.body
    );
    let id = created.body["id"].as_str().expect("an id");
    let waited = api.get(&format!("/v1/executions/{id}?wait=60")).await;
    assert_eq!(waited.status, 200);
    assert_eq!(waited.body["status"], "succeeded", "{}", waited.body);
    assert_eq!(waited.body["result"]["slept"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_at_the_server_maximum_with_202() {
    require_engine();
    let server = Server::start_with_config("serve: {max_wait_seconds: 1}\n");
    let api = Api::new(&server, None);
    let asked = Instant::now();
    let created = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 30}, "wait": true}),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(created.status, 202, "{}", created.body);
    assert_eq!(created.body["status"], "running", "{}", created.body);
    assert!(
        took < Duration::from_secs(25),
        "the wait was not bounded: {took:?}"
    );
    // A GET asking for longer is capped the same way.
    let id = created.body["id"].as_str().expect("an id");
    let read = api.get(&format!("/v1/executions/{id}?wait=3600")).await;
    assert_eq!(read.body["status"], "running");
    let cancelled = api
        .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let ended = api.wait_final(id, Duration::from_secs(60)).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_naming_what_is_wrong() {
    require_engine();
    let server = Server::start_with_config("serve: {max_timeout_seconds: 60, max_body: 2k}\n");
    let api = Api::new(&server, None);
    let refused = |answer: &Answer, status: u16, code: &str, says: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "`{says}` not in: {message}");
    };
    let post = |body: serde_json::Value| {
        let api = api.clone();
        async move { api.post("/v1/executions", &body).await }
    };
    refused(
        &post(json!({"action": "svc.nope"})).await,
        404,
        "not_found",
        "svc.nope",
    );
    refused(
        &post(json!({"action": "nope.sleep"})).await,
        404,
        "not_found",
        "nope.sleep",
    );
    refused(
        &post(json!({"action": "Bad Ref"})).await,
        400,
        "invalid_request",
        "PACK.ACTION",
    );
    refused(
        &post(json!({"action": "svc.sleep", "extra": 1})).await,
        400,
        "invalid_request",
        "unknown field `extra`",
    );
    refused(
        &post(json!({"action": "svc.sleep", "timeout_seconds": "soon"})).await,
        400,
        "invalid_request",
        "timeout_seconds",
    );
    refused(
        &post(json!({"action": "svc.sleep", "parameters": {"seconds": 1}, "timeout_seconds": 61}))
            .await,
        400,
        "invalid_request",
        "at most 60",
    );
    refused(
        &post(json!({"action": "svc.sleep", "secrets": "hunter2-hunter2"})).await,
        400,
        "invalid_request",
        "secrets: expected an object",
    );
    let secret_echo = post(json!({"action": "svc.sleep", "secrets": "hunter2-hunter2"})).await;
    assert!(
        !secret_echo.body.to_string().contains("hunter2"),
        "{}",
        secret_echo.body
    );

    let params =
        post(json!({"action": "svc.tell", "parameters": {"label": 3, "colour": "red"}})).await;
    refused(&params, 400, "invalid_request", "invalid parameters");
    let named: BTreeSet<&str> = params.body["error"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["parameter"].as_str())
        .collect();
    // `colour` is not declared: delivered with a warning (as Attune does), not a problem.
    assert_eq!(named, BTreeSet::from(["label"]), "{}", params.body);

    refused(
        &api.post_raw(
            "/v1/executions",
            "application/json",
            b"{\"action\": ".to_vec(),
        )
        .await,
        400,
        "invalid_request",
        "malformed JSON",
    );
    refused(
        &api.post_raw("/v1/executions", "text/plain", b"{}".to_vec())
            .await,
        415,
        "unsupported_media_type",
        "application/json",
    );
    let big = serde_json::to_vec(
        &json!({"action": "svc.sleep", "parameters": {"pad": "x".repeat(4096)}}),
    )
    .expect("json");
    refused(
        &api.post_raw("/v1/executions", "application/json", big)
            .await,
        413,
        "too_large",
        "2048 bytes",
    );
    refused(
        &api.get("/v1/executions/no-such-id").await,
        404,
        "not_found",
        "no-such-id",
    );
    refused(
        &api.get("/v1/executions?status=lost").await,
        400,
        "invalid_request",
        "lost",
    );
    refused(
        &api.get("/v1/executions?limit=0").await,
        400,
        "invalid_request",
        "limit",
    );
    refused(
        &api.get("/v1/executions?cursor=x").await,
        400,
        "invalid_request",
        "cursor",
    );
    refused(&api.get("/v1/nowhere").await, 404, "not_found", "route");
    let listed = api.get("/v1/executions").await;
    assert_eq!(listed.body["executions"], json!([]), "nothing was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_runs_the_action_once() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let body = json!({"action": "svc.sleep", "parameters": {"seconds": 1}, "wait": true});
    let since = unix_now();
    let (first, second) = tokio::join!(
        api.post_with_key("/v1/executions", &body, "order-42"),
        api.post_with_key("/v1/executions", &body, "order-42"),
    );
    assert!([201, 200, 202].contains(&first.status), "{}", first.body);
    assert_eq!(first.body["id"], second.body["id"], "the same execution");
    let third = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.sleep", "parameters": {"seconds": 1}, "idempotency_key": "order-42", "wait": true}),
        )
        .await;
    assert_eq!(
        third.status, 200,
        "a replay of a final execution: {}",
        third.body
    );
    assert_eq!(third.headers["idempotent-replayed"], "true");
    assert_eq!(third.body["id"], first.body["id"]);
    assert_eq!(third.body["status"], "succeeded");
    let other = api
        .post_with_key(
            "/v1/executions",
            &json!({"action": "svc.tell", "parameters": {"label": "x"}}),
            "order-42",
        )
        .await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
    let listed = api.get("/v1/executions").await;
    assert_eq!(listed.body["executions"].as_array().map(Vec::len), Some(1));
    let pid = server.pid();
    drop(server);
    // The warm pool may have pre-started one container more; the action ran in one.
    let exec_id = third.body["exec_id"].as_str().expect("exec id");
    let ran = engine_events(
        since,
        &[
            "type=container".into(),
            "event=start".into(),
            format!("label=packbox.exec_id={exec_id}"),
        ],
        "{{.ID}}",
    );
    assert_eq!(ran.len(), 1);
    assert!(containers_of(pid).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_everything_but_healthz_and_neither_they_nor_secrets_are_recorded() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# test tokens\nci:{TOKEN}\n")).expect("write");
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let state = state_dir();
    let server = Server::start(ServerOptions {
        args: vec!["--token-file".into(), tokens.display().to_string()],
        state: state.clone(),
        ..ServerOptions::default()
    });
    assert!(!server.log().contains("WARNING"), "{}", server.log());
    let anonymous = Api::new(&server, None);
    let wrong = Api::new(&server, Some("ci-token-0123456789abcdeX"));
    let right = Api::new(&server, Some(TOKEN));
    assert_eq!(anonymous.get("/healthz").await.status, 200);
    for path in [
        "/v1/executions",
        "/v1/actions",
        "/v1/runtimes",
        "/v1/openapi.json",
        "/v1/nowhere",
    ] {
        let denied = anonymous.get(path).await;
        assert_eq!(denied.status, 401, "{path}");
        assert_eq!(
            denied.headers["www-authenticate"],
            "Bearer realm=\"packbox\""
        );
        assert_eq!(wrong.get(path).await.status, 401, "{path}");
    }
    let secret = "s3cr3t-api-key-9f8e7d";
    let created = right
        .post(
            "/v1/executions",
            &json!({"action": "svc.tell", "parameters": {"label": "hello"}, "secrets": {"api_key": secret}, "wait": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let record = &created.body;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["token_name"], "ci");
    assert_eq!(record["result"], json!({"label": "hello", "key": "***"}));
    assert_eq!(record["stderr"], "stderr sees ***\n");
    assert!(!record.to_string().contains(secret));
    let listed = right.get("/v1/executions").await;
    assert!(!listed.body.to_string().contains(secret));
    assert!(!server.log().contains(secret) && !server.log().contains(TOKEN));
    let pid = server.pid();
    drop(server);
    let bytes = record_bytes(&state);
    assert!(!bytes.is_empty(), "the records were written");
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(secret), "the secret is in the record files");
    assert!(!contains(TOKEN), "the token is in the record files");
    assert!(
        contains("stderr sees ***"),
        "the scrubbed output is recorded"
    );
    assert!(containers_of(pid).is_empty());
}

#[test]
fn without_a_token_the_server_refuses_anything_but_loopback() {
    let packs = service_packs();
    let refused = packbox(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--packs",
            &packs.display().to_string(),
        ],
        &[],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("loopback"),
        "{}",
        refused.stderr()
    );
    let short = packbox(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--packs",
            &packs.display().to_string(),
        ],
        &[("PACKBOX_SERVE_TOKEN", "short")],
    );
    assert_eq!(short.code(), 2, "{}", short.stderr());
    assert!(short.stderr().contains("at least 16"), "{}", short.stderr());
    let no_packs = packbox(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("PACKBOX_PACKS", "")],
    );
    assert_eq!(no_packs.code(), 2, "{}", no_packs.stderr());
    assert!(
        no_packs.stderr().contains("--packs"),
        "{}",
        no_packs.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    require_engine();
    let server = Server::start_with_config(
        "serve: {max_concurrent: 1, max_queue: 1, drain_seconds: 1}\nrun: {grace_seconds: 1}\n",
    );
    let api = Api::new(&server, None);
    let sleep = json!({"action": "svc.sleep", "parameters": {"seconds": 60}});
    let running = api.post("/v1/executions", &sleep).await;
    assert_eq!(running.status, 202, "{}", running.body);
    let queued = api.post("/v1/executions", &sleep).await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let busy = api.post("/v1/executions", &sleep).await;
    assert_eq!(busy.status, 429, "{}", busy.body);
    assert_eq!(busy.body["error"]["code"], "busy");
    let after: u64 = busy.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&after));
    let queued_id = queued.body["id"].as_str().expect("id");
    let record = api.get(&format!("/v1/executions/{queued_id}")).await;
    assert_eq!(
        record.body["status"], "queued",
        "one slot: the second waits"
    );
    // A queued execution cancelled never starts.
    let cancelled = api
        .post(&format!("/v1/executions/{queued_id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 202);
    let ended = api.wait_final(queued_id, Duration::from_secs(60)).await;
    assert_eq!(ended["status"], "cancelled");
    assert_eq!(
        ended["exec_id"],
        serde_json::Value::Null,
        "it never ran: {ended}"
    );
    let again = api
        .post(&format!("/v1/executions/{queued_id}/cancel"), &json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    // The slot in the queue is free again.
    let admitted = api.post("/v1/executions", &sleep).await;
    assert_eq!(admitted.status, 202, "{}", admitted.body);
    for id in [&running.body["id"], &admitted.body["id"]] {
        let id = id.as_str().expect("id");
        api.post(&format!("/v1/executions/{id}/cancel"), &json!({}))
            .await;
    }
}

#[test]
fn a_client_that_stalls_is_cut_off() {
    require_engine();
    let server = Server::start_with_config("serve: {client_timeout_seconds: 1}\n");
    let address = server.url.trim_start_matches("http://").to_string();
    // Headers that never end: the server closes the connection.
    let mut stalled = std::net::TcpStream::connect(&address).expect("connect");
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    assert!(started.elapsed() < Duration::from_secs(25), "not cut off");
    // A body that never arrives: 408.
    let mut slow = std::net::TcpStream::connect(&address).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    slow.write_all(
        b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"action\"",
    )
    .expect("write");
    let mut answer = [0u8; 64];
    let read = slow.read(&mut answer).expect("an answer");
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_newest_first_and_filter() {
    require_engine();
    let server = Server::start_with_config("");
    let api = Api::new(&server, None);
    let mut ids = Vec::new();
    for n in 0..5 {
        let body = if n % 2 == 0 {
            json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true})
        } else {
            json!({"action": "svc.tell", "parameters": {"label": format!("n{n}")}, "wait": true})
        };
        let created = api.post("/v1/executions", &body).await;
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.body["id"].as_str().expect("id").to_string());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/executions?limit=2".to_string();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for execution in page.body["executions"].as_array().expect("a list") {
            assert!(
                execution.get("stdout").is_none(),
                "listings leave output out"
            );
            seen.push(execution["id"].as_str().unwrap_or("").to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/executions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, each once");
    let sleeps = api
        .get("/v1/executions?action=svc.sleep&status=succeeded")
        .await;
    assert_eq!(sleeps.body["executions"].as_array().map(Vec::len), Some(3));
    let failed = api.get("/v1/executions?status=failed").await;
    assert_eq!(failed.body["executions"], json!([]));
    let actions = api.get("/v1/actions").await;
    let refs: BTreeSet<&str> = actions.body["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["ref"].as_str())
        .collect();
    assert_eq!(
        refs,
        BTreeSet::from([
            "svc.echo",
            "svc.lines",
            "svc.nodeinfo",
            "svc.pyinfo",
            "svc.sleep",
            "svc.tell"
        ])
    );
    let runtimes = api.get("/v1/runtimes").await;
    assert!(
        runtimes.body["runtimes"]
            .as_array()
            .expect("runtimes")
            .iter()
            .any(|r| r["image"] == "packbox/shell:5.2"),
        "{}",
        runtimes.body
    );
}

#[test]
fn a_second_server_on_the_same_state_folder_is_refused() {
    require_engine();
    let state = state_dir();
    let _first = Server::start(ServerOptions {
        state: state.clone(),
        ..ServerOptions::default()
    });
    let second = packbox(
        &[
            "--state-dir",
            &state.display().to_string(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--packs",
            &service_packs().display().to_string(),
        ],
        &[],
    );
    assert_eq!(second.code(), 125, "{}", second.stderr());
    assert!(
        second.stderr().contains("another packbox serve"),
        "{}",
        second.stderr()
    );
}
