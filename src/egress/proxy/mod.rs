//! The egress proxy: what runs inside packbox's proxy container (the `packbox-egress-proxy`
//! binary), never inside an action's.
//!
//! It listens on one port on each of its addresses. Each per-run network gives it one address,
//! so the address a connection arrives on (and the address it comes from) says which run it
//! belongs to; packbox grants a run its destinations over the control channel (stdin) before
//! the action starts and revokes them when it ends. It accepts `CONNECT host:port` and plain
//! `http://` requests to granted destinations only, resolves names itself (its own host table
//! first, then the system's resolver, always as absolute names), refuses every address that
//! [`RefusedAddresses`] names (so a granted name that resolves to loopback, a metadata service
//! or the host is refused too), and writes one audit line per connection attempt (stdout).
//!
//! HTTP is read and written by hyper (the server side, CONNECT upgrades, and the client side
//! for forwarded plain requests); packbox's code here is the policy and the bookkeeping.

mod request;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::address::RefusedAddresses;
use super::destination::{Destination, Host};
use super::protocol::{self, Command, Connection, ConnectionKind, ProxyConfig, Report, Upstream};

/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the system's resolver may take for one name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a revocation waits for a run's connections to close and write their audit lines.
const REVOKE_WAIT: Duration = Duration::from_secs(10);
/// The largest buffer hyper keeps for one connection's request head.
const MAX_HEAD: usize = 64 << 10;

type Body = BoxBody<Bytes, hyper::Error>;

/// Opens TCP connections to destinations the proxy has checked. A seam so tests can stand a
/// local server in for a destination's address.
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    /// Connects to `address`, within the proxy's connect timeout.
    async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream>;
}

/// Connections straight to the address.
#[derive(Debug)]
pub struct DirectConnect;

#[async_trait::async_trait]
impl Connect for DirectConnect {
    async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect(address).await
    }
}

/// One run's grant, on one of the proxy's addresses.
struct Grant {
    run: String,
    peer: Option<IpAddr>,
    allow: Vec<Destination>,
    /// The operator's proxy the run's connections go through, when it has one.
    upstream: Option<Upstream>,
    /// Cancelled when the grant is revoked: every connection of the run closes.
    cancel: CancellationToken,
    /// The run's connections, so a revocation can wait for their audit lines.
    tracker: TaskTracker,
    /// Connections of the run open now.
    open: Arc<AtomicUsize>,
}

struct Shared {
    hosts: HashMap<String, Vec<IpAddr>>,
    refused: RwLock<RefusedAddresses>,
    max_connections: usize,
    connect_timeout: Duration,
    grants: Mutex<HashMap<IpAddr, Arc<Grant>>>,
    reports: mpsc::Sender<Report>,
    connector: Arc<dyn Connect>,
}

/// Runs the proxy: writes `ready`, then serves connections on `listener` and commands from
/// `control` until `control` ends (packbox is gone). Reports go to `out`, one JSON line each.
pub async fn serve<R, W>(
    listener: TcpListener,
    config: ProxyConfig,
    mut control: R,
    out: W,
    connector: Arc<dyn Connect>,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (reports, rx) = mpsc::channel(1024);
    let writer = tokio::spawn(write_reports(rx, out));
    let shared = Arc::new(Shared {
        hosts: config.hosts.into_iter().collect(),
        refused: RwLock::new(config.refused),
        max_connections: config.max_connections.max(1),
        connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
        grants: Mutex::new(HashMap::new()),
        reports,
        connector,
    });
    report(&shared, Report::Ready).await;
    let accepting = tokio::spawn(accept(listener, Arc::clone(&shared)));
    let result = obey(&mut control, &shared).await;
    accepting.abort();
    let grants: Vec<Arc<Grant>> = match shared.grants.lock() {
        Ok(mut grants) => grants.drain().map(|(_, grant)| grant).collect(),
        Err(_) => Vec::new(),
    };
    for grant in grants {
        grant.cancel.cancel();
    }
    drop(shared);
    let _ = writer.await;
    result
}

