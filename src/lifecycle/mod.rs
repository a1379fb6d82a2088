//! The life of a container, whatever it runs: create, attach, start, feed stdin, capture bounded
//! output, timeout and cancellation (SIGTERM, grace, SIGKILL), removal on every path; the warm
//! pool of pre-started containers; and the sweep of containers whose owner is gone.
//!
//! Depends on the engine seam only: what the container runs and what its output means are the
//! business of the stages above.

pub mod capture;
pub mod owner;
pub mod pool;
pub mod run;

pub use run::{ContainerExit, Ending, RunError, RunIo, RunLimits, Started};
