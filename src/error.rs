//! packbox's error type: every stage's typed error, and which side is at fault (the input, or
//! packbox and the engine), which decides the exit code.

use crate::catalog::{CatalogError, NoMatchingVersion};
use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::envimage::EnvError;
use crate::image_copy::CopyError;
use crate::pack::PackError;
use crate::pack::params::ParamError;
use crate::pack_volume::DeliveryError;
use crate::probe::UnknownRuntimeFilter;
use crate::runtime_image::ImageError;
use crate::sandbox::RunError;
use crate::secrets::SecretError;

/// Any error packbox's library can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    RuntimeFilter(#[from] UnknownRuntimeFilter),
    /// The action names a runner type no runtime of the catalog has.
    #[error("action {action}: runner_type `{runner_type}` is not a known runtime (known: {known})")]
    UnknownRuntime {
        action: String,
        runner_type: String,
        known: String,
    },
    /// No available version of the action's runtime satisfies its `runtime_version`.
    #[error("action {action}: {source}")]
    NoMatchingVersion {
        action: String,
        #[source]
        source: NoMatchingVersion,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operator asked for an OCI runtime the engine does not have.
    #[error("OCI runtime `{wanted}` is not available on this engine (available: {available})")]
    OciRuntimeMissing { wanted: String, available: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An environment image could not be made.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// No verified version of the runtime can run the action.
    #[error("action {action}: no verified {runtime} version is available ({reasons})")]
    NoAvailableVersion {
        action: String,
        runtime: String,
        reasons: String,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    /// Images could not be copied to another engine (boxed: large and rare).
    #[error(transparent)]
    Copy(Box<CopyError>),
    /// The pack could not be delivered to the engine by volume (boxed: large and rare).
    #[error(transparent)]
    Delivery(Box<DeliveryError>),
}

impl From<CopyError> for Error {
    fn from(error: CopyError) -> Self {
        Error::Copy(Box::new(error))
    }
}

impl From<DeliveryError> for Error {
    fn from(error: DeliveryError) -> Self {
        Error::Delivery(Box::new(error))
    }
}

/// Who has to act to fix an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The pack, the parameters or the command line are wrong (exit code 2).
    Input,
    /// packbox, its images or the engine could not do the work (exit code 125).
    Engine,
}

impl Error {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Pack(_)
            | Error::Param(_)
            | Error::RuntimeFilter(_)
            | Error::Secret(_)
            | Error::Config(_)
            | Error::OciRuntimeMissing { .. }
            | Error::UnknownRuntime { .. }
            | Error::NoMatchingVersion { .. } => Fault::Input,
            Error::Env(EnvError::CaBundle { .. }) => Fault::Input,
            Error::Delivery(e)
                if matches!(
                    **e,
                    DeliveryError::Read { .. } | DeliveryError::TooLarge { .. }
                ) =>
            {
                Fault::Input
            }
            // The user's own --engine value is input; the environment's settings are set-up.
            Error::Engine(EngineError::Endpoint(e)) if e.is_engine_setting() => Fault::Input,
            Error::Catalog(_)
            | Error::Engine(_)
            | Error::Image(_)
            | Error::Env(_)
            | Error::NoAvailableVersion { .. }
            | Error::Run(_)
            | Error::Copy(_)
            | Error::Delivery(_) => Fault::Engine,
        }
    }

    /// A line that tells the user what to do next, when there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Engine(EngineError::Unreachable { problem, .. }) => Some(problem.hint()),
            Error::Engine(EngineError::Endpoint(e)) => e.hint(),
            Error::Image(ImageError::Engine(EngineError::Build { .. })) => Some(
                "runtime images build on packbox/base:<suite>; scripts/build-images makes those first",
            ),
            _ => None,
        }
    }
}

/// An error and its causes on one line (`a: b: c`), skipping causes the message already quotes.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
