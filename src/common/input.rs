//! Reading files and documents packbox does not trust (packs, parameter, secret, config and
//! catalog files, an action's YAML output): files read with a size cap that holds for devices and
//! FIFOs too, and YAML checked for nesting depth and size before a parser builds it.
//!
//! Separate because every file packbox reads (pack and action YAML, parameters, secrets, settings)
//! needs the same two defences, and one place keeps them the same. The YAML check walks the
//! events of libyaml, the very parser serde_yaml uses: the check and the parse cannot disagree
//! about what is nested, and a parser differential cannot smuggle depth past it. libyaml's
//! scanner spends time proportional to the flow depth on every token, so 200k nested `[` took
//! half a minute; stopping at the limit keeps that to milliseconds.

use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How deep YAML and JSON documents may nest (mappings and lists): far more than any pack,
/// parameter file or result needs, and small enough that no parser slows down.
pub const MAX_DEPTH: usize = 64;

/// A file packbox would not read.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {reason}", .file.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct InputError {
    /// The file as given.
    pub file: PathBuf,
    /// The 1-based line the problem is on, when there is one.
    pub line: Option<usize>,
    /// Why it was refused.
    #[source]
    pub reason: Refusal,
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The file system refused (missing, no permission, ...).
    #[error("cannot read")]
    Io(#[source] std::io::Error),
    /// It is a folder, a FIFO, a device or a socket, which could block or never end; the text
    /// says which.
    #[error("expected a regular file, found {0}")]
    NotARegularFile(&'static str),
    /// It holds more bytes than the caller allows.
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The caller's cap in bytes.
        limit: u64,
    },
    /// Its bytes are not UTF-8.
    #[error("expected UTF-8 text")]
    NotText,
    /// Its YAML nests deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// The depth allowed.
        limit: usize,
    },
}

impl InputError {
    fn new(file: &Path, reason: Refusal) -> InputError {
        InputError {
            file: file.to_path_buf(),
            line: None,
            reason,
        }
    }
}

/// Reads a regular file of at most `limit` bytes. Anything else (a FIFO, a device, a folder,
/// a socket) is refused before it is read, so `/dev/zero` or a FIFO nobody writes cannot
/// exhaust memory or block; a file that grows while it is read is still cut at the limit.
pub fn read_bytes(file: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let refuse = |reason| InputError::new(file, reason);
    // Checked before opening: opening some devices has effects of its own.
    let meta = std::fs::metadata(file).map_err(|e| refuse(Refusal::Io(e)))?;
    check_type(meta.file_type()).map_err(refuse)?;
    // Non-blocking, so that a FIFO swapped in after the check cannot block the open; checked
    // again on what was opened.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
        .map_err(|e| refuse(Refusal::Io(e)))?;
    let meta = opened.metadata().map_err(|e| refuse(Refusal::Io(e)))?;
    check_type(meta.file_type()).map_err(refuse)?;
    if meta.len() > limit {
        return Err(refuse(Refusal::TooLarge { limit }));
    }
    read_at_most(opened, meta.len(), limit).map_err(refuse)
}

/// [`read_bytes`] for callers that deal in `std::io::Error`: a refusal is `InvalidInput` with
/// the reason as its message.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    read_bytes(path, max_bytes).map_err(|e| match e.reason {
        Refusal::Io(io) => io,
        other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
    })
}

/// Refuses YAML (or JSON) text that nests deeper than [`MAX_DEPTH`], naming the line (see
/// [`yaml_shape`]). Syntax errors pass: the parser that follows reports them.
pub fn check_yaml_depth(text: &str) -> Result<(), String> {
    match yaml_shape(text, MAX_DEPTH, usize::MAX) {
        YamlShape::TooDeep { line } => Err(format!(
            "line {line}: nested deeper than {MAX_DEPTH} levels"
        )),
        _ => Ok(()),
    }
}

/// Reads UTF-8 text from a regular file of at most `limit` bytes (see [`read_bytes`]).
pub fn read_text(file: &Path, limit: u64) -> Result<String, InputError> {
    let bytes = read_bytes(file, limit)?;
    String::from_utf8(bytes).map_err(|_| InputError::new(file, Refusal::NotText))
}

