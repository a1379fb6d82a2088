//! Who owns a container (and a Swarm service, secret or network): everything a run makes
//! carries the owning packbox process (host, pid and the pid's start time, which survives pid
//! reuse), so leftovers of a crashed packbox can be told from those of a live one and swept.
//!
//! A pid means something only inside its PID namespace on its kernel: two packbox processes
//! under one host name (two containers of one compose file, a CI job with the host's network,
//! `unshare --pid`) see different processes behind the same pid. So an owner also names its
//! *space* (the kernel's boot id and its PID namespace), and only an owner of this space is
//! judged by its pid. Another space's containers are left alone unless they show they are
//! leftovers whoever owns them: a run past its deadline (its timeout and grace, said in a
//! label when it was created; a live owner stops it by then), or a container that does not run
//! and is older than [`LEFTOVER_AGE`] (a live owner removes what stopped within moments).

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
/// Label: the owning process's space (boot id and PID namespace): only there is its pid its own.
pub const OWNER_SPACE: &str = "packbox.owner_space";
/// Label: when (seconds since the epoch) a live owner will have stopped and removed the run's
/// container (its timeout, grace and a margin after creation).
pub const DEADLINE: &str = "packbox.deadline";
/// A container that does not run, of an owner packbox cannot judge, is a leftover once this old.
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);
/// Label: the pack volume a container (a lock or helper of `pack_delivery::volume`) was made to fill. The
/// sweep leaves these to `pack_delivery::volume`, which removes a dead filler's half volume before its
/// lock, so that no run ever takes a half volume for a complete one.
pub const FILLING_VOLUME: &str = "packbox.pack_filling";

/// The label every Docker resource packbox makes carries.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED.to_string(), "true".to_string())])
}

/// Whether labels name an owner that is gone (decidable only in the owner's space).
pub fn is_orphan(labels: &HashMap<String, String>) -> bool {
    Owner::from_labels(labels)
        .is_some_and(|owner| owner.judge(&host_name(), &space()) == Liveness::Gone)
}

/// What can be said of an owner from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (or may: it is on another host).
    Alive,
    /// It is gone: its pid is free, or another process has it.
    Gone,
    /// It is on this host but in another space: its pid means another process here.
    Unknown,
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
    /// Its kernel's boot id and its PID namespace; `None` on containers made before packbox
    /// named it.
    pub space: Option<String>,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            host: host_name(),
            pid,
            start: process_start(pid),
            space: Some(space()),
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
        if let Some(space) = &self.space {
            labels.insert(OWNER_SPACE.to_string(), space.clone());
        }
        labels
    }

    /// The owner a container's labels name, if they name one.
    fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        Some(Owner {
            host: labels.get(OWNER_HOST)?.clone(),
            pid: labels.get(OWNER_PID)?.parse().ok()?,
            start: labels.get(OWNER_START).and_then(|s| s.parse().ok()),
            space: labels.get(OWNER_SPACE).cloned(),
        })
    }

    /// Whether the owner still runs, seen from `host` and `space`. Only decidable in its own
    /// space: owners on other hosts count as alive, so a shared engine never loses another
    /// machine's containers, and owners in another space of this host are unknown.
    fn judge(&self, host: &str, space: &str) -> Liveness {
        if self.host != host {
            return Liveness::Alive;
        }
        if self.space.as_deref().is_some_and(|own| own != space) {
            return Liveness::Unknown;
        }
        match (process_start(self.pid), self.start) {
            (None, _) => Liveness::Gone,
            // The pid exists: it is the owner unless it started at another time (pid reuse).
            (Some(now), Some(then)) if now != then => Liveness::Gone,
            _ => Liveness::Alive,
        }
    }
}

/// Whether a container of an owner packbox cannot judge is a leftover whoever owns it: a run
/// past its deadline, or a container that does not run and is older than [`LEFTOVER_AGE`].
fn is_leftover(container: &crate::engine::ContainerSummary, now: i64) -> bool {
    if let Some(deadline) = container
        .labels
        .get(DEADLINE)
        .and_then(|d| d.parse::<i64>().ok())
    {
        return now > deadline;
    }
    !container.running
        && container.created > 0
        && now - container.created > LEFTOVER_AGE.as_secs() as i64
}

/// The deadline label's value for a run created now that may take `run_for`.
pub fn deadline_after(run_for: std::time::Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A minute beyond the owner's own stop, for a slow engine.
    (now + run_for.as_secs() + 60).to_string()
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
    let here = space();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let managed = [format!("{MANAGED}=true")];
    let containers = engine.containers_with_labels(&managed).await?;
    let mut swept = Vec::new();
    for container in containers {
        let Some(owner) = Owner::from_labels(&container.labels) else {
            continue;
        };
        let gone = match owner.judge(&host, &here) {
            Liveness::Alive => false,
            Liveness::Gone => true,
            Liveness::Unknown => is_leftover(&container, now),
        };
        if !gone || container.labels.contains_key(FILLING_VOLUME) {
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
        // A network of an owner in another space stays, as its Swarm objects do: nothing on
        // it says when a live owner would be done with it.
        if owner.judge(&host, &here) != Liveness::Gone {
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
            // Services, networks and secrets of an owner in another space stay: nothing on
            // them says when a live owner would be done with them.
            if owner.judge(&host, &here) != Liveness::Gone {
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

/// This process's space: the kernel's boot id (a pid of another kernel means nothing here) and
/// its PID namespace (`pid:[4026531836]`).
fn space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|ns| ns.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{boot}/{namespace}")
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
        assert_eq!(back.judge(&me.host, &space()), Liveness::Alive);
    }

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let mut me = Owner::current();
        me.start = me.start.map(|s| s + 1);
        assert_eq!(me.judge(&me.host.clone(), &space()), Liveness::Gone);
    }

    #[test]
    fn a_dead_pid_is_gone_and_other_hosts_are_left_alone() {
        let dead = Owner {
            host: host_name(),
            pid: u32::MAX - 1,
            start: Some(1),
            space: Some(space()),
        };
        assert_eq!(dead.judge(&dead.host.clone(), &space()), Liveness::Gone);
        assert_eq!(dead.judge("another-host", &space()), Liveness::Alive);
        // The same host, another PID namespace: the pid is not the owner's to judge.
        assert_eq!(
            dead.judge(&dead.host.clone(), "another-boot/pid:[1]"),
            Liveness::Unknown
        );
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
            space: me.space.clone(),
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
    async fn owners_of_another_pid_namespace_lose_only_runs_past_their_deadline() {
        let fake = crate::engine::fake::FakeEngine::new();
        let me = Owner::current();
        // Another packbox under this host name in another PID namespace: its pid names some
        // other process here (this one, even).
        let neighbour = Owner {
            space: Some("another-boot/pid:[4026532999]".into()),
            ..me.clone()
        };
        let mut live = owned_by(&neighbour);
        live.push((
            DEADLINE.to_string(),
            deadline_after(std::time::Duration::from_secs(60)),
        ));
        let mut overdue = owned_by(&neighbour);
        overdue.push((DEADLINE.to_string(), "1".to_string()));
        add(&fake, "neighbour-live", &live);
        add(&fake, "neighbour-overdue", &overdue);
        add(&fake, "neighbour-pooled", &owned_by(&neighbour));
        let shared: SharedEngine = fake.clone();
        let swept = sweep_orphans(&shared).await.expect("sweep");
        let removed: Vec<&str> = swept.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(removed, ["neighbour-overdue"]);
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
            space: me.space.clone(),
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
