//! `packbox runtimes verify|list`: which runtime versions the images really hold.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use packbox::probe::{self, ProbeCache, VersionStatus};
use packbox::{Catalog, Engine, Error};

use super::render;

/// Subcommands of `packbox runtimes`.
#[derive(Debug, Subcommand)]
pub enum RuntimesCommand {
    /// Make sure each version's image exists and probe it (cached by image id).
    Verify {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show what is known (from the probe cache) without starting or building anything.
    List {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `runtimes` subcommand.
pub async fn execute(command: RuntimesCommand, catalog: Option<&Path>) -> ExitCode {
    let (verify, json) = match command {
        RuntimesCommand::Verify { json } => (true, json),
        RuntimesCommand::List { json } => (false, json),
    };
    match statuses(verify, catalog).await {
        Ok(statuses) => {
            if json {
                match serde_json::to_string_pretty(&statuses) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: cannot serialise the result: {e}"),
                }
            } else {
                print_table(&statuses);
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, json),
    }
}

async fn statuses(verify: bool, catalog: Option<&Path>) -> Result<Vec<VersionStatus>, Error> {
    let catalog = Catalog::load(catalog)?;
    let filter = std::env::var("PACKBOX_RUNTIMES").ok();
    let runtimes = probe::filter_runtimes(&catalog, filter.as_deref())?;
    let engine = Engine::connect().await?;
    let cache = ProbeCache::open();
    Ok(if verify {
        probe::verify(&engine, &catalog, &runtimes, &cache).await
    } else {
        probe::list(&engine, &runtimes, &cache).await
    })
}

fn print_table(statuses: &[VersionStatus]) {
    println!(
        "{:<8} {:<8} {:<10} {:<10} {:<22} REASON",
        "RUNTIME", "VERSION", "DETECTED", "AVAILABLE", "IMAGE"
    );
    for status in statuses {
        let available = match status.available {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unverified",
        };
        println!(
            "{:<8} {:<8} {:<10} {:<10} {:<22} {}",
            status.runtime,
            status.version,
            status.detected_version.as_deref().unwrap_or("-"),
            available,
            status.image,
            status.reason.as_deref().unwrap_or(""),
        );
    }
}
