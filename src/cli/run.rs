//! `packbox run`: one action in one container.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use packbox::prepare::PrepareEvent;
use packbox::{Catalog, Engine, Error, Executor, Outcome, RunRequest, Status};

use super::render;

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
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the action and renders its outcome.
pub async fn execute(args: RunArgs, catalog: Option<&Path>) -> ExitCode {
    let mut request = RunRequest::new(&args.packs, &args.action);
    request.params = args.params;
    request.params_file = args.params_file;
    match run(&request, catalog).await {
        Ok(outcome) => {
            if args.json {
                match serde_json::to_string(&outcome) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: cannot serialise the outcome: {e}"),
                }
            } else {
                print_human(&outcome);
            }
            ExitCode::from(outcome.status.exit_code() as u8)
        }
        Err(error) => render::report(&error, args.json),
    }
}

async fn run(request: &RunRequest, catalog: Option<&Path>) -> Result<Outcome, Error> {
    let catalog = Catalog::load(catalog)?;
    // Everything wrong with the input is said before the engine is contacted.
    let plan = packbox::plan(&catalog, request)?;
    let executor = Executor::new(Engine::connect().await?, catalog);
    executor
        .run(&plan, |event| match event {
            PrepareEvent::Building { tag } => eprintln!("building environment {tag}"),
            PrepareEvent::BuildLine { line } => {
                if std::env::var_os("PACKBOX_VERBOSE_BUILD").is_some() {
                    eprint!("  {}", render::sanitize(line));
                }
            }
        })
        .await
}

fn print_human(outcome: &Outcome) {
    let stdout = std::io::stdout();
    let clean = |text: &str| {
        if stdout.is_terminal() {
            render::sanitize(text)
        } else {
            text.to_string()
        }
    };
    print!("{}", clean(&outcome.stdout));
    if !outcome.stderr.is_empty() {
        eprint!("{}", render::sanitize(&outcome.stderr));
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
