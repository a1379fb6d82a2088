//! `packbox doctor`: whether everything a run needs holds, and for each problem the next step.
//!
//! One check per concern, in the order a run meets them: which engine and why, whether it
//! answers (TLS, API version), what it is (version, storage, cgroups, OCI runtimes), the
//! catalog's runtime images (present, verified by a probe, from the probe cache: doctor starts
//! no container and builds nothing), the state folder, the build CA bundle. A check that needs
//! the engine is skipped when the engine cannot be reached. Separate from the CLI so the
//! library can run it too (an embedding service's health endpoint).

use std::path::Path;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::common::error_text::chain;
use crate::engine::endpoint::{self, Endpoint};
use crate::engine::{ContainerEngine, DockerEngine, EngineError};
use crate::image::probe::{self, ProbeCache, VersionStatus};
use crate::settings::{PackDelivery, Settings, SettingsError};

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Holds.
    Ok,
    /// Worth knowing, but runs work.
    Warn,
    /// Runs cannot work until it is fixed.
    Fail,
    /// Not checked, because a check it depends on failed.
    Skipped,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Short, stable name (`endpoint`, `connection`, `engine`, `images`, `state`, `build_ca`).
    pub name: &'static str,
    /// Whether it holds, and how much it matters when it does not.
    pub status: CheckStatus,
    /// One line saying what was found.
    pub summary: String,
    /// Further lines (why this endpoint, each image, ...).
    pub details: Vec<String>,
    /// What to do about a warning or failure.
    pub next_step: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: CheckStatus, summary: impl Into<String>) -> Check {
        Check {
            name,
            status,
            summary: summary.into(),
            details: Vec::new(),
            next_step: None,
        }
    }

    fn details(mut self, details: Vec<String>) -> Check {
        self.details = details;
        self
    }

    fn next_step(mut self, step: impl Into<String>) -> Check {
        self.next_step = Some(step.into());
        self
    }
}

/// Everything doctor found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Whether everything a run needs holds (no check failed or was skipped).
    pub ready: bool,
    /// The engine chosen, when one could be.
    pub endpoint: Option<Endpoint>,
    /// Each check in the order it ran, later ones depending on earlier ones.
    pub checks: Vec<Check>,
}

/// Runs every check on resolved settings. `settings` is the result of resolving them: when
/// that failed, the failure is the first check and nothing that needs the settings is checked.
pub async fn diagnose(settings: Result<&Settings, &SettingsError>, catalog: &Catalog) -> Report {
    let mut checks = Vec::new();
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            let check = Check::new("endpoint", CheckStatus::Fail, chain(error));
            checks.push(match error.endpoint_hint() {
                Some(hint) => check.next_step(hint),
                None => check.next_step("fix the setting named above (`packbox config show`)"),
            });
            for name in ["connection", "engine", "images", "state", "build_ca"] {
                checks.push(skipped(name, "the settings cannot be resolved"));
            }
            return Report {
                ready: false,
                endpoint: None,
                checks,
            };
        }
    };
    let endpoint = &settings.endpoint;
    checks.push(endpoint_check(endpoint, settings.pack_delivery));

    let engine = match DockerEngine::connect(&endpoint.host, &endpoint.transport).await {
        Ok(engine) => {
            checks.push(
                Check::new(
                    "connection",
                    CheckStatus::Ok,
                    format!("{} answers", endpoint.host),
                )
                .details(vec![if endpoint.uses_tls() {
                    "mutual TLS: the engine's certificate verified, packbox's accepted".into()
                } else if endpoint.is_local_socket() {
                    "local Unix socket".into()
                } else {
                    "plain TCP, no TLS".into()
                }]),
            );
            Some(engine)
        }
        Err(error) => {
            checks.push(connection_failure(&error));
            None
        }
    };

    match &engine {
        Some(engine) => {
            checks.push(engine_check(engine).await);
            checks.push(images_check(engine, catalog, &settings.state_dir).await);
        }
        None => {
            checks.push(skipped("engine", "the engine cannot be reached"));
            checks.push(skipped("images", "the engine cannot be reached"));
        }
    }
    checks.push(state_check(&settings.state_dir));
    checks.push(build_ca_check(settings.build.ca_bundle.as_deref()));

    let ready = checks
        .iter()
        .all(|c| matches!(c.status, CheckStatus::Ok | CheckStatus::Warn));
    Report {
        ready,
        endpoint: Some(endpoint.clone()),
        checks,
    }
}

