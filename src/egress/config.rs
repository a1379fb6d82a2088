//! The operator's egress settings (the config file's `egress:` section): where the proxy goes
//! out, which other networks it may reach, names it resolves itself, more addresses it refuses,
//! where per-run networks get their addresses, and the proxy's binary. Read and checked here;
//! `settings` picks the layers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::destination::Host;

/// The network the proxy goes out through when none is set: the engine's default bridge.
pub const DEFAULT_UPSTREAM: &str = "bridge";
/// Where per-run networks take their addresses when nothing else is set: a range set aside for
/// network tests (RFC 2544) that no real network routes. Per-run networks give the host no
/// address on them, so the range never shows in the host's routes.
pub const DEFAULT_SUBNETS: &str = "198.18.0.0/15";
/// Most connections one run may hold open through the proxy.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Each per-run network is this size: the proxy, the action, and the addresses Docker keeps.
pub const RUN_NETWORK_PREFIX: u8 = 29;

/// The `egress:` section of one layer; every field optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EgressLayer {
    /// The network the proxy reaches destinations through (`bridge` by default); its own
    /// addresses are never destinations.
    pub upstream: Option<String>,
    /// More networks the proxy joins so that containers on them may be granted (a network of
    /// internal services); their gateways (the host) stay refused.
    pub networks: Option<Vec<String>>,
    /// Names the proxy resolves to these addresses without asking DNS.
    pub hosts: Option<BTreeMap<String, Vec<IpAddr>>>,
    /// More addresses no grant reaches (the host's own addresses on a remote engine, ...).
    pub refuse: Option<Vec<IpNet>>,
    /// The IPv4 range per-run networks are cut from (`/29` each).
    pub subnets: Option<Ipv4Net>,
    /// The `packbox-egress-proxy` binary to put in the proxy's image (`PACKBOX_EGRESS_PROXY`);
    /// by default the one beside the running program.
    pub proxy_binary: Option<PathBuf>,
    /// Most connections one run may hold open through the proxy.
    pub max_connections: Option<usize>,
}

impl EgressLayer {
    /// Whether the layer sets nothing.
    pub fn is_empty(&self) -> bool {
        self.upstream.is_none()
            && self.networks.is_none()
            && self.hosts.is_none()
            && self.refuse.is_none()
            && self.subnets.is_none()
            && self.proxy_binary.is_none()
            && self.max_connections.is_none()
    }
}

/// The egress settings, resolved and checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EgressSettings {
    /// The network the proxy goes out through.
    pub upstream: String,
    /// More networks the proxy joins.
    pub networks: Vec<String>,
    /// Names the proxy resolves itself.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// More addresses no grant reaches.
    pub refuse: Vec<IpNet>,
    /// The range per-run networks are cut from.
    pub subnets: Ipv4Net,
    /// The proxy binary, when set; else found beside the running program.
    pub proxy_binary: Option<PathBuf>,
    /// Most connections one run may hold open.
    pub max_connections: usize,
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            upstream: DEFAULT_UPSTREAM.into(),
            networks: Vec::new(),
            hosts: BTreeMap::new(),
            refuse: Vec::new(),
            // A constant that parses.
            subnets: DEFAULT_SUBNETS.parse().unwrap_or_default(),
            proxy_binary: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Resolves the section from layers in precedence order (the first that sets a field wins);
