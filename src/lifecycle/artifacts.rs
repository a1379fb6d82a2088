//! Receiving a run's artifacts from packbox's init (see `frames.rs`): each file is checked as its
//! header arrives (its name, the count and byte bounds), written to the run's folder as its bytes
//! arrive (never held in memory whole) and hashed on the way. What breaks a bound, has a name
//! packbox will not use, or is cut short is refused, named in the report, and leaves no file.
//!
//! The init checks the bounds too, but what reaches packbox is the container's: every check is
//! made again here. The writes are small (a frame, at most 32 KiB) to a local folder, so they are
//! made in place rather than handed to a blocking thread.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::contract::exit::{Artifact, ArtifactLimits, Artifacts, checked_name};

/// Where a run keeps its artifacts, and how many.
#[derive(Clone, Debug)]
pub struct ArtifactSink {
    /// The folder the run's artifacts are written to; made with the first one kept (a run
    /// that keeps none makes nothing). Its parent must exist or be creatable.
    pub folder: PathBuf,
    /// The bounds on count and bytes.
    pub limits: ArtifactLimits,
}

/// The artifact being received.
struct Current {
    name: String,
    size: u64,
    written: u64,
    file: File,
    path: PathBuf,
    hasher: Sha256,
}

/// Gathers one run's artifacts as their frames arrive.
pub(super) struct Collector<'a> {
    sink: Option<&'a ArtifactSink>,
    report: Artifacts,
    current: Option<Current>,
    kept_bytes: u64,
}

impl<'a> Collector<'a> {
    /// A collector writing into `sink`; without one, every artifact is refused.
    pub(super) fn new(sink: Option<&'a ArtifactSink>) -> Collector<'a> {
        Collector {
            sink,
            report: Artifacts::default(),
            current: None,
            kept_bytes: 0,
        }
    }

    /// An artifact of `size` bytes named `name` begins.
    pub(super) fn header(&mut self, name: &[u8], size: u64) {
        self.abandon("cut short: its bytes ended before its size");
        let Some(sink) = self.sink else {
            self.report.refuse(name, "this run keeps no artifacts");
            return;
        };
        let text = match checked_name(name) {
            Ok(text) => text,
            Err(why) => return self.report.refuse(name, why),
        };
        let limits = sink.limits;
        if self.report.files.len() as u64 >= limits.max_files {
            let why = format!("beyond the {} files kept", limits.max_files);
            return self.report.refuse(name, why);
        }
        if size > limits.max_bytes.saturating_sub(self.kept_bytes) {
            let why = format!(
                "{size} bytes, beyond the {} bytes kept in all",
                limits.max_bytes
            );
            return self.report.refuse(name, why);
        }
        if self.report.files.iter().any(|f| f.name == text) {
            return self.report.refuse(name, "sent twice");
        }
        let path = sink.folder.join(text);
        match create(&sink.folder, &path) {
            Ok(file) => {
                self.current = Some(Current {
                    name: text.to_string(),
                    size,
                    written: 0,
                    file,
                    path,
                    hasher: Sha256::new(),
                });
                self.complete_if_whole();
            }
            Err(e) => self
                .report
                .refuse(name, format!("could not be stored: {e}")),
        }
    }

    /// Bytes of the artifact announced last (dropped when it was refused).
    pub(super) fn data(&mut self, bytes: &[u8]) {
        let Some(current) = &mut self.current else {
            return;
        };
        if bytes.len() as u64 > current.size - current.written {
            return self.abandon("longer than its announced size");
        }
        if let Err(e) = current.file.write_all(bytes) {
            return self.abandon(&format!("could not be stored: {e}"));
        }
        current.hasher.update(bytes);
        current.written += bytes.len() as u64;
        self.complete_if_whole();
    }

    /// The init refused an entry, or cut short the one it announced last.
    pub(super) fn refused(&mut self, name: &[u8], reason: &str) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.name.as_bytes() == name)
            && let Some(current) = self.current.take()
        {
            discard(current);
        }
        self.report.refuse(name, reason);
    }

    /// What was kept and refused; an artifact still incomplete is refused.
    pub(super) fn finish(mut self) -> Artifacts {
        self.abandon("cut short: the run ended before all its bytes came");
        self.report.files.sort_by(|a, b| a.name.cmp(&b.name));
        self.report
    }

    fn complete_if_whole(&mut self) {
        if self.current.as_ref().is_some_and(|c| c.written == c.size)
            && let Some(current) = self.current.take()
        {
            self.kept_bytes += current.size;
            self.report.files.push(Artifact {
                name: current.name,
                size: current.size,
                sha256: hex::encode(current.hasher.finalize()),
            });
        }
    }

    /// Drops the artifact being received, if any, with why.
    fn abandon(&mut self, why: &str) {
        if let Some(current) = self.current.take() {
            self.report.refuse(current.name.as_bytes(), why);
            discard(current);
        }
    }
}

