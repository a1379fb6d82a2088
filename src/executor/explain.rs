//! `packbox explain`: the decision a run would take, without running the action. The same
//! stages decide (verified versions, the version selector, the environment recipe); explain
//! only records why, and reads the lock an existing environment image holds from a container
//! that is created and removed, never started.

use std::path::Path;

use serde::Serialize;

use super::Executor;
use super::error::Error;
use crate::catalog::Runtime;
use crate::egress::policy::RunGrant;
use crate::engine::{ContainerEngine, EngineError};
use crate::image::env::{EnvRecipe, Manifests, lock_file};
use crate::image::prepare::{self, PrepareError, Preparer};
use crate::image::probe::VersionStatus;
use crate::lifecycle::owner::Owner;
use crate::pack;
use crate::plan::{PlanError, runtime_for};
use crate::sandbox::isolation;
use crate::sandbox::seccomp::Kernel;
use crate::sandbox::{SandboxPolicy, Workload};
use crate::settings::Settings;
use crate::version::{Constraint, Verdict};

/// Bytes of a lock file read back from an environment image.
const MAX_LOCK_BYTES: u64 = 1 << 20;

/// Why a run of an action would run where it would.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The action's reference, `pack.action`.
    pub action: String,
    /// Whether the action may run without `--allow-disabled`.
    pub enabled: bool,
    /// As the action wrote it (`python3`, `bash`, ...).
    pub runner_type: String,
    /// The catalog runtime it names.
    pub runtime: String,
    /// What the runtime's file (in Attune's shape) asks for that packbox does not do, each as
    /// "FILE: `field`: what happens instead".
    pub runtime_not_honoured: Vec<String>,
    /// The action's `runtime_version`, as written; `None` when it states none.
    pub constraint: Option<String>,
    /// How the version is chosen, in words.
    pub rule: String,
    /// Every version of the runtime the catalog lists, and what became of it.
    pub candidates: Vec<CandidateReport>,
    /// The version a run would take; `None` when none fits (see `refusal`).
    pub chosen: Option<String>,
    /// What a run would say when no version fits.
    pub refusal: Option<String>,
    /// The image a run would start from; `None` when no version fits.
    pub environment: Option<EnvironmentReport>,
    /// Fields of the pack and the action that Attune acts on and packbox does not (scheduling,
    /// permissions, retention, notifications), with what Attune would do.
    pub not_honoured: Vec<NotHonoured>,
    /// The Debian packages the pack declares (`meta.system_packages`); a run is refused while
    /// packbox does not install them (see `refusal`).
    pub system_packages: Vec<String>,
    /// The network a run would get: `none`, `egress` (a grant, below) or the operator's own.
    pub network: String,
    /// The egress grant a run would get and who granted each destination; `None` without one.
    pub egress: Option<RunGrant>,
}

/// A field Attune acts on that a run by packbox ignores.
#[derive(Clone, Debug, Serialize)]
pub struct NotHonoured {
    /// `pack.yaml` or the action's file name.
    pub file: String,
    /// The field, as written.
    pub field: String,
    /// What Attune does with it.
    pub upstream: String,
    /// What packbox does instead.
    pub packbox: &'static str,
}

/// One catalog version of the runtime.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateReport {
    /// The version as the catalog declares it (`3.11`).
    pub declared: String,
    /// The runtime image the catalog names for it.
    pub image: String,
    /// The engine's id of that image; `None` when the engine does not have it.
    pub image_id: Option<String>,
    /// The full version probing found in the image.
    pub detected: Option<String>,
    /// Whether the version passed verification (its image is there and the probe confirmed
    /// it), so a run may take it.
    pub verified: bool,
    /// Whether it satisfies the constraint (`None` without a constraint, or when not verified).
    pub verdict: Option<Verdict>,
    /// Whether a run would take this version.
    pub taken: bool,
    /// Why it was taken, rejected or not available, in words.
    pub why: String,
}

