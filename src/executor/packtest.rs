//! Pack tests (`packbox test`): each runner of a pack's `testing` section runs in the sandbox and
//! on the environment image the pack's actions get, the pack read-only at `/pack`; its exit code
//! decides. Planning needs no engine, so everything wrong with the section is said before any
//! container exists; running goes through the same preparation and container lifecycle as a run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Executor;
use super::error::Error;
use crate::catalog::{Catalog, Runtime};
use crate::common::owned::Owned;
use crate::contract::exit::Ending;
use crate::engine::{SharedEngine, StreamKind};
use crate::image::env::{Installer, Manifests};
use crate::image::prepare::{self, PrepareError, PrepareEvent, Preparer};
use crate::lifecycle::RunError;
use crate::lifecycle::owner::Owner;
use crate::lifecycle::{self, RunIo, RunLimits};
use crate::pack::testing::{TestKind, TestRunner};
use crate::pack::validate::load_pack_manifest;
use crate::pack::{PackError, Problem, dependencies};
use crate::pack_delivery::volume::{self, DeliveryError};
use crate::plan::{DEFAULT_TIMEOUT, PlanError};
use crate::sandbox::seccomp::Kernel;
use crate::sandbox::{PackFolder, PackSource, SandboxPolicy, Workload};
use crate::settings::{PackDelivery, Settings};

/// Lines of each stream a report quotes.
const TAIL_LINES: usize = 20;

/// A pack's tests, checked and ready for the engine.
#[derive(Clone, Debug)]
pub struct TestPlan {
    pack_ref: String,
    pack_dir: PathBuf,
    /// The pack tree's digest when the tests were planned: names its volume.
    pack_digest: String,
    runners: Vec<PlannedRunner>,
    policy: SandboxPolicy,
    grace: Duration,
    max_output: usize,
    min_pass_rate: f64,
}

impl TestPlan {
    /// The sandbox every runner gets.
    pub(crate) fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }
}

#[derive(Clone, Debug)]
struct PlannedRunner {
    runner: TestRunner,
    runtime: Runtime,
    dependencies: Option<Manifests>,
}

impl TestPlan {
    /// The pack's ref.
    pub fn pack_ref(&self) -> &str {
        &self.pack_ref
    }
}

/// Loads a pack's `testing` section and checks every runner against the catalog: the runtime it
/// names, the type it asks for, its entry point, the pack's dependencies. No engine is needed.
pub fn plan_tests(
    settings: &Settings,
    catalog: &Catalog,
    pack_dir: &Path,
) -> Result<TestPlan, PlanError> {
    if !pack_dir.join("pack.yaml").is_file() {
        return Err(PackError::Invalid(vec![Problem {
            file: pack_dir.to_path_buf(),
            line: None,
            field: None,
            message: "holds no pack.yaml; expected a pack folder".into(),
        }])
        .into());
    }
    let mut problems = Vec::new();
    let (pack_dir, pack) = load_pack_manifest(pack_dir, &mut problems, &mut Vec::new());
    let file = pack_dir.join("pack.yaml");
    let pack = match pack {
        Some(pack) if problems.is_empty() => pack,
        _ => return Err(PackError::Invalid(problems).into()),
    };
    let Some(testing) = pack.testing.as_ref().filter(|t| !t.runners.is_empty()) else {
        return Err(PlanError::NoTests { file });
    };
    let mut runners = Vec::new();
    for runner in &testing.runners {
        let problem = |message: String| Problem {
            file: file.clone(),
            line: None,
            field: Some(format!("testing.runners.{}", runner.name)),
            message,
        };
        let Some(runtime) = catalog.resolve(&runner.name) else {
            problems.push(problem(format!(
                "`{}` is not a runtime of the catalog; runners are keyed by runtime ({})",
                runner.name,
                catalog.known_names()
            )));
            continue;
        };
        if let Err(expected) = crate::pack::safety::resolve_in_pack(&pack_dir, &runner.entry_point)
        {
            problems.push(problem(format!("entry_point: {expected}")));
            continue;
        }
        if runner.kind != TestKind::Script && runtime.name != "python" {
            problems.push(problem(format!(
                "type `{}` runs with Python; a {} runner can only be a script",
                runner.kind.name(),
                runtime.name
            )));
            continue;
        }
        if runtime.family() == "go" {
            problems.push(problem(
                "a go runner is not supported: Go programs run only as actions, compiled into their environment image".into(),
            ));
            continue;
        }
        let dependencies = match Installer::for_runtime(&runtime.name) {
            Some(installer) => match dependencies::read(&pack_dir, &pack, installer) {
                Ok(dependencies) => dependencies,
                Err(found) => {
                    problems.extend(found);
                    continue;
                }
            },
            None => None,
        };
        runners.push(PlannedRunner {
            runner: runner.clone(),
            runtime: runtime.clone(),
            dependencies,
        });
    }
    if !problems.is_empty() {
        return Err(PackError::Invalid(problems).into());
    }
    let pack_digest = volume::tree_digest(&pack.pack_ref, &pack_dir).map_err(PlanError::Digest)?;
    Ok(TestPlan {
        min_pass_rate: testing.min_pass_rate.unwrap_or(1.0),
        pack_ref: pack.pack_ref.clone(),
        pack_dir,
        pack_digest,
        runners,
        policy: settings.sandbox.clone(),
        grace: settings.run.grace,
        max_output: settings.run.max_output,
    })
}

