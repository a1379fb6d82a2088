//! Packs in the Attune format: `pack.yaml`, `actions/<name>.yaml`, dependency manifests.
//!
//! Loading reads and checks files only; no engine is needed, so every problem with a pack is
//! reported before any container exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod params;

/// A problem with a pack, naming the file (and field) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("packs folder {0} does not exist or is not a folder")]
    PacksDirMissing(PathBuf),
    #[error("action reference `{0}` is not of the form PACK.ACTION")]
    BadActionRef(String),
    #[error("pack `{pack}` not found in {packs_dir}")]
    UnknownPack { pack: String, packs_dir: PathBuf },
    #[error("action `{action}` not found in pack `{pack}` ({path} does not exist)")]
    UnknownAction {
        pack: String,
        action: String,
        path: PathBuf,
    },
    #[error("{file}: cannot read")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid YAML: {source}")]
    Yaml {
        file: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{file}: field `{field}`: {expected}")]
    Field {
        file: PathBuf,
        field: String,
        expected: String,
    },
}

/// `pack.yaml`: the pack's identity.
#[derive(Clone, Debug, Deserialize)]
pub struct PackManifest {
    #[serde(rename = "ref")]
    pub pack_ref: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
}

/// How parameters reach the action.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterDelivery {
    #[default]
    Stdin,
    File,
}

/// The serialisation of the parameter document.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterFormat {
    #[default]
    Json,
    Dotenv,
    Yaml,
}

/// How the action's stdout is parsed into a result.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    Yaml,
    Jsonl,
}

/// One declared parameter (the flat Attune style).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ParameterSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    pub description: Option<String>,
}

/// `actions/<name>.yaml`: what to run and how.
#[derive(Clone, Debug, Deserialize)]
pub struct ActionManifest {
    #[serde(rename = "ref")]
    pub action_ref: Option<String>,
    pub description: Option<String>,
    #[serde(default = "default_runner_type")]
    pub runner_type: String,
    pub entry_point: String,
    pub runtime_version: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterSpec>,
    #[serde(default)]
    pub parameter_delivery: ParameterDelivery,
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    #[serde(default)]
    pub output_format: OutputFormat,
    pub timeout_seconds: Option<u64>,
}

fn default_runner_type() -> String {
    "shell".into()
}

/// A loaded action together with the pack it belongs to.
#[derive(Clone, Debug)]
pub struct LoadedAction {
    pub pack: PackManifest,
    /// Absolute path of the pack folder (mounted read-only at `/pack`).
    pub pack_dir: PathBuf,
    /// `<pack>.<action>`.
    pub action_ref: String,
    pub action: ActionManifest,
}

/// Loads `PACK.ACTION` from a packs folder (one sub-folder per pack).
pub fn load_action(packs_dir: &Path, action_ref: &str) -> Result<LoadedAction, PackError> {
    if !packs_dir.is_dir() {
        return Err(PackError::PacksDirMissing(packs_dir.to_path_buf()));
    }
    let (pack_name, action_name) = action_ref
        .split_once('.')
        .filter(|(p, a)| !p.is_empty() && !a.is_empty())
        .ok_or_else(|| PackError::BadActionRef(action_ref.to_string()))?;
    let pack_dir = packs_dir.join(pack_name);
    let pack_file = pack_dir.join("pack.yaml");
    if !pack_file.is_file() {
        return Err(PackError::UnknownPack {
            pack: pack_name.to_string(),
            packs_dir: packs_dir.to_path_buf(),
        });
    }
    let pack: PackManifest = read_yaml(&pack_file)?;
    if pack.pack_ref != pack_name {
        return Err(PackError::Field {
            file: pack_file,
            field: "ref".into(),
            expected: format!(
                "`{}` to match the pack's folder name `{pack_name}`",
                pack.pack_ref
            ),
        });
    }
    let action_file = pack_dir.join("actions").join(format!("{action_name}.yaml"));
    if !action_file.is_file() {
        return Err(PackError::UnknownAction {
            pack: pack_name.to_string(),
            action: action_name.to_string(),
            path: action_file,
        });
    }
    let action: ActionManifest = read_yaml(&action_file)?;
    let pack_dir = pack_dir.canonicalize().map_err(|source| PackError::Read {
        file: pack_dir.clone(),
        source,
    })?;
    let entry = pack_dir.join("actions").join(&action.entry_point);
    if !entry.is_file() {
        return Err(PackError::Field {
            file: action_file,
            field: "entry_point".into(),
            expected: format!("an existing file, but {} does not exist", entry.display()),
        });
    }
    Ok(LoadedAction {
        pack,
        pack_dir,
        action_ref: action_ref.to_string(),
        action,
    })
}

