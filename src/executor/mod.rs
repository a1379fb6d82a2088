//! The facade over the stages: an [`Executor`] holds the resolved settings, the catalog and the
//! engine, and runs planned actions; it also offers the engine-side chores the CLI needs
//! (runtime verification, environment builds and pruning, garbage collection), so no caller
//! assembles engine calls itself.
//!
//! Leftovers of crashed packbox processes are swept once, in the background, when an executor
//! starts; never on a run's path.
//!
//! By job: `run.rs` (a planned action, to its outcome), `images.rs` (runtime images: verify,
//! build, import, copy), `environments.rs` (environment images ahead of runs, listed, pruned),
//! `gc.rs` (leftovers), `explain.rs` (the decision a run would take), `packtest.rs` (a pack's own
//! tests), `doctor.rs` (what runs need, checked), and `error.rs`: the top-level [`Error`] that
//! gathers every stage's error for the facade.

mod artifacts_gc;
pub mod doctor;
mod environments;
pub mod error;
pub mod explain;
mod gc;
mod images;
pub mod packtest;
mod run;

use crate::backend::{self, RunBackend};
use crate::catalog::Catalog;
use crate::common::error_text::chain;
use crate::egress::gateway::Gateway;
use crate::engine::{DockerEngine, EngineInfo, SharedEngine};
use crate::image::prepare::Preparer;
use crate::image::probe::ProbeCache;
use crate::lifecycle::owner::{self, Owner};
use crate::sandbox::SandboxPolicy;
use crate::sandbox::gvisor::{self, GvisorError};
use crate::sandbox::isolation::IsolationLevel;
use crate::sandbox::seccomp::Kernel;
use crate::settings::{Backend, Settings, WarmSettings};
use error::Error;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::backend::WarmKind;
pub use crate::image::prepare::PrepareEvent;
pub use artifacts_gc::{RemovedArtifacts, collect_artifacts};
pub use environments::{BuildEvent, EnvReport, EnvStatus};
pub use gc::{GcReport, MIN_SUPERSEDED_AGE};
pub use images::ImageEvent;
pub use run::{RunEvent, artifacts_folder};

/// The OCI runtime actions run under when the operator names none and the engine offers it:
/// crun starts containers faster than runc and gives the same sandbox (the hostile suite runs
/// under each; `scripts/ensure-docker` registers Debian's crun).
pub const PREFERRED_RUNTIME: &str = "crun";

/// Runs planned actions on one engine.
#[derive(Debug)]
pub struct Executor {
    engine: SharedEngine,
    settings: Settings,
    catalog: Catalog,
    probe_cache: ProbeCache,
    /// Where runs take their Attune execution ids (the state folder).
    exec_ids: crate::common::exec_ids::ExecIds,
    owner: Owner,
    shutdown: CancellationToken,
    /// What the engine offers, asked once when a run needs it.
    engine_info: OnceCell<EngineInfo>,
    /// Where actions run (the settings' backend).
    backend: Arc<dyn RunBackend>,
    /// Work off the runs' path (the start-up sweep), awaited by [`Executor::close`].
    background: Mutex<JoinSet<()>>,
    /// Turns true when the start-up sweep is over.
    swept: tokio::sync::watch::Receiver<bool>,
    /// The egress proxy and per-run networks of runs with a grant (made on first use).
    gateway: Arc<Gateway>,
}

impl Executor {
    /// Connects to the engine the settings name and starts an executor on it.
    pub async fn connect(settings: Settings, catalog: Catalog) -> Result<Executor, Error> {
        let engine =
            DockerEngine::connect(&settings.endpoint.host, &settings.endpoint.transport).await?;
        Ok(Executor::start(settings, catalog, Arc::new(engine)))
    }

