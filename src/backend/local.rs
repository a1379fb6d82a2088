//! The docker backend: each run in a fresh container on the engine, the pack bind-mounted
//! read-only (or, for an engine that cannot see this machine's files, in a read-only volume
//! holding its content), the parameter document on attached stdin; with a warm pool, the
//! container may have been created and started before the run asked for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{BackendError, Job, Ran, RunBackend, WarmKind};
use crate::common::error_text::chain;
use crate::common::exec_ids::ExecIds;
use crate::common::owned::Owned;
use crate::egress::gateway::{Gateway, Slot};
use crate::engine::{ContainerEngine, ContainerSpec, InitProcess, NotApplied, SharedEngine};
use crate::lifecycle::pool::{self, Demand, Offer, Warm, WarmPool};
use crate::lifecycle::run::{self, ExitCheck, RunError, RunIo, Started};
use crate::pack_delivery::init;
use crate::pack_delivery::volume::{self, DeliveryError};
use crate::sandbox::{PackSource, SandboxPolicy, Workload};
use crate::settings::{PackDelivery, WarmSettings};

/// The least time a run waits for a pooled container that is starting before it starts its
/// own (longer when the kind's starts are slower: four times their measured time).
const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs jobs as containers on one engine.
#[derive(Debug)]
pub struct LocalBackend {
    engine: SharedEngine,
    /// Pre-started containers, when asked for.
    pool: Option<Arc<WarmPool>>,
    /// Whether pooled containers start their runtime's interpreter ahead of the run.
    preload: bool,
    /// Pool refills and removals of finished containers, awaited by `close`.
    background: Mutex<JoinSet<()>>,
    /// How a pack folder reaches the container.
    pack_delivery: PackDelivery,
    /// What packbox made (pack volumes it filled or verified).
    owned: Owned,
    /// Where pre-started containers take their Attune execution ids.
    exec_ids: ExecIds,
    /// The egress proxy and per-run networks of runs with a grant.
    gateway: Arc<Gateway>,
    /// The per-run networks of pooled containers, by container id.
    pooled_slots: Arc<Mutex<HashMap<String, Slot>>>,
    /// Runs whose engine exit status disagreed with the one their init reported.
    exit_mismatches: Arc<AtomicU64>,
}

/// The container a run uses, and what comes with it.
struct Launched {
    exec_id: String,
    /// Its Attune execution id (`ATTUNE_EXEC_ID`): a pooled container's own.
    attune_exec_id: u64,
    started: Started,
    stdin: Vec<u8>,
    /// The run's share of its kind's demand, while it lasts.
    _demand: Option<Demand>,
    /// The run's network, when it has a grant.
    slot: Option<Slot>,
}

/// The label that names a run's grant, so that runs with different grants are different kinds
/// of run (a pooled container is never handed to a run with another grant).
const GRANT_LABEL: &str = "packbox.egress_grant";

