//! npm's inputs of a pack: `package.json` and, when present, `package-lock.json` (installed with
//! `npm ci`). A yarn or pnpm lock without an npm lock is refused: npm would resolve other
//! versions than the ones the pack's author locked.

use std::collections::BTreeMap;
use std::path::Path;

use super::files::{MAX_MANIFEST_BYTES, present, read_pack_file};
use super::{Installer, Manifests, Requirement};
use crate::pack::problem::Problem;

/// Locks of other package managers, and how to make the npm lock from them.
const FOREIGN_LOCKS: &[(&str, &str)] = &[("yarn.lock", "yarn"), ("pnpm-lock.yaml", "pnpm")];

pub(super) fn read(pack_dir: &Path) -> Result<Option<Manifests>, Vec<Problem>> {
    let package_json = pack_dir.join("package.json");
    if !present(&package_json) {
        return Ok(None);
    }
    let bytes = read_manifest(pack_dir, &package_json)?;
    let requirements = requirements(&package_json, &bytes)?;
    let mut files = vec![("package.json".to_string(), bytes)];
    let lock = pack_dir.join("package-lock.json");
    if present(&lock) {
        files.push((
            "package-lock.json".to_string(),
            read_manifest(pack_dir, &lock)?,
        ));
    } else {
        let foreign: Vec<Problem> = FOREIGN_LOCKS
            .iter()
            .filter(|(name, _)| present(&pack_dir.join(name)))
            .map(|(name, tool)| Problem {
                file: pack_dir.join(name),
                line: None,
                field: None,
                message: format!(
                    "packbox installs Node.js dependencies with npm (`npm ci` from package-lock.json) and cannot use {tool}'s lock; without package-lock.json npm would install other versions than {name} pins: add package-lock.json (`npm install --package-lock-only`) or remove {name}"
                ),
            })
            .collect();
        if !foreign.is_empty() {
            return Err(foreign);
        }
    }
    Ok(Some(Manifests {
        installer: Installer::Npm,
        files,
        requirements,
        sources: Vec::new(),
        program: None,
    }))
}

fn read_manifest(pack_dir: &Path, path: &Path) -> Result<Vec<u8>, Vec<Problem>> {
    read_pack_file(pack_dir, path, MAX_MANIFEST_BYTES).map_err(|message| {
        vec![Problem {
            file: path.to_path_buf(),
            line: None,
            field: None,
            message,
        }]
    })
}

/// `package.json`'s `dependencies`, as `name@spec`; a file that is not a JSON object is a problem
/// (npm would fail on it at build time).
fn requirements(file: &Path, bytes: &[u8]) -> Result<Vec<Requirement>, Vec<Problem>> {
    let problem = |field: Option<&str>, message: String| {
        vec![Problem {
            file: file.to_path_buf(),
            line: None,
            field: field.map(str::to_string),
            message,
        }]
    };
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| problem(None, format!("invalid JSON: {e}")))?;
    let Some(object) = document.as_object() else {
        return Err(problem(None, "expected a JSON object".into()));
    };
    let dependencies = match object.get("dependencies") {
        None | Some(serde_json::Value::Null) => BTreeMap::new(),
        Some(serde_json::Value::Object(map)) => map.iter().collect(),
        Some(_) => {
            return Err(problem(
                Some("dependencies"),
                "expected a mapping of package names to versions".into(),
            ));
        }
    };
    Ok(dependencies
        .into_iter()
        .map(|(name, spec)| Requirement {
            text: match spec.as_str() {
                Some(text) => format!("{name}@{text}"),
                None => format!("{name}@{spec}"),
            },
            source: "package.json dependencies".into(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    #[test]
    fn package_json_dependencies_are_listed() {
        let dir = pack_with(&[(
            "package.json",
            r#"{"dependencies": {"is-number": "^7.0.0"}}"#,
        )]);
        let manifests = read(dir.path()).expect("valid").expect("deps");
        assert_eq!(manifests.requirements[0].text, "is-number@^7.0.0");
        let dir = pack_with(&[("package.json", "{")]);
        let problems = read(dir.path()).expect_err("bad JSON");
        assert!(problems[0].message.contains("invalid JSON"), "{problems:?}");
    }

    #[test]
    fn a_lock_without_package_json_is_no_manifest() {
        let dir = pack_with(&[("package-lock.json", "{}")]);
        assert_eq!(read(dir.path()), Ok(None));
        std::fs::write(dir.path().join("package.json"), "{}").expect("write");
        let found = read(dir.path()).expect("valid").expect("present");
        assert_eq!(found.files.len(), 2);
    }

    #[test]
    fn yarn_and_pnpm_locks_without_an_npm_lock_are_refused() {
        for lock in ["yarn.lock", "pnpm-lock.yaml"] {
            let dir = pack_with(&[("package.json", "{}"), (lock, "")]);
            let problems = read(dir.path()).expect_err(lock);
            assert!(problems[0].file.ends_with(lock));
            assert!(
                problems[0].message.contains("add package-lock.json"),
                "{problems:?}"
            );
            std::fs::write(dir.path().join("package-lock.json"), "{}").expect("write");
            assert!(
                read(dir.path()).is_ok(),
                "with an npm lock, {lock} is not used"
            );
        }
    }
}
