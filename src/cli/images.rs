//! `packbox images build`: the runtime images of the catalog, built where missing.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use packbox::executor::ImageEvent;
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
}

/// Runs an `images` subcommand.
pub async fn execute(command: ImagesCommand, catalog: Option<&Path>) -> ExitCode {
    match command {
        ImagesCommand::Build { verbose } => match build(verbose, catalog).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => render::report(&error, false),
        },
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