/// The image a run would start from.
#[derive(Clone, Debug, Serialize)]
pub struct EnvironmentReport {
    /// Whether the pack has dependencies for this runtime (else the runtime image is used).
    pub needed: bool,
    /// The environment image's tag, else the runtime image.
    pub image: String,
    /// Whether the engine has that image now (else a run builds it first).
    pub exists: bool,
    /// The engine's id of that image, when it exists.
    pub image_id: Option<String>,
    /// The environment key; `None` when no environment is needed.
    pub key: Option<String>,
    /// What the key hashes (recipe format, base image id, runtime, version, Dockerfile, indexes,
    /// dependency hash), so a rebuild can be traced to what changed.
    pub key_parts: Option<serde_json::Value>,
    /// The dependency set (installer, files, requirements and where each was declared, hash).
    pub dependencies: Option<serde_json::Value>,
    /// What the existing image resolved: `pip freeze` or `package-lock.json`.
    pub lock: Option<Lock>,
}

/// A lock file read from an environment image.
#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    /// Its path in the image (`/opt/packbox/pip-freeze.txt`, `.../package-lock.json`).
    pub file: String,
    /// Its text, as the image holds it.
    pub content: String,
}

/// What kept an explanation from being made: the action (the pack, its runtime), the versions'
/// verification, or the engine while looking at the environment image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// The action cannot be loaded (its pack, its runtime).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The runtime's versions could not be verified, or none fits.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The engine failed while looking at the environment image.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Explains `action_ref` of `packs_dir`: loads it (no parameters needed), verifies the runtime's
/// versions as a run would, selects one, and describes the environment.
pub(crate) async fn explain(
    preparer: &Preparer<'_>,
    settings: &Settings,
    owner: &Owner,
    packs_dir: &Path,
    action_ref: &str,
) -> Result<Explanation, ExplainError> {
    let policy = &settings.sandbox;
    let action = pack::load_action(packs_dir, action_ref).map_err(PlanError::from)?;
    if let Some(workflow_file) = &action.action.workflow_file {
        return Err(PlanError::Workflow {
            action: action.action_ref.clone(),
            file: action.action_file.display().to_string(),
            workflow_file: workflow_file.clone(),
        }
        .into());
    }
    // The grant a run would get, or why a run would be refused for its network.
    let (level, chosen_by) = settings
        .isolation
        .level_for(&action.action_ref, action.action.isolation);
    let egress = isolation::apply(&action.action_ref, level, chosen_by, policy)
        .map_err(PlanError::from)
        .and_then(|applied| crate::plan::egress_grant(settings, &action, &applied));
    let (egress, egress_refusal) = match egress {
        Ok(grant) => (grant, None),
        Err(e) => (None, Some(crate::common::error_text::chain(&e))),
    };
    let runtime = runtime_for(preparer.catalog, settings, &action)?;
    let runtime = runtime.as_ref();
    let dependencies = action
        .dependencies(runtime.family())
        .map_err(PlanError::from)?;
    let statuses = preparer.verified_versions(runtime).await?;
    let constraint = action.action.runtime_version.as_ref();
    let selected = prepare::select_version(&action.action_ref, runtime, constraint, &statuses);
    let (chosen, refusal) = match &selected {
        Ok(status) => (Some(*status), egress_refusal),
        Err(e) => (None, Some(crate::common::error_text::chain(e))),
    };
    let refusal = match crate::plan::system_packages(settings, &action) {
        Err(e) => refusal.or_else(|| Some(e.to_string())),
        Ok(()) => refusal,
    };
    let candidates = candidates(runtime, constraint, &statuses, chosen);
    let environment = match chosen {
        Some(status) => Some(
            environment(
                preparer,
                policy,
                owner,
                runtime,
                status,
                dependencies.as_ref(),
            )
            .await?,
        ),
        None => None,
    };
    Ok(Explanation {
        action: action.action_ref.clone(),
        enabled: action.action.enabled,
        runner_type: action.action.runner_type.clone(),
        runtime: runtime.name.clone(),
        runtime_not_honoured: runtime
            .not_honoured
            .iter()
            .map(|note| format!("{}: {note}", runtime.source))
            .collect(),
        constraint: constraint.map(|c| c.as_str().to_string()),
        rule: rule(runtime, constraint),
        candidates,
        chosen: chosen.map(|status| status.version.clone()),
        refusal,
        environment,
        not_honoured: not_honoured(&action),
        system_packages: action.pack.system_packages.clone(),
        network: if egress.is_some() {
            crate::sandbox::policy::EGRESS_NETWORK.to_string()
        } else {
            policy.network.clone()
        },
        egress,
    })
}

