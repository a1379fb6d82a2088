//! What a run with a grant reached: the audit lines the proxy wrote for it, kept in bounded
//! memory (the first connections in full, totals for all), and the report an outcome carries
//! as `egress`.

use serde::Serialize;

use super::policy::Granted;
use super::protocol::Connection;

/// Connections kept in full per run; totals count every one.
pub const KEPT_CONNECTIONS: usize = 1000;

/// The audit of one run, as the proxy reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// The first connection attempts, in the order they ended.
    pub connections: Vec<Connection>,
    /// Every connection attempt.
    pub attempts: u64,
    /// The attempts the proxy refused.
    pub refused: u64,
    /// Bytes sent to destinations, all connections together.
    pub bytes_sent: u64,
    /// Bytes received from destinations, all connections together.
    pub bytes_received: u64,
    /// More attempts were made than `connections` holds.
    pub truncated: bool,
}

impl Audit {
    /// Counts one connection attempt, keeping it while there is room.
    pub fn add(&mut self, connection: Connection) {
        self.attempts += 1;
        if !connection.allowed {
            self.refused += 1;
        }
        self.bytes_sent = self.bytes_sent.saturating_add(connection.bytes_sent);
        self.bytes_received = self
            .bytes_received
            .saturating_add(connection.bytes_received);
        if self.connections.len() < KEPT_CONNECTIONS {
            self.connections.push(connection);
        } else {
            self.truncated = true;
        }
    }
}

/// The `egress` of an outcome: what the run was granted and by whom, and what it reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressReport {
    /// The destinations granted, each with the rule that granted it.
    pub granted: Vec<Granted>,
    /// The connection attempts through the proxy.
    #[serde(flatten)]
    pub audit: Audit,
    /// Why the audit may be incomplete (the proxy stopped during the run); absent when whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::protocol::ConnectionKind;

    fn connection(allowed: bool) -> Connection {
        Connection {
            host: "a.test".into(),
            port: 443,
            kind: ConnectionKind::Tunnel,
            allowed,
            refusal: (!allowed).then(|| "not granted to this run".into()),
            error: None,
            address: None,
            bytes_sent: 10,
            bytes_received: 20,
            duration_ms: 1,
        }
    }

    #[test]
    fn totals_count_everything_and_the_list_is_bounded() {
        let mut audit = Audit::default();
        for i in 0..KEPT_CONNECTIONS + 5 {
            audit.add(connection(i % 2 == 0));
        }
        assert_eq!(audit.connections.len(), KEPT_CONNECTIONS);
        assert!(audit.truncated);
        assert_eq!(audit.attempts, (KEPT_CONNECTIONS + 5) as u64);
        assert_eq!(audit.refused, ((KEPT_CONNECTIONS + 5) / 2) as u64);
        assert_eq!(audit.bytes_sent, 10 * (KEPT_CONNECTIONS + 5) as u64);
    }
}
