//! `packbox run --server https://...`: a server behind a TLS proxy (how the README says to put
//! one on a network). The client trusts the CA of `client.ca_file` (`PACKBOX_SERVER_CA_FILE`);
//! a certificate it does not trust ends the run at once (exit 125, one connection, what to set),
//! and a CA file without certificates is an input error naming the file.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::server::*;
use common::*;

const TOKEN: &str = "tls-test-token-0123456789";

/// A TLS-terminating proxy on a loopback port in front of a test server, with a certificate for
/// `127.0.0.1` signed by a CA made for this test.
struct TlsProxy {
    url: String,
    /// The CA's certificate, PEM.
    ca_file: PathBuf,
    /// TCP connections the proxy accepted.
    connections: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl TlsProxy {
    fn in_front_of(server_url: &str) -> TlsProxy {
        let upstream: SocketAddr = server_url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("the server listens on IP:PORT");
        let dir = tempfile::tempdir().expect("a folder");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "packbox test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA");

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy {
            url: format!("https://127.0.0.1:{port}"),
            ca_file,
            connections,
            _runtime: runtime,
            _dir: dir,
        }
    }
}

fn remote(url: &str, ca_file: Option<&Path>, extra: &[&str]) -> Finished {
    let mut args = vec!["run", "--server", url, "svc.tell", "-p", "label=over-tls"];
    args.extend(extra);
    let ca = ca_file.map(|p| p.display().to_string());
    let mut env = vec![("PACKBOX_TOKEN", TOKEN)];
    if let Some(ca) = &ca {
        env.push(("PACKBOX_SERVER_CA_FILE", ca.as_str()));
    }
    packbox(&args, &env)
}

#[test]
fn a_server_behind_a_tls_proxy_is_reached_with_its_ca_and_refused_without() {
    require_engine();
    let server = Server::start(ServerOptions {
        env: vec![("PACKBOX_SERVE_TOKEN".into(), TOKEN.into())],
        ..ServerOptions::default()
    });
    let proxy = TlsProxy::in_front_of(&server.url);

    let plain = remote(&server.url, None, &[]);
    assert_eq!(plain.code(), 0, "{}", plain.stderr());
    let trusted = remote(&proxy.url, Some(&proxy.ca_file), &[]);
    assert_eq!(trusted.code(), 0, "{}", trusted.stderr());
    assert_eq!(
        trusted.stdout(),
        plain.stdout(),
        "the same outcome over TLS"
    );
    assert!(
        trusted.stdout().contains("over-tls"),
        "{}",
        trusted.stdout()
    );
    let followed = remote(&proxy.url, Some(&proxy.ca_file), &["--follow"]);
    assert_eq!(followed.code(), 0, "{}", followed.stderr());
    assert!(
        followed.stdout().contains("over-tls"),
        "{}",
        followed.stdout()
    );

    // The system's trust store does not hold the test CA: refused at once, not retried.
    let before = proxy.connections.load(Ordering::SeqCst);
    let untrusted = remote(&proxy.url, None, &[]);
    assert_eq!(untrusted.code(), 125, "{}", untrusted.stderr());
    let stderr = untrusted.stderr();
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert!(stderr.contains(&proxy.url), "names the server: {stderr}");
    assert!(
        stderr.contains("PACKBOX_SERVER_CA_FILE"),
        "says what to set: {stderr}"
    );
    assert_eq!(
        stderr.matches("invalid peer certificate").count(),
        1,
        "said once, not again by the verifier's own log: {stderr}"
    );
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst) - before,
        1,
        "one handshake, no retries"
    );
}

#[test]
fn a_ca_file_without_certificates_is_an_input_error_naming_it() {
    let dir = tempfile::tempdir().expect("a folder");
    let bogus = dir.path().join("not-a-ca.pem");
    std::fs::write(&bogus, "hello\n").expect("write");
    // No server is needed: the file is refused before any connection.
    let refused = remote("https://127.0.0.1:9", Some(&bogus), &[]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("client.ca_file") && refused.stderr().contains("not-a-ca.pem"),
        "{}",
        refused.stderr()
    );
}
