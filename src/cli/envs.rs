//! `packbox envs list|prune`: the environment images on the engine.

use std::process::ExitCode;

use clap::Subcommand;
use packbox::{Catalog, EnvInfo, Error, Executor};

use super::options::{self, GlobalArgs};
use super::render;

/// Subcommands of `packbox envs`.
#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// List environment images, newest first.
    List {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove environment images but the newest, never one a container uses.
    Prune {
        /// How many of the newest images to keep.
        #[arg(long, default_value_t = 0)]
        keep: usize,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `envs` subcommand.
pub async fn execute(command: EnvsCommand, global: &GlobalArgs) -> ExitCode {
    let json = match command {
        EnvsCommand::List { json } | EnvsCommand::Prune { json, .. } => json,
    };
    match run(command, global).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render::report(&error, json),
    }
}

async fn run(command: EnvsCommand, global: &GlobalArgs) -> Result<(), Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let executor = Executor::connect(settings, catalog).await?;
    let done = envs(command, &executor).await;
    executor.close().await;
    done
}

async fn envs(command: EnvsCommand, executor: &Executor) -> Result<(), Error> {
    match command {
        EnvsCommand::List { json } => {
            let envs = executor.environments().await?;
            if json {
                print_json(&envs);
            } else {
                print_table(&envs);
            }
        }
        EnvsCommand::Prune {
            keep,
            dry_run,
            json,
        } => {
            let report = executor.prune_environments(keep, dry_run).await?;
            if json {
                print_json(&report);
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for env in &report.removed {
                    println!("{verb} {} ({})", env.tag, env.id);
                }
                for pack in &report.removed_pack_images {
                    println!("{verb} {pack} (a pack image built on it)");
                }
                println!(
                    "{verb} {} image(s), kept {}",
                    report.removed.len(),
                    report.kept.len()
                );
            }
        }
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot serialise the result: {e}"),
    }
}

fn print_table(envs: &[EnvInfo]) {
    println!(
        "{:<8} {:<9} {:>9} {:<21} {:<14} KEY",
        "RUNTIME", "VERSION", "SIZE", "CREATED", "DEPS"
    );
    for env in envs {
        println!(
            "{:<8} {:<9} {:>8}M {:<21} {:<14} {}{}",
            env.runtime,
            env.version,
            env.size_bytes / (1 << 20),
            env.created,
            env.dependency_hash
                .get(..12)
                .unwrap_or(&env.dependency_hash),
            env.key.get(..16).unwrap_or(&env.key),
            if env.in_use { " (in use)" } else { "" },
        );
    }
}
