//! Runtime catalog: which runtimes exist, their aliases, interpreters, versions and images.
//!
//! The built-in catalog is `images/runtimes/*.yaml`, compiled into the binary together with the
//! Dockerfiles it names, so a packbox binary can build its runtime images without a checkout. A
//! user folder of `*.yaml` runtime files (`--catalog DIR`, `PACKBOX_CATALOG`) adds runtimes or
//! replaces built-in ones by name; its recipes name Dockerfiles relative to that folder. A file
//! may also be written in Attune's own runtime shape ([`attune`]), and a pack may bring runtimes
//! of that shape for its own runs where the operator allows it ([`pack`]).

mod attune;
pub mod pack;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::version::{self, Candidate, Constraint, Verdict};

/// Runtime definition files larger than this are refused.
const MAX_CATALOG_FILE_BYTES: u64 = 1024 * 1024;

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
    ("ruby.yaml", include_str!("../../images/runtimes/ruby.yaml")),
    ("perl.yaml", include_str!("../../images/runtimes/perl.yaml")),
    ("java.yaml", include_str!("../../images/runtimes/java.yaml")),
    ("go.yaml", include_str!("../../images/runtimes/go.yaml")),
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
    (
        "ruby/Dockerfile",
        include_str!("../../images/ruby/Dockerfile"),
    ),
    (
        "perl/Dockerfile",
        include_str!("../../images/perl/Dockerfile"),
    ),
    (
        "java/Dockerfile",
        include_str!("../../images/java/Dockerfile"),
    ),
    ("go/Dockerfile", include_str!("../../images/go/Dockerfile")),
];

/// A catalog file that could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A runtime file parses but breaks a rule: no versions, an alias shared with another
    /// runtime, a default or a recipe that does not exist, a bad version or probe pattern.
    #[error("runtime catalog {file}: {message}")]
    Invalid {
        /// The runtime file at fault.
        file: String,
        /// Which field is wrong and what was expected.
        message: String,
    },
    /// A runtime file is not YAML of the runtime shape.
    #[error("runtime catalog {file}: invalid YAML")]
    Yaml {
        /// The runtime file at fault.
        file: String,
        /// The parser's account, with the line and unknown or missing field.
        #[source]
        source: serde_yaml::Error,
    },
    /// A runtime file was refused before parsing (too large, not text, nested too deep).
    #[error("runtime catalog {0}")]
    Unreadable(#[from] crate::common::input::InputError),
    /// The user catalog folder cannot be listed.
    #[error("runtime catalog {file}: cannot read")]
    Read {
        /// The folder as given.
        file: String,
        /// Why listing it failed.
        #[source]
        source: std::io::Error,
    },
}

/// No available version of a runtime satisfies an action's constraint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", no_match_message(.runtime, .constraint.as_deref(), .available))]
pub struct NoMatchingVersion {
    /// The runtime's name in the catalog.
    pub runtime: String,
    /// `None`: the action states no constraint and no version is available at all.
    pub constraint: Option<String>,
    /// The versions that were there to choose from, so the message can list them.
    pub available: Vec<String>,
}

fn no_match_message(runtime: &str, constraint: Option<&str>, available: &[String]) -> String {
    let available = match available {
        [] => "none".to_string(),
        listed => listed.join(", "),
    };
    match constraint {
        Some(constraint) => format!(
            "runtime_version `{constraint}` matches none of the available {runtime} versions ({available})"
        ),
        None => format!("no {runtime} version is available"),
    }
}

/// One runtime (python, node, shell, native) and the versions packbox knows images for.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// The name actions' `runner_type` is matched against, and the one messages use.
    pub name: String,
    /// Other `runner_type` spellings that name this runtime (`python3`, `bash`).
    pub aliases: Vec<String>,
    /// Command that runs an entry point; empty for native actions, which are executed directly.
    pub interpreter: Vec<String>,
    /// For pooled containers: a command that starts the interpreter ahead of the run, waits
    /// itself for the go-line on stdin, then runs the entry point (appended) in that process.
    /// Empty: the interpreter starts at the handoff.
    #[serde(default)]
    pub warm_start: Vec<String>,
    /// Variables every container of this runtime gets (e.g. `PYTHONPATH=/pack/lib`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The version taken when an action states no `runtime_version`; `None`: the highest verified.
    pub default_version: Option<String>,
    /// Its images are built when a run first needs one: `images build`, `runtimes verify` and
    /// a server's readiness leave it out unless `PACKBOX_RUNTIMES` names it.
    #[serde(default)]
    pub on_demand: bool,
    /// The versions packbox knows images for; a run takes only those verified in their image.
    pub versions: Vec<RuntimeVersion>,
    /// The catalog file it came from, for messages.
    #[serde(skip)]
    pub source: String,
    /// For a pack's runtime: the catalog runtime whose images (and environment builder) it
    /// uses; `None`: its own.
    #[serde(skip)]
    pub base: Option<String>,
    /// What its file asks for that packbox does not do (a file in Attune's shape), each as
    /// "`field`: what happens instead".
    #[serde(skip)]
    pub not_honoured: Vec<String>,
}

