//! `packbox gc`: removes what packbox processes that are gone left behind: containers, and on
//! a Swarm manager services, networks and secrets.

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
        let swept = executor.sweep_orphans().await;
        executor.close().await;
        swept
    }
    .await;
    match swept {
        Ok(swept) => {
            if args.json {
                println!("{}", serde_json::json!({ "removed": swept }));
            } else {
                for leftover in &swept {
                    println!(
                        "removed {} {} ({}, owner pid {} is gone)",
                        leftover.kind,
                        leftover.id,
                        leftover.action.as_deref().unwrap_or("no action"),
                        leftover.owner_pid
                    );
                }
                println!("removed {} leftover(s)", swept.len());
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, args.json),
    }
}
