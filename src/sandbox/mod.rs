//! The sandbox an action runs in: packbox's locked-down policy and how it becomes a container
//! spec or a Swarm service spec. Kept apart from the container lifecycle (which runs whatever spec it is given) so that
//! what an action is allowed is decided, and reported, in one place.

pub mod gvisor;
pub mod isolation;
pub mod policy;
pub mod seccomp;
pub mod service;

pub use policy::{PackFolder, PackSource, SandboxPolicy, Workload};
pub use seccomp::SeccompProfile;
