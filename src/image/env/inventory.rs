//! Listing and pruning environment images. Pruning never removes an image that a container
//! (running or stopped) still uses; the pack images the swarm backend built on an environment
//! go with it.

use std::collections::HashSet;

use serde::Serialize;

use crate::engine::{ContainerEngine, EngineError, ImageSummary};
use crate::pack_delivery::image as pack_image;

/// One environment image, as `packbox envs list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EnvInfo {
    /// The environment key: the hash of everything that decides the image's content.
    pub key: String,
    /// Its tag (`packbox/env:RUNTIME-VERSION-KEY`), `<none>` when untagged.
    pub tag: String,
    /// The engine's image id.
    pub id: String,
    /// The runtime it was built for.
    pub runtime: String,
    /// The runtime version it holds.
    pub version: String,
    /// The hash of the dependency manifests it installs; packs with equal manifests share it.
    pub dependency_hash: String,
    /// The image's size as the engine reports it.
    pub size_bytes: i64,
    /// When it was built (RFC 3339, from its `packbox.created` label); the newest are kept.
    pub created: String,
    /// Whether some container still uses the image.
    pub in_use: bool,
}

/// What a prune did (or, for a dry run, would do).
#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    /// The images removed (or that a dry run would remove).
    pub removed: Vec<EnvInfo>,
    /// The images kept: the newest ones asked for, and any in use.
    pub kept: Vec<EnvInfo>,
    /// Pack images (swarm backend) removed with the environment they were built on, by tag.
    pub removed_pack_images: Vec<String>,
    /// Nothing was removed: the report says what a prune would do.
    pub dry_run: bool,
}

/// Every environment image on the engine, newest first.
pub async fn list(engine: &dyn ContainerEngine) -> Result<Vec<EnvInfo>, EngineError> {
    let images = engine
        .images_with_labels(&["packbox.kind=env".to_string()])
        .await?;
    let used: HashSet<String> = engine
        .containers_with_labels(&[])
        .await?
        .into_iter()
        .filter_map(|c| c.image_id)
        .collect();
    let mut envs: Vec<EnvInfo> = images
        .into_iter()
        .map(|image| describe(image, &used))
        .collect();
    envs.sort_by(|a, b| b.created.cmp(&a.created).then(a.tag.cmp(&b.tag)));
    Ok(envs)
}

