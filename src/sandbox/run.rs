//! The life of one container, in steps: create, attach, start, feed stdin, capture, wait, remove.
//!
//! Each step is its own call on the engine so that the order that works (attach before start,
//! wait after start) is visible here, and so a pool of pre-created containers can slot in later.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::capture::{BoundedBuffer, Captured};
use crate::engine::{Attached, ContainerSpec, Engine, EngineError, StreamKind};

/// Bounds on one run.
#[derive(Clone, Debug)]
pub struct RunLimits {
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL when the timeout expires.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub max_output: usize,
}

/// How a container ended, with its captured streams.
#[derive(Debug)]
pub struct ContainerExit {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub timed_out: bool,
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

/// Runs one container to its end and removes it, whatever happened.
pub async fn run_container(
    engine: &Engine,
    name: &str,
    spec: &ContainerSpec,
    stdin: Vec<u8>,
    limits: &RunLimits,
) -> Result<ContainerExit, RunError> {
    let id = engine.create_container(name, spec).await?;
    let guard = RemoveOnDrop {
        engine: engine.clone(),
        id: Some(id.clone()),
    };
    let result = drive(engine, &id, stdin, limits).await;
    guard.disarm();
    let removed = engine.remove(&id).await;
    match (result, removed) {
        (Ok(exit), Ok(())) => Ok(exit),
        (Ok(_), Err(cleanup)) => Err(cleanup.into()),
        (Err(run), Ok(())) => Err(run.into()),
        (Err(run), Err(cleanup)) => Err(RunError::CleanupAfterFailure {
            run: Box::new(run),
            container: id,
            cleanup: Box::new(cleanup),
        }),
    }
}

async fn drive(
    engine: &Engine,
    id: &str,
    stdin: Vec<u8>,
    limits: &RunLimits,
) -> Result<ContainerExit, EngineError> {
    let Attached {
        mut output,
        stdin: mut input,
    } = engine.attach(id).await?;
    engine.start(id).await?;
    // Stdin is written from its own task while output is read, so neither side can block the other.
    let writer = tokio::spawn(async move {
        // An action that exits without reading stdin closes the pipe: not an error of the run.
        let _ = input.write_all(&stdin).await;
        let _ = input.shutdown().await;
    });

    let mut stdout = BoundedBuffer::new("stdout", limits.max_output);
    let mut stderr = BoundedBuffer::new("stderr", limits.max_output);
    let mut pump_and_wait = async |stdout: &mut BoundedBuffer, stderr: &mut BoundedBuffer| {
        while let Some(chunk) = output.next().await {
            let chunk = chunk?;
            match chunk.stream {
                StreamKind::Stdout => stdout.push(&chunk.bytes),
                StreamKind::Stderr => stderr.push(&chunk.bytes),
            }
        }
        engine.wait(id).await
    };

    let mut timed_out = false;
    let exit_code =
        match tokio::time::timeout(limits.timeout, pump_and_wait(&mut stdout, &mut stderr)).await {
            Ok(code) => Some(code?),
            Err(_) => {
                timed_out = true;
                engine.kill(id, "SIGTERM").await?;
                match tokio::time::timeout(limits.grace, pump_and_wait(&mut stdout, &mut stderr))
                    .await
                {
                    Ok(code) => Some(code?),
                    Err(_) => {
                        engine.kill(id, "SIGKILL").await?;
                        tokio::time::timeout(KILL_WAIT, engine.wait(id))
                            .await
                            .ok()
                            .transpose()?
                    }
                }
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
        exit_code,
        oom_killed,
        timed_out,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    })
}

/// Removes the container if the run is dropped half-way (a panic, a cancelled future); the normal
/// path removes it explicitly and disarms this.
struct RemoveOnDrop {
    engine: Engine,
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
            let engine = self.engine.clone();
            handle.spawn(async move {
                if let Err(e) = engine.remove(&id).await {
                    tracing::warn!("removing container {id} after an interrupted run: {e}");
                }
            });
        }
    }
}
