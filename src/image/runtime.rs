//! Runtime images (`packbox/python:3.11`, ...): present on the engine, or built from the recipe
//! the catalog names. No registry is needed: recipes start from `packbox/base:<suite>`, which
//! `images/bootstrap-base` makes.
//!
//! No image is ever pulled by a name someone else controls: a tag on a public registry
//! (`packbox/python:3.11`) is whatever the owner of that namespace publishes today. A missing
//! image is built from its recipe; a catalog entry without a recipe may name a registry image
//! only pinned by digest (`repo@sha256:...`), and packbox checks after the pull that the engine
//! recorded that digest.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Runtime, RuntimeVersion};
use crate::engine::{BuildSpec, ContainerEngine, EngineError};

/// A runtime image that is not there and cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The runtime image is not on the engine and has to be built first.
    #[error(
        "runtime image {image} is missing; build it with `packbox images build` (scripts/build-images)"
    )]
    Missing {
        /// The runtime image's name as the catalog gives it.
        image: String,
    },
    /// Missing, no recipe, and a name that is not pinned: packbox will not pull it.
    #[error(
        "runtime image {image} ({runtime} {version}) is missing and the catalog names no recipe for it; packbox pulls only images pinned by digest (image@sha256:...), never by a tag"
    )]
    Unpinned {
        /// The runtime image's name as the catalog gives it.
        image: String,
        /// The runtime it is for.
        runtime: String,
        /// The runtime version it is for.
        version: String,
    },
    /// The recipe names a Dockerfile the catalog does not have.
    #[error("runtime image {image}: the catalog has no recipe file {dockerfile}")]
    RecipeMissing {
        /// The runtime image's name as the catalog gives it.
        image: String,
        /// The Dockerfile path the recipe names.
        dockerfile: String,
    },
    /// Pinned by digest, but the pull failed.
    #[error("runtime image {image} is missing and could not be pulled: {reason}")]
    PullFailed {
        /// The runtime image's name as the catalog gives it.
        image: String,
        /// The engine's or registry's answer, or that none came in time.
        reason: String,
    },
    /// Pulled, but the engine does not record the digest the catalog pinned.
    #[error(
        "runtime image {image}: after the pull the engine records digests {found:?}, not {digest}; the image was removed"
    )]
    DigestMismatch {
        /// The runtime image's name as the catalog gives it.
        image: String,
        /// The digest the catalog pins.
        digest: String,
        /// The digests the engine recorded for the pulled image.
        found: Vec<String>,
    },
    /// The build context (the recipe's Dockerfile in a tar) could not be made.
    #[error("building the tar context for {image} failed")]
    Context {
        /// The runtime image's name as the catalog gives it.
        image: String,
        /// What writing the tar failed on.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed to look up, build, pull or remove the image.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Pulling or building was cancelled; nothing half-made is left under the image's name.
    #[error("making runtime image {image} was cancelled")]
    Cancelled {
        /// The runtime image's name as the catalog gives it.
        image: String,
    },
}

/// How long a pull may take before the registry counts as unreachable.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// What happened to one runtime image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// The engine already had it.
    Present {
        /// The engine's image id.
        id: String,
    },
    /// It was pulled from its registry now.
    Pulled {
        /// The engine's image id.
        id: String,
    },
    /// packbox built it now.
    Built {
        /// The engine's image id.
        id: String,
    },
}

impl ImageState {
    /// The image's id, however it came to be there.
    pub fn id(&self) -> &str {
        match self {
            ImageState::Present { id } | ImageState::Pulled { id } | ImageState::Built { id } => id,
        }
    }
}

