//! The executions of one server, from request to record: checked (the library's plan), admitted
//! (a bounded queue in front of a concurrency limit), recorded before they start, run on the
//! executor, waited for, cancelled.
//!
//! Every accepted execution has a task that owns it to its end; the tasks are tracked, so a
//! shutdown can wait for them (and cancel them past its drain time).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use packbox::{
    Catalog, Error, Executor, Fault, KeyStore, PackError, ParamError, PlanError, PrepareEvent,
    RunEvent, RunPlan, RunRequest, Settings,
};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::disk;
use super::metrics::Metrics;
use super::output::OutputLog;
use super::records::{Accepted, Ending, ExecStatus, NewExecution, Record, Store, StoreError};

/// Plans made at once: planning reads and digests a pack, and holds a request's values.
const MAX_PLANNING: usize = 4;
/// Problems of one request reported at most; the last one says how many more there were.
pub const MAX_PROBLEMS: usize = 50;

/// What a client asks to run.
pub struct Submission {
    /// The action's ref, `pack.action`.
    pub action: String,
    /// Parameter values as JSON, checked against the action's declarations.
    pub parameters: Map<String, Value>,
    /// `KEY=VALUE` strings converted by the declared types (they win over `parameters`).
    pub assignments: Vec<String>,
    /// Used for this run only: never stored, logged or shown.
    pub secrets: Map<String, Value>,
    /// Overrides the action's timeout; a value above the server's maximum is refused.
    pub timeout: Option<Duration>,
    /// The name of the token the request came with, recorded with the execution.
    pub token_name: Option<String>,
    /// The client's `Idempotency-Key`: a retry with the same key (and token) gets the same
    /// execution instead of a second run.
    pub idempotency_key: Option<String>,
}

/// One problem with one parameter of a submission.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParameterProblem {
    /// The parameter's name.
    pub parameter: String,
    /// The whole sentence, naming the parameter and what was expected.
    pub message: String,
}

/// Why a submission was not accepted.
#[derive(Debug)]
pub enum Refused {
    /// No such pack or action on this server.
    NotFound(String),
    /// The request is wrong: bad parameters, a timeout above the server's maximum.
    Invalid {
        /// What is wrong, in one sentence.
        message: String,
        /// Each parameter's problem, when parameters are at fault (else empty).
        problems: Vec<ParameterProblem>,
    },
    /// The action's pack cannot run (the operator's problem, not the request's).
    BrokenPack(String),
    /// The queue is full; try again later.
    Busy {
        /// A guess at when a slot frees up, from the average run time (1 to 60 seconds).
        retry_after: Duration,
    },
    /// The server is shutting down.
    Draining,
    /// The idempotency key was used for another action.
    KeyReused {
        /// The action the key's execution was for.
        action: String,
    },
    /// The state folder's disk is nearly full: runs would fill it with records.
    NoSpace(String),
    /// The key store could not give the run its keys (the server's log says why).
    KeyStore,
    /// The records could not be written or read.
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Refused {
        Refused::Store(error)
    }
}

/// An accepted submission: its record, and whether an earlier request with the same
/// idempotency key made it.
#[derive(Debug)]
pub struct Submitted {
    /// The execution's record as it is now (queued, unless it was a replay of an ended one).
    pub record: Record,
    /// An earlier request with the same idempotency key made it: nothing new runs.
    pub replayed: bool,
}

/// A cancellation that could not be done.
#[derive(Debug)]
pub enum CancelRefused {
    /// No execution has this id.
    NotFound,
    /// The execution had already ended.
    Final(Box<Record>),
    /// The records could not be read.
    Store(StoreError),
}

/// An execution that is queued or running: how to stop it, its live output, and how to learn
/// its end.
pub struct Live {
    /// The name of the token that started it (who may read and cancel it).
    pub owner: Option<String>,
    /// Cancelled to stop the execution: a queued one never starts, a running one's action gets
    /// SIGTERM, then SIGKILL after its grace period.
    pub cancel: CancellationToken,
    /// Its live output, scrubbed, the last window of it kept, for clients that follow it.
    pub output: OutputLog,
    /// The final record, once there is one.
    ended: watch::Sender<Option<Record>>,
}

impl Live {
    /// The final record, once the execution ended (and its record could be written).
    pub async fn ended(&self) -> Option<Record> {
        let mut ended = self.ended.subscribe();
        ended.wait_for(Option::is_some).await.ok()?.clone()
    }
}

