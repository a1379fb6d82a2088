//! Where an action may connect: destinations as operators grant them and packs declare them
//! (`api.github.com:443`, `*.example.com:80,443`, `10.1.2.3:5432`, `[2001:db8::1]:443`), and
//! hosts as a client names them in a proxy request.
//!
//! One canonical spelling is used for everything: a destination is checked, resolved and
//! audited under the same name, so no difference between what was checked and what was used can
//! be smuggled through (case, a trailing dot, a numeric host that a resolver would read as an
//! address). Shared by packbox (settings, packs, plans) and the egress proxy itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

/// The longest host name DNS can carry.
const MAX_NAME: usize = 253;
/// The longest label of a host name.
const MAX_LABEL: usize = 63;
/// The most ports one destination may list.
const MAX_PORTS: usize = 32;

/// Which hosts a destination covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this host name (canonical: lower case, no trailing dot).
    Name(String),
    /// Any host name below this domain, at any depth, but not the domain itself:
    /// `*.example.com` is stored as `example.com`.
    Below(String),
    /// Exactly this address, named as an address.
    Ip(IpAddr),
}

/// A host as a request names it: a canonical name or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name (canonical).
    Name(String),
    /// An address written as such.
    Ip(IpAddr),
}

/// A destination: hosts and the ports allowed on them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The hosts.
    pub host: HostPattern,
    /// The ports, sorted, without repeats.
    pub ports: Vec<u16>,
}

/// Why a destination or a host cannot be used, in words for the person who wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{written}` is not a destination: {reason}")]
pub struct DestinationError {
    /// What was written (shortened when long).
    pub written: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Destination {
    /// Parses `HOST:PORT[,PORT...]` as an operator or a pack writes it. Host names are taken in
    /// any case and stored in lower case; everything else must already be canonical.
    pub fn parse(text: &str) -> Result<Destination, DestinationError> {
        let fail = |reason: &str| DestinationError {
            written: shorten(text),
            reason: reason.to_string(),
        };
        let text = text.trim();
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| fail("an IPv6 address needs its closing `]`"))?;
            let ports = after
                .strip_prefix(':')
                .ok_or_else(|| fail("expected `:PORT` after the address"))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| fail("not an IPv6 address between `[` and `]`"))?;
            (HostPattern::Ip(IpAddr::V6(ip)), ports)
        } else {
            let (host, ports) = text
                .rsplit_once(':')
                .ok_or_else(|| fail("expected HOST:PORT (a port, or ports separated by commas)"))?;
            let lower = host.to_ascii_lowercase();
            let pattern = if lower == "*" {
                return Err(fail(
                    "`*` alone names every host; grant hosts by name or `*.DOMAIN` (the sandbox's `network: bridge` is the way to open everything)",
                ));
            } else if let Some(domain) = lower.strip_prefix("*.") {
                check_name(domain).map_err(|reason| fail(&reason))?;
                HostPattern::Below(domain.to_string())
            } else {
                match Host::parse(&lower).map_err(|reason| fail(&reason))? {
                    Host::Name(name) => HostPattern::Name(name),
                    Host::Ip(ip) => HostPattern::Ip(ip),
                }
            };
            (pattern, ports)
        };
        let mut parsed = Vec::new();
        for port in ports.split(',') {
            let port = port.trim();
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && !port.starts_with('0');
            match port.parse::<u16>() {
                Ok(number) if valid && number > 0 => parsed.push(number),
                _ => return Err(fail("ports are whole numbers from 1 to 65535")),
            }
        }
        if parsed.len() > MAX_PORTS {
            return Err(fail(&format!("at most {MAX_PORTS} ports per destination")));
        }
        parsed.sort_unstable();
        parsed.dedup();
        if let HostPattern::Ip(ip) = &host
            && let Some(reason) = super::address::always_refused(*ip)
        {
            return Err(fail(&format!("{ip} is {reason}, which no grant can open")));
        }
        Ok(Destination {
            host,
            ports: parsed,
        })
    }

    /// Whether a connection to `host` on `port` is within this destination.
    pub fn allows(&self, host: &Host, port: u16) -> bool {
        self.ports.contains(&port) && self.host.matches(host)
    }

    /// Whether everything `needed` names is within this destination: its hosts and its ports.
    pub fn covers(&self, needed: &Destination) -> bool {
        let hosts = match (&self.host, &needed.host) {
            (HostPattern::Name(a), HostPattern::Name(b)) => a == b,
            (HostPattern::Ip(a), HostPattern::Ip(b)) => a == b,
            (HostPattern::Below(domain), HostPattern::Name(name)) => is_below(name, domain),
            (HostPattern::Below(a), HostPattern::Below(b)) => a == b || is_below(b, a),
            _ => false,
        };
        hosts && needed.ports.iter().all(|p| self.ports.contains(p))
    }
}

