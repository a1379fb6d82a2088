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

/// What [`Executor::gc`] removed.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Containers whose owning packbox process is gone.
    pub containers: Vec<Swept>,
    /// Ids of untagged images of builds that never finished.
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
    /// than `volume_grace` stay (a run may be between filling one and mounting it).
    pub async fn gc(
        &self,
        keep_pack_volumes: usize,
        volume_grace: std::time::Duration,
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
        let mut images = Vec::new();
        for image in self
            .engine
            .images_with_labels(&["packbox.kind".to_string()])
            .await?
        {
            let dangling = image.tags.iter().all(|tag| tag == "<none>:<none>");
            if !dangling || now - image.created < old_enough {
                continue;
            }
            match self.engine.remove_image(&image.id).await {
                Ok(()) => images.push(image.id),
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
