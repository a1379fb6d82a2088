//! The run pipeline: plan a run from a pack (no engine needed), then execute the plan.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, Runtime, RuntimeVersion};
use crate::engine::Engine;
use crate::error::Error;
use crate::outcome::{Outcome, Status};
use crate::pack::{self, LoadedAction, ParameterDelivery, params};
use crate::runtime_image::{self, ImageError};
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
    /// `KEY=VALUE` parameter assignments.
    pub params: Vec<String>,
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
    pub version: RuntimeVersion,
    pub stdin: Vec<u8>,
    pub policy: SandboxPolicy,
    pub limits: RunLimits,
}

/// Loads and checks everything about a run that needs no engine.
pub fn plan(catalog: &Catalog, request: &RunRequest) -> Result<RunPlan, Error> {
    let action = pack::load_action(&request.packs_dir, &request.action_ref)?;
    let manifest = &action.action;
    let runtime = catalog
        .resolve(&manifest.runner_type)
        .ok_or_else(|| Error::UnknownRuntime {
            action: action.action_ref.clone(),
            runner_type: manifest.runner_type.clone(),
            known: catalog
                .runtimes()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if manifest.parameter_delivery == ParameterDelivery::File {
        return Err(Error::Unsupported {
            action: action.action_ref.clone(),
            what: "parameter_delivery `file`".into(),
        });
    }
    // Version constraints are honoured by the version stage; until then, the default version.
    let version = runtime
        .default_version()
        .ok_or_else(|| Error::UnknownRuntime {
            action: action.action_ref.clone(),
            runner_type: manifest.runner_type.clone(),
            known: format!("{} has no versions", runtime.name),
        })?
        .clone();
    let given = params::parse_assignments(&request.params)?;
    let document = params::resolve(&action.action_ref, &manifest.parameters, &given)?;
    let stdin = delivery::encode(&document, manifest.parameter_format);
    let timeout = request
        .timeout
        .or(manifest.timeout_seconds.map(Duration::from_secs))
        .unwrap_or(DEFAULT_TIMEOUT);
    Ok(RunPlan {
        runtime: runtime.clone(),
        version,
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

/// Runs planned actions on one engine.
#[derive(Clone, Debug)]
pub struct Executor {
    engine: Engine,
}

impl Executor {
    /// An executor on an engine that answered.
    pub fn new(engine: Engine) -> Self {
        Executor { engine }
    }

    /// Runs a plan in a fresh container and removes it. An action that fails is an `Ok` outcome
    /// with status failed; `Err` means the run could not happen.
    pub async fn run(&self, plan: &RunPlan) -> Result<Outcome, Error> {
        let started = Instant::now();
        let image = &plan.version.image;
        if self.engine.image_id(image).await?.is_none() {
            return Err(ImageError::Missing {
                image: image.clone(),
            }
            .into());
        }
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
            runtime_version: plan.version.version.clone(),
            image: image.clone(),
            sandbox: plan.policy.clone(),
        })
    }

    /// Builds every catalog runtime image that is missing; `on_event` hears about each image.
    pub async fn build_runtime_images(
        &self,
        catalog: &Catalog,
        mut on_event: impl FnMut(ImageEvent<'_>),
    ) -> Result<(), Error> {
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

fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}
