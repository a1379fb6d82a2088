//! The Docker seam: the only module that talks to bollard.
//!
//! Every other stage speaks in packbox's own types ([`ContainerSpec`], [`BuildSpec`],
//! [`OutputChunk`]), so it can be read and unit-tested without an engine. Errors come back typed,
//! naming the image or container they concern; "not found" and "already stopped" answers that are
//! normal for packbox are folded into ordinary return values here.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, ImportImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptions,
    UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use crate::endpoint::{self, Endpoint, EndpointError, Environment, Transport};

/// How long connecting and negotiating the API version may take before the engine counts as
/// not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may wait for the engine's answer to start (bollard's default).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// The oldest engine API packbox runs against: Docker 20.10, the oldest engine it is tested on.
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// Something the engine could not do, naming what it was asked about.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be used at all: it did not answer, TLS failed, or its API is too old.
    /// The most common set-up problems, so each kind gets its own hint.
    #[error("the Docker engine at {endpoint} {problem}")]
    Unreachable {
        endpoint: String,
        problem: ConnectProblem,
        #[source]
        source: Option<Box<BollardError>>,
    },
    /// The engine's address or TLS files could not be used. Boxed: it is large and rare.
    #[error(transparent)]
    Endpoint(Box<EndpointError>),
    /// The engine answered with an error to one request.
    #[error("docker engine: {what}")]
    Api {
        what: String,
        #[source]
        source: BollardError,
    },
    /// An image build reported an error (a failing step, a missing base image).
    #[error("building image {tag} failed: {message}")]
    Build { tag: String, message: String },
}

impl From<EndpointError> for EngineError {
    fn from(error: EndpointError) -> Self {
        EngineError::Endpoint(Box::new(error))
    }
}

impl EngineError {
    /// Whether the engine refused because of a conflict (a container name in use, ...).
    pub fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Api { source, .. } if is_status(source, 409))
    }

    fn api(what: impl Into<String>, source: BollardError) -> Self {
        EngineError::Api {
            what: what.into(),
            source,
        }
    }
}

/// Why an engine could not be used, in terms the user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectProblem {
    /// Nothing listens at the address.
    Refused,
    /// The Unix socket file does not exist.
    NoSocket,
    /// The Unix socket exists but this user may not open it.
    SocketPermission,
    /// The host name does not resolve.
    HostNotFound,
    /// Connected, but no answer came in time.
    NoAnswer,
    /// The engine's certificate is not signed by the CA packbox was given.
    UntrustedEngineCertificate { ca: String },
    /// The engine's certificate does not name the host packbox connected to.
    CertificateNameMismatch,
    /// The engine's certificate was refused for another reason (expired, wrong purpose, ...).
    BadEngineCertificate { detail: String },
    /// The engine refused packbox's client certificate (signed by a CA it does not trust).
    ClientCertificateRefused { cert: String },
    /// The engine speaks plain HTTP and packbox spoke TLS.
    EngineNotTls,
    /// The engine speaks TLS and packbox spoke plain HTTP.
    EngineWantsTls,
    /// Another TLS failure.
    TlsHandshake { detail: String },
    /// The engine's API is older than packbox supports.
    ApiTooOld { found: String },
    /// Anything else (the cause is in the error's source).
    Failed,
}

