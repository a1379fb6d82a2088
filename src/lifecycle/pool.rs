//! A warm pool for long-lived executors: containers created, attached and started ahead of time,
//! their process blocked on a go-line on stdin, so that a run pays for the handoff and the
//! action, not for the engine's container start (~125 ms here).
//!
//! Isolation is unchanged: every pooled container runs exactly one action and is removed after
//! it, with the same spec a cold run would have. Only the moment of `start` moves earlier; the
//! timeout counts from the handoff. A pooled container's exec id is fixed when it is made.
//!
//! Each kind of run keeps as many containers ready as it recently ran at the same time (its peak
//! within a minute), or as many as arrive while a container starts (its rate times the start
//! time), up to a limit per kind and a limit in all; a kind nobody runs for the idle time loses
//! its containers when the pool is trimmed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::run::Started;
use crate::engine::ContainerSpec;

/// The line that releases a pooled container's process into the action.
pub const GO_LINE: &[u8] = b"go\n";

/// Makes a command wait for the go-line on stdin before it becomes the action; everything after
/// that line is the action's stdin. `read` takes the line byte by byte, so nothing more is
/// consumed.
pub fn wait_for_go(cmd: Vec<String>) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        r#"read -r _ && exec "$@""#.to_string(),
        "packbox-warm".to_string(),
    ];
    wrapped.extend(cmd);
    wrapped
}

/// A kind of run: what makes two runs interchangeable (the whole spec but the run's own exec
/// id), and what it is for people (the action and the image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    key: String,
    /// The action's ref (the container's `packbox.action` label).
    pub action: String,
    /// The image the container runs.
    pub image: String,
}

/// The kind of run a container spec makes.
pub fn kind(spec: &ContainerSpec) -> Kind {
    let mut general = spec.clone();
    general
        .env
        .retain(|(name, _)| name != "ATTUNE_EXEC_ID" && name != "PACKBOX_EXEC_ID");
    general.labels.remove("packbox.exec_id");
    Kind {
        key: format!("{general:?}"),
        action: spec
            .labels
            .get("packbox.action")
            .cloned()
            .unwrap_or_default(),
        image: spec.image.clone(),
    }
}

/// The same spec for another run: the exec id in its environment and labels replaced.
pub fn with_exec_id(spec: &ContainerSpec, exec_id: &str, attune_exec_id: u64) -> ContainerSpec {
    let mut next = spec.clone();
    for (name, value) in &mut next.env {
        match name.as_str() {
            "PACKBOX_EXEC_ID" => *value = exec_id.to_string(),
            "ATTUNE_EXEC_ID" => *value = attune_exec_id.to_string(),
            _ => {}
        }
    }
    if let Some(label) = next.labels.get_mut("packbox.exec_id") {
        *label = exec_id.to_string();
    }
    next
}

/// A pre-started container and the exec id it was made for.
#[derive(Debug)]
pub struct Warm {
    /// The exec id its spec carries; the run that takes it uses this id.
    pub exec_id: String,
    /// The Attune execution id its environment carries.
    pub attune_exec_id: u64,
    /// The container, started, its process waiting for the go-line.
    pub started: Started,
}

/// How large the pool may grow: per kind of run, in all, and how long a kind nobody runs keeps
/// its containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Most idle containers one kind of run keeps.
    pub per_kind: usize,
    /// Most idle containers in all.
    pub total: usize,
    /// A kind unused this long loses its containers when the pool is trimmed.
    pub idle: Duration,
}

/// How far back the demand of a kind is remembered: its peak of runs at the same time within
/// this window sets how many containers it keeps ready.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// Over how long a kind's rate of runs is counted.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// What a container start is assumed to take until one was measured.
const FIRST_START_GUESS: Duration = Duration::from_millis(200);

/// One kind of run: its idle containers and its recent demand.
#[derive(Debug)]
struct Slot {
    kind: Kind,
    idle: Vec<Warm>,
    /// Containers being started for it now.
    starting: usize,
    /// Runs of this kind going on now.
    in_flight: usize,
    /// The most runs at the same time within the demand window, and when it was seen.
    peak: usize,
    peak_at: Instant,
    last_used: Instant,
    /// When its runs began, within the rate window.
    arrivals: VecDeque<Instant>,
    /// How long a container start of this kind takes lately (moving average).
    start_time: Duration,
}

impl Slot {
    /// How many idle containers this kind should have: as many as it recently ran at once, or
    /// as many as arrive while one container starts (its rate of runs times the start time),
    /// whichever is more, within the per-kind limit.
    fn target(&self, per_kind: usize, now: Instant) -> usize {
        let peak = if now.duration_since(self.peak_at) > DEMAND_WINDOW {
            self.in_flight
        } else {
            self.peak
        };
        let recent = self
            .arrivals
            .iter()
            .filter(|at| now.duration_since(**at) <= RATE_WINDOW)
            .count();
        let rate = recent as f64 / RATE_WINDOW.as_secs_f64();
        let while_starting = (rate * self.start_time.as_secs_f64()).ceil() as usize;
        peak.max(while_starting).max(1).min(per_kind)
    }
}

