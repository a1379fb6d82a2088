//! The key store, end to end: keys set with `packbox keys` and through the API reach actions in
//! the right precedence (system < pack < action < the request's own secrets), on a server and in
//! a local `packbox run`; values are sealed at rest and appear nowhere else (the state folder,
//! the logs, `/metrics`, the API's answers, `docker inspect`, `explain`); a store without its
//! key-encryption key refuses writes; a tampered value is refused; rotation keeps every value
//! and retires the old key.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::*;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OPS: &str = "ops-token-0123456789abcdef01";
const ALPHA: &str = "alpha-token-0123456789abcdef";

const SYSTEM_KEY: &str = "SYS-api-key-aaaa1111";
const PACK_KEY: &str = "PACK-api-key-bbbb2222";
const ACTION_KEY: &str = "ACTION-api-key-cccc3333";
const SYSTEM_DB: &str = "SYS-db-password-dddd4444";
const UNDECLARED: &str = "PACK-undeclared-eeee5555";
const REQUEST_KEY: &str = "REQUEST-api-key-ffff6666";
const API_DB: &str = "API-db-password-gggg7777";
const SLEEPER_KEY: &str = "SLEEPER-api-key-hhhh8888";

fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// `packbox ARGS` with `stdin` on its standard input, on `state`.
fn packbox_with_stdin(state: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_packbox"));
    command
        .args(["--state-dir", &state.display().to_string()])
        .args(args)
        .env_remove("PACKBOX_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("packbox starts");
    let pid = child.id();
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let output = child.wait_with_output().expect("packbox finishes");
    Finished { output, pid }
}

fn set_key(state: &Path, kek: &Path, scope: &str, name: &str, value: &str) {
    let kek = kek.display().to_string();
    let done = packbox_with_stdin(
        state,
        &["--key-file", &kek, "keys", "set", scope, name],
        &format!("{value}\n"),
        &[],
    );
    assert_eq!(done.code(), 0, "{}", done.stderr());
    assert!(!done.stderr().contains(value) && !done.stdout().contains(value));
}

struct Setup {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    kek: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = fresh_state_dir();
        let kek = dir.path().join("packbox.kek");
        let made = packbox_with_stdin(
            state.path(),
            &["keys", "generate-kek", &kek.display().to_string()],
            "",
            &[],
        );
        assert_eq!(made.code(), 0, "{}", made.stderr());
        Setup { dir, state, kek }
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    fn server(&self, key_file: Option<&Path>) -> Server {
        let tokens = token_file(
            self.dir.path(),
            &format!("ops:{OPS}\nalpha:{ALPHA} run=alpha.* read=own\n"),
        );
        let mut args = vec!["--token-file".to_string(), tokens.display().to_string()];
        if let Some(kek) = key_file {
            args.extend(["--key-file".to_string(), kek.display().to_string()]);
        }
        Server::start(ServerOptions {
            packs: tenancy_packs(),
            state: self.state().to_path_buf(),
            args,
            ..ServerOptions::default()
        })
    }
}

async fn run_keys(api: &Api, secrets: Value) -> Value {
    let answer = api
        .post(
            "/v1/executions",
            &json!({"action": "alpha.keys", "secrets": secrets, "wait": true}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["status"], "succeeded", "{}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_actions_by_precedence_and_their_values_appear_nowhere_else() {
    require_engine();
    let setup = Setup::new();
    let state = setup.state();
    set_key(state, &setup.kek, "system", "api_key", SYSTEM_KEY);
    set_key(state, &setup.kek, "pack:alpha", "api_key", PACK_KEY);
    set_key(
        state,
        &setup.kek,
        "action:alpha.keys",
        "api_key",
        ACTION_KEY,
    );
    set_key(state, &setup.kek, "system", "db_password", SYSTEM_DB);
    set_key(state, &setup.kek, "pack:alpha", "undeclared", UNDECLARED);
    set_key(
        state,
        &setup.kek,
        "action:alpha.sleep",
        "api_key",
        SLEEPER_KEY,
    );
    let server = setup.server(Some(&setup.kek));
    let ops = Api::new(&server, Some(OPS));
    let alpha = Api::new(&server, Some(ALPHA));
    let mut answers = Vec::new();

    // The action's scope wins over the pack's and the system's; only declared secrets come.
    let record = run_keys(&alpha, json!({})).await;
    assert_eq!(record["result"]["api_key"], digest(ACTION_KEY), "{record}");
    assert_eq!(record["result"]["db_password"], digest(SYSTEM_DB));
    assert_eq!(record["result"]["undeclared"], "none");
    assert_eq!(
        record["keys"],
        json!([
            {"name": "api_key", "scope": "action:alpha.keys"},
            {"name": "db_password", "scope": "system"}
        ])
    );
    answers.push(record.to_string());

    // The request's own secret wins over every key.
    let record = run_keys(&alpha, json!({"api_key": REQUEST_KEY})).await;
    assert_eq!(record["result"]["api_key"], digest(REQUEST_KEY));
    assert_eq!(
        record["keys"][0],
        json!({"name": "api_key", "scope": "request"})
    );
    answers.push(record.to_string());

    // Changes through the API, by an admin token only.
    let refused = alpha
        .put("/v1/keys/pack:alpha/db_password", &json!({"value": API_DB}))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let set = ops
        .put("/v1/keys/pack:alpha/db_password", &json!({"value": API_DB}))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["updated_by"], "ops");
    answers.push(set.body.to_string());
    let removed = ops.delete("/v1/keys/action:alpha.keys/api_key").await;
    assert_eq!(removed.status, 204);
    assert_eq!(
        ops.delete("/v1/keys/action:alpha.keys/api_key")
            .await
            .status,
        404
    );
    let bad = ops
        .put("/v1/keys/global/x", &json!({"value": "v-123"}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let record = run_keys(&alpha, json!({})).await;
    assert_eq!(record["result"]["api_key"], digest(PACK_KEY));
    assert_eq!(record["result"]["db_password"], digest(API_DB));
    answers.push(record.to_string());

    // Listing and audit: names, scopes, who and when; never a value.
    let listed = ops.get("/v1/keys").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["writable"], true);
    let names: Vec<String> = listed.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                k["scope"].as_str().unwrap_or(""),
                k["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        names.contains(&"pack:alpha db_password".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"action:alpha.keys api_key".to_string()),
        "{names:?}"
    );
    answers.push(listed.body.to_string());
    assert_eq!(alpha.get("/v1/keys").await.status, 403);
    assert_eq!(alpha.get("/v1/audit").await.status, 403);
    let audit = ops.get("/v1/audit?limit=500").await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let changes: Vec<String> = audit.body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}",
                c["who"].as_str().unwrap_or(""),
                c["change"].as_str().unwrap_or(""),
                c["scope"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        changes[0], "ops remove action:alpha.keys api_key",
        "{changes:?}"
    );
    assert_eq!(changes[1], "ops set pack:alpha db_password", "{changes:?}");
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("cli:uid=") && c.ends_with("set system api_key")),
        "{changes:?}"
    );
    answers.push(audit.body.to_string());

    // A running action that holds a key: its container shows none of it.
    let sleeping = alpha
        .post(
            "/v1/executions",
            &json!({"action": "alpha.sleep", "parameters": {"seconds": 60}}),
        )
        .await;
    assert_eq!(sleeping.status, 202, "{}", sleeping.body);
    let id = sleeping.body["id"].as_str().expect("id").to_string();
    let mut exec_id = String::new();
    for _ in 0..600 {
        let record = alpha.get(&format!("/v1/executions/{id}")).await;
        if let Some(found) = record.body["exec_id"].as_str() {
            exec_id = found.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!exec_id.is_empty(), "the run never got a container");
    let container = wait_for_running(&[format!("label=packbox.exec_id={exec_id}")]);
    let inspect = Command::new("docker")
        .args(["inspect", &container])
        .output()
        .expect("docker inspect");
    let inspected = String::from_utf8_lossy(&inspect.stdout).to_string();
    assert!(inspected.contains("alpha.sleep"), "{inspected}");
    assert!(
        !inspected.contains(SLEEPER_KEY),
        "the key is in docker inspect"
    );
    ops.post(&format!("/v1/executions/{id}/cancel"), &json!({}))
        .await;
    let ended = ops.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(
        ended["keys"],
        json!([{"name": "api_key", "scope": "action:alpha.sleep"}])
    );
    answers.push(ended.to_string());
    let (_, metrics) = ops.get_raw("/metrics").await;
    answers.push(metrics);
    answers.push(ops.get("/v1/executions?limit=500").await.body.to_string());

    // explain, with the key store configured, says nothing of its values.
    let explained = packbox_with_stdin(
        state,
        &[
            "--key-file",
            &setup.kek.display().to_string(),
            "explain",
            "--packs",
            &tenancy_packs().display().to_string(),
            "alpha.keys",
        ],
        "",
        &[],
    );
    answers.push(explained.stdout() + &explained.stderr());

    let log = server.log();
    drop(server);
    let state_bytes = folder_bytes(state);
    assert!(holds(&state_bytes, "db_password"), "the key names are kept");
    for value in [
        SYSTEM_KEY,
        PACK_KEY,
        ACTION_KEY,
        SYSTEM_DB,
        UNDECLARED,
        REQUEST_KEY,
        API_DB,
        SLEEPER_KEY,
    ] {
        assert!(
            !holds(&state_bytes, value),
            "{value} is in the state folder"
        );
        assert!(!log.contains(value), "{value} is in the server's log");
        for answer in &answers {
            assert!(!answer.contains(value), "{value} is in an answer: {answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_gets_the_same_keys_as_the_server() {
    require_engine();
    let setup = Setup::new();
    let state = setup.state();
    set_key(state, &setup.kek, "pack:alpha", "api_key", PACK_KEY);
    set_key(state, &setup.kek, "system", "db_password", SYSTEM_DB);
    let kek = setup.kek.display().to_string();
    let packs = tenancy_packs().display().to_string();
    let local = packbox_with_stdin(
        state,
        &[
            "--key-file",
            &kek,
            "run",
            "--packs",
            &packs,
            "alpha.keys",
            "--json",
        ],
        "",
        &[],
    );
    assert_eq!(local.code(), 0, "{}", local.stderr());
    let outcome = local.json();
    assert_eq!(outcome["result"]["api_key"], digest(PACK_KEY), "{outcome}");
    assert_eq!(outcome["result"]["db_password"], digest(SYSTEM_DB));
    assert!(!local.stdout().contains(PACK_KEY) && !local.stderr().contains(PACK_KEY));
    let server = setup.server(Some(&setup.kek));
    let record = run_keys(&Api::new(&server, Some(ALPHA)), json!({})).await;
    assert_eq!(record["result"], outcome["result"], "the same keys");
    drop(server);
    // Without the key file, a local run gets no key (the store is empty) and says nothing of it.
    let bare = packbox_with_stdin(
        state,
        &["run", "--packs", &packs, "alpha.keys", "--json"],
        "",
        &[],
    );
    assert_eq!(bare.code(), 0, "{}", bare.stderr());
    assert_eq!(bare.json()["result"]["api_key"], "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_key_the_store_is_read_only_and_a_tampered_value_is_refused() {
    require_engine();
    let setup = Setup::new();
    let state = setup.state();
    // No key-encryption key: the CLI refuses writes, naming what to set.
    let refused = packbox_with_stdin(
        state,
        &["keys", "set", "system", "api_key"],
        "value-1\n",
        &[],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("PACKBOX_KEY_FILE"),
        "{}",
        refused.stderr()
    );
    // A key file inside the state folder is refused.
    let inside = state.join("inside.kek");
    std::fs::copy(&setup.kek, &inside).expect("copy");
    let refused = packbox_with_stdin(
        state,
        &["--key-file", &inside.display().to_string(), "keys", "list"],
        "",
        &[],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("inside the state folder"),
        "{}",
        refused.stderr()
    );
    std::fs::remove_file(&inside).expect("remove");
    {
        let server = setup.server(None);
        let log = server.log_holding("key store is empty and read-only", Duration::from_secs(10));
        assert!(log.contains("key store is empty and read-only"), "{log}");
        let ops = Api::new(&server, Some(OPS));
        let put = ops
            .put("/v1/keys/system/api_key", &json!({"value": "value-2"}))
            .await;
        assert_eq!(put.status, 409, "{}", put.body);
        assert_documented(&openapi(), "put", "/v1/keys/{scope}/{name}", &put);
        assert_eq!(put.body["error"]["code"], "read_only");
        assert_eq!(ops.get("/v1/keys").await.body["writable"], false);
    }
    // A value changed in the database fails its authentication: the run is refused, never given
    // garbage.
    set_key(state, &setup.kek, "pack:alpha", "api_key", PACK_KEY);
    {
        let connection = rusqlite::Connection::open(state.join("executions.sqlite")).expect("open");
        let sealed: Vec<u8> = connection
            .query_row("SELECT sealed FROM keys WHERE name = 'api_key'", [], |r| {
                r.get(0)
            })
            .expect("the sealed value");
        let mut changed = sealed.clone();
        let at = changed.len() / 2;
        changed[at] ^= 0x01;
        connection
            .execute(
                "UPDATE keys SET sealed = ?1 WHERE name = 'api_key'",
                [changed],
            )
            .expect("tamper");
    }
    let server = setup.server(Some(&setup.kek));
    let alpha = Api::new(&server, Some(ALPHA));
    let answer = alpha
        .post(
            "/v1/executions",
            &json!({"action": "alpha.keys", "wait": true}),
        )
        .await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_documented(&openapi(), "post", "/v1/executions", &answer);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("key store"),
        "{}",
        answer.body
    );
    let log = server.log_holding("fails authentication", Duration::from_secs(10));
    assert!(log.contains("fails authentication"), "{log}");
    drop(server);
    let local = packbox_with_stdin(
        state,
        &[
            "--key-file",
            &setup.kek.display().to_string(),
            "run",
            "--packs",
            &tenancy_packs().display().to_string(),
            "alpha.keys",
        ],
        "",
        &[],
    );
    assert_eq!(local.code(), 125, "{}", local.stderr());
    assert!(
        local.stderr().contains("fails authentication"),
        "{}",
        local.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_every_value_and_retires_the_old_key() {
    require_engine();
    let setup = Setup::new();
    let state = setup.state();
    set_key(state, &setup.kek, "pack:alpha", "api_key", PACK_KEY);
    set_key(state, &setup.kek, "system", "db_password", SYSTEM_DB);
    let new_kek = setup.dir.path().join("new.kek");
    let made = packbox_with_stdin(
        state,
        &["keys", "generate-kek", &new_kek.display().to_string()],
        "",
        &[],
    );
    assert_eq!(made.code(), 0, "{}", made.stderr());
    let old = setup.kek.display().to_string();
    let rotated = packbox_with_stdin(
        state,
        &[
            "--key-file",
            &old,
            "keys",
            "rotate",
            "--new-key-file",
            &new_kek.display().to_string(),
        ],
        "",
        &[],
    );
    assert_eq!(rotated.code(), 0, "{}", rotated.stderr());
    assert!(
        rotated.stderr().contains("sealed 2 keys again"),
        "{}",
        rotated.stderr()
    );
    let with_old = packbox_with_stdin(state, &["--key-file", &old, "keys", "list"], "", &[]);
    assert_eq!(with_old.code(), 2, "{}", with_old.stderr());
    assert!(
        with_old.stderr().contains("does not open the key store"),
        "{}",
        with_old.stderr()
    );
    let listed = packbox_with_stdin(
        state,
        &["keys", "list", "--json"],
        "",
        &[("PACKBOX_KEY_FILE", &new_kek.display().to_string())],
    );
    assert_eq!(listed.code(), 0, "{}", listed.stderr());
    assert_eq!(listed.json()["keys"].as_array().map(Vec::len), Some(2));
    let server = setup.server(Some(&new_kek));
    let record = run_keys(&Api::new(&server, Some(ALPHA)), json!({})).await;
    assert_eq!(record["result"]["api_key"], digest(PACK_KEY));
    assert_eq!(record["result"]["db_password"], digest(SYSTEM_DB));
    let audit = Api::new(&server, Some(OPS)).get("/v1/audit").await;
    assert_eq!(
        audit.body["changes"][0]["change"], "rotate",
        "{}",
        audit.body
    );
}
