//! The Docker engine through bollard: the only code in the crate that knows bollard's types.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, HostConfigLogConfig,
    NetworkingConfig, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder, ImportImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptions, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;

use super::podman::{self, NotApplied, PODMAN_NPROC, ProfileFiles};
use super::{
    ArchiveStream, Attached, BridgeSpec, BuildSpec, CommitSpec, ConnectProblem, ContainerEngine,
    ContainerSpec, ContainerState, ContainerSummary, EngineError, EngineIdentity, EngineInfo,
    EngineMode, EngineName, ImageExport, ImageLabels, ImageSummary, InitProcess, LineSink,
    NetworkSummary, OciRuntime, OutputChunk, PACKBOX_INIT_DIR, PACKBOX_INIT_PATH, SharedSwarm,
    Signal, StreamKind, VolumeSummary, docker_network,
};
use super::{TlsFiles, Transport};

/// How long connecting and negotiating the API version may take before the engine counts as
/// not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may wait for the engine's answer to start (bollard's default).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// The oldest engine API packbox runs against: Docker 20.10, the oldest engine it is tested on.
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// A connected Docker engine. Cheap to clone: bollard opens one connection per request (over
/// TLS, one handshake per request too).
#[derive(Clone, Debug)]
pub struct DockerEngine {
    docker: Docker,
    endpoint: String,
    /// Docker or Podman, and in which mode: what the version endpoint said.
    identity: EngineIdentity,
    /// Where seccomp profiles are written for a Podman engine on this machine (Podman takes a
    /// profile only as a file); `None` for Docker and for an engine over TCP.
    profiles: Option<Arc<ProfileFiles>>,
}

impl DockerEngine {
    /// Connects to an endpoint (a Unix socket, plain TCP, or TCP with mutual TLS) and negotiates
    /// the API version, bounded so that a dead engine fails fast. Errors name the endpoint and
    /// what failed: refused, TLS (whose certificate was refused), API too old.
    pub async fn connect(host: &str, transport: &Transport) -> Result<DockerEngine, EngineError> {
        let default_api = bollard::API_DEFAULT_VERSION;
        let docker = match transport {
            Transport::Unix { .. } => {
                Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, default_api)
            }
            Transport::Tcp { address, tls } => tcp_client(address, tls.as_ref(), default_api),
        };
        let unreachable = |problem, source: Option<BollardError>| EngineError::Unreachable {
            endpoint: host.to_string(),
            problem,
            source: source.map(|e| Box::new(e) as _),
        };
        let docker = docker.map_err(|e| unreachable(classify(&e, transport), Some(e)))?;
        let introduced = tokio::time::timeout(CONNECT_TIMEOUT, introduce(&docker, transport));
        let (server_api, identity) = match introduced.await {
            Err(_) => {
                let seconds = CONNECT_TIMEOUT.as_secs();
                return Err(unreachable(ConnectProblem::NoAnswer { seconds }, None));
            }
            Ok(Err(e)) => return Err(unreachable(classify(&e, transport), Some(e))),
            Ok(Ok(introduced)) => introduced,
        };
        let server_api = parse_api_version(&server_api)
            .ok_or_else(|| unreachable(ConnectProblem::Failed, None))?;
        let negotiated = server_api.min(version_of(default_api));
        if negotiated < MIN_API_VERSION {
            let found = format!("{}.{}", negotiated.0, negotiated.1);
            return Err(unreachable(ConnectProblem::ApiTooOld { found }, None));
        }
        let api = bollard::ClientVersion {
            major_version: negotiated.0,
            minor_version: negotiated.1,
        };
        let docker = match transport {
            Transport::Unix { .. } => Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, &api),
            Transport::Tcp { address, tls } => tcp_client(address, tls.as_ref(), &api),
        }
        .map_err(|e| unreachable(classify(&e, transport), Some(e)))?;
        let profiles = match (identity.name, transport) {
            (EngineName::Podman, Transport::Unix { .. }) => Some(Arc::new(ProfileFiles::new()?)),
            _ => None,
        };
        Ok(DockerEngine {
            docker,
            endpoint: host.to_string(),
            identity,
            profiles,
        })
    }

    /// The body of a create request for this engine, and the file the seccomp profile went into
    /// (Podman, which takes the profile only as a path).
    fn create_body(
        &self,
        spec: &ContainerSpec,
    ) -> Result<(ContainerCreateBody, Option<std::path::PathBuf>), EngineError> {
        if !self.identity.is_podman() {
            return Ok((container_body(spec, None), None));
        }
        let file = match spec.seccomp_profile.as_deref() {
            None | Some("unconfined") => None,
            Some(profile) => match &self.profiles {
                Some(files) => Some(files.file_for(profile)?),
                None => {
                    return Err(EngineError::NotSupported {
                        what: format!("the seccomp profile for a container on {}", self.endpoint),
                        why: "Podman takes a profile only as a file on its own machine, and this one is reached over TCP".into(),
                    });
                }
            },
        };
        let mut body = container_body(spec, file.as_deref());
        if let Some(host) = body.host_config.as_mut() {
            host.ulimits
                .get_or_insert_with(Vec::new)
                .push(ResourcesUlimits {
                    name: Some("nproc".into()),
                    soft: Some(PODMAN_NPROC),
                    hard: Some(PODMAN_NPROC),
                });
        }
        Ok((body, file))
    }

    /// The bollard client, for the engine's other faces.
    pub(super) fn docker(&self) -> &Docker {
        &self.docker
    }
}

