//! A pack's dependency set for one installer: the files that go into the environment build
//! (and that its key hashes), and what they declare, for listings.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Requirement;

/// Which installer an environment uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    /// `requirements.txt` into a virtualenv with pip.
    Pip,
    /// `package.json` (and `package-lock.json`) into `node_modules` with npm.
    Npm,
    /// An action's Go sources (with `go.mod`, `go.sum`, `vendor/`) compiled by `go build`.
    Go,
}

impl Installer {
    /// The installer for a runtime, if packs of that runtime can have dependencies.
    pub fn for_runtime(runtime: &str) -> Option<Installer> {
        match runtime {
            "python" => Some(Installer::Pip),
            "node" => Some(Installer::Npm),
            "go" => Some(Installer::Go),
            _ => None,
        }
    }
}

/// The dependency manifests of a pack for one installer: what an environment image installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifests {
    /// Which installer builds the environment from the files.
    pub installer: Installer,
    /// (file name, bytes) as they go into the build context; the key hashes these.
    pub files: Vec<(String, Vec<u8>)>,
    /// What the files declare, with where each was declared: for listings, not for the key.
    pub requirements: Vec<Requirement>,
    /// Lines that choose package sources (indexes, links, URLs), credentials masked: refused
    /// unless the operator allows them.
    pub sources: Vec<Requirement>,
    /// Go: the program the environment compiles (`None` for the other installers).
    pub program: Option<GoProgram>,
}

/// The Go program an environment compiles: an action's entry point, named for the messages of
/// its build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoProgram {
    /// The pack's ref.
    pub pack: String,
    /// The action's entry point relative to the pack root (`actions/hello.go`).
    pub entry: String,
}

impl Manifests {
    /// The hash of the manifests' bytes alone: packs with identical manifests share it.
    pub fn dependency_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, bytes) in &self.files {
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        if let Some(program) = &self.program {
            // The entry point alone: packs with the same sources and entry share the binary.
            hasher.update(b"go main ");
            hasher.update(program.entry.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Whether a file of that name is among them (`package-lock.json`).
    pub fn has_file(&self, name: &str) -> bool {
        self.files.iter().any(|(n, _)| n == name)
    }

    /// What a listing shows of it: installer, files, requirements with their places, and hash.
    pub fn summary(&self) -> DependencySummary<'_> {
        DependencySummary {
            installer: self.installer,
            files: self.files.iter().map(|(name, _)| name.as_str()).collect(),
            requirements: &self.requirements,
            sources: &self.sources,
            dependency_hash: self.dependency_hash(),
        }
    }
}

/// The dependency set of an environment as `pack validate` and `actions list --json` show it.
#[derive(Clone, Debug, Serialize)]
pub struct DependencySummary<'a> {
    /// Which installer builds the environment.
    pub installer: Installer,
    /// The manifest files' names.
    pub files: Vec<&'a str>,
    /// What the files declare, with where each was declared.
    pub requirements: &'a [Requirement],
    /// Lines that choose package sources, credentials masked.
    pub sources: &'a [Requirement],
    /// The hash of the manifests' bytes alone (see [`Manifests::dependency_hash`]).
    pub dependency_hash: String,
}
