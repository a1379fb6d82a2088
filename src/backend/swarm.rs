//! The swarm backend: each run as a one-shot service on the Swarm the engine manages.
//!
//! A run makes a pack image (the action's image plus the pack, by content), a secret holding
//! the parameter document, a per-run internal network when the sandbox has no network, and a
//! service of one replica that is never restarted, under the sandbox as a service spec; the
//! service's life (log, exit code, timeout, cancellation, removal on every path) is
//! [`crate::lifecycle::service`]'s.

use tokio::sync::OnceCell;

use std::sync::Arc;

use super::{BackendError, Job, Ran, RunBackend};
use crate::common::owned::Owned;
use crate::egress::gateway::Gateway;
use crate::engine::{NetworkSpec, SharedEngine, SharedSwarm};
use crate::lifecycle::RunError;
use crate::lifecycle::service::{ServiceObjects, drive};
use crate::pack_delivery::image::{self as pack_image, PackImageError, PackImageSource};
use crate::sandbox::service::{MAX_DOCUMENT_BYTES, ServiceParts};
use crate::sandbox::{PackSource, SeccompProfile};

/// Why the swarm backend could not run an action.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The engine connection has no Swarm face at all.
    #[error("the engine at {endpoint} offers no Swarm operations")]
    NoSwarm {
        /// The engine's address.
        endpoint: String,
    },
    /// The engine is in no Swarm, or only a worker of one: services are made on a manager.
    #[error(
        "the engine at {endpoint} is not a Swarm manager ({why}); the swarm backend runs actions as services of a Swarm the engine manages"
    )]
    NotAManager {
        /// The engine's address.
        endpoint: String,
        /// Which: in no Swarm, or a worker node.
        why: &'static str,
    },
    /// A Swarm of several nodes without a registry: the pack image would exist on this node
    /// only, and a task scheduled elsewhere could not pull it.
    #[error(
        "the Swarm has {nodes} nodes and no registry was given: a pack image built here exists on this node only; pass --registry HOST:PORT (registry: in the config file) so that every node can pull it"
    )]
    RegistryNeeded {
        /// Nodes in the Swarm.
        nodes: i64,
    },
    /// The parameter document is larger than a Swarm secret, which carries it, may be.
    #[error(
        "the parameter document is {bytes} bytes; a Swarm secret holds at most {MAX_DOCUMENT_BYTES} bytes"
    )]
    DocumentTooLarge {
        /// The document's size.
        bytes: usize,
    },
    /// The workload has no pack folder to make an image of.
    #[error(
        "the swarm backend runs actions of a pack folder only: every swarm run carries its pack in an image"
    )]
    NoPackFolder,
    /// The sandbox or the workload asks for something a service cannot do.
    #[error("the swarm backend cannot apply {setting}: {why}")]
    Unsupported {
        /// The setting (`sandbox.oci_runtime`), or what of the workload it is.
        setting: &'static str,
        /// Why a service cannot, and what to do instead when there is a way.
        why: &'static str,
    },
    /// The pack could not be made into an image (or pushed to the registry).
    #[error(transparent)]
    PackImage(#[from] PackImageError),
}

impl SwarmError {
    /// Whether the input (settings, parameters, the pack) is at fault, not the engine.
    pub fn is_input(&self) -> bool {
        match self {
            SwarmError::RegistryNeeded { .. }
            | SwarmError::DocumentTooLarge { .. }
            | SwarmError::Unsupported { .. }
            | SwarmError::NoPackFolder => true,
            SwarmError::PackImage(e) => e.is_input(),
            _ => false,
        }
    }

    /// Whether the run was cancelled while its image was made.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            SwarmError::PackImage(PackImageError::Cancelled { .. })
        )
    }
}

/// Runs jobs as one-shot services on the Swarm the engine manages.
#[derive(Debug)]
pub struct SwarmBackend {
    engine: SharedEngine,
    registry: Option<String>,
    placement: Vec<String>,
    /// The egress proxy, which joins the network of each run with a grant.
    gateway: Arc<Gateway>,
    /// The Swarm face, once the Swarm was found fit (a manager; a registry if it has more than
    /// one node).
    swarm: OnceCell<SharedSwarm>,
    /// What packbox made (the pack images it built).
    owned: Owned,
}

