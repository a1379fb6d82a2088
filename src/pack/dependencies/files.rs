//! Reading a pack's files on the host, where packbox may run as root and the pack's author may
//! not: only regular files, bounded, inside the pack, and with no other hard link (a hard link
//! could hand packbox a file its author cannot read).

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::common::input;

/// Manifest files (requirements, includes, package.json, locks) larger than this are refused
/// before they are read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Each local artifact file (a wheel, an archive, a file of a project folder) at most.
pub const MAX_ARTIFACT_BYTES: u64 = 32 << 20;
/// All local artifacts of one pack together at most (they are held in memory for the build).
pub const MAX_LOCAL_BYTES: u64 = 64 << 20;
/// Files of all local artifacts of one pack at most.
pub const MAX_LOCAL_FILES: usize = 10_000;

/// Whether something is at `path` in any form: a manifest that is not a regular file is then
/// refused, not overlooked.
pub(crate) fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Reads a file of the pack in `pack_dir` (canonical) of at most `max_bytes`, checked before
/// reading and while reading, so FIFOs and devices never block or flood. The file must resolve
/// inside the pack and have one link. The error says what is wrong.
pub(crate) fn read_pack_file(
    pack_dir: &Path,
    path: &Path,
    max_bytes: u64,
) -> Result<Vec<u8>, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot read: {e}"))?;
    if !real.starts_with(pack_dir) {
        return Err(format!("leads outside the pack (to {})", real.display()));
    }
    // An O_PATH handle pins the file that is checked, and the read goes through that handle, so
    // a file swapped in between is never the one read. O_NOFOLLOW: no symlink at the last step.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|e| format!("cannot read: {e}"))?;
    let metadata = handle.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !metadata.is_file() {
        return Err("expected a regular file (not a FIFO, device or folder)".into());
    }
    if metadata.nlink() != 1 {
        return Err(format!(
            "has {} hard links; packbox reads only files that belong to the pack alone",
            metadata.nlink()
        ));
    }
    if metadata.len() > max_bytes {
        return Err(format!(
            "is {} bytes; at most {max_bytes} bytes are read",
            metadata.len()
        ));
    }
    let pinned = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    input::read_regular_file(&pinned, max_bytes).map_err(|e| format!("cannot read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_files_are_read_as_untrusted_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack_dir = dir.path().canonicalize().expect("canonical");
        let file = pack_dir.join("requirements.txt");
        let read = |max| read_pack_file(&pack_dir, &file, max);
        std::fs::write(&file, "six\n").expect("write");
        assert_eq!(read(MAX_MANIFEST_BYTES), Ok(b"six\n".to_vec()));
        std::fs::hard_link(&file, pack_dir.join("twin.txt")).expect("hard link");
        let err = read(MAX_MANIFEST_BYTES).expect_err("two links");
        assert!(err.contains("has 2 hard links"), "{err}");
        std::fs::remove_file(pack_dir.join("twin.txt")).expect("rm");
        let sparse = std::fs::File::create(&file).expect("create");
        sparse.set_len(MAX_MANIFEST_BYTES + 1).expect("sparse");
        let err = read(MAX_MANIFEST_BYTES).expect_err("too large");
        assert!(err.contains("at most 1048576 bytes"), "{err}");
        assert!(
            read(MAX_ARTIFACT_BYTES).is_ok(),
            "an artifact may be larger"
        );
        std::fs::remove_file(&file).expect("rm");
        let made = std::process::Command::new("mkfifo")
            .arg(&file)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let err = read(MAX_MANIFEST_BYTES).expect_err("fifo");
        assert!(err.contains("regular file"), "{err}");
        std::fs::remove_file(&file).expect("rm");
        let outside = tempfile::NamedTempFile::new().expect("outside");
        std::os::unix::fs::symlink(outside.path(), &file).expect("symlink");
        let err = read(MAX_MANIFEST_BYTES).expect_err("outside");
        assert!(err.contains("leads outside the pack"), "{err}");
    }
}
