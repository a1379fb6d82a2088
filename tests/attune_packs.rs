//! Packs as Attune and its users publish them (tests/fixtures/attune), against the real engine:
//! workflow actions, Attune's own fields and folders, refs that differ from file names, one entry
//! point for seven actions, the `nodejs` alias, JSON Schema parameters, dotenv keys, undeclared
//! parameters, pack dependencies, the runtimes beyond Python and Node.js, the execution context
//! and Attune's `testing` section.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn attune_packs() -> PathBuf {
    repo_root().join("tests/fixtures/attune")
}

fn packs_arg() -> String {
    attune_packs().to_string_lossy().into_owned()
}

/// `packbox run --json` of an action of the Attune fixtures, with `args` after it.
fn run(action: &str, args: &[&str]) -> Finished {
    run_json(&attune_packs(), action, args)
}

#[test]
fn a_workflow_is_listed_as_one_and_refused_by_run_with_its_own_exit_code() {
    require_engine();
    // The flows pack alone (another pack of the fixtures is invalid on purpose).
    let dir = tempfile::tempdir().expect("tempdir");
    copy_pack(&attune_packs().join("flows"), dir.path());
    let listed = packbox(
        &[
            "actions",
            "list",
            "--packs",
            &dir.path().to_string_lossy(),
            "--json",
        ],
        &[],
    );
    assert_eq!(listed.code(), 0, "{}", listed.stderr());
    let actions = listed.json();
    let deploy = actions["actions"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["ref"] == "flows.deploy"))
        .cloned()
        .unwrap_or_else(|| panic!("flows.deploy listed: {actions}"));
    assert_eq!(deploy["kind"], "workflow");
    assert_eq!(deploy["workflow_file"], "workflows/deploy.workflow.yaml");
    let refused = run("flows.deploy", &["-p", "target=prod"]);
    assert_eq!(refused.code(), 3, "{}", refused.stderr());
    assert_eq!(refused.json()["status"], "unsupported");
    assert!(
        refused.stderr().contains("is a workflow") && refused.stderr().contains("deploy.yaml"),
        "{}",
        refused.stderr()
    );
    assert_no_leftovers(&refused);
    // The other action of the pack runs; the pack validates with no warning at all, its rules,
    // sensors, triggers, own runtimes and workflow file acknowledged as not run.
    let validated = packbox(
        &[
            "pack",
            "validate",
            &format!("{}/flows", packs_arg()),
            "--strict",
            "--json",
        ],
        &[],
    );
    assert_eq!(validated.code(), 0, "{}", validated.stdout());
    let report = validated.json();
    assert_eq!(report["warnings"], json!([]), "{report}");
    let not_run: Vec<&str> = report["packs"][0]["not_run"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["folder"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        not_run,
        [
            "triggers",
            "rules",
            "sensors",
            "runtimes",
            "actions/workflows"
        ],
        "{report}"
    );
}

#[test]
fn an_action_whose_ref_differs_from_its_file_runs_and_explain_lists_what_attune_would_honour() {
    require_engine();
    let ran = run("flows.say_hello", &["-p", "name=Ada"]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    let outcome = ran.json();
    assert_eq!(
        outcome["result"],
        json!({"greeting": "hello Ada", "home": "/tmp"})
    );
    assert_no_leftovers(&ran);
    let explained = packbox(
        &[
            "explain",
            "--packs",
            &packs_arg(),
            "flows.say_hello",
            "--json",
        ],
        &[],
    );
    assert_eq!(explained.code(), 0, "{}", explained.stderr());
    let fields: Vec<String> = explained.json()["not_honoured"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["file"].as_str().unwrap_or(""),
                f["field"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "pack.yaml default_execution_permission_set_refs",
        "actions/hello.yaml worker_selector",
        "actions/hello.yaml worker_tolerations",
        "actions/hello.yaml required_worker_runtimes",
        "actions/hello.yaml log_retention_policy",
        "actions/hello.yaml notify",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected}: {fields:?}"
        );
    }
    // `enabled: true` of the pack changes nothing and is not listed.
    assert!(
        !fields.iter().any(|f| f == "pack.yaml enabled"),
        "{fields:?}"
    );
}

