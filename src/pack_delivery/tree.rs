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

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
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
    /// What was opened to be read is not what was listed: another file (a file swapped for a
    /// symlink or a hard link, a folder swapped for a symlink), another kind or another size.
    /// (Other changes show as a different digest returned by [`PackTree::append_to`].)
    #[error("pack {pack} changed while it was being read ({}); run again", path.display())]
    Changed {
        /// The pack's ref.
        pack: String,
        /// The entry that was not what was listed.
        path: PathBuf,
    },
}

/// One entry of a pack tree.
#[derive(Debug)]
pub struct Entry {
    /// Path relative to the pack folder, `/`-separated.
    pub relative: String,
    /// The same path as the file system spells it (names need not be UTF-8).
    path: PathBuf,
    kind: EntryKind,
    /// Permission bits (set-id and sticky dropped).
    mode: u32,
    /// The device and inode it was listed with: what is opened later must be this very file.
    identity: (u64, u64),
}

#[derive(Debug)]
enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

/// A pack folder's entries, sorted by relative path, within `limits`.
///
/// Nothing is ever opened by following a symlink: each folder and file is opened below the
/// pack's own folder one name at a time (`O_NOFOLLOW`), and what is opened is checked against
/// what was listed (device, inode, kind, size). A pack author who swaps a file for a symlink to
/// a file they cannot read (packbox may run as root), between the listing and the reading, gets
/// an error, never that file's contents.
#[derive(Debug)]
pub struct PackTree {
    pack: String,
    root: PathBuf,
    /// The pack's folder, opened once: every entry is opened relative to it.
    root_dir: OwnedFd,
    entries: Vec<Entry>,
}

