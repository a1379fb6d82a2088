//! Packs in the Attune format: `pack.yaml`, `actions/<name>.yaml`, dependency manifests.
//!
//! Loading reads and checks files only; no engine is needed, so every problem with a pack is
//! reported before any container exists. Each file is read field by field and every problem is
//! collected ([`Problem`]), so one pass says everything that is wrong.

use std::path::{Path, PathBuf};

use dependencies::{Installer, Manifests};

mod action;
pub mod dependencies;
mod doc;
mod fields;
mod manifest;
mod network;
pub mod params;
mod problem;
mod requires;
pub mod safety;
pub mod schema;
pub mod system_packages;
pub mod testing;
mod upstream;
pub mod validate;

pub use action::{ActionManifest, OutputFormat, ParameterDelivery, ParameterFormat};
pub(crate) use doc::MAX_YAML_BYTES;
pub use manifest::PackManifest;
pub use problem::Problem;
pub(crate) use problem::locate;
pub use schema::ParameterSpec;
pub(crate) use upstream::PACKBOX_INSTEAD;

/// A pack or action that cannot be run, naming the file (and field) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The packs folder given is not a folder.
    #[error("packs folder {0} does not exist or is not a folder")]
    PacksDirMissing(PathBuf),
    /// The action reference is not `pack.action`; the text is the reference as given.
    #[error(
        "action reference `{0}` is not of the form PACK.ACTION (pack: lowercase letters, digits, `_`, `-`; action: letters, digits, `_`, `-`)"
    )]
    BadActionRef(String),
    /// No pack of that name is in the packs folder.
    #[error("pack `{pack}` not found in {packs_dir}")]
    UnknownPack {
        /// The pack's name, from the action reference.
        pack: String,
        /// The packs folder that was searched.
        packs_dir: PathBuf,
    },
    /// The pack has no action of that name.
    #[error(
        "action `{action}` not found in pack `{pack}` (no action file in {path} states the ref `{pack}.{action}`)"
    )]
    UnknownAction {
        /// The pack's name.
        pack: String,
        /// The action's name, from the action reference.
        action: String,
        /// The pack's actions folder, where a file stating the ref was looked for.
        path: PathBuf,
    },
    /// The pack or action files have problems; every one found is listed.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<Problem>),
}

fn list_problems(problems: &[Problem]) -> String {
    let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
    match listed.len() {
        1 => listed.join(""),
        n => format!("{n} problems: {}", listed.join("; ")),
    }
}

/// A loaded action together with the pack it belongs to.
#[derive(Clone, Debug)]
pub struct LoadedAction {
    /// The pack's `pack.yaml`.
    pub pack: PackManifest,
    /// Canonical path of the pack folder (mounted read-only at `/pack`).
    pub pack_dir: PathBuf,
    /// `<pack>.<action>`.
    pub action_ref: String,
    /// The action's file.
    pub action_file: PathBuf,
    /// The action's YAML.
    pub action: ActionManifest,
    /// Fields of `pack.yaml` and the action file that packbox does not know (ignored).
    pub warnings: Vec<Problem>,
}

impl LoadedAction {
    /// The dependencies of the action's pack for the catalog runtime `runtime` (`python`,
    /// `node`); `None` when that runtime installs none or the pack declares none.
    pub fn dependencies(&self, runtime: &str) -> Result<Option<Manifests>, PackError> {
        match Installer::for_runtime(runtime) {
            Some(installer) => dependencies::read_for_action(
                &self.pack_dir,
                &self.pack,
                installer,
                &self.action.entry_point,
            )
            .map_err(PackError::Invalid),
            None => Ok(None),
        }
    }
}