/// Carries out commands until the control channel ends.
async fn obey<R: AsyncBufRead + Unpin>(
    control: &mut R,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    while let Some(line) = protocol::read_line(control).await? {
        let command: Command = match serde_json::from_slice(&line) {
            Ok(command) => command,
            Err(e) => {
                report(
                    shared,
                    Report::Failed {
                        id: None,
                        message: format!("not a command: {e}"),
                    },
                )
                .await;
                continue;
            }
        };
        let done = match command {
            Command::Grant {
                id,
                listener,
                peer,
                run,
                allow,
                upstream,
            } => {
                let grant = Arc::new(Grant {
                    run,
                    peer,
                    allow,
                    upstream,
                    cancel: CancellationToken::new(),
                    tracker: TaskTracker::new(),
                    open: Arc::new(AtomicUsize::new(0)),
                });
                let taken = match shared.grants.lock() {
                    Ok(mut grants) if !grants.contains_key(&listener) => {
                        grants.insert(listener, grant);
                        true
                    }
                    _ => false,
                };
                if taken {
                    Report::Ack { id }
                } else {
                    Report::Failed {
                        id: Some(id),
                        message: format!("{listener} already serves a run"),
                    }
                }
            }
            Command::Revoke { id, listener } => {
                let grant = shared
                    .grants
                    .lock()
                    .ok()
                    .and_then(|mut grants| grants.remove(&listener));
                if let Some(grant) = grant {
                    grant.cancel.cancel();
                    grant.tracker.close();
                    let _ = tokio::time::timeout(REVOKE_WAIT, grant.tracker.wait()).await;
                }
                Report::Ack { id }
            }
            Command::Refuse { id, ranges } => {
                if let Ok(mut refused) = shared.refused.write() {
                    refused.ranges.extend(ranges);
                }
                Report::Ack { id }
            }
            Command::Unrefuse { id, ranges } => {
                if let Ok(mut refused) = shared.refused.write() {
                    for range in ranges {
                        if let Some(at) = refused.ranges.iter().position(|r| *r == range) {
                            refused.ranges.remove(at);
                        }
                    }
                }
                Report::Ack { id }
            }
        };
        report(shared, done).await;
    }
    Ok(())
}

