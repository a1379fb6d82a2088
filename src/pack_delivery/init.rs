//! packbox's init (the `init/` crate), the PID 1 of every action container on the docker
//! backend: embedded in packbox at build time (a static binary, so it runs in any image) and
//! delivered to an engine in a read-only volume named after its digest, made once per engine
//! and packbox build, on the engine's side (so it works on remote engines, where bind mounts of
//! this machine's files do not).
//!
//! What it does in the container, and why the action cannot forge the exit status it reports,
//! is said in `init/src/main.rs` and `lifecycle/frames.rs`.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::LazyLock;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::volume::{self, DeliveryError, Ensured, Found};
use crate::common::owned::Owned;
use crate::engine::{ContainerEngine, EngineError, InitProcess};
use crate::lifecycle::owner;

/// The init's binary, as built by `build.rs`.
static BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/packbox-init"));

/// `packbox.kind` of the init's volumes.
pub const KIND: &str = "init";
/// Label: the SHA-256 of the binary a volume holds.
pub const DIGEST_LABEL: &str = "packbox.init_digest";
/// The binary's name in its volume (the volume is mounted at the init's folder).
const FILE_NAME: &str = "packbox-init";

static DIGEST: LazyLock<String> = LazyLock::new(|| hex::encode(Sha256::digest(BINARY)));

/// The volume that holds this build's init (its name says its content).
pub fn volume_name() -> String {
    format!("packbox-init-{}", *DIGEST)
}

/// The container's PID 1 for runs that use packbox's init.
pub fn process() -> InitProcess {
    InitProcess::Packbox {
        volume: volume_name(),
    }
}

/// Makes sure the engine has this build's init volume, filling it when it does not (once per
/// engine, whoever asks at the same time). The init is every action's PID 1, so a volume found
/// under its name is used only when packbox filled or verified it (`owned`, by name and creation
/// time) or its content, read back, is exactly this binary; anything else there (an empty volume
/// the engine made on its own for a container that named it after the real one was removed, or
/// one a co-tenant of the engine placed, labels and all) is removed and the volume filled again,
/// and the run fails when that cannot be done. `helper_image` is an image the engine has: the
/// fill's helper containers are created from it, never started.
pub async fn ensure(
    engine: &dyn ContainerEngine,
    owned: &Owned,
    helper_image: &str,
) -> Result<(), DeliveryError> {
    let volume = volume_name();
    for attempt in 1..=2 {
        let labels = BTreeMap::from([
            ("packbox.kind".to_string(), KIND.to_string()),
            (DIGEST_LABEL.to_string(), DIGEST.clone()),
        ]);
        let ensured = volume::ensure_volume(engine, &volume, labels, helper_image, || async {
            let archive = archive().map_err(|source| DeliveryError::Read {
                pack: FILE_NAME.into(),
                path: FILE_NAME.into(),
                source,
            })?;
            Ok(Box::pin(futures::stream::once(
                async move { Ok(Bytes::from(archive)) },
            )) as crate::engine::ArchiveStream)
        })
        .await?;
        let created = match ensured {
            Ensured::Filled(Some(created)) => return volume::record(owned, &volume, &created),
            Ensured::Filled(None) => return Ok(()),
            Ensured::Found(created) => created,
        };
        let found = Found {
            volume: &volume,
            created: &created,
            helper_image,
            what: FILE_NAME,
            max_bytes: BINARY.len() as u64 + (64 << 10),
        };
        if volume::verify_found(engine, owned, found, holds_this_init).await? {
            return Ok(());
        }
        tracing::warn!(
            volume = %volume,
            attempt,
            "a volume under the init's name holds something else: removed, filled again"
        );
        if !engine.remove_volume(&volume).await? {
            break;
        }
    }
    Err(DeliveryError::InitNotOurs { volume })
}

