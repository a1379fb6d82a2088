//! Phase events: how long each step of a run took, logged at debug level under this module's
//! target (`--log packbox::common::phase=debug`), for the per-phase breakdown (`scripts/bench
//! speed` reads them as JSON lines).

/// Logs (at debug level) how long one phase of a run took: `plan`, `prepare`, `create`,
/// `start`, `wait` (for a pooled container still starting), `handoff` (stdin written), `action`
/// (from the handoff to the action's exit as reported), `exit_seen` (from that report to the
/// engine's), `result`, `removal`; `container` names the container where there is one.
pub fn phase(name: &'static str, since: std::time::Instant, container: &str) {
    tracing::debug!(
        phase = name,
        us = since.elapsed().as_micros() as u64,
        container,
        "phase"
    );
}
