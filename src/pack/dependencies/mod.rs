//! A pack's dependencies for one installer, as Attune packs declare them: the manifest files at
//! the pack root (`requirements.txt` with what it includes and names; `package.json` with
//! `package-lock.json`) and, for pip, the requirements `pack.yaml` lists in
//! `meta.python_dependencies`. The merged set is what the environment image installs and what
//! its key hashes. Every file is read as untrusted input ([`files`]).

use std::path::Path;

use serde::Serialize;

use super::manifest::PackManifest;
use super::problem::{Problem, locate};

mod files;
pub mod golang;
mod npm;
mod pip;
mod set;

pub use set::{GoProgram, Installer, Manifests};

/// One declared dependency and where it was declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// As written: `requests>=2.28.0`, `is-number@^7.0.0`.
    pub text: String,
    /// `requirements.txt:3`, `pack.yaml meta.python_dependencies`, ...
    pub source: String,
}

/// The dependencies of the pack in `pack_dir` (canonical) for `installer`: `None` when it has
/// none (its actions run on the runtime image). Conflicts and unreadable or unsafe manifests
/// are problems.
pub fn read(
    pack_dir: &Path,
    pack: &PackManifest,
    installer: Installer,
) -> Result<Option<Manifests>, Vec<Problem>> {
    match installer {
        Installer::Pip => pip::read(pack_dir, pack),
        Installer::Npm => npm::read(pack_dir),
        // Go's inputs are an action's, not the pack's: see [`read_for_action`].
        Installer::Go => Ok(None),
    }
}

/// The dependencies of one action of the pack in `pack_dir` (canonical) for `installer`: Go's
/// are the action's own program (see [`golang`]); the other installers' are the pack's
/// ([`read`]).
pub fn read_for_action(
    pack_dir: &Path,
    pack: &PackManifest,
    installer: Installer,
    entry_point: &str,
) -> Result<Option<Manifests>, Vec<Problem>> {
    match installer {
        Installer::Go => golang::read(pack_dir, &pack.pack_ref, entry_point).map(Some),
        other => read(pack_dir, pack, other),
    }
}

/// What the operator has to allow before a pack's requirements may choose package sources.
pub const SOURCES_REFUSED: &str = "pip options that choose package sources (--index-url, --extra-index-url, --trusted-host, --find-links, -e, URLs) are refused in packs unless the operator sets PACKBOX_PIP_ALLOW_PACK_SOURCES=1 (the operator's own index is PACKBOX_PIP_INDEX_URL)";

/// The problems of lines that choose package sources, one per line, unless the operator allows
/// them.
pub fn refused_sources(pack_dir: &Path, manifests: &Manifests, allowed: bool) -> Vec<Problem> {
    if allowed {
        return Vec::new();
    }
    manifests
        .sources
        .iter()
        .map(|line| {
            problem_at(
                pack_dir,
                line,
                format!("`{}`: {SOURCES_REFUSED}", line.text),
            )
        })
        .collect()
}

/// The problem a declared line gives, located at its place (`reqs/base.txt:3`, or the field of
/// `pack.yaml` it came from).
fn problem_at(pack_dir: &Path, declared: &Requirement, message: String) -> Problem {
    if let Some(field) = declared.source.strip_prefix("pack.yaml ") {
        // `meta.python_dependencies.dependencies` -> `meta.python_dependencies`.
        let path: Vec<&str> = field.split([' ', '.']).take(2).collect();
        let file = pack_dir.join("pack.yaml");
        let line = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| locate(&text, &path));
        return Problem {
            file,
            line,
            field: Some(path.join(".")),
            message,
        };
    }
    let (name, line) = match declared.source.rsplit_once(':') {
        Some((name, line)) => (name, line.parse().ok()),
        None => (declared.source.as_str(), None),
    };
    Problem {
        file: pack_dir.join(name),
        line,
        field: None,
        message,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pack whose `meta.python_dependencies` lists `meta`.
    pub(crate) fn pack(meta: &[&str]) -> PackManifest {
        PackManifest {
            pack_ref: "p".into(),
            label: "P".into(),
            description: None,
            version: "1.0.0".into(),
            author: None,
            email: None,
            license: None,
            conf_schema: Default::default(),
            config: None,
            meta: None,
            python_dependencies: meta
                .iter()
                .map(|text| Requirement {
                    text: text.to_string(),
                    source: "pack.yaml meta.python_dependencies".into(),
                })
                .collect(),
            system_packages: Vec::new(),
            tags: Vec::new(),
            upstream_only: Vec::new(),
            runtime_deps: Vec::new(),
            dependencies: Vec::new(),
            testing: None,
            network: Vec::new(),
        }
    }

    #[test]
    fn source_lines_are_refused_unless_allowed_with_credentials_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::write(
            root.join("requirements.txt"),
            "six\n--index-url https://user:token@pypi.example/simple\n",
        )
        .expect("write");
        let manifests = read(&root, &pack(&["name @ https://x/y.whl"]), Installer::Pip)
            .expect("read")
            .expect("deps");
        assert_eq!(manifests.sources.len(), 2);
        let refused = refused_sources(&root, &manifests, false);
        let shown: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].ends_with("requirements.txt:2: `--index-url https://***@pypi.example/simple`: pip options that choose package sources (--index-url, --extra-index-url, --trusted-host, --find-links, -e, URLs) are refused in packs unless the operator sets PACKBOX_PIP_ALLOW_PACK_SOURCES=1 (the operator's own index is PACKBOX_PIP_INDEX_URL)"),
            "{shown:?}"
        );
        assert!(!shown[0].contains("token"), "{shown:?}");
        assert!(
            shown[1].contains("field `meta.python_dependencies`"),
            "{shown:?}"
        );
        assert!(refused_sources(&root, &manifests, true).is_empty());
    }
}
