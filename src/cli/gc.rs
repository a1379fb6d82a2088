//! `packbox gc`: removes what packbox processes that are gone left behind: containers, on a
//! Swarm manager services, networks and secrets, and the layers of unfinished builds; and pack
//! volumes (packs delivered by content) beyond the keep rule that no container uses.

use std::process::ExitCode;
use std::time::Duration;

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
    /// Pack volumes kept per pack, newest first, even when unused (the content a pack has now
    /// and the one before).
    #[arg(long, value_name = "N", default_value_t = 2)]
    keep: usize,
    /// Pack and init volumes younger than this many seconds are kept whatever the keep rule:
    /// a run may be between filling one and creating the container that mounts it.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    min_volume_age: u64,
}

/// Sweeps leftovers and reports them.
pub async fn execute(args: GcArgs, global: &GlobalArgs) -> ExitCode {
    let swept = async {
        let settings = options::resolve(global)?;
        let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
        let executor = Executor::connect(settings, catalog).await?;
        let report = executor
            .gc(args.keep, Duration::from_secs(args.min_volume_age))
            .await;
        executor.close().await;
        report
    }
    .await;
    match swept {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "removed": report.containers,
                        "images": report.images,
                        "pack_volumes": report.pack_volumes,
                        "init_volumes": report.init_volumes,
                    })
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
                for volume in &report.pack_volumes.removed {
                    println!("removed pack volume {volume}");
                }
                for volume in &report.init_volumes {
                    println!("removed init volume {volume} (another packbox build's)");
                }
                println!(
                    "removed {} leftover(s), {} image(s), {} pack volume(s) (kept {})",
                    report.containers.len(),
                    report.images.len(),
                    report.pack_volumes.removed.len(),
                    report.pack_volumes.kept.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, args.json),
    }
}
