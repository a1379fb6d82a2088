//! A warm pool for long-lived executors: containers created, attached and started ahead of time,
//! their process blocked on a go-line on stdin, so that a run pays for the handoff and the
//! action, not for the engine's container start (~125 ms here).
//!
//! Isolation is unchanged: every pooled container runs exactly one action and is removed after
//! it, with the same spec a cold run would have. Only the moment of `start` moves earlier; the
//! timeout counts from the handoff. A pooled container's exec id is fixed when it is made.
//!
//! Each kind of run keeps as many containers ready as it recently ran at the same time (its peak
//! within a minute), or, when it runs again and again, as many as arrive while a replacement
//! starts (its rate times the start time) plus one, up to a limit per kind and a limit in all;
//! both are remembered for a minute, so a client that sends runs one after another and pauses
//! (a CI pipeline between its jobs) finds its containers ready when it comes back. A kind nobody
//! runs for the idle time loses its containers when the pool is trimmed.
//!
//! A run that finds no idle container but one already starting for its kind takes that one: it
//! is ready sooner than a new one would be. The "plus one" is what lets a client that sends runs
//! one after another get ahead: with only as many as arrive during a start, each run would wait
//! for the replacement the run before it asked for, and the rate that sizes the pool would stay
//! that of runs as slow as a start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
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

/// Label: the name people know a run's image by (its tag); the container starts from the image's
/// id, which is what its spec names.
pub const IMAGE_LABEL: &str = "packbox.image";

/// A kind of run: what makes two runs interchangeable (the whole spec but the run's own exec
/// id), and what it is for people (the action and the image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    key: String,
    /// The action's ref (the container's `packbox.action` label).
    pub action: String,
    /// The image the container runs, by the name people know it by.
    pub image: String,
}

/// The kind of run a container spec makes.
pub fn kind(spec: &ContainerSpec) -> Kind {
    let mut general = spec.clone();
    general
        .env
        .retain(|(name, _)| name != "ATTUNE_EXEC_ID" && name != "PACKBOX_EXEC_ID");
    general.labels.remove("packbox.exec_id");
    general.labels.remove(super::owner::DEADLINE);
    Kind {
        key: format!("{general:?}"),
        action: spec
            .labels
            .get("packbox.action")
            .cloned()
            .unwrap_or_default(),
        image: spec
            .labels
            .get(IMAGE_LABEL)
            .cloned()
            .unwrap_or_else(|| spec.image.clone()),
    }
}

/// The same spec for another run: the exec ids in its environment and labels replaced, and no
/// deadline.
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
    // A pooled container waits for a run of unknown start: it has no deadline (it ends when its
    // owner's connection does, and is swept as a stopped leftover then).
    next.labels.remove(super::owner::DEADLINE);
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
/// How far back a kind's arrivals count toward its rate of runs.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How many of a kind's latest arrivals are kept to measure its rate.
const RATE_SAMPLES: usize = 32;
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
    /// The most containers its runs one after another asked for (rate times start time, plus
    /// one) within the demand window, and when that was.
    streak: usize,
    streak_at: Instant,
    /// How long a container start of this kind takes lately (moving average).
    start_time: Duration,
    /// Runs waiting for a container that is starting, oldest first; each takes the next one
    /// that is ready.
    waiting: VecDeque<oneshot::Sender<Warm>>,
}

impl Slot {
    /// How many containers this kind should have ready or starting: as many as it recently ran
    /// at once, or as many as its runs one after another recently asked for (see [`refill`]),
    /// whichever is more, within the per-kind limit. Both are remembered for the demand window:
    /// a client that pauses between series of runs finds them ready when it comes back.
    ///
    /// [`refill`]: Slot::refill
    fn target(&self, per_kind: usize, now: Instant) -> usize {
        let recent = |count: usize, at: Instant| {
            if now.duration_since(at) > DEMAND_WINDOW {
                0
            } else {
                count
            }
        };
        let peak = recent(self.peak, self.peak_at).max(self.in_flight);
        let streak = recent(self.streak, self.streak_at);
        peak.max(streak).max(self.refill(now)).max(1).min(per_kind)
    }

