//! The HTTP client of `packbox run --server`: plain HTTP to a server on its own port, or HTTPS to
//! a TLS proxy in front of it, trusting the system's certificates or only those of
//! `client.ca_file` (a private CA), as `curl --cacert` does.
//!
//! A certificate the client does not trust is not a server that is down: it is reported at once
//! with what to set, never retried.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

/// Why the client could not be made: a `client.ca_file` that holds no usable certificate.
#[derive(Debug, thiserror::Error)]
#[error("client.ca_file {path}: {reason}")]
pub struct TrustError {
    path: String,
    reason: String,
}

/// The client for `server`, trusting `ca_file`'s certificates alone when it is given.
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, TrustError> {
    // reqwest is built without a crypto provider of its own (no second TLS stack next to the one
    // the engine connection uses): rustls' ring provider serves both. Installing it twice is
    // harmless; the first one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(path) = ca_file {
        builder = builder.tls_certs_only(certificates(path)?);
    }
    builder.build().map_err(|e| TrustError {
        path: ca_file.map_or_else(String::new, |p| p.display().to_string()),
        reason: packbox::error_chain(&e),
    })
}

/// The PEM certificates of `path`: at least one, or an error naming the file.
fn certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, TrustError> {
    let fail = |reason: String| TrustError {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("expected PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(fail("expected PEM certificates, found none".into()));
    }
    Ok(certificates)
}

/// Whether a bearer token sent to `base` would cross a network unencrypted: plain `http://` to
/// a host that is not this machine's loopback.
pub fn token_sent_in_clear(base: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !host.eq_ignore_ascii_case("localhost"),
    }
}

/// The TLS failure behind a request error, when there is one: the handshake with the server (or
/// its proxy) failed, which waiting will not mend.
pub fn tls_failure(error: &reqwest::Error) -> Option<String> {
    rustls_error(error).map(ToString::to_string)
}

/// The rustls error in `error`'s chain. An I/O error hides the error it wraps from `source()`
/// (and the TLS stream wraps rustls' error in two of them), so those are opened too.
fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn StdError + 'static) = inner;
        if let Some(tls) = rustls_error(inner) {
            return Some(tls);
        }
    }
    error.source().and_then(rustls_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = client(Some(&empty)).expect_err("no certificate");
        let text = err.to_string();
        assert!(text.starts_with("client.ca_file "), "{text}");
        assert!(text.contains("ca.pem"), "{text}");
        assert!(text.contains("PEM certificates"), "{text}");
        let missing = dir.path().join("missing.pem");
        let text = client(Some(&missing)).expect_err("missing").to_string();
        assert!(text.contains("missing.pem: cannot be read"), "{text}");
    }

    #[test]
    fn a_token_is_in_clear_over_http_off_loopback_only() {
        assert!(!token_sent_in_clear("http://127.0.0.1:8080"));
        assert!(!token_sent_in_clear("http://localhost:8080"));
        assert!(!token_sent_in_clear("http://[::1]:8080"));
        assert!(!token_sent_in_clear("https://runner.example:8443"));
        assert!(token_sent_in_clear("http://runner.example:8080"));
        assert!(token_sent_in_clear("http://10.0.0.7:8080"));
    }

    #[test]
    fn without_a_ca_file_the_system_store_is_used() {
        client(None).expect("a client");
    }
}
