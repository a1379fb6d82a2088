//! Packs delivered by content into volumes of an engine that cannot see this machine's files (the
//! Docker-in-Docker engine): filled once per content, complete or absent, readable where a run
//! mounts them, collected by the keep rule, and nothing else left behind.

mod common;

use std::path::Path;

use common::dind::{Dind, Flavour};
use packbox::Engine;
use packbox::endpoint::Environment;
use packbox::pack_volume::{self, PackVolume};

/// The runtime image the lock and helper containers are made from (loaded by scripts/dind).
const HELPER_IMAGE: &str = "packbox/shell:5.2";

async fn engine(dind: &Dind) -> Engine {
    let env: Environment = dind
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Engine::connect_with(None, &env)
        .await
        .expect("the dind engine answers")
}

/// A pack ref no other test uses, so each test sees and removes only its own volumes.
fn unique_ref(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn write_pack(dir: &Path, greeting: &str) {
    std::fs::create_dir_all(dir.join("actions")).expect("mkdir");
    std::fs::write(dir.join("pack.yaml"), "ref: p\n").expect("write");
    std::fs::write(dir.join("actions/greet.sh"), format!("echo {greeting}\n")).expect("write");
    let _ = std::fs::remove_file(dir.join("actions/link.sh"));
    std::os::unix::fs::symlink("greet.sh", dir.join("actions/link.sh")).expect("symlink");
}

/// Removes a test's pack volumes on the dind engine, even when the test failed.
struct VolumesOf<'a> {
    dind: &'a Dind,
    pack: String,
}

impl Drop for VolumesOf<'_> {
    fn drop(&mut self) {
        for volume in self
            .dind
            .volumes_labelled(&format!("packbox.pack={}", self.pack))
        {
            let _ = self.dind.docker(&["volume", "rm", "-f", &volume]);
        }
    }
}

/// What a container sees at /pack when the volume is mounted read-only.
fn listing(dind: &Dind, volume: &str) -> String {
    dind.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/pack:ro"),
        HELPER_IMAGE,
        "bash",
        "-c",
        "cd /pack && find . | sort && cat actions/link.sh && stat -c '%a %u' actions/greet.sh \
         && (touch /pack/x 2>/dev/null && echo WRITABLE || echo read-only)",
    ])
    .join("\n")
}

#[tokio::test]
async fn a_pack_volume_is_filled_once_holds_the_tree_and_is_read_only() {
    let dind = Dind::acquire(Flavour::Plain);
    let engine = engine(&dind).await;
    let pack = unique_ref("vol");
    let _cleanup = VolumesOf {
        dind: &dind,
        pack: pack.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_pack(dir.path(), "hello");

    let first = pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE)
        .await
        .expect("delivered");
    assert!(first.filled);
    let second = pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE)
        .await
        .expect("delivered again");
    assert_eq!(
        second,
        PackVolume {
            filled: false,
            ..first.clone()
        }
    );

    let seen = listing(&dind, &first.name);
    for line in [
        "./actions/greet.sh",
        "./actions/link.sh",
        "./pack.yaml",
        "echo hello",
        "644 0",
        "read-only",
    ] {
        assert!(seen.lines().any(|l| l == line), "{line:?} not in:\n{seen}");
    }
    // Neither lock nor helper is left; the volume is labelled for gc.
    assert!(dind.containers_labelled("packbox.pack_filling").is_empty());
    let labelled = dind.volumes_labelled(&format!("packbox.pack={pack}"));
    assert_eq!(labelled, vec![first.name.clone()]);
    let managed = dind.docker_ok(&[
        "volume",
        "inspect",
        "-f",
        "{{index .Labels \"packbox.managed\"}} {{index .Labels \"packbox.pack_digest\"}}",
        &first.name,
    ]);
    assert_eq!(managed, vec![format!("true {}", first.digest)]);
}

