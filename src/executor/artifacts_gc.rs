//! `packbox gc`'s share of the state folder: the artifacts folders of local runs
//! (`STATE/artifacts/EXEC_ID/`), which have no record and so no retention of their own, removed
//! once older than `run.artifacts_retention`. A folder a server's record still lists stays: the
//! server's retention removes it with its record.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::run::artifacts_root;

/// One artifacts folder `gc` removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RemovedArtifacts {
    /// The run's exec id (the folder's name).
    pub exec_id: String,
    /// The folder it was.
    pub folder: PathBuf,
    /// How long before the collection the folder was last changed, in seconds.
    pub age_seconds: u64,
}

/// One entry of the artifacts root as `lstat` saw it (symlinks are not followed).
#[derive(Clone, Debug)]
struct Entry {
    /// The entry's name, when it is UTF-8.
    name: Option<String>,
    /// A folder itself, not a symlink to one nor anything else.
    is_folder: bool,
    /// When it was last changed, when the file system says.
    modified: Option<SystemTime>,
}

/// The entries that are expired run folders, with their ages: folders (never a symlink or a
/// file) named as packbox names runs (a UUID: incoming folders, which start with a dot, and
/// anything else someone put there are left alone), that no server record lists, last changed
/// longer than `retention` before `now` (a time in the future is age 0).
fn expired(
    entries: &[Entry],
    now: SystemTime,
    retention: Duration,
    recorded: &HashSet<String>,
) -> Vec<(String, Duration)> {
    entries
        .iter()
        .filter(|e| e.is_folder)
        .filter_map(|e| Some((e.name.as_deref()?, e.modified?)))
        .filter(|(name, _)| is_run_folder_name(name) && !recorded.contains(*name))
        .map(|(name, modified)| {
            let age = now.duration_since(modified).unwrap_or_default();
            (name.to_string(), age)
        })
        .filter(|(_, age)| *age > retention)
        .collect()
}

/// Whether a name is one packbox gives a run's folder: its exec id, a UUID in its hyphenated
/// lower-case form.
fn is_run_folder_name(name: &str) -> bool {
    uuid::Uuid::try_parse(name).is_ok_and(|id| id.hyphenated().to_string() == name)
}

