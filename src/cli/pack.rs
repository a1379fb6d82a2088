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
    /// what was expected) and warning (fields packbox does not know); exit code 2 when there is
    /// any problem.
    Validate {
        /// A pack folder (holding pack.yaml) or a folder of packs.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Treat warnings as problems (exit code 2 when there is any).
        #[arg(long)]
        strict: bool,
    },
}

/// Runs a `pack` subcommand.
pub fn execute(command: PackCommand, global: &GlobalArgs) -> ExitCode {
    let PackCommand::Validate { dir, json, strict } = command;
    let loaded = options::resolve(global)
        .map_err(Error::from)
        .and_then(|settings| {
            let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
            Ok((settings, catalog))
        });
    let (settings, catalog) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return render::report(&error, json),
    };
    let reports = packbox::check_packs(&dir, &catalog, &settings);
    let mut problems: Vec<_> = reports.iter().flat_map(|r| &r.problems).collect();
    let mut warnings: Vec<_> = reports.iter().flat_map(|r| &r.warnings).collect();
    if strict {
        problems.append(&mut warnings);
    }
    if json {
        let object = serde_json::json!({
            "valid": problems.is_empty(),
            "packs": reports.iter().map(pack_json).collect::<Vec<_>>(),
            "problems": problems,
            "warnings": warnings,
        });
        if let Err(e) = render::print_json(&object) {
            eprintln!("error: cannot write the result: {e}");
        }
    } else {
        for problem in &problems {
            println!("{}", render::sanitize(&problem.to_string()));
        }
        for warning in &warnings {
            println!("warning: {}", render::sanitize(&warning.to_string()));
        }
        for report in &reports {
            eprintln!("{}", summary(report, strict));
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
        "actions": report.actions.iter().map(packbox::CheckedAction::to_json).collect::<Vec<_>>(),
        "problems": report.problems.len(),
        "warnings": report.warnings.len(),
        "not_run": report.components.iter().map(|(dir, files)| serde_json::json!({"folder": dir, "files": files})).collect::<Vec<_>>(),
    })
}

/// `ok: pack p (3 actions, 1 warning)`, `invalid: pack p (2 problems)`; with `strict`,
/// warnings count as problems.
fn summary(report: &CheckedPack, strict: bool) -> String {
    let name = report
        .pack
        .as_ref()
        .map_or_else(|| report.dir.display().to_string(), |p| p.pack_ref.clone());
    let count = |n: usize, what: &str| match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    };
    let (problems, warnings) = match strict {
        true => (report.problems.len() + report.warnings.len(), 0),
        false => (report.problems.len(), report.warnings.len()),
    };
    let warned = match warnings {
        0 => String::new(),
        n => format!(", {}", count(n, "warning")),
    };
    // Attune's rules, sensors, workflows, ...: acknowledged, and said not to run here.
    let not_run = match report.components.as_slice() {
        [] => String::new(),
        folders => format!(
            "; not run by packbox: {}",
            folders
                .iter()
                .map(|(dir, files)| format!("{dir}/ ({})", count(*files, "file")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    match problems {
        0 => format!(
            "ok: pack {name} ({}{warned}{not_run})",
            count(report.actions.len(), "action")
        ),
        n => format!(
            "invalid: pack {name} ({}{warned}{not_run})",
            count(n, "problem")
        ),
    }
}
