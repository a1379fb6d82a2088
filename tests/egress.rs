//! Egress grants against the real engine: an action with a grant reaches the destinations it
//! was granted, by name, over HTTP and HTTPS, with curl, Python's urllib and Node's fetch through
//! packbox's proxy; everything else fails closed and shows in the run's audit. Every destination
//! is a server the test starts in a container on a network the test made; names resolve only
//! through the proxy's own host table (`egress.hosts`), so no lookup leaves the machine.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn egress_packs() -> PathBuf {
    repo_root().join("tests/fixtures/egress")
}

/// The proxy's program, as cargo built it for these tests.
const PROXY_BINARY: &str = env!("CARGO_BIN_EXE_packbox-egress-proxy");

/// The docker CLI against one engine: the local one, or another through its environment.
#[derive(Clone, Default)]
struct Docker {
    env: Vec<(String, String)>,
}

impl Docker {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("docker runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The destinations of one test: a network it made and two servers on it (`granted` and
/// `other`), removed when dropped.
struct Destinations {
    docker: Docker,
    network: String,
    servers: Vec<String>,
    /// The test CA's certificate, which signed the servers' HTTPS certificate.
    ca: String,
}

impl Destinations {
    fn start(docker: &Docker) -> Destinations {
        let network = format!(
            "egress-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        docker.ok(&[
            "network",
            "create",
            "--label",
            "packbox.test=egress",
            &network,
        ]);
        let (ca, cert, key) = certificates();
        let mut made = Destinations {
            docker: docker.clone(),
            network: network.clone(),
            servers: Vec::new(),
            ca,
        };
        let script = std::fs::read_to_string(egress_packs().join("server.py")).expect("script");
        for name in ["granted", "other"] {
            let container = format!("{network}-{name}");
            docker.ok(&[
                "run",
                "-d",
                "--label",
                "packbox.test=egress",
                "--name",
                &container,
                "--network",
                &network,
                "-e",
                &format!("SERVER_NAME={name}"),
                "-e",
                &format!("SERVER_CERT={cert}"),
                "-e",
                &format!("SERVER_KEY={key}"),
                "packbox/python:3.11",
                "python3",
                "-u",
                "-c",
                &script,
            ]);
            made.servers.push(container);
        }
        for server in made.servers.clone() {
            wait_until(&format!("{server} is ready"), || {
                made.log(&server).contains("ready")
            });
        }
        made
    }

    fn server(&self, name: &str) -> String {
        format!("{}-{name}", self.network)
    }

    fn ip(&self, name: &str) -> String {
        self.docker.ok(&[
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network
            ),
            &self.server(name),
        ])
    }

    /// The gateway of the test's network: an address of the engine's host.
    fn gateway(&self) -> String {
        self.docker.ok(&[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.network,
        ])
    }

