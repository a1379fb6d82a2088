//! Whole-pack checks, for `packbox pack validate` and `packbox actions list`: every file of the
//! pack, the safety rules, and what only the runtime catalog can tell (whether the runner type is
//! known and the version constraint can be met).

use std::path::{Path, PathBuf};

use super::action::{self, ActionManifest};
use super::dependencies;
use super::manifest::{self, PackManifest};
use super::problem::{Problem, locate};
use super::safety;
use crate::catalog::Catalog;
use crate::envimage::{Installer, Manifests};
use crate::version::Verdict;

/// Everything found in one pack folder.
#[derive(Clone, Debug)]
pub struct PackReport {
    pub dir: PathBuf,
    /// `None` when `pack.yaml` has problems.
    pub pack: Option<PackManifest>,
    /// The actions without problems.
    pub actions: Vec<CheckedAction>,
    pub problems: Vec<Problem>,
}

/// An action that loads and can run with the catalog.
#[derive(Clone, Debug)]
pub struct CheckedAction {
    pub manifest: ActionManifest,
    /// The catalog's name for the action's runner type.
    pub runtime: String,
    /// The catalog version `packbox run` would choose.
    pub version: String,
    /// Set when only the image's full version can confirm that choice: the constraint is more
    /// precise than the catalog's declaration (`>=3.11.4` against `3.11`).
    pub provisional: bool,
    /// What its environment image installs (`None`: it runs on the runtime image).
    pub dependencies: Option<Manifests>,
}

/// The operator's settings that decide what a pack may do.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// Requirements may choose package sources (see [`crate::envimage::BuildSettings`]).
    pub allow_pack_sources: bool,
}

/// Checks `dir`: one pack (it holds `pack.yaml`) or a folder of packs (its sub-folders that do).
pub fn validate(dir: &Path, catalog: &Catalog, rules: Rules) -> Vec<PackReport> {
    if dir.join("pack.yaml").is_file() {
        return vec![validate_pack(dir, catalog, rules)];
    }
    let mut pack_dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.join("pack.yaml").is_file())
                .collect()
        })
        .unwrap_or_default();
    pack_dirs.sort();
    if pack_dirs.is_empty() {
        let message = if dir.is_dir() {
            "holds no pack.yaml, and none of its sub-folders does"
        } else {
            "does not exist or is not a folder"
        };
        return vec![PackReport {
            dir: dir.to_path_buf(),
            pack: None,
            actions: Vec::new(),
            problems: vec![Problem {
                file: dir.to_path_buf(),
                line: None,
                field: None,
                message: message.into(),
            }],
        }];
    }
    pack_dirs
        .iter()
        .map(|pack_dir| validate_pack(pack_dir, catalog, rules))
        .collect()
}

/// Checks one pack folder and every action in it.
pub fn validate_pack(dir: &Path, catalog: &Catalog, rules: Rules) -> PackReport {
    let mut problems = Vec::new();
    let (pack_dir, pack) = load_pack_manifest(dir, &mut problems);
    // Action refs are checked against the pack's ref, or the folder's name when that is unreadable.
    let pack_ref = pack
        .as_ref()
        .map_or_else(|| folder_name(&pack_dir), |pack| pack.pack_ref.clone());
    let files = match action::action_files(&pack_dir) {
        Ok(files) => files,
        Err(e) => {
            problems.push(Problem {
                file: pack_dir.join("actions"),
                line: None,
                field: None,
                message: format!("cannot read the actions folder: {e}"),
            });
            Vec::new()
        }
    };
    let mut actions = Vec::new();
    // Read once per installer; their problems are the pack's, reported once.
    let mut dependency_sets: Vec<(Installer, Option<Manifests>)> = Vec::new();
    for file in files {
        let Some(manifest) = action::load(&file, &pack_ref, &pack_dir, &mut problems) else {
            continue;
        };
        let Some(mut checked) = check_with_catalog(&file, manifest, catalog, &mut problems) else {
            continue;
        };
        if let (Some(pack), Some(installer)) = (&pack, Installer::for_runtime(&checked.runtime)) {
            let known = dependency_sets.iter().find(|(i, _)| *i == installer);
            checked.dependencies = match known {
                Some((_, set)) => set.clone(),
                None => {
                    let set =
                        dependencies::read(&pack_dir, pack, installer).unwrap_or_else(|found| {
                            problems.extend(found);
                            None
                        });
                    if let Some(set) = &set {
                        problems.extend(dependencies::refused_sources(
                            &pack_dir,
                            set,
                            rules.allow_pack_sources,
                        ));
                    }
                    dependency_sets.push((installer, set.clone()));
                    set
                }
            };
        }
        actions.push(checked);
    }
    PackReport {
        dir: pack_dir,
        pack,
        actions,
        problems,
    }
}

/// The canonical pack folder and its `pack.yaml`, after the pack-wide checks: no symlink leads
/// out, and the folder is named after the ref (`packbox run` finds packs by folder name).
pub(crate) fn load_pack_manifest(
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> (PathBuf, Option<PackManifest>) {
    let pack_dir = match dir.canonicalize() {
        Ok(canonical) => canonical,
        Err(e) => {
            problems.push(Problem {
                file: dir.to_path_buf(),
                line: None,
                field: None,
                message: format!("cannot read the pack folder: {e}"),
            });
            return (dir.to_path_buf(), None);
        }
    };
    problems.extend(safety::outside_symlinks(&pack_dir));
    let file = pack_dir.join("pack.yaml");
    let pack = manifest::load(&file, problems);
    let folder = folder_name(&pack_dir);
    if let Some(pack) = &pack
        && pack.pack_ref != folder
    {
        problems.push(Problem {
            file,
            line: None,
            field: Some("ref".into()),
            message: format!(
                "`{}` must match the pack's folder name `{folder}`",
                pack.pack_ref
            ),
        });
    }
    (pack_dir, pack)
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check_with_catalog(
    file: &Path,
    manifest: ActionManifest,
    catalog: &Catalog,
    problems: &mut Vec<Problem>,
) -> Option<CheckedAction> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let problem = |field: &str, message: String| Problem {
        file: file.to_path_buf(),
        line: locate(&text, &[field]),
        field: Some(field.into()),
        message,
    };
    let Some(runtime) = catalog.resolve(&manifest.runner_type) else {
        problems.push(problem(
            "runner_type",
            format!(
                "`{}` is not a known runtime; expected one of {}",
                manifest.runner_type,
                catalog.known_names()
            ),
        ));
        return None;
    };
    match runtime.select_version(manifest.runtime_version.as_ref()) {
        Ok((version, verdict)) => Some(CheckedAction {
            runtime: runtime.name.clone(),
            version: version.version.clone(),
            provisional: verdict == Verdict::Maybe,
            dependencies: None,
            manifest,
        }),
        Err(e) => {
            problems.push(problem("runtime_version", e.to_string()));
            None
        }
    }
}
