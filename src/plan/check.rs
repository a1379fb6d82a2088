//! Packs checked against the runtime catalog, for `packbox pack validate` and `packbox actions
//! list`: a pack loads without a catalog; whether each action's runner type is known and its
//! version constraint can be met is what this step adds.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::catalog::pack::{PACK_RUNTIMES_DIR, pack_runtime_for};
use crate::pack::dependencies::{self, Installer, Manifests};
use crate::pack::validate::{self, PackReport};
use crate::pack::{ActionManifest, PackManifest, Problem, locate};
use crate::settings::Settings;
use crate::version::Verdict;

/// One pack folder after loading and the catalog checks.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckedPack {
    /// The pack's folder, for messages.
    pub dir: PathBuf,
    /// `None` when `pack.yaml` has problems.
    pub pack: Option<PackManifest>,
    /// The actions without problems.
    pub actions: Vec<CheckedAction>,
    /// What makes the pack or one of its actions unusable, each naming its file and field.
    pub problems: Vec<Problem>,
    /// What packbox does not know or cannot use (unknown fields, runtimes the catalog lacks):
    /// said, but no reason to refuse the pack (`pack validate --strict` makes them problems).
    pub warnings: Vec<Problem>,
    /// Attune components packbox does not run (rules, sensors, workflows, ...), by folder, with
    /// how many YAML files each holds: acknowledged, not warned about.
    pub components: Vec<(String, usize)>,
}

/// An action that loads and can run with the catalog.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckedAction {
    /// The action's YAML as loaded.
    pub manifest: ActionManifest,
    /// The catalog's name for the action's runner type; `workflow` for an Attune workflow.
    pub runtime: String,
    /// The runtime version `packbox run` would choose among the catalog's versions.
    pub version: String,
    /// Set when only the image's full version can confirm that choice: the constraint is more
    /// precise than the catalog's declaration (`>=3.11.4` against `3.11`).
    pub provisional: bool,
    /// What its environment image installs (`None`: it runs on the runtime image).
    pub dependencies: Option<Manifests>,
}

impl CheckedAction {
    /// The action as `actions list --json`, `pack validate --json` and the server's
    /// `GET /v1/actions` show it: one description for every place that lists actions. Secret
    /// parameters never show their default, nor secret properties inside one.
    pub fn to_json(&self) -> serde_json::Value {
        let manifest = &self.manifest;
        let parameters: Vec<_> = manifest
            .parameters
            .iter()
            .map(|(name, spec)| {
                serde_json::json!({
                    "name": name,
                    "type": spec.kind,
                    "required": spec.required,
                    "secret": spec.secret,
                    "default": spec.public_default(),
                    "enum": spec.enum_values,
                    "minimum": spec.minimum,
                    "maximum": spec.maximum,
                    "description": spec.description,
                })
            })
            .collect();
        serde_json::json!({
            "ref": manifest.action_ref,
            "kind": if manifest.workflow_file.is_some() { "workflow" } else { "action" },
            "workflow_file": manifest.workflow_file,
            "description": manifest.description,
            "enabled": manifest.enabled,
            "runner_type": manifest.runner_type,
            "runtime": self.runtime,
            "runtime_version": manifest.runtime_version.as_ref().map(|c| c.as_str()),
            "selected_version": self.version,
            "selected_version_provisional": self.provisional,
            "dependencies": self.dependencies.as_ref().map(|d| d.summary()),
            "parameters": parameters,
        })
    }
}

/// The `runtime` of a workflow action in listings.
pub const WORKFLOW: &str = "workflow";

/// Checks `dir`: one pack (it holds `pack.yaml`) or a folder of packs (its sub-folders that do),
/// as the operator's `settings` allow (whether packs may choose package sources).
pub fn check_packs(dir: &Path, catalog: &Catalog, settings: &Settings) -> Vec<CheckedPack> {
    validate::validate(dir)
        .into_iter()
        .map(|report| check_pack(report, catalog, settings))
        .collect()
}