    /// What reached a server so far, one line each.
    fn log(&self, server: &str) -> String {
        let output = self.docker.run(&["logs", server]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The config file granting the `egress` and `egressnode` packs `granted.test` (HTTP and
    /// HTTPS) and a few names that resolve where no grant may reach.
    fn config(&self, dir: &Path, rules: &str, extra_hosts: &[(&str, String)]) -> PathBuf {
        let granted = self.ip("granted");
        let other = self.ip("other");
        let mut hosts = vec![
            ("granted.test", granted.clone()),
            ("needed.test", granted),
            ("other.test", other),
            ("rebind.test", "127.0.0.1".to_string()),
            ("hostgw.test", self.gateway()),
            ("metadata.test", "169.254.169.254".to_string()),
        ];
        hosts.extend(extra_hosts.iter().map(|(k, v)| (*k, v.clone())));
        let hosts: Vec<String> = hosts
            .iter()
            .map(|(name, ip)| format!("    {name}: [{ip}]"))
            .collect();
        let text = format!(
            "{rules}\negress:\n  networks: [{}]\n  proxy_binary: {PROXY_BINARY}\n  hosts:\n{}\n",
            self.network,
            hosts.join("\n")
        );
        let file = dir.join("config.yaml");
        std::fs::write(&file, text).expect("config file");
        file
    }
}

impl Drop for Destinations {
    fn drop(&mut self) {
        for server in &self.servers {
            let _ = self.docker.run(&["rm", "-f", server]);
        }
        let _ = self.docker.run(&["network", "rm", &self.network]);
    }
}

/// The rules every test grants unless it says otherwise.
const RULES: &str = r#"network:
  - match: "egress.*"
    egress: ["granted.test:8000,8443", "rebind.test:8000", "hostgw.test:8000,2376", "metadata.test:80", "neighbour.test:7000", "hostport.test:47000"]
  - match: "egressnode.*"
    egress: ["granted.test:8443"]
"#;

/// A CA, and a certificate it signed for the test names: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "packbox egress test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(vec!["granted.test".to_string(), "needed.test".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `packbox --config FILE run --packs DIR ACTION --json ARGS...` with `env`.
fn run(config: &Path, action: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let packs = egress_packs().to_string_lossy().into_owned();
    let config = config.to_string_lossy().into_owned();
    let mut all = vec![
        "--config",
        config.as_str(),
        "run",
        "--packs",
        packs.as_str(),
        action,
        "--json",
    ];
    all.extend_from_slice(args);
    packbox(&all, env)
}

/// The local networks a packbox process made that are still there.
fn networks_of(docker: &Docker, pid: u32) -> Vec<String> {
    docker
        .ok(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=packbox.owner_pid={pid}"),
        ])
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_nothing_left(docker: &Docker, finished: &Finished) {
    let containers = docker.ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=packbox.owner_pid={}", finished.pid),
    ]);
    assert!(containers.is_empty(), "containers left: {containers}");
    let networks = networks_of(docker, finished.pid);
    assert!(networks.is_empty(), "networks left: {networks:?}");
}

/// The outcome's `result` of an action that prints `{ok, body|error}`.
fn fetched(finished: &Finished) -> (Value, Value) {
    assert_eq!(finished.code(), 0, "{}", finished.stderr());
    let outcome = finished.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    (outcome["result"].clone(), outcome)
}

/// The audit's connections to `host:port`.
fn connections<'a>(outcome: &'a Value, host: &str, port: u64) -> Vec<&'a Value> {
    outcome["egress"]["connections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["host"] == host && c["port"] == port)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn granted_destinations_answer_by_name_with_curl_and_urllib_over_http_and_https() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), RULES, &[]);
    let ca = format!("ca={}", destinations.ca);
    for action in ["egress.curl", "egress.urllib"] {
        for (url, port, body) in [
            (
                "http://granted.test:8000/plain",
                8000,
                "hello from granted on 8000",
            ),
            (
                "https://granted.test:8443/tls",
                8443,
                "hello from granted on 8443",
            ),
        ] {
            let finished = run(
                &config,
                action,
                &["-p", &format!("url={url}"), "-p", &ca],
                &[],
            );
            let (result, outcome) = fetched(&finished);
            assert_eq!(result["ok"], true, "{action} {url}: {outcome}");
            assert_eq!(
                result["body"].as_str().map(str::trim),
                Some(body),
                "{action} {url}"
            );
            assert_eq!(outcome["sandbox"]["network"], "egress", "{outcome}");
            let reached = connections(&outcome, "granted.test", port);
            assert_eq!(reached.len(), 1, "{action} {url}: {}", outcome["egress"]);
            assert_eq!(reached[0]["allowed"], true);
            assert!(
                reached[0]["bytes_sent"].as_u64() > Some(0),
                "{}",
                reached[0]
            );
            assert!(
                reached[0]["bytes_received"].as_u64() > Some(0),
                "{}",
                reached[0]
            );
            assert_eq!(outcome["egress"]["refused"], 0, "{}", outcome["egress"]);
            assert_eq!(
                outcome["egress"]["granted"][0]["granted_by"], "config rule `match: egress.*`",
                "{}",
                outcome["egress"]
            );
            // Host and port only: the path never reaches the audit.
            assert!(!outcome["egress"].to_string().contains("/plain"));
            assert_nothing_left(&docker, &finished);
        }
    }
    let log = destinations.log(&destinations.server("granted"));
    assert!(log.contains("http 8000 /plain"), "{log}");
    assert!(log.contains("http 8443 /tls"), "{log}");
}

