//! Rendering shared by the subcommands: errors with their causes and hints, exit codes, and
//! text and JSON made safe for a terminal.

use std::io::Write;
use std::process::ExitCode;

use packbox::{Error, Fault};
use serde::Serialize;

use super::{EXIT_CANCELLED, EXIT_ENGINE, EXIT_INPUT, EXIT_UNSUPPORTED};

/// The exit code for a library error.
pub fn exit_code(error: &Error) -> ExitCode {
    match error.fault() {
        Fault::Input => ExitCode::from(EXIT_INPUT),
        Fault::Cancelled => ExitCode::from(EXIT_CANCELLED),
        Fault::Unsupported => ExitCode::from(EXIT_UNSUPPORTED),
        _ => ExitCode::from(EXIT_ENGINE),
    }
}

/// The `status` of an error object, as the README's exit code table documents it: `invalid`
/// (exit 2) for input, `cancelled` (exit 130), `unsupported` (exit 3: a workflow), `error`
/// (exit 125) for packbox or the engine.
pub fn error_status(error: &Error) -> &'static str {
    match error.fault() {
        Fault::Input => "invalid",
        Fault::Cancelled => "cancelled",
        Fault::Unsupported => "unsupported",
        _ => "error",
    }
}

/// Prints an error (and its hint) to stderr; with `json`, also an error object on stdout.
pub fn report(error: &Error, json: bool) -> ExitCode {
    let text = packbox::error_chain(error);
    eprintln!("error: {}", sanitize(&text));
    if let Some(hint) = error.hint() {
        eprintln!("hint: {hint}");
    }
    if json {
        let object = serde_json::json!({"status": error_status(error), "error": text});
        if let Err(e) = print_json(&object) {
            eprintln!("error: cannot write the error object: {e}");
        }
    }
    exit_code(error)
}

/// Writes one JSON document and a newline to stdout, streamed (no copy of a large outcome),
/// with characters that can drive a terminal escaped as `\uXXXX` (see [`is_unsafe_for_terminal`]).
pub fn print_json(value: &impl Serialize) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut serializer = serde_json::Serializer::with_formatter(&mut stdout, TerminalSafe);
    value
        .serialize(&mut serializer)
        .map_err(std::io::Error::from)?;
    stdout.write_all(b"\n")
}

/// Compact JSON that escapes, in strings, the characters serde_json leaves as they are but a
/// terminal acts on (8-bit C1 controls, DEL, bidirectional overrides). The JSON means the same.
struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest
            .char_indices()
            .find(|(_, c)| is_unsafe_for_terminal(*c))
        {
            writer.write_all(&rest.as_bytes()[..at])?;
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// Characters that must not reach a terminal as they are: C0 and C1 controls and DEL (escape
/// sequences, 8-bit CSI), and the bidirectional controls that make text read differently from
/// what it is (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C).
fn is_unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// Replaces control characters (but newlines and tabs) and bidirectional controls, so that
/// container output and pack text cannot drive the terminal or disguise what it shows.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if is_unsafe_for_terminal(c) && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// [`sanitize`] for a field that must stay on one line (a status line's action, status and
/// runtime, from a server that may be hostile): newlines and tabs are replaced too.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match is_unsafe_for_terminal(c) {
            true => '\u{FFFD}',
            false => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_replaces_line_breaks_too() {
        assert_eq!(
            one_line("ok\n\u{1b}[2Kx\ty"),
            "ok\u{FFFD}\u{FFFD}[2Kx\u{FFFD}y"
        );
    }

    #[test]
    fn sanitize_replaces_controls_c1_and_bidi_but_keeps_lines() {
        let text = "a\u{1b}[31mb\u{9b}31mc\u{202e}d\u{2066}e\u{7f}\tf\ng é😀";
        assert_eq!(
            sanitize(text),
            "a\u{FFFD}[31mb\u{FFFD}31mc\u{FFFD}d\u{FFFD}e\u{FFFD}\tf\ng é😀"
        );
    }

    #[test]
    fn terminal_safe_json_escapes_what_serde_json_leaves_and_means_the_same() {
        let value = serde_json::json!({"s": "x\u{9b}y\u{202e}z\u{1b}é"});
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, TerminalSafe);
        value.serialize(&mut serializer).expect("serializes");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text, r#"{"s":"x\u009by\u202ez\u001bé"}"#);
        let back: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, value);
    }
}
