//! `meta.system_packages` (tests/fixtures/syspkg), against the real engine and the real Debian
//! mirror (through packbox's egress proxy): a pack that declares Debian packages is refused by
//! run, build, pack validate and explain naming the operator's setting (off by default); with
//! the setting its environment build installs them with apt as root (a step of its own before
//! the installer's), and the action runs with them; an unknown package fails the build with
//! apt's message and leaves nothing; another list is another environment; a name that is not a
//! bare Debian package name is refused as the pack's error before any container exists. The
//! server refuses such a request as the CLI does.

mod common;

use std::path::{Path, PathBuf};

use common::server::{Api, Server, ServerOptions};
use common::*;

fn syspkg_packs() -> PathBuf {
    repo_root().join("tests/fixtures/syspkg")
}

fn said(finished: &Finished) -> String {
    format!("{}\n{}", finished.stdout(), finished.stderr())
}

const ALLOW: [(&str, &str); 1] = [("PACKBOX_ALLOW_SYSTEM_PACKAGES", "1")];

/// Asserts that `finished` exited 2 naming what `words` say, created no container at all and
/// left none behind.
fn assert_refused_before_any_container(finished: &Finished, since: u64, words: &[&str]) {
    assert_eq!(finished.code(), 2, "{}", said(finished));
    let text = said(finished);
    for word in words {
        assert!(text.contains(word), "{word}: {text}");
    }
    assert_eq!(
        containers_created_by(finished.pid, since),
        0,
        "no container for a refused pack: {text}"
    );
    assert_no_leftovers(finished);
}

#[test]
fn a_pack_declaring_system_packages_is_refused_by_default_naming_the_setting() {
    require_engine();
    let packs = syspkg_packs();
    let packs_arg = packs.to_string_lossy();
    let pack_yaml = packs.join("needsjq/pack.yaml");
    let pack_yaml = pack_yaml.to_string_lossy();
    let since = unix_now();
    let words = [
        "build.allow_system_packages",
        "PACKBOX_ALLOW_SYSTEM_PACKAGES",
        &*pack_yaml,
        "meta.system_packages: jq",
    ];

    let ran = run_json(&packs, "needsjq.query", &[]);
    assert_refused_before_any_container(&ran, since, &words);
    assert_eq!(ran.json()["status"], "invalid", "{}", said(&ran));

    let built = packbox(&["build", "--packs", &packs_arg, "--json"], &[]);
    assert_refused_before_any_container(&built, since, &words);

    let validated = packbox(
        &[
            "pack",
            "validate",
            &format!("{packs_arg}/needsjq"),
            "--json",
        ],
        &[],
    );
    assert_refused_before_any_container(&validated, since, &words);
    let problems = validated.json()["problems"].clone();
    assert_eq!(problems[0]["field"], "meta.system_packages", "{problems}");
    assert_eq!(problems[0]["file"], *pack_yaml, "{problems}");

    let explained = packbox(
        &["explain", "--packs", &packs_arg, "needsjq.query", "--json"],
        &[],
    );
    assert_eq!(explained.code(), 2, "{}", said(&explained));
    let explanation = explained.json();
    assert_eq!(
        explanation["system_packages"],
        serde_json::json!(["jq"]),
        "{explanation}"
    );
    let refusal = explanation["refusal"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("build.allow_system_packages"),
        "{explanation}"
    );
    assert_no_leftovers(&explained);
}

/// The environment of `action` as `packbox explain` reports it (with the setting on).
fn explained_environment(packs: &Path, action: &str) -> serde_json::Value {
    let explained = packbox(
        &[
            "explain",
            "--packs",
            &packs.to_string_lossy(),
            action,
            "--json",
        ],
        &ALLOW,
    );
    assert_eq!(explained.code(), 0, "{}", said(&explained));
    assert_no_leftovers(&explained);
    explained.json()["environment"].clone()
}

