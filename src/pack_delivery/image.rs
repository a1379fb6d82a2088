//! The pack as an image layer, for engines whose nodes cannot see this machine's files: the
//! action's image (its environment or runtime image) with the pack copied to `/pack`, tagged by
//! the SHA-256 of the pack tree and the base image's id, built through the engine once per
//! content. With a registry, the image is pushed and named by the digest the registry gave it,
//! so that every node runs exactly these bytes; without one, it is named by its image id (the
//! engine then never tries to pull it).
//!
//! The tree digest is [`crate::pack_delivery::tree`]'s: the same pack checked out twice gives the same
//! image, and the same digest names it in a pack volume and in a run's record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use tokio_util::sync::CancellationToken;

use crate::common::owned::Owned;
use crate::engine::{BuildSpec, EngineError, SharedEngine, SwarmEngine};
use crate::pack_delivery::tree::{Limits, PackTree, TreeError};

/// `packbox.kind` of pack images.
pub const KIND: &str = "pack-image";
/// Label: the SHA-256 of the pack tree the image holds.
pub const DIGEST_LABEL: &str = "packbox.pack_digest";
/// Label: the id of the image a pack image is built on.
pub const BASE_LABEL: &str = "packbox.base_image";
/// The repository pack images are tagged in (under the registry, when there is one).
const REPOSITORY: &str = "packbox-pack";
/// Bytes of pack a pack image may hold: the build context is made in memory.
pub const MAX_PACK_BYTES: u64 = 128 << 20;
/// Entries a pack image may hold.
const MAX_ENTRIES: usize = 50_000;

/// The pack could not be made into an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackImageError {
    /// A file or folder of the pack could not be read.
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
    /// The pack is over the entries or bytes a pack image may hold (its build context is made
    /// in memory).
    #[error("pack {pack} is too large for a pack image ({what}; at most {MAX_ENTRIES} entries and {} MiB)", MAX_PACK_BYTES >> 20)]
    TooLarge {
        /// The pack's ref.
        pack: String,
        /// How much was read before the limit was hit.
        what: String,
    },
    /// A file of the pack changed while its image's context was being written.
    #[error("pack {pack} changed while it was being read; run again")]
    Changed {
        /// The pack's ref.
        pack: String,
    },
    /// The engine could not build the image.
    #[error("building the pack image of {pack} on {base}")]
    Build {
        /// The pack's ref.
        pack: String,
        /// The image it was built on.
        base: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The image could not be pushed to the registry the Swarm's nodes pull from.
    #[error("pushing the pack image of {pack} to registry {registry}")]
    Push {
        /// The pack's ref.
        pack: String,
        /// The registry (`HOST:PORT`).
        registry: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The run was cancelled while its pack image was made.
    #[error("making the pack image of {pack} was cancelled")]
    Cancelled {
        /// The pack's ref.
        pack: String,
    },
}

impl PackImageError {
    /// Whether the pack itself is at fault (unreadable, too large), not the engine.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            PackImageError::Read { .. }
                | PackImageError::TooLarge { .. }
                | PackImageError::Changed { .. }
        )
    }
}

/// A pack image ready for a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackImage {
    /// What a service runs: `REGISTRY/packbox-pack/REF@sha256:...`, or the local image id.
    pub reference: String,
    /// The SHA-256 of the pack tree.
    pub pack_digest: String,
}

/// Pack images made by this process, by tag (plus registry), so each is built and pushed once.
static MADE: LazyLock<std::sync::Mutex<HashMap<String, MadeSlot>>> =
    LazyLock::new(Default::default);

/// One pack image's slot: locked while it is made, then holding it.
type MadeSlot = Arc<tokio::sync::Mutex<Option<PackImage>>>;

/// What a pack image is made from.
#[derive(Clone, Copy, Debug)]
pub struct PackImageSource<'a> {
    /// The pack's ref, for the tag and messages.
    pub pack_ref: &'a str,
    /// The pack's folder, copied to `/pack` in the image.
    pub pack_dir: &'a Path,
    /// The pack tree's SHA-256 when the run was planned: names the image, so the pack is read
    /// only to build one (and refused then if it changed since).
    pub pack_digest: &'a str,
    /// The image the action runs on (an environment or runtime image).
    pub base_image: &'a str,
}