/// Reads YAML (or JSON) text from a regular file of at most `limit` bytes and checks that it
/// nests at most [`MAX_DEPTH`] levels, so that it can be handed to serde_yaml.
pub fn read_yaml(file: &Path, limit: u64) -> Result<String, InputError> {
    let text = read_text(file, limit)?;
    match yaml_shape(&text, MAX_DEPTH, usize::MAX) {
        YamlShape::TooDeep { line } => Err(InputError {
            file: file.to_path_buf(),
            line: Some(line),
            reason: Refusal::TooDeep { limit: MAX_DEPTH },
        }),
        YamlShape::Fits { .. } | YamlShape::TooManyNodes | YamlShape::Malformed => Ok(text),
    }
}

fn check_type(file_type: FileType) -> Result<(), Refusal> {
    let found = if file_type.is_file() {
        return Ok(());
    } else if file_type.is_dir() {
        "a folder"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "something else"
    };
    Err(Refusal::NotARegularFile(found))
}

fn read_at_most(file: File, expected: u64, limit: u64) -> Result<Vec<u8>, Refusal> {
    // `expected` is at most `limit`: the reservation is bounded too.
    let mut bytes = Vec::with_capacity(expected as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Refusal::Io)?;
    if bytes.len() as u64 > limit {
        return Err(Refusal::TooLarge { limit });
    }
    Ok(bytes)
}

/// What a walk over a YAML text's structure found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlShape {
    /// It nests at most the limit and has at most the allowed number of nodes.
    Fits {
        /// How many nodes it holds.
        nodes: usize,
    },
    /// A mapping or list opens deeper than the limit on this 1-based line.
    TooDeep {
        /// Where the limit was passed.
        line: usize,
    },
    /// It holds more nodes than allowed.
    TooManyNodes,
    /// libyaml found a syntax error before any limit was reached; serde_yaml, on the same
    /// parser, stops at the same place and says what it is.
    Malformed,
}

