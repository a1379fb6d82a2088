//! Whole-pack loading, for `packbox pack validate` and `packbox actions list`: every file of the
//! pack and the safety rules. What only the runtime catalog can tell (whether the runner type is
//! known and the version constraint can be met) is checked a step above, by `check`.

use std::path::{Path, PathBuf};

use super::action::{self, ActionManifest};
use super::manifest::{self, PackManifest};
use super::problem::Problem;
use super::safety;
use super::upstream;

/// Everything found in one pack folder.
#[derive(Clone, Debug)]
pub struct PackReport {
    /// The pack folder, for messages.
    pub dir: PathBuf,
    /// `None` when `pack.yaml` has problems.
    pub pack: Option<PackManifest>,
    /// The actions that loaded without problems, with the file each came from.
    pub actions: Vec<(PathBuf, ActionManifest)>,
    /// What makes the pack or one of its actions unusable, each naming its file and field.
    pub problems: Vec<Problem>,
    /// What packbox does not know (fields it ignores): said, but no reason to refuse the pack.
    pub warnings: Vec<Problem>,
    /// Attune components of the pack packbox does not run (rules, sensors, ...: see the
    /// README's scope), by folder, with how many YAML files each holds.
    pub components: Vec<(String, usize)>,
}

/// The Attune component folders of a pack (and `actions/workflows/`) with their YAML files.
fn components(pack_dir: &Path) -> Vec<(String, usize)> {
    let count = |dir: &Path| {
        std::fs::read_dir(dir).ok().map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    let path = entry.path();
                    path.is_file()
                        && path
                            .extension()
                            .is_some_and(|ext| ext == "yaml" || ext == "yml")
                })
                .count()
        })
    };
    upstream::COMPONENT_DIRS
        .iter()
        .map(|dir| (dir.to_string(), pack_dir.join(dir)))
        .chain([(
            "actions/workflows".to_string(),
            pack_dir.join("actions/workflows"),
        )])
        .filter(|(_, path)| path.is_dir())
        .filter_map(|(name, path)| Some((name, count(&path)?)))
        .collect()
}

/// Checks `dir`: one pack (it holds `pack.yaml`) or a folder of packs (its sub-folders that do).
pub fn validate(dir: &Path) -> Vec<PackReport> {
    if dir.join("pack.yaml").is_file() {
        return vec![validate_pack(dir)];
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
            warnings: Vec::new(),
            components: Vec::new(),
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
        .map(|pack_dir| validate_pack(pack_dir))
        .collect()
}

/// Checks one pack folder and every action in it; its `dependencies` against the folder it is in.
pub fn validate_pack(dir: &Path) -> PackReport {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (pack_dir, pack) = load_pack_manifest(dir, &mut problems, &mut warnings);
    if let (Some(pack), Some(packs_dir)) = (&pack, pack_dir.parent()) {
        problems.extend(super::requires::unmet(
            packs_dir,
            &pack_dir.join("pack.yaml"),
            pack,
        ));
    }
    // Action refs are checked against the pack's ref, or the folder's name when that is unreadable.
    let pack_ref = pack
        .as_ref()
        .map_or_else(|| folder_name(&pack_dir), |pack| pack.pack_ref.clone());
    let files = match action::action_files(&pack_dir) {
        Ok(files) => files,
        // A pack without actions (only tests, rules or sensors) is a pack all the same.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
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
    let (files, duplicates) = action::without_duplicates(files);
    problems.extend(duplicates);
    let mut actions: Vec<(PathBuf, ActionManifest)> = Vec::new();
    for file in files {
        let Some(manifest) =
            action::load(&file, &pack_ref, &pack_dir, &mut problems, &mut warnings)
        else {
            continue;
        };
        if let Some((first, _)) = actions
            .iter()
            .find(|(_, other)| other.action_ref == manifest.action_ref)
        {
            problems.push(action::same_ref(first, &file, &manifest.action_ref));
            continue;
        }
        actions.push((file, manifest));
    }
    let components = components(&pack_dir);
    PackReport {
        dir: pack_dir,
        pack,
        actions,
        problems,
        warnings,
        components,
    }
}

/// The canonical pack folder and its `pack.yaml`, after the pack-wide checks: no symlink leads
/// out, and the folder is named after the ref (`packbox run` finds packs by folder name).
pub(crate) fn load_pack_manifest(
    dir: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> (PathBuf, Option<PackManifest>) {
    // The folder is mounted and checked where it really is: a link would bring in a folder
    // from anywhere on the host under a pack's name.
    let named: PathBuf = dir.components().collect(); // without a trailing `/`, which follows links
    if let Ok(target) = std::fs::read_link(&named) {
        problems.push(Problem {
            file: dir.to_path_buf(),
            line: None,
            field: None,
            message: format!(
                "the pack folder is a symlink (to {}); expected a real folder",
                target.display()
            ),
        });
        return (dir.to_path_buf(), None);
    }
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
    let pack = manifest::load(&file, problems, warnings);
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
