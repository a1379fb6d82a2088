//! The fake engine's Swarm face: services whose one task is a simulated process (the same
//! [`Program`]s as containers) with an agent that acts a little late, a log that followers and
//! one-off readers see as the real engine's, secrets, networks that stay in use while a task is
//! attached, and every request recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Call, Exit, FakeEngine, Op, Program};
use crate::engine::swarm::{
    LogChunk, LogStream, NetworkSpec, NodeState, ServiceSpec, SwarmEngine, SwarmKind, SwarmNode,
    SwarmObject, SwarmState, TaskState, TaskStatus,
};
use crate::engine::{EngineError, Signal, StreamKind};

/// What a service's program is, decided from its spec.
pub(crate) type ServiceProgramFor = Box<dyn Fn(&ServiceSpec) -> Program + Send + Sync>;

/// How the fake Swarm behaves.
#[derive(Clone, Debug)]
pub(crate) struct SwarmScript {
    /// What `swarm_state` answers: in a Swarm or not, manager or worker, how many nodes.
    pub state: SwarmState,
    /// Time from service creation to its task running (scheduling, preparing, starting).
    pub start_delay: Duration,
    /// Time from a scale-down to the agent's SIGTERM (the real one is ~1.3 s here).
    pub stop_latency: Duration,
    /// Output written as the task exits that followers never see (a log broker that has not
    /// flushed): only a one-off read after the exit gets it.
    pub unflushed_tail: Vec<(StreamKind, Vec<u8>)>,
    /// The task is rejected with this error instead of running.
    pub reject: Option<String>,
    /// The task cannot be placed: it stays waiting with this error.
    pub unplaceable: Option<String>,
    /// Service creation makes the service but never answers (an engine stuck in the request).
    pub creation_hangs: bool,
    /// Time a follower takes per message (a follower lagging behind a flood).
    pub follower_lag: Duration,
    /// The node a running task is on is lost this long after the task started: the managers
    /// mark it down (after `node_down_after` more) and want the task stopped, while its last
    /// report (running) stays.
    pub lose_node_after: Option<Duration>,
    /// Time from a node's loss to the managers marking it down (missed heartbeats).
    pub node_down_after: Duration,
}

/// The node every fake task is placed on.
pub(crate) const FAKE_NODE_ID: &str = "fakenode0001";
/// Its hostname.
pub(crate) const FAKE_NODE_HOSTNAME: &str = "fake-worker-1";

impl Default for SwarmScript {
    fn default() -> Self {
        SwarmScript {
            state: SwarmState {
                active: true,
                manager: true,
                nodes: 1,
            },
            start_delay: Duration::from_millis(500),
            stop_latency: Duration::from_millis(1300),
            unflushed_tail: Vec::new(),
            reject: None,
            unplaceable: None,
            creation_hangs: false,
            follower_lag: Duration::ZERO,
            lose_node_after: None,
            node_down_after: Duration::from_secs(15),
        }
    }
}

struct FakeService {
    spec: ServiceSpec,
    task: TaskStatus,
    log: Vec<LogChunk>,
    /// How much of the log followers see.
    visible: usize,
    stop: Option<mpsc::UnboundedSender<()>>,
    oom: bool,
}

struct FakeSecret {
    name: String,
    data: Vec<u8>,
    labels: BTreeMap<String, String>,
}

/// The fake Swarm's objects.
#[derive(Default)]
pub(crate) struct FakeSwarm {
    pub(super) script: SwarmScript,
    services: BTreeMap<String, FakeService>,
    secrets: BTreeMap<String, FakeSecret>,
    networks: BTreeMap<String, NetworkSpec>,
    pushed: Vec<String>,
    /// Whether the managers still hear from the fake node.
    node_down: bool,
    next_id: u64,
    /// The clock's zero for log timestamps.
    epoch: Option<tokio::time::Instant>,
}

impl FakeSwarm {
    fn next(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:04}", self.next_id)
    }
}

impl FakeEngine {
    fn swarm_state_mut(&self) -> std::sync::MutexGuard<'_, FakeSwarm> {
        self.swarm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the Swarm behaves from now on.
    pub fn set_swarm(&self, script: SwarmScript) {
        self.swarm_state_mut().script = script;
    }

