//! Preparing the image a run needs: the runtime versions are verified by probing (cached), one is
//! selected, and when the pack has a dependency manifest for that runtime its environment image
//! is made present (built once) on top of the selected runtime image.

use std::path::Path;

use crate::catalog::{Catalog, Runtime};
use crate::engine::Engine;
use crate::envimage::{self, BuildSettings, EnvError, EnvRecipe, Installer, Manifests};
use crate::error::Error;
use crate::probe::{self, ProbeCache, VersionStatus};

/// The image a run starts from, and the runtime version it holds.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// The verified runtime version (`3.11.2`).
    pub runtime_version: String,
    /// The tag of the environment image, else of the runtime image.
    pub image: String,
    /// Set when an environment image was built for this run.
    pub built: bool,
}

/// Progress of a preparation, for the caller to show.
#[derive(Debug)]
pub enum PrepareEvent<'a> {
    /// An environment image is being built.
    Building { tag: &'a str },
    /// One line of the build's output.
    BuildLine { line: &'a str },
}

/// Services a preparation uses: engine, catalog, probe cache, build settings, state folder.
pub struct Preparer<'a> {
    pub engine: &'a Engine,
    pub catalog: &'a Catalog,
    pub probe_cache: &'a ProbeCache,
    pub build: &'a BuildSettings,
    pub state_dir: &'a Path,
}

impl Preparer<'_> {
    /// The verified versions of a runtime (probing what the cache does not know).
    pub async fn verified_versions(&self, runtime: &Runtime) -> Vec<VersionStatus> {
        probe::verify(self.engine, self.catalog, &[runtime], self.probe_cache).await
    }

    /// Makes the image for `pack_dir` on the selected version present.
    pub async fn image_for(
        &self,
        runtime: &Runtime,
        selected: &VersionStatus,
        pack_dir: &Path,
        mut on_event: impl FnMut(PrepareEvent<'_>),
    ) -> Result<PreparedImage, Error> {
        let runtime_version = selected
            .detected_version
            .clone()
            .unwrap_or_else(|| selected.version.clone());
        let runtime_image = PreparedImage {
            runtime_version: runtime_version.clone(),
            image: selected.image.clone(),
            built: false,
        };
        let Some(installer) = Installer::for_runtime(&runtime.name) else {
            return Ok(runtime_image);
        };
        let manifests = Manifests::read(pack_dir, installer).map_err(|source| {
            Error::Env(EnvError::State {
                path: pack_dir.to_path_buf(),
                source,
            })
        })?;
        let Some(manifests) = manifests else {
            return Ok(runtime_image);
        };
        let Some(base_image_id) = selected.image_id.clone() else {
            return Ok(runtime_image);
        };
        let recipe = EnvRecipe {
            runtime: runtime.name.clone(),
            version: runtime_version.clone(),
            base_image_id,
            manifests,
            index: self.build.index.clone(),
        };
        let tag = recipe.tag();
        let mut announced = false;
        let env = envimage::ensure(self.engine, &recipe, self.build, self.state_dir, |line| {
            if !announced {
                on_event(PrepareEvent::Building { tag: &tag });
                announced = true;
            }
            on_event(PrepareEvent::BuildLine { line });
        })
        .await?;
        Ok(PreparedImage {
            runtime_version,
            image: env.tag,
            built: env.built,
        })
    }
}
