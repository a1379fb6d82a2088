//! packbox's init (the `init/` crate), the PID 1 of every action container on the docker
//! backend: embedded in packbox at build time (a static binary, so it runs in any image) and
//! delivered to an engine in a read-only volume named after its digest, made once per engine
//! and packbox build, on the engine's side (so it works on remote engines, where bind mounts of
//! this machine's files do not).
//!
//! What it does in the container, and why the action cannot forge the exit status it reports,
//! is said in `init/src/main.rs` and `lifecycle/frames.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::volume::{self, DeliveryError};
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
/// engine, whoever asks at the same time). A volume of that name that packbox did not fill (no
/// labels naming this binary: an empty volume the engine made on its own for a container that
/// named it after the real one was removed) is removed and filled again. `helper_image` is an
/// image the engine has: the fill's helper containers are created from it, never started.
pub async fn ensure(engine: &dyn ContainerEngine, helper_image: &str) -> Result<(), DeliveryError> {
    let volume = volume_name();
    if let Some(labels) = engine.volume_labels(&volume).await?
        && !is_ours(&labels)
    {
        engine.remove_volume(&volume).await?;
    }
    let labels = BTreeMap::from([
        ("packbox.kind".to_string(), KIND.to_string()),
        (DIGEST_LABEL.to_string(), DIGEST.clone()),
    ]);
    volume::ensure_volume(engine, &volume, labels, helper_image, || async {
        let archive = archive().map_err(|source| DeliveryError::Read {
            pack: "packbox-init".into(),
            path: FILE_NAME.into(),
            source,
        })?;
        Ok(Box::pin(futures::stream::once(
            async move { Ok(Bytes::from(archive)) },
        )) as crate::engine::ArchiveStream)
    })
    .await?;
    Ok(())
}

/// Removes the init volumes of other packbox builds that no container uses (the engine keeps a
/// volume in use) and that no filler is filling; returns their names.
pub async fn collect(engine: &dyn ContainerEngine) -> Result<Vec<String>, EngineError> {
    let current = volume_name();
    let mut removed = Vec::new();
    let volumes = engine
        .volumes_with_labels(&[
            format!("{}=true", owner::MANAGED),
            format!("packbox.kind={KIND}"),
        ])
        .await?;
    for volume in volumes {
        if volume.name == current || volume::is_being_filled(engine, &volume.name).await? {
            continue;
        }
        if engine.remove_volume(&volume.name).await? {
            removed.push(volume.name);
        }
    }
    Ok(removed)
}

/// Whether a volume's labels say it holds this build's init.
fn is_ours(labels: &HashMap<String, String>) -> bool {
    labels.get(owner::MANAGED).is_some_and(|v| v == "true")
        && labels.get("packbox.kind").is_some_and(|v| v == KIND)
        && labels.get(DIGEST_LABEL) == Some(&*DIGEST)
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
        fake.add_image(IMAGE, &[], 0);
        ensure(fake.as_ref(), IMAGE).await.expect("filled");
        ensure(fake.as_ref(), IMAGE).await.expect("found");
        assert_eq!(
            fake.volume_uploads(&volume_name()).map(|u| u.len()),
            Some(1)
        );
        // The engine made an empty volume of that name on its own (the real one was removed).
        fake.remove_volume(&volume_name()).await.expect("removed");
        fake.create_volume(&volume_name(), &BTreeMap::new())
            .await
            .expect("a stranger");
        ensure(fake.as_ref(), IMAGE).await.expect("filled again");
        assert_eq!(
            fake.volume_uploads(&volume_name()).map(|u| u.len()),
            Some(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn collecting_removes_other_builds_init_volumes_only() {
        let fake = FakeEngine::new();
        fake.add_image(IMAGE, &[], 0);
        ensure(fake.as_ref(), IMAGE).await.expect("filled");
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
            collect(fake.as_ref()).await.expect("collect"),
            std::slice::from_ref(&old)
        );
        assert!(fake.volume_exists(&volume_name()).await.expect("asked"));
        assert!(fake.volume_exists("someone-elses").await.expect("asked"));
        assert!(!fake.volume_exists(&old).await.expect("asked"));
    }
}