pub(super) fn api(what: impl Into<String>, source: BollardError) -> EngineError {
    EngineError::Api {
        what: what.into(),
        source: Box::new(source),
    }
}

#[async_trait::async_trait]
impl ContainerEngine for DockerEngine {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn identity(&self) -> &EngineIdentity {
        &self.identity
    }

    fn swarm(self: Arc<Self>) -> Option<SharedSwarm> {
        // Podman has no Swarm (and its `/info`, which the Swarm face asks, takes hundreds of ms:
        // the start-up sweep would pay it on every packbox command).
        if self.identity.is_podman() {
            None
        } else {
            Some(self)
        }
    }

    async fn image_id(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {name}"), e)),
        }
    }

    async fn image_labels(&self, name: &str) -> Result<Option<ImageLabels>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.id.map(|id| ImageLabels {
                id,
                labels: image
                    .config
                    .and_then(|config| config.labels)
                    .unwrap_or_default(),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {name}"), e)),
        }
    }

    async fn image_repo_digests(&self, name: &str) -> Result<Vec<String>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.repo_digests.unwrap_or_default()),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(api(format!("inspecting image {name}"), e)),
        }
    }

    async fn pull_image(&self, name: &str) -> Result<(), EngineError> {
        // Without a tag the engine would pull every tag of the repository.
        let reference = if has_tag_or_digest(name) {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        let options = CreateImageOptionsBuilder::default()
            .from_image(&reference)
            .build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                return Err(api(format!("pulling image {name}"), e));
            }
        }
        Ok(())
    }

    async fn build_image(
        &self,
        spec: BuildSpec,
        on_line: LineSink<'_>,
    ) -> Result<String, EngineError> {
        if spec.memory_bytes.is_some()
            && self.identity.is_rootless_podman()
            && self.info().await?.cgroup_version == "1"
        {
            // Measured: buildah's step fails ("cannot set memory limit: container could not
            // join or create cgroup") after the earlier steps ran; refuse before any step.
            return Err(EngineError::NotSupported {
                what: format!("the memory limit of the build steps of {} (build.memory)", spec.tag),
                why: "rootless Podman applies no cgroup limit on a cgroup v1 host; build it on rootful Podman or Docker and bring it here with `packbox images copy --to`".into(),
            });
        }
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(&spec.dockerfile)
            .t(&spec.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&spec.build_args)
            .labels(&spec.labels)
            .networkmode(&spec.network_mode)
            .nocache(spec.no_cache);
        if let Some(bytes) = spec.memory_bytes {
            let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
            options = options.memory(bytes).memswap(bytes);
        }
        let options = options.build();
        let body = bollard::body_full(Bytes::from(spec.context_tar));
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut image_id = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream.as_deref() {
                        on_line(line);
                    }
                    if let Some(id) = info.aux.and_then(|aux| aux.id) {
                        image_id = Some(id);
                    }
                    if let Some(detail) = info.error_detail {
                        return Err(EngineError::Build {
                            tag: spec.tag,
                            message: detail.message.unwrap_or_default(),
                        });
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(EngineError::Build {
                        tag: spec.tag,
                        message: error,
                    });
                }
                Err(e) => return Err(api(format!("building image {}", spec.tag), e)),
            }
        }
        match image_id {
            Some(id) => Ok(id),
            None => self
                .image_id(&spec.tag)
                .await?
                .ok_or_else(|| EngineError::Build {
                    tag: spec.tag.clone(),
                    message: "the engine reported no image id".into(),
                }),
        }
    }

    async fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let (body, _) = self.create_body(spec)?;
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) if is_status(&e, 409) || podman::name_taken_on_podman(&e) => {
                return Err(EngineError::InUse {
                    what: format!("creating container {name}: the name"),
                });
            }
            Err(e) => {
                return Err(api(
                    format!("creating a container from image {}", spec.image),
                    e,
                ));
            }
        };
        Ok(created.id)
    }

    async fn sandbox_not_applied(
        &self,
        id: &str,
        spec: &ContainerSpec,
    ) -> Result<Vec<NotApplied>, EngineError> {
        if !self.identity.is_podman() {
            return Ok(Vec::new());
        }
        let (_, profile_file) = self.create_body(spec)?;
        let inspected = read_again_while(podman::podman_state_of_a_moment, || {
            self.docker.inspect_container(id, None)
        })
        .await
        .map_err(|e| api(format!("inspecting container {id}"), e))?;
        Ok(podman::not_applied(
            spec,
            &inspected.config.unwrap_or_default(),
            &inspected.host_config.unwrap_or_default(),
            profile_file.as_deref(),
        ))
    }

    async fn attach(&self, id: &str) -> Result<Attached, EngineError> {
        let options = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| api(format!("attaching to container {id}"), e))?;
        let container = id.to_string();
        let output = attached.output.filter_map(move |item| {
            let container = container.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message }) => Some(Ok(OutputChunk {
                        stream: StreamKind::Stdout,
                        bytes: message,
                    })),
                    Ok(LogOutput::StdErr { message }) => Some(Ok(OutputChunk {
                        stream: StreamKind::Stderr,
                        bytes: message,
                    })),
                    Ok(_) => None,
                    Err(e) => Some(Err(api(
                        format!("reading output of container {container}"),
                        e,
                    ))),
                }
            }
        });
        Ok(Attached {
            output: Box::pin(output),
            stdin: attached.input,
        })
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| api(format!("starting container {id}"), e))
    }

    async fn wait(&self, id: &str) -> Result<i64, EngineError> {
        // The engine sends nothing until the request is first polled: never create the wait
        // before start.
        let mut stream = self.docker.wait_container(id, None);
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(api(format!("waiting for container {id}"), e)),
            None => Err(api(
                format!("waiting for container {id}"),
                BollardError::DockerContainerWaitError {
                    error: "the engine closed the wait without an exit code".into(),
                    code: -1,
                },
            )),
        }
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal.name())
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 409) || is_not_found(&e) || podman::is_not_running(&e) => {
                Ok(())
            }
            Err(e) => Err(api(
                format!("sending {} to container {id}", signal.name()),
                e,
            )),
        }
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, EngineError> {
        let inspected = match read_again_while(podman::podman_state_of_a_moment, || {
            self.docker.inspect_container(id, None)
        })
        .await
        {
            Ok(inspected) => inspected,
            Err(e) if is_not_found(&e) => {
                return Ok(ContainerState {
                    removed: true,
                    ..ContainerState::default()
                });
            }
            Err(e) => return Err(api(format!("inspecting container {id}"), e)),
        };
        let state = inspected.state.unwrap_or_default();
        let removing = matches!(
            state.status,
            Some(
                bollard::models::ContainerStateStatusEnum::REMOVING
                    | bollard::models::ContainerStateStatusEnum::DEAD
            )
        );
        Ok(ContainerState {
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code,
            running: state.running.unwrap_or(false),
            removed: removing,
        })
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 409: removal already in progress, which ends the same way.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(api(format!("removing container {id}"), e)),
        }
    }

    async fn containers_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = read_again_while(podman::podman_state_of_a_moment, || {
            self.docker.list_containers(Some(options.clone()))
        })
        .await
        .map_err(|e| api("listing containers", e))?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                Some(ContainerSummary {
                    id: c.id?,
                    image_id: c.image_id,
                    labels: c.labels.unwrap_or_default(),
                    running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                    created: c.created.unwrap_or(0),
                })
            })
            .collect())
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| api("reading the engine's info", e))?;
        let mut oci_runtimes: Vec<OciRuntime> = info
            .runtimes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, runtime)| OciRuntime {
                path: runtime.path.unwrap_or_else(|| name.clone()),
                args: runtime.runtime_args.unwrap_or_default(),
                name,
            })
            .collect();
        oci_runtimes.sort_by(|a, b| a.name.cmp(&b.name));
        let negotiated = self.docker.client_version();
        Ok(EngineInfo {
            server_version: info.server_version.unwrap_or_default(),
            oci_runtimes,
            cpus: info.ncpu.unwrap_or(0),
            api_version: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
            os: info.operating_system.unwrap_or_default(),
            arch: info.architecture.unwrap_or_default(),
            kernel: info.kernel_version.unwrap_or_default(),
            name: info.name.unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            cgroup_driver: info
                .cgroup_driver
                .map(|v| v.to_string())
                .unwrap_or_default(),
            default_runtime: info.default_runtime.unwrap_or_default(),
            security_options: info.security_options.unwrap_or_default(),
        })
    }

    async fn images_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ImageSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        // Podman lists images without a lock against removal: an image removed by another
        // client while the list is being read fails the whole list with 500 "image not known".
        // The list is read again (a few times, briefly) rather than failing a probe or a sweep.
        let found = read_again_while(podman::vanished_during_listing, || {
            self.docker.list_images(Some(options.clone()))
        })
        .await
        .map_err(|e| api("listing images", e))?;
        Ok(found
            .into_iter()
            .map(|image| ImageSummary {
                id: image.id,
                tags: real_tags(image.repo_tags),
                created: image.created,
                size_bytes: image.size,
                labels: image.labels,
            })
            .collect())
    }

    async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_status(&e, 409) => Err(EngineError::InUse {
                what: format!("removing image {id}"),
            }),
            Err(e) => Err(api(format!("removing image {id}"), e)),
        }
    }

    async fn remove_layer(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(true)
            .build();
        match self.docker.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_status(&e, 409) => Err(EngineError::InUse {
                what: format!("removing layer {id}"),
            }),
            Err(e) => Err(api(format!("removing layer {id}"), e)),
        }
    }

    async fn image_size(&self, name: &str) -> Result<u64, EngineError> {
        let image = self
            .docker
            .inspect_image(name)
            .await
            .map_err(|e| api(format!("inspecting image {name}"), e))?;
        Ok(image
            .size
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(0))
    }

    async fn container_labels(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError> {
        match read_again_while(podman::podman_state_of_a_moment, || {
            self.docker.inspect_container(name, None)
        })
        .await
        {
            Ok(inspected) => Ok(Some(
                inspected
                    .config
                    .and_then(|config| config.labels)
                    .unwrap_or_default(),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting container {name}"), e)),
        }
    }

    async fn volume_created(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(volume) => Ok(Some(
                volume.created_at.map(|t| t.to_string()).unwrap_or_default(),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting volume {name}"), e)),
        }
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some("local".into()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(drop)
            .map_err(|e| api(format!("creating volume {name}"), e))
    }

    async fn remove_volume(&self, name: &str) -> Result<bool, EngineError> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(api(format!("removing volume {name}"), e)),
        }
    }

    async fn volumes_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<VolumeSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| api("listing volumes", e))?;
        Ok(found
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeSummary {
                name: v.name,
                labels: v.labels,
                created_at: v.created_at.map(|t| t.to_string()).unwrap_or_default(),
            })
            .collect())
    }

    async fn create_bridge(&self, spec: &BridgeSpec) -> Result<String, EngineError> {
        docker_network::create_bridge(&self.docker, spec).await
    }

    async fn network(&self, name: &str) -> Result<Option<NetworkSummary>, EngineError> {
        docker_network::network(&self.docker, name).await
    }

    async fn networks_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<NetworkSummary>, EngineError> {
        docker_network::networks_with_labels(&self.docker, labels).await
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        ipv4: Option<&str>,
    ) -> Result<(), EngineError> {
        docker_network::connect(&self.docker, network, container, ipv4).await
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        docker_network::disconnect(&self.docker, network, container).await
    }

    async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        docker_network::remove(&self.docker, id).await
    }

    async fn container_address(
        &self,
        container: &str,
        network: &str,
    ) -> Result<Option<String>, EngineError> {
        docker_network::container_address(&self.docker, container, network).await
    }

    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        archive: ArchiveStream,
    ) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker
            .upload_to_container(id, Some(options), bollard::body_try_stream(archive))
            .await
            .map_err(|e| api(format!("uploading files into container {id} at {path}"), e))
    }

    async fn commit(&self, id: &str, spec: &CommitSpec) -> Result<String, EngineError> {
        let (repo, tag) = spec
            .tag
            .rsplit_once(':')
            .unwrap_or((spec.tag.as_str(), "latest"));
        let mut options = bollard::query_parameters::CommitContainerOptionsBuilder::default()
            .container(id)
            .pause(false);
        // An empty tag: an untagged image (a layer a later build step starts from).
        if !spec.tag.is_empty() {
            options = options.repo(repo).tag(tag);
        }
        if self.identity.is_podman() {
            let changes = podman::commit_changes(spec).map_err(|why| EngineError::Api {
                what: format!("committing container {id} as {}", spec.tag),
                source: why.into(),
            })?;
            options = options.changes(&changes);
        }
        let options = options.build();
        // Every field packbox cares for is set: the engine fills what is left unset from the
        // container's own configuration.
        let config = bollard::models::ContainerConfig {
            env: Some(spec.env.clone()),
            cmd: Some(spec.cmd.clone()),
            entrypoint: Some(Vec::new()),
            working_dir: Some(spec.working_dir.clone()),
            user: Some(spec.user.clone()),
            labels: Some(spec.labels.clone()),
            ..Default::default()
        };
        let made = self
            .docker
            .commit_container(options, config)
            .await
            .map_err(|e| api(format!("committing container {id} as {}", spec.tag), e))?;
        Ok(made.id)
    }

    fn download_archive(&self, id: &str, path: &str) -> ImageExport {
        let what = format!("reading {path} from container {id}");
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        Box::pin(
            self.docker
                .download_from_container(id, Some(options))
                .map(move |chunk| chunk.map_err(|e| api(what.clone(), e))),
        )
    }

    fn export_images(&self, names: &[String]) -> ImageExport {
        let what = format!("exporting {}", names.join(", "));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Box::pin(
            self.docker
                .export_images(&names)
                .map(move |item| item.map_err(|e| api(what.clone(), e))),
        )
    }

    async fn import_images(&self, archive: ArchiveStream) -> Result<Vec<String>, EngineError> {
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut stream = self.docker.import_image_stream(options, archive, None);
        let mut messages = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(EngineError::Build {
                            tag: "image archive".into(),
                            message: detail.message.unwrap_or_default(),
                        });
                    }
                    if let Some(line) = info.stream {
                        messages.push(line.trim().to_string());
                    }
                }
                Err(e) => return Err(api("loading an image archive", e)),
            }
        }
        Ok(messages)
    }

    async fn import_rootfs(
        &self,
        tag: &str,
        rootfs: ArchiveStream,
        changes: &[String],
    ) -> Result<String, EngineError> {
        let (repo, tag_part) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let mut options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag_part)
            .build();
        options.changes = changes.to_vec();
        let mut stream =
            self.docker
                .create_image(Some(options), Some(bollard::body_try_stream(rootfs)), None);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                return Err(api(format!("importing {tag}"), e));
            }
        }
        self.image_id(tag).await?.ok_or_else(|| EngineError::Build {
            tag: tag.to_string(),
            message: "the engine reported the import done but has no such image".into(),
        })
    }

    async fn read_file(
        &self,
        id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let what = || format!("reading {path} from container {id}");
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(id, Some(options));
        // The archive holds the file and a few headers: stop reading well before it is large.
        let limit = max_bytes + (64 << 10);
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(api(what(), e)),
            }
            if archive.len() as u64 > limit {
                return Err(EngineError::Unexpected {
                    what: what(),
                    message: format!("larger than {max_bytes} bytes"),
                });
            }
        }
        first_file(&archive, max_bytes).map_err(|message| EngineError::Unexpected {
            what: what(),
            message,
        })
    }
}

