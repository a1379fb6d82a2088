//! Attune's execution ids: positive integers (`ATTUNE_EXEC_ID`; actions do
//! `int(os.environ["ATTUNE_EXEC_ID"])`), unique within a state folder whoever runs there (the
//! CLI, a server, several at once). The next id is kept in one file, read and advanced under an
//! exclusive lock; a run's own UUID stays its `exec_id`.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file, in the state folder, that holds the last id handed out.
const FILE_NAME: &str = "attune-exec-ids";

/// The state folder cannot give an execution id (unwritable, or its file damaged).
#[derive(Debug, thiserror::Error)]
#[error("cannot take an execution id from {}", .path.display())]
pub struct ExecIdError {
    /// The file that holds the last id.
    pub path: PathBuf,
    /// Why it could not be read or advanced.
    #[source]
    pub source: std::io::Error,
}

/// Hands out execution ids from a state folder.
#[derive(Clone, Debug)]
pub struct ExecIds {
    path: PathBuf,
}

impl ExecIds {
    /// The ids of the state folder `state_dir` (the file is made on first use).
    pub fn new(state_dir: &Path) -> Self {
        ExecIds {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// The next id: one more than the last one handed out in this state folder, by any process.
    pub fn next(&self) -> Result<u64, ExecIdError> {
        self.advance().map_err(|source| ExecIdError {
            path: self.path.clone(),
            source,
        })
    }

    fn advance(&self) -> std::io::Result<u64> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        let _locked = Locked::exclusive(&file)?;
        let mut text = String::new();
        (&file).take(32).read_to_string(&mut text)?;
        // Never start over: an id handed out before could come again.
        let last: u64 = match text.trim() {
            "" => 0,
            number => number.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "expected the last execution id, a whole number",
                )
            })?,
        };
        let next = last.saturating_add(1);
        // Written through the locked handle: another process waits for the lock, then reads it.
        (&file).seek(std::io::SeekFrom::Start(0))?;
        file.set_len(0)?;
        (&file).write_all(format!("{next}\n").as_bytes())?;
        file.sync_data()?;
        Ok(next)
    }
}

/// An exclusive `flock` on a file, released when dropped (or when the file closes).
struct Locked<'a> {
    file: &'a std::fs::File,
}

impl<'a> Locked<'a> {
    fn exclusive(file: &'a std::fs::File) -> std::io::Result<Self> {
        // SAFETY: flock on a descriptor this `File` owns for the lock's lifetime.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Locked { file })
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking a descriptor we locked.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_unique_across_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ids = ExecIds::new(dir.path());
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| ids.next().expect("an id"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        all.sort();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_never_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), "not a number").expect("write");
        let err = ExecIds::new(dir.path()).next().expect_err("damaged");
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }
}
