//! `packbox pack validate`: every problem of a pack (or a folder of packs) at once, without an
//! engine; exit code 2 when there is any.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use packbox::CheckedPack;
use packbox::{Catalog, Error};

use super::options::{self, GlobalArgs};
use super::{EXIT_INPUT, render};

/// Subcommands of `packbox pack`.
#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Check a pack, or every pack of a folder, and report every problem (file, line, field,
    /// what was expected); exit code 2 when there is any.
    Validate {
        /// A pack folder (holding pack.yaml) or a folder of packs.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `pack` subcommand.
pub fn execute(command: PackCommand, global: &GlobalArgs) -> ExitCode {
    let PackCommand::Validate { dir, json } = command;
    let catalog = match options::resolve(global)
        .map_err(Error::from)
        .and_then(|settings| Ok(Catalog::load(settings.catalog_dir.as_deref())?))
    {
        Ok(catalog) => catalog,
        Err(error) => return render::report(&error, json),
    };
    let reports = packbox::check_packs(&dir, &catalog);
    let problems: Vec<_> = reports.iter().flat_map(|r| &r.problems).collect();
    if json {
        let object = serde_json::json!({
            "valid": problems.is_empty(),
            "packs": reports.iter().map(pack_json).collect::<Vec<_>>(),
            "problems": problems,
        });
        println!("{object}");
    } else {
        for problem in &problems {
            println!("{}", render::sanitize(&problem.to_string()));
        }
        for report in &reports {
            eprintln!("{}", summary(report));
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INPUT)
    }
}

fn pack_json(report: &CheckedPack) -> serde_json::Value {
    serde_json::json!({
        "dir": report.dir,
        "ref": report.pack.as_ref().map(|p| &p.pack_ref),
        "actions": report.actions.iter().map(|a| &a.manifest.action_ref).collect::<Vec<_>>(),
        "problems": report.problems.len(),
    })
}

fn summary(report: &CheckedPack) -> String {
    let name = report
        .pack
        .as_ref()
        .map_or_else(|| report.dir.display().to_string(), |p| p.pack_ref.clone());
    match report.problems.len() {
        0 => match report.actions.len() {
            1 => format!("ok: pack {name} (1 action)"),
            n => format!("ok: pack {name} ({n} actions)"),
        },
        1 => format!("invalid: pack {name} (1 problem)"),
        n => format!("invalid: pack {name} ({n} problems)"),
    }
}
