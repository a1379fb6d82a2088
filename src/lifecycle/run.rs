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

use super::capture::{BoundedBuffer, Captured};
use crate::engine::{Attached, ContainerSpec, EngineError, SharedEngine, Signal, StreamKind};

/// Bounds on one run.
#[derive(Clone, Debug)]
pub struct RunLimits {
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL when the timeout expires or the run is cancelled.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub max_output: usize,
}

/// Why a container stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The process exited by itself.
    Exited,
    /// The timeout expired and packbox stopped it.
    TimedOut,
    /// packbox was asked to stop (Ctrl-C, SIGTERM) and stopped it.
    Cancelled,
}

/// How a container ended, with its captured streams.
#[derive(Debug)]
pub struct ContainerExit {
    pub ending: Ending,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// The engine failed in the middle of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{run}; removing container {container} also failed: {cleanup}")]
    CleanupAfterFailure {
        run: Box<EngineError>,
        container: String,
        cleanup: Box<EngineError>,
    },
}

/// How long the wait for a killed container may take before packbox gives up on it.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// What a run is given besides its container: stdin, bounds, a cancellation signal, and where
/// live output goes (for `--follow`).
pub struct RunIo<'a> {
    pub stdin: Vec<u8>,
    pub limits: &'a RunLimits,
    pub cancel: &'a CancellationToken,
    pub on_output: &'a mut (dyn FnMut(StreamKind, &[u8]) + Send),
}

/// A container that is created, attached and started: the first three steps of a run. Its
/// process may already be waiting (see the warm pool) for what comes on stdin.
pub struct Started {
    id: String,
    attached: Attached,
    guard: RemoveOnDrop,
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
    let id = engine.create_container(name, spec).await?;
    let guard = RemoveOnDrop {
        engine: SharedEngine::clone(engine),
        id: Some(id.clone()),
    };
    let attached = async {
        let attached = engine.attach(&id).await?;
        engine.start(&id).await?;
        Ok::<_, EngineError>(attached)
    }
    .await;
    match attached {
        Ok(attached) => Ok(Started {
            id,
            attached,
            guard,
        }),
        Err(run) => {
            guard.disarm();
            let removed = engine.remove(&id).await;
            with_cleanup(Err(run), removed, id)
        }
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
    } = started;
    let result = drive(engine, &id, attached, io).await;
    guard.disarm();
    let removed = engine.remove(&id).await;
    with_cleanup(result, removed, id)
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
            run: Box::new(run),
            container,
            cleanup: Box::new(cleanup),
        }),
    }
}

async fn drive(
    engine: &SharedEngine,
    id: &str,
    attached: Attached,
    io: RunIo<'_>,
) -> Result<ContainerExit, EngineError> {
    let RunIo {
        stdin,
        limits,
        cancel,
        on_output,
    } = io;
    let Attached {
        mut output,
        stdin: mut input,
    } = attached;
    // Stdin is written from its own task while output is read, so neither side can block the
    // other; the task is aborted and awaited before returning.
    let writer = tokio::spawn(async move {
        // An action that exits without reading stdin closes the pipe: not an error of the run.
        let _ = input.write_all(&stdin).await;
        let _ = input.shutdown().await;
    });

    let mut stdout = BoundedBuffer::new("stdout", limits.max_output);
    let mut stderr = BoundedBuffer::new("stderr", limits.max_output);
    let mut pump_and_wait = async |stdout: &mut BoundedBuffer, stderr: &mut BoundedBuffer| {
        // Reading on past the limits keeps the engine's copy from stalling; the buffers drop
        // what does not fit.
        while let Some(chunk) = output.next().await {
            let chunk = chunk?;
            on_output(chunk.stream, &chunk.bytes);
            match chunk.stream {
                StreamKind::Stdout => stdout.push(&chunk.bytes),
                StreamKind::Stderr => stderr.push(&chunk.bytes),
            }
        }
        engine.wait(id).await
    };

    let first = tokio::select! {
        result = tokio::time::timeout(limits.timeout, pump_and_wait(&mut stdout, &mut stderr)) => {
            match result {
                Ok(code) => Ok(code?),
                Err(_) => Err(Ending::TimedOut),
            }
        }
        () = cancel.cancelled() => Err(Ending::Cancelled),
    };
    let (ending, exit_code) = match first {
        Ok(code) => (Ending::Exited, Some(code)),
        Err(ending) => {
            // SIGTERM, a grace period (still capturing), then SIGKILL.
            engine.kill(id, Signal::Term).await?;
            let code =
                match tokio::time::timeout(limits.grace, pump_and_wait(&mut stdout, &mut stderr))
                    .await
                {
                    Ok(code) => Some(code?),
                    Err(_) => {
                        engine.kill(id, Signal::Kill).await?;
                        tokio::time::timeout(KILL_WAIT, engine.wait(id))
                            .await
                            .ok()
                            .transpose()?
                    }
                };
            (ending, code)
        }
    };
    writer.abort();
    let _ = writer.await;

    let oom_killed = match exit_code {
        // Only a kill can be an OOM kill; other exits need no extra round trip.
        Some(137) | None => engine.container_state(id).await?.oom_killed,
        Some(_) => false,
    };
    Ok(ContainerExit {
        ending,
        exit_code,
        oom_killed,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    })
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
