//! Building an environment image once: concurrent runs that need the same missing environment
//! wait for one build (a lock per key, in this process and across processes), a failed build
//! leaves no tag, and every build's log is kept in the state folder.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::recipe::{EnvRecipe, IndexSettings, RECIPE_FORMAT};
use crate::engine::{BuildSpec, ContainerEngine, EngineError};

/// How long one environment build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lines of build output quoted in a failure.
const FAILURE_TAIL_LINES: usize = 15;
/// How environment builds reach their package indexes.
#[derive(Clone, Debug, Default)]
pub struct BuildSettings {
    /// A PEM bundle that pip, npm and curl trust during builds (`PACKBOX_BUILD_CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    /// Index overrides (`PACKBOX_PIP_INDEX_URL`, `PACKBOX_NPM_REGISTRY`).
    pub index: IndexSettings,
    /// Standard proxy variables, passed through as build arguments.
    pub proxies: BTreeMap<String, String>,
}

/// An environment that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("PACKBOX_BUILD_CA_BUNDLE {path}: {problem}")]
    CaBundle { path: PathBuf, problem: String },
    #[error("building environment {tag} failed at `{step}`: {message}\n{tail}\n(full log: {log})")]
    BuildFailed {
        tag: String,
        step: String,
        message: String,
        tail: String,
        log: PathBuf,
    },
    #[error("environment build {tag} did not finish within {} s (full log: {log})", BUILD_TIMEOUT.as_secs())]
    BuildTimedOut { tag: String, log: PathBuf },
    #[error("state folder {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The build was cancelled; its layers and its locks are gone.
    #[error("building environment {tag} was cancelled")]
    Cancelled { tag: String },
}

/// A ready environment image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvImage {
    pub tag: String,
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
    let tag = recipe.tag();
    if let Some(id) = engine.image_id(&tag).await? {
        return Ok(EnvImage {
            tag,
            id,
            built: false,
        });
    }
    let key = recipe.key();
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
    let spec = BuildSpec {
        tag: tag.clone(),
        context_tar,
        dockerfile: "Dockerfile".into(),
        build_args: build_args(settings),
        labels: labels(recipe, &key),
        // Builds reach package indexes; runs stay on network none.
        network_mode: "bridge".into(),
    };
    let mut on_build_line = |line: &str| {
        log.line(line);
        on_line(line);
    };
    let build = engine.build_image(spec, &mut on_build_line);
    // Dropping the build's stream closes its connection, which stops the engine's build.
    let result = tokio::select! {
        result = tokio::time::timeout(BUILD_TIMEOUT, build) => Some(result),
        () = cancel.cancelled() => None,
    };
    let Some(result) = result else {
        // Layers the build made so far go too.
        if let Some(layer) = &log.last_layer {
            let _ = engine.remove_image(layer).await;
        }
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
            // Untagged layers of a failed build go too; layers other images build on stay
            // (the engine refuses to remove those, which is fine).
            if let Some(layer) = &log.last_layer {
                let _ = engine.remove_image(layer).await;
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
            if let Some(layer) = &log.last_layer {
                let _ = engine.remove_image(layer).await;
            }
            Err(EnvError::BuildTimedOut { tag, log: log_path })
        }
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
    let bytes = std::fs::read(path).map_err(|e| EnvError::CaBundle {
        path: path.to_path_buf(),
        problem: format!("cannot read: {e}"),
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

/// Takes an exclusive lock on a file, waiting for another process that holds it; the lock is
/// held until the returned file is dropped. `None` when cancelled while waiting.
async fn lock_file(
    path: &Path,
    cancel: &CancellationToken,
) -> Result<Option<std::fs::File>, EnvError> {
    let state_error = |source| EnvError::State {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(state_error)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(state_error)?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(state_error(e)),
        }
        tokio::select! {
            () = tokio::time::sleep(LOCK_RETRY) => {}
            () = cancel.cancelled() => return Ok(None),
        }
    }
}

/// The full log of one build on disk, plus what a failure message quotes.
struct BuildLog {
    file: Option<std::io::BufWriter<std::fs::File>>,
    tail: VecDeque<String>,
    last_step: Option<String>,
    /// The newest layer the build made, so a failed build's layers can be removed.
    last_layer: Option<String>,
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
        let file = std::fs::File::create(path).map_err(state_error)?;
        Ok(BuildLog {
            file: Some(std::io::BufWriter::new(file)),
            tail: VecDeque::new(),
            last_step: None,
            last_layer: None,
        })
    }

    fn line(&mut self, text: &str) {
        if let Some(file) = &mut self.file
            && file
                .write_all(text.as_bytes())
                .and_then(|()| file.flush())
                .is_err()
        {
            // A full disk must not fail the build; the log is a convenience.
            self.file = None;
        }
        for line in text.lines() {
            let line = strip_ansi(line);
            let line = line.trim_end();
            if let Some(layer) = line.strip_prefix(" ---> ") {
                if layer.len() == 12 && layer.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.last_layer = Some(layer.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with("Removing intermediate") {
                continue;
            }
            if let Some(step) = line.strip_prefix("Step ") {
                // "Step 5/16 : RUN ..." -> "step 5/16: RUN ..." (shortened); its output starts now.
                let (number, instruction) = step.split_once(" : ").unwrap_or((step, ""));
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
            if self.tail.len() == FAILURE_TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_string());
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
        assert_eq!(log.last_layer.as_deref(), Some("0123456789ab"));
        drop(log);
        let written = std::fs::read_to_string(dir.path().join("b.log")).expect("read");
        assert!(written.contains("line 0") && written.contains("line 29"));
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
        };
        let args = build_args(&settings);
        assert_eq!(args["PIP_INDEX_URL"], "https://pypi.example/simple");
        assert_eq!(args["HTTPS_PROXY"], "http://proxy:3128");
        assert!(!args.contains_key("NPM_CONFIG_REGISTRY"));
    }

    #[tokio::test]
    async fn a_file_lock_is_exclusive_until_dropped() {
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
        assert!(other.try_lock().is_ok(), "free once dropped");
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
        use crate::envimage::recipe::{Installer, Manifests};

        /// A recipe no other test uses (builds are single-flight per key, process-wide).
        fn recipe(unique: &str) -> EnvRecipe {
            EnvRecipe {
                runtime: "python".into(),
                version: "3.11.2".into(),
                base_image_id: "sha256:base".into(),
                manifests: Manifests {
                    installer: Installer::Pip,
                    files: vec![("requirements.txt".into(), unique.as_bytes().to_vec())],
                },
                index: IndexSettings::default(),
            }
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