async fn write_reports<W: AsyncWrite + Unpin>(mut rx: mpsc::Receiver<Report>, mut out: W) {
    while let Some(report) = rx.recv().await {
        let Ok(mut line) = serde_json::to_vec(&report) else {
            continue;
        };
        line.push(b'\n');
        if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

async fn report(shared: &Shared, report: Report) {
    // The writer only stops when packbox stopped reading: nothing more to tell then.
    let _ = shared.reports.send(report).await;
}

/// Accepts connections and hands each to the run whose address it arrived on; a connection on
/// an address with no grant, or from an address other than the run's, is closed at once.
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("packbox-egress-proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let grant = shared
            .grants
            .lock()
            .ok()
            .and_then(|grants| grants.get(&local.ip()).cloned());
        let Some(grant) = grant else {
            continue;
        };
        if grant.peer.is_some_and(|expected| expected != peer.ip()) {
            continue;
        }
        let Some(open) = Open::enter(&grant.open, shared.max_connections) else {
            let refusal = Attempt::new(ConnectionKind::Tunnel, "(not read)".into(), 0);
            let connection = refusal.refused(format!(
                "the run has {} connections open already",
                shared.max_connections
            ));
            report(
                &shared,
                Report::Audit {
                    run: grant.run.clone(),
                    connection,
                },
            )
            .await;
            continue;
        };
        let (shared, run) = (Arc::clone(&shared), Arc::clone(&grant));
        grant.tracker.spawn(async move {
            serve_client(shared, run, stream).await;
            drop(open);
        });
    }
}

/// One client connection, until it closes or the run's grant is revoked.
async fn serve_client(shared: Arc<Shared>, grant: Arc<Grant>, stream: TcpStream) {
    let cancel = grant.cancel.clone();
    let service = hyper::service::service_fn(move |request| {
        let (shared, grant) = (Arc::clone(&shared), Arc::clone(&grant));
        async move { Ok::<_, Infallible>(handle(shared, grant, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = connection => {}
        () = cancel.cancelled() => {}
    }
}

/// One request: checked for shape, against the grant, resolved and checked against the refused
/// addresses, connected; then tunnelled or forwarded. Every outcome is one audit line.
async fn handle(
    shared: Arc<Shared>,
    grant: Arc<Grant>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let target = match request::target(&req) {
        Ok(target) => target,
        Err(malformed) => {
            let (host, port) = match &malformed.host {
                Some((host, port)) => (host.to_string(), *port),
                None => ("(invalid)".to_string(), 0),
            };
            let attempt = Attempt::new(malformed.kind, host, port);
            let reason = malformed.reason;
            audit(&shared, &grant, attempt.refused(reason.clone())).await;
            return text(
                StatusCode::BAD_REQUEST,
                &format!("packbox egress: {reason}"),
            );
        }
    };
    let attempt = Attempt::new(target.kind, target.host.to_string(), target.port);
    let destination = format!("{}:{}", target.host, target.port);
    if !grant
        .allow
        .iter()
        .any(|d| d.allows(&target.host, target.port))
    {
        audit(
            &shared,
            &grant,
            attempt.refused("not granted to this run".into()),
        )
        .await;
        return text(
            StatusCode::FORBIDDEN,
            &format!("packbox egress: {destination} is not granted to this run"),
        );
    }
    let via = grant
        .upstream
        .as_ref()
        .filter(|via| !via.bypasses(&target.host.to_string()));
    let connected = match via {
        Some(via) => through(&shared, via, &target.host, target.port).await,
        None => {
            let addresses = match resolve(&shared, &target.host, target.port).await {
                Ok(addresses) => addresses,
                Err(Unusable::Refused(reason)) => {
                    audit(&shared, &grant, attempt.refused(reason.clone())).await;
                    return text(
                        StatusCode::FORBIDDEN,
                        &format!("packbox egress: {destination} refused: {reason}"),
                    );
                }
                Err(Unusable::Failed(error)) => {
                    audit(&shared, &grant, attempt.failed(error.clone(), None)).await;
                    return text(
                        StatusCode::BAD_GATEWAY,
                        &format!("packbox egress: {destination}: {error}"),
                    );
                }
            };
            connect(&shared, &addresses, target.port).await
        }
    };
    let (upstream, address) = match connected {
        Ok(connected) => connected,
        Err(error) => {
            audit(&shared, &grant, attempt.failed(error.clone(), None)).await;
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("packbox egress: {destination}: {error}"),
            );
        }
    };
    let counted = Counted::new(upstream);
    match target.kind {
        ConnectionKind::Tunnel => {
            let upgrade = hyper::upgrade::on(&mut req);
            let cancel = grant.cancel.clone();
            let (shared, run) = (Arc::clone(&shared), Arc::clone(&grant));
            let open = Open::enter(&grant.open, usize::MAX);
            grant.tracker.spawn(async move {
                let mut upstream = counted;
                let error = tokio::select! {
                    upgraded = upgrade => match upgraded {
                        Ok(upgraded) => {
                            let mut client = TokioIo::new(upgraded);
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => None,
                                () = cancel.cancelled() => None,
                            }
                        }
                        Err(e) => Some(format!("the client did not take the tunnel: {e}")),
                    },
                    () = cancel.cancelled() => None,
                };
                let connection = attempt.finished(address, &upstream.counts, error);
                audit(&shared, &run, connection).await;
                drop(open);
            });
            Response::new(Empty::new().map_err(|never| match never {}).boxed())
        }
        ConnectionKind::Http => forward(shared, grant, req, counted, attempt, address).await,
    }
}

/// A plain HTTP request, sent on its own connection to the destination (closed after the
/// answer), with the hop-by-hop headers removed; the answer streams back to the client. The
/// audit line is written when the destination's connection is over.
async fn forward(
    shared: Arc<Shared>,
    grant: Arc<Grant>,
    req: Request<Incoming>,
    upstream: Counted,
    attempt: Attempt,
    address: IpAddr,
) -> Response<Body> {
    let counts = Arc::clone(&upstream.counts);
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await;
    let (mut sender, connection) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            let error = format!("HTTP with the destination failed: {e}");
            audit(
                &shared,
                &grant,
                attempt.failed(error.clone(), Some(address)),
            )
            .await;
            return text(StatusCode::BAD_GATEWAY, &format!("packbox egress: {error}"));
        }
    };
    let cancel = grant.cancel.clone();
    let (audit_shared, run) = (Arc::clone(&shared), Arc::clone(&grant));
    let open = Open::enter(&grant.open, usize::MAX);
    grant.tracker.spawn(async move {
        let error = tokio::select! {
            done = connection => done.err().map(|e| format!("the destination's connection failed: {e}")),
            () = cancel.cancelled() => None,
        };
        let connection = attempt.finished(address, &counts, error);
        audit(&audit_shared, &run, connection).await;
        drop(open);
    });
    let (mut parts, body) = req.into_parts();
    parts.uri = match parts.uri.path_and_query() {
        Some(path) => match path.as_str().parse() {
            Ok(uri) => uri,
            Err(_) => return text(StatusCode::BAD_REQUEST, "packbox egress: bad path"),
        },
        None => hyper::Uri::from_static("/"),
    };
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let answer = sender.send_request(Request::from_parts(parts, body)).await;
    drop(sender);
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("packbox egress: the destination did not answer: {e}"),
        ),
    }
}

/// Removes the headers that concern one connection only (and those `Connection` names).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Why a destination cannot be used: refused by policy, or not reachable.
enum Unusable {
    Refused(String),
    Failed(String),
}

