//! The pack delivered by content: a read-only volume on the engine, named by the SHA-256 of the
//! pack's tree, for engines that cannot see this machine's files (a remote or Docker-in-Docker
//! engine shows a bind-mounted host folder as empty).
//!
//! The tree digest is [`crate::pack_delivery::tree`]'s: the same pack checked out twice gives the same
//! volume, and the same digest names it in a pack image and in a run's record.
//!
//! A volume is filled once per content and engine, whoever asks at the same time: the filler
//! first creates a lock container named after the volume (the engine's unique container names
//! make this atomic across processes and machines), then creates the labelled volume, uploads
//! the tree as a tar archive into a created, never-started helper container that mounts it, and
//! removes helper and lock. A volume whose lock is gone is therefore complete. A filler that died
//! leaves its lock: on its host, the next run (or `gc`) removes the helper, the half-filled
//! volume and only then the lock, so the rule holds for everyone meanwhile, and fills again;
//! a lock of a process on another machine is waited for, bounded. The start-up sweep of orphan
//! containers leaves these alone: removing a lock before its volume would break the rule.

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::common::owned::Owned;
use crate::engine::{ArchiveStream, ContainerEngine, ContainerSpec, EngineError, VolumeMount};
use crate::lifecycle::owner::{self, Owner};
use crate::pack_delivery::tree::{Limits, PackTree, TreeError};

/// `packbox.kind` of pack volumes.
pub const KIND: &str = "pack";
/// Label: the pack a volume holds.
pub const PACK_LABEL: &str = "packbox.pack";
/// Label: the tree digest of the pack a volume holds.
pub const DIGEST_LABEL: &str = "packbox.pack_digest";
/// Where the helper mounts the volume while filling it.
const FILL_PATH: &str = "/pack";
/// Entries a delivered pack may hold.
const MAX_ENTRIES: usize = 100_000;
/// Bytes a delivered pack may hold.
pub const MAX_BYTES: u64 = 1 << 30;
/// How long packbox waits for another machine's packbox to finish filling a volume.
const LOCK_WAIT: Duration = Duration::from_secs(300);
/// How often the lock is looked at while waiting.
const LOCK_POLL: Duration = Duration::from_millis(100);
/// A filler creates the volume right after its lock: a lock without a volume for this long is
/// no filler's.
const LOCK_WITHOUT_VOLUME: Duration = Duration::from_secs(10);

/// The pack could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A file of the pack (or the temporary archive) cannot be read or written.
    #[error("pack {pack}: cannot read {}", path.display())]
    Read {
        /// The pack's name.
        pack: String,
        /// The file or folder at fault.
        path: PathBuf,
        /// What the file system answered.
        #[source]
        source: std::io::Error,
    },
    /// The pack holds more entries or bytes than a volume delivery takes.
    #[error("pack {pack} is too large to deliver by volume ({what}; at most {MAX_ENTRIES} entries and {} MiB)", MAX_BYTES >> 20)]
    TooLarge {
        /// The pack's name.
        pack: String,
        /// How much was counted when the limit was passed.
        what: String,
    },
    /// The pack's files changed between reading its digest and writing its archive, so the
    /// volume would not hold what its name says; the volume is removed.
    #[error("pack {pack} changed while it was being delivered; run again")]
    Changed {
        /// The pack's name.
        pack: String,
    },
    /// Another packbox process, alive or on another machine (where packbox cannot tell), has
    /// held the volume's fill lock for longer than packbox waits.
    #[error(
        "volume {volume}: the packbox process named by lock container {lock} (on {host}) has been filling it for more than {} s; if that process is gone, remove both (`docker rm {lock}`, `docker volume rm {volume}`)",
        LOCK_WAIT.as_secs()
    )]
    LockHeld {
        /// The pack volume being filled.
        volume: String,
        /// The lock container's name.
        lock: String,
        /// The host of the packbox process that holds the lock, from the lock's labels.
        host: String,
    },
    /// A volume under the pack's name that packbox did not fill and whose content is not the
    /// pack's: someone who shares the engine made it (the name is public: every outcome prints
    /// the digest). It is never used.
    #[error(
        "pack volume {volume} was not filled by packbox and does not hold pack {pack} (its content does not have the digest {digest}): packbox does not use it; remove it if nobody needs it (`docker volume rm {volume}`)"
    )]
    NotOurs {
        /// The volume's name.
        volume: String,
        /// The pack's name.
        pack: String,
        /// The digest its content should have.
        digest: String,
    },
    /// A volume under the init's name holds something other than this packbox's init and
    /// could not be removed (a container uses it): the init is every action's PID 1, so packbox
    /// runs nothing from it.
    #[error(
        "volume {volume} is named like packbox's init but holds something else, and a container uses it: packbox does not run it; remove that container and the volume (`docker volume rm {volume}`)"
    )]
    InitNotOurs {
        /// The volume's name.
        volume: String,
    },
    /// The record of what packbox filled (in the state folder) cannot be written.
    #[error("state folder {}", path.display())]
    State {
        /// The record's file.
        path: PathBuf,
        /// What the file system answered.
        #[source]
        source: std::io::Error,
    },
    /// A container holds the lock's name but no fill is under way: no volume followed it. It
    /// was not made by a packbox filling the volume (someone who shares the engine made it).
    #[error(
        "volume {volume}: container {lock} holds its fill lock's name (its labels name host {host}), but no fill followed it within {} s: it is not a packbox filling this volume; remove it if nobody needs it (`docker rm {lock}`)",
        LOCK_WITHOUT_VOLUME.as_secs()
    )]
    LockNotAFiller {
        /// The pack volume to be filled.
        volume: String,
        /// The lock container's name.
        lock: String,
        /// The host its labels name.
        host: String,
    },
    /// The run was cancelled before the pack was in its volume.
    #[error("delivering pack {pack} was cancelled")]
    Cancelled {
        /// The pack's name.
        pack: String,
    },
    /// The engine failed to create, fill or remove the volume or its helper containers.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A pack volume ready to be mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackVolume {
    /// The volume's name, which holds the pack's name and content digest.
    pub name: String,
    /// The SHA-256 of the pack's files, which names what the volume holds.
    pub digest: String,
    /// Whether this call filled it (false: it was there).
    pub filled: bool,
}

