//! The run pipeline: plan a run from a pack (no engine needed), then execute the plan.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, NoMatchingVersion, Runtime};
use crate::engine::{Engine, StreamKind};
use crate::envimage::BuildSettings;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::pack::{self, LoadedAction};
use crate::plan::{RunPlan, resolve_runtime};
use crate::prepare::{self, PrepareEvent, Preparer};
use crate::probe::{ProbeCache, VersionStatus};
use crate::runtime_image;
use crate::sandbox::owner::{self, Owner};
use crate::sandbox::pool::{self, Warm, WarmPool};
use crate::sandbox::result::{self, RunFacts};
use crate::sandbox::run::Started;
use crate::sandbox::{self, RunIo, SandboxPolicy, gvisor};

/// Runs planned actions on one engine.
#[derive(Debug)]
pub struct Executor {
    engine: Engine,
    catalog: Catalog,
    probe_cache: ProbeCache,
    build: BuildSettings,
    state_dir: PathBuf,
    owner: Owner,
    shutdown: CancellationToken,
    /// Pre-started containers, when enabled with [`Executor::with_warm_pool`].
    pool: Option<Arc<WarmPool>>,
    /// Pre-starts under way, awaited by [`Executor::close`].
    refills: Mutex<JoinSet<()>>,
}

