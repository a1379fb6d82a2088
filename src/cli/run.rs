//! `packbox run`: one action in one container.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use packbox::{
    Catalog, Error, Executor, Outcome, PrepareEvent, RunEvent, RunRequest, Status, StreamKind,
};
use tokio_util::sync::CancellationToken;

use super::options::{self, GlobalArgs, SandboxArgs};
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
    fn request(&self) -> RunRequest {
        let mut request = RunRequest::new(&self.packs, &self.action);
        request.params = self.params.clone();
        request.params_file = self.params_file.clone();
        request.secrets = self.secrets.clone();
        request.secrets_file = self.secrets_file.clone();
        request.allow_disabled = self.allow_disabled;
        request
    }
}

/// Runs the action and renders its outcome.
pub async fn execute(args: RunArgs, global: &GlobalArgs) -> ExitCode {
    match run(&args, global).await {
        Ok(outcome) => {
            if args.json {
                // Streamed: no second copy of a large output in memory.
                if let Err(e) = render::print_json(&outcome) {
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

async fn run(args: &RunArgs, global: &GlobalArgs) -> Result<Outcome, Error> {
    let settings = options::resolve_with(global, &args.sandbox)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    // Everything wrong with the input is said before the engine is contacted.
    let plan = packbox::plan(&settings, &catalog, &args.request())?;
    for warning in plan.warnings() {
        eprintln!("warning: {}", render::sanitize(&warning.to_string()));
    }
    for weaker in &plan.policy().weaker_than_default {
        eprintln!("warning: weaker sandbox: {weaker}");
    }
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());
    let executor = Executor::connect(settings, catalog)
        .await?
        .with_shutdown(shutdown);
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
    executor.close().await;
    outcome
}

/// Live output, already scrubbed of secrets: raw bytes to a pipe, sanitised text to a terminal.
fn follow_output(stream: StreamKind, bytes: &[u8], stdout_to_stderr: bool, terminal: bool) {
    if bytes.is_empty() {
        return;
    }
    let clean = |bytes: &[u8]| render::sanitize(&String::from_utf8_lossy(bytes)).into_bytes();
    let _ = match stream {
        StreamKind::Stdout if stdout_to_stderr => std::io::stderr().write_all(&clean(bytes)),
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