/// Every action of the named packs (all packs of the folder when none is named), in name order.
pub fn load_packs(packs_dir: &Path, names: &[String]) -> Result<Vec<LoadedAction>, PackError> {
    if !packs_dir.is_dir() {
        return Err(PackError::PacksDirMissing(packs_dir.to_path_buf()));
    }
    let read_dir = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|source| PackError::Read {
            file: dir.to_path_buf(),
            source,
        })
    };
    let names: Vec<String> = if names.is_empty() {
        let mut found: Vec<String> = read_dir(packs_dir)?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().join("pack.yaml").is_file())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
            .collect();
        found.sort();
        found
    } else {
        names.to_vec()
    };
    let mut actions = Vec::new();
    for pack in names {
        let actions_dir = packs_dir.join(&pack).join("actions");
        if !packs_dir.join(&pack).join("pack.yaml").is_file() {
            return Err(PackError::UnknownPack {
                pack,
                packs_dir: packs_dir.to_path_buf(),
            });
        }
        let mut action_names: Vec<String> = match read_dir(&actions_dir) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| {
                    let name = entry.file_name().to_str()?.to_string();
                    name.strip_suffix(".yaml").map(str::to_string)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        action_names.sort();
        for name in action_names {
            actions.push(load_action(packs_dir, &format!("{pack}.{name}"))?);
        }
    }
    Ok(actions)
}

fn read_yaml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, PackError> {
    let text = std::fs::read_to_string(file).map_err(|source| PackError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| PackError::Yaml {
        file: file.to_path_buf(),
        source,
    })
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
    fn loads_an_action_with_defaults() {
        let dir = pack_with_action("ref: p.a\nentry_point: a.sh\n");
        let loaded = load_action(dir.path(), "p.a").expect("loads");
        assert_eq!(loaded.action.runner_type, "shell");
        assert_eq!(loaded.action.parameter_delivery, ParameterDelivery::Stdin);
        assert_eq!(loaded.action.output_format, OutputFormat::Text);
    }

    #[test]
    fn yaml_written_as_json_loads() {
        let dir =
            pack_with_action(r#"{"ref": "p.a", "entry_point": "a.sh", "output_format": "json"}"#);
        let loaded = load_action(dir.path(), "p.a").expect("loads");
        assert_eq!(loaded.action.output_format, OutputFormat::Json);
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
        let err = load_action(dir.path(), "pa").expect_err("no dot");
        assert!(matches!(err, PackError::BadActionRef(_)), "{err}");
    }

    #[test]
    fn malformed_yaml_names_the_file() {
        let dir = pack_with_action("ref: [p.a\n");
        let err = load_action(dir.path(), "p.a").expect_err("malformed");
        assert!(
            err.to_string().contains("actions/a.yaml: invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn missing_entry_point_file_is_named() {
        let dir = pack_with_action("ref: p.a\nentry_point: nope.sh\n");
        let err = load_action(dir.path(), "p.a").expect_err("no entry file");
        assert!(err.to_string().contains("nope.sh does not exist"), "{err}");
    }
}
