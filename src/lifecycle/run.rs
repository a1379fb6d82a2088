//! The life of one container, in steps: create, attach, start, feed stdin, capture, wait, remove.
//!
//! Each step is its own call on the engine so that the order that works (attach before start,
//! wait after start) is visible here, and so a pool of pre-created containers can slot in later
//! between create and start. However a run ends (exit, timeout, cancellation, engine error, a
//! dropped future), the container is removed.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::artifacts::{ArtifactSink, Collector};
use super::capture::BoundedBuffer;
use super::frames::{Frame, FrameDecoder};
use crate::contract::exit::{ContainerExit, Ending};
use crate::engine::{
    Attached, ContainerSpec, EngineError, InitProcess, NotApplied, OutputStream, SharedEngine,
    Signal, StreamKind,
};

/// Bounds on one run.
#[derive(Clone, Debug)]
pub struct RunLimits {
    /// How long the action may run before packbox stops it.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL when the timeout expires or the run is cancelled.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub max_output: usize,
}

/// The engine failed in the middle of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A request to the engine failed during the run.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The run failed and removing what it made failed too: both are reported.
    #[error("{run}; removing {resource} also failed: {cleanup}")]
    CleanupAfterFailure {
        /// Why the run failed.
        run: Box<RunError>,
        /// What could not be removed (`container ID`, `service NAME`, ...).
        resource: String,
        /// Why the removal failed.
        cleanup: Box<EngineError>,
    },
    /// The Swarm did not run a service's task (rejected, lost by its node).
    #[error("the Swarm did not run service {service}{}: {error}", on_node(node.as_deref()))]
    TaskLost {
        /// The service's name.
        service: String,
        /// The node the task was given to (`HOSTNAME (node ID)`), when it was placed.
        node: Option<String>,
        /// The Swarm's error for the task.
        error: String,
    },
    /// The node running a service's task was lost: the managers stopped hearing from it, so
    /// nothing more will be known of the action (not even whether it still runs there).
    #[error(
        "node {node} was lost while it ran service {service} (the Swarm's managers marked it {state}): the action's end is unknown"
    )]
    NodeLost {
        /// The service's name.
        service: String,
        /// The node (`HOSTNAME (node ID)`).
        node: String,
        /// What the managers say of it (`down`, `unknown`, `disconnected`, or gone).
        state: String,
    },
    /// A node could not get a service's image from its registry (the registry did not answer
    /// it, or does not hold the image).
    #[error(
        "node {node} could not pull image {image} from registry {registry} (the registry did not answer that node, or does not hold the image): {error}"
    )]
    ImageUnavailable {
        /// The service's name.
        service: String,
        /// The node (`HOSTNAME (node ID)`).
        node: String,
        /// The image, by digest.
        image: String,
        /// The registry the image is named under (`HOST:PORT`).
        registry: String,
        /// The Swarm's error for the task.
        error: String,
    },
    /// A service's log could not be read to its end in time.
    #[error("the log of service {service} could not be read to its end within {seconds} s")]
    LogUnread {
        /// The service's name.
        service: String,
        /// How long packbox waited for the rest of the log.
        seconds: u64,
    },
    /// No node of the Swarm can take a service's task.
    #[error("the Swarm cannot place service {service}: {error}")]
    Unplaceable {
        /// The service's name.
        service: String,
        /// The Swarm's reason (no node with the resources, constraints that no node meets).
        error: String,
    },
    /// The run was cancelled before its workload started; nothing was left behind.
    #[error("cancelled before the action started")]
    Cancelled,
    /// The engine created the container without some sandbox settings (it read them back as
    /// not applied); the container was removed before it started.
    #[error("{engine} did not apply {}: refusing to run with a weaker sandbox than asked ({why})", list(.settings))]
    SandboxNotApplied {
        /// The engine, as its identity reads (`Podman 4.3.1 (rootless)`).
        engine: String,
        /// Each setting it dropped, with what it applied instead.
        settings: Vec<NotApplied>,
        /// Why, as far as packbox knows.
        why: String,
    },
}

fn list(settings: &[NotApplied]) -> String {
    settings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` on node NODE`, when there is one.
fn on_node(node: Option<&str>) -> String {
    node.map(|n| format!(" on node {n}")).unwrap_or_default()
}

/// How long the wait for a killed container may take before packbox gives up on it.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// What a run is given besides its container: stdin, bounds, a cancellation signal, and where
/// live output goes (for `--follow`).
pub struct RunIo<'a> {
    /// Bytes written to the action's stdin before it is closed (the parameter document, when
    /// delivered there).
    pub stdin: Vec<u8>,
    /// The timeout, grace period and output cap.
    pub limits: &'a RunLimits,
    /// Cancelled when packbox is asked to stop: the action gets SIGTERM, then SIGKILL after the
    /// grace period.
    pub cancel: &'a CancellationToken,
    /// Receives output as it arrives, for `--follow`; the run keeps its own copy regardless.
    pub on_output: &'a mut (dyn FnMut(StreamKind, &[u8]) + Send),
    /// Where the action's artifacts go (sent by packbox's init after the action's exit); `None`:
    /// the run keeps none.
    pub artifacts: Option<&'a ArtifactSink>,
}

