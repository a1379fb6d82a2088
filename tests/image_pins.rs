//! No image by an unpinned name: a catalog image without a recipe is pulled only when pinned by
//! digest. The registry here is a listener of the test's own on loopback, so the test sees
//! whether the engine ever contacted it: never for an unpinned name, at once for a pinned one.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A "registry" on 127.0.0.1 that answers every connection with 404 and counts them.
struct LoopbackRegistry {
    port: u16,
    connections: Arc<Mutex<usize>>,
    stop: Arc<Mutex<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackRegistry {
    fn start() -> LoopbackRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(Mutex::new(false));
        let (seen, stopped) = (Arc::clone(&connections), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !*stopped.lock().expect("lock") {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        *seen.lock().expect("lock") += 1;
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buffer = [0u8; 4096];
                        let _ = stream.read(&mut buffer);
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        LoopbackRegistry {
            port,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        *self.stop.lock().expect("lock") = true;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A user catalog whose `ruby` runtime has one version, named `image`, without a recipe.
fn ruby_catalog(image: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ruby.yaml"),
        format!(
            "name: ruby\naliases: [ruby]\ninterpreter: [ruby]\nversions:\n  - version: '3.3'\n    image: {image}\n    probe: {{command: [ruby, -v], pattern: 'ruby (\\d+\\.\\d+\\.\\d+)'}}\n"
        ),
    )
    .expect("write catalog");
    dir
}

/// `packbox runtimes verify --json` for the ruby runtime of `catalog`: its one version.
fn verify_ruby(catalog: &tempfile::TempDir) -> Value {
    let catalog = catalog.path().to_string_lossy().into_owned();
    let run = packbox(
        &["--catalog", &catalog, "runtimes", "verify", "--json"],
        &[("PACKBOX_RUNTIMES", "ruby")],
    );
    let report = run.json();
    let versions = report.as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 1, "{report}\n{}", run.stderr());
    versions[0].clone()
}

#[test]
fn an_unpinned_catalog_image_is_refused_and_never_pulled() {
    require_engine();
    let registry = LoopbackRegistry::start();
    let image = format!("127.0.0.1:{}/packbox-test/ruby:3.3", registry.port);
    let catalog = ruby_catalog(&image);
    let version = verify_ruby(&catalog);
    assert_eq!(version["available"], false, "{version}");
    let reason = version["reason"].as_str().unwrap_or("");
    assert!(reason.contains("pinned by digest"), "{reason}");
    assert!(!image_exists(&image));
    assert_eq!(
        registry.connections(),
        0,
        "the engine contacted the registry"
    );
}

#[test]
fn a_pinned_catalog_image_is_pulled_from_its_registry() {
    require_engine();
    let registry = LoopbackRegistry::start();
    let image = format!(
        "127.0.0.1:{}/packbox-test/ruby@sha256:{}",
        registry.port,
        "0123456789abcdef".repeat(4)
    );
    let catalog = ruby_catalog(&image);
    let version = verify_ruby(&catalog);
    assert_eq!(version["available"], false, "{version}");
    let reason = version["reason"].as_str().unwrap_or("");
    assert!(reason.contains("could not be pulled"), "{reason}");
    // The engine asked the pinned image's registry (and got nothing it could use).
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(registry.connections() > 0, "no pull reached the registry");
    assert!(!image_exists(&image));
}
