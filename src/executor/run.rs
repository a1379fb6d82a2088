//! Running a planned action: the sandbox policy checked against the engine, the image prepared,
//! the workload handed to the run backend, the outcome made by the contract.

use super::error::Error;
use super::{Executor, PrepareEvent};
use crate::backend::Job;
use crate::contract::Outcome;
use crate::contract::artifacts::{ArtifactLimits, Artifacts};
use crate::contract::result::{self, RunFacts};
use crate::egress::audit::EgressReport;
use crate::engine::StreamKind;
use crate::image::prepare::{self};
use crate::image::probe::VersionStatus;
use crate::lifecycle::{ArtifactSink, RunIo};
use crate::plan::RunPlan;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What [`Executor::run`] reports while it works.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunEvent<'a> {
    /// Preparing the image (an environment build).
    Prepare(PrepareEvent<'a>),
    /// The action's container was handed the run (the action starts now); its exec id is the
    /// outcome's and the container's `packbox.exec_id` label.
    Started {
        /// The run's exec id.
        exec_id: &'a str,
    },
    /// A chunk of the action's output, as it arrives. It is not scrubbed of the run's secrets
    /// (the outcome's output is): show it through [`RunPlan::output_scrubber`].
    Output {
        /// Whether the chunk is from stdout or stderr.
        stream: StreamKind,
        /// The bytes, cut where the engine cut them (not necessarily at a line or character).
        bytes: &'a [u8],
    },
}

