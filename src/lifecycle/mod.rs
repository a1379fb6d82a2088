//! The life of a workload, whatever it runs: a container (create, attach, start, feed stdin,
//! capture bounded output, timeout and cancellation with SIGTERM, grace, SIGKILL, removal on
//! every path) or a one-shot Swarm service (its log and task followed, stopped by scaling to
//! zero, its objects removed on every path); the warm pool of pre-started containers; and the
//! sweep of what packbox processes that are gone left behind.
//!
//! Depends on the engine seam only: what the container runs and what its output means are the
//! business of the stages above.

pub mod artifacts;
pub mod capture;
pub mod frames;
pub mod owner;
pub mod pool;
pub mod run;
pub mod service;

pub use artifacts::ArtifactSink;
pub use run::{RunError, RunIo, RunLimits};
