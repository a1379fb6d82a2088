//! The life of a workload, whatever it runs: the run backends (a container on the engine, a
//! one-shot Swarm service) behind one trait; for containers create, attach, start, feed stdin,
//! capture bounded output, timeout and cancellation (SIGTERM, grace, SIGKILL), removal on every
//! path; the warm pool of pre-started containers; and the sweep of what packbox processes that
//! are gone left behind.
//!
//! Depends on the engine seam only: what the container runs and what its output means are the
//! business of the stages above.

pub mod backend;
pub mod capture;
pub mod local;
pub mod owner;
pub mod pool;
pub mod run;
pub mod swarm;

pub use backend::{Job, RunBackend};
pub use run::{ContainerExit, Ending, RunError, RunIo, RunLimits};
