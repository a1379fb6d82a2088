//! Who owns a container (and a Swarm service, secret or network): everything a run makes
//! carries the owning packbox process (host, pid and the pid's start time, which survives pid
//! reuse), so leftovers of a crashed packbox can be told from those of a live one and swept.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::service::remove_when_free;
use crate::engine::{EngineError, SharedEngine, SwarmKind};

/// Label: the container is packbox's.
pub const MANAGED: &str = "packbox.managed";
/// Label: the owning process's id.
pub const OWNER_PID: &str = "packbox.owner_pid";
/// Label: the owning process's start time (clock ticks since boot, from /proc).
pub const OWNER_START: &str = "packbox.owner_start";
/// Label: the host the owning process runs on.
pub const OWNER_HOST: &str = "packbox.owner_host";
/// Label: the pack volume a container (a lock or helper of `pack_delivery::volume`) was made to fill. The
/// sweep leaves these to `pack_delivery::volume`, which removes a dead filler's half volume before its
/// lock, so that no run ever takes a half volume for a complete one.
pub const FILLING_VOLUME: &str = "packbox.pack_filling";

/// The label every Docker resource packbox makes carries.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED.to_string(), "true".to_string())])
}

/// Whether labels name an owner that is gone (decidable only on the owner's host).
pub fn is_orphan(labels: &HashMap<String, String>) -> bool {
    Owner::from_labels(labels).is_some_and(|owner| !owner.is_alive_here(&host_name()))
}

/// A packbox process, as its containers name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The host it runs on; only there can packbox tell whether it is gone.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started (kernel clock ticks since boot), to tell it from a later process that
    /// got its pid; `None` where it cannot be read.
    pub start: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            host: host_name(),
            pid,
            start: process_start(pid),
        }
    }

    /// The labels that name this owner on a container.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED.to_string(), "true".to_string()),
            (OWNER_PID.to_string(), self.pid.to_string()),
            (OWNER_HOST.to_string(), self.host.clone()),
        ]);
        if let Some(start) = self.start {
            labels.insert(OWNER_START.to_string(), start.to_string());
        }
        labels
    }

    /// The owner a container's labels name, if they name one.
    fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        Some(Owner {
            host: labels.get(OWNER_HOST)?.clone(),
            pid: labels.get(OWNER_PID)?.parse().ok()?,
            start: labels.get(OWNER_START).and_then(|s| s.parse().ok()),
        })
    }

    /// Whether the owner still runs. Only decidable on its own host: owners elsewhere count as
    /// alive, so a shared engine never loses another machine's containers.
    fn is_alive_here(&self, host: &str) -> bool {
        if self.host != host {
            return true;
        }
        match (process_start(self.pid), self.start) {
            (None, _) => false,
            // The pid exists: it is the owner unless it started at another time (pid reuse).
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
        }
    }
}

/// Something removed by a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Swept {
    /// `container`, `service`, `secret` or `network`.
    pub kind: &'static str,
    /// The engine's id of what was removed.
    pub id: String,
    /// The action it ran for, from its `packbox.action` label.
    pub action: Option<String>,
    /// The pid of the packbox process that made it and is gone.
    pub owner_pid: u32,
}

