//! packbox runs automation actions (Attune packs) in sandboxed, throw-away Docker containers.
//!
//! The library is the product; the `packbox` binary is a thin layer over it. A run goes through
//! one stage per module: [`pack`] loads and checks the pack, [`catalog`] names the runtime,
//! [`version`] chooses its version, [`runtime_image`] makes sure its image exists, [`sandbox`]
//! runs the container, and [`engine`] is the only module that talks to Docker.

pub mod catalog;
pub mod config;
pub mod doctor;
pub mod endpoint;
pub mod engine;
pub mod envimage;
pub mod error;
pub mod executor;
pub mod image_copy;
pub mod input;
pub mod outcome;
pub mod pack;
pub mod pack_volume;
pub mod plan;
pub mod prepare;
pub mod probe;
pub mod runtime_image;
pub mod sandbox;
pub mod secrets;
pub mod state;
pub mod version;

pub use catalog::Catalog;
pub use engine::Engine;
pub use error::{Error, Fault};
pub use executor::Executor;
pub use outcome::{Outcome, Status};
pub use plan::{RunPlan, RunRequest, plan};
pub use sandbox::SandboxPolicy;