/// How one runner ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Exit code 0.
    Passed,
    /// Any other exit code (or killed for using too much memory).
    Failed,
    /// It ran past its timeout and was stopped.
    TimedOut,
}

/// What one runner did.
#[derive(Clone, Debug, Serialize)]
pub struct RunnerReport {
    /// Its key in `testing.runners` (`shell`, `python`).
    pub name: String,
    /// How it runs its entry point.
    #[serde(rename = "type")]
    pub kind: TestKind,
    /// Its entry point, relative to the pack root.
    pub entry_point: String,
    /// Whether it passed, failed or timed out.
    pub status: TestStatus,
    /// Its exit code; `None` when the engine reported none after it was killed.
    pub exit_code: Option<i64>,
    /// Wall time of its container, from start to end (image preparation not counted).
    pub duration_ms: u64,
    /// The detected version of the runtime it ran on.
    pub runtime_version: String,
    /// The image it ran in: the pack's environment image, else the runtime image.
    pub image: String,
    /// The last lines of its stdout.
    pub stdout_tail: String,
    /// The last lines of its stderr.
    pub stderr_tail: String,
    /// Its tests as counted from `Total Tests:`, `Passed:`, `Failed:` and `Skipped:` lines of
    /// its output (Attune's `simple` format), else one test that passed or failed by exit code.
    pub counts: TestCounts,
}

/// Tests counted in a runner's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TestCounts {
    /// Tests run.
    pub total: u64,
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests skipped.
    pub skipped: u64,
}

