//! `packbox runtimes verify|list`: which runtime versions the images really hold.

use std::process::ExitCode;

use clap::Subcommand;
use packbox::{Catalog, Error, Executor, VersionStatus};

use super::options::{self, GlobalArgs};
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
pub async fn execute(command: RuntimesCommand, global: &GlobalArgs) -> ExitCode {
    let (verify, json) = match command {
        RuntimesCommand::Verify { json } => (true, json),
        RuntimesCommand::List { json } => (false, json),
    };
    match statuses(verify, global).await {
        Ok((statuses, not_honoured)) => {
            if json {
                match serde_json::to_string_pretty(&statuses) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: cannot serialise the result: {e}"),
                }
                for note in &not_honoured {
                    eprintln!("warning: {}", render::sanitize(note));
                }
            } else {
                print_table(&statuses);
                if !not_honoured.is_empty() {
                    println!(
                        "\nNOT HONOURED (runtime files in Attune's shape ask for these; packbox does not do them)"
                    );
                    for note in &not_honoured {
                        println!("  {}", render::sanitize(note));
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, json),
    }
}

/// The versions' statuses, and what the catalog's files in Attune's shape ask for that packbox
/// does not do.
async fn statuses(
    verify: bool,
    global: &GlobalArgs,
) -> Result<(Vec<VersionStatus>, Vec<String>), Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let not_honoured = catalog.warnings();
    let executor = Executor::connect(settings, catalog).await?;
    let statuses = if verify {
        executor.verify_runtimes().await
    } else {
        executor.list_runtimes().await
    };
    executor.close().await;
    Ok((statuses?, not_honoured))
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
