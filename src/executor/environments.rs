//! Environment images ahead of runs: built for every action of a folder of packs, listed and
//! pruned.

use super::error::Error;
use super::{Executor, PrepareEvent};
use crate::common::error_text::chain;
use crate::image::env::inventory::{self, EnvInfo, PruneReport};
use crate::image::prepare::{self, PrepareError};
use crate::pack;
use crate::plan::runtime_for;
use serde::Serialize;
use std::path::Path;

/// What `build_environments` did for one action.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct EnvReport {
    /// The pack's ref.
    pub pack: String,
    /// The action's ref (empty when the pack itself could not be loaded).
    pub action: String,
    /// The runtime the action names (empty when the action could not be resolved).
    pub runtime: String,
    /// The verified runtime version the environment is for.
    pub version: Option<String>,
    /// The image the action would run on: its environment image, or the runtime image when it
    /// needs none; `None` when nothing is ready.
    pub image: Option<String>,
    /// What happened: built, already there, not needed, failed or invalid.
    pub status: EnvStatus,
    /// Why it failed or is invalid, with its causes.
    pub error: Option<String>,
}

impl EnvReport {
    /// The report of an action whose pack or declaration is wrong: nothing was built.
    fn invalid(pack: &str, action: &str, error: &dyn std::error::Error) -> EnvReport {
        EnvReport {
            pack: pack.to_string(),
            action: action.to_string(),
            runtime: String::new(),
            version: None,
            image: None,
            status: EnvStatus::Invalid,
            error: Some(chain(error)),
        }
    }
}

/// The state of one action's environment after `build_environments`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EnvStatus {
    /// Built now.
    Built,
    /// Already there: no build.
    Present,
    /// The pack has no manifest for the runtime: it runs on the runtime image.
    NotNeeded,
    /// The build (or version selection) failed; see `error`.
    Failed,
    /// The pack or the action has problems (or names an unknown runtime); see `error`.
    Invalid,
}

/// Progress of [`Executor::build_environments`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildEvent<'a> {
    /// An action's environment is being prepared (a version was chosen); not sent for an
    /// action that fails before that.
    Started {
        /// The action's ref.
        action: &'a str,
    },
    /// A line of the build's output.
    Line {
        /// The line.
        line: &'a str,
    },
    /// An action is done with, whatever happened: sent once for every action.
    Finished {
        /// What happened to it, as it will be in the returned reports.
        report: &'a EnvReport,
    },
}

impl Executor {
    /// Builds ahead of time the environment of every action of the given packs (all packs of the
    /// folder when none is named), on the version each action would run on. A failed build does
    /// not stop the others: its error is in its report.
    pub async fn build_environments(
        &self,
        packs_dir: &Path,
        packs: &[String],
        mut on_event: impl FnMut(BuildEvent<'_>) + Send,
    ) -> Result<Vec<EnvReport>, Error> {
        let actions = pack::load_packs(packs_dir, packs).map_err(crate::plan::PlanError::from)?;
        let preparer = self.preparer(&self.shutdown);
        let mut reports = Vec::new();
        for action in actions {
            // A pack or action that cannot load, or names an unknown runtime, is reported and
            // skipped: the others still build.
            let (action, runtime) = match action {
                // A workflow has no environment: packbox never runs it.
                Ok(action) if action.action.workflow_file.is_some() => continue,
                Ok(action) => match crate::plan::system_packages(&self.settings, &action)
                    .and_then(|()| runtime_for(&self.catalog, &self.settings, &action))
                {
                    Ok(runtime) => (action, runtime),
                    Err(e) => {
                        let report =
                            EnvReport::invalid(&action.pack.pack_ref, &action.action_ref, &e);
                        on_event(BuildEvent::Finished { report: &report });
                        reports.push(report);
                        continue;
                    }
                },
                Err(bad) => {
                    let action = bad.action.as_deref().unwrap_or_default();
                    let report = EnvReport::invalid(&bad.pack, action, &bad.error);
                    on_event(BuildEvent::Finished { report: &report });
                    reports.push(report);
                    continue;
                }
            };
            let mut report = EnvReport {
                pack: action.pack.pack_ref.clone(),
                action: action.action_ref.clone(),
                runtime: runtime.name.clone(),
                version: None,
                image: None,
                status: EnvStatus::Failed,
                error: None,
            };
            let runtime = runtime.as_ref();
            let statuses = preparer.verified_versions(runtime).await?;
            let chosen = action
                .dependencies(runtime.family())
                .map_err(|e| chain(&e))
                .and_then(|dependencies| {
                    prepare::select_version(
                        &action.action_ref,
                        runtime,
                        action.action.runtime_version.as_ref(),
                        &statuses,
                    )
                    .map(|selected| (dependencies, selected))
                    .map_err(|e| chain(&e))
                });
            let (dependencies, selected) = match chosen {
                Ok(chosen) => chosen,
                Err(error) => {
                    report.error = Some(error);
                    on_event(BuildEvent::Finished { report: &report });
                    reports.push(report);
                    continue;
                }
            };
            on_event(BuildEvent::Started {
                action: &action.action_ref,
            });
            let prepared = preparer
                .image_for(
                    runtime,
                    selected,
                    (
                        dependencies.as_ref(),
                        crate::plan::allowed_system_packages(
                            &self.settings,
                            &action.pack.system_packages,
                        ),
                    ),
                    |event| {
                        if let PrepareEvent::BuildLine { line } = event {
                            on_event(BuildEvent::Line { line });
                        }
                    },
                )
                .await;
            match prepared {
                Ok(prepared) => {
                    report.status = if prepared.image == selected.image {
                        EnvStatus::NotNeeded
                    } else if prepared.built {
                        EnvStatus::Built
                    } else {
                        EnvStatus::Present
                    };
                    report.version = Some(prepared.runtime_version);
                    report.image = Some(prepared.image);
                }
                Err(PrepareError::Cancelled) => return Err(PrepareError::Cancelled.into()),
                Err(e) => report.error = Some(chain(&e)),
            }
            on_event(BuildEvent::Finished { report: &report });
            reports.push(report);
        }
        Ok(reports)
    }

    /// Every environment image on the engine, newest first.
    pub async fn environments(&self) -> Result<Vec<EnvInfo>, Error> {
        Ok(inventory::list(self.engine.as_ref()).await?)
    }

    /// Removes all but the `keep` newest environment images, never one a container uses.
    pub async fn prune_environments(
        &self,
        keep: usize,
        dry_run: bool,
    ) -> Result<PruneReport, Error> {
        Ok(inventory::prune(self.engine.as_ref(), keep, dry_run).await?)
    }
}
