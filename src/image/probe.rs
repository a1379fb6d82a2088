//! Which runtime versions exist is a fact about images, not about the catalog: each version's
//! probe runs in a throw-away container of its image, and only versions whose probe answered
//! with the declared version are available for selection.
//!
//! Results are cached in the state folder by image id (and probe definition), so a second
//! verification starts no container until an image changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Runtime, RuntimeVersion};
use crate::common::error_text::chain;
use crate::contract::exit::Ending;
use crate::engine::{ContainerEngine, SharedEngine};
use crate::image::runtime;
use crate::lifecycle::owner::Owner;
use crate::lifecycle::{self, RunIo, RunLimits};
use crate::sandbox::seccomp::Kernel;
use crate::sandbox::{SandboxPolicy, Workload};
use crate::version::Candidate;

/// How long one probe may run before its version counts as unavailable, unless the catalog says.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many probes (and image builds) run at once.
const PROBE_CONCURRENCY: usize = 4;
/// Bytes of probe output kept: a version line is short.
const PROBE_OUTPUT_LIMIT: usize = 64 << 10;
/// Bumped when the meaning of a cached result changes, so old caches are ignored.
const CACHE_FORMAT: u32 = 1;

/// What is known about one catalog version after verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionStatus {
    /// The catalog's name for the runtime.
    pub runtime: String,
    /// The version the catalog declares (`3.11`).
    pub version: String,
    /// The runtime image the catalog names for it.
    pub image: String,
    /// The engine's id of that image; `None` when it is not there (or could not be made).
    pub image_id: Option<String>,
    /// The full version the probe found (`3.11.2`).
    pub detected_version: Option<String>,
    /// `None` when the version has not been verified (only from `list`).
    pub available: Option<bool>,
    /// Why the version is not available (no image, a failed or timed-out probe, a different
    /// version found).
    pub reason: Option<String>,
    /// When it was verified (RFC 3339; for a cached result, when the probe ran).
    pub verified_at: Option<String>,
    /// Whether the result came from the cache rather than a probe container.
    pub cached: bool,
}

impl VersionStatus {
    /// The detected full version, else the declared one.
    pub fn full_version(&self) -> &str {
        self.detected_version.as_deref().unwrap_or(&self.version)
    }

    /// This version as the version selector sees it: declared, and detected when probed.
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            declared: &self.version,
            detected: self.detected_version.as_deref(),
        }
    }

    /// Whether this version may be selected for a run.
    pub fn is_available(&self) -> bool {
        self.available == Some(true)
    }
}

/// A `PACKBOX_RUNTIMES` entry that names no runtime.
#[derive(Debug, thiserror::Error)]
#[error("PACKBOX_RUNTIMES: `{name}` is not a known runtime or alias (known: {known})")]
pub struct UnknownRuntimeFilter {
    /// The entry as given.
    pub name: String,
    /// The catalog's runtime names, comma-separated.
    pub known: String,
}

/// The runtimes to consider: all of the catalog's but those built on demand, or those a
/// comma-separated list (aliases accepted, as in `PACKBOX_RUNTIMES=python,nodejs`) names.
pub fn filter_runtimes<'c>(
    catalog: &'c Catalog,
    list: Option<&str>,
) -> Result<Vec<&'c Runtime>, UnknownRuntimeFilter> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok(catalog.runtimes().iter().filter(|r| !r.on_demand).collect());
    };
    let mut wanted = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let runtime = catalog.resolve(name).ok_or_else(|| UnknownRuntimeFilter {
            name: name.to_string(),
            known: catalog
                .runtimes()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        wanted.push(runtime.name.clone());
    }
    Ok(catalog
        .runtimes()
        .iter()
        .filter(|r| wanted.contains(&r.name))
        .collect())
}

/// Probe results kept between runs, keyed by image id and probe definition.
#[derive(Debug)]
pub struct ProbeCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, CachedProbe>>,
    /// Set when a probe added an entry: only then is the file written.
    dirty: AtomicBool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedProbe {
    detected_version: Option<String>,
    available: bool,
    reason: Option<String>,
    verified_at: String,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: BTreeMap<String, CachedProbe>,
}

impl ProbeCache {
    /// The cache in the state folder; a missing or unreadable cache starts empty (it only saves
    /// work, it never decides anything on its own).
    pub fn open(state_dir: &Path) -> ProbeCache {
        let path = state_dir.join("probes.json");
        let entries = ProbeCache::read_file(&path);
        ProbeCache {
            path,
            entries: Mutex::new(entries),
            dirty: AtomicBool::new(false),
        }
    }

