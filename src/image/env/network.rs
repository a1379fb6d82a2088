//! What an environment build may reach: the package indexes the operator configured (pip's
//! index and its file host, npm's registry), granted through packbox's egress proxy like a run's
//! destinations, and the operator's own proxy, which the egress proxy chains to. Pure code: the
//! grant and the chain are worked out here, the gateway carries them.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::recipe::IndexSettings;
use crate::egress::destination::Destination;
use crate::egress::policy::{Granted, RunGrant};
use crate::egress::protocol::Upstream;
use crate::pack::dependencies::{Installer, Requirement};

/// pip's index when the operator sets none, and the host PyPI serves its files from.
pub const PYPI_HOSTS: [&str; 2] = ["pypi.org", "files.pythonhosted.org"];
/// npm's registry when the operator sets none.
pub const NPM_REGISTRY_HOST: &str = "registry.npmjs.org";

/// The destinations a build may reach, each with the setting that grants it, and the index
/// hosts that cannot be granted (loopback, link-local, ...) with why: a build's container could
/// not reach those anyway, so they are named in its log and the build goes on.
#[derive(Debug, PartialEq, Eq)]
pub struct BuildGrant {
    /// What the build may reach, and why.
    pub grant: RunGrant,
    /// Index URLs no grant can open: (the setting, why).
    pub refused: Vec<(String, String)>,
}

/// The grant of a build with `installer`: the operator's index (or the default one) and, when
/// the operator lets packs choose sources, the hosts of the URLs the pack's requirement lines
/// name.
pub fn build_grant(
    installer: Installer,
    index: &IndexSettings,
    pack_sources: &[Requirement],
) -> BuildGrant {
    let mut made = BuildGrant {
        grant: RunGrant {
            destinations: Vec::new(),
        },
        refused: Vec::new(),
    };
    let add = |url: &str, by: &str, made: &mut BuildGrant| match url_destination(url) {
        Ok(destination) => {
            if !made
                .grant
                .destinations
                .iter()
                .any(|g| g.destination == destination)
            {
                made.grant.destinations.push(Granted {
                    destination,
                    granted_by: by.to_string(),
                    declared_by: None,
                });
            }
        }
        Err(why) => made.refused.push((by.to_string(), why)),
    };
    match installer {
        Installer::Pip => match &index.pip_index_url {
            Some(url) => add(url, "build.pip_index_url", &mut made),
            None => {
                for host in PYPI_HOSTS {
                    add(
                        &format!("https://{host}/"),
                        "pip's default index",
                        &mut made,
                    );
                }
            }
        },
        Installer::Npm => match &index.npm_registry {
            Some(url) => add(url, "build.npm_registry", &mut made),
            None => add(
                &format!("https://{NPM_REGISTRY_HOST}/"),
                "npm's default registry",
                &mut made,
            ),
        },
        Installer::Go => add(
            &format!("https://{}/", super::golang::MODULE_PROXY_HOST),
            "Go's module proxy (go.mod requires modules vendor/ does not hold)",
            &mut made,
        ),
    }
    for line in pack_sources {
        for word in line.text.split(|c: char| c.is_whitespace() || c == '=') {
            let word = word.trim_start_matches("git+");
            if word.starts_with("http://") || word.starts_with("https://") {
                let by = format!(
                    "{} (build.allow_pack_sources)",
                    line.source.replace(['\n', '\r'], " ")
                );
                add(word, &by, &mut made);
            }
        }
    }
    made
}

/// The host and port of an `http://` or `https://` URL, as a destination.
fn url_destination(url: &str) -> Result<Destination, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "not a URL (expected http:// or https://)".to_string())?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        other => return Err(format!("the scheme `{other}` is not http or https")),
    };
    let (host, port) = authority(rest, default_port)?;
    Destination::parse(&format!("{host}:{port}")).map_err(|e| e.reason)
}

/// The host (IPv6 in brackets) and port of the part of a URL after `scheme://`; user
/// information is skipped (and never returned).
fn authority(rest: &str, default_port: u16) -> Result<(String, u16), String> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = if let Some(inside) = host_port.strip_prefix('[') {
        let (ip, after) = inside
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_string())?;
        (format!("[{ip}]"), after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (host_port.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        // Never quoted: a password with a `/` in it ends up here.
        Some(port) => port
            .parse()
            .map_err(|_| "what follows the host's `:` is not a port".to_string())?,
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    Ok((host, port))
}

/// A proxy setting packbox cannot chain a build to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct UpstreamError {
    /// The environment variable.
    pub variable: String,
    /// What is wrong with it.
    pub problem: String,
}