/// The addresses of a granted host that the proxy may connect to: an address as it is, a name
/// from the proxy's own table, else from the system's resolver as an absolute name (no search
/// domains). Addresses that are refused are left out; none left is a refusal naming the first.
async fn resolve(shared: &Shared, host: &Host, port: u16) -> Result<Vec<IpAddr>, Unusable> {
    let candidates: Vec<IpAddr> = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => match shared.hosts.get(name) {
            Some(addresses) => addresses.clone(),
            None => {
                let absolute = format!("{name}.");
                match tokio::time::timeout(
                    RESOLVE_TIMEOUT,
                    tokio::net::lookup_host((absolute.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    Ok(Err(e)) => {
                        return Err(Unusable::Failed(format!("{name} does not resolve ({e})")));
                    }
                    Err(_) => {
                        return Err(Unusable::Failed(format!("{name} did not resolve in time")));
                    }
                }
            }
        },
    };
    let refused = match shared.refused.read() {
        Ok(refused) => refused.clone(),
        Err(_) => return Err(Unusable::Failed("the proxy's state is broken".into())),
    };
    let mut allowed = Vec::new();
    let mut first_refusal = None;
    for ip in candidates {
        match refused.why(ip) {
            Some(why) => {
                first_refusal.get_or_insert_with(|| match host {
                    Host::Ip(_) => format!("{ip} is {why}"),
                    Host::Name(_) => format!("it resolves to {ip}, {why}"),
                });
            }
            None if !allowed.contains(&ip) => allowed.push(ip),
            None => {}
        }
    }
    if allowed.is_empty() {
        return Err(Unusable::Refused(
            first_refusal.unwrap_or_else(|| "the name has no address".to_string()),
        ));
    }
    Ok(allowed)
}

/// Connects to the first address that answers.
async fn connect(
    shared: &Shared,
    addresses: &[IpAddr],
    port: u16,
) -> Result<(TcpStream, IpAddr), String> {
    let mut last = String::from("no address");
    for ip in addresses {
        let address = SocketAddr::new(*ip, port);
        match tokio::time::timeout(shared.connect_timeout, shared.connector.connect(address)).await
        {
            Ok(Ok(stream)) => return Ok((stream, *ip)),
            Ok(Err(e)) => last = format!("connecting to {address}: {e}"),
            Err(_) => last = format!("connecting to {address}: no answer in time"),
        }
    }
    Err(last)
}

/// The longest answer head an upstream proxy may send to a `CONNECT`.
const MAX_UPSTREAM_HEAD: usize = 8 << 10;

/// A tunnel to `host:port` through the operator's proxy: connected to it (its name resolved
/// like a destination's, its address not checked: the operator chose it), asked for the
/// tunnel, its answer read up to the blank line. Returns the tunnel and the proxy's address.
async fn through(
    shared: &Shared,
    via: &Upstream,
    host: &Host,
    port: u16,
) -> Result<(TcpStream, IpAddr), String> {
    let addresses: Vec<IpAddr> = match via.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match shared.hosts.get(&via.host) {
            Some(addresses) => addresses.clone(),
            None => {
                let absolute = format!("{}.", via.host.trim_end_matches('.'));
                match tokio::time::timeout(
                    RESOLVE_TIMEOUT,
                    tokio::net::lookup_host((absolute.as_str(), via.port)),
                )
                .await
                {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    Ok(Err(e)) => {
                        return Err(format!(
                            "the build's proxy {} does not resolve ({e})",
                            via.host
                        ));
                    }
                    Err(_) => {
                        return Err(format!(
                            "the build's proxy {} did not resolve in time",
                            via.host
                        ));
                    }
                }
            }
        },
    };
    let (mut stream, address) = connect(shared, &addresses, via.port).await?;
    let authority = format!("{host}:{port}");
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = &via.authorization {
        head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    let asked = async {
        stream.write_all(head.as_bytes()).await?;
        // Byte by byte: nothing of the tunnel's own bytes may be read here.
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") && answer.len() < MAX_UPSTREAM_HEAD {
            if tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await? == 0 {
                break;
            }
            answer.push(byte[0]);
        }
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(shared.connect_timeout, asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(format!("the build's proxy at {address}: {e}")),
        Err(_) => {
            return Err(format!(
                "the build's proxy at {address} did not answer in time"
            ));
        }
    };
    let status: String = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(120)
        .collect();
    let fine = answer.ends_with(b"\r\n\r\n")
        && status
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.len() == 3 && code.starts_with('2'));
    if !fine {
        return Err(format!(
            "the build's proxy at {address} refused the tunnel to {authority}: `{status}`"
        ));
    }
    Ok((stream, address))
}

