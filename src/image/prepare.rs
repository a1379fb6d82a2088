//! Preparing the image a run needs: the runtime versions are verified by probing (cached), one is
//! selected, and when the pack has a dependency manifest for that runtime its environment image
//! is made present (built once) on top of the selected runtime image.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, NoMatchingVersion, Runtime};
use crate::engine::SharedEngine;
use crate::image::env::{self, BuildNetwork, BuildSettings, EnvError, EnvRecipe, Manifests};
use crate::image::probe::{self, ProbeCache, VersionStatus};
use crate::image::runtime::ImageError;
use crate::lifecycle::owner::Owner;
use crate::version::{self, Candidate, Constraint, Verdict};

/// An image a run needs that cannot be made ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// No verified version of the action's runtime satisfies its `runtime_version`.
    #[error("action {action}: {source}")]
    NoMatchingVersion {
        /// The action's reference.
        action: String,
        /// The runtime, the constraint and the versions there were.
        #[source]
        source: NoMatchingVersion,
    },
    /// No version of the runtime could be verified at all.
    #[error("action {action}: no verified {runtime} version is available ({reasons})")]
    NoAvailableVersion {
        /// The action's reference.
        action: String,
        /// The runtime's name in the catalog.
        runtime: String,
        /// Why each version is unavailable (`3.11: image not present; ...`).
        reasons: String,
    },
    /// The environment image could not be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The runtime image could not be made present.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The preparation was cancelled before it finished; nothing it started is left.
    #[error("cancelled while preparing the image")]
    Cancelled,
}

/// The verified version to run on: [`version::select`] among the verified versions, each judged
/// by the full version its image holds. `None` when nothing fits: never a fallback to another
/// interpreter.
pub fn select_verified<'s>(
    runtime: &Runtime,
    constraint: Option<&Constraint>,
    statuses: &'s [VersionStatus],
) -> Option<&'s VersionStatus> {
    let available: Vec<&VersionStatus> = statuses.iter().filter(|s| s.is_available()).collect();
    let candidates: Vec<Candidate<'_>> = available.iter().map(|s| s.candidate()).collect();
    let chosen = version::select(&candidates, constraint, runtime.default_version.as_deref())?;
    // A verified version has a detected version, so its verdict is never a mere `Maybe`.
    (chosen.verdict == Verdict::Yes).then(|| available[chosen.index])
}

/// The verified version an action runs on (see [`select_verified`]), with the errors named
/// after the action.
pub fn select_version<'s>(
    action_ref: &str,
    runtime: &Runtime,
    constraint: Option<&Constraint>,
    statuses: &'s [VersionStatus],
) -> Result<&'s VersionStatus, PrepareError> {
    match select_verified(runtime, constraint, statuses) {
        Some(selected) => Ok(selected),
        None if !statuses.iter().any(VersionStatus::is_available) => {
            Err(PrepareError::NoAvailableVersion {
                action: action_ref.to_string(),
                runtime: runtime.name.clone(),
                reasons: statuses
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: {}",
                            s.version,
                            s.reason.as_deref().unwrap_or("unavailable")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
        None => Err(PrepareError::NoMatchingVersion {
            action: action_ref.to_string(),
            source: NoMatchingVersion {
                runtime: runtime.name.clone(),
                constraint: constraint.map(|c| c.as_str().to_string()),
                available: statuses
                    .iter()
                    .filter(|s| s.is_available())
                    .map(|s| s.full_version().to_string())
                    .collect(),
            },
        }),
    }
}

/// The image a run starts from, and the runtime version it holds.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// The verified runtime version (`3.11.2`).
    pub runtime_version: String,
    /// The tag of the environment image, else of the runtime image: what the outcome names.
    pub image: String,
    /// What the run's container is created from: the id packbox verified (the environment
    /// image it built, the runtime image it probed), so a tag moved meanwhile cannot swap
    /// another image in; the tag when the id is not known.
    pub run_image: String,
    /// Set when an environment image was built for this run.
    pub built: bool,
}

/// Progress of a preparation, for the caller to show.
#[derive(Debug)]
#[non_exhaustive]
pub enum PrepareEvent<'a> {
    /// An environment image is being built.
    Building {
        /// The environment image's tag.
        tag: &'a str,
    },
    /// One line of the build's output.
    BuildLine {
        /// The line as the engine sent it; the build's log keeps it too.
        line: &'a str,
    },
}

/// Services a preparation uses: engine, catalog, probe cache, build settings, state folder, the
/// owner its probe containers name, and the cancellation it observes.
pub struct Preparer<'a> {
    /// The engine probes and builds run on.
    pub engine: &'a SharedEngine,
    /// The runtimes, their versions and images.
    pub catalog: &'a Catalog,
    /// Probe results already known, so versions are not probed on every run.
    pub probe_cache: &'a ProbeCache,
    /// Limits and sources for environment builds.
    pub build: &'a BuildSettings,
    /// Where environment builds get their network: packbox's egress proxy.
    pub build_network: BuildNetwork<'a>,
    /// Where build locks and logs live.
    pub state_dir: &'a Path,
    /// The packbox process probe containers are labelled with, so leftovers can be swept.
    pub owner: &'a Owner,
    /// Cancelled when packbox is asked to stop; builds and pulls stop and clean up.
    pub cancel: &'a CancellationToken,
}

