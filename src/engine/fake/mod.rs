//! A scriptable, recording engine for unit tests: containers are little simulated processes
//! (scripted output, an exit after a delay or never, a reaction to SIGTERM), images are entries
//! in a table, builds follow a script, and every request is recorded, so tests check *what was
//! asked* (every container removed, SIGTERM before SIGKILL) under tokio's paused clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc, watch};

use super::{
    ArchiveStream, Attached, BridgeSpec, BuildSpec, CommitSpec, ContainerEngine, ContainerSpec,
    ContainerState, ContainerSummary, EngineError, EngineIdentity, EngineInfo, ImageExport,
    ImageLabels, ImageSummary, InitProcess, LineSink, NetworkSpec, NetworkSummary, NotApplied,
    OciRuntime, OutputChunk, ServiceSpec, SharedSwarm, Signal, StreamKind, SwarmKind,
    VolumeSummary,
};

mod swarm;

pub(crate) use swarm::{FAKE_NODE_HOSTNAME, FAKE_NODE_ID, SwarmScript};

/// One request the fake received.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    ImageId(String),
    Pull(String),
    Build(String),
    Create {
        name: String,
        spec: Box<ContainerSpec>,
    },
    Attach(String),
    Start(String),
    Wait(String),
    Kill(String, Signal),
    State(String),
    Remove(String),
    ListContainers(Vec<String>),
    Info,
    ListImages(Vec<String>),
    RemoveImage(String),
    VolumeCreated(String),
    /// A container committed as an image: container, tag.
    Commit(String, String),
    /// A folder of a container read as an archive: container, path.
    Download(String, String),
    CreateVolume(String),
    RemoveVolume(String),
    Upload {
        container: String,
        path: String,
    },
    Export(Vec<String>),
    Import,
    ReadFile(String, String),
    SwarmState,
    Tag(String, String),
    Push(String),
    CreateNetwork(NetworkSpec),
    CreateSecret {
        name: String,
        labels: BTreeMap<String, String>,
    },
    CreateService(Box<ServiceSpec>),
    Scale(String, u64),
    Tasks(String),
    Node(String),
    Logs {
        id: String,
        stream: StreamKind,
        follow: bool,
        since_seconds: Option<i64>,
    },
    RemoveObject(SwarmKind, String),
    ListObjects(SwarmKind, Vec<String>),
    /// The simulated Swarm agent signalled a service's task.
    TaskSignal(String, Signal),
    CreateBridge(BridgeSpec),
    ConnectNetwork {
        network: String,
        container: String,
        ipv4: Option<String>,
    },
    DisconnectNetwork {
        network: String,
        container: String,
    },
    RemoveNetwork(String),
    ListNetworks(Vec<String>),
}

/// A request kind, for injecting failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Create,
    Attach,
    Start,
    Wait,
    Remove,
    Output,
    ListContainers,
    Build,
    Commit,
    Info,
    Push,
    CreateNetwork,
    CreateSecret,
    CreateService,
    Scale,
    Tasks,
    Node,
    Logs,
    RemoveObject,
}

/// How a simulated container's process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Exits with this code after the program's delay.
    Code(i64),
    /// Runs until a signal ends it.
    Never,
}

/// What a simulated container does once started (after the go-line, for a pooled one).
#[derive(Clone, Debug)]
pub(crate) struct Program {
    /// Printed at once, in order.
    pub output: Vec<(StreamKind, Vec<u8>)>,
    /// How it ends when no signal ends it first.
    pub exit: Exit,
    /// Time from start to exit.
    pub delay: Duration,
    /// Whether SIGTERM ends it (with 143); else only SIGKILL does.
    pub obeys_term: bool,
    /// Whether the exit is reported as an OOM kill (exit 137).
    pub oom: bool,
    /// With packbox's init: how long after the init's status frame the engine sees the
    /// container's exit (its exit path).
    pub engine_exit_after: Duration,
    /// With packbox's init: the exit code the engine sees, when it differs from the one the
    /// init reports.
    pub engine_code: Option<i64>,
}

impl Default for Program {
    fn default() -> Self {
        Program {
            output: Vec::new(),
            exit: Exit::Code(0),
            delay: Duration::ZERO,
            obeys_term: true,
            oom: false,
            engine_exit_after: Duration::ZERO,
            engine_code: None,
        }
    }
}

impl Program {
    /// A program that prints `text` on stdout and exits with `code`.
    pub fn prints(text: &str, code: i64) -> Program {
        Program {
            output: vec![(StreamKind::Stdout, text.as_bytes().to_vec())],
            exit: Exit::Code(code),
            ..Program::default()
        }
    }
}

/// How a build goes.
#[derive(Clone, Debug)]
pub(crate) enum BuildScript {
    /// Succeeds after `delay`, printing `lines`.
    Succeed { delay: Duration, lines: Vec<String> },
    /// Never finishes.
    Hang,
}

/// How a pull goes.
#[derive(Clone, Debug)]
pub(crate) enum PullScript {
    /// Fails at once, as where no registry answers.
    Fail,
    /// Succeeds: the pulled image answers to the reference pulled and records these
    /// `repo@sha256:...` digests (a registry that served what was asked records that one).
    Succeed { repo_digests: Vec<String> },
    /// Never finishes.
    Hang,
}

#[derive(Debug)]
enum Life {
    Created,
    Running,
    Exited(i64),
}