/// A container that is created, attached and started: the first three steps of a run. Its
/// process may already be waiting (see the warm pool) for what comes on stdin.
pub struct Started {
    id: String,
    attached: Attached,
    guard: RemoveOnDrop,
    /// packbox's init is its PID 1: its output comes in frames, with the action's status last.
    framed: bool,
    not_applied: Vec<NotApplied>,
}

impl Started {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sandbox settings the engine did not apply, which the operator allowed
    /// (`allow_weaker`); empty when every one holds.
    pub fn not_applied(&self) -> &[NotApplied] {
        &self.not_applied
    }
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started").field("id", &self.id).finish()
    }
}

/// Runs one container to its end and removes it, whatever happened.
pub async fn run_container(
    engine: &SharedEngine,
    name: &str,
    spec: &ContainerSpec,
    io: RunIo<'_>,
) -> Result<ContainerExit, RunError> {
    let started = start(engine, name, spec).await?;
    finish(engine, started, io).await
}

/// Creates, attaches (before start, so no output is lost) and starts a container. On any
/// failure the container is removed.
pub async fn start(
    engine: &SharedEngine,
    name: &str,
    spec: &ContainerSpec,
) -> Result<Started, RunError> {
    start_with_files(engine, name, spec, None).await
}

/// [`start`], with files unpacked into the container's file system (a tar archive, into the
/// folder named beside it) before its process starts.
pub async fn start_with_files(
    engine: &SharedEngine,
    name: &str,
    spec: &ContainerSpec,
    files: Option<(&str, Vec<u8>)>,
) -> Result<Started, RunError> {
    let began = std::time::Instant::now();
    let id = engine.create_container(name, spec).await?;
    crate::common::phase::phase("create", began, &id);
    let guard = RemoveOnDrop {
        engine: SharedEngine::clone(engine),
        id: Some(id.clone()),
    };
    let checked = match engine.sandbox_not_applied(&id, spec).await {
        Ok(missing) if missing.is_empty() || spec.allow_weaker => Ok(missing),
        Ok(missing) => Err(RunError::SandboxNotApplied {
            engine: engine.identity().to_string(),
            why: why_not_applied(engine, &missing),
            settings: missing,
        }),
        Err(e) => Err(e.into()),
    };
    let not_applied = match checked {
        Ok(missing) => missing,
        Err(refused) => {
            guard.disarm();
            return match engine.remove(&id).await {
                Ok(()) => Err(refused),
                Err(cleanup) => Err(RunError::CleanupAfterFailure {
                    run: Box::new(refused),
                    resource: format!("container {id}"),
                    cleanup: Box::new(cleanup),
                }),
            };
        }
    };
    let began = std::time::Instant::now();
    let attached = async {
        if let Some((path, archive)) = files {
            let body = futures::stream::iter([Ok(bytes::Bytes::from(archive))]);
            engine.upload_archive(&id, path, Box::pin(body)).await?;
        }
        let attached = engine.attach(&id).await?;
        engine.start(&id).await?;
        Ok::<_, EngineError>(attached)
    }
    .await;
    crate::common::phase::phase("start", began, &id);
    match attached {
        Ok(attached) => Ok(Started {
            id,
            attached,
            guard,
            framed: matches!(spec.init, InitProcess::Packbox { .. }),
            not_applied,
        }),
        Err(run) => {
            guard.disarm();
            let removed = engine.remove(&id).await;
            with_cleanup(Err(run), removed, id)
        }
    }
}

/// Why an engine drops settings, where packbox knows: rootless Podman applies no resource limit
/// without cgroup v2 and the controllers delegated to its user.
fn why_not_applied(engine: &SharedEngine, missing: &[NotApplied]) -> String {
    let identity = engine.identity();
    let limits = [
        "sandbox.memory",
        "sandbox.pids",
        "sandbox.cpus",
        "sandbox.nofile",
    ];
    if identity.is_rootless_podman() && missing.iter().any(|m| limits.contains(&m.setting)) {
        "rootless Podman sets resource limits only on cgroup v2 with the memory, pids and cpu controllers delegated to its user; on cgroup v1 it drops every limit and rlimit. Use rootful Podman, Docker, or a cgroup v2 host with delegation; --allow-weaker-sandbox runs without them and lists them in sandbox.weaker_than_default".into()
    } else {
        "the engine accepted the request but reports these settings otherwise; --allow-weaker-sandbox runs without them and lists them in sandbox.weaker_than_default".into()
    }
}

