//! `packbox gc`: removes what packbox processes that are gone left behind: containers, on a
//! Swarm manager services, networks and secrets, and the layers of unfinished builds.

use std::process::ExitCode;

use clap::Args;
use packbox::{Catalog, Executor};

use super::options::{self, GlobalArgs};
use super::render;

/// Arguments of `packbox gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print what was removed as JSON.
    #[arg(long)]
    json: bool,
}

/// Sweeps leftovers and reports them.
pub async fn execute(args: GcArgs, global: &GlobalArgs) -> ExitCode {
    let swept = async {
        let settings = options::resolve(global)?;
        let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
        let executor = Executor::connect(settings, catalog).await?;
        let report = executor.gc().await;
        executor.close().await;
        report
    }
    .await;
    match swept {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "removed": report.containers, "images": report.images })
                );
            } else {
                for leftover in &report.containers {
                    println!(
                        "removed {} {} ({}, owner pid {} is gone)",
                        leftover.kind,
                        leftover.id,
                        leftover.action.as_deref().unwrap_or("no action"),
                        leftover.owner_pid
                    );
                }
                for image in &report.images {
                    println!("removed image {image} (an unfinished build's layer)");
                }
                println!(
                    "removed {} leftover(s), {} image(s)",
                    report.containers.len(),
                    report.images.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, args.json),
    }
}
