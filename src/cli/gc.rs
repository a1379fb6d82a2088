//! `packbox gc`: removes what packbox processes that are gone left behind: containers, on a
//! Swarm manager services, networks and secrets, and the layers of unfinished builds; pack
//! volumes (packs delivered by content) beyond the keep rule that no container uses; and the
//! artifacts folders of local runs older than `run.artifacts_retention` (a server's records keep
//! theirs to its own retention).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use packbox::{Catalog, Executor, RemovedArtifacts};

use super::options::{self, GlobalArgs};
use super::render;

/// Arguments of `packbox gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print what was removed as JSON.
    #[arg(long)]
    json: bool,
    /// Pack volumes kept per pack, newest first, even when unused (the content a pack has now
    /// and the one before).
    #[arg(long, value_name = "N", default_value_t = 2)]
    keep: usize,
    /// Pack and init volumes younger than this many seconds are kept whatever the keep rule:
    /// a run may be between filling one and creating the container that mounts it.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    min_volume_age: u64,
    /// Images a later build of the same product left untagged (another state folder built it
    /// again) younger than this many seconds are kept: a process may have verified one by id a
    /// moment ago. 0 when no packbox process runs (the end of a test or bench run).
    #[arg(long, value_name = "SECONDS", default_value_t = packbox::MIN_SUPERSEDED_AGE.as_secs())]
    min_image_age: u64,
}

/// Sweeps leftovers and reports them.
pub async fn execute(args: GcArgs, global: &GlobalArgs) -> ExitCode {
    let swept = async {
        let settings = options::resolve(global)?;
        let (state_dir, retention) = (settings.state_dir.clone(), settings.run.artifacts_retention);
        let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
        let executor = Executor::connect(settings, catalog).await?;
        let report = executor
            .gc(
                args.keep,
                Duration::from_secs(args.min_volume_age),
                Duration::from_secs(args.min_image_age),
            )
            .await;
        executor.close().await;
        Ok::<_, packbox::Error>((report?, artifacts(&state_dir, retention)))
    }
    .await;
    match swept {
        Ok((report, artifacts)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "removed": report.containers,
                        "images": report.images,
                        "pack_volumes": report.pack_volumes,
                        "init_volumes": report.init_volumes,
                        "artifacts": artifacts,
                    })
                );
            } else {
                for leftover in &report.containers {
                    println!(
                        "removed {} {} ({}, owner pid {} is gone)",
                        leftover.kind,
                        leftover.id,
                        leftover.action.as_deref().unwrap_or("no action"),
                        leftover.owner_pid
                    );
                }
                for image in &report.images {
                    println!(
                        "removed image {image} (an unfinished build's layer, or one a later build of the same product left untagged)"
                    );
                }
                for volume in &report.pack_volumes.removed {
                    println!("removed pack volume {volume}");
                }
                for volume in &report.init_volumes {
                    println!("removed init volume {volume} (another packbox build's)");
                }
                for removed in &artifacts {
                    println!(
                        "removed artifacts {} (unchanged for {} days)",
                        removed.folder.display(),
                        removed.age_seconds / (24 * 3600)
                    );
                }
                println!(
                    "removed {} leftover(s), {} image(s), {} pack volume(s) (kept {}), {} artifacts folder(s)",
                    report.containers.len(),
                    report.images.len(),
                    report.pack_volumes.removed.len(),
                    report.pack_volumes.kept.len(),
                    artifacts.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => render::report(&error, args.json),
    }
}

/// Removes the local runs' artifacts folders older than `retention`, leaving those a server's
/// records list. When the records cannot be read, or a folder cannot be removed, nothing more is
/// removed and a warning says why (the rest of `gc` has been done).
fn artifacts(state_dir: &Path, retention: Duration) -> Vec<RemovedArtifacts> {
    let recorded = match crate::serve::recorded_exec_ids(state_dir) {
        Ok(recorded) => recorded,
        Err(e) => {
            eprintln!(
                "warning: artifacts folders left as they are: the server's records cannot be read: {}",
                packbox::error_chain(&e)
            );
            return Vec::new();
        }
    };
    match packbox::collect_artifacts(state_dir, retention, &recorded) {
        Ok(removed) => removed,
        Err(e) => {
            eprintln!(
                "warning: collecting the artifacts folders in {}: {e}",
                packbox::artifacts_folder(state_dir, "").display()
            );
            Vec::new()
        }
    }
}