impl SwarmBackend {
    /// A backend on the Swarm `engine` manages, pushing pack images to `registry` when given,
    /// its services placed on nodes that meet every `placement` constraint (none: any node).
    pub fn new(
        engine: SharedEngine,
        registry: Option<String>,
        owned: Owned,
        placement: Vec<String>,
        gateway: Arc<Gateway>,
    ) -> SwarmBackend {
        SwarmBackend {
            engine,
            registry,
            placement,
            gateway,
            swarm: OnceCell::new(),
            owned,
        }
    }

    /// The Swarm face, checked at the first run.
    async fn swarm(&self) -> Result<&SharedSwarm, BackendError> {
        self.swarm
            .get_or_try_init(|| async {
                let endpoint = self.engine.endpoint().to_string();
                let swarm = SharedEngine::clone(&self.engine).swarm().ok_or_else(|| {
                    SwarmError::NoSwarm {
                        endpoint: endpoint.clone(),
                    }
                })?;
                let state = swarm.swarm_state().await?;
                if !state.active {
                    return Err(SwarmError::NotAManager {
                        endpoint,
                        why: "it is in no Swarm",
                    }
                    .into());
                }
                if !state.manager {
                    return Err(SwarmError::NotAManager {
                        endpoint,
                        why: "it is a worker node",
                    }
                    .into());
                }
                if state.nodes > 1 && self.registry.is_none() {
                    return Err(SwarmError::RegistryNeeded { nodes: state.nodes }.into());
                }
                Ok(swarm)
            })
            .await
    }
}

