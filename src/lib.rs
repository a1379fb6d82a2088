#![warn(missing_docs)]
//! packbox runs automation actions (Attune packs) in sandboxed, throw-away Docker containers.
//!
//! The library is the product; the `packbox` binary is a thin layer over it. An embedding
//! program resolves [`Settings`] once, plans a run with [`plan()`] (no engine needed: everything
//! wrong with the input is said here), and hands the [`RunPlan`] to an [`Executor`], which
//! prepares the image, runs the action in a fresh container (or, with the swarm backend, a
//! one-shot Swarm service) and returns its [`Outcome`].
//!
//! Inside, one folder per part, depending in one direction only, from the executor down to the
//! engine seam (`tests/architecture.rs` holds the rules):
//!
//! ```text
//! executor ── plan ── settings
//!    │          │
//!    │       contract   pack ── catalog ── version
//!    │
//! image (runtime, base, probe, prepare, env, copy)
//!    │
//! backend (RunBackend: docker | swarm) ── pack_delivery ── sandbox
//!    │
//! lifecycle (a container's life, a service's life) ── contract::exit
//!    │
//! engine (the seam: ContainerEngine + SwarmEngine; DockerEngine; a recording fake in tests)
//!    │
//! common (untrusted input, the state folder, error text)
//! ```

mod backend;
mod catalog;
mod common;
mod contract;
mod egress;
mod engine;
mod executor;
mod image;
mod keystore;
mod lifecycle;
mod pack;
mod pack_delivery;
mod plan;
mod sandbox;
mod settings;
mod version;

pub use catalog::{Catalog, CatalogError, NoMatchingVersion};
pub use common::clock;
pub use common::error_text::chain as error_chain;
pub use common::input;
pub use contract::artifacts::{Artifact, RefusedArtifact, checked_name as checked_artifact_name};
pub use contract::scrub::StreamScrubber;
pub use contract::secrets::SecretError;
pub use contract::{Outcome, Status};
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
pub use engine::ConnectProblem;
pub use engine::endpoint::{
    Endpoint, EndpointError, Origin as EndpointOrigin, TlsFiles, Transport,
};
pub use engine::{ENGINE_CLIENT_LOG_TARGET, EngineError, StreamKind};
pub use executor::doctor::{Check, CheckStatus, Report as DoctorReport, diagnose};
pub use executor::error::{Error, Fault};
pub use executor::explain::{CandidateReport, EnvironmentReport, Explanation, Lock, NotHonoured};
pub use executor::packtest::{
    RunnerReport, TestCounts, TestEvent, TestPlan, TestReport, TestStatus, plan_tests,
};
pub use executor::{
    BuildEvent, EnvReport, EnvStatus, Executor, GcReport, ImageEvent, MIN_SUPERSEDED_AGE,
    PrepareEvent, RemovedArtifacts, RunEvent, WarmKind, artifacts_folder, collect_artifacts,
};
pub use image::base::{BaseImage, BaseImageError};
pub use image::copy::{CopyError, CopyEvent, CopyResult, ImageCopy};
pub use image::env::EnvError;
pub use image::env::inventory::{EnvInfo, PruneReport};
pub use image::prepare::PrepareError;
pub use image::probe::{UnknownRuntimeFilter, VersionStatus};
pub use image::runtime::{ImageError, ImageState};
pub use keystore::DATABASE_FILE as KEYSTORE_DATABASE;
pub use keystore::check_name as check_key_name;
pub use keystore::{
    KeyChange, KeyChangesPage, KeyEncryptionKey, KeyEntry, KeyFileError, KeyScope, KeyStore,
    KeyStoreError, KeyUse, StoredKey,
};
pub use lifecycle::RunError;
pub use lifecycle::owner::Swept;
pub use pack::params::{ParamError, ParamIssue};
pub use pack::testing::TestKind;
pub use pack::{PackError, ParameterSpec, Problem};
pub use pack_delivery::volume::{Collected as PackVolumesCollected, DeliveryError};
pub use plan::check::{CheckedAction, CheckedPack, check_packs};
pub use plan::{PlanError, RunPlan, RunRequest, plan};
pub use sandbox::SandboxPolicy;
pub use settings::{
    Age, Backend, BuildLayer, ClientLayer, ClientSettings, Environment, HeldLimits, HiddenText,
    Keep, KeepLayer, KeyInjection, KeystoreLayer, KeystoreSettings, PackDelivery, RecordBounds,
    RecordsLayer, Retention, RetentionLayer, RunLayer, SandboxLayer, ServeLayer, ServeSettings,
    Settings, SettingsError, SettingsLayer, ShownSetting, Size, Source, SwarmLayer, WarmLayer,
    WarmSettings, parse_size,
};
