//! pip inputs beyond one file, for real: includes (`-r`), constraints (`-c`), a local wheel and a
//! local project folder reach the build; includes may not leave the pack; a requirement that
//! needs a compiler fails naming the package. Node: a yarn or pnpm lock alone is refused.

mod common;

use common::*;

#[test]
fn includes_constraints_local_wheels_and_projects_reach_the_build() {
    require_engine();
    let run = run_building(&env_packs(), "pip_inputs.imports", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let result = &run.json()["result"];
    // `six` comes from the include, pinned by the constraints file.
    assert_eq!(result["six"], "1.16.0", "{result}");
    assert_eq!(result["greeting"], "hello, pack", "{result}");
    assert_eq!(result["localpkg"], "0.3.0", "{result}");
    assert_eq!(result["localpkg_dist"], "0.3.0", "{result}");
    assert_no_leftovers(&run);
    let list = packbox(
        &[
            "actions",
            "list",
            "--packs",
            &env_packs().to_string_lossy(),
            "--json",
        ],
        &[],
    );
    let listing = list.json();
    let deps = listing["actions"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["ref"] == "pip_inputs.imports"))
        .map(|a| a["dependencies"].clone())
        .expect("listed");
    assert_eq!(
        deps["files"],
        serde_json::json!([
            "requirements.txt",
            "constraints.txt",
            "localpkg/pyproject.toml",
            "localpkg/src/localpkg/__init__.py",
            "requirements/base.txt",
            "wheels/greeting-1.0-py3-none-any.whl"
        ]),
        "{deps}"
    );
}

#[test]
fn an_include_or_artifact_outside_the_pack_is_refused_before_any_build() {
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("pip_inputs"), packs.path());
    std::fs::write(packs.path().join("outside.txt"), "six\n").expect("write");
    for (line, expected) in [
        (
            "-r ../outside.txt",
            "requirements.txt:1: `-r ../outside.txt`: leads outside the pack",
        ),
        (
            "-c /etc/passwd",
            "requirements.txt:1: `-c /etc/passwd`: an absolute path",
        ),
        (
            "../outside-1.0-py3-none-any.whl",
            "requirements.txt:1: `../outside-1.0-py3-none-any.whl`: leads outside the pack",
        ),
    ] {
        std::fs::write(pack.join("requirements.txt"), format!("{line}\n")).expect("write");
        let run = packbox(
            &[
                "run",
                "--packs",
                &packs.path().to_string_lossy(),
                "pip_inputs.imports",
            ],
            &[("DOCKER_HOST", "unix:///nonexistent.sock")],
        );
        assert_eq!(run.code(), 2, "{line}: {}", run.stderr());
        assert!(run.stderr().contains(expected), "{line}: {}", run.stderr());
    }
}

#[test]
fn an_included_file_that_is_a_hard_link_is_refused() {
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("pip_inputs"), packs.path());
    let secret = packs.path().join("root-only.txt");
    std::fs::write(&secret, "SECRET-REQUIREMENT\n").expect("write");
    std::fs::remove_file(pack.join("requirements/base.txt")).expect("rm");
    std::fs::hard_link(&secret, pack.join("requirements/base.txt")).expect("link");
    let validate = packbox(&["pack", "validate", &pack.to_string_lossy()], &[]);
    assert_eq!(validate.code(), 2);
    assert!(
        validate.stdout().contains(
            "requirements.txt:2: `-r requirements/base.txt`: requirements/base.txt: has 2 hard links"
        ),
        "{}",
        validate.stdout()
    );
    assert!(!validate.stdout().contains("SECRET"));
}

#[test]
fn a_requirement_that_needs_a_compiler_fails_naming_the_package() {
    require_engine();
    let run = run_building(&env_packs(), "needs_compiler.noop", &[]);
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "`fastsum` has no pre-built wheel for this Python version and has to be compiled, but environment builds have no compiler"
        ),
        "{stderr}"
    );
    let tag = stderr
        .lines()
        .find_map(|l| l.strip_prefix("building environment "))
        .expect("a build was attempted")
        .to_string();
    assert!(!image_exists(&tag), "a failed build leaves no tag");
    assert_eq!(run.json()["status"], "error");
    assert_no_leftovers(&run);
}

#[test]
fn a_yarn_or_pnpm_lock_without_an_npm_lock_is_refused() {
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("node_dep"), packs.path());
    for lock in ["yarn.lock", "pnpm-lock.yaml"] {
        std::fs::write(pack.join(lock), "# a lock of another package manager\n").expect("write");
        let run = packbox(
            &[
                "run",
                "--packs",
                &packs.path().to_string_lossy(),
                "node_dep.check",
                "-p",
                "value=1",
            ],
            &[("DOCKER_HOST", "unix:///nonexistent.sock")],
        );
        assert_eq!(run.code(), 2, "{}", run.stderr());
        assert!(
            run.stderr().contains(&format!(
                "node_dep/{lock}: packbox installs Node.js dependencies with npm"
            )),
            "{}",
            run.stderr()
        );
        assert!(
            run.stderr().contains("add package-lock.json"),
            "{}",
            run.stderr()
        );
        std::fs::remove_file(pack.join(lock)).expect("rm");
    }
}
