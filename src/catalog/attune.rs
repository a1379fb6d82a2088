//! Attune's own runtime YAML (`ref`, `execution_config`, `distributions.verification`,
//! `versions[]`, as upstream's platform catalog and packs' `runtimes/*.yaml` write it), mapped
//! onto packbox's runtime shape.
//!
//! Separate from the catalog itself because the two formats say different things: upstream's
//! describes how a worker host finds and prepares an interpreter already installed on it, and
//! packbox's which image holds each version. The mapping keeps what carries over (interpreter,
//! aliases, versions, the default, declarative environment variables), takes each version's
//! image from the catalog runtime it replaces (or, for an operator, from a `packbox:` block
//! upstream ignores), and lists everything else as not honoured. A pack's runtime is mapped
//! under stricter rules: it can name no image and no recipe and runs only on the images of a
//! catalog runtime whose interpreter it uses, so nothing a pack writes is built or run outside
//! the sandbox.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Catalog, CatalogError, Probe, Recipe, Runtime, RuntimeVersion};

/// The version pattern used when a verification command's pattern has no capture group
/// (upstream's patterns only gate, `Python 3\.`): packbox compares the version it finds with
/// the declared one anyway.
const ANY_VERSION: &str = r"(\d+\.\d+(?:\.\d+)?)";

/// Who wrote the runtime file, which decides what it may ask for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin<'a> {
    /// The operator's `--catalog`: may name images and recipes (relative to this folder).
    Operator {
        /// The folder recipes are relative to.
        dir: &'a Path,
    },
    /// A pack's `runtimes/` folder: hostile, runs only on the catalog's images.
    Pack {
        /// The pack's ref, which the runtime's `ref` must start with.
        pack_ref: &'a str,
    },
}

/// Whether a runtime file is written in Attune's shape rather than packbox's: packbox's has
/// none of these top-level fields.
pub(super) fn is_upstream(text: &str) -> bool {
    let Ok(serde_yaml::Value::Mapping(map)) = serde_yaml::from_str::<serde_yaml::Value>(text)
    else {
        return false;
    };
    ["ref", "execution_config", "distributions", "pack_ref"]
        .iter()
        .any(|key| map.contains_key(*key))
}

/// A runtime file in Attune's shape, every field upstream's loader reads. Fields packbox has no
/// use for are still typed, so that a wrong type is an error naming the field.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamRuntime {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    pack_ref: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    distributions: Distributions,
    #[serde(default)]
    installation: Option<serde_yaml::Value>,
    #[serde(default)]
    installers: Option<serde_yaml::Value>,
    #[serde(default)]
    execution_config: ExecutionConfig,
    #[serde(default)]
    versions: Vec<UpstreamVersion>,
    #[serde(default)]
    auto_detected: Option<bool>,
    #[serde(default)]
    detection_config: Option<serde_yaml::Value>,
    /// packbox's own block (upstream's loader ignores it): where an operator's version's image
    /// comes from.
    #[serde(default)]
    packbox: Option<Placement>,
}