/// Removes what packbox processes that are gone left behind: containers, local networks, and
/// on a Swarm manager services, networks and secrets; never anything of a live owner, and never a pack
/// volume's lock or helper (see [`FILLING_VOLUME`]).
pub async fn sweep_orphans(engine: &SharedEngine) -> Result<Vec<Swept>, EngineError> {
    let host = host_name();
    let managed = [format!("{MANAGED}=true")];
    let containers = engine.containers_with_labels(&managed).await?;
    let mut swept = Vec::new();
    for container in containers {
        let Some(owner) = Owner::from_labels(&container.labels) else {
            continue;
        };
        if owner.is_alive_here(&host) || container.labels.contains_key(FILLING_VOLUME) {
            continue;
        }
        engine.remove(&container.id).await?;
        swept.push(Swept {
            kind: "container",
            id: container.id,
            action: container.labels.get("packbox.action").cloned(),
            owner_pid: owner.pid,
        });
    }
    // Local networks after the containers that were on them (per-run networks of egress
    // grants).
    for network in engine.networks_with_labels(&managed).await? {
        let Some(owner) = Owner::from_labels(&network.labels) else {
            continue;
        };
        if owner.is_alive_here(&host) {
            continue;
        }
        engine.remove_network(&network.id).await?;
        swept.push(Swept {
            kind: "network",
            id: network.id,
            action: None,
            owner_pid: owner.pid,
        });
    }
    let Some(swarm) = SharedEngine::clone(engine).swarm() else {
        return Ok(swept);
    };
    if !swarm.swarm_state().await?.manager {
        return Ok(swept);
    }
    // Services first: their tasks hold the networks and secrets.
    for kind in [SwarmKind::Service, SwarmKind::Network, SwarmKind::Secret] {
        for object in swarm.objects_with_labels(kind, &managed).await? {
            let Some(owner) = Owner::from_labels(&object.labels) else {
                continue;
            };
            if owner.is_alive_here(&host) {
                continue;
            }
            remove_when_free(swarm.as_ref(), kind, &object.id).await?;
            swept.push(Swept {
                kind: kind.name(),
                id: object.id,
                action: object.labels.get("packbox.action").cloned(),
                owner_pid: owner.pid,
            });
        }
    }
    Ok(swept)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The start time of a process (field 22 of /proc/PID/stat), `None` when it does not exist.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_named_by_its_labels() {
        let me = Owner::current();
        assert!(me.start.is_some(), "start time readable from /proc");
        let back =
            Owner::from_labels(&me.labels().into_iter().collect()).expect("labels name an owner");
        assert_eq!(back, me);
        assert!(back.is_alive_here(&me.host));
    }

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let mut me = Owner::current();
        me.start = me.start.map(|s| s + 1);
        assert!(!me.is_alive_here(&me.host.clone()));
    }

    #[test]
    fn a_dead_pid_is_gone_and_other_hosts_are_left_alone() {
        let dead = Owner {
            host: host_name(),
            pid: u32::MAX - 1,
            start: Some(1),
        };
        assert!(!dead.is_alive_here(&dead.host.clone()));
        assert!(dead.is_alive_here("another-host"));
    }

    #[test]
    fn containers_without_owner_labels_are_not_judged() {
        assert_eq!(Owner::from_labels(&HashMap::new()), None);
    }

    /// The labels of a container owned by `owner`.
    fn owned_by(owner: &Owner) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = owner.labels().into_iter().collect();
        labels.push(("packbox.action".into(), "p.a".into()));
        labels
    }

    fn add(fake: &crate::engine::fake::FakeEngine, id: &str, labels: &[(String, String)]) {
        let borrowed: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fake.add_listed_container(id, "sha256:any", &borrowed);
    }

    #[tokio::test]
    async fn the_sweep_removes_dead_owners_and_keeps_live_and_foreign_ones() {
        let fake = crate::engine::fake::FakeEngine::new();
        let me = Owner::current();
        let dead = Owner {
            host: me.host.clone(),
            pid: u32::MAX - 1,
            start: Some(1),
        };
        let reused = Owner {
            start: me.start.map(|s| s + 1),
            ..me.clone()
        };
        let elsewhere = Owner {
            host: format!("{}-elsewhere", me.host),
            ..dead.clone()
        };
        add(&fake, "live", &owned_by(&me));
        add(&fake, "dead", &owned_by(&dead));
        add(&fake, "reused", &owned_by(&reused));
        add(&fake, "elsewhere", &owned_by(&elsewhere));
        add(
            &fake,
            "unowned",
            &[(MANAGED.to_string(), "true".to_string())],
        );
        add(&fake, "not-ours", &[("app".to_string(), "web".to_string())]);

        let shared: SharedEngine = fake.clone();
        let swept = sweep_orphans(&shared).await.expect("sweep");
        let mut removed: Vec<&str> = swept.iter().map(|s| s.id.as_str()).collect();
        removed.sort();
        assert_eq!(removed, ["dead", "reused"]);
        assert!(swept.iter().all(|s| s.action.as_deref() == Some("p.a")));
        let mut left = fake.container_ids();
        left.sort();
        assert_eq!(left, ["elsewhere", "live", "not-ours", "unowned"]);
    }

    #[tokio::test]
    async fn the_sweep_asks_only_for_packbox_objects() {
        use crate::engine::fake::Call;
        let fake = crate::engine::fake::FakeEngine::new();
        let shared: SharedEngine = fake.clone();
        sweep_orphans(&shared).await.expect("sweep");
        let managed = vec!["packbox.managed=true".to_string()];
        assert_eq!(
            fake.calls(),
            [
                Call::ListContainers(managed.clone()),
                Call::ListNetworks(managed.clone()),
                Call::SwarmState,
                Call::ListObjects(SwarmKind::Service, managed.clone()),
                Call::ListObjects(SwarmKind::Network, managed.clone()),
                Call::ListObjects(SwarmKind::Secret, managed),
            ]
        );
    }

    #[tokio::test]
    async fn the_sweep_removes_dead_owners_swarm_objects_and_keeps_live_ones() {
        let fake = crate::engine::fake::FakeEngine::new();
        let me = Owner::current();
        let dead = Owner {
            host: me.host.clone(),
            pid: u32::MAX - 1,
            start: Some(1),
        };
        for (kind, name, owner) in [
            (SwarmKind::Service, "dead-service", &dead),
            (SwarmKind::Secret, "dead-secret", &dead),
            (SwarmKind::Network, "dead-network", &dead),
            (SwarmKind::Service, "live-service", &me),
            (SwarmKind::Secret, "live-secret", &me),
        ] {
            let labels = owned_by(owner);
            let borrowed: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            fake.add_swarm_object(kind, name, &borrowed);
        }
        fake.add_swarm_object(SwarmKind::Network, "not-ours", &[("app", "web")]);
        let shared: SharedEngine = fake.clone();
        let swept = sweep_orphans(&shared).await.expect("sweep");
        let kinds: Vec<&str> = swept.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["service", "network", "secret"]);
        let mut left = fake.swarm_objects();
        left.sort();
        assert_eq!(
            left,
            [
                "network:not-ours",
                "secret:live-secret",
                "service:live-service"
            ]
        );
    }

    #[tokio::test]
    async fn an_engine_in_no_swarm_is_swept_of_containers_only() {
        use crate::engine::fake::{Call, SwarmScript};
        let fake = crate::engine::fake::FakeEngine::new();
        fake.set_swarm(SwarmScript {
            state: crate::engine::swarm::SwarmState::default(),
            ..SwarmScript::default()
        });
        let shared: SharedEngine = fake.clone();
        sweep_orphans(&shared).await.expect("sweep");
        assert_eq!(fake.count(|c| matches!(c, Call::ListObjects(..))), 0);
    }

    #[tokio::test]
    async fn an_engine_error_while_listing_is_reported() {
        let fake = crate::engine::fake::FakeEngine::new();
        fake.fail(crate::engine::fake::Op::ListContainers, 1);
        let shared: SharedEngine = fake.clone();
        assert!(sweep_orphans(&shared).await.is_err());
    }
}