#[async_trait::async_trait]
impl RunBackend for SwarmBackend {
    async fn run(&self, job: Job<'_>) -> Result<Ran, BackendError> {
        let Job {
            attune_exec_id,
            exec_id,
            workload,
            policy,
            io,
            on_started,
            egress,
            ..
        } = job;
        if policy.oci_runtime.is_some() {
            return Err(SwarmError::Unsupported {
                setting: "sandbox.oci_runtime",
                why: "a service cannot choose its OCI runtime",
            }
            .into());
        }
        if policy.seccomp != SeccompProfile::EngineDefault {
            return Err(SwarmError::Unsupported {
                setting: "sandbox.seccomp",
                why: "a service cannot carry a syscall profile on this engine's API (services take one from API 1.44 on); to run under the engine's default profile, pass --seccomp engine-default --allow-weaker-sandbox (reported as weaker than packbox's default)",
            }
            .into());
        }
        if io.stdin.len() > MAX_DOCUMENT_BYTES {
            return Err(SwarmError::DocumentTooLarge {
                bytes: io.stdin.len(),
            }
            .into());
        }
        let Some(PackSource::Folder(pack)) = workload.pack.clone() else {
            return Err(SwarmError::NoPackFolder.into());
        };
        let swarm = self.swarm().await?;
        let image = pack_image::ensure(
            &self.engine,
            swarm.as_ref(),
            &self.owned,
            PackImageSource {
                pack_ref: &pack.pack_ref,
                pack_dir: std::path::Path::new(&pack.host_dir),
                pack_digest: &pack.digest,
                base_image: &workload.image,
            },
            self.registry.as_deref(),
            io.cancel,
        )
        .await
        .map_err(SwarmError::from)?;
        tracing::debug!(exec_id = %exec_id, image = %image.reference, "pack image ready");

        let mut sandbox = policy.as_applied_on_swarm(io.limits.max_output);
        sandbox.engine = Some(self.engine.identity().clone());
        let mut made = ServiceObjects::new(SharedSwarm::clone(swarm));
        let names = Names::of(&exec_id);
        let run_labels = workload.labels.clone();
        let labels_of = |kind: &str| {
            let mut labels = run_labels.clone();
            labels.insert("packbox.kind".into(), kind.into());
            labels
        };
        let mut joined = None;
        let result = async {
            // Each object is recorded by name before it is asked for, so that a run dropped
            // while the engine makes it still removes it; then by id.
            made.secret = Some(names.secret.clone());
            let secret = swarm
                .create_secret(&names.secret, &io.stdin, &labels_of("run-secret"))
                .await?;
            made.secret = Some(secret.clone());
            // No network, or the egress proxy's: a network of the run's own either way.
            let network = if policy.network == "none" || egress.is_some() {
                made.network = Some(names.network.clone());
                let network = swarm
                    .create_network(&NetworkSpec {
                        name: names.network.clone(),
                        labels: labels_of("run-network"),
                        internal: true,
                        attachable: egress.is_some(),
                    })
                    .await?;
                made.network = Some(network.clone());
                Some(network)
            } else {
                None
            };
            let mut workload = workload;
            if let (Some(grant), Some(network)) = (egress, &network) {
                let slot = self.gateway.join(network).await?;
                let granted = self.gateway.grant(&slot, &exec_id, grant).await;
                workload.env.extend(slot.proxy_env());
                joined = Some(slot);
                granted?;
            }
            if io.cancel.is_cancelled() {
                return Err(RunError::Cancelled.into());
            }
            let spec = policy.service_spec(
                workload,
                ServiceParts {
                    name: &names.service,
                    image: &image.reference,
                    secret_id: &secret,
                    secret_name: &names.secret,
                    network: network.as_deref(),
                    stop_grace: io.limits.grace,
                    max_output: io.limits.max_output,
                    placement: &self.placement,
                },
            );
            made.service = Some(names.service.clone());
            let service = swarm.create_service(&spec).await?;
            made.service = Some(service.clone());
            tracing::debug!(exec_id = %exec_id, service = %service, "service created");
            on_started(&exec_id);
            Ok::<_, BackendError>(drive(swarm.as_ref(), &self.engine, &service, io).await?)
        }
        .await;
        // The task is over (or never ran): its connections are closed and audited, and the
        // proxy leaves the network before it is removed.
        let audit = match joined {
            Some(slot) => {
                let audit = self.gateway.revoke(&slot, &exec_id).await;
                self.gateway.leave(slot).await;
                Some(audit)
            }
            None => None,
        };
        let removed = made.remove_all().await;
        let end = match (result, removed) {
            (Ok(end), Ok(())) => end,
            (Ok(_), Err((_, cleanup))) => return Err(RunError::from(cleanup).into()),
            (Err(run), Ok(())) => return Err(run),
            (Err(BackendError::Run(run)), Err((resource, cleanup))) => {
                return Err(RunError::CleanupAfterFailure {
                    run: Box::new(run),
                    resource,
                    cleanup: Box::new(cleanup),
                }
                .into());
            }
            (Err(other), Err((resource, cleanup))) => {
                tracing::warn!(
                    "removing {resource} after a failed run: {}",
                    crate::common::error_text::chain(&cleanup)
                );
                return Err(other);
            }
        };
        sandbox.node = end.node;
        Ok(Ran {
            attune_exec_id,
            exec_id,
            exit: end.exit,
            sandbox,
            egress: audit,
        })
    }
}

/// The names of a run's Swarm objects.
struct Names {
    service: String,
    secret: String,
    network: String,
}