/// Makes sure the pack image for `source` exists (and is in `registry`, when given); returns
/// the reference a service runs.
pub async fn ensure(
    engine: &SharedEngine,
    swarm: &dyn SwarmEngine,
    owned: &Owned,
    source: PackImageSource<'_>,
    registry: Option<&str>,
    cancel: &CancellationToken,
) -> Result<PackImage, PackImageError> {
    let pack = source.pack_ref.to_string();
    let cancelled = || PackImageError::Cancelled { pack: pack.clone() };
    let base_image = source.base_image;
    let build_error = |error: EngineError| PackImageError::Build {
        pack: pack.clone(),
        base: base_image.to_string(),
        source: error,
    };
    let base_id = engine
        .image_id(source.base_image)
        .await
        .map_err(build_error)?
        .ok_or_else(|| PackImageError::Build {
            pack: pack.clone(),
            base: source.base_image.to_string(),
            source: EngineError::Api {
                what: format!("inspecting image {}", source.base_image),
                source: "no such image".into(),
            },
        })?;
    let tag = image_tag(source.pack_digest, &base_id);
    let repository = format!("{REPOSITORY}/{pack}");
    let key = format!("{}/{repository}:{tag}", registry.unwrap_or(""));
    let slot = {
        let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(made.entry(key).or_default())
    };
    let mut slot = tokio::select! {
        slot = slot.lock() => slot,
        () = cancel.cancelled() => return Err(cancelled()),
    };
    if let Some(made) = slot.as_ref() {
        return Ok(made.clone());
    }
    let local = format!("{repository}:{tag}");
    // Only an image packbox built (its id recorded) is used: one someone else put under the tag
    // is built over, which moves the tag.
    let present = engine.image_id(&local).await.map_err(build_error)?;
    let image_id = match present.filter(|id| owned.has_image(id)) {
        Some(id) => id,
        None => {
            let read = {
                let (pack, dir) = (pack.clone(), source.pack_dir.to_path_buf());
                tokio::task::spawn_blocking(move || read_tree(&pack, &dir))
            };
            let tree = tokio::select! {
                tree = read => tree.map_err(|e| PackImageError::Read {
                    pack: pack.clone(),
                    path: source.pack_dir.to_path_buf(),
                    source: std::io::Error::other(e),
                })??,
                () = cancel.cancelled() => return Err(cancelled()),
            };
            // The image is named by the planned content: it must hold that content.
            if tree.digest != source.pack_digest {
                return Err(PackImageError::Changed { pack: pack.clone() });
            }
            let spec = BuildSpec {
                tag: local.clone(),
                context_tar: tree.context,
                dockerfile: "Dockerfile".into(),
                build_args: HashMap::from([("BASE".to_string(), base_id.clone())]),
                labels: HashMap::from([
                    ("packbox.managed".to_string(), "true".to_string()),
                    ("packbox.kind".to_string(), KIND.to_string()),
                    ("packbox.pack".to_string(), pack.clone()),
                    (DIGEST_LABEL.to_string(), source.pack_digest.to_string()),
                    (BASE_LABEL.to_string(), base_id.clone()),
                ]),
                network_mode: "none".into(),
                // Copying files needs no more than the engine's default.
                memory_bytes: None,
                no_cache: true,
            };
            let mut on_line = |line: &str| tracing::debug!(line = line.trim_end(), "pack image");
            let id = tokio::select! {
                built = engine.build_image(spec, &mut on_line) => built.map_err(build_error)?,
                () = cancel.cancelled() => return Err(cancelled()),
            };
            owned
                .add_image(&id)
                .map_err(|source| PackImageError::Read {
                    pack: pack.clone(),
                    path: PathBuf::from(crate::common::owned::FILE_NAME),
                    source,
                })?;
            id
        }
    };
    let reference = match registry {
        None => image_id,
        Some(registry) => {
            let push_error = |source| PackImageError::Push {
                pack: pack.clone(),
                registry: registry.to_string(),
                source,
            };
            let remote = format!("{registry}/{repository}");
            let pushed = async {
                swarm.tag_image(&image_id, &remote, &tag).await?;
                swarm.push_image(&remote, &tag).await
            };
            let digest = tokio::select! {
                digest = pushed => digest.map_err(push_error)?,
                () = cancel.cancelled() => return Err(cancelled()),
            };
            format!("{remote}@{digest}")
        }
    };
    let made = PackImage {
        reference,
        pack_digest: source.pack_digest.to_string(),
    };
    *slot = Some(made.clone());
    Ok(made)
}

