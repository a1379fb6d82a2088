//! Sealing key values at rest: ChaCha20-Poly1305 (an authenticated cipher, from `ring`) under the
//! operator's key-encryption key, a fresh random nonce per value, and the value's scope and name
//! as associated data, so a ciphertext that was changed, or moved to another name, is refused
//! instead of decrypted to garbage.

use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Bytes of a key-encryption key.
pub const KEY_LEN: usize = 32;
/// The largest key file read (64 hex digits and some white space).
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Why a key-encryption key cannot be used. Messages never show the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read (missing, not a regular file, too large).
    #[error("key-encryption key {}: cannot read", file.display())]
    Read {
        /// The key file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("key-encryption key {}: expected {} hex digits (make one with `packbox keys generate-kek FILE`)", file.display(), KEY_LEN * 2)]
    Malformed {
        /// The key file.
        file: PathBuf,
    },
    /// The key file is inside the state folder, next to what it protects.
    #[error(
        "key-encryption key {}: it is inside the state folder {}; keep it elsewhere (a copy of the state folder must not carry its key)",
        file.display(), state_dir.display()
    )]
    InsideState {
        /// The key file.
        file: PathBuf,
        /// The state folder.
        state_dir: PathBuf,
    },
    /// A new key file could not be written.
    #[error("key-encryption key {}: cannot write", file.display())]
    Write {
        /// The key file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The operator's key-encryption key. `Debug` never shows it; its bytes are wiped when dropped.
pub struct KeyEncryptionKey {
    key: LessSafeKey,
    /// Where it came from, for messages.
    file: PathBuf,
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEncryptionKey({})", self.file.display())
    }
}

/// A sealed value failed to open: changed, moved, or sealed under another key.
#[derive(Debug)]
pub struct Unsealable;

impl KeyEncryptionKey {
    /// Reads a key file (64 hex digits), refusing one inside `state_dir`.
    pub fn load(file: &Path, state_dir: &Path) -> Result<KeyEncryptionKey, KeyFileError> {
        if is_inside(file, state_dir) {
            return Err(KeyFileError::InsideState {
                file: file.to_path_buf(),
                state_dir: state_dir.to_path_buf(),
            });
        }
        let read = crate::common::input::read_regular_file(file, MAX_KEY_FILE_BYTES).map_err(
            |source| KeyFileError::Read {
                file: file.to_path_buf(),
                source,
            },
        )?;
        let text = Zeroizing::new(read);
        warn_if_readable_by_all(file);
        let malformed = || KeyFileError::Malformed {
            file: file.to_path_buf(),
        };
        let hex_text = std::str::from_utf8(&text).map_err(|_| malformed())?.trim();
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(hex_text, bytes.as_mut()).map_err(|_| malformed())?;
        // ChaCha20-Poly1305 takes exactly the 32 bytes decoded above.
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes.as_ref()).map_err(|_| malformed())?;
        Ok(KeyEncryptionKey {
            key: LessSafeKey::new(unbound),
            file: file.to_path_buf(),
        })
    }

    /// Writes a new random key to `file` (mode 0600), refusing to replace one or to write
    /// inside `state_dir`.
    pub fn generate(file: &Path, state_dir: &Path) -> Result<(), KeyFileError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if is_inside(file, state_dir) {
            return Err(KeyFileError::InsideState {
                file: file.to_path_buf(),
                state_dir: state_dir.to_path_buf(),
            });
        }
        let write_error = |source| KeyFileError::Write {
            file: file.to_path_buf(),
            source,
        };
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| write_error(std::io::Error::other("no randomness from the system")))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(bytes.as_ref())));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(write_error)?;
        out.write_all(text.as_bytes()).map_err(write_error)?;
        out.sync_all().map_err(write_error)
    }

    /// The file the key came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Seals `plain` with `context` as associated data: a random nonce followed by the
    /// ciphertext and its tag.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, Unsealable> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Unsealable)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut sealed,
            )
            .map_err(|_| Unsealable)?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made with the same `context`; anything changed, moved or
    /// sealed under another key is refused.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unsealable> {
        if sealed.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut buffer = Zeroizing::new(body.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut buffer)
            .map_err(|_| Unsealable)?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

/// Whether `file` is (or would be) inside `dir`, symlinks resolved where they exist.
fn is_inside(file: &Path, dir: &Path) -> bool {
    let absolute = |path: &Path| -> PathBuf {
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        // The deepest existing ancestor, resolved, plus what does not exist yet.
        let mut existing = joined.as_path();
        let mut rest = Vec::new();
        loop {
            if let Ok(real) = existing.canonicalize() {
                let mut out = real;
                out.extend(rest.iter().rev());
                return out;
            }
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return joined,
            }
        }
    };
    absolute(file).starts_with(absolute(dir))
}

fn warn_if_readable_by_all(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            file = %file.display(),
            "the key-encryption key is readable by every user; make it readable by its owner (chmod 600)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_in(dir: &Path, name: &str) -> KeyEncryptionKey {
        let file = dir.join(name);
        KeyEncryptionKey::generate(&file, &dir.join("state")).expect("generate");
        KeyEncryptionKey::load(&file, &dir.join("state")).expect("load")
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = key_in(dir.path(), "a.kek");
        let other = key_in(dir.path(), "b.kek");
        let sealed = key.seal(b"system\0token", b"s3cret-value").expect("seal");
        assert!(!sealed.windows(12).any(|w| w == b"s3cret-value"));
        assert_eq!(
            key.open(b"system\0token", &sealed)
                .expect("open")
                .as_slice(),
            b"s3cret-value"
        );
        assert!(key.open(b"system\0other", &sealed).is_err(), "moved");
        assert!(other.open(b"system\0token", &sealed).is_err(), "other key");
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert!(key.open(b"system\0token", &tampered).is_err(), "byte {at}");
        }
        assert!(key.open(b"system\0token", &sealed[..5]).is_err());
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(
            sealed,
            key.seal(b"system\0token", b"s3cret-value").expect("seal")
        );
    }

    #[test]
    fn key_files_are_checked_and_never_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state");
        let bad = dir.path().join("bad.kek");
        std::fs::write(&bad, "not-hex-0123456789abcdef").expect("write");
        let err = KeyEncryptionKey::load(&bad, &state)
            .expect_err("malformed")
            .to_string();
        assert!(
            err.contains("hex digits") && !err.contains("0123456789abcdef"),
            "{err}"
        );
        let short = dir.path().join("short.kek");
        std::fs::write(&short, "00ff").expect("write");
        assert!(KeyEncryptionKey::load(&short, &state).is_err());
        let inside = state.join("sub/kek");
        let err = KeyEncryptionKey::generate(&inside, &state).expect_err("inside");
        assert!(err.to_string().contains("inside the state folder"), "{err}");
        assert!(!inside.exists());
        let file = dir.path().join("k.kek");
        KeyEncryptionKey::generate(&file, &state).expect("generate");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        assert!(
            KeyEncryptionKey::generate(&file, &state).is_err(),
            "never replaced"
        );
        let loaded = KeyEncryptionKey::load(&file, &state).expect("load");
        assert!(!format!("{loaded:?}").contains(&std::fs::read_to_string(&file).expect("read")));
    }
}