    /// An executor on an engine that answered. Leftovers of packbox processes that are gone are
    /// swept in the background (call [`Executor::close`] before dropping it). Must be called
    /// within a tokio runtime.
    pub fn start(settings: Settings, catalog: Catalog, engine: SharedEngine) -> Executor {
        let owner = Owner::current();
        let gateway = Arc::new(Gateway::new(
            SharedEngine::clone(&engine),
            settings.egress.clone(),
            owner.labels(),
            settings.endpoint.is_local_socket(),
            settings.state_dir.clone(),
        ));
        let (sweep_done, swept) = tokio::sync::watch::channel(false);
        let executor = Executor {
            swept,
            probe_cache: ProbeCache::open(&settings.state_dir),
            exec_ids: crate::common::exec_ids::ExecIds::new(&settings.state_dir),
            backend: backend::for_settings(&settings, &engine, None, Arc::clone(&gateway)),
            gateway,
            engine,
            settings,
            catalog,
            owner,
            shutdown: CancellationToken::new(),
            engine_info: OnceCell::new(),
            background: Mutex::new(JoinSet::new()),
        };
        let engine = SharedEngine::clone(&executor.engine);
        let state_dir = executor.settings.state_dir.clone();
        executor.spawn_background(
            async move {
                match tokio::task::spawn_blocking(move || run::sweep_incoming(&state_dir)).await {
                    Ok(0) | Err(_) => {}
                    Ok(count) => tracing::info!(count, "removed stale incoming artifacts"),
                }
                match owner::sweep_orphans(&engine).await {
                    Ok(swept) if !swept.is_empty() => {
                        tracing::info!(count = swept.len(), "swept leftovers")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("sweeping leftovers: {}", chain(&e)),
                }
                sweep_done.send_replace(true);
            }
            .instrument(tracing::debug_span!("sweep")),
        );
        executor
    }

    /// Waits until the start-up sweep of leftovers is over: a server waits for it before it
    /// takes requests, so the containers of the process it replaces are gone first.
    pub async fn start_up_sweep(&self) {
        let mut swept = self.swept.clone();
        // An error means the sweep task is gone: nothing more to wait for.
        let _ = swept.wait_for(|done| *done).await;
    }

    /// Keeps up to `per_kind` containers pre-started for each kind of run this executor has
    /// made (same action, image and sandbox), so that later runs skip the engine's container
    /// start. For long-lived executors on the docker backend (a Swarm service has no container
    /// to pre-start: the swarm backend ignores it); call [`Executor::close`] when done.
    pub fn with_warm_pool(self, per_kind: usize) -> Self {
        self.with_warm_pool_sized(WarmSettings {
            per_kind,
            total: usize::MAX,
            idle: std::time::Duration::MAX,
            preload: false,
        })
    }

    /// [`Executor::with_warm_pool`] sized by demand: each kind keeps as many containers ready
    /// as it recently ran at once, or as arrive while one starts, at most `per_kind`, `total`
    /// in all; a kind nobody runs for `idle` loses them (see [`Executor::trim_warm_pool`]).
    /// With `preload`, pooled containers of runtimes that can (the catalog's `warm_start`)
    /// start their interpreter ahead of the run too. Still one action per container.
    pub fn with_warm_pool_sized(mut self, sizing: WarmSettings) -> Self {
        self.backend = backend::for_settings(
            &self.settings,
            &self.engine,
            Some(sizing),
            Arc::clone(&self.gateway),
        );
        self
    }

    /// Everything the executor does observes `shutdown`: once cancelled, probes, pulls and
    /// builds stop and leave nothing behind, and a running action is stopped (SIGTERM, grace,
    /// SIGKILL), its container removed, and its outcome is `cancelled`.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Runs whose outcome came from packbox's init (at the action's exit) and whose
    /// container's exit status, as the engine saw it afterwards, differed or never came. Each is
    /// also logged as a warning; the count covers runs whose containers are removed (see
    /// [`Executor::close`]).
    pub fn exit_status_mismatches(&self) -> u64 {
        self.backend.exit_mismatches()
    }

    /// How many pre-started containers wait in the warm pool now.
    pub fn idle_warm_containers(&self) -> usize {
        self.backend.idle_warm()
    }

    /// The pre-started containers waiting now, per kind of run.
    pub fn warm_kinds(&self) -> Vec<WarmKind> {
        self.backend.warm_kinds()
    }

    /// Removes the pooled containers nobody needs now: those of kinds of run unused for the
    /// pool's idle time, and those above what a kind's recent demand asks for. A long-lived
    /// executor calls it from time to time.
    pub async fn trim_warm_pool(&self) {
        self.backend.trim().await;
    }

    /// Whether the engine answers now (asked every time, for readiness checks).
    pub async fn ping(&self) -> Result<(), Error> {
        self.engine.info().await?;
        Ok(())
    }

    /// The settings this executor runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn spawn_background(&self, work: impl Future<Output = ()> + Send + 'static) {
        if let Ok(mut background) = self.background.lock() {
            // Finished work is let go here, so a long-lived executor's set stays small.
            while background.try_join_next().is_some() {}
            background.spawn(work);
        }
    }