/// `distributions`: verification metadata; the rest (`min_version`, `languages`, ...) is
/// informational upstream too.
#[derive(Debug, Default, Deserialize, PartialEq)]
struct Distributions {
    #[serde(default)]
    verification: Verification,
    #[serde(flatten)]
    _informational: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // typed so a wrong type names its field; informational for packbox
struct Verification {
    #[serde(default)]
    commands: Vec<VerifyCommand>,
    #[serde(default)]
    always_available: bool,
    #[serde(default)]
    check_required: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // typed so a wrong type names its field; informational for packbox
struct VerifyCommand {
    binary: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    exit_code: i64,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    optional: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ExecutionConfig {
    #[serde(default)]
    interpreter: Option<Interpreter>,
    #[serde(default)]
    inline_execution: Option<serde_yaml::Value>,
    #[serde(default)]
    environment: Option<Environment>,
    #[serde(default)]
    dependencies: Option<Dependencies>,
    #[serde(default)]
    env_vars: BTreeMap<String, EnvVar>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Interpreter {
    #[serde(default)]
    binary: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    file_extension: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // typed so a wrong type names its field; informational for packbox
struct Environment {
    env_type: String,
    #[serde(default)]
    dir_name: Option<String>,
    #[serde(default)]
    create_command: Vec<String>,
    #[serde(default)]
    interpreter_path: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // typed so a wrong type names its field; informational for packbox
struct Dependencies {
    manifest_file: String,
    #[serde(default)]
    install_command: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum EnvVar {
    Value(String),
    Spec(EnvVarSpec),
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct EnvVarSpec {
    value: String,
    #[serde(default)]
    operation: Operation,
    #[serde(default)]
    separator: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Operation {
    #[default]
    Set,
    Prepend,
    Append,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // typed so a wrong type names its field; informational for packbox
struct UpstreamVersion {
    version: String,
    #[serde(default)]
    execution_config: Option<ExecutionConfig>,
    #[serde(default)]
    distributions: Option<Distributions>,
    #[serde(default)]
    is_default: bool,
    #[serde(default)]
    meta: Option<serde_yaml::Value>,
    #[serde(default)]
    packbox: Option<Placement>,
}

/// packbox's block in an operator's upstream-shaped file: the image of a version.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Placement {
    image: String,
    #[serde(default)]
    recipe: Option<Recipe>,
}

/// A runtime mapped from Attune's shape, with the recipe files it read (operator only).
#[derive(Debug)]
pub(super) struct Mapped {
    /// The runtime as packbox runs it; its `not_honoured` says what was left out.
    pub runtime: Runtime,
    /// Recipe Dockerfiles read for `packbox:` blocks, keyed by their full path.
    pub recipes: Vec<(String, String)>,
}

/// Maps one upstream runtime file onto packbox's shape, against the catalog it joins.
pub(super) fn map(
    file: &str,
    text: &str,
    catalog: &Catalog,
    origin: Origin<'_>,
) -> Result<Mapped, CatalogError> {
    let doc: UpstreamRuntime = serde_yaml::from_str(text).map_err(|source| CatalogError::Yaml {
        file: file.to_string(),
        source,
    })?;
    Mapper {
        file,
        catalog,
        origin,
        notes: Vec::new(),
        recipes: Vec::new(),
    }
    .map(doc)
}

struct Mapper<'a> {
    file: &'a str,
    catalog: &'a Catalog,
    origin: Origin<'a>,
    notes: Vec<String>,
    recipes: Vec<(String, String)>,
}

impl<'a> Mapper<'a> {
    fn invalid(&self, field: &str, expected: impl std::fmt::Display) -> CatalogError {
        CatalogError::Invalid {
            file: self.file.to_string(),
            message: format!("`{field}`: {expected}"),
        }
    }

    fn note(&mut self, field: &str, what: impl std::fmt::Display) {
        self.notes.push(format!("`{field}`: {what}"));
    }

    /// Upstream's Go runtime runs `go run FILE`, which executes what it builds: a run's `/tmp`
    /// is noexec and its root read-only, so on the catalog's Go images each action is compiled
    /// into its environment image instead and that binary runs (the catalog's interpreter).
    fn compiled_go(&mut self, interpreter: Vec<String>, base: Option<&Runtime>) -> Vec<String> {
        match base {
            Some(go)
                if go.family() == "go"
                    && interpreter.first().is_some_and(|b| family(b) == "go") =>
            {
                self.note(
                    "execution_config.interpreter",
                    format!(
                        "`{}` is not run: each Go action is compiled into its environment image when that is built, and its binary runs",
                        interpreter.join(" ")
                    ),
                );
                go.interpreter.clone()
            }
            _ => interpreter,
        }
    }

    fn map(mut self, doc: UpstreamRuntime) -> Result<Mapped, CatalogError> {
        let (owner, short) = doc
            .reference
            .rsplit_once('.')
            .unwrap_or(("", doc.reference.as_str()));
        let short = short.to_ascii_lowercase();
        if !is_name(&short) {
            return Err(self.invalid(
                "ref",
                format!(
                    "`{}` is not `pack.name` with a name of lowercase letters, digits, `_` and `-`",
                    doc.reference
                ),
            ));
        }
        let interpreter = self.interpreter(&doc.execution_config)?;
        let mut aliases: Vec<String> = doc
            .aliases
            .iter()
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        for alias in &aliases {
            if alias.is_empty() || alias.len() > 64 || alias.chars().any(char::is_whitespace) {
                return Err(self.invalid("aliases", format!("`{alias}` is not a runner type")));
            }
        }
        let (name, base) = match self.origin {
            Origin::Operator { .. } => {
                let base = self.replaced(&short, &aliases)?;
                let name = base.map_or(short.clone(), |b| b.name.clone());
                (name, base)
            }
            Origin::Pack { pack_ref } => {
                if owner != pack_ref {
                    return Err(self.invalid(
                        "ref",
                        format!("`{}`: a pack's runtime is `{pack_ref}.NAME`", doc.reference),
                    ));
                }
                if doc.packbox.is_some() || doc.versions.iter().any(|v| v.packbox.is_some()) {
                    return Err(self.invalid(
                        "packbox",
                        "a pack's runtime cannot name an image or a recipe; it runs on the images of the operator's catalog",
                    ));
                }
                let base = self.runs_on(&interpreter)?;
                let name = format!("{pack_ref}.{short}");
                // The catalog's runtimes win: an alias they already answer to stays theirs.
                let mut kept = Vec::new();
                let catalog: &'a Catalog = self.catalog;
                for alias in aliases.drain(..).chain([short.clone()]) {
                    match catalog.resolve(&alias) {
                        Some(other) => self.note(
                            "aliases",
                            format!(
                                "`{alias}` stays the catalog's {} (this runtime is `{name}`)",
                                other.name
                            ),
                        ),
                        None if !kept.contains(&alias) => kept.push(alias),
                        None => {}
                    }
                }
                aliases = kept;
                (name, Some(base))
            }
        };
        if !aliases.contains(&name) {
            aliases.insert(0, name.clone());
        }
        if doc.packbox.is_some() {
            return Err(self.invalid(
                "packbox",
                "an image belongs to a version: put `packbox: {image: ...}` under `versions[]`",
            ));
        }
        let interpreter = self.compiled_go(interpreter, base);
        let config = &doc.execution_config;
        self.unused_parts(config, base);
        let env = self.env(config, base)?;
        let warm_start = match base {
            Some(b) if b.interpreter == interpreter => b.warm_start.clone(),
            _ => Vec::new(),
        };
        let (versions, default_version) = self.versions(&doc, &interpreter, base)?;
        let on_demand = base.is_some_and(|b| b.on_demand);
        Ok(Mapped {
            runtime: Runtime {
                name,
                aliases,
                interpreter,
                warm_start,
                env,
                default_version,
                on_demand,
                versions,
                source: self.file.to_string(),
                base: match self.origin {
                    Origin::Pack { .. } => base.map(|b| b.family().to_string()),
                    Origin::Operator { .. } => None,
                },
                not_honoured: self.notes,
            },
            recipes: self.recipes,
        })
    }

    /// `execution_config.interpreter` as a command: empty for native runtimes.
    fn interpreter(&self, config: &ExecutionConfig) -> Result<Vec<String>, CatalogError> {
        let Some(interpreter) = &config.interpreter else {
            return Ok(Vec::new());
        };
        let binary = interpreter.binary.trim();
        if binary.is_empty() {
            if !interpreter.args.is_empty() {
                return Err(self.invalid(
                    "execution_config.interpreter.binary",
                    "a command is expected when `args` are given",
                ));
            }
            return Ok(Vec::new());
        }
        for word in [binary]
            .into_iter()
            .chain(interpreter.args.iter().map(String::as_str))
        {
            if word.contains('{') || word.contains('\0') {
                return Err(self.invalid(
                    "execution_config.interpreter",
                    format!(
                        "`{word}`: a command name, an absolute path or a plain argument is expected, not a template"
                    ),
                ));
            }
        }
        Ok([binary.to_string()]
            .into_iter()
            .chain(interpreter.args.iter().cloned())
            .collect())
    }

    /// The catalog runtime an operator's file replaces: the one its name or aliases name.
    fn replaced(
        &self,
        short: &str,
        aliases: &[String],
    ) -> Result<Option<&'a Runtime>, CatalogError> {
        let catalog: &'a Catalog = self.catalog;
        let mut found: Option<&'a Runtime> = None;
        for alias in [short.to_string()].iter().chain(aliases) {
            if let Some(runtime) = catalog.resolve(alias) {
                match found {
                    Some(first) if first.name != runtime.name => {
                        return Err(self.invalid(
                            "aliases",
                            format!(
                                "they name two runtimes of the catalog, {} and {}; one file replaces one runtime",
                                first.name, runtime.name
                            ),
                        ));
                    }
                    _ => found = Some(runtime),
                }
            }
        }
        Ok(found)
    }

    /// The catalog runtime whose images a pack's runtime runs on: the one whose interpreter is
    /// the same program (`python3.11` and `python3` are both python).
    fn runs_on(&self, interpreter: &[String]) -> Result<&'a Runtime, CatalogError> {
        let catalog: &'a Catalog = self.catalog;
        let wanted = interpreter.first().map(|b| family(b));
        let found = catalog.runtimes().iter().find(|r| {
            let theirs = r.interpreter.first().map(|b| family(b));
            match (&wanted, theirs) {
                (None, None) => true,
                (Some(w), Some(t)) => *w == t || r.aliases.contains(w),
                _ => false,
            }
        });
        found.ok_or_else(|| {
            let known: Vec<String> = self
                .catalog
                .runtimes()
                .iter()
                .filter_map(|r| r.interpreter.first().cloned())
                .collect();
            self.invalid(
                "execution_config.interpreter.binary",
                format!(
                    "`{}` is the interpreter of no runtime of the catalog ({}); a pack's runtime runs only on the catalog's images, never on one the pack names or builds",
                    interpreter.first().map(String::as_str).unwrap_or(""),
                    known.join(", ")
                ),
            )
        })
    }

    /// Notes for the parts of `execution_config` packbox does its own way.
    fn unused_parts(&mut self, config: &ExecutionConfig, base: Option<&Runtime>) {
        let family = base.map(Runtime::family);
        if let Some(interpreter) = &config.interpreter
            && interpreter.file_extension.is_some()
        {
            self.note(
                "execution_config.interpreter.file_extension",
                "an action's runner_type chooses its runtime; the extension is not used",
            );
        }
        if config.inline_execution.is_some() {
            self.note(
                "execution_config.inline_execution",
                "packbox runs an action's entry point, never inline code",
            );
        }
        let own_builder = |kind: &str| match family {
            Some("python") => kind == "virtualenv" || kind == "requirements.txt",
            Some("node") => kind == "node_modules" || kind == "package.json",
            _ => false,
        };
        if let Some(environment) = &config.environment
            && !own_builder(&environment.env_type)
        {
            self.note(
                "execution_config.environment",
                format!(
                    "`{}` is not made: packbox builds environment images for python (virtualenv) and node (node_modules) only, and never runs a `create_command`",
                    environment.env_type
                ),
            );
        }
        if let Some(dependencies) = &config.dependencies {
            let note = if own_builder(&dependencies.manifest_file) {
                format!(
                    "{} is installed by packbox's own sandboxed build; the `install_command` is not run",
                    dependencies.manifest_file
                )
            } else {
                format!(
                    "{} is not installed: packbox installs only requirements.txt (python) and package.json (node), and never runs an `install_command`",
                    dependencies.manifest_file
                )
            };
            self.note("execution_config.dependencies", note);
        }
    }

    /// The variables every container of the runtime gets: the replaced runtime's, then
    /// `execution_config.env_vars` with `{pack_dir}` as `/pack`.
    fn env(
        &mut self,
        config: &ExecutionConfig,
        base: Option<&Runtime>,
    ) -> Result<BTreeMap<String, String>, CatalogError> {
        let mut env = base.map(|b| b.env.clone()).unwrap_or_default();
        for (name, var) in &config.env_vars {
            let field = format!("execution_config.env_vars.{name}");
            let valid_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(self.invalid(
                    &field,
                    "a variable name of letters, digits and `_` is expected",
                ));
            }
            let upper = name.to_ascii_uppercase();
            if upper.starts_with("ATTUNE_") || upper.starts_with("PACKBOX_") || upper == "HOME" {
                return Err(self.invalid(
                    &field,
                    "ATTUNE_*, PACKBOX_* and HOME are the execution context packbox sets",
                ));
            }
            let (value, operation, separator) = match var {
                EnvVar::Value(value) => (value.as_str(), Operation::Set, ":"),
                EnvVar::Spec(spec) => (
                    spec.value.as_str(),
                    spec.operation,
                    spec.separator.as_deref().unwrap_or(":"),
                ),
            };
            if value.contains('\0') {
                return Err(self.invalid(&field, "a value without NUL bytes is expected"));
            }
            let value = value.replace("{pack_dir}", "/pack");
            if let Some(template) = [
                "{env_dir}",
                "{interpreter}",
                "{manifest_path}",
                "{action_file}",
            ]
            .iter()
            .find(|t| value.contains(**t))
            {
                self.note(
                    &field,
                    format!(
                        "not set: {template} has no meaning here (packbox's environment image sets its own VIRTUAL_ENV, NODE_PATH and PATH)"
                    ),
                );
                continue;
            }
            let existing = env.get(name).cloned();
            match (operation, existing) {
                (Operation::Set, _) => {
                    env.insert(name.clone(), value);
                }
                (_, Some(existing)) if existing.split(separator).any(|part| part == value) => {}
                (Operation::Prepend, Some(existing)) => {
                    let joined = format!("{value}{separator}{existing}");
                    env.insert(name.clone(), joined);
                }
                (Operation::Append, Some(existing)) => {
                    let joined = format!("{existing}{separator}{value}");
                    env.insert(name.clone(), joined);
                }
                (_, None) => self.note(
                    &field,
                    "not set: adding to the value the image sets needs that value, which packbox does not read; use `operation: set`",
                ),
            }
        }
        Ok(env)
    }

    /// `versions[]` with their images: the replaced runtime's image of the same version, or
    /// the operator's `packbox:` block. Versions without an image are left out, with a note.
    fn versions(
        &mut self,
        doc: &UpstreamRuntime,
        interpreter: &[String],
        base: Option<&Runtime>,
    ) -> Result<(Vec<RuntimeVersion>, Option<String>), CatalogError> {
        let base_version = |version: &str| {
            base.and_then(|b| b.versions.iter().find(|v| v.version == version))
                .cloned()
        };
        if doc.versions.is_empty() {
            let Some(base) = base else {
                return Err(self.invalid(
                    "versions",
                    "at least one version with `packbox: {image: ...}` is expected: no runtime of the catalog has images for this one",
                ));
            };
            if !doc.distributions.verification.commands.is_empty() {
                self.note(
                    "distributions.verification",
                    format!(
                        "packbox probes its own {} images with their own command",
                        base.name
                    ),
                );
            }
            return Ok((base.versions.clone(), base.default_version.clone()));
        }
        let mut versions = Vec::new();
        let mut default = None;
        let mut replaced_verification = false;
        for (index, entry) in doc.versions.iter().enumerate() {
            let field = format!("versions[{index}]");
            if let Err(e) = crate::version::parse_version(&entry.version) {
                return Err(self.invalid(&format!("{field}.version"), e));
            }
            if let Some(config) = &entry.execution_config {
                let theirs = self.interpreter(config)?;
                if config.interpreter.is_some() && theirs != interpreter {
                    self.note(
                        &format!("{field}.execution_config.interpreter"),
                        format!(
                            "`{}` is not used: each version is its own image, in which packbox runs `{}`",
                            theirs.join(" "),
                            interpreter.join(" ")
                        ),
                    );
                }
                let runtime_config = &doc.execution_config;
                let differs = (config.inline_execution.is_some()
                    && config.inline_execution != runtime_config.inline_execution)
                    || (config.environment.is_some()
                        && config.environment != runtime_config.environment)
                    || (config.dependencies.is_some()
                        && config.dependencies != runtime_config.dependencies)
                    || (!config.env_vars.is_empty() && config.env_vars != runtime_config.env_vars);
                if differs {
                    self.note(
                        &format!("{field}.execution_config"),
                        "only the runtime's own execution_config is used (one per runtime in packbox)",
                    );
                }
            }
            let placed = match (&entry.packbox, self.origin) {
                (Some(placement), Origin::Operator { dir }) => {
                    Some(self.placed(&field, entry, placement, &doc.distributions, dir)?)
                }
                _ => None,
            };
            let version = match placed.or_else(|| base_version(&entry.version)) {
                Some(mut version) => {
                    if entry.packbox.is_none() {
                        replaced_verification |= entry
                            .distributions
                            .as_ref()
                            .is_some_and(|d| !d.verification.commands.is_empty())
                            || !doc.distributions.verification.commands.is_empty();
                    }
                    version.version = entry.version.clone();
                    version
                }
                None => {
                    let how = match self.origin {
                        Origin::Operator { .. } => {
                            "add `packbox: {image: ...}` to the version to give it one"
                        }
                        Origin::Pack { .. } => {
                            "a pack's runtime runs only on the catalog's versions"
                        }
                    };
                    self.note(
                        &field,
                        format!(
                            "version {} is left out: packbox has no image for it ({how})",
                            entry.version
                        ),
                    );
                    continue;
                }
            };
            if entry.is_default {
                if default.is_some() {
                    return Err(self.invalid(
                        &format!("{field}.is_default"),
                        "only one version may be the default",
                    ));
                }
                default = Some(entry.version.clone());
            }
            if versions
                .iter()
                .any(|v: &RuntimeVersion| v.version == entry.version)
            {
                return Err(self.invalid(
                    &format!("{field}.version"),
                    format!("{} is listed twice", entry.version),
                ));
            }
            versions.push(version);
        }
        if versions.is_empty() {
            let listed: Vec<&str> = doc.versions.iter().map(|v| v.version.as_str()).collect();
            return Err(self.invalid(
                "versions",
                format!(
                    "none of {} has an image packbox can use ({})",
                    listed.join(", "),
                    self.notes.join("; ")
                ),
            ));
        }
        if replaced_verification && let Some(base) = base {
            self.note(
                "distributions.verification",
                format!(
                    "packbox probes its own {} images with their own command",
                    base.name
                ),
            );
        }
        let default = default.or_else(|| {
            base.and_then(|b| b.default_version.clone())
                .filter(|d| versions.iter().any(|v| &v.version == d))
        });
        Ok((versions, default))
    }

    /// A version an operator places on an image of their own: its recipe read now, its probe
    /// from the first verification command (by priority).
    fn placed(
        &mut self,
        field: &str,
        entry: &UpstreamVersion,
        placement: &Placement,
        runtime_distributions: &Distributions,
        dir: &Path,
    ) -> Result<RuntimeVersion, CatalogError> {
        let commands = match &entry.distributions {
            Some(d) if !d.verification.commands.is_empty() => &d.verification.commands,
            _ => &runtime_distributions.verification.commands,
        };
        let Some(command) = commands.iter().min_by_key(|c| c.priority) else {
            return Err(self.invalid(
                &format!("{field}.distributions.verification.commands"),
                "a command that prints the version is expected, to verify the image",
            ));
        };
        if commands.len() > 1 {
            self.note(
                &format!("{field}.distributions.verification.commands"),
                format!(
                    "only the first by priority (`{}`) probes the image",
                    command.binary
                ),
            );
        }
        let pattern = match &command.pattern {
            Some(p) if regex::Regex::new(p).is_ok_and(|r| r.captures_len() > 1) => p.clone(),
            Some(p) if regex::Regex::new(p).is_err() => {
                return Err(self.invalid(
                    &format!("{field}.distributions.verification.commands.pattern"),
                    format!("`{p}` is not a valid regex"),
                ));
            }
            _ => ANY_VERSION.to_string(),
        };
        let recipe = match &placement.recipe {
            None => None,
            Some(recipe) => {
                let path = dir.join(&recipe.dockerfile);
                let dockerfile = std::fs::read_to_string(&path).map_err(|source| {
                    self.invalid(
                        &format!("{field}.packbox.recipe.dockerfile"),
                        format!("{} cannot be read: {source}", path.display()),
                    )
                })?;
                let key = path.display().to_string();
                self.recipes.push((key.clone(), dockerfile));
                Some(Recipe {
                    dockerfile: key,
                    args: recipe.args.clone(),
                })
            }
        };
        Ok(RuntimeVersion {
            version: entry.version.clone(),
            image: placement.image.clone(),
            recipe,
            probe: Probe {
                command: [command.binary.clone()]
                    .into_iter()
                    .chain(command.args.iter().cloned())
                    .collect(),
                exit_code: command.exit_code,
                pattern,
                timeout_seconds: None,
            },
        })
    }
}

/// The program an interpreter command runs, without its folder and version suffix:
/// `/usr/bin/python3.11` and `python3` are both `python`.
fn family(binary: &str) -> String {
    let base = binary.rsplit('/').next().unwrap_or(binary);
    base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
        .to_ascii_lowercase()
}

/// A runtime name: lowercase letters, digits, `_` and `-`, starting with a letter.
fn is_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::error_text::chain;

    const PYTHON: &str = r#"
ref: core.python
aliases: [python, python3]
distributions:
  verification:
    commands:
      - {binary: python3, args: ["--version"], exit_code: 0, pattern: 'Python 3\.', priority: 1}
execution_config:
  interpreter: {binary: python3, args: ["-u"], file_extension: .py}
  environment: {env_type: virtualenv, create_command: [python3, -m, venv, "{env_dir}"]}
  dependencies: {manifest_file: requirements.txt, install_command: [pip, install]}
  env_vars:
    PYTHONPATH: {operation: prepend, value: "{pack_dir}/lib", separator: ":"}
    RUNTIME_TAG: "{pack_dir}/tag"
    VENV_HINT: "{env_dir}/bin"
    PATH: {operation: append, value: /opt/extra}
versions:
  - version: "3.11"
    is_default: true
    execution_config:
      interpreter: {binary: python3.11, args: ["-u"]}
  - version: "3.12"
  - version: "3.13"
"#;

    fn operator(text: &str) -> Result<Mapped, CatalogError> {
        let catalog = Catalog::builtin().expect("built-in");
        map(
            "site/python.yaml",
            text,
            &catalog,
            Origin::Operator {
                dir: Path::new("/nonexistent"),
            },
        )
    }

    fn from_pack(text: &str) -> Result<Mapped, CatalogError> {
        let catalog = Catalog::builtin().expect("built-in");
        map(
            "packs/mine/runtimes/x.yaml",
            text,
            &catalog,
            Origin::Pack { pack_ref: "mine" },
        )
    }

    fn noted(runtime: &Runtime, field: &str, words: &str) -> bool {
        runtime
            .not_honoured
            .iter()
            .any(|n| n.starts_with(&format!("`{field}`")) && n.contains(words))
    }

    #[test]
    fn upstreams_python_replaces_the_built_in_on_its_images_saying_what_it_leaves_out() {
        let python = operator(PYTHON).expect("maps").runtime;
        assert_eq!(python.name, "python");
        assert_eq!(python.interpreter, ["python3", "-u"]);
        let versions: Vec<&str> = python.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["3.11", "3.13"]);
        assert_eq!(python.versions[0].image, "packbox/python:3.11");
        assert_eq!(python.default_version.as_deref(), Some("3.11"));
        assert!(
            !python.warm_start.is_empty(),
            "same interpreter: the pool preloads as before"
        );
        assert_eq!(
            python.env["PYTHONPATH"], "/pack/lib",
            "prepended once, not twice"
        );
        assert_eq!(python.env["RUNTIME_TAG"], "/pack/tag");
        assert!(!python.env.contains_key("VENV_HINT"));
        assert!(!python.env.contains_key("PATH"));
        assert!(python.base.is_none());
        for (field, words) in [
            ("versions[1]", "version 3.12 is left out"),
            (
                "versions[0].execution_config.interpreter",
                "`python3.11 -u` is not used",
            ),
            ("execution_config.env_vars.VENV_HINT", "{env_dir}"),
            ("execution_config.env_vars.PATH", "operation: set"),
            ("execution_config.interpreter.file_extension", "runner_type"),
            ("execution_config.dependencies", "install_command"),
            ("distributions.verification", "probes its own python images"),
        ] {
            assert!(
                noted(&python, field, words),
                "{field}: {:#?}",
                python.not_honoured
            );
        }
        assert!(
            !python
                .not_honoured
                .iter()
                .any(|n| n.starts_with("`execution_config.environment`")),
            "a virtualenv is what packbox builds: {:#?}",
            python.not_honoured
        );
    }

    #[test]
    fn an_operator_places_a_new_runtime_on_an_image_of_their_own() {
        let deno = r#"
ref: site.deno
aliases: [deno, ts]
execution_config:
  interpreter: {binary: deno, args: [run, --quiet]}
versions:
  - version: "2.1"
    packbox: {image: "registry.example/deno@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
    distributions:
      verification:
        commands:
          - {binary: deno, args: [--version], pattern: 'deno (\d+\.\d+\.\d+)', priority: 2}
          - {binary: /usr/bin/deno, args: [--version], priority: 1}
"#;
        let runtime = operator(deno).expect("maps").runtime;
        assert_eq!(runtime.name, "deno");
        assert_eq!(runtime.aliases, ["deno", "ts"]);
        assert_eq!(runtime.interpreter, ["deno", "run", "--quiet"]);
        let version = &runtime.versions[0];
        assert!(version.image.starts_with("registry.example/deno@sha256:"));
        assert_eq!(version.probe.command, ["/usr/bin/deno", "--version"]);
        assert_eq!(
            version.probe.pattern, ANY_VERSION,
            "the first by priority has no group"
        );
        assert!(noted(
            &runtime,
            "versions[0].distributions.verification.commands",
            "first by priority"
        ));
        let without_command = deno.replace("distributions:", "unused_distributions:");
        let err = operator(&without_command).expect_err("an unknown field");
        assert!(
            chain(&err).contains("unused_distributions"),
            "{}",
            chain(&err)
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_one_error_naming_the_file_the_field_and_what_was_expected() {
        for (text, words) in [
            (
                "ref: core.python\nexecution_config:\n  interpreter: python3\n",
                "execution_config.interpreter: invalid type",
            ),
            (
                "ref: core.python\nexecution_config:\n  interpreter: {binary: python3}\n  file_extension: .py\n",
                "unknown field `file_extension`",
            ),
            (
                "ref: core.python\nexecution_config: {interpreter: {binary: python3}}\nversions: [{version: '3.12'}]\n",
                "`versions`: none of 3.12 has an image packbox can use",
            ),
            (
                "ref: Core.Py thon\n",
                "`ref`: `Core.Py thon` is not `pack.name`",
            ),
            (
                "ref: core.python\nexecution_config:\n  interpreter: {binary: \"{env_dir}/bin/python3\"}\n",
                "not a template",
            ),
            (
                "ref: core.python\nexecution_config:\n  env_vars: {ATTUNE_EXEC_ID: '1'}\n",
                "`execution_config.env_vars.ATTUNE_EXEC_ID`",
            ),
            (
                "ref: site.deno\nexecution_config: {interpreter: {binary: deno}}\n",
                "`versions`: at least one version with `packbox: {image: ...}`",
            ),
            (
                "ref: core.python\naliases: [python, bash]\n",
                "they name two runtimes of the catalog, python and shell",
            ),
        ] {
            let err = operator(text).map(|_| ()).expect_err(words);
            let text = chain(&err);
            assert!(text.contains("site/python.yaml"), "{text}");
            assert!(text.contains(words), "{words}: {text}");
        }
    }

    #[test]
    fn a_packs_runtime_runs_only_on_the_catalogs_images_and_never_takes_its_names() {
        let strict = r#"
ref: mine.strictsh
aliases: [strictsh, bash]
execution_config:
  interpreter: {binary: /bin/bash, args: ["-e", "-u"]}
  env_vars: {STRICT_MODE: "on"}
"#;
        let runtime = from_pack(strict).expect("maps").runtime;
        assert_eq!(runtime.name, "mine.strictsh");
        assert_eq!(runtime.aliases, ["mine.strictsh", "strictsh"]);
        assert_eq!(runtime.family(), "shell");
        assert_eq!(runtime.versions[0].image, "packbox/shell:5.2");
        assert!(runtime.warm_start.is_empty());
        assert_eq!(runtime.env["STRICT_MODE"], "on");
        assert!(noted(
            &runtime,
            "aliases",
            "`bash` stays the catalog's shell"
        ));
        let python = from_pack("ref: mine.py\nexecution_config: {interpreter: {binary: python3.13}}\nversions: [{version: '3.13'}, {version: '3.12'}]\n")
            .expect("maps")
            .runtime;
        assert_eq!(python.family(), "python");
        assert_eq!(python.versions.len(), 1);
        assert!(noted(
            &python,
            "versions[1]",
            "runs only on the catalog's versions"
        ));
        for (text, words) in [
            (
                "ref: mine.deno\nexecution_config: {interpreter: {binary: deno}}\n",
                "`deno` is the interpreter of no runtime of the catalog",
            ),
            (
                "ref: mine.py\nexecution_config: {interpreter: {binary: python3}}\nversions:\n  - {version: '3.11', packbox: {image: 'evil:latest'}}\n",
                "cannot name an image or a recipe",
            ),
            (
                "ref: other.py\nexecution_config: {interpreter: {binary: python3}}\n",
                "a pack's runtime is `mine.NAME`",
            ),
        ] {
            let err = from_pack(text).map(|_| ()).expect_err(words);
            let text = chain(&err);
            assert!(
                text.contains("runtimes/x.yaml") && text.contains(words),
                "{text}"
            );
        }
    }

    #[test]
    fn upstreams_go_runs_the_compiled_binary_not_go_run() {
        let go = "ref: core.go\naliases: [go, golang]\nexecution_config:\n  interpreter: {binary: go, args: [run], file_extension: .go}\n";
        let catalog = Catalog::builtin().expect("built-in");
        let builtin = catalog.resolve("go").expect("go").interpreter.clone();
        let mapped = operator(go).expect("maps").runtime;
        assert_eq!(mapped.interpreter, builtin);
        assert!(noted(
            &mapped,
            "execution_config.interpreter",
            "`go run` is not run"
        ));
        let versions: Vec<&str> = mapped.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["1.19", "1.24"]);
        let from_pack = from_pack(&go.replace("core.go", "mine.go"))
            .expect("maps")
            .runtime;
        assert_eq!(from_pack.interpreter, builtin);
        assert_eq!(from_pack.family(), "go");
    }

    #[test]
    fn interpreters_of_one_program_are_one_family() {
        for (binary, expected) in [
            ("python3.11", "python"),
            ("/usr/bin/python3", "python"),
            ("/bin/bash", "bash"),
            ("node20", "node"),
            ("java", "java"),
        ] {
            assert_eq!(family(binary), expected, "{binary}");
        }
    }

    #[test]
    fn only_files_with_upstreams_fields_are_read_as_upstreams() {
        assert!(is_upstream("ref: core.python\n"));
        assert!(is_upstream("execution_config: {}\n"));
        assert!(!is_upstream("name: python\naliases: [python]\n"));
        assert!(!is_upstream("- not a mapping\n"));
    }
}
