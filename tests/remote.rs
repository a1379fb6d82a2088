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
fn fresh_state() -> tempfile::TempDir {
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
    let state = fresh_state();
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
    assert!(
        dind.containers_labelled(&format!("packbox.owner_pid={}", run.pid))
            .is_empty()
    );
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
    let state = fresh_state();
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
    let state = fresh_state();
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
    let state = fresh_state();
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
    assert!(
        dind.containers_labelled(&format!("packbox.owner_pid={}", run.pid))
            .is_empty()
    );
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
    let state = fresh_state();
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

// ---- Runs on the dind engine: the pack travels by content (a volume), not by host path ----

const SECRET: &str = "s3cr3t-Remote-42f1";

/// `packbox run --packs DIR ACTION --json ARGS...` against the dind engine.
fn run_on(dind: &Dind, packs: &Path, action: &str, args: &[&str]) -> Finished {
    let packs = packs.to_string_lossy().into_owned();
    let mut all = vec!["run", "--packs", packs.as_str(), action, "--json"];
    all.extend_from_slice(args);
    dind.packbox(&all, &[])
}

/// Asserts the run succeeded and left no container on the dind engine; returns the outcome.
fn succeeded_on(dind: &Dind, run: &Finished) -> serde_json::Value {
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let left = dind.containers_labelled(&format!("packbox.owner_pid={}", run.pid));
    assert!(
        left.is_empty(),
        "containers left on the dind engine: {left:?}"
    );
    outcome
}

/// The pack volumes on the dind engine for a pack.
fn pack_volumes(dind: &Dind, pack: &str) -> Vec<String> {
    dind.volumes_labelled(&format!("packbox.pack={pack}"))
}

/// A private copy of a pack under a unique ref, so its volumes are this test's own; removes
/// them when the test ends.
struct PrivatePack<'a> {
    _volumes: VolumesGuard<'a>,
    _dir: tempfile::TempDir,
    packs: std::path::PathBuf,
    pack_ref: String,
}

impl<'a> PrivatePack<'a> {
    fn new(dind: &'a Dind, source: &Path) -> PrivatePack<'a> {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack_ref = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let packs = dir.path().join("packs");
        std::fs::create_dir(&packs).expect("mkdir");
        let copied = copy_pack(source, &packs);
        let renamed = packs.join(&pack_ref);
        std::fs::rename(&copied, &renamed).expect("rename");
        let old_ref = source
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        rewrite_refs(&renamed, &old_ref, &pack_ref);
        PrivatePack {
            _volumes: VolumesGuard(dind, pack_ref.clone()),
            _dir: dir,
            packs,
            pack_ref,
        }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.packs.join(&self.pack_ref)
    }

    fn action(&self, name: &str) -> String {
        format!("{}.{name}", self.pack_ref)
    }
}

/// Renames a pack: `ref:` in pack.yaml and each action's `ref: old.x`.
fn rewrite_refs(pack: &Path, old: &str, new: &str) {
    let pack_yaml = pack.join("pack.yaml");
    let text = std::fs::read_to_string(&pack_yaml).expect("pack.yaml");
    std::fs::write(
        &pack_yaml,
        text.replace(&format!("ref: {old}"), &format!("ref: {new}")),
    )
    .expect("write pack.yaml");
    for entry in std::fs::read_dir(pack.join("actions"))
        .expect("actions")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("action");
            std::fs::write(
                &path,
                text.replace(&format!("ref: {old}."), &format!("ref: {new}.")),
            )
            .expect("write action");
        }
    }
}

#[test]
fn python_and_shell_actions_run_on_the_tls_engine_with_the_pack_in_a_volume() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let shell = run_on(
        &dind,
        &pack.packs,
        &pack.action("greet_shell"),
        &["-p", "name=remote"],
    );
    let outcome = succeeded_on(&dind, &shell);
    assert_eq!(outcome["result"]["greeting"], "Hello, remote!");
    let python = run_on(&dind, &pack.packs, &pack.action("greet_python"), &[]);
    let outcome = succeeded_on(&dind, &python);
    assert!(
        outcome["result"]["runtime"]
            .as_str()
            .expect("runtime")
            .starts_with("python 3.11"),
        "{outcome}"
    );
    // One volume for the pack's content, filled by the first run, reused by the second.
    assert_eq!(pack_volumes(&dind, &pack.pack_ref).len(), 1);
}