/// Whether a volume's content, read back as a tar archive of its mount folder, is exactly this
/// build's init: the folder and one regular file of that name with this binary's digest.
fn holds_this_init(archive: impl Read) -> std::io::Result<bool> {
    let mut found = false;
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let depth = path.components().count();
        let kind = entry.header().entry_type();
        match (depth, kind) {
            (1, tar::EntryType::Directory) => {}
            (2, tar::EntryType::Regular) if path.ends_with(FILE_NAME) && !found => {
                // Bounded: the archive read back is at most the binary's size and a margin.
                let mut content = Vec::new();
                entry.read_to_end(&mut content)?;
                if hex::encode(Sha256::digest(&content)) != *DIGEST {
                    return Ok(false);
                }
                found = true;
            }
            _ => return Ok(false),
        }
    }
    Ok(found)
}

/// Removes the init volumes of other packbox builds that no container uses (the engine keeps a
/// volume in use), that no filler is filling and that are older than `grace` (a run of that
/// build may be between filling it and creating its container); returns their names.
pub async fn collect(
    engine: &dyn ContainerEngine,
    grace: std::time::Duration,
) -> Result<Vec<String>, EngineError> {
    let current = volume_name();
    let mut removed = Vec::new();
    let volumes = engine
        .volumes_with_labels(&[
            format!("{}=true", owner::MANAGED),
            format!("packbox.kind={KIND}"),
        ])
        .await?;
    for volume in volumes {
        if volume.name == current
            || volume::is_younger_than(&volume.created_at, grace, std::time::SystemTime::now())
            || volume::is_being_filled(engine, &volume.name).await?
        {
            continue;
        }
        if engine.remove_volume(&volume.name).await? {
            removed.push(volume.name);
        }
    }
    Ok(removed)
}