fn check_pack(report: PackReport, catalog: &Catalog, settings: &Settings) -> CheckedPack {
    let PackReport {
        dir,
        pack,
        actions,
        mut problems,
        mut warnings,
        mut components,
    } = report;
    let catalog = pack_catalog(&dir, pack.as_ref(), catalog, settings, &mut problems);
    if matches!(catalog, Cow::Owned(_)) {
        // Its runtimes are used, not merely acknowledged.
        components.retain(|(folder, _)| folder != PACK_RUNTIMES_DIR);
    }
    let catalog = catalog.as_ref();
    let mut checked: Vec<CheckedAction> = actions
        .into_iter()
        .filter_map(|(file, manifest)| {
            check_action(&dir, &file, manifest, catalog, settings, &mut problems)
        })
        .collect();
    if let Some(pack) = &pack {
        warnings.extend(unknown_runtime_deps(&dir, pack, catalog));
        problems.extend(system_packages(&dir, pack, settings));
        // Read once per installer; their problems are the pack's, reported once.
        let mut sets: Vec<(Installer, Option<Manifests>)> = Vec::new();
        for action in &mut checked {
            let family = catalog.resolve(&action.runtime).map(|r| r.family());
            let Some(installer) = family.and_then(Installer::for_runtime) else {
                continue;
            };
            if installer == Installer::Go {
                // One program per action: its own build, its own problems.
                action.dependencies = dependencies::read_for_action(
                    &dir,
                    pack,
                    installer,
                    &action.manifest.entry_point,
                )
                .unwrap_or_else(|found| {
                    problems.extend(found);
                    None
                });
                continue;
            }
            if let Some((_, set)) = sets.iter().find(|(i, _)| *i == installer) {
                action.dependencies = set.clone();
                continue;
            }
            let set = dependencies::read(&dir, pack, installer).unwrap_or_else(|found| {
                problems.extend(found);
                None
            });
            if let Some(set) = &set {
                problems.extend(dependencies::refused_sources(
                    &dir,
                    set,
                    settings.build.allow_pack_sources,
                ));
            }
            action.dependencies = set.clone();
            sets.push((installer, set));
        }
    }
    let actions = checked;
    CheckedPack {
        dir,
        pack,
        actions,
        problems,
        warnings,
        components,
    }
}

/// The catalog the pack's actions are checked against: with the runtimes the pack brings where
/// the operator allows it (a runtime file that cannot be used is a problem of the pack).
fn pack_catalog<'c>(
    dir: &Path,
    pack: Option<&PackManifest>,
    catalog: &'c Catalog,
    settings: &Settings,
    problems: &mut Vec<Problem>,
) -> Cow<'c, Catalog> {
    let Some(pack) = pack.filter(|_| settings.allow_pack_runtimes) else {
        return Cow::Borrowed(catalog);
    };
    if !dir.join(PACK_RUNTIMES_DIR).is_dir() {
        return Cow::Borrowed(catalog);
    }
    match catalog.with_pack_runtimes(dir, &pack.pack_ref) {
        Ok(with_pack) => Cow::Owned(with_pack),
        Err(e) => {
            problems.push(Problem {
                file: dir.join(PACK_RUNTIMES_DIR),
                line: None,
                field: None,
                message: crate::common::error_text::chain(&e),
            });
            Cow::Borrowed(catalog)
        }
    }
}

/// The problem of a pack that declares Debian packages packbox will not install (see
/// [`super::system_packages`]).
fn system_packages(dir: &Path, pack: &PackManifest, settings: &Settings) -> Option<Problem> {
    if pack.system_packages.is_empty() {
        return None;
    }
    let file = dir.join("pack.yaml");
    let line = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| locate(&text, &["meta", "system_packages"]));
    let message = super::system_packages_refusal(
        &file,
        &pack.system_packages,
        settings.allow_system_packages,
    );
    Some(Problem {
        file,
        line,
        field: Some("meta.system_packages".into()),
        message,
    })
}

/// `runtime_deps` entries that name no runtime of the catalog.
fn unknown_runtime_deps(dir: &Path, pack: &PackManifest, catalog: &Catalog) -> Vec<Problem> {
    let file = dir.join("pack.yaml");
    let line = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| locate(&text, &["runtime_deps"]));
    pack.runtime_deps
        .iter()
        .filter(|name| catalog.resolve(name).is_none())
        .map(|name| Problem {
            file: file.clone(),
            line,
            field: Some("runtime_deps".into()),
            message: format!(
                "`{name}` is not a runtime of the catalog (known: {}); actions that need it cannot run",
                catalog.known_names()
            ),
        })
        .collect()
}

fn check_action(
    pack_dir: &Path,
    file: &Path,
    manifest: ActionManifest,
    catalog: &Catalog,
    settings: &Settings,
    problems: &mut Vec<Problem>,
) -> Option<CheckedAction> {
    // Only for locating lines: the file was read and checked when the action loaded.
    let text =
        crate::common::input::read_text(file, crate::pack::MAX_YAML_BYTES).unwrap_or_default();
    let problem = |field: &str, message: String| Problem {
        file: file.to_path_buf(),
        line: locate(&text, &[field]),
        field: Some(field.into()),
        message,
    };
    // A workflow is listed as one; it runs on no runtime (packbox never runs it).
    if manifest.workflow_file.is_some() {
        return Some(CheckedAction {
            runtime: WORKFLOW.into(),
            version: String::new(),
            provisional: false,
            dependencies: None,
            manifest,
        });
    }
    let Some(runtime) = catalog.resolve(&manifest.runner_type) else {
        let brought = (!settings.allow_pack_runtimes)
            .then(|| pack_runtime_for(pack_dir, &manifest.runner_type))
            .flatten();
        let message = match brought {
            Some(runtime_file) => format!(
                "`{}` is a runtime the pack brings ({}); packs may bring runtimes only where the operator allows it (`build.allow_pack_runtimes: true`)",
                manifest.runner_type,
                runtime_file.display()
            ),
            None => format!(
                "`{}` is not a known runtime; expected one of {}",
                manifest.runner_type,
                catalog.known_names()
            ),
        };
        problems.push(problem("runner_type", message));
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
