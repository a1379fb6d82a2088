//! What a proxy request asks for, read strictly: `CONNECT host:port` in authority form, or a
//! plain HTTP request in absolute form (`GET http://host[:port]/path`), with a `Host` header
//! that names the same host. Every other shape is refused rather than interpreted: origin-form
//! requests (a transparent proxy's), absolute-form CONNECT, `https://` in absolute form,
//! userinfo, a `Host` that names another destination, hosts that are not written canonically.

use hyper::{Method, Request, Uri};

use crate::egress::destination::Host;
use crate::egress::protocol::ConnectionKind;

/// A request's destination, checked for shape (not yet against any grant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host, canonical.
    pub host: Host,
    /// The port.
    pub port: u16,
    /// A tunnel or a forwarded request.
    pub kind: ConnectionKind,
}

/// A request that does not have the one shape packbox accepts, with the reason for the audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// How the request was meant to go.
    pub kind: ConnectionKind,
    /// The host, when one could be read.
    pub host: Option<(Host, u16)>,
    /// Why it was refused.
    pub reason: String,
}

/// Reads the destination of a proxy request.
pub fn target<B>(request: &Request<B>) -> Result<Target, Malformed> {
    let kind = if request.method() == Method::CONNECT {
        ConnectionKind::Tunnel
    } else {
        ConnectionKind::Http
    };
    let malformed = |reason: &str| Malformed {
        kind,
        host: None,
        reason: reason.to_string(),
    };
    let uri = request.uri();
    let authority = uri
        .authority()
        .ok_or_else(|| malformed("not a proxy request: the target names no host (origin form)"))?;
    if authority.as_str().contains('@') {
        return Err(malformed("userinfo in the target is refused"));
    }
    let (host, port) = match kind {
        ConnectionKind::Tunnel => {
            // Authority form only: `CONNECT http://host:443/` is refused, not interpreted.
            if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
                return Err(malformed("CONNECT takes `host:port` (authority form) only"));
            }
            let port = authority
                .port_u16()
                .ok_or_else(|| malformed("CONNECT needs a port"))?;
            (authority.host(), port)
        }
        ConnectionKind::Http => {
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(malformed(
                        "https:// is asked for with CONNECT, not in a plain request",
                    ));
                }
                _ => return Err(malformed("only http:// requests are forwarded")),
            }
            (authority.host(), authority.port_u16().unwrap_or(80))
        }
    };
    let host = parse_host(host).map_err(|reason| malformed(&reason))?;
    if port == 0 {
        return Err(malformed("port 0 is no destination"));
    }
    let with_host = |reason: String| Malformed {
        kind,
        host: Some((host.clone(), port)),
        reason,
    };
    check_host_header(request, &host, port, kind).map_err(with_host)?;
    Ok(Target { host, port, kind })
}

/// A host as it appears in a URI authority (IPv6 inside brackets), canonical or refused.
fn parse_host(text: &str) -> Result<Host, String> {
    let inner = match text.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_string())?,
        None => text,
    };
    let host = Host::parse(inner)?;
    if matches!(host, Host::Ip(std::net::IpAddr::V6(_))) != text.starts_with('[') {
        return Err("an IPv6 address is written in `[` `]`".into());
    }
    Ok(host)
}

