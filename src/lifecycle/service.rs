//! The life of a one-shot Swarm service, whatever it runs: its task followed to its end (each
//! stream of its log followed while it runs, until the stream is past the output limit, then
//! read once more, skipping what was seen, since a follower may not have been sent the last
//! messages yet; its exit code from the task's status), stopped at the timeout or on
//! cancellation by scaling it to zero (the Swarm agent sends SIGTERM, waits the stop grace and
//! sends SIGKILL while the log and the task's status stay readable), and its service, network
//! and secret removed on every path, also when the run is dropped half-way.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::capture::BoundedBuffer;
use super::run::{RunError, RunIo};
use crate::contract::exit::{Captured, ContainerExit, Ending};
use crate::engine::{
    EngineError, LogChunk, LogStream, NodeState, SharedEngine, SharedSwarm, StreamKind,
    SwarmEngine, SwarmKind, SwarmNode, TaskState, TaskStatus,
};

/// How often the task's state is asked for.
const POLL: Duration = Duration::from_millis(100);
/// How long a stopped task may take to end beyond its stop grace (the agent acts a little late:
/// about 1.3 s on this machine).
const STOP_WAIT: Duration = Duration::from_secs(30);
/// How long followers that were busy when the task ended may stay silent before packbox stops
/// waiting for their backlog.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// How long the last read of a stream may take: the engine scans the task's whole log for it
/// (at most two files of 2 x the output limit + 1 MiB).
const LAST_READ: Duration = Duration::from_secs(300);
/// How long a network or secret may stay in use after its service was removed.
const RELEASE_WAIT: Duration = Duration::from_secs(30);
/// How often, at most, the node of a task the managers want stopped is asked about: a node
/// that is down takes its task with it, and the task's last report never changes again.
const NODE_CHECK: Duration = Duration::from_secs(1);

/// How a service's task ended, and the node it ran on.
#[derive(Debug)]
pub struct ServiceEnd {
    /// How the task ended, with its captured output.
    pub exit: ContainerExit,
    /// The node the task ran on (its hostname empty when the Swarm could not say), if it was
    /// placed at all.
    pub node: Option<SwarmNode>,
}

