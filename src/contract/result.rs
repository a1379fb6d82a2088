//! From a finished container to an outcome: the status, the error text and the parsed result.

use std::time::Duration;

use serde_json::Value;

use super::outcome::{Outcome, Status};
use super::secrets::{self, Redactor};
use crate::lifecycle::{ContainerExit, Ending};
use crate::pack::OutputFormat;
use crate::sandbox::SandboxPolicy;

/// What the contract needs to know about a run to turn its container's end into an outcome.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeTerms<'a> {
    pub action_ref: &'a str,
    pub runtime: &'a str,
    pub output_format: OutputFormat,
    /// The action's output schema, whose `secret: true` fields are redacted.
    pub output_schema: Option<&'a Value>,
    pub redactor: &'a Redactor,
    pub timeout: Duration,
    pub policy: &'a SandboxPolicy,
}

/// What the executor knows about a run besides its container's end.
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub exec_id: String,
    pub duration_ms: u64,
    /// The detected runtime version the image holds.
    pub runtime_version: String,
    pub image: String,
}

/// The outcome of a finished container: status and error text as the contract says, the result
/// parsed on exit 0 only, and every secret of the run scrubbed out.
pub fn outcome(terms: OutcomeTerms<'_>, exit: ContainerExit, facts: RunFacts) -> Outcome {
    let (status, error) = match exit.ending {
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
        Ending::Exited => {
            let code = exit.exit_code.unwrap_or(-1);
            let status = status_of(code, exit.oom_killed);
            let error = match status {
                Status::Succeeded => None,
                Status::Oom => Some(format!(
                    "Action was killed for exceeding its memory limit ({} bytes)",
                    terms.policy.memory_bytes
                )),
                _ => Some(failure_message(&exit.stderr.text, code)),
            };
            (status, error)
        }
    };
    let mut parsed = (status == Status::Succeeded)
        .then(|| parse_result(&exit.stdout.text, terms.output_format))
        .flatten();
    let secret_outputs = match &mut parsed {
        Some(result) => secrets::redact_secret_fields(result, terms.output_schema),
        None => Vec::new(),
    };
    let redactor = &terms.redactor.extended(secret_outputs.iter());
    Outcome {
        exec_id: facts.exec_id,
        action: terms.action_ref.to_string(),
        status,
        exit_code: exit.exit_code,
        result: parsed.map(|r| redactor.value(r)),
        stdout: redactor.text(exit.stdout.text),
        stderr: redactor.text(exit.stderr.text),
        stdout_truncated: exit.stdout.truncated,
        stderr_truncated: exit.stderr.truncated,
        error: error.map(|e| redactor.text(e)),
        duration_ms: facts.duration_ms,
        runtime: terms.runtime.to_string(),
        runtime_version: facts.runtime_version,
        image: facts.image,
        sandbox: terms.policy.clone(),
    }
}

/// Parses stdout by the action's output format. A parse failure gives `None`: it is not a failure
/// of the action.
pub fn parse_result(stdout: &str, format: OutputFormat) -> Option<Value> {
    match format {
        OutputFormat::Text => None,
        OutputFormat::Json => serde_json::from_str(stdout.trim()).ok().or_else(|| {
            let last = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
            serde_json::from_str(last.trim()).ok()
        }),
        OutputFormat::Yaml => serde_yaml::from_str::<Value>(stdout)
            .ok()
            .filter(|v| !v.is_null()),
        OutputFormat::Jsonl => Some(Value::Array(
            stdout
                .lines()
                .filter_map(|l| serde_json::from_str(l.trim()).ok())
                .collect(),
        )),
    }
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
    use serde_json::json;

    #[test]
    fn json_takes_the_whole_stdout_else_its_last_line() {
        assert_eq!(
            parse_result("{\"a\":\n 1}\n", OutputFormat::Json),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            parse_result("starting\n{\"a\": 2}\n\n", OutputFormat::Json),
            Some(json!({"a": 2}))
        );
        assert_eq!(parse_result("not json", OutputFormat::Json), None);
    }

    #[test]
    fn jsonl_skips_lines_that_are_not_json() {
        assert_eq!(
            parse_result("{\"a\":1}\nnoise\n[2]\n", OutputFormat::Jsonl),
            Some(json!([{"a": 1}, [2]]))
        );
    }

    #[test]
    fn yaml_and_text() {
        assert_eq!(
            parse_result("a: 1\n", OutputFormat::Yaml),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_result("a: 1\n", OutputFormat::Text), None);
    }

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