#[test]
fn node_fetch_reaches_a_granted_https_server_through_a_proxy_agent() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), RULES, &[]);
    let ca = format!("ca={}", destinations.ca);
    let finished = run(
        &config,
        "egressnode.fetch",
        &["-p", "url=https://granted.test:8443/node", "-p", &ca],
        &build_env(),
    );
    let (result, outcome) = fetched(&finished);
    assert_eq!(result["ok"], true, "{outcome}");
    assert_eq!(
        result["body"].as_str().map(str::trim),
        Some("hello from granted on 8443")
    );
    assert_eq!(connections(&outcome, "granted.test", 8443).len(), 1);
    // Another port is not granted to this pack.
    let refused = run(
        &config,
        "egressnode.fetch",
        &["-p", "url=http://granted.test:8000/node"],
        &build_env(),
    );
    let (result, outcome) = fetched(&refused);
    assert_eq!(result["ok"], false, "{outcome}");
    let audit = connections(&outcome, "granted.test", 8000);
    assert_eq!(audit.len(), 1, "{}", outcome["egress"]);
    assert_eq!(audit[0]["allowed"], false);
    assert_nothing_left(&docker, &refused);
    assert!(
        !destinations
            .log(&destinations.server("granted"))
            .contains("http 8000 /node")
    );
}

/// A listener on every address of this machine, standing for the host's own services (an engine
/// API on TCP, ...): it must never be reached from an action.
struct HostService {
    listener: TcpListener,
    port: u16,
}

impl HostService {
    fn start() -> HostService {
        let listener = TcpListener::bind("0.0.0.0:0").expect("bind on the host");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        HostService { listener, port }
    }

    fn was_reached(&self) -> bool {
        match self.listener.accept() {
            Ok((mut stream, _)) => {
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte);
                true
            }
            Err(_) => false,
        }
    }
}

