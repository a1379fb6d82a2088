//! Which Docker engine packbox talks to, found the way the docker CLI finds it.
//!
//! Separate from [`crate::engine`] so that the rules can be read and unit-tested without an
//! engine: the caller hands in the environment as a map and the `--engine` setting, and gets back
//! the endpoint together with why it was chosen (for `doctor` and `config show`). Nothing here
//! reads the process environment; files are read only where the rules need them (the docker
//! config's `currentContext`, a context's `meta.json`).
//!
//! Precedence, as in the docker CLI (`cli/command/cli.go`, `resolveContextName`):
//! 1. `--engine` (packbox's setting): an address (`unix://`, `tcp://`, `https://`, `host:port`)
//!    like `docker --host`, or a context name like `docker --context`;
//! 2. `DOCKER_HOST` (then `DOCKER_CONTEXT` and the current context are ignored);
//! 3. `DOCKER_CONTEXT`;
//! 4. `currentContext` in `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`);
//! 5. the local socket `unix:///var/run/docker.sock`.
//!
//! The `default` context means rules 2 and 5 with TLS from the environment: `DOCKER_TLS_VERIFY`
//! (any non-empty value, as for the docker CLI) with `ca.pem`, `cert.pem`, `key.pem` from
//! `DOCKER_CERT_PATH` (default: the docker config folder); without an address, TLS means
//! `tcp://localhost:2376`. A stored context's TLS files are `contexts/tls/<id>/docker/*.pem`,
//! its address `contexts/meta/<id>/meta.json`, `<id>` being the SHA-256 of its name.
//!
//! Where packbox is stricter than the docker CLI, on purpose: TLS that skips verifying the engine
//! (`DOCKER_TLS` alone, a context's `SkipTLSVerify`) is refused, and TLS needs all three files
//! (the CLI goes on without a client certificate; an engine that takes clients without one gives
//! root to anyone who reaches it). `ssh://`, `npipe://` and `fd://` engines are not supported.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The socket of a local engine, when nothing else is set.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The docker CLI's address when TLS is asked for without an address.
const DEFAULT_TLS_HOST: &str = "localhost:2376";
/// The docker CLI's port for a `tcp://` address without one.
const DEFAULT_TCP_PORT: u16 = 2375;
/// The docker CLI's name for "no stored context: use the environment".
const DEFAULT_CONTEXT: &str = "default";
/// Bytes read at most from a docker config, context or PEM file (each is a few KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The environment variables the rules read, however the caller holds them (the settings
/// module's snapshot of the process environment; a map in tests). Empty values count as unset.
pub trait Vars {
    /// A variable's value, `None` when unset or empty.
    fn get(&self, name: &str) -> Option<&str>;
}

/// Where the choice of engine came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// A packbox flag or setting naming the engine (`--engine`, or `--to` of `images copy`).
    Flag {
        /// The flag or setting, as messages name it.
        name: String,
    },
    /// The `DOCKER_HOST` variable.
    DockerHost,
    /// The `DOCKER_CONTEXT` variable.
    DockerContext,
    /// `currentContext` in the docker CLI's config file.
    CurrentContext {
        /// The docker config file that names the context.
        config_file: PathBuf,
    },
    /// Nothing was set: the local socket (or `tcp://localhost:2376` when TLS is asked for).
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag { name } => write!(f, "{name}"),
            Origin::DockerHost => write!(f, "DOCKER_HOST"),
            Origin::DockerContext => write!(f, "DOCKER_CONTEXT"),
            Origin::CurrentContext { config_file } => {
                write!(f, "currentContext of {}", config_file.display())
            }
            Origin::Default => write!(f, "the default"),
        }
    }
}

pub use crate::engine::{TlsFiles, Transport};

/// The engine packbox will talk to, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The address as a URL (`unix:///var/run/docker.sock`, `tcp://10.0.0.5:2376`).
    pub host: String,
    /// How to connect to it: the socket, or the TCP address and its TLS files.
    pub transport: Transport,
    /// The docker context it came from, when one did.
    pub context: Option<String>,
    /// The rule that chose it.
    pub origin: Origin,
    /// Why this endpoint, one line per rule that decided (and per setting it overrode).
    pub reasons: Vec<String>,
}

impl Endpoint {
    /// Whether the engine is a Unix socket on this machine, so that it can see this machine's
    /// files (a bind-mounted pack folder works only then).
    pub fn is_local_socket(&self) -> bool {
        matches!(self.transport, Transport::Unix { .. })
    }

    /// Whether the engine runs as another user than root or this process's own: a Unix socket
    /// that belongs to someone else (a rootless Podman or Docker of another user). Such an
    /// engine cannot be assumed to read this user's files, so packs go to it by content.
    pub fn runs_as_another_user(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Transport::Unix { socket } = &self.transport else {
            return false;
        };
        // The socket's owner is the engine's user; /proc/self belongs to this process's.
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        match std::fs::metadata(socket) {
            Ok(meta) => meta.uid() != 0 && Some(meta.uid()) != me,
            Err(_) => false,
        }
    }