/// Makes sure a runtime version's image exists: present; else, when the catalog pins it by
/// digest, pulled and checked; else built from its recipe. An unpinned name without a recipe is
/// refused, never pulled. `on_line` receives the build's output lines.
pub async fn ensure(
    engine: &dyn ContainerEngine,
    catalog: &Catalog,
    runtime: &Runtime,
    version: &RuntimeVersion,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<ImageState, ImageError> {
    // A recipe's image is current when it carries the recipe's digest: an image built from an
    // older recipe (before `git` joined it, say) is built again.
    let recipe_digest = version.recipe.as_ref().and_then(|recipe| {
        catalog
            .recipe_dockerfile(recipe)
            .map(|dockerfile| recipe_digest(dockerfile, recipe))
    });
    if let Some(image) = engine.image_labels(&version.image).await? {
        let current = match &recipe_digest {
            None => true,
            Some(digest) => image.labels.get(RECIPE_LABEL) == Some(digest),
        };
        if current {
            return Ok(ImageState::Present { id: image.id });
        }
        tracing::info!(image = %version.image, "the image predates its recipe; building it again");
    }
    let cancelled = || ImageError::Cancelled {
        image: version.image.clone(),
    };
    if let Some(digest) = pinned_digest(&version.image) {
        return pull_pinned(engine, &version.image, digest, cancel).await;
    }
    let Some(recipe) = version.recipe.as_ref() else {
        return Err(ImageError::Unpinned {
            image: version.image.clone(),
            runtime: runtime.name.clone(),
            version: version.version.clone(),
        });
    };
    let dockerfile =
        catalog
            .recipe_dockerfile(recipe)
            .ok_or_else(|| ImageError::RecipeMissing {
                image: version.image.clone(),
                dockerfile: recipe.dockerfile.clone(),
            })?;
    let context_tar = dockerfile_context(dockerfile).map_err(|source| ImageError::Context {
        image: version.image.clone(),
        source,
    })?;
    let mut labels = HashMap::from([
        ("packbox.kind".to_string(), "runtime".to_string()),
        ("packbox.runtime".to_string(), runtime.name.clone()),
        ("packbox.version".to_string(), version.version.clone()),
    ]);
    if let Some(digest) = recipe_digest {
        labels.insert(RECIPE_LABEL.to_string(), digest);
    }
    let spec = BuildSpec {
        tag: version.image.clone(),
        context_tar,
        dockerfile: "Dockerfile".into(),
        build_args: recipe.args.clone().into_iter().collect(),
        labels,
        // The recipe installs packages from Debian's mirror.
        network_mode: "bridge".into(),
        // The catalog's own recipe (the operator's), not a pack's: no limit of packbox's.
        memory_bytes: None,
        no_cache: false,
    };
    // Dropping the build's stream closes its connection, which stops the engine's build; the
    // tag is only set when a build completes.
    let id = tokio::select! {
        built = engine.build_image(spec, &mut on_line) => built?,
        () = cancel.cancelled() => return Err(cancelled()),
    };
    Ok(ImageState::Built { id })
}

/// The label a runtime image carries naming the recipe it was built from.
const RECIPE_LABEL: &str = "packbox.recipe";

/// The label (name and value) an image built now from this version's recipe carries; `None`
/// when the version has no recipe.
#[cfg(test)]
pub(crate) fn recipe_label(
    catalog: &Catalog,
    version: &RuntimeVersion,
) -> Option<(String, String)> {
    let recipe = version.recipe.as_ref()?;
    let dockerfile = catalog.recipe_dockerfile(recipe)?;
    Some((RECIPE_LABEL.to_string(), recipe_digest(dockerfile, recipe)))
}

/// The SHA-256 of a recipe: its Dockerfile and its build arguments.
fn recipe_digest(dockerfile: &str, recipe: &crate::catalog::Recipe) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(dockerfile.as_bytes());
    for (key, value) in &recipe.args {
        hasher.update([0]);
        hasher.update(key.as_bytes());
        hasher.update([b'=']);
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The digest (`sha256:<64 hex>`) a reference is pinned by, if it is: `repo@sha256:...`.
pub fn pinned_digest(reference: &str) -> Option<&str> {
    let (repo, digest) = reference.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    let valid = !repo.is_empty()
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then_some(digest)
}

/// Pulls an image pinned by digest and checks that the engine recorded that digest for it; an
/// image that does not check out is removed.
async fn pull_pinned(
    engine: &dyn ContainerEngine,
    image: &str,
    digest: &str,
    cancel: &CancellationToken,
) -> Result<ImageState, ImageError> {
    let pulled = tokio::select! {
        pulled = tokio::time::timeout(PULL_TIMEOUT, engine.pull_image(image)) => pulled,
        () = cancel.cancelled() => return Err(ImageError::Cancelled { image: image.to_string() }),
    };
    let failed = |reason: String| ImageError::PullFailed {
        image: image.to_string(),
        reason,
    };
    match pulled {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(crate::common::error_text::chain(&e))),
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                PULL_TIMEOUT.as_secs()
            )));
        }
    }
    let id = engine
        .image_id(image)
        .await?
        .ok_or_else(|| failed("the engine reported the pull done but has no such image".into()))?;
    let found = engine.image_repo_digests(image).await?;
    if found.iter().any(|d| d.ends_with(&format!("@{digest}"))) {
        return Ok(ImageState::Pulled { id });
    }
    if let Err(e) = engine.remove_image(&id).await {
        tracing::warn!(
            "removing unverified image {image}: {}",
            crate::common::error_text::chain(&e)
        );
    }
    Err(ImageError::DigestMismatch {
        image: image.to_string(),
        digest: digest.to_string(),
        found,
    })
}