/// The binary as a tar archive: owned by root, read and executed by anyone, written by none.
fn archive() -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_size(BINARY.len() as u64);
    header.set_mode(0o555);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, FILE_NAME, BINARY)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StreamKind;
    use crate::engine::fake::FakeEngine;
    use crate::lifecycle::frames::{Frame, FrameDecoder};

    const IMAGE: &str = "packbox/shell:5.2";

    #[test]
    fn the_embedded_init_is_a_static_executable() {
        assert_eq!(&BINARY[..4], b"\x7fELF", "an ELF binary");
        assert!(volume_name().ends_with(&*DIGEST));
    }

    /// The frames the embedded init writes when it runs `sh -c SCRIPT` on this machine, and its
    /// exit code.
    fn frames_of(script: &str) -> (Vec<Frame>, Option<i32>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, BINARY).expect("write the init");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let output = std::process::Command::new(&path)
            .args(["--", "sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the init runs");
        let frames = FrameDecoder::default()
            .push(&output.stdout)
            .expect("only frames on stdout");
        (frames, output.status.code())
    }

    #[test]
    fn the_real_init_relays_both_streams_and_ends_with_the_status_the_run_reads() {
        let (frames, code) = frames_of("printf out; printf err >&2; exit 3");
        assert_eq!(
            frames,
            [
                Frame::Output(StreamKind::Stdout, Bytes::from_static(b"out")),
                Frame::Output(StreamKind::Stderr, Bytes::from_static(b"err")),
                Frame::Exit(3),
            ]
        );
        assert_eq!(code, Some(3), "it exits with the action's status");
        let (frames, code) = frames_of("kill -TERM $$");
        assert_eq!(frames, [Frame::Exit(143)], "128 + SIGTERM");
        assert_eq!(code, Some(143));
        // What an action prints is payload, even the bytes of a status frame.
        let (frames, _) =
            frames_of(r"printf '\003\000\000\000\004\000\000\000\000'; sleep 1; exit 5");
        assert_eq!(frames.last(), Some(&Frame::Exit(5)), "{frames:?}");
        assert!(matches!(frames[0], Frame::Output(StreamKind::Stdout, _)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_volume_is_filled_once_and_a_stranger_of_its_name_replaced() {
        let fake = FakeEngine::new();
        let owned = Owned::for_tests();
        fake.add_image(IMAGE, &[], 0);
        ensure(fake.as_ref(), &owned, IMAGE).await.expect("filled");
        ensure(fake.as_ref(), &owned, IMAGE).await.expect("found");
        assert_eq!(
            fake.volume_uploads(&volume_name()).map(|u| u.len()),
            Some(1)
        );
        // Another state folder (another packbox on the engine) reads it back and finds the init.
        ensure(fake.as_ref(), &Owned::for_tests(), IMAGE)
            .await
            .expect("verified by content");
        assert_eq!(
            fake.volume_uploads(&volume_name()).map(|u| u.len()),
            Some(1)
        );
        // The engine made an empty volume of that name on its own (the real one was removed),
        // or a co-tenant placed one with packbox's labels and its own binary: both replaced.
        let mut forged = owner::managed_labels();
        forged.insert("packbox.kind".into(), KIND.into());
        forged.insert(DIGEST_LABEL.into(), DIGEST.clone());
        for labels in [BTreeMap::new(), forged] {
            fake.remove_volume(&volume_name()).await.expect("removed");
            fake.create_volume(&volume_name(), &labels)
                .await
                .expect("a stranger");
            ensure(fake.as_ref(), &owned, IMAGE)
                .await
                .expect("filled again");
            assert_eq!(
                fake.volume_uploads(&volume_name()).map(|u| u.len()),
                Some(1),
                "filled by packbox, not used as found"
            );
        }
    }

    #[test]
    fn only_this_binary_alone_passes_the_read_back() {
        let ours = archive_under_folder(&[(FILE_NAME, BINARY)]);
        assert!(holds_this_init(ours.as_slice()).expect("read"));
        let other = archive_under_folder(&[(FILE_NAME, b"#!/bin/sh\nexec \"$@\"\n")]);
        assert!(!holds_this_init(other.as_slice()).expect("read"));
        let beside = archive_under_folder(&[(FILE_NAME, BINARY), ("ld.so.preload", b"x")]);
        assert!(!holds_this_init(beside.as_slice()).expect("read"));
        let empty = archive_under_folder(&[]);
        assert!(!holds_this_init(empty.as_slice()).expect("read"));
    }

    /// A tar archive of folder `pack` holding `files`, as the engine sends a mount folder.
    fn archive_under_folder(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut folder = tar::Header::new_gnu();
        folder.set_entry_type(tar::EntryType::Directory);
        folder.set_mode(0o755);
        folder.set_size(0);
        folder.set_cksum();
        builder
            .append_data(&mut folder, "pack/", std::io::empty())
            .expect("folder");
        for (name, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o555);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("pack/{name}"), *content)
                .expect("file");
        }
        builder.into_inner().expect("archive")
    }

    #[tokio::test(start_paused = true)]
    async fn collecting_removes_other_builds_init_volumes_only() {
        let fake = FakeEngine::new();
        fake.add_image(IMAGE, &[], 0);
        ensure(fake.as_ref(), &Owned::for_tests(), IMAGE)
            .await
            .expect("filled");
        let mut labels = owner::managed_labels();
        labels.insert("packbox.kind".into(), KIND.into());
        labels.insert(DIGEST_LABEL.into(), "0".repeat(64));
        let old = format!("packbox-init-{}", "0".repeat(64));
        fake.create_volume(&old, &labels)
            .await
            .expect("an old build's");
        fake.create_volume("someone-elses", &BTreeMap::new())
            .await
            .expect("not packbox's");
        assert_eq!(
            collect(fake.as_ref(), std::time::Duration::from_secs(60))
                .await
                .expect("collect"),
            std::slice::from_ref(&old)
        );
        assert!(
            fake.volume_created(&volume_name())
                .await
                .expect("asked")
                .is_some()
        );
        assert!(
            fake.volume_created("someone-elses")
                .await
                .expect("asked")
                .is_some()
        );
        assert!(fake.volume_created(&old).await.expect("asked").is_none());
    }
}
