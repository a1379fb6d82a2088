//! From a finished container to an outcome: the status, the error text and the parsed result.

use std::time::Duration;

use serde_json::Value;

use super::exit::{Captured, ContainerExit, Ending, truncation_marker};
use super::outcome::{Outcome, Status};
use super::parse::{self, Parsed};
use super::secrets::{self, Redactor};
use crate::pack::OutputFormat;
use crate::sandbox::SandboxPolicy;

/// What the contract needs to know about a run to turn its container's end into an outcome.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeTerms<'a> {
    /// The action's reference, `pack.action`, for the outcome.
    pub action_ref: &'a str,
    /// The pack's `version`, for the outcome.
    pub pack_version: &'a str,
    /// The pack tree's SHA-256, for the outcome.
    pub pack_digest: &'a str,
    /// The catalog's name for the runtime, for the outcome.
    pub runtime: &'a str,
    /// How to parse stdout into the result.
    pub output_format: OutputFormat,
    /// The action is native (executed directly): its `text` stdout becomes the result when it
    /// is JSON, as Attune's native runtime does.
    pub native: bool,
    /// What was accepted but deserves a word (undeclared parameters), for the outcome.
    pub warnings: &'a [String],
    /// The action's output schema, whose `secret: true` fields are redacted.
    pub output_schema: Option<&'a Value>,
    /// The run's secrets, scrubbed from stdout, stderr and the result.
    pub redactor: &'a Redactor,
    /// The action's time limit, named in a timeout's error.
    pub timeout: Duration,
    /// The sandbox that was applied: an OOM kill's error names its memory limit, and the outcome
    /// reports it.
    pub policy: &'a SandboxPolicy,
}

/// What the executor knows about a run besides its container's end.
#[derive(Clone, Debug)]
pub struct RunFacts {
    /// The run's Attune execution id (`ATTUNE_EXEC_ID`).
    pub attune_exec_id: u64,
    /// The run's id, as its container's `packbox.exec_id` label has it.
    pub exec_id: String,
    /// Wall time of the whole run, preparation included.
    pub duration_ms: u64,
    /// Time spent making the image ready (probes, builds) before the container.
    pub prepare_ms: u64,
    /// The detected runtime version the image holds.
    pub runtime_version: String,
    /// The image the action ran in.
    pub image: String,
}

/// The outcome of a finished container: status and error text as the contract says, the result
/// parsed on exit 0 only (in bounded memory), and every secret of the run scrubbed out.
pub fn outcome(terms: OutcomeTerms<'_>, exit: ContainerExit, facts: RunFacts) -> Outcome {
    let code = exit.exit_code.unwrap_or(-1);
    // The error of every ending but a failed exit; that one comes from stderr, once scrubbed.
    let (status, ending_error) = match exit.ending {
        Ending::TimedOut => (
            Status::Timeout,
            Some(format!(
                "Execution timed out after {} seconds",
                terms.timeout.as_secs()
            )),
        ),
        Ending::Cancelled => (
            Status::Cancelled,
            Some("Execution was cancelled".to_string()),
        ),
        Ending::Removed => (
            Status::Error,
            Some(format!(
                "the action's container {} was removed while the action ran, by someone else (another packbox's sweep of leftovers, or `docker rm`); its exit code is the kill's",
                facts.exec_id
            )),
        ),
        Ending::Exited => {
            let status = status_of(code, exit.oom_killed);
            let error = (status == Status::Oom).then(|| {
                format!(
                    "Action was killed for exceeding its memory limit ({} bytes)",
                    terms.policy.memory_bytes
                )
            });
            (status, error)
        }
    };
    let parsed = match status {
        Status::Succeeded if terms.native && terms.output_format == OutputFormat::Text => {
            parse::parse_if_json(&exit.stdout.text)
        }
        Status::Succeeded => parse::parse(&exit.stdout.text, terms.output_format),
        _ => Parsed::default(),
    };
    let mut result = parsed.value;
    let secret_outputs = match &mut result {
        Some(result) => secrets::redact_secret_fields(result, terms.output_schema),
        None => Vec::new(),
    };
    let Ok(redactor) = terms.redactor.extended(secret_outputs.iter()) else {
        // Unreachable within the caps on secrets; if it were not, nothing printed is shown.
        return Outcome {
            stdout: secrets::REDACTED.to_string(),
            stderr: secrets::REDACTED.to_string(),
            error: Some("the output was withheld: its secrets could not be scrubbed".into()),
            ..outcome_of(&terms, &exit, status, facts)
        };
    };
    let base = outcome_of(&terms, &exit, status, facts);
    let stdout = scrubbed(exit.stdout, &redactor);
    let stderr = scrubbed(exit.stderr, &redactor);
    let error = match ending_error {
        Some(error) => Some(redactor.text(error)),
        None if status == Status::Succeeded => None,
        None => Some(failure_message(&stderr, code)),
    };
    if let Some(result) = &mut result {
        redactor.value(result);
    }
    Outcome {
        result,
        result_truncated: parsed.truncated,
        result_error: parsed.error.map(|e| redactor.text(e)),
        error,
        stdout: with_marker(stdout, "stdout", base.stdout_truncated),
        stderr: with_marker(stderr, "stderr", base.stderr_truncated),
        ..base
    }
}

