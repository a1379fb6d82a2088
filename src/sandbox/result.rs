//! From a finished container to an outcome: the status, the error text and the parsed result.

use serde_json::Value;

use crate::outcome::Status;
use crate::pack::OutputFormat;

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
