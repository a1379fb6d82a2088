//! Planning a run without an engine: the action and its runtime, the parameter document with
//! secrets merged in, how it reaches the action, and the limits. Everything wrong with the input
//! is said here, before any container exists.

pub mod check;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::catalog::{Catalog, CatalogError, NoMatchingVersion, Runtime};
use crate::contract::delivery::{self, DeliveryError};
use crate::contract::result::OutcomeTerms;
use crate::contract::scrub::StreamScrubber;
use crate::contract::secrets::{Redactor, SecretBytes, SecretError, Secrets};
use crate::egress::policy::{Declared, PolicyError, RunGrant};
use crate::image::env::Manifests;
use crate::keystore::{KeyStore, KeyStoreError, KeyUse};
use crate::lifecycle::RunLimits;
use crate::lifecycle::owner::Owner;
use crate::pack::params::ParamError;
use crate::pack::{
    self, LoadedAction, PackError, ParameterDelivery, ParameterFormat, Problem, params,
};
use crate::pack_delivery::volume;
use crate::sandbox::isolation::{self, IsolationError};
use crate::sandbox::{PackFolder, PackSource, SandboxPolicy, Workload};
use crate::settings::{KeyInjection, Settings};

/// Timeout of an action that states none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The action's `HOME`: the container's private `/tmp` tmpfs, writable, gone with the run.
pub(crate) const RUN_HOME: &str = "/tmp";
/// Where file delivery puts the parameter document: the private tmpfs of the container.
const PARAMETER_FILE_STEM: &str = "/tmp/attune-parameters";

/// A run that cannot be planned: the pack, the parameters or the secrets are wrong, or the
/// catalog has nothing the action can run on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The pack or the action cannot be run: missing, unreadable or wrong files.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The parameter values do not fit the action's declarations.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The secrets given cannot be used.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The key store could not give the run its keys (a value that fails authentication, a
    /// database that cannot be read).
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// The pack's files could not be read whole for its digest.
    #[error(transparent)]
    Digest(volume::DeliveryError),
    /// The parameter document cannot be written in the action's format.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The action names a runner type no runtime of the catalog has.
    #[error("action {action}: runner_type `{runner_type}` is not a known runtime (known: {known})")]
    UnknownRuntime {
        /// The action's ref.
        action: String,
        /// The runner type the action names.
        runner_type: String,
        /// The catalog's runtimes with their aliases (`python (python3), node`), for the message.
        known: String,
    },
    /// The action names a runtime its pack brings, and the operator does not let packs bring
    /// runtimes.
    #[error(
        "action {action}: runner_type `{runner_type}` is a runtime its pack brings ({}); packs may bring runtimes only where the operator allows it (`build.allow_pack_runtimes: true`, PACKBOX_ALLOW_PACK_RUNTIMES=1)",
        .file.display()
    )]
    PackRuntimeNotAllowed {
        /// The action's ref.
        action: String,
        /// The runner type the action names.
        runner_type: String,
        /// The pack's runtime file that answers to it.
        file: PathBuf,
    },
    /// The action's pack declares Debian packages (`meta.system_packages`) and the operator does
    /// not allow packs to have them installed.
    #[error("action {action}: {}", system_packages_refusal(.file, .packages))]
    SystemPackages {
        /// The action's ref.
        action: String,
        /// The pack's `pack.yaml`.
        file: PathBuf,
        /// The packages it declares.
        packages: Vec<String>,
    },
    /// A runtime the pack brings cannot be used (the operator allows packs to bring runtimes).
    #[error("action {action}: the runtimes its pack brings cannot be used")]
    PackRuntime {
        /// The action's ref.
        action: String,
        /// The file, the field and what was expected.
        #[source]
        source: CatalogError,
    },
    /// `packbox test` on a pack without a `testing` section (or without runners in it).
    #[error("{}: the pack has no tests (a `testing` section with `runners` is expected)", .file.display())]
    NoTests {
        /// The pack's manifest (`pack.yaml`).
        file: PathBuf,
    },
    /// The action says `enabled: false` and the caller did not allow disabled actions.
    #[error(
        "action {action} is disabled (`enabled: false` in {}); run it anyway with --allow-disabled",
        .file.display()
    )]
    Disabled {
        /// The action's ref.
        action: String,
        /// The action's file.
        file: PathBuf,
    },
    /// The action is an Attune workflow: packbox runs single actions, never workflows.
    #[error(
        "action {action} is a workflow ({file} names `workflow_file: {workflow_file}`); packbox runs single actions, not workflows: run the workflow's steps one by one, or run it on Attune"
    )]
    Workflow {
        /// The action's ref.
        action: String,
        /// The action's file.
        file: String,
        /// The workflow file it names, relative to `actions/`.
        workflow_file: String,
    },
    /// The isolation level the action gets cannot be given with these settings.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// The action or its pack declares a destination the operator's network policy does not
    /// grant (or a network rule is unusable).
    #[error(transparent)]
    Egress(#[from] PolicyError),
    /// A strict run has no network, and the action was granted one.
    #[error(
        "action {action} runs with isolation strict, which has no network; its egress grant ({granted_by}) cannot be given"
    )]
    StrictEgress {
        /// The action's ref.
        action: String,
        /// Who granted the network.
        granted_by: String,
    },
    /// No version of the action's runtime satisfies its `runtime_version`.
    #[error("action {action}: {source}")]
    NoMatchingVersion {
        /// The action's ref.
        action: String,
        /// The constraint and the versions the catalog has.
        #[source]
        source: NoMatchingVersion,
    },
}

