//! `packbox run`: one action in one container.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use packbox::config::{ConfigFile, RunSettings, SandboxSettings, Size, parse_size};
use packbox::engine::StreamKind;
use packbox::executor::RunEvent;
use packbox::prepare::PrepareEvent;
use packbox::{Catalog, Engine, Error, Executor, Outcome, RunRequest, Status};
use tokio_util::sync::CancellationToken;

use super::{render, signals};

/// Arguments of `packbox run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Folder holding the packs, one sub-folder per pack.
    #[arg(long, env = "PACKBOX_PACKS", value_name = "DIR")]
    packs: PathBuf,
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
    /// Settings file (default: ./packbox.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Seconds before the action is stopped (default: its timeout_seconds, else 600).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping the action (default 10).
    #[arg(long, value_name = "SECONDS")]
    grace: Option<u64>,
    /// Bytes kept per output stream (default 10m).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,
    /// Network the action may use: none (default), bridge, or a network name.
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// Memory limit, without swap (default 512m).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// CPUs (default 1).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Maximum number of processes (default 256).
    #[arg(long, value_name = "N")]
    pids: Option<u32>,
    /// Maximum number of open files (default 1024).
    #[arg(long, value_name = "N")]
    nofile: Option<u32>,
    /// Size of the /tmp tmpfs (default 64m).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    tmp_size: Option<u64>,
    /// User (UID or UID:GID) the action runs as (default 65534:65534).
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// An OCI runtime the engine offers, e.g. runsc (default: the engine's).
    #[arg(long, value_name = "NAME")]
    oci_runtime: Option<String>,
    /// Syscall profile: packbox (default), engine-default, or a JSON profile file.
    #[arg(long, value_name = "packbox|engine-default|FILE")]
    seccomp: Option<String>,
}

impl RunArgs {
    /// The flags as settings, to lay over the config file's.
    fn as_settings(&self) -> ConfigFile {
        ConfigFile {
            sandbox: SandboxSettings {
                network: self.network.clone(),
                tmp_size: self.tmp_size.map(Size),
                user: self.user.clone(),
                memory: self.memory.map(Size),
                pids: self.pids,
                cpus: self.cpus,
                nofile: self.nofile,
                oci_runtime: self.oci_runtime.clone(),
                seccomp: self.seccomp.clone(),
                ..SandboxSettings::default()
            },
            run: RunSettings {
                timeout_seconds: self.timeout,
                grace_seconds: self.grace,
                max_output: self.max_output.map(Size),
            },
        }
    }

    fn request(&self) -> Result<RunRequest, Error> {
        let settings = ConfigFile::load(self.config.as_deref())?.with_flags(self.as_settings());
        let mut request = RunRequest::new(&self.packs, &self.action);
        request.params = self.params.clone();
        request.params_file = self.params_file.clone();
        request.secrets = self.secrets.clone();
        request.secrets_file = self.secrets_file.clone();
        request.policy = settings.policy()?;
        request.timeout = settings.timeout();
        request.grace = settings.grace();
        if let Some(max_output) = settings.max_output() {
            request.max_output = max_output;
        }
        Ok(request)
    }
}

/// Runs the action and renders its outcome.
pub async fn execute(args: RunArgs, catalog: Option<&Path>) -> ExitCode {
    match run(&args, catalog).await {
        Ok(outcome) => {
            if args.json {
                // Streamed: no second copy of a large output in memory.
                let mut stdout = std::io::stdout().lock();
                let written = serde_json::to_writer(&mut stdout, &outcome)
                    .map_err(std::io::Error::from)
                    .and_then(|()| stdout.write_all(b"\n"));
                if let Err(e) = written {
                    eprintln!("error: cannot write the outcome: {e}");
                }
            } else {
                print_human(&outcome, args.follow);
            }
            ExitCode::from(outcome.status.exit_code() as u8)
        }
        Err(error) => render::report(&error, args.json),
    }
}

async fn run(args: &RunArgs, catalog: Option<&Path>) -> Result<Outcome, Error> {
    let catalog = Catalog::load(catalog)?;
    // Everything wrong with the input is said before the engine is contacted.
    let plan = packbox::plan(&catalog, &args.request()?)?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());
    let executor = Executor::new(Engine::connect().await?, catalog).with_shutdown(shutdown);
    let follow = args.follow;
    // With --json, stdout carries the outcome alone: live output goes to stderr.
    let live_stdout_to_stderr = args.json;
    let terminal = std::io::stdout().is_terminal();
    executor
        .run(&plan, move |event| match event {
            RunEvent::Prepare(PrepareEvent::Building { tag }) => {
                eprintln!("building environment {tag}")
            }
            RunEvent::Prepare(PrepareEvent::BuildLine { line }) => {
                if std::env::var_os("PACKBOX_VERBOSE_BUILD").is_some() {
                    eprint!("  {}", render::sanitize(line));
                }
            }
            RunEvent::Output { stream, bytes } if follow => {
                let stream = if live_stdout_to_stderr {
                    StreamKind::Stderr
                } else {
                    stream
                };
                follow_output(stream, bytes, terminal)
            }
            RunEvent::Output { .. } => {}
        })
        .await
}

/// Live output: raw bytes to a pipe, sanitised text to a terminal. Secrets are scrubbed only
/// from the outcome, so `--follow` shows what the action prints as it prints it.
fn follow_output(stream: StreamKind, bytes: &[u8], terminal: bool) {
    let clean = |bytes: &[u8]| render::sanitize(&String::from_utf8_lossy(bytes)).into_bytes();
    let _ = match stream {
        StreamKind::Stdout if terminal => std::io::stdout().write_all(&clean(bytes)),
        StreamKind::Stdout => std::io::stdout().write_all(bytes),
        StreamKind::Stderr => std::io::stderr().write_all(&clean(bytes)),
    };
}

fn print_human(outcome: &Outcome, followed: bool) {
    if !followed {
        let mut stdout = std::io::stdout();
        // Written as is to a pipe (no copy of a large output); sanitised for a terminal.
        let _ = if stdout.is_terminal() {
            stdout.write_all(render::sanitize(&outcome.stdout).as_bytes())
        } else {
            stdout.write_all(outcome.stdout.as_bytes())
        };
        if !outcome.stderr.is_empty() {
            eprint!("{}", render::sanitize(&outcome.stderr));
        }
    }
    let mark = match outcome.status {
        Status::Succeeded => "ok",
        _ => "FAILED",
    };
    eprintln!(
        "{mark}: {} {} ({} {}, {} ms, exit code {})",
        outcome.action,
        serde_json::to_value(outcome.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        outcome.runtime,
        outcome.runtime_version,
        outcome.duration_ms,
        outcome
            .exit_code
            .map_or_else(|| "none".to_string(), |c| c.to_string()),
    );
    if let Some(error) = &outcome.error {
        eprintln!("error: {}", render::sanitize(error));
    }
}
