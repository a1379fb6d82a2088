//! A `packbox serve` process for the tests: started on a free loopback port with its own state
//! folder and config file, stopped (SIGTERM, then waited for) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{repo_root, state_dir};

/// The packs the service tests run.
pub fn service_packs() -> PathBuf {
    repo_root().join("tests/fixtures/serve")
}

/// The packs of the tenancy tests: two teams' packs, `alpha` and `beta`.
pub fn tenancy_packs() -> PathBuf {
    repo_root().join("tests/fixtures/tenancy")
}

/// Writes a token file (mode 0600) in `dir`; returns its path.
pub fn token_file(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("tokens");
    std::fs::write(&file, text).expect("write the token file");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the token file");
    file
}

/// Every byte of every file under `dir` (the state folder), to look for what must not be there.
pub fn folder_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file()
            && let Ok(mut file) = std::fs::read(&path)
        {
            bytes.append(&mut file);
        }
    }
    bytes
}

/// Whether `haystack` holds `needle`.
pub fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// What a test server is started with.
pub struct ServerOptions {
    /// The config file's text (the `serve:` section and more).
    pub config: String,
    pub packs: PathBuf,
    pub state: PathBuf,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// `--listen` (a free port by default).
    pub listen: String,
    /// Close the server's stderr once it listens, as a supervisor whose log pipe went away does
    /// (the log then stops there).
    pub stderr_closed_once_listening: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            config: String::new(),
            packs: service_packs(),
            state: state_dir(),
            env: Vec::new(),
            args: Vec::new(),
            listen: "127.0.0.1:0".into(),
            stderr_closed_once_listening: false,
        }
    }
}

/// A running `packbox serve`.
pub struct Server {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
    _config: tempfile::TempDir,
}

impl Server {
    /// A server with the default options and this config text.
    pub fn start_with_config(config: &str) -> Server {
        Server::start(ServerOptions {
            config: config.to_string(),
            ..ServerOptions::default()
        })
    }

    /// Starts a server and waits (at most two minutes) until it listens.
    pub fn start(options: ServerOptions) -> Server {
        let config_dir = tempfile::tempdir().expect("a config folder");
        let config = config_dir.path().join("config.yaml");
        std::fs::write(&config, &options.config).expect("write the config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_packbox"));
        command
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&options.state)
            .args(["serve", "--listen", &options.listen, "--packs"])
            .arg(&options.packs)
            .args(&options.args)
            .env_remove("PACKBOX_SERVE_TOKEN")
            .env_remove("PACKBOX_SERVE_TOKEN_FILE")
            .env_remove("PACKBOX_SERVE_LISTEN")
            .env("PACKBOX_LOG", "packbox=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("packbox serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, listening) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            let close_once_listening = options.stderr_closed_once_listening;
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = found.send(url);
                        if close_once_listening {
                            // Leaving the loop drops the pipe's only reader.
                            break;
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(url) = listening.recv_timeout(Duration::from_millis(100)) {
                return Server {
                    child,
                    url,
                    log,
                    _config: config_dir,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "packbox serve exited ({status}) before listening:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "packbox serve never listened");
        }
    }

    /// The server's process id (its containers carry it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// What the server wrote on stderr once it holds `needle`, waiting at most `within` for it
    /// (a line the server writes after it answered may come a moment after the answer); what
    /// it wrote so far when it never does.
    pub fn log_holding(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends SIGTERM and waits (at most `within`) for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit(within)
    }

    /// Sends SIGTERM, without waiting.
    pub fn send_sigterm(&self) {
        signal(self.child.id(), libc::SIGTERM);
    }

    /// Waits (at most `within`) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "packbox serve did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid of our own child process.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// An HTTP answer: status, headers, body as JSON (Null when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A client of a test server, with an optional bearer token.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An HTTP client for the tests' requests, each bounded by `timeout`.
///
/// packbox builds reqwest without a crypto provider of its own (its TLS uses rustls' ring
/// provider, installed by the client that needs it), so one is installed here too.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("a client")
}

