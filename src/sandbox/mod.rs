//! The sandbox an action runs in: packbox's locked-down policy and how it becomes a container
//! spec. Kept apart from the container lifecycle (which runs whatever spec it is given) so that
//! what an action is allowed is decided, and reported, in one place.

pub mod gvisor;
pub mod isolation;
pub mod policy;
pub mod seccomp;

pub use policy::{PackSource, SandboxPolicy, Workload};
pub use seccomp::SeccompProfile;
