//! Pack-to-pack `dependencies` (`core`, or `core@>=1.2` with a version constraint), checked
//! against the packs folder: a pack that needs another that is missing, or at a version its
//! constraint refuses, cannot run, and says which pack needs which.

use std::path::Path;

use super::manifest::{self, PackManifest};
use super::problem::{Problem, locate};
use super::safety::is_pack_ref;
use crate::version::{Constraint, parse_version};

/// Every dependency of `pack` (its `pack.yaml` is `file`) that the packs folder `packs_dir`
/// does not satisfy, each a problem naming both packs.
pub(crate) fn unmet(packs_dir: &Path, file: &Path, pack: &PackManifest) -> Vec<Problem> {
    let line = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| locate(&text, &["dependencies"]));
    let problem = |message: String| Problem {
        file: file.to_path_buf(),
        line,
        field: Some("dependencies".into()),
        message,
    };
    let mut problems = Vec::new();
    for dependency in &pack.dependencies {
        let (name, constraint) = match dependency.split_once('@') {
            Some((name, constraint)) => (name.trim(), Some(constraint.trim())),
            None => (dependency.trim(), None),
        };
        if !is_pack_ref(name) {
            problems.push(problem(format!(
                "`{dependency}`: expected a pack ref, optionally with a version constraint (`core`, `core@>=1.2`)"
            )));
            continue;
        }
        let constraint = match constraint.map(Constraint::parse).transpose() {
            Ok(constraint) => constraint,
            Err(e) => {
                problems.push(problem(format!("`{dependency}`: {e}")));
                continue;
            }
        };
        let needed_by = &pack.pack_ref;
        let other_file = packs_dir.join(name).join("pack.yaml");
        if !other_file.is_file() {
            problems.push(problem(format!(
                "pack `{needed_by}` needs pack `{name}`, which is not in {}",
                packs_dir.display()
            )));
            continue;
        }
        let Some(constraint) = constraint else {
            continue;
        };
        let other = manifest::load(&other_file, &mut Vec::new(), &mut Vec::new());
        let version = other.as_ref().map(|other| other.version.clone());
        let satisfied = version
            .as_deref()
            .and_then(|v| parse_version(v).ok())
            .is_some_and(|v| constraint.matches(&v));
        if !satisfied {
            problems.push(problem(format!(
                "pack `{needed_by}` needs pack `{name}` at `{}`, but {} has version {}",
                constraint.as_str(),
                other_file.display(),
                version.as_deref().unwrap_or("(unreadable)")
            )));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packs(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn unmet_of(dir: &Path, pack: &str) -> Vec<String> {
        let file = dir.join(pack).join("pack.yaml");
        let manifest = manifest::load(&file, &mut Vec::new(), &mut Vec::new()).expect("loads");
        unmet(dir, &file, &manifest)
            .iter()
            .map(|p| p.message.clone())
            .collect()
    }

    #[test]
    fn missing_and_wrong_version_dependencies_name_both_packs() {
        let dir = packs(&[
            (
                "app/pack.yaml",
                "ref: app\nlabel: A\nversion: 1.0.0\ndependencies: [core, 'lib@>=2.0', 'lib2@^1.1', absent]\n",
            ),
            ("core/pack.yaml", "ref: core\nlabel: C\nversion: 1.0.3\n"),
            ("lib/pack.yaml", "ref: lib\nlabel: L\nversion: 1.5.0\n"),
            ("lib2/pack.yaml", "ref: lib2\nlabel: L\nversion: 1.2.0\n"),
        ]);
        let found = unmet_of(dir.path(), "app");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("pack `app` needs pack `lib` at `>=2.0`")
                && found[0].contains("version 1.5.0"),
            "{found:?}"
        );
        assert!(
            found[1].contains("pack `app` needs pack `absent`, which is not in"),
            "{found:?}"
        );
    }

    #[test]
    fn malformed_dependencies_are_problems() {
        let dir = packs(&[(
            "app/pack.yaml",
            "ref: app\nlabel: A\nversion: 1.0.0\ndependencies: ['../etc', 'core@=>1']\n",
        )]);
        let found = unmet_of(dir.path(), "app");
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
