//! The life of a workload, whatever it runs: a container (create, attach, start, feed stdin,
//! capture bounded output, timeout and cancellation with SIGTERM, grace, SIGKILL, removal on
//! every path) or a one-shot Swarm service (its log and task followed, stopped by scaling to
//! zero, its objects removed on every path); the warm pool of pre-started containers; and the
//! sweep of what packbox processes that are gone left behind.
//!
//! Depends on the engine seam only: what the container runs and what its output means are the
//! business of the stages above.

pub mod capture;
pub mod frames;
pub mod owner;
pub mod pool;
pub mod run;
pub mod service;

pub use run::{ContainerExit, Ending, RunError, RunIo, RunLimits};

/// Logs (at debug level) how long one phase of a run took, for the per-phase breakdown
/// (`scripts/bench speed` reads these lines): `plan`, `prepare`, `create`, `start`, `wait`
/// (for a pooled container still starting), `handoff` (stdin written), `action` (from the
/// handoff to the action's exit as reported), `exit_seen` (from that report to the engine's),
/// `result`, `removal`; `container` names the container where there is one.
pub fn phase(name: &'static str, since: std::time::Instant, container: &str) {
    tracing::debug!(
        target: "packbox::phase",
        phase = name,
        us = since.elapsed().as_micros() as u64,
        container,
        "phase"
    );
}
