//! The resolver: each setting picked from the first layer that has it (flags, file, environment,
//! default), checked against its bounds, and remembered for `config show`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::bounds::{
    self, any, check_placement, check_registry, count_in_range, in_range, parse_backend,
};
use super::show::without_credentials;
use super::sources::{Environment, PROXY_VARIABLES, default_state_dir};
use super::*;
use crate::engine::endpoint::{self, Endpoint};
use crate::image::env::{BuildSettings, DEFAULT_BUILD_MEMORY, IndexSettings};

/// Picks each setting from the first layer that has it, remembering where it came from.
pub(super) struct Resolver<'a> {
    pub(super) flags: &'a SettingsLayer,
    pub(super) file: &'a SettingsLayer,
    pub(super) env: &'a SettingsLayer,
    pub(super) file_name: Option<String>,
    pub(super) shown: Vec<ShownSetting>,
}

/// A value and where it came from.
pub(super) struct Picked<T> {
    pub(super) value: T,
    pub(super) source: Source,
}

impl Resolver<'_> {
    pub(super) fn pick<T: Clone>(
        &self,
        get: impl Fn(&SettingsLayer) -> Option<T>,
    ) -> Option<Picked<T>> {
        [
            (self.flags, Source::Flag),
            (self.file, Source::File),
            (self.env, Source::Env),
        ]
        .into_iter()
        .find_map(|(layer, source)| {
            Some(Picked {
                value: get(layer)?,
                source,
            })
        })
    }

    /// How an error names a source: the flag, the file, the environment.
    pub(super) fn source_name(&self, source: Source) -> String {
        match source {
            Source::Flag => "the command line".into(),
            Source::File => format!(
                "config file {}",
                self.file_name.as_deref().unwrap_or("(none)")
            ),
            Source::Env => "the environment".into(),
            Source::Default => "the defaults".into(),
        }
    }

    /// A setting with a default: picked, checked, shown.
    pub(super) fn setting<T: Clone + Serialize>(
        &mut self,
        key: &'static str,
        get: impl Fn(&SettingsLayer) -> Option<T>,
        default: T,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> Result<Picked<T>, SettingsError> {
        let picked = self.pick(get).unwrap_or(Picked {
            value: default,
            source: Source::Default,
        });
        check(&picked.value).map_err(|message| SettingsError::Value {
            setting: key.into(),
            source_name: self.source_name(picked.source),
            message,
        })?;
        self.show(key, &picked.value, picked.source);
        Ok(picked)
    }

    /// The engine: `engine` of the flags or the config file (an address or a docker context),
    /// else what the environment names, as the docker CLI finds it.
    pub(super) fn endpoint(&mut self, env: &Environment) -> Result<Endpoint, SettingsError> {
        let picked = [(self.flags, Source::Flag), (self.file, Source::File)]
            .into_iter()
            .find_map(|(layer, source)| Some((layer.engine.clone()?, source)));
        let resolved = match &picked {
            Some((value, Source::Flag)) => endpoint::resolve_flag("--engine", value, env),
            Some((value, _)) => {
                let name = format!(
                    "engine (config file {})",
                    self.file_name.as_deref().unwrap_or("?")
                );
                endpoint::resolve_flag(&name, value, env)
            }
            None => endpoint::resolve(None, env),
        };
        let endpoint = resolved.map_err(|e| SettingsError::Endpoint(Box::new(e)))?;
        let source = match (&picked, &endpoint.origin) {
            (Some((_, source)), _) => *source,
            (None, endpoint::Origin::Default) => Source::Default,
            (None, _) => Source::Env,
        };
        self.show("engine", &endpoint.host, source);
        if let Some(context) = &endpoint.context {
            self.show("engine_context", context, source);
        }
        if let Some(tls) = endpoint.tls() {
            self.show("engine_tls", &tls.source, source);
        }
        Ok(endpoint)
    }

    /// `swarm.placement` (`--placement`): each constraint checked, for the swarm backend only.
    fn placement(&mut self, backend: &str) -> Result<Vec<String>, SettingsError> {
        let Some(picked) = self.pick(|l| l.swarm.placement.clone()) else {
            self.show("swarm.placement", Vec::<String>::new(), Source::Default);
            return Ok(Vec::new());
        };
        let problem = picked
            .value
            .iter()
            .find_map(|constraint| check_placement(constraint).err())
            .or_else(|| {
                (backend != Backend::Swarm.name() && !picked.value.is_empty()).then(|| {
                    "only the swarm backend places runs (set backend: swarm or --backend swarm)"
                        .to_string()
                })
            });
        if let Some(message) = problem {
            return Err(SettingsError::Value {
                setting: "swarm.placement".into(),
                source_name: self.source_name(picked.source),
                message,
            });
        }
        self.show("swarm.placement", &picked.value, picked.source);
        Ok(picked.value)
    }

    pub(super) fn finish(
        mut self,
        env: &Environment,
        config_file: Option<PathBuf>,
    ) -> Result<Settings, SettingsError> {
        let endpoint = self.endpoint(env)?;
        let pack_delivery = self.setting(
            "pack_delivery",
            |l| l.pack_delivery,
            PackDelivery::Auto,
            any,
        )?;
        let backend = self.setting(
            "backend",
            |l| l.backend.clone(),
            Backend::Docker.name().to_string(),
            |b| parse_backend(b).map(|_| ()),
        )?;
        let registry = self.pick(|l| l.registry.clone());
        if let Some(picked) = &registry {
            let problem = check_registry(&picked.value).err().or_else(|| {
                (backend.value != Backend::Swarm.name()).then(|| {
                    "only the swarm backend uses a registry (set backend: swarm or --backend swarm)"
                        .to_string()
                })
            });
            if let Some(message) = problem {
                return Err(SettingsError::Value {
                    setting: "registry".into(),
                    source_name: self.source_name(picked.source),
                    message,
                });
            }
        }
        self.show(
            "registry",
            registry.as_ref().map(|p| &p.value),
            registry.as_ref().map_or(Source::Default, |p| p.source),
        );
        let placement = self.placement(&backend.value)?;
        let pack_delivery = match pack_delivery.value {
            PackDelivery::Auto
                if endpoint.is_local_socket() && !endpoint.runs_as_another_user() =>
            {
                PackDelivery::Bind
            }
            PackDelivery::Auto => PackDelivery::Volume,
            chosen => chosen,
        };
        let state_dir = self.setting(
            "state_dir",
            |l| l.state_dir.clone(),
            default_state_dir(env),
            any,
        )?;
        let catalog = self.pick(|l| l.catalog.clone());
        self.show(
            "catalog",
            catalog.as_ref().map(|p| &p.value),
            catalog.as_ref().map_or(Source::Default, |p| p.source),
        );
        let runtimes = self.pick(|l| l.runtimes.clone());
        self.show(
            "runtimes",
            runtimes.as_ref().map(|p| &p.value),
            runtimes.as_ref().map_or(Source::Default, |p| p.source),
        );
        let allow_pack_runtimes = self.setting(
            "build.allow_pack_runtimes",
            |l| l.build.allow_pack_runtimes,
            false,
            any,
        )?;
        let allow_system_packages = self.setting(
            "build.allow_system_packages",
            |l| l.build.allow_system_packages,
            false,
            any,
        )?;
        let (sandbox, isolation) = self.sandbox(&backend.value)?;
        let (network_policy, egress) = self.network()?;
        let run = self.run_defaults()?;
        let build = self.build(env)?;
        let serve = self.serve(env)?;
        let client = self.client(env)?;
        let keystore = self.keystore()?;
        Ok(Settings {
            endpoint,
            pack_delivery,
            backend: parse_backend(&backend.value).unwrap_or_default(),
            registry: registry.map(|p| p.value),
            placement,
            state_dir: state_dir.value,
            catalog_dir: catalog.map(|p| p.value),
            runtimes: runtimes.map(|p| p.value),
            allow_pack_runtimes: allow_pack_runtimes.value,
            allow_system_packages: allow_system_packages.value,
            sandbox,
            isolation,
            network: network_policy,
            egress,
            run,
            build,
            serve,
            client,
            keystore,
            config_file,
            shown: self.shown,
        })
    }

    /// The `run:` section: the timeout that overrides actions' own, the grace period between
    /// SIGTERM and SIGKILL, the bytes kept per stream.
    fn run_defaults(&mut self) -> Result<RunDefaults, SettingsError> {
        let timeout = self.pick(|l| l.run.timeout_seconds);
        if let Some(t) = &timeout {
            count_in_range(t.value, 1, bounds::MAX_TIMEOUT).map_err(|message| {
                SettingsError::Value {
                    setting: "run.timeout_seconds".into(),
                    source_name: self.source_name(t.source),
                    message,
                }
            })?;
        }
        self.show(
            "run.timeout_seconds",
            timeout.as_ref().map(|p| p.value),
            timeout.as_ref().map_or(Source::Default, |p| p.source),
        );
        let grace = self.setting(
            "run.grace_seconds",
            |l| l.run.grace_seconds,
            DEFAULT_GRACE.as_secs(),
            |v| count_in_range(*v, 0, bounds::MAX_GRACE),
        )?;
        let max_output = self.setting(
            "run.max_output",
            |l| l.run.max_output.map(|s| s.0),
            DEFAULT_MAX_OUTPUT as u64,
            |v| in_range(*v, bounds::MIN_OUTPUT, bounds::MAX_OUTPUT, "1 byte", "1g"),
        )?;
        let strict_parameters = self.setting(
            "run.strict_parameters",
            |l| l.run.strict_parameters,
            false,
            any,
        )?;
        let artifacts_max_files = self.setting(
            "run.artifacts_max_files",
            |l| l.run.artifacts_max_files,
            super::values::DEFAULT_ARTIFACTS_MAX_FILES,
            |v| count_in_range(*v, 0, bounds::MAX_ARTIFACT_FILES),
        )?;
        let artifacts_max_bytes = self.setting(
            "run.artifacts_max_bytes",
            |l| l.run.artifacts_max_bytes.map(|s| s.0),
            super::values::DEFAULT_ARTIFACTS_MAX_BYTES,
            |v| in_range(*v, 0, bounds::MAX_ARTIFACT_BYTES, "0 bytes", "1g"),
        )?;
        let artifacts_retention = self.setting(
            "run.artifacts_retention",
            |l| l.run.artifacts_retention.map(|a| a.0.as_secs()),
            super::values::DEFAULT_ARTIFACTS_RETENTION.as_secs(),
            |v| {
                let allowed = bounds::MIN_ARTIFACTS_RETENTION..=bounds::MAX_ARTIFACTS_RETENTION;
                if allowed.contains(v) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a duration from 1h to 100 years, found {v} seconds"
                    ))
                }
            },
        )?;
        Ok(RunDefaults {
            timeout: timeout.map(|t| Duration::from_secs(t.value)),
            grace: Duration::from_secs(grace.value),
            max_output: max_output.value as usize,
            strict_parameters: strict_parameters.value,
            artifacts_max_files: artifacts_max_files.value,
            artifacts_max_bytes: artifacts_max_bytes.value,
            artifacts_retention: Duration::from_secs(artifacts_retention.value),
        })
    }

    /// The `build:` section and the proxies of the environment: how environment images are
    /// built, with credentials in URLs never shown.
    fn build(&mut self, env: &Environment) -> Result<BuildSettings, SettingsError> {
        let build_timeout = self.setting(
            "build.timeout_seconds",
            |l| l.build.timeout_seconds,
            crate::image::env::build::DEFAULT_BUILD_TIMEOUT.as_secs(),
            |v| count_in_range(*v, 1, bounds::MAX_TIMEOUT),
        )?;
        let ca_bundle = self.pick(|l| l.build.ca_bundle.clone());
        self.show(
            "build.ca_bundle",
            ca_bundle.as_ref().map(|p| &p.value),
            ca_bundle.as_ref().map_or(Source::Default, |p| p.source),
        );
        let pip_index_url = self.pick(|l| l.build.pip_index_url.clone());
        self.show(
            "build.pip_index_url",
            pip_index_url
                .as_ref()
                .map(|p| without_credentials(&p.value)),
            pip_index_url.as_ref().map_or(Source::Default, |p| p.source),
        );
        let npm_registry = self.pick(|l| l.build.npm_registry.clone());
        self.show(
            "build.npm_registry",
            npm_registry.as_ref().map(|p| without_credentials(&p.value)),
            npm_registry.as_ref().map_or(Source::Default, |p| p.source),
        );
        let proxies: BTreeMap<String, String> = PROXY_VARIABLES
            .iter()
            .filter_map(|name| Some((name.to_string(), env.get(name)?.to_string())))
            .collect();
        let shown_proxies: BTreeMap<&String, String> = proxies
            .iter()
            .map(|(k, v)| (k, without_credentials(v)))
            .collect();
        let proxies_source = if proxies.is_empty() {
            Source::Default
        } else {
            Source::Env
        };
        self.show("build.proxies", shown_proxies, proxies_source);
        let allow_pack_sources = self.setting(
            "build.allow_pack_sources",
            |l| l.build.allow_pack_sources,
            false,
            any,
        )?;
        let build_memory = self.setting(
            "build.memory",
            |l| l.build.memory.map(|s| s.0),
            DEFAULT_BUILD_MEMORY,
            |v| {
                in_range(
                    *v,
                    bounds::MIN_BUILD_MEMORY,
                    bounds::MAX_BUILD_MEMORY,
                    "64m",
                    "2047m",
                )
            },
        )?;
        Ok(BuildSettings {
            ca_bundle: ca_bundle.map(|p| p.value),
            index: IndexSettings {
                pip_index_url: pip_index_url.map(|p| p.value),
                npm_registry: npm_registry.map(|p| p.value),
            },
            proxies,
            allow_pack_sources: allow_pack_sources.value,
            memory_bytes: Some(build_memory.value),
            timeout: Duration::from_secs(build_timeout.value),
        })
    }
}