/// The content of the first regular file of a tar archive, at most `max_bytes`; `None` when it
/// holds none (the path named a folder).
fn first_file(archive: &[u8], max_bytes: u64) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(archive);
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > max_bytes {
            return Err(format!("larger than {max_bytes} bytes"));
        }
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// A client for an engine over TCP, plain or with mutual TLS, built here rather than by bollard
/// for three reasons, each measured or required: TCP_NODELAY (without it every TLS handshake
/// waits out the peer's delayed ACK, about 40 ms per request on loopback), connections kept
/// alive between requests (a run makes about ten), and a trust store holding only the CA of
/// `ca.pem` (bollard adds the system's roots, so a publicly trusted certificate for the engine's
/// host name would be accepted too).
fn tcp_client(
    address: &str,
    tls: Option<&TlsFiles>,
    api: &bollard::ClientVersion,
) -> Result<Docker, BollardError> {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    // The request body type is bollard's own and has no public name, so the client type is
    // inferred where the request is made: one expansion per connector.
    macro_rules! over {
        ($connector:expr, $url:expr) => {{
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .build($connector);
            let transport = move |request: bollard::BollardRequest| {
                let client = client.clone();
                Box::pin(async move { client.request(request).await.map_err(BollardError::from) })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
            };
            Docker::connect_with_custom_transport(transport, Some($url), REQUEST_TIMEOUT_SECS, api)
        }};
    }

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    match tls {
        None => over!(http, format!("http://{address}")),
        Some(files) => {
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(files)?)
                .https_only()
                .enable_http1()
                .wrap_connector(http);
            over!(https, format!("https://{address}"))
        }
    }
}