/// The pack's and the action's fields that Attune acts on and packbox does not.
fn not_honoured(action: &pack::LoadedAction) -> Vec<NotHonoured> {
    let action_file = action
        .action_file
        .file_name()
        .map(|name| format!("actions/{}", name.to_string_lossy()))
        .unwrap_or_default();
    let pack_fields = action
        .pack
        .upstream_only
        .iter()
        .map(|field| ("pack.yaml".to_string(), field));
    let action_fields = action
        .action
        .upstream_only
        .iter()
        .map(|field| (action_file.clone(), field));
    pack_fields
        .chain(action_fields)
        .map(|(file, field)| NotHonoured {
            file,
            field: field.field.clone(),
            upstream: field.upstream.clone(),
            packbox: pack::PACKBOX_INSTEAD,
        })
        .collect()
}

fn rule(runtime: &Runtime, constraint: Option<&Constraint>) -> String {
    match (constraint, &runtime.default_version) {
        (Some(constraint), _) => {
            format!("the highest verified version whose detected version satisfies `{constraint}`")
        }
        (None, Some(default)) => format!(
            "no constraint: the runtime's default version ({default}) when verified, else the highest verified version"
        ),
        (None, None) => "no constraint: the highest verified version".into(),
    }
}

/// What became of each version, and why.
fn candidates(
    runtime: &Runtime,
    constraint: Option<&Constraint>,
    statuses: &[VersionStatus],
    chosen: Option<&VersionStatus>,
) -> Vec<CandidateReport> {
    statuses
        .iter()
        .map(|status| {
            let taken = chosen.is_some_and(|c| std::ptr::eq(c, status));
            let verdict = constraint
                .filter(|_| status.is_available())
                .map(|c| c.verdict(status.candidate()));
            let detected = status.full_version();
            let why = if !status.is_available() {
                format!(
                    "not available: {}",
                    status.reason.as_deref().unwrap_or("not verified")
                )
            } else {
                match (constraint, verdict, taken, chosen) {
                    (Some(c), Some(Verdict::No), _, _) => {
                        format!("rejected: {detected} does not satisfy `{c}`")
                    }
                    (Some(c), _, true, _) => {
                        format!("taken: the highest verified version that satisfies `{c}`")
                    }
                    (Some(c), _, false, Some(other)) => format!(
                        "rejected: satisfies `{c}`, but {} is higher",
                        other.full_version()
                    ),
                    (None, _, true, _)
                        if runtime.default_version.as_deref() == Some(status.version.as_str()) =>
                    {
                        "taken: the runtime's default version".into()
                    }
                    (None, _, true, _) => {
                        "taken: the highest verified version (the default is not verified)".into()
                    }
                    (None, _, false, _) => match &runtime.default_version {
                        Some(default) => format!("rejected: not the default version ({default})"),
                        None => "rejected: not the highest verified version".into(),
                    },
                    _ => "rejected".into(),
                }
            };
            CandidateReport {
                declared: status.version.clone(),
                image: status.image.clone(),
                image_id: status.image_id.clone(),
                detected: status.detected_version.clone(),
                verified: status.is_available(),
                verdict,
                taken,
                why,
            }
        })
        .collect()
}

/// The environment a run would use on the chosen version: its key and parts, whether it exists,
/// and (when it does) the lock it recorded.
async fn environment(
    preparer: &Preparer<'_>,
    policy: &SandboxPolicy,
    owner: &Owner,
    runtime: &Runtime,
    status: &VersionStatus,
    dependencies: Option<&Manifests>,
) -> Result<EnvironmentReport, EngineError> {
    let engine = preparer.engine.as_ref();
    let (Some(manifests), Some(base_image_id)) = (dependencies, status.image_id.clone()) else {
        return Ok(EnvironmentReport {
            needed: false,
            image: status.image.clone(),
            exists: status.image_id.is_some(),
            image_id: status.image_id.clone(),
            key: None,
            key_parts: None,
            dependencies: None,
            lock: None,
        });
    };
    let recipe = EnvRecipe {
        runtime: runtime.name.clone(),
        version: status.full_version().to_string(),
        base_image_id,
        manifests: manifests.clone(),
        index: preparer.build.index.clone(),
    };
    let tag = recipe.tag();
    let image_id = engine.image_id(&tag).await?;
    let lock = match &image_id {
        Some(_) => read_lock(engine, policy, owner, &tag, manifests).await?,
        None => None,
    };
    Ok(EnvironmentReport {
        needed: true,
        image: tag,
        exists: image_id.is_some(),
        image_id,
        key: Some(recipe.key()),
        key_parts: Some(recipe.key_parts()),
        dependencies: serde_json::to_value(manifests.summary()).ok(),
        lock,
    })
}

