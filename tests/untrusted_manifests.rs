//! Dependency manifests are untrusted files: bounded, regular, inside the pack, not hard links;
//! their pip options may not choose package sources unless the operator allows it; build logs
//! are owner-only; environment builds run under a memory limit. Against the real engine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

fn manifest_pack() -> PathBuf {
    repo_root().join("tests/fixtures/untrusted/manifest")
}

/// A copy of the fixture pack in a fresh folder, with `requirements.txt` removed.
fn hostile_pack() -> (tempfile::TempDir, PathBuf) {
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&manifest_pack(), packs.path());
    std::fs::remove_file(pack.join("requirements.txt")).expect("rm");
    (packs, pack)
}

fn run_show(packs: &Path, env: &[(&str, &str)]) -> Finished {
    let mut env = env.to_vec();
    env.extend(build_env());
    packbox(
        &[
            "run",
            "--packs",
            &packs.to_string_lossy(),
            "manifest.show",
            "--json",
        ],
        &env,
    )
}

/// Registers the environment image a run built (it says so on stderr) for removal at test end.
fn cleanup_built(run: &Finished) {
    if let Some(tag) = run
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("building environment "))
    {
        cleanup_image(tag);
    }
}

/// The run was refused as invalid input, before any container or build.
fn assert_refused_before_anything(run: &Finished, expected: &str) {
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains(expected), "{}", run.stderr());
    assert!(
        !run.stderr().contains("building environment"),
        "{}",
        run.stderr()
    );
    assert!(containers_of(run.pid).is_empty());
}

