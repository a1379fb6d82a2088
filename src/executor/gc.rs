//! Garbage collection: what packbox processes that are gone left behind (containers, services,
//! networks, secrets, half-filled pack volumes, unfinished build layers, other builds' init
//! volumes), removed on request.

use super::Executor;
use super::error::Error;
use crate::lifecycle::owner::{self, Swept};
use crate::pack_delivery::volume::{self, Collected as PackVolumesCollected};
use serde::Serialize;

/// How old an untagged build layer must be before `gc` takes it for a leftover (runtime image
/// builds have no timeout of their own; environment builds may be set to last longer).
const MIN_LEFTOVER_LAYER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How old a superseded image (below) must be, by default, before `gc` removes it: long enough
/// that a process which verified it by id a moment ago has created its container from it (a
/// container in use keeps an image anyway: the engine refuses to remove it).
pub const MIN_SUPERSEDED_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// The labels that say which product an image of packbox is (the environment's key, the pack and
/// its content, the recipe, the base): two images alike in these are the same product built twice.
/// The time and owner labels differ between two builds of the same product and are left out.
const PRODUCT_LABELS: &[&str] = &[
    "packbox.kind",
    "packbox.key",
    "packbox.pack",
    "packbox.pack_digest",
    "packbox.recipe",
    "packbox.base_image",
    "packbox.runtime",
    "packbox.version",
];

/// Which product an image is, by [`PRODUCT_LABELS`].
fn product(labels: &std::collections::HashMap<String, String>) -> Vec<Option<&str>> {
    PRODUCT_LABELS
        .iter()
        .map(|name| labels.get(*name).map(String::as_str))
        .collect()
}

/// What [`Executor::gc`] removed.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Containers whose owning packbox process is gone.
    pub containers: Vec<Swept>,
    /// Ids of untagged images: builds that never finished, and finished images whose tag a later
    /// build of the same product moved (superseded).
    pub images: Vec<String>,
    /// Pack volumes removed and kept.
    pub pack_volumes: PackVolumesCollected,
    /// Volumes of other packbox builds' init that no container used, removed.
    pub init_volumes: Vec<String>,
}

impl Executor {
    /// Removes what crashed or killed packbox processes left (`packbox gc`): containers whose
    /// owner is gone, and the untagged layers of builds that never finished (builds label their
    /// images `packbox.kind`), unless a container or another image still uses them; and pack
    /// volumes no container uses beyond the newest `keep_pack_volumes` of each pack (with what
    /// dead fillers left), and the unused init volumes of other packbox builds; volumes younger
    /// than `volume_grace` stay (a run may be between filling one and mounting it); and images a
    /// later build of the same product left untagged, once older than `superseded_grace`
    /// ([`MIN_SUPERSEDED_AGE`] unless the caller knows no process still uses them).
    pub async fn gc(
        &self,
        keep_pack_volumes: usize,
        volume_grace: std::time::Duration,
        superseded_grace: std::time::Duration,
    ) -> Result<GcReport, Error> {
        let containers = self.sweep_orphans().await?;
        // A build under way has untagged layers too: only layers older than any build may
        // last are a finished build's leftovers.
        let old_enough = self
            .settings
            .build
            .timeout
            .max(MIN_LEFTOVER_LAYER_AGE)
            .as_secs() as i64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let pack_volumes =
            volume::collect(self.engine.as_ref(), keep_pack_volumes, volume_grace).await?;
        let init_volumes =
            crate::pack_delivery::init::collect(self.engine.as_ref(), volume_grace).await?;
        let labelled = self
            .engine
            .images_with_labels(&["packbox.kind".to_string()])
            .await?;
        let is_dangling = |image: &crate::engine::ImageSummary| {
            image.tags.iter().all(|tag| tag == "<none>:<none>")
        };
        // A finished image is superseded once a later build of the same product holds its tag:
        // another state folder built it again (each trusts only the images it recorded itself,
        // so a fresh one rebuilds rather than use what it finds under the tag).
        let tagged_products: std::collections::HashSet<Vec<Option<&str>>> = labelled
            .iter()
            .filter(|image| !is_dangling(image))
            .map(|image| product(&image.labels))
            .collect();
        let superseded_age = superseded_grace.as_secs() as i64;
        let mut images = Vec::new();
        for image in &labelled {
            let age = now - image.created;
            let leftover = age >= old_enough
                || (age >= superseded_age && tagged_products.contains(&product(&image.labels)));
            if !is_dangling(image) || !leftover {
                continue;
            }
            match self.engine.remove_image(&image.id).await {
                Ok(()) => images.push(image.id.clone()),
                Err(crate::engine::EngineError::InUse { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(GcReport {
            containers,
            images,
            pack_volumes,
            init_volumes,
        })
    }

    /// Removes what packbox processes that are gone left behind: containers, and on a Swarm
    /// manager services, networks and secrets.
    pub async fn sweep_orphans(&self) -> Result<Vec<Swept>, Error> {
        Ok(owner::sweep_orphans(&self.engine).await?)
    }
}
