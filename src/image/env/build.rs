//! Building an environment image once: concurrent runs that need the same missing environment
//! wait for one build (a lock per key, in this process and across processes), a failed build
//! leaves no tag, and every build's log is kept in the state folder.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::network::{self, UpstreamError};
use super::recipe::{BUILD_USER, EnvRecipe, IndexSettings, RECIPE_FORMAT};
use crate::common::owned::Owned;
use crate::contract::exit::Ending;
use crate::contract::scrub::Redactor;
use crate::egress::EgressError;
use crate::egress::audit::Audit;
use crate::egress::gateway::{Gateway, Slot};
use crate::egress::policy::RunGrant;
use crate::egress::protocol::{Connection, Upstream};
use crate::engine::{CommitSpec, ContainerEngine, EngineError, NotApplied, SharedEngine};
use crate::lifecycle::owner::Owner;
use crate::lifecycle::run::{self, RunError};
use crate::lifecycle::{RunIo, RunLimits};
use crate::pack::dependencies::{Installer, Requirement, SOURCES_REFUSED};
use crate::sandbox::seccomp::Kernel;
use crate::sandbox::{SandboxPolicy, Workload};

/// How long one environment build may take unless the settings say otherwise.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// CA bundles larger than this are refused (the system's whole bundle is about 200 KiB).
const MAX_CA_BUNDLE_BYTES: u64 = 16 << 20;
/// Lines of build output quoted in a failure.
const FAILURE_TAIL_LINES: usize = 15;
/// Characters kept of each quoted line.
const FAILURE_LINE_CHARS: usize = 1000;
/// Bytes of build output kept in a build's log file; the rest is dropped, and the log says so.
pub const MAX_BUILD_LOG_BYTES: u64 = 8 << 20;
/// Memory (and memory plus swap: no swap) of each build step unless the settings say otherwise.
pub const DEFAULT_BUILD_MEMORY: u64 = 1536 << 20;

/// How environment builds reach their package indexes.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    /// A PEM bundle that pip, npm and curl trust during builds (`PACKBOX_BUILD_CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    /// Index overrides (`PACKBOX_PIP_INDEX_URL`, `PACKBOX_NPM_REGISTRY`).
    pub index: IndexSettings,
    /// The standard proxy variables of packbox's environment: the operator's proxy, which the
    /// egress proxy chains a build's connections to (see [`network::upstream_proxy`]).
    pub proxies: BTreeMap<String, String>,
    /// Whether packs may choose package sources in their requirements (`--index-url`, URLs,
    /// ...): the operator's decision (`build.allow_pack_sources`), off by default.
    pub allow_pack_sources: bool,
    /// Memory limit of each build step in bytes (default [`DEFAULT_BUILD_MEMORY`]).
    pub memory_bytes: Option<u64>,
    /// How long one environment build may take.
    pub timeout: Duration,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            ca_bundle: None,
            index: IndexSettings::default(),
            proxies: BTreeMap::new(),
            timeout: DEFAULT_BUILD_TIMEOUT,
            allow_pack_sources: false,
            memory_bytes: None,
        }
    }
}

/// An environment that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The CA bundle builds should trust cannot be read or holds no certificate.
    #[error("PACKBOX_BUILD_CA_BUNDLE {path}: {problem}")]
    CaBundle {
        /// The bundle as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A build step failed (a package that does not install, an index that cannot be reached).
    #[error("building environment {tag} failed at `{step}`: {message}\n{tail}\n(full log: {log})")]
    BuildFailed {
        /// The environment image's tag.
        tag: String,
        /// The Dockerfile step that failed, shortened (`step 3: RUN pip install ...`).
        step: String,
        /// The engine's error, reduced to the step's exit code when it says one.
        message: String,
        /// The last lines of the build's output, to show without opening the log.
        tail: String,
        /// The build's full log in the state folder.
        log: PathBuf,
    },
    /// A requirement has no pre-built wheel and had to be compiled; builds have no compiler.
    #[error(
        "building environment {tag} failed: `{package}` has no pre-built wheel for this Python version and has to be compiled, but environment builds have no compiler; pin a version of `{package}` that publishes a wheel for it, or put a wheel of it into the pack\n{tail}\n(full log: {log})"
    )]
    NeedsCompiler {
        /// The environment image's tag.
        tag: String,
        /// The requirement that needed compiling, as pip named it.
        package: String,
        /// The last lines of the build's output, to show without opening the log.
        tail: String,
        /// The build's full log in the state folder.
        log: PathBuf,
    },
    /// A build step was killed: with a memory limit on every step, most likely by it.
    #[error(
        "building environment {tag} failed: a build step was killed, most likely for using more than the build memory limit of {} MiB (the setting build.memory)\n{tail}\n(full log: {log})",
        .memory_bytes >> 20
    )]
    BuildKilled {
        /// The environment image's tag.
        tag: String,
        /// The memory limit each build step had.
        memory_bytes: u64,
        /// The last lines of the build's output, to show without opening the log.
        tail: String,
        /// The build's full log in the state folder.
        log: PathBuf,
    },
    /// The pack's requirements choose package sources and the operator has not allowed it.
    #[error("{}", refused_sources_message(.sources))]
    PackSources {
        /// The requirement lines that choose a source, each with its file and line.
        sources: Vec<Requirement>,
    },
    /// The build ran past its time limit and was stopped; it left no tag.
    #[error(
        "environment build {tag} did not finish within {seconds} s (build.timeout_seconds, --build-timeout; full log: {log})"
    )]
    BuildTimedOut {
        /// The environment image's tag.
        tag: String,
        /// The time limit.
        seconds: u64,
        /// The build's full log in the state folder.
        log: PathBuf,
    },
    /// The state folder, where build locks and logs live, cannot be written.
    #[error("state folder {path}")]
    State {
        /// The file or folder that could not be made or written.
        path: PathBuf,
        /// What the file system answered.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed outside the build itself (looking up or removing an image, ...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The build container could not be run or removed (boxed: a run's error is large).
    #[error(transparent)]
    Run(Box<RunError>),
    /// The engine dropped limits of the build's sandbox (rootless Podman on cgroup v1). The
    /// operator's consent to a weaker action sandbox does not reach builds: the pack's code that
    /// runs while its environment is built runs only inside the build's limits.
    #[error(
        "cannot build environment {tag} on {engine}: it did not apply {settings}, and a build runs the pack's code only inside its limits ({why}); build it on rootful Podman or Docker and bring it here with `packbox images copy --to`"
    )]
    BuildLimitsNotApplied {
        /// The environment image's tag.
        tag: String,
        /// The engine, as its identity reads.
        engine: String,
        /// Each dropped limit, as the build's settings name it, with what was applied instead.
        settings: String,
        /// Why, as far as packbox knows.
        why: String,
    },
    /// The operator's proxy setting cannot carry a build.
    #[error("the proxy packbox's environment names for builds cannot be used")]
    Proxy {
        /// The variable and what is wrong with it (never its value: it may hold a password).
        #[source]
        source: UpstreamError,
    },
    /// The build's network (packbox's egress proxy and a per-build network) could not be made;
    /// a build never falls back to the engine's open network.
    #[error(
        "environment build {tag} could not get its network (packbox's egress proxy, granting the package indexes only)"
    )]
    Network {
        /// The environment image's tag.
        tag: String,
        /// What failed.
        #[source]
        source: EgressError,
    },
    /// The engine cannot give a build a network whose only way out is packbox's egress proxy
    /// (Podman gives the host an address on every network it makes): refused before the pack's
    /// code runs, never built on an open network instead.
    #[error(
        "cannot build environment {tag} on {engine}: {why}, so the pack's build-time code could reach more than the package indexes; build it on Docker and bring it here with `packbox images copy --to`"
    )]
    NetworkNotIsolated {
        /// The environment image's tag.
        tag: String,
        /// The engine, as its identity reads.
        engine: String,
        /// What the engine does that packbox cannot work around.
        why: String,
    },
    /// The build was cancelled; its layers and its locks are gone.
    #[error("building environment {tag} was cancelled")]
    Cancelled {
        /// The environment image's tag.
        tag: String,
    },
}

