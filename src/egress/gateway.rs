//! The proxy of one executor and the per-run networks it serves.
//!
//! One long-lived, locked-down proxy container per executor, started when the first run with a
//! grant comes and removed by [`Gateway::close`]. Each run with a grant gets a network of its
//! own (a *slot*): an internal bridge with a `/29` of packbox's range and no address for the
//! host, on which the proxy has address `.2` and the action `.3`. Nothing else is on it, there
//! is no route off it, and the host is not reachable on it; the action's only way out is the
//! proxy, which knows the run by the address a connection arrives on and comes from.
//!
//! Slots outlive runs: a run's slot goes back to the idle ones once its container is removed
//! and its grant revoked, so the next run skips the engine's network create and connect
//! (~130 ms here). Grants and audit lines travel over the proxy's attached stdin and stdout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::address::{RefusedAddresses, RefusedRange};
use super::audit::Audit;
use super::config::{EgressSettings, RUN_NETWORK_PREFIX};
use super::policy::RunGrant;
use super::protocol::{self, Command, PROXY_PORT, ProxyConfig, Report, Upstream};
use super::{EgressError, image};
use crate::engine::{
    BridgeSpec, ContainerSpec, EngineError, NetworkSummary, SharedEngine, StreamKind,
};
use crate::sandbox::seccomp::Kernel;
use crate::sandbox::{SandboxPolicy, Workload};

/// How long the proxy may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the proxy may take to carry out a command (a revocation waits for connections).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle slots kept for later runs; more are removed.
const MAX_IDLE_SLOTS: usize = 32;
/// How many subnets are tried before giving up (others' networks may hold some).
const SUBNET_TRIES: usize = 32;
/// Label value of packbox's egress objects (`packbox.kind`).
pub const KIND_PROXY: &str = "egress-proxy";
/// Label value of per-run networks (`packbox.kind`).
pub const KIND_NETWORK: &str = "egress-network";

/// The proxy and networks of one executor.
#[derive(Debug)]
pub struct Gateway {
    engine: SharedEngine,
    settings: EgressSettings,
    /// The owner's labels, carried by the proxy and every network.
    labels: BTreeMap<String, String>,
    /// Whether the engine runs on this machine (its addresses are then refused too).
    local_engine: bool,
    /// The state folder, where the proxy's image id is recorded.
    state_dir: PathBuf,
    proxy: tokio::sync::Mutex<Option<Arc<Proxy>>>,
    idle: Mutex<Vec<Slot>>,
    /// Every network made and not yet removed, by name.
    networks: Mutex<BTreeSet<String>>,
    /// A spare slot being made off the runs' path, awaited by [`Gateway::close`].
    spare: Mutex<tokio::task::JoinSet<()>>,
}

/// A per-run network with the proxy on it: one of the gateway's own bridges, or a network
/// someone else made for the run (a Swarm overlay) that the proxy joined.
#[derive(Debug)]
pub struct Slot {
    network: String,
    proxy_ip: Ipv4Addr,
    /// The action's address; `None`: any address on the network (a Swarm task's is not fixed).
    action_ip: Option<Ipv4Addr>,
    /// Ranges refused while the proxy is on this network (a joined network's subnet).
    refused: Vec<RefusedRange>,
    proxy: Arc<Proxy>,
}

impl Slot {
    /// Puts a container on this network at the action's address, with the proxy variables.
    /// The engine's resolver in the container forwards to an address of the run's own network
    /// that nobody holds: a name lookup from the action goes nowhere (names are the proxy's).
    pub fn apply(&self, spec: &mut ContainerSpec) {
        self.place(spec);
        spec.env.extend(self.proxy_env());
    }

    /// Puts a container on this network at the action's address, without the proxy variables:
    /// for a container whose configuration is kept (an environment build, committed as an
    /// image), whose process is given them another way.
    pub fn place(&self, spec: &mut ContainerSpec) {
        spec.network_mode = self.network.clone();
        spec.ipv4_address = self.action_ip.map(|ip| ip.to_string());
        spec.dns = vec![Ipv4Addr::from(u32::from(self.proxy_ip) + 4).to_string()];
    }

