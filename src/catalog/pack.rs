//! A pack's own `runtimes/*.yaml`: added, for that pack's runs only, to the catalog where the
//! operator allows packs to bring runtimes (`build.allow_pack_runtimes`), and recognised where
//! not, so the refusal can name the setting.
//!
//! Separate because a pack is hostile: its runtime files are read bounded, only as regular files
//! in Attune's shape, and mapped under the pack rules of [`super::attune`] (no image, no recipe,
//! only the catalog's images and versions, the catalog's names and aliases kept).

use std::path::{Path, PathBuf};

use super::attune::{self, Origin};
use super::{Catalog, CatalogError, MAX_CATALOG_FILE_BYTES};

/// The folder of a pack that holds its runtimes, as upstream names it.
pub const PACK_RUNTIMES_DIR: &str = "runtimes";

/// Runtime files a pack may bring; more is refused rather than read.
const MAX_PACK_RUNTIMES: usize = 32;

/// The runtime files of a pack: regular `*.yaml`/`*.yml` files of its `runtimes/` folder, in
/// name order. None when the pack has no such folder.
fn runtime_files(pack_dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let dir = pack_dir.join(PACK_RUNTIMES_DIR);
    let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Ok(Vec::new());
    }
    let read_error = |source| CatalogError::Read {
        file: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if !yaml {
            continue;
        }
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Err(CatalogError::Invalid {
                file: path.display().to_string(),
                message: "a pack's runtime file must be a regular file (not a link or a folder)"
                    .into(),
            });
        }
        files.push(path);
        if files.len() > MAX_PACK_RUNTIMES {
            return Err(CatalogError::Invalid {
                file: dir.display().to_string(),
                message: format!("more than {MAX_PACK_RUNTIMES} runtime files"),
            });
        }
    }
    files.sort();
    Ok(files)
}

impl Catalog {
    /// This catalog with the runtimes a pack brings in its `runtimes/` folder, each named
    /// `PACK.NAME` and answering to those of its aliases no catalog runtime answers to. The
    /// catalog itself is never changed: the result is for that pack's runs only.
    pub fn with_pack_runtimes(
        &self,
        pack_dir: &Path,
        pack_ref: &str,
    ) -> Result<Catalog, CatalogError> {
        let files = runtime_files(pack_dir)?;
        let mut catalog = self.clone();
        for file in files {
            let shown = file.display().to_string();
            let text = crate::common::input::read_yaml(&file, MAX_CATALOG_FILE_BYTES)?;
            if !attune::is_upstream(&text) {
                return Err(CatalogError::Invalid {
                    file: shown,
                    message: "a pack's runtime is written in Attune's runtime shape (`ref`, `execution_config`, `versions`)".into(),
                });
            }
            // Mapped against the operator's catalog alone: a pack's runtime never runs on, or
            // takes an alias from, another runtime of the same pack.
            let mapped = attune::map(&shown, &text, self, Origin::Pack { pack_ref })?;
            let runtime = mapped.runtime;
            if let Some(other) = catalog.runtimes.iter().find(|r| {
                r.name == runtime.name || r.aliases.iter().any(|a| runtime.aliases.contains(a))
            }) {
                return Err(CatalogError::Invalid {
                    file: shown,
                    message: format!(
                        "`ref`/`aliases`: runtime {} answers to a name of {} ({})",
                        runtime.name, other.name, other.source
                    ),
                });
            }
            catalog.runtimes.push(runtime);
        }
        catalog.check()?;
        Ok(catalog)
    }
}

/// The runtime file of a pack whose `ref`, name or aliases answer to `runner_type`, read
/// leniently (no mapping): how a refusal names the file when packs may not bring runtimes.
pub fn pack_runtime_for(pack_dir: &Path, runner_type: &str) -> Option<PathBuf> {
    let wanted = runner_type.trim().to_ascii_lowercase();
    let files = runtime_files(pack_dir).ok()?;
    files.into_iter().find(|file| {
        let Ok(text) = crate::common::input::read_yaml(file, MAX_CATALOG_FILE_BYTES) else {
            return false;
        };
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            return false;
        };
        let reference = doc
            .get("ref")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let short = reference.rsplit('.').next().unwrap_or_default().to_string();
        let aliases = doc
            .get("aliases")
            .and_then(|v| v.as_sequence())
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .map(str::to_ascii_lowercase);
        [reference.clone(), short]
            .into_iter()
            .chain(aliases)
            .any(|name| !name.is_empty() && name == wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(PACK_RUNTIMES_DIR)).expect("mkdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(PACK_RUNTIMES_DIR).join(name), text).expect("write");
        }
        dir
    }

    const STRICT: &str = "ref: mine.strictsh\naliases: [strictsh]\nexecution_config: {interpreter: {binary: bash, args: [-e]}}\n";

    #[test]
    fn a_packs_runtimes_join_a_copy_of_the_catalog_for_that_pack_only() {
        let pack = pack_with(&[("strictsh.yaml", STRICT)]);
        let catalog = Catalog::builtin().expect("built-in");
        let with_pack = catalog
            .with_pack_runtimes(pack.path(), "mine")
            .expect("maps");
        let strict = with_pack.resolve("strictsh").expect("its alias");
        assert_eq!(strict.name, "mine.strictsh");
        assert_eq!(
            with_pack.resolve("bash").map(|r| r.name.as_str()),
            Some("shell")
        );
        assert!(
            catalog.resolve("strictsh").is_none(),
            "the catalog itself is unchanged"
        );
        assert_eq!(
            pack_runtime_for(pack.path(), "STRICTSH"),
            Some(pack.path().join("runtimes/strictsh.yaml"))
        );
        assert_eq!(
            pack_runtime_for(pack.path(), "mine.strictsh"),
            Some(pack.path().join("runtimes/strictsh.yaml"))
        );
        assert_eq!(pack_runtime_for(pack.path(), "python"), None);
    }

    #[test]
    fn a_packs_runtime_files_are_refused_when_they_are_not_attunes_shape_or_clash() {
        let catalog = Catalog::builtin().expect("built-in");
        let packbox_shape = "name: evil\naliases: [evil]\ninterpreter: [sh]\nversions:\n  - {version: '1', image: 'evil:1', probe: {command: [sh], pattern: '(1)'}}\n";
        let pack = pack_with(&[("evil.yaml", packbox_shape)]);
        let err = catalog
            .with_pack_runtimes(pack.path(), "mine")
            .expect_err("packbox's shape can name images");
        assert!(err.to_string().contains("evil.yaml"), "{err}");
        assert!(err.to_string().contains("Attune's runtime shape"), "{err}");
        let twice = STRICT.replace("mine.strictsh", "mine.other");
        let pack = pack_with(&[("a.yaml", STRICT), ("b.yaml", &twice)]);
        let err = catalog
            .with_pack_runtimes(pack.path(), "mine")
            .expect_err("both answer to strictsh");
        assert!(err.to_string().contains("b.yaml"), "{err}");
        let pack = pack_with(&[]);
        std::os::unix::fs::symlink("/etc/passwd", pack.path().join("runtimes/link.yaml"))
            .expect("symlink");
        let err = catalog
            .with_pack_runtimes(pack.path(), "mine")
            .expect_err("a link");
        assert!(err.to_string().contains("regular file"), "{err}");
    }
}