impl EnvError {
    /// The next step for the user, where there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            EnvError::Network { source, .. } => source.hint(),
            EnvError::Proxy { .. } => Some(
                "set HTTPS_PROXY to an http:// proxy (http://user:password@host:port), or leave it unset",
            ),
            _ => None,
        }
    }
}

impl From<RunError> for EnvError {
    fn from(error: RunError) -> Self {
        EnvError::Run(Box::new(error))
    }
}

fn refused_sources_message(sources: &[Requirement]) -> String {
    let lines: Vec<String> = sources
        .iter()
        .map(|line| format!("{} `{}`", line.source, line.text))
        .collect();
    format!("{}: {SOURCES_REFUSED}", lines.join(", "))
}

/// A ready environment image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvImage {
    /// Its tag (`packbox/env:RUNTIME-VERSION-KEY`), which runs and `envs list` find it by.
    pub tag: String,
    /// The engine's image id.
    pub id: String,
    /// Whether this call built it (false: it was there, or another run built it meanwhile).
    pub built: bool,
}

/// Where a build's network comes from.
#[derive(Clone, Copy, Debug)]
pub enum BuildNetwork<'a> {
    /// A per-build network whose only way out is the gateway's egress proxy, which grants the
    /// package indexes alone.
    Egress(&'a Arc<Gateway>),
    /// No network at all (unit tests on the fake engine, which runs no proxy).
    #[cfg(test)]
    Offline,
}

/// What a build may reach: its grant (the package indexes), the index settings that could not
/// be granted, and the operator's proxy its connections go through.
struct BuildAccess {
    grant: RunGrant,
    refused: Vec<(String, String)>,
    upstream: Option<Upstream>,
}

impl BuildAccess {
    /// The lines that open the build's log: what the build may reach, and how.
    fn log_lines(&self) -> Vec<String> {
        let granted: Vec<String> = self
            .grant
            .destinations
            .iter()
            .map(|g| format!("{} ({})", g.destination, g.granted_by))
            .collect();
        let mut lines = vec![format!(
            "network: packbox's egress proxy only, granting {}{}\n",
            if granted.is_empty() {
                "nothing".to_string()
            } else {
                granted.join(", ")
            },
            match &self.upstream {
                Some(via) => format!(", through the operator's proxy {}:{}", via.host, via.port),
                None => String::new(),
            }
        )];
        for (setting, why) in &self.refused {
            lines.push(format!("network: {setting} not granted: {why}\n"));
        }
        lines
    }
}

/// The audit of a build's connections, as lines of its log: one per connection attempt (the
/// first [`crate::egress::audit::KEPT_CONNECTIONS`]), then the totals.
fn audit_lines(audit: &Audit, incomplete: Option<&str>) -> Vec<String> {
    let mut lines: Vec<String> = audit.connections.iter().map(audit_line).collect();
    lines.push(format!(
        "egress audit: {} connection attempts, {} refused, {} bytes sent, {} received{}{}\n",
        audit.attempts,
        audit.refused,
        audit.bytes_sent,
        audit.bytes_received,
        if audit.truncated {
            " (only the first ones listed)"
        } else {
            ""
        },
        incomplete
            .map(|why| format!(" (may be incomplete: {why})"))
            .unwrap_or_default()
    ));
    lines
}

