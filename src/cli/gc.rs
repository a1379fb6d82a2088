//! `packbox gc`: removes the containers of packbox processes that are gone.

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
                for container in &swept {
                    println!(
                        "removed {} ({}, owner pid {} is gone)",
                        container.container,
                        container.action.as_deref().unwrap_or("no action"),
                        container.owner_pid
                    );
                }
                println!("removed {} leftover container(s)", swept.len());
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, args.json),
    }
}
