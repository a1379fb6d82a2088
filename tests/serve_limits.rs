//! Attacks on `packbox serve`'s resources, against a real server on loopback (issue 26's third
//! attack pass): idle connections without a token, followers and waits holding every
//! connection, a request full of unknown parameters, records that grow without bound, and
//! secret names that skip the dotenv check. Each test reproduces the attack and checks that the
//! server stays responsive and bounded.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "limits-token-0123456789abcdef";

/// A server of the tenancy packs with one token (`ops`) and eight more for many callers.
fn server_with(config: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lines = format!("ops:{TOKEN}\n");
    for n in 0..8 {
        lines.push_str(&format!("caller{n}:{}\n", caller_token(n)));
    }
    let tokens = token_file(dir.path(), &lines);
    let server = Server::start(ServerOptions {
        config: config.to_string(),
        packs: tenancy_packs(),
        args: vec!["--token-file".into(), tokens.display().to_string()],
        ..ServerOptions::default()
    });
    (server, dir)
}

fn caller_token(n: usize) -> String {
    format!("caller-{n}-token-0123456789abcdef")
}

fn address(server: &Server) -> SocketAddr {
    server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

/// Holds `count` idle connections to `address` (never sending a byte), opening a new one for
/// each the server closes, until `stop`. Returns how many the server closed.
fn hold_idle_connections(
    address: SocketAddr,
    count: usize,
    opened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let connect = || TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok();
        let mut held: Vec<Option<TcpStream>> = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = connect();
            if let Some(s) = &stream {
                let _ = s.set_nonblocking(true);
            }
            held.push(stream);
            opened.fetch_add(1, Ordering::Relaxed);
        }
        let mut closed = 0;
        let mut buffer = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(300);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for slot in held.iter_mut() {
                let gone = match slot {
                    Some(stream) => match stream.read(&mut buffer) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    },
                    None => true,
                };
                if gone {
                    closed += 1;
                    *slot = connect();
                    if let Some(s) = slot {
                        let _ = s.set_nonblocking(true);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        closed
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_without_a_token_do_not_make_requests_wait() {
    require_engine();
    let (server, _dir) = server_with("");
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    // More than the server's 1,024 connections, never sending a byte, reopened as it closes
    // them: before, every request then waited for the 30 s header deadline of some of them.
    let attacker = hold_idle_connections(
        address(&server),
        1100,
        Arc::clone(&opened),
        Arc::clone(&stop),
    );
    wait_until(
        "1,100 idle connections are open",
        Duration::from_secs(120),
        || opened.load(Ordering::Relaxed) >= 1100,
    );
    // A client that gives up long before the 30 s a held connection used to cost.
    let client = http_client(Duration::from_secs(10));
    let mut answered = 0;
    for n in 0..20 {
        // A new connection each time, as a client that does not keep connections alive.
        let fresh = http_client(Duration::from_secs(10));
        let health = fresh
            .get(server.at("/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {n}: /healthz did not answer in 10 s: {e}"));
        assert_eq!(health.status().as_u16(), 200);
        let listed = client
            .get(server.at("/v1/executions"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {n}: a listing did not answer in 10 s: {e}"));
        assert_eq!(listed.status().as_u16(), 200);
        answered += 2;
    }
    stop.store(true, Ordering::Relaxed);
    let closed = attacker.join().expect("the attacker thread");
    assert_eq!(answered, 40);
    assert!(
        closed > 0,
        "the server closed idle connections to make room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_and_waits_cannot_hold_every_connection() {
    require_engine();
    let (server, _dir) = server_with("");
    let ops = Api::new(&server, Some(TOKEN));
    let started = ops
        .post(
            "/v1/executions",
            &json!({"action": "alpha.sleep", "parameters": {"seconds": 300}}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_string();
    // A connection per request, as many clients would: none is kept idle for reuse.
    let _ = http_client(Duration::from_secs(1));
    let holder = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    // 1,030 followers of one execution, from eight tokens; then 960 waits for its end.
    let mut held = Vec::new();
    let (mut following, mut refused) = (0, 0);
    let followers = futures::future::join_all((0..1030).map(|n| {
        holder
            .get(server.at(&format!("/v1/executions/{id}/output")))
            .bearer_auth(caller_token(n % 8))
            .send()
    }))
    .await;
    for response in followers {
        let response = response.expect("an answer to each follower");
        match response.status().as_u16() {
            200 => {
                following += 1;
                held.push(response);
            }
            429 => refused += 1,
            other => panic!("a follower got {other}"),
        }
    }
    assert_eq!(following, 32, "followers of one execution are bounded");
    assert_eq!(refused, 1030 - 32);
    let waits = tokio::spawn({
        let (holder, url) = (
            holder.clone(),
            server.at(&format!("/v1/executions/{id}?wait=60")),
        );
        async move {
            let waits = futures::future::join_all(
                (0..960).map(|n| holder.get(&url).bearer_auth(caller_token(n % 8)).send()),
            )
            .await;
            waits
                .into_iter()
                .map(|r| r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        }
    });
    // Every place taken: 768 in all, 32 of them by followers; per token 128 (8 tokens: 1,024).
    let mut held_now = 0;
    for _ in 0..600 {
        held_now = metric(&ops, "packbox_held_requests").await;
        if held_now == 768 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        held_now, 768,
        "held requests never reached serve.max_waiting"
    );
    // While they are held, health checks and other requests are answered.
    let client = http_client(Duration::from_secs(10));
    for _ in 0..10 {
        let health = client
            .get(server.at("/healthz"))
            .send()
            .await
            .expect("/healthz answers in 10 s while requests are held");
        assert_eq!(health.status().as_u16(), 200);
        let read = client
            .get(server.at(&format!("/v1/executions/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("a read answers in 10 s while requests are held");
        assert_eq!(read.status().as_u16(), 200);
    }
    let rss = rss_bytes(server.pid());
    assert!(rss < 512 << 20, "the server holds {} MiB", rss >> 20);
    let cancelled = ops
        .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let mut statuses = std::collections::BTreeMap::new();
    for status in waits.await.expect("the waits") {
        let status = status.expect("an answer to each wait");
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get(&429).copied(),
        Some(960 - (768 - 32)),
        "{statuses:?}"
    );
    assert_eq!(statuses.get(&200).copied(), Some(768 - 32), "{statuses:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_full_of_unknown_parameters_gets_a_short_answer() {
    require_engine();
    // Undeclared parameters are delivered by default (as Attune does); an operator who refuses
    // them gets refusals, which stay short.
    let (server, _dir) = server_with("run:\n  strict_parameters: true\n");
    let client = http_client(Duration::from_secs(120));
    // 1 MiB of unknown parameter names: before, each one cost a problem listing the known ones
    // (365 MB of answer, 1.3 GB of memory; four at once 5.4 GB).
    let body = || {
        // Each `"u000000":1,` is 12 bytes.
        let count = ((1 << 20) - 200) / 12;
        let parameters: serde_json::Map<String, Value> = (0..count)
            .map(|n| (format!("u{n:06}"), Value::from(1)))
            .collect();
        serde_json::to_vec(&json!({"action": "alpha.say", "parameters": parameters})).expect("json")
    };
    let body = body();
    assert!(body.len() <= 1 << 20, "{}", body.len());
    let answers = futures::future::join_all((0..4).map(|_| {
        client
            .post(server.at("/v1/executions"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    }))
    .await;
    for answer in answers {
        let answer = answer.expect("an answer");
        assert_eq!(answer.status().as_u16(), 400);
        let bytes = answer.bytes().await.expect("a body");
        assert!(bytes.len() < 64 << 10, "an answer of {} bytes", bytes.len());
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        let problems = value["error"]["problems"].as_array().expect("problems");
        assert!(problems.len() <= 52, "{} problems", problems.len());
        assert!(
            problems.iter().any(|p| p["message"]
                .as_str()
                .unwrap_or("")
                .contains("more unknown parameters")),
            "{value}"
        );
    }
    let rss = rss_bytes(server.pid());
    assert!(rss < 400 << 20, "the server holds {} MiB", rss >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_before_planning() {
    require_engine();
    let (server, _dir) = server_with("serve:\n  max_concurrent: 1\n  max_queue: 0\n");
    let ops = Api::new(&server, Some(TOKEN));
    let sleeping = ops
        .post(
            "/v1/executions",
            &json!({"action": "alpha.sleep", "parameters": {"seconds": 300}}),
        )
        .await;
    assert_eq!(sleeping.status, 202, "{}", sleeping.body);
    // A request whose planning would fail is refused as busy first: it is admitted before it is
    // planned, so a full server spends nothing on it.
    let busy = ops
        .post(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"nope": 1}}),
        )
        .await;
    assert_eq!(busy.status, 429, "{}", busy.body);
    let id = sleeping.body["id"].as_str().expect("id");
    ops.post(&format!("/v1/executions/{id}/cancel"), &json!({}))
        .await;
}

/// One gauge of the exposition.
async fn metric(api: &Api, name: &str) -> u64 {
    let (_, text) = api.get_raw("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stay_bounded_in_bytes() {
    require_engine();
    let (server, _dir) = server_with(
        "serve:\n  records:\n    max_bytes: 1m\n    max_output: 128k\nrun:\n  max_output: 2m\n",
    );
    let ops = Api::new(&server, Some(TOKEN));
    let mut ids = Vec::new();
    for _ in 0..6 {
        let answer = ops
            .post(
                "/v1/executions",
                &json!({"action": "alpha.flood", "parameters": {"bytes": 1_500_000}, "wait": true}),
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let record = &answer.body;
        let stdout = record["stdout"].as_str().expect("stdout");
        assert!(
            stdout.starts_with("HEAD") && stdout.ends_with("TAIL"),
            "head and tail kept"
        );
        assert!(
            stdout.contains("[OUTPUT CLIPPED:"),
            "the record says what is missing"
        );
        assert!(
            stdout.len() < (128 << 10) + 200,
            "{} bytes kept",
            stdout.len()
        );
        assert_eq!(record["stdout_truncated"], true);
        ids.push(record["id"].as_str().expect("id").to_string());
    }
    // Past 1 MiB the oldest records go, at once.
    let bytes = metric(&ops, "packbox_records_bytes").await;
    assert!(bytes <= 1 << 20, "the records hold {bytes} bytes");
    assert!(bytes > 0);
    assert_eq!(
        ops.get(&format!("/v1/executions/{}", ids[0])).await.status,
        404
    );
    assert_eq!(
        ops.get(&format!("/v1/executions/{}", ids[5])).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_new_runs_with_507() {
    require_engine();
    // More free space kept than any disk here has: the refusal a full disk would get.
    let (server, _dir) = server_with("serve:\n  records:\n    min_free_disk: 1125899906842624\n");
    let ops = Api::new(&server, Some(TOKEN));
    let refused = ops
        .post(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"label": "x"}}),
        )
        .await;
    assert_eq!(refused.status, 507, "{}", refused.body);
    assert_documented(&openapi(), "post", "/v1/executions", &refused);
    assert_eq!(refused.body["error"]["code"], "insufficient_storage");
    let message = refused.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("serve.records.min_free_disk"), "{message}");
    assert_eq!(
        ops.get("/v1/executions").await.body["executions"],
        json!([]),
        "nothing was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_secret_names_get_the_dotenv_check_and_the_refusal_blames_the_request() {
    require_engine();
    let (server, _dir) = server_with("");
    let ops = Api::new(&server, Some(TOKEN));
    for (body, expected) in [
        (
            json!({"action": "beta.env", "secrets": {"bad name": "value-1"}}),
            "secret name",
        ),
        (
            json!({"action": "alpha.keys", "secrets": {"a=$(id)": "value-2"}}),
            "secret name",
        ),
        (
            // A key no shell word can hold (a new line); `a b` is delivered quoted, as Attune does.
            json!({"action": "beta.env", "parameters": {"config": {"a\nb": 1}}}),
            "cannot be written as dotenv",
        ),
    ] {
        let refused = ops.post("/v1/executions", &body).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        assert_documented(&openapi(), "post", "/v1/executions", &refused);
        assert_eq!(refused.body["error"]["code"], "invalid_request");
        let message = refused.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("value-"), "{message}");
    }
    let fine = ops
        .post(
            "/v1/executions",
            &json!({"action": "beta.env", "parameters": {"config": {"a": 1}}, "secrets": {"api_key": "value-3"}, "wait": true}),
        )
        .await;
    assert_eq!(fine.status, 201, "{}", fine.body);
    assert_eq!(fine.body["stdout"], "api_key\nconfig.a\n");
}
