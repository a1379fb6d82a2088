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

use super::recipe::{EnvRecipe, IndexSettings, RECIPE_FORMAT};
use crate::engine::{BuildSpec, ContainerEngine, EngineError};
use crate::pack::dependencies::{Requirement, SOURCES_REFUSED};

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
    /// Standard proxy variables, passed through as build arguments.
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
    /// The build was cancelled; its layers and its locks are gone.
    #[error("building environment {tag} was cancelled")]
    Cancelled {
        /// The environment image's tag.
        tag: String,
    },
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

/// Locks per key for builds within this process.
static BUILD_LOCKS: LazyLock<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Makes sure the environment image of a recipe exists. A present image costs one engine lookup;
/// otherwise the image is built once, whoever else asks for it meanwhile.
pub async fn ensure(
    engine: &dyn ContainerEngine,
    recipe: &EnvRecipe,
    settings: &BuildSettings,
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
    if let Some(id) = engine.image_id(&tag).await? {
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
    if let Some(id) = engine.image_id(&tag).await? {
        return Ok(EnvImage {
            tag,
            id,
            built: false,
        });
    }

    let ca = match &settings.ca_bundle {
        Some(path) => Some(read_ca_bundle(path)?),
        None => None,
    };
    let context_tar = recipe
        .context_tar(ca.as_deref())
        .map_err(|source| EnvError::State {
            path: state_dir.to_path_buf(),
            source,
        })?;
    let log_path = state_dir.join("builds").join(format!("{key}.log"));
    let mut log = BuildLog::create(&log_path)?;
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let mut attempt = 1;
    let result = loop {
        let spec = build_spec(recipe, settings, &key, context_tar.clone());
        let mut on_build_line = |line: &str| {
            log.line(line);
            on_line(line);
        };
        let build = engine.build_image(spec, &mut on_build_line);
        // Dropping the build's stream closes its connection, which stops the engine's build.
        let result = tokio::select! {
            result = tokio::time::timeout_at(deadline, build) => Some(result),
            () = cancel.cancelled() => None,
        };
        match &result {
            Some(Ok(Err(EngineError::Build { message, .. })))
                if attempt < BUILD_ATTEMPTS && cached_layer_vanished(message) =>
            {
                tracing::warn!(
                    tag = %tag,
                    "a cached layer was removed while the build used it (another build's cleanup or a prune): building again"
                );
                log.line("a cached layer vanished under the build: building again\n");
                attempt += 1;
            }
            _ => break result,
        }
    };
    let Some(result) = result else {
        // Layers the build made so far go too.
        remove_own_layers(engine, &log).await;
        log.line("cancelled\n");
        return Err(EnvError::Cancelled { tag });
    };
    match result {
        Ok(Ok(id)) => Ok(EnvImage {
            tag,
            id,
            built: true,
        }),
        Ok(Err(EngineError::Build { message, .. })) => {
            let tail = log.tail();
            log.line(&format!("error: {message}\n"));
            // The layers the failed build made go too; layers other images build on stay
            // (the engine refuses to remove those, which is fine).
            remove_own_layers(engine, &log).await;
            if log.killed || message.ends_with("returned a non-zero code: 137") {
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
            // The engine repeats the whole command; its exit code is what matters.
            let message = match message.rsplit_once("returned a non-zero code: ") {
                Some((_, code)) => format!("the step exited with code {code}"),
                None => message,
            };
            Err(EnvError::BuildFailed {
                tag,
                step: log.last_step.clone().unwrap_or_else(|| "the build".into()),
                message,
                tail,
                log: log_path,
            })
        }
        Ok(Err(other)) => Err(other.into()),
        Err(_) => {
            remove_own_layers(engine, &log).await;
            Err(EnvError::BuildTimedOut {
                tag,
                seconds: settings.timeout.as_secs(),
                log: log_path,
            })
        }
    }
}

/// What the engine is asked to build for a recipe.
/// Removes the layers a failed or stopped build made, newest first, each alone: the untagged
/// layers under them that the build took from the cache stay, since another build may be using
/// them right now.
async fn remove_own_layers(engine: &dyn ContainerEngine, log: &BuildLog) {
    for layer in log.own_layers.iter().rev() {
        let _ = engine.remove_layer(layer).await;
    }
}

/// Builds tried when the engine's cache loses a layer under a build.
const BUILD_ATTEMPTS: u32 = 2;

/// Whether a build failed because a layer it took from the engine's cache was removed meanwhile
/// (the legacy builder then cannot read the layer's config): a race with another build removing
/// its failed layers, or with a prune, not a fault of the recipe. Building again resolves the
/// cache afresh.
fn cached_layer_vanished(message: &str) -> bool {
    message.contains("failed to get digest") && message.contains("no such file or directory")
}

fn build_spec(
    recipe: &EnvRecipe,
    settings: &BuildSettings,
    key: &str,
    context_tar: Vec<u8>,
) -> BuildSpec {
    BuildSpec {
        tag: recipe.tag(),
        context_tar,
        dockerfile: "Dockerfile".into(),
        build_args: build_args(settings),
        labels: labels(recipe, key),
        // Builds reach package indexes; runs stay on network none.
        network_mode: "bridge".into(),
        memory_bytes: Some(settings.memory_bytes.unwrap_or(DEFAULT_BUILD_MEMORY)),
    }
}

fn build_args(settings: &BuildSettings) -> HashMap<String, String> {
    let mut args: HashMap<String, String> = settings.proxies.clone().into_iter().collect();
    if let Some(url) = &settings.index.pip_index_url {
        args.insert("PIP_INDEX_URL".into(), url.clone());
    }
    if let Some(url) = &settings.index.npm_registry {
        args.insert("NPM_CONFIG_REGISTRY".into(), url.clone());
    }
    args
}

fn labels(recipe: &EnvRecipe, key: &str) -> HashMap<String, String> {
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
    last_step: Option<String>,
    /// The layers this build made (oldest first), so a failed build's layers can be removed:
    /// never the base image of its `FROM`, nor a layer it took from the engine's cache (another
    /// image, or another build under way, is built on those).
    own_layers: Vec<String>,
    /// Whether the current step's layer is not the build's own (a `FROM`, or a cache hit).
    step_not_own: bool,
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
            last_step: None,
            own_layers: Vec::new(),
            step_not_own: false,
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
            if let Some(layer) = line.strip_prefix(" ---> ") {
                if layer == "Using cache" {
                    self.step_not_own = true;
                } else if layer.len() == 12
                    && layer.chars().all(|c| c.is_ascii_hexdigit())
                    && !self.step_not_own
                {
                    self.own_layers.push(layer.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with("Removing intermediate") {
                continue;
            }
            if let Some(step) = line.strip_prefix("Step ") {
                // "Step 5/16 : RUN ..." -> "step 5/16: RUN ..." (shortened); its output starts now.
                let (number, instruction) = step.split_once(" : ").unwrap_or((step, ""));
                self.step_not_own = instruction
                    .trim_start()
                    .get(..4)
                    .is_some_and(|word| word.eq_ignore_ascii_case("FROM"));
                let words: Vec<&str> = instruction.split_whitespace().collect();
                let instruction = words.join(" ");
                let short: String = instruction.chars().take(80).collect();
                let ellipsis = if short.len() < instruction.len() {
                    "…"
                } else {
                    ""
                };
                self.last_step = Some(format!("step {number}: {short}{ellipsis}"));
                self.tail.clear();
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
    fn build_log_tracks_the_step_and_keeps_a_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BuildLog::create(&dir.path().join("b.log")).expect("log");
        log.line("Step 1/4 : FROM sha256:abc\n ---> 0123456789ab\nbase output\n");
        log.line("Step 3/4 : RUN set -eu; pip install -r req.txt\n ---> Running in 123\n");
        for i in 0..30 {
            log.line(&format!("\u{1b}[91mline {i}\u{1b}[0m\n"));
        }
        log.line("Removing intermediate container 123\n");
        assert_eq!(
            log.last_step.as_deref(),
            Some("step 3/4: RUN set -eu; pip install -r req.txt")
        );
        let tail = log.tail();
        assert_eq!(tail.lines().count(), FAILURE_TAIL_LINES);
        assert!(tail.ends_with("line 29"), "{tail}");
        assert!(
            !tail.contains("base output") && !tail.contains('\u{1b}'),
            "{tail}"
        );
        assert!(
            log.own_layers.is_empty(),
            "the FROM image is not the build's: {:?}",
            log.own_layers
        );
        log.line(" ---> fedcba987654\n");
        log.line("Step 4/4 : USER 65534\n ---> Using cache\n ---> 111111111111\n");
        log.line("Step 5/5 : COPY req.txt /x\n ---> 222222222222\n");
        assert_eq!(log.own_layers, ["fedcba987654", "222222222222"]);
        drop(log);
        let written = std::fs::read_to_string(dir.path().join("b.log")).expect("read");
        assert!(written.contains("line 0") && written.contains("line 29"));
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
        log.line("Step 9/9 : RUN late\n");
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
    fn builds_get_a_memory_limit() {
        let recipe = EnvRecipe {
            runtime: "python".into(),
            version: "3.11.2".into(),
            base_image_id: "sha256:base".into(),
            manifests: crate::image::env::Manifests {
                installer: crate::image::env::Installer::Pip,
                files: vec![("requirements.txt".into(), b"six\n".to_vec())],
                requirements: Vec::new(),
                sources: Vec::new(),
            },
            index: IndexSettings::default(),
        };
        let spec = build_spec(&recipe, &BuildSettings::default(), "k", Vec::new());
        assert_eq!(spec.memory_bytes, Some(DEFAULT_BUILD_MEMORY));
        let settings = BuildSettings {
            memory_bytes: Some(256 << 20),
            ..BuildSettings::default()
        };
        assert_eq!(
            build_spec(&recipe, &settings, "k", Vec::new()).memory_bytes,
            Some(256 << 20)
        );
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
    fn index_overrides_and_proxies_become_build_arguments() {
        let settings = BuildSettings {
            ca_bundle: None,
            index: IndexSettings {
                pip_index_url: Some("https://pypi.example/simple".into()),
                npm_registry: None,
            },
            proxies: BTreeMap::from([("HTTPS_PROXY".into(), "http://proxy:3128".into())]),
            ..BuildSettings::default()
        };
        let args = build_args(&settings);
        assert_eq!(args["PIP_INDEX_URL"], "https://pypi.example/simple");
        assert_eq!(args["HTTPS_PROXY"], "http://proxy:3128");
        assert!(!args.contains_key("NPM_CONFIG_REGISTRY"));
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
        use crate::engine::fake::{BuildScript, Call, FakeEngine};
        use crate::image::env::{Installer, Manifests};

        /// A recipe no other test uses (builds are single-flight per key, process-wide).
        fn recipe(unique: &str) -> EnvRecipe {
            EnvRecipe {
                runtime: "python".into(),
                version: "3.11.2".into(),
                base_image_id: "sha256:base".into(),
                manifests: Manifests {
                    installer: Installer::Pip,
                    files: vec![("requirements.txt".into(), unique.as_bytes().to_vec())],
                    requirements: Vec::new(),
                    sources: Vec::new(),
                },
                index: IndexSettings::default(),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_pack_that_chooses_sources_is_refused_before_any_engine_call() {
            let fake = FakeEngine::new();
            let mut recipe = recipe("--index-url https://x.example/simple");
            recipe.manifests.sources = vec![Requirement {
                text: "--index-url https://x.example/simple".into(),
                source: "requirements.txt:1".into(),
            }];
            let dir = tempfile::tempdir().expect("tempdir");
            let ensure_with = |allow_pack_sources| {
                let settings = BuildSettings {
                    allow_pack_sources,
                    ..BuildSettings::default()
                };
                let (fake, recipe, dir) = (fake.clone(), recipe.clone(), dir.path().to_path_buf());
                async move {
                    ensure(
                        fake.as_ref(),
                        &recipe,
                        &settings,
                        &dir,
                        &CancellationToken::new(),
                        |_| {},
                    )
                    .await
                }
            };
            let err = ensure_with(false).await.expect_err("refused");
            assert!(matches!(err, EnvError::PackSources { .. }), "{err}");
            assert!(
                err.to_string().starts_with(
                    "requirements.txt:1 `--index-url https://x.example/simple`: pip options that choose package sources"
                ),
                "{err}"
            );
            assert!(fake.calls().is_empty(), "{:?}", fake.calls());
            ensure_with(true).await.expect("allowed by the operator");
            assert_eq!(builds(&fake), 1);
        }

        fn builds(fake: &FakeEngine) -> usize {
            fake.count(|c| matches!(c, Call::Build(_)))
        }

        #[tokio::test(start_paused = true)]
        async fn concurrent_callers_share_one_build() {
            let fake = FakeEngine::new();
            fake.set_build(BuildScript::Succeed {
                delay: Duration::from_secs(20),
                lines: vec!["Step 1/3 : FROM base\n".into()],
            });
            let dir = tempfile::tempdir().expect("tempdir");
            let recipe = recipe("requests==2.31.0 # concurrent");
            let cancel = CancellationToken::new();
            let settings = BuildSettings::default();
            let calls = (0..5).map(|_| {
                ensure(
                    fake.as_ref(),
                    &recipe,
                    &settings,
                    dir.path(),
                    &cancel,
                    |_| {},
                )
            });
            let results = futures::future::join_all(calls).await;
            let images: Vec<EnvImage> = results.into_iter().map(|r| r.expect("ready")).collect();
            assert_eq!(builds(&fake), 1, "one build for five callers");
            assert_eq!(images.iter().filter(|i| i.built).count(), 1);
            assert!(
                images
                    .iter()
                    .all(|i| i.id == images[0].id && i.tag == recipe.tag())
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_present_image_costs_one_lookup_and_no_build() {
            let fake = FakeEngine::new();
            let recipe = recipe("present");
            fake.add_image(&recipe.tag(), &[], 0);
            let dir = tempfile::tempdir().expect("tempdir");
            let image = ensure(
                fake.as_ref(),
                &recipe,
                &BuildSettings::default(),
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect("present");
            assert!(!image.built);
            assert_eq!(fake.calls(), [Call::ImageId(recipe.tag())]);
            assert!(!dir.path().join("locks").exists(), "no lock taken");
        }

        #[tokio::test(start_paused = true)]
        async fn a_cached_layer_removed_under_the_build_builds_again_once() {
            let fake = FakeEngine::new();
            fake.set_build(BuildScript::FailOnce {
                message: "failed to get digest sha256:eb3f: open /var/lib/docker/image/overlay2/imagedb/content/sha256/eb3f: no such file or directory".into(),
            });
            let dir = tempfile::tempdir().expect("tempdir");
            let first = recipe("requests==2.31.0");
            let image = ensure(
                fake.as_ref(),
                &first,
                &BuildSettings::default(),
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect("built on the second attempt");
            assert!(image.built);
            assert_eq!(fake.count(|c| matches!(c, Call::Build(_))), 2);
            // Any other failure is the recipe's: not tried again.
            fake.set_build(BuildScript::Fail {
                lines: Vec::new(),
                message: "The command '/bin/sh -c pip install' returned a non-zero code: 1".into(),
            });
            let other = recipe("nope==1");
            ensure(
                fake.as_ref(),
                &other,
                &BuildSettings::default(),
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect_err("fails");
            assert_eq!(fake.count(|c| matches!(c, Call::Build(_))), 3);
        }

        #[tokio::test(start_paused = true)]
        async fn a_failed_build_names_the_step_and_removes_its_layers() {
            let fake = FakeEngine::new();
            let layer = fake.add_image("", &[], 0);
            let short = layer.trim_start_matches("sha256:")[..12].to_string();
            fake.set_build(BuildScript::Fail {
                lines: vec![
                    "Step 2/4 : RUN pip install -r requirements.txt\n".into(),
                    format!(" ---> {short}\n"),
                    "ERROR: No matching distribution found for nope\n".into(),
                ],
                message: "The command '/bin/sh -c pip install' returned a non-zero code: 1".into(),
            });
            let dir = tempfile::tempdir().expect("tempdir");
            let recipe = recipe("nope==1");
            let err = ensure(
                fake.as_ref(),
                &recipe,
                &BuildSettings::default(),
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect_err("fails");
            let text = err.to_string();
            assert!(text.contains("RUN pip install"), "{text}");
            assert!(text.contains("exited with code 1"), "{text}");
            assert!(text.contains("No matching distribution"), "{text}");
            assert!(!fake.has_image(&recipe.tag()), "no tag");
            assert!(
                !fake.has_image(&layer),
                "the failed build's layer is removed"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn cancelling_a_build_leaves_no_tag_and_no_lock_held() {
            let fake = FakeEngine::new();
            fake.set_build(BuildScript::Hang);
            let dir = tempfile::tempdir().expect("tempdir");
            let recipe = recipe("cancelled build");
            let cancel = CancellationToken::new();
            let settings = BuildSettings::default();
            let building = ensure(
                fake.as_ref(),
                &recipe,
                &settings,
                dir.path(),
                &cancel,
                |_| {},
            );
            let canceller = async {
                fake.until(|f| f.count(|c| matches!(c, Call::Build(_))) == 1)
                    .await;
                cancel.cancel();
            };
            let (result, ()) = tokio::join!(building, canceller);
            assert!(
                matches!(result, Err(EnvError::Cancelled { .. })),
                "{result:?}"
            );
            assert!(!fake.has_image(&recipe.tag()));
            // The lock is free again: a new build goes ahead.
            fake.set_build(BuildScript::Succeed {
                delay: Duration::ZERO,
                lines: Vec::new(),
            });
            let image = ensure(
                fake.as_ref(),
                &recipe,
                &settings,
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect("built after the cancel");
            assert!(image.built);
        }

        #[tokio::test(start_paused = true)]
        async fn a_build_over_its_time_limit_fails_and_leaves_no_tag() {
            let fake = FakeEngine::new();
            fake.set_build(BuildScript::Hang);
            let dir = tempfile::tempdir().expect("tempdir");
            let recipe = recipe("slow build");
            let err = ensure(
                fake.as_ref(),
                &recipe,
                &BuildSettings::default(),
                dir.path(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .expect_err("times out");
            assert!(matches!(err, EnvError::BuildTimedOut { .. }), "{err}");
            assert!(!fake.has_image(&recipe.tag()));
        }

        #[tokio::test(start_paused = true)]
        async fn build_lines_reach_the_caller_and_the_log() {
            let fake = FakeEngine::new();
            fake.set_build(BuildScript::Succeed {
                delay: Duration::ZERO,
                lines: vec!["Step 1/2 : FROM base\n".into(), "done\n".into()],
            });
            let dir = tempfile::tempdir().expect("tempdir");
            let recipe = recipe("lines");
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = Arc::clone(&seen);
            ensure(
                fake.as_ref(),
                &recipe,
                &BuildSettings::default(),
                dir.path(),
                &CancellationToken::new(),
                move |line| sink.lock().expect("lock").push(line.to_string()),
            )
            .await
            .expect("built");
            assert_eq!(seen.lock().expect("lock").len(), 2);
            let log = std::fs::read_to_string(
                dir.path()
                    .join("builds")
                    .join(format!("{}.log", recipe.key())),
            )
            .expect("log kept");
            assert!(log.contains("Step 1/2"));
        }
    }
}
