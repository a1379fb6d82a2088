//! `packbox gc`: removes the containers of packbox processes that are gone, and pack volumes
//! (packs delivered by content) beyond the keep rule that no container uses.

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
    /// Pack volumes kept per pack, newest first, even when unused (the content a pack has now
    /// and the one before).
    #[arg(long, value_name = "N", default_value_t = 2)]
    keep: usize,
}

/// Sweeps leftovers and reports them.
pub async fn execute(args: GcArgs, global: &GlobalArgs) -> ExitCode {
    let swept = async {
        let settings = options::resolve(global)?;
        let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
        let executor = Executor::connect(settings, catalog).await?;
        let swept = executor.sweep_orphans().await;
        let collected = match swept {
            Ok(_) => executor.collect_pack_volumes(args.keep).await.map(Some),
            Err(_) => Ok(None),
        };
        executor.close().await;
        Ok::<_, packbox::Error>((swept?, collected?.unwrap_or_default()))
    }
    .await;
    match swept {
        Ok((swept, volumes)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "removed": swept, "pack_volumes": volumes })
                );
            } else {
                for container in &swept {
                    println!(
                        "removed {} ({}, owner pid {} is gone)",
                        container.container,
                        container.action.as_deref().unwrap_or("no action"),
                        container.owner_pid
                    );
                }
                println!("removed {} leftover container(s)", swept.len());
                for volume in &volumes.removed {
                    println!("removed pack volume {volume}");
                }
                println!(
                    "removed {} pack volume(s), kept {}",
                    volumes.removed.len(),
                    volumes.kept.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, args.json),
    }
}