    /// Whether the connection uses TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self.transport, Transport::Tcp { tls: Some(_), .. })
    }

    /// The TLS files, when the connection uses TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        match &self.transport {
            Transport::Tcp { tls, .. } => tls.as_ref(),
            Transport::Unix { .. } => None,
        }
    }
}

/// An engine setting that cannot be used. Each names the setting, file or value concerned.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// An address that is not one packbox can connect to.
    #[error("{origin}: `{value}` is not an engine address ({expected})")]
    BadAddress {
        /// The setting or variable that gave it.
        origin: Origin,
        /// The address as given.
        value: String,
        /// What an address must look like, or which part of it is wrong.
        expected: String,
    },
    /// A context name that is not one the docker CLI could have made.
    #[error(
        "{origin}: `{name}` is not a docker context name or an address (expected a name of letters, digits, `_.+-`, or unix://, tcp://, https://)"
    )]
    BadContextName {
        /// The setting or variable that gave it.
        origin: Origin,
        /// The name as given.
        name: String,
    },
    /// The context named does not exist in the docker CLI's context store.
    #[error("{origin}: docker context `{name}` does not exist (no {})", meta_file.display())]
    ContextNotFound {
        /// The setting, variable or config file that named it.
        origin: Origin,
        /// The context's name.
        name: String,
        /// Where the docker CLI would keep its address, and nothing was found.
        meta_file: PathBuf,
    },
    /// A file of the docker CLI's configuration could not be read.
    #[error("cannot read {}", file.display())]
    Unreadable {
        /// The file that could not be read.
        file: PathBuf,
        /// Why reading it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file of the docker CLI's configuration is not what the docker CLI writes.
    #[error("{}: {message}", file.display())]
    Invalid {
        /// The file at fault.
        file: PathBuf,
        /// What in it is wrong.
        message: String,
    },
    /// A TLS file that must be there is not.
    #[error("{origin}: TLS file {} is missing (from {source_of_folder})", file.display())]
    TlsFileMissing {
        /// The rule that chose the engine, and with it the TLS folder.
        origin: Origin,
        /// The file that is not there.
        file: PathBuf,
        /// Where the TLS folder came from (`DOCKER_CERT_PATH=...`, a context), or why there is
        /// none.
        source_of_folder: String,
    },
    /// A TLS file that cannot be read or holds no usable PEM item.
    #[error("{origin}: TLS file {}: {problem}", file.display())]
    TlsFileUnusable {
        /// The rule that chose the engine, and with it the TLS folder.
        origin: Origin,
        /// The file at fault.
        file: PathBuf,
        /// Why it cannot be used (unreadable, no certificate, no private key).
        problem: String,
    },
    /// TLS that does not check the engine's certificate: refused.
    #[error("{origin}: {what} skips verifying the engine's certificate, which packbox refuses")]
    UnverifiedTls {
        /// The rule that chose the engine.
        origin: Origin,
        /// The setting that asks for unverified TLS (`DOCKER_TLS`, a context's `SkipTLSVerify`).
        what: String,
    },
}

impl EndpointError {
    /// Whether the user's own `--engine` value is at fault (exit 2) rather than the environment
    /// or the docker configuration (exit 125).
    pub fn is_engine_setting(&self) -> bool {
        let origin = match self {
            EndpointError::BadAddress { origin, .. }
            | EndpointError::BadContextName { origin, .. }
            | EndpointError::ContextNotFound { origin, .. }
            | EndpointError::TlsFileMissing { origin, .. }
            | EndpointError::TlsFileUnusable { origin, .. }
            | EndpointError::UnverifiedTls { origin, .. } => origin,
            EndpointError::Unreadable { .. } | EndpointError::Invalid { .. } => return false,
        };
        matches!(origin, Origin::Flag { .. })
    }

    /// The next step for the user, when there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            EndpointError::ContextNotFound { .. } => Some(
                "`docker context ls` lists the contexts; unset DOCKER_CONTEXT to use the default",
            ),
            EndpointError::TlsFileMissing { .. } => Some(
                "DOCKER_CERT_PATH must hold ca.pem, cert.pem and key.pem (in GitLab CI: /certs/client, shared with the docker:dind service)",
            ),
            EndpointError::UnverifiedTls { .. } => Some(
                "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the folder with the engine's CA",
            ),
            _ => None,
        }
    }
}

/// Finds the engine from the `--engine` setting and the environment, with the docker CLI's
/// precedence (see the module doc).
pub fn resolve(engine_setting: Option<&str>, env: &dyn Vars) -> Result<Endpoint, EndpointError> {
    match engine_setting.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => resolve_flag("--engine", value, env),
        None => resolve_environment(env),
    }
}

