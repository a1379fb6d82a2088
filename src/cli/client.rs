//! `packbox run --server URL`: the run goes to a `packbox serve` instead of the local engine,
//! with the same output and exit codes as a local run; `--follow` streams the server's live
//! output (Server-Sent Events, resumed after a dropped connection).
//!
//! A request carries a fresh idempotency key, so retrying it after a lost connection, a full
//! queue (429, after its Retry-After) or a restarting server never runs the action twice. The
//! first Ctrl-C asks the server to cancel the execution and waits for its end; a second exits.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use packbox::ClientSettings;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::run::{Shown, follow_output, print_human};
use super::{EXIT_ENGINE, EXIT_INPUT, client_http, render, signals};
use packbox::StreamKind;

/// How long a request may wait for a busy server (429, 502 to 504) to take it.
const PATIENCE: Duration = Duration::from_secs(120);
/// How long a request may try to reach a server that does not answer (a restart).
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);
/// Longest wait asked of the server per request (it caps it at its own maximum).
const WAIT_SECONDS: u64 = 60;

/// A run for a server.
pub struct RemoteRun {
    /// The action, `pack.action`.
    pub action: String,
    /// Values read locally (`--params-file`), sent as JSON.
    pub parameters: Map<String, Value>,
    /// `-p KEY=VALUE` as typed: the server converts them by the declared types.
    pub assignments: Vec<String>,
    /// Secrets read locally, sent for this run only (the server never stores them).
    pub secrets: Map<String, Value>,
    /// `--timeout`, capped by the server's maximum.
    pub timeout_seconds: Option<u64>,
    /// Stream the live output while the run goes (`--follow`).
    pub follow: bool,
    /// Print the record as JSON instead of the human rendering.
    pub json: bool,
}

