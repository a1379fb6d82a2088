//! The run backend: the one question the executor asks below it, "run this workload to its end
//! under this sandbox", and the two answers packbox has.
//!
//! - [`local::LocalBackend`]: a container on the engine, the pack bind-mounted or in a
//!   read-only volume, stdin attached (with the warm pool, when one is asked for).
//! - [`swarm::SwarmBackend`]: a one-shot service on the Swarm the engine manages, the pack in
//!   an image layer, the parameter document a Swarm secret.
//!
//! Both take the same [`Job`] and give back the same [`ContainerExit`], so the contract above
//! (status, result parsing, secrets scrubbing, exit codes) has no backend cases. Each reports
//! the sandbox as it applied it.

pub mod local;
pub mod swarm;

use crate::common::owned::Owned;
use std::fmt;
use std::sync::Arc;

use crate::contract::exit::ContainerExit;
use crate::egress::EgressError;
use crate::egress::audit::Audit;
use crate::egress::gateway::Gateway;
use crate::egress::policy::RunGrant;
use crate::engine::{EngineError, SharedEngine};
use crate::lifecycle::{RunError, RunIo};
use crate::pack_delivery::volume::DeliveryError;
use crate::sandbox::seccomp::Kernel;
use crate::sandbox::{SandboxPolicy, Workload};
use crate::settings::{Backend, Settings, WarmSettings};

pub use swarm::SwarmError;

/// A backend could not run a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The workload's life went wrong (the engine failed, it was cancelled).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The swarm backend could not run it (no Swarm, no registry, input it cannot take).
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The pack could not be delivered to the engine by volume.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The egress proxy or the run's network could not be made or used.
    #[error(transparent)]
    Egress(#[from] EgressError),
}

impl From<EngineError> for BackendError {
    fn from(error: EngineError) -> BackendError {
        BackendError::Run(error.into())
    }
}

/// The backend the settings name, on `engine`, with a warm pool sized by `warm` where the
/// backend has one (a Swarm service has no container to pre-start).
pub fn for_settings(
    settings: &Settings,
    engine: &SharedEngine,
    warm: Option<WarmSettings>,
    gateway: Arc<Gateway>,
) -> Arc<dyn RunBackend> {
    match settings.backend {
        Backend::Docker => Arc::new(local::LocalBackend::new(
            SharedEngine::clone(engine),
            crate::common::exec_ids::ExecIds::new(&settings.state_dir),
            warm,
            settings.pack_delivery,
            Owned::in_state_dir(&settings.state_dir),
            gateway,
        )),
        Backend::Swarm => Arc::new(swarm::SwarmBackend::new(
            SharedEngine::clone(engine),
            settings.registry.clone(),
            Owned::in_state_dir(&settings.state_dir),
            settings.placement.clone(),
            gateway,
        )),
    }
}

/// One run for a backend: what runs, under which sandbox, with which stdin, limits,
/// cancellation and output callback.
pub struct Job<'a> {
    /// The run's Attune execution id (`ATTUNE_EXEC_ID`), already in the workload's environment.
    pub attune_exec_id: u64,
    /// The run's id; the workload's environment and labels carry it too.
    pub exec_id: String,
    /// What runs: image, command, environment and pack.
    pub workload: Workload,
    /// The sandbox to run it in, as the settings and the action's isolation level decided it.
    pub policy: &'a SandboxPolicy,
    /// Which kernel answers the action's calls (the host's, or gVisor's when the policy runs
    /// it under runsc), for the syscall profile.
    pub kernel: Kernel,
    /// Stdin, limits, cancellation and the live-output callback.
    pub io: RunIo<'a>,
    /// For a pooled container, a command that starts the runtime's interpreter ahead of the run
    /// (the catalog's `warm_start` with the entry point): used when the pool preloads.
    pub warm_start: Option<Vec<String>>,
    /// Told the run's exec id once its container (or service) has it, before any output.
    pub on_started: &'a mut (dyn FnMut(&str) + Send),
    /// What the run may reach through the egress proxy (its sandbox's network is then
    /// `egress`); `None`: no grant.
    pub egress: Option<&'a RunGrant>,
}

/// Idle pre-started containers of one kind of run (one action on one image, same sandbox).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WarmKind {
    /// The action's ref.
    pub action: String,
    /// The image its containers run.
    pub image: String,
    /// Pre-started containers of this kind waiting now.
    pub idle: usize,
}

/// How a job ended.
#[derive(Debug)]
pub struct Ran {
    /// The Attune execution id the action saw (a pooled container's own, when one was taken).
    pub attune_exec_id: u64,
    /// The run's id (a pre-started container brings its own).
    pub exec_id: String,
    /// How the container (or the service's task) ended, with its captured output.
    pub exit: ContainerExit,
    /// The sandbox as the backend applied it.
    pub sandbox: SandboxPolicy,
    /// What the run reached through the egress proxy, and why that may be incomplete; `None`
    /// for a run without a grant.
    pub egress: Option<(Audit, Option<String>)>,
}

/// Where actions run.
#[async_trait::async_trait]
pub trait RunBackend: Send + Sync + fmt::Debug {
    /// Runs one job to its end: feeds the parameter document, captures bounded output, enforces
    /// the timeout (SIGTERM, grace, SIGKILL) and cancellation, and removes everything it made,
    /// whatever happened.
    async fn run(&self, job: Job<'_>) -> Result<Ran, BackendError>;

    /// Pre-started containers waiting now (a backend without a warm pool has none).
    fn idle_warm(&self) -> usize {
        0
    }

    /// Pre-started containers waiting now, per kind of run.
    fn warm_kinds(&self) -> Vec<WarmKind> {
        Vec::new()
    }

    /// Runs whose result came from packbox's init and whose container's exit status, as the
    /// engine saw it afterwards, differed (or never came): each is logged as a warning too.
    fn exit_mismatches(&self) -> u64 {
        0
    }

    /// Removes the pre-started containers nobody needs now (kinds unused for the idle time,
    /// containers above a kind's recent demand).
    async fn trim(&self) {}

    /// Waits for the backend's own background work and removes what it keeps between runs.
    async fn close(&self) {}
}

impl fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("exec_id", &self.exec_id)
            .field("image", &self.workload.image)
            .finish_non_exhaustive()
    }
}
