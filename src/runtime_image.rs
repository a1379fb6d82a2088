//! Runtime images (`packbox/python:3.11`, ...): present on the engine, or built from the recipe
//! the catalog names. No registry is needed: recipes start from `packbox/base:<suite>`, which
//! `images/bootstrap-base` makes.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Runtime, RuntimeVersion};
use crate::engine::{BuildSpec, ContainerEngine, EngineError};

/// A runtime image that is not there and cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "runtime image {image} is missing; build it with `packbox images build` (scripts/build-images)"
    )]
    Missing { image: String },
    #[error(
        "runtime image {image} ({runtime} {version}) is missing, cannot be pulled ({pull_failure}) and the catalog names no recipe for it"
    )]
    NoRecipe {
        image: String,
        runtime: String,
        version: String,
        pull_failure: String,
    },
    #[error("building the tar context for {image} failed")]
    Context {
        image: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Pulling or building was cancelled; nothing half-made is left under the image's name.
    #[error("making runtime image {image} was cancelled")]
    Cancelled { image: String },
}

/// How long a pull may take before the registry counts as unreachable.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// What happened to one runtime image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// The engine already had it.
    Present { id: String },
    /// It was pulled from its registry now.
    Pulled { id: String },
    /// packbox built it now.
    Built { id: String },
}

impl ImageState {
    /// The image's id, however it came to be there.
    pub fn id(&self) -> &str {
        match self {
            ImageState::Present { id } | ImageState::Pulled { id } | ImageState::Built { id } => id,
        }
    }
}

/// Makes sure a runtime version's image exists: present, else pulled when a registry answers,
/// else built from its recipe. `on_line` receives the build's output lines.
pub async fn ensure(
    engine: &dyn ContainerEngine,
    catalog: &Catalog,
    runtime: &Runtime,
    version: &RuntimeVersion,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<ImageState, ImageError> {
    if let Some(id) = engine.image_id(&version.image).await? {
        return Ok(ImageState::Present { id });
    }
    let cancelled = || ImageError::Cancelled {
        image: version.image.clone(),
    };
    let pulled = tokio::select! {
        pulled = tokio::time::timeout(PULL_TIMEOUT, engine.pull_image(&version.image)) => pulled,
        () = cancel.cancelled() => return Err(cancelled()),
    };
    let pull_failure = match pulled {
        Ok(Ok(())) => match engine.image_id(&version.image).await? {
            Some(id) => return Ok(ImageState::Pulled { id }),
            None => "the engine reported the pull done but has no such image".to_string(),
        },
        Ok(Err(e)) => crate::error_text::chain(&e),
        Err(_) => format!("no answer within {} s", PULL_TIMEOUT.as_secs()),
    };
    let no_recipe = || ImageError::NoRecipe {
        image: version.image.clone(),
        runtime: runtime.name.clone(),
        version: version.version.clone(),
        pull_failure: pull_failure.clone(),
    };
    let recipe = version.recipe.as_ref().ok_or_else(no_recipe)?;
    let dockerfile = catalog.recipe_dockerfile(recipe).ok_or_else(no_recipe)?;
    let context_tar = dockerfile_context(dockerfile).map_err(|source| ImageError::Context {
        image: version.image.clone(),
        source,
    })?;
    let labels = HashMap::from([
        ("packbox.kind".to_string(), "runtime".to_string()),
        ("packbox.runtime".to_string(), runtime.name.clone()),
        ("packbox.version".to_string(), version.version.clone()),
    ]);
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
    };
    // Dropping the build's stream closes its connection, which stops the engine's build; the
    // tag is only set when a build completes.
    let id = tokio::select! {
        built = engine.build_image(spec, &mut on_line) => built?,
        () = cancel.cancelled() => return Err(cancelled()),
    };
    Ok(ImageState::Built { id })
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
    use std::io::Read;

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
