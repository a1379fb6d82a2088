//! `packbox test DIR/PACK`: runs the pack's Attune `testing` section, each runner in the sandbox
//! and environment its actions get, and reports each runner; exit 0 when all pass, 1 when any
//! fails, 2 for invalid input (no `testing` section included).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use packbox::{Catalog, Error, PrepareEvent, TestEvent, TestReport, TestStatus};

use super::options::{self, GlobalArgs};
use super::{render, signals};

/// Arguments of `packbox test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The pack folder (holding pack.yaml).
    #[arg(value_name = "DIR/PACK")]
    pack: PathBuf,
    /// Print one JSON object on stdout: {"pack", "passed", "runners": [...]}.
    #[arg(long)]
    json: bool,
}

/// Runs the tests and reports them.
pub async fn execute(args: TestArgs, global: &GlobalArgs) -> ExitCode {
    match test(&args, global).await {
        Ok(report) => {
            if args.json {
                let object = serde_json::json!({
                    "pack": report.pack,
                    "passed": report.passed(),
                    "pass_rate": report.pass_rate(),
                    "min_pass_rate": report.min_pass_rate,
                    "runners": report.runners,
                });
                println!("{object}");
            } else {
                print_report(&report);
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => render::report(&error, args.json),
    }
}

async fn test(args: &TestArgs, global: &GlobalArgs) -> Result<TestReport, Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    // Everything wrong with the testing section is said before the engine is contacted.
    let plan = packbox::plan_tests(&settings, &catalog, &args.pack)?;
    let executor =
        signals::executor_stopped_by_signal(settings, catalog, "stopping the tests").await?;
    let report = executor
        .test_pack(&plan, |event| match event {
            TestEvent::Prepare(PrepareEvent::Building { tag }) => {
                eprintln!("building environment {tag}")
            }
            TestEvent::Started { runner } => eprintln!("{}: running", render::sanitize(runner)),
            _ => {}
        })
        .await;
    executor.close().await;
    report
}

/// One block per runner: name, type, status and duration, then the tail of its output.
fn print_report(report: &TestReport) {
    for runner in &report.runners {
        let status = match runner.status {
            TestStatus::Passed => "passed",
            TestStatus::Failed => "FAILED",
            TestStatus::TimedOut => "TIMED OUT",
        };
        println!(
            "{} ({}, {}): {status} in {} ms{}",
            render::sanitize(&runner.name),
            runner.kind.name(),
            render::sanitize(&runner.entry_point),
            runner.duration_ms,
            runner
                .exit_code
                .filter(|code| *code != 0)
                .map_or(String::new(), |code| format!(" (exit code {code})")),
        );
        for line in runner.stdout_tail.lines().chain(runner.stderr_tail.lines()) {
            println!("    {}", render::sanitize(line));
        }
    }
    let passed = report
        .runners
        .iter()
        .filter(|r| r.status == TestStatus::Passed)
        .count();
    let (tests, tests_passed) = report.runners.iter().fold((0, 0), |(t, p), r| {
        (t + r.counts.total, p + r.counts.passed)
    });
    eprintln!(
        "{}: {passed} of {} runners passed; {tests_passed} of {tests} tests ({:.0}%, at least {:.0}% needed): {}",
        report.pack,
        report.runners.len(),
        report.pass_rate() * 100.0,
        report.min_pass_rate * 100.0,
        if report.passed() { "passed" } else { "FAILED" }
    );
}