#[test]
fn everything_not_granted_fails_closed_and_shows_in_the_audit() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let host = HostService::start();
    let dir = tempfile::tempdir().expect("dir");
    let gateway = destinations.gateway();
    let bridge_gateway = docker.ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        "bridge",
    ]);
    let rules = RULES.replace(
        "hostport.test:47000",
        &format!("hostport.test:{}", host.port),
    );
    let config = destinations.config(
        dir.path(),
        &rules,
        &[("hostport.test", bridge_gateway.clone())],
    );
    let granted = destinations.ip("granted");
    let other = destinations.ip("other");
    let connect = |target: &str, host_header: &str| {
        format!("CONNECT {target} HTTP/1.1\r\nHost: {host_header}\r\n\r\n")
    };
    let requests: Vec<(String, &str, &str)> = vec![
        (
            connect("other.test:8000", "other.test:8000"),
            "403",
            "not granted",
        ),
        (
            connect("granted.test:8001", "granted.test:8001"),
            "403",
            "not granted",
        ),
        (
            connect(&format!("{granted}:8000"), &format!("{granted}:8000")),
            "403",
            "not granted",
        ),
        (
            connect("rebind.test:8000", "rebind.test:8000"),
            "403",
            "loopback",
        ),
        (
            connect("metadata.test:80", "metadata.test:80"),
            "403",
            "metadata",
        ),
        (
            connect("hostgw.test:8000", "hostgw.test:8000"),
            "403",
            "the host",
        ),
        (
            connect(
                &format!("hostport.test:{}", host.port),
                &format!("hostport.test:{}", host.port),
            ),
            "403",
            "",
        ),
        (
            connect("http://granted.test:8000/", "granted.test:8000"),
            "400",
            "authority form",
        ),
        (
            connect("granted.test:8000", "other.test:8000"),
            "400",
            "Host header",
        ),
        (
            connect("GRANTED.test:8000", "GRANTED.test:8000"),
            "400",
            "lower case",
        ),
        (
            connect("granted.test.:8000", "granted.test.:8000"),
            "400",
            "trailing dot",
        ),
        (
            "GET http://granted.test@other.test:8000/ HTTP/1.1\r\nHost: other.test:8000\r\n\r\n"
                .into(),
            "400",
            "userinfo",
        ),
        (
            "GET http://other.test:8000/ HTTP/1.1\r\nHost: granted.test:8000\r\n\r\n".into(),
            "400",
            "Host header",
        ),
        (
            "GET / HTTP/1.1\r\nHost: granted.test:8000\r\n\r\n".into(),
            "400",
            "origin form",
        ),
    ];
    let params = serde_json::json!({
        "tcp": [
            format!("{other}:9000"), format!("{granted}:9000"), format!("{granted}:8000"),
            format!("{gateway}:{}", host.port), format!("{bridge_gateway}:{}", host.port),
        ],
        "udp": [format!("{other}:9001"), format!("{granted}:9001")],
        "dns": [other.clone(), granted.clone()],
        "proxy_requests": requests.iter().map(|(raw, _, _)| raw.clone()).collect::<Vec<_>>(),
    });
    let params_file = dir.path().join("params.json");
    std::fs::write(&params_file, params.to_string()).expect("params");
    let finished = run(
        &config,
        "egress.probe",
        &["--params-file", &params_file.to_string_lossy()],
        &[],
    );
    let (report, outcome) = fetched(&finished);
    // Straight to any address: no way.
    for key in [
        format!("tcp {other}:9000"),
        format!("tcp {granted}:9000"),
        format!("tcp {granted}:8000"),
        format!("tcp {gateway}:{}", host.port),
        format!("tcp {bridge_gateway}:{}", host.port),
        format!("dns {other}"),
        format!("dns {granted}"),
        "resolve granted.test".to_string(),
        "tcp gateway:22".to_string(),
        "tcp gateway:2375".to_string(),
        "tcp gateway:2376".to_string(),
    ] {
        assert_eq!(report[&key]["ok"], false, "{key}: {}", report[&key]);
    }
    // Through the proxy: each refused, with the reason.
    for (raw, status, _) in &requests {
        let key = format!("proxy {}", raw.lines().next().unwrap_or_default());
        let answer = report[&key]["detail"].as_str().unwrap_or_default();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{key}: {}",
            report[&key]
        );
    }
    let audit = outcome["egress"].clone();
    assert_eq!(audit["attempts"], requests.len(), "{audit}");
    assert_eq!(audit["refused"], requests.len(), "{audit}");
    let refusals: Vec<String> = audit["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| c["refusal"].as_str().unwrap_or_default().to_string())
        .collect();
    for (raw, _, reason) in &requests {
        assert!(
            refusals.iter().any(|r| r.contains(reason)),
            "{raw:?}: no refusal saying {reason:?} in {refusals:?}"
        );
    }
    // Nothing reached any server or the host by any way.
    let granted_log = destinations.log(&destinations.server("granted"));
    let other_log = destinations.log(&destinations.server("other"));
    for log in [&granted_log, &other_log] {
        for marker in ["tcp 9000", "udp 9001", "dns 53", "http 8001", "http 8000"] {
            assert!(!log.contains(marker), "{marker} reached a server:\n{log}");
        }
    }
    assert!(!host.was_reached(), "the host's service was reached");
    // The sandbox from inside: lo and eth0, no IPv6, routes on eth0 only.
    assert_eq!(report["interfaces"], serde_json::json!(["eth0", "lo"]));
    assert_eq!(report["ipv6"], serde_json::json!([]));
    for route in report["routes"].as_array().expect("routes") {
        assert_eq!(route[0], "eth0", "{route}");
    }
    assert_nothing_left(&docker, &finished);
}