/// The volume name for a pack's content: readable (`packbox-pack-<ref>-`) and unique (the
/// digest). Pack refs are `[a-z][a-z0-9_-]*`, which volume names allow.
pub fn volume_name(pack_ref: &str, digest: &str) -> String {
    format!("packbox-pack-{pack_ref}-{digest}")
}

/// The lock container's name for a volume.
fn lock_name(volume: &str) -> String {
    format!("{volume}-lock")
}

/// The name of the helper container the archive is uploaded into.
fn helper_name(volume: &str) -> String {
    format!("{volume}-fill")
}

/// The limits of a pack delivered by volume.
const LIMITS: Limits = Limits {
    max_entries: MAX_ENTRIES,
    max_bytes: MAX_BYTES,
};

/// The SHA-256 of a pack tree (see [`crate::pack_delivery::tree`]), in hex: the volume's name.
pub fn tree_digest(pack: &str, root: &Path) -> Result<String, DeliveryError> {
    Ok(PackTree::read(pack, root, LIMITS)?.digest()?)
}

/// Writes the tree as a tar archive into `out` and returns the digest of what was written, so the
/// caller can tell whether the pack changed since its name was computed.
fn write_tar(pack: &str, root: &Path, out: &mut std::fs::File) -> Result<String, DeliveryError> {
    let tree = PackTree::read(pack, root, LIMITS)?;
    let mut builder = tar::Builder::new(out);
    let digest = tree.append_to(&mut builder, "")?;
    builder
        .into_inner()
        .and_then(|out| out.flush())
        .map_err(|source| DeliveryError::Read {
            pack: pack.to_string(),
            path: root.to_path_buf(),
            source,
        })?;
    Ok(digest)
}

impl From<TreeError> for DeliveryError {
    fn from(error: TreeError) -> DeliveryError {
        match error {
            TreeError::Read { pack, path, source } => DeliveryError::Read { pack, path, source },
            TreeError::TooLarge { pack, what, .. } => DeliveryError::TooLarge { pack, what },
            TreeError::Changed { pack, .. } => DeliveryError::Changed { pack },
        }
    }
}