/// The tag of a pack image: the pack tree's digest (the content) and the base image's id (what
/// it sits on), both shortened; the labels hold them in full.
fn image_tag(pack_digest: &str, base_id: &str) -> String {
    let base = base_id.trim_start_matches("sha256:");
    format!(
        "{}-{}",
        &pack_digest[..pack_digest.len().min(32)],
        &base[..base.len().min(12)]
    )
}

/// The limits of a pack made into an image: the build context is made in memory.
const LIMITS: Limits = Limits {
    max_entries: MAX_ENTRIES,
    max_bytes: MAX_PACK_BYTES,
};

/// A pack tree read once: the digest of what was written and the build context (a Dockerfile
/// and the pack under `pack/`).
struct Tree {
    digest: String,
    context: Vec<u8>,
}

/// Reads the pack into its build context (a Dockerfile, and the pack under `pack/`), with the
/// digest of what was written.
fn read_tree(pack: &str, root: &Path) -> Result<Tree, PackImageError> {
    let tree = PackTree::read(pack, root, LIMITS)?;
    let io_error = |source| PackImageError::Read {
        pack: pack.to_string(),
        path: root.to_path_buf(),
        source,
    };
    let mut builder = tar::Builder::new(Vec::new());
    let dockerfile = b"ARG BASE\nFROM ${BASE}\nCOPY pack/ /pack/\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(dockerfile.len() as u64);
    builder
        .append_data(&mut header, "Dockerfile", &dockerfile[..])
        .map_err(io_error)?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_size(0);
    builder
        .append_data(&mut header, "pack", std::io::empty())
        .map_err(io_error)?;
    let digest = tree.append_to(&mut builder, "pack/")?;
    let context = builder.into_inner().map_err(io_error)?;
    Ok(Tree { digest, context })
}

impl From<TreeError> for PackImageError {
    fn from(error: TreeError) -> PackImageError {
        match error {
            TreeError::Read { pack, path, source } => PackImageError::Read { pack, path, source },
            TreeError::TooLarge { pack, what, .. } => PackImageError::TooLarge { pack, what },
            TreeError::Changed { pack, .. } => PackImageError::Changed { pack },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::common::owned::Owned;
    use crate::engine::fake::{BuildScript, Call, FakeEngine};

    /// A pack folder with unique content (the process-wide cache keys on content).
    fn pack() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("actions")).expect("mkdir");
        std::fs::write(dir.path().join("pack.yaml"), "ref: p\n").expect("write");
        std::fs::write(dir.path().join("actions/a.sh"), "echo hi\n").expect("write");
        std::fs::write(dir.path().join("unique"), uuid::Uuid::new_v4().to_string()).expect("write");
        dir
    }