/// What the caller asks to run. The sandbox and the limits are the operator's, from
/// [`Settings`]; a request only names the action and its inputs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunRequest {
    /// The folder of packs the action's pack is found in (each pack a subfolder).
    pub packs_dir: PathBuf,
    /// `PACK.ACTION`.
    pub action_ref: String,
    /// `KEY=VALUE` parameter assignments; they win over `params_file`.
    pub params: Vec<String>,
    /// A JSON or YAML file of parameter values.
    pub params_file: Option<PathBuf>,
    /// Parameter values as JSON (as an API receives them), checked like the file's; they win
    /// over `params_file`.
    pub param_values: Map<String, Value>,
    /// `KEY=VALUE` secrets; they win over `secret_values`, `secrets_file` and over parameters of
    /// the same name.
    pub secrets: Vec<String>,
    /// A JSON or YAML file of secrets.
    pub secrets_file: Option<PathBuf>,
    /// Secret values as JSON (as an API receives them); they win over `secrets_file`. Used for
    /// this run only, like every secret.
    pub secret_values: Map<String, Value>,
    /// Overrides the action's `timeout_seconds` and the settings' timeout for this run.
    pub timeout: Option<Duration>,
    /// Runs an action that says `enabled: false` (refused otherwise).
    pub allow_disabled: bool,
    /// The key store the run's keys come from (system, pack, action scopes); the request's own
    /// secrets win over its keys.
    pub keys: Option<KeyStore>,
}

impl RunRequest {
    /// A request for an action with no parameters or secrets.
    pub fn new(packs_dir: impl Into<PathBuf>, action_ref: impl Into<String>) -> Self {
        RunRequest {
            packs_dir: packs_dir.into(),
            action_ref: action_ref.into(),
            params: Vec::new(),
            params_file: None,
            param_values: Map::new(),
            secrets: Vec::new(),
            secrets_file: None,
            secret_values: Map::new(),
            timeout: None,
            allow_disabled: false,
            keys: None,
        }
    }
}