    /// When it ran more than once lately, as many as arrive while a replacement starts (its rate
    /// of runs times the start time) plus one; else none.
    fn refill(&self, now: Instant) -> usize {
        // The rate over the recent arrivals, measured from the oldest to now: it follows a
        // client that speeds up within a few runs, and falls while nobody runs.
        let recent: Vec<Instant> = self
            .arrivals
            .iter()
            .copied()
            .filter(|at| now.duration_since(*at) <= RATE_WINDOW)
            .collect();
        match recent.first() {
            Some(oldest) if recent.len() > 1 => {
                let span = now
                    .duration_since(*oldest)
                    .max(self.start_time)
                    .max(Duration::from_millis(1));
                let rate = (recent.len() - 1) as f64 / span.as_secs_f64();
                (rate * self.start_time.as_secs_f64()).ceil() as usize + 1
            }
            _ => 0,
        }
    }

    /// A run of this kind begins: it counts toward the runs going on, the rate of runs, and
    /// the demand remembered for the window.
    fn arrive(&mut self, now: Instant) {
        self.in_flight += 1;
        self.last_used = now;
        while self
            .arrivals
            .front()
            .is_some_and(|at| now.duration_since(*at) > RATE_WINDOW)
        {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(now);
        if self.arrivals.len() > RATE_SAMPLES {
            self.arrivals.pop_front();
        }
        if self.in_flight >= self.peak || now.duration_since(self.peak_at) > DEMAND_WINDOW {
            self.peak = self.in_flight;
            self.peak_at = now;
        }
        let refill = self.refill(now);
        if refill >= self.streak || now.duration_since(self.streak_at) > DEMAND_WINDOW {
            self.streak = refill;
            self.streak_at = now;
        }
    }

    /// Containers starting that no waiting run has claimed.
    fn unclaimed(&self) -> usize {
        self.starting.saturating_sub(self.waiting.len())
    }
}

/// What a run of a kind is offered when it begins.
#[derive(Debug)]
pub enum Offer {
    /// An idle container, ready now.
    Idle(Warm),
    /// The next container of the kind that finishes starting; closed (the run then starts its
    /// own) when that start fails.
    Starting(oneshot::Receiver<Warm>),
    /// Nothing: the run starts its own container.
    Nothing,
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
    /// lives, and is offered an idle container if there is one, else one already starting that
    /// no other run waits for.
    pub fn begin(self: &Arc<Self>, kind: &Kind) -> (Demand, Offer) {
        let now = Instant::now();
        let demand = Demand {
            pool: Arc::clone(self),
            key: kind.key.clone(),
        };
        let Ok(mut slots) = self.slots.lock() else {
            return (demand, Offer::Nothing);
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
            streak: 0,
            streak_at: now,
            start_time: FIRST_START_GUESS,
            waiting: VecDeque::new(),
        });
        slot.arrive(now);
        if let Some(warm) = slot.idle.pop() {
            return (demand, Offer::Idle(warm));
        }
        if slot.unclaimed() > 0 {
            // Closed senders are of runs that gave up waiting: their claims are void.
            slot.waiting.retain(|waiter| !waiter.is_closed());
            let (sender, receiver) = oneshot::channel();
            slot.waiting.push_back(sender);
            return (demand, Offer::Starting(receiver));
        }
        (demand, Offer::Nothing)
    }

    /// The measured start time of a kind (the first guess until one was measured).
    pub fn start_time(&self, kind: &Kind) -> Duration {
        self.slots
            .lock()
            .ok()
            .and_then(|slots| slots.get(&kind.key).map(|slot| slot.start_time))
            .unwrap_or(FIRST_START_GUESS)
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
        slot.waiting.retain(|waiter| !waiter.is_closed());
        let target = slot.target(self.sizing.per_kind, Instant::now());
        // Starting containers that a waiting run claimed are as good as in use.
        let wanted = target
            .saturating_sub(slot.idle.len() + slot.unclaimed())
            .min(room);
        slot.starting += wanted;
        wanted
    }