/// One version of a runtime: its image, how to build that image, and how to check what it holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeVersion {
    /// The version as declared (`3.11`); the probe must find a version it matches.
    pub version: String,
    /// The image that holds this version; when missing, pulled if pinned by digest, else built
    /// from its recipe.
    pub image: String,
    /// How to build the image when the engine lacks it; `None`: pull or fail.
    pub recipe: Option<Recipe>,
    /// How to verify that the image holds this version.
    pub probe: Probe,
}

/// How to build a runtime image locally: a Dockerfile under `images/` and its build arguments.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The Dockerfile's path under the catalog's `images/` folder.
    pub dockerfile: String,
    /// Build arguments for the Dockerfile (a base image, a version to install).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// The command that reports a runtime's version inside its image, and how to read its answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The command run in a throw-away container of the image.
    pub command: Vec<String>,
    /// The exit code the command must end with for its output to count (default 0).
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
    /// The built-in catalog, extended or overridden (by runtime name) by the `*.yaml` runtime
    /// files of `user_dir` (a folder, or one file) when one is given.
    pub fn load(user_dir: Option<&Path>) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::builtin()?;
        if let Some(dir) = user_dir {
            catalog.merge_user_dir(dir)?;
            catalog.check()?;
        }
        Ok(catalog)
    }

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

    /// The runtime names with their aliases, for messages: `python (python3), node (...)`.
    pub fn known_names(&self) -> String {
        let names: Vec<String> = self
            .runtimes
            .iter()
            .map(|r| {
                let aliases: Vec<&str> = r
                    .aliases
                    .iter()
                    .map(String::as_str)
                    .filter(|a| *a != r.name)
                    .collect();
                match aliases.is_empty() {
                    true => r.name.clone(),
                    false => format!("{} ({})", r.name, aliases.join(", ")),
                }
            })
            .collect();
        names.join(", ")
    }

    /// What the operator's runtime files in Attune's shape ask for that packbox does not do,
    /// each as "FILE: `field`: what happens instead".
    pub fn warnings(&self) -> Vec<String> {
        self.runtimes
            .iter()
            .flat_map(|r| r.not_honoured.iter().map(|n| format!("{}: {n}", r.source)))
            .collect()
    }

    /// Adds the runtimes of a user folder (or one file); a runtime named like an existing one
    /// replaces it. Recipe Dockerfiles are read now, relative to the folder, and keyed by their
    /// full path.
    fn merge_user_dir(&mut self, path: &Path) -> Result<(), CatalogError> {
        let read_error = |file: &Path, source| CatalogError::Read {
            file: file.display().to_string(),
            source,
        };
        let (dir, mut files): (&Path, Vec<_>) = if path.is_file() {
            (
                path.parent().unwrap_or(Path::new(".")),
                vec![path.to_path_buf()],
            )
        } else {
            let files = std::fs::read_dir(path)
                .map_err(|e| read_error(path, e))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "yaml") && path.is_file())
                .collect();
            (path, files)
        };
        files.sort();
        let mut seen = Vec::new();
        for file in files {
            let shown = file.display().to_string();
            let text = crate::common::input::read_yaml(&file, MAX_CATALOG_FILE_BYTES)?;
            let runtime = if attune::is_upstream(&text) {
                let mapped = attune::map(&shown, &text, self, attune::Origin::Operator { dir })?;
                self.recipes.extend(mapped.recipes);
                mapped.runtime
            } else {
                let mut runtime = parse_runtime(&shown, &text)?;
                self.read_recipes(&mut runtime, dir)?;
                runtime
            };
            if seen.contains(&runtime.name) {
                return Err(CatalogError::Invalid {
                    file: shown,
                    message: format!(
                        "runtime `{}` is defined twice in {}",
                        runtime.name,
                        dir.display()
                    ),
                });
            }
            seen.push(runtime.name.clone());
            match self.runtimes.iter_mut().find(|r| r.name == runtime.name) {
                Some(existing) => *existing = runtime,
                None => self.runtimes.push(runtime),
            }
        }
        Ok(())
    }

    /// Reads the Dockerfiles a packbox-shaped runtime's recipes name, relative to `dir`, and
    /// keys them by their full path.
    fn read_recipes(&mut self, runtime: &mut Runtime, dir: &Path) -> Result<(), CatalogError> {
        for version in &mut runtime.versions {
            let Some(recipe) = &mut version.recipe else {
                continue;
            };
            let path = dir.join(&recipe.dockerfile);
            let dockerfile =
                std::fs::read_to_string(&path).map_err(|source| CatalogError::Invalid {
                    file: runtime.source.clone(),
                    message: format!(
                        "version {}: recipe `dockerfile` {} cannot be read: {source}",
                        version.version,
                        path.display()
                    ),
                })?;
            recipe.dockerfile = path.display().to_string();
            self.recipes.insert(recipe.dockerfile.clone(), dockerfile);
        }
        Ok(())
    }

    /// The Dockerfile text a recipe names.
    pub fn recipe_dockerfile(&self, recipe: &Recipe) -> Option<&str> {
        self.recipes.get(&recipe.dockerfile).map(String::as_str)
    }

    fn check(&self) -> Result<(), CatalogError> {
        for runtime in &self.runtimes {
            let file = runtime.source.clone();
            let invalid = |message: String| CatalogError::Invalid {
                file: file.clone(),
                message,
            };
            if runtime.versions.is_empty() {
                return Err(invalid("`versions` is empty".into()));
            }
            for other in self.runtimes.iter().filter(|o| o.name != runtime.name) {
                if let Some(alias) = runtime
                    .aliases
                    .iter()
                    .chain([&runtime.name])
                    .find(|a| **a == other.name || other.aliases.contains(a))
                {
                    return Err(invalid(format!(
                        "alias `{alias}` also names the runtime `{}`",
                        other.name
                    )));
                }
            }
            if let Some(default) = &runtime.default_version
                && !runtime.versions.iter().any(|v| &v.version == default)
            {
                return Err(invalid(format!(
                    "`default_version` {default} is not one of the listed versions"
                )));
            }
            for version in &runtime.versions {
                if let Err(e) = version::parse_version(&version.version) {
                    return Err(invalid(format!("`version`: {e}")));
                }
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
    /// The catalog runtime whose images and environment builder this one uses: its own name,
    /// or for a pack's runtime the one it runs on (`python` for `mypack.python`).
    pub fn family(&self) -> &str {
        self.base.as_deref().unwrap_or(&self.name)
    }

    /// The version an action would run on, judged on the declared versions alone (all that is
    /// known without an engine): see [`version::select`]. The verdict is `Maybe` when only the
    /// image's full version can confirm the choice (a constraint more precise than the catalog).
    /// Never falls back to a version the constraint does not allow.
    pub fn select_version(
        &self,
        constraint: Option<&Constraint>,
    ) -> Result<(&RuntimeVersion, Verdict), NoMatchingVersion> {
        let candidates: Vec<Candidate<'_>> = self
            .versions
            .iter()
            .map(|v| Candidate {
                declared: &v.version,
                detected: None,
            })
            .collect();
        version::select(&candidates, constraint, self.default_version.as_deref())
            .map(|chosen| (&self.versions[chosen.index], chosen.verdict))
            .ok_or_else(|| NoMatchingVersion {
                runtime: self.name.clone(),
                constraint: constraint.map(|c| c.as_str().to_string()),
                available: self.versions.iter().map(|v| v.version.clone()).collect(),
            })
    }
}

fn parse_runtime(file: &str, text: &str) -> Result<Runtime, CatalogError> {
    let mut runtime: Runtime = serde_yaml::from_str(text).map_err(|source| CatalogError::Yaml {
        file: file.to_string(),
        source,
    })?;
    runtime.source = file.to_string();
    Ok(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_and_checks() {
        let catalog = Catalog::builtin().expect("the built-in catalog is valid");
        let names: Vec<_> = catalog.runtimes().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "python", "node", "shell", "native", "ruby", "perl", "java", "go"
            ]
        );
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
        assert!(catalog.resolve("cobol").is_none());
        assert_eq!(
            catalog.resolve("jdk").map(|r| r.name.as_str()),
            Some("java")
        );
        assert_eq!(
            catalog.resolve("golang").map(|r| r.name.as_str()),
            Some("go")
        );
    }

    #[test]
    fn selection_uses_the_default_then_the_constraint() {
        let catalog = Catalog::builtin().expect("valid");
        let python = catalog.resolve("python").expect("python exists");
        let pick = |constraint: Option<&str>| {
            let constraint = constraint.map(|c| Constraint::parse(c).expect("valid"));
            python
                .select_version(constraint.as_ref())
                .map(|(v, verdict)| (v.version.clone(), verdict))
        };
        let sure = |version: &str| Ok((version.to_string(), Verdict::Yes));
        assert_eq!(pick(None), sure("3.11"));
        assert_eq!(pick(Some("<3.10")), sure("3.9"));
        assert_eq!(pick(Some("~3.13")), sure("3.13"));
        assert_eq!(pick(Some(">=3.9")), sure("3.13"));
        assert_eq!(pick(Some("<=3.11")), sure("3.11"));
        assert_eq!(
            pick(Some(">=3.11.4, <3.12")),
            Ok(("3.11".to_string(), Verdict::Maybe))
        );
        let err = pick(Some(">=3.14")).expect_err("no 3.14");
        assert_eq!(
            err.to_string(),
            "runtime_version `>=3.14` matches none of the available python versions (3.9, 3.11, 3.13)"
        );
    }

    fn user_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    const RUBY: &str = "name: ruby\naliases: [ruby, rb]\ninterpreter: [ruby]\nversions:\n  - version: '3.3'\n    image: local/ruby:3.3\n    recipe: {dockerfile: ruby/Dockerfile}\n    probe: {command: [ruby, -v], pattern: 'ruby (\\d+\\.\\d+\\.\\d+)'}\n";

    #[test]
    fn a_user_folder_adds_runtimes_with_recipes_relative_to_it() {
        let dir = user_dir(&[
            ("ruby.yaml", RUBY),
            ("ruby/Dockerfile", "FROM scratch\n"),
            ("notes.txt", "ignored"),
        ]);
        let catalog = Catalog::load(Some(dir.path())).expect("valid");
        let ruby = catalog.resolve("rb").expect("ruby added");
        let recipe = ruby.versions[0].recipe.as_ref().expect("has a recipe");
        assert_eq!(catalog.recipe_dockerfile(recipe), Some("FROM scratch\n"));
        assert!(
            recipe
                .dockerfile
                .starts_with(&dir.path().display().to_string())
        );
        assert!(catalog.resolve("python3").is_some(), "built-ins stay");
    }

    #[test]
    fn a_user_runtime_replaces_the_built_in_of_the_same_name() {
        let shell = "name: shell\naliases: [shell, bash, sh]\ninterpreter: [sh]\nversions:\n  - version: '1.0'\n    image: local/sh:1\n    probe: {command: [sh], pattern: '(1)'}\n";
        let dir = user_dir(&[("shell.yaml", shell)]);
        let catalog = Catalog::load(Some(dir.path())).expect("valid");
        let runtime = catalog.resolve("bash").expect("shell");
        assert_eq!(runtime.interpreter, ["sh"]);
        assert_eq!(runtime.versions[0].version, "1.0");
        assert_eq!(catalog.runtimes().len(), 8);
    }

    #[test]
    fn bad_user_folders_are_refused_naming_the_file() {
        let missing_recipe = user_dir(&[("ruby.yaml", RUBY)]);
        let err = Catalog::load(Some(missing_recipe.path())).expect_err("no Dockerfile");
        assert!(
            err.to_string()
                .contains("ruby.yaml: version 3.3: recipe `dockerfile`"),
            "{err}"
        );
        let stolen_alias = RUBY.replace("[ruby, rb]", "[ruby, python3]");
        let dir = user_dir(&[
            ("ruby.yaml", &stolen_alias),
            ("ruby/Dockerfile", "FROM scratch\n"),
        ]);
        let err = Catalog::load(Some(dir.path())).expect_err("alias conflict");
        assert!(err.to_string().contains("alias `python3`"), "{err}");
        let dir = user_dir(&[("x.yaml", "name: x\nunknown_field: 1\n")]);
        let err = Catalog::load(Some(dir.path())).expect_err("unknown field");
        assert!(err.to_string().contains("x.yaml"), "{err}");
        let err = Catalog::load(Some(Path::new("/nonexistent/catalog"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/catalog"), "{err}");
        let bad_version = RUBY.replace("'3.3'", "'three'");
        let dir = user_dir(&[
            ("ruby.yaml", &bad_version),
            ("ruby/Dockerfile", "FROM scratch\n"),
        ]);
        let err = Catalog::load(Some(dir.path())).expect_err("bad version");
        assert!(
            err.to_string().contains("`three` is not a version"),
            "{err}"
        );
    }

    #[test]
    fn one_file_in_attunes_shape_is_a_catalog_too() {
        let upstream = "ref: core.python\naliases: [python, python3]\nexecution_config: {interpreter: {binary: python3, args: [-u]}}\nversions: [{version: '3.12'}, {version: '3.13'}]\n";
        let dir = user_dir(&[("python.yaml", upstream)]);
        let catalog = Catalog::load(Some(&dir.path().join("python.yaml"))).expect("valid");
        let python = catalog.resolve("python3").expect("python");
        let versions: Vec<&str> = python.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["3.13"]);
        assert_eq!(
            catalog.runtimes().len(),
            8,
            "it replaced the built-in python"
        );
        let warnings = catalog.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.ends_with("python.yaml: `versions[0]`: version 3.12 is left out: packbox has no image for it (add `packbox: {image: ...}` to the version to give it one)")),
            "{warnings:#?}"
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