/// The engine a flag names (`--engine`, `--to`): an address, TLS from the environment, like
/// `docker --host`; or a docker context name, like `docker --context`.
pub fn resolve_flag(flag: &str, value: &str, env: &dyn Vars) -> Result<Endpoint, EndpointError> {
    let origin = Origin::Flag { name: flag.into() };
    let value = value.trim();
    let mut reasons = Vec::new();
    if looks_like_address(value) {
        reasons.push(format!("{flag} {value}"));
        note_overridden(&mut reasons, env, &["DOCKER_HOST", "DOCKER_CONTEXT"]);
        return from_environment(origin, Some(value), env, reasons);
    }
    reasons.push(format!("{flag} names docker context `{value}`"));
    note_overridden(&mut reasons, env, &["DOCKER_HOST", "DOCKER_CONTEXT"]);
    from_context(origin, value, env, reasons)
}

/// The engine the environment names, when no flag does.
fn resolve_environment(env: &dyn Vars) -> Result<Endpoint, EndpointError> {
    let var = |name: &str| env.get(name);
    let mut reasons = Vec::new();
    if let Some(host) = var("DOCKER_HOST") {
        reasons.push(format!("DOCKER_HOST={host}"));
        note_overridden(&mut reasons, env, &["DOCKER_CONTEXT"]);
        return from_environment(Origin::DockerHost, Some(host), env, reasons);
    }
    if let Some(name) = var("DOCKER_CONTEXT") {
        reasons.push(format!("DOCKER_CONTEXT={name}"));
        return from_context(Origin::DockerContext, name, env, reasons);
    }
    if let Some(config_dir) = config_dir(env) {
        let config_file = config_dir.join("config.json");
        if let Some(name) = current_context(&config_file)? {
            reasons.push(format!(
                "currentContext `{name}` in {}",
                config_file.display()
            ));
            return from_context(Origin::CurrentContext { config_file }, &name, env, reasons);
        }
    }
    reasons.push("no --engine, DOCKER_HOST, DOCKER_CONTEXT or current docker context".into());
    from_environment(Origin::Default, None, env, reasons)
}

/// Notes settings that were set but lost to a stronger one, so `doctor` can say so.
fn note_overridden(reasons: &mut Vec<String>, env: &dyn Vars, names: &[&str]) {
    for name in names {
        if let Some(value) = env.get(name) {
            reasons.push(format!(
                "{name}={value} is set but not used (lower precedence)"
            ));
        }
    }
}

/// An `--engine` value is an address when it has a scheme or a port; context names have neither.
fn looks_like_address(value: &str) -> bool {
    value.contains("://") || value.contains(':') || value.starts_with('/')
}

/// The docker CLI's "default" context: an address (or none) with TLS from the environment.
fn from_environment(
    origin: Origin,
    host: Option<&str>,
    env: &dyn Vars,
    mut reasons: Vec<String>,
) -> Result<Endpoint, EndpointError> {
    let var = |name: &str| env.get(name);
    let tls_verify = var("DOCKER_TLS_VERIFY");
    if let Some(value) = tls_verify {
        reasons.push(format!(
            "DOCKER_TLS_VERIFY={value}: TLS, verifying the engine (any non-empty value turns it on, as for the docker CLI)"
        ));
    } else if var("DOCKER_TLS").is_some() {
        return Err(EndpointError::UnverifiedTls {
            origin,
            what: "DOCKER_TLS without DOCKER_TLS_VERIFY".into(),
        });
    }
    let (scheme, rest) = match host {
        Some(host) => split_scheme(&origin, host)?,
        None if tls_verify.is_some() => (Scheme::Tcp, DEFAULT_TLS_HOST.to_string()),
        None => (Scheme::Unix, DEFAULT_SOCKET.to_string()),
    };
    let wants_tls = tls_verify.is_some() || scheme == Scheme::Https;
    let tls = if wants_tls && scheme != Scheme::Unix {
        let (folder, source) = match var("DOCKER_CERT_PATH") {
            Some(path) => (PathBuf::from(path), format!("DOCKER_CERT_PATH={path}")),
            None => match config_dir(env) {
                Some(dir) => {
                    let source = format!("the docker config folder {}", dir.display());
                    (dir, source)
                }
                None => {
                    return Err(EndpointError::TlsFileMissing {
                        origin,
                        file: PathBuf::from("ca.pem"),
                        source_of_folder: "neither DOCKER_CERT_PATH nor HOME is set".into(),
                    });
                }
            },
        };
        reasons.push(format!("TLS files from {source}"));
        Some(tls_files(&origin, &folder, source)?)
    } else {
        if tls_verify.is_some() {
            reasons.push("TLS settings do not apply to a Unix socket".into());
        }
        None
    };
    endpoint(origin, scheme, &rest, tls, None, reasons)
}

