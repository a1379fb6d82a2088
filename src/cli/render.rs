//! Rendering shared by the subcommands: errors with their causes and hints, exit codes.

use std::process::ExitCode;

use packbox::{Error, Fault};

use super::{EXIT_CANCELLED, EXIT_ENGINE, EXIT_INPUT};

/// The exit code for a library error.
pub fn exit_code(error: &Error) -> ExitCode {
    match error.fault() {
        Fault::Input => ExitCode::from(EXIT_INPUT),
        Fault::Cancelled => ExitCode::from(EXIT_CANCELLED),
        _ => ExitCode::from(EXIT_ENGINE),
    }
}

/// Prints an error (and its hint) to stderr; with `json`, also an error object on stdout.
pub fn report(error: &Error, json: bool) -> ExitCode {
    let text = packbox::error_chain(error);
    eprintln!("error: {text}");
    if let Some(hint) = error.hint() {
        eprintln!("hint: {hint}");
    }
    if json {
        let object = serde_json::json!({"status": "error", "error": text});
        println!("{object}");
    }
    exit_code(error)
}

/// Replaces control characters (but newlines and tabs) so container output cannot drive the
/// terminal.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}