impl TestCounts {
    /// Reads Attune's `simple` format from a runner's stdout and stderr: the number after
    /// `Total Tests:`, `Passed:`, `Failed:` and `Skipped:` (the first line holding each). Without
    /// a total and a passed count, the runner is one test that passed on exit code 0. A runner
    /// that did not exit (timed out) counts as failed whatever it printed.
    pub fn from_output(stdout: &str, stderr: &str, exited_zero: bool, finished: bool) -> Self {
        let number = |label: &str| {
            stdout.lines().chain(stderr.lines()).find_map(|line| {
                let (_, rest) = line.split_once(label)?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        match (number("Total Tests:"), number("Passed:")) {
            (Some(total), Some(passed)) if finished => TestCounts {
                total,
                passed: passed.min(total),
                failed: number("Failed:").unwrap_or(0),
                skipped: number("Skipped:").unwrap_or(0),
            },
            _ if exited_zero && finished => TestCounts {
                total: 1,
                passed: 1,
                ..TestCounts::default()
            },
            _ => TestCounts {
                total: 1,
                failed: 1,
                ..TestCounts::default()
            },
        }
    }
}

/// The runners of one pack, in the order `pack.yaml` lists them.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// The pack's name.
    pub pack: String,
    /// What each runner did.
    pub runners: Vec<RunnerReport>,
    /// The share of tests that must pass (`testing.min_pass_rate`, 1 by default).
    pub min_pass_rate: f64,
}

impl TestReport {
    /// Passed tests over all tests counted (0 when none were).
    pub fn pass_rate(&self) -> f64 {
        let (passed, total) = self.runners.iter().fold((0, 0), |(p, t), r| {
            (p + r.counts.passed, t + r.counts.total)
        });
        match total {
            0 => 0.0,
            total => passed as f64 / total as f64,
        }
    }

    /// Whether the pack passed, as Attune judges it: no runner timed out, and at least
    /// `min_pass_rate` of the counted tests passed.
    pub fn passed(&self) -> bool {
        self.runners
            .iter()
            .all(|r| r.status != TestStatus::TimedOut)
            && self.pass_rate() >= self.min_pass_rate
    }
}

/// What [`Executor::test_pack`](crate::Executor::test_pack) reports while it works.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestEvent<'a> {
    /// A runner starts (after its image is ready).
    Started {
        /// The runner's name.
        runner: &'a str,
    },
    /// Preparing a runner's image (an environment build).
    Prepare(PrepareEvent<'a>),
    /// A runner finished.
    Finished {
        /// What it did.
        report: &'a RunnerReport,
    },
}

/// A test runner that could not run: its image could not be prepared, or the engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestRunError {
    /// The runner's image could not be made ready (no verified version, a failed build).
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The engine failed while running the runner's container.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The pack could not be delivered to the engine by volume.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Runs every runner of a plan, one after the other, each in a fresh container that is removed
/// afterwards. A runner that fails is a report, not an error; `Err` means a runner could not
/// run (its image, the engine) or the work was cancelled.
pub(crate) async fn run_tests(
    preparer: &Preparer<'_>,
    engine: &SharedEngine,
    owner: &Owner,
    plan: &TestPlan,
    kernel: Kernel,
    pack_delivery: PackDelivery,
    mut on_event: impl FnMut(TestEvent<'_>) + Send,
) -> Result<TestReport, TestRunError> {
    let mut reports = Vec::new();
    for planned in &plan.runners {
        let runner = &planned.runner;
        let statuses = preparer.verified_versions(&planned.runtime).await?;
        let selected = prepare::select_version(
            &format!("{} test runner {}", plan.pack_ref, runner.name),
            &planned.runtime,
            None,
            &statuses,
        )?;
        let prepared = preparer
            .image_for(
                &planned.runtime,
                selected,
                planned.dependencies.as_ref(),
                |event| on_event(TestEvent::Prepare(event)),
            )
            .await?;
        on_event(TestEvent::Started {
            runner: &runner.name,
        });
        let exec_id = uuid::Uuid::new_v4().to_string();
        let pack = match pack_delivery {
            PackDelivery::Volume => {
                let delivered = volume::ensure(
                    engine.as_ref(),
                    &Owned::in_state_dir(preparer.state_dir),
                    &plan.pack_ref,
                    &plan.pack_dir,
                    &plan.pack_digest,
                    &prepared.run_image,
                )
                .await?;
                PackSource::Volume(delivered.name)
            }
            _ => PackSource::Folder(PackFolder {
                pack_ref: plan.pack_ref.clone(),
                host_dir: plan.pack_dir.to_string_lossy().into_owned(),
                digest: plan.pack_digest.clone(),
            }),
        };
        let workload = workload(plan, planned, &exec_id, &prepared.run_image, owner, pack);
        let limits = RunLimits {
            timeout: runner
                .timeout_seconds
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            grace: plan.grace,
            max_output: plan.max_output,
        };
        let started = Instant::now();
        let exit = lifecycle::run::run_container(
            engine,
            &format!("packbox-test-{exec_id}"),
            &plan.policy.container_spec(workload, kernel),
            RunIo {
                stdin: Vec::new(),
                limits: &limits,
                cancel: preparer.cancel,
                on_output: &mut |_: StreamKind, _: &[u8]| {},
                artifacts: None,
            },
        )
        .await?;
        let status = match exit.ending {
            Ending::Cancelled => return Err(PrepareError::Cancelled.into()),
            Ending::TimedOut => TestStatus::TimedOut,
            Ending::Exited if exit.exit_code == Some(0) && !exit.oom_killed => TestStatus::Passed,
            // Removed by someone else: the runner did not pass.
            Ending::Exited | Ending::Removed => TestStatus::Failed,
        };
        let report = RunnerReport {
            name: runner.name.clone(),
            kind: runner.kind,
            entry_point: runner.entry_point.clone(),
            status,
            exit_code: exit.exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
            runtime_version: prepared.runtime_version,
            image: prepared.image,
            counts: TestCounts::from_output(
                &exit.stdout.text,
                &exit.stderr.text,
                status == TestStatus::Passed,
                status != TestStatus::TimedOut,
            ),
            stdout_tail: tail(&exit.stdout.text),
            stderr_tail: tail(&exit.stderr.text),
        };
        on_event(TestEvent::Finished { report: &report });
        reports.push(report);
    }
    Ok(TestReport {
        min_pass_rate: plan.min_pass_rate,
        pack: plan.pack_ref.clone(),
        runners: reports,
    })
}

/// What a runner's container runs: its command under the runtime, the runtime's variables, and
/// labels naming the pack and the owner.
fn workload(
    plan: &TestPlan,
    planned: &PlannedRunner,
    exec_id: &str,
    image: &str,
    owner: &Owner,
    pack: PackSource,
) -> Workload {
    let mut env = vec![
        ("ATTUNE_PACK_REF".to_string(), plan.pack_ref.clone()),
        ("HOME".to_string(), crate::plan::RUN_HOME.to_string()),
    ];
    env.extend(
        planned
            .runtime
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let mut labels = owner.labels();
    labels.insert("packbox.kind".into(), "test".into());
    labels.insert("packbox.exec_id".into(), exec_id.to_string());
    labels.insert("packbox.pack".into(), plan.pack_ref.clone());
    Workload {
        image: image.to_string(),
        cmd: command(&planned.runner, &planned.runtime),
        env,
        labels,
        pack: Some(pack),
    }
}

/// The runner's command, run from `/pack` (the entry point is relative to it).
fn command(runner: &TestRunner, runtime: &Runtime) -> Vec<String> {
    let mut cmd = runtime.interpreter.clone();
    match runner.kind {
        // As Attune runs scripts: `/bin/sh` for a `.sh` file, `/bin/bash` for any other.
        TestKind::Script => {
            let shell = match runner.entry_point.ends_with(".sh") {
                true => "/bin/sh",
                false => "/bin/bash",
            };
            cmd = vec![shell.to_string(), format!("/pack/{}", runner.entry_point)];
        }
        TestKind::Unittest => {
            cmd.extend(["-m", "unittest", "-v"].map(String::from));
            cmd.push(runner.entry_point.clone());
        }
        TestKind::Pytest => {
            // The pack is read-only: no cache folder next to the tests.
            cmd.extend(["-m", "pytest", "-v", "-p", "no:cacheprovider"].map(String::from));
            cmd.push(runner.entry_point.clone());
        }
    }
    cmd
}

/// The last lines of a captured stream.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

impl Executor {
    /// Runs a pack's tests (see [`crate::plan_tests`]), each runner in a fresh container on the
    /// environment the pack's actions get. Failing tests are a report, not an error.
    pub async fn test_pack(
        &self,
        plan: &TestPlan,
        on_event: impl FnMut(TestEvent<'_>) + Send,
    ) -> Result<TestReport, Error> {
        let kernel = self.check_policy(plan.pack_ref(), plan.policy()).await?;
        run_tests(
            &self.preparer(&self.shutdown),
            &self.engine,
            &self.owner,
            plan,
            kernel,
            self.settings.pack_delivery,
            on_event,
        )
        .await
        .map_err(|e| match e {
            TestRunError::Prepare(e) => e.into(),
            TestRunError::Run(e) => e.into(),
            TestRunError::Delivery(e) => e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(kind: TestKind, entry_point: &str) -> TestRunner {
        TestRunner {
            name: "python".into(),
            kind,
            entry_point: entry_point.into(),
            timeout_seconds: None,
        }
    }

    #[test]
    fn each_type_runs_its_own_command_under_the_runtime() {
        let catalog = Catalog::builtin().expect("catalog");
        let python = catalog.resolve("python").expect("python");
        let shell = catalog.resolve("shell").expect("shell");
        // Scripts as Attune runs them: `/bin/sh` for `.sh`, `/bin/bash` for anything else.
        assert_eq!(
            command(&runner(TestKind::Script, "tests/run.sh"), shell),
            ["/bin/sh", "/pack/tests/run.sh"]
        );
        assert_eq!(
            command(&runner(TestKind::Script, "tests/run"), python),
            ["/bin/bash", "/pack/tests/run"]
        );
        assert_eq!(
            command(&runner(TestKind::Unittest, "tests/test_a.py"), python),
            ["python3", "-u", "-m", "unittest", "-v", "tests/test_a.py"]
        );
        assert_eq!(
            command(&runner(TestKind::Pytest, "tests/"), python),
            [
                "python3",
                "-u",
                "-m",
                "pytest",
                "-v",
                "-p",
                "no:cacheprovider",
                "tests/"
            ]
        );
    }

    #[test]
    fn simple_results_are_counted_else_the_exit_code_decides() {
        let counted =
            TestCounts::from_output("Total Tests: 36\nPassed: 35\n", "Failed: 1\n", false, true);
        assert_eq!(
            counted,
            TestCounts {
                total: 36,
                passed: 35,
                failed: 1,
                skipped: 0
            }
        );
        assert_eq!(
            TestCounts::from_output("ok\n", "", true, true),
            TestCounts {
                total: 1,
                passed: 1,
                ..TestCounts::default()
            }
        );
        assert_eq!(
            TestCounts::from_output("Total Tests: 2\nPassed: 2\n", "", true, false),
            TestCounts {
                total: 1,
                failed: 1,
                ..TestCounts::default()
            }
        );
    }

    #[test]
    fn a_pack_passes_at_its_min_pass_rate() {
        let report = |min_pass_rate: f64, passed: u64| TestReport {
            pack: "p".into(),
            min_pass_rate,
            runners: vec![RunnerReport {
                name: "shell".into(),
                kind: TestKind::Script,
                entry_point: "t.sh".into(),
                status: TestStatus::Failed,
                exit_code: Some(1),
                duration_ms: 1,
                runtime_version: "5.2".into(),
                image: "i".into(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
                counts: TestCounts {
                    total: 10,
                    passed,
                    failed: 10 - passed,
                    skipped: 0,
                },
            }],
        };
        assert!(report(0.9, 9).passed());
        assert!(!report(1.0, 9).passed());
        assert!(!report(0.95, 9).passed());
    }

    #[test]
    fn a_tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let kept = tail(&text);
        assert_eq!(kept.lines().count(), TAIL_LINES);
        assert!(kept.starts_with("line 10") && kept.ends_with("line 29"));
    }
}