/// A context from the docker CLI's store (or `default`, which means the environment).
fn from_context(
    origin: Origin,
    name: &str,
    env: &dyn Vars,
    reasons: Vec<String>,
) -> Result<Endpoint, EndpointError> {
    if name == DEFAULT_CONTEXT {
        let host = env.get("DOCKER_HOST");
        return from_environment(origin, host, env, reasons);
    }
    if !is_context_name(name) {
        return Err(EndpointError::BadContextName {
            origin,
            name: name.into(),
        });
    }
    let Some(config_dir) = config_dir(env) else {
        return Err(EndpointError::ContextNotFound {
            origin,
            name: name.into(),
            meta_file: PathBuf::from("~/.docker/contexts (neither DOCKER_CONFIG nor HOME is set)"),
        });
    };
    let id = context_id(name);
    let meta_file = config_dir.join("contexts/meta").join(&id).join("meta.json");
    let text = match read_text(&meta_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EndpointError::ContextNotFound {
                origin,
                name: name.into(),
                meta_file,
            });
        }
        Err(source) => {
            return Err(EndpointError::Unreadable {
                file: meta_file,
                source,
            });
        }
    };
    let meta: ContextMeta = serde_json::from_str(&text).map_err(|e| EndpointError::Invalid {
        file: meta_file.clone(),
        message: format!("not a docker context ({e})"),
    })?;
    let invalid = |message: &str| EndpointError::Invalid {
        file: meta_file.clone(),
        message: message.into(),
    };
    let docker = meta
        .endpoints
        .get("docker")
        .ok_or_else(|| invalid("the context has no docker endpoint"))?;
    let host = docker
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("the context's docker endpoint has no Host"))?;
    let mut reasons = reasons;
    reasons.push(format!(
        "context `{name}`: {host} ({})",
        meta_file.display()
    ));
    let (scheme, rest) = split_scheme(&origin, host)?;
    let tls_dir = config_dir.join("contexts/tls").join(&id).join("docker");
    let tls = if scheme == Scheme::Unix {
        None
    } else if docker.skip_tls_verify {
        return Err(EndpointError::UnverifiedTls {
            origin,
            what: format!("docker context `{name}` (SkipTLSVerify)"),
        });
    } else if tls_dir.is_dir() || scheme == Scheme::Https {
        let source = format!("docker context `{name}` ({})", tls_dir.display());
        reasons.push(format!("TLS files from {source}"));
        Some(tls_files(&origin, &tls_dir, source)?)
    } else {
        None
    };
    endpoint(origin, scheme, &rest, tls, Some(name.into()), reasons)
}

fn endpoint(
    origin: Origin,
    scheme: Scheme,
    rest: &str,
    tls: Option<TlsFiles>,
    context: Option<String>,
    mut reasons: Vec<String>,
) -> Result<Endpoint, EndpointError> {
    let transport = match scheme {
        Scheme::Unix => {
            let socket = if rest.is_empty() {
                DEFAULT_SOCKET
            } else {
                rest
            };
            Transport::Unix {
                socket: PathBuf::from(socket),
            }
        }
        Scheme::Tcp | Scheme::Https => Transport::Tcp {
            address: tcp_address(&origin, rest)?,
            tls,
        },
    };
    let host = match &transport {
        Transport::Unix { socket } => format!("unix://{}", socket.display()),
        Transport::Tcp { address, .. } => format!("tcp://{address}"),
    };
    if let Transport::Tcp { tls: None, .. } = &transport {
        reasons.push("plain TCP: no TLS (anyone who reaches this port controls the engine)".into());
    }
    Ok(Endpoint {
        host,
        transport,
        context,
        origin,
        reasons,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Unix,
    Tcp,
    /// `https://`: TCP with TLS required (the Rust Docker clients' spelling; the docker CLI has only `tcp://`).
    Https,
}

const EXPECTED_ADDRESS: &str =
    "expected unix:///path, tcp://host:port, https://host:port or host:port";

fn split_scheme(origin: &Origin, value: &str) -> Result<(Scheme, String), EndpointError> {
    let bad = |expected: &str| EndpointError::BadAddress {
        origin: origin.clone(),
        value: value.into(),
        expected: expected.into(),
    };
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once("://") else {
        if value.starts_with('/') {
            return Err(bad("a socket path is written unix:///path"));
        }
        // `host:port` without a scheme is TCP, as for the docker CLI.
        return Ok((Scheme::Tcp, value.to_string()));
    };
    match scheme {
        "unix" => Ok((Scheme::Unix, rest.to_string())),
        "tcp" => Ok((Scheme::Tcp, rest.to_string())),
        "https" => Ok((Scheme::Https, rest.to_string())),
        "ssh" => Err(bad(
            "ssh:// engines are not supported: forward the engine's socket (ssh -L) or use tcp:// with TLS",
        )),
        _ => Err(bad(EXPECTED_ADDRESS)),
    }
}

/// `host:port` from what follows `tcp://`; the docker CLI's defaults for a missing host or port.
fn tcp_address(origin: &Origin, rest: &str) -> Result<String, EndpointError> {
    let bad = |expected: &str| EndpointError::BadAddress {
        origin: origin.clone(),
        value: rest.into(),
        expected: expected.into(),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('@') || authority.contains('?') {
        return Err(bad("expected host:port, without a path or user"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs a closing ]"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("expected [ipv6]:port"))?,
            ),
        };
        (format!("[{host}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let port = match port {
        None | Some("") => DEFAULT_TCP_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
    };
    if host.chars().any(|c| c.is_whitespace()) {
        return Err(bad(EXPECTED_ADDRESS));
    }
    Ok(format!("{host}:{port}"))
}

/// The three files of a TLS folder; each must exist and hold what it should.
fn tls_files(origin: &Origin, folder: &Path, source: String) -> Result<TlsFiles, EndpointError> {
    let files = TlsFiles {
        ca: folder.join("ca.pem"),
        cert: folder.join("cert.pem"),
        key: folder.join("key.pem"),
        source,
    };
    for file in [&files.ca, &files.cert, &files.key] {
        if !file.is_file() {
            return Err(EndpointError::TlsFileMissing {
                origin: origin.clone(),
                file: file.clone(),
                source_of_folder: files.source.clone(),
            });
        }
    }
    check_tls_files(&files, origin)?;
    Ok(files)
}

/// Reads the three files and checks each holds what it should (the CA and the client
/// certificate at least one certificate, the key one private key), so that a bad file is named
/// before connecting rather than surfacing as a refused handshake.
fn check_tls_files(files: &TlsFiles, origin: &Origin) -> Result<(), EndpointError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let unusable = |file: &Path, problem: String| EndpointError::TlsFileUnusable {
        origin: origin.clone(),
        file: file.to_path_buf(),
        problem,
    };
    let read = |file: &Path| {
        crate::common::input::read_regular_file(file, MAX_FILE_BYTES)
            .map_err(|e| unusable(file, format!("cannot read it ({e})")))
    };
    for file in [&files.ca, &files.cert] {
        let bytes = read(file)?;
        let certificates = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(file, format!("not a PEM certificate ({e})")))?;
        if certificates.is_empty() {
            return Err(unusable(file, "holds no PEM certificate".into()));
        }
    }
    let bytes = read(&files.key)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| unusable(&files.key, format!("holds no PEM private key ({e})")))?;
    Ok(())
}

/// A small text file of the docker CLI's, read with a size cap (it is not packbox's to trust).
fn read_text(file: &Path) -> std::io::Result<String> {
    let bytes = crate::common::input::read_regular_file(file, MAX_FILE_BYTES)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The docker CLI's config folder: `DOCKER_CONFIG`, else `~/.docker`.
fn config_dir(env: &dyn Vars) -> Option<PathBuf> {
    let var = |name: &str| env.get(name);
    var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(home).join(".docker")))
}

