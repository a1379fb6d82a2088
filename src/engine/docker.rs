//! The Docker engine through bollard: the only code in the crate that knows bollard's types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;

use super::{
    Attached, BuildSpec, ContainerEngine, ContainerSpec, ContainerState, ContainerSummary,
    EngineError, EngineInfo, ImageSummary, LineSink, OciRuntime, OutputChunk, SharedSwarm, Signal,
    StreamKind,
};

/// How long connecting and negotiating the API version may take before the engine counts as
/// not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected Docker engine. Cheap to clone: bollard opens one connection per request.
#[derive(Clone, Debug)]
pub struct DockerEngine {
    docker: Docker,
    endpoint: String,
}

impl DockerEngine {
    /// Connects to the engine at `endpoint` (unix, tcp, https) and negotiates the API version;
    /// bounded so that a dead socket fails fast.
    pub async fn connect(endpoint: &str) -> Result<DockerEngine, EngineError> {
        let unreachable = |source: Option<BollardError>| EngineError::Unreachable {
            endpoint: endpoint.to_string(),
            source: source.map(|e| Box::new(e) as _),
        };
        let docker = match endpoint.strip_prefix("unix://") {
            Some(path) => Docker::connect_with_socket(
                path,
                CONNECT_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| unreachable(Some(e)))?,
            None => {
                return Err(EngineError::Unreachable {
                    endpoint: endpoint.to_string(),
                    source: Some("only unix:// endpoints are supported".into()),
                });
            }
        };
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(None))?
            .map_err(|e| unreachable(Some(e)))?;
        Ok(DockerEngine {
            docker,
            endpoint: endpoint.to_string(),
        })
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

    fn swarm(self: Arc<Self>) -> Option<SharedSwarm> {
        Some(self)
    }

    async fn image_id(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.id),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {name}"), e)),
        }
    }

    async fn image_repo_digests(&self, name: &str) -> Result<Vec<String>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(image.repo_digests.unwrap_or_default()),
            Err(e) if is_status(&e, 404) => Ok(Vec::new()),
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
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(&spec.dockerfile)
            .t(&spec.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&spec.build_args)
            .labels(&spec.labels)
            .networkmode(&spec.network_mode);
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
        let created = self
            .docker
            .create_container(Some(options), container_body(spec))
            .await
            .map_err(|e| api(format!("creating a container from image {}", spec.image), e))?;
        Ok(created.id)
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
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(api(
                format!("sending {} to container {id}", signal.name()),
                e,
            )),
        }
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, EngineError> {
        let inspected = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| api(format!("inspecting container {id}"), e))?;
        let state = inspected.state.unwrap_or_default();
        Ok(ContainerState {
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code,
            running: state.running.unwrap_or(false),
        })
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
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
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api("listing containers", e))?;
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
        Ok(EngineInfo {
            server_version: info.server_version.unwrap_or_default(),
            oci_runtimes,
            cpus: info.ncpu.unwrap_or(0),
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
        let found = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| api("listing images", e))?;
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

    async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) if is_status(&e, 409) => Err(EngineError::InUse {
                what: format!("removing image {id}"),
            }),
            Err(e) => Err(api(format!("removing image {id}"), e)),
        }
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
                Err(e) if is_status(&e, 404) => return Ok(None),
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

/// Translates packbox's spec into the engine's create body. Attach is set up for a stdin that is
/// closed after one write (`stdin_once`), with no TTY so the streams stay separate and bounded.
fn container_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let binds = spec
        .binds
        .iter()
        .map(|b| {
            let mode = if b.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", b.host_path, b.container_path)
        })
        .collect();
    let mut security_opt = Vec::new();
    if spec.no_new_privileges {
        security_opt.push("no-new-privileges".to_string());
    }
    // The API takes the profile's content, as the docker CLI sends it for `--security-opt`.
    if let Some(profile) = &spec.seccomp_profile {
        security_opt.push(format!("seccomp={profile}"));
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

pub(super) fn is_status(error: &BollardError, status: u16) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
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
        // Never privileged, never the engine's socket: neither is a setting.
        assert_eq!(host.privileged, None);
        assert!(!format!("{host:?}").contains("docker.sock"));
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
    fn a_seccomp_profile_goes_inline_after_no_new_privileges() {
        let mut spec = locked_down();
        spec.seccomp_profile = Some(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#.into());
        let host = container_body(&spec).host_config.expect("host config");
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
        let host = container_body(&spec).host_config.expect("host config");
        assert_eq!(host.cap_drop, None);
    }
}