fn skipped(name: &'static str, why: &str) -> Check {
    Check::new(name, CheckStatus::Skipped, format!("not checked: {why}"))
}

fn endpoint_check(endpoint: &Endpoint, delivery: PackDelivery) -> Check {
    let mut details = endpoint.reasons.clone();
    if let Some(tls) = endpoint.tls() {
        details.push(format!(
            "ca {}, cert {}, key {}",
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ));
    }
    details.push(match delivery {
        PackDelivery::Volume => {
            "packs delivered by content (a read-only volume per pack content)".to_string()
        }
        _ => "packs delivered by bind mount (the engine sees this machine's files)".to_string(),
    });
    let plain_tcp = matches!(
        endpoint.transport,
        endpoint::Transport::Tcp { tls: None, .. }
    );
    let check = Check::new(
        "endpoint",
        if plain_tcp {
            CheckStatus::Warn
        } else {
            CheckStatus::Ok
        },
        format!("{} (from {})", endpoint.host, endpoint.origin),
    )
    .details(details);
    if plain_tcp {
        check.next_step(
            "serve the engine with TLS (dockerd --tlsverify) and set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH",
        )
    } else {
        check
    }
}

fn connection_failure(error: &EngineError) -> Check {
    let summary = chain(error);
    let step = match error {
        EngineError::Unreachable { problem, .. } => Some(problem.hint()),
        _ => None,
    };
    let check = Check::new("connection", CheckStatus::Fail, summary);
    match step {
        Some(step) => check.next_step(step),
        None => check,
    }
}

async fn engine_check(engine: &dyn ContainerEngine) -> Check {
    let identity = engine.identity();
    match engine.info().await {
        Ok(info) => {
            let details = vec![
                format!(
                    "API {}, {} {} on {}, kernel {}",
                    info.api_version, info.os, info.arch, info.name, info.kernel
                ),
                format!("storage driver {}", info.storage_driver),
                format!(
                    "cgroup v{} ({} driver)",
                    info.cgroup_version, info.cgroup_driver
                ),
                format!(
                    "OCI runtimes {} (default {})",
                    info.oci_runtimes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    info.default_runtime
                ),
                format!("security options {}", info.security_options.join("; ")),
            ];
            let summary = format!("{identity} (API {})", info.api_version);
            let check = Check::new("engine", CheckStatus::Ok, summary).details(details);
            if identity.is_rootless_podman() && info.cgroup_version == "1" {
                Check {
                    status: CheckStatus::Warn,
                    ..check
                }
                .next_step(
                    "rootless Podman on cgroup v1 applies no memory, process, CPU or open-file limit: packbox refuses runs there unless --allow-weaker-sandbox (then each is listed in sandbox.weaker_than_default); use rootful Podman, Docker, or a cgroup v2 host with the controllers delegated to the user",
                )
            } else {
                check
            }
        }
        Err(error) => Check::new("engine", CheckStatus::Fail, chain(&error)).next_step(
            "the engine answered the version request but not the info request: check its log",
        ),
    }
}

async fn images_check(engine: &dyn ContainerEngine, catalog: &Catalog, state_dir: &Path) -> Check {
    let runtimes: Vec<_> = catalog.runtimes().iter().collect();
    let cache = ProbeCache::open(state_dir);
    let statuses = probe::list(engine, &runtimes, &cache).await;
    images_summary(&statuses)
}

/// Judges the catalog's images from what the probe cache and the engine say.
fn images_summary(statuses: &[VersionStatus]) -> Check {
    let present = statuses.iter().filter(|s| s.image_id.is_some()).count();
    let verified = statuses
        .iter()
        .filter(|s| s.available == Some(true))
        .count();
    let details = statuses
        .iter()
        .map(|s| {
            let state = match (&s.image_id, s.available) {
                (None, _) => "missing".to_string(),
                (Some(_), Some(true)) => format!("verified {}", s.full_version()),
                (Some(_), Some(false)) => format!(
                    "NOT available: {}",
                    s.reason.as_deref().unwrap_or("the probe failed")
                ),
                (Some(_), None) => "present, not verified yet".to_string(),
            };
            format!("{} {} ({}): {state}", s.runtime, s.version, s.image)
        })
        .collect();
    let summary = format!(
        "{present} of {} runtime images present, {verified} verified",
        statuses.len()
    );
    let (status, step) = if present == 0 {
        (
            CheckStatus::Fail,
            Some(
                "`packbox images build` (scripts/build-images) makes them, or `packbox images copy --to ENGINE` from an engine that has them",
            ),
        )
    } else if present < statuses.len() {
        (
            CheckStatus::Warn,
            Some(
                "actions of the missing versions cannot run: `packbox images build` or `packbox images copy --to ENGINE`",
            ),
        )
    } else if verified < present {
        (
            CheckStatus::Warn,
            Some("`packbox runtimes verify` probes them (otherwise the first run does)"),
        )
    } else {
        (CheckStatus::Ok, None)
    };
    let check = Check::new("images", status, summary).details(details);
    match step {
        Some(step) => check.next_step(step),
        None => check,
    }
}

