//! The HTTP side of the server: a bounded number of connections, HTTP/1.1 with a deadline for
//! request headers (a client that stalls is cut off), and a graceful end: once asked to stop,
//! no new connection is accepted and open ones close after their current request.
//!
//! Connections cost nothing to open, so idle ones must not lock others out: when every place is
//! taken and a new client knocks, the oldest idle connection (no request in flight, no byte
//! waiting to be read, for at least two seconds; first those that never sent a request) is closed
//! to make room. A client that just connected, or whose request arrived but is not read yet on a
//! busy machine, is never closed. Held requests (waits, output followers) are
//! bounded below the connection limit (`held.rs`), so there is always something idle to close,
//! or a short request about to end.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

/// How often a client waiting for a place looks again for an idle connection to close.
const EVICT_RETRY: Duration = Duration::from_millis(50);
/// How long a connection must have been idle before it may be closed for a new client.
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// Bounds on connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; past it, the oldest idle one is closed for a new client.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time open connections get to finish once the server stops.
    pub close_grace: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then closes gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let table = Table::default();
    loop {
        let permit = match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => loop {
                // Every place is taken: make room by closing an idle connection, or wait for a
                // request to end.
                table.evict_idle(Instant::now());
                tokio::select! {
                    permit = Arc::clone(&connections).acquire_owned() => match permit {
                        Ok(permit) => break permit,
                        Err(_) => return,
                    },
                    () = tokio::time::sleep(EVICT_RETRY) => {}
                    () = stop.cancelled() => return finish(listener, graceful, limits).await,
                }
            },
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A second handle on the socket, to see whether a request waits in it unread.
        let (stream, watch) = match with_watch(stream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!("a connection closed as it was accepted: {e}");
                continue;
            }
        };
        let (id, close) = table.add(watch);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let service = Tracked {
            inner: TowerToHyperService::new(router.clone()),
            table: table.clone(),
            id,
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let table = table.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                },
                () = close.cancelled() => tracing::debug!("closed an idle connection for a new client"),
            }
            table.remove(id);
            drop(permit);
        });
    }
    finish(listener, graceful, limits).await;
}

/// The stream, and a second, non-blocking handle on the same socket that can `peek` at bytes
/// waiting unread (hyper owns the stream).
fn with_watch(
    stream: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let watch = std_stream.try_clone()?;
    watch.set_nonblocking(true)?;
    Ok((tokio::net::TcpStream::from_std(std_stream)?, watch))
}

/// Whether bytes wait unread in the socket (a request hyper has not read yet).
fn has_unread(watch: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(watch.peek(&mut byte), Ok(n) if n > 0)
}

async fn finish(listener: TcpListener, graceful: GracefulShutdown, limits: ConnectionLimits) {
    drop(listener);
    if tokio::time::timeout(limits.close_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace; closing them");
    }
}

/// One open connection: requests in flight, requests served, since when it is idle, and how to
/// close it.
struct Slot {
    in_flight: usize,
    served: usize,
    idle_since: Instant,
    close: CancellationToken,
    /// The socket, to peek at; `None` in unit tests.
    watch: Option<std::net::TcpStream>,
}

/// The open connections, oldest first.
#[derive(Clone, Default)]
struct Table(Arc<Mutex<TableState>>);