/// Limits from the settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The folder of packs actions are run from.
    pub packs: PathBuf,
    /// Runs at the same time.
    pub max_concurrent: usize,
    /// Accepted executions waiting for a slot; past it, submissions are refused as busy.
    pub max_queue: usize,
    /// Longest timeout a run may have: a request above it is refused, an action's own is cut.
    pub max_timeout: Duration,
    /// Bytes kept per output stream (the library's `run.max_output`).
    pub max_output: usize,
    /// What all records may hold; past it the oldest final ones are pruned at once.
    pub records_max_bytes: u64,
    /// New executions are refused when the state folder's disk has less free than this.
    pub min_free_disk: u64,
}

/// The executions of a server.
pub struct Dispatcher {
    executor: Executor,
    settings: Settings,
    catalog: Catalog,
    limits: Limits,
    store: Store,
    /// Where runs' keys come from (empty without a key-encryption key).
    keys: KeyStore,
    /// Plans being made: a bound on the memory and CPU requests take before they run.
    planning: Semaphore,
    /// Record bytes written since the store was last measured, to prune at once past the bound.
    written_bytes: AtomicU64,
    /// Run slots: one permit per run at a time.
    slots: Arc<Semaphore>,
    /// Executions accepted and not yet ended (queued or running).
    admitted: Mutex<usize>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Recent run duration (exponential average), for `Retry-After`.
    average_run_ms: AtomicU64,
    tasks: TaskTracker,
    /// Once cancelled, nothing new is accepted.
    draining: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// A dispatcher running on `executor`, recording in `store`.
    pub fn new(
        executor: Executor,
        settings: Settings,
        catalog: Catalog,
        limits: Limits,
        (store, keys): (Store, KeyStore),
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        Dispatcher {
            keys,
            planning: Semaphore::new(MAX_PLANNING),
            written_bytes: AtomicU64::new(0),
            metrics,
            executor,
            settings,
            catalog,
            slots: Arc::new(Semaphore::new(limits.max_concurrent)),
            limits,
            store,
            admitted: Mutex::new(0),
            live: Mutex::new(HashMap::new()),
            average_run_ms: AtomicU64::new(1000),
            tasks: TaskTracker::new(),
            draining: CancellationToken::new(),
        }
    }

    /// The executor the executions run on.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The record store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The folder of packs executions come from.
    pub fn packs(&self) -> &std::path::Path {
        &self.limits.packs
    }

    /// The library settings the server runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The catalog the server runs with.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The key store runs' keys come from.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Executions waiting for a slot.
    pub fn queued(&self) -> usize {
        self.admitted_now().saturating_sub(self.running())
    }

    /// Executions holding a slot.
    pub fn running(&self) -> usize {
        self.limits.max_concurrent - self.slots.available_permits()
    }

    fn admitted_now(&self) -> usize {
        self.admitted.lock().map(|a| *a).unwrap_or(0)
    }

    /// Checks, admits, records and starts an execution; an idempotency key that its token
    /// already used gives back that execution instead.
    pub async fn submit(self: &Arc<Self>, submission: Submission) -> Result<Submitted, Refused> {
        if self.draining.is_cancelled() {
            return Err(Refused::Draining);
        }
        if let Some(key) = &submission.idempotency_key
            && let Some(existing) = self
                .store
                .find_by_key(submission.token_name.as_deref(), key)
                .await?
        {
            return replayed(existing, &submission.action);
        }
        self.check_disk()?;
        // Admitted before it is planned: a full queue costs a refused request nothing more.
        let ticket = self.admit().ok_or_else(|| Refused::Busy {
            retry_after: self.retry_after(),
        })?;
        let plan = {
            let _planning = self
                .planning
                .acquire()
                .await
                .map_err(|_| Refused::Draining)?;
            self.plan(&submission).await?
        };
        let id = uuid::Uuid::new_v4().to_string();
        // Known before it is recorded, so a cancellation never misses it.
        let (ended, _) = watch::channel(None);
        let live = Arc::new(Live {
            owner: submission.token_name.clone(),
            cancel: CancellationToken::new(),
            output: OutputLog::new(
                plan.output_scrubber(),
                plan.output_scrubber(),
                self.limits.max_output,
            ),
            ended,
        });
        if let Ok(mut map) = self.live.lock() {
            map.insert(id.clone(), Arc::clone(&live));
        }
        let forget = || {
            if let Ok(mut map) = self.live.lock() {
                map.remove(&id);
            }
        };
        let new = NewExecution {
            id: id.clone(),
            action: submission.action.clone(),
            token_name: submission.token_name.clone(),
            idempotency_key: submission.idempotency_key.clone(),
            pack_version: plan.pack_version().to_string(),
            pack_digest: plan.pack_digest().to_string(),
            timeout_seconds: plan.timeout().as_secs(),
            keys: plan.key_uses().to_vec(),
        };
        let record = match self.store.accept(new).await {
            Ok(Accepted::New(record)) => record,
            Ok(Accepted::Existing(existing)) => {
                forget();
                return replayed(existing, &submission.action);
            }
            Err(e) => {
                forget();
                return Err(e.into());
            }
        };
        let this = Arc::clone(self);
        self.tasks
            .spawn(async move { this.execute(id, plan, live, ticket).await });
        Ok(Submitted {
            record,
            replayed: false,
        })
    }