    /// The proxy variables every common client honours, in upper and lower case.
    pub fn proxy_env(&self) -> Vec<(String, String)> {
        let proxy = format!("http://{}:{PROXY_PORT}", self.proxy_ip);
        let mut env = Vec::new();
        for (name, value) in [
            ("HTTP_PROXY", proxy.as_str()),
            ("HTTPS_PROXY", proxy.as_str()),
            ("NO_PROXY", "localhost,127.0.0.1,::1"),
        ] {
            env.push((name.to_string(), value.to_string()));
            env.push((name.to_ascii_lowercase(), value.to_string()));
        }
        env
    }
}

/// The running proxy container and its control channel.
struct Proxy {
    container: String,
    control: tokio::sync::Mutex<Pin<Box<dyn AsyncWrite + Send>>>,
    tables: Arc<Tables>,
    next_id: AtomicU64,
    /// Cancelled when the proxy's output ends: it stopped.
    gone: CancellationToken,
}

/// What the proxy's reports update: commands waiting for their answer, and each run's audit.
#[derive(Default)]
struct Tables {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<(), String>>>>,
    audits: Mutex<HashMap<String, Audit>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway on `engine`; nothing is made until a run needs it.
    pub fn new(
        engine: SharedEngine,
        settings: EgressSettings,
        labels: BTreeMap<String, String>,
        local_engine: bool,
        state_dir: PathBuf,
    ) -> Gateway {
        Gateway {
            engine,
            settings,
            labels,
            local_engine,
            state_dir,
            proxy: tokio::sync::Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            networks: Mutex::new(BTreeSet::new()),
            spare: Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    /// A slot for a run: an idle one, else a new network with the proxy on it (the proxy is
    /// started first when it does not run). When that leaves no idle slot, one more is made off
    /// the run's path, so the next run (or a warm pool's refill) finds one ready.
    pub async fn slot(self: &Arc<Self>) -> Result<Slot, EgressError> {
        let proxy = self.proxy().await?;
        let reused = self.idle.lock().ok().and_then(|mut idle| {
            idle.retain(|slot| Arc::ptr_eq(&slot.proxy, &proxy));
            idle.pop()
        });
        let slot = match reused {
            Some(slot) => slot,
            None => self.new_slot(Arc::clone(&proxy)).await?,
        };
        let none_idle = self.idle.lock().is_ok_and(|idle| idle.is_empty());
        if none_idle && let Ok(mut spare) = self.spare.lock() {
            while spare.try_join_next().is_some() {}
            if spare.is_empty() {
                let gateway = Arc::clone(self);
                spare.spawn(async move {
                    match gateway.new_slot(proxy).await {
                        Ok(slot) => gateway.release(slot).await,
                        Err(e) => tracing::debug!(
                            "a spare per-run network: {}",
                            crate::common::error_text::chain(&e)
                        ),
                    }
                });
            }
        }
        Ok(slot)
    }

    /// Lets the run `run` reach what `grant` allows, from its slot; returns once the proxy
    /// holds the grant.
    pub async fn grant(&self, slot: &Slot, run: &str, grant: &RunGrant) -> Result<(), EgressError> {
        self.grant_through(slot, run, grant, None).await
    }

    /// [`Gateway::grant`], with the run's connections going through the operator's proxy
    /// `upstream` (an environment build behind a company proxy).
    pub async fn grant_through(
        &self,
        slot: &Slot,
        run: &str,
        grant: &RunGrant,
        upstream: Option<Upstream>,
    ) -> Result<(), EgressError> {
        if let Ok(mut audits) = slot.proxy.tables.audits.lock() {
            audits.insert(run.to_string(), Audit::default());
        }
        slot.proxy
            .command(|id| Command::Grant {
                id,
                listener: IpAddr::V4(slot.proxy_ip),
                peer: slot.action_ip.map(IpAddr::V4),
                run: run.to_string(),
                allow: grant.allow(),
                upstream,
            })
            .await
    }

    /// Ends the run's grant (its connections are closed) and returns its audit. When the proxy
    /// is gone, what it reported until then, and why it may be incomplete.
    pub async fn revoke(&self, slot: &Slot, run: &str) -> (Audit, Option<String>) {
        let done = slot
            .proxy
            .command(|id| Command::Revoke {
                id,
                listener: IpAddr::V4(slot.proxy_ip),
            })
            .await;
        let audit = slot
            .proxy
            .tables
            .audits
            .lock()
            .ok()
            .and_then(|mut audits| audits.remove(run))
            .unwrap_or_default();
        (audit, done.err().map(|e| e.to_string()))
    }

    /// Gives a slot back once its container is removed: kept for the next run, or removed when
    /// enough are idle or its proxy is gone.
    pub async fn release(&self, slot: Slot) {
        let keep = !slot.proxy.gone.is_cancelled()
            && self
                .idle
                .lock()
                .is_ok_and(|idle| idle.len() < MAX_IDLE_SLOTS);
        if keep && let Ok(mut idle) = self.idle.lock() {
            idle.push(slot);
            return;
        }
        self.remove_network(&slot.network).await;
    }

    /// The proxy on a network made for one run by someone else (a Swarm overlay, attachable):
    /// joined, its subnet refused as a destination while it is joined. Give it back with
    /// [`Gateway::leave`].
    pub async fn join(&self, network: &str) -> Result<Slot, EgressError> {
        let proxy = self.proxy().await?;
        self.engine
            .connect_network(network, &proxy.container, None)
            .await?;
        let joined = async {
            let address = self
                .engine
                .container_address(&proxy.container, network)
                .await?
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .ok_or_else(|| EgressError::Proxy {
                    message: format!("it has no IPv4 address on network {network}"),
                })?;
            let subnets = self
                .engine
                .network(network)
                .await?
                .map(|n| n.subnets)
                .unwrap_or_default();
            let refused: Vec<RefusedRange> = subnets
                .iter()
                .filter_map(|s| s.parse().ok())
                .map(|net| RefusedRange {
                    net,
                    why: "a per-run network".into(),
                })
                .collect();
            if !refused.is_empty() {
                let ranges = refused.clone();
                proxy.command(|id| Command::Refuse { id, ranges }).await?;
            }
            Ok::<_, EgressError>(Slot {
                network: network.to_string(),
                proxy_ip: address,
                action_ip: None,
                refused,
                proxy: Arc::clone(&proxy),
            })
        }
        .await;
        if joined.is_err() {
            let _ = self
                .engine
                .disconnect_network(network, &proxy.container)
                .await;
        }
        joined
    }

    /// Takes the proxy off a network it joined (after the run's grant is revoked).
    pub async fn leave(&self, slot: Slot) {
        if !slot.refused.is_empty() {
            let ranges = slot.refused.clone();
            let _ = slot
                .proxy
                .command(|id| Command::Unrefuse { id, ranges })
                .await;
        }
        if let Err(e) = self
            .engine
            .disconnect_network(&slot.network, &slot.proxy.container)
            .await
        {
            tracing::warn!(
                network = %slot.network,
                "taking the egress proxy off a run's network: {}",
                crate::common::error_text::chain(&e)
            );
        }
    }

    /// Removes a slot whose container may not have gone as it should (a run that failed).
    pub async fn discard(&self, slot: Slot) {
        self.remove_network(&slot.network).await;
    }

    /// Removes the proxy and every network this gateway made.
    pub async fn close(&self) {
        let mut spare = match self.spare.lock() {
            Ok(mut spare) => std::mem::take(&mut *spare),
            Err(_) => tokio::task::JoinSet::new(),
        };
        while spare.join_next().await.is_some() {}
        let proxy = self.proxy.lock().await.take();
        if let Some(proxy) = proxy {
            // Removing the container disconnects it from every network.
            if let Err(e) = self.engine.remove(&proxy.container).await {
                tracing::warn!(
                    "removing the egress proxy: {}",
                    crate::common::error_text::chain(&e)
                );
            }
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        let networks: Vec<String> = self
            .networks
            .lock()
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        for network in networks {
            self.remove_network(&network).await;
        }
    }

    async fn remove_network(&self, name: &str) {
        match self.engine.remove_network(name).await {
            Ok(()) => {
                if let Ok(mut networks) = self.networks.lock() {
                    networks.remove(name);
                }
            }
            Err(e) => tracing::warn!(
                network = name,
                "removing a per-run network: {}",
                crate::common::error_text::chain(&e)
            ),
        }
    }

    /// The running proxy, started when there is none (or the last one stopped).
    async fn proxy(&self) -> Result<Arc<Proxy>, EgressError> {
        let mut current = self.proxy.lock().await;
        if let Some(proxy) = current.as_ref()
            && !proxy.gone.is_cancelled()
        {
            return Ok(Arc::clone(proxy));
        }
        if let Some(dead) = current.take() {
            tracing::warn!(container = %dead.container, "the egress proxy stopped; starting another");
            let _ = self.engine.remove(&dead.container).await;
        }
        let proxy = Arc::new(self.start_proxy().await?);
        *current = Some(Arc::clone(&proxy));
        Ok(proxy)
    }

    async fn start_proxy(&self) -> Result<Proxy, EgressError> {
        let binary = image::find_binary(self.settings.proxy_binary.as_deref())?;
        let image = image::ensure(self.engine.as_ref(), &binary, &self.state_dir).await?;
        let upstream = self
            .named_network("egress.upstream", &self.settings.upstream)
            .await?;
        let mut extra = Vec::new();
        for name in &self.settings.networks {
            extra.push(self.named_network("egress.networks", name).await?);
        }
        let config = ProxyConfig {
            port: PROXY_PORT,
            refused: self.refused(&upstream, &extra),
            hosts: self.settings.hosts.clone(),
            max_connections: self.settings.max_connections,
            connect_timeout_ms: 10_000,
        };
        let spec = proxy_spec(&image, &upstream.name, &self.labels);
        let name = format!(
            "packbox-egress-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let container = self.engine.create_container(&name, &spec).await?;
        match self.launch(&container, &config, &extra).await {
            Ok(proxy) => Ok(proxy),
            Err(e) => {
                let _ = self.engine.remove(&container).await;
                Err(e)
            }
        }
    }

    /// Attaches to and starts the proxy's container, sends its configuration and waits until
    /// it listens; then joins the extra networks.
    async fn launch(
        &self,
        container: &str,
        config: &ProxyConfig,
        extra: &[NetworkSummary],
    ) -> Result<Proxy, EgressError> {
        let attached = self.engine.attach(container).await?;
        self.engine.start(container).await?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let proxy = Proxy {
            container: container.to_string(),
            control: tokio::sync::Mutex::new(attached.stdin),
            tables: Arc::new(Tables::default()),
            next_id: AtomicU64::new(0),
            gone: CancellationToken::new(),
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(read_reports(
            attached.output,
            Arc::clone(&proxy.tables),
            proxy.gone.clone(),
            Arc::clone(&stderr),
            ready_tx,
        ));
        let mut line = serde_json::to_vec(config).map_err(|e| EgressError::Proxy {
            message: format!("its configuration cannot be written: {e}"),
        })?;
        line.push(b'\n');
        proxy.write(&line).await?;
        let ready = tokio::time::timeout(READY_TIMEOUT, ready_rx).await;
        if !matches!(ready, Ok(Ok(()))) {
            let said = stderr.lock().map(|s| s.clone()).unwrap_or_default();
            return Err(EgressError::Proxy {
                message: format!(
                    "it did not become ready within {} s{}",
                    READY_TIMEOUT.as_secs(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(" (it said: {})", said.trim())
                    }
                ),
            });
        }
        for network in extra {
            self.engine
                .connect_network(&network.name, container, None)
                .await?;
        }
        Ok(proxy)
    }

    /// A network the settings name, which must exist.
    async fn named_network(
        &self,
        setting: &'static str,
        name: &str,
    ) -> Result<NetworkSummary, EgressError> {
        self.engine
            .network(name)
            .await?
            .ok_or_else(|| EgressError::NoNetwork {
                setting,
                network: name.to_string(),
                endpoint: self.engine.endpoint().to_string(),
            })
    }

    /// Addresses no grant reaches on this engine: the per-run networks' range, the upstream
    /// network (other containers and the host), the gateways of the other networks (the host),
    /// this machine's own addresses when the engine runs here, and the operator's list.
    fn refused(&self, upstream: &NetworkSummary, extra: &[NetworkSummary]) -> RefusedAddresses {
        let mut ranges = vec![RefusedRange {
            net: IpNet::V4(self.settings.subnets),
            why: "a per-run network (egress.subnets)".into(),
        }];
        for subnet in &upstream.subnets {
            if let Ok(net) = subnet.parse() {
                ranges.push(RefusedRange {
                    net,
                    why: format!(
                        "on the proxy's way out (network {}: other containers and the host)",
                        upstream.name
                    ),
                });
            }
        }
        for network in std::iter::once(upstream).chain(extra) {
            for gateway in &network.gateways {
                if let Ok(ip) = gateway.parse::<IpAddr>() {
                    ranges.push(RefusedRange {
                        net: IpNet::from(ip),
                        why: format!("the host (gateway of network {})", network.name),
                    });
                }
            }
        }
        if self.local_engine {
            for ip in host_addresses() {
                ranges.push(RefusedRange {
                    net: IpNet::from(ip),
                    why: "an address of the engine's host".into(),
                });
            }
        }
        for net in &self.settings.refuse {
            ranges.push(RefusedRange {
                net: *net,
                why: "refused by the operator (egress.refuse)".into(),
            });
        }
        RefusedAddresses { ranges }
    }

    /// A new per-run network on a free `/29` of packbox's range, with the proxy on it.
    async fn new_slot(&self, proxy: Arc<Proxy>) -> Result<Slot, EgressError> {
        let range = self.settings.subnets;
        let count = 1u64 << (RUN_NETWORK_PREFIX - range.prefix_len());
        let mut labels = self.labels.clone();
        labels.insert("packbox.kind".into(), KIND_NETWORK.into());
        for _ in 0..SUBNET_TRIES {
            let random = u64::from_le_bytes(
                uuid::Uuid::new_v4().as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            let index = random % count;
            let base = u32::from(range.network()) + (index as u32) * 8;
            let Ok(subnet) = Ipv4Net::new(Ipv4Addr::from(base), RUN_NETWORK_PREFIX) else {
                continue;
            };
            let name = format!(
                "packbox-egress-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            if let Ok(mut networks) = self.networks.lock() {
                networks.insert(name.clone());
            }
            let spec = BridgeSpec {
                name: name.clone(),
                labels: labels.clone(),
                subnet: Some(subnet.to_string()),
                internal: true,
                host_address: false,
            };
            match self.engine.create_bridge(&spec).await {
                Ok(_) => {}
                Err(EngineError::InUse { .. }) => {
                    if let Ok(mut networks) = self.networks.lock() {
                        networks.remove(&name);
                    }
                    continue;
                }
                Err(e) => {
                    if let Ok(mut networks) = self.networks.lock() {
                        networks.remove(&name);
                    }
                    return Err(e.into());
                }
            }
            let proxy_ip = Ipv4Addr::from(base + 2);
            let joined = self
                .engine
                .connect_network(&name, &proxy.container, Some(&proxy_ip.to_string()))
                .await;
            if let Err(e) = joined {
                self.remove_network(&name).await;
                return Err(e.into());
            }
            return Ok(Slot {
                network: name,
                proxy_ip,
                action_ip: Some(Ipv4Addr::from(base + 3)),
                refused: Vec::new(),
                proxy,
            });
        }
        Err(EgressError::NoSubnet {
            range: range.to_string(),
        })
    }
}

/// The proxy's container: the sandbox's defaults (non-root, read-only root, no capabilities,
/// no new privileges, packbox's syscall profile, limits), on its way-out network, with IP
/// forwarding off in its namespace.
fn proxy_spec(image: &str, upstream: &str, labels: &BTreeMap<String, String>) -> ContainerSpec {
    let policy = SandboxPolicy {
        network: upstream.to_string(),
        tmpfs_tmp_bytes: 1 << 20,
        memory_bytes: 256 << 20,
        pids_limit: 64,
        nofile: 16384,
        ..SandboxPolicy::default()
    };
    let mut labels = labels.clone();
    labels.insert("packbox.kind".into(), KIND_PROXY.into());
    let mut spec = policy.container_spec(
        Workload {
            image: image.to_string(),
            cmd: vec![image::PROXY_PATH.to_string()],
            env: Vec::new(),
            labels,
            pack: None,
        },
        Kernel::Host,
    );
    spec.working_dir = "/".into();
    spec.sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    spec
}

impl Proxy {
    async fn write(&self, line: &[u8]) -> Result<(), EgressError> {
        let mut control = self.control.lock().await;
        let written = async {
            control.write_all(line).await?;
            control.flush().await
        }
        .await;
        written.map_err(|e| EgressError::Proxy {
            message: format!("its control channel failed: {e}"),
        })
    }

    /// Sends a command and waits for its acknowledgement.
    async fn command(&self, make: impl FnOnce(u64) -> Command) -> Result<(), EgressError> {
        if self.gone.is_cancelled() {
            return Err(EgressError::ProxyGone);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.tables.waiting.lock() {
            waiting.insert(id, tx);
        }
        let mut line = serde_json::to_vec(&make(id)).map_err(|e| EgressError::Proxy {
            message: format!("a command cannot be written: {e}"),
        })?;
        line.push(b'\n');
        self.write(&line).await?;
        let answer = tokio::select! {
            answer = tokio::time::timeout(COMMAND_TIMEOUT, rx) => answer,
            () = self.gone.cancelled() => return Err(EgressError::ProxyGone),
        };
        match answer {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(EgressError::Proxy { message }),
            Ok(Err(_)) => Err(EgressError::ProxyGone),
            Err(_) => Err(EgressError::Proxy {
                message: format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
            }),
        }
    }
}

/// The most of the proxy's stderr kept, to quote when it fails to start.
const MAX_STDERR: usize = 4096;

/// Reads the proxy's reports until its output ends: answers to commands, audit lines (added
/// to their run's audit), and its first `ready`. Its stderr is logged and its head kept.
async fn read_reports(
    mut output: crate::engine::OutputStream,
    tables: Arc<Tables>,
    gone: CancellationToken,
    stderr: Arc<Mutex<String>>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = output.next().await {
        let Ok(chunk) = chunk else {
            break;
        };
        if chunk.stream == StreamKind::Stderr {
            let text = String::from_utf8_lossy(&chunk.bytes);
            tracing::debug!(said = %text.trim_end(), "egress proxy");
            if let Ok(mut kept) = stderr.lock()
                && kept.len() < MAX_STDERR
            {
                let room = MAX_STDERR - kept.len();
                kept.extend(text.chars().take(room));
            }
            continue;
        }
        pending.extend_from_slice(&chunk.bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match serde_json::from_slice::<Report>(&line[..line.len() - 1]) {
                Ok(Report::Ready) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                Ok(Report::Ack { id }) => answer(&tables, id, Ok(())),
                Ok(Report::Failed {
                    id: Some(id),
                    message,
                }) => answer(&tables, id, Err(message)),
                Ok(Report::Failed { id: None, message }) => {
                    tracing::warn!("the egress proxy refused a command: {message}");
                }
                Ok(Report::Audit { run, connection }) => {
                    if let Ok(mut audits) = tables.audits.lock()
                        && let Some(audit) = audits.get_mut(&run)
                    {
                        audit.add(connection);
                    }
                }
                Err(e) => {
                    tracing::warn!("the egress proxy wrote something else than a report: {e}")
                }
            }
        }
        if pending.len() > protocol::MAX_LINE {
            tracing::warn!(
                "the egress proxy wrote a line longer than {} bytes",
                protocol::MAX_LINE
            );
            break;
        }
    }
    gone.cancel();
    if let Ok(mut waiting) = tables.waiting.lock() {
        waiting.clear();
    }
}

fn answer(tables: &Tables, id: u64, result: Result<(), String>) {
    let waiter = tables.waiting.lock().ok().and_then(|mut w| w.remove(&id));
    if let Some(waiter) = waiter {
        let _ = waiter.send(result);
    }
}

/// This machine's own addresses, from the kernel's routing table of local addresses (the
/// engine's host, when the engine runs here).
fn host_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let text = line.trim_start_matches([' ', '|', '+', '-']).trim();
            if let Ok(ip) = text.parse::<IpAddr>() {
                last = Some(ip);
            } else if text.starts_with("/32 host LOCAL")
                && let Some(ip) = last
                && !found.contains(&ip)
            {
                found.push(ip);
            }
        }
    }
    if let Ok(inet6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in inet6.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                let ip = IpAddr::from(std::net::Ipv6Addr::from(bits));
                if !found.contains(&ip) {
                    found.push(ip);
                }
            }
        }
    }
    found
}