/// Removes the artifacts folders of `state_dir` that [`expired`] chooses, with `recorded` the
/// exec ids a server's records still list; returns what it removed (a folder that cannot be
/// removed is a warning in the log, and the others still go). Nothing is followed: an
/// artifacts root that is a symlink is left as it is, entries are read with `lstat`, and a
/// folder's removal never leaves it (std's `remove_dir_all` unlinks symlinks inside, it does not
/// descend through them).
pub fn collect_artifacts(
    state_dir: &Path,
    retention: Duration,
    recorded: &HashSet<String>,
) -> std::io::Result<Vec<RemovedArtifacts>> {
    let root = artifacts_root(state_dir);
    match std::fs::symlink_metadata(&root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            tracing::warn!(
                "{} is not a folder (a symlink?): its artifacts are left alone",
                root.display()
            );
            return Ok(Vec::new());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let entry = entry?;
        // DirEntry::metadata is an lstat: a symlink is seen as one.
        let meta = entry.metadata().ok();
        entries.push(Entry {
            name: entry.file_name().into_string().ok(),
            is_folder: meta.as_ref().is_some_and(|m| m.file_type().is_dir()),
            modified: meta.and_then(|m| m.modified().ok()),
        });
    }
    let mut removed = Vec::new();
    for (exec_id, age) in expired(&entries, SystemTime::now(), retention, recorded) {
        let folder = root.join(&exec_id);
        match std::fs::remove_dir_all(&folder) {
            Ok(()) => removed.push(RemovedArtifacts {
                exec_id,
                folder,
                age_seconds: age.as_secs(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing the artifacts in {}: {e}", folder.display()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const A: &str = "0b7f4a36-5d2e-4c1a-9f3e-2a6b8c9d0e1f";
    const B: &str = "1c8e5b47-6e3f-4d2b-8a4f-3b7c9d0e1f20";

    fn folder(name: &str, age: Duration, now: SystemTime) -> Entry {
        Entry {
            name: Some(name.into()),
            is_folder: true,
            modified: Some(now - age),
        }
    }

    #[test]
    fn only_run_folders_older_than_the_retention_and_unrecorded_are_chosen() {
        let now = SystemTime::now();
        let entries = [
            folder(A, 8 * DAY, now),
            folder(B, 6 * DAY, now),
            // The server's record still lists it: its retention decides.
            folder("2d9f6c58-7f40-4e3c-9b50-4c8d0e1f2031", 30 * DAY, now),
            // A killed run's incoming folder: the start-up sweep's.
            folder(
                ".incoming-3e0a7d69-8051-4f4d-8c61-5d9e1f203142",
                30 * DAY,
                now,
            ),
            // Someone else's folder, or an id in another spelling.
            folder("my-notes", 30 * DAY, now),
            folder(&A.to_uppercase(), 30 * DAY, now),
            // Changed "in the future" (a clock set back): age 0, kept.
            Entry {
                name: Some("4f1b8e7a-9162-4a5e-9d72-6e0f20314253".into()),
                is_folder: true,
                modified: Some(now + DAY),
            },
            // No time known: kept.
            Entry {
                name: Some("5a2c9f8b-a273-4b6f-8e83-7f1031425364".into()),
                is_folder: true,
                modified: None,
            },
        ];
        let recorded = HashSet::from(["2d9f6c58-7f40-4e3c-9b50-4c8d0e1f2031".to_string()]);
        let chosen = expired(&entries, now, 7 * DAY, &recorded);
        assert_eq!(chosen, [(A.to_string(), 8 * DAY)]);
        // Exactly at the retention: kept (older than, not as old as).
        assert!(expired(&[folder(A, 7 * DAY, now)], now, 7 * DAY, &recorded).is_empty());
    }

    #[test]
    fn symlinks_files_and_names_not_utf8_are_never_chosen() {
        let now = SystemTime::now();
        let old = Some(now - 30 * DAY);
        let entries = [
            // A symlink named as a run (lstat: not a folder), or a file.
            Entry {
                name: Some(A.into()),
                is_folder: false,
                modified: old,
            },
            Entry {
                name: None,
                is_folder: true,
                modified: old,
            },
        ];
        assert!(expired(&entries, now, DAY, &HashSet::new()).is_empty());
    }

    #[test]
    fn collecting_removes_old_run_folders_and_never_follows_a_symlink() {
        let state = tempfile::tempdir().expect("tempdir");
        let root = artifacts_root(state.path());
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("precious"), b"keep").expect("write");
        let old = root.join(A);
        std::fs::create_dir_all(&old).expect("folder");
        std::fs::write(old.join("report.txt"), b"old").expect("write");
        // A symlink inside an expired folder, and one named as a run beside it.
        std::os::unix::fs::symlink(outside.path(), old.join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join(B)).expect("symlink");
        let young = root.join("2d9f6c58-7f40-4e3c-9b50-4c8d0e1f2031");
        std::fs::create_dir_all(&young).expect("folder");
        let past = SystemTime::now() - 8 * DAY;
        std::fs::File::open(&old)
            .and_then(|f| f.set_modified(past))
            .expect("set the time");
        let removed = collect_artifacts(state.path(), 7 * DAY, &HashSet::new()).expect("gc");
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].exec_id, A);
        assert!(removed[0].age_seconds >= (8 * DAY).as_secs());
        assert!(!old.exists());
        assert!(young.is_dir(), "younger than the retention");
        assert!(root.join(B).is_symlink(), "a symlink is not a run's folder");
        assert!(outside.path().join("precious").is_file());
        // A root that is a symlink is not read at all.
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(outside.path().join(A)).expect("folder");
        std::fs::File::open(outside.path().join(A))
            .and_then(|f| f.set_modified(past))
            .expect("set the time");
        std::os::unix::fs::symlink(outside.path(), artifacts_root(other.path())).expect("symlink");
        assert!(
            collect_artifacts(other.path(), DAY, &HashSet::new())
                .expect("gc")
                .is_empty()
        );
        assert!(outside.path().join(A).is_dir());
        // No artifacts root: nothing to do.
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(
            collect_artifacts(empty.path(), DAY, &HashSet::new())
                .expect("gc")
                .is_empty()
        );
    }
}
