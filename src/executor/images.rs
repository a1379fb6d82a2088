//! The engine-side chores on runtime images: verification by probing, builds from recipes, base
//! images imported from a tarball, and copies onto another engine.

use super::Executor;
use super::error::Error;
use crate::engine::DockerEngine;
use crate::engine::endpoint::Endpoint;
use crate::image::base::{self, BaseImage};
use crate::image::copy::{self, CopyError, CopyEvent, ImageCopy};
use crate::image::prepare::PrepareError;
use crate::image::probe::{self, VersionStatus};
use crate::image::runtime::{self, ImageState};
use std::path::PathBuf;

/// Progress of [`Executor::build_runtime_images`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ImageEvent<'a> {
    /// A runtime image is being looked for (then pulled or built when missing).
    Checking {
        /// The image's name.
        image: &'a str,
    },
    /// A line of the image's build output.
    BuildLine {
        /// The line.
        line: &'a str,
    },
    /// A runtime image is ready.
    Done {
        /// The image's name.
        image: &'a str,
        /// Whether it was there already, pulled or built now.
        state: ImageState,
    },
}

impl Executor {
    /// Verifies the runtime versions the settings select (all by default): each image made
    /// present and probed, unless the probe cache knows its answer.
    pub async fn verify_runtimes(&self) -> Result<Vec<VersionStatus>, Error> {
        let runtimes = probe::filter_runtimes(&self.catalog, self.settings.runtimes.as_deref())?;
        Ok(probe::verify(
            &self.engine,
            &self.catalog,
            &runtimes,
            &self.probe_cache,
            &self.owner,
            &self.shutdown,
        )
        .await)
    }

    /// What the probe cache knows of the selected runtime versions, starting nothing.
    pub async fn list_runtimes(&self) -> Result<Vec<VersionStatus>, Error> {
        let runtimes = probe::filter_runtimes(&self.catalog, self.settings.runtimes.as_deref())?;
        Ok(probe::list(self.engine.as_ref(), &runtimes, &self.probe_cache).await)
    }

    /// Builds every catalog runtime image that is missing; `on_event` hears about each image.
    pub async fn build_runtime_images(
        &self,
        mut on_event: impl FnMut(ImageEvent<'_>) + Send,
    ) -> Result<(), Error> {
        let catalog = &self.catalog;
        // The runtimes the settings select (PACKBOX_RUNTIMES), as for verification.
        let runtimes = probe::filter_runtimes(catalog, self.settings.runtimes.as_deref())?;
        for runtime in runtimes {
            for version in &runtime.versions {
                on_event(ImageEvent::Checking {
                    image: &version.image,
                });
                let state = runtime::ensure(
                    self.engine.as_ref(),
                    catalog,
                    runtime,
                    version,
                    &self.shutdown,
                    |line| on_event(ImageEvent::BuildLine { line }),
                )
                .await?;
                on_event(ImageEvent::Done {
                    image: &version.image,
                    state,
                });
            }
        }
        Ok(())
    }

    /// Makes sure the engine has `packbox/base:SUITE` for each `(suite, tarball)`, importing the
    /// root file system tarball through the API where it does not (for an engine without a
    /// registry that cannot see this machine's files).
    pub async fn import_base_images(
        &self,
        bases: &[(String, PathBuf)],
    ) -> Result<Vec<BaseImage>, Error> {
        let mut imported = Vec::new();
        for (suite, rootfs) in bases {
            let base = base::ensure(self.engine.as_ref(), suite, rootfs);
            imported.push(tokio::select! {
                base = base => base?,
                () = self.shutdown.cancelled() => return Err(PrepareError::Cancelled.into()),
            });
        }
        Ok(imported)
    }

    /// Streams images from this executor's engine into the engine at `target`, skipping those it
    /// has; `images` empty means the catalog's runtime images and every environment image.
    pub async fn copy_images_to(
        &self,
        target: &Endpoint,
        images: &[String],
        on_event: impl FnMut(CopyEvent<'_>),
    ) -> Result<Vec<ImageCopy>, Error> {
        let target = DockerEngine::connect(&target.host, &target.transport).await?;
        let images = if images.is_empty() {
            copy::default_images(self.engine.as_ref(), &self.catalog).await?
        } else {
            images.to_vec()
        };
        let copy = copy::copy(self.engine.as_ref(), &target, &images, on_event);
        tokio::select! {
            copied = copy => Ok(copied?),
            () = self.shutdown.cancelled() => Err(CopyError::Cancelled.into()),
        }
    }
}