impl LocalBackend {
    /// A backend on `engine`, keeping containers pre-started per kind of run as `warm` sizes
    /// them (none: no pool).
    pub fn new(
        engine: SharedEngine,
        exec_ids: ExecIds,
        warm: Option<WarmSettings>,
        pack_delivery: PackDelivery,
        owned: Owned,
        gateway: Arc<Gateway>,
    ) -> LocalBackend {
        let warm = warm.filter(|w| w.per_kind > 0 && w.total > 0);
        LocalBackend {
            engine,
            pool: warm.map(|w| {
                Arc::new(WarmPool::new(pool::Sizing {
                    per_kind: w.per_kind,
                    total: w.total,
                    idle: w.idle,
                }))
            }),
            preload: warm.is_some_and(|w| w.preload),
            background: Mutex::new(JoinSet::new()),
            pack_delivery,
            owned,
            exec_ids,
            gateway,
            pooled_slots: Arc::new(Mutex::new(HashMap::new())),
            exit_mismatches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A slot for a run with a grant (none without), unless the run is cancelled first.
    async fn slot_for(
        &self,
        egress: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<Slot>, BackendError> {
        if !egress {
            return Ok(None);
        }
        tokio::select! {
            slot = self.gateway.slot() => Ok(Some(slot?)),
            () = cancel.cancelled() => Err(RunError::Cancelled.into()),
        }
    }

    /// Starts a fresh container for a run, on its slot when it has one; the slot goes back when
    /// the start fails.
    async fn start_fresh(
        &self,
        exec_id: &str,
        spec: &ContainerSpec,
        egress: bool,
        cancel: &CancellationToken,
    ) -> Result<(Started, Option<Slot>), BackendError> {
        let slot = self.slot_for(egress, cancel).await?;
        let mut concrete = spec.clone();
        if let Some(slot) = &slot {
            slot.apply(&mut concrete);
        }
        match self.start_container(exec_id, &concrete, cancel).await {
            Ok(started) => Ok((started, slot)),
            Err(e) => {
                if let Some(slot) = slot {
                    self.gateway.release(slot).await;
                }
                Err(e)
            }
        }
    }

    /// Removes a pooled container that will not run, and gives its slot back.
    async fn discard_pooled(&self, warm: Warm) {
        let slot = self
            .pooled_slots
            .lock()
            .ok()
            .and_then(|mut slots| slots.remove(warm.started.id()));
        run::discard(&self.engine, warm.started).await;
        if let Some(slot) = slot {
            self.gateway.release(slot).await;
        }
    }

    /// Work off the runs' path; finished work is let go here, so the set stays small.
    fn spawn_background(&self, work: impl Future<Output = ()> + Send + 'static) {
        if let Ok(mut background) = self.background.lock() {
            while background.try_join_next().is_some() {}
            background.spawn(work);
        }
    }

    /// The workload with its pack folder replaced by a volume holding the pack's content (made
    /// once per content and engine), when packs travel by content.
    async fn deliver_pack(
        &self,
        mut workload: Workload,
        cancel: &CancellationToken,
    ) -> Result<Workload, BackendError> {
        let Some(PackSource::Folder(folder)) = &workload.pack else {
            return Ok(workload);
        };
        if self.pack_delivery != PackDelivery::Volume {
            return Ok(workload);
        }
        let started = std::time::Instant::now();
        let delivered = tokio::select! {
            delivered = volume::ensure(
                self.engine.as_ref(),
                &self.owned,
                &folder.pack_ref,
                std::path::Path::new(&folder.host_dir),
                &folder.digest,
                &workload.image,
            ) => delivered?,
            () = cancel.cancelled() => {
                return Err(DeliveryError::Cancelled { pack: folder.pack_ref.clone() }.into());
            }
        };
        tracing::debug!(
            volume = %delivered.name,
            filled = delivered.filled,
            us = started.elapsed().as_micros() as u64,
            "pack delivered by volume"
        );
        workload.pack = Some(PackSource::Volume(delivered.name));
        Ok(workload)
    }

    /// The started container a run uses, its exec ids (the run's UUID and Attune's integer,
    /// `ids`, unless a pooled container brings its own) and the stdin to give it: a pre-started
    /// one from the warm pool when there is one, else a fresh one; the pool is then topped up to
    /// what the kind's demand asks for, off the run's path. The demand lasts as long as the run.
    /// A run with a grant gets its container on a per-run network (`egress`).
    async fn container_for(
        &self,
        ids: (String, u64),
        mut spec: ContainerSpec,
        stdin: Vec<u8>,
        warm_start: Option<Vec<String>>,
        egress: bool,
        cancel: &CancellationToken,
    ) -> Result<Launched, BackendError> {
        let (exec_id, attune_exec_id) = ids;
        let Some(warm_pool) = &self.pool else {
            let (started, slot) = self.start_fresh(&exec_id, &spec, egress, cancel).await?;
            return Ok(Launched {
                exec_id,
                attune_exec_id,
                started,
                stdin,
                _demand: None,
                slot,
            });
        };
        spec.cmd = match warm_start.filter(|_| self.preload) {
            Some(cmd) => cmd,
            None => pool::wait_for_go(spec.cmd),
        };
        // The kind is the spec before any slot: its grant is in a label, its network is not.
        let kind = pool::kind(&spec);
        let (demand, offer) = warm_pool.begin(&kind);
        // Replacements start first: a run that waits for a starting container has claimed it.
        self.refill(warm_pool, &kind, &spec, egress);
        let offered = match offer {
            Offer::Idle(warm) => Some(warm),
            Offer::Starting(starting) => {
                // Ready sooner than one started now; bounded, in case that start hangs.
                let bound = (warm_pool.start_time(&kind) * 4).max(STARTING_WAIT);
                let began = std::time::Instant::now();
                let warm = tokio::select! {
                    warm = tokio::time::timeout(bound, starting) => warm.ok().and_then(Result::ok),
                    () = cancel.cancelled() => return Err(RunError::Cancelled.into()),
                };
                crate::common::phase::phase("wait", began, "");
                warm
            }
            Offer::Nothing => None,
        };
        let (exec_id, attune_exec_id, started, slot) =
            match self.take_warm(warm_pool, &kind, offered).await {
                Some(warm) => {
                    let slot = self
                        .pooled_slots
                        .lock()
                        .ok()
                        .and_then(|mut slots| slots.remove(warm.started.id()));
                    (warm.exec_id, warm.attune_exec_id, warm.started, slot)
                }
                None => {
                    let (started, slot) = self.start_fresh(&exec_id, &spec, egress, cancel).await?;
                    (exec_id, attune_exec_id, started, slot)
                }
            };
        let mut go_then_stdin = pool::GO_LINE.to_vec();
        go_then_stdin.extend_from_slice(&stdin);
        Ok(Launched {
            exec_id,
            attune_exec_id,
            started,
            stdin: go_then_stdin,
            _demand: Some(demand),
            slot,
        })
    }

    /// Starts, off the run's path, as many containers of this kind as the pool asks for now
    /// (each on a per-run network of its own when the kind has a grant).
    fn refill(
        &self,
        warm_pool: &Arc<WarmPool>,
        kind: &pool::Kind,
        spec: &ContainerSpec,
        egress: bool,
    ) {
        for _ in 0..warm_pool.reserve(kind) {
            let next_id = uuid::Uuid::new_v4().to_string();
            // A pooled container's environment is fixed when it starts: it takes its Attune id
            // now (one unused by a container removed idle is never handed out again).
            let next_attune_id = match self.exec_ids.next() {
                Ok(id) => id,
                Err(e) => {
                    warm_pool.start_failed(kind);
                    tracing::warn!("pre-starting a container: {}", chain(&e));
                    continue;
                }
            };
            let mut next_spec = pool::with_exec_id(spec, &next_id, next_attune_id);
            let (engine, warm_pool, kind, gateway, pooled_slots, owned) = (
                SharedEngine::clone(&self.engine),
                Arc::clone(warm_pool),
                kind.clone(),
                Arc::clone(&self.gateway),
                Arc::clone(&self.pooled_slots),
                self.owned.clone(),
            );
            self.spawn_background(async move {
                let asked = tokio::time::Instant::now();
                let slot = if egress {
                    match gateway.slot().await {
                        Ok(slot) => Some(slot),
                        Err(e) => {
                            warm_pool.start_failed(&kind);
                            tracing::warn!("a network for a pre-started container: {}", chain(&e));
                            return;
                        }
                    }
                } else {
                    None
                };
                if let Some(slot) = &slot {
                    slot.apply(&mut next_spec);
                }
                let started = match ensure_init(engine.as_ref(), &owned, &next_spec).await {
                    Ok(()) => run::start(&engine, &container_name(&next_id), &next_spec)
                        .await
                        .map_err(BackendError::from),
                    Err(e) => Err(e.into()),
                };
                match started {
                    Ok(started) => {
                        let id = started.id().to_string();
                        if let (Some(slot), Ok(mut slots)) = (slot, pooled_slots.lock()) {
                            slots.insert(id.clone(), slot);
                        }
                        let warm = Warm {
                            exec_id: next_id,
                            attune_exec_id: next_attune_id,
                            started,
                        };
                        if let Some(spare) = warm_pool.put(&kind, warm, asked.elapsed()) {
                            let slot = pooled_slots.lock().ok().and_then(|mut s| s.remove(&id));
                            run::discard(&engine, spare.started).await;
                            if let Some(slot) = slot {
                                gateway.release(slot).await;
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(slot) = slot {
                            gateway.release(slot).await;
                        }
                        warm_pool.start_failed(&kind);
                        tracing::warn!("pre-starting a container: {}", chain(&e));
                    }
                }
            });
        }
    }

    /// A pre-started container for this kind of run whose process still waits for its
    /// go-line; one that died meanwhile (killed, out of memory, removed by someone) is
    /// discarded, so a run never inherits a broken container.
    async fn take_warm(
        &self,
        warm_pool: &WarmPool,
        kind: &pool::Kind,
        offered: Option<Warm>,
    ) -> Option<Warm> {
        let mut next = offered;
        while let Some(warm) = next {
            match self.engine.container_state(warm.started.id()).await {
                Ok(state) if state.running => {
                    tracing::debug!(exec_id = %warm.exec_id, "warm container taken from the pool");
                    return Some(warm);
                }
                _ => {
                    tracing::warn!(
                        container = warm.started.id(),
                        "a pooled container stopped before its run; using a fresh one"
                    );
                    self.discard_pooled(warm).await;
                }
            }
            next = warm_pool.take(kind);
        }
        None
    }

    /// Creates and starts a container (its init's volume made first), unless the run is
    /// cancelled first (then nothing is left behind).
    async fn start_container(
        &self,
        exec_id: &str,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> Result<Started, BackendError> {
        let name = container_name(exec_id);
        let start = async {
            ensure_init(self.engine.as_ref(), &self.owned, spec).await?;
            Ok::<_, BackendError>(run::start(&self.engine, &name, spec).await?)
        };
        tokio::select! {
            started = start => started,
            () = cancel.cancelled() => Err(RunError::Cancelled.into()),
        }
    }
}

#[async_trait::async_trait]
impl RunBackend for LocalBackend {
    async fn run(&self, job: Job<'_>) -> Result<Ran, BackendError> {
        let Job {
            attune_exec_id,
            exec_id,
            workload,
            policy,
            kernel,
            io,
            warm_start,
            on_started,
            egress,
        } = job;
        let workload = self.deliver_pack(workload, io.cancel).await?;
        let mut spec = policy.container_spec(workload, kernel);
        // packbox's init runs the action on every engine (Docker and Podman, rootful and
        // rootless): the run ends at the action's exit, not the engine's, and the init makes the
        // artifacts folder and sends its files after the action's exit.
        spec.init = init::process();
        if let Some(sink) = io.artifacts {
            spec.env.push((
                "ATTUNE_ARTIFACTS_DIR".into(),
                crate::contract::artifacts::ARTIFACTS_DIR.into(),
            ));
            spec.env
                .push(("PACKBOX_ARTIFACTS_LIMIT".into(), sink.limits.for_init()));
        }
        if let Some(grant) = egress {
            spec.labels.insert(GRANT_LABEL.into(), grant.digest());
        }
        let Launched {
            exec_id,
            attune_exec_id,
            started,
            stdin,
            _demand,
            slot,
        } = self
            .container_for(
                (exec_id, attune_exec_id),
                spec,
                io.stdin,
                warm_start,
                egress.is_some(),
                io.cancel,
            )
            .await?;
        if let (Some(granted_slot), Some(grant)) = (&slot, egress)
            && let Err(e) = self.gateway.grant(granted_slot, &exec_id, grant).await
        {
            run::discard(&self.engine, started).await;
            let _ = self.gateway.revoke(granted_slot, &exec_id).await;
            if let Some(slot) = slot {
                self.gateway.discard(slot).await;
            }
            return Err(e.into());
        }
        tracing::debug!(exec_id = %exec_id, container = started.id(), "container started");
        let sandbox = applied(policy, self.engine.as_ref(), started.not_applied());
        on_started(&exec_id);
        let finished = run::finish_then_release(
            &self.engine,
            started,
            RunIo {
                stdin,
                limits: io.limits,
                cancel: io.cancel,
                on_output: io.on_output,
                artifacts: io.artifacts,
            },
        )
        .await;
        // The action is over: its connections are closed and their audit lines read.
        let audit = match &slot {
            Some(slot) => Some(self.gateway.revoke(slot, &exec_id).await),
            None => None,
        };
        let (exit, exited) = match finished {
            Ok(finished) => finished,
            Err(e) => {
                if let Some(slot) = slot {
                    self.gateway.discard(slot).await;
                }
                return Err(e.into());
            }
        };
        // The outcome is known: the container goes off the run's path (`close` waits for it),
        // once the engine's exit status is checked against the init's; then its network serves
        // another run.
        let (gateway, mismatches) = (Arc::clone(&self.gateway), Arc::clone(&self.exit_mismatches));
        self.spawn_background(async move {
            if let ExitCheck::Mismatch { .. } = exited.remove().await {
                mismatches.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(slot) = slot {
                gateway.release(slot).await;
            }
        });
        Ok(Ran {
            attune_exec_id,
            exec_id,
            exit,
            sandbox,
            egress: audit,
        })
    }

    fn exit_mismatches(&self) -> u64 {
        self.exit_mismatches.load(Ordering::Relaxed)
    }

    fn idle_warm(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.idle())
    }

    fn warm_kinds(&self) -> Vec<WarmKind> {
        self.pool.as_ref().map_or_else(Vec::new, |pool| {
            pool.idle_by_kind()
                .into_iter()
                .map(|(kind, idle)| WarmKind {
                    action: kind.action,
                    image: kind.image,
                    idle,
                })
                .collect()
        })
    }

    async fn trim(&self) {
        if let Some(warm_pool) = &self.pool {
            for warm in warm_pool.trim() {
                self.discard_pooled(warm).await;
            }
        }
    }

    async fn close(&self) {
        let mut background = match self.background.lock() {
            Ok(mut background) => std::mem::take(&mut *background),
            Err(_) => JoinSet::new(),
        };
        while background.join_next().await.is_some() {}
        if let Some(warm_pool) = &self.pool {
            for warm in warm_pool.drain() {
                self.discard_pooled(warm).await;
            }
        }
    }
}

/// Makes sure the engine has packbox's init when the container runs it.
async fn ensure_init(
    engine: &dyn ContainerEngine,
    owned: &Owned,
    spec: &ContainerSpec,
) -> Result<(), DeliveryError> {
    match spec.init {
        InitProcess::Packbox { .. } => init::ensure(engine, owned, &spec.image).await,
        InitProcess::Engine => Ok(()),
    }
}

/// The sandbox as the engine applied it: the policy, the engine that ran it, and each setting
/// the engine dropped that the operator allowed (listed as weaker than the defaults).
fn applied(
    policy: &SandboxPolicy,
    engine: &dyn ContainerEngine,
    not_applied: &[NotApplied],
) -> SandboxPolicy {
    let identity = engine.identity();
    let mut sandbox = policy.clone();
    sandbox.engine = Some(identity.clone());
    for missing in not_applied {
        sandbox.weaker_than_default.push(format!(
            "{} = not applied by {identity} (asked {}, applied {})",
            missing.setting, missing.asked, missing.applied
        ));
    }
    sandbox
}

/// The engine's name for a run's container.
pub fn container_name(exec_id: &str) -> String {
    format!("packbox-{exec_id}")
}
