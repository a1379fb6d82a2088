//! Running one action in a throw-away container: the sandbox policy, the parameter document on
//! stdin, bounded output capture, timeout, result parsing and removal.

pub mod capture;
pub mod delivery;
pub mod gvisor;
pub mod owner;
pub mod policy;
pub mod pool;
pub mod result;
pub mod run;
pub mod seccomp;

pub use capture::DEFAULT_MAX_OUTPUT;
pub use policy::{SandboxPolicy, Workload};
pub use run::{ContainerExit, Ending, RunError, RunIo, RunLimits};
pub use seccomp::SeccompProfile;
