//! `packbox run`: one action in one container.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use packbox::{
    Catalog, Environment, Error, KeyStore, Outcome, PlanError, PrepareEvent, RunEvent, RunRequest,
    Settings, Status, StreamKind,
};
use serde_json::{Map, Value, json};

use super::client::{self, RemoteRun};
use super::options::{self, GlobalArgs, SandboxArgs};
use super::{EXIT_INPUT, render, signals};

/// Arguments of `packbox run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Folder holding the packs, one sub-folder per pack (not used with --server: the server
    /// has its packs).
    #[arg(long, env = "PACKBOX_PACKS", value_name = "DIR")]
    packs: Option<PathBuf>,
    /// Send the run to a `packbox serve` at this URL (default: $PACKBOX_SERVER); its token
    /// comes from $PACKBOX_TOKEN. Same output and exit codes as a local run.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The action to run, as PACK.ACTION.
    #[arg(value_name = "PACK.ACTION")]
    action: String,
    /// A parameter, as KEY=VALUE (repeatable); converted by the declared type, and wins over
    /// --params-file.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A JSON or YAML file of parameter values.
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// A secret, as KEY=VALUE (repeatable): delivered with the parameters, never in env, argv,
    /// labels or logs, and scrubbed from the outcome.
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    secrets: Vec<String>,
    /// A JSON or YAML file of secrets.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Stream the action's output live as well (stdout to stdout, stderr to stderr; with --json
    /// both go to stderr, so stdout stays one JSON document).
    #[arg(long)]
    follow: bool,
    /// Run the action even though it says `enabled: false`.
    #[arg(long)]
    allow_disabled: bool,
    /// Print each line of an environment build as it happens.
    #[arg(long, env = "PACKBOX_VERBOSE_BUILD")]
    verbose_build: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

impl RunArgs {
    fn request(&self, packs: &Path) -> RunRequest {
        let mut request = RunRequest::new(packs, &self.action);
        request.params = self.params.clone();
        request.params_file = self.params_file.clone();
        request.secrets = self.secrets.clone();
        request.secrets_file = self.secrets_file.clone();
        request.allow_disabled = self.allow_disabled;
        request.timeout = self.sandbox.timeout();
        request
    }
}

/// The largest parameters or secrets file sent to a server.
const MAX_VALUES_FILE_BYTES: u64 = 16 << 20;

/// Runs the action (here, or on a server) and renders its outcome.
pub async fn execute(args: RunArgs, global: &GlobalArgs) -> ExitCode {
    let mut layer = options::layer(global, &args.sandbox);
    layer.client.server = args.server.clone();
    let settings = match Settings::resolve(layer, global.config.as_deref(), &Environment::capture())
    {
        Ok(settings) => settings,
        Err(e) => return render::report(&Error::from(e), args.json),
    };
    if settings.client.server.is_some() {
        return match remote_run(&args) {
            Ok(remote) => client::run(remote, &settings.client).await,
            Err(message) => {
                eprintln!("error: {}", render::sanitize(&message));
                if args.json {
                    let _ = render::print_json(&json!({"status": "invalid", "error": message}));
                }
                ExitCode::from(EXIT_INPUT)
            }
        };
    }
    let Some(packs) = args.packs.clone() else {
        let message = "--packs DIR is needed (or PACKBOX_PACKS), unless the run goes to a server (--server URL or PACKBOX_SERVER)";
        eprintln!("error: {message}");
        if args.json {
            let _ = render::print_json(&json!({"status": "invalid", "error": message}));
        }
        return ExitCode::from(EXIT_INPUT);
    };
    let show = |outcome: &Outcome| {
        if args.json {
            // Streamed: no second copy of a large output in memory.
            if let Err(e) = render::print_json(outcome) {
                eprintln!("error: cannot write the outcome: {e}");
            }
        } else {
            print_human(&Shown::of(outcome), args.follow);
        }
    };
    match run(&args, &packs, settings, show).await {
        Ok(outcome) => ExitCode::from(outcome.status.exit_code() as u8),
        Err(error) => render::report(&error, args.json),
    }
}

