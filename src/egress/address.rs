//! Addresses no grant reaches: loopback, link-local and the clouds' metadata services, and
//! whatever else packbox knows to be the host's or its own (the proxy's networks, the per-run
//! networks). Checked by the proxy on every address it is about to connect to, after its own
//! name resolution, so a granted name that resolves to one of them (DNS rebinding) is refused
//! like the address itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why an address is never a destination, whatever is granted; `None` for an ordinary one.
pub fn always_refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    // Metadata services the clouds answer on addresses of their own.
    match (a, b, c, d) {
        (169, 254, 169, 254) => return Some("a cloud metadata address (link-local)"),
        (168, 63, 129, 16) => return Some("a cloud metadata address (Azure's platform)"),
        (100, 100, 100, 200) => return Some("a cloud metadata address (Alibaba's)"),
        _ => {}
    }
    if a == 0 {
        Some("an unspecified address (0.0.0.0/8)")
    } else if a == 127 {
        Some("a loopback address (127.0.0.0/8)")
    } else if a == 169 && b == 254 {
        Some("a link-local address (169.254.0.0/16)")
    } else if (224..=239).contains(&a) {
        Some("a multicast address (224.0.0.0/4)")
    } else if a >= 240 {
        Some("a reserved or broadcast address (240.0.0.0/4)")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address (fd00:ec2::254)");
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        Some("an unspecified address (::)")
    } else if ip.is_loopback() {
        Some("a loopback address (::1)")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address (fe80::/10)")
    } else if segments[0] & 0xffc0 == 0xfec0 {
        Some("a site-local address (fec0::/10)")
    } else if segments[0] & 0xff00 == 0xff00 {
        Some("a multicast address (ff00::/8)")
    } else if let Some(v4) = embedded_v4(ip) {
        // An IPv4 address in IPv6 clothing: refused whatever it is, so that no range check
        // has to know every spelling of an IPv4 address.
        refused_v4(v4).or(Some("an IPv4 address written as IPv6"))
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or
/// NAT64 (`64:ff9b::a.b.c.d`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6];
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compatible || nat64).then_some(tail)
}

/// A range no grant reaches on this engine, and why (`the host (gateway of network bridge)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRange {
    /// The addresses.
    pub net: IpNet,
    /// Why, for the audit.
    pub why: String,
}

/// The addresses a proxy must never connect to: the fixed ranges above and the ranges packbox
/// found on the engine (the host's gateways, the proxy's own networks, the per-run networks)
/// or the operator listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedAddresses {
    /// The ranges besides the fixed ones.
    pub ranges: Vec<RefusedRange>,
}

impl RefusedAddresses {
    /// Why `ip` is refused, or `None` when it may be connected to.
    pub fn why(&self, ip: IpAddr) -> Option<String> {
        if let Some(reason) = always_refused(ip) {
            return Some(reason.to_string());
        }
        self.ranges
            .iter()
            .find(|range| range.net.contains(&ip))
            .map(|range| range.why.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn loopback_link_local_and_metadata_are_always_refused() {
        for (address, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("169.254.169.254", "metadata"),
            ("169.254.0.1", "link-local"),
            ("168.63.129.16", "metadata"),
            ("100.100.100.200", "metadata"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("fd00:ec2::254", "metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("::ffff:8.8.8.8", "IPv4 address written as IPv6"),
        ] {
            let reason = always_refused(ip(address)).unwrap_or_else(|| panic!("{address}"));
            assert!(reason.contains(why), "{address}: {reason}");
        }
    }

    #[test]
    fn ordinary_addresses_pass_the_fixed_check() {
        for address in [
            "8.8.8.8",
            "10.1.2.3",
            "172.17.0.2",
            "192.168.1.1",
            "100.64.0.1",
            "198.18.0.1",
            "2001:db8::1",
            "fd00::1",
            "fe00::1",
            "169.253.255.255",
            "223.255.255.255",
        ] {
            assert_eq!(always_refused(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn ranges_found_on_the_engine_are_refused_with_their_reason() {
        let refused = RefusedAddresses {
            ranges: vec![
                RefusedRange {
                    net: "172.17.0.1/32".parse().expect("net"),
                    why: "the host (gateway of network bridge)".into(),
                },
                RefusedRange {
                    net: "198.18.0.0/15".parse().expect("net"),
                    why: "a per-run network".into(),
                },
            ],
        };
        assert_eq!(
            refused.why(ip("172.17.0.1")).as_deref(),
            Some("the host (gateway of network bridge)")
        );
        assert_eq!(refused.why(ip("172.17.0.2")), None);
        assert_eq!(
            refused.why(ip("198.19.4.3")).as_deref(),
            Some("a per-run network")
        );
        assert!(
            refused
                .why(ip("127.0.0.1"))
                .is_some_and(|w| w.contains("loopback"))
        );
        // An IPv4 address written as IPv6 never passes.
        assert!(refused.why(ip("::ffff:172.17.0.1")).is_some());
        assert_eq!(refused.why(ip("93.184.216.34")), None);
    }
}
