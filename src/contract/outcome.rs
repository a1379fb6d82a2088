//! The outcome of one run: what the CLI prints and what an embedding program receives.

use serde::Serialize;
use serde_json::Value;

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
    pub exec_id: String,
    pub action: String,
    pub status: Status,
    pub exit_code: Option<i64>,
    /// stdout parsed by the action's output format (only on exit 0).
    pub result: Option<Value>,
    /// The parsed result was larger than packbox keeps in memory: a top-level list kept its
    /// leading items, anything else was left out.
    pub result_truncated: bool,
    /// Why stdout could not be parsed into `result` (or not all of it), when it could not.
    pub result_error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub runtime: String,
    pub runtime_version: String,
    pub image: String,
    /// The sandbox settings that were applied.
    pub sandbox: SandboxPolicy,
}