#[derive(Default)]
struct TableState {
    next: u64,
    slots: BTreeMap<u64, Slot>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, watch: impl Into<Option<std::net::TcpStream>>) -> (u64, CancellationToken) {
        let mut state = self.lock();
        let id = state.next;
        state.next += 1;
        let close = CancellationToken::new();
        state.slots.insert(
            id,
            Slot {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                close: close.clone(),
                watch: watch.into(),
            },
        );
        (id, close)
    }

    fn remove(&self, id: u64) {
        self.lock().slots.remove(&id);
    }

    fn started(&self, id: u64) {
        if let Some(slot) = self.lock().slots.get_mut(&id) {
            slot.in_flight += 1;
        }
    }

    fn ended(&self, id: u64) {
        if let Some(slot) = self.lock().slots.get_mut(&id) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.served += 1;
            slot.idle_since = Instant::now();
        }
    }

    /// Closes the oldest connection idle for at least [`IDLE_GRACE`] at `now`: first one that
    /// never sent a request, else one kept alive between requests. Returns whether there was
    /// one.
    fn evict_idle(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let idle = |never_served: bool| {
            state
                .slots
                .iter()
                .find(|(_, slot)| {
                    slot.in_flight == 0
                        && !slot.close.is_cancelled()
                        && (slot.served == 0) == never_served
                        && now.saturating_duration_since(slot.idle_since) >= IDLE_GRACE
                        && !slot.watch.as_ref().is_some_and(has_unread)
                })
                .map(|(id, _)| *id)
        };
        let Some(id) = idle(true).or_else(|| idle(false)) else {
            return false;
        };
        if let Some(slot) = state.slots.get_mut(&id) {
            slot.close.cancel();
        }
        true
    }
}

/// The router, counting each connection's requests in flight until their bodies are sent.
struct Tracked {
    inner: TowerToHyperService<Router>,
    table: Table,
    id: u64,
}

impl Service<hyper::Request<Incoming>> for Tracked {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.table.started(self.id);
        let in_flight = InFlight {
            table: self.table.clone(),
            id: self.id,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request in flight, until dropped (its response body sent or abandoned).
struct InFlight {
    table: Table,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.table.ended(self.id);
    }
}

/// A response body that keeps its request in flight until it is sent.
pub struct TrackedBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_whose_request_waits_unread_is_not_idle() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let mut sender = std::net::TcpStream::connect(address).expect("connect");
        let (with_request, _) = listener.accept().expect("accept");
        let _quiet = std::net::TcpStream::connect(address).expect("connect");
        let (quiet, _) = listener.accept().expect("accept");
        with_request.set_nonblocking(true).expect("nonblocking");
        quiet.set_nonblocking(true).expect("nonblocking");
        sender.write_all(b"GET / HTTP/1.1\r\n").expect("write");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !has_unread(&with_request) {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        let table = Table::default();
        let (_, request_close) = table.add(with_request);
        let (_, quiet_close) = table.add(quiet);
        let later = Instant::now() + IDLE_GRACE;
        assert!(table.evict_idle(later));
        assert!(quiet_close.is_cancelled() && !request_close.is_cancelled());
        assert!(!table.evict_idle(later), "a request waits in the other");
    }

    #[test]
    fn the_oldest_idle_connection_goes_first_never_a_busy_one() {
        let table = Table::default();
        let (busy, busy_close) = table.add(None);
        let (kept_alive, kept_close) = table.add(None);
        let (fresh, fresh_close) = table.add(None);
        let (newer, newer_close) = table.add(None);
        table.started(busy);
        table.started(kept_alive);
        table.ended(kept_alive);
        assert!(
            !table.evict_idle(Instant::now()),
            "none idle long enough yet"
        );
        let later = Instant::now() + IDLE_GRACE;
        assert!(table.evict_idle(later));
        assert!(
            fresh_close.is_cancelled(),
            "the oldest that never sent a request"
        );
        assert!(!newer_close.is_cancelled() && !kept_close.is_cancelled());
        assert!(table.evict_idle(later));
        assert!(newer_close.is_cancelled());
        assert!(table.evict_idle(later));
        assert!(
            kept_close.is_cancelled(),
            "then one kept alive between requests"
        );
        assert!(!table.evict_idle(later), "a busy one is never closed");
        assert!(!busy_close.is_cancelled());
        for id in [fresh, newer, kept_alive, busy] {
            table.remove(id);
        }
        assert!(table.lock().slots.is_empty());
    }
}
