//! A pack folder as content: its entries read once (symlinks not followed), the SHA-256 that
//! names that content, and a tar archive of it. One definition for every place a pack travels
//! by content (a volume on a remote engine, an image layer on a Swarm, the record of a run), so
//! that the same pack has the same digest everywhere.
//!
//! The digest covers each entry's relative path, kind, permission bits, and a file's contents or
//! a symlink's target, in path order; nothing else (owners and times do not matter, so the same
//! pack checked out twice has the same digest). Symlinks are kept as symlinks: the pack's own
//! checks already refused any that leads out of it. Sockets, FIFOs and devices are left out.
//! Set-id and sticky bits are dropped.

use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bump when the digest's framing changes, so digests of different framings never compare equal.
const DIGEST_FORMAT: &[u8] = b"packbox-pack-tree-v1\n";

/// How much of a pack a use of it takes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries (files, folders, symlinks) at most.
    pub max_entries: usize,
    /// Bytes of file contents at most.
    pub max_bytes: u64,
}

/// A pack tree that cannot be read whole, or that changed while it was read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A file, folder or symlink of the pack could not be read.
    #[error("pack {pack}: cannot read {}", path.display())]
    Read {
        /// The pack's ref.
        pack: String,
        /// What could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pack is over the use's limits.
    #[error("pack {pack} is too large ({what}; at most {max_entries} entries and {} MiB)", max_bytes >> 20)]
    TooLarge {
        /// The pack's ref.
        pack: String,
        /// How much was read before the limit was hit.
        what: String,
        /// The limit on entries.
        max_entries: usize,
        /// The limit on bytes.
        max_bytes: u64,
    },
    /// A file was shorter when archived than when the tree was listed. (Other changes show as
    /// a different digest returned by [`PackTree::append_to`].)
    #[error("pack {pack} changed while it was being read; run again")]
    Changed {
        /// The pack's ref.
        pack: String,
    },
}

/// One entry of a pack tree.
#[derive(Debug)]
pub struct Entry {
    /// Path relative to the pack folder, `/`-separated.
    pub relative: String,
    path: PathBuf,
    kind: EntryKind,
    /// Permission bits (set-id and sticky dropped).
    mode: u32,
}

#[derive(Debug)]
enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

/// A pack folder's entries, sorted by relative path, within `limits`.
#[derive(Debug)]
pub struct PackTree {
    pack: String,
    entries: Vec<Entry>,
}

impl PackTree {
    /// Reads the entries of the pack `pack` at `root` (symlinks not followed).
    pub fn read(pack: &str, root: &Path, limits: Limits) -> Result<PackTree, TreeError> {
        let read_error = |path: &Path, source| TreeError::Read {
            pack: pack.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let mut entries = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        let mut total = 0u64;
        while let Some(dir) = pending.pop() {
            for item in std::fs::read_dir(&dir).map_err(|e| read_error(&dir, e))? {
                let path = item.map_err(|e| read_error(&dir, e))?.path();
                let metadata =
                    std::fs::symlink_metadata(&path).map_err(|e| read_error(&path, e))?;
                let Some(kind) = entry_kind(&path, &metadata).map_err(|e| read_error(&path, e))?
                else {
                    continue;
                };
                match kind {
                    EntryKind::File { size } => total += size,
                    EntryKind::Dir => pending.push(path.clone()),
                    EntryKind::Symlink { .. } => {}
                }
                let relative = path
                    .strip_prefix(root)
                    .map_err(|_| read_error(&path, std::io::ErrorKind::InvalidInput.into()))?
                    .to_string_lossy()
                    .into_owned();
                entries.push(Entry {
                    relative,
                    path,
                    kind,
                    mode: metadata.permissions().mode() & 0o777,
                });
                if entries.len() > limits.max_entries || total > limits.max_bytes {
                    return Err(TreeError::TooLarge {
                        pack: pack.to_string(),
                        what: format!("{} entries, {} bytes so far", entries.len(), total),
                        max_entries: limits.max_entries,
                        max_bytes: limits.max_bytes,
                    });
                }
            }
        }
        entries.sort_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
        Ok(PackTree {
            pack: pack.to_string(),
            entries,
        })
    }

    /// The SHA-256 of the tree, in hex (file contents are read now, streamed).
    pub fn digest(&self) -> Result<String, TreeError> {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_FORMAT);
        for entry in &self.entries {
            let content_hash = match entry.kind {
                EntryKind::File { .. } => {
                    let file = std::fs::File::open(&entry.path)
                        .map_err(|e| self.read_error(&entry.path, e))?;
                    let mut reader = HashingReader::new(file);
                    std::io::copy(&mut reader, &mut std::io::sink())
                        .map_err(|e| self.read_error(&entry.path, e))?;
                    Some(reader.hasher.finalize().to_vec())
                }
                _ => None,
            };
            frame(&mut hasher, entry, content_hash.as_deref());
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Writes the tree as a tar archive into `builder`, each entry under `prefix` (`""` or
    /// `"pack/"`), owners root and times zero, and returns the digest of what was written, so a
    /// caller can tell whether the pack changed since it computed its name.
    pub fn append_to<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        prefix: &str,
    ) -> Result<String, TreeError> {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_FORMAT);
        for entry in &self.entries {
            let name = format!("{prefix}{}", entry.relative);
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            let written = match &entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    frame(&mut hasher, entry, None);
                    builder.append_data(&mut header, &name, std::io::empty())
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    frame(&mut hasher, entry, None);
                    builder.append_link(&mut header, &name, target)
                }
                EntryKind::File { size } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(*size);
                    let file = std::fs::File::open(&entry.path)
                        .map_err(|e| self.read_error(&entry.path, e))?;
                    let mut reader = HashingReader::new(file.take(*size));
                    let appended = builder.append_data(&mut header, &name, &mut reader);
                    if appended.is_ok() && reader.count != *size {
                        return Err(TreeError::Changed {
                            pack: self.pack.clone(),
                        });
                    }
                    frame(&mut hasher, entry, Some(&reader.hasher.finalize()));
                    appended
                }
            };
            written.map_err(|e| self.read_error(&entry.path, e))?;
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// An error reading `path` of this pack.
    fn read_error(&self, path: &Path, source: std::io::Error) -> TreeError {
        TreeError::Read {
            pack: self.pack.clone(),
            path: path.to_path_buf(),
            source,
        }
    }
}