#[test]
fn stdin_and_file_delivery_reach_the_action_on_the_remote_engine() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &fixture_packs().join("contract"));
    for (action, delivery) in [("params_stdin_json", "stdin"), ("params_file_json", "file")] {
        let run = run_on(
            &dind,
            &pack.packs,
            &pack.action(action),
            &["-p", "name=ada", "-p", "count=3"],
        );
        let outcome = succeeded_on(&dind, &run);
        let stdout = outcome["stdout"].as_str().expect("stdout");
        let document: serde_json::Value =
            serde_json::from_str(stdout.trim()).expect("the parameters as JSON");
        assert_eq!(document["name"], "ada", "{delivery}: {stdout}");
        assert_eq!(document["count"], 3, "{delivery}: {stdout}");
        if delivery == "file" {
            assert!(
                outcome["stderr"]
                    .as_str()
                    .expect("stderr")
                    .starts_with("600 65534"),
                "the file is the action's alone: {outcome}"
            );
        }
    }
}

#[test]
fn secrets_reach_the_action_but_not_the_remote_engines_inspect() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &fixture_packs().join("contract"));
    let packs = pack.packs.to_string_lossy().into_owned();
    let action = pack.action("secret_output");
    let secret = format!("api_key={SECRET}");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_packbox"));
    command
        .args([
            "run", "--packs", &packs, &action, "--json", "-p", "sleep=4", "--secret", &secret,
        ])
        .envs(dind.env())
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("packbox starts");
    let owner = format!("packbox.owner_pid={}", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The run's container, not the pack volume's lock or helper (they carry the owner too).
    let container = loop {
        let found = dind.docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={owner}"),
            "--filter",
            "label=packbox.kind=run",
        ]);
        if let Some(id) = found.into_iter().next() {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no container appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let inspect = dind.docker(&["inspect", &container]);
    let inspected = String::from_utf8_lossy(&inspect.stdout).into_owned();
    let output = child.wait_with_output().expect("packbox ends");
    assert!(inspect.status.success(), "inspected on the dind engine");
    assert!(inspected.contains("ATTUNE_EXEC_ID"), "the run's container");
    assert!(
        !inspected.contains(SECRET),
        "the secret shows in docker inspect"
    );
    assert!(!inspected.contains("api_key"), "not even the secret's name");
    assert!(
        inspected.contains(":/pack:ro"),
        "the pack volume is read-only"
    );
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).expect("outcome");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["result"]["token"], "***");
}

#[test]
fn an_edited_pack_is_seen_by_the_next_run() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let first = run_on(&dind, &pack.packs, &pack.action("greet_shell"), &[]);
    assert_eq!(
        succeeded_on(&dind, &first)["result"]["greeting"],
        "Hello, world!"
    );
    let script = pack.dir().join("actions/greet.sh");
    let text = std::fs::read_to_string(&script).expect("script");
    assert!(text.contains("Hello"), "{text}");
    std::fs::write(&script, text.replace("Hello", "Howdy")).expect("edit");
    let second = run_on(&dind, &pack.packs, &pack.action("greet_shell"), &[]);
    assert_eq!(
        succeeded_on(&dind, &second)["result"]["greeting"],
        "Howdy, world!"
    );
    assert_eq!(
        pack_volumes(&dind, &pack.pack_ref).len(),
        2,
        "one volume per content"
    );
}

#[test]
fn writes_to_the_pack_volume_are_refused() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &fixture_packs().join("sandboxcheck"));
    let run = run_on(&dind, &pack.packs, &pack.action("write_pack"), &[]);
    let outcome = succeeded_on(&dind, &run);
    assert_eq!(outcome["result"]["wrote"], false, "{outcome}");
    assert!(
        outcome["result"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("Read-only file system"),
        "{outcome}"
    );
    let volume = pack_volumes(&dind, &pack.pack_ref)
        .pop()
        .expect("a pack volume");
    let listing = dind.docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/pack:ro"),
        "packbox/shell:5.2",
        "ls",
        "/pack",
    ]);
    assert!(
        !listing.iter().any(|f| f == "written-by-action"),
        "{listing:?}"
    );
}

#[test]
fn concurrent_first_runs_fill_one_volume_and_all_succeed() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let runs: Vec<Finished> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| run_on(&dind, &pack.packs, &pack.action("greet_shell"), &[])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("run"))
            .collect()
    });
    for run in &runs {
        succeeded_on(&dind, run);
    }
    let volumes = pack_volumes(&dind, &pack.pack_ref);
    assert_eq!(volumes.len(), 1);
    let filling = format!("packbox.pack_filling={}", volumes[0]);
    assert!(
        dind.containers_labelled(&filling).is_empty(),
        "no lock left"
    );
}

