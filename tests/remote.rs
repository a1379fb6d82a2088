//! packbox against an engine that is not the local socket: a second, real dockerd in a container
//! (tests/common/dind.rs) reached over TCP with mutual TLS, found the way the docker CLI finds
//! engines (DOCKER_HOST + DOCKER_TLS_VERIFY + DOCKER_CERT_PATH, docker contexts), and the
//! errors when that goes wrong: each one line naming the endpoint or file, exit 125, nothing made.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use common::dind::{Dind, Flavour};
use common::*;

/// A fresh state folder, so that no probe result of another engine is reused and anything
/// packbox writes can be seen.
fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn state_env(state: &tempfile::TempDir) -> (&'static str, String) {
    (
        "PACKBOX_STATE_DIR",
        state.path().to_string_lossy().into_owned(),
    )
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// `packbox runtimes verify --json` for the shell runtime: it runs a probe container on the
/// engine, without a pack.
fn verify_shell(env: &[(&str, &str)]) -> Finished {
    let mut all = vec![("PACKBOX_RUNTIMES", "shell")];
    all.extend_from_slice(env);
    packbox(&["runtimes", "verify", "--json"], &all)
}

/// Asserts one `error:` line naming `what`, exit 125, and a hint.
fn assert_one_error_line(run: &Finished, what: &str) {
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let stderr = run.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(what), "expected {what:?} in: {stderr}");
}

#[test]
fn a_tls_engine_from_docker_host_and_cert_path_runs_probe_containers() {
    let dind = Dind::acquire(Flavour::Plain);
    let state = state_dir();
    let (k, v) = state_env(&state);
    let env = dind.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push((k, &v));
    let run = verify_shell(&all);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let statuses = run.json();
    let shell = &statuses.as_array().expect("an array")[0];
    assert_eq!(shell["runtime"], "shell");
    assert_eq!(shell["available"], true, "{statuses}");
    assert_eq!(shell["cached"], false, "the probe ran on the dind engine");
    // The probe ran on the dind engine and was removed there.
    assert!(dind.containers_labelled("packbox.managed=true").is_empty());
}

