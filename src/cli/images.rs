//! `packbox images build|copy`: the runtime images of the catalog, built where missing, or copied
//! to an engine that has no registry.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use packbox::endpoint::Environment;
use packbox::executor::ImageEvent;
use packbox::image_copy::{self, CopyEvent, CopyResult, ImageCopy};
use packbox::runtime_image::ImageState;
use packbox::{Catalog, Engine, Error, Executor};

use super::render;

/// Subcommands of `packbox images`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build every runtime image of the catalog that the engine does not have (idempotent).
    Build {
        /// Print each build's output lines as well.
        #[arg(long)]
        verbose: bool,
    },
    /// Stream images from this engine into another one (no registry needed), skipping those
    /// it already has.
    Copy {
        /// The engine to copy to: an address (tcp://host:2376, unix:///path) or a docker context
        /// name. TLS files come from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH or the context.
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
pub async fn execute(command: ImagesCommand, catalog: Option<&Path>) -> ExitCode {
    match command {
        ImagesCommand::Build { verbose } => match build(verbose, catalog).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => render::report(&error, false),
        },
        ImagesCommand::Copy { to, images, json } => {
            let named = !images.is_empty();
            match copy(&to, images, json, catalog).await {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::json!({ "images": report }));
                    } else {
                        for image in &report {
                            let what = match image.result {
                                CopyResult::Copied => "copied",
                                CopyResult::Present => "present, skipped",
                                CopyResult::MissingOnSource => "not on this engine, skipped",
                            };
                            eprintln!("{}: {what}", image.image);
                        }
                    }
                    // An image named on the command line that is not there is a typo to report.
                    let missing: Vec<&str> = report
                        .iter()
                        .filter(|i| named && i.result == CopyResult::MissingOnSource)
                        .map(|i| i.image.as_str())
                        .collect();
                    if missing.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("error: not on this engine: {}", missing.join(", "));
                        ExitCode::from(super::EXIT_INPUT)
                    }
                }
                Err(error) => render::report(&error, json),
            }
        }
    }
}

async fn build(verbose: bool, catalog: Option<&Path>) -> Result<(), Error> {
    let catalog = Catalog::load(catalog)?;
    let executor = Executor::new(Engine::connect().await?, catalog);
    executor
        .build_runtime_images(|event| match event {
            ImageEvent::Checking { image } => eprintln!("{image}: checking"),
            ImageEvent::BuildLine { line } if verbose => {
                eprint!("  {}", render::sanitize(line))
            }
            ImageEvent::BuildLine { .. } => {}
            ImageEvent::Done { image, state } => match state {
                ImageState::Present { .. } => eprintln!("{image}: present"),
                ImageState::Pulled { id } => eprintln!("{image}: pulled {id}"),
                ImageState::Built { id } => eprintln!("{image}: built {id}"),
            },
        })
        .await
}

async fn copy(
    to: &str,
    images: Vec<String>,
    json: bool,
    catalog: Option<&Path>,
) -> Result<Vec<ImageCopy>, Error> {
    let env: Environment = std::env::vars().collect();
    let source = Engine::connect_with(None, &env).await?;
    let target = Engine::connect_flag("--to", to, &env).await?;
    let images = if images.is_empty() {
        image_copy::default_images(&source, &Catalog::load(catalog)?).await?
    } else {
        images
    };
    let show_bar =
        !json && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut bar: Option<ProgressBar> = None;
    let mut reported = 0u64;
    let report = image_copy::copy(&source, &target, &images, |event| match event {
        CopyEvent::Streaming { images, estimate } => {
            if show_bar {
                let progress = ProgressBar::new(estimate);
                if let Ok(style) = ProgressStyle::with_template(
                    "{bytes}/~{total_bytes} {bytes_per_sec} {wide_msg}",
                ) {
                    progress.set_style(style);
                }
                progress.set_message(images.join(", "));
                bar = Some(progress);
            } else if !json {
                eprintln!(
                    "streaming {} (about {} MiB) to {}",
                    images.join(", "),
                    estimate >> 20,
                    target.endpoint().host
                );
            }
        }
        CopyEvent::Progress { bytes } => {
            if let Some(bar) = &bar {
                bar.set_position(bytes);
            } else if !json && bytes >> 27 > reported >> 27 {
                // A line per 128 MiB, for logs without a terminal (CI).
                eprintln!("  {} MiB streamed", bytes >> 20);
                reported = bytes;
            }
        }
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}