/// The build logs of this test's state folder, concatenated.
fn build_logs() -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(state_dir().join("builds")) {
        for entry in entries.flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

/// `docker ARGS`, its output.
fn docker(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

/// Whether the engine has an image of that name or id.
fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", image]).status.success()
}

/// Images (all, untagged layers too) labelled with this environment key.
fn images_with_key(key: &str) -> Vec<String> {
    let listed = docker(&[
        "images",
        "-a",
        "-q",
        "--filter",
        &format!("label=packbox.key={key}"),
    ]);
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn where_the_operator_allows_them_a_shell_action_runs_with_tree_installed_from_the_debian_mirror() {
    require_engine();
    let packs = syspkg_packs();
    let environment = explained_environment(&packs, "needstree.count");
    assert_eq!(environment["needed"], true, "{environment}");
    let tag = environment["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(tag.starts_with("packbox/env:shell-"), "{environment}");
    assert_eq!(
        environment["key_parts"]["system_packages"],
        serde_json::json!(["tree"]),
        "{environment}"
    );
    // A fresh build each time the test runs.
    cleanup_image(&tag);
    if environment["exists"] == true {
        docker(&["rmi", "-f", &tag]);
    }

    let ran = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "needstree.count",
            "--json",
        ],
        &ALLOW,
    );
    assert_eq!(ran.code(), 0, "{}", said(&ran));
    let outcome = ran.json();
    assert_eq!(
        outcome["result"],
        serde_json::json!({"dirs": 3}),
        "{outcome}"
    );
    assert_eq!(outcome["image"], tag.as_str(), "{outcome}");
    assert_no_leftovers(&ran);

    // The apt step reached the Debian mirror the runtime image names, through the egress
    // proxy, and nothing else.
    let log = build_logs();
    assert!(
        log.contains("installing the Debian packages tree (meta.system_packages)")
            && log.contains(
                "(root, capabilities CHOWN, DAC_OVERRIDE, FOWNER only, no file of the pack)"
            ),
        "{log}"
    );
    assert!(
        log.contains(
            "network: packbox's egress proxy only, granting deb.debian.org:80 (the runtime image's /etc/apt/sources.list)"
        ),
        "{log}"
    );
    assert!(log.contains("Setting up tree ("), "apt installed it: {log}");
    let audit: Vec<&str> = log.lines().filter(|l| l.starts_with("egress: ")).collect();
    assert!(!audit.is_empty(), "no connection audited: {log}");
    for line in &audit {
        assert!(
            line.starts_with("egress: allowed deb.debian.org:80 "),
            "only the Debian mirror: {line}\n{log}"
        );
    }
    assert!(
        log.contains("egress audit: ") && log.contains(" 0 refused"),
        "{log}"
    );

    // The image keeps no proxy setting, no apt lists, and runs as the action's user.
    for args in [
        vec![
            "image",
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            tag.as_str(),
        ],
        vec!["history", "--no-trunc", tag.as_str()],
    ] {
        let shown = docker(&args);
        assert!(shown.status.success(), "docker {args:?}");
        let text = String::from_utf8_lossy(&shown.stdout).to_ascii_lowercase();
        assert!(!text.contains("proxy"), "docker {args:?}: {text}");
    }
    let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", &tag]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65534:65534");
    let lists = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        &tag,
        "-c",
        "ls /var/lib/apt/lists | grep -v -x -e lock -e partial | wc -l; ls /tmp | wc -l",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&lists.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "0"],
        "apt's lists and the step's configuration are gone"
    );

    // The same action again: the image is there, nothing is built.
    let since = unix_now();
    let again = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "needstree.count",
            "--json",
        ],
        &ALLOW,
    );
    assert_eq!(again.code(), 0, "{}", said(&again));
    assert_eq!(containers_created_by(again.pid, since), 1, "the run alone");
}

