//! Packs checked against the runtime catalog, for `packbox pack validate` and `packbox actions
//! list`: a pack loads without a catalog; whether each action's runner type is known and its
//! version constraint can be met is what this step adds.

use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::pack::validate::{self, PackReport};
use crate::pack::{ActionManifest, PackManifest, Problem, locate};

/// One pack folder after loading and the catalog checks.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckedPack {
    pub dir: PathBuf,
    /// `None` when `pack.yaml` has problems.
    pub pack: Option<PackManifest>,
    /// The actions without problems.
    pub actions: Vec<CheckedAction>,
    pub problems: Vec<Problem>,
}

/// An action that loads and can run with the catalog.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckedAction {
    pub manifest: ActionManifest,
    /// The catalog's name for the action's runner type.
    pub runtime: String,
    /// The runtime version `packbox run` would choose among the catalog's versions.
    pub version: String,
}

/// Checks `dir`: one pack (it holds `pack.yaml`) or a folder of packs (its sub-folders that do).
pub fn check_packs(dir: &Path, catalog: &Catalog) -> Vec<CheckedPack> {
    validate::validate(dir)
        .into_iter()
        .map(|report| check_pack(report, catalog))
        .collect()
}

fn check_pack(report: PackReport, catalog: &Catalog) -> CheckedPack {
    let PackReport {
        dir,
        pack,
        actions,
        mut problems,
    } = report;
    let actions = actions
        .into_iter()
        .filter_map(|(file, manifest)| check_action(&file, manifest, catalog, &mut problems))
        .collect();
    CheckedPack {
        dir,
        pack,
        actions,
        problems,
    }
}

fn check_action(
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
    let available = runtime.version_names();
    match runtime.select_version(&available, manifest.runtime_version.as_ref()) {
        Ok(version) => Some(CheckedAction {
            runtime: runtime.name.clone(),
            version: version.version.clone(),
            manifest,
        }),
        Err(e) => {
            problems.push(problem("runtime_version", e.to_string()));
            None
        }
    }
}