impl fmt::Display for ConnectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectProblem::Refused => write!(f, "does not answer (connection refused)"),
            ConnectProblem::NoSocket => write!(f, "does not answer (no such socket)"),
            ConnectProblem::SocketPermission => {
                write!(f, "refused this user (permission denied on the socket)")
            }
            ConnectProblem::HostNotFound => write!(f, "does not answer (host name not found)"),
            ConnectProblem::NoAnswer => write!(
                f,
                "does not answer (no reply within {} s)",
                CONNECT_TIMEOUT.as_secs()
            ),
            ConnectProblem::UntrustedEngineCertificate { ca } => write!(
                f,
                "failed the TLS handshake: its certificate is not signed by the CA in {ca} (untrusted certificate)"
            ),
            ConnectProblem::CertificateNameMismatch => write!(
                f,
                "failed the TLS handshake: its certificate is not valid for this host name"
            ),
            ConnectProblem::BadEngineCertificate { detail } => {
                write!(
                    f,
                    "failed the TLS handshake: its certificate was refused ({detail})"
                )
            }
            ConnectProblem::ClientCertificateRefused { cert } => write!(
                f,
                "failed the TLS handshake: it refused the client certificate {cert} (not signed by a CA it trusts)"
            ),
            ConnectProblem::EngineNotTls => write!(
                f,
                "failed the TLS handshake: it does not speak TLS (a plain-HTTP engine?)"
            ),
            ConnectProblem::EngineWantsTls => {
                write!(f, "refused plain HTTP: it requires TLS")
            }
            ConnectProblem::TlsHandshake { detail } => {
                write!(f, "failed the TLS handshake ({detail})")
            }
            ConnectProblem::ApiTooOld { found } => write!(
                f,
                "speaks API {found}, older than packbox needs ({}.{}, Docker 20.10)",
                MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
            ConnectProblem::Failed => write!(f, "could not be used"),
        }
    }
}

impl ConnectProblem {
    /// The next step for the user.
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectProblem::Refused
            | ConnectProblem::NoSocket
            | ConnectProblem::NoAnswer
            | ConnectProblem::HostNotFound
            | ConnectProblem::Failed => {
                "start the engine (scripts/ensure-docker does it on Debian) or point DOCKER_HOST at one; `packbox doctor` shows which engine packbox chose and why"
            }
            ConnectProblem::SocketPermission => {
                "add this user to the docker group, or run packbox as a user that may use the engine"
            }
            ConnectProblem::UntrustedEngineCertificate { .. }
            | ConnectProblem::CertificateNameMismatch
            | ConnectProblem::BadEngineCertificate { .. } => {
                "DOCKER_CERT_PATH/ca.pem must be the CA that signed the engine's certificate, and the certificate must name the host in DOCKER_HOST"
            }
            ConnectProblem::ClientCertificateRefused { .. } => {
                "use a client certificate (cert.pem, key.pem in DOCKER_CERT_PATH) signed by the CA the engine was started with (dockerd --tlscacert)"
            }
            ConnectProblem::EngineNotTls => {
                "unset DOCKER_TLS_VERIFY for a plain engine (port 2375), or point DOCKER_HOST at its TLS port (2376)"
            }
            ConnectProblem::EngineWantsTls => {
                "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)"
            }
            ConnectProblem::TlsHandshake { .. } => {
                "check DOCKER_CERT_PATH and the engine's --tlscacert/--tlscert; `packbox doctor` shows the files in use"
            }
            ConnectProblem::ApiTooOld { .. } => "upgrade the engine to Docker 20.10 or newer",
        }
    }
}

/// A connected engine client. Cheap to clone: bollard opens one connection per request.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
    endpoint: Arc<Endpoint>,
}

/// One mount of a host folder into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// One mount of a named volume into a container (a pack delivered by content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    pub volume: String,
    pub container_path: String,
    pub read_only: bool,
}

/// Everything packbox asks of a container, in engine-neutral terms; built by the sandbox stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub user: String,
    /// Ordered maps, so that equal specs print equal (the warm pool keys on them).
    pub labels: BTreeMap<String, String>,
    pub binds: Vec<BindMount>,
    /// Named volumes; each must exist (the engine would make an empty one).
    pub volumes: Vec<VolumeMount>,
    /// Mount point to tmpfs options (`size=64m,mode=1777`, ...).
    pub tmpfs: BTreeMap<String, String>,
    pub read_only_rootfs: bool,
    pub network_mode: String,
    pub cap_drop_all: bool,
    pub no_new_privileges: bool,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    pub nano_cpus: i64,
    pub nofile: i64,
    /// An OCI runtime other than the engine's default (e.g. `runsc`), when asked for.
    pub oci_runtime: Option<String>,
}

/// Which stream a chunk of container output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// One frame of container output, as the engine sent it (up to ~32 KiB).
#[derive(Debug)]
pub struct OutputChunk {
    pub stream: StreamKind,
    pub bytes: Bytes,
}