fn entry_kind(path: &Path, metadata: &Metadata) -> std::io::Result<Option<EntryKind>> {
    let file_type = metadata.file_type();
    Ok(if file_type.is_dir() {
        Some(EntryKind::Dir)
    } else if file_type.is_file() {
        Some(EntryKind::File {
            size: metadata.size(),
        })
    } else if file_type.is_symlink() {
        Some(EntryKind::Symlink {
            target: std::fs::read_link(path)?,
        })
    } else {
        None
    })
}

/// Feeds the digest framing of one entry (a file's contents come separately, as its hash).
fn frame(hasher: &mut Sha256, entry: &Entry, content_hash: Option<&[u8]>) {
    let (kind, extra): (u8, Vec<u8>) = match &entry.kind {
        EntryKind::Dir => (b'd', Vec::new()),
        EntryKind::File { size } => {
            let mut extra = size.to_be_bytes().to_vec();
            extra.extend_from_slice(content_hash.unwrap_or_default());
            (b'f', extra)
        }
        EntryKind::Symlink { target } => {
            let mut extra = target.as_os_str().as_encoded_bytes().to_vec();
            extra.push(0);
            (b'l', extra)
        }
    };
    hasher.update([kind]);
    hasher.update(entry.relative.as_bytes());
    hasher.update([0]);
    hasher.update(entry.mode.to_be_bytes());
    hasher.update(extra);
}

/// Hashes and counts what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_entries: 1000,
        max_bytes: 1 << 20,
    };

    fn pack() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("actions")).expect("mkdir");
        std::fs::write(dir.path().join("pack.yaml"), "ref: p\n").expect("write");
        std::fs::write(dir.path().join("actions/a.sh"), "echo hi\n").expect("write");
        std::os::unix::fs::symlink("a.sh", dir.path().join("actions/b.sh")).expect("symlink");
        dir
    }

    fn digest(dir: &Path) -> String {
        PackTree::read("p", dir, LIMITS)
            .expect("read")
            .digest()
            .expect("digest")
    }

    #[test]
    fn the_digest_is_the_content_not_the_times() {
        let dir = pack();
        let first = digest(dir.path());
        let file = dir.path().join("actions/a.sh");
        std::fs::write(&file, "echo hi\n").expect("rewrite, new mtime");
        assert_eq!(digest(dir.path()), first);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mode = digest(dir.path());
        assert_ne!(mode, first, "permission bits count");
        std::fs::write(&file, "echo ho\n").expect("edit");
        assert_ne!(digest(dir.path()), mode, "contents count");
        std::fs::remove_file(dir.path().join("actions/b.sh")).expect("rm");
        std::os::unix::fs::symlink("c.sh", dir.path().join("actions/b.sh")).expect("symlink");
        assert_ne!(digest(dir.path()), mode, "a symlink's target counts");
    }

    #[test]
    fn the_archive_holds_the_tree_and_its_digest_is_the_trees() {
        let dir = pack();
        let tree = PackTree::read("p", dir.path(), LIMITS).expect("read");
        let mut builder = tar::Builder::new(Vec::new());
        let written = tree.append_to(&mut builder, "pack/").expect("tar");
        assert_eq!(written, tree.digest().expect("digest"));
        let bytes = builder.into_inner().expect("tar bytes");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names: Vec<(String, tar::EntryType)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            names,
            [
                ("pack/actions".to_string(), tar::EntryType::Directory),
                ("pack/actions/a.sh".to_string(), tar::EntryType::Regular),
                ("pack/actions/b.sh".to_string(), tar::EntryType::Symlink),
                ("pack/pack.yaml".to_string(), tar::EntryType::Regular),
            ]
        );
    }

    #[test]
    fn a_pack_over_the_limits_is_refused() {
        let dir = pack();
        let small = Limits {
            max_entries: 2,
            max_bytes: 1 << 20,
        };
        let err = PackTree::read("p", dir.path(), small).expect_err("too many entries");
        assert!(matches!(err, TreeError::TooLarge { .. }), "{err}");
        let tiny = Limits {
            max_entries: 100,
            max_bytes: 4,
        };
        assert!(PackTree::read("p", dir.path(), tiny).is_err());
    }

    #[test]
    fn fifos_are_left_out() {
        let dir = pack();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let tree = PackTree::read("p", dir.path(), LIMITS).expect("read");
        assert!(tree.entries.iter().all(|e| e.relative != "fifo"));
    }
}