/// Makes sure the engine has the pack's volume of content `digest` (the plan's
/// [`tree_digest`]), filling it when it does not (once per content and engine; see the module
/// doc). `helper_image` is an image the engine has (the run's own):
/// the lock and helper containers are created from it and never started. A volume that was
/// there already is used only when `owned` says packbox filled or verified it, or when its
/// content, read back, has the digest (then it is recorded).
pub async fn ensure(
    engine: &dyn ContainerEngine,
    owned: &Owned,
    pack_ref: &str,
    pack_dir: &Path,
    digest: &str,
    helper_image: &str,
) -> Result<PackVolume, DeliveryError> {
    // Named by the digest the plan took ([`tree_digest`]): the pack is read again only to fill
    // a new volume, and a pack that changed since is refused then.
    let digest = digest.to_string();
    let volume = volume_name(pack_ref, &digest);
    let mut labels = BTreeMap::new();
    labels.insert("packbox.kind".to_string(), KIND.to_string());
    labels.insert(PACK_LABEL.to_string(), pack_ref.to_string());
    labels.insert(DIGEST_LABEL.to_string(), digest.clone());
    let ensured = ensure_volume(engine, &volume, labels, helper_image, || {
        pack_archive(pack_ref, pack_dir, &digest)
    })
    .await?;
    let filled = match ensured {
        Ensured::Filled(created) => {
            if let Some(created) = created {
                record(owned, &volume, &created)?;
            }
            true
        }
        Ensured::Found(created) => {
            let expected = digest.clone();
            let folder = FILL_PATH.trim_start_matches('/').to_string();
            let holds_pack = verify_found(
                engine,
                owned,
                Found {
                    volume: &volume,
                    created: &created,
                    helper_image,
                    what: pack_ref,
                    max_bytes: MAX_BYTES + (MAX_ENTRIES as u64) * 1024,
                },
                move |archive| {
                    let found =
                        crate::pack_delivery::tree::archive_digest(archive, &folder, LIMITS)?;
                    Ok(found.as_deref() == Some(expected.as_str()))
                },
            )
            .await?;
            if !holds_pack {
                tracing::warn!(
                    volume = %volume,
                    "a volume under the pack's name holds something else: not used"
                );
                return Err(DeliveryError::NotOurs {
                    volume,
                    pack: pack_ref.to_string(),
                    digest,
                });
            }
            false
        }
    };
    Ok(PackVolume {
        name: volume,
        digest,
        filled,
    })
}

/// What [`ensure_volume`] found or made, with the engine's creation time of the volume (its
/// identity beside its name: a volume removed and made again under the name is another).
pub(crate) enum Ensured {
    /// This call filled the volume (no time when it was removed right after).
    Filled(Option<String>),
    /// A complete volume was there (no fill lock): whose it is, the caller checks.
    Found(String),
}