/// The two ends of an attached container: its output frames and its stdin.
pub struct Attached {
    pub output: Pin<Box<dyn Stream<Item = Result<OutputChunk, EngineError>> + Send>>,
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
}

/// What packbox needs to know about a container after it stopped.
#[derive(Clone, Debug, Default)]
pub struct ContainerState {
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
}

/// A container found by label, for sweeping leftovers.
#[derive(Clone, Debug)]
pub struct ContainerSummary {
    pub id: String,
    /// The id of the image the container was created from.
    pub image_id: Option<String>,
    pub labels: HashMap<String, String>,
}

/// An image found by label, for listing and pruning environments.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    pub id: String,
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
    pub size_bytes: i64,
    pub labels: HashMap<String, String>,
}

/// An image build request: the context is an in-memory tar holding the Dockerfile.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    pub tag: String,
    pub context_tar: Vec<u8>,
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub network_mode: String,
}

impl Engine {
    /// Connects to the engine the process environment names (`DOCKER_HOST`, contexts, ...; see
    /// [`endpoint`]), and negotiates the API version.
    pub async fn connect() -> Result<Engine, EngineError> {
        let env: Environment = std::env::vars().collect();
        Engine::connect_with(None, &env).await
    }

    /// Connects to the engine a flag names (`--to ENGINE`: an address or a docker context).
    pub async fn connect_flag(
        flag: &str,
        value: &str,
        env: &Environment,
    ) -> Result<Engine, EngineError> {
        Engine::connect_to(endpoint::resolve_flag(flag, value, env)?).await
    }

    /// Connects to the engine chosen by the `--engine` setting and the given environment.
    pub async fn connect_with(
        engine_setting: Option<&str>,
        env: &Environment,
    ) -> Result<Engine, EngineError> {
        Engine::connect_to(endpoint::resolve(engine_setting, env)?).await
    }