#[test]
fn a_docker_context_made_by_the_docker_cli_is_followed() {
    let dind = Dind::acquire(Flavour::Plain);
    let config = tempfile::tempdir().expect("tempdir");
    let certs = &dind.cert_path;
    let created = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", config.path())
        .args([
            "context",
            "create",
            "dind-test",
            "--docker",
            &format!(
                "host={},ca={},cert={},key={}",
                dind.host,
                certs.join("ca.pem").display(),
                certs.join("cert.pem").display(),
                certs.join("key.pem").display()
            ),
        ])
        .output()
        .expect("docker context create runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let state = state_dir();
    let (k, v) = state_env(&state);
    let config_dir = config.path().to_string_lossy().into_owned();
    let run = verify_shell(&[
        ("DOCKER_CONFIG", &config_dir),
        ("DOCKER_CONTEXT", "dind-test"),
        (k, &v),
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.json()[0]["available"], true);

    // The same context as the docker CLI's current one.
    let used = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", config.path())
        .args(["context", "use", "dind-test"])
        .output()
        .expect("docker context use runs");
    assert!(used.status.success());
    let run = verify_shell(&[("DOCKER_CONFIG", &config_dir), (k, &v)]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
}

#[test]
fn a_client_certificate_the_engine_does_not_trust_exits_125() {
    let dind = Dind::acquire(Flavour::Plain);
    let state = state_dir();
    let (k, v) = state_env(&state);
    let env = dind.env_with_certs(&dind.certs_root().join("untrusted"));
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push((k, &v));
    let run = verify_shell(&all);
    assert_one_error_line(&run, &dind.host);
    let stderr = run.stderr();
    assert!(
        stderr.contains("refused the client certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("untrusted/cert.pem"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(is_empty_dir(state.path()), "nothing written");
}

#[test]
fn an_engine_certificate_from_another_ca_is_untrusted_and_exits_125() {
    let dind = Dind::acquire(Flavour::Plain);
    let env = dind.env_with_certs(&dind.certs_root().join("wrong-ca"));
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = verify_shell(&all);
    assert_one_error_line(&run, &dind.host);
    assert!(
        run.stderr().contains("untrusted certificate"),
        "{}",
        run.stderr()
    );
}

#[test]
fn plain_http_to_a_tls_engine_exits_125_with_the_tls_hint() {
    let dind = Dind::acquire(Flavour::Plain);
    let run = verify_shell(&[("DOCKER_HOST", &dind.host)]);
    assert_one_error_line(&run, "requires TLS");
    assert!(
        run.stderr().contains("hint: set DOCKER_TLS_VERIFY=1"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_refused_tcp_port_exits_125_naming_it() {
    // A loopback port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let host = format!("tcp://127.0.0.1:{port}");
    let run = verify_shell(&[("DOCKER_HOST", &host)]);
    assert_one_error_line(&run, &host);
    assert!(
        run.stderr().contains("connection refused"),
        "{}",
        run.stderr()
    );
}

#[test]
fn missing_and_unusable_cert_files_are_named_and_nothing_is_created() {
    let dind = Dind::acquire(Flavour::Plain);
    let state = state_dir();
    let (k, v) = state_env(&state);
    let certs = tempfile::tempdir().expect("tempdir");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(dind.cert_path.join(file), certs.path().join(file)).expect("copy");
    }
    std::fs::remove_file(certs.path().join("key.pem")).expect("rm");
    let env = dind.env_with_certs(certs.path());
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push((k, &v));
    let run = verify_shell(&all);
    let key = certs.path().join("key.pem");
    assert_one_error_line(&run, &format!("{} is missing", key.display()));

    std::fs::write(&key, "not a key\n").expect("write");
    let run = verify_shell(&all);
    assert_one_error_line(
        &run,
        &format!("{}: holds no PEM private key", key.display()),
    );

    std::fs::copy(dind.cert_path.join("key.pem"), &key).expect("copy");
    std::fs::write(certs.path().join("ca.pem"), "").expect("truncate");
    let run = verify_shell(&all);
    assert_one_error_line(&run, "ca.pem: holds no PEM certificate");

    assert!(is_empty_dir(state.path()), "nothing written");
    assert!(dind.containers_labelled("packbox.managed=true").is_empty());
}

#[test]
fn a_docker_context_that_does_not_exist_exits_125_naming_it() {
    let config = tempfile::tempdir().expect("tempdir");
    let config_dir = config.path().to_string_lossy().into_owned();
    let run = verify_shell(&[
        ("DOCKER_CONFIG", &config_dir),
        ("DOCKER_CONTEXT", "nowhere"),
    ]);
    assert_one_error_line(&run, "docker context `nowhere` does not exist");
    assert!(run.stderr().contains("hint:"), "{}", run.stderr());
    assert!(
        is_empty_dir(config.path()),
        "the docker config folder is untouched"
    );
}

#[test]
fn an_engine_with_an_api_older_than_1_41_exits_125() {
    // A loopback server that answers /version like a Docker 19.03 engine.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = r#"{"Version":"19.03.15","ApiVersion":"1.40","MinAPIVersion":"1.12"}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.40\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    let host = format!("tcp://127.0.0.1:{port}");
    let run = verify_shell(&[("DOCKER_HOST", &host)]);
    server.join().expect("server thread");
    assert_one_error_line(&run, "speaks API 1.40, older than packbox needs (1.41");
    assert!(
        run.stderr().contains("hint: upgrade the engine"),
        "{}",
        run.stderr()
    );
}

#[test]
fn doctor_reports_the_tls_engine_how_it_was_chosen_and_its_images() {
    let dind = Dind::acquire(Flavour::Plain);
    let state = state_dir();
    let (k, v) = state_env(&state);
    let run = dind.packbox(&["doctor", "--json"], &[(k, &v)]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let report = run.json();
    assert_eq!(report["ready"], true);
    assert_eq!(report["endpoint"]["host"], dind.host.as_str());
    assert_eq!(report["endpoint"]["origin"]["kind"], "docker_host");
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {report}"))
            .clone()
    };
    assert_eq!(check("endpoint")["status"], "ok");
    assert!(
        check("connection")["details"][0]
            .as_str()
            .expect("text")
            .contains("mutual TLS")
    );
    assert_eq!(check("engine")["status"], "ok");
    // Only the images scripts/dind loaded are there: a warning with the next step, not a failure.
    let images = check("images");
    assert_eq!(images["status"], "warn", "{images}");
    assert!(
        images["next_step"]
            .as_str()
            .expect("step")
            .contains("images copy")
    );
    assert!(
        images["details"]
            .as_array()
            .expect("details")
            .iter()
            .any(|d| d
                .as_str()
                .expect("text")
                .starts_with("shell 5.2 (packbox/shell:5.2): present"))
    );
}

#[test]
fn doctor_with_a_refused_client_certificate_exits_1_with_the_next_step() {
    let dind = Dind::acquire(Flavour::Plain);
    let env = dind.env_with_certs(&dind.certs_root().join("untrusted"));
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = packbox(&["doctor"], &all);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    let stdout = run.stdout();
    assert!(stdout.contains("FAIL connection"), "{stdout}");
    assert!(
        stdout.contains("refused the client certificate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("next: use a client certificate"),
        "{stdout}"
    );
    assert!(stdout.contains("skip engine"), "{stdout}");
    assert!(stdout.contains("not ready"), "{stdout}");
}

/// The environment for `packbox images copy` from the local engine to the dind engine named by
/// `--to`: the TLS settings apply to the TCP target only.
fn copy_env(dind: &Dind) -> Vec<(&'static str, String)> {
    vec![
        ("DOCKER_HOST", "unix:///var/run/docker.sock".into()),
        ("DOCKER_TLS_VERIFY", "1".into()),
        (
            "DOCKER_CERT_PATH",
            dind.cert_path.to_string_lossy().into_owned(),
        ),
    ]
}

/// Removes an image from the dind engine when the test ends, even when it fails.
struct DindImage<'a>(&'a Dind, &'a str);

impl Drop for DindImage<'_> {
    fn drop(&mut self) {
        let _ = self.0.docker(&["rmi", "-f", self.1]);
    }
}

#[test]
fn images_copy_streams_what_the_target_lacks_and_skips_what_it_has() {
    require_engine();
    let dind = Dind::acquire(Flavour::Plain);
    let image = "packbox/python:3.9";
    let _cleanup = DindImage(&dind, image);
    let _ = dind.docker(&["rmi", "-f", image]);
    let env = copy_env(&dind);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let run = packbox(
        &[
            "images",
            "copy",
            "--to",
            &dind.host,
            image,
            "packbox/shell:5.2",
            "--json",
        ],
        &env,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let report = run.json();
    let result = |name: &str| {
        report["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["image"] == name)
            .map(|i| i["result"].clone())
    };
    assert_eq!(result(image), Some("copied".into()), "{report}");
    assert_eq!(
        result("packbox/shell:5.2"),
        Some("present".into()),
        "{report}"
    );
    let local = std::process::Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .expect("docker runs");
    let local_id = String::from_utf8_lossy(&local.stdout).trim().to_string();
    assert_eq!(
        dind.docker_ok(&["image", "inspect", "-f", "{{.Id}}", image]),
        vec![local_id],
        "the same image id arrived"
    );

    let again = packbox(
        &["images", "copy", "--to", &dind.host, image, "--json"],
        &env,
    );
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert_eq!(again.json()["images"][0]["result"], "present");
}

#[test]
fn images_copy_to_a_docker_context_and_bad_targets() {
    let dind = Dind::acquire(Flavour::Plain);
    let config = tempfile::tempdir().expect("tempdir");
    let certs = &dind.cert_path;
    let created = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", config.path())
        .args([
            "context",
            "create",
            "ci-target",
            "--docker",
            &format!(
                "host={},ca={},cert={},key={}",
                dind.host,
                certs.join("ca.pem").display(),
                certs.join("cert.pem").display(),
                certs.join("key.pem").display()
            ),
        ])
        .output()
        .expect("docker context create runs");
    assert!(created.status.success());
    let config_dir = config.path().to_string_lossy().into_owned();
    let env = [("DOCKER_CONFIG", config_dir.as_str())];

    let run = packbox(
        &[
            "images",
            "copy",
            "--to",
            "ci-target",
            "packbox/shell:5.2",
            "--json",
        ],
        &env,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.json()["images"][0]["result"], "present");

    // The user's own flag at fault: exit 2, one line naming the value.
    let run = packbox(&["images", "copy", "--to", "no-such-context"], &env);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("--engine: docker context `no-such-context` does not exist")
            || run
                .stderr()
                .contains("docker context `no-such-context` does not exist"),
        "{}",
        run.stderr()
    );
    let run = packbox(&["images", "copy", "--to", "ssh://builder"], &env);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("`ssh://builder`"), "{}", run.stderr());

    // An image that is not on this engine, named on the command line: reported, exit 2.
    let run = packbox(
        &["images", "copy", "--to", "ci-target", "packbox/not-there:1"],
        &env,
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("not on this engine: packbox/not-there:1"),
        "{}",
        run.stderr()
    );
}