#[test]
fn a_run_on_another_network_is_unreachable_and_alone_on_its_own() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), RULES, &[]);
    let packs = egress_packs().to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let mut listener = spawn_packbox(&[
        "--config",
        &config_arg,
        "run",
        "--packs",
        &packs,
        "egress.listen",
        "-p",
        "seconds=15",
        "--json",
    ]);
    let filters = [
        format!("label=packbox.owner_pid={}", listener.id()),
        "label=packbox.action=egress.listen".to_string(),
    ];
    let container = wait_for_running(&filters);
    let network = docker.ok(&[
        "inspect",
        "--format",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}",
        &container,
    ]);
    let address = docker.ok(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &container,
    ]);
    // On its network: the action and packbox's proxy, nothing else.
    let members = docker.ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}} {{end}}",
        &network,
    ]);
    let members: Vec<&str> = members.split_whitespace().collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(
        members.iter().any(|m| m.starts_with("packbox-egress-")),
        "{members:?}"
    );
    // The host has no address on it.
    let options = docker.ok(&[
        "network",
        "inspect",
        "--format",
        "{{json .Options}}",
        &network,
    ]);
    assert!(options.contains("inhibit_ipv4"), "{options}");
    assert_eq!(
        docker.ok(&["network", "inspect", "--format", "{{.Internal}}", &network]),
        "true"
    );

    let probe_dir = tempfile::tempdir().expect("dir");
    let probe_config = destinations.config(
        probe_dir.path(),
        RULES,
        &[("neighbour.test", address.clone())],
    );
    let params = serde_json::json!({
        "tcp": [format!("{address}:7000")],
        "proxy_requests": ["CONNECT neighbour.test:7000 HTTP/1.1\r\nHost: neighbour.test:7000\r\n\r\n"],
    });
    let params_file = probe_dir.path().join("params.json");
    std::fs::write(&params_file, params.to_string()).expect("params");
    let probe = run(
        &probe_config,
        "egress.probe",
        &["--params-file", &params_file.to_string_lossy()],
        &[],
    );
    let (report, outcome) = fetched(&probe);
    assert_eq!(
        report[format!("tcp {address}:7000")]["ok"],
        false,
        "{report}"
    );
    let answer = &report["proxy CONNECT neighbour.test:7000 HTTP/1.1"]["detail"];
    assert!(
        answer
            .as_str()
            .is_some_and(|a| a.starts_with("HTTP/1.1 403")),
        "{report}"
    );
    assert!(
        outcome["egress"]["connections"][0]["refusal"]
            .as_str()
            .is_some_and(|r| r.contains("per-run network")),
        "{}",
        outcome["egress"]
    );
    let mut stdout = String::new();
    listener
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    let _ = listener.wait();
    let outcome: Value = serde_json::from_str(&stdout).expect("outcome");
    assert!(
        outcome["stdout"]
            .as_str()
            .is_some_and(|s| s.contains("nobody came")),
        "{outcome}"
    );
    assert_nothing_left(&docker, &probe);
}

#[test]
fn a_declared_need_runs_only_where_granted_and_narrows_the_grant() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    // No rule grants needed.test: refused before any container, naming what would allow it.
    let config = destinations.config(dir.path(), "network: []", &[]);
    let since = unix_now();
    let refused = run(
        &config,
        "egress.declares",
        &["-p", "url=http://needed.test:8000/"],
        &[],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for part in [
        "action egress.declares",
        "needed.test:8000",
        "network.egress in actions/declares.yaml",
        r#"network: [{match: "egress.declares", egress: ["needed.test:8000"]}]"#,
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert_eq!(containers_created_by(refused.pid, since), 0);
    let packs = egress_packs().to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let explained = packbox(
        &[
            "--config",
            &config_arg,
            "explain",
            "--packs",
            &packs,
            "egress.declares",
            "--json",
        ],
        &[],
    );
    assert_eq!(explained.code(), 2, "{}", explained.stderr());
    assert!(
        explained.stdout().contains("needed.test:8000"),
        "{}",
        explained.stdout()
    );

    // A rule that grants more: the run gets what it declared, and no more.
    let config = destinations.config(
        dir.path(),
        "network:\n  - match: \"egress.*\"\n    egress: [\"needed.test:8000\", \"granted.test:8000\"]\n",
        &[],
    );
    let finished = run(
        &config,
        "egress.declares",
        &["-p", "url=http://needed.test:8000/declared"],
        &[],
    );
    let (result, outcome) = fetched(&finished);
    assert_eq!(result["ok"], true, "{outcome}");
    assert_eq!(
        outcome["egress"]["granted"],
        serde_json::json!([{
            "destination": "needed.test:8000",
            "granted_by": "config rule `match: egress.*`",
            "declared_by": "network.egress in actions/declares.yaml",
        }])
    );
    let explained = packbox(
        &[
            "--config",
            &config.to_string_lossy(),
            "explain",
            "--packs",
            &packs,
            "egress.declares",
            "--json",
        ],
        &[],
    );
    assert_eq!(explained.code(), 0, "{}", explained.stderr());
    let explanation = explained.json();
    assert_eq!(
        explanation["egress"]["granted"][0]["destination"], "needed.test:8000",
        "{explanation}"
    );
    assert_nothing_left(&docker, &finished);
}

#[test]
fn without_a_grant_there_is_no_network_no_proxy_and_no_audit() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), "network: []", &[]);
    let since = unix_now();
    let finished = run(
        &config,
        "egress.curl",
        &["-p", "url=http://granted.test:8000/none"],
        &[],
    );
    let (result, outcome) = fetched(&finished);
    assert_eq!(result["ok"], false, "{outcome}");
    assert_eq!(outcome["sandbox"]["network"], "none");
    assert!(outcome.get("egress").is_none(), "{outcome}");
    // No proxy was made, and no network.
    let proxies = engine_events(
        since,
        &[
            "type=container".to_string(),
            "event=create".to_string(),
            format!("label=packbox.owner_pid={}", finished.pid),
            "label=packbox.kind=egress-proxy".to_string(),
        ],
        "{{.ID}}",
    );
    assert!(proxies.is_empty(), "{proxies:?}");
    let networks = engine_events(
        since,
        &[
            "type=network".to_string(),
            "event=create".to_string(),
            format!("label=packbox.owner_pid={}", finished.pid),
        ],
        "{{.ID}}",
    );
    assert!(networks.is_empty(), "{networks:?}");
    assert_nothing_left(&docker, &finished);
}