/// Makes sure the engine has `volume`, filled with the tar archive `archive` gives, under the
/// fill lock described in the module doc: once per name and engine, whoever asks at the same
/// time. `labels` go on the volume with packbox's own. A lock that no volume follows within
/// [`LOCK_WITHOUT_VOLUME`] is no filler's: the call fails naming it.
pub(crate) async fn ensure_volume<F, A>(
    engine: &dyn ContainerEngine,
    volume: &str,
    labels: BTreeMap<String, String>,
    helper_image: &str,
    archive: F,
) -> Result<Ensured, DeliveryError>
where
    F: FnOnce() -> A,
    A: Future<Output = Result<ArchiveStream, DeliveryError>>,
{
    let lock = lock_name(volume);
    let owner = Owner::current();
    let deadline = Instant::now() + LOCK_WAIT;
    // Since when a lock has been there without its volume.
    let mut lock_alone_since: Option<Instant> = None;
    loop {
        if Instant::now() >= deadline {
            let labels = engine.container_labels(&lock).await?.unwrap_or_default();
            return Err(DeliveryError::LockHeld {
                volume: volume.to_string(),
                lock: lock.clone(),
                host: labels
                    .get(owner::OWNER_HOST)
                    .cloned()
                    .unwrap_or_else(|| "an unknown host".into()),
            });
        }
        if let Some(created) = engine.volume_created(volume).await? {
            match engine.container_labels(&lock).await? {
                None => return Ok(Ensured::Found(created)),
                Some(labels) => {
                    lock_alone_since = None;
                    wait_or_break_lock(engine, volume, &lock, &labels).await?;
                    continue;
                }
            }
        }
        match engine
            .create_container(
                &lock,
                &helper_spec(helper_image, &owner, volume, "pack-lock", false),
            )
            .await
        {
            Ok(_) => break,
            // Another filler holds the lock's name: it makes the volume at once, or is none.
            Err(EngineError::InUse { .. }) => {
                if let Some(labels) = engine.container_labels(&lock).await? {
                    let since = *lock_alone_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > LOCK_WITHOUT_VOLUME && !owner::is_orphan(&labels) {
                        return Err(DeliveryError::LockNotAFiller {
                            volume: volume.to_string(),
                            lock: lock.clone(),
                            host: labels
                                .get(owner::OWNER_HOST)
                                .cloned()
                                .unwrap_or_else(|| "none".into()),
                        });
                    }
                    wait_or_break_lock(engine, volume, &lock, &labels).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // This process holds the lock: a volume present now was left by a filler that died.
    let filled = fill(engine, helper_image, &owner, volume, labels, archive).await;
    let unlocked = engine.remove(&lock).await;
    filled?;
    unlocked?;
    Ok(Ensured::Filled(engine.volume_created(volume).await?))
}

/// Whether a filler holds the fill lock of `volume` now.
pub(crate) async fn is_being_filled(
    engine: &dyn ContainerEngine,
    volume: &str,
) -> Result<bool, EngineError> {
    Ok(engine.container_labels(&lock_name(volume)).await?.is_some())
}

/// Records a volume packbox filled or verified.
pub(crate) fn record(owned: &Owned, volume: &str, created: &str) -> Result<(), DeliveryError> {
    owned
        .add_volume(volume, created)
        .map_err(|source| DeliveryError::State {
            path: PathBuf::from(crate::common::owned::FILE_NAME),
            source,
        })
}

/// A complete volume found under a name packbox uses, to be checked before it is used.
pub(crate) struct Found<'a> {
    /// The volume's name.
    pub volume: &'a str,
    /// The engine's creation time of it.
    pub created: &'a str,
    /// An image the engine has, for the never-started reader.
    pub helper_image: &'a str,
    /// What it should hold, for errors (a pack's name, `packbox-init`).
    pub what: &'a str,
    /// The most bytes its archive may have; a larger one holds something packbox never wrote.
    pub max_bytes: u64,
}

/// Whether a complete volume found under a name packbox uses is packbox's: one it filled or
/// verified before (the state folder's record, by name and creation time), else one whose
/// content, read back as a tar archive through a never-started helper that mounts it read-only,
/// passes `holds` (then it is recorded, so the next run pays two requests again, not a read).
pub(crate) async fn verify_found<H>(
    engine: &dyn ContainerEngine,
    owned: &Owned,
    found: Found<'_>,
    holds: H,
) -> Result<bool, DeliveryError>
where
    H: FnOnce(std::io::BufReader<std::fs::File>) -> std::io::Result<bool> + Send + 'static,
{
    if owned.has_volume(found.volume, found.created) {
        return Ok(true);
    }
    let reader = format!("{}-verify-{}", found.volume, uuid::Uuid::new_v4().simple());
    let mut spec = helper_spec(
        found.helper_image,
        &Owner::current(),
        found.volume,
        "pack-verify",
        true,
    );
    spec.labels.remove(owner::FILLING_VOLUME);
    for mount in &mut spec.volumes {
        mount.read_only = true;
    }
    let id = engine.create_container(&reader, &spec).await?;
    let read = read_back(engine, &id, &found, holds).await;
    let removed = engine.remove(&id).await;
    let ours = read?;
    removed?;
    if ours {
        record(owned, found.volume, found.created)?;
    }
    Ok(ours)
}

/// Whether what the volume mounted at [`FILL_PATH`] in container `id` holds passes `holds`
/// (false when it is larger than anything packbox writes), read through an unnamed temp file.
async fn read_back<H>(
    engine: &dyn ContainerEngine,
    id: &str,
    found: &Found<'_>,
    holds: H,
) -> Result<bool, DeliveryError>
where
    H: FnOnce(std::io::BufReader<std::fs::File>) -> std::io::Result<bool> + Send + 'static,
{
    use futures::StreamExt;
    let read_error = |source| DeliveryError::Read {
        pack: found.what.to_string(),
        path: PathBuf::from(FILL_PATH),
        source,
    };
    let mut file = tempfile::tempfile().map_err(read_error)?;
    let mut stream = engine.download_archive(id, FILL_PATH);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > found.max_bytes {
            return Ok(false);
        }
        file.write_all(&chunk).map_err(read_error)?;
    }
    file.rewind().map_err(read_error)?;
    tokio::task::spawn_blocking(move || holds(std::io::BufReader::new(file)))
        .await
        .map_err(|e| read_error(std::io::Error::other(e)))?
        .map_err(read_error)
}

/// Waits a moment while a live filler holds the lock (the caller's loop bounds the wait);
/// clears away the leftovers of one that died on this host.
async fn wait_or_break_lock(
    engine: &dyn ContainerEngine,
    volume: &str,
    lock: &str,
    labels: &std::collections::HashMap<String, String>,
) -> Result<(), DeliveryError> {
    if owner::is_orphan(labels) {
        clear_dead_filler(engine, volume, lock).await?;
    } else {
        tokio::time::sleep(LOCK_POLL).await;
    }
    Ok(())
}

/// Removes what a dead filler left, in the order that keeps "a volume without a lock is
/// complete" true for everyone else: its helper, then the half volume, and only then its lock.
/// When the engine keeps the volume (a container uses it), the lock stays too.
async fn clear_dead_filler(
    engine: &dyn ContainerEngine,
    volume: &str,
    lock: &str,
) -> Result<(), EngineError> {
    engine.remove(&helper_name(volume)).await?;
    if engine.remove_volume(volume).await? {
        engine.remove(lock).await?;
    }
    Ok(())
}

async fn fill<F, A>(
    engine: &dyn ContainerEngine,
    helper_image: &str,
    owner: &Owner,
    volume: &str,
    labels: BTreeMap<String, String>,
    archive: F,
) -> Result<(), DeliveryError>
where
    F: FnOnce() -> A,
    A: Future<Output = Result<ArchiveStream, DeliveryError>>,
{
    // Anything already there is a dead filler's half: start from an empty volume.
    engine.remove_volume(volume).await?;
    let mut all_labels = owner::managed_labels();
    all_labels.extend(labels);
    engine.create_volume(volume, &all_labels).await?;
    let helper = helper_name(volume);
    let uploaded = async {
        let archive = archive().await?;
        let id = engine
            .create_container(
                &helper,
                &helper_spec(helper_image, owner, volume, "pack-fill", true),
            )
            .await?;
        let result = engine.upload_archive(&id, FILL_PATH, archive).await;
        let removed = engine.remove(&id).await;
        result?;
        removed?;
        Ok::<_, DeliveryError>(())
    }
    .await;
    if let Err(e) = uploaded {
        // A volume that did not fill must not look complete once the lock goes.
        let _ = engine.remove_volume(volume).await;
        return Err(e);
    }
    Ok(())
}

/// The pack's tree as a tar archive, refused when the pack changed since `digest` was taken.
/// The archive goes to an unnamed temp file (gone when closed, even after a crash), so memory
/// stays flat whatever the pack's size.
async fn pack_archive(
    pack_ref: &str,
    pack_dir: &Path,
    digest: &str,
) -> Result<ArchiveStream, DeliveryError> {
    let (pack, dir) = (pack_ref.to_string(), pack_dir.to_path_buf());
    let read_error = |source| DeliveryError::Read {
        pack: pack_ref.to_string(),
        path: pack_dir.to_path_buf(),
        source,
    };
    let (mut file, written_digest) = tokio::task::spawn_blocking(move || {
        let mut file = tempfile::tempfile().map_err(|e| DeliveryError::Read {
            pack: pack.clone(),
            path: std::env::temp_dir(),
            source: e,
        })?;
        let digest = write_tar(&pack, &dir, &mut file)?;
        Ok::<_, DeliveryError>((file, digest))
    })
    .await
    .map_err(|e| read_error(std::io::Error::other(e)))??;
    if written_digest != digest {
        return Err(DeliveryError::Changed {
            pack: pack_ref.to_string(),
        });
    }
    file.rewind().map_err(read_error)?;
    let body =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 << 10);
    Ok(Box::pin(body))
}

/// A container that is created and never started: the lock (no mounts) or the helper the
/// archive is uploaded into (the volume mounted writable). It carries owner labels, so the
/// start-up sweep removes it when its process died, together with the volume it names.
fn helper_spec(image: &str, owner: &Owner, volume: &str, kind: &str, mount: bool) -> ContainerSpec {
    let mut labels: BTreeMap<String, String> = owner.labels();
    labels.insert("packbox.kind".into(), kind.into());
    labels.insert(owner::FILLING_VOLUME.into(), volume.into());
    ContainerSpec {
        image: image.into(),
        cmd: vec!["true".into()],
        working_dir: "/".into(),
        user: "65534:65534".into(),
        labels,
        volumes: if mount {
            vec![VolumeMount {
                volume: volume.into(),
                container_path: FILL_PATH.into(),
                read_only: false,
            }]
        } else {
            Vec::new()
        },
        read_only_rootfs: true,
        network_mode: "none".into(),
        cap_drop_all: true,
        cap_add: Vec::new(),
        no_new_privileges: true,
        memory_bytes: 16 << 20,
        pids_limit: 8,
        nano_cpus: 100_000_000,
        nofile: 64,
        ..Default::default()
    }
}

/// What `collect` removed and kept.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Collected {
    /// The names of the pack volumes removed.
    pub removed: Vec<String>,
    /// Unused but kept by the keep rule, or in use by a container.
    pub kept: Vec<String>,
}