/// Loads `PACK.ACTION` from a packs folder (one sub-folder per pack, named after its ref): the
/// pack's `pack.yaml`, the action's file, and the pack-wide safety checks.
pub fn load_action(packs_dir: &Path, action_ref: &str) -> Result<LoadedAction, PackError> {
    if !packs_dir.is_dir() {
        return Err(PackError::PacksDirMissing(packs_dir.to_path_buf()));
    }
    // Both parts become file names: the rules keep them from naming anything else.
    let (pack_name, action_name) = action_ref
        .split_once('.')
        .filter(|(p, a)| safety::is_pack_ref(p) && safety::is_action_name(a))
        .ok_or_else(|| PackError::BadActionRef(action_ref.to_string()))?;
    let pack_dir = packs_dir.join(pack_name);
    if !pack_dir.join("pack.yaml").is_file() {
        return Err(PackError::UnknownPack {
            pack: pack_name.to_string(),
            packs_dir: packs_dir.to_path_buf(),
        });
    }
    let action_file = action::find(&pack_dir, pack_name, action_name)
        .map_err(|problem| PackError::Invalid(vec![problem]))?
        .ok_or_else(|| PackError::UnknownAction {
            pack: pack_name.to_string(),
            action: action_name.to_string(),
            path: pack_dir.join("actions"),
        })?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (pack_dir, pack) = validate::load_pack_manifest(&pack_dir, &mut problems, &mut warnings);
    if let Some(pack) = &pack {
        problems.extend(requires::unmet(
            packs_dir,
            &pack_dir.join("pack.yaml"),
            pack,
        ));
    }
    let action = action::load(
        &action_file,
        pack_name,
        &pack_dir,
        &mut problems,
        &mut warnings,
    );
    match (pack, action) {
        (Some(pack), Some(action)) if problems.is_empty() => Ok(LoadedAction {
            pack,
            pack_dir,
            action_ref: action_ref.to_string(),
            action_file,
            action,
            warnings,
        }),
        _ => Err(PackError::Invalid(problems)),
    }
}

/// An action [`load_packs`] could not load, or a pack none of whose actions could be.
#[derive(Debug)]
pub struct Unloadable {
    /// The pack's name, as asked for or as its folder is named.
    pub pack: String,
    /// `PACK.ACTION`, when the problem is with one action.
    pub action: Option<String>,
    /// Why it could not be loaded.
    pub error: PackError,
}

