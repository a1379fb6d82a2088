//! Debian base images (`packbox/base:SUITE`) imported through the engine's API from a root file
//! system tarball, so that `packbox images build` works on an engine that has no registry and
//! cannot see this machine's files: the tarball is streamed to the engine (`docker import` over
//! the API), never copied whole into memory. `images/bootstrap-base --tar DIR` makes the tarball
//! with debootstrap.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{ContainerEngine, EngineError};

/// What an imported image gets, since a root file system tarball carries no image config: the
/// same as `images/bootstrap-base` gives the images it imports itself.
const CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "CMD [\"bash\"]",
    "LABEL packbox.managed=true",
    "LABEL packbox.kind=base",
];

/// A base image that could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    /// `--base-rootfs` names a suite that is not a Debian suite name.
    #[error(
        "--base-rootfs {suite}=...: `{suite}` is not a suite name (expected lowercase letters, e.g. bookworm)"
    )]
    BadSuite {
        /// The suite name as given.
        suite: String,
    },
    /// The tarball cannot be read.
    #[error("--base-rootfs {suite}={}: cannot read it", path.display())]
    Read {
        /// The suite the tarball was given for.
        suite: String,
        /// The tarball's path as given.
        path: PathBuf,
        /// Why it could not be opened or is not a regular file.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed to report or import the image.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl BaseImageError {
    /// Whether the command line is at fault (exit 2) rather than the engine (exit 125).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            BaseImageError::BadSuite { .. } | BaseImageError::Read { .. }
        )
    }
}

/// What happened to one base image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseImage {
    /// Its tag, `packbox/base:SUITE`.
    pub tag: String,
    /// The engine's id of the image under that tag.
    pub id: String,
    /// Whether this call imported it (false: the engine had it).
    pub imported: bool,
}

/// The image tag of a suite's base.
pub fn tag(suite: &str) -> String {
    format!("packbox/base:{suite}")
}

/// Makes sure the engine has `packbox/base:SUITE`, importing `rootfs` (a tar of a root file
/// system) when it does not.
pub async fn ensure(
    engine: &dyn ContainerEngine,
    suite: &str,
    rootfs: &Path,
) -> Result<BaseImage, BaseImageError> {
    let valid = suite.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && suite
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(BaseImageError::BadSuite {
            suite: suite.into(),
        });
    }
    let tag = tag(suite);
    if let Some(id) = engine.image_id(&tag).await? {
        return Ok(BaseImage {
            tag,
            id,
            imported: false,
        });
    }
    let read_error = |source| BaseImageError::Read {
        suite: suite.into(),
        path: rootfs.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(rootfs).await.map_err(read_error)?;
    let metadata = file.metadata().await.map_err(read_error)?;
    if !metadata.is_file() {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
    let changes: Vec<String> = CHANGES.iter().map(|c| c.to_string()).collect();
    let id = engine.import_rootfs(&tag, Box::pin(body), &changes).await?;
    Ok(BaseImage {
        tag,
        id,
        imported: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;

    #[tokio::test]
    async fn a_missing_base_is_imported_once() {
        let fake = FakeEngine::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("bookworm.tar");
        std::fs::write(&rootfs, b"not really a tar, the fake does not care").expect("write");
        let first = ensure(fake.as_ref(), "bookworm", &rootfs)
            .await
            .expect("imported");
        assert!(first.imported);
        assert_eq!(first.tag, "packbox/base:bookworm");
        let again = ensure(fake.as_ref(), "bookworm", &rootfs)
            .await
            .expect("present");
        assert!(!again.imported);
        assert_eq!(again.id, first.id);
    }

    #[tokio::test]
    async fn bad_suites_and_unreadable_tarballs_are_the_users_to_fix() {
        let fake = FakeEngine::new();
        let err = ensure(fake.as_ref(), "Bookworm!", Path::new("/x.tar"))
            .await
            .expect_err("bad suite");
        assert!(err.is_input());
        let err = ensure(
            fake.as_ref(),
            "trixie",
            Path::new("/nonexistent/trixie.tar"),
        )
        .await
        .expect_err("missing file");
        assert!(err.is_input());
        assert!(err.to_string().contains("/nonexistent/trixie.tar"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ensure(fake.as_ref(), "trixie", dir.path())
            .await
            .expect_err("a folder");
        assert!(err.is_input());
        assert!(!fake.has_image("packbox/base:trixie"), "nothing made");
    }
}
