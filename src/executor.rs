//! The run pipeline: plan a run from a pack (no engine needed), then execute the plan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use std::time::{Duration, Instant};

use crate::catalog::NoMatchingVersion;
use crate::catalog::{Catalog, Runtime};
use crate::engine::Engine;
use crate::envimage::BuildSettings;
use crate::error::Error;
use crate::outcome::{Outcome, Status};
use crate::pack::{self, LoadedAction, ParameterDelivery, params};
use crate::prepare::{self, PrepareEvent, Preparer};
use crate::probe::{ProbeCache, VersionStatus};
use crate::runtime_image;
use crate::sandbox::{self, RunLimits, SandboxPolicy, Workload, delivery, result};

/// Timeout of an action that states none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Time between SIGTERM and SIGKILL when a run times out.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// What the caller asks to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub packs_dir: PathBuf,
    /// `PACK.ACTION`.
    pub action_ref: String,
    /// `KEY=VALUE` parameter assignments; they win over `params_file`.
    pub params: Vec<String>,
    /// A JSON or YAML file of parameter values.
    pub params_file: Option<PathBuf>,
    pub policy: SandboxPolicy,
    /// Overrides the action's `timeout_seconds`.
    pub timeout: Option<Duration>,
    pub max_output: usize,
}

impl RunRequest {
    /// A request with the default sandbox and limits.
    pub fn new(packs_dir: impl Into<PathBuf>, action_ref: impl Into<String>) -> Self {
        RunRequest {
            packs_dir: packs_dir.into(),
            action_ref: action_ref.into(),
            params: Vec::new(),
            params_file: None,
            policy: SandboxPolicy::default(),
            timeout: None,
            max_output: sandbox::DEFAULT_MAX_OUTPUT,
        }
    }
}

/// A checked run, ready for the engine: everything wrong with the input has been said by now.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub action: LoadedAction,
    pub runtime: Runtime,
    pub stdin: Vec<u8>,
    pub policy: SandboxPolicy,
    pub limits: RunLimits,
}

/// Loads and checks everything about a run that needs no engine.
pub fn plan(catalog: &Catalog, request: &RunRequest) -> Result<RunPlan, Error> {
    let action = pack::load_action(&request.packs_dir, &request.action_ref)?;
    let manifest = &action.action;
    let runtime = resolve_runtime(catalog, &action)?;
    if manifest.parameter_delivery == ParameterDelivery::File {
        return Err(Error::Unsupported {
            action: action.action_ref.clone(),
            what: "parameter_delivery `file`".into(),
        });
    }
    // Fails early, without an engine, when no version of the catalog could ever match; the run
    // then chooses among the versions that probing verified.
    runtime
        .select_version(&runtime.version_names(), manifest.runtime_version.as_ref())
        .map_err(|source| Error::NoMatchingVersion {
            action: action.action_ref.clone(),
            source,
        })?;
    let from_file = match &request.params_file {
        Some(file) => params::read_file(file)?,
        None => serde_json::Map::new(),
    };
    let given = params::parse_assignments(&request.params)?;
    let document = params::resolve(&action.action_ref, &manifest.parameters, from_file, &given)?;
    let stdin = delivery::encode(&document, manifest.parameter_format);
    let timeout = request
        .timeout
        .or(manifest.timeout_seconds.map(Duration::from_secs))
        .unwrap_or(DEFAULT_TIMEOUT);
    Ok(RunPlan {
        runtime: runtime.clone(),
        stdin,
        policy: request.policy.clone(),
        limits: RunLimits {
            timeout,
            grace: DEFAULT_GRACE,
            max_output: request.max_output,
        },
        action,
    })
}