/// Every action of the named packs (all packs of the folder when none is named), in name order.
/// A bad pack or action does not hide the good ones: each is loaded or says why not.
pub fn load_packs(
    packs_dir: &Path,
    names: &[String],
) -> Result<Vec<Result<LoadedAction, Unloadable>>, PackError> {
    if !packs_dir.is_dir() {
        return Err(PackError::PacksDirMissing(packs_dir.to_path_buf()));
    }
    let names: Vec<String> = if names.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(packs_dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().join("pack.yaml").is_file())
                    .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    } else {
        names.to_vec()
    };
    let mut actions = Vec::new();
    for pack in names {
        let pack_dir = packs_dir.join(&pack);
        if !safety::is_pack_ref(&pack) || !pack_dir.join("pack.yaml").is_file() {
            actions.push(Err(Unloadable {
                error: PackError::UnknownPack {
                    pack: pack.clone(),
                    packs_dir: packs_dir.to_path_buf(),
                },
                pack,
                action: None,
            }));
            continue;
        }
        // A pack without an actions folder simply has no actions; each by the ref its file
        // states (its file name when it states none that is of this pack), each ref once.
        let prefix = format!("{pack}.");
        let mut refs: Vec<String> = action::action_files(&pack_dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|file| {
                let stated = action::ref_of(file)
                    .filter(|r| r.strip_prefix(&prefix).is_some_and(safety::is_action_name));
                stated.or_else(|| Some(format!("{pack}.{}", file.file_stem()?.to_str()?)))
            })
            .collect();
        refs.sort();
        refs.dedup();
        for action_ref in refs {
            actions.push(
                load_action(packs_dir, &action_ref).map_err(|error| Unloadable {
                    pack: pack.clone(),
                    action: Some(action_ref),
                    error,
                }),
            );
        }
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn pack_with_action(action_yaml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "p/pack.yaml",
            "ref: p\nlabel: P\nversion: 1.0.0\n",
        );
        write(dir.path(), "p/actions/a.yaml", action_yaml);
        write(dir.path(), "p/actions/a.sh", "echo hi\n");
        dir
    }

    #[test]
    fn loads_an_action_with_its_pack() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        let loaded = load_action(dir.path(), "p.a").expect("loads");
        assert_eq!(loaded.pack.label, "P");
        assert_eq!(loaded.action.runner_type, "shell");
        assert!(loaded.pack_dir.is_absolute());
    }

    #[test]
    fn missing_packs_dir_is_named() {
        let err = load_action(Path::new("/nonexistent/packs"), "p.a").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/packs"), "{err}");
    }

    #[test]
    fn unknown_pack_and_action_are_named() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        let err = load_action(dir.path(), "q.a").expect_err("no pack q");
        assert!(err.to_string().contains("pack `q` not found"), "{err}");
        let err = load_action(dir.path(), "p.b").expect_err("no action b");
        assert!(err.to_string().contains("action `b` not found"), "{err}");
    }

    #[test]
    fn action_refs_cannot_name_other_files() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        for bad in [
            "pa",
            "p.",
            ".a",
            "p.../a",
            "p./etc/passwd",
            "P.a",
            "p.a.b",
            "../p.a",
        ] {
            let err = load_action(dir.path(), bad).expect_err(bad);
            assert!(matches!(err, PackError::BadActionRef(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn every_problem_of_pack_and_action_is_in_one_error() {
        let dir = pack_with_action("ref: p.a\nentry_point: nope.sh\ntimeout_seconds: soon\n");
        write(dir.path(), "p/pack.yaml", "ref: p\nversion: 1.0.0\n");
        let err = load_action(dir.path(), "p.a").expect_err("invalid");
        let text = err.to_string();
        assert!(text.starts_with("3 problems: "), "{text}");
        assert!(text.contains("pack.yaml: field `label`: missing"), "{text}");
        assert!(text.contains("nope.sh does not exist"), "{text}");
        assert!(text.contains("field `timeout_seconds`"), "{text}");
    }

    #[test]
    fn malformed_yaml_names_the_file_and_line() {
        let dir = pack_with_action("ref: [p.a\n");
        let err = load_action(dir.path(), "p.a").expect_err("malformed");
        assert!(
            err.to_string().contains("actions/a.yaml:2: invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn the_pack_folder_must_be_named_after_its_ref() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        write(
            dir.path(),
            "p/pack.yaml",
            "ref: other\nlabel: P\nversion: 1.0.0\n",
        );
        let err = load_action(dir.path(), "p.a").expect_err("mismatch");
        assert!(
            err.to_string()
                .contains("must match the pack's folder name `p`"),
            "{err}"
        );
    }

    #[test]
    fn a_pack_with_a_symlink_out_of_it_is_refused() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("p/lib")).expect("symlink");
        let err = load_action(dir.path(), "p.a").expect_err("symlink out");
        assert!(
            err.to_string().contains("symlink leads outside the pack"),
            "{err}"
        );
    }

    #[test]
    fn an_action_is_found_by_its_ref_whatever_its_file_is_called() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        write(
            dir.path(),
            "p/actions/one.yaml",
            "ref: p.two\nentry_point: a.sh\n",
        );
        write(
            dir.path(),
            "p/actions/two.yaml",
            "ref: p.one\nentry_point: a.sh\n",
        );
        let two = load_action(dir.path(), "p.two").expect("found by ref");
        assert!(two.action_file.ends_with("actions/one.yaml"));
        let one = load_action(dir.path(), "p.one").expect("found by ref");
        assert!(one.action_file.ends_with("actions/two.yaml"));
        let all: Vec<String> = load_packs(dir.path(), &[])
            .expect("loads")
            .into_iter()
            .map(|loaded| {
                loaded
                    .map(|a| a.action_ref)
                    .map_err(|e| e.error.to_string())
            })
            .collect::<Result<_, _>>()
            .expect("all load");
        assert_eq!(all, ["p.a", "p.one", "p.two"]);
        let err = load_action(dir.path(), "p.three").expect_err("nobody states it");
        assert!(
            err.to_string().contains("states the ref `p.three`"),
            "{err}"
        );
    }

    #[test]
    fn two_files_stating_one_ref_are_refused_naming_both() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        write(
            dir.path(),
            "p/actions/b.yaml",
            "ref: p.c\nentry_point: a.sh\n",
        );
        write(
            dir.path(),
            "p/actions/d.yaml",
            "ref: p.c\nentry_point: a.sh\n",
        );
        let err = load_action(dir.path(), "p.c").expect_err("two claim it");
        let text = err.to_string();
        assert!(text.contains("b.yaml") && text.contains("d.yaml"), "{text}");
        let report = validate::validate_pack(&dir.path().join("p"));
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.message.contains("refs must be unique")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn yml_action_files_load_too() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        write(
            dir.path(),
            "p/actions/b.yml",
            "ref: p.b\nentry_point: a.sh\n",
        );
        assert!(load_action(dir.path(), "p.b").is_ok());
    }
}
