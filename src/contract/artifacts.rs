//! Artifacts: the files an action leaves in `ATTUNE_ARTIFACTS_DIR`, as a run reports them (name,
//! size, SHA-256) and what was refused, with why. The names are the action's: each is checked
//! here before it becomes a file name on the host or a path segment of the API.

use serde::{Deserialize, Serialize};

/// Where the action finds its artifacts folder (on the container's private `/tmp` tmpfs).
pub const ARTIFACTS_DIR: &str = "/tmp/artifacts";

/// The longest artifact name kept, in bytes (a file name's limit on Linux).
pub const MAX_NAME: usize = 255;

/// Refusals listed one by one in an outcome; the rest are counted in one more line.
pub const MAX_REFUSALS_LISTED: usize = 64;

/// How many artifacts a run keeps, and how many bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArtifactLimits {
    /// Files kept at most.
    pub max_files: u64,
    /// Bytes kept at most, all files together.
    pub max_bytes: u64,
}

impl ArtifactLimits {
    /// The bounds as packbox's init reads them (`FILES:BYTES`).
    pub fn for_init(&self) -> String {
        format!("{}:{}", self.max_files, self.max_bytes)
    }
}

/// One kept artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its file name in the artifacts folder (checked: see [`checked_name`]).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// An entry of the artifacts folder that was not kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedArtifact {
    /// Its name, with anything unprintable escaped (empty for what concerns the whole folder).
    pub name: String,
    /// Why it was not kept.
    pub reason: String,
}

/// What a run's artifacts folder held when the action ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifacts {
    /// The artifacts kept, in name order.
    pub files: Vec<Artifact>,
    /// The entries refused (at most [`MAX_REFUSALS_LISTED`], then one line counting the rest).
    pub refused: Vec<RefusedArtifact>,
}

impl Artifacts {
    /// Notes a refusal, within the bound on how many are listed.
    pub fn refuse(&mut self, name: &[u8], reason: impl Into<String>) {
        match self.refused.len() {
            n if n < MAX_REFUSALS_LISTED => self.refused.push(RefusedArtifact {
                name: printable(name),
                reason: reason.into(),
            }),
            n if n == MAX_REFUSALS_LISTED => self.refused.push(RefusedArtifact {
                name: String::new(),
                reason: "more entries were refused".into(),
            }),
            _ => {}
        }
    }
}

/// The name as a file name packbox may create in its own folder and serve by URL: UTF-8, 1 to
/// [`MAX_NAME`] bytes, no `/`, `\`, NUL or other control character, not `.` or `..`. The error
/// says what is wrong with it.
pub fn checked_name(name: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(name).map_err(|_| "its name is not UTF-8")?;
    if text.is_empty() {
        return Err("its name is empty");
    }
    if name.len() > MAX_NAME {
        return Err("its name is longer than 255 bytes");
    }
    if text == "." || text == ".." {
        return Err("its name is a path step (`.` or `..`)");
    }
    if text.contains(['/', '\\']) {
        return Err("its name holds a path separator");
    }
    if text.chars().any(char::is_control) {
        return Err("its name holds a control character");
    }
    Ok(text)
}

/// A name for a report: lossy UTF-8, control characters escaped, at most 100 bytes.
fn printable(name: &[u8]) -> String {
    let mut shown = String::new();
    for c in String::from_utf8_lossy(name).chars() {
        if shown.len() >= 100 {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_kept() {
        for name in [
            "report.txt",
            "data.json",
            ".hidden",
            "..dots",
            "a b",
            "ü.txt",
        ] {
            assert_eq!(checked_name(name.as_bytes()), Ok(name));
        }
    }

    #[test]
    fn names_that_could_reach_elsewhere_or_confuse_are_refused() {
        for name in [
            &b""[..],
            b".",
            b"..",
            b"../etc",
            b"a/b",
            b"a\\b",
            b"line\nbreak",
            b"nul\0",
            b"esc\x1b[31m",
            b"\xff\xfe",
        ] {
            assert!(checked_name(name).is_err(), "{name:?}");
        }
        assert!(checked_name(&[b'a'; 256]).is_err());
        assert!(checked_name(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn refusals_are_listed_printably_and_bounded() {
        let mut artifacts = Artifacts::default();
        artifacts.refuse(b"bad\nname\x1b", "a reason");
        assert_eq!(artifacts.refused[0].name, "bad\\nname\\u{1b}");
        for _ in 0..1000 {
            artifacts.refuse(&[b'x'; 300], "again");
        }
        assert_eq!(artifacts.refused.len(), MAX_REFUSALS_LISTED + 1);
        assert!(artifacts.refused[1].name.len() <= 104);
        assert_eq!(
            artifacts.refused[MAX_REFUSALS_LISTED].reason,
            "more entries were refused"
        );
    }

    #[test]
    fn the_inits_bounds_are_files_then_bytes() {
        let limits = ArtifactLimits {
            max_files: 64,
            max_bytes: 1 << 26,
        };
        assert_eq!(limits.for_init(), "64:67108864");
    }
}