#[test]
fn another_package_list_is_another_environment() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let jq = explained_environment(&syspkg_packs(), "needsjq.query");
    pack_declaring(dir.path(), "[tree, jq]");
    let two = explained_environment(dir.path(), "needsjq.query");
    assert_eq!(
        two["key_parts"]["system_packages"],
        serde_json::json!(["jq", "tree"]),
        "sorted: {two}"
    );
    assert_ne!(jq["key"], two["key"]);
    assert_ne!(jq["image"], two["image"]);
    // Without system packages a shell action needs no environment at all.
    let none = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&syspkg_packs().join("needsjq"), none.path());
    let text = std::fs::read_to_string(pack.join("pack.yaml")).expect("read");
    std::fs::write(
        pack.join("pack.yaml"),
        text.replace("  system_packages: [jq]\n", ""),
    )
    .expect("write");
    let plain = explained_environment(none.path(), "needsjq.query");
    assert_eq!(plain["needed"], false, "{plain}");
}

#[test]
fn an_unknown_package_fails_the_build_with_apts_word_and_leaves_nothing() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    pack_declaring(dir.path(), "[jq, packbox-no-such-package-7f3a9]");
    let environment = explained_environment(dir.path(), "needsjq.query");
    let tag = environment["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = environment["key"].as_str().unwrap_or_default().to_string();
    cleanup_image(&tag);
    let ran = packbox(
        &[
            "run",
            "--packs",
            &dir.path().to_string_lossy(),
            "needsjq.query",
            "--json",
        ],
        &ALLOW,
    );
    assert_eq!(ran.code(), 125, "{}", said(&ran));
    let text = said(&ran);
    for word in [
        "apt-get install jq packbox-no-such-package-7f3a9 (pack.yaml meta.system_packages)",
        "the install exited with code 100",
        "Unable to locate package packbox-no-such-package-7f3a9",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
    assert_no_leftovers(&ran);
    assert!(!image_exists(&tag), "no image under {tag}");
    assert!(images_with_key(&key).is_empty(), "no layer of {key}");
}

#[test]
fn a_python_pack_gets_its_debian_packages_then_its_pip_requirements_on_top() {
    require_engine();
    let packs = syspkg_packs();
    let environment = explained_environment(&packs, "pyjq.both");
    let tag = environment["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(tag.starts_with("packbox/env:python-"), "{environment}");
    cleanup_image(&tag);
    if environment["exists"] == true {
        docker(&["rmi", "-f", &tag]);
    }
    let mut env = build_env();
    env.extend(ALLOW);
    let ran = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "pyjq.both",
            "--json",
        ],
        &env,
    );
    assert_eq!(ran.code(), 0, "{}", said(&ran));
    let outcome = ran.json();
    assert_eq!(
        outcome["result"],
        serde_json::json!({"six": "1.16.0", "jq": {"n": 7}}),
        "{outcome}"
    );
    assert_no_leftovers(&ran);
    let log = build_logs();
    let apt = log
        .find("granting deb.debian.org:80")
        .expect("the apt step's network line");
    let pip = log
        .find("granting pypi.org:443")
        .expect("pip's network line");
    assert!(apt < pip, "apt first, then pip: {log}");
    // Each step's audit names its own grant only.
    let (apt_part, pip_part) = log.split_at(pip);
    assert!(
        apt_part
            .lines()
            .filter(|l| l.starts_with("egress: "))
            .all(|l| l.contains("deb.debian.org:80")),
        "{log}"
    );
    assert!(
        pip_part
            .lines()
            .filter(|l| l.starts_with("egress: "))
            .all(|l| !l.contains("deb.debian.org")),
        "{log}"
    );
    let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", &tag]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65534:65534");
}

/// A copy of the needsjq pack whose `meta.system_packages` is `declared` (YAML flow text).
fn pack_declaring(dir: &Path, declared: &str) -> PathBuf {
    let pack = copy_pack(&syspkg_packs().join("needsjq"), dir);
    let text = std::fs::read_to_string(pack.join("pack.yaml")).expect("read pack.yaml");
    let text = text.replace(
        "system_packages: [jq]",
        &format!("system_packages: {declared}"),
    );
    std::fs::write(pack.join("pack.yaml"), text).expect("write pack.yaml");
    pack
}

