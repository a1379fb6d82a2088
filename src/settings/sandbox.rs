//! The `sandbox:` section and the isolation rules resolved: each limit within its bounds, and any
//! setting weaker than packbox's defaults refused unless weakening was asked for explicitly (a
//! flag or the config file, never the environment), then reported in every outcome.

use super::bounds;
use super::bounds::{
    any, check_name, check_network, check_user, count_in_range, in_range, weaker_settings,
};
use super::resolve::{Picked, Resolver};
use super::*;
use crate::common::error_text::chain;
use crate::sandbox::isolation::IsolationPolicy;
use crate::sandbox::{SandboxPolicy, SeccompProfile};

impl Resolver<'_> {
    /// The sandbox every run gets and which actions run at which isolation level; `backend`
    /// decides what the swarm backend cannot choose (an OCI runtime per service).
    pub(super) fn sandbox(
        &mut self,
        backend: &str,
    ) -> Result<(SandboxPolicy, IsolationPolicy), SettingsError> {
        let d = SandboxPolicy::default();
        let network = self.setting(
            "sandbox.network",
            |l| l.sandbox.network.clone(),
            d.network.clone(),
            |n| check_network(n),
        )?;
        let read_only_root = self.setting(
            "sandbox.read_only_root",
            |l| l.sandbox.read_only_root,
            d.read_only_root,
            any,
        )?;
        let tmp = self.setting(
            "sandbox.tmp_size",
            |l| l.sandbox.tmp_size.map(|s| s.0),
            d.tmpfs_tmp_bytes,
            |v| in_range(*v, bounds::MIN_TMP, bounds::MAX_TMP, "1m", "64g"),
        )?;
        let cap_drop_all = self.setting(
            "sandbox.cap_drop_all",
            |l| l.sandbox.cap_drop_all,
            d.cap_drop_all,
            any,
        )?;
        let no_new_privileges = self.setting(
            "sandbox.no_new_privileges",
            |l| l.sandbox.no_new_privileges,
            d.no_new_privileges,
            any,
        )?;
        let user = self.setting(
            "sandbox.user",
            |l| l.sandbox.user.clone(),
            d.user.clone(),
            |u| check_user(u),
        )?;
        let memory = self.setting(
            "sandbox.memory",
            |l| l.sandbox.memory.map(|s| s.0),
            d.memory_bytes,
            |v| in_range(*v, bounds::MIN_MEMORY, bounds::MAX_MEMORY, "6m", "1t"),
        )?;
        let pids = self.setting(
            "sandbox.pids",
            |l| l.sandbox.pids,
            u64::from(d.pids_limit),
            |v| count_in_range(*v, 1, bounds::MAX_PIDS),
        )?;
        let cpus = self.setting(
            "sandbox.cpus",
            |l| l.sandbox.cpus,
            d.cpus,
            |v| {
                if v.is_finite() && (bounds::MIN_CPUS..=bounds::MAX_CPUS).contains(v) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a number of CPUs from {} to {}, found {v}",
                        bounds::MIN_CPUS,
                        bounds::MAX_CPUS
                    ))
                }
            },
        )?;
        let nofile = self.setting(
            "sandbox.nofile",
            |l| l.sandbox.nofile,
            u64::from(d.nofile),
            |v| count_in_range(*v, 16, bounds::MAX_NOFILE),
        )?;
        let oci_runtime = self.pick(|l| l.sandbox.oci_runtime.clone());
        if let Some(runtime) = &oci_runtime {
            check_name(&runtime.value)
                .and_then(|()| {
                    if backend == Backend::Swarm.name() {
                        Err("the swarm backend cannot choose an OCI runtime per service (the Swarm API has no such field); use the docker backend or make it the nodes' default runtime".to_string())
                    } else {
                        Ok(())
                    }
                })
                .map_err(|message| SettingsError::Value {
                    setting: "sandbox.oci_runtime".into(),
                    source_name: self.source_name(runtime.source),
                    message,
                })?;
        }
        self.show(
            "sandbox.oci_runtime",
            oci_runtime.as_ref().map(|p| &p.value),
            oci_runtime.as_ref().map_or(Source::Default, |p| p.source),
        );
        let seccomp_setting = self.pick(|l| l.sandbox.seccomp.clone());
        let seccomp = match &seccomp_setting {
            Some(picked) => Picked {
                value: SeccompProfile::from_setting(&picked.value).map_err(|e| {
                    SettingsError::Value {
                        setting: "sandbox.seccomp".into(),
                        source_name: self.source_name(picked.source),
                        message: chain(&e),
                    }
                })?,
                source: picked.source,
            },
            None => Picked {
                value: d.seccomp.clone(),
                source: Source::Default,
            },
        };
        self.show("sandbox.seccomp", &seccomp.value, seccomp.source);
        // Only an explicit choice allows weakening: a flag or the config file, never the
        // environment.
        let allow_weaker = self
            .flags
            .sandbox
            .allow_weaker
            .or(self.file.sandbox.allow_weaker);
        let allow_source = if self.flags.sandbox.allow_weaker.is_some() {
            Source::Flag
        } else if allow_weaker.is_some() {
            Source::File
        } else {
            Source::Default
        };
        let allow_weaker = allow_weaker.unwrap_or(false);
        self.show("sandbox.allow_weaker", allow_weaker, allow_source);

        let rules = self.pick(|l| l.isolation.clone());
        let isolation = match &rules {
            Some(picked) => {
                IsolationPolicy::new(picked.value.clone()).map_err(|e| SettingsError::Value {
                    setting: "isolation".into(),
                    source_name: self.source_name(picked.source),
                    message: e.to_string(),
                })?
            }
            None => IsolationPolicy::default(),
        };
        let shown_rules: Vec<String> = isolation
            .rules()
            .map(|rule| {
                let level = serde_json::to_value(rule.level).unwrap_or_default();
                format!("{} -> {}", rule.pattern, level.as_str().unwrap_or(""))
            })
            .collect();
        self.show(
            "isolation",
            shown_rules,
            rules.as_ref().map_or(Source::Default, |p| p.source),
        );
        let sandbox = SandboxPolicy {
            network: network.value.clone(),
            read_only_root: read_only_root.value,
            tmpfs_tmp_bytes: tmp.value,
            cap_drop_all: cap_drop_all.value,
            no_new_privileges: no_new_privileges.value,
            user: user.value.clone(),
            memory_bytes: memory.value,
            pids_limit: pids.value as u32,
            cpus: cpus.value,
            nofile: nofile.value as u32,
            oci_runtime: oci_runtime.map(|p| p.value),
            seccomp: seccomp.value.clone(),
            isolation: Default::default(),
            weaker_than_default: Vec::new(),
            backend: backend.to_string(),
            applied_as: Vec::new(),
            node: None,
            engine: None,
            allow_weaker,
        };
        let weaker = weaker_settings(&sandbox, &d);
        let mut weakened = Vec::new();
        for (setting, value, default) in weaker {
            let source = match setting {
                "sandbox.network" => network.source,
                "sandbox.read_only_root" => read_only_root.source,
                "sandbox.tmp_size" => tmp.source,
                "sandbox.cap_drop_all" => cap_drop_all.source,
                "sandbox.no_new_privileges" => no_new_privileges.source,
                "sandbox.user" => user.source,
                "sandbox.memory" => memory.source,
                "sandbox.pids" => pids.source,
                "sandbox.cpus" => cpus.source,
                "sandbox.seccomp" => seccomp.source,
                _ => nofile.source,
            };
            if !allow_weaker {
                return Err(SettingsError::Weaker {
                    setting: setting.into(),
                    value,
                    default,
                    source_name: self.source_name(source),
                });
            }
            weakened.push(format!("{setting} = {value} (default {default})"));
        }
        let sandbox = SandboxPolicy {
            weaker_than_default: weakened,
            ..sandbox
        };
        Ok((sandbox, isolation))
    }
}
