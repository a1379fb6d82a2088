//! Runtime catalog: which runtimes exist, their aliases, interpreters, versions and images.
//!
//! The built-in catalog is `images/runtimes/*.yaml`, compiled into the binary together with the
//! Dockerfiles it names, so a packbox binary can build its runtime images without a checkout.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Built-in runtime definitions, by file name.
const BUILTIN_RUNTIMES: &[(&str, &str)] = &[
    (
        "python.yaml",
        include_str!("../../images/runtimes/python.yaml"),
    ),
    ("node.yaml", include_str!("../../images/runtimes/node.yaml")),
    (
        "shell.yaml",
        include_str!("../../images/runtimes/shell.yaml"),
    ),
    (
        "native.yaml",
        include_str!("../../images/runtimes/native.yaml"),
    ),
];

/// Built-in recipes (Dockerfiles), by their path under `images/`.
const BUILTIN_RECIPES: &[(&str, &str)] = &[
    (
        "python/Dockerfile",
        include_str!("../../images/python/Dockerfile"),
    ),
    (
        "node/Dockerfile",
        include_str!("../../images/node/Dockerfile"),
    ),
    (
        "shell/Dockerfile",
        include_str!("../../images/shell/Dockerfile"),
    ),
];

/// A catalog file that could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("runtime catalog {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("runtime catalog {file}: invalid YAML")]
    Yaml {
        file: String,
        #[source]
        source: serde_yaml::Error,
    },
}

/// One runtime (python, node, shell, native) and the versions packbox knows images for.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub name: String,
    pub aliases: Vec<String>,
    /// Command that runs an entry point; empty for native actions, which are executed directly.
    pub interpreter: Vec<String>,
    /// Variables every container of this runtime gets (e.g. `PYTHONPATH=/pack/lib`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub default_version: Option<String>,
    pub versions: Vec<RuntimeVersion>,
}

/// One version of a runtime: its image, how to build that image, and how to check what it holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeVersion {
    pub version: String,
    pub image: String,
    pub recipe: Option<Recipe>,
    pub probe: Probe,
}

/// How to build a runtime image locally: a Dockerfile under `images/` and its build arguments.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub dockerfile: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// The command that reports a runtime's version inside its image, and how to read its answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub command: Vec<String>,
    #[serde(default)]
    pub exit_code: i64,
    /// A regex whose first capture group is the full version.
    pub pattern: String,
    /// Seconds the probe may run (default 10).
    pub timeout_seconds: Option<u64>,
}

/// All runtimes packbox can run actions with.
#[derive(Clone, Debug)]
pub struct Catalog {
    runtimes: Vec<Runtime>,
    recipes: BTreeMap<String, String>,
}

impl Catalog {
    /// The catalog shipped inside the binary.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        let mut runtimes = Vec::new();
        for (file, text) in BUILTIN_RUNTIMES {
            runtimes.push(parse_runtime(file, text)?);
        }
        let recipes = BUILTIN_RECIPES
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect();
        let catalog = Catalog { runtimes, recipes };
        catalog.check()?;
        Ok(catalog)
    }

    /// Every runtime, in catalog order.
    pub fn runtimes(&self) -> &[Runtime] {
        &self.runtimes
    }

    /// The runtime a `runner_type` (or any of its aliases) names, case-insensitively.
    pub fn resolve(&self, runner_type: &str) -> Option<&Runtime> {
        let wanted = runner_type.trim().to_ascii_lowercase();
        self.runtimes
            .iter()
            .find(|r| r.name == wanted || r.aliases.contains(&wanted))
    }

    /// The Dockerfile text a recipe names.
    pub fn recipe_dockerfile(&self, recipe: &Recipe) -> Option<&str> {
        self.recipes.get(&recipe.dockerfile).map(String::as_str)
    }

    fn check(&self) -> Result<(), CatalogError> {
        for runtime in &self.runtimes {
            let file = format!("{}.yaml", runtime.name);
            let invalid = |message: String| CatalogError::Invalid {
                file: file.clone(),
                message,
            };
            if runtime.versions.is_empty() {
                return Err(invalid("`versions` is empty".into()));
            }
            if let Some(default) = &runtime.default_version
                && !runtime.versions.iter().any(|v| &v.version == default)
            {
                return Err(invalid(format!(
                    "`default_version` {default} is not one of the listed versions"
                )));
            }
            for version in &runtime.versions {
                if let Err(e) = regex::Regex::new(&version.probe.pattern) {
                    return Err(invalid(format!(
                        "version {}: probe `pattern` is not a valid regex: {e}",
                        version.version
                    )));
                }
                if let Some(recipe) = &version.recipe
                    && !self.recipes.contains_key(&recipe.dockerfile)
                {
                    return Err(invalid(format!(
                        "version {}: recipe `dockerfile` {} does not exist",
                        version.version, recipe.dockerfile
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Runtime {
    /// The version used when an action states no constraint: the default, else the highest listed.
    pub fn default_version(&self) -> Option<&RuntimeVersion> {
        match &self.default_version {
            Some(wanted) => self.versions.iter().find(|v| &v.version == wanted),
            None => self.versions.last(),
        }
    }
}

fn parse_runtime(file: &str, text: &str) -> Result<Runtime, CatalogError> {
    serde_yaml::from_str(text).map_err(|source| CatalogError::Yaml {
        file: file.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_and_checks() {
        let catalog = Catalog::builtin().expect("the built-in catalog is valid");
        let names: Vec<_> = catalog.runtimes().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["python", "node", "shell", "native"]);
    }

    #[test]
    fn aliases_resolve_to_their_runtime() {
        let catalog = Catalog::builtin().expect("valid");
        for (alias, name) in [
            ("python3", "python"),
            ("Python", "python"),
            ("nodejs", "node"),
            ("node.js", "node"),
            ("bash", "shell"),
            ("sh", "shell"),
            ("builtin", "native"),
            ("standalone", "native"),
        ] {
            assert_eq!(
                catalog.resolve(alias).map(|r| r.name.as_str()),
                Some(name),
                "{alias}"
            );
        }
        assert!(catalog.resolve("ruby").is_none());
    }

    #[test]
    fn default_version_is_the_declared_one() {
        let catalog = Catalog::builtin().expect("valid");
        let python = catalog.resolve("python").expect("python exists");
        assert_eq!(
            python.default_version().map(|v| v.version.as_str()),
            Some("3.11")
        );
    }

    #[test]
    fn a_default_that_is_not_listed_is_refused() {
        let text = "name: x\naliases: []\ninterpreter: []\ndefault_version: '2'\nversions:\n  - version: '1'\n    image: i\n    probe: {command: [x], pattern: '(1)'}\n";
        let runtime = parse_runtime("x.yaml", text).expect("parses");
        let catalog = Catalog {
            runtimes: vec![runtime],
            recipes: BTreeMap::new(),
        };
        let err = catalog.check().expect_err("default 2 is not listed");
        assert!(err.to_string().contains("default_version"), "{err}");
    }
}