    fn names(context: &[u8]) -> Vec<(String, u32)> {
        let mut archive = tar::Archive::new(context);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    e.header().mode().expect("mode"),
                )
            })
            .collect()
    }

    #[test]
    fn the_digest_is_the_content_not_the_times() {
        let dir = pack();
        let first = read_tree("p", dir.path()).expect("read");
        let file = dir.path().join("actions/a.sh");
        let bytes = std::fs::read(&file).expect("read");
        std::fs::remove_file(&file).expect("rm");
        std::fs::write(&file, bytes).expect("write again");
        let again = read_tree("p", dir.path()).expect("read");
        assert_eq!(first.digest, again.digest);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mode = read_tree("p", dir.path()).expect("read");
        assert_ne!(first.digest, mode.digest, "permission bits count");
        std::fs::write(&file, "echo changed\n").expect("write");
        let content = read_tree("p", dir.path()).expect("read");
        assert_ne!(mode.digest, content.digest, "content counts");
    }

    #[test]
    fn the_context_holds_the_dockerfile_and_the_pack_without_special_files_or_set_id_bits() {
        let dir = pack();
        let file = dir.path().join("actions/a.sh");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        std::os::unix::fs::symlink("a.sh", dir.path().join("actions/link.sh")).expect("symlink");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let tree = read_tree("p", dir.path()).expect("read");
        let entries = names(&tree.context);
        let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths[0], "Dockerfile");
        assert!(paths.contains(&"pack/actions/a.sh"), "{paths:?}");
        assert!(paths.contains(&"pack/actions/link.sh"), "{paths:?}");
        assert!(!paths.iter().any(|p| p.contains("fifo")), "{paths:?}");
        let mode = entries
            .iter()
            .find(|(p, _)| p == "pack/actions/a.sh")
            .map(|(_, m)| *m);
        assert_eq!(mode, Some(0o755), "setuid dropped");
    }

    #[test]
    fn a_pack_over_the_limit_is_refused_naming_it() {
        let dir = pack();
        let big = std::fs::File::create(dir.path().join("big")).expect("create");
        big.set_len(MAX_PACK_BYTES + 1).expect("sparse file");
        let err = read_tree("p", dir.path()).err().expect("too large");
        assert!(matches!(err, PackImageError::TooLarge { .. }), "{err}");
        assert!(err.is_input());
        assert!(err.to_string().contains("pack p"), "{err}");
    }

    /// The digest a plan takes of the pack.
    fn digest(dir: &Path) -> String {
        crate::pack_delivery::volume::tree_digest("p", dir).expect("digest")
    }

    fn engine() -> Arc<FakeEngine> {
        let fake = FakeEngine::new();
        fake.add_image("packbox/shell:5.2", &[], 0);
        fake
    }

    #[tokio::test(start_paused = true)]
    async fn a_pack_image_is_built_once_and_named_by_its_id_without_a_registry() {
        let owned = Owned::for_tests();
        let fake = engine();
        let shared: SharedEngine = fake.clone();
        let dir = pack();
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: dir.path(),
            pack_digest: &digest(dir.path()),
            base_image: "packbox/shell:5.2",
        };
        let cancel = CancellationToken::new();
        let first = ensure(&shared, fake.as_ref(), &owned, source, None, &cancel)
            .await
            .expect("made");
        let second = ensure(&shared, fake.as_ref(), &owned, source, None, &cancel)
            .await
            .expect("again");
        assert_eq!(first, second);
        assert!(
            first.reference.starts_with("sha256:"),
            "{}",
            first.reference
        );
        assert_eq!(fake.count(|c| matches!(c, Call::Build(_))), 1);
        assert!(fake.pushed().is_empty());
        let tag = fake
            .calls()
            .into_iter()
            .find_map(|c| match c {
                Call::Build(tag) => Some(tag),
                _ => None,
            })
            .expect("a build");
        assert!(tag.starts_with("packbox-pack/p:"), "{tag}");
        assert!(tag.contains(&first.pack_digest[..32]), "{tag}");
    }

    /// Issue 26, item 3: a co-tenant of the engine built an image under the pack image's tag
    /// (it is computed from the public digest) with packbox's labels; it was run as the pack.
    #[tokio::test(start_paused = true)]
    async fn an_image_packbox_did_not_build_under_the_pack_tag_is_built_over() {
        let owned = Owned::for_tests();
        let fake = engine();
        let shared: SharedEngine = fake.clone();
        let dir = pack();
        let pack_digest = digest(dir.path());
        let base_id = fake.image_id_now("packbox/shell:5.2");
        let tag = format!("{REPOSITORY}/p:{}", image_tag(&pack_digest, &base_id));
        let planted = fake.add_image(
            &tag,
            &[("packbox.managed", "true"), ("packbox.kind", "pack")],
            0,
        );
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: dir.path(),
            pack_digest: &pack_digest,
            base_image: "packbox/shell:5.2",
        };
        let made = ensure(
            &shared,
            fake.as_ref(),
            &owned,
            source,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect("made");
        assert_eq!(fake.count(|c| matches!(c, Call::Build(_))), 1, "built over");
        assert_ne!(made.reference, planted);
        assert_eq!(
            fake.image_id_now(&tag),
            made.reference,
            "the tag moved to packbox's image"
        );
        assert!(owned.has_image(&made.reference));
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_registry_the_image_is_pushed_once_and_named_by_digest() {
        let owned = Owned::for_tests();
        let fake = engine();
        let shared: SharedEngine = fake.clone();
        let dir = pack();
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: dir.path(),
            pack_digest: &digest(dir.path()),
            base_image: "packbox/shell:5.2",
        };
        let cancel = CancellationToken::new();
        let made = ensure(
            &shared,
            fake.as_ref(),
            &owned,
            source,
            Some("127.0.0.1:5000"),
            &cancel,
        )
        .await
        .expect("made");
        ensure(
            &shared,
            fake.as_ref(),
            &owned,
            source,
            Some("127.0.0.1:5000"),
            &cancel,
        )
        .await
        .expect("again");
        assert!(
            made.reference
                .starts_with("127.0.0.1:5000/packbox-pack/p@sha256:"),
            "{}",
            made.reference
        );
        assert_eq!(fake.pushed().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_build_is_reported_as_cancelled() {
        let owned = Owned::for_tests();
        let fake = engine();
        fake.set_build(BuildScript::Hang);
        let shared: SharedEngine = fake.clone();
        let dir = pack();
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: dir.path(),
            pack_digest: &digest(dir.path()),
            base_image: "packbox/shell:5.2",
        };
        let cancel = CancellationToken::new();
        let making = ensure(&shared, fake.as_ref(), &owned, source, None, &cancel);
        let cancelling = async {
            fake.until(|f| f.count(|c| matches!(c, Call::Build(_))) == 1)
                .await;
            cancel.cancel();
        };
        let (made, ()) = tokio::join!(making, cancelling);
        assert!(matches!(made, Err(PackImageError::Cancelled { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn the_planned_digest_names_the_image_and_a_changed_pack_is_refused_unbuilt() {
        let owned = Owned::for_tests();
        let fake = engine();
        let shared: SharedEngine = fake.clone();
        let dir = pack();
        let planned = digest(dir.path());
        std::fs::write(dir.path().join("actions/a.sh"), "echo changed\n").expect("write");
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: dir.path(),
            pack_digest: &planned,
            base_image: "packbox/shell:5.2",
        };
        let cancel = CancellationToken::new();
        let err = ensure(&shared, fake.as_ref(), &owned, source, None, &cancel)
            .await
            .expect_err("changed since planned");
        assert!(matches!(err, PackImageError::Changed { .. }), "{err}");
        assert_eq!(
            fake.count(|c| matches!(c, Call::Build(_))),
            0,
            "nothing built"
        );
        // Planned again, it builds; then the folder is not read to find the image again.
        let planned = digest(dir.path());
        let source = PackImageSource {
            pack_digest: &planned,
            ..source
        };
        let made = ensure(&shared, fake.as_ref(), &owned, source, None, &cancel)
            .await
            .expect("made");
        let gone = dir.path().to_path_buf();
        drop(dir);
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: &gone,
            pack_digest: &planned,
            base_image: "packbox/shell:5.2",
        };
        let again = ensure(&shared, fake.as_ref(), &owned, source, None, &cancel)
            .await
            .expect("found by name");
        assert_eq!(again, made);
        assert_eq!(fake.count(|c| matches!(c, Call::Build(_))), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_base_image_is_a_build_error_naming_it() {
        let owned = Owned::for_tests();
        let fake = FakeEngine::new();
        let shared: SharedEngine = fake.clone();
        let dir = pack();
        let source = PackImageSource {
            pack_ref: "p",
            pack_dir: dir.path(),
            pack_digest: &digest(dir.path()),
            base_image: "packbox/nothing:1",
        };
        let err = ensure(
            &shared,
            fake.as_ref(),
            &owned,
            source,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("no base");
        assert!(err.to_string().contains("packbox/nothing:1"), "{err}");
    }
}
