//! The Docker engine's Swarm face through bollard: services, their tasks and logs, secrets,
//! networks, and pushing images to a registry.
//!
//! Only fields of API 1.41 are set. What that API cannot say for services (no-new-privileges,
//! a swap limit, the OCI runtime) is handled above the seam, in the sandbox's service spec.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    LocalNodeState, Mount, MountTmpfsOptions, MountType, NetworkAttachmentConfig,
    NetworkCreateRequest, ResourcesUlimits, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{
    ListNetworksOptionsBuilder, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use futures::StreamExt;

use super::docker::{api, is_status};
use super::swarm::{
    LogChunk, LogStream, NetworkSpec, NodeState, ServiceSpec, SwarmEngine, SwarmKind, SwarmNode,
    SwarmObject, SwarmState, TaskState, TaskStatus,
};
use super::{DockerEngine, EngineError, StreamKind};

/// How often a scale request is retried when another update of the service came in between.
const SCALE_ATTEMPTS: u32 = 5;

#[async_trait::async_trait]
impl SwarmEngine for DockerEngine {
    async fn swarm_state(&self) -> Result<SwarmState, EngineError> {
        let info = self
            .docker()
            .info()
            .await
            .map_err(|e| api("reading the engine's info", e))?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(SwarmState {
            active: swarm.local_node_state == Some(LocalNodeState::ACTIVE),
            manager: swarm.control_available.unwrap_or(false),
            nodes: swarm.nodes.unwrap_or(0),
        })
    }

    async fn tag_image(&self, image: &str, repository: &str, tag: &str) -> Result<(), EngineError> {
        let options = TagImageOptionsBuilder::default()
            .repo(repository)
            .tag(tag)
            .build();
        self.docker()
            .tag_image(image, Some(options))
            .await
            .map_err(|e| api(format!("tagging image {image} as {repository}:{tag}"), e))
    }

    async fn push_image(&self, repository: &str, tag: &str) -> Result<String, EngineError> {
        let what = || format!("pushing image {repository}:{tag}");
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self.docker().push_image(repository, Some(options), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(EngineError::Api {
                            what: what(),
                            source: detail.message.unwrap_or_default().into(),
                        });
                    }
                }
                Err(e) => return Err(api(what(), e)),
            }
        }
        // The engine records the digest the registry answered with.
        let reference = format!("{repository}:{tag}");
        let image = self
            .docker()
            .inspect_image(&reference)
            .await
            .map_err(|e| api(format!("inspecting image {reference}"), e))?;
        let prefix = format!("{repository}@");
        image
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|d| d.strip_prefix(&prefix).map(str::to_string))
            .ok_or_else(|| EngineError::Api {
                what: what(),
                source: "the engine recorded no digest for the pushed image".into(),
            })
    }

    async fn node(&self, id: &str) -> Result<Option<SwarmNode>, EngineError> {
        let node = match self.docker().inspect_node(id).await {
            Ok(node) => node,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(api(format!("inspecting node {id}"), e)),
        };
        let hostname = node
            .description
            .and_then(|d| d.hostname)
            .unwrap_or_default();
        let state = match node.status.and_then(|s| s.state) {
            Some(bollard::models::NodeState::READY) => NodeState::Ready,
            Some(bollard::models::NodeState::DOWN) => NodeState::Down,
            Some(other) => NodeState::Other(other.to_string()),
            None => NodeState::Other("unknown".into()),
        };
        Ok(Some(SwarmNode {
            hostname,
            id: node.id.unwrap_or_else(|| id.to_string()),
            state,
        }))
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, EngineError> {
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("overlay".into()),
            scope: Some("swarm".into()),
            internal: Some(spec.internal),
            attachable: Some(spec.attachable),
            labels: Some(spec.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        let created = self
            .docker()
            .create_network(request)
            .await
            .map_err(|e| api(format!("creating network {}", spec.name), e))?;
        Ok(created.id)
    }

    async fn create_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let spec = bollard::models::SecretSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        let created = self
            .docker()
            .create_secret(spec)
            .await
            .map_err(|e| api(format!("creating secret {name}"), e))?;
        Ok(created.id)
    }

    async fn create_service(&self, spec: &ServiceSpec) -> Result<String, EngineError> {
        let created = self
            .docker()
            .create_service(service_body(spec), None)
            .await
            .map_err(|e| api(format!("creating service {}", spec.name), e))?;
        created.id.ok_or_else(|| EngineError::Api {
            what: format!("creating service {}", spec.name),
            source: "the engine answered without an id".into(),
        })
    }

    async fn scale_service(&self, id: &str, replicas: u64) -> Result<(), EngineError> {
        let what = || format!("scaling service {id} to {replicas}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let service = match self.docker().inspect_service(id, None).await {
                Ok(service) => service,
                Err(e) => return Err(api(what(), e)),
            };
            let version = service.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = service.spec.unwrap_or_default();
            spec.mode = Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas as i64),
                }),
                ..Default::default()
            });
            let options = UpdateServiceOptionsBuilder::default()
                .version(version as i32)
                .build();
            match self.docker().update_service(id, spec, options, None).await {
                Ok(_) => return Ok(()),
                // "update out of sequence": someone else updated it in between; read it again.
                Err(e) if attempt < SCALE_ATTEMPTS && is_out_of_sequence(&e) => continue,
                Err(e) => return Err(api(what(), e)),
            }
        }
    }

    async fn service_tasks(&self, id: &str) -> Result<Vec<TaskStatus>, EngineError> {
        let filters = HashMap::from([("service".to_string(), vec![id.to_string()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = match self.docker().list_tasks(Some(options)).await {
            Ok(tasks) => tasks,
            Err(e) if is_status(&e, 404) => return Ok(Vec::new()),
            Err(e) => return Err(api(format!("listing the tasks of service {id}"), e)),
        };
        Ok(tasks
            .into_iter()
            .filter_map(|task| {
                let status = task.status.unwrap_or_default();
                let container = status.container_status.unwrap_or_default();
                let state = task_state(status.state);
                let container_id = container.container_id.filter(|c| !c.is_empty());
                let exit_code = exit_code_of(container.exit_code, state, container_id.is_some());
                Some(TaskStatus {
                    id: task.id?,
                    state,
                    exit_code,
                    container_id,
                    error: status.err.filter(|e| !e.is_empty()),
                    node_id: task.node_id.filter(|n| !n.is_empty()),
                    stop_wanted: stop_wanted(task.desired_state),
                })
            })
            .collect())
    }

    fn service_logs(
        &self,
        id: &str,
        stream: StreamKind,
        follow: bool,
        since_seconds: Option<i64>,
    ) -> LogStream {
        let mut options = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(stream == StreamKind::Stdout)
            .stderr(stream == StreamKind::Stderr)
            .timestamps(true);
        if let Some(since) = since_seconds {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let service = id.to_string();
        let stream = self
            .docker()
            .service_logs(id, Some(options.build()))
            .filter_map(move |item| {
                let service = service.clone();
                async move {
                    let (stream, message) = match item {
                        Ok(LogOutput::StdOut { message }) => (StreamKind::Stdout, message),
                        Ok(LogOutput::StdErr { message }) => (StreamKind::Stderr, message),
                        Ok(_) => return None,
                        Err(e) => {
                            return Some(Err(api(
                                format!("reading the log of service {service}"),
                                e,
                            )));
                        }
                    };
                    Some(Ok(split_timestamp(stream, message)))
                }
            });
        Box::pin(stream)
    }

    async fn remove_object(&self, kind: SwarmKind, id: &str) -> Result<(), EngineError> {
        let docker = self.docker();
        let removed = match kind {
            SwarmKind::Service => docker.delete_service(id).await,
            SwarmKind::Secret => docker.delete_secret(id).await,
            SwarmKind::Network => docker.remove_network(id).await,
        };
        match removed {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) if is_in_use(&e) => Err(EngineError::InUse {
                what: format!("removing {} {id}", kind.name()),
            }),
            Err(e) => Err(api(format!("removing {} {id}", kind.name()), e)),
        }
    }

    async fn objects_with_labels(
        &self,
        kind: SwarmKind,
        labels: &[String],
    ) -> Result<Vec<SwarmObject>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let what = || format!("listing {}s", kind.name());
        let docker = self.docker();
        let objects = match kind {
            SwarmKind::Service => {
                let options = ListServicesOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                docker
                    .list_services(Some(options))
                    .await
                    .map_err(|e| api(what(), e))?
                    .into_iter()
                    .filter_map(|s| {
                        let spec = s.spec.unwrap_or_default();
                        object(s.id, spec.name, spec.labels)
                    })
                    .collect()
            }
            SwarmKind::Secret => {
                let options = ListSecretsOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                docker
                    .list_secrets(Some(options))
                    .await
                    .map_err(|e| api(what(), e))?
                    .into_iter()
                    .filter_map(|s| {
                        let spec = s.spec.unwrap_or_default();
                        object(s.id, spec.name, spec.labels)
                    })
                    .collect()
            }
            SwarmKind::Network => {
                let options = ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                docker
                    .list_networks(Some(options))
                    .await
                    .map_err(|e| api(what(), e))?
                    .into_iter()
                    // Local networks of the same labels are not packbox's Swarm networks.
                    .filter(|n| n.scope.as_deref() == Some("swarm"))
                    .filter_map(|n| object(n.id, n.name, n.labels))
                    .collect()
            }
        };
        Ok(objects)
    }
}

fn object(
    id: Option<String>,
    name: Option<String>,
    labels: Option<HashMap<String, String>>,
) -> Option<SwarmObject> {
    Some(SwarmObject {
        id: id?,
        name: name.unwrap_or_default(),
        labels: labels.unwrap_or_default(),
    })
}

fn task_state(state: Option<bollard::models::TaskState>) -> TaskState {
    use bollard::models::TaskState as S;
    match state {
        Some(S::RUNNING) => TaskState::Running,
        Some(S::COMPLETE | S::FAILED | S::SHUTDOWN) => TaskState::Exited,
        Some(S::REJECTED | S::ORPHANED | S::REMOVE) => TaskState::Lost,
        Some(
            S::NEW
            | S::ALLOCATED
            | S::PENDING
            | S::ASSIGNED
            | S::ACCEPTED
            | S::PREPARING
            | S::READY
            | S::STARTING,
        )
        | None => TaskState::Waiting,
    }
}

/// Whether the manager wants a task stopped: its desired state is past running.
fn stop_wanted(desired: Option<bollard::models::TaskState>) -> bool {
    use bollard::models::TaskState as S;
    matches!(
        desired,
        Some(S::COMPLETE | S::SHUTDOWN | S::FAILED | S::REJECTED | S::REMOVE | S::ORPHANED)
    )
}

/// A task's exit code: the engine leaves a zero out of the task's status, so a task whose
/// container exited without one exited 0; a task stopped before it had a container has none.
fn exit_code_of(reported: Option<i64>, state: TaskState, had_container: bool) -> Option<i64> {
    match (reported, state, had_container) {
        (None, TaskState::Exited, true) => Some(0),
        (code, _, _) => code,
    }
}

/// Splits the engine's `TIMESTAMP ` prefix off a log message.
fn split_timestamp(stream: StreamKind, message: bytes::Bytes) -> LogChunk {
    match message.iter().position(|b| *b == b' ') {
        Some(space) => LogChunk {
            stream,
            timestamp: String::from_utf8_lossy(&message[..space]).into_owned(),
            bytes: message.slice(space + 1..),
        },
        None => LogChunk {
            stream,
            timestamp: String::new(),
            bytes: message,
        },
    }
}

fn is_out_of_sequence(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { message, .. } if message.contains("out of sequence"))
}

/// A network with endpoints (403), a secret a service uses (400 "in use"), or a removal
/// already under way (409).
fn is_in_use(error: &BollardError) -> bool {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            matches!(status_code, 403 | 409)
                || message.contains("in use")
                || message.contains("active endpoints")
        }
        _ => false,
    }
}