#[test]
fn a_name_that_is_not_a_bare_debian_package_name_is_the_packs_error_before_any_container() {
    require_engine();
    for (declared, shown) in [
        (r#"["jq; rm -rf /"]"#, "`jq; rm -rf /`"),
        (
            r#"[jq, "-oAPT::Get::AllowUnauthenticated=true"]"#,
            "`-oAPT::Get::AllowUnauthenticated=true`",
        ),
        ("[JQ]", "`JQ`"),
        ("[jq=1.6]", "`jq=1.6`"),
        ("jq", "found a string"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack = pack_declaring(dir.path(), declared);
        let pack_yaml = pack.join("pack.yaml");
        let pack_yaml = pack_yaml.to_string_lossy();
        let since = unix_now();
        // Even where the operator allows system packages.
        let ran = run_json(dir.path(), "needsjq.query", &[]);
        let ran_allowed = packbox(
            &[
                "run",
                "--packs",
                &dir.path().to_string_lossy(),
                "needsjq.query",
                "--json",
            ],
            &ALLOW,
        );
        for finished in [&ran, &ran_allowed] {
            assert_refused_before_any_container(
                finished,
                since,
                &[&*pack_yaml, "meta.system_packages", shown],
            );
            assert!(
                !said(finished).contains("allow_system_packages"),
                "a bad name is the pack's error, whatever the setting: {}",
                said(finished)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_request_for_such_an_action_naming_the_setting() {
    require_engine();
    let server = Server::start(ServerOptions {
        packs: syspkg_packs(),
        ..ServerOptions::default()
    });
    let api = Api::new(&server, None);
    let since = unix_now();
    let answer = api
        .post(
            "/v1/executions",
            &serde_json::json!({"action": "needsjq.query"}),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["code"], "invalid_request",
        "{}",
        answer.body
    );
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("build.allow_system_packages") && message.contains("jq"),
        "{message}"
    );
    assert_eq!(containers_created_by(server.pid(), since), 0);
}

#[test]
fn a_failed_install_after_the_apt_step_leaves_neither_image_nor_layer() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&syspkg_packs().join("pyjq"), dir.path());
    std::fs::write(
        pack.join("requirements.txt"),
        "packbox-no-such-package-7f3a9==9.9.9\n",
    )
    .expect("write");
    let environment = explained_environment(dir.path(), "pyjq.both");
    let tag = environment["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = environment["key"].as_str().unwrap_or_default().to_string();
    cleanup_image(&tag);
    let mut env = build_env();
    env.extend(ALLOW);
    let ran = packbox(
        &[
            "run",
            "--packs",
            &dir.path().to_string_lossy(),
            "pyjq.both",
            "--json",
        ],
        &env,
    );
    assert_eq!(ran.code(), 125, "{}", said(&ran));
    assert!(
        said(&ran).contains("failed at `pip install`"),
        "{}",
        said(&ran)
    );
    assert!(
        build_logs().contains("Setting up jq ("),
        "the apt step ran first: {}",
        build_logs()
    );
    assert_no_leftovers(&ran);
    assert!(!image_exists(&tag), "no image under {tag}");
    assert!(
        images_with_key(&key).is_empty(),
        "the apt step's layer is gone too"
    );
}

#[test]
fn pack_tests_of_such_a_pack_are_refused_by_default_naming_the_setting() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&syspkg_packs().join("needsjq"), dir.path());
    std::fs::create_dir_all(pack.join("tests")).expect("tests folder");
    std::fs::write(pack.join("tests/run.sh"), "#!/bin/sh\njq --version\n").expect("write");
    let mut text = std::fs::read_to_string(pack.join("pack.yaml")).expect("read");
    text.push_str(
        "testing:\n  runners:\n    shell:\n      type: script\n      entry_point: tests/run.sh\n",
    );
    std::fs::write(pack.join("pack.yaml"), text).expect("write");
    let since = unix_now();
    let tested = packbox(&["test", &pack.to_string_lossy(), "--json"], &[]);
    assert_refused_before_any_container(
        &tested,
        since,
        &["build.allow_system_packages", "meta.system_packages: jq"],
    );
}