async fn audit(shared: &Shared, grant: &Grant, connection: Connection) {
    report(
        shared,
        Report::Audit {
            run: grant.run.clone(),
            connection,
        },
    )
    .await;
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// One connection attempt under way, for its audit line.
struct Attempt {
    kind: ConnectionKind,
    host: String,
    port: u16,
    started: Instant,
}

impl Attempt {
    fn new(kind: ConnectionKind, host: String, port: u16) -> Attempt {
        Attempt {
            kind,
            host,
            port,
            started: Instant::now(),
        }
    }

    fn line(&self, allowed: bool, refusal: Option<String>, error: Option<String>) -> Connection {
        Connection {
            host: self.host.clone(),
            port: self.port,
            kind: self.kind,
            allowed,
            refusal,
            error,
            address: None,
            bytes_sent: 0,
            bytes_received: 0,
            duration_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    fn refused(&self, reason: String) -> Connection {
        self.line(false, Some(reason), None)
    }

    fn failed(&self, error: String, address: Option<IpAddr>) -> Connection {
        Connection {
            address,
            ..self.line(true, None, Some(error))
        }
    }

    fn finished(&self, address: IpAddr, counts: &Counts, error: Option<String>) -> Connection {
        Connection {
            address: Some(address),
            bytes_sent: counts.sent.load(Ordering::Relaxed),
            bytes_received: counts.received.load(Ordering::Relaxed),
            ..self.line(true, None, error)
        }
    }
}

/// A run's count of open connections, held while one is open.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn enter(open: &Arc<AtomicUsize>, max: usize) -> Option<Open> {
        let mut now = open.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match open.compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Open(Arc::clone(open))),
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes each way on a destination's connection.
#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A destination's connection that counts what goes through it.
struct Counted {
    stream: TcpStream,
    counts: Arc<Counts>,
}

impl Counted {
    fn new(stream: TcpStream) -> Counted {
        Counted {
            stream,
            counts: Arc::new(Counts::default()),
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.counts
            .received
            .fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.counts
                .sent
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The proxy binary's whole life: its configuration from the first line of stdin, listening
/// on every address of its container, commands from stdin and reports to stdout until stdin
/// ends. Exit code 0 when packbox closed the channel, 1 when the proxy could not start.
pub fn main() -> std::process::ExitCode {
    // Few threads: the container's process limit is small, and name lookups (the only blocking
    // work) are short.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("packbox-egress-proxy: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let mut control = tokio::io::BufReader::new(tokio::io::stdin());
        let first = protocol::read_line(&mut control)
            .await?
            .ok_or_else(|| std::io::Error::other("stdin ended before the configuration"))?;
        let config: ProxyConfig = serde_json::from_slice(&first)
            .map_err(|e| std::io::Error::other(format!("not a configuration: {e}")))?;
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await?;
        serve(
            listener,
            config,
            control,
            tokio::io::stdout(),
            Arc::new(DirectConnect),
        )
        .await
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packbox-egress-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    //! The proxy in-process on loopback: the client connects from one loopback address to the
    //! proxy on another (so attribution by address is real), destinations are a local server
    //! the test connector stands in for their (documentation-range) addresses; no name is ever
    //! looked up outside the proxy's own host table.

    use std::collections::BTreeMap;

    use tokio::io::{AsyncReadExt, BufReader, DuplexStream};
    use tokio::net::TcpSocket;

    use super::*;
    use crate::egress::address::RefusedRange;

    const API: &str = "203.0.113.10";
    const PROXY: &str = "127.0.0.2";
    const CLIENT: &str = "127.0.0.3";

    /// Destinations by address, served by local servers.
    struct TestConnect(HashMap<IpAddr, SocketAddr>);

    #[async_trait::async_trait]
    impl Connect for TestConnect {
        async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
            match self.0.get(&address.ip()) {
                Some(local) if address.port() == 80 || address.port() == 8080 => {
                    TcpStream::connect(local).await
                }
                _ => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            }
        }
    }

    /// A destination: answers every request with its request line, then closes.
    async fn destination() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
                        line.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        address
    }

    struct Running {
        port: u16,
        control: DuplexStream,
        reports: BufReader<DuplexStream>,
        next_id: u64,
    }

    impl Running {
        async fn start() -> Running {
            Running::start_with(&[]).await
        }

        /// A proxy whose connector also stands these local servers in for these addresses.
        async fn start_with(more: &[(&str, SocketAddr)]) -> Running {
            let local = destination().await;
            let listener = TcpListener::bind((PROXY, 0)).await.expect("bind the proxy");
            let port = listener.local_addr().expect("address").port();
            let config = ProxyConfig {
                port,
                refused: RefusedAddresses {
                    ranges: vec![RefusedRange {
                        net: "198.51.100.1/32".parse().expect("net"),
                        why: "the host (gateway of network bridge)".into(),
                    }],
                },
                hosts: BTreeMap::from([
                    ("api.test".into(), vec![API.parse().expect("ip")]),
                    ("rebind.test".into(), vec!["127.0.0.1".parse().expect("ip")]),
                    (
                        "meta.test".into(),
                        vec!["169.254.169.254".parse().expect("ip")],
                    ),
                    (
                        "gateway.test".into(),
                        vec!["198.51.100.1".parse().expect("ip")],
                    ),
                    (
                        "mixed.test".into(),
                        vec!["127.0.0.1".parse().expect("ip"), API.parse().expect("ip")],
                    ),
                ]),
                max_connections: 4,
                connect_timeout_ms: 2000,
            };
            let (control, proxy_in) = tokio::io::duplex(1 << 16);
            let (proxy_out, reports) = tokio::io::duplex(1 << 16);
            let mut served = HashMap::from([(API.parse().expect("ip"), local)]);
            for (ip, server) in more {
                served.insert(ip.parse().expect("ip"), *server);
            }
            let connector = Arc::new(TestConnect(served));
            tokio::spawn(serve(
                listener,
                config,
                BufReader::new(proxy_in),
                proxy_out,
                connector,
            ));
            let mut running = Running {
                port,
                control,
                reports: BufReader::new(reports),
                next_id: 0,
            };
            assert_eq!(running.report().await, Report::Ready);
            running
        }

        async fn report(&mut self) -> Report {
            let line = tokio::time::timeout(
                Duration::from_secs(10),
                protocol::read_line(&mut self.reports),
            )
            .await
            .expect("a report in time")
            .expect("readable")
            .expect("a line");
            serde_json::from_slice(&line).expect("a report")
        }

        async fn command(&mut self, command: Command) -> Vec<Report> {
            let mut line = serde_json::to_vec(&command).expect("json");
            line.push(b'\n');
            self.control.write_all(&line).await.expect("write");
            let id = match command {
                Command::Grant { id, .. }
                | Command::Revoke { id, .. }
                | Command::Refuse { id, .. }
                | Command::Unrefuse { id, .. } => id,
            };
            let mut before = Vec::new();
            loop {
                match self.report().await {
                    Report::Ack { id: acked } if acked == id => return before,
                    other => before.push(other),
                }
            }
        }

        async fn grant(&mut self, allow: &[&str]) {
            self.grant_via(allow, None).await;
        }

        async fn grant_via(&mut self, allow: &[&str], upstream: Option<Upstream>) {
            self.next_id += 1;
            let reports = self
                .command(Command::Grant {
                    id: self.next_id,
                    listener: PROXY.parse().expect("ip"),
                    peer: Some(CLIENT.parse().expect("ip")),
                    run: "run-1".into(),
                    allow: allow
                        .iter()
                        .map(|d| Destination::parse(d).expect("destination"))
                        .collect(),
                    upstream,
                })
                .await;
            assert!(reports.is_empty(), "{reports:?}");
        }

        /// Revokes the grant; the audit lines written before the acknowledgement.
        async fn revoke(&mut self) -> Vec<Connection> {
            self.next_id += 1;
            let reports = self
                .command(Command::Revoke {
                    id: self.next_id,
                    listener: PROXY.parse().expect("ip"),
                })
                .await;
            reports
                .into_iter()
                .map(|report| match report {
                    Report::Audit { run, connection } => {
                        assert_eq!(run, "run-1");
                        connection
                    }
                    other => panic!("not an audit line: {other:?}"),
                })
                .collect()
        }

        /// Sends `raw` to the proxy from `from` and reads until the proxy closes.
        async fn exchange_from(&self, from: &str, raw: &str) -> String {
            let socket = TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(from.parse().expect("ip"), 0))
                .expect("bind the client");
            let mut stream = socket
                .connect(SocketAddr::new(PROXY.parse().expect("ip"), self.port))
                .await
                .expect("connect to the proxy");
            stream.write_all(raw.as_bytes()).await.expect("send");
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                    .await;
            assert!(
                read.is_ok(),
                "the proxy did not close in time; so far: {:?}",
                String::from_utf8_lossy(&answer)
            );
            String::from_utf8_lossy(&answer).into_owned()
        }

        async fn exchange(&self, raw: &str) -> String {
            self.exchange_from(CLIENT, raw).await
        }
    }

    #[tokio::test]
    async fn granted_requests_pass_and_are_audited_with_their_bytes() {
        let mut proxy = Running::start().await;
        proxy.grant(&["api.test:80"]).await;
        let answer = proxy
            .exchange("GET http://api.test/hello?token=s3cret HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("GET /hello?token=s3cret HTTP/1.1"),
            "origin form upstream: {answer}"
        );
        let tunnel = proxy
            .exchange("CONNECT api.test:80 HTTP/1.1\r\nHost: api.test:80\r\n\r\nGET /through HTTP/1.1\r\nHost: api.test\r\n\r\n")
            .await;
        assert!(tunnel.starts_with("HTTP/1.1 200"), "{tunnel}");
        assert!(tunnel.ends_with("GET /through HTTP/1.1"), "{tunnel}");
        let mut audit = proxy.revoke().await;
        audit.sort_by_key(|c| c.kind == ConnectionKind::Tunnel);
        assert_eq!(audit.len(), 2, "{audit:?}");
        for (connection, kind) in audit
            .iter()
            .zip([ConnectionKind::Http, ConnectionKind::Tunnel])
        {
            assert_eq!(connection.kind, kind);
            assert_eq!(
                (connection.host.as_str(), connection.port),
                ("api.test", 80)
            );
            assert!(
                connection.allowed && connection.refusal.is_none(),
                "{connection:?}"
            );
            assert_eq!(connection.address, Some(API.parse().expect("ip")));
            assert!(
                connection.bytes_sent > 20 && connection.bytes_received > 20,
                "{connection:?}"
            );
        }
        // Host and port only: the path and its query never reach the audit.
        let text = serde_json::to_string(&audit).expect("json");
        assert!(
            !text.contains("s3cret") && !text.contains("hello"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn everything_else_is_refused_and_audited() {
        let mut proxy = Running::start().await;
        proxy
            .grant(&[
                "api.test:80",
                "rebind.test:80",
                "meta.test:80",
                "gateway.test:80",
                "mixed.test:80",
            ])
            .await;
        let connect = |target: &str, host: &str| {
            format!("CONNECT {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        };
        for (raw, status, refusal) in [
            (connect("other.test:80", "other.test:80"), "403", "not granted"),
            (connect("api.test:81", "api.test:81"), "403", "not granted"),
            (connect(&format!("{API}:80"), &format!("{API}:80")), "403", "not granted"),
            (connect("rebind.test:80", "rebind.test:80"), "403", "resolves to 127.0.0.1, a loopback"),
            (connect("meta.test:80", "meta.test:80"), "403", "metadata"),
            (connect("gateway.test:80", "gateway.test:80"), "403", "the host (gateway"),
            (connect("api.test:80", "other.test:80"), "400", "Host header"),
            (connect("API.test:80", "API.test:80"), "400", "lower case"),
            (connect("api.test.:80", "api.test.:80"), "400", "trailing dot"),
            (connect("u:p@api.test:80", "api.test:80"), "400", "userinfo"),
            (connect("http://api.test:80/", "api.test:80"), "400", "authority form"),
            (
                "GET http://api.test@other.test/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n".into(),
                "400",
                "userinfo",
            ),
            (
                "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n".into(),
                "400",
                "origin form",
            ),
        ] {
            let answer = proxy.exchange(&raw).await;
            assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{raw:?}: {answer}");
            let audit = proxy.revoke().await;
            assert_eq!(audit.len(), 1, "{raw:?}: {audit:?}");
            assert!(!audit[0].allowed, "{raw:?}: {audit:?}");
            let why = audit[0].refusal.as_deref().unwrap_or_default();
            assert!(why.contains(refusal), "{raw:?}: {why} (expected {refusal})");
            assert_eq!(audit[0].bytes_sent + audit[0].bytes_received, 0);
            proxy
                .grant(&["api.test:80", "rebind.test:80", "meta.test:80", "gateway.test:80", "mixed.test:80"])
                .await;
        }
        // A name with a refused and an allowed address is connected to the allowed one only.
        let through = format!(
            "{}GET / HTTP/1.1\r\nHost: mixed.test\r\n\r\n",
            connect("mixed.test:80", "mixed.test:80")
        );
        let answer = proxy.exchange(&through).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let audit = proxy.revoke().await;
        assert_eq!(
            audit[0].address,
            Some(API.parse().expect("ip")),
            "{audit:?}"
        );
    }

    /// An operator's proxy: records each request head it gets; answers a `CONNECT` to
    /// `denied.test` with 407, any other with 200, then serves the tunnel as a destination does
    /// (its next request line back).
    async fn operator_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let heads = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    heads.lock().expect("heads").push(head.clone());
                    if head.contains("denied.test") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                            .await;
                        return;
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let Some(inner) = read_head(&mut stream).await else {
                        return;
                    };
                    let line = inner.lines().next().unwrap_or_default().to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
                        line.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (address, heads)
    }

    /// A request head, read up to its blank line.
    async fn read_head(stream: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    #[tokio::test]
    async fn granted_connections_go_through_the_operators_proxy_with_its_credentials() {
        const OPERATOR: &str = "192.0.2.77";
        let (operator, heads) = operator_proxy().await;
        let mut proxy = Running::start_with(&[(OPERATOR, operator)]).await;
        proxy
            .grant_via(
                &["pypi.test:443", "denied.test:443", "api.test:80"],
                Some(Upstream {
                    host: OPERATOR.into(),
                    port: 8080,
                    authorization: Some("Basic dTpzM2NyZXQ=".into()),
                    bypass: vec!["api.test".into()],
                }),
            )
            .await;
        // pypi.test is in no host table: the operator's proxy resolves it, not this one.
        let tunnel = proxy
            .exchange("CONNECT pypi.test:443 HTTP/1.1\r\nHost: pypi.test:443\r\n\r\nGET /simple/six/ HTTP/1.1\r\nHost: pypi.test\r\n\r\n")
            .await;
        assert!(tunnel.starts_with("HTTP/1.1 200"), "{tunnel}");
        assert!(tunnel.ends_with("GET /simple/six/ HTTP/1.1"), "{tunnel}");
        let asked = heads.lock().expect("heads").clone();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(
            asked[0].starts_with("CONNECT pypi.test:443 HTTP/1.1\r\n"),
            "{asked:?}"
        );
        assert!(
            asked[0].contains("\r\nProxy-Authorization: Basic dTpzM2NyZXQ=\r\n"),
            "{asked:?}"
        );
        // Its refusal is the client's 502, its words quoted.
        let denied = proxy
            .exchange("CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\nConnection: close\r\n\r\n")
            .await;
        assert!(denied.starts_with("HTTP/1.1 502"), "{denied}");
        assert!(
            denied.contains("407 Proxy Authentication Required"),
            "{denied}"
        );
        // Not granted: refused here, the operator's proxy never asked.
        let refused = proxy
            .exchange("CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\nConnection: close\r\n\r\n")
            .await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        // NO_PROXY's names go straight to the destination.
        let direct = proxy
            .exchange("GET http://api.test/direct HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .await;
        assert!(direct.ends_with("GET /direct HTTP/1.1"), "{direct}");
        assert_eq!(
            heads.lock().expect("heads").len(),
            2,
            "two tunnels asked for"
        );
        let audit = proxy.revoke().await;
        let line = |host: &str| {
            audit
                .iter()
                .find(|c| c.host == host)
                .unwrap_or_else(|| panic!("{host} in {audit:?}"))
        };
        assert!(line("pypi.test").allowed);
        assert_eq!(
            line("pypi.test").address,
            Some(OPERATOR.parse().expect("ip"))
        );
        assert!(line("pypi.test").bytes_received > 20);
        assert!(!line("denied.test").allowed || line("denied.test").error.is_some());
        assert!(!line("other.test").allowed);
        assert_eq!(line("api.test").address, Some(API.parse().expect("ip")));
        let text = serde_json::to_string(&audit).expect("json");
        assert!(
            !text.contains("dTpzM2NyZXQ"),
            "the credential is audited: {text}"
        );
    }

    #[tokio::test]
    async fn connections_belong_to_the_address_they_come_from() {
        let mut proxy = Running::start().await;
        let request =
            "GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n";
        // No grant on the proxy's address yet: closed without an answer.
        assert_eq!(proxy.exchange(request).await, "");
        proxy.grant(&["api.test:80"]).await;
        // Another address than the run's: closed without an answer.
        assert_eq!(proxy.exchange_from("127.0.0.4", request).await, "");
        assert!(proxy.exchange(request).await.starts_with("HTTP/1.1 200"));
        let audit = proxy.revoke().await;
        assert_eq!(audit.len(), 1, "only the run's own connection: {audit:?}");
        // Revoked: closed again.
        assert_eq!(proxy.exchange(request).await, "");
        // A second grant on an address that serves a run is refused.
        proxy.grant(&["api.test:80"]).await;
        proxy.next_id += 1;
        let id = proxy.next_id;
        let mut line = serde_json::to_vec(&Command::Grant {
            id,
            listener: PROXY.parse().expect("ip"),
            peer: None,
            run: "run-2".into(),
            allow: Vec::new(),
            upstream: None,
        })
        .expect("json");
        line.push(b'\n');
        proxy.control.write_all(&line).await.expect("write");
        match proxy.report().await {
            Report::Failed {
                id: Some(failed),
                message,
            } => {
                assert_eq!(failed, id);
                assert!(message.contains("already serves a run"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_revocation_closes_open_tunnels_and_reports_them_first() {
        let mut proxy = Running::start().await;
        proxy.grant(&["api.test:80"]).await;
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(CLIENT.parse().expect("ip"), 0))
            .expect("bind");
        let mut stream = socket
            .connect(SocketAddr::new(PROXY.parse().expect("ip"), proxy.port))
            .await
            .expect("connect");
        stream
            .write_all(b"CONNECT api.test:80 HTTP/1.1\r\nHost: api.test:80\r\n\r\n")
            .await
            .expect("send");
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .expect("the tunnel's answer");
        assert_eq!(&head, b"HTTP/1.1 200");
        // The tunnel is open and idle; the run ends.
        let audit = proxy.revoke().await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert!(audit[0].allowed);
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the tunnel is closed by the revocation");
    }

    #[tokio::test]
    async fn a_run_holds_a_bounded_number_of_connections() {
        let mut proxy = Running::start().await;
        proxy.grant(&["api.test:80"]).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let socket = TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(CLIENT.parse().expect("ip"), 0))
                .expect("bind");
            held.push(
                socket
                    .connect(SocketAddr::new(PROXY.parse().expect("ip"), proxy.port))
                    .await
                    .expect("connect"),
            );
        }
        // The fifth waits for nothing: closed, and said in the audit.
        let fifth = loop {
            let answer = proxy
                .exchange(
                    "GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
                )
                .await;
            if answer.is_empty() {
                break answer;
            }
        };
        assert_eq!(fifth, "");
        drop(held);
        let audit = proxy.revoke().await;
        assert!(
            audit.iter().any(|c| c
                .refusal
                .as_deref()
                .is_some_and(|r| r.contains("4 connections open"))),
            "{audit:?}"
        );
    }
}
