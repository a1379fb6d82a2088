//! Pack-level dependencies as Attune writes them: `meta.python_dependencies` (a list, or the
//! seed's mapping) merged with `requirements.txt`, installed for real by pip into the
//! environment image, shown by `pack validate` and `actions list`, conflicts refused.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn listed_action(packs: &Path, action_ref: &str) -> Value {
    let list = packbox(
        &[
            "actions",
            "list",
            "--packs",
            &packs.to_string_lossy(),
            "--json",
        ],
        &[],
    );
    assert_eq!(list.code(), 0, "{}", list.stderr());
    list.json()["actions"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["ref"] == action_ref).cloned())
        .unwrap_or_else(|| panic!("{action_ref} listed: {}", list.stdout()))
}

fn version_of(value: &Value) -> Vec<u64> {
    value
        .as_str()
        .unwrap_or("")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn an_attune_pack_with_meta_python_dependencies_imports_them() {
    require_engine();
    let run = run_building(&env_packs(), "attune_core.imports", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    let result = &outcome["result"];
    assert!(version_of(&result["requests"]) >= vec![2, 28], "{outcome}");
    assert!(version_of(&result["croniter"]) >= vec![1, 4], "{outcome}");
    assert_eq!(result["prefix"], "/opt/packbox/venv");
    assert!(
        outcome["image"]
            .as_str()
            .unwrap_or("")
            .starts_with("packbox/env:python-"),
        "{outcome}"
    );
    assert_no_leftovers(&run);
}

#[test]
fn the_shell_action_of_that_pack_still_runs_on_the_shell_image() {
    require_engine();
    let run = run_json(&env_packs(), "attune_core.http_request", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["image"], "packbox/shell:5.2", "{outcome}");
    assert_eq!(
        outcome["stdout"],
        "headers.accept.type='json'\nurl='http://127.0.0.1/'\n"
    );
    assert_no_leftovers(&run);
}

#[test]
fn validate_and_list_show_each_actions_dependency_set() {
    let packs = env_packs();
    let imports = listed_action(&packs, "attune_core.imports");
    let deps = &imports["dependencies"];
    assert_eq!(deps["installer"], "pip", "{imports}");
    assert_eq!(deps["files"], serde_json::json!(["requirements.txt"]));
    assert_eq!(
        deps["requirements"],
        serde_json::json!([
            {"text": "requests>=2.28.0", "source": "pack.yaml meta.python_dependencies"},
            {"text": "croniter>=1.4.0", "source": "pack.yaml meta.python_dependencies"},
        ])
    );
    assert_eq!(deps["dependency_hash"].as_str().map(str::len), Some(64));
    // The shell action of the same pack installs nothing.
    assert_eq!(
        listed_action(&packs, "attune_core.http_request")["dependencies"],
        Value::Null
    );
    let seed = listed_action(&packs, "seed_mapping.imports");
    let sources: Vec<&str> = seed["dependencies"]["requirements"]
        .as_array()
        .expect("requirements")
        .iter()
        .map(|r| r["source"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        sources,
        [
            "requirements.txt:1",
            "pack.yaml meta.python_dependencies.dependencies"
        ]
    );
    let node = listed_action(&packs, "node_dep.check");
    assert_eq!(node["dependencies"]["installer"], "npm");
    let validate = packbox(
        &[
            "pack",
            "validate",
            &packs.join("attune_core").to_string_lossy(),
            "--json",
        ],
        &[],
    );
    assert_eq!(validate.code(), 0, "{}", validate.stderr());
    let report = validate.json();
    let actions = report["packs"][0]["actions"].as_array().expect("actions");
    let validated = actions
        .iter()
        .find(|a| a["ref"] == "attune_core.imports")
        .expect("validated");
    assert_eq!(validated["dependencies"], *deps);
}

#[test]
fn the_seed_mapping_form_merges_with_requirements_txt() {
    require_engine();
    let run = run_building(&env_packs(), "seed_mapping.imports", &[]);
    assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    let result = &run.json()["result"];
    assert_eq!(result["six"], "1.16.0", "{result}");
    assert_eq!(result["idna"], "3.7", "{result}");
    assert_no_leftovers(&run);
}

#[test]
fn the_merged_set_is_what_the_environment_key_hashes() {
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("seed_mapping"), packs.path());
    let before =
        listed_action(packs.path(), "seed_mapping.imports")["dependencies"]["dependency_hash"]
            .clone();
    let yaml = std::fs::read_to_string(pack.join("pack.yaml")).expect("read");
    std::fs::write(
        pack.join("pack.yaml"),
        yaml.replace("\"idna==3.7\"", "\"idna==3.6\""),
    )
    .expect("write");
    let after =
        listed_action(packs.path(), "seed_mapping.imports")["dependencies"]["dependency_hash"]
            .clone();
    assert_ne!(
        before, after,
        "a change in pack.yaml's dependencies is a new environment"
    );
}

#[test]
fn conflicting_declarations_are_an_input_error_naming_both_places() {
    let packs = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&env_packs().join("seed_mapping"), packs.path());
    std::fs::write(pack.join("requirements.txt"), "six==1.15.0\n").expect("write");
    let run = packbox(
        &[
            "run",
            "--packs",
            &packs.path().to_string_lossy(),
            "seed_mapping.imports",
        ],
        &build_env(),
    );
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "seed_mapping/pack.yaml:7: field `meta.python_dependencies`: `six==1.16.0` (pack.yaml meta.python_dependencies.requirements_file_content line 1) conflicts with `six==1.15.0` (requirements.txt:1)"
        ),
        "{stderr}"
    );
    assert!(containers_of(run.pid).is_empty());
    let validate = packbox(&["pack", "validate", &pack.to_string_lossy()], &[]);
    assert_eq!(validate.code(), 2);
    assert!(
        validate
            .stdout()
            .contains("conflicts with `six==1.15.0` (requirements.txt:1)"),
        "{}",
        validate.stdout()
    );
}
