//! How much room the state folder's disk has left, so the server refuses new executions (507)
//! before records fill it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes an unprivileged writer can still use on the file system holding `path`; `None` when
/// the system cannot say.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stats` is memory
    // for one `statvfs` that the call fills in when it returns 0.
    let filled = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } == 0;
    if !filled {
        return None;
    }
    // SAFETY: statvfs returned 0, so it wrote the whole struct.
    let stats = unsafe { stats.assume_init() };
    // Both are 64-bit on the 64-bit Linux targets packbox serves from.
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_has_some_room_and_a_missing_one_says_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}