/// Removes what dead fillers left, then pack volumes beyond the newest `keep` of each pack that
/// no container uses (the engine refuses to remove a volume in use, so a run that mounts one is
/// never disturbed), that no filler is filling, and that are older than `grace` (a run may be
/// between filling a volume and creating the container that mounts it).
pub async fn collect(
    engine: &dyn ContainerEngine,
    keep: usize,
    grace: Duration,
) -> Result<Collected, EngineError> {
    // Dead fillers first: their half volumes go, whatever the keep rule says.
    let fillers = engine
        .containers_with_labels(&[format!("{}=true", owner::MANAGED)])
        .await?;
    for filler in fillers {
        if let Some(volume) = filler.labels.get(owner::FILLING_VOLUME)
            && owner::is_orphan(&filler.labels)
        {
            clear_dead_filler(engine, volume, &lock_name(volume)).await?;
        }
    }
    let volumes = engine
        .volumes_with_labels(&[
            format!("{}=true", owner::MANAGED),
            format!("packbox.kind={KIND}"),
        ])
        .await?;
    let mut by_pack: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for volume in volumes {
        let pack = volume.labels.get(PACK_LABEL).cloned().unwrap_or_default();
        by_pack.entry(pack).or_default().push(volume);
    }
    let mut collected = Collected::default();
    for (_, mut volumes) in by_pack {
        volumes.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
        for (index, volume) in volumes.into_iter().enumerate() {
            let young = is_younger_than(&volume.created_at, grace, SystemTime::now());
            if index < keep
                || young
                || is_being_filled(engine, &volume.name).await?
                || !engine.remove_volume(&volume.name).await?
            {
                collected.kept.push(volume.name);
            } else {
                collected.removed.push(volume.name);
            }
        }
    }
    Ok(collected)
}

