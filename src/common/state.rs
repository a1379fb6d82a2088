//! The state folder holds what packbox learned between runs (probe results, build logs, locks),
//! so that a second run does not pay for the first run's checks. Its place is a setting; this
//! module only writes into it safely.

use std::path::Path;

/// Writes a file atomically: a temp file in the same folder, then a rename, so a reader never
/// sees half a file and a crash leaves the old one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        write_atomically(&path, b"one").expect("first write");
        write_atomically(&path, b"two").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let entries = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .count();
        assert_eq!(entries, 1);
    }
}