/// A checked run, ready for the engine.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub(crate) action: LoadedAction,
    pub(crate) runtime: Runtime,
    /// What the environment image installs; `None`: the runtime image is used as it is.
    pub(crate) dependencies: Option<Manifests>,
    /// The parameter document, secrets included: it goes on stdin and nowhere else.
    pub(crate) stdin: SecretBytes,
    pub(crate) policy: SandboxPolicy,
    pub(crate) limits: RunLimits,
    /// Scrubs the secrets of this run out of its outcome.
    pub(crate) redactor: Redactor,
    /// The content digest of the pack when the run was planned.
    pub(crate) pack_digest: String,
    /// Undeclared parameters that were accepted and delivered, and what the runtime's file asks
    /// for that packbox does not do: the outcome's `warnings`.
    pub(crate) parameter_warnings: Vec<String>,
    /// What the run may reach through the egress proxy; `None`: no network (or the operator's
    /// weaker `sandbox.network`, which grants do not narrow).
    pub(crate) egress: Option<RunGrant>,
    /// The names (never the values) of the secrets the run receives, and where each came from.
    pub(crate) key_uses: Vec<KeyUse>,
}

/// Loads and checks everything about a run that needs no engine.
pub fn plan(
    settings: &Settings,
    catalog: &Catalog,
    request: &RunRequest,
) -> Result<RunPlan, PlanError> {
    let began = std::time::Instant::now();
    let planned = plan_inner(settings, catalog, request);
    crate::common::phase::phase("plan", began, "");
    planned
}

