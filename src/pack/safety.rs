//! What a pack may not do: name itself outside the naming rules, point its entry point out of
//! `actions/`, or hold a symlink that leads out of the pack. A pack is untrusted input: packbox
//! reads its files on the host (manifests, dependency lists) and mounts it into containers.

use std::path::{Component, Path, PathBuf};

use super::problem::Problem;

/// Folder entries scanned for symlinks before a pack is refused as too large to check.
const MAX_ENTRIES: usize = 200_000;

/// Whether a pack ref follows the rule: lowercase `[a-z][a-z0-9_-]*`, no dots.
pub fn is_pack_ref(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Whether an action name (the part after `PACK.`) is a plain file stem: letters, digits, `_`
/// and `-` (not first), no dots or slashes.
pub fn is_action_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The file an `entry_point` names, which must stay inside `<pack>/actions/`; the error says
/// what was expected. `pack_dir` must be canonical.
pub fn resolve_entry_point(pack_dir: &Path, entry_point: &str) -> Result<PathBuf, String> {
    resolve_under(&pack_dir.join("actions"), "actions/", entry_point)
}

/// A file named relative to the pack root (a test runner's entry point), which must stay inside
/// the pack; the error says what was expected. `pack_dir` must be canonical.
pub fn resolve_in_pack(pack_dir: &Path, path: &str) -> Result<PathBuf, String> {
    resolve_under(pack_dir, "the pack folder", path)
}

/// A file named relative to `base`, which it may not leave (`shown` names `base` in messages).
fn resolve_under(base: &Path, shown: &str, named: &str) -> Result<PathBuf, String> {
    let relative = Path::new(named);
    if named.trim().is_empty() {
        return Err(format!(
            "expected a file name relative to {shown}, found nothing"
        ));
    }
    if relative.is_absolute() {
        return Err(format!(
            "expected a path relative to {shown}, found the absolute path {named}"
        ));
    }
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "expected a path inside {shown}, but {named} climbs out with `..`"
        ));
    }
    let path = base.join(relative);
    let Ok(real) = path.canonicalize() else {
        return Err(format!("{} does not exist", path.display()));
    };
    if !real.starts_with(base) {
        return Err(format!(
            "expected a file inside {shown}, but {} leads to {} through a symlink",
            path.display(),
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    Ok(real)
}

/// Every symlink in the pack that leads outside it (followed, or read when it dangles).
/// `pack_dir` must be canonical.
pub fn outside_symlinks(pack_dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut pending = vec![pack_dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(problem(&dir, format!("cannot read the folder: {e}")));
                continue;
            }
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                problems.push(problem(
                    pack_dir,
                    format!("holds more than {MAX_ENTRIES} files; too many to check for symlinks"),
                ));
                return problems;
            }
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_symlink()
                && let Some(target) = leads_outside(pack_dir, &path)
            {
                problems.push(problem(
                    &path,
                    format!("symlink leads outside the pack (to {})", target.display()),
                ));
            }
        }
    }
    problems.sort_by(|a, b| a.file.cmp(&b.file));
    problems
}

/// Where a symlink leads, when that is outside `root`.
fn leads_outside(root: &Path, link: &Path) -> Option<PathBuf> {
    let target = match link.canonicalize() {
        Ok(real) => real,
        Err(_) => {
            // Dangling: judge the path it names, lexically.
            let named = std::fs::read_link(link).ok()?;
            normalize(&link.parent()?.join(named))
        }
    };
    (!target.starts_with(root)).then_some(target)
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn problem(file: &Path, message: String) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line: None,
        field: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn pack() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack = dir.path().join("p");
        std::fs::create_dir_all(pack.join("actions/sub")).expect("mkdir");
        std::fs::write(pack.join("actions/a.sh"), "echo\n").expect("write");
        std::fs::write(pack.join("actions/sub/b.sh"), "echo\n").expect("write");
        std::fs::write(dir.path().join("secret"), "s3cret\n").expect("write");
        let pack = pack.canonicalize().expect("canonical");
        (dir, pack)
    }

    #[test]
    fn naming_rules() {
        for good in ["core", "my_pack", "a-1"] {
            assert!(is_pack_ref(good), "{good}");
        }
        for bad in ["", "Core", "1pack", "my.pack", "_x", "a/b", "a b"] {
            assert!(!is_pack_ref(bad), "{bad}");
        }
        for good in ["greet", "http_request", "Get-Thing", "2fa"] {
            assert!(is_action_name(good), "{good}");
        }
        for bad in ["", "a.b", "../x", "a/b", "-x", "a b"] {
            assert!(!is_action_name(bad), "{bad}");
        }
    }

    #[test]
    fn entry_points_inside_actions_resolve() {
        let (_dir, pack) = pack();
        assert!(resolve_entry_point(&pack, "a.sh").is_ok());
        assert!(resolve_entry_point(&pack, "./sub/b.sh").is_ok());
    }

    #[test]
    fn entry_points_that_leave_actions_are_refused() {
        let (dir, pack) = pack();
        let abs = dir.path().join("secret");
        let cases = [
            ("../pack.yaml", "climbs out"),
            ("sub/../../x", "climbs out"),
            (abs.to_str().expect("utf-8"), "absolute path"),
            ("", "found nothing"),
            ("nope.sh", "nope.sh does not exist"),
            ("sub", "is not a file"),
        ];
        for (entry, expected) in cases {
            let err = resolve_entry_point(&pack, entry).expect_err(entry);
            assert!(err.contains(expected), "{entry}: {err}");
        }
        symlink(&abs, pack.join("actions/link.sh")).expect("symlink");
        let err = resolve_entry_point(&pack, "link.sh").expect_err("leads out");
        assert!(err.contains("through a symlink"), "{err}");
    }

    #[test]
    fn symlinks_out_of_the_pack_are_found_and_inner_ones_allowed() {
        let (dir, pack) = pack();
        symlink("a.sh", pack.join("actions/inner.sh")).expect("symlink");
        assert!(outside_symlinks(&pack).is_empty());
        symlink(dir.path().join("secret"), pack.join("actions/sub/out")).expect("symlink");
        symlink("../../../nowhere", pack.join("actions/dangling")).expect("symlink");
        symlink("/etc", pack.join("etc")).expect("symlink");
        let problems = outside_symlinks(&pack);
        let files: Vec<_> = problems
            .iter()
            .map(|p| p.file.strip_prefix(&pack).expect("inside").to_path_buf())
            .collect();
        assert_eq!(
            files,
            [
                PathBuf::from("actions/dangling"),
                PathBuf::from("actions/sub/out"),
                PathBuf::from("etc")
            ]
        );
        assert!(problems[0].message.contains("outside the pack"));
    }
}