/// Follows a service's task to its end (stopping it at the timeout or on cancellation) and
/// captures its log under the limits. A task whose node is lost (the managers mark it down and
/// want the task stopped, while its last report stays) ends the run as [`RunError::NodeLost`]
/// as soon as the Swarm knows, never at the timeout.
pub async fn drive(
    swarm: &dyn SwarmEngine,
    engine: &SharedEngine,
    service: &str,
    io: RunIo<'_>,
) -> Result<ServiceEnd, RunError> {
    let RunIo {
        limits,
        cancel,
        on_output,
        ..
    } = io;
    let mut capture = LogCapture::new(limits.max_output, on_output);
    // One follower per stream, each dropped once its stream is past the limit: unlike attach,
    // the log is written whether or not anyone reads it, so nothing is drained for nothing.
    let mut stdout = Some(swarm.service_logs(service, StreamKind::Stdout, true, None));
    let mut stderr = Some(swarm.service_logs(service, StreamKind::Stderr, true, None));
    let mut poll = tokio::time::interval(POLL);
    let created = Instant::now();
    let mut running_since: Option<Instant> = None;
    // Why and until when packbox waits for a task it stopped.
    let mut stopping: Option<(Ending, Instant)> = None;
    // When a follower last delivered: busy followers are let finish their backlog at the end.
    let mut last_message: Option<Instant> = None;
    let mut node_id: Option<String> = None;
    let mut node_checked: Option<Instant> = None;
    let task = loop {
        // The timeout counts from the task's start; while it waits to be placed and started,
        // the same time bounds the wait.
        let timeout_at = running_since.unwrap_or(created) + limits.timeout;
        tokio::select! {
            chunk = next(&mut stdout) => {
                last_message = Some(Instant::now());
                capture.follow(chunk, &mut stdout)?;
            }
            chunk = next(&mut stderr) => {
                last_message = Some(Instant::now());
                capture.follow(chunk, &mut stderr)?;
            }
            _ = poll.tick() => {
                let task = swarm.service_tasks(service).await?.into_iter().next();
                if let Some(id) = task.as_ref().and_then(|t| t.node_id.clone()) {
                    node_id = Some(id);
                }
                match (&task, &stopping) {
                    (Some(t), _) if t.state == TaskState::Exited => break task,
                    (Some(t), None) if t.state == TaskState::Lost => {
                        return Err(not_run(swarm, service, t).await);
                    }
                    (Some(t), Some(_)) if t.state == TaskState::Lost => break task,
                    (Some(t), None) if t.state == TaskState::Waiting
                        && t.error.as_deref().is_some_and(|e| e.starts_with("no suitable node")) =>
                    {
                        return Err(RunError::Unplaceable {
                            service: service.to_string(),
                            error: t.error.clone().unwrap_or_default(),
                        });
                    }
                    (Some(t), _) if t.state == TaskState::Running && running_since.is_none() => {
                        tracing::debug!(service, "task running");
                        running_since = Some(Instant::now());
                    }
                    (None, Some(_)) => break None,
                    _ => {}
                }
                // A task the managers want stopped that still reports itself waiting or
                // running: its node may be gone, and then it never reports again.
                if let Some(t) = task.as_ref().filter(|t| {
                    t.stop_wanted && matches!(t.state, TaskState::Waiting | TaskState::Running)
                }) && let Some(id) = t.node_id.as_deref()
                    && node_checked.is_none_or(|at| at.elapsed() >= NODE_CHECK)
                {
                    node_checked = Some(Instant::now());
                    if let Some((node, state)) = lost_node(swarm, id).await? {
                        tracing::warn!(service, node, state, "the task's node was lost");
                        return Err(RunError::NodeLost {
                            service: service.to_string(),
                            node,
                            state,
                        });
                    }
                }
                if stopping.is_some_and(|(_, give_up)| Instant::now() >= give_up) {
                    tracing::warn!(service, "the stopped task did not end in time");
                    break task;
                }
            },
            () = tokio::time::sleep_until(timeout_at), if stopping.is_none() => {
                swarm.scale_service(service, 0).await?;
                stopping = Some((Ending::TimedOut, Instant::now() + limits.grace + STOP_WAIT));
            },
            () = cancel.cancelled(), if stopping.is_none() => {
                swarm.scale_service(service, 0).await?;
                stopping = Some((Ending::Cancelled, Instant::now() + limits.grace + STOP_WAIT));
            },
        }
    };
    tracing::debug!(
        service,
        exit_code = task.as_ref().and_then(|t| t.exit_code),
        "task ended"
    );
    // Followers still busy when the task ended may lag behind its log (a flood, a busy engine):
    // let them deliver their backlog until their stream is past the limit or they fall quiet,
    // which spares the last read a scan of the whole log. Idle ones cost nothing here.
    let busy = last_message.is_some_and(|at| at.elapsed() < DRAIN_QUIET);
    while busy && (stdout.is_some() || stderr.is_some()) {
        tokio::select! {
            chunk = next(&mut stdout) => capture.follow(chunk, &mut stdout)?,
            chunk = next(&mut stderr) => capture.follow(chunk, &mut stderr)?,
            () = tokio::time::sleep(DRAIN_QUIET) => break,
        }
    }
    drop((stdout, stderr));
    let last_read = async {
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            if capture.is_full(stream) {
                continue;
            }
            let since = capture.since_seconds(stream);
            let mut rest = swarm.service_logs(service, stream, false, since);
            while let Some(chunk) = rest.next().await {
                capture.push_unseen(chunk?);
            }
        }
        Ok::<_, EngineError>(())
    };
    // Output that cannot be read whole is an error, never a silently shorter outcome.
    tokio::time::timeout(LAST_READ, last_read)
        .await
        .map_err(|_| RunError::LogUnread {
            service: service.to_string(),
            seconds: LAST_READ.as_secs(),
        })??;

    tracing::debug!(service, "log read");
    let mut exit_code = task.as_ref().and_then(|t| t.exit_code);
    if exit_code.is_none()
        && let Some(container) = task.as_ref().and_then(|t| t.container_id.as_deref())
    {
        // A task stopped by packbox can be reported ended before its container's exit code
        // reached the task's status (a busy engine); the container itself knows it.
        exit_code = engine
            .container_state(container)
            .await
            .ok()
            .and_then(|state| state.exit_code);
    }
    let oom_killed = match (exit_code, task.as_ref().and_then(oom_container)) {
        // Only a kill can be an OOM kill; the task's container can be asked only on its node.
        (Some(137), Some(container)) => engine
            .container_state(container)
            .await
            .is_ok_and(|state| state.oom_killed),
        _ => false,
    };
    let (stdout, stderr) = capture.finish();
    let node = match node_id {
        Some(id) => Some(node_named(swarm, &id).await),
        None => None,
    };
    Ok(ServiceEnd {
        exit: ContainerExit {
            ending: stopping.map_or(Ending::Exited, |(ending, _)| ending),
            exit_code,
            oom_killed,
            stdout,
            stderr,
            // A service's output is its log, with no init to send files: a Swarm run keeps no
            // artifacts (the variable is not set for it).
            artifacts: crate::contract::exit::Artifacts::default(),
        },
        node,
    })
}