#[test]
fn a_dead_fillers_lock_and_half_volume_are_replaced_by_the_next_run() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    // The volume a run will want, and what a filler SIGKILLed mid-upload leaves: its lock and
    // an empty volume of that name.
    let warm = run_on(&dind, &pack.packs, &pack.action("greet_shell"), &[]);
    succeeded_on(&dind, &warm);
    let volume = pack_volumes(&dind, &pack.pack_ref).pop().expect("volume");
    dind.docker_ok(&["volume", "rm", &volume]);
    dind.docker_ok(&[
        "volume",
        "create",
        "--label",
        &format!("packbox.pack={}", pack.pack_ref),
        &volume,
    ]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    dind.docker_ok(&[
        "create",
        "--name",
        &format!("{volume}-lock"),
        "--label",
        "packbox.managed=true",
        "--label",
        &format!("packbox.owner_host={}", host.trim()),
        "--label",
        &format!("packbox.owner_pid={}", u32::MAX - 1),
        "--label",
        &format!("packbox.pack_filling={volume}"),
        "packbox/shell:5.2",
        "true",
    ]);
    let run = run_on(&dind, &pack.packs, &pack.action("greet_shell"), &[]);
    assert_eq!(
        succeeded_on(&dind, &run)["result"]["greeting"],
        "Hello, world!"
    );
    let filling = format!("packbox.pack_filling={volume}");
    assert!(
        dind.containers_labelled(&filling).is_empty(),
        "the dead lock is gone"
    );
}

#[test]
fn gc_removes_unused_pack_volumes_beyond_the_keep_rule() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let script = pack.dir().join("actions/greet.sh");
    let original = std::fs::read_to_string(&script).expect("script");
    let mut volumes = Vec::new();
    for word in ["One", "Two", "Three"] {
        std::fs::write(&script, original.replace("Hello", word)).expect("edit");
        let run = run_on(&dind, &pack.packs, &pack.action("greet_shell"), &[]);
        succeeded_on(&dind, &run);
        let now = pack_volumes(&dind, &pack.pack_ref);
        let new: Vec<String> = now.into_iter().filter(|v| !volumes.contains(v)).collect();
        assert_eq!(new.len(), 1, "one new volume per content");
        volumes.extend(new);
        // The engine's creation times have a resolution of a second; gc keeps the newest.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Volumes this young are kept by default (a run may be about to mount one): none here is.
    let gc = dind.packbox(
        &["gc", "--keep", "2", "--min-volume-age", "0", "--json"],
        &[],
    );
    assert_eq!(gc.code(), 0, "{}", gc.stderr());
    let left = pack_volumes(&dind, &pack.pack_ref);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&volumes[0]), "the oldest went: {left:?}");
    let removed = gc.json()["pack_volumes"]["removed"].clone();
    assert!(removed.to_string().contains(&volumes[0]), "{removed}");
}

#[test]
fn a_run_with_an_untrusted_client_certificate_exits_125_and_makes_nothing() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let packs = pack.packs.to_string_lossy().into_owned();
    let action = pack.action("greet_shell");
    let env = dind.env_with_certs(&dind.certs_root().join("untrusted"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = packbox(&["run", "--packs", &packs, &action, "--json"], &env);
    assert_eq!(run.code(), 125, "{}", run.stderr());
    assert!(
        run.stderr().contains("refused the client certificate"),
        "{}",
        run.stderr()
    );
    assert!(pack_volumes(&dind, &pack.pack_ref).is_empty());
}

#[test]
fn the_engine_flag_names_the_engine_and_a_bad_one_exits_2() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let packs = pack.packs.to_string_lossy().into_owned();
    let action = pack.action("greet_shell");
    // DOCKER_HOST names the local engine; --engine wins with the dind engine (TLS from env).
    let certs = dind.cert_path.to_string_lossy().into_owned();
    let env = [
        ("DOCKER_HOST", "unix:///var/run/docker.sock"),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.as_str()),
    ];
    let run = packbox(
        &[
            "--engine", &dind.host, "run", "--packs", &packs, &action, "--json",
        ],
        &env,
    );
    succeeded_on(&dind, &run);
    assert_eq!(
        pack_volumes(&dind, &pack.pack_ref).len(),
        1,
        "ran on the dind engine"
    );

    let run = packbox(
        &[
            "--engine",
            "nowhere-context",
            "run",
            "--packs",
            &packs,
            &action,
        ],
        &[],
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("--engine: docker context `nowhere-context` does not exist"),
        "{}",
        run.stderr()
    );
}