    /// The library's plan of a submission: everything wrong with it is said here.
    async fn plan(&self, submission: &Submission) -> Result<RunPlan, Refused> {
        if let Some(timeout) = submission.timeout
            && timeout > self.limits.max_timeout
        {
            return Err(Refused::Invalid {
                message: format!(
                    "timeout_seconds: at most {} on this server, found {}",
                    self.limits.max_timeout.as_secs(),
                    timeout.as_secs()
                ),
                problems: Vec::new(),
            });
        }
        let mut request = RunRequest::new(&self.limits.packs, &submission.action);
        request.param_values = submission.parameters.clone();
        request.params = submission.assignments.clone();
        request.secret_values = submission.secrets.clone();
        request.timeout = submission.timeout;
        request.keys = Some(self.keys.clone());
        let (settings, catalog) = (self.settings.clone(), self.catalog.clone());
        // Planning reads the pack's files and digests them: off the async threads.
        let planned =
            tokio::task::spawn_blocking(move || packbox::plan(&settings, &catalog, &request))
                .await
                .map_err(|_| Refused::BrokenPack("planning the run failed".into()))?;
        let mut plan = planned.map_err(|e| refusal(&submission.action, e))?;
        plan.limit_timeout(self.limits.max_timeout);
        Ok(plan)
    }

    /// Refuses new executions while the state folder's disk has less free space than the
    /// operator keeps: records would fill it.
    fn check_disk(&self) -> Result<(), Refused> {
        let Some(free) = disk::free_bytes(self.settings.state_dir.as_path()) else {
            return Ok(());
        };
        if free < self.limits.min_free_disk {
            tracing::warn!(
                free,
                min_free_disk = self.limits.min_free_disk,
                "refusing executions: the state folder's disk is nearly full"
            );
            return Err(Refused::NoSpace(format!(
                "the server's disk has {} MiB free, less than the {} MiB it keeps free (serve.records.min_free_disk); try again once records are pruned or space is freed",
                free >> 20,
                self.limits.min_free_disk >> 20
            )));
        }
        Ok(())
    }