/// A node by id as the Swarm names it; best effort (an outcome is not failed for want of a
/// hostname): the id alone when the Swarm cannot say.
async fn node_named(swarm: &dyn SwarmEngine, id: &str) -> SwarmNode {
    match swarm.node(id).await {
        Ok(Some(node)) => node,
        Ok(None) | Err(_) => SwarmNode {
            hostname: String::new(),
            id: id.to_string(),
            state: NodeState::Other("unknown".into()),
        },
    }
}

/// `HOSTNAME (node ID)`, or the id alone.
fn describe(node: &SwarmNode) -> String {
    if node.hostname.is_empty() {
        node.id.clone()
    } else {
        format!("{} (node {})", node.hostname, node.id)
    }
}

/// Whether a node is lost: `Some((node, what the managers say))` unless they hear from it.
async fn lost_node(
    swarm: &dyn SwarmEngine,
    id: &str,
) -> Result<Option<(String, String)>, EngineError> {
    Ok(match swarm.node(id).await? {
        None => Some((id.to_string(), "gone from the Swarm".into())),
        Some(node) => match &node.state {
            NodeState::Ready => None,
            NodeState::Down => Some((describe(&node), "down".into())),
            NodeState::Other(state) => Some((describe(&node), state.clone())),
        },
    })
}

/// Why the Swarm did not run a task, naming its node: an image the node could not pull is
/// told apart (the node, the image and its registry), anything else as the Swarm says it.
async fn not_run(swarm: &dyn SwarmEngine, service: &str, task: &TaskStatus) -> RunError {
    let node = match task.node_id.as_deref() {
        Some(id) => Some(describe(&node_named(swarm, id).await)),
        None => None,
    };
    let error = task
        .error
        .clone()
        .unwrap_or_else(|| "the task was lost".into());
    let unpulled = error
        .strip_prefix("No such image: ")
        .map(str::trim)
        .and_then(|image| Some((image, registry_of(image)?)));
    match (node, unpulled) {
        (Some(node), Some((image, registry))) => RunError::ImageUnavailable {
            service: service.to_string(),
            node,
            image: image.to_string(),
            registry: registry.to_string(),
            error,
        },
        (node, _) => RunError::TaskLost {
            service: service.to_string(),
            node,
            error,
        },
    }
}

