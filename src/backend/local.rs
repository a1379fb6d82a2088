//! The docker backend: each run in a fresh container on the engine, the pack bind-mounted
//! read-only (or, for an engine that cannot see this machine's files, in a read-only volume
//! holding its content), the parameter document on attached stdin; with a warm pool, the
//! container may have been created and started before the run asked for it.

use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{BackendError, Job, Ran, RunBackend, WarmKind};
use crate::common::error_text::chain;
use crate::common::owned::Owned;
use crate::engine::{ContainerEngine, ContainerSpec, NotApplied, SharedEngine};
use crate::lifecycle::pool::{self, Demand, Warm, WarmPool};
use crate::lifecycle::run::{self, RunError, RunIo, Started};
use crate::pack_delivery::volume::{self, DeliveryError};
use crate::sandbox::{PackSource, SandboxPolicy, Workload};
use crate::settings::{PackDelivery, WarmSettings};

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
}

impl LocalBackend {
    /// A backend on `engine`, keeping containers pre-started per kind of run as `warm` sizes
    /// them (none: no pool).
    pub fn new(
        engine: SharedEngine,
        warm: Option<WarmSettings>,
        pack_delivery: PackDelivery,
        owned: Owned,
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

    /// The started container a run uses, its exec id and the stdin to give it: a pre-started
    /// one from the warm pool when there is one, else a fresh one; the pool is then topped up to
    /// what the kind's demand asks for, off the run's path. The demand lasts as long as the run.
    async fn container_for(
        &self,
        exec_id: String,
        mut spec: ContainerSpec,
        stdin: Vec<u8>,
        warm_start: Option<Vec<String>>,
        cancel: &CancellationToken,
    ) -> Result<(String, Started, Vec<u8>, Option<Demand>), RunError> {
        let Some(warm_pool) = &self.pool else {
            let started = self.start_container(&exec_id, &spec, cancel).await?;
            return Ok((exec_id, started, stdin, None));
        };
        spec.cmd = match warm_start.filter(|_| self.preload) {
            Some(cmd) => cmd,
            None => pool::wait_for_go(spec.cmd),
        };
        let kind = pool::kind(&spec);
        let (demand, offered) = warm_pool.begin(&kind);
        let (exec_id, started) = match self.take_warm(warm_pool, &kind, offered).await {
            Some(warm) => (warm.exec_id, warm.started),
            None => {
                let started = self.start_container(&exec_id, &spec, cancel).await?;
                (exec_id, started)
            }
        };
        for _ in 0..warm_pool.reserve(&kind) {
            let next_id = uuid::Uuid::new_v4().to_string();
            let next_spec = pool::with_exec_id(&spec, &next_id);
            let (engine, warm_pool, kind) = (
                SharedEngine::clone(&self.engine),
                Arc::clone(warm_pool),
                kind.clone(),
            );
            self.spawn_background(async move {
                let asked = tokio::time::Instant::now();
                match run::start(&engine, &container_name(&next_id), &next_spec).await {
                    Ok(started) => {
                        let warm = Warm {
                            exec_id: next_id,
                            started,
                        };
                        if let Some(spare) = warm_pool.put(&kind, warm, asked.elapsed()) {
                            run::discard(&engine, spare.started).await;
                        }
                    }
                    Err(e) => {
                        warm_pool.start_failed(&kind);
                        tracing::warn!("pre-starting a container: {}", chain(&e));
                    }
                }
            });
        }
        let mut go_then_stdin = pool::GO_LINE.to_vec();
        go_then_stdin.extend_from_slice(&stdin);
        Ok((exec_id, started, go_then_stdin, Some(demand)))
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
                    run::discard(&self.engine, warm.started).await;
                }
            }
            next = warm_pool.take(kind);
        }
        None
    }

    /// Creates and starts a container, unless the run is cancelled first (then nothing is
    /// left behind).
    async fn start_container(
        &self,
        exec_id: &str,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> Result<Started, RunError> {
        let name = container_name(exec_id);
        tokio::select! {
            started = run::start(&self.engine, &name, spec) => started,
            () = cancel.cancelled() => Err(RunError::Cancelled),
        }
    }
}

#[async_trait::async_trait]
impl RunBackend for LocalBackend {
    async fn run(&self, job: Job<'_>) -> Result<Ran, BackendError> {
        let Job {
            exec_id,
            workload,
            policy,
            kernel,
            io,
            warm_start,
            on_started,
        } = job;
        let workload = self.deliver_pack(workload, io.cancel).await?;
        let spec = policy.container_spec(workload, kernel);
        let (exec_id, started, stdin, _demand) = self
            .container_for(exec_id, spec, io.stdin, warm_start, io.cancel)
            .await?;
        tracing::debug!(exec_id = %exec_id, container = started.id(), "container started");
        let sandbox = applied(policy, self.engine.as_ref(), started.not_applied());
        on_started(&exec_id);
        let (exit, exited) = run::finish_then_release(
            &self.engine,
            started,
            RunIo {
                stdin,
                limits: io.limits,
                cancel: io.cancel,
                on_output: io.on_output,
            },
        )
        .await?;
        // The outcome is known: the container goes off the run's path (`close` waits for it).
        self.spawn_background(exited.remove());
        Ok(Ran {
            exec_id,
            exit,
            sandbox,
        })
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
                run::discard(&self.engine, warm.started).await;
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
                run::discard(&self.engine, warm.started).await;
            }
        }
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