/// The lock an environment image recorded, read from a container that is created from it and
/// removed again without ever starting.
async fn read_lock(
    engine: &dyn ContainerEngine,
    policy: &SandboxPolicy,
    owner: &Owner,
    image: &str,
    manifests: &Manifests,
) -> Result<Option<Lock>, EngineError> {
    let file = lock_file(manifests.installer);
    let mut labels = owner.labels();
    labels.insert("packbox.kind".into(), "explain".into());
    // Never started: which kernel would answer its calls does not matter.
    let spec = policy.container_spec(
        Workload {
            image: image.to_string(),
            cmd: vec!["true".into()],
            env: Vec::new(),
            labels,
            pack: None,
        },
        Kernel::Host,
    );
    let name = format!("packbox-explain-{}", uuid::Uuid::new_v4());
    let id = engine.create_container(&name, &spec).await?;
    let read = engine.read_file(&id, file, MAX_LOCK_BYTES).await;
    let removed = engine.remove(&id).await;
    let bytes = read?;
    removed?;
    Ok(bytes.map(|bytes| Lock {
        file: file.to_string(),
        content: String::from_utf8_lossy(&bytes).into_owned(),
    }))
}

impl Executor {
    /// The decision a run of `action_ref` would take, without running it: runtime, constraint,
    /// every candidate version and why it was taken or not, the environment key and its parts,
    /// whether the image exists and the lock it recorded. Versions are verified as for a run.
    pub async fn explain(&self, packs_dir: &Path, action_ref: &str) -> Result<Explanation, Error> {
        explain(
            &self.preparer(&self.shutdown),
            &self.settings,
            &self.owner,
            packs_dir,
            action_ref,
        )
        .await
        .map_err(|e| match e {
            ExplainError::Plan(e) => e.into(),
            ExplainError::Prepare(e) => e.into(),
            ExplainError::Engine(e) => e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::fake::{Call, FakeEngine};
    use crate::image::env::Installer;

    #[tokio::test]
    async fn the_lock_is_read_from_a_container_that_never_starts_and_is_removed() {
        let fake = FakeEngine::new();
        fake.add_image("packbox/env:python-3.11.2-abc", &[], 0);
        fake.add_image_file(
            "packbox/env:python-3.11.2-abc",
            "/opt/packbox/pip-freeze.txt",
            b"six==1.16.0\n",
        );
        let manifests = Manifests {
            installer: Installer::Pip,
            files: Vec::new(),
            requirements: Vec::new(),
            sources: Vec::new(),
            program: None,
        };
        let engine: Arc<FakeEngine> = Arc::clone(&fake);
        let lock = read_lock(
            engine.as_ref(),
            &SandboxPolicy::default(),
            &Owner::current(),
            "packbox/env:python-3.11.2-abc",
            &manifests,
        )
        .await
        .expect("read")
        .expect("a lock");
        assert_eq!(lock.content, "six==1.16.0\n");
        let calls = fake.calls();
        assert!(matches!(calls[0], Call::Create { .. }), "{calls:?}");
        assert!(matches!(calls[1], Call::ReadFile(_, _)), "{calls:?}");
        assert!(matches!(calls[2], Call::Remove(_)), "{calls:?}");
        assert_eq!(
            calls.len(),
            3,
            "never attached, started or waited: {calls:?}"
        );
        assert!(fake.container_ids().is_empty());
        if let Call::Create { spec, .. } = &calls[0] {
            assert_eq!(spec.network_mode, "none");
            assert!(spec.cap_drop_all && spec.read_only_rootfs);
            assert!(spec.binds.is_empty(), "no pack mounted");
        }
    }
}
