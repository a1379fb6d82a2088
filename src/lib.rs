#![warn(missing_docs)]
//! packbox runs automation actions (Attune packs) in sandboxed, throw-away Docker containers.
//!
//! The library is the product; the `packbox` binary is a thin layer over it. An embedding
//! program resolves [`Settings`] once, plans a run with [`plan()`] (no engine needed: everything
//! wrong with the input is said here), and hands the [`RunPlan`] to an [`Executor`], which
//! prepares the image, runs the action in a fresh container (or, with the swarm backend, a
//! one-shot Swarm service) and returns its [`Outcome`].
//!
//! Inside, one module per stage, depending in one direction only, from the executor down to the
//! engine seam:
//!
//! ```text
//! executor ── plan ── check ── settings
//!    │          │        │
//!    │       contract   pack ── catalog ── version
//!    │          │
//! prepare ── probe ── runtime_image ── envimage
//!    │
//! backend (RunBackend: docker | swarm) ── pack_image ── sandbox
//!    │
//! lifecycle (a container's life, a service's life)
//!    │
//! engine (the seam: ContainerEngine + SwarmEngine; DockerEngine; a recording fake in tests)
//! ```

mod backend;
mod base_image;
mod catalog;
mod check;
mod contract;
mod doctor;
mod egress;
mod endpoint;
mod engine;
mod envimage;
mod error;
mod error_text;
mod executor;
mod explain;
mod image_copy;
pub mod input;
mod lifecycle;
mod pack;
mod pack_image;
mod pack_tree;
mod pack_volume;
mod packtest;
mod plan;
mod prepare;
mod probe;
mod runtime_image;
mod sandbox;
mod settings;
mod state;
mod version;

pub use base_image::{BaseImage, BaseImageError};
pub use catalog::{Catalog, CatalogError, NoMatchingVersion};
pub use check::{CheckedAction, CheckedPack, check_packs};
pub use contract::scrub::StreamScrubber;
pub use contract::secrets::SecretError;
pub use contract::{Outcome, Status};
pub use doctor::{Check, CheckStatus, Report as DoctorReport, diagnose};
/// The egress proxy's entry point: the `packbox-egress-proxy` binary, which packbox runs in a
/// locked-down container of its own to enforce network grants (not for use elsewhere).
pub use egress::proxy::main as egress_proxy_main;
pub use egress::{
    EgressError,
    audit::{Audit as EgressAudit, EgressReport},
    config::{EgressLayer, EgressSettings},
    destination::{Destination, DestinationError, HostPattern},
    policy::{Granted, NetworkRule, PolicyError as NetworkPolicyError, RunGrant},
    protocol::{Connection as EgressConnection, ConnectionKind},
};
pub use endpoint::{Endpoint, EndpointError, Origin as EndpointOrigin, TlsFiles, Transport};
pub use engine::ConnectProblem;
pub use engine::{EngineError, StreamKind};
pub use envimage::EnvError;
pub use envimage::inventory::{EnvInfo, PruneReport};
pub use error::{Error, Fault};
pub use error_text::chain as error_chain;
pub use executor::{
    BuildEvent, EnvReport, EnvStatus, Executor, GcReport, ImageEvent, PrepareEvent, RunEvent,
    WarmKind,
};
pub use explain::{CandidateReport, EnvironmentReport, Explanation, Lock};
pub use image_copy::{CopyError, CopyEvent, CopyResult, ImageCopy};
pub use lifecycle::RunError;
pub use lifecycle::owner::Swept;
pub use pack::params::{ParamError, ParamIssue};
pub use pack::testing::TestKind;
pub use pack::{PackError, ParameterSpec, Problem};
pub use pack_volume::{Collected as PackVolumesCollected, DeliveryError};
pub use packtest::{RunnerReport, TestEvent, TestPlan, TestReport, TestStatus, plan_tests};
pub use plan::{PlanError, RunPlan, RunRequest, plan};
pub use prepare::PrepareError;
pub use probe::{UnknownRuntimeFilter, VersionStatus};
pub use runtime_image::{ImageError, ImageState};
pub use sandbox::SandboxPolicy;
pub use settings::{
    Age, Backend, BuildLayer, ClientLayer, ClientSettings, Environment, HiddenText, Keep,
    KeepLayer, PackDelivery, Retention, RetentionLayer, RunLayer, SandboxLayer, ServeLayer,
    ServeSettings, Settings, SettingsError, SettingsLayer, ShownSetting, Size, Source, WarmLayer,
    WarmSettings, parse_size,
};