/// Removes a started container that will not run (an idle pooled one).
pub async fn discard(engine: &SharedEngine, started: Started) {
    let Started { id, guard, .. } = started;
    guard.disarm();
    if let Err(e) = engine.remove(&id).await {
        tracing::warn!("removing unused container {id}: {e}");
    }
}

/// Feeds stdin, captures the output under the limits until the container ends (or its timeout
/// or a cancellation stops it), then removes it, whatever happened.
pub async fn finish(
    engine: &SharedEngine,
    started: Started,
    io: RunIo<'_>,
) -> Result<ContainerExit, RunError> {
    let Started {
        id,
        attached,
        guard,
        framed,
        ..
    } = started;
    let result = drive(engine, &id, attached, framed, io).await;
    guard.disarm();
    if let Ok((_, Some(reported))) = &result {
        check_exit(engine, &id, *reported).await;
    }
    let removed = engine.remove(&id).await;
    with_cleanup(result.map(|(exit, _)| exit), removed, id)
}

/// [`finish`], except that a container that ended normally is handed back instead of removed,
/// so its removal (tens of milliseconds on a busy engine) can happen off the caller's path. With
/// packbox's init, the run ends when the init reports the action's exit, before the engine has
/// seen the container's: the engine's exit status is checked against it on removal. On an
/// engine error the container is removed here, as `finish` does, and both failures are reported.
pub async fn finish_then_release(
    engine: &SharedEngine,
    started: Started,
    io: RunIo<'_>,
) -> Result<(ContainerExit, Exited), RunError> {
    let Started {
        id,
        attached,
        guard,
        framed,
        ..
    } = started;
    match drive(engine, &id, attached, framed, io).await {
        Ok((exit, reported)) => Ok((
            exit,
            Exited {
                id,
                guard,
                reported,
            },
        )),
        Err(run) => {
            guard.disarm();
            let removed = engine.remove(&id).await;
            with_cleanup(Err(run), removed, id)
        }
    }
}

/// A container whose process ended and whose outcome is known: still to be removed. Dropped
/// without [`Exited::remove`], it is removed in the background all the same.
pub struct Exited {
    id: String,
    guard: RemoveOnDrop,
    /// The exit status packbox's init reported, when the run ended on its word.
    reported: Option<i64>,
}

/// Whether the engine's exit status of a container agreed with what its init reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCheck {
    /// The run ended on the engine's word: nothing to check.
    NotReported,
    /// The engine saw the same status.
    Agreed,
    /// The engine saw another status, or none in time (logged as a warning).
    Mismatch {
        /// What the init reported, and the outcome says.
        reported: i64,
        /// What the engine saw; `None` when it did not answer in time.
        engine: Option<i64>,
    },
}

impl Exited {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks the engine's exit status against the one the init reported (waiting, bounded, for
    /// the engine to see the exit), then removes the container; a failed removal is logged (the
    /// next start-up sweep or `packbox gc` removes what is left).
    pub async fn remove(self) -> ExitCheck {
        let Exited {
            id,
            guard,
            reported,
        } = self;
        let engine = SharedEngine::clone(&guard.engine);
        let began = std::time::Instant::now();
        let check = match reported {
            Some(reported) => check_exit(&engine, &id, reported).await,
            None => ExitCheck::NotReported,
        };
        if reported.is_some() {
            crate::common::phase::phase("exit_seen", began, &id);
        }
        guard.disarm();
        let began = std::time::Instant::now();
        if let Err(e) = engine.remove(&id).await {
            tracing::warn!("removing container {id} after its run: {e}");
        }
        crate::common::phase::phase("removal", began, &id);
        check
    }
}

/// Waits (bounded) for the engine to see a container's exit and compares its status with the
/// one the container's init reported; a difference is logged.
async fn check_exit(engine: &SharedEngine, id: &str, reported: i64) -> ExitCheck {
    let seen = match tokio::time::timeout(KILL_WAIT, engine.wait(id)).await {
        Ok(Ok(code)) => Some(code),
        Ok(Err(e)) => {
            tracing::warn!(
                "container {id}: waiting for its exit after its init reported {reported}: {e}"
            );
            None
        }
        Err(_) => None,
    };
    if seen == Some(reported) {
        return ExitCheck::Agreed;
    }
    tracing::warn!(
        container = id,
        reported,
        engine = seen,
        "the engine's exit status of a container differs from what its init reported (the outcome kept the init's)"
    );
    ExitCheck::Mismatch {
        reported,
        engine: seen,
    }
}