/// How long an idle kept-alive connection to a TCP engine stays open.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Mutual TLS: the engine's certificate must chain to the CA of `ca.pem` alone; packbox shows
/// `cert.pem` with `key.pem`. The files were checked while the settings were resolved; a
/// failure here still names the file.
fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, BollardError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let unusable = |path: &std::path::Path| BollardError::CertPathError {
        path: path.to_path_buf(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&files.ca).map_err(|_| unusable(&files.ca))? {
        roots
            .add(certificate.map_err(|_| unusable(&files.ca))?)
            .map_err(|_| unusable(&files.ca))?;
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|_| unusable(&files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unusable(&files.cert))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|_| unusable(&files.key))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| unusable(&files.ca))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|_| unusable(&files.key))
}

/// Reads a failed first request's error chain for the cause a user can act on: an I/O error
/// kind, a rustls error (hidden inside an `io::Error`), or the engine's own answer.
fn classify(error: &BollardError, transport: &Transport) -> ConnectProblem {
    let tls = match transport {
        Transport::Tcp { tls, .. } => tls.as_ref(),
        Transport::Unix { .. } => None,
    };
    let from_tls = |tls_error: &rustls::Error| -> ConnectProblem {
        use rustls::{AlertDescription, CertificateError};
        match tls_error {
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => ConnectProblem::UntrustedEngineCertificate {
                ca: tls.map(|t| t.ca.display().to_string()).unwrap_or_default(),
            },
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => ConnectProblem::CertificateNameMismatch,
            rustls::Error::InvalidCertificate(other) => ConnectProblem::BadEngineCertificate {
                detail: format!("{other:?}"),
            },
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateRequired
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied,
            ) => ConnectProblem::ClientCertificateRefused {
                cert: tls
                    .map(|t| t.cert.display().to_string())
                    .unwrap_or_default(),
            },
            rustls::Error::InvalidMessage(_) => ConnectProblem::EngineNotTls,
            other => ConnectProblem::TlsHandshake {
                detail: other.to_string(),
            },
        }
    };
    // A transparent I/O error hides itself from `source()`: start the walk at it.
    let start: &(dyn std::error::Error + 'static) = match error {
        BollardError::IOError { err } => err,
        other => other,
    };
    let mut current = Some(start);
    while let Some(cause) = current {
        if let Some(tls_error) = cause.downcast_ref::<rustls::Error>() {
            return from_tls(tls_error);
        }
        let mut next = cause.source();
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return ConnectProblem::Refused,
                std::io::ErrorKind::NotFound => return ConnectProblem::NoSocket,
                std::io::ErrorKind::PermissionDenied => return ConnectProblem::SocketPermission,
                std::io::ErrorKind::TimedOut => {
                    let seconds = CONNECT_TIMEOUT.as_secs();
                    return ConnectProblem::NoAnswer { seconds };
                }
                _ => {}
            }
            // `io::Error::source` skips the error it wraps (which may be another io::Error
            // around a rustls error): step into it instead.
            if let Some(inner) = io.get_ref() {
                next = Some(inner as &(dyn std::error::Error + 'static));
            }
        }
        if cause.to_string().starts_with("dns error") {
            return ConnectProblem::HostNotFound;
        }
        current = next;
    }
    // Over TLS, a connection the engine closes before its first answer is a refused client
    // certificate whose alert lost the race with the close (hyper then only says the connection
    // closed); the wording is hyper's, which names no error type for it.
    if let Some(files) = tls {
        let mut text = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(next) = cause {
            text.push_str(&next.to_string());
            cause = next.source();
        }
        if text.contains("connection was not ready")
            || text.contains("connection closed before message completed")
            || text.contains("Connection reset by peer")
        {
            return ConnectProblem::ClosedAfterTlsHandshake {
                cert: files.cert.display().to_string(),
            };
        }
    }
    match error {
        BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        } if message.contains("HTTP request to an HTTPS server") => ConnectProblem::EngineWantsTls,
        BollardError::RequestTimeoutError => ConnectProblem::NoAnswer {
            seconds: REQUEST_TIMEOUT_SECS,
        },
        BollardError::SocketNotFoundError(_) => ConnectProblem::NoSocket,
        _ => ConnectProblem::Failed,
    }
}