/// The request for a server: values from files are read here, `-p` assignments are converted by
/// the server (which knows the declared types), the sandbox is the server's.
fn remote_run(args: &RunArgs) -> Result<RemoteRun, String> {
    let timeout_seconds = args.sandbox.only_timeout().map_err(|flag| {
        format!(
            "{flag}: with --server the sandbox and limits are the server's (only --timeout applies)"
        )
    })?;
    if args.allow_disabled || args.verbose_build {
        return Err("--allow-disabled and --verbose-build do not apply with --server".to_string());
    }
    let mapping = |file: &Option<PathBuf>, what: &str| -> Result<Map<String, Value>, String> {
        let Some(file) = file else {
            return Ok(Map::new());
        };
        let text = packbox::input::read_yaml(file, MAX_VALUES_FILE_BYTES)
            .map_err(|e| format!("{what} file {}: {e}", file.display()))?;
        // Messages name positions, never content: a secrets file must not be echoed.
        match serde_yaml::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(Value::Null) => Ok(Map::new()),
            _ => Err(format!(
                "{what} file {}: expected a JSON or YAML mapping of names to values",
                file.display()
            )),
        }
    };
    let parameters = mapping(&args.params_file, "parameters")?;
    let mut secrets = mapping(&args.secrets_file, "secrets")?;
    for (index, item) in args.secrets.iter().enumerate() {
        let (key, value) = item
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| format!("--secret #{}: expected KEY=VALUE", index + 1))?;
        secrets.insert(key.trim().to_string(), Value::String(value.to_string()));
    }
    Ok(RemoteRun {
        action: args.action.clone(),
        parameters,
        assignments: args.params.clone(),
        secrets,
        timeout_seconds,
        follow: args.follow,
        json: args.json,
    })
}

/// Runs the action and shows its outcome as soon as it is known, before the container's removal
/// (which the process still waits for before it exits).
async fn run(
    args: &RunArgs,
    packs: &Path,
    settings: Settings,
    show: impl FnOnce(&Outcome),
) -> Result<Outcome, Error> {
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    // Everything wrong with the input is said before the engine is contacted.
    // The key store of the state folder, as a server would use it (empty without a key).
    let keys = KeyStore::open(&settings.state_dir, settings.keystore.key_file.as_deref())
        .map_err(PlanError::from)?;
    let mut request = args.request(packs);
    request.keys = Some(keys);
    let plan = packbox::plan(&settings, &catalog, &request)?;
    for warning in plan.warnings() {
        eprintln!("warning: {}", render::sanitize(&warning.to_string()));
    }
    for weaker in &plan.policy().weaker_than_default {
        eprintln!("warning: weaker sandbox: {weaker}");
    }
    let executor =
        signals::executor_stopped_by_signal(settings, catalog, "stopping the action").await?;
    let follow = args.follow;
    let verbose_build = args.verbose_build;
    // With --json, stdout carries the outcome alone: live output goes to stderr.
    let live_stdout_to_stderr = args.json;
    let terminal = std::io::stdout().is_terminal();
    // Live output is scrubbed as it streams, each stream on its own.
    let mut live_stdout = plan.output_scrubber();
    let mut live_stderr = plan.output_scrubber();
    let outcome = executor
        .run(&plan, |event| match event {
            RunEvent::Prepare(PrepareEvent::Building { tag }) => {
                eprintln!("building environment {tag}")
            }
            RunEvent::Prepare(PrepareEvent::BuildLine { line }) if verbose_build => {
                eprint!("  {}", render::sanitize(line));
            }
            RunEvent::Output { stream, bytes } if follow => {
                let shown = match stream {
                    StreamKind::Stdout => live_stdout.push(bytes),
                    StreamKind::Stderr => live_stderr.push(bytes),
                };
                follow_output(stream, &shown, live_stdout_to_stderr, terminal);
            }
            _ => {}
        })
        .await;
    if follow {
        let (rest_out, rest_err) = (live_stdout.finish(), live_stderr.finish());
        follow_output(
            StreamKind::Stdout,
            &rest_out,
            live_stdout_to_stderr,
            terminal,
        );
        follow_output(
            StreamKind::Stderr,
            &rest_err,
            live_stdout_to_stderr,
            terminal,
        );
    }
    if let Ok(outcome) = &outcome {
        show(outcome);
    }
    executor.close().await;
    outcome
}

/// Whether the last text packbox wrote to stderr left a line open (the action's stderr without
/// a final newline): the status line must then start a line of its own, or an action could print
/// a fake `ok: ...` that the real status would only continue.
static STDERR_LINE_OPEN: AtomicBool = AtomicBool::new(false);
/// The same for stdout, when it is a terminal (which stderr may share).
static TERMINAL_STDOUT_LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Writes to stderr and remembers whether a line is left open.
fn write_stderr(bytes: &[u8]) {
    if let Some(last) = bytes.last() {
        STDERR_LINE_OPEN.store(*last != b'\n', Ordering::Relaxed);
        let _ = std::io::stderr().write_all(bytes);
    }
}