    /// What every service's task runs, decided from its spec.
    pub fn set_service_program(
        &self,
        program: impl Fn(&ServiceSpec) -> Program + Send + Sync + 'static,
    ) {
        *self
            .service_program
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(program));
    }

    /// Names of the services, secrets and networks that exist now, each as `kind:name`.
    pub fn swarm_objects(&self) -> Vec<String> {
        let swarm = self.swarm_state_mut();
        swarm
            .services
            .values()
            .map(|s| format!("service:{}", s.spec.name))
            .chain(swarm.secrets.values().map(|s| format!("secret:{}", s.name)))
            .chain(
                swarm
                    .networks
                    .values()
                    .map(|n| format!("network:{}", n.name)),
            )
            .collect()
    }

    /// The data of the secret called `name`, if it exists.
    pub fn secret_data(&self, name: &str) -> Option<Vec<u8>> {
        self.swarm_state_mut()
            .secrets
            .values()
            .find(|s| s.name == name)
            .map(|s| s.data.clone())
    }

    /// Images pushed so far, as `repository:tag`.
    pub fn pushed(&self) -> Vec<String> {
        self.swarm_state_mut().pushed.clone()
    }

    /// Whether a task's process runs now.
    pub fn running_tasks(&self) -> usize {
        self.swarm_state_mut()
            .services
            .values()
            .filter(|s| s.task.state == TaskState::Running)
            .count()
    }

    /// Adds an object that packbox did not make here (a leftover, another process's).
    pub fn add_swarm_object(&self, kind: SwarmKind, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut swarm = self.swarm_state_mut();
        match kind {
            SwarmKind::Service => {
                let id = swarm.next("service");
                let task = swarm.next("task");
                swarm.services.insert(
                    id,
                    FakeService {
                        spec: ServiceSpec {
                            name: name.to_string(),
                            labels,
                            ..ServiceSpec::default()
                        },
                        task: TaskStatus {
                            id: task,
                            state: TaskState::Exited,
                            exit_code: Some(0),
                            container_id: None,
                            error: None,
                            node_id: None,
                            stop_wanted: true,
                        },
                        log: Vec::new(),
                        visible: 0,
                        stop: None,
                        oom: false,
                    },
                );
            }
            SwarmKind::Secret => {
                let id = swarm.next("secret");
                swarm.secrets.insert(
                    id,
                    FakeSecret {
                        name: name.to_string(),
                        data: Vec::new(),
                        labels,
                    },
                );
            }
            SwarmKind::Network => {
                let id = swarm.next("network");
                swarm.networks.insert(
                    id,
                    NetworkSpec {
                        name: name.to_string(),
                        labels,
                        internal: true,
                        attachable: false,
                    },
                );
            }
        }
    }

    /// Whether a task container the Swarm made exists, and its state, for `container_state`.
    pub(super) fn task_container(&self, id: &str) -> Option<(bool, Option<i64>, bool)> {
        let swarm = self.swarm_state_mut();
        swarm
            .services
            .values()
            .find(|s| s.task.container_id.as_deref() == Some(id))
            .map(|s| (s.oom, s.task.exit_code, s.task.state == TaskState::Running))
    }

    /// Appends output to a service's log, stamped with the fake clock.
    fn log(&self, service: &str, output: &[(StreamKind, Vec<u8>)], visible: bool) {
        let mut swarm = self.swarm_state_mut();
        let epoch = *swarm.epoch.get_or_insert_with(tokio::time::Instant::now);
        let at = SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
            + epoch.elapsed();
        let timestamp = humantime::format_rfc3339_nanos(at).to_string();
        if let Some(service) = swarm.services.get_mut(service) {
            for (stream, bytes) in output {
                service.log.push(LogChunk {
                    stream: *stream,
                    timestamp: timestamp.clone(),
                    bytes: Bytes::from(bytes.clone()),
                });
            }
            if visible {
                service.visible = service.log.len();
            }
        }
        drop(swarm);
        self.changed.notify_waiters();
    }

    fn set_task(&self, service: &str, change: impl FnOnce(&mut FakeService)) {
        if let Some(s) = self.swarm_state_mut().services.get_mut(service) {
            change(s);
        }
        self.changed.notify_waiters();
    }

    fn exit_task(&self, service: &str, code: Option<i64>, oom: bool) {
        let tail = self.swarm_state_mut().script.unflushed_tail.clone();
        self.log(service, &tail, false);
        self.set_task(service, |s| {
            s.task.state = TaskState::Exited;
            s.task.exit_code = code;
            s.oom = oom;
            s.stop = None;
        });
    }
}

