//! `meta.system_packages` (tests/fixtures/syspkg), against the real engine: a pack that declares
//! Debian packages is refused by run, build, pack validate and explain naming the operator's
//! setting (off by default); with the setting it is still refused, saying packbox cannot install
//! them yet; a name that is not a bare Debian package name is refused as the pack's error before
//! any container exists. The server refuses such a request as the CLI does.

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

#[test]
fn where_the_operator_allows_system_packages_the_run_still_says_packbox_cannot_install_them() {
    require_engine();
    let packs = syspkg_packs();
    let since = unix_now();
    let ran = packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "needsjq.query",
            "--json",
        ],
        &ALLOW,
    );
    assert_refused_before_any_container(
        &ran,
        since,
        &[
            "meta.system_packages: jq",
            "cannot install system packages yet",
        ],
    );
    let validated = packbox(
        &[
            "pack",
            "validate",
            &packs.join("needsjq").to_string_lossy(),
            "--json",
        ],
        &ALLOW,
    );
    assert_refused_before_any_container(&validated, since, &["cannot install system packages yet"]);
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
