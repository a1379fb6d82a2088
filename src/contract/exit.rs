//! How a workload ended, as plain data: why it stopped, its exit code, whether the kernel killed
//! it for memory, and the kept head of each stream. The lifecycle produces it (a container's or a
//! service's end); the contract turns it into an outcome. Defined here, with the contract, so the
//! dependency runs one way: the lifecycle knows what to report, not what it means.

/// What a container's artifacts folder held, and the rules for its names and bounds: part of
/// how a workload ended, so the lifecycle reaches them here.
pub use super::artifacts::{Artifact, ArtifactLimits, Artifacts, checked_name};

/// Why a container stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The process exited by itself.
    Exited,
    /// The timeout expired and packbox stopped it.
    TimedOut,
    /// packbox was asked to stop (Ctrl-C, SIGTERM) and stopped it.
    Cancelled,
    /// Someone else removed the container while the action ran (another packbox's sweep of
    /// leftovers, or `docker rm`): the exit code is the kill's, not the action's.
    Removed,
}

/// How a container ended, with its captured streams.
#[derive(Debug)]
pub struct ContainerExit {
    /// Why it stopped.
    pub ending: Ending,
    /// Its exit code; `None` when the engine reported none after it was killed.
    pub exit_code: Option<i64>,
    /// The kernel killed it for passing its memory limit.
    pub oom_killed: bool,
    /// What it wrote on stdout, up to the limit.
    pub stdout: Captured,
    /// What it wrote on stderr, up to the limit.
    pub stderr: Captured,
    /// The files it left in its artifacts folder, kept and refused.
    pub artifacts: Artifacts,
}

/// A finished capture: the kept text (lossy UTF-8) and whether it was cut. The truncation
/// marker is not part of the text: it is added once secrets are scrubbed, so that a secret cut
/// at the limit can be dropped first (see [`truncation_marker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The stream's name (`stdout`, `stderr`).
    pub stream: &'static str,
    /// The kept head of the stream, lossy UTF-8, without the truncation marker.
    pub text: String,
    /// The stream was longer than the limit and was cut.
    pub truncated: bool,
}

/// What follows the kept head of a stream that was cut.
pub fn truncation_marker(stream: &str) -> String {
    format!("\n\n[OUTPUT TRUNCATED: {stream} exceeded size limit]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truncation_marker_is_the_contracts_text() {
        assert_eq!(
            truncation_marker("stderr"),
            "\n\n[OUTPUT TRUNCATED: stderr exceeded size limit]\n"
        );
    }
}