    /// The image stages, stopping when `cancel` is cancelled.
    fn preparer<'a>(&'a self, cancel: &'a CancellationToken) -> Preparer<'a> {
        Preparer {
            engine: &self.engine,
            catalog: &self.catalog,
            probe_cache: &self.probe_cache,
            build: &self.settings.build,
            build_network: self.build_network(),
            state_dir: &self.settings.state_dir,
            owner: &self.owner,
            cancel,
        }
    }

    /// Where environment builds get their network: the gateway's egress proxy. (Unit tests
    /// run on the fake engine, which runs no proxy: their builds get no network at all.)
    fn build_network(&self) -> crate::image::env::BuildNetwork<'_> {
        #[cfg(test)]
        return crate::image::env::BuildNetwork::Offline;
        #[cfg(not(test))]
        crate::image::env::BuildNetwork::Egress(&self.gateway)
    }

    /// Waits for the work started off the runs' path (the start-up sweep, the backend's pool
    /// refills), then removes the warm pool's idle containers. Call it before dropping an executor; leftovers
    /// are otherwise swept by the next packbox start, as the owner is then gone.
    pub async fn close(&self) {
        let mut background = match self.background.lock() {
            Ok(mut background) => std::mem::take(&mut *background),
            Err(_) => JoinSet::new(),
        };
        while background.join_next().await.is_some() {}
        self.backend.close().await;
        self.gateway.close().await;
    }

    /// What the engine offers, asked once.
    async fn engine_info(&self) -> Result<&EngineInfo, Error> {
        Ok(self
            .engine_info
            .get_or_try_init(|| self.engine.info())
            .await?)
    }

    /// The sandbox a run gets on this engine and which kernel answers its calls: the policy,
    /// with the faster OCI runtime ([`PREFERRED_RUNTIME`]) when the operator named none and the
    /// engine offers it (docker backend only: a Swarm service cannot choose one; Docker only:
    /// Podman's compat API ignores the runtime a container names), checked as
    /// [`Executor::check_policy`] does.
    async fn sandbox_for<'p>(
        &self,
        action_ref: &str,
        policy: &'p SandboxPolicy,
    ) -> Result<(Kernel, Cow<'p, SandboxPolicy>), Error> {
        let mut policy = Cow::Borrowed(policy);
        if policy.oci_runtime.is_none()
            && self.settings.backend == Backend::Docker
            && !self.engine.identity().is_podman()
        {
            let info = self.engine_info().await?;
            if info.default_runtime != PREFERRED_RUNTIME
                && info
                    .oci_runtimes
                    .iter()
                    .any(|r| r.name == PREFERRED_RUNTIME)
            {
                policy.to_mut().oci_runtime = Some(PREFERRED_RUNTIME.to_string());
            }
        }
        let kernel = self.check_policy(action_ref, &policy).await?;
        Ok((kernel, policy))
    }

    /// Refuses a sandbox the engine cannot give: an OCI runtime it lacks, a gVisor that could
    /// not sandbox the run as asked, a strict run on anything but gVisor, more CPUs than it
    /// has. Says which kernel will answer the action's calls.
    async fn check_policy(
        &self,
        action_ref: &str,
        policy: &SandboxPolicy,
    ) -> Result<Kernel, Error> {
        if policy.oci_runtime.is_none() && policy.cpus <= 1.0 {
            return Ok(Kernel::Host);
        }
        let info = self.engine_info().await?;
        let mut kernel = Kernel::Host;
        if let Some(wanted) = &policy.oci_runtime {
            match info.oci_runtimes.iter().find(|r| &r.name == wanted) {
                None => {
                    let available: Vec<&str> =
                        info.oci_runtimes.iter().map(|r| r.name.as_str()).collect();
                    return Err(Error::OciRuntimeMissing {
                        wanted: wanted.clone(),
                        available: available.join(", "),
                    });
                }
                Some(runtime) if gvisor::is_gvisor(runtime) => {
                    gvisor::check(runtime, policy)?;
                    kernel = Kernel::Gvisor;
                }
                Some(runtime) if policy.isolation.level == IsolationLevel::Strict => {
                    return Err(GvisorError::StrictNeedsGvisor {
                        action: action_ref.to_string(),
                        runtime: runtime.name.clone(),
                        path: runtime.path.clone(),
                    }
                    .into());
                }
                Some(_) => {}
            }
        }
        if info.cpus > 0 && policy.cpus > info.cpus as f64 {
            return Err(Error::TooManyCpus {
                wanted: policy.cpus,
                available: info.cpus,
            });
        }
        Ok(kernel)
    }
}

#[cfg(test)]
mod tests;