#[tokio::test]
async fn an_edited_pack_gets_a_new_volume() {
    let dind = Dind::acquire(Flavour::Plain);
    let engine = engine(&dind).await;
    let pack = unique_ref("edit");
    let _cleanup = VolumesOf {
        dind: &dind,
        pack: pack.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_pack(dir.path(), "before");
    let before = pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE)
        .await
        .expect("delivered");
    write_pack(dir.path(), "after");
    let after = pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE)
        .await
        .expect("delivered");
    assert_ne!(before.name, after.name);
    assert!(after.filled);
    assert!(listing(&dind, &after.name).contains("echo after"));
    assert!(listing(&dind, &before.name).contains("echo before"));
}

#[tokio::test]
async fn concurrent_first_deliveries_fill_the_volume_once() {
    let dind = Dind::acquire(Flavour::Plain);
    let engine = engine(&dind).await;
    let pack = unique_ref("race");
    let _cleanup = VolumesOf {
        dind: &dind,
        pack: pack.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_pack(dir.path(), "once");
    let deliveries = (0..4).map(|_| pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE));
    let results = futures::future::join_all(deliveries).await;
    let volumes: Vec<PackVolume> = results.into_iter().map(|r| r.expect("delivered")).collect();
    assert_eq!(
        volumes.iter().filter(|v| v.filled).count(),
        1,
        "{volumes:?}"
    );
    assert!(volumes.iter().all(|v| v.name == volumes[0].name));
    assert!(listing(&dind, &volumes[0].name).contains("echo once"));
}

#[tokio::test]
async fn a_dead_fillers_lock_and_half_filled_volume_are_replaced() {
    let dind = Dind::acquire(Flavour::Plain);
    let engine = engine(&dind).await;
    let pack = unique_ref("dead");
    let _cleanup = VolumesOf {
        dind: &dind,
        pack: pack.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_pack(dir.path(), "whole");
    let digest = pack_volume::tree_digest(&pack, dir.path()).expect("digest");
    let volume = pack_volume::volume_name(&pack, &digest);

    // What a filler killed mid-upload leaves: its lock, and a volume holding part of the pack.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    dind.docker_ok(&[
        "volume",
        "create",
        "--label",
        &format!("packbox.pack={pack}"),
        &volume,
    ]);
    dind.docker_ok(&[
        "create",
        "--name",
        &format!("{volume}-lock"),
        "--label",
        "packbox.managed=true",
        "--label",
        &format!("packbox.owner_host={}", host.trim()),
        "--label",
        &format!("packbox.owner_pid={}", u32::MAX - 1),
        "--label",
        &format!("packbox.pack_filling={volume}"),
        HELPER_IMAGE,
        "true",
    ]);

    let delivered = pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE)
        .await
        .expect("delivered");
    assert!(delivered.filled, "the half volume was refilled");
    assert_eq!(delivered.name, volume);
    assert!(listing(&dind, &volume).contains("echo whole"));
    assert!(dind.containers_labelled("packbox.pack_filling").is_empty());
}

#[tokio::test]
async fn gc_keeps_the_newest_and_the_used_and_removes_the_rest() {
    let dind = Dind::acquire(Flavour::Plain);
    let engine = engine(&dind).await;
    let pack = unique_ref("gc");
    let _cleanup = VolumesOf {
        dind: &dind,
        pack: pack.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut names = Vec::new();
    for version in ["one", "two", "three"] {
        write_pack(dir.path(), version);
        names.push(
            pack_volume::ensure(&engine, &pack, dir.path(), HELPER_IMAGE)
                .await
                .expect("delivered")
                .name,
        );
        // Creation times have a resolution of a second: keep the order unambiguous.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // The oldest is in use by a (stopped) container: the engine keeps it.
    let user = dind.docker_ok(&[
        "create",
        "-v",
        &format!("{}:/pack:ro", names[0]),
        HELPER_IMAGE,
        "true",
    ]);
    let collected = pack_volume::collect(&engine, 1).await.expect("collected");
    dind.docker_ok(&["rm", &user[0]]);
    let left = dind.volumes_labelled(&format!("packbox.pack={pack}"));
    assert!(left.contains(&names[2]), "the newest is kept: {left:?}");
    assert!(left.contains(&names[0]), "the used one is kept: {left:?}");
    assert!(
        !left.contains(&names[1]),
        "the unused old one is gone: {left:?}"
    );
    assert!(collected.removed.contains(&names[1]));
}