/// Makes the run's folder (private to packbox's user) when it is not there yet, and a new file in
/// it (never an existing one, never through a symlink).
fn create(folder: &Path, path: &Path) -> std::io::Result<File> {
    if let Some(parent) = folder.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(folder) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn discard(current: Current) {
    drop(current.file);
    if let Err(e) = std::fs::remove_file(&current.path) {
        tracing::warn!(
            "removing the refused artifact {}: {e}",
            current.path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, max_files: u64, max_bytes: u64) -> ArtifactSink {
        ArtifactSink {
            folder: dir.join("artifacts/run"),
            limits: ArtifactLimits {
                max_files,
                max_bytes,
            },
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    #[test]
    fn files_are_written_hashed_and_listed_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(dir.path(), 4, 100);
        let mut collector = Collector::new(Some(&sink));
        collector.header(b"report.txt", 14);
        collector.data(b"two ");
        collector.data(b"artifacts\n");
        collector.header(b"empty", 0);
        let report = collector.finish();
        assert!(report.refused.is_empty(), "{report:?}");
        assert_eq!(
            report.files,
            [
                Artifact {
                    name: "empty".into(),
                    size: 0,
                    sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                        .into(),
                },
                Artifact {
                    name: "report.txt".into(),
                    size: 14,
                    sha256: hex::encode(Sha256::digest(b"two artifacts\n")),
                },
            ]
        );
        assert_eq!(
            std::fs::read(sink.folder.join("report.txt")).expect("stored"),
            b"two artifacts\n"
        );
    }

    #[test]
    fn beyond_the_count_or_the_bytes_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(dir.path(), 2, 10);
        let mut collector = Collector::new(Some(&sink));
        collector.header(b"a", 4);
        collector.data(b"aaaa");
        collector.header(b"big", 7);
        collector.data(b"bbbbbbb");
        collector.header(b"b", 6);
        collector.data(b"bbbbbb");
        collector.header(b"c", 0);
        let report = collector.finish();
        let kept: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(kept, ["a", "b"]);
        let refused: Vec<(&str, &str)> = report
            .refused
            .iter()
            .map(|r| (r.name.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                ("big", "7 bytes, beyond the 10 bytes kept in all"),
                ("c", "beyond the 2 files kept"),
            ]
        );
        assert_eq!(names(&sink.folder), ["a", "b"]);
    }

    #[test]
    fn hostile_names_are_refused_and_never_become_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(dir.path(), 64, 1 << 20);
        let mut collector = Collector::new(Some(&sink));
        for name in [&b"../escape"[..], b"..", b"/etc/passwd", b"a\nb", b"\xff"] {
            collector.header(name, 1);
            collector.data(b"x");
        }
        let report = collector.finish();
        assert!(report.files.is_empty(), "{report:?}");
        assert_eq!(report.refused.len(), 5, "{report:?}");
        assert_eq!(names(dir.path()), Vec::<String>::new(), "nothing made");
    }

    #[test]
    fn a_file_cut_short_or_too_long_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(dir.path(), 64, 1 << 20);
        let mut collector = Collector::new(Some(&sink));
        collector.header(b"long", 2);
        collector.data(b"xyz");
        collector.header(b"cut", 5);
        collector.data(b"ab");
        collector.refused(b"cut", "shorter than its size when read");
        collector.header(b"unfinished", 5);
        collector.data(b"ab");
        let report = collector.finish();
        assert!(report.files.is_empty(), "{report:?}");
        let refused: Vec<&str> = report.refused.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(refused, ["long", "cut", "unfinished"]);
        assert_eq!(names(&sink.folder), Vec::<String>::new());
    }

    #[test]
    fn a_symlink_planted_in_the_folder_is_never_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(dir.path(), 64, 1 << 20);
        std::fs::create_dir_all(&sink.folder).expect("folder");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").expect("target");
        std::os::unix::fs::symlink(&target, sink.folder.join("link")).expect("symlink");
        let mut collector = Collector::new(Some(&sink));
        collector.header(b"link", 3);
        collector.data(b"bad");
        let report = collector.finish();
        assert!(report.files.is_empty());
        assert_eq!(std::fs::read(&target).expect("target"), b"keep");
    }

    #[test]
    fn without_a_sink_everything_is_refused() {
        let mut collector = Collector::new(None);
        collector.header(b"a", 1);
        collector.data(b"a");
        let report = collector.finish();
        assert!(report.files.is_empty());
        assert_eq!(report.refused[0].reason, "this run keeps no artifacts");
    }
}
