//! The shape of the crate, checked: the top-level modules of `src/` depend on each other in one
//! direction only (no cycle), only the engine module knows bollard, only the settings module
//! reads the process environment, and no stage imports the top-level error type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` (or `path` itself).
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The library's top-level modules and their files (the binary's `cli` is not one).
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(src()).expect("src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        if matches!(name.as_str(), "lib" | "main" | "cli") {
            continue;
        }
        modules.insert(name, rust_files(&path));
    }
    modules
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere).
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("readable source");
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(name, files)| {
            let mut uses = BTreeSet::new();
            for file in files {
                let code = code_of(file);
                for (at, _) in code.match_indices("crate::") {
                    let rest = &code[at + "crate::".len()..];
                    let target: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if names.contains(&target) && &target != name {
                        uses.insert(target);
                    }
                }
            }
            (name.clone(), uses)
        })
        .collect()
}

#[test]
fn top_level_modules_have_no_cycle() {
    let graph = dependencies();
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("dependency cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_seam_and_the_lifecycle_sit_at_the_bottom() {
    let graph = dependencies();
    assert!(graph["engine"].is_empty(), "engine: {:?}", graph["engine"]);
    let lifecycle: Vec<&String> = graph["lifecycle"]
        .iter()
        .filter(|m| m.as_str() != "engine" && m.as_str() != "error_text")
        .collect();
    assert!(lifecycle.is_empty(), "lifecycle depends on {lifecycle:?}");
    assert!(
        !graph["pack"].contains("catalog"),
        "loading a pack needs no catalog"
    );
}

#[test]
fn no_stage_imports_the_top_level_error() {
    let graph = dependencies();
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(name, uses)| name.as_str() != "executor" && uses.contains("error"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        importers.is_empty(),
        "stages importing error: {importers:?}"
    );
}

#[test]
fn only_the_engine_module_knows_bollard() {
    for (name, files) in modules() {
        for file in files {
            let code = code_of(&file);
            if name != "engine" {
                assert!(!code.contains("bollard"), "{} uses bollard", file.display());
            }
        }
    }
}

#[test]
fn only_the_settings_module_reads_the_environment() {
    let mut files: Vec<PathBuf> = modules().into_values().flatten().collect();
    files.extend(rust_files(&src().join("cli")));
    for file in files {
        if file.ends_with("settings.rs") {
            continue;
        }
        let code = code_of(&file);
        for call in ["env::var", "env::vars", "env::var_os"] {
            assert!(
                !code.contains(call),
                "{} reads the environment ({call})",
                file.display()
            );
        }
    }
}