#[test]
fn a_killed_packbox_leaves_its_proxy_and_networks_to_gc() {
    require_engine();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), RULES, &[]);
    let packs = egress_packs().to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let mut victim = spawn_packbox(&[
        "--config",
        &config_arg,
        "run",
        "--packs",
        &packs,
        "egress.listen",
        "-p",
        "seconds=60",
    ]);
    let pid = victim.id();
    wait_for_running(&[
        format!("label=packbox.owner_pid={pid}"),
        "label=packbox.action=egress.listen".to_string(),
    ]);
    assert!(!networks_of(&docker, pid).is_empty());
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    let gc = packbox(&["gc", "--json"], &[]);
    assert_eq!(gc.code(), 0, "{}", gc.stderr());
    // gc removes them (the start-up sweep of its own process may take some first: both are
    // the same sweep); nothing of the dead process is left either way.
    let report = gc.json();
    assert!(
        report["removed"]
            .as_array()
            .is_some_and(|removed| removed.iter().any(|x| x["owner_pid"] == pid)),
        "{report}"
    );
    assert!(networks_of(&docker, pid).is_empty());
    assert!(containers_of(pid).is_empty());
}

/// The probe's refusals that hold on every backend: another server through the proxy, raw TCP
/// to it, the host's engine port by name; and the run's audit says so.
fn assert_the_basic_refusals(
    destinations: &Destinations,
    config: &Path,
    dir: &Path,
    args: &[&str],
    packbox_of: impl Fn(&[&str]) -> Finished,
) -> Finished {
    let other = destinations.ip("other");
    let gateway = destinations.gateway();
    let params = serde_json::json!({
        "tcp": [format!("{other}:9000"), format!("{gateway}:2376")],
        "proxy_requests": [
            "CONNECT other.test:8000 HTTP/1.1\r\nHost: other.test:8000\r\n\r\n",
            "CONNECT hostgw.test:2376 HTTP/1.1\r\nHost: hostgw.test:2376\r\n\r\n",
        ],
    });
    let params_file = dir.join("params.json");
    std::fs::write(&params_file, params.to_string()).expect("params");
    let packs = egress_packs().to_string_lossy().into_owned();
    let config = config.to_string_lossy().into_owned();
    let params_arg = params_file.to_string_lossy().into_owned();
    let mut all = vec![
        "--config",
        config.as_str(),
        "run",
        "--packs",
        packs.as_str(),
        "egress.probe",
        "--json",
        "--params-file",
        params_arg.as_str(),
    ];
    all.extend_from_slice(args);
    let finished = packbox_of(&all);
    let (report, outcome) = fetched(&finished);
    assert_eq!(report[format!("tcp {other}:9000")]["ok"], false, "{report}");
    assert_eq!(
        report[format!("tcp {gateway}:2376")]["ok"],
        false,
        "{report}"
    );
    for (request, reason) in [
        ("proxy CONNECT other.test:8000 HTTP/1.1", "not granted"),
        ("proxy CONNECT hostgw.test:2376 HTTP/1.1", "the host"),
    ] {
        let answer = report[request]["detail"].as_str().unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 403"), "{request}: {report}");
        assert!(
            outcome["egress"]["connections"]
                .as_array()
                .is_some_and(|all| all
                    .iter()
                    .any(|c| c["refusal"].as_str().is_some_and(|r| r.contains(reason)))),
            "{request}: {}",
            outcome["egress"]
        );
    }
    assert_eq!(outcome["egress"]["refused"], 2, "{}", outcome["egress"]);
    let log = destinations.log(&destinations.server("other"));
    assert!(
        !log.contains("tcp 9000") && !log.contains("http 8000"),
        "{log}"
    );
    finished
}