fn audit_line(connection: &Connection) -> String {
    let kind = serde_json::to_value(connection.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let at = format!("{}:{} ({kind})", connection.host, connection.port);
    if !connection.allowed {
        return format!(
            "egress: refused {at}: {}\n",
            connection.refusal.as_deref().unwrap_or("refused")
        );
    }
    let address = connection
        .address
        .map(|a| format!(" to {a}"))
        .unwrap_or_default();
    match &connection.error {
        Some(error) => format!("egress: failed {at}{address}: {error}\n"),
        None => format!(
            "egress: allowed {at}{address}, {} bytes sent, {} received, {} ms\n",
            connection.bytes_sent, connection.bytes_received, connection.duration_ms
        ),
    }
}

/// Locks per key for builds within this process.
static BUILD_LOCKS: LazyLock<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Makes sure the environment image of a recipe exists. A present image costs one engine lookup;
/// otherwise the image is built once, whoever else asks for it meanwhile.
pub async fn ensure(
    engine: &SharedEngine,
    recipe: &EnvRecipe,
    settings: &BuildSettings,
    network: BuildNetwork<'_>,
    state_dir: &Path,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<EnvImage, EnvError> {
    if !settings.allow_pack_sources && !recipe.manifests.sources.is_empty() {
        return Err(EnvError::PackSources {
            sources: recipe.manifests.sources.clone(),
        });
    }

    let tag = recipe.tag();
    let key = recipe.key();
    let owned = Owned::in_state_dir(state_dir);
    if let Some(id) = own_image(engine.as_ref(), &owned, &tag).await? {
        tracing::debug!(key = %key, tag = %tag, "environment image present");
        return Ok(EnvImage {
            tag,
            id,
            built: false,
        });
    }
    tracing::debug!(
        key = %key,
        tag = %tag,
        base_image_id = %recipe.base_image_id,
        dependency_hash = %recipe.manifests.dependency_hash(),
        "environment image missing: building it"
    );
    let in_process = {
        let mut locks = BUILD_LOCKS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(key.clone()).or_default().clone()
    };
    let _in_process = tokio::select! {
        guard = in_process.lock() => guard,
        () = cancel.cancelled() => return Err(EnvError::Cancelled { tag }),
    };
    let lock_path = state_dir.join("locks").join(format!("{key}.lock"));
    let Some(_across_processes) = lock_file(&lock_path, cancel).await? else {
        return Err(EnvError::Cancelled { tag });
    };
    // Whoever held the lock before may have built it.
    if let Some(id) = own_image(engine.as_ref(), &owned, &tag).await? {
        return Ok(EnvImage {
            tag,
            id,
            built: false,
        });
    }

    // Only now: a proxy setting meant for other programs must not stop runs whose environment
    // exists.
    let upstream =
        network::upstream_proxy(&settings.proxies).map_err(|source| EnvError::Proxy { source })?;
    let ca = match &settings.ca_bundle {
        Some(path) => Some(read_ca_bundle(path)?),
        None => None,
    };
    let staging = recipe
        .staging_tar(ca.as_deref())
        .map_err(|source| EnvError::State {
            path: state_dir.to_path_buf(),
            source,
        })?;
    let log_path = state_dir.join("builds").join(format!("{key}.log"));
    let mut log = BuildLog::create(&log_path)?;
    let credentials = Redactor::new(credential_values(settings).iter()).unwrap_or_default();
    // Said at once, before the installer prints anything: the build has begun (the CLI announces
    // it on the first line, and a build may time out or be cancelled before the installer's).
    let begun = format!(
        "installing the dependencies of {tag} in a build container (uid 65534, no capabilities)\n"
    );
    log.line(&begun);
    on_line(&begun);
    let mut granted = network::build_grant(
        recipe.manifests.installer,
        &recipe.index,
        if settings.allow_pack_sources {
            &recipe.manifests.sources
        } else {
            &[]
        },
    );
    if !recipe.fetches() {
        granted.grant.destinations.clear();
    }
    let access = BuildAccess {
        grant: granted.grant,
        refused: granted.refused,
        upstream,
    };
    for line in access.log_lines() {
        let line = credentials.text(line);
        log.line(&line);
        on_line(&line);
    }
    let mut lines = LineSplitter::default();
    let mut on_output = |bytes: &[u8]| {
        for line in lines.push(bytes) {
            let line = credentials.text(line);
            log.line(&line);
            on_line(&line);
        }
    };
    let (installed, audit) = install(
        engine,
        recipe,
        settings,
        &key,
        staging,
        (network, &access),
        cancel,
        &mut on_output,
    )
    .await;
    for line in lines.finish() {
        let line = credentials.text(line);
        log.line(&line);
        on_line(&line);
    }
    // What a failure quotes is the installer's last words, not the audit after them.
    let tail = log.tail();
    if let Some((audit, incomplete)) = audit {
        for line in audit_lines(&audit, incomplete.as_deref()) {
            let line = credentials.text(line);
            log.line(&line);
            on_line(&line);
        }
    }
    match installed? {
        Installed::Image(id) => {
            owned
                .add_tagged_image(&tag, &id)
                .map_err(|source| EnvError::State {
                    path: state_dir.join(crate::common::owned::FILE_NAME),
                    source,
                })?;
            Ok(EnvImage {
                tag,
                id,
                built: true,
            })
        }
        Installed::Cancelled => {
            log.line("cancelled\n");
            Err(EnvError::Cancelled { tag })
        }
        Installed::TimedOut => Err(EnvError::BuildTimedOut {
            tag,
            seconds: settings.timeout.as_secs(),
            log: log_path,
        }),
        Installed::Failed { code, oom } => {
            log.line(&format!("error: the install exited with code {code:?}\n"));
            if oom || log.killed || code == Some(137) {
                return Err(EnvError::BuildKilled {
                    tag,
                    memory_bytes: settings.memory_bytes.unwrap_or(DEFAULT_BUILD_MEMORY),
                    tail,
                    log: log_path,
                });
            }
            if log.compiler_missing {
                return Err(EnvError::NeedsCompiler {
                    tag,
                    package: log
                        .failed_package
                        .clone()
                        .unwrap_or_else(|| "a requirement".into()),
                    tail,
                    log: log_path,
                });
            }
            Err(EnvError::BuildFailed {
                tag,
                step: match recipe.manifests.installer {
                    Installer::Pip => "pip install".into(),
                    Installer::Npm => "npm install".into(),
                    Installer::Go => match &recipe.manifests.program {
                        Some(program) => {
                            format!("go build {} (pack {})", program.entry, program.pack)
                        }
                        None => "go build".into(),
                    },
                },
                message: match code {
                    Some(code) => format!("the install exited with code {code}"),
                    None => "the install ended without an exit code".into(),
                },
                tail,
                log: log_path,
            })
        }
    }
}

/// The id of the image `tag` names, when it is one packbox built (see [`Owned`]). An image
/// someone else put under the tag (forged labels and all) is not used: the environment is built
/// again, which moves the tag to packbox's own image.
async fn own_image(
    engine: &dyn ContainerEngine,
    owned: &Owned,
    tag: &str,
) -> Result<Option<String>, EngineError> {
    let named = engine.image_id(tag).await?;
    if let Some(id) = named.as_ref().filter(|id| owned.has_image(id)) {
        return Ok(Some(id.clone()));
    }
    // The tag names another image (a packbox with another state folder built the environment
    // again, or someone planted it): an image this state folder recorded under the tag is still
    // its own, and runs start from its id.
    for id in owned.images_tagged(tag) {
        if engine.image_id(&id).await?.as_deref() == Some(id.as_str()) {
            return Ok(Some(id));
        }
    }
    if let Some(id) = named {
        tracing::warn!(
            tag = %tag,
            image = %id,
            "the image under this tag was not built by packbox (not in the state folder's record): building the environment again"
        );
    }
    Ok(None)
}

/// How an install in the build container ended.
enum Installed {
    /// It succeeded and its container was committed as this image.
    Image(String),
    /// It exited with this code (none: killed), or was killed for memory.
    Failed { code: Option<i64>, oom: bool },
    /// It ran past the build's time limit and was stopped.
    TimedOut,
    /// packbox was asked to stop.
    Cancelled,
}

/// Processes and threads a build may have at once (a fork bomb in a pack's install script
/// stops there).
pub const BUILD_PIDS: u32 = 512;
/// CPUs a build may use.
const BUILD_CPUS: f64 = 1.0;
/// The build's private `/tmp` (pip builds local projects there; npm keeps its cache there).
const BUILD_TMP_BYTES: u64 = 1 << 30;
/// Open files a build may have.
const BUILD_NOFILE: u32 = 4096;
/// Grace between SIGTERM and SIGKILL when a build is stopped.
const BUILD_GRACE: Duration = Duration::from_secs(5);
/// Bytes of build output kept in memory (the log file keeps more).
const BUILD_OUTPUT_KEPT: usize = 1 << 20;

/// The sandbox a build runs in: the action's (non-root, no capabilities, no-new-privileges,
/// packbox's syscall profile), with the limits of a build and a writable root, which is what
/// gets committed. The pack's own code runs here: npm's scripts, a wheel's `.pth` file, a
/// local project's build backend.
pub fn build_policy(settings: &BuildSettings) -> SandboxPolicy {
    SandboxPolicy {
        // A per-build network whose only way out is packbox's egress proxy (`install` puts the
        // container on it): never the engine's bridge. Its sockets are the profile's for a
        // run with a grant (IP sockets, which a run without network is refused).
        network: crate::sandbox::policy::EGRESS_NETWORK.into(),
        read_only_root: false,
        tmpfs_tmp_bytes: BUILD_TMP_BYTES,
        memory_bytes: settings.memory_bytes.unwrap_or(DEFAULT_BUILD_MEMORY),
        pids_limit: BUILD_PIDS,
        cpus: BUILD_CPUS,
        nofile: BUILD_NOFILE,
        ..SandboxPolicy::default()
    }
}

/// Why the engine cannot isolate a build's network, when it cannot. Podman (4.3, netavark)
/// gives the host the gateway address of every network it makes, internal ones too, and
/// ignores the bridge option that keeps it off (measured: a container on an internal Podman
/// network reaches a listener on the host's 0.0.0.0 through that address).
fn network_not_isolated(engine: &SharedEngine) -> Option<String> {
    engine.identity().is_podman().then(|| {
        "Podman gives the host an address on every network it makes, internal ones too".to_string()
    })
}

/// The dropped limits of a build container, named as the build's settings name them.
fn build_limits_named(settings: &[NotApplied]) -> String {
    settings
        .iter()
        .map(|dropped| {
            let name = match dropped.setting {
                "sandbox.memory" => "build.memory",
                "sandbox.pids" => "the build's process limit",
                "sandbox.cpus" => "the build's CPU limit",
                "sandbox.nofile" => "the build's open-file limit",
                other => other,
            };
            format!(
                "{name} (asked {}, applied {})",
                dropped.asked, dropped.applied
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an engine drops a build's limits, as far as packbox knows.
fn why_build_limits_dropped(engine: &SharedEngine) -> String {
    let identity = engine.identity();
    if identity.is_rootless_podman() {
        "rootless Podman applies no cgroup limit on a cgroup v1 host".into()
    } else {
        "the engine accepted the request but reports these limits otherwise".into()
    }
}

/// The installer's environment, one `NAME=value` a line: it travels on the build container's
/// stdin, never in its configuration (which the image would inherit) or its command. The proxy
/// variables name packbox's egress proxy on the build's network; the operator's own proxy (and
/// its credentials) is the egress proxy's business, never the installer's.
fn installer_env(settings: &BuildSettings, proxy_env: &[(String, String)]) -> Vec<u8> {
    let mut lines = String::new();
    for (name, value) in proxy_env {
        lines.push_str(&format!("{name}={value}\n"));
    }
    if let Some(url) = &settings.index.pip_index_url {
        lines.push_str(&format!("PIP_INDEX_URL={url}\n"));
    }
    if let Some(url) = &settings.index.npm_registry {
        lines.push_str(&format!("NPM_CONFIG_REGISTRY={url}\n"));
    }
    // A value with a line break would break the next one: none of these hold one.
    lines.into_bytes()
}

/// What may hold a credential among the build's settings (index URLs and proxies, and the
/// password part of each): scrubbed from the build's log and errors.
fn credential_values(settings: &BuildSettings) -> Vec<serde_json::Value> {
    let mut values = Vec::new();
    let urls = settings
        .proxies
        .values()
        .chain(settings.index.pip_index_url.iter())
        .chain(settings.index.npm_registry.iter());
    for url in urls {
        if let Some((_, rest)) = url.split_once("://")
            && let Some((userinfo, _)) = rest.rsplit_once('@')
        {
            values.push(serde_json::Value::String(userinfo.to_string()));
            if let Some((_, password)) = userinfo.split_once(':') {
                values.push(serde_json::Value::String(password.to_string()));
            }
        }
        if let Some((_, query)) = url.split_once('?') {
            values.push(serde_json::Value::String(query.to_string()));
        }
    }
    values
}

/// The audit of a build's connections, and why it may be incomplete.
type BuildAudit = (Audit, Option<String>);

/// Runs the install on the build's own network, granted what `access` says: a per-build network
/// from the gateway (its proxy granted the build's destinations before the container starts,
/// revoked once it is over, which returns the audit), given back once the container is gone.
/// Any failure to make that network fails the build: it never runs on another network.
#[allow(clippy::too_many_arguments)]
async fn install(
    engine: &SharedEngine,
    recipe: &EnvRecipe,
    settings: &BuildSettings,
    key: &str,
    staging: Vec<u8>,
    (network, access): (BuildNetwork<'_>, &BuildAccess),
    cancel: &CancellationToken,
    on_output: &mut (dyn FnMut(&[u8]) + Send),
) -> (Result<Installed, EnvError>, Option<BuildAudit>) {
    let name = format!("packbox-envbuild-{}", uuid::Uuid::new_v4());
    // One variant outside unit tests.
    #[allow(clippy::infallible_destructuring_match)]
    let gateway = match network {
        BuildNetwork::Egress(gateway) => gateway,
        #[cfg(test)]
        BuildNetwork::Offline => {
            let installed = install_in(
                engine, recipe, settings, key, staging, &name, None, cancel, on_output,
            )
            .await;
            return (installed, None);
        }
    };
    if let Some(why) = network_not_isolated(engine) {
        let refused = EnvError::NetworkNotIsolated {
            tag: recipe.tag(),
            engine: engine.identity().to_string(),
            why,
        };
        return (Err(refused), None);
    }
    let network_failed = |source| EnvError::Network {
        tag: recipe.tag(),
        source,
    };
    let slot = tokio::select! {
        slot = gateway.slot() => match slot {
            Ok(slot) => slot,
            Err(e) => return (Err(network_failed(e)), None),
        },
        () = cancel.cancelled() => return (Ok(Installed::Cancelled), None),
    };
    if let Err(e) = gateway
        .grant_through(&slot, &name, &access.grant, access.upstream.clone())
        .await
    {
        let _ = gateway.revoke(&slot, &name).await;
        gateway.discard(slot).await;
        return (Err(network_failed(e)), None);
    }
    let installed = install_in(
        engine,
        recipe,
        settings,
        key,
        staging,
        &name,
        Some(&slot),
        cancel,
        on_output,
    )
    .await;
    let audit = gateway.revoke(&slot, &name).await;
    match &installed {
        Ok(_) => gateway.release(slot).await,
        Err(_) => gateway.discard(slot).await,
    }
    (installed, Some(audit))
}

/// Runs the install in a fresh build container (the staging archive unpacked first, the
/// installer's environment on stdin) on `slot`'s network (none without), and commits it as the
/// environment image when it succeeds. The container is removed on every path; a failed,
/// stopped or cancelled build commits nothing, so it leaves no image and no layer.
#[allow(clippy::too_many_arguments)]
async fn install_in(
    engine: &SharedEngine,
    recipe: &EnvRecipe,
    settings: &BuildSettings,
    key: &str,
    staging: Vec<u8>,
    name: &str,
    slot: Option<&Slot>,
    cancel: &CancellationToken,
    on_output: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Installed, EnvError> {
    let owner = Owner::current();
    let mut labels = owner.labels();
    labels.insert("packbox.kind".into(), "env-build".into());
    labels.insert("packbox.key".into(), key.to_string());
    let mut spec = build_policy(settings).container_spec(
        Workload {
            image: recipe.base_image_id.clone(),
            cmd: vec!["/bin/sh".into(), "-c".into(), recipe.install_script()],
            env: Vec::new(),
            labels,
            pack: None,
        },
        Kernel::Host,
    );
    spec.working_dir = "/".into();
    // On the build's network, without the proxy variables in its configuration (the image
    // would keep them): they reach the installer on stdin.
    let proxy_env = match slot {
        Some(slot) => {
            slot.place(&mut spec);
            slot.proxy_env()
        }
        None => {
            spec.network_mode = "none".into();
            Vec::new()
        }
    };
    let limits = RunLimits {
        timeout: settings.timeout,
        grace: BUILD_GRACE,
        max_output: BUILD_OUTPUT_KEPT,
    };
    if cancel.is_cancelled() {
        return Ok(Installed::Cancelled);
    }
    // Not raced against the cancel: a create dropped half-way leaves a container the engine
    // makes after packbox has stopped waiting (and a process that exits right after a cancel
    // never runs the background removal of one dropped later). The start takes a moment; a
    // cancel that came meanwhile is seen by the run's first step, which stops and removes it.
    let started = match run::start_with_files(engine, name, &spec, Some(("/", staging))).await {
        Err(RunError::SandboxNotApplied {
            engine: identity,
            settings,
            ..
        }) => {
            return Err(EnvError::BuildLimitsNotApplied {
                tag: recipe.tag(),
                engine: identity,
                settings: build_limits_named(&settings),
                why: why_build_limits_dropped(engine),
            });
        }
        started => started?,
    };
    let io = RunIo {
        stdin: installer_env(settings, &proxy_env),
        limits: &limits,
        cancel,
        on_output: &mut |_, bytes: &[u8]| on_output(bytes),
        artifacts: None,
    };
    let (exit, exited) = run::finish_then_release(engine, started, io).await?;
    let ended = match exit.ending {
        Ending::TimedOut => Some(Installed::TimedOut),
        Ending::Cancelled => Some(Installed::Cancelled),
        Ending::Removed => Some(Installed::Failed {
            code: exit.exit_code,
            oom: false,
        }),
        Ending::Exited if exit.exit_code != Some(0) || exit.oom_killed => Some(Installed::Failed {
            code: exit.exit_code,
            oom: exit.oom_killed,
        }),
        Ending::Exited => None,
    };
    if let Some(ended) = ended {
        exited.remove().await;
        return Ok(ended);
    }
    // The engine keeps the build container's labels in the image beside these, and every
    // container made from the image inherits them: the build's owner labels would name each
    // such container a leftover of a packbox that is gone, for any sweep to remove. Blank
    // values name no owner.
    let mut labels = image_labels(recipe, key);
    for name in spec.labels.keys() {
        labels.entry(name.clone()).or_default();
    }
    let commit = CommitSpec {
        tag: recipe.tag(),
        env: recipe.image_env(),
        cmd: vec!["/bin/sh".into()],
        working_dir: "/pack".into(),
        user: format!("{}:{}", BUILD_USER.0, BUILD_USER.1),
        labels,
    };
    let committed = engine.commit(exited.id(), &commit).await;
    exited.remove().await;
    Ok(Installed::Image(committed?))
}

/// Splits output chunks into lines (a line may span chunks); bounded: a line longer than
/// [`FAILURE_LINE_CHARS`] times 4 is cut.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        if self.pending.len() > FAILURE_LINE_CHARS * 4 {
            let line: Vec<u8> = std::mem::take(&mut self.pending);
            lines.push(format!("{}\n", String::from_utf8_lossy(&line)));
        }
        lines
    }

    fn finish(&mut self) -> Vec<String> {
        match self.pending.is_empty() {
            true => Vec::new(),
            false => vec![format!(
                "{}\n",
                String::from_utf8_lossy(&std::mem::take(&mut self.pending))
            )],
        }
    }
}

fn image_labels(recipe: &EnvRecipe, key: &str) -> HashMap<String, String> {
    HashMap::from([
        ("packbox.managed".to_string(), "true".to_string()),
        ("packbox.kind".to_string(), "env".to_string()),
        ("packbox.runtime".to_string(), recipe.runtime.clone()),
        ("packbox.version".to_string(), recipe.version.clone()),
        (
            "packbox.dependency_hash".to_string(),
            recipe.manifests.dependency_hash(),
        ),
        ("packbox.key".to_string(), key.to_string()),
        (
            "packbox.recipe_format".to_string(),
            RECIPE_FORMAT.to_string(),
        ),
        (
            "packbox.created".to_string(),
            humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        ),
    ])
}

/// Reads a CA bundle and checks it holds at least one PEM certificate.
pub(crate) fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, EnvError> {
    let bytes =
        crate::common::input::read_regular_file(path, MAX_CA_BUNDLE_BYTES).map_err(|e| {
            EnvError::CaBundle {
                path: path.to_path_buf(),
                problem: format!("cannot read: {e}"),
            }
        })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(EnvError::CaBundle {
            path: path.to_path_buf(),
            problem: "expected a PEM bundle with at least one `-----BEGIN CERTIFICATE-----`".into(),
        });
    }
    Ok(bytes)
}

/// How often a lock held by another process is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// An exclusive lock on a lock file, held until dropped; the file is removed then, so no lock
/// files stay behind.
///
/// Removing a lock file others may be waiting on is safe only with a check: a waiter that
/// opened the file before it was removed gets the lock on a file no longer in the folder, while
/// a newcomer creates and locks a new one. So whoever gets a lock checks that the path still
/// names the file it locked, and starts again when not; the holder removes the file while it
/// still holds the lock. Then at most one process holds the lock on the file the path names.
#[derive(Debug)]
struct FileLock {
    path: PathBuf,
    // Closing the file releases the lock: after the removal in `drop`.
    _file: std::fs::File,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing lock file {}: {e}", self.path.display());
        }
    }
}

/// Takes the lock of `path`, waiting for another process that holds it; held until the
/// returned guard is dropped. `None` when cancelled while waiting.
async fn lock_file(path: &Path, cancel: &CancellationToken) -> Result<Option<FileLock>, EnvError> {
    let state_error = |source| EnvError::State {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(state_error)?;
    }
    loop {
        if let Some(lock) = try_lock_current(path).map_err(state_error)? {
            return Ok(Some(lock));
        }
        tokio::select! {
            () = tokio::time::sleep(LOCK_RETRY) => {}
            () = cancel.cancelled() => return Ok(None),
        }
    }
}

/// One try at the lock of the file `path` names: `None` while another holds it.
fn try_lock_current(path: &Path) -> std::io::Result<Option<FileLock>> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let locked = file.metadata()?;
        match std::fs::metadata(path) {
            Ok(named) if named.dev() == locked.dev() && named.ino() == locked.ino() => {
                return Ok(Some(FileLock {
                    path: path.to_path_buf(),
                    _file: file,
                }));
            }
            // Removed (or replaced) by the holder before us: try the file it names now.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The log of one build on disk (owner-only, capped at [`MAX_BUILD_LOG_BYTES`]: it may quote
/// the pack's manifests), plus what a failure message quotes.
struct BuildLog {
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// Bytes written to the file so far.
    written: u64,
    tail: VecDeque<String>,
    /// The package pip last failed to build a wheel for.
    failed_package: Option<String>,
    /// Whether the output says a compiler (or the headers it needs) is missing.
    compiler_missing: bool,
    /// Whether the output says a process of the build was killed (SIGKILL).
    killed: bool,
}

impl BuildLog {
    fn create(path: &Path) -> Result<BuildLog, EnvError> {
        let state_error = |source| EnvError::State {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(state_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(state_error)?;
        // An older log may have been created with a wider mode.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(state_error)?;
        Ok(BuildLog {
            file: Some(std::io::BufWriter::new(file)),
            written: 0,
            tail: VecDeque::new(),
            failed_package: None,
            compiler_missing: false,
            killed: false,
        })
    }

    fn line(&mut self, text: &str) {
        if let Some(file) = &mut self.file {
            let room = MAX_BUILD_LOG_BYTES.saturating_sub(self.written);
            let kept = &text.as_bytes()[..text.len().min(room as usize)];
            let mut written = file.write_all(kept);
            if kept.len() < text.len() {
                written = written.and_then(|()| {
                    file.write_all(
                        format!("\n[log truncated at {MAX_BUILD_LOG_BYTES} bytes]\n").as_bytes(),
                    )
                });
            }
            if written.and_then(|()| file.flush()).is_err() || kept.len() < text.len() {
                // A full disk must not fail the build; the log is a convenience.
                self.file = None;
            }
            self.written += kept.len() as u64;
        }
        for line in text.lines() {
            let line = strip_ansi(line);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            self.note_compile_failure(line);
            if self.tail.len() == FAILURE_TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail
                .push_back(line.chars().take(FAILURE_LINE_CHARS).collect());
        }
    }

    /// Notes what pip says when a package has to be compiled and cannot be: the package
    /// (`Failed building wheel for X`, `Failed to build X`) and a missing compiler or header.
    fn note_compile_failure(&mut self, line: &str) {
        let line = line.trim();
        for prefix in [
            "ERROR: Failed building wheel for ",
            "Failed building wheel for ",
            "ERROR: Could not build wheels for ",
            "Failed to build ",
        ] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let package = rest.split([' ', ',']).next().unwrap_or(rest);
                if !package.is_empty() {
                    self.failed_package = Some(package.chars().take(100).collect());
                }
            }
        }
        // pip reports a subprocess killed by SIGKILL (the memory limit's OOM kill) as -9.
        if line.ends_with("exit code: -9") || line == "Killed" {
            self.killed = true;
        }
        let names_compiler = ["gcc", "cc'", "cc:", "g++", "c++", "clang"]
            .iter()
            .any(|compiler| line.contains(compiler));
        let missing = [
            "No such file or directory",
            "not found",
            "unable to execute",
        ]
        .iter()
        .any(|said| line.contains(said));
        if (names_compiler && missing)
            || line.contains("Python.h: No such file")
            || line.contains("Cargo, the Rust package manager, is not installed")
        {
            self.compiler_missing = true;
        }
    }

    fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Removes terminal colour sequences (`ESC [ ... m`) that build output carries.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_log_keeps_a_tail_without_colours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BuildLog::create(&dir.path().join("b.log")).expect("log");
        for i in 0..30 {
            log.line(&format!("\u{1b}[91mline {i}\u{1b}[0m\n"));
        }
        let tail = log.tail();
        assert_eq!(tail.lines().count(), FAILURE_TAIL_LINES);
        assert!(tail.ends_with("line 29"), "{tail}");
        assert!(!tail.contains('\u{1b}'), "{tail}");
        drop(log);
        let written = std::fs::read_to_string(dir.path().join("b.log")).expect("read");
        assert!(written.contains("line 0") && written.contains("line 29"));
    }

    #[test]
    fn output_chunks_become_whole_lines() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"one\ntw"), ["one\n"]);
        assert_eq!(lines.push(b"o\nthree"), ["two\n"]);
        assert_eq!(lines.finish(), ["three\n"]);
        assert!(lines.finish().is_empty());
    }

    #[test]
    fn build_logs_are_owner_only_and_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.log");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut log = BuildLog::create(&path).expect("log");
        let chunk = format!("{}\n", "x".repeat(1 << 20));
        for _ in 0..20 {
            log.line(&chunk);
        }
        log.line("late\n");
        drop(log);
        let metadata = std::fs::metadata(&path).expect("metadata");
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        let written = std::fs::read_to_string(&path).expect("read");
        assert!(
            written.len() as u64 <= MAX_BUILD_LOG_BYTES + 100,
            "{}",
            written.len()
        );
        assert!(written.ends_with(&format!("[log truncated at {MAX_BUILD_LOG_BYTES} bytes]\n")));
        assert!(!written.contains("old"));
    }

    #[test]
    fn a_missing_compiler_and_its_package_are_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BuildLog::create(&dir.path().join("b.log")).expect("log");
        log.line("  Building wheel for fastsum (pyproject.toml): started\n");
        assert!(!log.compiler_missing);
        log.line("      error: [Errno 2] No such file or directory: 'x86_64-linux-gnu-gcc'\n");
        log.line("  ERROR: Failed building wheel for fastsum\n");
        log.line("ERROR: Could not build wheels for fastsum, which is required to install pyproject.toml-based projects\n");
        assert!(log.compiler_missing);
        assert_eq!(log.failed_package.as_deref(), Some("fastsum"));
        let mut other = BuildLog::create(&dir.path().join("c.log")).expect("log");
        other.line("ERROR: No matching distribution found for nope\n");
        assert!(!other.compiler_missing);
    }

    #[test]
    fn dropped_build_limits_are_named_as_the_build_settings_name_them() {
        let dropped = |setting| NotApplied {
            setting,
            asked: "1".into(),
            applied: "no limit".into(),
        };
        let named = build_limits_named(&[
            dropped("sandbox.memory"),
            dropped("sandbox.pids"),
            dropped("sandbox.seccomp"),
        ]);
        assert_eq!(
            named,
            "build.memory (asked 1, applied no limit), the build's process limit (asked 1, applied no limit), sandbox.seccomp (asked 1, applied no limit)"
        );
    }

    #[test]
    fn a_killed_build_step_is_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BuildLog::create(&dir.path().join("b.log")).expect("log");
        log.line("  │ exit code: 1\n");
        assert!(!log.killed);
        log.line("  │ exit code: -9\n");
        assert!(log.killed);
    }

    #[test]
    fn quoted_lines_are_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BuildLog::create(&dir.path().join("b.log")).expect("log");
        log.line(&format!("{}\n", "y".repeat(10_000)));
        assert_eq!(log.tail().chars().count(), FAILURE_LINE_CHARS);
    }

    #[test]
    fn builds_run_in_the_action_sandbox_with_build_limits() {
        let policy = build_policy(&BuildSettings::default());
        assert_eq!(policy.user, "65534:65534");
        assert!(policy.cap_drop_all && policy.no_new_privileges);
        assert_eq!(
            policy.seccomp,
            crate::sandbox::seccomp::SeccompProfile::Packbox
        );
        assert_eq!(policy.memory_bytes, DEFAULT_BUILD_MEMORY);
        assert_eq!(policy.pids_limit, BUILD_PIDS);
        assert!(policy.cpus <= 1.0);
        let settings = BuildSettings {
            memory_bytes: Some(256 << 20),
            ..BuildSettings::default()
        };
        assert_eq!(build_policy(&settings).memory_bytes, 256 << 20);
        // Never the engine's bridge: a per-build network through the egress proxy.
        assert_eq!(policy.network, crate::sandbox::policy::EGRESS_NETWORK);
    }

    #[test]
    fn a_ca_bundle_must_be_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let err = read_ca_bundle(&path).expect_err("not PEM");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let err = read_ca_bundle(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn index_overrides_and_the_egress_proxy_reach_the_installer_on_stdin_and_are_scrubbed() {
        let settings = BuildSettings {
            ca_bundle: None,
            index: IndexSettings {
                pip_index_url: Some("https://build:s3cret-pw@pypi.example/simple?token=t0k".into()),
                npm_registry: None,
            },
            proxies: BTreeMap::from([(
                "HTTPS_PROXY".into(),
                "http://op:pr0xy-pw@proxy:3128".into(),
            )]),
            ..BuildSettings::default()
        };
        let egress = [(
            "HTTPS_PROXY".to_string(),
            "http://198.18.0.2:3128".to_string(),
        )];
        let stdin = String::from_utf8(installer_env(&settings, &egress)).expect("text");
        assert!(
            stdin.contains("PIP_INDEX_URL=https://build:s3cret-pw@pypi.example/simple?token=t0k\n")
        );
        // The egress proxy, never the operator's (its credentials are the egress proxy's).
        assert!(stdin.contains("HTTPS_PROXY=http://198.18.0.2:3128\n"));
        assert!(
            !stdin.contains("pr0xy-pw") && !stdin.contains("proxy:3128"),
            "{stdin}"
        );
        assert!(!stdin.contains("NPM_CONFIG_REGISTRY"));
        let redactor = Redactor::new(credential_values(&settings).iter()).expect("builds");
        let line = redactor.text(
            "Looking in indexes: https://build:s3cret-pw@pypi.example/simple?token=t0k".into(),
        );
        assert!(
            !line.contains("s3cret-pw") && !line.contains("t0k"),
            "{line}"
        );
    }

    #[test]
    fn the_build_log_says_what_the_build_may_reach_and_what_it_reached() {
        use crate::egress::protocol::ConnectionKind;
        let granted = network::build_grant(Installer::Npm, &IndexSettings::default(), &[]);
        let access = BuildAccess {
            grant: granted.grant,
            refused: vec![("build.pip_index_url".into(), "127.0.0.1 is loopback".into())],
            upstream: Some(Upstream {
                host: "proxy.corp.example".into(),
                port: 3128,
                authorization: Some("Basic c2VjcmV0".into()),
                bypass: Vec::new(),
            }),
        };
        let opening = access.log_lines().concat();
        assert_eq!(
            opening,
            "network: packbox's egress proxy only, granting registry.npmjs.org:443 (npm's default registry), through the operator's proxy proxy.corp.example:3128\nnetwork: build.pip_index_url not granted: 127.0.0.1 is loopback\n"
        );
        let connection = |host: &str, allowed: bool| Connection {
            host: host.into(),
            port: 443,
            kind: ConnectionKind::Tunnel,
            allowed,
            refusal: (!allowed).then(|| "not granted to this run".into()),
            error: None,
            address: allowed.then(|| "104.16.0.1".parse().expect("ip")),
            bytes_sent: 10,
            bytes_received: 2000,
            duration_ms: 30,
        };
        let mut audit = Audit::default();
        audit.add(connection("registry.npmjs.org", true));
        audit.add(connection("198.51.100.7", false));
        let lines = audit_lines(&audit, None);
        assert_eq!(
            lines,
            [
                "egress: allowed registry.npmjs.org:443 (tunnel) to 104.16.0.1, 10 bytes sent, 2000 received, 30 ms\n",
                "egress: refused 198.51.100.7:443 (tunnel): not granted to this run\n",
                "egress audit: 2 connection attempts, 1 refused, 20 bytes sent, 4000 received\n",
            ]
        );
        assert!(
            audit_lines(&audit, Some("the egress proxy stopped"))[2]
                .contains("(may be incomplete: the egress proxy stopped)")
        );
    }

    #[tokio::test]
    async fn a_file_lock_is_exclusive_until_dropped_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("locks/k.lock");
        let cancel = CancellationToken::new();
        let held = lock_file(&path, &cancel)
            .await
            .expect("first lock")
            .expect("not cancelled");
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        assert!(other.try_lock().is_err(), "second lock must wait");
        drop(held);
        assert!(!path.exists(), "the lock file is removed with the lock");
        let again = lock_file(&path, &cancel).await.expect("locks again");
        drop(again);
        assert_eq!(
            std::fs::read_dir(dir.path().join("locks"))
                .expect("list")
                .count(),
            0
        );
    }

    #[test]
    fn removing_lock_files_keeps_the_lock_exclusive() {
        // Threads take and drop the lock in a loop, each time removing the file; a waiter that
        // locked a removed file must not hold the lock beside a newcomer.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.lock");
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside) = (path.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let lock = loop {
                            if let Some(lock) = try_lock_current(&path).expect("lock") {
                                break lock;
                            }
                            std::thread::yield_now();
                        };
                        let before = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(before, 0, "two holders at once");
                        std::thread::yield_now();
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        drop(lock);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no two holders");
        }
        assert!(!path.exists());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_lock_stops_on_cancel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("locks/k.lock");
        let cancel = CancellationToken::new();
        let _held = lock_file(&path, &cancel)
            .await
            .expect("first lock")
            .expect("not cancelled");
        let waiting = lock_file(&path, &cancel);
        let canceller = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cancel.cancel();
        };
        let (waited, ()) = tokio::join!(waiting, canceller);
        assert!(waited.expect("no error").is_none(), "gave up on cancel");
    }

    mod with_a_fake_engine {
        use std::sync::Arc;

        use super::*;
        use crate::engine::fake::{Call, Exit, FakeEngine, Program};
        use crate::image::env::{Installer, Manifests};

        const BASE: &str = "packbox/python:3.11";

        /// A fake engine with the runtime image, whose containers run `program`.
        fn engine(program: Program) -> (Arc<FakeEngine>, SharedEngine) {
            let fake = FakeEngine::new();
            fake.add_image(BASE, &[], 0);
            fake.set_program(move |_| program.clone());
            let shared: SharedEngine = fake.clone();
            (fake, shared)
        }

        /// A recipe no other test uses (builds are single-flight per key, process-wide).
        fn recipe(fake: &FakeEngine, unique: &str) -> EnvRecipe {
            EnvRecipe {
                runtime: "python".into(),
                version: "3.11.2".into(),
                base_image_id: fake.image_id_now(BASE),
                manifests: Manifests {
                    installer: Installer::Pip,
                    files: vec![("requirements.txt".into(), unique.as_bytes().to_vec())],
                    requirements: Vec::new(),
                    sources: Vec::new(),
                    program: None,
                },
                index: IndexSettings::default(),
            }
        }

        fn commits(fake: &FakeEngine) -> usize {
            fake.count(|c| matches!(c, Call::Commit(..)))
        }

        async fn ensure_now(
            shared: &SharedEngine,
            recipe: &EnvRecipe,
            settings: &BuildSettings,
            dir: &Path,
        ) -> Result<EnvImage, EnvError> {
            ensure(
                shared,
                recipe,
                settings,
                BuildNetwork::Offline,
                dir,
                &CancellationToken::new(),
                |_| {},
            )
            .await
        }

        #[tokio::test(start_paused = true)]
        async fn a_pack_that_chooses_sources_is_refused_before_any_engine_call() {
            let (fake, shared) = engine(Program::default());
            let mut recipe = recipe(&fake, "--index-url https://x.example/simple");
            recipe.manifests.sources = vec![Requirement {
                text: "--index-url https://x.example/simple".into(),
                source: "requirements.txt:1".into(),
            }];
            let dir = tempfile::tempdir().expect("tempdir");
            let calls_before = fake.calls().len();
            let refused = BuildSettings::default();
            let err = ensure_now(&shared, &recipe, &refused, dir.path())
                .await
                .expect_err("refused");
            assert!(matches!(err, EnvError::PackSources { .. }), "{err}");
            assert!(
                err.to_string().starts_with(
                    "requirements.txt:1 `--index-url https://x.example/simple`: pip options that choose package sources"
                ),
                "{err}"
            );
            assert_eq!(fake.calls().len(), calls_before, "no engine call");
            let allowed = BuildSettings {
                allow_pack_sources: true,
                ..BuildSettings::default()
            };
            ensure_now(&shared, &recipe, &allowed, dir.path())
                .await
                .expect("allowed by the operator");
            assert_eq!(commits(&fake), 1);
        }

        #[tokio::test(start_paused = true)]
        async fn the_build_container_runs_in_the_sandbox_and_is_committed_then_removed() {
            let (fake, shared) = engine(Program::prints("Successfully installed six\n", 0));
            let recipe = recipe(&fake, "six==1.16.0 # sandbox");
            let dir = tempfile::tempdir().expect("tempdir");
            let image = ensure_now(&shared, &recipe, &BuildSettings::default(), dir.path())
                .await
                .expect("built");
            assert!(image.built);
            let spec = fake
                .calls()
                .into_iter()
                .find_map(|c| match c {
                    Call::Create { spec, .. } => Some(spec),
                    _ => None,
                })
                .expect("a build container");
            assert_eq!(spec.user, "65534:65534");
            assert!(spec.cap_drop_all && spec.no_new_privileges);
            assert!(spec.seccomp_profile.is_some(), "packbox's profile");
            assert_eq!(spec.pids_limit, i64::from(BUILD_PIDS));
            assert_eq!(spec.memory_bytes as u64, DEFAULT_BUILD_MEMORY);
            assert!(spec.nano_cpus > 0);
            assert!(
                spec.env.is_empty(),
                "nothing of the installer's in the configuration"
            );
            assert_eq!(fake.count(|c| matches!(c, Call::Upload { .. })), 1);
            assert_eq!(commits(&fake), 1);
            assert!(
                fake.container_ids().is_empty(),
                "the build container is removed"
            );
            assert!(Owned::in_state_dir(dir.path()).has_image(&image.id));
        }

        /// Without its egress proxy (here: the engine lacks the image it is built on) a build
        /// fails before any build container: it never runs on another network.
        #[tokio::test(start_paused = true)]
        async fn a_build_whose_egress_proxy_cannot_start_fails_and_runs_nothing() {
            let (fake, shared) = engine(Program::default());
            let recipe = recipe(&fake, "six==1.16.0 # no proxy");
            let dir = tempfile::tempdir().expect("tempdir");
            let binary = dir.path().join("packbox-egress-proxy");
            std::fs::write(&binary, b"not run").expect("a binary");
            let settings = crate::egress::config::EgressSettings {
                proxy_binary: Some(binary),
                ..Default::default()
            };
            let gateway = Arc::new(Gateway::new(
                shared.clone(),
                settings,
                Default::default(),
                false,
                dir.path().to_path_buf(),
            ));
            let err = ensure(
                &shared,
                &recipe,
                &BuildSettings::default(),
                BuildNetwork::Egress(&gateway),
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect_err("no network, no build");
            assert!(matches!(err, EnvError::Network { .. }), "{err}");
            assert!(
                crate::common::error_text::chain(&err).contains("packbox/base:bookworm"),
                "{}",
                crate::common::error_text::chain(&err)
            );
            assert!(err.hint().is_some());
            assert_eq!(fake.count(|c| matches!(c, Call::Create { .. })), 0);
            assert_eq!(commits(&fake), 0);
            gateway.close().await;
        }

        #[tokio::test(start_paused = true)]
        async fn concurrent_callers_share_one_build() {
            let (fake, shared) = engine(Program {
                delay: Duration::from_secs(20),
                ..Program::default()
            });
            let dir = tempfile::tempdir().expect("tempdir");
            let recipe = recipe(&fake, "requests==2.31.0 # concurrent");
            let cancel = CancellationToken::new();
            let settings = BuildSettings::default();
            let calls = (0..5).map(|_| {
                ensure(
                    &shared,
                    &recipe,
                    &settings,
                    BuildNetwork::Offline,
                    dir.path(),
                    &cancel,
                    |_| {},
                )
            });
            let results = futures::future::join_all(calls).await;
            let images: Vec<EnvImage> = results.into_iter().map(|r| r.expect("ready")).collect();
            assert_eq!(commits(&fake), 1, "one build for five callers");
            assert_eq!(images.iter().filter(|i| i.built).count(), 1);
            assert!(
                images
                    .iter()
                    .all(|i| i.id == images[0].id && i.tag == recipe.tag())
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_present_image_costs_one_lookup_and_no_build() {
            let (fake, shared) = engine(Program::default());
            let recipe = recipe(&fake, "present");
            let id = fake.add_image(&recipe.tag(), &[], 0);
            let dir = tempfile::tempdir().expect("tempdir");
            Owned::in_state_dir(dir.path())
                .add_image(&id)
                .expect("recorded");
            let calls_before = fake.calls().len();
            let image = ensure_now(&shared, &recipe, &BuildSettings::default(), dir.path())
                .await
                .expect("present");
            assert!(!image.built);
            assert_eq!(fake.calls()[calls_before..], [Call::ImageId(recipe.tag())]);
            assert!(!dir.path().join("locks").exists(), "no lock taken");
        }

        #[tokio::test(start_paused = true)]
        async fn an_image_packbox_did_not_build_under_the_tag_is_built_over() {
            let (fake, shared) = engine(Program::default());
            let recipe = recipe(&fake, "planted");
            let planted = fake.add_image(&recipe.tag(), &[("packbox.kind", "env")], 0);
            let dir = tempfile::tempdir().expect("tempdir");
            let image = ensure_now(&shared, &recipe, &BuildSettings::default(), dir.path())
                .await
                .expect("built");
            assert!(image.built, "the planted image was not taken");
            assert_ne!(image.id, planted);
            assert_eq!(fake.image_id_now(&recipe.tag()), image.id);
            assert!(Owned::in_state_dir(dir.path()).has_image(&image.id));
        }

        /// Two state folders (two packbox installations, or tests) build the same environment
        /// once each; the tag then names the second's image, and the first keeps using its own
        /// instead of building again (which would move the tag back, and so on for ever).
        #[tokio::test(start_paused = true)]
        async fn another_state_folders_build_under_the_tag_costs_no_second_build() {
            let (fake, shared) = engine(Program::default());
            let recipe = recipe(&fake, "two state folders");
            let (a, b) = (
                tempfile::tempdir().expect("a"),
                tempfile::tempdir().expect("b"),
            );
            let settings = BuildSettings::default();
            let first = ensure_now(&shared, &recipe, &settings, a.path())
                .await
                .expect("a builds");
            let second = ensure_now(&shared, &recipe, &settings, b.path())
                .await
                .expect("b builds its own");
            assert!(first.built && second.built);
            assert_ne!(first.id, second.id);
            assert_eq!(fake.image_id_now(&recipe.tag()), second.id);
            let again = ensure_now(&shared, &recipe, &settings, a.path())
                .await
                .expect("a again");
            assert!(!again.built, "no second build");
            assert_eq!(again.id, first.id, "a runs its own image");
            assert_eq!(commits(&fake), 2);
        }

        #[tokio::test(start_paused = true)]
        async fn a_failed_install_says_so_and_commits_nothing() {
            let (fake, shared) = engine(Program::prints(
                "ERROR: No matching distribution found for nope\n",
                1,
            ));
            let recipe = recipe(&fake, "nope==9 # failed");
            let dir = tempfile::tempdir().expect("tempdir");
            let err = ensure_now(&shared, &recipe, &BuildSettings::default(), dir.path())
                .await
                .expect_err("fails");
            let text = err.to_string();
            assert!(text.contains("at `pip install`"), "{text}");
            assert!(text.contains("exited with code 1"), "{text}");
            assert!(
                text.contains("No matching distribution found for nope"),
                "{text}"
            );
            assert_eq!(commits(&fake), 0);
            assert!(fake.container_ids().is_empty());
            assert!(fake.image_id(&recipe.tag()).await.ok().flatten().is_none());
        }

        #[tokio::test(start_paused = true)]
        async fn a_build_killed_for_memory_says_so() {
            let (fake, shared) = engine(Program {
                oom: true,
                exit: Exit::Code(137),
                ..Program::default()
            });
            let recipe = recipe(&fake, "big # oom");
            let dir = tempfile::tempdir().expect("tempdir");
            let err = ensure_now(&shared, &recipe, &BuildSettings::default(), dir.path())
                .await
                .expect_err("killed");
            assert!(matches!(err, EnvError::BuildKilled { .. }), "{err}");
        }

        #[tokio::test(start_paused = true)]
        async fn cancelling_a_build_leaves_no_image_no_container_and_no_lock() {
            let (fake, shared) = engine(Program {
                exit: Exit::Never,
                ..Program::default()
            });
            let recipe = recipe(&fake, "slow # cancel");
            let dir = tempfile::tempdir().expect("tempdir");
            let cancel = CancellationToken::new();
            let settings = BuildSettings::default();
            let building = ensure(
                &shared,
                &recipe,
                &settings,
                BuildNetwork::Offline,
                dir.path(),
                &cancel,
                |_| {},
            );
            let stop = async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                cancel.cancel();
            };
            let (result, ()) = tokio::join!(building, stop);
            assert!(
                matches!(result, Err(EnvError::Cancelled { .. })),
                "{result:?}"
            );
            assert_eq!(commits(&fake), 0);
            assert!(fake.container_ids().is_empty());
            assert!(fake.image_id(&recipe.tag()).await.ok().flatten().is_none());
            assert_eq!(
                std::fs::read_dir(dir.path().join("locks"))
                    .map(|d| d.count())
                    .unwrap_or(0),
                0
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_build_over_its_time_limit_fails_and_leaves_nothing() {
            let (fake, shared) = engine(Program {
                exit: Exit::Never,
                ..Program::default()
            });
            let recipe = recipe(&fake, "slow # timeout");
            let dir = tempfile::tempdir().expect("tempdir");
            let settings = BuildSettings {
                timeout: Duration::from_secs(30),
                ..BuildSettings::default()
            };
            let err = ensure_now(&shared, &recipe, &settings, dir.path())
                .await
                .expect_err("timed out");
            assert!(matches!(err, EnvError::BuildTimedOut { .. }), "{err}");
            assert_eq!(commits(&fake), 0);
            assert!(fake.container_ids().is_empty());
        }

        #[tokio::test(start_paused = true)]
        async fn build_lines_reach_the_caller_and_the_log() {
            let (fake, shared) = engine(Program::prints("Collecting six\nInstalling six\n", 0));
            let recipe = recipe(&fake, "six # lines");
            let dir = tempfile::tempdir().expect("tempdir");
            let mut seen = Vec::new();
            ensure(
                &shared,
                &recipe,
                &BuildSettings::default(),
                BuildNetwork::Offline,
                dir.path(),
                &CancellationToken::new(),
                |line| seen.push(line.to_string()),
            )
            .await
            .expect("built");
            // The first line says the build has begun, before the installer prints anything;
            // the next what it may reach.
            assert_eq!(seen.len(), 4, "{seen:?}");
            assert!(
                seen[0].starts_with("installing the dependencies of packbox/env:"),
                "{seen:?}"
            );
            assert_eq!(
                seen[1],
                "network: packbox's egress proxy only, granting pypi.org:443 (pip's default index), files.pythonhosted.org:443 (pip's default index)\n"
            );
            assert_eq!(seen[2..], ["Collecting six\n", "Installing six\n"]);
            let log = std::fs::read_to_string(
                dir.path()
                    .join("builds")
                    .join(format!("{}.log", recipe.key())),
            )
            .expect("log");
            assert!(log.contains("Installing six"), "{log}");
        }
    }
}