/// Why a remote run could not give an outcome.
enum Failure {
    /// The server refused the request (bad input, unknown action, bad token): exit 2.
    Refused(String, Vec<String>),
    /// The server could not be used (unreachable, busy past our patience, failed): exit 125.
    Server(String),
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// What an `https://` server's certificate must chain to, for messages.
    trust: String,
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request until it gets an answer that is not "try again": a server that does not
    /// answer is tried for [`CONNECT_PATIENCE`], a busy one (429 after its Retry-After, 502 to
    /// 504) for [`PATIENCE`].
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Value), Failure> {
        let started = Instant::now();
        let mut deadline = started + CONNECT_PATIENCE;
        let mut pause = Duration::from_millis(200);
        loop {
            let (retry_after, why) = match build().send().await {
                Ok(response) => {
                    let status = response.status();
                    let after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    let again = status == StatusCode::TOO_MANY_REQUESTS
                        || matches!(status.as_u16(), 502..=504);
                    if !again {
                        return Ok((status, body));
                    }
                    deadline = started + PATIENCE;
                    (
                        after,
                        error_message(&body).unwrap_or_else(|| status.to_string()),
                    )
                }
                Err(e) => {
                    if let Some(tls) = client_http::tls_failure(&e) {
                        return Err(Failure::Server(format!(
                            "server {}: TLS handshake failed: {tls} (its certificate must chain to {}; \
                             set client.ca_file or PACKBOX_SERVER_CA_FILE to the CA that signed it)",
                            self.base, self.trust
                        )));
                    }
                    (None, describe(&e))
                }
            };
            let wait = retry_after.unwrap_or(pause);
            if Instant::now() + wait > deadline {
                return Err(Failure::Server(format!(
                    "server {}: {why} (gave up after {} s)",
                    self.base,
                    started.elapsed().as_secs()
                )));
            }
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// Runs the action on the server and renders its outcome as a local run would.
pub async fn run(remote: RemoteRun, settings: &ClientSettings) -> ExitCode {
    let Some(base) = settings.server.clone() else {
        return ExitCode::from(EXIT_INPUT);
    };
    let http = match client_http::client(settings.ca_file.as_deref()) {
        Ok(http) => http,
        Err(e) => {
            eprintln!("error: {}", render::sanitize(&e.to_string()));
            return ExitCode::from(EXIT_INPUT);
        }
    };
    if settings.token.is_some() && client_http::token_sent_in_clear(&base) {
        eprintln!(
            "warning: {} is plain HTTP off this machine: the token crosses the network in clear text; put the server behind a TLS proxy and use https://",
            render::sanitize(&base)
        );
    }
    let trust = match &settings.ca_file {
        Some(path) => format!("the certificates in {}", path.display()),
        None => "the system's trust store".to_string(),
    };
    let client = Client {
        http,
        base,
        token: settings.token.as_ref().map(|t| t.0.clone()),
        trust,
    };
    let json_output = remote.json;
    match execute(&client, remote).await {
        Ok((record, followed)) => {
            if json_output {
                if let Err(e) = render::print_json(&record) {
                    eprintln!("error: cannot write the outcome: {e}");
                }
            } else {
                print_human(&shown(&record), followed);
            }
            ExitCode::from(exit_code(record["status"].as_str().unwrap_or("")))
        }
        Err(Failure::Refused(message, problems)) => {
            eprintln!("error: {}", render::sanitize(&message));
            for problem in &problems {
                eprintln!("  {}", render::sanitize(problem));
            }
            if json_output {
                let object = json!({"status": "invalid", "error": message, "problems": problems});
                let _ = render::print_json(&object);
            }
            ExitCode::from(EXIT_INPUT)
        }
        Err(Failure::Server(message)) => {
            eprintln!("error: {}", render::sanitize(&message));
            if json_output {
                let _ = render::print_json(&json!({"status": "error", "error": message}));
            }
            ExitCode::from(EXIT_ENGINE)
        }
    }
}

/// Submits, follows or waits, and returns the final record (and whether output was streamed).
async fn execute(client: &Client, remote: RemoteRun) -> Result<(Value, bool), Failure> {
    let mut body = json!({
        "action": remote.action,
        "parameters": remote.parameters,
        "assignments": remote.assignments,
        "secrets": remote.secrets,
        "idempotency_key": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(timeout) = remote.timeout_seconds {
        body["timeout_seconds"] = json!(timeout);
    }
    let (status, created) = client
        .send(|| {
            client
                .request(reqwest::Method::POST, "/v1/executions")
                .json(&body)
        })
        .await?;
    let record = answer(status, created)?;
    let id = record["id"].as_str().unwrap_or_default().to_string();
    let cancel = CancellationToken::new();
    signals::cancel_on_signal(cancel.clone(), "cancelling the execution");
    let cancelling = async {
        cancel.cancelled().await;
        let path = format!("/v1/executions/{id}/cancel");
        if let Err(Failure::Server(why) | Failure::Refused(why, _)) = client
            .send(|| client.request(reqwest::Method::POST, &path))
            .await
        {
            eprintln!("packbox: cancelling execution {id}: {why}");
        }
        std::future::pending::<std::convert::Infallible>().await
    };
    let work = async {
        let streamed = remote.follow && follow(client, &id, remote.json).await?;
        wait_final(client, &id)
            .await
            .map(|record| (record, streamed))
    };
    tokio::select! {
        record = work => record,
        never = cancelling => match never {},
    }
}

/// The record of an accepted request, or what was wrong with it.
fn answer(status: StatusCode, body: Value) -> Result<Value, Failure> {
    if status.is_success() {
        return Ok(body);
    }
    let message = error_message(&body).unwrap_or_else(|| status.to_string());
    let problems = body["error"]["problems"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|p| p["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match status {
        StatusCode::UNAUTHORIZED => Err(Failure::Refused(
            format!("{message} (set PACKBOX_TOKEN to a token the server knows)"),
            problems,
        )),
        s if s.is_client_error() => Err(Failure::Refused(message, problems)),
        _ => Err(Failure::Server(message)),
    }
}

/// Waits (as long as it takes, a server's maximum wait at a time) for the execution to end.
async fn wait_final(client: &Client, id: &str) -> Result<Value, Failure> {
    let path = format!("/v1/executions/{id}?wait={WAIT_SECONDS}");
    loop {
        let (status, body) = client
            .send(|| client.request(reqwest::Method::GET, &path))
            .await?;
        let record = answer(status, body)?;
        match record["status"].as_str() {
            Some("queued" | "running") => continue,
            _ => return Ok(record),
        }
    }
}

/// Prints the execution's output as it comes, resuming after a dropped connection, until the
/// stream's end.
/// Returns whether the output was streamed; `false` when the server follows no more output now
/// (429) and nothing was streamed yet: the output then comes with the record.
async fn follow(client: &Client, id: &str, json: bool) -> Result<bool, Failure> {
    let path = format!("/v1/executions/{id}/output");
    let terminal = std::io::stdout().is_terminal();
    let mut last_id: Option<String> = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut request = client.request(reqwest::Method::GET, &path);
        if let Some(last) = &last_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            // The server holds as many followers as it may: the output comes with the record,
            // or, once some was streamed, the stream is tried again.
            Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                if last_id.is_none() {
                    eprintln!(
                        "packbox: the server follows no more output now; the output comes when the execution ends"
                    );
                    return Ok(false);
                }
                if Instant::now() >= deadline {
                    return Err(Failure::Server(
                        "the server follows no more output now".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(response) => {
                let status = response.status();
                let body = response.json().await.unwrap_or(Value::Null);
                answer(status, body)?;
                return Ok(true);
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("output stream: {}", describe(&e));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(Failure::Server(describe(&e))),
        };
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let Ok(event) = event else {
                break;
            };
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            match event.event.as_str() {
                "stdout" | "stderr" => {
                    let text: String = serde_json::from_str(&event.data).unwrap_or_default();
                    let stream = if event.event == "stdout" {
                        StreamKind::Stdout
                    } else {
                        StreamKind::Stderr
                    };
                    follow_output(stream, text.as_bytes(), json, terminal);
                }
                "gap" => {
                    let gap: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    eprintln!(
                        "packbox: {} bytes of {} went by too fast to stream; the record has them",
                        gap["skipped"],
                        gap["stream"].as_str().unwrap_or("output")
                    );
                }
                "end" => return Ok(true),
                _ => {}
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// What a record shows in the human rendering.
fn shown(record: &Value) -> Shown<'_> {
    let text = |field: &str| record[field].as_str().unwrap_or_default();
    Shown {
        action: text("action"),
        status: text("status"),
        stdout: text("stdout"),
        stderr: text("stderr"),
        runtime: text("runtime"),
        runtime_version: text("runtime_version"),
        duration_ms: record["duration_ms"].as_u64().unwrap_or(0),
        exit_code: record["exit_code"].as_i64(),
        error: record["error"].as_str(),
        artifacts: (
            record["artifacts"].as_array().map_or(0, Vec::len),
            record["artifacts_refused"].as_array().map_or(0, Vec::len),
        ),
        artifacts_dir: None,
    }
}

/// packbox's exit code for a record's final status (as a local run's).
fn exit_code(status: &str) -> u8 {
    match status {
        "succeeded" => 0,
        "failed" => 1,
        "invalid" => EXIT_INPUT,
        "timeout" => 124,
        "cancelled" => 130,
        "oom" => 137,
        _ => EXIT_ENGINE,
    }
}

fn error_message(body: &Value) -> Option<String> {
    body["error"]["message"].as_str().map(str::to_string)
}

/// A transport error, with its causes (reqwest's own message hides them).
fn describe(error: &reqwest::Error) -> String {
    packbox::error_chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_a_local_runs() {
        for (status, code) in [
            ("succeeded", 0),
            ("failed", 1),
            ("invalid", 2),
            ("timeout", 124),
            ("error", 125),
            ("abandoned", 125),
            ("cancelled", 130),
            ("oom", 137),
        ] {
            assert_eq!(exit_code(status), code, "{status}");
        }
    }

    #[test]
    fn refusals_are_input_errors_and_server_failures_are_not() {
        let bad = json!({"error": {"code": "invalid_request", "message": "bad", "problems": [{"parameter": "n", "message": "`n`: expected an integer"}]}});
        match answer(StatusCode::BAD_REQUEST, bad) {
            Err(Failure::Refused(message, problems)) => {
                assert_eq!(message, "bad");
                assert_eq!(problems, ["`n`: expected an integer"]);
            }
            _ => panic!("a 400 is a refusal"),
        }
        let denied = json!({"error": {"code": "unauthorized", "message": "no"}});
        match answer(StatusCode::UNAUTHORIZED, denied) {
            Err(Failure::Refused(message, _)) => assert!(message.contains("PACKBOX_TOKEN")),
            _ => panic!("a 401 is a refusal"),
        }
        assert!(matches!(
            answer(StatusCode::INTERNAL_SERVER_ERROR, Value::Null),
            Err(Failure::Server(_))
        ));
    }
}