    /// Connects to an endpoint and negotiates the API version, bounded so that a dead engine
    /// fails fast. Errors name the endpoint and what failed (refused, TLS, API too old).
    pub async fn connect_to(endpoint: Endpoint) -> Result<Engine, EngineError> {
        let version = bollard::API_DEFAULT_VERSION;
        let docker = match &endpoint.transport {
            Transport::Unix { .. } => {
                Docker::connect_with_unix(&endpoint.host, REQUEST_TIMEOUT_SECS, version)
            }
            Transport::Tcp { address, tls: None } => {
                Docker::connect_with_http(address, REQUEST_TIMEOUT_SECS, version)
            }
            Transport::Tcp {
                address,
                tls: Some(files),
            } => {
                files.check(&endpoint.origin)?;
                // bollard signs with the process-wide provider; ring is the one compiled in.
                // An Err only says one is installed already, which is as good.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Docker::connect_with_ssl(
                    address,
                    &files.key,
                    &files.cert,
                    &files.ca,
                    REQUEST_TIMEOUT_SECS,
                    version,
                )
            }
        };
        let unreachable = |problem, source| EngineError::Unreachable {
            endpoint: endpoint.host.clone(),
            problem,
            source,
        };
        let docker = docker.map_err(|e| unreachable(classify(&e, &endpoint), Some(Box::new(e))))?;
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Err(_) => return Err(unreachable(ConnectProblem::NoAnswer, None)),
            Ok(Err(e)) => return Err(unreachable(classify(&e, &endpoint), Some(Box::new(e)))),
            Ok(Ok(docker)) => docker,
        };
        let negotiated = docker.client_version();
        if (negotiated.major_version, negotiated.minor_version) < MIN_API_VERSION {
            let found = format!("{}.{}", negotiated.major_version, negotiated.minor_version);
            return Err(unreachable(ConnectProblem::ApiTooOld { found }, None));
        }
        Ok(Engine {
            docker,
            endpoint: Arc::new(endpoint),
        })
    }

    /// The endpoint this client talks to, and why it was chosen.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The id of an image, or `None` when the engine does not have it.
    pub async fn image_id(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.id),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(EngineError::api(format!("inspecting image {name}"), e)),
        }
    }

    /// Pulls an image from its registry, draining the progress stream to its end. Callers bound
    /// it with a timeout: where no registry answers, a pull may fail fast or hang.
    pub async fn pull_image(&self, name: &str) -> Result<(), EngineError> {
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
                return Err(EngineError::api(format!("pulling image {name}"), e));
            }
        }
        Ok(())
    }

    /// Builds an image with the classic builder, passing each output line to `on_line`, and
    /// returns the new image id. The stream is drained to its end; an error step fails the build.
    pub async fn build_image(
        &self,
        spec: BuildSpec,
        mut on_line: impl FnMut(&str),
    ) -> Result<String, EngineError> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(&spec.dockerfile)
            .t(&spec.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&spec.build_args)
            .labels(&spec.labels)
            .networkmode(&spec.network_mode)
            .build();
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
                Err(e) => return Err(EngineError::api(format!("building image {}", spec.tag), e)),
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

    /// Creates a container from a spec; returns its id. Never pulls: a missing image is an error.
    pub async fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), container_body(spec))
            .await
            .map_err(|e| {
                EngineError::api(format!("creating a container from image {}", spec.image), e)
            })?;
        Ok(created.id)
    }

    /// Attaches stdin, stdout and stderr; must happen before start so no output is lost.
    pub async fn attach(&self, id: &str) -> Result<Attached, EngineError> {
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
            .map_err(|e| EngineError::api(format!("attaching to container {id}"), e))?;
        let container = id.to_string();
        let output = attached.output.filter_map(move |item| {
            let container = container.clone();
            async move {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message }) => {
                        Some(Ok(OutputChunk {
                            stream: StreamKind::Stdout,
                            bytes: message,
                        }))
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some(Ok(OutputChunk {
                            stream: StreamKind::Stderr,
                            bytes: message,
                        }))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(EngineError::api(
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

    /// Starts a created container.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| EngineError::api(format!("starting container {id}"), e))
    }

    /// Waits until the container exits and returns its exit code. Call only after start: the
    /// engine sends nothing until the request is first polled.
    pub async fn wait(&self, id: &str) -> Result<i64, EngineError> {
        let mut stream = self.docker.wait_container(id, None);
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(EngineError::api(format!("waiting for container {id}"), e)),
            None => Err(EngineError::Api {
                what: format!("waiting for container {id}"),
                source: BollardError::DockerContainerWaitError {
                    error: "the engine closed the wait without an exit code".into(),
                    code: -1,
                },
            }),
        }
    }

    /// Sends a signal; a container that already stopped (409) or is gone (404) is not an error.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(EngineError::api(
                format!("sending {signal} to container {id}"),
                e,
            )),
        }
    }

    /// The state of a stopped container: whether the kernel's OOM killer ended it.
    pub async fn container_state(&self, id: &str) -> Result<ContainerState, EngineError> {
        let inspected = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| EngineError::api(format!("inspecting container {id}"), e))?;
        let state = inspected.state.unwrap_or_default();
        Ok(ContainerState {
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code,
        })
    }

    /// Removes a container and its anonymous volumes; one that is already gone is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            // 409: removal already in progress, which ends the same way.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(EngineError::api(format!("removing container {id}"), e)),
        }
    }

    /// All containers (running or not) that carry every given `key=value` label.
    pub async fn containers_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| EngineError::api("listing packbox containers", e))?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                Some(ContainerSummary {
                    id: c.id?,
                    image_id: c.image_id,
                    labels: c.labels.unwrap_or_default(),
                })
            })
            .collect())
    }
}

impl Engine {
    /// The OCI runtimes the engine offers (`runc`, `runsc`, ...).
    pub async fn oci_runtimes(&self) -> Result<Vec<String>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| EngineError::api("reading the engine's info", e))?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        Ok(runtimes)
    }

    /// All images that carry every given `key=value` label.
    pub async fn images_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ImageSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| EngineError::api("listing packbox images", e))?;
        Ok(found
            .into_iter()
            .map(|image| ImageSummary {
                id: image.id,
                tags: image.repo_tags,
                created: image.created,
                size_bytes: image.size,
                labels: image.labels,
            })
            .collect())
    }

    /// Every container on the engine, running or not (to know which images are in use).
    pub async fn all_containers(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        self.containers_with_labels(&[]).await
    }

    /// Removes an image (and its tags); refused by the engine while a container uses it.
    pub async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(EngineError::api(format!("removing image {id}"), e)),
        }
    }
}

