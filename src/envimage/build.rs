//! Building an environment image once: concurrent runs that need the same missing environment
//! wait for one build (a lock per key, in this process and across processes), a failed build
//! leaves no tag, and every build's log is kept in the state folder.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use super::recipe::{EnvRecipe, IndexSettings, RECIPE_FORMAT};
use crate::engine::{BuildSpec, Engine, EngineError};

/// How long one environment build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lines of build output quoted in a failure.
const FAILURE_TAIL_LINES: usize = 15;
/// Proxy variables passed to builds as build arguments (Docker keeps these out of the history).
const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ftp_proxy",
];

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

impl BuildSettings {
    /// Settings from packbox's environment.
    pub fn from_env() -> BuildSettings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        BuildSettings {
            ca_bundle: var("PACKBOX_BUILD_CA_BUNDLE").map(PathBuf::from),
            index: IndexSettings {
                pip_index_url: var("PACKBOX_PIP_INDEX_URL"),
                npm_registry: var("PACKBOX_NPM_REGISTRY"),
            },
            proxies: PROXY_VARIABLES
                .iter()
                .filter_map(|name| Some((name.to_string(), var(name)?)))
                .collect(),
        }
    }
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
    engine: &Engine,
    recipe: &EnvRecipe,
    settings: &BuildSettings,
    state_dir: &Path,
    mut on_line: impl FnMut(&str),
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
    let _in_process = in_process.lock().await;
    let _across_processes = lock_file(&state_dir.join("locks").join(format!("{key}.lock"))).await?;
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
    let build = engine.build_image(spec, |line| {
        log.line(line);
        on_line(line);
    });
    let result = tokio::time::timeout(BUILD_TIMEOUT, build).await;
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
        Err(_) => Err(EnvError::BuildTimedOut { tag, log: log_path }),
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

/// Takes an exclusive lock on a file (waiting for it), held until the returned file is dropped.
async fn lock_file(path: &Path) -> Result<std::fs::File, EnvError> {
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
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| state_error(std::io::Error::other(e)))?
        .map_err(state_error)
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
        let held = lock_file(&path).await.expect("first lock");
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        assert!(other.try_lock().is_err(), "second lock must wait");
        drop(held);
        assert!(other.try_lock().is_ok(), "free once dropped");
    }
}