/// Translates packbox's spec into the engine's create body. Attach is set up for a stdin that is
/// closed after one write (`stdin_once`), with no TTY so the streams stay separate and bounded.
/// `profile_file`: the file holding the spec's seccomp profile, for an engine that takes a
/// path (Podman); `None` sends the profile itself, as the docker CLI does.
fn container_body(
    spec: &ContainerSpec,
    profile_file: Option<&std::path::Path>,
) -> ContainerCreateBody {
    let mode = |read_only: bool| if read_only { "ro" } else { "rw" };
    // packbox's init comes from its volume and runs the command; else the engine's init does.
    let (engine_init, init_volume, cmd) = match &spec.init {
        InitProcess::Engine => (true, None, spec.cmd.clone()),
        InitProcess::Packbox { volume } => (
            false,
            Some(format!("{volume}:{PACKBOX_INIT_DIR}:ro")),
            [PACKBOX_INIT_PATH.to_string(), "--".to_string()]
                .into_iter()
                .chain(spec.cmd.iter().cloned())
                .collect(),
        ),
    };
    // The engine reads a source without a leading `/` as a volume name.
    let binds = spec
        .binds
        .iter()
        .map(|b| format!("{}:{}:{}", b.host_path, b.container_path, mode(b.read_only)))
        .chain(
            spec.volumes
                .iter()
                .map(|v| format!("{}:{}:{}", v.volume, v.container_path, mode(v.read_only))),
        )
        .chain(init_volume)
        .collect();
    let mut security_opt = Vec::new();
    if spec.no_new_privileges {
        security_opt.push("no-new-privileges".to_string());
    }
    // Docker's API takes the profile's content, as the docker CLI sends it for
    // `--security-opt`; Podman's takes a file's path.
    match (profile_file, &spec.seccomp_profile) {
        (Some(file), _) => security_opt.push(format!("seccomp={}", file.display())),
        (None, Some(profile)) => security_opt.push(format!("seccomp={profile}")),
        (None, None) => {}
    }
    let host_config = HostConfig {
        binds: Some(binds),
        tmpfs: Some(spec.tmpfs.clone().into_iter().collect()),
        readonly_rootfs: Some(spec.read_only_rootfs),
        network_mode: Some(spec.network_mode.clone()),
        cap_drop: spec.cap_drop_all.then(|| vec!["ALL".to_string()]),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        security_opt: Some(security_opt),
        memory: Some(spec.memory_bytes),
        // Equal to memory: no swap on top of the limit.
        memory_swap: Some(spec.memory_bytes),
        pids_limit: Some(spec.pids_limit),
        nano_cpus: Some(spec.nano_cpus),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(spec.nofile),
            hard: Some(spec.nofile),
        }]),
        // A tiny init reaps zombies and forwards SIGTERM to the action: the engine's, or
        // packbox's own (then the command above starts with it).
        init: Some(engine_init),
        // Output is captured through attach; nothing is written to the engine's disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        runtime: spec.oci_runtime.clone(),
        sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
        dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
        ..Default::default()
    };
    // A fixed address on a network packbox made (the egress proxy knows a run by it).
    let networking_config = spec.ipv4_address.as_ref().map(|address| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            spec.network_mode.clone(),
            EndpointSettings {
                ipam_config: Some(EndpointIpamConfig {
                    ipv4_address: Some(address.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )])),
    });
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(cmd),
        // The image's entrypoint must not wrap the action's command.
        entrypoint: Some(Vec::new()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(spec.working_dir.clone()),
        user: Some(spec.user.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

/// `1.41` as (1, 41).
fn parse_api_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn version_of(version: &bollard::ClientVersion) -> (usize, usize) {
    (version.major_version, version.minor_version)
}

/// What the engine says about itself: the API version it serves and who it is. Both questions
/// are asked at once on a Unix socket: a Podman service answers its ping with its own version
/// ([`podman::ping`]), which spares its slow version endpoint; Docker's ping says nothing of the
/// kind, and its version endpoint answers in milliseconds. One request of the version endpoint
/// both negotiates the API version and says which engine this is elsewhere.
async fn introduce(
    docker: &Docker,
    transport: &Transport,
) -> Result<(String, EngineIdentity), BollardError> {
    let asked = async {
        let version = docker.version().await?;
        let api = version.api_version.clone().unwrap_or_default();
        Ok((api, identify(&version, transport)))
    };
    let Transport::Unix { socket } = transport else {
        return asked.await;
    };
    tokio::pin!(asked);
    tokio::select! {
        Some(ping) = podman::ping(socket) => Ok((
            ping.api_version,
            EngineIdentity {
                name: EngineName::Podman,
                version: ping.podman_version,
                mode: podman_mode(transport),
            },
        )),
        answer = &mut asked => answer,
    }
}

/// Docker or Podman, from the version endpoint: Podman's names a `Podman Engine` component
/// (rootless Docker a `rootlesskit` one).
fn identify(version: &bollard::models::SystemVersion, transport: &Transport) -> EngineIdentity {
    let components = version.components.as_deref().unwrap_or_default();
    let podman = components.iter().find(|c| c.name == "Podman Engine");
    let version_text = podman
        .map(|c| c.version.clone())
        .or_else(|| version.version.clone())
        .unwrap_or_default();
    match podman {
        Some(_) => EngineIdentity {
            name: EngineName::Podman,
            version: version_text,
            mode: podman_mode(transport),
        },
        None => EngineIdentity {
            name: EngineName::Docker,
            version: version_text,
            mode: if components.iter().any(|c| c.name == "rootlesskit") {
                EngineMode::Rootless
            } else {
                EngineMode::Rootful
            },
        },
    }
}

/// A Podman service on a Unix socket is rootless when the socket belongs to a user other than
/// root (the service makes it as the user it runs as); over TCP its mode cannot be told from here.
fn podman_mode(transport: &Transport) -> EngineMode {
    use std::os::unix::fs::MetadataExt;
    match transport {
        Transport::Unix { socket } => match std::fs::metadata(socket) {
            Ok(meta) if meta.uid() == 0 => EngineMode::Rootful,
            Ok(_) => EngineMode::Rootless,
            Err(_) => EngineMode::Unknown,
        },
        Transport::Tcp { .. } => EngineMode::Unknown,
    }
}

/// Whether an image reference names a tag or digest (`repo:tag`, `host:5000/repo:tag`, `repo@sha256:..`).
fn has_tag_or_digest(reference: &str) -> bool {
    let last_component = reference.rsplit('/').next().unwrap_or(reference);
    reference.contains('@') || last_component.contains(':')
}

/// A "no such ..." answer: 404 from Docker; Podman 4.3 answers some of them (a container
/// removed while it is looked up) with 500 and `no such container` in the message.
fn is_not_found(error: &BollardError) -> bool {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => *status_code == 404 || (*status_code == 500 && message.contains("no such ")),
        _ => false,
    }
}

/// How many times an answer of a moment is read before its error is reported.
const MOMENTARY_ANSWER_ATTEMPTS: u64 = 5;

/// Reads an engine's answer again, a few times and briefly (50 to 250 ms apart), while the
/// engine answers with something it says only for a moment (`momentary`), instead of failing a
/// run, a probe or a sweep for it; any other answer is returned as it is.
async fn read_again_while<T, Read, Answer>(
    momentary: fn(&BollardError) -> bool,
    mut read: Read,
) -> Result<T, BollardError>
where
    Read: FnMut() -> Answer,
    Answer: std::future::Future<Output = Result<T, BollardError>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(e) if attempt < MOMENTARY_ANSWER_ATTEMPTS && momentary(&e) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            answer => return answer,
        }
    }
}