/// Walks the structure of a YAML text (JSON is YAML) with libyaml's event parser, stopping as
/// soon as it nests deeper than `max_depth` or holds more than `max_nodes` nodes (scalars,
/// aliases, mappings, lists). Linear in the text while under the limits.
pub fn yaml_shape(text: &str, max_depth: usize, max_nodes: usize) -> YamlShape {
    use unsafe_libyaml as unsafe_sys;
    let mut parser = Box::new(std::mem::MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit());
    let parser = parser.as_mut_ptr();
    // SAFETY: `parser` points to boxed, writable memory that does not move (libyaml keeps a
    // pointer to the parser in it); it is initialised here and deleted below on every path.
    // The input outlives the parser: both live to the end of this function. Each event is
    // deleted once, after its fields were read.
    unsafe {
        if unsafe_sys::yaml_parser_initialize(parser).fail {
            // Out of memory in libyaml's small initial buffers: serde_yaml would fail the same way.
            return YamlShape::Malformed;
        }
        unsafe_sys::yaml_parser_set_encoding(parser, unsafe_sys::YAML_UTF8_ENCODING);
        unsafe_sys::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        let mut depth = 0usize;
        let mut nodes = 0usize;
        let shape = loop {
            let mut event = std::mem::MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
            let event = event.as_mut_ptr();
            if unsafe_sys::yaml_parser_parse(parser, event).fail {
                break YamlShape::Malformed;
            }
            let kind = (*event).type_;
            let line = (*event).start_mark.line as usize + 1;
            unsafe_sys::yaml_event_delete(event);
            match kind {
                unsafe_sys::YAML_STREAM_END_EVENT => break YamlShape::Fits { nodes },
                unsafe_sys::YAML_SEQUENCE_START_EVENT | unsafe_sys::YAML_MAPPING_START_EVENT => {
                    depth += 1;
                    nodes += 1;
                    if depth > max_depth {
                        break YamlShape::TooDeep { line };
                    }
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    depth = depth.saturating_sub(1);
                }
                unsafe_sys::YAML_SCALAR_EVENT | unsafe_sys::YAML_ALIAS_EVENT => nodes += 1,
                _ => {}
            }
            if nodes > max_nodes {
                break YamlShape::TooManyNodes;
            }
        };
        unsafe_sys::yaml_parser_delete(parser);
        shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_mappings_and_lists_in_block_and_flow_style() {
        assert_eq!(yaml_shape("a: 1\n", 1, 10), YamlShape::Fits { nodes: 3 });
        assert_eq!(
            yaml_shape(&nested(64), 64, usize::MAX),
            YamlShape::Fits { nodes: 64 }
        );
        assert_eq!(
            yaml_shape(&nested(65), 64, usize::MAX),
            YamlShape::TooDeep { line: 1 }
        );
        let block = "a:\n  b:\n    - c:\n        d: [1, {e: 2}]\n";
        assert!(matches!(yaml_shape(block, 7, 100), YamlShape::Fits { .. }));
        assert_eq!(yaml_shape(block, 6, 100), YamlShape::TooDeep { line: 4 });
        assert_eq!(
            yaml_shape("x: 1\ny:\n- - - - 1\n", 3, 100),
            YamlShape::TooDeep { line: 3 }
        );
    }

    #[test]
    fn a_quote_inside_plain_text_does_not_hide_depth() {
        // A character scanner that took this `'` for a quote saw no nesting after it, while
        // libyaml (a plain scalar `x 'y`) went on into 200k levels of `[`.
        let text = format!("a: x 'y\nb: {}\n", nested(200_000));
        assert_eq!(
            check_yaml_depth(&text),
            Err("line 2: nested deeper than 64 levels".into())
        );
        let text = format!("a: \"x\\\" # y\"\nb: {}\n", nested(100));
        assert!(check_yaml_depth(&text).is_err());
    }

    #[test]
    fn the_io_flavoured_reader_says_why_it_refused() {
        let err = read_regular_file(Path::new("/dev/zero"), 1 << 20).expect_err("device");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "expected a regular file, found a character device"
        );
        let err = read_regular_file(Path::new("/nonexistent/x"), 1).expect_err("missing");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn brackets_in_text_are_not_nesting() {
        let text =
            "a: 'x [[[[[[ y'\nb: \"[[[[[[\"\nc: plain [[[[[[ text\nd: |\n  [[[[[[\n# [[[[[[\n";
        assert!(matches!(yaml_shape(text, 1, 100), YamlShape::Fits { .. }));
    }

    #[test]
    fn hostile_depth_is_refused_with_its_line() {
        let text = format!("ref: p.a\ntags: {}\n", nested(200_000));
        assert_eq!(
            yaml_shape(&text, MAX_DEPTH, usize::MAX),
            YamlShape::TooDeep { line: 2 }
        );
    }

    #[test]
    fn node_counts_are_capped_and_syntax_errors_left_to_serde_yaml() {
        assert_eq!(yaml_shape("[1, 2, 3, 4]", 64, 3), YamlShape::TooManyNodes);
        assert_eq!(yaml_shape("a: [1\n", 64, 100), YamlShape::Malformed);
        assert_eq!(yaml_shape("", 64, 100), YamlShape::Fits { nodes: 0 });
    }

    #[test]
    fn only_regular_files_are_read_and_within_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, "a: 1\n").expect("write");
        assert_eq!(read_text(&file, 5).expect("fits"), "a: 1\n");
        let err = read_text(&file, 4).expect_err("too large");
        assert_eq!(
            err.to_string(),
            format!("{}: larger than 4 bytes", file.display())
        );
        let err = read_bytes(Path::new("/dev/zero"), 1 << 20).expect_err("device");
        assert!(
            err.to_string()
                .ends_with("expected a regular file, found a character device"),
            "{err}"
        );
        let err = read_bytes(dir.path(), 1 << 20).expect_err("folder");
        assert!(err.to_string().ends_with("found a folder"), "{err}");
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let err = read_bytes(&fifo, 1 << 20).expect_err("fifo");
        assert!(err.to_string().ends_with("found a FIFO"), "{err}");
        let err = read_bytes(&dir.path().join("missing"), 1).expect_err("missing");
        assert!(matches!(err.reason, Refusal::Io(_)), "{err}");
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        assert!(matches!(
            read_text(&file, 10).expect_err("binary").reason,
            Refusal::NotText
        ));
    }

    #[test]
    fn deep_yaml_files_are_refused_naming_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("deep.yaml");
        std::fs::write(&file, format!("a: 1\nb: {}\n", nested(100))).expect("write");
        let err = read_yaml(&file, 1 << 20).expect_err("too deep");
        assert_eq!(
            err.to_string(),
            format!("{}:2: nested deeper than 64 levels", file.display())
        );
    }
}
