//! packbox's error type: every stage's typed error, and which side is at fault (the input, or
//! packbox and the engine), which decides the exit code. Stages never import this module: they
//! return their own errors, which this one wraps.

use crate::backend::{BackendError, SwarmError};
use crate::catalog::CatalogError;
use crate::egress::EgressError;
use crate::engine::EngineError;
use crate::image::base::BaseImageError;
use crate::image::copy::CopyError;
use crate::image::env::EnvError;
use crate::image::prepare::PrepareError;
use crate::image::probe::UnknownRuntimeFilter;
use crate::image::runtime::ImageError;
use crate::lifecycle::RunError;
use crate::pack_delivery::volume::DeliveryError;
use crate::plan::PlanError;
use crate::sandbox::gvisor::GvisorError;
use crate::settings::SettingsError;

/// Any error packbox's library can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings (flags, config file, environment) cannot be resolved.
    #[error(transparent)]
    Settings(Box<SettingsError>),
    /// The runtime catalog cannot be read or makes no sense.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The request cannot become a run: the pack, action, parameters or secrets are wrong.
    #[error(transparent)]
    Plan(Box<PlanError>),
    /// `PACKBOX_RUNTIMES` names a runtime the catalog does not have.
    #[error(transparent)]
    RuntimeFilter(#[from] UnknownRuntimeFilter),
    /// The operator asked for an OCI runtime the engine does not have.
    #[error("OCI runtime `{wanted}` is not available on this engine (available: {available})")]
    OciRuntimeMissing {
        /// The OCI runtime asked for.
        wanted: String,
        /// The engine's OCI runtimes, comma-separated.
        available: String,
    },
    /// gVisor, as the engine registered it, cannot sandbox the run as asked.
    #[error(transparent)]
    Gvisor(#[from] GvisorError),
    /// The sandbox asks for more CPUs than the engine has.
    #[error("sandbox.cpus = {wanted}: the engine has only {available} CPUs")]
    TooManyCpus {
        /// The CPUs the sandbox asks for.
        wanted: f64,
        /// The CPUs the engine reports.
        available: i64,
    },
    /// The engine could not be reached or failed a request outside any one stage.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No verified runtime version fits the action, or its image could not be made ready.
    #[error(transparent)]
    Prepare(Box<PrepareError>),
    /// A runtime image could not be found, pulled or built.
    #[error(transparent)]
    Image(Box<ImageError>),
    /// An environment image could not be built.
    #[error(transparent)]
    Env(Box<EnvError>),
    /// The container of a run failed in the engine, or could not be cleaned up.
    #[error(transparent)]
    Run(Box<RunError>),
    /// The swarm backend could not run the action.
    #[error(transparent)]
    Swarm(Box<SwarmError>),
    /// Images could not be copied to another engine.
    #[error(transparent)]
    Copy(Box<CopyError>),
    /// The pack could not be delivered to the engine by volume.
    #[error(transparent)]
    Delivery(Box<DeliveryError>),
    /// A base image could not be imported.
    #[error(transparent)]
    BaseImage(Box<BaseImageError>),
    /// The state folder could not give the run an Attune execution id.
    #[error(transparent)]
    ExecId(#[from] crate::common::exec_ids::ExecIdError),
    /// The egress proxy or a run's network could not be made or used.
    #[error(transparent)]
    Egress(Box<EgressError>),
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Error {
        match error {
            BackendError::Run(run) => run.into(),
            BackendError::Swarm(swarm) => swarm.into(),
            BackendError::Delivery(delivery) => delivery.into(),
            BackendError::Egress(egress) => egress.into(),
        }
    }
}

/// Stage errors are boxed inside [`Error`] so that results stay small on the hot path.
macro_rules! boxed_from {
    ($($variant:ident($stage:ty)),* $(,)?) => {
        $(impl From<$stage> for Error {
            fn from(error: $stage) -> Error {
                Error::$variant(Box::new(error))
            }
        })*
    };
}

boxed_from!(
    Settings(SettingsError),
    Plan(PlanError),
    Prepare(PrepareError),
    Env(EnvError),
    Image(ImageError),
    Run(RunError),
    Swarm(SwarmError),
    Copy(CopyError),
    Delivery(DeliveryError),
    BaseImage(BaseImageError),
    Egress(EgressError),
);

/// Who has to act to fix an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The pack, the parameters or the command line are wrong (exit code 2).
    Input,
    /// packbox, its images or the engine could not do the work (exit code 125).
    Engine,
    /// The work was cancelled (Ctrl-C, SIGTERM; exit code 130).
    Cancelled,
    /// The action is of a kind packbox does not run: an Attune workflow (exit code 3).
    Unsupported,
}

impl Error {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Prepare(prepare) => match prepare.as_ref() {
                PrepareError::NoMatchingVersion { .. } => Fault::Input,
                PrepareError::Env(
                    EnvError::CaBundle { .. }
                    | EnvError::PackSources { .. }
                    | EnvError::Proxy { .. },
                ) => Fault::Input,
                PrepareError::Cancelled
                | PrepareError::Env(EnvError::Cancelled { .. })
                | PrepareError::Image(ImageError::Cancelled { .. }) => Fault::Cancelled,
                _ => Fault::Engine,
            },
            Error::Env(env) => match env.as_ref() {
                EnvError::CaBundle { .. }
                | EnvError::PackSources { .. }
                | EnvError::Proxy { .. } => Fault::Input,
                EnvError::Cancelled { .. } => Fault::Cancelled,
                _ => Fault::Engine,
            },
            Error::Image(image) if matches!(image.as_ref(), ImageError::Cancelled { .. }) => {
                Fault::Cancelled
            }
            Error::Run(run) if matches!(run.as_ref(), RunError::Cancelled) => Fault::Cancelled,
            // Like an OCI runtime the engine lacks: input only the engine could judge.
            Error::Run(run) if matches!(run.as_ref(), RunError::SandboxNotApplied { .. }) => {
                Fault::Input
            }
            Error::Run(_) => Fault::Engine,
            Error::Swarm(swarm) if swarm.is_cancelled() => Fault::Cancelled,
            Error::Swarm(swarm) if swarm.is_input() => Fault::Input,
            Error::Swarm(_) => Fault::Engine,
            // The user's own --engine value is input; DOCKER_HOST, contexts and their TLS files
            // are the engine's set-up.
            Error::Settings(settings) if settings.is_engine_setup() => Fault::Engine,
            Error::Delivery(delivery)
                if matches!(delivery.as_ref(), DeliveryError::Cancelled { .. }) =>
            {
                Fault::Cancelled
            }
            Error::Copy(copy) if matches!(copy.as_ref(), CopyError::Cancelled) => Fault::Cancelled,
            Error::BaseImage(base) if base.is_input() => Fault::Input,
            Error::Delivery(delivery)
                if matches!(
                    delivery.as_ref(),
                    DeliveryError::Read { .. }
                        | DeliveryError::TooLarge { .. }
                        | DeliveryError::Changed { .. }
                ) =>
            {
                Fault::Input
            }
            // A key store that cannot be read is the operator's, not the request's.
            Error::Plan(plan) if matches!(plan.as_ref(), PlanError::Keys(keys) if !keys.is_input()) => {
                Fault::Engine
            }
            Error::Gvisor(gvisor) if gvisor.is_input() => Fault::Input,
            Error::Gvisor(_) => Fault::Engine,
            Error::Plan(plan) if matches!(plan.as_ref(), PlanError::Workflow { .. }) => {
                Fault::Unsupported
            }
            // The built-in catalog is checked by the tests; a catalog that fails is the
            // operator's `--catalog` file, as wrong as a wrong flag.
            Error::Settings(_)
            | Error::Catalog(_)
            | Error::Plan(_)
            | Error::RuntimeFilter(_)
            | Error::OciRuntimeMissing { .. }
            | Error::TooManyCpus { .. } => Fault::Input,
            Error::Egress(_)
            | Error::Engine(_)
            | Error::Image(_)
            | Error::Copy(_)
            | Error::Delivery(_)
            | Error::BaseImage(_)
            | Error::ExecId(_) => Fault::Engine,
        }
    }

    /// A line that tells the user what to do next, when there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        let image = match self {
            Error::Image(image) => Some(image.as_ref()),
            Error::Prepare(prepare) => match prepare.as_ref() {
                PrepareError::Image(image) => Some(image),
                _ => None,
            },
            _ => None,
        };
        if let Some(ImageError::Engine(EngineError::Build { .. })) = image {
            return Some(
                "runtime images build on packbox/base:<suite>; scripts/build-images makes those first",
            );
        }
        match self {
            Error::Engine(EngineError::Unreachable { problem, .. }) => Some(problem.hint()),
            Error::Settings(settings) if settings.endpoint_hint().is_some() => {
                settings.endpoint_hint()
            }
            Error::Swarm(swarm) if matches!(swarm.as_ref(), SwarmError::NotAManager { .. }) => {
                Some(
                    "run `docker swarm init` on that engine, point --engine at a manager, or use --backend docker",
                )
            }
            Error::OciRuntimeMissing { wanted, .. } if wanted == "runsc" => Some(
                "scripts/ensure-docker --with-gvisor installs gVisor and registers it as runsc",
            ),
            Error::Gvisor(gvisor) if !gvisor.is_input() => Some(
                "scripts/ensure-docker --with-gvisor registers runsc with --network=none --oci-seccomp",
            ),
            Error::Settings(settings)
                if matches!(settings.as_ref(), SettingsError::Weaker { .. }) =>
            {
                Some("packbox's defaults are the sandbox; weaken it only for actions you trust")
            }
            Error::Egress(egress) => egress.hint(),
            Error::Env(env) => env.hint(),
            Error::Prepare(prepare) => match prepare.as_ref() {
                PrepareError::Env(env) => env.hint(),
                _ => None,
            },
            _ => None,
        }
    }
}