/// Runs a service's one task: waits to be placed, runs the program, and stops like the real
/// agent when scaled down (late, then SIGTERM, the stop grace, SIGKILL).
async fn run_task(
    engine: Arc<FakeEngine>,
    service: String,
    program: Program,
    mut stop: mpsc::UnboundedReceiver<()>,
) {
    let (script, grace) = {
        let swarm = engine.swarm_state_mut();
        let grace = swarm
            .services
            .get(&service)
            .map_or(Duration::ZERO, |s| s.spec.stop_grace);
        (swarm.script.clone(), grace)
    };
    let stopped = |engine: &FakeEngine| {
        engine.record(Call::TaskSignal(service.clone(), Signal::Term));
    };
    tokio::select! {
        () = tokio::time::sleep(script.start_delay) => {}
        _ = stop.recv() => {
            engine.exit_task(&service, None, false);
            return;
        }
    }
    if let Some(error) = script.unplaceable {
        engine.set_task(&service, |s| s.task.error = Some(error));
        let _ = stop.recv().await;
        engine.exit_task(&service, None, false);
        return;
    }
    if let Some(error) = script.reject {
        engine.set_task(&service, |s| {
            s.task.state = TaskState::Lost;
            s.task.error = Some(error);
            s.task.node_id = Some(FAKE_NODE_ID.into());
            s.task.stop_wanted = true;
        });
        return;
    }
    engine.set_task(&service, |s| {
        s.task.state = TaskState::Running;
        s.task.container_id = Some(format!("taskcontainer-{service}"));
        s.task.node_id = Some(FAKE_NODE_ID.into());
    });
    engine.log(&service, &program.output, true);
    let deadline = tokio::time::sleep(program.delay);
    tokio::pin!(deadline);
    let lost = async {
        match script.lose_node_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = lost => {
            // The node is gone: nothing more is heard of the task, whatever it was doing. The
            // managers notice after missed heartbeats and want the task stopped.
            tokio::time::sleep(script.node_down_after).await;
            engine.swarm_state_mut().node_down = true;
            engine.set_task(&service, |s| s.task.stop_wanted = true);
            let _ = stop.recv().await;
        }
        () = &mut deadline, if program.exit != Exit::Never => {
            let code = match program.exit { Exit::Code(code) => code, Exit::Never => 0 };
            engine.exit_task(&service, Some(code), program.oom);
        }
        _ = stop.recv() => {
            engine.set_task(&service, |s| s.task.stop_wanted = true);
            tokio::time::sleep(script.stop_latency).await;
            stopped(&engine);
            if program.obeys_term {
                engine.exit_task(&service, Some(143), false);
                return;
            }
            tokio::time::sleep(grace).await;
            engine.record(Call::TaskSignal(service.clone(), Signal::Kill));
            engine.exit_task(&service, Some(137), false);
        }
    }
}

fn matches(labels: &BTreeMap<String, String>, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(w),
    })
}

fn swarm_object(id: &str, name: &str, labels: &BTreeMap<String, String>) -> SwarmObject {
    SwarmObject {
        id: id.to_string(),
        name: name.to_string(),
        labels: labels.clone().into_iter().collect::<HashMap<_, _>>(),
    }
}

