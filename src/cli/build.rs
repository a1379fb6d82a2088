//! `packbox build`: environment images built ahead of time, with progress.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use packbox::{BuildEvent, Catalog, EnvReport, EnvStatus, Error};

use super::options::{self, GlobalArgs};
use super::{EXIT_ENGINE, EXIT_INPUT, render, signals};

/// Arguments of `packbox build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Folder holding the packs, one sub-folder per pack.
    #[arg(long, env = "PACKBOX_PACKS", value_name = "DIR")]
    packs: PathBuf,
    /// Packs to build for (default: every pack of the folder).
    #[arg(value_name = "PACK")]
    names: Vec<String>,
    /// Print one JSON event per line (started, finished) instead of progress.
    #[arg(long)]
    json: bool,
}

/// How build progress is shown: a spinner on a terminal, plain lines otherwise, or JSON events.
enum Progress {
    Bar(Option<ProgressBar>),
    Lines,
    Json,
}

impl Progress {
    fn new(json: bool, plain: bool) -> Progress {
        if json {
            Progress::Json
        } else if std::io::stderr().is_terminal() && !plain {
            Progress::Bar(None)
        } else {
            Progress::Lines
        }
    }

    fn event(&mut self, event: BuildEvent<'_>) {
        match (self, event) {
            (Progress::Json, BuildEvent::Started { action }) => {
                print_event(&serde_json::json!({"event": "started", "action": action}));
            }
            (Progress::Json, BuildEvent::Finished { report }) => {
                print_event(&serde_json::json!({"event": "finished", "report": report}));
            }
            (Progress::Json, BuildEvent::Line { .. }) => {}
            (Progress::Bar(bar), BuildEvent::Started { action }) => {
                let spinner = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {wide_msg}") {
                    spinner.set_style(style);
                }
                spinner.set_prefix(action.to_string());
                spinner.enable_steady_tick(Duration::from_millis(120));
                *bar = Some(spinner);
            }
            (Progress::Bar(Some(bar)), BuildEvent::Line { line }) => {
                bar.set_message(render::sanitize(line.trim()));
            }
            (Progress::Bar(bar), BuildEvent::Finished { report }) => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("{}", summary(report));
            }
            (Progress::Lines, BuildEvent::Started { action }) => eprintln!("{action}: preparing"),
            (Progress::Lines, BuildEvent::Line { .. }) => {}
            (Progress::Lines, BuildEvent::Finished { report }) => eprintln!("{}", summary(report)),
            _ => {}
        }
    }
}

fn print_event(event: &serde_json::Value) {
    if let Err(e) = render::print_json(event) {
        eprintln!("error: cannot write an event: {e}");
    }
}

fn summary(report: &EnvReport) -> String {
    let what = match report.status {
        EnvStatus::Built => "built",
        EnvStatus::Present => "present",
        EnvStatus::NotNeeded => "no dependencies, runs on",
        EnvStatus::Invalid => "INVALID",
        _ => "FAILED",
    };
    let detail = report
        .image
        .clone()
        .or_else(|| report.error.clone())
        .unwrap_or_default();
    format!("{}: {what} {}", report.action, render::sanitize(&detail))
}

/// Builds the environments and reports; exits 125 when a build failed, else 2 when a pack or
/// action is invalid (the others are built either way).
pub async fn execute(args: BuildArgs, global: &GlobalArgs) -> ExitCode {
    let mut progress = Progress::new(args.json, global.no_color);
    let any = |reports: &[EnvReport], status| reports.iter().any(|r| r.status == status);
    match build(&args, global, &mut progress).await {
        Ok(reports) if any(&reports, EnvStatus::Failed) => ExitCode::from(EXIT_ENGINE),
        Ok(reports) if any(&reports, EnvStatus::Invalid) => ExitCode::from(EXIT_INPUT),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => render::report(&error, args.json),
    }
}

async fn build(
    args: &BuildArgs,
    global: &GlobalArgs,
    progress: &mut Progress,
) -> Result<Vec<EnvReport>, Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let executor =
        signals::executor_stopped_by_signal(settings, catalog, "stopping the builds").await?;
    let reports = executor
        .build_environments(&args.packs, &args.names, |event| progress.event(event))
        .await;
    executor.close().await;
    reports
}