/// `currentContext` of the docker CLI's config file, when the file exists and sets one.
fn current_context(config_file: &Path) -> Result<Option<String>, EndpointError> {
    #[derive(Deserialize)]
    struct ConfigFile {
        #[serde(rename = "currentContext", default)]
        current_context: Option<String>,
    }
    let text = match read_text(config_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EndpointError::Unreadable {
                file: config_file.into(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let config: ConfigFile = serde_json::from_str(&text).map_err(|e| EndpointError::Invalid {
        file: config_file.into(),
        message: format!("not the docker CLI's JSON config ({e})"),
    })?;
    Ok(config.current_context.filter(|name| !name.is_empty()))
}

/// `meta.json` of a stored context (only the fields packbox uses).
#[derive(Deserialize)]
struct ContextMeta {
    #[serde(rename = "Endpoints", default)]
    endpoints: BTreeMap<String, ContextEndpoint>,
}

#[derive(Deserialize)]
struct ContextEndpoint {
    #[serde(rename = "Host")]
    host: Option<String>,
    #[serde(rename = "SkipTLSVerify", default)]
    skip_tls_verify: bool,
}

/// The folder name of a context in the store: the SHA-256 of its name, in hex.
pub fn context_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// The docker CLI's rule for context names: `^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$`.
fn is_context_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment as the tests write it.
    struct Env(BTreeMap<String, String>);

    impl Vars for Env {
        fn get(&self, name: &str) -> Option<&str> {
            self.0
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// A docker config folder with optional TLS files and contexts.
    struct DockerConfig {
        dir: tempfile::TempDir,
    }

    impl DockerConfig {
        fn new() -> DockerConfig {
            DockerConfig {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        fn env(&self, pairs: &[(&str, &str)]) -> Env {
            let config = self.path().to_string_lossy().into_owned();
            let mut all: Vec<(&str, &str)> = pairs.to_vec();
            all.push(("DOCKER_CONFIG", &config));
            env(&all)
        }
        fn current_context(&self, name: &str) {
            std::fs::write(
                self.path().join("config.json"),
                format!(r#"{{"auths": {{}}, "currentContext": "{name}"}}"#),
            )
            .expect("config.json");
        }
        fn context(&self, name: &str, host: &str, skip_verify: bool) {
            let dir = self.path().join("contexts/meta").join(context_id(name));
            std::fs::create_dir_all(&dir).expect("meta dir");
            let meta = serde_json::json!({
                "Name": name,
                "Metadata": {"Description": "test"},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_verify}},
            });
            std::fs::write(dir.join("meta.json"), meta.to_string()).expect("meta.json");
        }
        fn context_tls(&self, name: &str) -> PathBuf {
            let dir = self
                .path()
                .join("contexts/tls")
                .join(context_id(name))
                .join("docker");
            write_tls(&dir);
            dir
        }
    }

    /// A TLS folder holding the test fixtures' PEM files.
    fn write_tls(dir: &Path) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        std::fs::create_dir_all(dir).expect("tls dir");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(fixtures.join(file), dir.join(file)).expect("pem");
        }
    }

    #[test]
    fn nothing_set_is_the_local_socket() {
        let e = resolve(None, &env(&[])).expect("resolves");
        assert_eq!(e.host, "unix:///var/run/docker.sock");
        assert_eq!(e.origin, Origin::Default);
        assert!(e.is_local_socket());
    }

    #[test]
    fn docker_host_unix_plain_tcp_and_bare_host_port() {
        let e = resolve(
            None,
            &env(&[("DOCKER_HOST", "unix:///run/user/1000/docker.sock")]),
        )
        .expect("unix");
        assert_eq!(
            e.transport,
            Transport::Unix {
                socket: "/run/user/1000/docker.sock".into()
            }
        );
        assert_eq!(e.origin, Origin::DockerHost);

        let e = resolve(None, &env(&[("DOCKER_HOST", "tcp://10.0.0.5:2375")])).expect("tcp");
        assert_eq!(
            e.transport,
            Transport::Tcp {
                address: "10.0.0.5:2375".into(),
                tls: None
            }
        );
        assert!(!e.is_local_socket());
        assert!(e.reasons.iter().any(|r| r.contains("plain TCP")));

        let e = resolve(None, &env(&[("DOCKER_HOST", "build-host:2375")])).expect("bare");
        assert_eq!(e.host, "tcp://build-host:2375");
    }

    #[test]
    fn tcp_defaults_follow_the_docker_cli() {
        let e = resolve(None, &env(&[("DOCKER_HOST", "tcp://")])).expect("empty");
        assert_eq!(e.host, "tcp://localhost:2375");
        let e = resolve(None, &env(&[("DOCKER_HOST", "tcp://engine")])).expect("no port");
        assert_eq!(e.host, "tcp://engine:2375");
        let e = resolve(None, &env(&[("DOCKER_HOST", "tcp://:2376/")])).expect("no host");
        assert_eq!(e.host, "tcp://localhost:2376");
        let e = resolve(None, &env(&[("DOCKER_HOST", "tcp://[::1]:2376")])).expect("ipv6");
        assert_eq!(e.host, "tcp://[::1]:2376");
        let e = resolve(None, &env(&[("DOCKER_HOST", "unix://")])).expect("empty unix");
        assert_eq!(e.host, "unix:///var/run/docker.sock");
    }

    #[test]
    fn bad_addresses_name_the_value_and_what_was_expected() {
        for (value, expected) in [
            ("ssh://me@host", "ssh -L"),
            ("npipe:////./pipe/docker_engine", "expected unix://"),
            ("http2://x", "expected unix://"),
            ("tcp://host:99999", "1 to 65535"),
            ("tcp://host:port", "1 to 65535"),
            ("tcp://host:2375/path", "without a path"),
            ("/var/run/docker.sock", "unix:///path"),
        ] {
            let err = resolve(None, &env(&[("DOCKER_HOST", value)])).expect_err(value);
            let text = err.to_string();
            assert!(text.starts_with("DOCKER_HOST: "), "{text}");
            assert!(text.contains(expected), "{value}: {text}");
            assert!(!err.is_engine_setting());
        }
    }

    #[test]
    fn tls_verify_takes_the_three_files_from_docker_cert_path() {
        let certs = tempfile::tempdir().expect("tempdir");
        write_tls(certs.path());
        let path = certs.path().to_string_lossy().into_owned();
        let e = resolve(
            None,
            &env(&[
                ("DOCKER_HOST", "tcp://docker:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", &path),
            ]),
        )
        .expect("tls");
        let tls = e.tls().expect("uses TLS");
        assert_eq!(tls.ca, certs.path().join("ca.pem"));
        assert_eq!(tls.cert, certs.path().join("cert.pem"));
        assert_eq!(tls.key, certs.path().join("key.pem"));
        assert!(tls.source.contains("DOCKER_CERT_PATH"));
        assert_eq!(e.host, "tcp://docker:2376");
    }

    #[test]
    fn any_non_empty_tls_verify_turns_tls_on_as_for_the_docker_cli() {
        let certs = tempfile::tempdir().expect("tempdir");
        write_tls(certs.path());
        let path = certs.path().to_string_lossy().into_owned();
        let e = resolve(
            None,
            &env(&[
                ("DOCKER_HOST", "tcp://docker:2376"),
                ("DOCKER_TLS_VERIFY", "0"),
                ("DOCKER_CERT_PATH", &path),
            ]),
        )
        .expect("tls");
        assert!(e.uses_tls());
        let e = resolve(
            None,
            &env(&[
                ("DOCKER_HOST", "tcp://docker:2375"),
                ("DOCKER_TLS_VERIFY", ""),
            ]),
        )
        .expect("empty means off");
        assert!(!e.uses_tls());
    }

    #[test]
    fn tls_files_default_to_the_docker_config_folder() {
        let config = DockerConfig::new();
        write_tls(config.path());
        let e = resolve(
            None,
            &config.env(&[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_TLS_VERIFY", "1")]),
        )
        .expect("tls");
        assert_eq!(e.tls().expect("tls").ca, config.path().join("ca.pem"));

        // HOME/.docker when DOCKER_CONFIG is not set.
        let home = tempfile::tempdir().expect("home");
        write_tls(&home.path().join(".docker"));
        let home_path = home.path().to_string_lossy().into_owned();
        let e = resolve(
            None,
            &env(&[
                ("HOME", &home_path),
                ("DOCKER_HOST", "tcp://h:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
            ]),
        )
        .expect("tls from home");
        assert_eq!(
            e.tls().expect("tls").key,
            home.path().join(".docker/key.pem")
        );
    }

    #[test]
    fn tls_without_an_address_is_localhost_2376() {
        let config = DockerConfig::new();
        write_tls(config.path());
        let e = resolve(None, &config.env(&[("DOCKER_TLS_VERIFY", "1")])).expect("tls");
        assert_eq!(e.host, "tcp://localhost:2376");
        assert!(e.uses_tls());
    }

    #[test]
    fn https_scheme_requires_tls() {
        let config = DockerConfig::new();
        write_tls(config.path());
        let e = resolve(None, &config.env(&[("DOCKER_HOST", "https://h:2376")])).expect("https");
        assert!(e.uses_tls());
        assert_eq!(e.host, "tcp://h:2376");
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let certs = tempfile::tempdir().expect("tempdir");
        write_tls(certs.path());
        std::fs::remove_file(certs.path().join("key.pem")).expect("rm");
        let path = certs.path().to_string_lossy().into_owned();
        let err = resolve(
            None,
            &env(&[
                ("DOCKER_HOST", "tcp://h:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", &path),
            ]),
        )
        .expect_err("key missing");
        let text = err.to_string();
        assert!(text.contains("key.pem is missing"), "{text}");
        assert!(text.contains(&path), "{text}");
        assert!(err.hint().is_some());
    }

    #[test]
    fn tls_without_verification_is_refused() {
        let err = resolve(
            None,
            &env(&[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_TLS", "1")]),
        )
        .expect_err("no verify");
        assert!(err.to_string().contains("skips verifying"), "{err}");

        let config = DockerConfig::new();
        config.context("lax", "tcp://h:2376", true);
        let err = resolve(None, &config.env(&[("DOCKER_CONTEXT", "lax")])).expect_err("skip");
        assert!(err.to_string().contains("SkipTLSVerify"), "{err}");
    }

    #[test]
    fn tls_settings_do_not_apply_to_a_unix_socket() {
        let e = resolve(
            None,
            &env(&[
                ("DOCKER_HOST", "unix:///var/run/docker.sock"),
                ("DOCKER_TLS_VERIFY", "1"),
            ]),
        )
        .expect("unix");
        assert!(!e.uses_tls());
    }

    #[test]
    fn docker_context_reads_the_store() {
        let config = DockerConfig::new();
        config.context("ci", "tcp://ci-engine:2376", false);
        let tls_dir = config.context_tls("ci");
        let e = resolve(None, &config.env(&[("DOCKER_CONTEXT", "ci")])).expect("context");
        assert_eq!(e.host, "tcp://ci-engine:2376");
        assert_eq!(e.context.as_deref(), Some("ci"));
        assert_eq!(e.origin, Origin::DockerContext);
        assert_eq!(e.tls().expect("tls").ca, tls_dir.join("ca.pem"));
    }

    #[test]
    fn a_context_without_tls_material_is_plain() {
        let config = DockerConfig::new();
        config.context("plain", "tcp://h:2375", false);
        let e = resolve(None, &config.env(&[("DOCKER_CONTEXT", "plain")])).expect("context");
        assert!(!e.uses_tls());
        config.context("local", "unix:///run/docker.sock", false);
        let e = resolve(None, &config.env(&[("DOCKER_CONTEXT", "local")])).expect("context");
        assert!(e.is_local_socket());
    }

    #[test]
    fn current_context_of_the_config_file_is_used_last() {
        let config = DockerConfig::new();
        config.context("remote", "tcp://r:2375", false);
        config.current_context("remote");
        let e = resolve(None, &config.env(&[])).expect("current");
        assert_eq!(e.host, "tcp://r:2375");
        assert_eq!(
            e.origin,
            Origin::CurrentContext {
                config_file: config.path().join("config.json")
            }
        );
    }

    #[test]
    fn docker_host_beats_docker_context_which_beats_the_current_context() {
        let config = DockerConfig::new();
        config.context("ctx-a", "tcp://a:2375", false);
        config.context("ctx-b", "tcp://b:2375", false);
        config.current_context("ctx-b");
        let e = resolve(
            None,
            &config.env(&[("DOCKER_HOST", "tcp://h:2375"), ("DOCKER_CONTEXT", "ctx-a")]),
        )
        .expect("host wins");
        assert_eq!(e.host, "tcp://h:2375");
        assert!(
            e.reasons
                .iter()
                .any(|r| r.contains("DOCKER_CONTEXT=ctx-a is set but not used"))
        );
        let e = resolve(None, &config.env(&[("DOCKER_CONTEXT", "ctx-a")])).expect("context wins");
        assert_eq!(e.host, "tcp://a:2375");
    }

    #[test]
    fn engine_setting_beats_everything() {
        let config = DockerConfig::new();
        config.context("ctx-a", "tcp://a:2375", false);
        let vars = config.env(&[("DOCKER_HOST", "tcp://h:2375"), ("DOCKER_CONTEXT", "x")]);
        let e = resolve(Some("tcp://flag:2375"), &vars).expect("address");
        assert_eq!(e.host, "tcp://flag:2375");
        assert_eq!(
            e.origin,
            Origin::Flag {
                name: "--engine".into()
            }
        );
        let e = resolve(Some("ctx-a"), &vars).expect("context name");
        assert_eq!(e.host, "tcp://a:2375");
        let e = resolve(Some("flag-host:2376"), &vars).expect("host:port");
        assert_eq!(e.host, "tcp://flag-host:2376");
        let e = resolve(Some("  "), &vars).expect("blank is unset");
        assert_eq!(e.origin, Origin::DockerHost);
    }

    #[test]
    fn the_default_context_means_the_environment() {
        let config = DockerConfig::new();
        config.current_context("default");
        let e = resolve(None, &config.env(&[])).expect("default");
        assert_eq!(e.host, "unix:///var/run/docker.sock");
        let e = resolve(
            Some("default"),
            &config.env(&[("DOCKER_HOST", "tcp://h:2375")]),
        )
        .expect("default with DOCKER_HOST");
        assert_eq!(e.host, "tcp://h:2375");
    }

    #[test]
    fn a_context_that_does_not_exist_is_named_with_its_file() {
        let config = DockerConfig::new();
        let err = resolve(None, &config.env(&[("DOCKER_CONTEXT", "nope")])).expect_err("missing");
        let text = err.to_string();
        assert!(
            text.starts_with("DOCKER_CONTEXT: docker context `nope` does not exist"),
            "{text}"
        );
        assert!(text.contains(&context_id("nope")), "{text}");
        assert!(!err.is_engine_setting());
        let err = resolve(Some("nope"), &config.env(&[])).expect_err("missing via flag");
        assert!(err.is_engine_setting(), "the user's own flag: exit 2");
        let err = resolve(Some("bad name!"), &config.env(&[])).expect_err("bad name");
        assert!(matches!(err, EndpointError::BadContextName { .. }));
        assert!(err.is_engine_setting());
    }

    #[test]
    fn broken_docker_files_are_named() {
        let config = DockerConfig::new();
        std::fs::write(config.path().join("config.json"), "{not json").expect("write");
        let err = resolve(None, &config.env(&[])).expect_err("bad config");
        assert!(err.to_string().contains("config.json"), "{err}");

        let config = DockerConfig::new();
        let dir = config.path().join("contexts/meta").join(context_id("odd"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("meta.json"), r#"{"Name":"odd","Endpoints":{}}"#).expect("meta");
        let err = resolve(None, &config.env(&[("DOCKER_CONTEXT", "odd")])).expect_err("no docker");
        assert!(err.to_string().contains("no docker endpoint"), "{err}");
    }

    #[test]
    fn the_context_id_is_the_sha256_of_the_name() {
        // `printf ci | sha256sum`: the folder `docker context create ci` makes.
        assert_eq!(
            context_id("ci"),
            "1b158839f8aa339e89bb50b1603e90ec68e0fd5565fe10a7cb32729fddf7070a"
        );
    }

    #[test]
    fn context_names_follow_the_docker_cli_rule() {
        assert!(is_context_name("ci"));
        assert!(is_context_name("my.remote+1_x-y"));
        assert!(!is_context_name("a"));
        assert!(!is_context_name("-x"));
        assert!(!is_context_name("a/b"));
        assert!(!is_context_name("has space"));
    }

    #[test]
    fn unusable_tls_files_are_named_with_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tls(dir.path());
        std::fs::write(dir.path().join("ca.pem"), "placeholder").expect("write");
        let err = tls_files(&Origin::DockerHost, dir.path(), "test".into()).expect_err("not PEM");
        let text = err.to_string();
        assert!(text.contains("ca.pem"), "{text}");
        assert!(text.contains("no PEM certificate"), "{text}");
    }

    #[test]
    fn real_pem_files_pass_the_check_and_a_key_in_place_of_a_certificate_does_not() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        let files = tls_files(&Origin::DockerHost, &fixtures, "fixtures".into()).expect("files");

        let swapped = TlsFiles {
            cert: fixtures.join("key.pem"),
            ..files.clone()
        };
        let err =
            check_tls_files(&swapped, &Origin::DockerHost).expect_err("a key is no certificate");
        assert!(err.to_string().contains("cert") || err.to_string().contains("key.pem"));

        let keyless = TlsFiles {
            key: fixtures.join("cert.pem"),
            ..files
        };
        let err = check_tls_files(&keyless, &Origin::DockerHost).expect_err("no key");
        assert!(err.to_string().contains("no PEM private key"), "{err}");
    }
}