struct FakeContainer {
    name: String,
    spec: ContainerSpec,
    image_id: String,
    life: Life,
    oom: bool,
    output: Option<mpsc::UnboundedSender<Result<OutputChunk, EngineError>>>,
    output_rx: Option<mpsc::UnboundedReceiver<Result<OutputChunk, EngineError>>>,
    stdin: Arc<Mutex<Vec<u8>>>,
    stdin_rx: Option<tokio::io::DuplexStream>,
    signals: Option<mpsc::UnboundedSender<Signal>>,
    exited: watch::Sender<Option<i64>>,
}

struct FakeImage {
    id: String,
    tags: Vec<String>,
    /// `repo@sha256:...` references, as a pull records them.
    repo_digests: Vec<String>,
    labels: HashMap<String, String>,
    created: i64,
    /// Files its containers hold, by path.
    files: HashMap<String, Vec<u8>>,
}

type ProgramFor = Box<dyn Fn(&ContainerSpec) -> Program + Send + Sync>;

#[derive(Default)]
struct FakeState {
    containers: BTreeMap<String, FakeContainer>,
    images: Vec<FakeImage>,
    next_id: u64,
    failures: HashMap<Op, u32>,
    build: Option<BuildScript>,
    pull: Option<PullScript>,
    info: EngineInfo,
    /// Extra containers the engine lists (another program's, or leftovers), by id.
    listed: Vec<ContainerSummary>,
    /// Volumes by name: labels, and the archives uploaded into them.
    volumes: BTreeMap<String, FakeVolume>,
    /// How long a container start takes (the engine's start of runc, cgroups, mounts).
    start_delay: Duration,
    /// Local networks by id.
    networks: BTreeMap<String, FakeNetwork>,
}

#[derive(Clone, Debug, Default)]
struct FakeNetwork {
    summary: NetworkSummary,
    /// Containers connected after they were made, with the address asked for.
    members: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, Default)]
struct FakeVolume {
    labels: HashMap<String, String>,
    created: u64,
    /// Bytes of each archive uploaded into it, in order.
    uploads: Vec<usize>,
    /// The last archive uploaded into it: what reading it back returns.
    content: Vec<u8>,
}

/// An archive of a volume's content as the engine returns a folder: every entry under the
/// folder's last name, after an entry for the folder itself.
/// The files of an image under the folder `path`, as the engine archives a folder: entries
/// named under the folder's last name.
fn image_files_under(images: &[FakeImage], image: &str, path: &str) -> Vec<u8> {
    let folder = path.trim_end_matches('/');
    let last = folder.rsplit('/').next().unwrap_or("");
    let mut out = tar::Builder::new(Vec::new());
    let files = find_image(images, image)
        .and_then(|id| images.iter().find(|i| i.id == id))
        .map(|i| i.files.clone())
        .unwrap_or_default();
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    for name in names {
        if let Some(rest) = name.strip_prefix(&format!("{folder}/")) {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(files[name].len() as u64);
            let _ = out.append_data(
                &mut header,
                format!("{last}/{rest}"),
                files[name].as_slice(),
            );
        }
    }
    out.into_inner().unwrap_or_default()
}

fn archive_under(content: &[u8], path: &str) -> Vec<u8> {
    let folder = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let mut out = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    let _ = out.append_data(&mut header, folder, std::io::empty());
    let mut archive = tar::Archive::new(content);
    if let Ok(entries) = archive.entries() {
        for mut entry in entries.flatten() {
            let mut header = entry.header().clone();
            let name = entry
                .path()
                .map(|p| format!("{folder}/{}", p.display()))
                .unwrap_or_default();
            if header.entry_type().is_symlink() {
                let target = entry.link_name().ok().flatten().map(|t| t.into_owned());
                if let Some(target) = target {
                    let _ = out.append_link(&mut header, &name, target);
                }
            } else {
                let _ = out.append_data(&mut header, &name, &mut entry);
            }
        }
    }
    out.into_inner().unwrap_or_default()
}

/// The fake engine. Share it as an `Arc<FakeEngine>`; it is also a `SharedEngine`.
pub(crate) struct FakeEngine {
    me: std::sync::Weak<FakeEngine>,
    state: Mutex<FakeState>,
    calls: Mutex<Vec<Call>>,
    program: Mutex<Option<ProgramFor>>,
    changed: Notify,
    swarm: Mutex<swarm::FakeSwarm>,
    service_program: Mutex<Option<swarm::ServiceProgramFor>>,
    identity: EngineIdentity,
    /// What every created container reports as not applied (empty: every setting holds).
    not_applied: Mutex<Vec<NotApplied>>,
}

impl std::fmt::Debug for FakeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeEngine")
    }
}

impl FakeEngine {
    /// An empty engine: no images, no containers; builds succeed at once, pulls fail.
    pub fn new() -> Arc<FakeEngine> {
        FakeEngine::with_identity(EngineIdentity::docker("20.10.24"))
    }

    /// [`FakeEngine::new`], saying it is another engine (Podman, rootless, ...).
    pub fn with_identity(identity: EngineIdentity) -> Arc<FakeEngine> {
        Arc::new_cyclic(|me| FakeEngine {
            me: me.clone(),
            state: Mutex::new(FakeState {
                info: EngineInfo {
                    server_version: "20.10.24".into(),
                    oci_runtimes: vec![OciRuntime::named("runc")],
                    cpus: 2,
                    api_version: "1.41".into(),
                    ..EngineInfo::default()
                },
                ..FakeState::default()
            }),
            calls: Mutex::new(Vec::new()),
            program: Mutex::new(None),
            changed: Notify::new(),
            swarm: Mutex::new(swarm::FakeSwarm::default()),
            service_program: Mutex::new(None),
            identity,
            not_applied: Mutex::new(Vec::new()),
        })
    }

