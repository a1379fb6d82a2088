//! docker-compose.yaml at the top of the repository, with Debian's docker-compose: the image is
//! built locally (Debian base + the packbox binary), the service comes up on loopback, runs an
//! action over HTTP with a token from a file, and `down` leaves nothing: no container (the
//! server's or an action's), volume, network or image.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::server::service_packs;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "compose-test-token-0123456789abcdef";

/// A compose project of this test, brought down (volumes and image too) when dropped.
struct Project {
    name: String,
    env: Vec<(String, String)>,
    _tokens: tempfile::TempDir,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        let output = Command::new("docker-compose")
            .current_dir(repo_root())
            .args(["-p", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
        match output {
            Ok(output) => output,
            Err(e) => panic!(
                "docker-compose cannot run ({e}): install Debian's docker-compose (scripts/quickstart does)"
            ),
        }
    }

    fn value(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--rmi", "all", "--timeout", "60"]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn docker_ids(args: &[&str]) -> Vec<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_up_runs_an_action_over_http_and_down_leaves_nothing() {
    require_engine();
    let version = Command::new("docker-compose").arg("version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "docker-compose is missing: scripts/quickstart installs Debian's package"
    );
    let id = std::process::id();
    let name = format!("packboxtest{id}");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_packbox"));
    let binary = binary
        .strip_prefix(repo_root())
        .expect("the test binary is built inside the repository")
        .display()
        .to_string();
    let docker_gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .expect("the engine's socket");
    // The token file, readable by the socket's group (the server's) and nobody else.
    let tokens = tempfile::tempdir().expect("tempdir");
    let token_file = tokens.path().join("tokens");
    std::fs::write(&token_file, format!("compose-test:{TOKEN}\n")).expect("write");
    std::os::unix::fs::chown(&token_file, None, Some(docker_gid)).expect("chgrp");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::set_permissions(tokens.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    let project = Project {
        env: vec![
            ("PACKBOX_IMAGE".into(), format!("packbox/serve:test-{id}")),
            ("PACKBOX_BINARY".into(), binary),
            ("PACKBOX_HOSTNAME".into(), name.clone()),
            ("PACKBOX_PORT".into(), port.to_string()),
            ("PACKBOX_DOCKER_GID".into(), docker_gid.to_string()),
            (
                "PACKBOX_PACKS_DIR".into(),
                service_packs().display().to_string(),
            ),
            (
                "PACKBOX_TOKEN_FILE".into(),
                token_file.display().to_string(),
            ),
        ],
        name,
        _tokens: tokens,
    };

    let up = project.compose(&["up", "-d", "--build"]);
    assert!(
        up.status.success(),
        "docker-compose up failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = common::server::http_client(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .get(format!("{base}/readyz"))
            .bearer_auth(TOKEN)
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        let logs = project.compose(&["logs", "--no-color"]);
        assert!(
            Instant::now() < deadline,
            "the service never got ready:\n{}",
            String::from_utf8_lossy(&logs.stdout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let denied = client
        .get(format!("{base}/v1/executions"))
        .send()
        .await
        .expect("answers");
    assert_eq!(denied.status().as_u16(), 401, "the token file is in force");
    let created: Value = client
        .post(format!("{base}/v1/executions"))
        .bearer_auth(TOKEN)
        .json(&json!({"action": "svc.pyinfo", "wait": true}))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("a record");
    assert_eq!(created["status"], "succeeded", "{created}");
    assert_eq!(created["token_name"], "compose-test");
    assert_eq!(created["result"]["name"], "__main__");

    // The server runs unprivileged, with the socket, and nothing of it reaches the action.
    let server = docker_ids(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", project.name),
    ]);
    assert_eq!(server.len(), 1, "{server:?}");
    let inspected = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.PortBindings}}",
            &server[0],
        ])
        .output()
        .expect("inspect");
    let inspected = String::from_utf8_lossy(&inspected.stdout).into_owned();
    assert!(inspected.starts_with("65534:65534 true"), "{inspected}");
    assert!(
        inspected.contains("\"HostIp\":\"127.0.0.1\""),
        "{inspected}"
    );
    let mounts = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=packbox.owner_host={}", project.name),
        ])
        .output()
        .expect("ps");
    for action in String::from_utf8_lossy(&mounts.stdout).lines() {
        let binds = Command::new("docker")
            .args(["inspect", "--format", "{{json .HostConfig.Binds}}", action])
            .output()
            .expect("inspect");
        assert!(
            !String::from_utf8_lossy(&binds.stdout).contains("docker.sock"),
            "an action got the engine's socket"
        );
    }

    let down = project.compose(&["down", "-v", "--rmi", "all", "--timeout", "60"]);
    assert!(
        down.status.success(),
        "docker-compose down failed:\n{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let project_label = format!("label=com.docker.compose.project={}", project.name);
    assert!(docker_ids(&["ps", "-aq", "--filter", &project_label]).is_empty());
    assert!(docker_ids(&["volume", "ls", "-q", "--filter", &project_label]).is_empty());
    assert!(docker_ids(&["network", "ls", "-q", "--filter", &project_label]).is_empty());
    assert!(
        docker_ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=packbox.owner_host={}", project.name)
        ])
        .is_empty(),
        "the server's action and pool containers are gone"
    );
    assert!(
        !image_exists(project.value("PACKBOX_IMAGE")),
        "the image is removed"
    );
}