/// The registry an image reference names (`HOST:PORT/repo@sha256:...` -> `HOST:PORT`), as the
/// engine tells one: a first component with a dot or a port, or `localhost`.
fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// The next message of a follower; never, once it is gone.
async fn next(follower: &mut Option<LogStream>) -> Option<Result<LogChunk, EngineError>> {
    match follower {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn oom_container(task: &TaskStatus) -> Option<&str> {
    task.container_id.as_deref()
}

/// Where a stream's log was read up to: the last timestamp seen and how many of its messages
/// carried it.
#[derive(Default)]
struct Cursor {
    last: String,
    at_last: usize,
}

/// The log of a task captured into bounded buffers, with what was seen of each stream, so a
/// second read skips it.
struct LogCapture<'a> {
    stdout: BoundedBuffer,
    stderr: BoundedBuffer,
    cursors: [Cursor; 2],
    /// For the second read: how many messages at each stream's last timestamp to skip still.
    skip: Option<[usize; 2]>,
    on_output: &'a mut (dyn FnMut(StreamKind, &[u8]) + Send),
}

impl<'a> LogCapture<'a> {
    fn new(limit: usize, on_output: &'a mut (dyn FnMut(StreamKind, &[u8]) + Send)) -> Self {
        LogCapture {
            stdout: BoundedBuffer::new("stdout", limit),
            stderr: BoundedBuffer::new("stderr", limit),
            cursors: Default::default(),
            skip: None,
            on_output,
        }
    }

    fn index(stream: StreamKind) -> usize {
        match stream {
            StreamKind::Stdout => 0,
            StreamKind::Stderr => 1,
        }
    }

    /// A follower's next message: kept, and the follower dropped once it ended or its stream is
    /// past the limit.
    fn follow(
        &mut self,
        chunk: Option<Result<LogChunk, EngineError>>,
        follower: &mut Option<LogStream>,
    ) -> Result<(), EngineError> {
        match chunk {
            Some(chunk) => {
                let chunk = chunk?;
                let stream = chunk.stream;
                self.push(chunk);
                if self.is_full(stream) {
                    *follower = None;
                }
            }
            None => *follower = None,
        }
        Ok(())
    }

    /// Whether a stream is past the limit: nothing more of it is kept.
    fn is_full(&self, stream: StreamKind) -> bool {
        match stream {
            StreamKind::Stdout => self.stdout.is_full(),
            StreamKind::Stderr => self.stderr.is_full(),
        }
    }

    /// A message as it comes.
    fn push(&mut self, chunk: LogChunk) {
        let cursor = &mut self.cursors[Self::index(chunk.stream)];
        if chunk.timestamp == cursor.last {
            cursor.at_last += 1;
        } else {
            cursor.last = chunk.timestamp.clone();
            cursor.at_last = 1;
        }
        (self.on_output)(chunk.stream, &chunk.bytes);
        match chunk.stream {
            StreamKind::Stdout => self.stdout.push(&chunk.bytes),
            StreamKind::Stderr => self.stderr.push(&chunk.bytes),
        }
    }

    /// A message of the second read: kept only if it is newer than what was seen.
    fn push_unseen(&mut self, chunk: LogChunk) {
        let index = Self::index(chunk.stream);
        let skip = self
            .skip
            .get_or_insert_with(|| [self.cursors[0].at_last, self.cursors[1].at_last]);
        let cursor = &self.cursors[index];
        // Timestamps are fixed-width RFC 3339: they order as strings.
        if !cursor.last.is_empty() && chunk.timestamp < cursor.last {
            return;
        }
        if !cursor.last.is_empty() && chunk.timestamp == cursor.last && skip[index] > 0 {
            skip[index] -= 1;
            return;
        }
        self.push(chunk);
    }

    /// Where the second read of a stream starts: the whole second it was read up to, or its
    /// start when nothing of it was seen.
    fn since_seconds(&self, stream: StreamKind) -> Option<i64> {
        seconds_of(&self.cursors[Self::index(stream)].last)
    }

    fn finish(self) -> (Captured, Captured) {
        (self.stdout.finish(), self.stderr.finish())
    }
}

/// The whole seconds since the epoch of an RFC 3339 timestamp; `None` for none.
fn seconds_of(timestamp: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(timestamp).ok()?;
    let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs()).ok()
}

/// The Swarm objects a run made, removed on every path: explicitly at the end of the run, or
/// in the background when the run is dropped half-way. Record each by name before asking for
/// it (the engine removes by name or id; one never made is no error), then by id.
pub struct ServiceObjects {
    swarm: SharedSwarm,
    /// The service's name, once asked for.
    pub service: Option<String>,
    /// The parameter secret's name, once asked for.
    pub secret: Option<String>,
    /// The per-run network's name, once asked for.
    pub network: Option<String>,
}

impl ServiceObjects {
    /// Nothing made yet, on this Swarm.
    pub fn new(swarm: SharedSwarm) -> ServiceObjects {
        ServiceObjects {
            swarm,
            service: None,
            secret: None,
            network: None,
        }
    }