/// The catalog runtime an action's `runner_type` names.
fn resolve_runtime<'c>(catalog: &'c Catalog, action: &LoadedAction) -> Result<&'c Runtime, Error> {
    let runner_type = &action.action.runner_type;
    catalog
        .resolve(runner_type)
        .ok_or_else(|| Error::UnknownRuntime {
            action: action.action_ref.clone(),
            runner_type: runner_type.clone(),
            known: catalog
                .runtimes()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Runs planned actions on one engine.
#[derive(Debug)]
pub struct Executor {
    engine: Engine,
    catalog: Catalog,
    probe_cache: ProbeCache,
    build: BuildSettings,
    state_dir: PathBuf,
}

impl Executor {
    /// An executor on an engine that answered, with build settings and state folder from the
    /// environment (`PACKBOX_BUILD_CA_BUNDLE`, `PACKBOX_STATE_DIR`, ...).
    pub fn new(engine: Engine, catalog: Catalog) -> Self {
        Executor {
            engine,
            catalog,
            probe_cache: ProbeCache::open(),
            build: BuildSettings::from_env(),
            state_dir: crate::state::state_dir(),
        }
    }

    fn preparer(&self) -> Preparer<'_> {
        Preparer {
            engine: &self.engine,
            catalog: &self.catalog,
            probe_cache: &self.probe_cache,
            build: &self.build,
            state_dir: &self.state_dir,
        }
    }

    /// Runs a plan in a fresh container and removes it. An action that fails is an `Ok` outcome
    /// with status failed; `Err` means the run could not happen. `on_event` hears about
    /// environment builds the run needs.
    pub async fn run(
        &self,
        plan: &RunPlan,
        on_event: impl FnMut(PrepareEvent<'_>),
    ) -> Result<Outcome, Error> {
        let started = Instant::now();
        let preparer = self.preparer();
        let statuses = preparer.verified_versions(&plan.runtime).await;
        let selected = select_version(&plan.action, &plan.runtime, &statuses)?;
        let prepared = preparer
            .image_for(&plan.runtime, selected, &plan.action.pack_dir, on_event)
            .await?;
        let image = &prepared.image;
        let exec_id = uuid::Uuid::new_v4().to_string();
        let action = &plan.action;
        let manifest = &action.action;
        let mut cmd = plan.runtime.interpreter.clone();
        cmd.push(format!("/pack/actions/{}", manifest.entry_point));
        let mut env: Vec<(String, String)> = vec![
            ("ATTUNE_EXEC_ID".into(), exec_id.clone()),
            ("ATTUNE_ACTION".into(), action.action_ref.clone()),
            ("ATTUNE_PACK_REF".into(), action.pack.pack_ref.clone()),
            (
                "ATTUNE_PARAMETER_DELIVERY".into(),
                enum_name(&manifest.parameter_delivery),
            ),
            (
                "ATTUNE_PARAMETER_FORMAT".into(),
                enum_name(&manifest.parameter_format),
            ),
        ];
        env.extend(plan.runtime.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let labels = HashMap::from([
            ("packbox.managed".to_string(), "true".to_string()),
            ("packbox.kind".to_string(), "run".to_string()),
            ("packbox.exec_id".to_string(), exec_id.clone()),
            ("packbox.action".to_string(), action.action_ref.clone()),
            (
                "packbox.owner_pid".to_string(),
                std::process::id().to_string(),
            ),
        ]);
        let spec = plan.policy.container_spec(Workload {
            image: image.clone(),
            cmd,
            env,
            labels,
            pack_dir: Some(action.pack_dir.to_string_lossy().into_owned()),
        });
        let exit = sandbox::run::run_container(
            &self.engine,
            &format!("packbox-{exec_id}"),
            &spec,
            plan.stdin.clone(),
            &plan.limits,
        )
        .await?;

        let (status, error) = if exit.timed_out {
            (
                Status::Timeout,
                Some(format!(
                    "Execution timed out after {} seconds",
                    plan.limits.timeout.as_secs()
                )),
            )
        } else {
            let code = exit.exit_code.unwrap_or(-1);
            let status = result::status_of(code, exit.oom_killed);
            let error = match status {
                Status::Succeeded => None,
                Status::Oom => Some(format!(
                    "Action was killed for exceeding its memory limit ({} bytes)",
                    plan.policy.memory_bytes
                )),
                _ => Some(result::failure_message(&exit.stderr.text, code)),
            };
            (status, error)
        };
        let parsed = (status == Status::Succeeded)
            .then(|| result::parse_result(&exit.stdout.text, manifest.output_format))
            .flatten();
        Ok(Outcome {
            exec_id,
            action: action.action_ref.clone(),
            status,
            exit_code: exit.exit_code,
            result: parsed,
            stdout: exit.stdout.text,
            stderr: exit.stderr.text,
            stdout_truncated: exit.stdout.truncated,
            stderr_truncated: exit.stderr.truncated,
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            runtime: plan.runtime.name.clone(),
            runtime_version: prepared.runtime_version.clone(),
            image: image.clone(),
            sandbox: plan.policy.clone(),
        })
    }

    /// Builds ahead of time the environment of every action of the given packs (all packs of the
    /// folder when none is named), on the version each action would run on. A failed build does
    /// not stop the others: its error is in its report.
    pub async fn build_environments(
        &self,
        packs_dir: &Path,
        packs: &[String],
        mut on_event: impl FnMut(BuildEvent<'_>),
    ) -> Result<Vec<EnvReport>, Error> {
        let actions = pack::load_packs(packs_dir, packs)?;
        let preparer = self.preparer();
        let mut reports = Vec::new();
        for action in actions {
            let runtime = resolve_runtime(&self.catalog, &action)?;
            let statuses = preparer.verified_versions(runtime).await;
            let mut report = EnvReport {
                pack: action.pack.pack_ref.clone(),
                action: action.action_ref.clone(),
                runtime: runtime.name.clone(),
                version: None,
                image: None,
                status: EnvStatus::Failed,
                error: None,
            };
            let selected = match select_version(&action, runtime, &statuses) {
                Ok(selected) => selected,
                Err(e) => {
                    report.error = Some(crate::error::chain(&e));
                    on_event(BuildEvent::Finished { report: &report });
                    reports.push(report);
                    continue;
                }
            };
            on_event(BuildEvent::Started {
                action: &action.action_ref,
            });
            let prepared = preparer
                .image_for(runtime, selected, &action.pack_dir, |event| {
                    if let PrepareEvent::BuildLine { line } = event {
                        on_event(BuildEvent::Line { line });
                    }
                })
                .await;
            match prepared {
                Ok(prepared) => {
                    report.status = if prepared.image == selected.image {
                        EnvStatus::NotNeeded
                    } else if prepared.built {
                        EnvStatus::Built
                    } else {
                        EnvStatus::Present
                    };
                    report.version = Some(prepared.runtime_version);
                    report.image = Some(prepared.image);
                }
                Err(e) => report.error = Some(crate::error::chain(&e)),
            }
            on_event(BuildEvent::Finished { report: &report });
            reports.push(report);
        }
        Ok(reports)
    }

    /// Builds every catalog runtime image that is missing; `on_event` hears about each image.
    pub async fn build_runtime_images(
        &self,
        mut on_event: impl FnMut(ImageEvent<'_>),
    ) -> Result<(), Error> {
        let catalog = &self.catalog;
        for runtime in catalog.runtimes() {
            for version in &runtime.versions {
                on_event(ImageEvent::Checking {
                    image: &version.image,
                });
                let state =
                    runtime_image::ensure(&self.engine, catalog, runtime, version, |line| {
                        on_event(ImageEvent::BuildLine { line })
                    })
                    .await?;
                on_event(ImageEvent::Done {
                    image: &version.image,
                    state,
                });
            }
        }
        Ok(())
    }
}

/// What `build_environments` did for one action.
#[derive(Clone, Debug, Serialize)]
pub struct EnvReport {
    pub pack: String,
    pub action: String,
    pub runtime: String,
    /// The verified runtime version the environment is for.
    pub version: Option<String>,
    pub image: Option<String>,
    pub status: EnvStatus,
    pub error: Option<String>,
}

/// The state of one action's environment after `build_environments`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    /// Built now.
    Built,
    /// Already there: no build.
    Present,
    /// The pack has no manifest for the runtime: it runs on the runtime image.
    NotNeeded,
    /// The build (or version selection) failed; see `error`.
    Failed,
}

/// Progress of [`Executor::build_environments`].
#[derive(Debug)]
pub enum BuildEvent<'a> {
    Started { action: &'a str },
    Line { line: &'a str },
    Finished { report: &'a EnvReport },
}

/// Progress of [`Executor::build_runtime_images`].
#[derive(Debug)]
pub enum ImageEvent<'a> {
    Checking {
        image: &'a str,
    },
    BuildLine {
        line: &'a str,
    },
    Done {
        image: &'a str,
        state: runtime_image::ImageState,
    },
}

/// The verified version an action runs on (see [`prepare::select_verified`]), with the errors
/// named after the action.
fn select_version<'s>(
    action: &LoadedAction,
    runtime: &Runtime,
    statuses: &'s [VersionStatus],
) -> Result<&'s VersionStatus, Error> {
    let constraint = action.action.runtime_version.as_ref();
    match prepare::select_verified(runtime, constraint, statuses) {
        Some(selected) => Ok(selected),
        None if !statuses.iter().any(VersionStatus::is_available) => {
            Err(Error::NoAvailableVersion {
                action: action.action_ref.clone(),
                runtime: runtime.name.clone(),
                reasons: statuses
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: {}",
                            s.version,
                            s.reason.as_deref().unwrap_or("unavailable")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
        None => Err(Error::NoMatchingVersion {
            action: action.action_ref.clone(),
            source: NoMatchingVersion {
                runtime: runtime.name.clone(),
                constraint: constraint.map(|c| c.as_str().to_string()),
                available: statuses
                    .iter()
                    .filter(|s| s.is_available())
                    .map(|s| s.full_version().to_string())
                    .collect(),
            },
        }),
    }
}

fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}