impl std::fmt::Debug for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exited").field("id", &self.id).finish()
    }
}

/// A step's result together with the removal that followed it: both failures are reported.
fn with_cleanup<T>(
    result: Result<T, EngineError>,
    removed: Result<(), EngineError>,
    container: String,
) -> Result<T, RunError> {
    match (result, removed) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(cleanup)) => Err(cleanup.into()),
        (Err(run), Ok(())) => Err(run.into()),
        (Err(run), Err(cleanup)) => Err(RunError::CleanupAfterFailure {
            run: Box::new(run.into()),
            resource: format!("container {container}"),
            cleanup: Box::new(cleanup),
        }),
    }
}

/// Reads a container's output into the bounded buffers, through the init's frames when it
/// runs packbox's init.
struct Reader<'a> {
    output: OutputStream,
    frames: Option<FrameDecoder>,
    on_output: &'a mut (dyn FnMut(StreamKind, &[u8]) + Send),
    stdout: BoundedBuffer,
    stderr: BoundedBuffer,
    artifacts: Collector<'a>,
}

impl Reader<'_> {
    fn deliver(&mut self, stream: StreamKind, bytes: &[u8]) {
        (self.on_output)(stream, bytes);
        match stream {
            StreamKind::Stdout => self.stdout.push(bytes),
            StreamKind::Stderr => self.stderr.push(bytes),
        }
    }

    /// Reads on until the stream ends, or (with `stop_at_status`) until the init reports the
    /// action's exit status, which it returns. Reading on past the limits keeps the engine's
    /// copy from stalling; the buffers drop what does not fit.
    async fn read(&mut self, id: &str, stop_at_status: bool) -> Result<Option<i64>, EngineError> {
        while let Some(chunk) = self.output.next().await {
            let chunk = chunk?;
            let Some(decoder) = self
                .frames
                .as_mut()
                .filter(|_| chunk.stream == StreamKind::Stdout)
            else {
                // Without packbox's init, or the init's own stderr (it writes there only when
                // it was called wrongly).
                self.deliver(chunk.stream, &chunk.bytes);
                continue;
            };
            let frames = decoder
                .push(&chunk.bytes)
                .map_err(|e| EngineError::Unexpected {
                    what: format!("reading output of container {id}"),
                    message: format!("packbox's init: {e}"),
                })?;
            let mut status = None;
            for frame in frames {
                match frame {
                    Frame::Output(stream, bytes) => self.deliver(stream, &bytes),
                    Frame::Exit(code) => status = Some(code),
                    Frame::Artifact { name, size } => self.artifacts.header(&name, size),
                    Frame::ArtifactData(bytes) => self.artifacts.data(&bytes),
                    Frame::ArtifactRefused { name, reason } => {
                        self.artifacts.refused(&name, &reason)
                    }
                }
            }
            if stop_at_status && status.is_some() {
                return Ok(status);
            }
        }
        Ok(None)
    }
}