#[test]
fn images_build_imports_the_base_and_builds_recipes_through_the_remote_engines_api() {
    require_engine();
    let dind = Dind::acquire(Flavour::Plain);
    let base = "packbox/base:bookworm";
    let tiny = "packbox-test/tiny:1.0";
    let _base = DindImage(&dind, base);
    let _tiny = DindImage(&dind, tiny);
    let _ = dind.docker(&["rmi", "-f", tiny, base]);

    // A root file system tarball of the Debian base, as `images/bootstrap-base --tar` makes.
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("bookworm.tar");
    let created = std::process::Command::new("docker")
        .args(["create", base, "true"])
        .output()
        .expect("docker create");
    assert!(created.status.success());
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let exported = std::process::Command::new("docker")
        .args(["export", "-o", &rootfs.to_string_lossy(), &id])
        .status()
        .expect("docker export");
    let _ = std::process::Command::new("docker")
        .args(["rm", &id])
        .output();
    assert!(exported.success());

    let catalog = repo_root().join("tests/fixtures/remote-catalog");
    let catalog = catalog.to_string_lossy().into_owned();
    let rootfs_arg = format!("bookworm={}", rootfs.display());
    let run = dind.packbox(
        &[
            "--catalog",
            &catalog,
            "images",
            "build",
            "--base-rootfs",
            &rootfs_arg,
        ],
        &[("PACKBOX_RUNTIMES", "tiny")],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("packbox/base:bookworm: imported"),
        "{stderr}"
    );
    assert!(stderr.contains("packbox-test/tiny:1.0: built"), "{stderr}");
    assert_eq!(
        dind.docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"packbox.kind\"}}",
            base
        ]),
        vec!["base".to_string()]
    );
    let content = dind.docker_ok(&["run", "--rm", tiny, "cat", "/tiny-version"]);
    assert_eq!(content, vec!["1.0.0".to_string()]);

    // Again: the base is there, nothing is imported or built.
    let again = dind.packbox(
        &[
            "--catalog",
            &catalog,
            "images",
            "build",
            "--base-rootfs",
            &rootfs_arg,
        ],
        &[("PACKBOX_RUNTIMES", "tiny")],
    );
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert!(
        again.stderr().contains("packbox/base:bookworm: present"),
        "{}",
        again.stderr()
    );

    // A tarball that is not there: one line naming it, exit 2.
    let _ = dind.docker(&["rmi", "-f", tiny, base]);
    let missing = dind.packbox(
        &[
            "--catalog",
            &catalog,
            "images",
            "build",
            "--base-rootfs",
            "bookworm=/nonexistent/bookworm.tar",
        ],
        &[("PACKBOX_RUNTIMES", "tiny")],
    );
    assert_eq!(missing.code(), 2, "{}", missing.stderr());
    assert!(
        missing.stderr().contains("/nonexistent/bookworm.tar"),
        "{}",
        missing.stderr()
    );
    let images = dind.docker_ok(&["images", "-q", base]);
    assert!(images.is_empty(), "nothing imported: {images:?}");
}

// ---- The CI recipes (examples/ci): the script they run, run here ----

/// Runs examples/ci/run-action.sh as the CI recipes do, with extra environment.
fn ci_recipe(
    env: &[(&str, String)],
    packs: &Path,
    action: &str,
    args: &[&str],
    outcome: &Path,
) -> Finished {
    let mut command = std::process::Command::new("bash");
    command
        .arg(repo_root().join("examples/ci/run-action.sh"))
        .args(args)
        .env("PACKBOX", env!("CARGO_BIN_EXE_packbox"))
        .env("PACKS", packs)
        .env("ACTION", action)
        .env("OUTCOME", outcome)
        .env("PACKBOX_RUNTIMES", "shell")
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("the recipe script starts");
    let pid = child.id();
    let output = child.wait_with_output().expect("the recipe script ends");
    Finished { output, pid }
}