fn plan_inner(
    settings: &Settings,
    catalog: &Catalog,
    request: &RunRequest,
) -> Result<RunPlan, PlanError> {
    let action = pack::load_action(&request.packs_dir, &request.action_ref)?;
    let manifest = &action.action;
    if let Some(workflow_file) = &manifest.workflow_file {
        return Err(PlanError::Workflow {
            action: action.action_ref.clone(),
            file: action.action_file.display().to_string(),
            workflow_file: workflow_file.clone(),
        });
    }
    if !manifest.enabled && !request.allow_disabled {
        return Err(PlanError::Disabled {
            action: action.action_ref.clone(),
            file: action.action_file.clone(),
        });
    }
    system_packages(settings, &action)?;
    let runtime = runtime_for(catalog, settings, &action)?;
    let runtime = runtime.as_ref();
    // Fails early when no version of the catalog could ever match; the run then chooses among
    // the versions that probing verified.
    runtime
        .select_version(manifest.runtime_version.as_ref())
        .map_err(|source| PlanError::NoMatchingVersion {
            action: action.action_ref.clone(),
            source,
        })?;
    let dependencies = action.dependencies(runtime.family())?;
    // The operator's rules and the action's own request decide the level; a pack can only make
    // it stricter.
    let (level, chosen_by) = settings
        .isolation
        .level_for(&action.action_ref, manifest.isolation);
    let mut policy = isolation::apply(&action.action_ref, level, chosen_by, &settings.sandbox)?;
    let egress = egress_grant(settings, &action, &policy)?;
    if egress.is_some() {
        policy.network = crate::sandbox::policy::EGRESS_NETWORK.to_string();
    }
    // The request's secrets: the file, then JSON values, then KEY=VALUE assignments (which win).
    let mut requested = Secrets::read(&[], request.secrets_file.as_deref())?;
    requested.overlay(Secrets::from_values(request.secret_values.clone())?.into_values());
    requested.overlay(Secrets::read(&request.secrets, None)?.into_values());
    // Under them, the key store's: system, pack, action, the more specific winning.
    let stored = match &request.keys {
        Some(store) => {
            let inject_all = settings.keystore.inject == KeyInjection::All;
            store.for_action(&action.action_ref, |scope, name| {
                manifest
                    .parameters
                    .get(name)
                    .is_some_and(|spec| spec.secret)
                    || (inject_all && scope.rank() > 0)
            })?
        }
        None => Vec::new(),
    };
    let mut key_uses: Vec<KeyUse> = stored
        .iter()
        .filter(|key| !requested.values().contains_key(&key.name))
        .map(|key| KeyUse {
            name: key.name.clone(),
            scope: key.scope.to_string(),
        })
        .chain(requested.values().keys().map(|name| KeyUse {
            name: name.clone(),
            scope: "request".into(),
        }))
        .collect();
    key_uses.sort();
    let mut secrets = Secrets::default();
    secrets.overlay(
        stored
            .into_iter()
            .map(|key| (key.name, key.value))
            .collect(),
    );
    secrets.overlay(requested.into_values());
    let mut from_file = match &request.params_file {
        Some(file) => params::read_file(file)?,
        None => serde_json::Map::new(),
    };
    from_file.extend(request.param_values.clone());
    // A declared parameter given as a secret counts as given (and is checked like any value,
    // without ever being quoted).
    let mut given_as_secret = Vec::new();
    for (name, value) in secrets.values() {
        if manifest.parameters.contains_key(name) {
            from_file.insert(name.clone(), value.clone());
            given_as_secret.push(name.as_str());
        }
    }
    let given = params::parse_assignments(&request.params)?;
    let undeclared = params::Undeclared {
        additional: manifest.additional_parameters.as_ref(),
        strict: settings.run.strict_parameters,
    };
    let params::Resolved {
        mut document,
        warnings: mut parameter_warnings,
    } = params::resolve(
        &action.action_ref,
        &manifest.parameters,
        undeclared,
        from_file,
        &given,
        &given_as_secret,
    )?;
    // A secret wins over a parameter of the same name.
    document.extend(secrets.values().clone());
    // Secret parameters, and secret properties inside object parameters, are scrubbed too.
    let secret_values: Vec<&Value> = secrets
        .values()
        .values()
        .chain(manifest.parameters.iter().flat_map(|(name, spec)| {
            document
                .get(name)
                .map(|value| spec.secret_parts(value))
                .unwrap_or_default()
        }))
        .collect();
    let redactor = Redactor::new(secret_values).map_err(SecretError::from)?;
    let stdin = SecretBytes(delivery::encode(&document, manifest.parameter_format)?);
    // The run's own limit, then the action's, then the operator's default (as Attune: the
    // operator's timeout is a default, not an override); a server's maximum caps them later.
    let timeout = request
        .timeout
        .or(manifest.timeout_seconds.map(Duration::from_secs))
        .or(settings.run.timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let pack_digest =
        volume::tree_digest(&action.pack.pack_ref, &action.pack_dir).map_err(PlanError::Digest)?;
    // What the runtime's file (in Attune's shape) asks for and packbox does not do.
    parameter_warnings.extend(
        runtime
            .not_honoured
            .iter()
            .map(|note| format!("runtime {} ({}): {note}", runtime.name, runtime.source)),
    );
    Ok(RunPlan {
        key_uses,
        pack_digest,
        parameter_warnings,
        runtime: runtime.clone(),
        dependencies,
        stdin,
        policy,
        limits: RunLimits {
            timeout,
            grace: settings.run.grace,
            max_output: settings.run.max_output,
        },
        redactor,
        action,
        egress,
    })
}

/// The egress grant of a run: what the operator's rules grant the action, narrowed to what the
/// action and its pack declare. None for a sandbox with the operator's own network (`bridge`,
/// a named network): grants narrow the default `none`, never a network the operator opened.
pub(crate) fn egress_grant(
    settings: &Settings,
    action: &LoadedAction,
    policy: &SandboxPolicy,
) -> Result<Option<RunGrant>, PlanError> {
    if policy.network != "none" {
        return Ok(None);
    }
    let action_file = action
        .action_file
        .strip_prefix(&action.pack_dir)
        .unwrap_or(&action.action_file)
        .display()
        .to_string();
    let declared: Vec<Declared> = action
        .pack
        .network
        .iter()
        .map(|d| (d, "network.egress in pack.yaml".to_string()))
        .chain(
            action
                .action
                .network
                .iter()
                .map(|d| (d, format!("network.egress in {action_file}"))),
        )
        .map(|(destination, by)| Declared {
            destination: destination.clone(),
            by,
        })
        .collect();
    let grant = settings.network.grant_for(&action.action_ref, &declared)?;
    if let Some(grant) = &grant
        && policy.isolation.level == isolation::IsolationLevel::Strict
    {
        return Err(PlanError::StrictEgress {
            action: action.action_ref.clone(),
            granted_by: grant
                .destinations
                .first()
                .map(|g| g.granted_by.clone())
                .unwrap_or_default(),
        });
    }
    Ok(grant)
}

/// Refuses an action whose pack declares Debian packages (`meta.system_packages`) where the
/// operator does not allow them, naming the setting (never a run without what the pack said it
/// needs). Where the operator allows them, the environment build installs them.
pub(crate) fn system_packages(settings: &Settings, action: &LoadedAction) -> Result<(), PlanError> {
    if action.pack.system_packages.is_empty() || settings.allow_system_packages {
        return Ok(());
    }
    Err(PlanError::SystemPackages {
        action: action.action_ref.clone(),
        file: action.pack_dir.join("pack.yaml"),
        packages: action.pack.system_packages.clone(),
    })
}

/// The Debian packages an action's environment installs: its pack's, where the operator
/// allows them (see [`system_packages`]; refused before this otherwise).
pub(crate) fn allowed_system_packages<'a>(
    settings: &Settings,
    packages: &'a [String],
) -> &'a [String] {
    if settings.allow_system_packages {
        packages
    } else {
        &[]
    }
}