    /// Removes the service, then (once its task let go of them) the network and the secret.
    /// Each is tried; the first failure is returned, naming what was left.
    pub async fn remove_all(&mut self) -> Result<(), (String, EngineError)> {
        let objects = [
            (SwarmKind::Service, self.service.take()),
            (SwarmKind::Network, self.network.take()),
            (SwarmKind::Secret, self.secret.take()),
        ];
        remove_objects(self.swarm.as_ref(), objects).await
    }
}

impl Drop for ServiceObjects {
    fn drop(&mut self) {
        let objects = [
            (SwarmKind::Service, self.service.take()),
            (SwarmKind::Network, self.network.take()),
            (SwarmKind::Secret, self.secret.take()),
        ];
        if objects.iter().all(|(_, id)| id.is_none()) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let swarm = SharedSwarm::clone(&self.swarm);
            handle.spawn(async move {
                if let Err((what, e)) = remove_objects(swarm.as_ref(), objects).await {
                    tracing::warn!("removing {what} after an interrupted run: {e}");
                }
            });
        }
    }
}

async fn remove_objects(
    swarm: &dyn SwarmEngine,
    objects: [(SwarmKind, Option<String>); 3],
) -> Result<(), (String, EngineError)> {
    let mut first_failure = None;
    for (kind, id) in objects {
        let Some(id) = id else { continue };
        if let Err(e) = remove_when_free(swarm, kind, &id).await {
            first_failure.get_or_insert((format!("{} {id}", kind.name()), e));
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// Removes an object, waiting (bounded) while it is still in use: a network until the task's
/// container left it, a secret until the service that mounts it is gone.
pub async fn remove_when_free(
    swarm: &dyn SwarmEngine,
    kind: SwarmKind,
    id: &str,
) -> Result<(), EngineError> {
    let give_up = Instant::now() + RELEASE_WAIT;
    loop {
        match swarm.remove_object(kind, id).await {
            Err(EngineError::InUse { .. }) if Instant::now() < give_up => {
                tokio::time::sleep(POLL).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_of_an_image_is_its_first_component_when_that_names_a_host() {
        assert_eq!(
            registry_of("packbox-registry:5000/packbox-pack/p@sha256:ab"),
            Some("packbox-registry:5000")
        );
        assert_eq!(
            registry_of("registry.example/p@sha256:ab"),
            Some("registry.example")
        );
        assert_eq!(registry_of("localhost/p:1"), Some("localhost"));
        assert_eq!(registry_of("library/debian:12"), None, "Docker Hub's");
        assert_eq!(registry_of("sha256:ab"), None, "an image id");
    }

    #[test]
    fn a_second_read_skips_what_was_seen_at_the_same_timestamp() {
        let mut seen = Vec::new();
        let mut on_output = |_: StreamKind, bytes: &[u8]| seen.extend_from_slice(bytes);
        let mut capture = LogCapture::new(1024, &mut on_output);
        let chunk = |ts: &str, text: &str| LogChunk {
            stream: StreamKind::Stdout,
            timestamp: ts.into(),
            bytes: bytes::Bytes::from(text.to_string()),
        };
        capture.push(chunk("2026-01-01T00:00:01.000000000Z", "a"));
        capture.push(chunk("2026-01-01T00:00:02.000000000Z", "b"));
        capture.push(chunk("2026-01-01T00:00:02.000000000Z", "c"));
        assert_eq!(capture.since_seconds(StreamKind::Stderr), None, "not seen");
        assert_eq!(
            capture.since_seconds(StreamKind::Stdout),
            Some(1_767_225_602),
            "the whole second of the last message"
        );
        for (ts, text) in [
            ("2026-01-01T00:00:01.000000000Z", "a"),
            ("2026-01-01T00:00:02.000000000Z", "b"),
            ("2026-01-01T00:00:02.000000000Z", "c"),
            ("2026-01-01T00:00:02.000000000Z", "d"),
            ("2026-01-01T00:00:03.000000000Z", "e"),
        ] {
            capture.push_unseen(chunk(ts, text));
        }
        let (stdout, _) = capture.finish();
        assert_eq!(stdout.text, "abcde");
        assert_eq!(seen, b"abcde");
    }
}