/// The `Host` header, when there is one, must name the target: the same host, and the same port
/// (a plain request may leave out port 80). More than one `Host` is refused.
fn check_host_header<B>(
    request: &Request<B>,
    host: &Host,
    port: u16,
    kind: ConnectionKind,
) -> Result<(), String> {
    let mut values = request.headers().get_all(hyper::header::HOST).iter();
    let Some(value) = values.next() else {
        return if kind == ConnectionKind::Http {
            Err("a plain request needs a Host header".into())
        } else {
            Ok(())
        };
    };
    if values.next().is_some() {
        return Err("more than one Host header".into());
    }
    let mismatch = || {
        format!(
            "the Host header `{}` names another destination than {host}:{port}",
            shorten(value.to_str().unwrap_or("(not text)"))
        )
    };
    let text = value.to_str().map_err(|_| mismatch())?;
    let authority: Uri = text.parse().map_err(|_| mismatch())?;
    let named = authority.authority().ok_or_else(mismatch)?;
    if authority.scheme().is_some() || named.as_str() != text || text.contains('@') {
        return Err(mismatch());
    }
    let named_host = parse_host(named.host()).map_err(|_| mismatch())?;
    let named_port = match (named.port_u16(), kind) {
        (Some(p), _) => p,
        (None, ConnectionKind::Http) => 80,
        (None, ConnectionKind::Tunnel) => port,
    };
    if &named_host != host || named_port != port {
        return Err(mismatch());
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, host: &[&str]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(target);
        for value in host {
            builder = builder.header("host", *value);
        }
        builder.body(()).expect("request")
    }

    fn name(text: &str) -> Host {
        Host::Name(text.into())
    }

    #[test]
    fn connect_in_authority_form_and_absolute_http_are_read() {
        let t = target(&request("CONNECT", "api.test:443", &["api.test:443"])).expect("connect");
        assert_eq!(
            t,
            Target {
                host: name("api.test"),
                port: 443,
                kind: ConnectionKind::Tunnel
            }
        );
        let t = target(&request("CONNECT", "api.test:8443", &[])).expect("no Host");
        assert_eq!(t.port, 8443);
        let t = target(&request("GET", "http://api.test/x?q=1", &["api.test"])).expect("get");
        assert_eq!(
            (t.host, t.port, t.kind),
            (name("api.test"), 80, ConnectionKind::Http)
        );
        let t = target(&request(
            "POST",
            "http://api.test:8080/",
            &["api.test:8080"],
        ))
        .expect("port");
        assert_eq!(t.port, 8080);
        let t = target(&request("CONNECT", "[2001:db8::1]:443", &[])).expect("v6");
        assert_eq!(t.host, Host::Ip("2001:db8::1".parse().expect("ip")));
        let t = target(&request("GET", "http://10.0.0.1:81/", &["10.0.0.1:81"])).expect("ip");
        assert_eq!(t.host, Host::Ip("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (method, uri, host, why) in [
            ("GET", "/", &["api.test"][..], "origin form"),
            (
                "CONNECT",
                "http://evil.test:443/",
                &[][..],
                "authority form",
            ),
            ("CONNECT", "api.test", &[][..], "needs a port"),
            (
                "GET",
                "https://api.test/",
                &["api.test"][..],
                "with CONNECT",
            ),
            ("GET", "ftp://api.test/", &["api.test"][..], "only http://"),
            ("CONNECT", "user:pw@api.test:443", &[][..], "userinfo"),
            (
                "GET",
                "http://api.test@evil.test/",
                &["evil.test"][..],
                "userinfo",
            ),
            ("CONNECT", "API.test:443", &[][..], "lower case"),
            ("CONNECT", "api.test.:443", &[][..], "trailing dot"),
            ("GET", "http://Api.Test/", &["Api.Test"][..], "lower case"),
            ("CONNECT", "2130706433:443", &[][..], "four numbers"),
            (
                "CONNECT",
                "api.test:443",
                &["evil.test:443"][..],
                "Host header",
            ),
            (
                "CONNECT",
                "api.test:443",
                &["api.test:8443"][..],
                "Host header",
            ),
            (
                "CONNECT",
                "api.test:443",
                &["API.test:443"][..],
                "Host header",
            ),
            (
                "CONNECT",
                "api.test:443",
                &["api.test.:443"][..],
                "Host header",
            ),
            (
                "CONNECT",
                "api.test:443",
                &["u@api.test:443"][..],
                "Host header",
            ),
            (
                "CONNECT",
                "api.test:443",
                &["api.test:443", "api.test:443"][..],
                "more than one",
            ),
            ("GET", "http://api.test/", &["evil.test"][..], "Host header"),
            (
                "GET",
                "http://api.test/",
                &["api.test:81"][..],
                "Host header",
            ),
            (
                "GET",
                "http://api.test/",
                &["http://api.test"][..],
                "Host header",
            ),
            ("GET", "http://api.test/", &[][..], "needs a Host"),
            ("CONNECT", "api.test:0", &[][..], "port 0"),
            ("CONNECT", "::1:443", &[][..], ""),
            ("GET", "http://[::1/", &["x"][..], ""),
        ] {
            let built = Request::builder().method(method).uri(uri);
            let Ok(mut req) = built.body(()) else {
                // The HTTP layer refuses it before packbox sees it: refused as well.
                continue;
            };
            for value in host {
                req.headers_mut()
                    .append("host", value.parse().expect("header value"));
            }
            let err = target(&req).expect_err(&format!("{method} {uri} {host:?}"));
            assert!(
                err.reason.contains(why),
                "{method} {uri} {host:?}: {} (expected {why})",
                err.reason
            );
        }
    }

    #[test]
    fn a_refusal_names_the_host_when_it_could_be_read() {
        let err =
            target(&request("CONNECT", "api.test:443", &["evil.test:443"])).expect_err("mismatch");
        assert_eq!(err.host, Some((name("api.test"), 443)));
        let err = target(&request("CONNECT", "EVIL.test:443", &[])).expect_err("case");
        assert_eq!(err.host, None);
    }
}