/// Whether a volume the engine says was created at `created_at` (RFC 3339, with the engine's
/// offset) is younger than `grace` at `now`; a time ahead of `now` (clock skew) is young. A time
/// that does not parse counts as old: it cannot be told.
pub(crate) fn is_younger_than(created_at: &str, grace: Duration, now: SystemTime) -> bool {
    use time::format_description::well_known::Rfc3339;
    let Ok(created) = time::OffsetDateTime::parse(created_at, &Rfc3339) else {
        return false;
    };
    let age = time::OffsetDateTime::from(now) - created;
    age < grace
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::common::owned::Owned;
    use std::os::unix::fs::symlink;

    fn pack() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("actions/lib")).expect("mkdir");
        std::fs::write(dir.path().join("pack.yaml"), "ref: p\n").expect("write");
        std::fs::write(dir.path().join("actions/a.sh"), "echo hi\n").expect("write");
        std::fs::write(dir.path().join("actions/lib/x.py"), "x = 1\n").expect("write");
        dir
    }

    fn digest(dir: &Path) -> String {
        tree_digest("p", dir).expect("digest")
    }

    #[test]
    fn a_volume_younger_than_the_grace_is_young_and_an_unreadable_time_is_old() {
        let now = humantime::parse_rfc3339("2026-12-07T10:00:00Z").expect("time");
        assert!(is_younger_than(
            "2026-12-07T11:59:30+02:00",
            Duration::from_secs(60),
            now
        ));
        let grace = Duration::from_secs(60);
        assert!(is_younger_than("2026-12-07T09:59:30Z", grace, now));
        assert!(
            is_younger_than("2026-12-07T10:00:05+00:00", grace, now),
            "clock skew"
        );
        assert!(!is_younger_than("2026-12-07T09:58:59Z", grace, now));
        assert!(!is_younger_than(
            "2026-12-07T09:59:30Z",
            Duration::ZERO,
            now
        ));
        assert!(!is_younger_than("00000000000000000003", grace, now));
    }

    #[test]
    fn the_same_tree_gives_the_same_digest_whatever_the_times() {
        let a = pack();
        let b = pack();
        assert_eq!(digest(a.path()), digest(b.path()));
        let file = std::fs::File::options()
            .write(true)
            .open(a.path().join("actions/a.sh"))
            .expect("open");
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .expect("mtime");
        assert_eq!(digest(a.path()), digest(b.path()), "times do not count");
        assert_eq!(digest(a.path()).len(), 64);
    }

    #[test]
    fn contents_names_modes_and_links_each_change_the_digest() {
        let dir = pack();
        let mut seen = vec![digest(dir.path())];
        let mut changed = |change: &dyn Fn(&Path)| {
            change(dir.path());
            let now = digest(dir.path());
            assert!(!seen.contains(&now), "a change kept an earlier digest");
            seen.push(now);
        };
        changed(&|d| std::fs::write(d.join("actions/a.sh"), "echo ho\n").expect("write"));
        changed(&|d| {
            std::fs::rename(d.join("actions/a.sh"), d.join("actions/b.sh")).expect("rename")
        });
        changed(&|d| {
            std::fs::set_permissions(
                d.join("actions/b.sh"),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod")
        });
        changed(&|d| symlink("b.sh", d.join("actions/link.sh")).expect("symlink"));
        changed(&|d| {
            std::fs::remove_file(d.join("actions/link.sh")).expect("rm");
            symlink("lib/x.py", d.join("actions/link.sh")).expect("symlink");
        });
        changed(&|d| std::fs::create_dir(d.join("empty")).expect("mkdir"));
    }

    #[test]
    fn the_archive_holds_the_tree_and_its_digest_is_the_tree_digest() {
        let dir = pack();
        symlink("a.sh", dir.path().join("actions/link.sh")).expect("symlink");
        std::fs::set_permissions(
            dir.path().join("actions/a.sh"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("chmod");
        let mut file = tempfile::tempfile().expect("tempfile");
        let written = write_tar("p", dir.path(), &mut file).expect("tar");
        assert_eq!(written, digest(dir.path()));
        file.rewind().expect("rewind");
        let mut archive = tar::Archive::new(file);
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let header = entry.header();
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            assert_eq!(header.uid().expect("uid"), 0);
            assert_eq!(header.mtime().expect("mtime"), 0);
            if path == "actions/a.sh" {
                assert_eq!(header.mode().expect("mode"), 0o755, "set-uid dropped");
            }
            if path == "actions/link.sh" {
                assert_eq!(
                    entry.link_name().expect("link").expect("a target").to_str(),
                    Some("a.sh")
                );
            }
            seen.push(path);
        }
        assert_eq!(
            seen,
            vec![
                "actions",
                "actions/a.sh",
                "actions/lib",
                "actions/lib/x.py",
                "actions/link.sh",
                "pack.yaml"
            ]
        );
    }

    #[test]
    fn fifos_are_not_delivered() {
        let dir = pack();
        let before = digest(dir.path());
        let fifo = dir.path().join("actions/pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        assert_eq!(
            digest(dir.path()),
            before,
            "a FIFO is neither read nor counted"
        );
    }

    mod on_the_fake_engine {
        use super::*;
        use crate::engine::fake::FakeEngine;

        const IMAGE: &str = "packbox/shell:5.2";

        fn engine() -> std::sync::Arc<FakeEngine> {
            let fake = FakeEngine::new();
            fake.add_image(IMAGE, &[], 0);
            fake
        }

        #[tokio::test]
        async fn the_first_delivery_fills_and_later_ones_reuse() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let first = ensure(
                fake.as_ref(),
                &owned,
                "p",
                dir.path(),
                &tree_digest("p", dir.path()).expect("digest"),
                IMAGE,
            )
            .await
            .expect("delivered");
            assert!(first.filled);
            assert_eq!(fake.volume_uploads(&first.name).map(|u| u.len()), Some(1));
            let again = ensure(
                fake.as_ref(),
                &owned,
                "p",
                dir.path(),
                &tree_digest("p", dir.path()).expect("digest"),
                IMAGE,
            )
            .await
            .expect("delivered");
            assert!(!again.filled);
            assert_eq!(again.name, first.name);
            assert_eq!(fake.volume_uploads(&first.name).map(|u| u.len()), Some(1));
            assert!(fake.container_ids().is_empty(), "lock and helper removed");
        }

        #[tokio::test]
        async fn an_existing_volume_is_found_by_the_planned_digest_without_reading_the_pack() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let planned = digest(dir.path());
            let first = ensure(fake.as_ref(), &owned, "p", dir.path(), &planned, IMAGE)
                .await
                .expect("delivered");
            // The folder is gone: only its digest can find the volume now.
            let gone = dir.path().to_path_buf();
            drop(dir);
            let again = ensure(fake.as_ref(), &owned, "p", &gone, &planned, IMAGE)
                .await
                .expect("found by name");
            assert_eq!(again.name, first.name);
            assert!(!again.filled);
        }

        #[tokio::test]
        async fn a_pack_changed_since_it_was_planned_is_refused_and_leaves_nothing() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let planned = digest(dir.path());
            std::fs::write(dir.path().join("actions/a.sh"), "echo changed\n").expect("write");
            let err = ensure(fake.as_ref(), &owned, "p", dir.path(), &planned, IMAGE)
                .await
                .expect_err("changed");
            assert!(matches!(err, DeliveryError::Changed { .. }), "{err}");
            assert!(err.to_string().contains("run again"), "{err}");
            let name = volume_name("p", &planned);
            assert!(
                fake.volume_created(&name).await.expect("answers").is_none(),
                "no half volume"
            );
            assert!(fake.container_ids().is_empty(), "no lock, no helper");
        }

        #[tokio::test]
        async fn concurrent_deliveries_upload_once() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let digest = tree_digest("p", dir.path()).expect("digest");
            let all = futures::future::join_all(
                (0..5).map(|_| ensure(fake.as_ref(), &owned, "p", dir.path(), &digest, IMAGE)),
            )
            .await;
            let delivered: Vec<PackVolume> = all.into_iter().map(|d| d.expect("ok")).collect();
            assert_eq!(delivered.iter().filter(|d| d.filled).count(), 1);
            assert_eq!(
                fake.volume_uploads(&delivered[0].name).map(|u| u.len()),
                Some(1)
            );
        }

        fn lock_labels(host: &str) -> ContainerSpec {
            let mut labels = BTreeMap::new();
            labels.insert(owner::MANAGED.to_string(), "true".to_string());
            labels.insert(owner::OWNER_HOST.to_string(), host.to_string());
            labels.insert(owner::OWNER_PID.to_string(), (u32::MAX - 1).to_string());
            ContainerSpec {
                image: IMAGE.into(),
                labels,
                ..ContainerSpec::default()
            }
        }

        fn this_host() -> String {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        }

        #[tokio::test]
        async fn a_dead_fillers_lock_is_broken_and_the_volume_refilled() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let digest = tree_digest("p", dir.path()).expect("digest");
            let volume = volume_name("p", &digest);
            fake.create_volume(&volume, &BTreeMap::new())
                .await
                .expect("half volume");
            fake.create_container(&lock_name(&volume), &lock_labels(&this_host()))
                .await
                .expect("dead lock");
            let delivered = ensure(fake.as_ref(), &owned, "p", dir.path(), &digest, IMAGE)
                .await
                .expect("delivered");
            assert!(delivered.filled);
            assert_eq!(fake.volume_uploads(&volume).map(|u| u.len()), Some(1));
            assert!(fake.container_ids().is_empty());
        }

        #[tokio::test(start_paused = true)]
        async fn a_live_lock_elsewhere_is_waited_for_then_named() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let digest = tree_digest("p", dir.path()).expect("digest");
            let volume = volume_name("p", &digest);
            fake.create_container(&lock_name(&volume), &lock_labels("another-host"))
                .await
                .expect("lock");
            // A filler elsewhere has made its volume and is filling it.
            fake.create_volume(&volume, &BTreeMap::new())
                .await
                .expect("volume");
            let started = Instant::now();
            let err = ensure(fake.as_ref(), &owned, "p", dir.path(), &digest, IMAGE)
                .await
                .expect_err("still locked");
            assert!(matches!(err, DeliveryError::LockHeld { .. }), "{err}");
            assert!(started.elapsed() >= LOCK_WAIT);
            let text = err.to_string();
            assert!(text.contains(&format!("{volume}-lock")), "{text}");
            assert!(text.contains("another-host"), "{text}");
        }

        #[tokio::test(start_paused = true)]
        async fn a_lock_that_no_volume_follows_is_no_filler_and_said_so_at_once() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let digest = tree_digest("p", dir.path()).expect("digest");
            let volume = volume_name("p", &digest);
            fake.create_container(&lock_name(&volume), &lock_labels("another-host"))
                .await
                .expect("a squatted lock");
            let started = Instant::now();
            let err = ensure(fake.as_ref(), &owned, "p", dir.path(), &digest, IMAGE)
                .await
                .expect_err("refused");
            assert!(matches!(err, DeliveryError::LockNotAFiller { .. }), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "waited {:?}",
                started.elapsed()
            );
            assert!(err.to_string().contains("another-host"), "{err}");
        }

        #[tokio::test]
        async fn collect_keeps_the_newest_and_the_used() {
            let owned = Owned::for_tests();
            let fake = engine();
            let dir = pack();
            let mut names = Vec::new();
            for text in ["one", "two", "three"] {
                std::fs::write(dir.path().join("actions/a.sh"), text).expect("write");
                names.push(
                    ensure(
                        fake.as_ref(),
                        &owned,
                        "p",
                        dir.path(),
                        &tree_digest("p", dir.path()).expect("digest"),
                        IMAGE,
                    )
                    .await
                    .expect("delivered")
                    .name,
                );
            }
            let user = ContainerSpec {
                image: IMAGE.into(),
                volumes: vec![VolumeMount {
                    volume: names[0].clone(),
                    container_path: "/pack".into(),
                    read_only: true,
                }],
                ..ContainerSpec::default()
            };
            fake.create_container("user", &user).await.expect("user");
            let collected = collect(fake.as_ref(), 1, Duration::from_secs(60))
                .await
                .expect("collected");
            assert_eq!(collected.removed, vec![names[1].clone()]);
            assert!(collected.kept.contains(&names[0]) && collected.kept.contains(&names[2]));
        }
    }

    #[test]
    fn volume_names_are_valid_engine_names() {
        let name = volume_name("hello_world-2", &"a".repeat(64));
        assert!(name.starts_with("packbox-pack-hello_world-2-"));
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        );
        assert_eq!(lock_name(&name), format!("{name}-lock"));
    }
}
