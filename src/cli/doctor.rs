//! `packbox doctor [--json]`: what a run needs, checked, with the next step for each problem.

use std::process::ExitCode;

use clap::Args;
use packbox::{Catalog, CheckStatus, DoctorReport};

use super::options::{self, GlobalArgs};
use super::render;

/// Arguments of `packbox doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

/// Exit code when a check that runs need failed.
const EXIT_NOT_READY: u8 = 1;

/// Checks and reports; exits 0 when runs can work, 1 otherwise.
pub async fn execute(args: DoctorArgs, global: &GlobalArgs) -> ExitCode {
    let settings = options::resolve(global);
    let catalog_dir = settings.as_ref().ok().and_then(|s| s.catalog_dir.clone());
    let catalog = match Catalog::load(catalog_dir.as_deref()) {
        Ok(catalog) => catalog,
        Err(error) => return render::report(&error.into(), args.json),
    };
    let report = packbox::diagnose(settings.as_ref(), &catalog).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot serialise the report: {e}"),
        }
    } else {
        print_report(&report);
    }
    if report.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_READY)
    }
}

fn print_report(report: &DoctorReport) {
    for check in &report.checks {
        let mark = match check.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "skip",
        };
        println!(
            "{mark} {:<10} {}",
            check.name,
            render::sanitize(&check.summary)
        );
        for line in &check.details {
            println!("            {}", render::sanitize(line));
        }
        if let Some(step) = &check.next_step {
            println!("            next: {}", render::sanitize(step));
        }
    }
    if report.ready {
        println!("ready: runs can work");
    } else {
        println!("not ready: fix the FAIL lines above");
    }
}