/// The operator's proxy (`HTTPS_PROXY`, else `HTTP_PROXY`, either case) as the egress proxy
/// chains to it, with its credentials as a `Proxy-Authorization` value and `NO_PROXY`'s names
/// as destinations reached directly. `None` without a proxy, or when `NO_PROXY` is `*`.
pub fn upstream_proxy(
    proxies: &BTreeMap<String, String>,
) -> Result<Option<Upstream>, UpstreamError> {
    let chosen = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|name| {
            proxies
                .get(*name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*name, v.trim()))
        });
    let Some((variable, url)) = chosen else {
        return Ok(None);
    };
    let fail = |problem: &str| UpstreamError {
        variable: variable.to_string(),
        problem: problem.to_string(),
    };
    let bypass: Vec<String> = ["NO_PROXY", "no_proxy"]
        .iter()
        .filter_map(|name| proxies.get(*name))
        .flat_map(|list| list.split(','))
        .map(|entry| {
            entry
                .trim()
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase()
        })
        .filter(|entry| !entry.is_empty())
        .collect();
    if bypass.iter().any(|entry| entry == "*") {
        return Ok(None);
    }
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(fail(&format!(
                "packbox's egress proxy chains to http:// proxies only, not {scheme}://"
            )));
        }
        None => url,
    };
    let (host, port) = authority(rest, 80).map_err(|problem| fail(&problem))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authorization = match rest[..end].rsplit_once('@') {
        Some((userinfo, _)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decoded = format!(
                "{}:{}",
                percent_encoding::percent_decode_str(user).decode_utf8_lossy(),
                percent_encoding::percent_decode_str(password).decode_utf8_lossy()
            );
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded)
            ))
        }
        None => None,
    };
    Ok(Some(Upstream {
        host,
        port,
        authorization,
        bypass,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(grant: &BuildGrant) -> Vec<String> {
        grant
            .grant
            .destinations
            .iter()
            .map(|g| format!("{} by {}", g.destination, g.granted_by))
            .collect()
    }

    fn index(pip: Option<&str>, npm: Option<&str>) -> IndexSettings {
        IndexSettings {
            pip_index_url: pip.map(str::to_string),
            npm_registry: npm.map(str::to_string),
        }
    }

    #[test]
    fn the_default_indexes_are_pypi_with_its_file_host_and_the_npm_registry() {
        let pip = build_grant(Installer::Pip, &index(None, None), &[]);
        assert_eq!(
            allowed(&pip),
            [
                "pypi.org:443 by pip's default index",
                "files.pythonhosted.org:443 by pip's default index"
            ]
        );
        let npm = build_grant(Installer::Npm, &index(None, None), &[]);
        assert_eq!(
            allowed(&npm),
            ["registry.npmjs.org:443 by npm's default registry"]
        );
        assert!(pip.refused.is_empty() && npm.refused.is_empty());
        // Used only when go.mod requires modules vendor/ does not hold (EnvRecipe::fetches).
        let go = build_grant(Installer::Go, &index(None, None), &[]);
        assert_eq!(
            allowed(&go),
            [
                "proxy.golang.org:443 by Go's module proxy (go.mod requires modules vendor/ does not hold)"
            ]
        );
    }

    #[test]
    fn the_operators_index_replaces_the_default_and_only_its_installers() {
        let settings = index(
            Some("https://builder:s3cret@Pypi.Corp.example:8443/simple?token=x"),
            Some("http://npm.corp.example/"),
        );
        let pip = build_grant(Installer::Pip, &settings, &[]);
        assert_eq!(
            allowed(&pip),
            ["pypi.corp.example:8443 by build.pip_index_url"]
        );
        let npm = build_grant(Installer::Npm, &settings, &[]);
        assert_eq!(allowed(&npm), ["npm.corp.example:80 by build.npm_registry"]);
        let text = format!("{pip:?}{npm:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("token"),
            "{text}"
        );
        let v6 = build_grant(
            Installer::Pip,
            &index(Some("https://[2001:db8::5]/simple"), None),
            &[],
        );
        assert_eq!(allowed(&v6), ["[2001:db8::5]:443 by build.pip_index_url"]);
    }

    #[test]
    fn an_index_no_grant_can_open_is_named_and_not_granted() {
        let grant = build_grant(
            Installer::Pip,
            &index(Some("https://u:p@127.0.0.1:9/simple"), None),
            &[],
        );
        assert!(grant.grant.destinations.is_empty(), "{grant:?}");
        assert_eq!(grant.refused.len(), 1);
        assert_eq!(grant.refused[0].0, "build.pip_index_url");
        assert!(grant.refused[0].1.contains("127.0.0.1"), "{grant:?}");
        for bad in ["ftp://x.example/", "x.example/simple", "https:///simple"] {
            let grant = build_grant(Installer::Pip, &index(Some(bad), None), &[]);
            assert!(grant.grant.destinations.is_empty(), "{bad}");
            assert_eq!(grant.refused.len(), 1, "{bad}");
        }
    }

    #[test]
    fn sources_the_operator_lets_packs_choose_are_granted_by_their_line() {
        let lines = [
            Requirement {
                text: "--extra-index-url https://extra.example/simple".into(),
                source: "requirements.txt:1".into(),
            },
            Requirement {
                text: "x @ https://files.example:4443/x-1.0-py3-none-any.whl".into(),
                source: "requirements.txt:2".into(),
            },
            Requirement {
                text: "--index-url=http://plain.example/simple".into(),
                source: "requirements.txt:3".into(),
            },
            Requirement {
                text: "y @ git+https://git.example/y.git".into(),
                source: "requirements.txt:4".into(),
            },
        ];
        let grant = build_grant(Installer::Pip, &index(None, None), &lines);
        assert_eq!(
            allowed(&grant)[2..],
            [
                "extra.example:443 by requirements.txt:1 (build.allow_pack_sources)",
                "files.example:4443 by requirements.txt:2 (build.allow_pack_sources)",
                "plain.example:80 by requirements.txt:3 (build.allow_pack_sources)",
                "git.example:443 by requirements.txt:4 (build.allow_pack_sources)",
            ]
        );
    }

    fn proxies(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_operators_proxy_is_chained_to_with_its_credentials_as_a_header() {
        assert_eq!(upstream_proxy(&proxies(&[])), Ok(None));
        let upstream = upstream_proxy(&proxies(&[
            ("HTTP_PROXY", "http://other.example:1"),
            (
                "HTTPS_PROXY",
                "http://us%40er:p%3Ass@proxy.corp.example:3128/",
            ),
            ("NO_PROXY", "localhost, .corp.example,*.internal.example"),
        ]))
        .expect("valid")
        .expect("a proxy");
        assert_eq!(upstream.host, "proxy.corp.example");
        assert_eq!(upstream.port, 3128);
        // base64("us@er:p:ss")
        assert_eq!(
            upstream.authorization.as_deref(),
            Some("Basic dXNAZXI6cDpzcw==")
        );
        assert_eq!(
            upstream.bypass,
            ["localhost", "corp.example", "internal.example"]
        );
        let plain = upstream_proxy(&proxies(&[("http_proxy", "10.0.0.1")]))
            .expect("valid")
            .expect("a proxy");
        assert_eq!((plain.host.as_str(), plain.port), ("10.0.0.1", 80));
        assert_eq!(plain.authorization, None);
        let v6 = upstream_proxy(&proxies(&[("HTTPS_PROXY", "http://[fd00::1]:8080")]))
            .expect("valid")
            .expect("a proxy");
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 8080));
    }

    #[test]
    fn a_proxy_packbox_cannot_chain_to_is_named_and_no_proxy_star_means_none() {
        let err = upstream_proxy(&proxies(&[("HTTPS_PROXY", "socks5://p.example:1080")]))
            .expect_err("socks");
        assert_eq!(err.variable, "HTTPS_PROXY");
        assert!(err.problem.contains("http:// proxies only"), "{err}");
        let err =
            upstream_proxy(&proxies(&[("HTTPS_PROXY", "http://p.example:x")])).expect_err("port");
        assert!(err.to_string().starts_with("HTTPS_PROXY: "), "{err}");
        assert_eq!(
            upstream_proxy(&proxies(&[
                ("HTTPS_PROXY", "http://p.example:3128"),
                ("no_proxy", "*")
            ])),
            Ok(None)
        );
    }
}