/// What a pack declaring Debian packages is told where the operator does not allow them: see
/// [`system_packages`].
pub(crate) fn system_packages_refusal(file: &Path, packages: &[String]) -> String {
    format!(
        "the pack declares Debian packages ({} meta.system_packages: {}); packs may have system packages installed only where the operator allows it (`build.allow_system_packages: true`, PACKBOX_ALLOW_SYSTEM_PACKAGES=1)",
        file.display(),
        packages.join(", ")
    )
}

/// The runtime an action's `runner_type` names: the catalog's, else one its pack brings where
/// the operator allows packs to bring runtimes (the catalog's names always win). Where the
/// operator does not, an action that names one of its pack's runtimes is refused naming the
/// setting.
pub(crate) fn runtime_for<'c>(
    catalog: &'c Catalog,
    settings: &Settings,
    action: &LoadedAction,
) -> Result<Cow<'c, Runtime>, PlanError> {
    let runner_type = &action.action.runner_type;
    if let Some(runtime) = catalog.resolve(runner_type) {
        return Ok(Cow::Borrowed(runtime));
    }
    if !settings.allow_pack_runtimes {
        if let Some(file) = crate::catalog::pack::pack_runtime_for(&action.pack_dir, runner_type) {
            return Err(PlanError::PackRuntimeNotAllowed {
                action: action.action_ref.clone(),
                runner_type: runner_type.clone(),
                file,
            });
        }
        return resolve_runtime(catalog, action).map(Cow::Borrowed);
    }
    let with_pack = catalog
        .with_pack_runtimes(&action.pack_dir, &action.pack.pack_ref)
        .map_err(|source| PlanError::PackRuntime {
            action: action.action_ref.clone(),
            source,
        })?;
    resolve_runtime(&with_pack, action).map(|r| Cow::Owned(r.clone()))
}

/// The catalog runtime an action's `runner_type` names.
pub(crate) fn resolve_runtime<'c>(
    catalog: &'c Catalog,
    action: &LoadedAction,
) -> Result<&'c Runtime, PlanError> {
    let runner_type = &action.action.runner_type;
    catalog
        .resolve(runner_type)
        .ok_or_else(|| PlanError::UnknownRuntime {
            action: action.action_ref.clone(),
            runner_type: runner_type.clone(),
            known: catalog.known_names(),
        })
}