impl HostPattern {
    /// Whether the request's host is one of these hosts.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Name(a), Host::Name(b)) => a == b,
            (HostPattern::Below(domain), Host::Name(name)) => is_below(name, domain),
            (HostPattern::Ip(a), Host::Ip(b)) => a == b,
            _ => false,
        }
    }
}

impl Host {
    /// A host exactly as a request must write it: a lower-case host name without a trailing
    /// dot, a dotted-quad IPv4 address, or an IPv6 address (in a request, inside `[` `]`, which
    /// the caller has taken off). Anything else is refused rather than guessed at.
    pub fn parse(text: &str) -> Result<Host, String> {
        if let Ok(ip) = text.parse::<Ipv6Addr>() {
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            // All digits and dots: an address in the one spelling packbox accepts, never a
            // name a resolver would read as an address (`2130706433`, `127.1`, `0177.0.0.1`).
            return parse_dotted_quad(text)
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .ok_or_else(|| {
                    "an IPv4 address is written as four numbers from 0 to 255 without leading zeros"
                        .to_string()
                });
        }
        check_name(text)?;
        Ok(Host::Name(text.to_string()))
    }
}

/// Whether `name` is below `domain` (at least one label more).
fn is_below(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// A canonical host name: lower-case letters, digits, `-` and `_`, in dot-separated labels of 1
/// to 63 characters (no `-` at either end), at most 253 in all, no trailing dot, and a last
/// label that is not a number.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("a host name has at most {MAX_NAME} characters"));
    }
    if name.ends_with('.') {
        return Err("a host name is written without a trailing dot".into());
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("a host name is written in lower case".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("a host name has no empty labels (`..`)".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "a label of a host name has at most {MAX_LABEL} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(
                "a host name holds only letters, digits, `-` and `_` between its dots".into(),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of a host name neither starts nor ends with `-`".into());
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the last label of a host name is not a number".into());
    }
    Ok(())
}

/// `a.b.c.d`, each a number from 0 to 255 written without leading zeros.
fn parse_dotted_quad(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(name) => write!(f, "{name}"),
            HostPattern::Below(domain) => write!(f, "*.{domain}"),
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => write!(f, "{name}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        write!(f, "{}:{}", self.host, ports.join(","))
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Destination::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(text: &str) -> Destination {
        Destination::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn host(text: &str) -> Host {
        Host::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn destinations_are_read_and_written_back_canonically() {
        for (written, canonical) in [
            ("api.github.com:443", "api.github.com:443"),
            ("API.GitHub.com:443", "api.github.com:443"),
            ("*.Example.com:443,80,443", "*.example.com:80,443"),
            ("10.1.2.3:5432", "10.1.2.3:5432"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("proxy:3128", "proxy:3128"),
            (" svc_a.internal:8080 ", "svc_a.internal:8080"),
        ] {
            assert_eq!(dest(written).to_string(), canonical, "{written}");
        }
    }

    #[test]
    fn bad_destinations_say_what_is_wrong() {
        for (written, expected) in [
            ("api.github.com", "HOST:PORT"),
            ("api.github.com:", "ports are whole numbers"),
            ("api.github.com:0", "ports are whole numbers"),
            ("api.github.com:65536", "ports are whole numbers"),
            ("api.github.com:08", "ports are whole numbers"),
            ("api.github.com:https", "ports are whole numbers"),
            ("*:443", "`*` alone"),
            ("*.*.com:443", "letters, digits"),
            ("a..b:443", "empty labels"),
            ("host.:443", "trailing dot"),
            ("-a.com:443", "neither starts nor ends"),
            ("user@host.com:443", "letters, digits"),
            ("host.com/path:443", "letters, digits"),
            ("2130706433:443", "four numbers"),
            ("127.1:443", "four numbers"),
            ("0177.0.0.1:443", "leading zeros"),
            ("a.123:443", "not a number"),
            ("example.123x-:443", "neither starts nor ends"),
            ("127.0.0.1:80", "loopback"),
            ("169.254.169.254:80", "link-local"),
            ("[::1]:443", "loopback"),
            ("[fd00:ec2::254]:80", "metadata"),
            ("[::1:443", "closing"),
            ("ééé.com:443", "letters, digits"),
        ] {
            let err = Destination::parse(written).expect_err(written);
            assert!(
                err.to_string().contains(expected),
                "{written}: {err} (expected {expected})"
            );
        }
        let long = format!("{}.com:443", "a".repeat(64));
        assert!(Destination::parse(&long).is_err());
    }

    #[test]
    fn a_grant_allows_its_hosts_on_its_ports_only() {
        let exact = dest("api.github.com:443");
        assert!(exact.allows(&host("api.github.com"), 443));
        assert!(!exact.allows(&host("api.github.com"), 80));
        assert!(!exact.allows(&host("github.com"), 443));
        assert!(!exact.allows(&host("evil-api.github.com"), 443));
        assert!(!exact.allows(&host("api.github.com.evil.com"), 443));

        let below = dest("*.example.com:80,443");
        assert!(below.allows(&host("a.example.com"), 443));
        assert!(below.allows(&host("a.b.example.com"), 80));
        assert!(
            !below.allows(&host("example.com"), 443),
            "not the domain itself"
        );
        assert!(!below.allows(&host("badexample.com"), 443));
        assert!(!below.allows(&host("example.com.evil.com"), 443));
        assert!(!below.allows(&host("a.example.com"), 8080));

        let ip = dest("10.1.2.3:5432");
        assert!(ip.allows(&host("10.1.2.3"), 5432));
        assert!(!ip.allows(&host("10.1.2.4"), 5432));
        // A name that resolves to the address is not the address granted as such, and an
        // address is not a name granted.
        assert!(!dest("db.internal:5432").allows(&host("10.1.2.3"), 5432));
    }

    #[test]
    fn requests_must_be_written_canonically() {
        for refused in [
            "API.github.com",
            "api.github.com.",
            "api..github.com",
            "2130706433",
            "0x7f.0.0.1",
            "127.1",
            "017.0.0.1",
            "a b",
            "user@api.github.com",
            "api.github.com%2eevil.com",
            "",
        ] {
            assert!(Host::parse(refused).is_err(), "{refused:?} must be refused");
        }
        assert_eq!(
            host("10.0.0.1"),
            Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(host("::1"), Host::Ip("::1".parse().expect("v6")));
    }

    #[test]
    fn coverage_of_declared_needs() {
        let grant = dest("*.github.com:443");
        assert!(grant.covers(&dest("api.github.com:443")));
        assert!(grant.covers(&dest("*.api.github.com:443")));
        assert!(grant.covers(&dest("*.github.com:443")));
        assert!(!grant.covers(&dest("github.com:443")));
        assert!(!grant.covers(&dest("api.github.com:80")));
        assert!(!grant.covers(&dest("api.github.com:443,80")));
        assert!(!dest("api.github.com:443").covers(&dest("*.github.com:443")));
        assert!(dest("api.github.com:80,443").covers(&dest("api.github.com:443")));
        assert!(dest("10.0.0.1:80").covers(&dest("10.0.0.1:80")));
        assert!(!dest("10.0.0.1:80").covers(&dest("host.internal:80")));
    }

    #[test]
    fn serde_reads_and_writes_the_canonical_form() {
        let read: Vec<Destination> =
            serde_yaml::from_str("[\"A.example.com:443\", \"*.x.org:80\"]").expect("yaml");
        assert_eq!(
            serde_json::to_string(&read).expect("json"),
            r#"["a.example.com:443","*.x.org:80"]"#
        );
        assert!(serde_yaml::from_str::<Vec<Destination>>("[\"nope\"]").is_err());
    }
}
