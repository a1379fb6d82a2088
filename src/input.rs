//! Reading files and documents packbox does not trust (packs, parameter and secret files, config
//! files): bounded reads that hold for devices and FIFOs too, and a nesting limit checked before
//! a YAML parser sees the text (its cost grows with the square of the depth).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How deep YAML and JSON documents may nest.
pub const MAX_DEPTH: usize = 64;

/// Reads a regular file of at most `max_bytes`. Anything else (a FIFO, a device, a folder) is
/// refused without blocking, and the size is checked before reading and while reading (a file
/// that grows is cut off, not followed).
pub fn read_regular_file(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    // Non-blocking open: opening a FIFO with no writer must not hang.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if metadata.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(max_bytes));
    }
    Ok(bytes)
}

fn too_large(max_bytes: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("larger than {max_bytes} bytes"),
    )
}

/// Refuses YAML (or JSON) text that nests deeper than [`MAX_DEPTH`], naming the line, without
/// parsing it. Counts flow collections (`[`, `{`) outside quotes and comments, block nesting by
/// indentation, and `- ` sequence entries; block scalars (`|`, `>`) are skipped.
pub fn check_yaml_depth(text: &str) -> Result<(), String> {
    let mut flow_depth = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    let mut block_scalar_indent: Option<usize> = None;
    let mut in_double = false;
    let mut in_single = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = line.trim();
        if let Some(scalar_indent) = block_scalar_indent {
            if content.is_empty() || indent > scalar_indent {
                continue;
            }
            block_scalar_indent = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut block_depth = 0;
        if flow_depth == 0 && !in_double && !in_single {
            while indents.last().is_some_and(|top| indent < *top) {
                indents.pop();
            }
            if indents.last().is_none_or(|top| indent > *top) {
                indents.push(indent);
            }
            // The top-level collection is the first level; deeper indentation adds levels.
            block_depth = indents.len().saturating_sub(1);
        }
        let mut chars = content.char_indices().peekable();
        let mut dashes = 0;
        let mut previous = ' ';
        while let Some((position, c)) = chars.next() {
            if in_double {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => in_double = false,
                    _ => {}
                }
            } else if in_single {
                if c == '\'' {
                    in_single = false;
                }
            } else {
                match c {
                    '"' => in_double = true,
                    '\'' if previous.is_whitespace() || "[{,:".contains(previous) => {
                        in_single = true
                    }
                    '#' if previous.is_whitespace() => break,
                    '[' | '{' => flow_depth += 1,
                    ']' | '}' => flow_depth = flow_depth.saturating_sub(1),
                    '-' if flow_depth == 0
                        && content[..position].chars().all(|p| p == '-' || p == ' ')
                        && chars.peek().is_none_or(|(_, next)| *next == ' ') =>
                    {
                        dashes += 1
                    }
                    _ => {}
                }
            }
            let depth = block_depth + dashes + flow_depth;
            if depth > MAX_DEPTH {
                return Err(format!(
                    "line {line_no}: nesting deeper than {MAX_DEPTH} levels"
                ));
            }
            previous = c;
        }
        if flow_depth == 0 && !in_double && !in_single {
            let tail = content.rsplit(' ').next().unwrap_or("");
            if tail.starts_with('|') || tail.starts_with('>') {
                block_scalar_indent = Some(indent);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn deep_flow_nesting_is_refused_fast_with_its_line() {
        let text = format!("a: 1\nb: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
        let started = Instant::now();
        let err = check_yaml_depth(&text).expect_err("too deep");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let mut text = String::new();
        for depth in 0..100 {
            text.push_str(&" ".repeat(depth * 2));
            text.push_str(&format!("k{depth}:\n"));
        }
        assert!(check_yaml_depth(&text).is_err());
        let dashes = format!("{}x\n", "- ".repeat(100));
        assert!(check_yaml_depth(&dashes).is_err());
    }

    #[test]
    fn ordinary_documents_pass() {
        let text = r#"
ref: core
description: "brackets in [quotes] and {braces} and a # hash"
note: 'it''s [fine]'
parameters:
  url: {type: string, required: true}
  headers:
    type: object
  list: [1, [2, [3]]]
script: |
  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
  - - - -
steps:
  - - a
    - b
# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
"#;
        check_yaml_depth(text).expect("ordinary YAML passes");
        let json = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check_yaml_depth(&json).expect("the limit itself passes");
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let err = read_regular_file(Path::new("/dev/zero"), 1 << 20).expect_err("device");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let err = read_regular_file(&fifo, 1 << 20).expect_err("fifo");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2048]).expect("write");
        assert!(read_regular_file(&big, 1024).is_err());
        assert_eq!(read_regular_file(&big, 4096).expect("fits").len(), 2048);
    }
}