/// Writes to stdout (a terminal: sanitised first) and remembers whether a terminal line is left
/// open.
fn write_stdout(bytes: &[u8], terminal: bool) {
    let Some(last) = bytes.last() else {
        return;
    };
    if terminal {
        TERMINAL_STDOUT_LINE_OPEN.store(*last != b'\n', Ordering::Relaxed);
    }
    let _ = std::io::stdout().write_all(bytes);
}

/// Live output, already scrubbed of secrets: raw bytes to a pipe, sanitised text to a terminal.
pub fn follow_output(stream: StreamKind, bytes: &[u8], stdout_to_stderr: bool, terminal: bool) {
    if bytes.is_empty() {
        return;
    }
    let clean = |bytes: &[u8]| render::sanitize(&String::from_utf8_lossy(bytes)).into_bytes();
    match stream {
        StreamKind::Stdout if stdout_to_stderr => write_stderr(&clean(bytes)),
        StreamKind::Stdout if terminal => write_stdout(&clean(bytes), true),
        StreamKind::Stdout => write_stdout(bytes, false),
        StreamKind::Stderr => write_stderr(&clean(bytes)),
    }
}

/// What the human rendering of a run shows, from a local outcome or a server's record.
pub struct Shown<'a> {
    /// The action's ref.
    pub action: &'a str,
    /// The status's name (`succeeded`, `failed`, ...); anything but `succeeded` shows `FAILED`.
    pub status: &'a str,
    /// What the action printed on stdout, scrubbed.
    pub stdout: &'a str,
    /// What the action printed on stderr, scrubbed.
    pub stderr: &'a str,
    /// The runtime the action ran on.
    pub runtime: &'a str,
    /// The runtime's version.
    pub runtime_version: &'a str,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// The action's exit code, when there is one.
    pub exit_code: Option<i64>,
    /// Why the run did not succeed.
    pub error: Option<&'a str>,
    /// Artifacts kept, and entries of the artifacts folder refused.
    pub artifacts: (usize, usize),
    /// Where the kept artifacts are (a local run's folder).
    pub artifacts_dir: Option<&'a str>,
}

impl<'a> Shown<'a> {
    fn of(outcome: &'a Outcome) -> Shown<'a> {
        Shown {
            action: &outcome.action,
            status: status_name(outcome.status),
            stdout: &outcome.stdout,
            stderr: &outcome.stderr,
            runtime: &outcome.runtime,
            runtime_version: &outcome.runtime_version,
            duration_ms: outcome.duration_ms,
            exit_code: outcome.exit_code,
            error: outcome.error.as_deref(),
            artifacts: (outcome.artifacts.len(), outcome.artifacts_refused.len()),
            artifacts_dir: outcome.artifacts_dir.as_deref(),
        }
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Timeout => "timeout",
        Status::Oom => "oom",
        Status::Cancelled => "cancelled",
        _ => "error",
    }
}

/// The action's output (unless it was followed), then a status line and the error on stderr.
/// The status line starts a line of its own, and what a server sent is shown on one line with
/// no control characters.
pub fn print_human(shown: &Shown<'_>, followed: bool) {
    if !followed {
        let terminal = std::io::stdout().is_terminal();
        // Written as is to a pipe (no copy of a large output); sanitised for a terminal.
        if terminal {
            write_stdout(render::sanitize(shown.stdout).as_bytes(), true);
        } else {
            write_stdout(shown.stdout.as_bytes(), false);
        }
        write_stderr(render::sanitize(shown.stderr).as_bytes());
    }
    let _ = std::io::stdout().flush();
    if TERMINAL_STDOUT_LINE_OPEN.swap(false, Ordering::Relaxed) {
        let _ = std::io::stdout().write_all(b"\n");
        let _ = std::io::stdout().flush();
    }
    if STDERR_LINE_OPEN.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
    let mark = match shown.status {
        "succeeded" => "ok",
        _ => "FAILED",
    };
    eprintln!(
        "{mark}: {} {} ({} {}, {} ms, exit code {})",
        render::one_line(shown.action),
        render::one_line(shown.status),
        render::one_line(shown.runtime),
        render::one_line(shown.runtime_version),
        shown.duration_ms,
        shown
            .exit_code
            .map_or_else(|| "none".to_string(), |c| c.to_string()),
    );
    if let Some(error) = shown.error {
        eprintln!("error: {}", render::sanitize(error));
    }
    let (kept, refused) = shown.artifacts;
    if kept > 0 {
        let place = shown
            .artifacts_dir
            .map(|dir| format!(" in {}", render::one_line(dir)))
            .unwrap_or_default();
        eprintln!("artifacts: {kept} kept{place}");
    }
    if refused > 0 {
        eprintln!("artifacts: {refused} refused (--json lists each with why)");
    }
}