impl RunPlan {
    /// A scrubber for one stream of this run's live output (`--follow`): what the action prints,
    /// with this run's secrets replaced as it streams.
    pub fn output_scrubber(&self) -> StreamScrubber {
        StreamScrubber::new(self.redactor.clone())
    }

    /// The action this plan runs (`PACK.ACTION`).
    pub fn action_ref(&self) -> &str {
        &self.action.action_ref
    }

    /// The version of the action's pack (its `pack.yaml`).
    pub fn pack_version(&self) -> &str {
        &self.action.pack.version
    }

    /// The SHA-256 of the pack's files when the run was planned.
    pub fn pack_digest(&self) -> &str {
        &self.pack_digest
    }

    /// The names of the secrets the run receives and where each came from (a key-store scope or
    /// `request`): what a record may say about them. Never a value.
    pub fn key_uses(&self) -> &[KeyUse] {
        &self.key_uses
    }

    /// Fields of the pack and the action that packbox does not know (ignored), to be shown.
    pub fn warnings(&self) -> &[Problem] {
        &self.action.warnings
    }

    /// The sandbox the run will get.
    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// What the run may reach through the egress proxy, and who granted it; `None` when it has
    /// no network (or the operator's own, weaker one).
    pub fn egress(&self) -> Option<&RunGrant> {
        self.egress.as_ref()
    }

    /// How long the action may run.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// Caps how long the action may run (a server's maximum), whatever the action, the
    /// settings or the request said.
    pub fn limit_timeout(&mut self, max: Duration) {
        self.limits.timeout = self.limits.timeout.min(max);
    }

    /// What the contract needs to turn the container's end into this run's outcome; `applied`
    /// is the sandbox as the backend applied it.
    pub(crate) fn outcome_terms<'a>(&'a self, applied: &'a SandboxPolicy) -> OutcomeTerms<'a> {
        OutcomeTerms {
            action_ref: &self.action.action_ref,
            pack_version: &self.action.pack.version,
            pack_digest: &self.pack_digest,
            runtime: &self.runtime.name,
            output_format: self.action.action.output_format,
            native: self.runtime.interpreter.is_empty(),
            warnings: &self.parameter_warnings,
            output_schema: self.action.action.output.as_ref(),
            redactor: &self.redactor,
            timeout: self.limits.timeout,
            policy: applied,
        }
    }

    /// The command of a pooled container when the runtime can start its interpreter ahead of
    /// the run (its `warm_start`): the interpreter then waits for the go-line itself. `None` for
    /// runtimes without one and for file delivery (whose wrapper must read the document after
    /// the go-line).
    pub(crate) fn warm_start_cmd(&self) -> Option<Vec<String>> {
        let manifest = &self.action.action;
        if self.runtime.warm_start.is_empty()
            || manifest.parameter_delivery != ParameterDelivery::Stdin
        {
            return None;
        }
        let mut cmd = self.runtime.warm_start.clone();
        cmd.push(format!("/pack/actions/{}", manifest.entry_point));
        Some(cmd)
    }

