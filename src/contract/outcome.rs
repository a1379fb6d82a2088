//! The outcome of one run: what the CLI prints and what an embedding program receives.

use serde::Serialize;
use serde_json::Value;

use super::artifacts::{Artifact, RefusedArtifact};
use crate::egress::audit::EgressReport;
use crate::sandbox::SandboxPolicy;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// The action exited 0.
    Succeeded,
    /// The action exited non-zero.
    Failed,
    /// The action ran past its timeout and was stopped.
    Timeout,
    /// The kernel's OOM killer ended the action.
    Oom,
    /// packbox was asked to stop (Ctrl-C, SIGTERM) and stopped the action.
    Cancelled,
    /// packbox or the engine could not run the action.
    Error,
}

impl Status {
    /// packbox's own exit code for a run that ended this way.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Succeeded => 0,
            Status::Failed => 1,
            Status::Timeout => 124,
            Status::Oom => 137,
            Status::Cancelled => 130,
            Status::Error => 125,
        }
    }
}

/// Everything known about one run of an action.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Outcome {
    /// This run's id, also on its container as the `packbox.exec_id` label and in its
    /// environment as `PACKBOX_EXEC_ID`.
    pub exec_id: String,
    /// Attune's execution id of the run (`ATTUNE_EXEC_ID`): a positive integer, unique within
    /// the state folder.
    pub attune_exec_id: u64,
    /// The action's reference, `pack.action`.
    pub action: String,
    /// How the run ended.
    pub status: Status,
    /// The action's exit code; `None` when the engine reported none after the action was killed.
    pub exit_code: Option<i64>,
    /// stdout parsed by the action's output format (only on exit 0).
    pub result: Option<Value>,
    /// The parsed result was larger than packbox keeps in memory: a top-level list kept its
    /// leading items, anything else was left out.
    pub result_truncated: bool,
    /// Why stdout could not be parsed into `result` (or not all of it), when it could not.
    pub result_error: Option<String>,
    /// What the action printed on stdout (its head when cut, then a marker), secrets scrubbed.
    pub stdout: String,
    /// What the action printed on stderr (its head when cut, then a marker), secrets scrubbed.
    pub stderr: String,
    /// stdout was longer than the output limit and was cut.
    pub stdout_truncated: bool,
    /// stderr was longer than the output limit and was cut.
    pub stderr_truncated: bool,
    /// Why the run did not succeed, in the contract's words (stderr, a timeout, an OOM kill);
    /// `None` on success.
    pub error: Option<String>,
    /// Wall time of the whole run, from version choice and image preparation to the end of the
    /// container.
    pub duration_ms: u64,
    /// The part of `duration_ms` spent making the image ready (probes, environment builds).
    pub prepare_ms: u64,
    /// The pack's `version`, as its pack.yaml said when the run was planned.
    pub pack_version: String,
    /// SHA-256 of the pack's files when the run was planned (paths, modes, contents).
    pub pack_digest: String,
    /// The catalog's name for the runtime the action ran on.
    pub runtime: String,
    /// The runtime version the image was verified to hold (`3.11.2`).
    pub runtime_version: String,
    /// The image the action ran in: its environment image, else the runtime image.
    pub image: String,
    /// The sandbox settings that were applied.
    pub sandbox: SandboxPolicy,
    /// What was accepted but deserves a word: parameters the action does not declare, which
    /// were delivered as given.
    pub warnings: Vec<String>,
    /// For a run with an egress grant: what it was granted and by whom, and every connection
    /// attempt through the proxy (host, port, allowed or refused, bytes, duration). Absent for
    /// a run without a grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressReport>,
    /// The files the action left in `ATTUNE_ARTIFACTS_DIR` that were kept: name, size, SHA-256.
    pub artifacts: Vec<Artifact>,
    /// The entries of the artifacts folder that were not kept, each with why (beyond a bound,
    /// not a regular file, a name packbox does not use). Absent when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts_refused: Vec<RefusedArtifact>,
    /// The folder on this machine that holds the kept artifacts (under the state folder);
    /// absent when none was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts_dir: Option<String>,
}
