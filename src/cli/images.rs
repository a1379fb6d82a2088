//! `packbox images build`: the runtime images of the catalog, built where missing.

use std::process::ExitCode;

use clap::Subcommand;
use packbox::{Catalog, Error, Executor, ImageEvent, ImageState};
use tokio_util::sync::CancellationToken;

use super::options::{self, GlobalArgs};
use super::{render, signals};

/// Subcommands of `packbox images`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build every runtime image of the catalog that the engine does not have (idempotent).
    Build {
        /// Print each build's output lines as well.
        #[arg(long)]
        verbose: bool,
    },
}

/// Runs an `images` subcommand.
pub async fn execute(command: ImagesCommand, global: &GlobalArgs) -> ExitCode {
    match command {
        ImagesCommand::Build { verbose } => match build(verbose, global).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => render::report(&error, false),
        },
    }
}

async fn build(verbose: bool, global: &GlobalArgs) -> Result<(), Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());
    let executor = Executor::connect(settings, catalog)
        .await?
        .with_shutdown(shutdown);
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