/// What [`Executor::run`] reports while it works.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// Preparing the image (an environment build).
    Prepare(PrepareEvent<'a>),
    /// A chunk of the action's output, as it arrives.
    Output { stream: StreamKind, bytes: &'a [u8] },
}

impl Executor {
    /// An executor on an engine that answered, with build settings and state folder from the
    /// environment (`PACKBOX_BUILD_CA_BUNDLE`, `PACKBOX_STATE_DIR`, ...).
    pub fn new(engine: Engine, catalog: Catalog) -> Self {
        Executor {
            engine,
            catalog,
            probe_cache: ProbeCache::open(),
            build: BuildSettings::from_env(),
            state_dir: crate::state::state_dir(),
            owner: Owner::current(),
            shutdown: CancellationToken::new(),
            pool: None,
            refills: Mutex::new(JoinSet::new()),
        }
    }

    /// Keeps up to `per_kind` containers pre-started for each kind of run this executor has
    /// made (same action, image and sandbox), so that later runs skip the engine's container
    /// start. For long-lived executors; call [`Executor::close`] when done.
    pub fn with_warm_pool(mut self, per_kind: usize) -> Self {
        self.pool = (per_kind > 0).then(|| Arc::new(WarmPool::new(per_kind)));
        self
    }

    /// Runs observe `shutdown`: once cancelled, a running action is stopped (SIGTERM, grace,
    /// SIGKILL), its container removed, and its outcome is `cancelled`.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    fn preparer(&self) -> Preparer<'_> {
        Preparer {
            engine: &self.engine,
            catalog: &self.catalog,
            probe_cache: &self.probe_cache,
            build: &self.build,
            state_dir: &self.state_dir,
        }
    }

    /// Runs a plan in a fresh container and removes it. An action that fails is an `Ok` outcome
    /// with status failed; `Err` means the run could not happen. `on_event` hears about
    /// environment builds and receives the action's output as it comes (for `--follow`).
    pub async fn run(
        &self,
        plan: &RunPlan,
        mut on_event: impl FnMut(RunEvent<'_>) + Send,
    ) -> Result<Outcome, Error> {
        let started = Instant::now();
        if let Some(runtime) = &plan.policy.oci_runtime {
            self.check_oci_runtime(runtime, &plan.policy).await?;
        }
        let preparer = self.preparer();
        // Leftovers of crashed packbox processes go while this run's image is prepared.
        let (swept, statuses) = tokio::join!(
            owner::sweep_orphans(&self.engine),
            preparer.verified_versions(&plan.runtime)
        );
        if let Err(e) = swept {
            tracing::warn!("sweeping leftover containers: {e}");
        }
        let selected = select_version(&plan.action, &plan.runtime, &statuses)?;
        let prepared = preparer
            .image_for(&plan.runtime, selected, &plan.action.pack_dir, |event| {
                on_event(RunEvent::Prepare(event))
            })
            .await?;
        let (exec_id, container, stdin) = self.container_for(plan, &prepared.image).await?;
        let mut on_output =
            |stream: StreamKind, bytes: &[u8]| on_event(RunEvent::Output { stream, bytes });
        let exit = sandbox::run::finish(
            &self.engine,
            container,
            RunIo {
                stdin,
                limits: &plan.limits,
                cancel: &self.shutdown,
                on_output: &mut on_output,
            },
        )
        .await?;
        Ok(result::outcome(
            plan,
            exit,
            RunFacts {
                exec_id,
                duration_ms: started.elapsed().as_millis() as u64,
                runtime_version: prepared.runtime_version,
                image: prepared.image,
            },
        ))
    }

    /// The started container a run uses, its exec id and the stdin to give it: a pre-started
    /// one from the warm pool when there is one (then a replacement is started in the
    /// background), else a fresh one.
    async fn container_for(
        &self,
        plan: &RunPlan,
        image: &str,
    ) -> Result<(String, Started, Vec<u8>), Error> {
        let spec_for = |exec_id: &str| {
            let mut spec = plan
                .policy
                .container_spec(plan.workload(exec_id, image, &self.owner));
            if self.pool.is_some() {
                spec.cmd = pool::wait_for_go(spec.cmd);
            }
            spec
        };
        let exec_id = uuid::Uuid::new_v4().to_string();
        let spec = spec_for(&exec_id);
        let Some(warm_pool) = &self.pool else {
            let started =
                sandbox::run::start(&self.engine, &container_name(&exec_id), &spec).await?;
            return Ok((exec_id, started, plan.stdin.0.clone()));
        };
        let key = pool::key(&spec);
        let (exec_id, started) = match warm_pool.take(&key) {
            Some(warm) => (warm.exec_id, warm.started),
            None => {
                let started =
                    sandbox::run::start(&self.engine, &container_name(&exec_id), &spec).await?;
                (exec_id, started)
            }
        };
        // Replace what this run uses, off the run's path.
        let next_id = uuid::Uuid::new_v4().to_string();
        let next_spec = spec_for(&next_id);
        let (engine, warm_pool) = (self.engine.clone(), Arc::clone(warm_pool));
        if let Ok(mut refills) = self.refills.lock() {
            refills.spawn(async move {
                match sandbox::run::start(&engine, &container_name(&next_id), &next_spec).await {
                    Ok(started) => {
                        let warm = Warm {
                            exec_id: next_id,
                            started,
                        };
                        if let Some(spare) = warm_pool.put(key, warm) {
                            sandbox::run::discard(&engine, spare.started).await;
                        }
                    }
                    Err(e) => tracing::warn!("pre-starting a container: {e}"),
                }
            });
        }
        let mut stdin = pool::GO_LINE.to_vec();
        stdin.extend_from_slice(&plan.stdin.0);
        Ok((exec_id, started, stdin))
    }

    /// Removes the warm pool's idle containers (after any pre-start under way). Call it before
    /// dropping an executor made with [`Executor::with_warm_pool`]; leftovers are otherwise
    /// swept by the next packbox start, as the owner is then gone.
    pub async fn close(&self) {
        let mut refills = match self.refills.lock() {
            Ok(mut refills) => std::mem::take(&mut *refills),
            Err(_) => JoinSet::new(),
        };
        while refills.join_next().await.is_some() {}
        if let Some(warm_pool) = &self.pool {
            for warm in warm_pool.drain() {
                sandbox::run::discard(&self.engine, warm.started).await;
            }
        }
    }

    /// Refuses an OCI runtime the engine does not have, naming those it has, and a gVisor that
    /// could not sandbox the run as asked.
    async fn check_oci_runtime(&self, wanted: &str, policy: &SandboxPolicy) -> Result<(), Error> {
        match self.engine.oci_runtime(wanted).await? {
            Some(runtime) if gvisor::is_gvisor(&runtime) => Ok(gvisor::check(&runtime, policy)?),
            Some(_) => Ok(()),
            None => Err(Error::OciRuntimeMissing {
                wanted: wanted.to_string(),
                available: self.engine.oci_runtimes().await?.join(", "),
            }),
        }
    }

    /// Removes the containers of packbox processes that are gone (`packbox gc`).
    pub async fn sweep_orphans(&self) -> Result<Vec<owner::Swept>, Error> {
        Ok(owner::sweep_orphans(&self.engine).await?)
    }

    /// Builds ahead of time the environment of every action of the given packs (all packs of the
    /// folder when none is named), on the version each action would run on. A failed build does
    /// not stop the others: its error is in its report.
    pub async fn build_environments(
        &self,
        packs_dir: &Path,
        packs: &[String],
        mut on_event: impl FnMut(BuildEvent<'_>),
    ) -> Result<Vec<EnvReport>, Error> {
        let actions = pack::load_packs(packs_dir, packs)?;
        let preparer = self.preparer();
        let mut reports = Vec::new();
        for action in actions {
            let runtime = resolve_runtime(&self.catalog, &action)?;
            let statuses = preparer.verified_versions(runtime).await;
            let mut report = EnvReport {
                pack: action.pack.pack_ref.clone(),
                action: action.action_ref.clone(),
                runtime: runtime.name.clone(),
                version: None,
                image: None,
                status: EnvStatus::Failed,
                error: None,
            };
            let selected = match select_version(&action, runtime, &statuses) {
                Ok(selected) => selected,
                Err(e) => {
                    report.error = Some(crate::error::chain(&e));
                    on_event(BuildEvent::Finished { report: &report });
                    reports.push(report);
                    continue;
                }
            };
            on_event(BuildEvent::Started {
                action: &action.action_ref,
            });
            let prepared = preparer
                .image_for(runtime, selected, &action.pack_dir, |event| {
                    if let PrepareEvent::BuildLine { line } = event {
                        on_event(BuildEvent::Line { line });
                    }
                })
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
                Err(e) => report.error = Some(crate::error::chain(&e)),
            }
            on_event(BuildEvent::Finished { report: &report });
            reports.push(report);
        }
        Ok(reports)
    }

    /// Builds every catalog runtime image that is missing; `on_event` hears about each image.
    pub async fn build_runtime_images(
        &self,
        mut on_event: impl FnMut(ImageEvent<'_>),
    ) -> Result<(), Error> {
        let catalog = &self.catalog;
        for runtime in catalog.runtimes() {
            for version in &runtime.versions {
                on_event(ImageEvent::Checking {
                    image: &version.image,
                });
                let state =
                    runtime_image::ensure(&self.engine, catalog, runtime, version, |line| {
                        on_event(ImageEvent::BuildLine { line })
                    })
                    .await?;
                on_event(ImageEvent::Done {
                    image: &version.image,
                    state,
                });
            }
        }
        Ok(())
    }
}

/// What `build_environments` did for one action.
#[derive(Clone, Debug, Serialize)]
pub struct EnvReport {
    pub pack: String,
    pub action: String,
    pub runtime: String,
    /// The verified runtime version the environment is for.
    pub version: Option<String>,
    pub image: Option<String>,
    pub status: EnvStatus,
    pub error: Option<String>,
}

/// The state of one action's environment after `build_environments`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    /// Built now.
    Built,
    /// Already there: no build.
    Present,
    /// The pack has no manifest for the runtime: it runs on the runtime image.
    NotNeeded,
    /// The build (or version selection) failed; see `error`.
    Failed,
}

/// Progress of [`Executor::build_environments`].
#[derive(Debug)]
pub enum BuildEvent<'a> {
    Started { action: &'a str },
    Line { line: &'a str },
    Finished { report: &'a EnvReport },
}

/// Progress of [`Executor::build_runtime_images`].
#[derive(Debug)]
pub enum ImageEvent<'a> {
    Checking {
        image: &'a str,
    },
    BuildLine {
        line: &'a str,
    },
    Done {
        image: &'a str,
        state: runtime_image::ImageState,
    },
}

/// The verified version an action runs on (see [`prepare::select_verified`]), with the errors
/// named after the action.
fn select_version<'s>(
    action: &LoadedAction,
    runtime: &Runtime,
    statuses: &'s [VersionStatus],
) -> Result<&'s VersionStatus, Error> {
    let constraint = action.action.runtime_version.as_ref();
    match prepare::select_verified(runtime, constraint, statuses) {
        Some(selected) => Ok(selected),
        None if !statuses.iter().any(VersionStatus::is_available) => {
            Err(Error::NoAvailableVersion {
                action: action.action_ref.clone(),
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
        None => Err(Error::NoMatchingVersion {
            action: action.action_ref.clone(),
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

fn container_name(exec_id: &str) -> String {
    format!("packbox-{exec_id}")
}