impl Preparer<'_> {
    /// The verified versions of a runtime (probing what the cache does not know).
    pub async fn verified_versions(
        &self,
        runtime: &Runtime,
    ) -> Result<Vec<VersionStatus>, PrepareError> {
        let verified = probe::verify(
            self.engine,
            self.catalog,
            &[runtime],
            self.probe_cache,
            self.owner,
            self.cancel,
        )
        .await;
        if self.cancel.is_cancelled() {
            return Err(PrepareError::Cancelled);
        }
        Ok(verified)
    }

    /// Makes the image for a pack's dependencies (`None`: it has none) and the Debian packages
    /// it may have installed (empty: none) on the selected version present; the runtime image
    /// when it needs neither.
    pub async fn image_for(
        &self,
        runtime: &Runtime,
        selected: &VersionStatus,
        (dependencies, system_packages): (Option<&Manifests>, &[String]),
        mut on_event: impl FnMut(PrepareEvent<'_>) + Send,
    ) -> Result<PreparedImage, PrepareError> {
        let runtime_version = selected.full_version().to_string();
        let runtime_image = PreparedImage {
            runtime_version: runtime_version.clone(),
            image: selected.image.clone(),
            run_image: selected
                .image_id
                .clone()
                .unwrap_or_else(|| selected.image.clone()),
            built: false,
        };
        if dependencies.is_none() && system_packages.is_empty() {
            return Ok(runtime_image);
        }
        let Some(base_image_id) = selected.image_id.clone() else {
            return Ok(runtime_image);
        };
        let recipe = EnvRecipe {
            runtime: runtime.name.clone(),
            version: runtime_version.clone(),
            base_image_id,
            manifests: dependencies.cloned(),
            system_packages: system_packages.to_vec(),
            index: self.build.index.clone(),
        };
        let tag = recipe.tag();
        let mut announced = false;
        let env = env::ensure(
            self.engine,
            &recipe,
            self.build,
            self.build_network,
            self.state_dir,
            self.cancel,
            |line| {
                if !announced {
                    on_event(PrepareEvent::Building { tag: &tag });
                    announced = true;
                }
                on_event(PrepareEvent::BuildLine { line });
            },
        )
        .await
        .map_err(|e| match e {
            EnvError::Cancelled { .. } => PrepareError::Cancelled,
            other => PrepareError::Env(other),
        })?;
        Ok(PreparedImage {
            runtime_version,
            image: env.tag,
            run_image: env.id,
            built: env.built,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(version: &str, detected: &str, available: bool) -> VersionStatus {
        VersionStatus {
            runtime: "python".into(),
            version: version.into(),
            image: format!("packbox/python:{version}"),
            image_id: Some("sha256:x".into()),
            detected_version: Some(detected.into()),
            available: Some(available),
            reason: None,
            verified_at: None,
            cached: false,
        }
    }

    fn python() -> Runtime {
        Catalog::builtin()
            .expect("valid")
            .resolve("python")
            .expect("python")
            .clone()
    }

    fn pick(constraint: Option<&str>, statuses: &[VersionStatus]) -> Option<String> {
        let constraint = constraint.map(|c| Constraint::parse(c).expect("valid constraint"));
        select_verified(&python(), constraint.as_ref(), statuses).map(|s| s.full_version().into())
    }

    fn three() -> Vec<VersionStatus> {
        vec![
            status("3.9", "3.9.2", true),
            status("3.11", "3.11.2", true),
            status("3.13", "3.13.5", true),
        ]
    }

    #[test]
    fn constraints_match_the_detected_versions() {
        assert_eq!(pick(Some(">=3.12"), &three()).as_deref(), Some("3.13.5"));
        assert_eq!(pick(Some("<3.10"), &three()).as_deref(), Some("3.9.2"));
        assert_eq!(pick(Some("~3.11"), &three()).as_deref(), Some("3.11.2"));
        assert_eq!(
            pick(Some(">=3.11.1,<3.12"), &three()).as_deref(),
            Some("3.11.2")
        );
        assert_eq!(pick(Some(">=3.14"), &three()), None);
    }

    /// Regression: `<=3.11` ran on 3.9.2 and `=3.11` matched nothing, because the constraint was
    /// padded to 3.11.0 and compared with the detected 3.11.2.
    #[test]
    fn constraints_hold_at_the_precision_they_are_written() {
        for constraint in ["<=3.11", "=3.11", "3.11", "3.11.x", "~3.11", "!=3.13, >3.9"] {
            assert_eq!(
                pick(Some(constraint), &three()).as_deref(),
                Some("3.11.2"),
                "{constraint}"
            );
        }
        assert_eq!(pick(Some(">=3.11.4, <3.12"), &three()), None);
    }

    #[test]
    fn without_a_constraint_the_default_wins_when_verified() {
        assert_eq!(pick(None, &three()).as_deref(), Some("3.11.2"));
        let mut statuses = three();
        statuses[1].available = Some(false);
        assert_eq!(pick(None, &statuses).as_deref(), Some("3.13.5"));
    }

    #[test]
    fn unverified_versions_are_never_chosen() {
        let mut statuses = three();
        statuses[2].available = Some(false);
        assert_eq!(pick(Some(">=3.12"), &statuses), None);
    }
}