/// What an engine says about itself, for `packbox doctor`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineFacts {
    /// The engine's version (`20.10.24`).
    pub version: String,
    /// The newest API version the engine speaks.
    pub api_version: String,
    /// The API version packbox and the engine agreed on.
    pub negotiated_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel: String,
    /// The engine host's name (tells a remote engine from the local one at a glance).
    pub name: String,
    pub storage_driver: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    pub cgroup_driver: String,
    pub oci_runtimes: Vec<String>,
    pub default_runtime: String,
    /// `name=seccomp,profile=default`, `name=userns`, `name=rootless`, ...
    pub security_options: Vec<String>,
}

impl Engine {
    /// Version and set-up facts of the engine (two requests: version and info).
    pub async fn describe(&self) -> Result<EngineFacts, EngineError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::api("reading the engine's version", e))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| EngineError::api("reading the engine's info", e))?;
        let negotiated = self.docker.client_version();
        let mut oci_runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        oci_runtimes.sort();
        Ok(EngineFacts {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            negotiated_api_version: format!(
                "{}.{}",
                negotiated.major_version, negotiated.minor_version
            ),
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
            oci_runtimes,
            default_runtime: info.default_runtime.unwrap_or_default(),
            security_options: info.security_options.unwrap_or_default(),
        })
    }
}

/// A volume found by label, for delivering packs and collecting them.
#[derive(Clone, Debug)]
pub struct VolumeSummary {
    pub name: String,
    pub labels: HashMap<String, String>,
    /// As the engine writes it (RFC 3339), which sorts by time.
    pub created_at: String,
}

/// Bytes of an image archive (`docker save` format) as they stream from an engine.
pub type ImageArchiveStream = Pin<Box<dyn Stream<Item = Result<Bytes, EngineError>> + Send>>;

impl Engine {
    /// Whether a volume of that name exists.
    pub async fn volume_exists(&self, name: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(EngineError::api(format!("inspecting volume {name}"), e)),
        }
    }

    /// Creates a local volume with labels (creating an existing one changes nothing).
    pub async fn create_volume(
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
            .map_err(|e| EngineError::api(format!("creating volume {name}"), e))
    }

    /// Removes a volume; one that is gone is not an error. Returns false when the engine kept it
    /// because a container uses it.
    pub async fn remove_volume(&self, name: &str) -> Result<bool, EngineError> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(EngineError::api(format!("removing volume {name}"), e)),
        }
    }

    /// All volumes that carry every given `key=value` label.
    pub async fn volumes_with_labels(
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
            .map_err(|e| EngineError::api("listing packbox volumes", e))?;
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

    /// Ids of the containers (running or not) that mount a volume.
    pub async fn containers_using_volume(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("volume".to_string(), vec![name.to_string()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| EngineError::api(format!("listing containers of volume {name}"), e))?;
        Ok(found.into_iter().filter_map(|c| c.id).collect())
    }

    /// The labels of a container by name or id, or `None` when there is no such container.
    pub async fn container_labels(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError> {
        match self.docker.inspect_container(name, None).await {
            Ok(inspected) => Ok(Some(
                inspected
                    .config
                    .and_then(|config| config.labels)
                    .unwrap_or_default(),
            )),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(EngineError::api(format!("inspecting container {name}"), e)),
        }
    }

    /// Unpacks a tar archive, streamed, into a folder of a (created, not necessarily started)
    /// container; a volume mounted there receives the files.
    pub async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        archive: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker
            .upload_to_container(id, Some(options), bollard::body_try_stream(archive))
            .await
            .map_err(|e| {
                EngineError::api(format!("uploading files into container {id} at {path}"), e)
            })
    }

    /// The size of an image in bytes (0 when the engine does not say).
    pub async fn image_size(&self, name: &str) -> Result<u64, EngineError> {
        let image = self
            .docker
            .inspect_image(name)
            .await
            .map_err(|e| EngineError::api(format!("inspecting image {name}"), e))?;
        Ok(image
            .size
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(0))
    }

    /// Images as one archive (`docker save`), streamed as the engine writes it.
    pub fn export_images(&self, names: &[&str]) -> ImageArchiveStream {
        let what = format!("exporting {}", names.join(", "));
        Box::pin(
            self.docker
                .export_images(names)
                .map(move |item| item.map_err(|e| EngineError::api(what.clone(), e))),
        )
    }

    /// Loads an image archive (`docker load`) streamed from elsewhere; returns the engine's
    /// messages (`Loaded image: ...`).
    pub async fn import_images(
        &self,
        archive: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<Vec<String>, EngineError> {
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
                Err(e) => return Err(EngineError::api("loading an image archive", e)),
            }
        }
        Ok(messages)
    }

    /// Imports a root file system tarball as an image (`docker import`), with Dockerfile-style
    /// `changes` (`ENV ...`, `CMD ...`, `LABEL ...`) since an imported image has no config.
    pub async fn import_rootfs(
        &self,
        tag: &str,
        rootfs: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
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
                return Err(EngineError::api(format!("importing {tag}"), e));
            }
        }
        self.image_id(tag).await?.ok_or_else(|| EngineError::Build {
            tag: tag.to_string(),
            message: "the engine reported the import done but has no such image".into(),
        })
    }
}