    /// What the container runs: the entry point under its interpreter, the Attune variables and
    /// the runtime's, and labels naming the run and its owner. No secret is in any of these. The
    /// pack is its folder, unless a volume holding its content is given.
    /// `image` is what the container starts from (an image id, never a tag someone else may
    /// move); `image_name` is its name for people (labels, metrics).
    pub(crate) fn workload(
        &self,
        exec_id: &str,
        attune_exec_id: u64,
        image: &str,
        image_name: &str,
        owner: &Owner,
    ) -> Workload {
        let manifest = &self.action.action;
        let mut cmd = self.runtime.interpreter.clone();
        cmd.push(format!("/pack/actions/{}", manifest.entry_point));
        let mut env: Vec<(String, String)> = vec![
            // Attune's integer id (actions do `int(...)` on it); packbox's own UUID beside it.
            ("ATTUNE_EXEC_ID".into(), attune_exec_id.to_string()),
            ("PACKBOX_EXEC_ID".into(), exec_id.to_string()),
            ("ATTUNE_ACTION".into(), self.action.action_ref.clone()),
            ("ATTUNE_PACK_REF".into(), self.action.pack.pack_ref.clone()),
            (
                "ATTUNE_PARAMETER_DELIVERY".into(),
                delivery_name(manifest.parameter_delivery).into(),
            ),
            (
                "ATTUNE_PARAMETER_FORMAT".into(),
                format_name(manifest.parameter_format).into(),
            ),
            // A writable home on the run's private tmpfs (git, pip --user, caches).
            ("HOME".into(), RUN_HOME.into()),
        ];
        if manifest.parameter_delivery == ParameterDelivery::File {
            let file = format!(
                "{PARAMETER_FILE_STEM}.{}",
                format_extension(manifest.parameter_format)
            );
            env.push(("ATTUNE_PARAMETER_FILE".into(), file));
            cmd = file_delivery_wrapper(cmd);
        }
        env.extend(self.runtime.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut labels = owner.labels();
        labels.insert("packbox.kind".into(), "run".into());
        labels.insert("packbox.exec_id".into(), exec_id.to_string());
        labels.insert("packbox.action".into(), self.action.action_ref.clone());
        labels.insert(
            crate::lifecycle::pool::IMAGE_LABEL.into(),
            image_name.to_string(),
        );
        // By then a live owner has stopped the run: a packbox that cannot judge the owner (it
        // is in another PID namespace) may sweep it after that, never before.
        labels.insert(
            crate::lifecycle::owner::DEADLINE.into(),
            crate::lifecycle::owner::deadline_after(self.limits.timeout + self.limits.grace),
        );
        Workload {
            image: image.to_string(),
            cmd,
            env,
            labels,
            pack: Some(PackSource::Folder(PackFolder {
                pack_ref: self.action.pack.pack_ref.clone(),
                host_dir: self.action.pack_dir.to_string_lossy().into_owned(),
                digest: self.pack_digest.clone(),
            })),
        }
    }
}

/// File delivery without a host file: the document still travels on stdin, and a tiny shell
/// step inside the container writes it to the private tmpfs (mode 0600, owned by the action's
/// user) before it becomes the action. Nothing is bind-mounted, so it works with a read-only
/// root and with an engine on another host, and the document never shows in `docker inspect`.
fn file_delivery_wrapper(action: Vec<String>) -> Vec<String> {
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        r#"umask 077 && cat > "$ATTUNE_PARAMETER_FILE" && exec "$@" </dev/null"#.to_string(),
        "packbox-parameter-file".to_string(),
    ];
    cmd.extend(action);
    cmd
}

fn delivery_name(delivery: ParameterDelivery) -> &'static str {
    match delivery {
        ParameterDelivery::Stdin => "stdin",
        ParameterDelivery::File => "file",
    }
}

fn format_name(format: ParameterFormat) -> &'static str {
    match format {
        ParameterFormat::Json => "json",
        ParameterFormat::Dotenv => "dotenv",
        ParameterFormat::Yaml => "yaml",
    }
}

fn format_extension(format: ParameterFormat) -> &'static str {
    match format {
        ParameterFormat::Json => "json",
        ParameterFormat::Dotenv => "env",
        ParameterFormat::Yaml => "yaml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_wrapper_ends_in_the_action_itself() {
        let cmd = file_delivery_wrapper(vec![
            "python3".into(),
            "-u".into(),
            "/pack/actions/a.py".into(),
        ]);
        assert_eq!(cmd[0], "/bin/sh");
        assert!(cmd[2].contains("umask 077"));
        assert!(cmd[2].contains(r#"exec "$@""#));
        assert_eq!(&cmd[4..], ["python3", "-u", "/pack/actions/a.py"]);
    }
}
