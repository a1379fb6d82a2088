//! The content digest of a pack: what a run's record names, so "which code ran" has an answer
//! after the pack folder changed. The digest covers each entry's path relative to the pack, its
//! kind, its permission bits, and a file's contents or a symlink's target, in path order; owners
//! and times do not count, so the same pack checked out twice has the same digest. Sockets,
//! FIFOs and devices are skipped (they are never delivered to an action either).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Entries a pack may hold before it is refused as too large to digest.
const MAX_ENTRIES: usize = 200_000;
/// Bump when the framing changes, so digests of different framings never compare equal.
const FORMAT: &[u8] = b"packbox-pack-tree-v1\n";

/// The pack could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("pack folder {}: cannot read {}", pack.display(), path.display())]
    Read {
        pack: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pack folder {}: more than {MAX_ENTRIES} entries", pack.display())]
    TooLarge { pack: PathBuf },
}

/// The SHA-256 of the pack tree at `root`, in hex.
pub fn tree_digest(root: &Path) -> Result<String, DigestError> {
    let read_error = |path: &Path, source| DigestError::Read {
        pack: root.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| read_error(&folder, e))? {
            let entry = entry.map_err(|e| read_error(&folder, e))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| read_error(&path, e))?;
            if meta.is_dir() {
                folders.push(path.clone());
            }
            entries.push((path, meta));
            if entries.len() > MAX_ENTRIES {
                return Err(DigestError::TooLarge {
                    pack: root.to_path_buf(),
                });
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    hasher.update(FORMAT);
    for (path, meta) in &entries {
        let kind = meta.file_type();
        let (tag, extra) = if kind.is_dir() {
            (b'd', Vec::new())
        } else if kind.is_file() {
            (b'f', file_hash(path).map_err(|e| read_error(path, e))?)
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| read_error(path, e))?;
            (b'l', target.as_os_str().as_encoded_bytes().to_vec())
        } else {
            continue;
        };
        let relative = path.strip_prefix(root).unwrap_or(path);
        hasher.update([tag]);
        hasher.update(relative.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update((meta.permissions().mode() & 0o777).to_be_bytes());
        hasher.update((extra.len() as u64).to_be_bytes());
        hasher.update(&extra);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn file_hash(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("actions")).expect("mkdir");
        std::fs::write(dir.path().join("pack.yaml"), "ref: p\n").expect("write");
        std::fs::write(dir.path().join("actions/a.sh"), "echo hi\n").expect("write");
        dir
    }

    #[test]
    fn the_same_tree_has_the_same_digest_wherever_it_is() {
        let (a, b) = (pack(), pack());
        assert_eq!(
            tree_digest(a.path()).expect("a"),
            tree_digest(b.path()).expect("b")
        );
        assert_eq!(tree_digest(a.path()).expect("a").len(), 64);
    }

    #[test]
    fn contents_names_modes_and_links_each_change_it() {
        let dir = pack();
        let mut seen = vec![tree_digest(dir.path()).expect("digest")];
        let mut changed = |change: &dyn Fn(&Path)| {
            change(dir.path());
            let now = tree_digest(dir.path()).expect("digest");
            assert!(!seen.contains(&now), "a change kept an earlier digest");
            seen.push(now);
        };
        changed(&|p| std::fs::write(p.join("actions/a.sh"), "echo ho\n").expect("write"));
        changed(&|p| std::fs::rename(p.join("actions/a.sh"), p.join("actions/b.sh")).expect("mv"));
        changed(&|p| {
            std::fs::set_permissions(
                p.join("actions/b.sh"),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod")
        });
        changed(&|p| std::os::unix::fs::symlink("b.sh", p.join("actions/c.sh")).expect("ln"));
        changed(&|p| std::fs::create_dir(p.join("lib")).expect("mkdir"));
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let err = tree_digest(Path::new("/nonexistent/pack")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/pack"), "{err}");
    }
}