/// The run's end: how the container ended and, when packbox's init reported the exit status
/// (the engine has not confirmed it yet), that status.
async fn drive(
    engine: &SharedEngine,
    id: &str,
    attached: Attached,
    framed: bool,
    io: RunIo<'_>,
) -> Result<(ContainerExit, Option<i64>), EngineError> {
    let RunIo {
        stdin,
        limits,
        cancel,
        on_output,
        artifacts,
    } = io;
    let Attached {
        output,
        stdin: mut input,
    } = attached;
    // Stdin is written from its own task while output is read, so neither side can block the
    // other; the task is aborted and awaited before returning.
    let handed_over = std::time::Instant::now();
    let container = id.to_string();
    let writer = tokio::spawn(async move {
        // An action that exits without reading stdin closes the pipe: not an error of the run.
        let _ = input.write_all(&stdin).await;
        let _ = input.shutdown().await;
        crate::common::phase::phase("handoff", handed_over, &container);
    });

    let mut reader = Reader {
        output,
        frames: framed.then(FrameDecoder::default),
        on_output,
        stdout: BoundedBuffer::new("stdout", limits.max_output),
        stderr: BoundedBuffer::new("stderr", limits.max_output),
        artifacts: Collector::new(artifacts),
    };
    // The action's own end: the init's status frame when there is one; else the end of the
    // output and the engine's wait: without a frame, and for a death by SIGKILL or SIGTERM,
    // which may be the kernel's OOM killer or the engine's own stop (a shutdown, `docker
    // stop`), which only the engine can tell (a stopping engine fails the wait: the run is the
    // engine's failure, not the action's).
    let until_exit = async |reader: &mut Reader<'_>| {
        if framed
            && let Some(code) = reader.read(id, true).await?
            && !matches!(code, 137 | 143)
        {
            return Ok::<_, EngineError>((code, true));
        }
        reader.read(id, false).await?;
        Ok((engine.wait(id).await?, false))
    };
    let until_engine_exit = async |reader: &mut Reader<'_>| {
        reader.read(id, false).await?;
        engine.wait(id).await
    };

    let first = tokio::select! {
        result = tokio::time::timeout(limits.timeout, until_exit(&mut reader)) => {
            match result {
                Ok(exit) => Ok(exit?),
                Err(_) => Err(Ending::TimedOut),
            }
        }
        () = cancel.cancelled() => Err(Ending::Cancelled),
    };
    crate::common::phase::phase("action", handed_over, id);
    let (ending, exit_code, reported) = match first {
        Ok((code, reported)) => (Ending::Exited, Some(code), reported.then_some(code)),
        Err(ending) => {
            // SIGTERM, a grace period (still capturing), then SIGKILL; the engine says how it
            // ended.
            engine.kill(id, Signal::Term).await?;
            let code =
                match tokio::time::timeout(limits.grace, until_engine_exit(&mut reader)).await {
                    Ok(code) => Some(code?),
                    Err(_) => {
                        engine.kill(id, Signal::Kill).await?;
                        tokio::time::timeout(KILL_WAIT, engine.wait(id))
                            .await
                            .ok()
                            .transpose()?
                    }
                };
            (ending, code, None)
        }
    };
    writer.abort();
    let _ = writer.await;

    let (oom_killed, removed) = match (exit_code, reported) {
        // Only a kill the engine saw can be an OOM kill, or a removal by someone else; other
        // exits need no extra round trip. Podman answers the wait of a container removed under
        // it with 0, so there every exit the engine reports is looked at.
        (Some(137) | None, None) => {
            let state = engine.container_state(id).await?;
            (state.oom_killed, state.removed)
        }
        (_, None) if engine.identity().is_podman() => {
            let state = engine.container_state(id).await?;
            (state.oom_killed, state.removed)
        }
        _ => (false, false),
    };
    let ending = match ending {
        Ending::Exited if removed => Ending::Removed,
        other => other,
    };
    let Reader {
        stdout,
        stderr,
        artifacts,
        ..
    } = reader;
    Ok((
        ContainerExit {
            ending,
            exit_code,
            oom_killed,
            stdout: stdout.finish(),
            stderr: stderr.finish(),
            artifacts: artifacts.finish(),
        },
        reported,
    ))
}