/// The parts of an outcome that hold nothing the action printed.
fn outcome_of(
    terms: &OutcomeTerms<'_>,
    exit: &ContainerExit,
    status: Status,
    facts: RunFacts,
) -> Outcome {
    Outcome {
        exec_id: facts.exec_id,
        attune_exec_id: facts.attune_exec_id,
        action: terms.action_ref.to_string(),
        status,
        exit_code: exit.exit_code,
        result: None,
        result_truncated: false,
        result_error: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: exit.stdout.truncated,
        stderr_truncated: exit.stderr.truncated,
        error: None,
        duration_ms: facts.duration_ms,
        prepare_ms: facts.prepare_ms,
        pack_version: terms.pack_version.to_string(),
        pack_digest: terms.pack_digest.to_string(),
        runtime: terms.runtime.to_string(),
        runtime_version: facts.runtime_version,
        image: facts.image,
        sandbox: terms.policy.clone(),
        warnings: terms.warnings.to_vec(),
        egress: None,
        artifacts: exit.artifacts.files.clone(),
        artifacts_refused: exit.artifacts.refused.clone(),
        artifacts_dir: None,
    }
}

/// A stream's text with secrets scrubbed. Where the stream was cut, a secret cut in half is
/// dropped first: its first half would otherwise stay.
fn scrubbed(captured: Captured, redactor: &Redactor) -> String {
    let Captured {
        mut text,
        truncated,
        ..
    } = captured;
    if truncated {
        let mut keep = text.len() - redactor.partial_secret_len(text.as_bytes());
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
        text.truncate(keep);
    }
    redactor.text(text)
}

fn with_marker(mut text: String, stream: &str, truncated: bool) -> String {
    if truncated {
        text.push_str(&truncation_marker(stream));
    }
    text
}

/// The error text of a failed action: stderr when it is at most 5 lines, else its last line,
/// else "Command exited with code N".
pub fn failure_message(stderr: &str, exit_code: i64) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => format!("Command exited with code {exit_code}"),
        1..=5 => stderr.trim().to_string(),
        _ => lines[lines.len() - 1].trim().to_string(),
    }
}

/// The status of a container that ran to its end.
pub fn status_of(exit_code: i64, oom_killed: bool) -> Status {
    if oom_killed {
        Status::Oom
    } else if exit_code == 0 {
        Status::Succeeded
    } else {
        Status::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_rules() {
        assert_eq!(failure_message("", 3), "Command exited with code 3");
        assert_eq!(failure_message("boom\n", 1), "boom");
        assert_eq!(failure_message("1\n2\n3\n4\n5\n6\nlast\n", 1), "last");
    }

    #[test]
    fn oom_wins_over_exit_code() {
        assert_eq!(status_of(137, true), Status::Oom);
        assert_eq!(status_of(0, false), Status::Succeeded);
        assert_eq!(status_of(2, false), Status::Failed);
    }
}