    /// Prunes at once when the records written since the last measure may have passed the
    /// store's bound, instead of waiting for the next round.
    async fn prune_if_over(&self, record: &Record) {
        let added = (record.stdout.len() + record.stderr.len()) as u64
            + record
                .result
                .as_ref()
                .map_or(0, |r| r.to_string().len() as u64)
            + record.artifacts.iter().map(|a| a.size).sum::<u64>();
        let written = self.written_bytes.fetch_add(added, Ordering::Relaxed) + added;
        // Measuring costs a scan: only once a tenth of the bound was written.
        if written < self.limits.records_max_bytes / 10 {
            return;
        }
        self.written_bytes.store(0, Ordering::Relaxed);
        match self.store.size().await {
            Ok(size) if size.content > self.limits.records_max_bytes => {
                match self
                    .store
                    .prune(self.settings.serve.retention, self.limits.records_max_bytes)
                    .await
                {
                    Ok(pruned) => {
                        pruned.remove_artifacts(&self.settings.state_dir);
                        tracing::info!(
                            removed = pruned.for_bytes,
                            "pruned the oldest execution records: the store passed serve.records.max_bytes"
                        )
                    }
                    Err(e) => tracing::warn!("pruning records: {}", packbox::error_chain(&e)),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("measuring records: {}", packbox::error_chain(&e)),
        }
    }

    fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut admitted = self.admitted.lock().ok()?;
        if *admitted >= self.limits.max_concurrent + self.limits.max_queue {
            return None;
        }
        *admitted += 1;
        Some(Ticket {
            dispatcher: Arc::clone(self),
        })
    }

    /// When a refused client should try again: the recent run time, times the queue ahead of
    /// it, shared by the slots; between 1 and 60 seconds.
    fn retry_after(&self) -> Duration {
        let average = self.average_run_ms.load(Ordering::Relaxed);
        let ahead = (self.queued() + 1) as u64;
        let ms = average.saturating_mul(ahead) / self.limits.max_concurrent.max(1) as u64;
        Duration::from_secs((ms / 1000).clamp(1, 60))
    }

    /// Runs an admitted execution to its end and records how it ended.
    async fn execute(&self, id: String, plan: RunPlan, live: Arc<Live>, ticket: Ticket) {
        let slot = tokio::select! {
            slot = Arc::clone(&self.slots).acquire_owned() => slot.ok(),
            () = live.cancel.cancelled() => None,
        };
        let ending = match slot {
            None => Ending::without_outcome(
                ExecStatus::Cancelled,
                "Execution was cancelled before it started".into(),
            ),
            Some(_slot) => {
                if let Err(e) = self.store.running(&id).await {
                    tracing::error!(execution = %id, "recording a start: {}", packbox::error_chain(&e));
                }
                let started = Instant::now();
                let store = self.store.clone();
                let outcome = self
                    .executor
                    .run_with_cancel(&plan, &live.cancel, |event| match event {
                        RunEvent::Output { stream, bytes } => live.output.push(stream, bytes),
                        RunEvent::Started { exec_id } => {
                            let (store, id, exec_id) =
                                (store.clone(), id.clone(), exec_id.to_string());
                            tokio::spawn(async move {
                                if let Err(e) = store.container_started(&id, &exec_id).await {
                                    tracing::warn!(execution = %id, "recording a container: {}", packbox::error_chain(&e));
                                }
                            });
                        }
                        RunEvent::Prepare(PrepareEvent::Building { .. }) => {
                            self.metrics.env_build()
                        }
                        _ => {}
                    })
                    .await;
                let took = started.elapsed();
                self.note_duration(took);
                self.metrics.run_took(plan.action_ref(), took.as_secs_f64());
                if let Ok(outcome) = &outcome
                    && let Some(egress) = &outcome.egress
                {
                    self.metrics
                        .egress_refused(plan.action_ref(), egress.audit.refused);
                }
                ending_of(outcome)
            }
        };
        live.output.finish();
        if ending.status == ExecStatus::Error {
            self.metrics.engine_error();
        }
        self.metrics
            .execution_ended(plan.action_ref(), ending.status.as_str());
        let record = match self.store.finish(&id, ending).await {
            Ok(record) => record,
            Err(e) => {
                // The record stays queued or running; the next start marks it abandoned.
                tracing::error!(execution = %id, "recording an ending: {}", packbox::error_chain(&e));
                None
            }
        };
        if let Ok(mut map) = self.live.lock() {
            map.remove(&id);
        }
        if let Some(record) = &record {
            self.prune_if_over(record).await;
        }
        live.ended.send_replace(record);
        drop(ticket);
    }

    fn note_duration(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        let _ = self
            .average_run_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old * 7 + ms) / 8)
            });
    }

    /// Whether the server is shutting down (and takes no new executions).
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// A queued or running execution.
    pub fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.live.lock().ok()?.get(id).cloned()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The record of an execution, waiting up to `wait` for it to end.
    pub async fn get(&self, id: &str, wait: Duration) -> Result<Option<Record>, StoreError> {
        if !wait.is_zero()
            && let Some(live) = self.live(id)
        {
            let mut ended = live.ended.subscribe();
            if let Ok(Ok(record)) =
                tokio::time::timeout(wait, ended.wait_for(Option::is_some)).await
                && let Some(record) = record.clone()
            {
                return Ok(Some(record));
            }
        }
        self.store.get(id).await
    }

    /// Stops a queued or running execution: a queued one never starts; a running one gets
    /// SIGTERM, its grace, then SIGKILL. Returns the record as it is now.
    pub async fn cancel(&self, id: &str) -> Result<Record, CancelRefused> {
        // Whether it was queued or running when asked: a queued one ends at once once
        // cancelled, and that ending is this cancellation's, not an earlier one.
        let live = self.live(id);
        if let Some(live) = &live {
            live.cancel.cancel();
        }
        match self.store.get(id).await {
            Ok(Some(record)) if record.status.is_final() && live.is_none() => {
                Err(CancelRefused::Final(Box::new(record)))
            }
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(CancelRefused::NotFound),
            Err(e) => Err(CancelRefused::Store(e)),
        }
    }
}