/// Removes the container if the run is dropped half-way (a panic, a dropped future); the normal
/// path removes it explicitly and disarms this.
struct RemoveOnDrop {
    engine: SharedEngine,
    id: Option<String>,
}

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let engine = SharedEngine::clone(&self.engine);
            handle.spawn(async move {
                if let Err(e) = engine.remove(&id).await {
                    tracing::warn!("removing container {id} after an interrupted run: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;
    use crate::engine::fake::{Call, Exit, FakeEngine, Op, Program};
    use crate::engine::{SharedEngine, Signal};

    const IMAGE: &str = "packbox/shell:5.2";

    fn engine() -> (Arc<FakeEngine>, SharedEngine) {
        let fake = FakeEngine::new();
        fake.add_image(IMAGE, &[], 0);
        let shared: SharedEngine = fake.clone();
        (fake, shared)
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: IMAGE.into(),
            cmd: vec!["bash".into(), "/pack/actions/a.sh".into()],
            ..ContainerSpec::default()
        }
    }

    fn limits(timeout: u64, grace: u64) -> RunLimits {
        RunLimits {
            timeout: Duration::from_secs(timeout),
            grace: Duration::from_secs(grace),
            max_output: 1024,
        }
    }

    async fn run(
        engine: &SharedEngine,
        limits: &RunLimits,
        cancel: &CancellationToken,
        stdin: &[u8],
    ) -> Result<ContainerExit, RunError> {
        let io = RunIo {
            stdin: stdin.to_vec(),
            limits,
            cancel,
            on_output: &mut |_, _| {},
            artifacts: None,
        };
        run_container(engine, "packbox-test", &spec(), io).await
    }

    fn kills(fake: &FakeEngine) -> Vec<Signal> {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Kill(_, signal) => Some(signal),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_exits_is_waited_for_and_removed() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program::prints("hello\n", 0));
        let exit = run(&engine, &limits(60, 10), &CancellationToken::new(), b"{}")
            .await
            .expect("run");
        assert_eq!(exit.ending, Ending::Exited);
        assert_eq!(exit.exit_code, Some(0));
        assert_eq!(exit.stdout.text, "hello\n");
        assert!(
            kills(&fake).is_empty(),
            "no signal for a process that exits"
        );
        assert!(fake.container_ids().is_empty(), "removed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_order_is_create_attach_start_wait_remove() {
        let (fake, engine) = engine();
        run(&engine, &limits(60, 10), &CancellationToken::new(), b"")
            .await
            .expect("run");
        let kinds: Vec<&'static str> = fake
            .calls()
            .iter()
            .map(|c| match c {
                Call::Create { .. } => "create",
                Call::Attach(_) => "attach",
                Call::Start(_) => "start",
                Call::Wait(_) => "wait",
                Call::Remove(_) => "remove",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["create", "attach", "start", "wait", "remove"]);
    }

    #[tokio::test(start_paused = true)]
    async fn stdin_reaches_the_process_whole() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            delay: Duration::from_secs(1),
            ..Program::default()
        });
        let document = vec![b'x'; 200_000];
        let (limits, cancel) = (limits(60, 10), CancellationToken::new());
        let runner = run(&engine, &limits, &cancel, &document);
        let watcher = async {
            fake.until(|f| {
                f.container_ids()
                    .first()
                    .is_some_and(|id| f.stdin_of(id).len() == document.len())
            })
            .await;
        };
        let (exit, ()) = tokio::join!(runner, watcher);
        exit.expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_sends_sigterm_then_sigkill_after_the_grace() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Never,
            obeys_term: false,
            ..Program::default()
        });
        let started = Instant::now();
        let exit = run(&engine, &limits(30, 5), &CancellationToken::new(), b"")
            .await
            .expect("run");
        assert_eq!(exit.ending, Ending::TimedOut);
        assert_eq!(exit.exit_code, Some(137));
        assert_eq!(kills(&fake), [Signal::Term, Signal::Kill]);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(35),
            "timeout + grace"
        );
        assert!(fake.container_ids().is_empty(), "removed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_obeys_sigterm_gets_no_sigkill() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let started = Instant::now();
        let exit = run(&engine, &limits(30, 5), &CancellationToken::new(), b"")
            .await
            .expect("run");
        assert_eq!(exit.ending, Ending::TimedOut);
        assert_eq!(exit.exit_code, Some(143));
        assert_eq!(kills(&fake), [Signal::Term]);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_ends_before_its_timeout_is_not_signalled() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            delay: Duration::from_secs(29),
            ..Program::default()
        });
        let exit = run(&engine, &limits(30, 5), &CancellationToken::new(), b"")
            .await
            .expect("run");
        assert_eq!(exit.ending, Ending::Exited);
        assert!(kills(&fake).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_process_gracefully_and_removes_it() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Never,
            obeys_term: false,
            ..Program::default()
        });
        let cancel = CancellationToken::new();
        let limits = limits(600, 3);
        let runner = run(&engine, &limits, &cancel, b"");
        let canceller = async {
            tokio::time::sleep(Duration::from_secs(7)).await;
            cancel.cancel();
        };
        let started = Instant::now();
        let (exit, ()) = tokio::join!(runner, canceller);
        let exit = exit.expect("run");
        assert_eq!(exit.ending, Ending::Cancelled);
        assert_eq!(kills(&fake), [Signal::Term, Signal::Kill]);
        assert_eq!(started.elapsed(), Duration::from_secs(10), "cancel + grace");
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_oom_kill_is_reported() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Code(137),
            oom: true,
            ..Program::default()
        });
        let exit = run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect("run");
        assert!(exit.oom_killed);
        assert!(fake.count(|c| matches!(c, Call::State(_))) == 1);
    }

    #[tokio::test(start_paused = true)]
    async fn other_exit_codes_need_no_inspection() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program::prints("", 3));
        let exit = run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect("run");
        assert_eq!(exit.exit_code, Some(3));
        assert_eq!(fake.count(|c| matches!(c, Call::State(_))), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn output_beyond_the_limit_is_truncated_but_drained() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            output: (0..100)
                .map(|_| (StreamKind::Stdout, vec![b'a'; 100]))
                .chain([(StreamKind::Stderr, b"err".to_vec())])
                .collect(),
            ..Program::default()
        });
        let exit = run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect("run");
        assert!(exit.stdout.truncated);
        // The head alone: the marker is added once secrets are scrubbed (contract::result).
        assert_eq!(exit.stdout.text, "a".repeat(1024));
        assert_eq!(
            exit.stderr.text, "err",
            "the other stream is read to its end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_start_removes_the_created_container() {
        let (fake, engine) = engine();
        fake.fail(Op::Start, 1);
        let err = run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect_err("start fails");
        assert!(
            crate::common::error_text::chain(&err).contains("injected"),
            "{err}"
        );
        assert_eq!(fake.count(|c| matches!(c, Call::Remove(_))), 1);
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attach_removes_the_created_container() {
        let (fake, engine) = engine();
        fake.fail(Op::Attach, 1);
        run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect_err("attach fails");
        assert!(fake.container_ids().is_empty());
        assert_eq!(
            fake.count(|c| matches!(c, Call::Start(_))),
            0,
            "never started"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_error_mid_run_still_removes_the_container() {
        let (fake, engine) = engine();
        fake.fail(Op::Output, 1);
        fake.set_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let err = run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect_err("output fails");
        assert!(err.to_string().contains("reading output"), "{err}");
        assert!(fake.container_ids().is_empty(), "removed after the error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_wait_still_removes_the_container() {
        let (fake, engine) = engine();
        fake.fail(Op::Wait, 1);
        run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect_err("wait fails");
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_removal_after_a_failed_run_reports_both() {
        let (fake, engine) = engine();
        fake.fail(Op::Wait, 1);
        fake.fail(Op::Remove, 1);
        let err = run(&engine, &limits(60, 5), &CancellationToken::new(), b"")
            .await
            .expect_err("both fail");
        assert!(matches!(err, RunError::CleanupAfterFailure { .. }), "{err}");
        assert!(err.to_string().contains("waiting") && err.to_string().contains("removing"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_dropped_half_way_removes_its_container() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let running = {
            let engine = SharedEngine::clone(&engine);
            tokio::spawn(async move {
                let limits = limits(600, 5);
                let cancel = CancellationToken::new();
                let _ = run(&engine, &limits, &cancel, b"").await;
            })
        };
        fake.until(|f| !f.running().is_empty()).await;
        running.abort();
        let _ = running.await;
        tokio::time::timeout(
            Duration::from_secs(5),
            fake.until(|f| f.container_ids().is_empty()),
        )
        .await
        .expect("the drop guard removes the container");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_output_handler_still_removes_the_container() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            output: vec![(StreamKind::Stdout, b"boom".to_vec())],
            exit: Exit::Never,
            ..Program::default()
        });
        let running = {
            let engine = SharedEngine::clone(&engine);
            tokio::spawn(async move {
                let limits = limits(600, 5);
                let cancel = CancellationToken::new();
                let io = RunIo {
                    stdin: Vec::new(),
                    limits: &limits,
                    cancel: &cancel,
                    on_output: &mut |_, _| panic!("a bug in the caller"),
                    artifacts: None,
                };
                let _ = run_container(&engine, "packbox-test", &spec(), io).await;
            })
        };
        assert!(running.await.is_err(), "the task panicked");
        tokio::time::timeout(
            Duration::from_secs(5),
            fake.until(|f| f.container_ids().is_empty()),
        )
        .await
        .expect("the drop guard removes the container");
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_container_is_removed_when_asked_or_when_dropped() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program::prints("done\n", 0));
        let (limits, cancel) = (limits(60, 5), CancellationToken::new());
        for drop_it in [false, true] {
            let started = start(&engine, "packbox-test", &spec())
                .await
                .expect("start");
            let io = RunIo {
                stdin: Vec::new(),
                limits: &limits,
                cancel: &cancel,
                on_output: &mut |_, _| {},
                artifacts: None,
            };
            let (exit, exited) = finish_then_release(&engine, started, io)
                .await
                .expect("run");
            assert_eq!(exit.stdout.text, "done\n");
            assert_eq!(
                fake.container_ids().len(),
                1,
                "still there after the outcome"
            );
            if drop_it {
                drop(exited);
                tokio::time::timeout(
                    Duration::from_secs(5),
                    fake.until(|f| f.container_ids().is_empty()),
                )
                .await
                .expect("removed in the background");
            } else {
                exited.remove().await;
                assert!(fake.container_ids().is_empty());
            }
        }
    }

    /// A spec whose PID 1 is packbox's init (the fake plays it: frames, then the status).
    fn framed_spec() -> ContainerSpec {
        ContainerSpec {
            init: InitProcess::Packbox {
                volume: "packbox-init-test".into(),
            },
            ..spec()
        }
    }

    async fn run_framed(
        engine: &SharedEngine,
        limits: &RunLimits,
        cancel: &CancellationToken,
    ) -> Result<(ContainerExit, Exited), RunError> {
        let started = start(engine, "packbox-test", &framed_spec()).await?;
        let io = RunIo {
            stdin: Vec::new(),
            limits,
            cancel,
            on_output: &mut |_, _| {},
            artifacts: None,
        };
        finish_then_release(engine, started, io).await
    }

    #[tokio::test(start_paused = true)]
    async fn with_packbox_init_the_run_ends_at_the_actions_exit_and_the_engine_confirms_later() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            output: vec![
                (StreamKind::Stdout, b"result\n".to_vec()),
                (StreamKind::Stderr, b"note\n".to_vec()),
            ],
            delay: Duration::from_secs(1),
            engine_exit_after: Duration::from_secs(20),
            ..Program::default()
        });
        let began = Instant::now();
        let (exit, exited) = run_framed(&engine, &limits(60, 5), &CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(1),
            "not the engine's 21 s"
        );
        assert_eq!((exit.ending, exit.exit_code), (Ending::Exited, Some(0)));
        assert_eq!(exit.stdout.text, "result\n");
        assert_eq!(exit.stderr.text, "note\n");
        assert!(!exit.oom_killed);
        assert_eq!(fake.count(|c| matches!(c, Call::State(_))), 0);
        assert_eq!(exited.remove().await, ExitCheck::Agreed);
        assert!(fake.container_ids().is_empty(), "removed after the check");
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_status_other_than_the_inits_is_a_mismatch() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Code(0),
            engine_code: Some(3),
            ..Program::default()
        });
        let (exit, exited) = run_framed(&engine, &limits(60, 5), &CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(exit.exit_code, Some(0), "the outcome keeps the init's word");
        assert_eq!(
            exited.remove().await,
            ExitCheck::Mismatch {
                reported: 0,
                engine: Some(3)
            }
        );
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_printing_a_status_frame_does_not_end_its_run() {
        let (fake, engine) = engine();
        let forged = crate::engine::fake::init_frame(3, &0i32.to_be_bytes());
        fake.set_program(move |_| Program {
            output: vec![(StreamKind::Stdout, forged.clone())],
            exit: Exit::Never,
            obeys_term: false,
            ..Program::default()
        });
        let began = Instant::now();
        let (exit, exited) = run_framed(&engine, &limits(30, 5), &CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(exit.ending, Ending::TimedOut);
        assert_eq!(exit.exit_code, Some(137));
        assert_eq!(kills(&fake), [Signal::Term, Signal::Kill]);
        assert_eq!(began.elapsed(), Duration::from_secs(35), "timeout + grace");
        assert_eq!(
            exit.stdout.text.as_bytes(),
            crate::engine::fake::init_frame(3, &0i32.to_be_bytes()),
            "the forged frame is output like any other"
        );
        assert_eq!(exited.remove().await, ExitCheck::NotReported);
    }

    #[tokio::test(start_paused = true)]
    async fn with_packbox_init_a_cancel_still_stops_the_action_gracefully() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let cancel = CancellationToken::new();
        let limits = limits(600, 3);
        let runner = run_framed(&engine, &limits, &cancel);
        let canceller = async {
            tokio::time::sleep(Duration::from_secs(7)).await;
            cancel.cancel();
        };
        let (ran, ()) = tokio::join!(runner, canceller);
        let (exit, exited) = ran.expect("run");
        assert_eq!(exit.ending, Ending::Cancelled);
        assert_eq!(exit.exit_code, Some(143), "the action obeyed SIGTERM");
        assert_eq!(kills(&fake), [Signal::Term]);
        exited.remove().await;
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_kill_reported_by_the_init_is_settled_by_the_engine_which_knows_oom() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Code(137),
            oom: true,
            engine_exit_after: Duration::from_secs(2),
            ..Program::default()
        });
        let began = Instant::now();
        let (exit, exited) = run_framed(&engine, &limits(60, 5), &CancellationToken::new())
            .await
            .expect("run");
        assert!(exit.oom_killed);
        assert_eq!(exit.exit_code, Some(137));
        assert_eq!(began.elapsed(), Duration::from_secs(2), "the engine's exit");
        assert_eq!(exited.remove().await, ExitCheck::NotReported);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sigterm_reported_by_the_init_is_the_engines_failure_when_its_wait_fails() {
        let (fake, engine) = engine();
        fake.set_program(|_| Program {
            exit: Exit::Code(143),
            ..Program::default()
        });
        fake.fail(Op::Wait, 1);
        let failed = run_framed(&engine, &limits(60, 5), &CancellationToken::new()).await;
        assert!(
            matches!(failed, Err(RunError::Engine(_))),
            "an engine that stops under a run fails it: {failed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn discarding_a_started_container_removes_it_without_running_it() {
        let (fake, engine) = engine();
        let started = start(&engine, "packbox-idle", &spec())
            .await
            .expect("start");
        assert_eq!(fake.container_ids().len(), 1);
        discard(&engine, started).await;
        assert!(fake.container_ids().is_empty());
    }
}
