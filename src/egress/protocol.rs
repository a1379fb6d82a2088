//! What packbox and its egress proxy say to each other: one JSON document per line, packbox to
//! the proxy on the proxy's stdin (its configuration, then grants and revocations), the proxy
//! to packbox on its stdout (ready, acknowledgements, one audit line per connection attempt).
//!
//! The proxy's container is attached, not exposed: nothing else can speak on this channel, and
//! when packbox goes away the proxy's stdin closes and it exits.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::address::{RefusedAddresses, RefusedRange};
use super::destination::Destination;

/// The port the proxy listens on, on each of its addresses.
pub const PROXY_PORT: u16 = 3128;

/// The longest line either side writes; a longer one is a broken peer.
pub const MAX_LINE: usize = 1 << 20;

/// How the proxy is set up, sent once as its first line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The port to listen on.
    pub port: u16,
    /// Addresses no grant reaches besides the fixed ones.
    pub refused: RefusedAddresses,
    /// Names the proxy resolves to these addresses without asking DNS.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Most connections one run may hold open at once.
    pub max_connections: usize,
    /// How long a connection to a destination may take to open, in milliseconds.
    pub connect_timeout_ms: u64,
}

/// What packbox tells the proxy after its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// From now on, connections to the proxy's address `listener` (from `peer`, when given)
    /// belong to the run `run` and may reach `allow`.
    Grant {
        /// Echoed in the acknowledgement.
        id: u64,
        /// The proxy's own address on the run's network.
        listener: IpAddr,
        /// The only address connections may come from; `None`: any on that network.
        peer: Option<IpAddr>,
        /// The run's exec id, named in its audit lines.
        run: String,
        /// What the run may reach.
        allow: Vec<Destination>,
        /// The operator's proxy the run's connections go through (an environment build behind
        /// a company proxy); `None`: straight to the destination.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream: Option<Upstream>,
    },
    /// The run on `listener` is over: its connections are closed, their audit lines written,
    /// then the acknowledgement.
    Revoke {
        /// Echoed in the acknowledgement.
        id: u64,
        /// The proxy's address the grant was for.
        listener: IpAddr,
    },
    /// More addresses no grant reaches (a network packbox made after the proxy started).
    Refuse {
        /// Echoed in the acknowledgement.
        id: u64,
        /// The ranges to add.
        ranges: Vec<RefusedRange>,
    },
    /// Ranges an earlier `refuse` added no longer apply (the network is gone).
    Unrefuse {
        /// Echoed in the acknowledgement.
        id: u64,
        /// The ranges to take away, as they were added.
        ranges: Vec<RefusedRange>,
    },
}

/// An operator's HTTP proxy the egress proxy chains to: after its own checks it asks this proxy
/// for a tunnel (`CONNECT host:port`) to the granted destination, for HTTPS and plain HTTP
/// alike. The operator's choice, so its address is not checked against the refused ones; the
/// destination's name is resolved by it, not by the egress proxy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Its host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The `Proxy-Authorization` value it takes (`Basic ...`), when it wants one: a credential,
    /// which travels on the control channel alone and is never audited or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// Names reached directly, not through it (`NO_PROXY`: a name and the names below it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "(hidden)"),
            )
            .field("bypass", &self.bypass)
            .finish()
    }
}

impl Upstream {
    /// Whether connections to `host` skip this proxy (`NO_PROXY`).
    pub fn bypasses(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.bypass.iter().any(|entry| {
            host == entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }
}

/// What the proxy tells packbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// The configuration is taken and the proxy listens.
    Ready,
    /// A command is carried out.
    Ack {
        /// The command's id.
        id: u64,
    },
    /// A command could not be carried out.
    Failed {
        /// The command's id, when it had one.
        id: Option<u64>,
        /// Why.
        message: String,
    },
    /// One connection attempt of a run, once it is over.
    Audit {
        /// The run's exec id.
        run: String,
        /// What happened.
        connection: Connection,
    },
}

/// One connection attempt through the proxy: where to, whether it was allowed, how much went
/// each way and for how long. Host and port only: never a path or a query, which may hold
/// secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The host as the request named it (canonical), or `(invalid)` when it named none packbox
    /// accepts.
    pub host: String,
    /// The port asked for (0 when the request named none).
    pub port: u16,
    /// `tunnel` (CONNECT, HTTPS and anything else) or `http` (a plain HTTP request forwarded).
    pub kind: ConnectionKind,
    /// Whether the proxy let it through to the destination.
    pub allowed: bool,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Why an allowed connection failed (the destination refused, did not answer, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The address connected to, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Bytes sent to the destination.
    pub bytes_sent: u64,
    /// Bytes received from the destination.
    pub bytes_received: u64,
    /// From the request to the end of the connection, in milliseconds.
    pub duration_ms: u64,
}

/// How a connection went through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// `CONNECT host:port`: a tunnel (HTTPS, or any protocol over TCP).
    Tunnel,
    /// A plain HTTP request, forwarded.
    Http,
}

/// The next line of a channel without its newline; `None` when the channel ended. A line longer
/// than [`MAX_LINE`] is an error (the peer is broken), never buffered whole.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(line));
    }
    if line.len() > MAX_LINE {
        return Err(std::io::Error::other(format!(
            "a line longer than {MAX_LINE} bytes"
        )));
    }
    // The channel ended in the middle of a line: what there is, is the last line.
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_reports_are_one_json_line_each() {
        let grant = Command::Grant {
            id: 3,
            listener: "198.18.0.2".parse().expect("ip"),
            peer: Some("198.18.0.3".parse().expect("ip")),
            run: "exec-1".into(),
            allow: vec![Destination::parse("a.test:443").expect("destination")],
            upstream: None,
        };
        let line = serde_json::to_string(&grant).expect("json");
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            r#"{"op":"grant","id":3,"listener":"198.18.0.2","peer":"198.18.0.3","run":"exec-1","allow":["a.test:443"]}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&line).expect("back"), grant);
        let audit = Report::Audit {
            run: "exec-1".into(),
            connection: Connection {
                host: "a.test".into(),
                port: 443,
                kind: ConnectionKind::Tunnel,
                allowed: false,
                refusal: Some("not granted".into()),
                error: None,
                address: None,
                bytes_sent: 0,
                bytes_received: 0,
                duration_ms: 1,
            },
        };
        let line = serde_json::to_string(&audit).expect("json");
        assert_eq!(serde_json::from_str::<Report>(&line).expect("back"), audit);
        assert!(serde_json::from_str::<Command>(r#"{"op":"grant","id":1}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"op":"open_everything"}"#).is_err());
    }

    #[tokio::test]
    async fn lines_are_read_whole_and_bounded() {
        let mut input: &[u8] = b"one\ntwo\nthree";
        let mut reader = tokio::io::BufReader::new(&mut input);
        assert_eq!(
            read_line(&mut reader).await.expect("1"),
            Some(b"one".to_vec())
        );
        assert_eq!(
            read_line(&mut reader).await.expect("2"),
            Some(b"two".to_vec())
        );
        assert_eq!(
            read_line(&mut reader).await.expect("3"),
            Some(b"three".to_vec())
        );
        assert_eq!(read_line(&mut reader).await.expect("end"), None);
        let long = vec![b'x'; MAX_LINE + 10];
        let mut reader = tokio::io::BufReader::new(long.as_slice());
        assert!(read_line(&mut reader).await.is_err());
    }
}