/// Translates packbox's service spec into the engine's: one replica that is never restarted,
/// a task log on the `local` driver with bounded files (the log is how output comes back), a
/// tiny init so SIGTERM reaches the action.
fn service_body(spec: &ServiceSpec) -> bollard::models::ServiceSpec {
    let mounts = spec
        .tmpfs
        .iter()
        .map(|t| Mount {
            target: Some(t.path.clone()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(t.size_bytes),
                mode: Some(i64::from(t.mode)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let secrets = spec
        .secrets
        .iter()
        .map(|s| TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(s.file_name.clone()),
                uid: Some(s.uid.clone()),
                gid: Some(s.gid.clone()),
                mode: Some(s.mode),
            }),
            secret_id: Some(s.secret_id.clone()),
            secret_name: Some(s.secret_name.clone()),
        })
        .collect();
    let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        // Command replaces the image's entrypoint, so nothing wraps the action's command.
        command: Some(spec.cmd.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        dir: Some(spec.working_dir.clone()),
        user: Some(spec.user.clone()),
        read_only: Some(spec.read_only_rootfs),
        mounts: Some(mounts),
        stop_signal: Some("SIGTERM".into()),
        stop_grace_period: Some(spec.stop_grace.as_nanos() as i64),
        secrets: Some(secrets),
        init: Some(true),
        capability_drop: spec.cap_drop_all.then(|| vec!["ALL".to_string()]),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(spec.nofile),
            hard: Some(spec.nofile),
        }]),
        ..Default::default()
    };
    let log_options = HashMap::from([
        ("max-size".to_string(), spec.log_file_bytes.to_string()),
        ("max-file".to_string(), "2".to_string()),
        ("compress".to_string(), "false".to_string()),
    ]);
    let task = TaskSpec {
        container_spec: Some(container),
        placement: (!spec.placement.is_empty()).then(|| TaskSpecPlacement {
            constraints: Some(spec.placement.clone()),
            ..Default::default()
        }),
        resources: Some(TaskSpecResources {
            limits: Some(bollard::models::Limit {
                nano_cpus: Some(spec.nano_cpus),
                memory_bytes: Some(spec.memory_bytes),
                pids: Some(spec.pids_limit),
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        }),
        networks: Some(
            spec.networks
                .iter()
                .map(|target| NetworkAttachmentConfig {
                    target: Some(target.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        log_driver: Some(TaskSpecLogDriver {
            name: Some("local".into()),
            options: Some(log_options),
        }),
        ..Default::default()
    };
    bollard::models::ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels),
        task_template: Some(task),
        // Replicated with one replica and no restart, not `replicated-job`: on this engine
        // (20.10) removing a job service neither stops nor removes its task's container.
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::swarm::{SecretFile, TmpfsMount};

    fn locked_down() -> ServiceSpec {
        ServiceSpec {
            name: "packbox-run-1".into(),
            labels: BTreeMap::from([("packbox.managed".into(), "true".into())]),
            image: "sha256:abc".into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "x".into()],
            env: vec![("ATTUNE_ACTION".into(), "p.a".into())],
            working_dir: "/pack".into(),
            user: "65534:65534".into(),
            read_only_rootfs: true,
            tmpfs: vec![TmpfsMount {
                path: "/tmp".into(),
                size_bytes: 64 << 20,
                mode: 0o1777,
            }],
            cap_drop_all: true,
            memory_bytes: 512 << 20,
            nano_cpus: 1_000_000_000,
            pids_limit: 256,
            nofile: 1024,
            networks: vec!["net1".into()],
            secrets: vec![SecretFile {
                secret_id: "s1".into(),
                secret_name: "packbox-params-1".into(),
                file_name: "packbox-params".into(),
                uid: "65534".into(),
                gid: "65534".into(),
                mode: 0o400,
            }],
            stop_grace: Duration::from_secs(10),
            log_file_bytes: 21 << 20,
            placement: Vec::new(),
        }
    }

    #[test]
    fn the_body_carries_every_sandbox_setting_the_api_has() {
        let body = service_body(&locked_down());
        let task = body.task_template.expect("task");
        let container = task.container_spec.expect("container");
        assert_eq!(container.read_only, Some(true));
        assert_eq!(container.capability_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(container.user.as_deref(), Some("65534:65534"));
        assert_eq!(container.init, Some(true));
        assert_eq!(container.stop_grace_period, Some(10_000_000_000));
        let limits = task.resources.and_then(|r| r.limits).expect("limits");
        assert_eq!(limits.pids, Some(256));
        assert_eq!(limits.memory_bytes, Some(512 << 20));
        let secret = &container.secrets.expect("secrets")[0];
        let file = secret.file.as_ref().expect("file");
        assert_eq!(file.mode, Some(0o400));
        assert_eq!(file.uid.as_deref(), Some("65534"));
        assert_eq!(
            task.restart_policy.and_then(|r| r.condition),
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(
            body.mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas),
            Some(1)
        );
        let log = task.log_driver.expect("log driver");
        assert_eq!(log.name.as_deref(), Some("local"));
        assert_eq!(
            log.options.expect("options")["max-size"],
            (21u64 << 20).to_string()
        );
    }

    #[test]
    fn placement_constraints_go_to_the_task_only_when_there_are_some() {
        let anywhere = service_body(&locked_down()).task_template.expect("task");
        assert_eq!(anywhere.placement, None, "any node");
        let mut spec = locked_down();
        spec.placement = vec!["node.role==worker".into(), "node.labels.zone!=dmz".into()];
        let placed = service_body(&spec).task_template.expect("task");
        assert_eq!(
            placed.placement.and_then(|p| p.constraints),
            Some(vec![
                "node.role==worker".to_string(),
                "node.labels.zone!=dmz".to_string()
            ])
        );
    }

    #[test]
    fn the_manager_wants_a_task_stopped_once_its_desired_state_is_past_running() {
        use bollard::models::TaskState as S;
        assert!(!stop_wanted(Some(S::RUNNING)));
        assert!(!stop_wanted(Some(S::READY)));
        assert!(!stop_wanted(None));
        assert!(stop_wanted(Some(S::SHUTDOWN)));
        assert!(stop_wanted(Some(S::REMOVE)));
    }

    #[test]
    fn capabilities_kept_only_when_not_dropped() {
        let mut spec = locked_down();
        spec.cap_drop_all = false;
        let container = service_body(&spec)
            .task_template
            .and_then(|t| t.container_spec)
            .expect("container");
        assert_eq!(container.capability_drop, None);
    }

    #[test]
    fn a_zero_exit_code_the_engine_left_out_is_zero() {
        assert_eq!(exit_code_of(None, TaskState::Exited, true), Some(0));
        assert_eq!(exit_code_of(Some(3), TaskState::Exited, true), Some(3));
        assert_eq!(
            exit_code_of(None, TaskState::Exited, false),
            None,
            "stopped before it had a container"
        );
        assert_eq!(exit_code_of(None, TaskState::Running, true), None);
    }

    #[test]
    fn log_messages_lose_their_timestamp_prefix() {
        let chunk = split_timestamp(
            StreamKind::Stdout,
            bytes::Bytes::from_static(b"2026-12-01T14:22:25.383980915Z out 1\n"),
        );
        assert_eq!(chunk.timestamp, "2026-12-01T14:22:25.383980915Z");
        assert_eq!(&chunk.bytes[..], b"out 1\n");
    }
}