/// Whether a file can be made in the state folder (and removed again).
fn state_check(state_dir: &Path) -> Check {
    let writable = std::fs::create_dir_all(state_dir)
        .and_then(|()| tempfile::NamedTempFile::new_in(state_dir).map(drop));
    match writable {
        Ok(()) => Check::new(
            "state",
            CheckStatus::Ok,
            format!("{} is writable", state_dir.display()),
        ),
        Err(e) => Check::new(
            "state",
            CheckStatus::Fail,
            format!("state folder {} is not writable ({e})", state_dir.display()),
        )
        .next_step("set PACKBOX_STATE_DIR to a folder this user may write"),
    }
}

fn build_ca_check(bundle: Option<&Path>) -> Check {
    let Some(path) = bundle else {
        return Check::new(
            "build_ca",
            CheckStatus::Ok,
            "PACKBOX_BUILD_CA_BUNDLE not set: pip and npm use their own CA certificates",
        );
    };
    match crate::image::env::build::read_ca_bundle(path) {
        Ok(_) => Check::new(
            "build_ca",
            CheckStatus::Ok,
            format!("build CA bundle {} is a PEM bundle", path.display()),
        ),
        Err(e) => Check::new("build_ca", CheckStatus::Fail, e.to_string()).next_step(
            "point PACKBOX_BUILD_CA_BUNDLE at a PEM file of CA certificates, or unset it",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(image_id: Option<&str>, available: Option<bool>) -> VersionStatus {
        VersionStatus {
            runtime: "python".into(),
            version: "3.11".into(),
            image: "packbox/python:3.11".into(),
            image_id: image_id.map(str::to_string),
            detected_version: available.map(|_| "3.11.2".into()),
            available,
            reason: None,
            verified_at: None,
            cached: true,
        }
    }

    #[test]
    fn no_image_at_all_fails_some_missing_warns_all_verified_is_ok() {
        let none = images_summary(&[status(None, None), status(None, None)]);
        assert_eq!(none.status, CheckStatus::Fail);
        assert!(none.next_step.is_some());
        let some = images_summary(&[status(Some("sha256:a"), Some(true)), status(None, None)]);
        assert_eq!(some.status, CheckStatus::Warn);
        assert!(some.details[1].ends_with("missing"), "{:?}", some.details);
        let unverified = images_summary(&[status(Some("sha256:a"), None)]);
        assert_eq!(unverified.status, CheckStatus::Warn);
        let all = images_summary(&[status(Some("sha256:a"), Some(true))]);
        assert_eq!(all.status, CheckStatus::Ok);
        assert_eq!(all.summary, "1 of 1 runtime images present, 1 verified");
    }

    #[test]
    fn an_unwritable_state_folder_fails_with_a_next_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        // A folder below a regular file cannot be made, whoever runs the test.
        let check = state_check(&file.join("state"));
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.next_step.is_some());
        assert_eq!(state_check(dir.path()).status, CheckStatus::Ok);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_build_ca_bundle_that_is_not_pem_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, "nope").expect("write");
        assert_eq!(build_ca_check(Some(&bundle)).status, CheckStatus::Fail);
        assert_eq!(build_ca_check(None).status, CheckStatus::Ok);
    }

    #[test]
    fn plain_tcp_is_a_warning() {
        let env = crate::settings::Environment::from_pairs([("DOCKER_HOST", "tcp://h:2375")]);
        let endpoint = endpoint::resolve(None, &env).expect("resolves");
        let check = endpoint_check(&endpoint, PackDelivery::Volume);
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(check.next_step.is_some());
        let env = crate::settings::Environment::from_pairs([]);
        let endpoint = endpoint::resolve(None, &env).expect("resolves");
        assert_eq!(
            endpoint_check(&endpoint, PackDelivery::Bind).status,
            CheckStatus::Ok
        );
    }
}