/// Reads a failed first request's error chain for the cause a user can act on: an I/O error
/// kind, a rustls error (hidden inside an `io::Error`), or the engine's own answer.
fn classify(error: &BollardError, endpoint: &Endpoint) -> ConnectProblem {
    let tls = endpoint.tls();
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
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
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
                std::io::ErrorKind::TimedOut => return ConnectProblem::NoAnswer,
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
    match error {
        BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        } if message.contains("HTTP request to an HTTPS server") => ConnectProblem::EngineWantsTls,
        BollardError::RequestTimeoutError => ConnectProblem::NoAnswer,
        BollardError::SocketNotFoundError(_) => ConnectProblem::NoSocket,
        _ => ConnectProblem::Failed,
    }
}

/// Translates packbox's spec into the engine's create body. Attach is set up for a stdin that is
/// closed after one write (`stdin_once`), with no TTY so the streams stay separate and bounded.
fn container_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mode = |read_only: bool| if read_only { "ro" } else { "rw" };
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
        .collect();
    let mut security_opt = Vec::new();
    if spec.no_new_privileges {
        security_opt.push("no-new-privileges".to_string());
    }
    let host_config = HostConfig {
        binds: Some(binds),
        tmpfs: Some(spec.tmpfs.clone().into_iter().collect()),
        readonly_rootfs: Some(spec.read_only_rootfs),
        network_mode: Some(spec.network_mode.clone()),
        cap_drop: spec.cap_drop_all.then(|| vec!["ALL".to_string()]),
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
        // A tiny init reaps zombies and forwards SIGTERM to the action.
        init: Some(true),
        // Output is captured through attach; nothing is written to the engine's disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        runtime: spec.oci_runtime.clone(),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.cmd.clone()),
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
        ..Default::default()
    }
}

/// Whether an image reference names a tag or digest (`repo:tag`, `host:5000/repo:tag`, `repo@sha256:..`).
fn has_tag_or_digest(reference: &str) -> bool {
    let last_component = reference.rsplit('/').next().unwrap_or(reference);
    reference.contains('@') || last_component.contains(':')
}

fn is_status(error: &BollardError, status: u16) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let body = container_body(&locked_down());
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
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.env, Some(vec!["ATTUNE_ACTION=p.a".to_string()]));
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
    fn capabilities_kept_only_when_not_dropped() {
        let mut spec = locked_down();
        spec.cap_drop_all = false;
        let host = container_body(&spec).host_config.expect("host config");
        assert_eq!(host.cap_drop, None);
    }
}