    /// Every container created from now on reports these settings as not applied.
    pub fn set_not_applied(&self, settings: Vec<NotApplied>) {
        *self.not_applied.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
        self.changed.notify_waiters();
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many recorded requests satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Call) -> bool) -> usize {
        self.calls().iter().filter(|c| pred(c)).count()
    }

    /// What every container runs, decided from its spec.
    pub fn set_program(&self, program: impl Fn(&ContainerSpec) -> Program + Send + Sync + 'static) {
        *self.program.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(program));
    }

    /// The next `times` requests of kind `op` fail.
    pub fn fail(&self, op: Op, times: u32) {
        self.state().failures.insert(op, times);
    }

    /// How long each container start takes from now on.
    pub fn set_start_delay(&self, delay: Duration) {
        self.state().start_delay = delay;
    }

    /// How builds go from now on.
    pub fn set_build(&self, script: BuildScript) {
        self.state().build = Some(script);
    }

    /// How pulls go from now on.
    pub fn set_pull(&self, script: PullScript) {
        self.state().pull = Some(script);
    }

    /// What `info` answers.
    pub fn set_info(&self, info: EngineInfo) {
        self.state().info = info;
    }

    /// The id of the image `name` names now (empty when none does).
    pub fn image_id_now(&self, name: &str) -> String {
        self.find_image(name).unwrap_or_default()
    }

    /// Adds an image under `tag` with `labels`; returns its id.
    pub fn add_image(&self, tag: &str, labels: &[(&str, &str)], created: i64) -> String {
        let mut state = self.state();
        state.next_id += 1;
        let id = format!("sha256:{:064x}", state.next_id);
        // As the engine does: a tag names one image; the one it named before keeps its id.
        for image in &mut state.images {
            image.tags.retain(|t| t != tag);
        }
        state.images.push(FakeImage {
            id: id.clone(),
            tags: if tag.is_empty() {
                Vec::new()
            } else {
                vec![tag.to_string()]
            },
            repo_digests: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created,
            files: HashMap::new(),
        });
        id
    }

    /// Puts a file into an image's file system (for [`ContainerEngine::read_file`]).
    pub fn add_image_file(&self, image: &str, path: &str, bytes: &[u8]) {
        let mut state = self.state();
        if let Some(id) = find_image(&state.images, image)
            && let Some(found) = state.images.iter_mut().find(|i| i.id == id)
        {
            found.files.insert(path.to_string(), bytes.to_vec());
        }
    }

    /// Lists a container the engine holds but packbox did not make here (a leftover, another
    /// process's container).
    pub fn add_listed_container(&self, id: &str, image_id: &str, labels: &[(&str, &str)]) {
        self.state().listed.push(ContainerSummary {
            id: id.to_string(),
            image_id: Some(image_id.to_string()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            created: 0,
        });
    }

    /// Ids of the containers that exist now (made through the API, or listed).
    pub fn container_ids(&self) -> Vec<String> {
        let state = self.state();
        state
            .containers
            .keys()
            .cloned()
            .chain(state.listed.iter().map(|c| c.id.clone()))
            .collect()
    }

    /// The sizes of the archives uploaded into a volume, when it exists.
    pub fn volume_uploads(&self, name: &str) -> Option<Vec<usize>> {
        self.state().volumes.get(name).map(|v| v.uploads.clone())
    }

    /// Whether an image (by tag or id) exists.
    pub fn has_image(&self, name: &str) -> bool {
        self.find_image(name).is_some()
    }

    /// The bytes written to a container's stdin so far.
    pub fn stdin_of(&self, id: &str) -> Vec<u8> {
        self.state()
            .containers
            .get(id)
            .map(|c| c.stdin.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The names of containers that are running now.
    pub fn running(&self) -> Vec<String> {
        self.state()
            .containers
            .values()
            .filter(|c| matches!(c.life, Life::Running))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Waits (bounded by the caller's clock) until `condition` holds on the fake.
    pub async fn until(&self, condition: impl Fn(&FakeEngine) -> bool) {
        loop {
            let changed = self.changed.notified();
            if condition(self) {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    fn find_image(&self, name: &str) -> Option<String> {
        find_image(&self.state().images, name)
    }

    /// Takes one injected failure of `op`, if any is left.
    fn injected(&self, op: Op, what: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        match state.failures.get_mut(&op) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Err(EngineError::Api {
                    what: what.to_string(),
                    source: "injected failure".into(),
                })
            }
            _ => Ok(()),
        }
    }

    fn not_found(what: String) -> EngineError {
        EngineError::Api {
            what,
            source: "no such container (404)".into(),
        }
    }

    /// Ends a running container's process with `code`.
    fn finish(&self, id: &str, code: i64, oom: bool) {
        let mut state = self.state();
        if let Some(container) = state.containers.get_mut(id)
            && !matches!(container.life, Life::Exited(_))
        {
            container.life = Life::Exited(code);
            container.oom = oom;
            container.output = None;
            container.signals = None;
            container.exited.send_replace(Some(code));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn program_for(&self, spec: &ContainerSpec) -> Program {
        match &*self.program.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(program) => program(spec),
            None => Program::default(),
        }
    }
}

/// An image by tag, full id, or a short id of at least 12 hex digits, as the engine finds them.
fn find_image(images: &[FakeImage], name: &str) -> Option<String> {
    images
        .iter()
        .find(|i| {
            i.id == name
                || i.tags.iter().any(|t| t == name)
                || i.repo_digests.iter().any(|d| d == name)
                || (name.len() >= 12 && i.id.trim_start_matches("sha256:").starts_with(name))
        })
        .map(|i| i.id.clone())
}

/// A frame as packbox's init writes it (`init/src/main.rs`): kind (1 stdout, 2 stderr, 3 exit
/// status), payload length (big-endian u32), payload. The fake plays the init with it.
pub(crate) fn init_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![kind];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Whether a command is the warm pool's go-line wrapper, which waits for a line on stdin.
fn waits_for_go(cmd: &[String]) -> bool {
    cmd.get(3).is_some_and(|arg| arg == "packbox-warm")
}

/// A started container's simulated process and its ends.
struct Process {
    engine: Arc<FakeEngine>,
    id: String,
    program: Program,
    wait_for_go: bool,
    /// packbox's init is PID 1: output goes out in frames, the exit status in the last one.
    framed: bool,
    stdin: tokio::io::DuplexStream,
    stdin_seen: Arc<Mutex<Vec<u8>>>,
    signals: mpsc::UnboundedReceiver<Signal>,
    output: Option<mpsc::UnboundedSender<Result<OutputChunk, EngineError>>>,
}

/// Runs a simulated process to its end.
async fn simulate(process: Process) {
    let Process {
        engine,
        id,
        program,
        wait_for_go,
        framed,
        mut stdin,
        stdin_seen,
        mut signals,
        output,
    } = process;
    // Stdin is read in the background; a pooled process waits for its first line.
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let mut buffer = [0u8; 4096];
        let mut signalled = false;
        loop {
            match stdin.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut seen = stdin_seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.extend_from_slice(&buffer[..n]);
                    if !signalled && seen.contains(&b'\n') {
                        signalled = true;
                        let _ = line_tx.send(());
                    }
                }
            }
        }
    });
    // What the container writes on its stdout and stderr: with packbox's init, frames.
    let send = |stream: StreamKind, bytes: &[u8]| {
        if let Some(output) = &output {
            let chunk = if framed {
                OutputChunk {
                    stream: StreamKind::Stdout,
                    bytes: Bytes::from(init_frame(
                        match stream {
                            StreamKind::Stdout => 1,
                            StreamKind::Stderr => 2,
                        },
                        bytes,
                    )),
                }
            } else {
                OutputChunk {
                    stream,
                    bytes: Bytes::copy_from_slice(bytes),
                }
            };
            let _ = output.send(Ok(chunk));
        }
    };
    // The action's process ended with `code`: the init reports it (unless SIGKILL ended the
    // init itself), then the engine sees the container's exit.
    let exit = async |code: i64, oom: bool, killed: bool| {
        if framed && !killed {
            if let Some(output) = &output {
                let _ = output.send(Ok(OutputChunk {
                    stream: StreamKind::Stdout,
                    bytes: Bytes::from(init_frame(3, &(code as i32).to_be_bytes())),
                }));
            }
            tokio::time::sleep(program.engine_exit_after).await;
            engine.finish(&id, program.engine_code.unwrap_or(code), oom);
        } else {
            engine.finish(&id, code, oom);
        }
    };
    if wait_for_go {
        tokio::select! {
            _ = line_rx.recv() => {}
            signal = signals.recv() => {
                match signal {
                    Some(Signal::Term) => exit(143, false, false).await,
                    Some(Signal::Kill) | None => exit(137, false, true).await,
                }
                return;
            }
        }
    }
    for (stream, bytes) in &program.output {
        send(*stream, bytes);
    }
    let deadline = tokio::time::sleep(program.delay);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline, if program.exit != Exit::Never => {
                let code = match program.exit { Exit::Code(code) => code, Exit::Never => 0 };
                exit(code, program.oom, false).await;
                return;
            }
            signal = signals.recv() => match signal {
                Some(Signal::Term) if program.obeys_term => {
                    exit(143, false, false).await;
                    return;
                }
                Some(Signal::Term) => {}
                Some(Signal::Kill) | None => {
                    exit(137, false, true).await;
                    return;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    fn endpoint(&self) -> &str {
        "fake://"
    }

    fn identity(&self) -> &EngineIdentity {
        &self.identity
    }

    async fn sandbox_not_applied(
        &self,
        _id: &str,
        _spec: &ContainerSpec,
    ) -> Result<Vec<NotApplied>, EngineError> {
        Ok(self
            .not_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    fn swarm(self: Arc<Self>) -> Option<SharedSwarm> {
        Some(self)
    }

    async fn image_id(&self, name: &str) -> Result<Option<String>, EngineError> {
        self.record(Call::ImageId(name.to_string()));
        Ok(self.find_image(name))
    }

    async fn image_labels(&self, name: &str) -> Result<Option<ImageLabels>, EngineError> {
        self.record(Call::ImageId(name.to_string()));
        let state = self.state();
        let id = find_image(&state.images, name);
        Ok(state
            .images
            .iter()
            .find(|i| Some(&i.id) == id.as_ref())
            .map(|image| ImageLabels {
                id: image.id.clone(),
                labels: image.labels.clone(),
            }))
    }

    async fn image_repo_digests(&self, name: &str) -> Result<Vec<String>, EngineError> {
        self.record(Call::ImageId(name.to_string()));
        let state = self.state();
        let id = find_image(&state.images, name);
        Ok(state
            .images
            .iter()
            .find(|i| Some(&i.id) == id.as_ref())
            .map(|i| i.repo_digests.clone())
            .unwrap_or_default())
    }

    async fn pull_image(&self, name: &str) -> Result<(), EngineError> {
        self.record(Call::Pull(name.to_string()));
        let script = self.state().pull.clone().unwrap_or(PullScript::Fail);
        match script {
            PullScript::Succeed { repo_digests } => {
                let mut state = self.state();
                state.next_id += 1;
                let id = format!("sha256:{:064x}", state.next_id);
                // The engine answers to the reference it pulled.
                state.images.push(FakeImage {
                    id,
                    tags: vec![name.to_string()],
                    repo_digests,
                    labels: HashMap::new(),
                    created: 0,
                    files: HashMap::new(),
                });
                Ok(())
            }
            PullScript::Fail => Err(EngineError::Api {
                what: format!("pulling image {name}"),
                source: "no registry answers".into(),
            }),
            PullScript::Hang => std::future::pending().await,
        }
    }

    async fn build_image(
        &self,
        spec: BuildSpec,
        on_line: LineSink<'_>,
    ) -> Result<String, EngineError> {
        self.record(Call::Build(spec.tag.clone()));
        self.injected(Op::Build, "building")?;
        let script = self.state().build.clone().unwrap_or(BuildScript::Succeed {
            delay: Duration::ZERO,
            lines: Vec::new(),
        });
        match script {
            BuildScript::Succeed { delay, lines } => {
                for line in &lines {
                    on_line(line);
                }
                tokio::time::sleep(delay).await;
                let labels: Vec<(String, String)> = spec.labels.into_iter().collect();
                let borrowed: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Ok(self.add_image(&spec.tag, &borrowed, 0))
            }
            BuildScript::Hang => std::future::pending().await,
        }
    }

    async fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<String, EngineError> {
        self.record(Call::Create {
            name: name.to_string(),
            spec: Box::new(spec.clone()),
        });
        self.injected(Op::Create, "creating a container")?;
        let Some(image_id) = self.find_image(&spec.image) else {
            return Err(EngineError::Api {
                what: format!("creating a container from image {}", spec.image),
                source: "no such image (404)".into(),
            });
        };
        let (output, output_rx) = mpsc::unbounded_channel();
        let (exited, _) = watch::channel(None);
        let mut state = self.state();
        if !name.is_empty() && state.containers.values().any(|c| c.name == name) {
            return Err(EngineError::InUse {
                what: format!("creating container {name}: the name"),
            });
        }
        state.next_id += 1;
        let id = format!("container{:04}", state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                name: name.to_string(),
                spec: spec.clone(),
                image_id,
                life: Life::Created,
                oom: false,
                output: Some(output),
                output_rx: Some(output_rx),
                stdin: Arc::new(Mutex::new(Vec::new())),
                stdin_rx: None,
                signals: None,
                exited,
            },
        );
        Ok(id)
    }

    async fn attach(&self, id: &str) -> Result<Attached, EngineError> {
        self.record(Call::Attach(id.to_string()));
        self.injected(Op::Attach, "attaching")?;
        let fail_output = self.injected(Op::Output, "reading output").is_err();
        let mut state = self.state();
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| FakeEngine::not_found(format!("attaching to container {id}")))?;
        let rx = container.output_rx.take().ok_or_else(|| EngineError::Api {
            what: format!("attaching to container {id}"),
            source: "attached twice".into(),
        })?;
        let (writer, reader) = tokio::io::duplex(64 << 10);
        container.stdin_rx = Some(reader);
        let stream = futures::stream::unfold((rx, fail_output), |(mut rx, fail)| async move {
            if fail {
                return Some((
                    Err(EngineError::Api {
                        what: "reading output".into(),
                        source: "injected failure".into(),
                    }),
                    (rx, false),
                ));
            }
            rx.recv().await.map(|item| (item, (rx, false)))
        });
        Ok(Attached {
            output: Box::pin(stream),
            stdin: Box::pin(writer),
        })
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.record(Call::Start(id.to_string()));
        self.injected(Op::Start, "starting")?;
        let delay = self.state().start_delay;
        tokio::time::sleep(delay).await;
        let (spec, wait_for_go, stdin, stdin_seen, signals, output) = {
            let mut state = self.state();
            let container = state
                .containers
                .get_mut(id)
                .ok_or_else(|| FakeEngine::not_found(format!("starting container {id}")))?;
            container.life = Life::Running;
            let (signal_tx, signal_rx) = mpsc::unbounded_channel();
            container.signals = Some(signal_tx);
            let stdin = container
                .stdin_rx
                .take()
                .unwrap_or_else(|| tokio::io::duplex(1).1);
            (
                container.spec.clone(),
                waits_for_go(&container.spec.cmd),
                stdin,
                Arc::clone(&container.stdin),
                signal_rx,
                container.output.clone(),
            )
        };
        tokio::spawn(simulate(Process {
            engine: self.self_arc(),
            id: id.to_string(),
            program: self.program_for(&spec),
            wait_for_go,
            framed: matches!(spec.init, InitProcess::Packbox { .. }),
            stdin,
            stdin_seen,
            signals,
            output,
        }));
        self.changed.notify_waiters();
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<i64, EngineError> {
        self.record(Call::Wait(id.to_string()));
        self.injected(Op::Wait, "waiting")?;
        let mut exited = {
            let state = self.state();
            let container = state
                .containers
                .get(id)
                .ok_or_else(|| FakeEngine::not_found(format!("waiting for container {id}")))?;
            container.exited.subscribe()
        };
        loop {
            if let Some(code) = *exited.borrow_and_update() {
                return Ok(code);
            }
            if exited.changed().await.is_err() {
                return Err(FakeEngine::not_found(format!("waiting for container {id}")));
            }
        }
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), EngineError> {
        self.record(Call::Kill(id.to_string(), signal));
        let state = self.state();
        if let Some(container) = state.containers.get(id)
            && let Some(signals) = &container.signals
        {
            let _ = signals.send(signal);
        }
        Ok(())
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, EngineError> {
        self.record(Call::State(id.to_string()));
        if let Some((oom_killed, exit_code, running)) = self.task_container(id) {
            return Ok(ContainerState {
                oom_killed,
                exit_code,
                running,
                removed: false,
            });
        }
        let state = self.state();
        // As the engine's inspection: a container that is gone was removed.
        let Some(container) = state.containers.get(id) else {
            return Ok(ContainerState {
                removed: true,
                ..ContainerState::default()
            });
        };
        Ok(ContainerState {
            oom_killed: container.oom,
            exit_code: match container.life {
                Life::Exited(code) => Some(code),
                _ => None,
            },
            running: matches!(container.life, Life::Running),
            removed: false,
        })
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.record(Call::Remove(id.to_string()));
        self.injected(Op::Remove, "removing")?;
        let removed = {
            let mut state = self.state();
            state.listed.retain(|c| c.id != id);
            // Like the engine, by id or by name.
            let key = state
                .containers
                .iter()
                .find(|(key, c)| *key == id || c.name == id)
                .map(|(key, _)| key.clone());
            key.and_then(|key| state.containers.remove(&key))
        };
        if let Some(container) = removed
            && let Some(signals) = container.signals
        {
            let _ = signals.send(Signal::Kill);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn containers_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        self.record(Call::ListContainers(labels.to_vec()));
        self.injected(Op::ListContainers, "listing containers")?;
        let state = self.state();
        let matches = |found: &HashMap<String, String>| {
            labels.iter().all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => found.get(k).is_some_and(|have| have == v),
                None => found.contains_key(wanted),
            })
        };
        let made = state.containers.iter().map(|(id, c)| ContainerSummary {
            id: id.clone(),
            image_id: Some(c.image_id.clone()),
            labels: c.spec.labels.clone().into_iter().collect(),
            running: matches!(c.life, Life::Running),
            created: 0,
        });
        Ok(made
            .chain(state.listed.iter().cloned())
            .filter(|c| matches(&c.labels))
            .collect())
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        self.record(Call::Info);
        self.injected(Op::Info, "asking what the engine is")?;
        Ok(self.state().info.clone())
    }

    async fn images_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<ImageSummary>, EngineError> {
        self.record(Call::ListImages(labels.to_vec()));
        let state = self.state();
        Ok(state
            .images
            .iter()
            .filter(|image| {
                labels.iter().all(|wanted| match wanted.split_once('=') {
                    Some((k, v)) => image.labels.get(k).is_some_and(|have| have == v),
                    None => image.labels.contains_key(wanted),
                })
            })
            .map(|image| ImageSummary {
                id: image.id.clone(),
                tags: image.tags.clone(),
                created: image.created,
                size_bytes: 1,
                labels: image.labels.clone(),
            })
            .collect())
    }

    async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        self.record(Call::RemoveImage(id.to_string()));
        let mut state = self.state();
        let Some(image_id) = find_image(&state.images, id) else {
            return Ok(());
        };
        // A container uses it, or another image builds on it (named by a pack image's label).
        let in_use = state.containers.values().any(|c| c.image_id == image_id)
            || state
                .listed
                .iter()
                .any(|c| c.image_id.as_deref() == Some(image_id.as_str()))
            || state
                .images
                .iter()
                .any(|i| i.labels.get("packbox.base_image") == Some(&image_id));
        if in_use {
            return Err(EngineError::InUse {
                what: format!("removing image {id}"),
            });
        }
        state.images.retain(|i| i.id != image_id);
        Ok(())
    }

    /// The fake keeps no parents, so a layer goes as an image does.
    async fn remove_layer(&self, id: &str) -> Result<(), EngineError> {
        self.remove_image(id).await
    }

    async fn image_size(&self, name: &str) -> Result<u64, EngineError> {
        self.record(Call::ImageId(name.to_string()));
        match self.find_image(name) {
            Some(_) => Ok(1 << 20),
            None => Err(EngineError::Api {
                what: format!("inspecting image {name}"),
                source: "no such image (404)".into(),
            }),
        }
    }

    async fn container_labels(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError> {
        self.record(Call::State(name.to_string()));
        let state = self.state();
        Ok(state
            .containers
            .iter()
            .find(|(id, c)| *id == name || c.name == name)
            .map(|(_, c)| c.spec.labels.clone().into_iter().collect()))
    }

    async fn volume_created(&self, name: &str) -> Result<Option<String>, EngineError> {
        self.record(Call::VolumeCreated(name.to_string()));
        Ok(self
            .state()
            .volumes
            .get(name)
            .map(|v| format!("{:020}", v.created)))
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        self.record(Call::CreateVolume(name.to_string()));
        let mut state = self.state();
        state.next_id += 1;
        let created = state.next_id;
        state
            .volumes
            .entry(name.to_string())
            .or_insert_with(|| FakeVolume {
                labels: labels.clone().into_iter().collect(),
                created,
                uploads: Vec::new(),
                content: Vec::new(),
            });
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<bool, EngineError> {
        self.record(Call::RemoveVolume(name.to_string()));
        let mut state = self.state();
        let in_use = state
            .containers
            .values()
            .any(|c| c.spec.volumes.iter().any(|v| v.volume == name));
        if in_use {
            return Ok(false);
        }
        state.volumes.remove(name);
        Ok(true)
    }

    async fn volumes_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<VolumeSummary>, EngineError> {
        let state = self.state();
        Ok(state
            .volumes
            .iter()
            .filter(|(_, v)| {
                labels.iter().all(|wanted| match wanted.split_once('=') {
                    Some((k, value)) => v.labels.get(k).is_some_and(|have| have == value),
                    None => v.labels.contains_key(wanted),
                })
            })
            .map(|(name, v)| VolumeSummary {
                name: name.clone(),
                labels: v.labels.clone(),
                created_at: format!("{:020}", v.created),
            })
            .collect())
    }

    async fn create_bridge(&self, spec: &BridgeSpec) -> Result<String, EngineError> {
        self.record(Call::CreateBridge(spec.clone()));
        let mut state = self.state();
        let taken = state.networks.values().any(|n| {
            n.summary.name == spec.name
                || spec
                    .subnet
                    .as_ref()
                    .is_some_and(|subnet| n.summary.subnets.contains(subnet))
        });
        if taken {
            return Err(EngineError::InUse {
                what: format!("creating network {}", spec.name),
            });
        }
        state.next_id += 1;
        let id = format!("net{}", state.next_id);
        state.networks.insert(
            id.clone(),
            FakeNetwork {
                summary: NetworkSummary {
                    id: id.clone(),
                    name: spec.name.clone(),
                    driver: "bridge".into(),
                    labels: spec.labels.clone().into_iter().collect(),
                    subnets: spec.subnet.iter().cloned().collect(),
                    gateways: Vec::new(),
                    internal: spec.internal,
                },
                members: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn network(&self, name: &str) -> Result<Option<NetworkSummary>, EngineError> {
        Ok(self
            .state()
            .networks
            .values()
            .find(|n| n.summary.id == name || n.summary.name == name)
            .map(|n| n.summary.clone()))
    }

    async fn networks_with_labels(
        &self,
        labels: &[String],
    ) -> Result<Vec<NetworkSummary>, EngineError> {
        self.record(Call::ListNetworks(labels.to_vec()));
        Ok(self
            .state()
            .networks
            .values()
            .filter(|n| {
                labels.iter().all(|wanted| match wanted.split_once('=') {
                    Some((k, value)) => n.summary.labels.get(k).is_some_and(|have| have == value),
                    None => n.summary.labels.contains_key(wanted),
                })
            })
            .map(|n| n.summary.clone())
            .collect())
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        ipv4: Option<&str>,
    ) -> Result<(), EngineError> {
        self.record(Call::ConnectNetwork {
            network: network.to_string(),
            container: container.to_string(),
            ipv4: ipv4.map(str::to_string),
        });
        let mut state = self.state();
        let found = state
            .networks
            .values_mut()
            .find(|n| n.summary.id == network || n.summary.name == network);
        match found {
            Some(net) => {
                net.members
                    .insert(container.to_string(), ipv4.map(str::to_string));
                Ok(())
            }
            None => Err(EngineError::Unexpected {
                what: format!("connecting to network {network}"),
                message: "no such network".into(),
            }),
        }
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        self.record(Call::DisconnectNetwork {
            network: network.to_string(),
            container: container.to_string(),
        });
        if let Some(net) = self
            .state()
            .networks
            .values_mut()
            .find(|n| n.summary.id == network || n.summary.name == network)
        {
            net.members.remove(container);
        }
        Ok(())
    }

    async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.record(Call::RemoveNetwork(id.to_string()));
        let mut state = self.state();
        let Some(key) = state
            .networks
            .iter()
            .find(|(_, n)| n.summary.id == id || n.summary.name == id)
            .map(|(key, _)| key.clone())
        else {
            return Ok(());
        };
        let name = state.networks[&key].summary.name.clone();
        let used = !state.networks[&key].members.is_empty()
            || state
                .containers
                .values()
                .any(|c| c.spec.network_mode == name || c.spec.network_mode == key);
        if used {
            return Err(EngineError::InUse {
                what: format!("removing network {id}"),
            });
        }
        state.networks.remove(&key);
        Ok(())
    }

    async fn container_address(
        &self,
        container: &str,
        network: &str,
    ) -> Result<Option<String>, EngineError> {
        let state = self.state();
        Ok(state
            .networks
            .values()
            .find(|n| n.summary.id == network || n.summary.name == network)
            .and_then(|n| n.members.get(container).cloned().flatten()))
    }

    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        mut archive: ArchiveStream,
    ) -> Result<(), EngineError> {
        use futures::StreamExt;
        self.record(Call::Upload {
            container: id.to_string(),
            path: path.to_string(),
        });
        let mut bytes = Vec::new();
        while let Some(chunk) = archive.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| EngineError::Api {
                what: format!("uploading into container {id}"),
                source: Box::new(e),
            })?);
        }
        let size = bytes.len();
        let mut state = self.state();
        let volumes: Vec<String> = state
            .containers
            .get(id)
            .ok_or_else(|| FakeEngine::not_found(format!("uploading into container {id}")))?
            .spec
            .volumes
            .iter()
            .filter(|v| v.container_path == path)
            .map(|v| v.volume.clone())
            .collect();
        for volume in volumes {
            // As the engine does: a bind of a missing volume makes an empty, unlabelled one.
            let volume = state.volumes.entry(volume).or_default();
            volume.uploads.push(size);
            volume.content = bytes.clone();
        }
        Ok(())
    }

    async fn commit(&self, id: &str, spec: &CommitSpec) -> Result<String, EngineError> {
        self.record(Call::Commit(id.to_string(), spec.tag.clone()));
        self.injected(Op::Commit, &format!("committing container {id}"))?;
        if !self.state().containers.contains_key(id) {
            return Err(FakeEngine::not_found(format!("committing container {id}")));
        }
        let labels: Vec<(&str, &str)> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(self.add_image(&spec.tag, &labels, 0))
    }

    fn download_archive(&self, id: &str, path: &str) -> ImageExport {
        self.record(Call::Download(id.to_string(), path.to_string()));
        let state = self.state();
        let found = state.containers.get(id).map(|container| {
            container
                .spec
                .volumes
                .iter()
                .find(|v| v.container_path == path)
                .and_then(|v| state.volumes.get(&v.volume))
                .map(|v| archive_under(&v.content, path))
                // Else the image's files under the folder (see `add_image_file`).
                .unwrap_or_else(|| image_files_under(&state.images, &container.spec.image, path))
        });
        let chunk = found
            .ok_or_else(|| FakeEngine::not_found(format!("reading {path} from container {id}")));
        Box::pin(futures::stream::iter([chunk.map(Bytes::from)]))
    }

    fn export_images(&self, names: &[String]) -> ImageExport {
        self.record(Call::Export(names.to_vec()));
        let state = self.state();
        let mut archive = Vec::new();
        for name in names {
            match find_image(&state.images, name) {
                Some(id) => archive.push(Ok(Bytes::from(format!("{name}={id}\n")))),
                None => archive.push(Err(EngineError::Api {
                    what: format!("exporting {name}"),
                    source: "no such image (404)".into(),
                })),
            }
        }
        Box::pin(futures::stream::iter(archive))
    }

    async fn import_images(&self, mut archive: ArchiveStream) -> Result<Vec<String>, EngineError> {
        use futures::StreamExt;
        self.record(Call::Import);
        let mut text = Vec::new();
        while let Some(chunk) = archive.next().await {
            text.extend_from_slice(&chunk.map_err(|e| EngineError::Api {
                what: "loading an image archive".into(),
                source: Box::new(e),
            })?);
        }
        let mut loaded = Vec::new();
        let mut state = self.state();
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some((name, id)) = line.split_once('=') {
                state.images.retain(|i| !i.tags.iter().any(|t| t == name));
                state.images.push(FakeImage {
                    id: id.to_string(),
                    tags: vec![name.to_string()],
                    labels: HashMap::new(),
                    created: 0,
                    files: HashMap::new(),
                    repo_digests: Vec::new(),
                });
                loaded.push(format!("Loaded image: {name}"));
            }
        }
        Ok(loaded)
    }

    async fn import_rootfs(
        &self,
        tag: &str,
        mut rootfs: ArchiveStream,
        _changes: &[String],
    ) -> Result<String, EngineError> {
        use futures::StreamExt;
        while let Some(chunk) = rootfs.next().await {
            chunk.map_err(|e| EngineError::Api {
                what: format!("importing {tag}"),
                source: Box::new(e),
            })?;
        }
        Ok(self.add_image(tag, &[], 0))
    }

    async fn read_file(
        &self,
        id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        self.record(Call::ReadFile(id.to_string(), path.to_string()));
        let state = self.state();
        let Some(container) = state.containers.get(id) else {
            return Err(EngineError::Api {
                what: format!("reading {path} from container {id}"),
                source: "no such container (404)".into(),
            });
        };
        let file = state
            .images
            .iter()
            .find(|image| image.id == container.image_id)
            .and_then(|image| image.files.get(path));
        match file {
            Some(bytes) if bytes.len() as u64 > max_bytes => Err(EngineError::Unexpected {
                what: format!("reading {path} from container {id}"),
                message: format!("larger than {max_bytes} bytes"),
            }),
            other => Ok(other.cloned()),
        }
    }
}

impl FakeEngine {
    /// The `Arc` this engine lives in, for the simulated processes it spawns.
    fn self_arc(&self) -> Arc<FakeEngine> {
        // Every FakeEngine is made by `new`, inside an `Arc` that outlives its requests.
        self.me
            .upgrade()
            .unwrap_or_else(|| unreachable!("a FakeEngine lives in an Arc"))
    }
}