/// a bad value is `(field, what was expected)`.
pub fn resolve(layers: &[&EgressLayer]) -> Result<EgressSettings, (&'static str, String)> {
    fn first<T: Clone>(
        layers: &[&EgressLayer],
        get: impl Fn(&EgressLayer) -> Option<T>,
    ) -> Option<T> {
        layers.iter().find_map(|layer| get(layer))
    }
    let defaults = EgressSettings::default();
    let upstream = first(layers, |l| l.upstream.clone()).unwrap_or(defaults.upstream);
    check_network_name(&upstream).map_err(|m| ("egress.upstream", m))?;
    let networks = first(layers, |l| l.networks.clone()).unwrap_or_default();
    for network in &networks {
        check_network_name(network).map_err(|m| ("egress.networks", m))?;
    }
    let hosts = first(layers, |l| l.hosts.clone()).unwrap_or_default();
    for (name, addresses) in &hosts {
        match Host::parse(name) {
            Ok(Host::Name(_)) => {}
            _ => {
                return Err((
                    "egress.hosts",
                    format!(
                        "`{name}` is not a host name in lower case (letters, digits, `-`, `_` between dots)"
                    ),
                ));
            }
        }
        if addresses.is_empty() {
            return Err(("egress.hosts", format!("`{name}` has no address")));
        }
    }
    let refuse = first(layers, |l| l.refuse.clone()).unwrap_or_default();
    let subnets = first(layers, |l| l.subnets).unwrap_or(defaults.subnets);
    if subnets.prefix_len() > RUN_NETWORK_PREFIX - 2 {
        return Err((
            "egress.subnets",
            format!(
                "{subnets} is too small: expected a range of /27 or larger, cut into /{RUN_NETWORK_PREFIX}s"
            ),
        ));
    }
    let max_connections = first(layers, |l| l.max_connections).unwrap_or(defaults.max_connections);
    if !(1..=65536).contains(&max_connections) {
        return Err((
            "egress.max_connections",
            format!("expected a number from 1 to 65536, found {max_connections}"),
        ));
    }
    Ok(EgressSettings {
        upstream,
        networks,
        hosts,
        refuse,
        subnets: subnets.trunc(),
        proxy_binary: first(layers, |l| l.proxy_binary.clone()),
        max_connections,
    })
}

/// A network's name: letters, digits, `_`, `.`, `-`; never `host`, `none` or another
/// container's namespace.
fn check_network_name(name: &str) -> Result<(), String> {
    if !crate::common::names::is_engine_name(name) || matches!(name, "host" | "none") {
        return Err(format!(
            "`{name}` is not a network the proxy can join (a network's name, not host or none)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(yaml: &str) -> EgressLayer {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn defaults_go_out_through_the_bridge_and_cut_a_test_range() {
        let settings = resolve(&[]).expect("defaults");
        assert_eq!(settings, EgressSettings::default());
        assert_eq!(settings.upstream, "bridge");
        assert_eq!(settings.subnets.to_string(), "198.18.0.0/15");
    }

    #[test]
    fn the_first_layer_that_sets_a_field_wins() {
        let file =
            layer("{upstream: egress-out, hosts: {api.test: [10.0.0.5]}, refuse: [192.0.2.0/24]}");
        let env = layer("{upstream: other, proxy_binary: /opt/proxy}");
        let settings = resolve(&[&file, &env]).expect("resolved");
        assert_eq!(settings.upstream, "egress-out");
        assert_eq!(settings.proxy_binary, Some(PathBuf::from("/opt/proxy")));
        assert_eq!(
            settings.hosts["api.test"],
            ["10.0.0.5".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(settings.refuse[0].to_string(), "192.0.2.0/24");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (yaml, field, expected) in [
            ("{upstream: host}", "egress.upstream", "not a network"),
            ("{networks: [\"a b\"]}", "egress.networks", "not a network"),
            (
                "{hosts: {API.test: [10.0.0.1]}}",
                "egress.hosts",
                "lower case",
            ),
            (
                "{hosts: {10.0.0.1: [10.0.0.1]}}",
                "egress.hosts",
                "not a host name",
            ),
            ("{hosts: {a.test: []}}", "egress.hosts", "no address"),
            ("{subnets: 10.0.0.0/28}", "egress.subnets", "too small"),
            ("{max_connections: 0}", "egress.max_connections", "from 1"),
        ] {
            let (got, message) = resolve(&[&layer(yaml)]).expect_err(yaml);
            assert_eq!(got, field, "{yaml}");
            assert!(message.contains(expected), "{yaml}: {message}");
        }
        assert!(serde_yaml::from_str::<EgressLayer>("{subnets: fd00::/64}").is_err());
        assert!(serde_yaml::from_str::<EgressLayer>("{whatever: 1}").is_err());
    }
}