impl Api {
    pub fn new(server: &Server, token: Option<&str>) -> Api {
        Api {
            client: http_client(Duration::from_secs(300)),
            base: server.url.clone(),
            token: token.map(str::to_string),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Api::answer(self.request(reqwest::Method::GET, path)).await
    }

    /// A GET whose body is text.
    pub async fn get_text(&self, path: &str) -> String {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("the server answers")
            .text()
            .await
            .expect("a text body")
    }

    /// A GET with one more header; the body is read whole (the stream must end).
    pub async fn get_with(&self, path: &str, header: &str, value: &str) -> Answer {
        Api::answer(
            self.request(reqwest::Method::GET, path)
                .header(header, value),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        Api::answer(self.request(reqwest::Method::POST, path).json(body)).await
    }

    pub async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> Answer {
        Api::answer(
            self.request(reqwest::Method::POST, path)
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        Api::answer(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Api::answer(self.request(reqwest::Method::DELETE, path)).await
    }

    /// A GET whose answer is kept as text, whatever its type (an event stream is read to its
    /// end, bounded by the client's timeout): status and text.
    pub async fn get_raw(&self, path: &str) -> (u16, String) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        Api::answer(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// Waits (at most `within`) until the execution ends; returns its record.
    pub async fn wait_final(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.get(&format!("/v1/executions/{id}?wait=10")).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let status = answer.body["status"].as_str().unwrap_or("");
            if status != "queued" && status != "running" {
                return answer.body;
            }
            assert!(Instant::now() < deadline, "execution {id} never ended");
        }
    }
}

/// Bytes of the server's record files (the database and its WAL), to look for what must not be
/// there.
pub fn record_bytes(state: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["executions.sqlite", "executions.sqlite-wal"] {
        if let Ok(mut file) = std::fs::read(state.join(name)) {
            bytes.append(&mut file);
        }
    }
    bytes
}

/// The OpenAPI document kept in the repository.
pub fn openapi() -> Value {
    let text = std::fs::read_to_string(super::repo_root().join("docs/openapi.json"))
        .expect("docs/openapi.json");
    serde_json::from_str(&text).expect("the OpenAPI document is JSON")
}

/// Asserts that `answer` is what the OpenAPI document says `method path` answers: its status
/// is documented for the operation and its JSON body validates against that response's schema.
pub fn assert_documented(document: &Value, method: &str, path: &str, answer: &Answer) {
    let operation = &document["paths"][path][method];
    assert!(
        operation.is_object(),
        "{method} {path} is not in the document"
    );
    let response = &operation["responses"][answer.status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path}: status {} is not documented ({})",
        answer.status,
        answer.body
    );
    if let Some(content) = response["content"].as_object() {
        let content_type = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        assert!(
            content.contains_key(&content_type),
            "{method} {path} {}: content type `{content_type}` is not documented",
            answer.status
        );
    }
    let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    let mut root = serde_json::Map::new();
    root.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    root.insert("components".into(), document["components"].clone());
    root.insert(
        "allOf".into(),
        Value::Array(vec![Value::Object(schema.clone())]),
    );
    let validator = jsonschema::validator_for(&Value::Object(root)).expect("a valid schema");
    let problems: Vec<String> = validator
        .iter_errors(&answer.body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{method} {path} {}: the body does not match the document: {problems:?}\n{}",
        answer.status,
        answer.body
    );
}

/// One Server-Sent Event.
#[derive(Clone, Debug)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: String,
}

impl Sse {
    /// The text of a `stdout` or `stderr` event (its data is a JSON string).
    pub fn text(&self) -> String {
        serde_json::from_str::<String>(&self.data).expect("event data is a JSON string")
    }
}

/// An open event stream.
pub struct Events {
    inner: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<eventsource_stream::Event, String>> + Send>,
    >,
}

impl Events {
    /// The next event (keep-alive comments skipped), `None` when the stream ended; at most
    /// `within` to wait.
    pub async fn next(&mut self, within: Duration) -> Option<Sse> {
        use futures::StreamExt;
        let next = tokio::time::timeout(within, self.inner.next())
            .await
            .expect("an event in time")?;
        let event = next.expect("a well-formed event stream");
        Some(Sse {
            event: event.event,
            id: event.id,
            data: event.data,
        })
    }

    /// Every event up to the end of the stream.
    pub async fn rest(&mut self, within: Duration) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next(within).await {
            events.push(event);
        }
        events
    }
}

impl Api {
    /// Opens an execution's output stream, resuming after `last_event_id`.
    pub async fn events(&self, id: &str, last_event_id: Option<&str>) -> Events {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let mut request =
            self.request(reqwest::Method::GET, &format!("/v1/executions/{id}/output"));
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(
            response.status().as_u16(),
            200,
            "opening the output of {id}"
        );
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap_or("")
                .starts_with("text/event-stream")
        );
        Events {
            inner: Box::pin(
                response
                    .bytes_stream()
                    .eventsource()
                    .map(|e| e.map_err(|e| e.to_string())),
            ),
        }
    }
}

/// The text of the `stdout` (or `stderr`) events, in order.
pub fn stream_text(events: &[Sse], stream: &str) -> String {
    events
        .iter()
        .filter(|e| e.event == stream)
        .map(Sse::text)
        .collect()
}