    fn read_file(path: &Path) -> BTreeMap<String, CachedProbe> {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|file| file.format == CACHE_FORMAT)
            .map(|file| file.entries)
            .unwrap_or_default()
    }

    fn get(&self, key: &str) -> Option<CachedProbe> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: String, probe: CachedProbe) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, probe);
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// Writes new results back, merged with what other processes wrote meanwhile; a failure is
    /// logged, not fatal: the next run probes again. Nothing new, nothing written.
    fn save(&self) {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return;
        }
        let Ok(entries) = self.entries.lock() else {
            return;
        };
        let mut merged = ProbeCache::read_file(&self.path);
        merged.extend(entries.clone());
        let file = CacheFile {
            format: CACHE_FORMAT,
            entries: merged,
        };
        let written = serde_json::to_vec_pretty(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::common::state::write_atomically(&self.path, &bytes));
        if let Err(e) = written {
            tracing::warn!("cannot save probe cache {}: {e}", self.path.display());
        }
    }
}

/// Verifies versions against their images, concurrently and bounded: each image is made present
/// (present, pulled, or built from its recipe), then its probe runs unless the cache already
/// knows the answer for that image id. Results come back in catalog order.
pub async fn verify(
    engine: &SharedEngine,
    catalog: &Catalog,
    runtimes: &[&Runtime],
    cache: &ProbeCache,
    owner: &Owner,
    cancel: &CancellationToken,
) -> Vec<VersionStatus> {
    let targets: Vec<(&Runtime, &RuntimeVersion)> = runtimes
        .iter()
        .flat_map(|r| r.versions.iter().map(move |v| (*r, v)))
        .collect();
    // The stream takes indices, not references: a closure over borrowed tuples makes the
    // future's `Send` unprovable to the compiler, and a server spawns runs.
    let targets = &targets;
    let mut results: Vec<(usize, VersionStatus)> = futures::stream::iter(0..targets.len())
        .map(|index| async move {
            let (runtime, version) = targets[index];
            let status = verify_one(engine, catalog, runtime, version, cache, owner, cancel).await;
            (index, status)
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await;
    results.sort_by_key(|(index, _)| *index);
    cache.save();
    results.into_iter().map(|(_, status)| status).collect()
}

/// What the cache says about each version, without starting or building anything.
pub async fn list(
    engine: &dyn ContainerEngine,
    runtimes: &[&Runtime],
    cache: &ProbeCache,
) -> Vec<VersionStatus> {
    let mut statuses = Vec::new();
    for runtime in runtimes {
        for version in &runtime.versions {
            let mut status = unverified(runtime, version);
            match engine.image_id(&version.image).await {
                Ok(Some(id)) => {
                    if let Some(hit) = cache.get(&cache_key(&id, version)) {
                        status = from_cache(runtime, version, &id, hit);
                    }
                    status.image_id = Some(id);
                }
                Ok(None) => status.reason = Some("image not present".into()),
                Err(e) => status.reason = Some(chain(&e)),
            }
            statuses.push(status);
        }
    }
    statuses
}

async fn verify_one(
    engine: &SharedEngine,
    catalog: &Catalog,
    runtime: &Runtime,
    version: &RuntimeVersion,
    cache: &ProbeCache,
    owner: &Owner,
    cancel: &CancellationToken,
) -> VersionStatus {
    let mut status = unverified(runtime, version);
    let ensured = runtime::ensure(engine.as_ref(), catalog, runtime, version, cancel, |_| {}).await;
    let image_id = match ensured {
        Ok(state) => state.id().to_string(),
        Err(e) => {
            status.available = Some(false);
            status.reason = Some(chain(&e));
            status.verified_at = Some(now());
            return status;
        }
    };
    let key = cache_key(&image_id, version);
    if let Some(hit) = cache.get(&key) {
        tracing::debug!(
            runtime = %runtime.name,
            version = %version.version,
            image_id = %image_id,
            detected = hit.detected_version.as_deref(),
            available = hit.available,
            "probe cache hit"
        );
        return from_cache(runtime, version, &image_id, hit);
    }
    tracing::debug!(
        runtime = %runtime.name,
        version = %version.version,
        image_id = %image_id,
        "probe cache miss: probing"
    );
    status.image_id = Some(image_id.clone());
    status.verified_at = Some(now());
    match run_probe(engine, runtime, version, &image_id, owner, cancel).await {
        Ok(verdict) => {
            status.available = Some(verdict.available);
            status.detected_version = verdict.detected_version.clone();
            status.reason = verdict.reason.clone();
            cache.put(
                key,
                CachedProbe {
                    detected_version: verdict.detected_version,
                    available: verdict.available,
                    reason: verdict.reason,
                    verified_at: status.verified_at.clone().unwrap_or_default(),
                },
            );
        }
        // Timeouts and engine trouble may pass: reported, never cached.
        Err(reason) => {
            status.available = Some(false);
            status.reason = Some(reason);
        }
    }
    status
}

/// The answer of a probe that ran to its end (and so can be cached).
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    available: bool,
    detected_version: Option<String>,
    reason: Option<String>,
}

async fn run_probe(
    engine: &SharedEngine,
    runtime: &Runtime,
    version: &RuntimeVersion,
    image_id: &str,
    owner: &Owner,
    cancel: &CancellationToken,
) -> Result<Verdict, String> {
    let timeout = version
        .probe
        .timeout_seconds
        .map_or(PROBE_TIMEOUT, Duration::from_secs);
    let mut labels = owner.labels();
    labels.extend([
        ("packbox.kind".to_string(), "probe".to_string()),
        ("packbox.runtime".to_string(), runtime.name.clone()),
        ("packbox.version".to_string(), version.version.clone()),
    ]);
    // Probes run on the engine's default runtime, answered by the host's kernel. A probe runs
    // the catalog's version command, bounded by its timeout and output cap, never pack code: on
    // an engine that drops resource limits (rootless Podman on cgroup v1) it runs all the same,
    // so that such an engine's versions can be listed; the runs themselves are refused there
    // unless the operator allows it.
    let policy = SandboxPolicy {
        allow_weaker: true,
        ..SandboxPolicy::default()
    };
    let spec = policy.container_spec(
        Workload {
            image: image_id.to_string(),
            cmd: version.probe.command.clone(),
            env: Vec::new(),
            labels,
            pack: None,
        },
        Kernel::Host,
    );
    let limits = RunLimits {
        timeout,
        grace: Duration::from_secs(1),
        max_output: PROBE_OUTPUT_LIMIT,
    };
    let name = format!("packbox-probe-{}", uuid::Uuid::new_v4());
    let io = RunIo {
        stdin: Vec::new(),
        limits: &limits,
        cancel,
        on_output: &mut |_, _| {},
        artifacts: None,
    };
    let exit = lifecycle::run::run_container(engine, &name, &spec, io)
        .await
        .map_err(|e| format!("probe could not run: {}", chain(&e)))?;
    if exit.ending == Ending::Cancelled {
        return Err("probe cancelled".into());
    }
    if exit.ending == Ending::TimedOut {
        return Err(format!(
            "probe `{}` did not finish within {} s",
            version.probe.command.join(" "),
            timeout.as_secs()
        ));
    }
    Ok(judge(
        version,
        exit.exit_code.unwrap_or(-1),
        &exit.stdout.text,
        &exit.stderr.text,
    ))
}

/// Reads a probe's answer: expected exit code, the pattern's first group, and agreement with the
/// declared version.
fn judge(version: &RuntimeVersion, exit_code: i64, stdout: &str, stderr: &str) -> Verdict {
    let probe = &version.probe;
    let command = probe.command.join(" ");
    let unavailable = |reason: String| Verdict {
        available: false,
        detected_version: None,
        reason: Some(reason),
    };
    if exit_code != probe.exit_code {
        return unavailable(format!(
            "probe `{command}` exited with {exit_code}, expected {}",
            probe.exit_code
        ));
    }
    let pattern = match Regex::new(&probe.pattern) {
        Ok(pattern) => pattern,
        Err(e) => return unavailable(format!("probe pattern `{}` is invalid: {e}", probe.pattern)),
    };
    // Some interpreters print their version on stderr.
    let output = format!("{stdout}\n{stderr}");
    let Some(detected) = pattern
        .captures(&output)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
    else {
        let first_line = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return unavailable(format!(
            "probe output `{}` does not match `{}`",
            first_line.chars().take(200).collect::<String>(),
            probe.pattern
        ));
    };
    if !agrees(&version.version, &detected) {
        return Verdict {
            available: false,
            reason: Some(format!(
                "the catalog declares {} but the image holds {detected}",
                version.version
            )),
            detected_version: Some(detected),
        };
    }
    Verdict {
        available: true,
        detected_version: Some(detected),
        reason: None,
    }
}

/// Whether a detected version is the declared one: every declared component equals the detected
/// component at its place (`3.11` agrees with `3.11.2`, not with `3.1.2` nor `3.12.0`).
fn agrees(declared: &str, detected: &str) -> bool {
    let detected: Vec<&str> = detected.trim_start_matches('v').split('.').collect();
    let declared: Vec<&str> = declared.trim_start_matches('v').split('.').collect();
    declared.len() <= detected.len()
        && declared.iter().zip(&detected).all(|(want, got)| {
            match (want.parse::<u64>(), got.parse::<u64>()) {
                (Ok(want), Ok(got)) => want == got,
                _ => want == got,
            }
        })
}

fn cache_key(image_id: &str, version: &RuntimeVersion) -> String {
    let definition = serde_json::json!([
        image_id,
        version.version,
        version.probe.command,
        version.probe.exit_code,
        version.probe.pattern,
    ]);
    hex::encode(Sha256::digest(definition.to_string().as_bytes()))
}

fn unverified(runtime: &Runtime, version: &RuntimeVersion) -> VersionStatus {
    VersionStatus {
        runtime: runtime.name.clone(),
        version: version.version.clone(),
        image: version.image.clone(),
        image_id: None,
        detected_version: None,
        available: None,
        reason: None,
        verified_at: None,
        cached: false,
    }
}

fn from_cache(
    runtime: &Runtime,
    version: &RuntimeVersion,
    image_id: &str,
    hit: CachedProbe,
) -> VersionStatus {
    VersionStatus {
        image_id: Some(image_id.to_string()),
        detected_version: hit.detected_version,
        available: Some(hit.available),
        reason: hit.reason,
        verified_at: Some(hit.verified_at),
        cached: true,
        ..unverified(runtime, version)
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Probe;

    fn version(declared: &str, pattern: &str) -> RuntimeVersion {
        RuntimeVersion {
            version: declared.into(),
            image: "img".into(),
            recipe: None,
            probe: Probe {
                command: vec!["python3".into(), "--version".into()],
                exit_code: 0,
                pattern: pattern.into(),
                timeout_seconds: None,
            },
        }
    }

    const PYTHON: &str = r"Python (\d+\.\d+\.\d+)";

    #[test]
    fn declared_version_must_agree_component_by_component() {
        assert!(agrees("3.11", "3.11.2"));
        assert!(agrees("3", "3.11.2"));
        assert!(agrees("20", "v20.19.2"));
        assert!(!agrees("3.1", "3.11.2"));
        assert!(!agrees("3.12", "3.11.2"));
        assert!(!agrees("3.11.2.1", "3.11.2"));
    }

    #[test]
    fn a_matching_probe_makes_the_version_available() {
        let verdict = judge(&version("3.11", PYTHON), 0, "Python 3.11.2\n", "");
        assert_eq!(
            verdict,
            Verdict {
                available: true,
                detected_version: Some("3.11.2".into()),
                reason: None
            }
        );
    }

    #[test]
    fn version_on_stderr_is_read_too() {
        let verdict = judge(&version("2.7", PYTHON), 0, "", "Python 2.7.18\n");
        assert!(verdict.available);
    }

    #[test]
    fn a_different_version_names_both() {
        let verdict = judge(&version("3.12", PYTHON), 0, "Python 3.11.2\n", "");
        assert!(!verdict.available);
        let reason = verdict.reason.expect("a reason");
        assert!(
            reason.contains("3.12") && reason.contains("3.11.2"),
            "{reason}"
        );
    }

    #[test]
    fn unexpected_exit_code_or_output_is_unavailable() {
        let verdict = judge(&version("3.11", PYTHON), 127, "", "not found");
        assert!(verdict.reason.expect("reason").contains("exited with 127"));
        let verdict = judge(&version("3.11", PYTHON), 0, "hello\n", "");
        assert!(verdict.reason.expect("reason").contains("does not match"));
    }

    #[test]
    fn cache_key_changes_with_image_and_probe() {
        let v = version("3.11", PYTHON);
        let base = cache_key("sha256:a", &v);
        assert_eq!(base, cache_key("sha256:a", &v));
        assert_ne!(base, cache_key("sha256:b", &v));
        let mut other = v.clone();
        other.probe.pattern = r"(\d+)".into();
        assert_ne!(base, cache_key("sha256:a", &other));
    }

    #[test]
    fn runtime_filter_accepts_aliases_and_names_unknown_ones() {
        let catalog = Catalog::builtin().expect("valid");
        let picked = filter_runtimes(&catalog, Some("python3, nodejs")).expect("known");
        let names: Vec<_> = picked.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["python", "node"]);
        // Runtimes built on demand are left out unless named.
        assert_eq!(filter_runtimes(&catalog, None).expect("all").len(), 4);
        let named = filter_runtimes(&catalog, Some("rb,java")).expect("named");
        assert_eq!(named.len(), 2);
        let err = filter_runtimes(&catalog, Some("python,cobol")).expect_err("cobol unknown");
        assert!(err.to_string().contains("`cobol`"), "{err}");
    }
}