#[test]
fn the_ci_recipe_runs_an_action_on_a_tls_engine_like_gitlabs_dind_service() {
    let dind = Dind::acquire(Flavour::Plain);
    let pack = PrivatePack::new(&dind, &example_packs().join("hello"));
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = dir.path().join("outcome.json");
    let run = ci_recipe(
        &dind.env(),
        &pack.packs,
        &pack.action("greet_shell"),
        &["-p", "name=ci"],
        &outcome,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("packbox/shell:5.2: present"), "{stderr}");
    assert!(
        stderr.contains(&format!("ok   endpoint   {}", dind.host)),
        "{stderr}"
    );
    assert!(stderr.contains("packs delivered by content"), "{stderr}");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outcome).expect("the outcome is kept"))
            .expect("JSON");
    assert_eq!(kept["status"], "succeeded", "{kept}");
    assert_eq!(kept["result"]["greeting"], "Hello, ci!");
}

#[test]
fn the_ci_recipe_runs_an_action_on_the_local_engine_like_a_github_runner() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = dir.path().join("outcome.json");
    let run = ci_recipe(
        &[],
        &example_packs(),
        "hello.greet_shell",
        &["-p", "name=ci"],
        &outcome,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr().contains("packs delivered by bind mount"),
        "{}",
        run.stderr()
    );
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outcome).expect("the outcome is kept"))
            .expect("JSON");
    assert_eq!(kept["result"]["greeting"], "Hello, ci!");

    // A failing action: the outcome is still kept, and the job fails with packbox's code.
    let failing = ci_recipe(&[], &fixture_packs(), "sandboxcheck.fail", &[], &outcome);
    assert_eq!(failing.code(), 1, "{}", failing.stderr());
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outcome).expect("kept")).expect("JSON");
    assert_eq!(kept["status"], "failed");
}

#[test]
fn the_ci_files_run_the_recipe_script_and_keep_the_outcome() {
    let read = |name: &str| -> serde_yaml::Value {
        let path = repo_root().join("examples/ci").join(name);
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("readable"))
            .unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
    };
    let gitlab = read("gitlab-ci.yml");
    let job = &gitlab["run-action"];
    let script = serde_yaml::to_string(&job["script"]).expect("script");
    assert!(script.contains("examples/ci/run-action.sh"), "{script}");
    assert_eq!(job["variables"]["DOCKER_HOST"], "tcp://docker:2376");
    assert_eq!(job["variables"]["DOCKER_TLS_VERIFY"], "1");
    assert_eq!(job["variables"]["DOCKER_CERT_PATH"], "/certs/client");
    assert_eq!(job["services"][0]["name"], "docker:dind");
    assert_eq!(job["artifacts"]["paths"][0], "outcome.json");
    assert_eq!(job["artifacts"]["when"], "always");

    let github = read("github-actions.yml");
    let steps = serde_yaml::to_string(&github["jobs"]["run-action"]["steps"]).expect("steps");
    assert!(steps.contains("examples/ci/run-action.sh"), "{steps}");
    assert!(steps.contains("upload-artifact"), "{steps}");
    assert!(steps.contains("outcome.json"), "{steps}");
}

#[test]
fn a_packs_tests_run_on_the_tls_engine_with_the_pack_in_a_volume() {
    let dind = Dind::acquire(Flavour::Plain);
    let dir = tempfile::tempdir().expect("tempdir");
    let pack_ref = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let pack = dir.path().join(&pack_ref);
    std::fs::create_dir_all(pack.join("tests")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        format!(
            "ref: {pack_ref}\nlabel: T\ndescription: d\nversion: 1.0.0\ntesting:\n  enabled: true\n  \
             runners:\n    shell:\n      type: script\n      entry_point: tests/run.sh\n      timeout: 60\n"
        ),
    )
    .expect("pack.yaml");
    std::fs::write(
        pack.join("tests/run.sh"),
        "#!/bin/bash\nset -e\ntest -f /pack/pack.yaml\n! touch /pack/x 2>/dev/null\necho ok\n",
    )
    .expect("run.sh");
    let _cleanup = VolumesGuard(&dind, pack_ref.clone());
    let run = dind.packbox(&["test", &pack.to_string_lossy(), "--json"], &[]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert_eq!(run.json()["passed"], true, "{}", run.stdout());
    assert_eq!(
        pack_volumes(&dind, &pack_ref).len(),
        1,
        "the pack went by volume"
    );
}

/// Removes a pack's volumes on the dind engine when the test ends.
struct VolumesGuard<'a>(&'a Dind, String);

impl Drop for VolumesGuard<'_> {
    fn drop(&mut self) {
        for volume in pack_volumes(self.0, &self.1) {
            let _ = self.0.docker(&["volume", "rm", "-f", &volume]);
        }
    }
}
