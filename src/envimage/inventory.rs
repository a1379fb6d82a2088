//! Listing and pruning environment images. Pruning never removes an image that a container
//! (running or stopped) still uses.

use std::collections::HashSet;

use serde::Serialize;

use crate::engine::{ContainerEngine, EngineError, ImageSummary};

/// One environment image, as `packbox envs list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EnvInfo {
    pub key: String,
    pub tag: String,
    pub id: String,
    pub runtime: String,
    pub version: String,
    pub dependency_hash: String,
    pub size_bytes: i64,
    pub created: String,
    /// Whether some container still uses the image.
    pub in_use: bool,
}

/// What a prune did (or, for a dry run, would do).
#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub removed: Vec<EnvInfo>,
    pub kept: Vec<EnvInfo>,
    pub dry_run: bool,
}

/// Every environment image on the engine, newest first.
pub async fn list(engine: &dyn ContainerEngine) -> Result<Vec<EnvInfo>, EngineError> {
    let images = engine
        .images_with_labels(&["packbox.kind=env".to_string()])
        .await?;
    let used: HashSet<String> = engine
        .all_containers()
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

/// Removes all but the `keep` newest environment images, never one in use.
pub async fn prune(
    engine: &dyn ContainerEngine,
    keep: usize,
    dry_run: bool,
) -> Result<PruneReport, EngineError> {
    let envs = list(engine).await?;
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for (index, env) in envs.into_iter().enumerate() {
        if index < keep || env.in_use {
            kept.push(env);
            continue;
        }
        if !dry_run {
            engine.remove_image(&env.id).await?;
        }
        removed.push(env);
    }
    Ok(PruneReport {
        removed,
        kept,
        dry_run,
    })
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
