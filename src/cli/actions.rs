//! `packbox actions list`: the actions of every pack in a folder, with their runtime, version
//! constraint, the version they would run on, and their parameters. Secret defaults are not shown.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use packbox::{Catalog, Error};
use packbox::{CheckedAction, ParameterSpec, Problem};

use super::options::{self, GlobalArgs};
use super::{EXIT_INPUT, render};

/// Subcommands of `packbox actions`.
#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// List the actions of the packs in a folder; problems go to stderr and give exit code 2.
    List {
        /// Folder holding the packs, one sub-folder per pack.
        #[arg(long, env = "PACKBOX_PACKS", value_name = "DIR")]
        packs: PathBuf,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `actions` subcommand.
pub fn execute(command: ActionsCommand, global: &GlobalArgs) -> ExitCode {
    let ActionsCommand::List { packs, json } = command;
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
    let reports = packbox::check_packs(&packs, &catalog, &settings);
    let actions: Vec<&CheckedAction> = reports.iter().flat_map(|r| &r.actions).collect();
    let problems: Vec<&Problem> = reports.iter().flat_map(|r| &r.problems).collect();
    let warnings: Vec<&Problem> = reports.iter().flat_map(|r| &r.warnings).collect();
    if json {
        let object = serde_json::json!({
            "actions": actions.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
            "problems": problems,
            "warnings": warnings,
        });
        if let Err(e) = render::print_json(&object) {
            eprintln!("error: cannot write the result: {e}");
        }
    } else {
        print_table(&actions);
        for problem in &problems {
            eprintln!("problem: {}", render::sanitize(&problem.to_string()));
        }
        for warning in &warnings {
            eprintln!("warning: {}", render::sanitize(&warning.to_string()));
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INPUT)
    }
}

fn print_table(actions: &[&CheckedAction]) {
    let header = ["ACTION", "RUNTIME", "CONSTRAINT", "VERSION", "PARAMETERS"].map(String::from);
    let rows: Vec<[String; 5]> = actions
        .iter()
        .map(|action| {
            let manifest = &action.manifest;
            [
                manifest.action_ref.clone(),
                action.runtime.clone(),
                manifest
                    .runtime_version
                    .as_ref()
                    .map_or_else(|| "-".into(), |c| c.as_str().to_string()),
                version_cell(action),
                manifest
                    .parameters
                    .iter()
                    .map(|(name, spec)| parameter_summary(name, spec))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[4]);
        println!("{}", render::sanitize(line.trim_end()));
    }
}

/// The version `run` would choose; a choice only the image's patch version can confirm says so.
fn version_cell(action: &CheckedAction) -> String {
    if action.version.is_empty() {
        "-".into()
    } else if action.provisional {
        format!("{} (if its patch matches)", action.version)
    } else {
        action.version.clone()
    }
}

/// `name*: integer = 3` (`*`: required); a secret's default is never shown, nor a secret
/// property inside a default.
fn parameter_summary(name: &str, spec: &ParameterSpec) -> String {
    let mut text = name.to_string();
    if spec.required {
        text.push('*');
    }
    if let Some(kind) = spec.kind {
        text.push_str(&format!(": {kind}"));
    }
    if spec.secret {
        text.push_str(" (secret)");
    } else if let Some(default) = spec.public_default() {
        text.push_str(&format!(" = {default}"));
    }
    text
}