/// A build context holding only the Dockerfile, with a fixed mtime so identical recipes give
/// identical contexts.
fn dockerfile_context(dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Call, FakeEngine, PullScript};
    use std::io::Read;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A catalog with a `ruby` runtime whose one version names `image` (and no recipe).
    fn catalog_with(image: &str) -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("ruby.yaml"),
            format!(
                "name: ruby\naliases: [ruby]\ninterpreter: [ruby]\nversions:\n  - version: '3.3'\n    image: {image}\n    probe: {{command: [ruby, -v], pattern: 'ruby (\\d+\\.\\d+\\.\\d+)'}}\n"
            ),
        )
        .expect("write");
        let catalog = Catalog::load(Some(dir.path())).expect("catalog");
        (dir, catalog)
    }

    async fn ensure_ruby(fake: &FakeEngine, catalog: &Catalog) -> Result<ImageState, ImageError> {
        let runtime = catalog.resolve("ruby").expect("ruby");
        ensure(
            fake,
            catalog,
            runtime,
            &runtime.versions[0],
            &CancellationToken::new(),
            |_| {},
        )
        .await
    }

    fn pulls(fake: &FakeEngine) -> Vec<String> {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Pull(name) => Some(name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_sha256_digests_pin_a_reference() {
        assert_eq!(pinned_digest(&format!("repo/x@{DIGEST}")), Some(DIGEST));
        assert_eq!(
            pinned_digest(&format!("127.0.0.1:5000/x:1.0@{DIGEST}")),
            Some(DIGEST)
        );
        assert_eq!(pinned_digest("packbox/python:3.11"), None);
        assert_eq!(pinned_digest("repo@sha256:short"), None);
        assert_eq!(pinned_digest(&format!("@{DIGEST}")), None);
        assert_eq!(
            pinned_digest(&format!("repo@{}", DIGEST.to_uppercase())),
            None
        );
    }

    #[tokio::test]
    async fn an_unpinned_image_without_a_recipe_is_refused_and_never_pulled() {
        let fake = FakeEngine::new();
        fake.set_pull(PullScript::Succeed {
            repo_digests: vec![format!("ruby@{DIGEST}")],
        });
        let (_dir, catalog) = catalog_with("ruby:3.3");
        let err = ensure_ruby(&fake, &catalog).await.expect_err("unpinned");
        assert!(matches!(err, ImageError::Unpinned { .. }), "{err}");
        assert!(err.to_string().contains("pinned by digest"), "{err}");
        assert!(pulls(&fake).is_empty());
    }

    #[tokio::test]
    async fn an_image_of_an_older_recipe_is_built_again_a_current_one_kept() {
        let fake = FakeEngine::new();
        let catalog = Catalog::builtin().expect("catalog");
        let runtime = catalog.resolve("python").expect("python");
        let version = &runtime.versions[0];
        fake.add_image(&version.image, &[("packbox.recipe", "older")], 0);
        let cancel = CancellationToken::new();
        let ensure_now = || ensure(&*fake, &catalog, runtime, version, &cancel, |_| {});
        let state = ensure_now().await.expect("built");
        assert!(matches!(state, ImageState::Built { .. }), "{state:?}");
        let state = ensure_now().await.expect("present");
        assert!(matches!(state, ImageState::Present { .. }), "{state:?}");
    }

    /// A current image is known by one inspection: a label-filtered listing walks every image on
    /// the engine (70-100 ms with 300 images), and every run asks this of its runtime image.
    #[tokio::test]
    async fn a_current_image_is_known_by_one_inspection_never_a_listing() {
        let fake = FakeEngine::new();
        let catalog = Catalog::builtin().expect("catalog");
        let runtime = catalog.resolve("python").expect("python");
        let version = &runtime.versions[0];
        let cancel = CancellationToken::new();
        ensure(&*fake, &catalog, runtime, version, &cancel, |_| {})
            .await
            .expect("built");
        let before = fake.calls().len();
        let state = ensure(&*fake, &catalog, runtime, version, &cancel, |_| {})
            .await
            .expect("present");
        assert!(matches!(state, ImageState::Present { .. }), "{state:?}");
        let calls = fake.calls().split_off(before);
        assert_eq!(calls, vec![Call::ImageId(version.image.clone())]);
    }

    #[tokio::test]
    async fn a_built_in_runtime_is_built_from_its_recipe_never_pulled() {
        let fake = FakeEngine::new();
        let catalog = Catalog::builtin().expect("catalog");
        let runtime = catalog.resolve("python").expect("python");
        let state = ensure(
            &*fake,
            &catalog,
            runtime,
            &runtime.versions[0],
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .expect("built");
        assert!(matches!(state, ImageState::Built { .. }), "{state:?}");
        assert!(pulls(&fake).is_empty());
    }

    #[tokio::test]
    async fn a_pinned_image_is_pulled_and_its_digest_checked() {
        let fake = FakeEngine::new();
        let image = format!("registry.example/ruby@{DIGEST}");
        fake.set_pull(PullScript::Succeed {
            repo_digests: vec![image.clone()],
        });
        let (_dir, catalog) = catalog_with(&image);
        let state = ensure_ruby(&fake, &catalog).await.expect("pulled");
        assert!(matches!(state, ImageState::Pulled { .. }), "{state:?}");
        assert_eq!(pulls(&fake), [image]);
    }

    #[tokio::test]
    async fn a_pulled_image_whose_digest_differs_is_removed_and_refused() {
        let fake = FakeEngine::new();
        let image = format!("registry.example/ruby@{DIGEST}");
        // The engine answers the reference but records another digest for what it got.
        let other = format!("registry.example/ruby@sha256:{}", "f".repeat(64));
        fake.set_pull(PullScript::Succeed {
            repo_digests: vec![other.clone()],
        });
        let (_dir, catalog) = catalog_with(&image);
        let err = ensure_ruby(&fake, &catalog).await.expect_err("mismatch");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&other), "{err}");
        assert!(!fake.has_image(&image), "the unverified image is removed");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_a_hanging_pinned_pull_leaves_nothing() {
        let fake = FakeEngine::new();
        fake.set_pull(PullScript::Hang);
        let image = format!("registry.example/ruby@{DIGEST}");
        let (_dir, catalog) = catalog_with(&image);
        let runtime = catalog.resolve("ruby").expect("ruby");
        let cancel = CancellationToken::new();
        let pulling = ensure(
            &*fake,
            &catalog,
            runtime,
            &runtime.versions[0],
            &cancel,
            |_| {},
        );
        let cancelling = async {
            fake.until(|f| f.count(|c| matches!(c, Call::Pull(_))) == 1)
                .await;
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(pulling, cancelling);
        assert!(
            matches!(result, Err(ImageError::Cancelled { .. })),
            "{result:?}"
        );
        assert!(!fake.has_image(&image));
    }

    #[tokio::test]
    async fn a_failed_pull_of_a_pinned_image_says_why() {
        let fake = FakeEngine::new();
        fake.set_pull(PullScript::Fail);
        let image = format!("127.0.0.1:1/ruby@{DIGEST}");
        let (_dir, catalog) = catalog_with(&image);
        let err = ensure_ruby(&fake, &catalog).await.expect_err("no registry");
        assert!(matches!(err, ImageError::PullFailed { .. }), "{err}");
        assert!(err.to_string().contains("no registry answers"), "{err}");
    }

    #[test]
    fn context_holds_the_dockerfile_and_is_reproducible() {
        let first = dockerfile_context("FROM scratch\n").expect("tar");
        let second = dockerfile_context("FROM scratch\n").expect("tar");
        assert_eq!(first, second);
        let mut archive = tar::Archive::new(first.as_slice());
        let mut entries = archive.entries().expect("entries");
        let mut entry = entries.next().expect("one entry").expect("readable");
        assert_eq!(entry.path().expect("path").to_str(), Some("Dockerfile"));
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        assert_eq!(text, "FROM scratch\n");
        assert!(entries.next().is_none());
    }
}