/// Pre-started containers per kind of run, as many as each kind's recent demand asks for.
#[derive(Debug)]
pub struct WarmPool {
    sizing: Sizing,
    slots: Mutex<HashMap<String, Slot>>,
}

/// A run of one kind going on; dropping it ends the run's share of the kind's demand.
#[derive(Debug)]
pub struct Demand {
    pool: Arc<WarmPool>,
    key: String,
}

impl Drop for Demand {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.pool.slots.lock()
            && let Some(slot) = slots.get_mut(&self.key)
        {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }
}

impl WarmPool {
    /// An empty pool.
    pub fn new(sizing: Sizing) -> WarmPool {
        WarmPool {
            sizing,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A run of this kind begins: it counts toward the kind's demand while the returned value
    /// lives, and gets an idle container if there is one.
    pub fn begin(self: &Arc<Self>, kind: &Kind) -> (Demand, Option<Warm>) {
        let now = Instant::now();
        let demand = Demand {
            pool: Arc::clone(self),
            key: kind.key.clone(),
        };
        let Ok(mut slots) = self.slots.lock() else {
            return (demand, None);
        };
        let slot = slots.entry(kind.key.clone()).or_insert_with(|| Slot {
            kind: kind.clone(),
            idle: Vec::new(),
            starting: 0,
            in_flight: 0,
            peak: 0,
            peak_at: now,
            last_used: now,
            arrivals: VecDeque::new(),
            start_time: FIRST_START_GUESS,
        });
        slot.in_flight += 1;
        slot.last_used = now;
        while slot
            .arrivals
            .front()
            .is_some_and(|at| now.duration_since(*at) > RATE_WINDOW)
        {
            slot.arrivals.pop_front();
        }
        slot.arrivals.push_back(now);
        if slot.in_flight >= slot.peak || now.duration_since(slot.peak_at) > DEMAND_WINDOW {
            slot.peak = slot.in_flight;
            slot.peak_at = now;
        }
        (demand, slot.idle.pop())
    }

    /// Another idle container of this kind, if there is one (when the one `begin` gave was
    /// broken).
    pub fn take(&self, kind: &Kind) -> Option<Warm> {
        self.slots.lock().ok()?.get_mut(&kind.key)?.idle.pop()
    }

    /// How many containers to start now for this kind so that it has its target, counting those
    /// already starting and the pool's total; they are counted as starting until [`put`] or
    /// [`start_failed`].
    ///
    /// [`put`]: WarmPool::put
    /// [`start_failed`]: WarmPool::start_failed
    pub fn reserve(&self, kind: &Kind) -> usize {
        let Ok(mut slots) = self.slots.lock() else {
            return 0;
        };
        let held: usize = slots.values().map(|s| s.idle.len() + s.starting).sum();
        let room = self.sizing.total.saturating_sub(held);
        let Some(slot) = slots.get_mut(&kind.key) else {
            return 0;
        };
        let target = slot.target(self.sizing.per_kind, Instant::now());
        let wanted = target
            .saturating_sub(slot.idle.len() + slot.starting)
            .min(room);
        slot.starting += wanted;
        wanted
    }

    /// A reserved container started (it took `took`): kept for later, or given back (to be
    /// discarded) when the kind has enough.
    #[must_use]
    pub fn put(&self, kind: &Kind, warm: Warm, took: Duration) -> Option<Warm> {
        let Ok(mut slots) = self.slots.lock() else {
            return Some(warm);
        };
        let Some(slot) = slots.get_mut(&kind.key) else {
            return Some(warm);
        };
        slot.starting = slot.starting.saturating_sub(1);
        slot.start_time = (slot.start_time * 3 + took) / 4;
        if slot.idle.len() >= slot.target(self.sizing.per_kind, Instant::now()) {
            return Some(warm);
        }
        slot.idle.push(warm);
        None
    }

    /// A reserved container could not be started.
    pub fn start_failed(&self, kind: &Kind) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(&kind.key)
        {
            slot.starting = slot.starting.saturating_sub(1);
        }
    }

    /// The idle containers to remove now: all of the kinds nobody ran for the idle time, and
    /// those above a kind's target once its demand fell.
    pub fn trim(&self) -> Vec<Warm> {
        let now = Instant::now();
        let Ok(mut slots) = self.slots.lock() else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for slot in slots.values_mut() {
            let keep = if now.duration_since(slot.last_used) > self.sizing.idle {
                0
            } else {
                slot.target(self.sizing.per_kind, now)
            };
            while slot.idle.len() > keep {
                if let Some(warm) = slot.idle.pop() {
                    removed.push(warm);
                }
            }
        }
        slots.retain(|_, slot| {
            !slot.idle.is_empty()
                || slot.starting > 0
                || slot.in_flight > 0
                || now.duration_since(slot.last_used) <= self.sizing.idle
        });
        removed
    }

    /// How many containers wait in the pool.
    pub fn idle(&self) -> usize {
        self.slots
            .lock()
            .map(|slots| slots.values().map(|s| s.idle.len()).sum())
            .unwrap_or(0)
    }

    /// How many containers wait, per kind of run.
    pub fn idle_by_kind(&self) -> Vec<(Kind, usize)> {
        self.slots
            .lock()
            .map(|slots| {
                slots
                    .values()
                    .filter(|s| !s.idle.is_empty())
                    .map(|s| (s.kind.clone(), s.idle.len()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every idle container, emptying the pool.
    pub fn drain(&self) -> Vec<Warm> {
        self.slots
            .lock()
            .map(|mut slots| slots.drain().flat_map(|(_, slot)| slot.idle).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_that_differ_only_by_exec_id_share_a_key() {
        let mut a = ContainerSpec {
            image: "img".into(),
            cmd: vec!["bash".into()],
            env: vec![
                ("ATTUNE_EXEC_ID".into(), "1".into()),
                ("X".into(), "y".into()),
            ],
            ..Default::default()
        };
        a.labels.insert("packbox.exec_id".into(), "1".into());
        let mut b = a.clone();
        b.env[0].1 = "2".into();
        b.labels.insert("packbox.exec_id".into(), "2".into());
        assert_eq!(kind(&a), kind(&b));
        let mut c = a.clone();
        c.memory_bytes = 1;
        assert_ne!(
            kind(&a),
            kind(&c),
            "a different sandbox is a different kind of run"
        );
        a.labels.insert("packbox.action".into(), "p.a".into());
        assert_eq!(kind(&a).action, "p.a");
        assert_eq!(kind(&a).image, "img");
    }

    fn slot(now: Instant) -> Slot {
        Slot {
            kind: kind(&ContainerSpec::default()),
            idle: Vec::new(),
            starting: 0,
            in_flight: 0,
            peak: 1,
            peak_at: now,
            last_used: now,
            arrivals: VecDeque::new(),
            start_time: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_kind_keeps_ready_what_arrives_while_a_container_starts() {
        let now = Instant::now();
        let mut busy = slot(now);
        // One run at a time, but 14 a second: ~5 arrive during a 300 ms start.
        busy.arrivals = (0..140)
            .map(|i| now - Duration::from_millis(i * 70))
            .collect();
        assert_eq!(busy.target(8, now), 5);
        assert_eq!(busy.target(3, now), 3, "within the per-kind limit");
        let mut rare = slot(now);
        rare.arrivals = [now].into();
        assert_eq!(rare.target(8, now), 1);
        let mut wide = slot(now);
        wide.peak = 6;
        assert_eq!(wide.target(8, now), 6, "runs at once count too");
        // A minute later the peak is forgotten, arrivals older than the window too.
        let later = now + DEMAND_WINDOW + Duration::from_secs(1);
        assert_eq!(wide.target(8, later), 1);
        assert_eq!(busy.target(8, later), 1);
    }

    #[test]
    fn another_exec_id_replaces_the_old_one_everywhere_and_keeps_the_kind() {
        let mut spec = ContainerSpec {
            image: "img".into(),
            env: vec![
                ("ATTUNE_EXEC_ID".into(), "1".into()),
                ("PACKBOX_EXEC_ID".into(), "one".into()),
            ],
            ..Default::default()
        };
        spec.labels.insert("packbox.exec_id".into(), "one".into());
        let next = with_exec_id(&spec, "2", 7);
        assert_eq!(
            next.env,
            vec![
                ("ATTUNE_EXEC_ID".to_string(), "7".to_string()),
                ("PACKBOX_EXEC_ID".to_string(), "2".to_string())
            ]
        );
        assert_eq!(next.labels["packbox.exec_id"], "2");
        assert_eq!(kind(&spec), kind(&next));
    }

    #[test]
    fn the_wrapper_ends_in_the_action() {
        let cmd = wait_for_go(vec!["node".into(), "/pack/actions/a.js".into()]);
        assert_eq!(cmd[..3], ["/bin/sh", "-c", r#"read -r _ && exec "$@""#]);
        assert_eq!(cmd[4..], ["node", "/pack/actions/a.js"]);
    }
}