/// The whole seconds since the epoch of an RFC 3339 timestamp.
fn seconds_of(timestamp: &str) -> i64 {
    humantime::parse_rfc3339(timestamp)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

#[async_trait::async_trait]
impl SwarmEngine for FakeEngine {
    async fn swarm_state(&self) -> Result<SwarmState, EngineError> {
        self.record(Call::SwarmState);
        Ok(self.swarm_state_mut().script.state.clone())
    }

    async fn tag_image(&self, image: &str, repository: &str, tag: &str) -> Result<(), EngineError> {
        self.record(Call::Tag(image.to_string(), format!("{repository}:{tag}")));
        let mut state = self.state();
        let Some(found) = state
            .images
            .iter_mut()
            .find(|i| i.id == image || i.tags.iter().any(|t| t == image))
        else {
            return Err(EngineError::Api {
                what: format!("tagging image {image}"),
                source: "no such image (404)".into(),
            });
        };
        found.tags.push(format!("{repository}:{tag}"));
        Ok(())
    }

    async fn push_image(&self, repository: &str, tag: &str) -> Result<String, EngineError> {
        let reference = format!("{repository}:{tag}");
        self.record(Call::Push(reference.clone()));
        self.injected(Op::Push, "pushing")?;
        self.swarm_state_mut().pushed.push(reference.clone());
        Ok(format!("sha256:{:0>64}", hex::encode(reference.as_bytes())))
    }

    async fn node(&self, id: &str) -> Result<Option<SwarmNode>, EngineError> {
        self.record(Call::Node(id.to_string()));
        self.injected(Op::Node, "inspecting a node")?;
        if id != FAKE_NODE_ID {
            return Ok(None);
        }
        let down = self.swarm_state_mut().node_down;
        Ok(Some(SwarmNode {
            hostname: FAKE_NODE_HOSTNAME.into(),
            id: FAKE_NODE_ID.into(),
            state: if down {
                NodeState::Down
            } else {
                NodeState::Ready
            },
        }))
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, EngineError> {
        self.record(Call::CreateNetwork(spec.clone()));
        self.injected(Op::CreateNetwork, "creating a network")?;
        let mut swarm = self.swarm_state_mut();
        let id = swarm.next("network");
        swarm.networks.insert(id.clone(), spec.clone());
        Ok(id)
    }

    async fn create_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        self.record(Call::CreateSecret {
            name: name.to_string(),
            labels: labels.clone(),
        });
        self.injected(Op::CreateSecret, "creating a secret")?;
        let mut swarm = self.swarm_state_mut();
        let id = swarm.next("secret");
        swarm.secrets.insert(
            id.clone(),
            FakeSecret {
                name: name.to_string(),
                data: data.to_vec(),
                labels: labels.clone(),
            },
        );
        Ok(id)
    }

    async fn create_service(&self, spec: &ServiceSpec) -> Result<String, EngineError> {
        self.record(Call::CreateService(Box::new(spec.clone())));
        self.injected(Op::CreateService, "creating a service")?;
        let program = match &*self
            .service_program
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(program) => program(spec),
            None => Program::default(),
        };
        let (stop, stop_rx) = mpsc::unbounded_channel();
        let id = {
            let mut swarm = self.swarm_state_mut();
            for secret in &spec.secrets {
                if !swarm.secrets.contains_key(&secret.secret_id) {
                    return Err(EngineError::Api {
                        what: format!("creating service {}", spec.name),
                        source: format!("secret {} not found", secret.secret_id).into(),
                    });
                }
            }
            let id = swarm.next("service");
            let task = swarm.next("task");
            swarm.services.insert(
                id.clone(),
                FakeService {
                    spec: spec.clone(),
                    task: TaskStatus {
                        id: task,
                        state: TaskState::Waiting,
                        exit_code: None,
                        container_id: None,
                        error: None,
                        node_id: None,
                        stop_wanted: false,
                    },
                    log: Vec::new(),
                    visible: 0,
                    stop: Some(stop),
                    oom: false,
                },
            );
            id
        };
        tokio::spawn(run_task(self.self_arc(), id.clone(), program, stop_rx));
        if self.swarm_state_mut().script.creation_hangs {
            std::future::pending::<()>().await;
        }
        Ok(id)
    }

    async fn scale_service(&self, id: &str, replicas: u64) -> Result<(), EngineError> {
        self.record(Call::Scale(id.to_string(), replicas));
        self.injected(Op::Scale, "scaling")?;
        let mut swarm = self.swarm_state_mut();
        let service = swarm.services.get_mut(id).ok_or_else(|| EngineError::Api {
            what: format!("scaling service {id}"),
            source: "no such service (404)".into(),
        })?;
        if replicas == 0
            && let Some(stop) = service.stop.take()
        {
            let _ = stop.send(());
        }
        Ok(())
    }

    async fn service_tasks(&self, id: &str) -> Result<Vec<TaskStatus>, EngineError> {
        self.record(Call::Tasks(id.to_string()));
        self.injected(Op::Tasks, "listing tasks")?;
        Ok(self
            .swarm_state_mut()
            .services
            .get(id)
            .map(|s| vec![s.task.clone()])
            .unwrap_or_default())
    }

    fn service_logs(
        &self,
        id: &str,
        stream: StreamKind,
        follow: bool,
        since_seconds: Option<i64>,
    ) -> LogStream {
        self.record(Call::Logs {
            id: id.to_string(),
            stream,
            follow,
            since_seconds,
        });
        let wanted = stream;
        let failing = self.injected(Op::Logs, "reading a log").err();
        let engine = self.self_arc();
        let service = id.to_string();
        let stream = futures::stream::unfold(
            (engine, service, 0usize, failing),
            move |(engine, service, mut index, failing)| async move {
                if let Some(error) = failing {
                    return Some((Err(error), (engine, service, index, None)));
                }
                loop {
                    let changed = engine.changed.notified();
                    // The next message this reader gets, and the lag before it comes.
                    let found = {
                        let swarm = engine.swarm_state_mut();
                        let service_state = swarm.services.get(&service)?;
                        let end = if follow {
                            service_state.visible
                        } else {
                            service_state.log.len()
                        };
                        let mut found = None;
                        while index < end && found.is_none() {
                            let chunk = service_state.log[index].clone();
                            index += 1;
                            if chunk.stream == wanted
                                && since_seconds.is_none_or(|s| seconds_of(&chunk.timestamp) >= s)
                            {
                                let lag = if follow {
                                    swarm.script.follower_lag
                                } else {
                                    Duration::ZERO
                                };
                                found = Some((chunk, lag));
                            }
                        }
                        if found.is_none() && !follow {
                            return None;
                        }
                        found
                    };
                    if let Some((chunk, lag)) = found {
                        drop(changed);
                        tokio::time::sleep(lag).await;
                        return Some((Ok(chunk), (engine, service, index, None)));
                    }
                    changed.await;
                }
            },
        );
        Box::pin(stream)
    }

    async fn remove_object(&self, kind: SwarmKind, id: &str) -> Result<(), EngineError> {
        self.record(Call::RemoveObject(kind, id.to_string()));
        self.injected(Op::RemoveObject, "removing")?;
        let mut swarm = self.swarm_state_mut();
        // Like the engine, a name names the object too.
        let by_name = match kind {
            SwarmKind::Service => swarm
                .services
                .iter()
                .find(|(_, s)| s.spec.name == id)
                .map(|(id, _)| id.clone()),
            SwarmKind::Secret => swarm
                .secrets
                .iter()
                .find(|(_, s)| s.name == id)
                .map(|(id, _)| id.clone()),
            SwarmKind::Network => swarm
                .networks
                .iter()
                .find(|(_, n)| n.name == id)
                .map(|(id, _)| id.clone()),
        };
        let id = by_name.as_deref().unwrap_or(id);
        let in_use = |swarm: &FakeSwarm| match kind {
            SwarmKind::Service => false,
            SwarmKind::Secret => swarm
                .services
                .values()
                .any(|s| s.spec.secrets.iter().any(|f| f.secret_id == id)),
            SwarmKind::Network => swarm.services.values().any(|s| {
                s.spec.networks.iter().any(|n| n == id)
                    && matches!(s.task.state, TaskState::Running | TaskState::Waiting)
            }),
        };
        if in_use(&swarm) {
            return Err(EngineError::InUse {
                what: format!("removing {} {id}", kind.name()),
            });
        }
        match kind {
            SwarmKind::Service => {
                if let Some(mut service) = swarm.services.remove(id)
                    && let Some(stop) = service.stop.take()
                {
                    let _ = stop.send(());
                }
            }
            SwarmKind::Secret => {
                swarm.secrets.remove(id);
            }
            SwarmKind::Network => {
                swarm.networks.remove(id);
            }
        }
        drop(swarm);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn objects_with_labels(
        &self,
        kind: SwarmKind,
        labels: &[String],
    ) -> Result<Vec<SwarmObject>, EngineError> {
        self.record(Call::ListObjects(kind, labels.to_vec()));
        let swarm = self.swarm_state_mut();
        Ok(match kind {
            SwarmKind::Service => swarm
                .services
                .iter()
                .filter(|(_, s)| matches(&s.spec.labels, labels))
                .map(|(id, s)| swarm_object(id, &s.spec.name, &s.spec.labels))
                .collect(),
            SwarmKind::Secret => swarm
                .secrets
                .iter()
                .filter(|(_, s)| matches(&s.labels, labels))
                .map(|(id, s)| swarm_object(id, &s.name, &s.labels))
                .collect(),
            SwarmKind::Network => swarm
                .networks
                .iter()
                .filter(|(_, n)| matches(&n.labels, labels))
                .map(|(id, n)| swarm_object(id, &n.name, &n.labels))
                .collect(),
        })
    }
}