#[test]
fn a_hard_link_to_a_root_only_file_is_refused() {
    require_engine();
    let (packs, pack) = hostile_pack();
    // A file only root may read, in the same file system as the pack.
    let secret = packs.path().join("root-only");
    std::fs::write(&secret, "TOP-SECRET-LINE==1.0\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::hard_link(&secret, pack.join("requirements.txt")).expect("hard link");
    let run = run_show(packs.path(), &[]);
    assert_refused_before_anything(
        &run,
        "manifest/requirements.txt: has 2 hard links; packbox reads only files that belong to the pack alone",
    );
    assert!(!run.stderr().contains("TOP-SECRET"), "{}", run.stderr());
    let validate = packbox(
        &["pack", "validate", &pack.to_string_lossy(), "--json"],
        &[],
    );
    assert_eq!(validate.code(), 2);
    assert!(validate.stdout().contains("has 2 hard links"));
    assert!(!validate.stdout().contains("TOP-SECRET"));
}

#[test]
fn a_300_mb_sparse_requirements_file_is_refused_before_it_is_read() {
    require_engine();
    let (packs, pack) = hostile_pack();
    let file = std::fs::File::create(pack.join("requirements.txt")).expect("create");
    file.set_len(300 << 20).expect("sparse file");
    let run = run_show(packs.path(), &[]);
    assert_refused_before_anything(
        &run,
        "requirements.txt: is 314572800 bytes; at most 1048576 bytes are read",
    );
}

#[test]
fn a_fifo_as_requirements_file_is_refused_without_blocking() {
    let (packs, pack) = hostile_pack();
    let made = std::process::Command::new("mkfifo")
        .arg(pack.join("requirements.txt"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // No engine needed: the answer comes before any.
    let validate = packbox(
        &["pack", "validate", &pack.to_string_lossy()],
        &[("DOCKER_HOST", "unix:///nonexistent.sock")],
    );
    assert_eq!(validate.code(), 2);
    assert!(
        validate
            .stdout()
            .contains("requirements.txt: expected a regular file"),
        "{}",
        validate.stdout()
    );
    drop(packs);
}

#[test]
fn an_index_url_line_is_refused_unless_the_operator_allows_it() {
    require_engine();
    let (packs, pack) = hostile_pack();
    std::fs::write(
        pack.join("requirements.txt"),
        "six==1.16.0\n--index-url https://user:hunter2@pypi.example/simple\n",
    )
    .expect("write");
    let run = run_show(packs.path(), &[]);
    assert_refused_before_anything(
        &run,
        "requirements.txt:2 `--index-url https://***@pypi.example/simple`: pip options that choose package sources",
    );
    assert!(
        run.stderr().contains("PACKBOX_PIP_ALLOW_PACK_SOURCES=1"),
        "{}",
        run.stderr()
    );
    assert!(!run.stderr().contains("hunter2"), "{}", run.stderr());
    let validate = |env: &[(&str, &str)]| {
        packbox(
            &["pack", "validate", &pack.to_string_lossy(), "--json"],
            env,
        )
    };
    let refused = validate(&[]);
    assert_eq!(refused.code(), 2);
    let problem = &refused.json()["problems"][0];
    assert_eq!(problem["line"], 2, "{problem}");
    assert!(
        problem["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("manifest/requirements.txt")
    );
    let allowed = validate(&[("PACKBOX_PIP_ALLOW_PACK_SOURCES", "1")]);
    assert_eq!(allowed.code(), 0, "{}", allowed.stdout());
    // Every form that chooses a source is refused, in pack.yaml too.
    for line in [
        "--extra-index-url=https://pypi.example/simple",
        "--trusted-host pypi.example",
        "-f https://pypi.example/links",
        "-e git+https://example.org/x.git#egg=x",
        "x @ https://example.org/x-1.0-py3-none-any.whl",
    ] {
        std::fs::write(pack.join("requirements.txt"), format!("{line}\n")).expect("write");
        let refused = validate(&[]);
        assert_eq!(refused.code(), 2, "{line}");
        assert!(
            refused.stdout().contains("choose package sources"),
            "{line}: {}",
            refused.stdout()
        );
    }
}

#[test]
fn with_the_operators_consent_a_source_option_reaches_pip() {
    require_engine();
    let (packs, pack) = hostile_pack();
    // A local folder of links (none there): pip looks in it, then at the index.
    std::fs::write(
        pack.join("requirements.txt"),
        format!(
            "--find-links /nonexistent/links\nsix==1.16.0\n# consent test {}\n",
            std::process::id()
        ),
    )
    .expect("write");
    let run = run_show(packs.path(), &[("PACKBOX_PIP_ALLOW_PACK_SOURCES", "1")]);
    cleanup_built(&run);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["result"]["six"], "1.16.0", "{outcome}");
    assert_no_leftovers(&run);
}

#[test]
fn build_logs_are_readable_by_their_owner_only() {
    require_engine();
    let (packs, pack) = hostile_pack();
    std::fs::write(
        pack.join("requirements.txt"),
        format!(
            "six==1.16.0\n# log mode test {}-{}\n",
            std::process::id(),
            unix_now()
        ),
    )
    .expect("write");
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_string_lossy().into_owned();
    let run = run_show(packs.path(), &[("PACKBOX_STATE_DIR", &state_dir)]);
    cleanup_built(&run);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let logs: Vec<PathBuf> = std::fs::read_dir(state.path().join("builds"))
        .expect("a builds folder")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let mode = std::fs::metadata(&logs[0])
        .expect("log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", logs[0].display());
    assert!(
        std::fs::read_to_string(&logs[0])
            .expect("read")
            .contains("six")
    );
}

#[test]
fn environment_builds_run_under_the_build_memory_limit() {
    require_engine();
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(
        &repo_root().join("tests/fixtures/untrusted/hungry"),
        packs.path(),
    );
    // A manifest no other run has built, so both runs below really build.
    std::fs::write(
        pack.join("requirements.txt"),
        format!(
            "./hungry\n# memory test {}-{}\n",
            std::process::id(),
            unix_now()
        ),
    )
    .expect("write");
    let config = packs.path().join("config.yaml");
    let run_with = |memory: &str| {
        std::fs::write(&config, format!("build: {{memory: {memory}}}\n")).expect("write");
        let mut args = vec![
            "--config".to_string(),
            config.to_string_lossy().into_owned(),
        ];
        args.extend(
            [
                "run",
                "--packs",
                &packs.path().to_string_lossy(),
                "hungry.noop",
                "--json",
            ]
            .map(String::from),
        );
        packbox_owned(&args, &build_env())
    };
    // The build step touches 300 MB: under a 128 MB limit the engine kills it.
    let limited = run_with("128m");
    assert_eq!(limited.code(), 125, "{}", limited.stderr());
    assert!(
        limited.stderr().contains(
            "a build step was killed, most likely for using more than the build memory limit of 128 MiB (the setting build.memory)"
        ),
        "{}",
        limited.stderr()
    );
    assert_no_leftovers(&limited);
    // The same build fits the default limit.
    let roomy = run_with("1536m");
    cleanup_built(&roomy);
    assert_eq!(roomy.code(), 0, "{}", roomy.stderr());
    assert_eq!(roomy.json()["result"]["hungry"], "300m");
}