impl Dispatcher {
    /// Stops accepting executions and waits for the ones there are, up to `grace`; then
    /// cancels the rest and waits for them to end (their actions get SIGTERM, their grace,
    /// SIGKILL), so every accepted execution has its final record.
    pub async fn drain(&self, grace: Duration) {
        self.draining.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let live: Vec<Arc<Live>> = self
                .live
                .lock()
                .map(|map| map.values().cloned().collect())
                .unwrap_or_default();
            tracing::warn!(
                count = live.len(),
                "cancelling the executions still running after the drain time"
            );
            for execution in live {
                execution.cancel.cancel();
            }
            self.tasks.wait().await;
        }
    }
}

/// Holds one admission (queued or running) until dropped.
struct Ticket {
    dispatcher: Arc<Dispatcher>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut admitted) = self.dispatcher.admitted.lock() {
            *admitted = admitted.saturating_sub(1);
        }
    }
}

fn replayed(existing: Record, action: &str) -> Result<Submitted, Refused> {
    if existing.action != action {
        return Err(Refused::KeyReused {
            action: existing.action,
        });
    }
    Ok(Submitted {
        record: existing,
        replayed: true,
    })
}

/// How the library's answer becomes a record's ending. Errors name no secret (the library
/// never puts one in an error).
fn ending_of(outcome: Result<packbox::Outcome, Error>) -> Ending {
    match outcome {
        Ok(outcome) => Ending::from_outcome(outcome),
        Err(error) => {
            let status = match error.fault() {
                Fault::Cancelled => ExecStatus::Cancelled,
                Fault::Input => ExecStatus::Invalid,
                _ => ExecStatus::Error,
            };
            Ending::without_outcome(status, packbox::error_chain(&error))
        }
    }
}

/// Why a plan failed, as a refusal: unknown packs and actions are not found, parameter problems
/// are listed one by one, a broken pack is the server's.
fn refusal(action: &str, error: PlanError) -> Refused {
    match error {
        PlanError::Pack(PackError::UnknownPack { .. } | PackError::UnknownAction { .. }) => {
            Refused::NotFound(format!("no action `{action}` on this server"))
        }
        PlanError::Pack(PackError::BadActionRef(_)) => Refused::Invalid {
            message: format!(
                "action: `{action}` is not of the form PACK.ACTION (pack: lowercase letters, digits, `_`, `-`; action: letters, digits, `_`, `-`)"
            ),
            problems: Vec::new(),
        },
        PlanError::Param(ParamError::Invalid { action, issues }) => {
            let more = issues.len().saturating_sub(MAX_PROBLEMS);
            let mut problems: Vec<ParameterProblem> = issues
                .into_iter()
                .take(MAX_PROBLEMS)
                .map(|issue| ParameterProblem {
                    parameter: short(&issue.parameter, 200),
                    message: short(&issue.text, 1000),
                })
                .collect();
            if more > 0 {
                problems.push(ParameterProblem {
                    parameter: String::new(),
                    message: format!("and {more} more problems"),
                });
            }
            Refused::Invalid {
                message: format!("invalid parameters for action {action}"),
                problems,
            }
        }
        PlanError::Param(other) => Refused::Invalid {
            message: other.to_string(),
            problems: Vec::new(),
        },
        // The operator's policy refuses it, as it refuses a workflow: the request is refused.
        PlanError::Workflow { .. } | PlanError::PackRuntimeNotAllowed { .. } => Refused::Invalid {
            message: error.to_string(),
            problems: Vec::new(),
        },
        PlanError::Secret(e) => Refused::Invalid {
            message: e.to_string(),
            problems: Vec::new(),
        },
        // The request's values are written as the action's format: a key dotenv cannot hold is
        // the request's, not the pack's.
        PlanError::Delivery(e) => Refused::Invalid {
            message: e.to_string(),
            problems: Vec::new(),
        },
        PlanError::Keys(e) => {
            tracing::error!("the key store: {}", packbox::error_chain(&e));
            Refused::KeyStore
        }
        other => Refused::BrokenPack(packbox::error_chain(&other)),
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), with `…` when cut.
pub fn short(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