impl Executor {
    /// Runs a plan in a fresh container and removes it (once the outcome is known, in the
    /// background: [`Executor::close`] waits for it). An action that fails is an `Ok` outcome
    /// with status failed; `Err` means the run could not happen. `on_event` hears about
    /// environment builds, the container's start and receives the action's output as it comes
    /// (for `--follow`).
    pub async fn run(
        &self,
        plan: &RunPlan,
        on_event: impl FnMut(RunEvent<'_>) + Send,
    ) -> Result<Outcome, Error> {
        self.run_with_cancel(plan, &CancellationToken::new(), on_event)
            .await
    }

    /// [`Executor::run`], stopped early when `cancel` is cancelled, as when the executor shuts
    /// down but for this run alone: before the container starts the run ends with a
    /// [`Fault::Cancelled`](crate::Fault) error and leaves nothing; after, the action is stopped
    /// (SIGTERM, grace, SIGKILL), its container removed, and its outcome is `cancelled`.
    pub async fn run_with_cancel(
        &self,
        plan: &RunPlan,
        cancel: &CancellationToken,
        on_event: impl FnMut(RunEvent<'_>) + Send,
    ) -> Result<Outcome, Error> {
        // One token for the run, cancelled by the executor's shutdown (as its child) or by the
        // caller's token (relayed while the run lasts).
        let token = self.shutdown.child_token();
        let relay = async {
            cancel.cancelled().await;
            token.cancel();
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::select! {
            outcome = self.run_until(plan, &token, on_event) => outcome,
            never = relay => match never {},
        }
    }

    async fn run_until(
        &self,
        plan: &RunPlan,
        cancel: &CancellationToken,
        mut on_event: impl FnMut(RunEvent<'_>) + Send,
    ) -> Result<Outcome, Error> {
        let span = tracing::info_span!("run", action = plan.action_ref());
        async {
            let started = Instant::now();
            let (kernel, policy) = self.sandbox_for(plan.action_ref(), plan.policy()).await?;
            let preparer = self.preparer(cancel);
            let statuses = preparer.verified_versions(&plan.runtime).await?;
            let constraint = plan.action.action.runtime_version.as_ref();
            tracing::debug!(
                runtime = %plan.runtime.name,
                constraint = constraint.map(|c| c.as_str()),
                candidates = %describe_candidates(&statuses),
                "choosing a version"
            );
            let selected =
                prepare::select_version(plan.action_ref(), &plan.runtime, constraint, &statuses)?;
            tracing::debug!(
                version = selected.full_version(),
                image = %selected.image,
                why = if constraint.is_some() {
                    "highest verified version matching the constraint"
                } else {
                    "the runtime's default (else highest) verified version"
                },
                "version chosen"
            );
            let prepare_started = Instant::now();
            let prepared = preparer
                .image_for(
                    &plan.runtime,
                    selected,
                    (
                        plan.dependencies.as_ref(),
                        crate::plan::allowed_system_packages(
                            &self.settings,
                            &plan.action.pack.system_packages,
                        ),
                    ),
                    |event| on_event(RunEvent::Prepare(event)),
                )
                .await?;
            tracing::debug!(
                image = %prepared.image,
                built = prepared.built,
                ms = prepare_started.elapsed().as_millis() as u64,
                "image ready"
            );
            let prepare_ms = started.elapsed().as_millis() as u64;
            crate::common::phase::phase("prepare", started, "");
            let exec_id = uuid::Uuid::new_v4().to_string();
            let attune_exec_id = self.exec_ids.next()?;
            // The backend tells of the start and of the output, one after the other.
            let on_event = Mutex::new(on_event);
            let mut on_output = |stream: StreamKind, bytes: &[u8]| {
                if let Ok(mut on_event) = on_event.lock() {
                    on_event(RunEvent::Output { stream, bytes });
                }
            };
            let mut on_started = |exec_id: &str| {
                if let Ok(mut on_event) = on_event.lock() {
                    on_event(RunEvent::Started { exec_id });
                }
            };
            // The run's artifacts go to a folder of their own under the state folder, named
            // after the run once its exec id is final (a pooled container brings its own).
            let artifacts = ArtifactSink {
                folder: artifacts_root(&self.settings.state_dir)
                    .join(format!(".incoming-{}", uuid::Uuid::new_v4())),
                limits: ArtifactLimits {
                    max_files: self.settings.run.artifacts_max_files,
                    max_bytes: self.settings.run.artifacts_max_bytes,
                },
            };
            let ran = self
                .backend
                .run(Job {
                    workload: plan.workload(
                        &exec_id,
                        attune_exec_id,
                        &prepared.run_image,
                        &prepared.image,
                        &self.owner,
                    ),
                    attune_exec_id,
                    exec_id,
                    policy: &policy,
                    kernel,
                    io: RunIo {
                        stdin: plan.stdin.0.clone(),
                        limits: &plan.limits,
                        cancel,
                        on_output: &mut on_output,
                        artifacts: Some(&artifacts),
                    },
                    warm_start: plan.warm_start_cmd(),
                    on_started: &mut on_started,
                    egress: plan.egress.as_ref(),
                })
                .await;
            let mut ran = match ran {
                Ok(ran) => ran,
                Err(e) => {
                    discard_folder(&artifacts.folder);
                    return Err(e.into());
                }
            };
            let artifacts_dir = keep_artifacts(
                &artifacts.folder,
                &self.settings.state_dir,
                &ran.exec_id,
                &mut ran.exit.artifacts,
            );
            tracing::debug!(
                ending = ?ran.exit.ending,
                exit_code = ran.exit.exit_code,
                ms = started.elapsed().as_millis() as u64,
                "run finished"
            );
            let result_began = Instant::now();
            let mut outcome = result::outcome(
                plan.outcome_terms(&ran.sandbox),
                ran.exit,
                RunFacts {
                    attune_exec_id: ran.attune_exec_id,
                    exec_id: ran.exec_id,
                    duration_ms: started.elapsed().as_millis() as u64,
                    prepare_ms,
                    runtime_version: prepared.runtime_version,
                    image: prepared.image,
                },
            );
            outcome.artifacts_dir = artifacts_dir.map(|dir| dir.to_string_lossy().into_owned());
            if let (Some(grant), Some((audit, incomplete))) = (&plan.egress, ran.egress) {
                outcome.egress = Some(EgressReport {
                    granted: grant.destinations.clone(),
                    audit,
                    incomplete,
                });
            }
            crate::common::phase::phase("result", result_began, "");
            Ok(outcome)
        }
        .instrument(span)
        .await
    }
}

/// Where runs keep their artifacts: a folder per run, named by its exec id.
pub fn artifacts_root(state_dir: &Path) -> PathBuf {
    state_dir.join("artifacts")
}

/// The folder of one run's artifacts (it exists only when the run kept some).
pub fn artifacts_folder(state_dir: &Path, exec_id: &str) -> PathBuf {
    artifacts_root(state_dir).join(exec_id)
}

/// Moves a run's incoming artifacts to their folder; returns it when it holds some. Anything
/// that cannot be moved is refused, so the outcome never lists a file that is not kept.
fn keep_artifacts(
    incoming: &Path,
    state_dir: &Path,
    exec_id: &str,
    report: &mut Artifacts,
) -> Option<PathBuf> {
    if report.files.is_empty() {
        discard_folder(incoming);
        return None;
    }
    let folder = artifacts_folder(state_dir, exec_id);
    match std::fs::rename(incoming, &folder) {
        Ok(()) => Some(folder),
        Err(e) => {
            for file in std::mem::take(&mut report.files) {
                report.refuse(
                    file.name.as_bytes(),
                    format!("could not be stored in {}: {e}", folder.display()),
                );
            }
            discard_folder(incoming);
            None
        }
    }
}

/// How old a folder of incoming artifacts is before the start-up sweep takes it for a leftover:
/// a run makes it with its first kept file, after its action exited, and renames or removes it
/// within the run's last moments.
const STALE_INCOMING: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes the incoming artifacts folders that packbox processes killed mid-run left (older than
/// a day); returns how many.
pub(super) fn sweep_incoming(state_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(artifacts_root(state_dir)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > STALE_INCOMING);
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(".incoming-")
        {
            discard_folder(&entry.path());
            removed += 1;
        }
    }
    removed
}

/// Removes a folder of incoming artifacts, if the run made one.
fn discard_folder(folder: &Path) {
    match std::fs::remove_dir_all(folder) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("removing {}: {e}", folder.display())
        }
        _ => {}
    }
}

/// The versions considered for a run, for the debug log: declared, detected, available.
fn describe_candidates(statuses: &[VersionStatus]) -> String {
    statuses
        .iter()
        .map(|s| {
            let verdict = if s.is_available() {
                "available".to_string()
            } else {
                s.reason.clone().unwrap_or_else(|| "unavailable".into())
            };
            let cache = if s.cached { "cached" } else { "probed" };
            format!(
                "{} (detected {}, {verdict}, {cache})",
                s.version,
                s.detected_version.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stale_incoming_folders_are_swept() {
        let state = tempfile::tempdir().expect("tempdir");
        let root = artifacts_root(state.path());
        for name in [".incoming-old", ".incoming-new", "kept-run"] {
            std::fs::create_dir_all(root.join(name)).expect("folder");
            std::fs::write(root.join(name).join("a.txt"), b"a").expect("file");
        }
        for name in [".incoming-old", "kept-run"] {
            std::fs::File::open(root.join(name))
                .and_then(|dir| dir.set_modified(std::time::SystemTime::UNIX_EPOCH))
                .expect("backdate");
        }
        assert_eq!(sweep_incoming(state.path()), 1);
        assert!(!root.join(".incoming-old").exists());
        assert!(
            root.join(".incoming-new/a.txt").is_file(),
            "a run may be collecting"
        );
        assert!(
            root.join("kept-run/a.txt").is_file(),
            "a run's artifacts stay"
        );
        assert_eq!(sweep_incoming(&state.path().join("none")), 0);
    }
}