impl Names {
    fn of(exec_id: &str) -> Names {
        Names {
            service: format!("packbox-{exec_id}"),
            secret: format!("packbox-{exec_id}-parameters"),
            network: format!("packbox-{exec_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::engine::fake::{
        Call, Exit, FAKE_NODE_HOSTNAME, FAKE_NODE_ID, FakeEngine, Op, Program, SwarmScript,
    };
    use crate::engine::swarm::SwarmState;
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::contract::exit::Ending;
    use crate::engine::{ServiceSpec, Signal, StreamKind};
    use crate::lifecycle::{RunIo, RunLimits};
    use crate::sandbox::{PackFolder, PackSource, SandboxPolicy, Workload};

    const DOCUMENT: &[u8] = b"{\"token\":\"s3cr3t-value\"}\n";

    struct Setup {
        fake: Arc<FakeEngine>,
        backend: SwarmBackend,
        pack: tempfile::TempDir,
    }

    fn setup(registry: Option<&str>) -> Setup {
        let fake = FakeEngine::new();
        fake.add_image("packbox/shell:5.2", &[], 0);
        let pack = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(pack.path().join("actions")).expect("mkdir");
        std::fs::write(pack.path().join("actions/a.sh"), "echo hi\n").expect("write");
        std::fs::write(pack.path().join("unique"), uuid::Uuid::new_v4().to_string())
            .expect("write");
        let gateway = Arc::new(crate::egress::gateway::Gateway::new(
            fake.clone(),
            crate::egress::config::EgressSettings::default(),
            BTreeMap::new(),
            false,
            std::path::PathBuf::from("/nonexistent"),
        ));
        let backend = SwarmBackend::new(
            fake.clone(),
            registry.map(str::to_string),
            Owned::in_state_dir(
                &std::env::temp_dir().join(format!("packbox-test-{}", uuid::Uuid::new_v4())),
            ),
            vec!["node.role==worker".to_string()],
            gateway,
        );
        Setup {
            fake,
            backend,
            pack,
        }
    }

    fn workload(pack: &tempfile::TempDir) -> Workload {
        Workload {
            image: "packbox/shell:5.2".into(),
            cmd: vec!["bash".into(), "/pack/actions/a.sh".into()],
            env: vec![("ATTUNE_EXEC_ID".into(), "e1".into())],
            labels: BTreeMap::from([
                ("packbox.managed".into(), "true".into()),
                ("packbox.kind".into(), "run".into()),
                ("packbox.exec_id".into(), "e1".into()),
            ]),
            pack: Some(PackSource::Folder(PackFolder {
                pack_ref: "p".into(),
                host_dir: pack.path().to_string_lossy().into_owned(),
                digest: crate::pack_delivery::volume::tree_digest("p", pack.path())
                    .expect("digest"),
            })),
        }
    }

    fn limits(timeout: u64, grace: u64) -> RunLimits {
        RunLimits {
            timeout: Duration::from_secs(timeout),
            grace: Duration::from_secs(grace),
            max_output: 1024,
        }
    }

    async fn run_with(
        s: &Setup,
        policy: &SandboxPolicy,
        limits: &RunLimits,
        cancel: &CancellationToken,
        stdin: &[u8],
    ) -> Result<Ran, BackendError> {
        let job = Job {
            attune_exec_id: 1,
            egress: None,
            exec_id: "e1".into(),
            workload: workload(&s.pack),
            policy,
            kernel: Default::default(),
            io: RunIo {
                stdin: stdin.to_vec(),
                limits,
                cancel,
                on_output: &mut |_, _| {},
                artifacts: None,
            },
            warm_start: None,
            on_started: &mut |_| {},
        };
        s.backend.run(job).await
    }

    /// The sandbox a swarm run can have: packbox's, with the engine's syscall profile.
    fn swarm_policy() -> SandboxPolicy {
        SandboxPolicy {
            seccomp: SeccompProfile::EngineDefault,
            ..SandboxPolicy::default()
        }
    }

    async fn run(s: &Setup, limits: &RunLimits) -> Result<Ran, BackendError> {
        run_with(
            s,
            &swarm_policy(),
            limits,
            &CancellationToken::new(),
            DOCUMENT,
        )
        .await
    }

    fn created_service(fake: &FakeEngine) -> ServiceSpec {
        fake.calls()
            .into_iter()
            .find_map(|c| match c {
                Call::CreateService(spec) => Some(*spec),
                _ => None,
            })
            .expect("a service was created")
    }

    fn task_signals(fake: &FakeEngine) -> Vec<Signal> {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::TaskSignal(_, signal) => Some(signal),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_exits_gives_its_output_and_code_and_leaves_nothing() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            output: vec![
                (StreamKind::Stdout, b"hello\n".to_vec()),
                (StreamKind::Stderr, b"warn\n".to_vec()),
            ],
            exit: Exit::Code(3),
            ..Program::default()
        });
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert_eq!(ran.exit.ending, Ending::Exited);
        assert_eq!(ran.exit.exit_code, Some(3));
        assert_eq!(ran.exit.stdout.text, "hello\n");
        assert_eq!(ran.exit.stderr.text, "warn\n");
        assert!(!ran.exit.oom_killed);
        assert!(task_signals(&s.fake).is_empty());
        assert!(
            s.fake.swarm_objects().is_empty(),
            "{:?}",
            s.fake.swarm_objects()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_document_travels_as_a_secret_only() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let (limits, cancel) = (limits(60, 1), CancellationToken::new());
        let policy = swarm_policy();
        let running = run_with(&s, &policy, &limits, &cancel, DOCUMENT);
        let watching = async {
            s.fake.until(|f| f.running_tasks() == 1).await;
            let data = s.fake.secret_data("packbox-e1-parameters");
            cancel.cancel();
            data
        };
        let (ran, data) = tokio::join!(running, watching);
        ran.expect("ran");
        assert_eq!(data.as_deref(), Some(DOCUMENT));
        let spec = created_service(&s.fake);
        let visible = format!(
            "{:?} {:?} {:?} {:?}",
            spec.env, spec.cmd, spec.labels, spec.name
        );
        assert!(!visible.contains("s3cr3t"), "{visible}");
        let secret = &spec.secrets[0];
        assert_eq!(secret.mode, 0o400);
        assert_eq!(secret.uid, "65534");
        assert!(spec.cmd[2].ends_with("< /run/secrets/packbox-parameters"));
        let secret_labels = s.fake.calls().into_iter().find_map(|c| match c {
            Call::CreateSecret { labels, .. } => Some(labels),
            _ => None,
        });
        assert_eq!(
            secret_labels.expect("a secret")["packbox.kind"],
            "run-secret"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_service_is_locked_down_on_its_own_internal_network() {
        let s = setup(None);
        run(&s, &limits(60, 10)).await.expect("ran");
        let spec = created_service(&s.fake);
        assert!(spec.read_only_rootfs && spec.cap_drop_all);
        assert_eq!(spec.user, "65534:65534");
        assert_eq!(spec.pids_limit, 256);
        assert!(
            spec.image.starts_with("sha256:"),
            "the pack image: {}",
            spec.image
        );
        let network = s.fake.calls().into_iter().find_map(|c| match c {
            Call::CreateNetwork(spec) => Some(spec),
            _ => None,
        });
        let network = network.expect("a network");
        assert!(network.internal);
        assert_eq!(network.labels["packbox.kind"], "run-network");
        assert_eq!(spec.networks.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sandbox_report_names_the_swarm_and_what_it_did_instead() {
        let s = setup(None);
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert_eq!(ran.sandbox.backend, "swarm");
        assert!(ran.sandbox.applied_as.iter().any(|a| a.contains("setpriv")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_scales_to_zero_and_the_agent_sends_sigterm_then_sigkill() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            output: vec![(StreamKind::Stdout, b"started\n".to_vec())],
            exit: Exit::Never,
            obeys_term: false,
            ..Program::default()
        });
        let started = Instant::now();
        let ran = run(&s, &limits(30, 5)).await.expect("ran");
        assert_eq!(ran.exit.ending, Ending::TimedOut);
        assert_eq!(ran.exit.exit_code, Some(137));
        assert_eq!(ran.exit.stdout.text, "started\n");
        assert_eq!(task_signals(&s.fake), [Signal::Term, Signal::Kill]);
        assert_eq!(
            s.fake.count(|c| matches!(c, Call::Scale(_, 0))),
            1,
            "stopped by scaling to zero"
        );
        let elapsed = started.elapsed();
        let script = SwarmScript::default();
        let least = script.start_delay + Duration::from_secs(30) + script.stop_latency;
        assert!(
            elapsed >= least + Duration::from_secs(5) && elapsed <= least + Duration::from_secs(6),
            "timeout from the start, then the agent's latency and the grace: {elapsed:?}"
        );
        assert!(s.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_obeys_sigterm_gets_no_sigkill() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let ran = run(&s, &limits(30, 5)).await.expect("ran");
        assert_eq!(ran.exit.ending, Ending::TimedOut);
        assert_eq!(ran.exit.exit_code, Some(143));
        assert_eq!(task_signals(&s.fake), [Signal::Term]);
        assert!(s.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_task_and_removes_everything() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            exit: Exit::Never,
            obeys_term: false,
            ..Program::default()
        });
        let (limits, cancel) = (limits(600, 3), CancellationToken::new());
        let policy = swarm_policy();
        let running = run_with(&s, &policy, &limits, &cancel, DOCUMENT);
        let cancelling = async {
            s.fake.until(|f| f.running_tasks() == 1).await;
            cancel.cancel();
        };
        let (ran, ()) = tokio::join!(running, cancelling);
        let ran = ran.expect("ran");
        assert_eq!(ran.exit.ending, Ending::Cancelled);
        assert_eq!(task_signals(&s.fake), [Signal::Term, Signal::Kill]);
        assert!(s.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn output_the_follower_missed_is_read_once_after_the_exit() {
        let s = setup(None);
        s.fake.set_swarm(SwarmScript {
            unflushed_tail: vec![
                (StreamKind::Stdout, b"last words\n".to_vec()),
                (StreamKind::Stderr, b"late error\n".to_vec()),
            ],
            ..SwarmScript::default()
        });
        s.fake.set_service_program(|_| Program {
            output: vec![
                (StreamKind::Stdout, b"first\n".to_vec()),
                (StreamKind::Stdout, b"second\n".to_vec()),
            ],
            delay: Duration::from_secs(2),
            ..Program::default()
        });
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert_eq!(ran.exit.stdout.text, "first\nsecond\nlast words\n");
        assert_eq!(ran.exit.stderr.text, "late error\n");
        assert_eq!(
            s.fake
                .count(|c| matches!(c, Call::Logs { follow: false, .. })),
            2,
            "one more read per stream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn output_beyond_the_limit_is_truncated() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            output: (0..100)
                .map(|_| (StreamKind::Stdout, vec![b'a'; 100]))
                .collect(),
            ..Program::default()
        });
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert!(ran.exit.stdout.truncated);
        assert_eq!(ran.exit.stdout.text, "a".repeat(1024));
        let read_again = |stream: StreamKind| {
            s.fake.count(
                |c| matches!(c, Call::Logs { follow: false, stream: read, .. } if *read == stream),
            )
        };
        assert_eq!(
            read_again(StreamKind::Stdout),
            0,
            "a full stream is not read again"
        );
        assert_eq!(read_again(StreamKind::Stderr), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lagging_followers_deliver_their_backlog_after_the_exit_and_spare_the_last_read() {
        let s = setup(None);
        s.fake.set_swarm(SwarmScript {
            follower_lag: Duration::from_millis(50),
            ..SwarmScript::default()
        });
        s.fake.set_service_program(|_| Program {
            output: (0..100)
                .map(|_| (StreamKind::Stdout, vec![b'a'; 100]))
                .collect(),
            ..Program::default()
        });
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert!(ran.exit.stdout.truncated);
        assert_eq!(ran.exit.stdout.text, "a".repeat(1024));
        assert_eq!(
            s.fake.count(|c| matches!(
                c,
                Call::Logs {
                    follow: false,
                    stream: StreamKind::Stdout,
                    ..
                }
            )),
            0,
            "the follower filled the stream after the exit: no scan of the log"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_oom_kill_is_told_from_the_task_container() {
        let s = setup(None);
        s.fake.set_service_program(|_| Program {
            exit: Exit::Code(137),
            oom: true,
            ..Program::default()
        });
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert!(ran.exit.oom_killed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_task_is_an_error_and_leaves_nothing() {
        let s = setup(None);
        s.fake.set_swarm(SwarmScript {
            reject: Some("No such image: sha256:x".into()),
            ..SwarmScript::default()
        });
        let err = run(&s, &limits(60, 10)).await.expect_err("rejected");
        assert!(err.to_string().contains("No such image"), "{err}");
        assert!(s.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_service_carries_the_placement_and_the_outcome_names_the_node() {
        let s = setup(None);
        let ran = run(&s, &limits(60, 10)).await.expect("ran");
        assert_eq!(created_service(&s.fake).placement, ["node.role==worker"]);
        let node = ran.sandbox.node.expect("the node it ran on");
        assert_eq!(
            (node.hostname.as_str(), node.id.as_str()),
            (FAKE_NODE_HOSTNAME, FAKE_NODE_ID)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_lost_mid_run_ends_the_run_as_an_error_naming_it_long_before_the_timeout() {
        let s = setup(None);
        let script = SwarmScript {
            lose_node_after: Some(Duration::from_secs(5)),
            ..SwarmScript::default()
        };
        s.fake.set_swarm(script.clone());
        s.fake.set_service_program(|_| Program {
            output: vec![(StreamKind::Stdout, b"started\n".to_vec())],
            exit: Exit::Never,
            ..Program::default()
        });
        let started = Instant::now();
        let err = run(&s, &limits(600, 10)).await.expect_err("node lost");
        let elapsed = started.elapsed();
        assert!(
            matches!(err, BackendError::Run(RunError::NodeLost { .. })),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(FAKE_NODE_HOSTNAME) && text.contains(FAKE_NODE_ID),
            "names the node: {text}"
        );
        assert!(text.contains("down"), "{text}");
        // The Swarm's own time to mark the node down, then at most one node check.
        let known = script.start_delay + Duration::from_secs(5) + script.node_down_after;
        assert!(
            elapsed >= known && elapsed <= known + Duration::from_secs(2),
            "ended {elapsed:?} after the start; the Swarm knew after {known:?}"
        );
        assert!(
            s.fake.swarm_objects().is_empty(),
            "{:?}",
            s.fake.swarm_objects()
        );
        assert_eq!(
            s.fake.count(|c| matches!(c, Call::Scale(..))),
            0,
            "not stopped as a timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_image_a_node_cannot_pull_names_the_node_the_image_and_the_registry() {
        let s = setup(Some("packbox-registry:5000"));
        let image = format!(
            "packbox-registry:5000/packbox-pack/p@sha256:{}",
            "ab".repeat(32)
        );
        s.fake.set_swarm(SwarmScript {
            reject: Some(format!("No such image: {image}")),
            ..SwarmScript::default()
        });
        let started = Instant::now();
        let err = run(&s, &limits(600, 10)).await.expect_err("not pulled");
        assert!(started.elapsed() < Duration::from_secs(5), "at once");
        match &err {
            BackendError::Run(RunError::ImageUnavailable {
                node,
                image: named,
                registry,
                ..
            }) => {
                assert_eq!(named, &image);
                assert_eq!(registry, "packbox-registry:5000");
                assert!(node.contains(FAKE_NODE_HOSTNAME), "{node}");
            }
            other => panic!("expected an image the node could not pull: {other}"),
        }
        assert!(s.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_no_node_can_take_is_an_error_at_once() {
        let s = setup(None);
        s.fake.set_swarm(SwarmScript {
            unplaceable: Some("no suitable node (insufficient resources on 1 node)".into()),
            ..SwarmScript::default()
        });
        let started = Instant::now();
        let err = run(&s, &limits(600, 10)).await.expect_err("unplaceable");
        assert!(err.to_string().contains("cannot place"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(s.fake.swarm_objects().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_service_creation_removes_the_secret_and_network() {
        let s = setup(None);
        s.fake.fail(Op::CreateService, 1);
        run(&s, &limits(60, 10)).await.expect_err("no service");
        assert!(
            s.fake.swarm_objects().is_empty(),
            "{:?}",
            s.fake.swarm_objects()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_removal_after_a_failed_run_reports_both() {
        let s = setup(None);
        s.fake.fail(Op::Tasks, 1);
        s.fake.fail(Op::RemoveObject, 1);
        let err = run(&s, &limits(60, 10)).await.expect_err("both fail");
        assert!(
            matches!(err, BackendError::Run(RunError::CleanupAfterFailure { .. })),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("listing tasks") && text.contains("service"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_dropped_half_way_removes_what_it_made() {
        let s = Arc::new(setup(None));
        s.fake.set_service_program(|_| Program {
            exit: Exit::Never,
            ..Program::default()
        });
        let running = {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let _ = run(&s, &limits(600, 1)).await;
            })
        };
        s.fake.until(|f| f.running_tasks() == 1).await;
        running.abort();
        let _ = running.await;
        tokio::time::timeout(
            Duration::from_secs(60),
            s.fake.until(|f| f.swarm_objects().is_empty()),
        )
        .await
        .expect("the drop guard removes service, network and secret");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_dropped_while_the_engine_makes_its_service_still_removes_it() {
        let s = Arc::new(setup(None));
        s.fake.set_swarm(SwarmScript {
            creation_hangs: true,
            ..SwarmScript::default()
        });
        let running = {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let _ = run(&s, &limits(600, 1)).await;
            })
        };
        s.fake
            .until(|f| f.swarm_objects().iter().any(|o| o.starts_with("service:")))
            .await;
        running.abort();
        let _ = running.await;
        tokio::time::timeout(
            Duration::from_secs(60),
            s.fake.until(|f| f.swarm_objects().is_empty()),
        )
        .await
        .expect("removed by name, though its id never came back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_in_no_swarm_or_a_worker_is_refused_before_anything_is_made() {
        for (state, why) in [
            (SwarmState::default(), "in no Swarm"),
            (
                SwarmState {
                    active: true,
                    manager: false,
                    nodes: 0,
                },
                "worker",
            ),
        ] {
            let s = setup(None);
            s.fake.set_swarm(SwarmScript {
                state,
                ..SwarmScript::default()
            });
            let err = run(&s, &limits(60, 10)).await.expect_err("refused");
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(s.fake.count(|c| matches!(c, Call::Build(_))), 0);
            assert!(s.fake.swarm_objects().is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_multi_node_swarm_needs_a_registry_and_then_runs_by_digest() {
        let multi = SwarmScript {
            state: SwarmState {
                active: true,
                manager: true,
                nodes: 3,
            },
            ..SwarmScript::default()
        };
        let s = setup(None);
        s.fake.set_swarm(multi.clone());
        let err = run(&s, &limits(60, 10)).await.expect_err("no registry");
        assert!(matches!(
            err,
            BackendError::Swarm(SwarmError::RegistryNeeded { nodes: 3 })
        ));
        assert!(
            err.to_string().contains("--registry"),
            "the error says what to do: {err}"
        );
        let s = setup(Some("127.0.0.1:5000"));
        s.fake.set_swarm(multi);
        run(&s, &limits(60, 10)).await.expect("with a registry");
        let spec = created_service(&s.fake);
        assert!(
            spec.image
                .starts_with("127.0.0.1:5000/packbox-pack/p@sha256:"),
            "{}",
            spec.image
        );
        assert_eq!(s.fake.pushed().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn packbox_s_syscall_profile_cannot_be_carried_and_is_refused_naming_the_way_out() {
        let s = setup(None);
        let err = run_with(
            &s,
            &SandboxPolicy::default(),
            &limits(60, 10),
            &CancellationToken::new(),
            DOCUMENT,
        )
        .await
        .expect_err("refused");
        assert!(matches!(
            err,
            BackendError::Swarm(SwarmError::Unsupported {
                setting: "sandbox.seccomp",
                ..
            })
        ));
        assert!(
            err.to_string().contains("--seccomp engine-default"),
            "{err}"
        );
        assert!(s.fake.swarm_objects().is_empty());
        assert_eq!(s.fake.count(|c| matches!(c, Call::Build(_))), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_document_larger_than_a_secret_is_refused_before_anything_is_made() {
        let s = setup(None);
        let big = vec![b'x'; MAX_DOCUMENT_BYTES + 1];
        let err = run_with(
            &s,
            &swarm_policy(),
            &limits(60, 10),
            &CancellationToken::new(),
            &big,
        )
        .await
        .expect_err("too large");
        assert!(matches!(
            err,
            BackendError::Swarm(SwarmError::DocumentTooLarge { .. })
        ));
        assert!(s.fake.swarm_objects().is_empty());
        assert_eq!(s.fake.count(|c| matches!(c, Call::Build(_))), 0);
    }
}
