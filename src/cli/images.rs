//! `packbox images build|copy`: the runtime images of the catalog, built where missing, or
//! copied to an engine that has no registry.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use packbox::{Catalog, CopyEvent, CopyResult, Error, ImageCopy, ImageEvent, ImageState};

use super::options::{self, GlobalArgs};
use super::{EXIT_INPUT, render, signals};

/// Subcommands of `packbox images`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build every runtime image of the catalog (those of $PACKBOX_RUNTIMES, when set) that the
    /// engine does not have (idempotent).
    Build {
        /// Print each build's output lines as well.
        #[arg(long)]
        verbose: bool,
        /// Import a Debian root file system tarball as packbox/base:SUITE through the engine's
        /// API when the engine lacks it (for an engine without a registry; make the tarball with
        /// `images/bootstrap-base --tar DIR SUITE`). Repeatable.
        #[arg(long, value_name = "SUITE=FILE", value_parser = parse_base_rootfs)]
        base_rootfs: Vec<(String, PathBuf)>,
    },
    /// Stream images from this engine into another one (no registry needed), skipping those
    /// it already has (same image id).
    Copy {
        /// The engine to copy to: an address (tcp://host:2376, unix:///path) or a docker context
        /// name. For an address, TLS comes from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
        #[arg(long, value_name = "ENGINE")]
        to: String,
        /// Images to copy (default: the catalog's runtime images and every environment image).
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
        /// Print the result as JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `images` subcommand.
pub async fn execute(command: ImagesCommand, global: &GlobalArgs) -> ExitCode {
    match command {
        ImagesCommand::Build {
            verbose,
            base_rootfs,
        } => match build(verbose, &base_rootfs, global).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => render::report(&error, false),
        },
        ImagesCommand::Copy { to, images, json } => {
            let named = !images.is_empty();
            match copy(&to, &images, json, global).await {
                Ok(report) => report_copy(&report, named, json),
                Err(error) => render::report(&error, json),
            }
        }
    }
}

/// `SUITE=FILE` of `--base-rootfs`.
fn parse_base_rootfs(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((suite, file)) if !suite.is_empty() && !file.is_empty() => {
            Ok((suite.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "`{text}`: expected SUITE=FILE, e.g. bookworm=/tmp/bookworm.tar"
        )),
    }
}

async fn build(
    verbose: bool,
    base_rootfs: &[(String, PathBuf)],
    global: &GlobalArgs,
) -> Result<(), Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let executor =
        signals::executor_stopped_by_signal(settings, catalog, "stopping the builds").await?;
    match executor.import_base_images(base_rootfs).await {
        Ok(bases) => {
            for base in bases {
                let what = if base.imported { "imported" } else { "present" };
                eprintln!("{}: {what} {}", base.tag, base.id);
            }
        }
        Err(error) => {
            executor.close().await;
            return Err(error);
        }
    }
    let built = executor
        .build_runtime_images(|event| match event {
            ImageEvent::Checking { image } => eprintln!("{image}: checking"),
            ImageEvent::BuildLine { line } if verbose => {
                eprint!("  {}", render::sanitize(line))
            }
            ImageEvent::Done { image, state } => match state {
                ImageState::Present { .. } => eprintln!("{image}: present"),
                ImageState::Pulled { id } => eprintln!("{image}: pulled {id}"),
                ImageState::Built { id } => eprintln!("{image}: built {id}"),
            },
            _ => {}
        })
        .await;
    executor.close().await;
    built
}

async fn copy(
    to: &str,
    images: &[String],
    json: bool,
    global: &GlobalArgs,
) -> Result<Vec<ImageCopy>, Error> {
    let settings = options::resolve(global)?;
    let target = options::engine_flag("--to", to)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let executor =
        signals::executor_stopped_by_signal(settings, catalog, "stopping the image copy").await?;
    let mut progress = Progress::new(json, global.no_color, target.host.clone());
    let copied = executor
        .copy_images_to(&target, images, |event| progress.event(event))
        .await;
    progress.finish();
    executor.close().await;
    copied
}

/// Copy progress: a bar on a terminal, a line per 128 MiB otherwise (CI logs), nothing for JSON.
struct Progress {
    json: bool,
    terminal: bool,
    target: String,
    bar: Option<ProgressBar>,
    reported: u64,
}

impl Progress {
    fn new(json: bool, plain: bool, target: String) -> Progress {
        Progress {
            json,
            terminal: std::io::stderr().is_terminal() && !plain,
            target,
            bar: None,
            reported: 0,
        }
    }

    fn event(&mut self, event: CopyEvent<'_>) {
        if self.json {
            return;
        }
        match event {
            CopyEvent::Streaming { images, estimate } if self.terminal => {
                let bar = ProgressBar::new(estimate);
                if let Ok(style) = ProgressStyle::with_template(
                    "{bytes}/~{total_bytes} {bytes_per_sec} {wide_msg}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(images.join(", "));
                self.bar = Some(bar);
            }
            CopyEvent::Streaming { images, estimate } => eprintln!(
                "streaming {} (about {} MiB) to {}",
                images.join(", "),
                estimate >> 20,
                self.target
            ),
            CopyEvent::Progress { bytes } => match &self.bar {
                Some(bar) => bar.set_position(bytes),
                None if bytes >> 27 > self.reported >> 27 => {
                    eprintln!("  {} MiB streamed", bytes >> 20);
                    self.reported = bytes;
                }
                None => {}
            },
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Prints what happened to each image; an image named on the command line that this engine
/// does not have is a typo to report (exit 2).
fn report_copy(report: &[ImageCopy], named: bool, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({ "images": report }));
    } else {
        for image in report {
            let what = match image.result {
                CopyResult::Copied => "copied",
                CopyResult::Present => "present, skipped",
                CopyResult::MissingOnSource => "not on this engine, skipped",
            };
            eprintln!("{}: {what}", image.image);
        }
    }
    let missing: Vec<&str> = report
        .iter()
        .filter(|i| named && i.result == CopyResult::MissingOnSource)
        .map(|i| i.image.as_str())
        .collect();
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: not on this engine: {}", missing.join(", "));
        ExitCode::from(EXIT_INPUT)
    }
}