/// Removes all but the `keep` newest environment images, never one in use. The pack images
/// built on an environment (the swarm backend's) are removed first, as the engine keeps an image
/// other images build on; an environment whose pack image a container uses is kept.
pub async fn prune(
    engine: &dyn ContainerEngine,
    keep: usize,
    dry_run: bool,
) -> Result<PruneReport, EngineError> {
    let envs = list(engine).await?;
    let packs = engine
        .images_with_labels(&[format!("packbox.kind={}", pack_image::KIND)])
        .await?;
    let used: HashSet<String> = engine
        .containers_with_labels(&[])
        .await?
        .into_iter()
        .filter_map(|c| c.image_id)
        .collect();
    let mut report = PruneReport {
        removed: Vec::new(),
        kept: Vec::new(),
        removed_pack_images: Vec::new(),
        dry_run,
    };
    for (index, mut env) in envs.into_iter().enumerate() {
        let on_it: Vec<&ImageSummary> = packs
            .iter()
            .filter(|p| p.labels.get(pack_image::BASE_LABEL) == Some(&env.id))
            .collect();
        env.in_use |= on_it.iter().any(|p| used.contains(&p.id));
        if index < keep || env.in_use {
            report.kept.push(env);
            continue;
        }
        let names = on_it
            .iter()
            .map(|p| p.tags.first().cloned().unwrap_or_else(|| p.id.clone()));
        if dry_run {
            report.removed_pack_images.extend(names);
            report.removed.push(env);
            continue;
        }
        for (pack, name) in on_it.iter().zip(names) {
            engine.remove_image(&pack.id).await?;
            report.removed_pack_images.push(name);
        }
        match engine.remove_image(&env.id).await {
            Ok(()) => report.removed.push(env),
            // Something else builds on it now: it stays.
            Err(EngineError::InUse { .. }) => report.kept.push(env),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

fn describe(image: ImageSummary, used: &HashSet<String>) -> EnvInfo {
    let label = |name: &str| image.labels.get(name).cloned().unwrap_or_default();
    EnvInfo {
        key: label("packbox.key"),
        tag: image
            .tags
            .first()
            .cloned()
            .unwrap_or_else(|| "<none>".into()),
        in_use: used.contains(&image.id),
        runtime: label("packbox.runtime"),
        version: label("packbox.version"),
        dependency_hash: label("packbox.dependency_hash"),
        created: label("packbox.created"),
        size_bytes: image.size_bytes,
        id: image.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Call, FakeEngine};

    /// Adds an environment image created at `created` (an RFC 3339 label, as builds write it).
    fn env(fake: &FakeEngine, tag: &str, created: &str) -> String {
        fake.add_image(
            tag,
            &[
                ("packbox.kind", "env"),
                ("packbox.created", created),
                ("packbox.runtime", "python"),
            ],
            0,
        )
    }

    fn three(fake: &FakeEngine) -> [String; 3] {
        [
            env(fake, "packbox/env:old", "2026-01-01T00:00:00Z"),
            env(fake, "packbox/env:mid", "2026-02-01T00:00:00Z"),
            env(fake, "packbox/env:new", "2026-03-01T00:00:00Z"),
        ]
    }

    #[tokio::test]
    async fn listing_is_newest_first_and_ignores_other_images() {
        let fake = FakeEngine::new();
        three(&fake);
        fake.add_image("packbox/python:3.11", &[("packbox.kind", "runtime")], 0);
        let envs = list(fake.as_ref()).await.expect("list");
        let tags: Vec<&str> = envs.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(
            tags,
            ["packbox/env:new", "packbox/env:mid", "packbox/env:old"]
        );
    }

    #[tokio::test]
    async fn prune_keeps_the_newest_n() {
        let fake = FakeEngine::new();
        let [old, mid, new] = three(&fake);
        let report = prune(fake.as_ref(), 1, false).await.expect("prune");
        assert_eq!(report.kept.len(), 1);
        assert_eq!(report.removed.len(), 2);
        assert!(fake.has_image(&new));
        assert!(!fake.has_image(&mid) && !fake.has_image(&old));
    }

    #[tokio::test]
    async fn prune_never_removes_an_image_a_container_uses() {
        let fake = FakeEngine::new();
        let [old, _, _] = three(&fake);
        fake.add_listed_container("stopped", &old, &[]);
        let report = prune(fake.as_ref(), 0, false).await.expect("prune");
        assert!(fake.has_image(&old), "in use: kept");
        assert_eq!(report.kept.len(), 1);
        assert!(report.kept[0].in_use);
        assert_eq!(report.removed.len(), 2);
        assert!(
            !fake.calls().contains(&Call::RemoveImage(old.clone())),
            "not even asked"
        );
    }

    #[tokio::test]
    async fn pack_images_built_on_a_pruned_environment_go_first() {
        let fake = FakeEngine::new();
        let [old, mid, _] = three(&fake);
        let pack = fake.add_image(
            "packbox-pack/p:abc",
            &[("packbox.kind", "pack-image"), ("packbox.base_image", &old)],
            0,
        );
        let used_pack = fake.add_image(
            "packbox-pack/p:def",
            &[("packbox.kind", "pack-image"), ("packbox.base_image", &mid)],
            0,
        );
        fake.add_listed_container("task", &used_pack, &[]);
        let report = prune(fake.as_ref(), 0, false).await.expect("prune");
        assert!(!fake.has_image(&pack) && !fake.has_image(&old));
        assert_eq!(report.removed_pack_images, ["packbox-pack/p:abc"]);
        assert!(fake.has_image(&mid), "its pack image is in use: kept");
        assert!(report.kept.iter().any(|e| e.id == mid && e.in_use));
    }

    #[tokio::test]
    async fn an_environment_another_image_builds_on_is_kept_not_an_error() {
        let fake = FakeEngine::new();
        let [old, _, _] = three(&fake);
        fake.add_image("child", &[("packbox.base_image", &old)], 0);
        let report = prune(fake.as_ref(), 0, false).await.expect("no error");
        assert!(fake.has_image(&old));
        assert!(report.kept.iter().any(|e| e.id == old));
    }

    #[tokio::test]
    async fn a_dry_run_removes_nothing() {
        let fake = FakeEngine::new();
        let ids = three(&fake);
        let report = prune(fake.as_ref(), 0, true).await.expect("prune");
        assert!(report.dry_run);
        assert_eq!(report.removed.len(), 3);
        assert!(ids.iter().all(|id| fake.has_image(id)));
        assert_eq!(fake.count(|c| matches!(c, Call::RemoveImage(_))), 0);
    }
}