#[test]
fn the_dind_engine_over_tls_enforces_the_same_grant() {
    require_engine();
    let dind = common::dind::Dind::acquire(common::dind::Flavour::Plain);
    let docker = Docker {
        env: dind
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    // The proxy's image is built on the Debian base, which the engine must have.
    if !docker
        .run(&["image", "inspect", "packbox/base:bookworm"])
        .status
        .success()
    {
        let envs: Vec<String> = docker.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let loaded = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save packbox/base:bookworm | env {} docker load -q",
                envs.join(" ")
            ))
            .output()
            .expect("sh runs");
        assert!(
            loaded.status.success(),
            "{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
    }
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), RULES, &[]);
    let packs = egress_packs().to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let ca = format!("ca={}", destinations.ca);
    let allowed = dind.packbox(
        &[
            "--config",
            &config_arg,
            "run",
            "--packs",
            &packs,
            "egress.curl",
            "--json",
            "-p",
            "url=https://granted.test:8443/dind",
            "-p",
            &ca,
        ],
        &[],
    );
    let (result, outcome) = fetched(&allowed);
    assert_eq!(result["ok"], true, "{outcome}");
    assert_eq!(outcome["sandbox"]["network"], "egress");
    assert_eq!(connections(&outcome, "granted.test", 8443).len(), 1);
    assert_nothing_left(&docker, &allowed);
    let refused = assert_the_basic_refusals(&destinations, &config, dir.path(), &[], |args| {
        dind.packbox(args, &[])
    });
    assert_nothing_left(&docker, &refused);
}

#[test]
fn a_swarm_run_enforces_the_same_grant() {
    require_engine();
    let _swarm = common::swarm::use_swarm();
    let docker = Docker::default();
    let destinations = Destinations::start(&docker);
    let dir = tempfile::tempdir().expect("dir");
    let config = destinations.config(dir.path(), RULES, &[]);
    let swarm_args = ["--seccomp", "engine-default", "--allow-weaker-sandbox"];
    let packs = egress_packs().to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let mut args = vec![
        "--config",
        config_arg.as_str(),
        "--backend",
        "swarm",
        "run",
        "--packs",
        packs.as_str(),
        "egress.curl",
        "--json",
        "-p",
        "url=http://granted.test:8000/swarm",
    ];
    args.extend_from_slice(&swarm_args);
    let allowed = packbox(&args, &[]);
    let (result, outcome) = fetched(&allowed);
    assert_eq!(result["ok"], true, "{outcome}");
    assert_eq!(outcome["sandbox"]["backend"], "swarm");
    assert_eq!(outcome["sandbox"]["network"], "egress");
    assert_eq!(connections(&outcome, "granted.test", 8000).len(), 1);
    common::swarm::assert_no_swarm_leftovers(allowed.pid);
    assert_nothing_left(&docker, &allowed);
    let backend = ["--backend", "swarm"];
    let refused =
        assert_the_basic_refusals(&destinations, &config, dir.path(), &swarm_args, |args| {
            // `--backend` goes before the command.
            let mut all: Vec<&str> = args[..2].to_vec();
            all.extend_from_slice(&backend);
            all.extend_from_slice(&args[2..]);
            packbox(&all, &[])
        });
    common::swarm::assert_no_swarm_leftovers(refused.pid);
    assert_nothing_left(&docker, &refused);
}
