//! What packbox can show is its own on an engine: the ids of the images it built (environment
//! and pack images) and the volumes it filled or whose content it verified, recorded in the
//! state folder as it makes them.
//!
//! A name on an engine proves nothing: whoever shares the engine's API can tag an image
//! `packbox/env:...` or create a volume `packbox-pack-...` first, with forged `packbox.*`
//! labels. An image id does: it is the digest of the image's configuration, which names every
//! layer by the digest of its content, so an id packbox recorded is the image packbox built,
//! on any engine. A volume has no such id: packbox records its name with the time the engine
//! created it, after filling it or reading its content back and finding the pack's digest.
//!
//! The record is one line per fact, appended (`O_APPEND`, one write per line), so processes
//! sharing a state folder add to it at once without losing a line; it is read whole, capped.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The record's file in the state folder.
pub const FILE_NAME: &str = "owned";
/// A record larger than this is read only up to here (about 100,000 facts): later facts are
/// not seen, and what they name is made again.
const MAX_BYTES: u64 = 16 << 20;

/// The record of what packbox made, in one state folder.
#[derive(Clone, Debug)]
pub struct Owned {
    path: PathBuf,
}

impl Owned {
    /// The record in the state folder `state_dir`.
    pub fn in_state_dir(state_dir: &Path) -> Owned {
        Owned {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// Whether packbox built (or recorded) the image with this id.
    pub fn has_image(&self, id: &str) -> bool {
        self.has(&format!("image {id}"))
    }

    /// Records an image packbox built.
    pub fn add_image(&self, id: &str) -> std::io::Result<()> {
        self.add(&format!("image {id}"))
    }

    /// Records an image packbox built under `tag`: the id, and that the tag named it.
    pub fn add_tagged_image(&self, tag: &str, id: &str) -> std::io::Result<()> {
        self.add_image(id)?;
        self.add(&format!("tag {tag} {id}"))
    }

    /// The ids of the images packbox built under `tag`, newest first: the tag itself may name
    /// another's image by now (a packbox with another state folder built it again).
    pub fn images_tagged(&self, tag: &str) -> Vec<String> {
        let prefix = format!("tag {tag} ");
        let mut ids: Vec<String> = self
            .facts()
            .iter()
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_string))
            .collect();
        ids.reverse();
        ids
    }

    /// Whether packbox filled or verified the volume `name` that the engine created at
    /// `created_at`.
    pub fn has_volume(&self, name: &str, created_at: &str) -> bool {
        self.has(&format!("volume {name} {created_at}"))
    }

    /// Records a volume packbox filled or verified.
    pub fn add_volume(&self, name: &str, created_at: &str) -> std::io::Result<()> {
        self.add(&format!("volume {name} {created_at}"))
    }

    /// A record of its own in a folder removed when the test process ends, for unit tests.
    #[cfg(test)]
    pub fn for_tests() -> Owned {
        static DIR: std::sync::LazyLock<Option<tempfile::TempDir>> =
            std::sync::LazyLock::new(|| tempfile::tempdir().ok());
        let base = DIR
            .as_ref()
            .map_or_else(std::env::temp_dir, |d| d.path().to_path_buf());
        Owned::in_state_dir(&base.join(uuid::Uuid::new_v4().simple().to_string()))
    }

    fn has(&self, fact: &str) -> bool {
        self.facts().iter().any(|line| line == fact)
    }

    /// Every fact recorded (none when the record cannot be read).
    fn facts(&self) -> Vec<String> {
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut text = String::new();
        if file.take(MAX_BYTES).read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        text.lines().map(str::to_string).collect()
    }

    fn add(&self, fact: &str) -> std::io::Result<()> {
        // A fact with a line break could forge another: names and ids never hold one.
        if fact.contains(['\n', '\r']) || self.has(fact) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all(format!("{fact}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_recorded_once_and_found_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owned = Owned::in_state_dir(dir.path());
        assert!(!owned.has_image("sha256:abc"));
        owned.add_image("sha256:abc").expect("add");
        owned.add_image("sha256:abc").expect("add again");
        owned
            .add_volume("packbox-pack-p-1", "2026-01-01T00:00:00Z")
            .expect("add");
        let again = Owned::in_state_dir(dir.path());
        assert!(again.has_image("sha256:abc"));
        assert!(!again.has_image("sha256:ab"));
        assert!(again.has_volume("packbox-pack-p-1", "2026-01-01T00:00:00Z"));
        assert!(!again.has_volume("packbox-pack-p-1", "2026-01-01T00:00:01Z"));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn images_built_under_a_tag_are_found_newest_first() {
        let owned = Owned::for_tests();
        owned
            .add_tagged_image("packbox/env:a", "sha256:1")
            .expect("recorded");
        owned
            .add_tagged_image("packbox/env:b", "sha256:2")
            .expect("recorded");
        owned
            .add_tagged_image("packbox/env:a", "sha256:3")
            .expect("recorded");
        assert_eq!(
            owned.images_tagged("packbox/env:a"),
            ["sha256:3", "sha256:1"]
        );
        assert!(owned.has_image("sha256:2"));
        assert!(owned.images_tagged("packbox/env:c").is_empty());
    }

    #[test]
    fn a_fact_cannot_smuggle_another_line_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owned = Owned::in_state_dir(dir.path());
        owned
            .add_volume("x", "t\nimage sha256:forged")
            .expect("refused quietly");
        assert!(!owned.has_image("sha256:forged"));
    }
}