    /// A reserved container started (it took `took`): handed to the run that waits longest
    /// for one, else kept for later, or given back (to be discarded) when the kind has enough.
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
        let mut warm = warm;
        while let Some(waiter) = slot.waiting.pop_front() {
            match waiter.send(warm) {
                Ok(()) => return None,
                // That run stopped waiting (cancelled, or it started its own).
                Err(back) => warm = back,
            }
        }
        if slot.idle.len() >= slot.target(self.sizing.per_kind, Instant::now()) {
            return Some(warm);
        }
        slot.idle.push(warm);
        None
    }

    /// A reserved container could not be started: a run waiting for it is told (it starts its
    /// own).
    pub fn start_failed(&self, kind: &Kind) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(&kind.key)
        {
            slot.starting = slot.starting.saturating_sub(1);
            slot.waiting.retain(|waiter| !waiter.is_closed());
            while slot.waiting.len() > slot.starting {
                slot.waiting.pop_back();
            }
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
    fn a_kind_is_shown_by_its_images_name_not_the_id_it_starts_from() {
        let mut spec = ContainerSpec {
            image: "sha256:0fab".into(),
            ..Default::default()
        };
        spec.labels
            .insert(IMAGE_LABEL.into(), "packbox/shell:5.2".into());
        assert_eq!(kind(&spec).image, "packbox/shell:5.2");
        spec.labels.remove(IMAGE_LABEL);
        assert_eq!(kind(&spec).image, "sha256:0fab");
    }

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
            streak: 0,
            streak_at: now,
            start_time: Duration::from_millis(300),
            waiting: VecDeque::new(),
        }
    }

    #[test]
    fn a_kind_keeps_ready_what_arrives_while_a_container_starts_plus_one() {
        let now = Instant::now();
        let mut busy = slot(now);
        // One run at a time, but 14 a second: ~5 arrive during a 300 ms start, and one more.
        busy.arrivals = (0..RATE_SAMPLES as u64)
            .rev()
            .map(|i| now - Duration::from_millis(i * 70))
            .collect();
        assert_eq!(busy.target(8, now), 6);
        assert_eq!(busy.target(3, now), 3, "within the per-kind limit");
        // One after another as slow as a start (the trap): still one more than that.
        let mut trapped = slot(now);
        trapped.arrivals = (0..33)
            .rev()
            .map(|i| now - Duration::from_millis(i * 310))
            .collect();
        assert_eq!(trapped.target(8, now), 2);
        let mut rare = slot(now);
        rare.arrivals = [now].into();
        assert_eq!(rare.target(8, now), 1, "a kind run once keeps one");
        let mut wide = slot(now);
        wide.peak = 6;
        assert_eq!(wide.target(8, now), 6, "runs at once count too");
        // A minute later the peak is forgotten, arrivals older than the window too.
        let later = now + DEMAND_WINDOW + Duration::from_secs(1);
        assert_eq!(wide.target(8, later), 1);
        assert_eq!(busy.target(8, later), 1);
    }

    #[test]
    fn a_series_of_runs_one_after_another_is_remembered_for_the_demand_window() {
        let now = Instant::now();
        let mut series = slot(now);
        // Ten runs one after another, 110 ms apart (each ended before the next): 300 ms starts.
        for i in 0..10 {
            series.arrive(now + Duration::from_millis(i * 110));
            series.in_flight -= 1;
        }
        let last = now + Duration::from_millis(990);
        assert_eq!(
            series.target(8, last),
            4,
            "3 arrive during a start, and one more"
        );
        // The client pauses longer than the rate window: it still finds what it ran with.
        let back = last + RATE_WINDOW + Duration::from_secs(5);
        assert_eq!(series.refill(back), 0, "no recent arrivals");
        assert_eq!(series.target(8, back), 4);
        assert_eq!(series.target(2, back), 2, "within the per-kind limit");
        // Gone past the demand window: one.
        let gone = last + DEMAND_WINDOW + Duration::from_secs(1);
        assert_eq!(series.target(8, gone), 1);
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