#[test]
fn seven_actions_share_one_entry_point_dispatching_on_attune_action() {
    require_engine();
    for action in ["init", "status", "log", "diff", "commit", "branch", "tag"] {
        let ran = run(&format!("gitpack.{action}"), &["-p", "message=first"]);
        assert_eq!(ran.code(), 0, "{action}: {}", ran.stderr());
        let result = &ran.json()["result"];
        assert_eq!(result["action"], action, "{result}");
        // The code comes from the pack's lib/, found through PYTHONPATH.
        assert_eq!(result["lib"], "gitlib.ops", "{result}");
        assert_no_leftovers(&ran);
    }
    let log = run("gitpack.log", &["-p", "message=a commit made in $HOME"]);
    assert_eq!(log.json()["result"]["answer"], "a commit made in $HOME");
}

#[test]
fn a_nodejs_pack_without_a_lock_file_runs_through_the_alias() {
    require_engine();
    let ran = run("nodeex.hello", &["-p", "name=Ada"]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    let outcome = ran.json();
    assert_eq!(outcome["runtime"], "node");
    assert_eq!(outcome["result"]["greeting"], "hello Ada");
    assert!(
        outcome["runtime_version"].as_str().is_some_and(|v| v
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            >= Some(18)),
        "{outcome}"
    );
}

#[test]
fn every_json_schema_keyword_is_enforced_before_any_container_naming_the_path() {
    require_engine();
    let good = json!({
        "name": "ada", "tags": ["a", "b"], "server": {"port": 8080}, "mode": "fast",
        "size": 8, "ratio": 0.5, "label": "fine", "note": null
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("good.json");
    std::fs::write(&file, good.to_string()).expect("write");
    let ran = run(
        "schemas.keywords",
        &["--params-file", &file.to_string_lossy()],
    );
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    let delivered: Value = serde_json::from_str(ran.json()["stdout"].as_str().unwrap_or(""))
        .expect("the action echoes its document");
    assert_eq!(delivered, good);
    let bad = json!({
        "name": "A", "tags": ["a", "a", 3], "server": {"port": 0, "host": "x"},
        "mode": "medium", "size": 7, "ratio": 0, "label": "forbidden", "note": 3, "extra": 1
    });
    std::fs::write(&file, bad.to_string()).expect("write");
    let refused = run(
        "schemas.keywords",
        &["--params-file", &file.to_string_lossy()],
    );
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for place in [
        "`name`",
        "`tags`",
        "`tags[2]`",
        "`server.port`",
        "`server`",
        "`mode`",
        "`size`",
        "`ratio`",
        "`label`",
        "`note`",
        "unknown parameter `extra`",
    ] {
        assert!(error.contains(place), "{place}: {error}");
    }
    assert!(error.contains("additionalProperties: false"), "{error}");
    assert_no_leftovers(&refused);
    assert!(containers_of(refused.pid).is_empty());
}

#[test]
fn undeclared_parameters_are_delivered_with_a_warning_unless_strict() {
    require_engine();
    let ran = run("schemas.open", &["-p", "extra=1"]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    let outcome = ran.json();
    assert_eq!(outcome["stdout"], "extra='1'\nname='x'\n", "{outcome}");
    let warnings = outcome["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{outcome}");
    assert!(warnings[0].as_str().unwrap_or("").contains("`extra`"));
    let strict = packbox(
        &[
            "run",
            "--packs",
            &packs_arg(),
            "schemas.open",
            "-p",
            "extra=1",
            "--json",
        ],
        &[("PACKBOX_STRICT_PARAMETERS", "1")],
    );
    assert_eq!(strict.code(), 2, "{}", strict.stderr());
    assert!(
        strict.stderr().contains("run.strict_parameters"),
        "{}",
        strict.stderr()
    );
}

#[test]
fn dotenv_keys_attune_accepts_are_delivered_quoted() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("params.json");
    std::fs::write(
        &file,
        json!({"headers": {"User Agent": "packbox", "Content-Type": "text/plain", "$(id)": "x"}})
            .to_string(),
    )
    .expect("write");
    let ran = run("schemas.open", &["--params-file", &file.to_string_lossy()]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    assert_eq!(
        ran.json()["stdout"],
        "'headers.$(id)'='x'\n'headers.User Agent'='packbox'\nheaders.Content-Type='text/plain'\nname='x'\n"
    );
    std::fs::write(&file, json!({"headers": {"a\nb": "x"}}).to_string()).expect("write");
    let refused = run("schemas.open", &["--params-file", &file.to_string_lossy()]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert_no_leftovers(&refused);
}

#[test]
fn a_default_of_the_wrong_type_is_a_warning_and_refuses_only_the_run_that_relies_on_it() {
    require_engine();
    let validated = packbox(
        &[
            "pack",
            "validate",
            &format!("{}/schemas", packs_arg()),
            "--json",
        ],
        &[],
    );
    assert_eq!(validated.code(), 0, "{}", validated.stdout());
    let warnings = validated.json()["warnings"].to_string();
    assert!(warnings.contains("parameters.count.default"), "{warnings}");
    let relies = run("schemas.wrong_default", &[]);
    assert_eq!(relies.code(), 2, "{}", relies.stderr());
    let given = run("schemas.wrong_default", &["-p", "count=3"]);
    assert_eq!(given.code(), 0, "{}", given.stderr());
}

#[test]
fn a_missing_or_wrong_version_pack_dependency_names_both_packs() {
    require_engine();
    let refused = run("needy.hi", &[]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("pack `needy` needs pack `absent`"),
        "{error}"
    );
    assert!(
        error.contains("pack `needy` needs pack `flows` at `>=2.0`") && error.contains("1.2.0"),
        "{error}"
    );
    assert_no_leftovers(&refused);
}

#[test]
fn a_native_actions_json_stdout_is_its_result() {
    require_engine();
    let ran = run("polyglot.native_json", &[]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    assert_eq!(ran.json()["result"], json!({"native": true, "count": 2}));
}

#[test]
fn ruby_and_perl_actions_run_on_images_built_when_first_needed() {
    require_engine();
    let ruby = run("polyglot.ruby_hello", &["-p", "name=Ada"]);
    assert_eq!(ruby.code(), 0, "{}", ruby.stderr());
    let outcome = ruby.json();
    assert_eq!(outcome["runtime"], "ruby");
    assert_eq!(outcome["result"]["greeting"], "hello Ada", "{outcome}");
    let perl = run("polyglot.perl_hello", &["-p", "name=Ada"]);
    assert_eq!(perl.code(), 0, "{}", perl.stderr());
    let outcome = perl.json();
    assert!(
        outcome["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with("hello Ada from perl 5."),
        "{outcome}"
    );
}

#[test]
fn a_java_action_runs_on_an_image_built_when_first_needed() {
    require_engine();
    let java = run("polyglot.java_hello", &["-p", "name=Ada"]);
    assert_eq!(java.code(), 0, "{}", java.stderr());
    let outcome = java.json();
    assert!(
        outcome["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with("hello from java 21: {\"name\":\"Ada\"}"),
        "{outcome}"
    );
}

#[test]
fn the_execution_context_has_an_integer_exec_id_and_a_home_where_git_works() {
    require_engine();
    let ran = run("context.inspect", &[]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    let outcome = ran.json();
    let result = &outcome["result"];
    assert!(
        result["exec_id"].as_u64().is_some_and(|id| id > 0),
        "{outcome}"
    );
    assert_eq!(result["home"], "/tmp");
    assert_eq!(result["git"], true, "{outcome}");
    // Unique within the state folder: the next run gets another.
    let again = run("context.inspect", &[]);
    assert_ne!(again.json()["result"]["exec_id"], result["exec_id"]);
}

/// SHA-256 of bytes, lowercase hex.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The names of a folder's entries, sorted.
fn entries(folder: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|read| {
            read.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every file name under a folder, at any depth.
fn all_names(folder: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let path = entry.path();
        names.push(entry.file_name().to_string_lossy().into_owned());
        if path.is_dir() && !path.is_symlink() {
            names.extend(all_names(&path));
        }
    }
    names
}

#[test]
fn the_actions_artifacts_are_listed_with_size_and_sha256_and_kept_in_the_state_folder() {
    require_engine();
    // On every engine, rootless Podman on cgroup v1 with the operator's consent to its lack of
    // limits (`engine::run_flags`).
    let ran = run("context.inspect", &engine::run_flags());
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    let outcome = ran.json();
    assert_eq!(outcome["result"]["artifacts_dir"], "/tmp/artifacts");
    let exec_id = outcome["result"]["exec_id"].as_u64().expect("an exec id");
    let data = format!("{{\"exec_id\": {exec_id}}}");
    assert_eq!(
        outcome["artifacts"],
        json!([
            {"name": "data.json", "size": data.len(), "sha256": sha256(data.as_bytes())},
            {"name": "report.txt", "size": 14, "sha256": sha256(b"two artifacts\n")},
        ]),
        "{outcome}"
    );
    assert!(outcome.get("artifacts_refused").is_none(), "{outcome}");
    let folder = PathBuf::from(outcome["artifacts_dir"].as_str().expect("a folder"));
    assert_eq!(
        folder,
        state_dir()
            .join("artifacts")
            .join(outcome["exec_id"].as_str().expect("exec id"))
    );
    assert_eq!(
        std::fs::read(folder.join("report.txt")).expect("stored"),
        b"two artifacts\n"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("data.json")).expect("stored"),
        data
    );
    // Without --json, a line says where they are.
    let packs = packs_arg();
    let mut args = vec!["run", "--packs", &packs, "context.inspect"];
    args.extend(engine::run_flags());
    let human = packbox(&args, &[]);
    assert_eq!(human.code(), 0, "{}", human.stderr());
    assert!(
        human.stderr().contains("artifacts: 2 kept in "),
        "{}",
        human.stderr()
    );
    // No incoming folder is left behind.
    assert!(
        entries(&state_dir().join("artifacts"))
            .iter()
            .all(|name| !name.starts_with('.')),
        "{:?}",
        entries(&state_dir().join("artifacts"))
    );
}

/// Runs `context.hostile_artifacts` with at most 3 files and 1 KiB kept, and checks what was
/// kept, what was refused and why, and that nothing escaped the run's folder.
fn hostile_artifacts_are_refused(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "run: {artifacts_max_files: 3, artifacts_max_bytes: 1k}\n",
    )
    .expect("write");
    let config = config.to_string_lossy().into_owned();
    let packs = packs_arg();
    let mut args = vec![
        "--config",
        &config,
        "run",
        "--packs",
        &packs,
        "context.hostile_artifacts",
        "--json",
    ];
    args.extend_from_slice(extra);
    args.extend(engine::run_flags());
    let ran = packbox(&args, &[]);
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    assert_no_leftovers(&ran);
    let outcome = ran.json();
    assert_eq!(outcome["stdout"], "done\n", "{outcome}");
    // Ended by the action's exit, its fork loop with it, not by its timeout.
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    if extra.contains(&"runsc") {
        assert_eq!(outcome["sandbox"]["oci_runtime"], "runsc", "{outcome}");
    }
    let folder = PathBuf::from(outcome["artifacts_dir"].as_str().expect("a folder"));
    let kept: Vec<&str> = outcome["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(kept, ["a-kept.txt", "b-kept.txt", "d-kept"], "{outcome}");
    assert_eq!(entries(&folder), kept, "only the kept files are stored");
    // Each listing matches the stored bytes; the file the leftover process kept appending to
    // was read after that process was ended, whole.
    for artifact in outcome["artifacts"].as_array().expect("artifacts") {
        let name = artifact["name"].as_str().expect("name");
        let stored = std::fs::read(folder.join(name)).expect("stored");
        assert_eq!(artifact["size"], stored.len(), "{name}");
        assert_eq!(artifact["sha256"], sha256(&stored), "{name}");
    }
    let appended = std::fs::read(folder.join("a-kept.txt")).expect("stored");
    assert!(appended.starts_with(b"kept one\n"), "{appended:?}");
    let refused: Vec<(String, String)> = outcome["artifacts_refused"]
        .as_array()
        .expect("refusals")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let reason_of = |name: &str| {
        refused
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, reason)| reason.clone())
            .unwrap_or_else(|| panic!("{name} not refused: {outcome}"))
    };
    assert!(reason_of("bad\\nname").contains("control character"));
    assert!(reason_of("c-too-big.bin").contains("beyond the 1024 bytes"));
    assert!(reason_of("c2-sparse.bin").contains("107374182400 bytes"));
    assert!(reason_of("e-over-count").contains("beyond the 3 files"));
    assert!(reason_of("f-shadow-link").contains("a symlink"));
    assert!(reason_of("g-parent-link").contains("a symlink"));
    assert!(reason_of("h-fifo").contains("a FIFO"));
    assert!(reason_of("i-folder").contains("a folder"));
    assert_eq!(refused.len(), 8, "{outcome}");
    // Nothing written through `..` or inside the sub-folder reached the state folder.
    let everything = all_names(&state_dir());
    for escaped in ["escaped.txt", "inner.txt", "shadow"] {
        assert!(!everything.iter().any(|n| n == escaped), "{everything:?}");
    }
}

#[test]
fn hostile_artifacts_are_refused_by_name_and_bound_and_nothing_escapes() {
    require_engine();
    hostile_artifacts_are_refused(&[]);
}

#[test]
fn hostile_artifacts_are_refused_under_gvisor_too() {
    require_engine();
    // Podman's compat API ignores the OCI runtime a container names: no gVisor there.
    if engine::is_podman() {
        return;
    }
    let output = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .expect("docker info runs");
    let runtimes = String::from_utf8_lossy(&output.stdout);
    assert!(
        runtimes.contains("\"runsc\""),
        "the engine has no runsc ({runtimes}): run scripts/ensure-docker --with-gvisor"
    );
    hostile_artifacts_are_refused(&["--oci-runtime", "runsc"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_download_through_the_api_for_their_readers_only_and_go_with_their_record() {
    use common::server::*;
    require_engine();
    const ALPHA: &str = "alpha-artifacts-0123456789abcdef";
    const BETA: &str = "beta-artifacts-0123456789abcdef0";
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    std::fs::create_dir(&packs).expect("packs");
    copy_pack(&attune_packs().join("context"), &packs);
    let tokens = token_file(
        dir.path(),
        &format!("alpha:{ALPHA} run=context.* read=own\nbeta:{BETA} run=context.* read=own\n"),
    );
    let mut config = String::from(
        "serve:\n  retention:\n    succeeded: {max_count: 1}\n    failed: {max_count: 100, max_age: 1h}\n    prune_every: 1s\n",
    );
    if engine::drops_limits() {
        config.push_str("sandbox: {allow_weaker: true}\n");
    }
    let server = Server::start(ServerOptions {
        packs,
        config,
        args: vec!["--token-file".into(), tokens.display().to_string()],
        ..ServerOptions::default()
    });
    let alpha = Api::new(&server, Some(ALPHA));
    let beta = Api::new(&server, Some(BETA));
    let ran = alpha
        .post(
            "/v1/executions",
            &json!({"action": "context.inspect", "wait": true}),
        )
        .await;
    assert_eq!(ran.status, 201, "{}", ran.body);
    assert_eq!(ran.body["status"], "succeeded", "{}", ran.body);
    let id = ran.body["id"].as_str().expect("id").to_string();
    let exec_id = ran.body["exec_id"].as_str().expect("exec id").to_string();
    let report = json!({"name": "report.txt", "size": 14, "sha256": sha256(b"two artifacts\n")});
    assert!(
        ran.body["artifacts"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.contains(&report)),
        "{}",
        ran.body
    );
    let shown = alpha.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(shown.body["artifacts"], ran.body["artifacts"]);
    let url = format!("/v1/executions/{id}/artifacts/report.txt");
    assert_eq!(
        alpha.get_raw(&url).await,
        (200, "two artifacts\n".to_string())
    );
    // Another token that reads only its own: not found, as the execution itself is.
    let (status, body) = beta.get_raw(&url).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("two artifacts"), "{body}");
    assert_eq!(beta.get(&format!("/v1/executions/{id}")).await.status, 404);
    // Names the record does not list, or that climb out, are not found.
    for name in [
        "missing.txt",
        "..%2F..%2Fprobes.json",
        "%2E%2E",
        "data.json%00",
    ] {
        let (status, _) = alpha
            .get_raw(&format!("/v1/executions/{id}/artifacts/{name}"))
            .await;
        assert_eq!(status, 404, "{name}");
    }
    let folder = state_dir().join("artifacts").join(&exec_id);
    assert!(folder.join("report.txt").is_file());
    // Retention keeps one success: the next one prunes this record, and its artifacts go too.
    let next = alpha
        .post(
            "/v1/executions",
            &json!({"action": "context.inspect", "wait": true}),
        )
        .await;
    assert_eq!(next.body["status"], "succeeded", "{}", next.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while folder.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pruned record's artifacts stayed in {}",
            folder.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(alpha.get_raw(&url).await.0, 404);
    let next_folder = state_dir()
        .join("artifacts")
        .join(next.body["exec_id"].as_str().expect("exec id"));
    assert!(
        next_folder.join("report.txt").is_file(),
        "the kept record keeps its artifacts"
    );
}

#[test]
fn the_operators_default_timeout_yields_to_the_actions_own() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "run: {timeout_seconds: 1}\n").expect("write");
    let config = config.to_string_lossy().into_owned();
    let ran = packbox(
        &[
            "--config",
            &config,
            "run",
            "--packs",
            &packs_arg(),
            "context.sleepy",
            "--json",
        ],
        &[],
    );
    assert_eq!(ran.code(), 0, "{}", ran.stderr());
    // `--timeout` is this run's own limit and wins over the action's.
    let capped = packbox(
        &[
            "--config",
            &config,
            "run",
            "--packs",
            &packs_arg(),
            "context.sleepy",
            "--timeout",
            "1",
            "--json",
        ],
        &[],
    );
    assert_eq!(capped.code(), 124, "{}", capped.stderr());
}

#[test]
fn a_packs_tests_pass_at_their_min_pass_rate_counted_from_simple_results() {
    require_engine();
    let tested = packbox(&["test", &format!("{}/tested", packs_arg()), "--json"], &[]);
    assert_eq!(tested.code(), 0, "{}", tested.stdout());
    let report = tested.json();
    assert_eq!(report["passed"], true);
    assert_eq!(report["pass_rate"], 0.75);
    let shell = &report["runners"][0];
    assert_eq!(shell["status"], "failed", "the runner exited 1: {report}");
    assert_eq!(
        shell["counts"],
        json!({"total": 4, "passed": 3, "failed": 1, "skipped": 0})
    );
}

/// Output and error of a finished `packbox`, for messages that may be on either.
fn said(finished: &Finished) -> String {
    format!("{}\n{}", finished.stdout(), finished.stderr())
}

#[test]
fn runtime_yaml_in_attunes_shape_given_to_catalog_runs_an_action_and_says_what_it_leaves_out() {
    require_engine();
    let catalog = attune_packs().join("catalog/python.yaml");
    let catalog = catalog.to_string_lossy();
    let ran = packbox(
        &[
            "--catalog",
            &catalog,
            "run",
            "--packs",
            &packs_arg(),
            "brings.env",
            "--json",
        ],
        &[],
    );
    assert_eq!(ran.code(), 0, "{}", said(&ran));
    let outcome = ran.json();
    assert_eq!(outcome["runtime"], "python");
    assert_eq!(
        outcome["result"]["version"], "3.11",
        "the file's default: {outcome}"
    );
    assert_eq!(outcome["result"]["tag"], "/pack/tag", "{outcome}");
    assert_eq!(outcome["result"]["pythonpath"], "/pack/lib", "{outcome}");
    assert_eq!(outcome["result"]["venv_hint"], Value::Null, "{outcome}");
    let warnings = outcome["warnings"].to_string();
    for expected in ["version 3.12 is left out", "VENV_HINT", "install_command"] {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
    assert_no_leftovers(&ran);
    // The version the file asks for by constraint, on packbox's own 3.13 image.
    let newer = packbox(
        &[
            "--catalog",
            &catalog,
            "explain",
            "--packs",
            &packs_arg(),
            "brings.env",
            "--json",
        ],
        &[],
    );
    assert_eq!(newer.code(), 0, "{}", said(&newer));
    let explained = newer.json();
    let declared: Vec<&str> = explained["candidates"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["declared"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(declared, ["3.11", "3.13"], "{explained}");
    assert!(
        explained["runtime_not_honoured"]
            .to_string()
            .contains("versions[1]"),
        "{explained}"
    );
    let listed = packbox(&["--catalog", &catalog, "runtimes", "list"], &[]);
    assert_eq!(listed.code(), 0, "{}", said(&listed));
    assert!(
        listed.stdout().contains("NOT HONOURED")
            && listed.stdout().contains("version 3.12 is left out"),
        "{}",
        listed.stdout()
    );
}

#[test]
fn runtime_yaml_packbox_cannot_map_is_one_error_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, words) in [
        (
            "python.yaml",
            "ref: core.python\nexecution_config:\n  interpreter: python3\n",
            "execution_config.interpreter: invalid type",
        ),
        (
            "ruby.yaml",
            "ref: core.ruby\nexecution_config:\n  interpreter: {binary: ruby}\n  file_extension: .rb\n",
            "unknown field `file_extension`",
        ),
        (
            "deno.yaml",
            "ref: site.deno\nexecution_config: {interpreter: {binary: deno}}\nversions: [{version: '2.1'}]\n",
            "`versions`: none of 2.1 has an image packbox can use",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write");
        let file = file.to_string_lossy();
        let refused = packbox(
            &[
                "--catalog",
                &file,
                "run",
                "--packs",
                &packs_arg(),
                "flows.say_hello",
                "--json",
            ],
            &[],
        );
        assert_eq!(refused.code(), 2, "{}", said(&refused));
        assert_eq!(refused.json()["status"], "invalid", "{}", said(&refused));
        let text = said(&refused);
        assert!(
            text.contains(&*file) && text.contains(words),
            "{words}: {text}"
        );
    }
}

#[test]
fn a_packs_own_runtime_is_refused_by_default_and_runs_on_the_catalogs_images_when_allowed() {
    require_engine();
    let refused = run("brings.strict", &[]);
    assert_eq!(refused.code(), 2, "{}", said(&refused));
    let text = said(&refused);
    assert!(
        text.contains("build.allow_pack_runtimes") && text.contains("runtimes/strictsh.yaml"),
        "{text}"
    );
    assert_no_leftovers(&refused);
    let validated = packbox(
        &[
            "pack",
            "validate",
            &format!("{}/brings", packs_arg()),
            "--json",
        ],
        &[],
    );
    assert_ne!(validated.code(), 0, "{}", said(&validated));
    assert!(
        said(&validated).contains("build.allow_pack_runtimes"),
        "{}",
        said(&validated)
    );

    let allow = [("PACKBOX_ALLOW_PACK_RUNTIMES", "1")];
    let ran = packbox(
        &["run", "--packs", &packs_arg(), "brings.strict", "--json"],
        &allow,
    );
    assert_eq!(ran.code(), 0, "{}", said(&ran));
    let outcome = ran.json();
    assert_eq!(outcome["runtime"], "brings.strictsh", "{outcome}");
    assert_eq!(
        outcome["image"], "packbox/shell:5.2",
        "the catalog's image: {outcome}"
    );
    let flags = outcome["result"]["flags"].as_str().unwrap_or_default();
    assert!(
        flags.contains('e') && flags.contains('u'),
        "bash -e -u: {outcome}"
    );
    assert_eq!(outcome["result"]["mode"], "on", "{outcome}");
    assert_eq!(outcome["result"]["lib"], "/pack/lib", "{outcome}");
    assert!(
        outcome["warnings"]
            .to_string()
            .contains("`bash` stays the catalog's shell"),
        "{outcome}"
    );
    assert_no_leftovers(&ran);
    let validated = packbox(
        &[
            "pack",
            "validate",
            &format!("{}/brings", packs_arg()),
            "--json",
        ],
        &allow,
    );
    assert_eq!(validated.code(), 0, "{}", said(&validated));
}

#[test]
fn a_packs_runtime_that_asks_for_what_packbox_cannot_do_safely_is_refused_when_allowed() {
    require_engine();
    let allow = [("PACKBOX_ALLOW_PACK_RUNTIMES", "1")];
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&attune_packs().join("brings"), dir.path());
    let packs = dir.path().to_string_lossy().into_owned();
    for (text, words) in [
        (
            "ref: brings.strictsh\naliases: [strictsh]\nexecution_config: {interpreter: {binary: bash}}\nversions:\n  - {version: '5.2', packbox: {image: 'packbox-test/planted:1'}}\n",
            "cannot name an image or a recipe",
        ),
        (
            "ref: brings.strictsh\naliases: [strictsh]\nexecution_config: {interpreter: {binary: deno, args: [run]}}\n",
            "`deno` is the interpreter of no runtime of the catalog",
        ),
        (
            "ref: brings.strictsh\naliases: [strictsh]\nexecution_config:\n  interpreter: {binary: bash}\n  env_vars: {PACKBOX_EXEC_ID: forged}\n",
            "execution_config.env_vars.PACKBOX_EXEC_ID",
        ),
    ] {
        std::fs::write(pack.join("runtimes/strictsh.yaml"), text).expect("write");
        let refused = packbox(
            &["run", "--packs", &packs, "brings.strict", "--json"],
            &allow,
        );
        assert_eq!(refused.code(), 2, "{}", said(&refused));
        let said = said(&refused);
        assert!(
            said.contains("strictsh.yaml") && said.contains(words),
            "{words}: {said}"
        );
        assert_no_leftovers(&refused);
    }
    // The flows pack's deno runtime cannot be used; its shell action still runs.
    let flows = copy_pack(&attune_packs().join("flows"), dir.path());
    let validated = packbox(
        &["pack", "validate", &flows.to_string_lossy(), "--json"],
        &allow,
    );
    assert!(
        said(&validated).contains("deno.yaml"),
        "{}",
        said(&validated)
    );
    let ran = packbox(
        &[
            "run",
            "--packs",
            &packs,
            "flows.say_hello",
            "-p",
            "name=Ada",
            "--json",
        ],
        &allow,
    );
    assert_eq!(ran.code(), 0, "{}", said(&ran));
}

/// Sets a folder's modification time `days` days back (as if nothing changed it since).
fn age_folder(folder: &std::path::Path, days: u64) {
    let past = std::time::SystemTime::now() - Duration::from_secs(days * 24 * 3600);
    std::fs::File::open(folder)
        .and_then(|f| f.set_modified(past))
        .unwrap_or_else(|e| panic!("aging {}: {e}", folder.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_old_local_artifacts_but_never_a_recorded_runs_or_through_a_symlink() {
    use common::server::*;
    require_engine();
    let state = state_dir();
    let root = state.join("artifacts");
    // A local run's folder, and a server run's, whose record lists it.
    let local = run("context.inspect", &engine::run_flags());
    assert_eq!(local.code(), 0, "{}", local.stderr());
    let local_id = local.json()["exec_id"]
        .as_str()
        .expect("exec id")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    std::fs::create_dir(&packs).expect("packs");
    copy_pack(&attune_packs().join("context"), &packs);
    let server = Server::start(ServerOptions {
        packs,
        config: if engine::drops_limits() {
            "sandbox: {allow_weaker: true}\n".into()
        } else {
            String::new()
        },
        ..ServerOptions::default()
    });
    let api = Api::new(&server, None);
    let served = api
        .post(
            "/v1/executions",
            &json!({"action": "context.inspect", "wait": true}),
        )
        .await;
    assert_eq!(served.body["status"], "succeeded", "{}", served.body);
    let served_id = served.body["exec_id"]
        .as_str()
        .expect("exec id")
        .to_string();
    // Both unchanged for 8 days; a symlink named as a run points at an old folder elsewhere.
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("victim");
    std::fs::create_dir(&target).expect("folder");
    std::fs::write(target.join("precious"), b"keep").expect("write");
    age_folder(&target, 30);
    let link_name = "0b7f4a36-5d2e-4c1a-9f3e-2a6b8c9d0e1f";
    std::os::unix::fs::symlink(&target, root.join(link_name)).expect("symlink");
    for id in [&local_id, &served_id] {
        age_folder(&root.join(id), 8);
    }
    // A longer retention than their age: nothing goes.
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "run: {artifacts_retention: 30d}\n").expect("write");
    let config = config.to_string_lossy().into_owned();
    let kept = packbox(&["--config", &config, "gc", "--json"], &[]);
    assert_eq!(kept.code(), 0, "{}", kept.stderr());
    assert_eq!(kept.json()["artifacts"], json!([]), "{}", kept.stdout());
    assert!(root.join(&local_id).is_dir());
    // The default, 7 days: the local run's folder goes, the server's stays with its record
    // (read while the server runs), the symlink and what it points at are left alone.
    let collected = packbox(&["gc", "--json"], &[]);
    assert_eq!(collected.code(), 0, "{}", collected.stderr());
    let report = collected.json();
    let removed: Vec<&str> = report["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter_map(|r| r["exec_id"].as_str())
        .collect();
    assert_eq!(removed, [local_id.as_str()], "{report}");
    assert!(report["artifacts"][0]["age_seconds"].as_u64() >= Some(8 * 24 * 3600));
    assert!(!root.join(&local_id).exists());
    assert!(root.join(&served_id).join("report.txt").is_file());
    assert!(root.join(link_name).is_symlink());
    assert!(target.join("precious").is_file());
    // Without --json, a line per folder and the count.
    let local = run("context.inspect", &engine::run_flags());
    let again_id = local.json()["exec_id"]
        .as_str()
        .expect("exec id")
        .to_string();
    age_folder(&root.join(&again_id), 9);
    let human = packbox(&["gc"], &[]);
    assert_eq!(human.code(), 0, "{}", human.stderr());
    assert!(
        human.stdout().contains(&format!(
            "removed artifacts {} (unchanged for 9 days)",
            root.join(&again_id).display()
        )) && human.stdout().contains(", 1 artifacts folder(s)"),
        "{}",
        human.stdout()
    );
    std::fs::remove_file(root.join(link_name)).expect("remove the symlink");
    drop(server);
}