impl PackTree {
    /// Reads the entries of the pack `pack` at `root` (symlinks not followed).
    pub fn read(pack: &str, root: &Path, limits: Limits) -> Result<PackTree, TreeError> {
        let read_error = |path: &Path, source: std::io::Error| TreeError::Read {
            pack: pack.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let root_dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| read_error(root, e.into()))?;
        let root_identity =
            identity(&rustix::fs::fstat(&root_dir).map_err(|e| read_error(root, e.into()))?);
        let mut tree = PackTree {
            pack: pack.to_string(),
            root: root.to_path_buf(),
            root_dir,
            entries: Vec::new(),
        };
        let mut pending = vec![(PathBuf::new(), root_identity)];
        let mut total = 0u64;
        while let Some((relative_dir, listed)) = pending.pop() {
            let dir = tree.open_listed(&relative_dir, listed, true)?;
            let shown_dir = root.join(&relative_dir);
            let names =
                rustix::fs::Dir::read_from(&dir).map_err(|e| read_error(&shown_dir, e.into()))?;
            for item in names {
                let item = item.map_err(|e| read_error(&shown_dir, e.into()))?;
                let name = OsStr::from_bytes(item.file_name().to_bytes());
                if name == "." || name == ".." {
                    continue;
                }
                let path = relative_dir.join(name);
                let stat = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| read_error(&root.join(&path), e.into()))?;
                let kind = match FileType::from_raw_mode(stat.st_mode) {
                    FileType::Directory => EntryKind::Dir,
                    FileType::RegularFile => EntryKind::File {
                        size: stat.st_size as u64,
                    },
                    FileType::Symlink => EntryKind::Symlink {
                        target: PathBuf::from(OsString::from_vec(
                            rustix::fs::readlinkat(&dir, name, Vec::new())
                                .map_err(|e| read_error(&root.join(&path), e.into()))?
                                .into_bytes(),
                        )),
                    },
                    // Sockets, FIFOs and devices are no part of a pack.
                    _ => continue,
                };
                match kind {
                    EntryKind::File { size } => total += size,
                    EntryKind::Dir => pending.push((path.clone(), identity(&stat))),
                    EntryKind::Symlink { .. } => {}
                }
                tree.entries.push(Entry {
                    relative: path.to_string_lossy().into_owned(),
                    path,
                    kind,
                    mode: stat.st_mode & 0o777,
                    identity: identity(&stat),
                });
                if tree.entries.len() > limits.max_entries || total > limits.max_bytes {
                    return Err(TreeError::TooLarge {
                        pack: pack.to_string(),
                        what: format!("{} entries, {} bytes so far", tree.entries.len(), total),
                        max_entries: limits.max_entries,
                        max_bytes: limits.max_bytes,
                    });
                }
            }
        }
        tree.entries
            .sort_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
        Ok(tree)
    }

    /// Opens the folder or file at `relative` below the pack's folder, one name at a time and
    /// never through a symlink, and checks that it is what was listed: the same device and
    /// inode, and a folder or a regular file as asked.
    fn open_listed(
        &self,
        relative: &Path,
        listed: (u64, u64),
        directory: bool,
    ) -> Result<OwnedFd, TreeError> {
        let shown = self.root.join(relative);
        let read_error = |e: rustix::io::Errno| self.read_error(&shown, e.into());
        let changed = || TreeError::Changed {
            pack: self.pack.clone(),
            path: shown.clone(),
        };
        let walk = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut names: Vec<&OsStr> = relative.iter().collect();
        let last = names.pop();
        let mut dir: Option<OwnedFd> = None;
        for name in names {
            let parent = dir.as_ref().unwrap_or(&self.root_dir);
            dir = Some(
                rustix::fs::openat(parent, name, walk, Mode::empty()).map_err(|e| {
                    // A folder on the way swapped for a symlink (or anything else).
                    match e {
                        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => changed(),
                        other => read_error(other),
                    }
                })?,
            );
        }
        let opened = match last {
            None => rustix::fs::openat(&self.root_dir, ".", walk, Mode::empty()),
            Some(name) => {
                let parent = dir.as_ref().unwrap_or(&self.root_dir);
                let flags = match directory {
                    true => walk,
                    // Non-blocking: a FIFO swapped in must not hang the read.
                    false => {
                        OFlags::RDONLY
                            | OFlags::NOFOLLOW
                            | OFlags::NONBLOCK
                            | OFlags::NOCTTY
                            | OFlags::CLOEXEC
                    }
                };
                rustix::fs::openat(parent, name, flags, Mode::empty())
            }
        }
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => changed(),
            other => read_error(other),
        })?;
        let stat = rustix::fs::fstat(&opened).map_err(read_error)?;
        let kind_fits = match directory {
            true => FileType::from_raw_mode(stat.st_mode) == FileType::Directory,
            false => FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile,
        };
        if !kind_fits || identity(&stat) != listed {
            return Err(changed());
        }
        Ok(opened)
    }

    /// Opens a listed file for reading: the very file that was listed, of the listed size.
    fn open_file(&self, entry: &Entry, size: u64) -> Result<std::fs::File, TreeError> {
        let opened = self.open_listed(&entry.path, entry.identity, false)?;
        let stat = rustix::fs::fstat(&opened)
            .map_err(|e| self.read_error(&self.root.join(&entry.path), e.into()))?;
        if stat.st_size as u64 != size {
            return Err(TreeError::Changed {
                pack: self.pack.clone(),
                path: self.root.join(&entry.path),
            });
        }
        Ok(std::fs::File::from(opened))
    }

    /// The SHA-256 of the tree, in hex (file contents are read now, streamed).
    pub fn digest(&self) -> Result<String, TreeError> {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_FORMAT);
        for entry in &self.entries {
            let content_hash = match entry.kind {
                EntryKind::File { size } => {
                    let file = self.open_file(entry, size)?;
                    let mut reader = HashingReader::new(file.take(size));
                    std::io::copy(&mut reader, &mut std::io::sink())
                        .map_err(|e| self.read_error(&self.root.join(&entry.path), e))?;
                    if reader.count != size {
                        return Err(TreeError::Changed {
                            pack: self.pack.clone(),
                            path: self.root.join(&entry.path),
                        });
                    }
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
                    let file = self.open_file(entry, *size)?;
                    let mut reader = HashingReader::new(file.take(*size));
                    let appended = builder.append_data(&mut header, &name, &mut reader);
                    if appended.is_ok() && reader.count != *size {
                        return Err(TreeError::Changed {
                            pack: self.pack.clone(),
                            path: self.root.join(&entry.path),
                        });
                    }
                    frame(&mut hasher, entry, Some(&reader.hasher.finalize()));
                    appended
                }
            };
            written.map_err(|e| self.read_error(&self.root.join(&entry.path), e))?;
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

/// The device and inode a stat names.
fn identity(stat: &Stat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

/// Feeds the digest framing of one entry (a file's contents come separately, as its hash).
fn frame(hasher: &mut Sha256, entry: &Entry, content_hash: Option<&[u8]>) {
    frame_parts(
        hasher,
        &entry.relative,
        &entry.kind,
        entry.mode,
        content_hash,
    );
}

fn frame_parts(
    hasher: &mut Sha256,
    relative: &str,
    kind: &EntryKind,
    mode: u32,
    content_hash: Option<&[u8]>,
) {
    let (kind, extra): (u8, Vec<u8>) = match kind {
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
    hasher.update(relative.as_bytes());
    hasher.update([0]);
    hasher.update(mode.to_be_bytes());
    hasher.update(extra);
}

/// The tree digest (as [`PackTree::digest`] frames it) of a pack read back from an engine: an
/// archive of the folder that holds it, every entry under `folder/` (as the engine names a
/// folder's entries), within `limits`. `Ok(None)` when the archive holds what no pack archive
/// of packbox's holds (a hard link, a device, set-id or sticky bits, an entry outside the
/// folder): such content was not put there by packbox.
pub fn archive_digest(
    archive: impl Read,
    folder: &str,
    limits: Limits,
) -> std::io::Result<Option<String>> {
    let mut archive = tar::Archive::new(archive);
    let mut framed: Vec<(String, EntryKind, u32, Option<Vec<u8>>)> = Vec::new();
    let mut total = 0u64;
    // Docker names the folder's entries `folder/...`; Podman names the folder `/` and its
    // entries `/...`. The first entry (the folder itself) says which; the others must agree.
    let mut prefix: Option<String> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let trimmed = path.trim_end_matches('/');
        let Some(prefix) = &prefix else {
            prefix = match trimmed {
                _ if trimmed == folder => Some(format!("{folder}/")),
                "" if path == "/" => Some("/".to_string()),
                _ => return Ok(None),
            };
            continue;
        };
        let Some(relative) = trimmed.strip_prefix(prefix.as_str()) else {
            return Ok(None);
        };
        if relative.is_empty() || relative.starts_with('/') {
            return Ok(None);
        }
        let relative = relative.to_string();
        let header = entry.header();
        // Engines (Go's archive/tar) write the file type bits into the mode too: only the
        // permission, set-id and sticky bits are the file's.
        let mode = header.mode()? & 0o7777;
        if mode & !0o777 != 0 {
            return Ok(None);
        }
        let (kind, content) = match header.entry_type() {
            tar::EntryType::Directory => (EntryKind::Dir, None),
            tar::EntryType::Symlink => match entry.link_name()? {
                Some(target) => (
                    EntryKind::Symlink {
                        target: target.into_owned(),
                    },
                    None,
                ),
                None => return Ok(None),
            },
            tar::EntryType::Regular => {
                let size = header.size()?;
                total += size;
                let mut reader = HashingReader::new(&mut entry);
                std::io::copy(&mut reader, &mut std::io::sink())?;
                (
                    EntryKind::File { size },
                    Some(reader.hasher.finalize().to_vec()),
                )
            }
            _ => return Ok(None),
        };
        framed.push((relative, kind, mode, content));
        if framed.len() > limits.max_entries || total > limits.max_bytes {
            return Ok(None);
        }
    }
    framed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_FORMAT);
    for (relative, kind, mode, content) in &framed {
        frame_parts(&mut hasher, relative, kind, *mode, content.as_deref());
    }
    Ok(Some(hex::encode(hasher.finalize())))
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
    use std::os::unix::fs::PermissionsExt;

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

    /// The race of a pack author who can write the pack: a listed file swapped for a symlink
    /// to a file outside the pack (the author cannot read it; packbox may be root), or a listed
    /// folder swapped for a symlink to a folder outside, after the listing.
    #[test]
    fn what_is_read_is_what_was_listed_never_a_file_swapped_in() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("a.sh"), "root-only secret\n").expect("write");
        let secret = outside.path().join("a.sh");
        for swap in ["file", "folder"] {
            let dir = pack();
            let tree = PackTree::read("p", dir.path(), LIMITS).expect("read");
            match swap {
                "file" => {
                    std::fs::remove_file(dir.path().join("actions/a.sh")).expect("rm");
                    std::os::unix::fs::symlink(&secret, dir.path().join("actions/a.sh"))
                        .expect("symlink");
                }
                _ => {
                    std::fs::rename(dir.path().join("actions"), dir.path().join("old"))
                        .expect("mv");
                    std::os::unix::fs::symlink(outside.path(), dir.path().join("actions"))
                        .expect("symlink");
                }
            }
            let err = tree.digest().expect_err("the digest refuses");
            assert!(matches!(err, TreeError::Changed { .. }), "{swap}: {err}");
            let mut builder = tar::Builder::new(Vec::new());
            let err = tree
                .append_to(&mut builder, "")
                .expect_err("the archive refuses");
            assert!(matches!(err, TreeError::Changed { .. }), "{swap}: {err}");
            let bytes = builder.into_inner().expect("tar bytes");
            assert!(
                !String::from_utf8_lossy(&bytes).contains("root-only secret"),
                "{swap}: the swapped-in file reached the archive"
            );
            // Listed afresh, the symlink is a symlink: its target is never read.
            let fresh = PackTree::read("p", dir.path(), LIMITS).expect("read");
            let mut builder = tar::Builder::new(Vec::new());
            fresh.append_to(&mut builder, "").expect("archive");
            let bytes = builder.into_inner().expect("tar bytes");
            assert!(!String::from_utf8_lossy(&bytes).contains("root-only secret"));
        }
    }

    #[test]
    fn a_file_swapped_for_another_of_the_same_size_is_noticed() {
        let dir = pack();
        let tree = PackTree::read("p", dir.path(), LIMITS).expect("read");
        let file = dir.path().join("actions/a.sh");
        // Made while the old file still exists, so it cannot reuse its inode.
        std::fs::write(dir.path().join("new"), "echo ho\n").expect("same size");
        std::fs::rename(dir.path().join("new"), &file).expect("swap");
        assert!(matches!(tree.digest(), Err(TreeError::Changed { .. })));
    }

    #[test]
    fn an_archive_read_back_has_the_trees_digest_and_foreign_content_has_none() {
        let dir = pack();
        let tree = PackTree::read("p", dir.path(), LIMITS).expect("read");
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, "pack", std::io::empty())
            .expect("folder");
        tree.append_to(&mut builder, "pack/").expect("tar");
        let bytes = builder.into_inner().expect("tar bytes");
        assert_eq!(
            archive_digest(bytes.as_slice(), "pack", LIMITS).expect("reads"),
            Some(tree.digest().expect("digest"))
        );
        // A set-uid file is nothing packbox wrote.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o4755);
        header.set_size(2);
        builder
            .append_data(&mut header, "pack/x", &b"hi"[..])
            .expect("file");
        let bytes = builder.into_inner().expect("tar bytes");
        assert_eq!(
            archive_digest(bytes.as_slice(), "pack", LIMITS).expect("reads"),
            None
        );
    }

    #[test]
    fn podmans_read_back_names_the_folder_slash_and_has_the_same_digest() {
        let dir = pack();
        let tree = PackTree::read("p", dir.path(), LIMITS).expect("read");
        let mut docker = tar::Builder::new(Vec::new());
        tree.append_to(&mut docker, "pack/").expect("tar");
        let docker = docker.into_inner().expect("tar bytes");
        // Podman's archive of a mount folder: `/`, then `/actions`, `/actions/a.sh`, ... (the
        // tar crate refuses to write absolute names, so the names are put in raw).
        let mut podman = tar::Builder::new(Vec::new());
        let mut folder = tar::Header::new_gnu();
        folder.set_entry_type(tar::EntryType::Directory);
        folder.set_mode(0o755);
        folder.set_size(0);
        raw_name(&mut folder, "/");
        podman.append(&folder, std::io::empty()).expect("folder");
        for entry in tar::Archive::new(docker.as_slice())
            .entries()
            .expect("entries")
        {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().into_owned();
            let mut header = entry.header().clone();
            raw_name(&mut header, &name.replacen("pack/", "/", 1));
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).expect("content");
            podman.append(&header, content.as_slice()).expect("entry");
        }
        let podman = podman.into_inner().expect("tar bytes");
        assert_eq!(
            archive_digest(podman.as_slice(), "pack", LIMITS).expect("reads"),
            Some(tree.digest().expect("digest"))
        );
    }

    /// Sets an entry's name as written, absolute or not, and its checksum.
    fn raw_name(header: &mut tar::Header, name: &str) {
        let field = &mut header.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
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