pub(super) fn is_status(error: &BollardError, status: u16) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// The tags of a listed image without the engine's placeholder for "untagged" (Docker 20.10 lists
/// an untagged image as `<none>:<none>`, which no call takes as a name).
fn real_tags(tags: Vec<String>) -> Vec<String> {
    tags.into_iter()
        .filter(|tag| tag != "<none>:<none>" && tag != "<none>@<none>")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BindMount;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, *bytes)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn an_untagged_image_lists_no_tags() {
        assert!(real_tags(vec!["<none>:<none>".into()]).is_empty());
        assert!(real_tags(vec!["<none>@<none>".into()]).is_empty());
        assert_eq!(
            real_tags(vec!["packbox/env:python-3.11-ab".into()]),
            ["packbox/env:python-3.11-ab"]
        );
    }

    #[test]
    fn a_file_is_taken_from_the_engines_archive_within_its_limit() {
        let tar = archive(&[("pip-freeze.txt", b"six==1.16.0\n")]);
        assert_eq!(first_file(&tar, 1024), Ok(Some(b"six==1.16.0\n".to_vec())));
        let err = first_file(&tar, 4).expect_err("over the limit");
        assert!(err.contains("larger than 4 bytes"), "{err}");
        assert_eq!(first_file(&archive(&[]), 1024), Ok(None));
    }

    fn locked_down() -> ContainerSpec {
        ContainerSpec {
            image: "packbox/shell:5.2".into(),
            cmd: vec!["bash".into(), "/pack/actions/a.sh".into()],
            env: vec![("ATTUNE_ACTION".into(), "p.a".into())],
            working_dir: "/pack".into(),
            user: "65534:65534".into(),
            binds: vec![BindMount {
                host_path: "/packs/p".into(),
                container_path: "/pack".into(),
                read_only: true,
            }],
            read_only_rootfs: true,
            network_mode: "none".into(),
            cap_drop_all: true,
            cap_add: Vec::new(),
            no_new_privileges: true,
            memory_bytes: 512 << 20,
            pids_limit: 256,
            nano_cpus: 1_000_000_000,
            nofile: 1024,
            ..Default::default()
        }
    }

    #[test]
    fn body_carries_every_sandbox_setting() {
        let body = container_body(&locked_down(), None);
        let host = body.host_config.expect("host config is always set");
        assert_eq!(host.binds, Some(vec!["/packs/p:/pack:ro".to_string()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.memory, host.memory_swap);
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.auto_remove, None);
        // Never privileged, never the engine's socket: neither is a setting.
        assert_eq!(host.privileged, None);
        assert!(!format!("{host:?}").contains("docker.sock"));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.env, Some(vec!["ATTUNE_ACTION=p.a".to_string()]));
    }

    #[test]
    fn podmans_500_for_a_vanished_container_is_not_found() {
        let podman = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "container 4df7 does not exist in database: no such container".into(),
        };
        assert!(is_not_found(&podman));
        let other = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "runc: create failed".into(),
        };
        assert!(!is_not_found(&other));
    }

    #[test]
    fn tags_are_told_apart_from_registry_ports() {
        assert!(has_tag_or_digest("python:3.12-slim"));
        assert!(has_tag_or_digest("registry:5000/team/python:3.12"));
        assert!(has_tag_or_digest("python@sha256:abc"));
        assert!(!has_tag_or_digest("python"));
        assert!(!has_tag_or_digest("registry:5000/team/python"));
    }

    #[test]
    fn a_pack_volume_is_mounted_by_name_read_only() {
        let mut spec = locked_down();
        spec.binds.clear();
        spec.volumes = vec![crate::engine::VolumeMount {
            volume: "packbox-pack-p-abc".into(),
            container_path: "/pack".into(),
            read_only: true,
        }];
        let host = container_body(&spec, None)
            .host_config
            .expect("host config");
        assert_eq!(
            host.binds,
            Some(vec!["packbox-pack-p-abc:/pack:ro".to_string()])
        );
    }

    fn tls_endpoint() -> Transport {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        Transport::Tcp {
            address: "engine:2376".into(),
            tls: Some(super::super::TlsFiles {
                ca: fixtures.join("ca.pem"),
                cert: fixtures.join("cert.pem"),
                key: fixtures.join("key.pem"),
                source: "fixtures".into(),
            }),
        }
    }

    /// A rustls error as hyper hands it up: inside an io::Error inside an io::Error.
    fn wrapped(tls: rustls::Error) -> BollardError {
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        BollardError::IOError {
            err: std::io::Error::other(inner),
        }
    }

    #[test]
    fn connect_failures_are_told_apart() {
        let endpoint = tls_endpoint();
        let untrusted = classify(
            &wrapped(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
            &endpoint,
        );
        assert!(
            matches!(&untrusted, ConnectProblem::UntrustedEngineCertificate { ca } if ca.ends_with("ca.pem")),
            "{untrusted:?}"
        );
        let refused = classify(
            &wrapped(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate,
            )),
            &endpoint,
        );
        assert!(
            matches!(&refused, ConnectProblem::ClientCertificateRefused { cert } if cert.ends_with("cert.pem")),
            "{refused:?}"
        );
        let refused_port = BollardError::IOError {
            err: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(classify(&refused_port, &endpoint), ConnectProblem::Refused);
        let plain = BollardError::DockerResponseServerError {
            status_code: 400,
            message: "Client sent an HTTP request to an HTTPS server.".into(),
        };
        assert_eq!(classify(&plain, &endpoint), ConnectProblem::EngineWantsTls);
        let not_tls = wrapped(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(classify(&not_tls, &endpoint), ConnectProblem::EngineNotTls);
        let name = wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ));
        assert_eq!(
            classify(&name, &endpoint),
            ConnectProblem::CertificateNameMismatch
        );
    }

    #[test]
    fn a_seccomp_profile_goes_inline_after_no_new_privileges() {
        let mut spec = locked_down();
        spec.seccomp_profile = Some(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#.into());
        let host = container_body(&spec, None)
            .host_config
            .expect("host config");
        assert_eq!(
            host.security_opt,
            Some(vec![
                "no-new-privileges".to_string(),
                r#"seccomp={"defaultAction":"SCMP_ACT_ERRNO"}"#.to_string()
            ])
        );
    }

    #[test]
    fn capabilities_kept_only_when_not_dropped() {
        let mut spec = locked_down();
        spec.cap_drop_all = false;
        let host = container_body(&spec, None)
            .host_config
            .expect("host config");
        assert_eq!(host.cap_drop, None);
    }
}
