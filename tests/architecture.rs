//! The house, checked: each part of packbox is one folder of `src/` (only `lib.rs` and `main.rs`
//! stand at the root), the parts depend on each other in one direction only, and the rules below
//! hold. Each rule is one line of `NEVER`, `ONLY` or `SOLE`: change a line when the design
//! changes, and the test says which file broke which rule.
//!
//! A part's dependencies are read from its code: `crate::NAME` for the library's parts, and for
//! the binary's parts (`cli`, `serve`) `crate::NAME` for each other and `packbox::` for the
//! library's facade. Unit tests (`#[cfg(test)] mod tests` and `tests.rs` files) may reach
//! anywhere and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `(part, never this part, why)`: a part that must not depend on another.
const NEVER: &[(&str, &str, &str)] = &[
    (
        "serve",
        "cli",
        "the server gets what it shows from the library, never from the CLI",
    ),
    (
        "contract",
        "lifecycle",
        "the contract is data: it never knows how a workload runs",
    ),
    (
        "contract",
        "engine",
        "the contract is data: it never knows the engine",
    ),
    (
        "contract",
        "backend",
        "the contract is data: it never knows where a workload runs",
    ),
    (
        "engine",
        "pack",
        "the engine seam speaks containers and images, not packs",
    ),
    ("engine", "catalog", "the engine seam knows no runtimes"),
    (
        "engine",
        "settings",
        "the engine seam is handed what it needs, it reads no settings",
    ),
    (
        "pack",
        "engine",
        "loading and checking a pack needs no engine",
    ),
    ("pack", "catalog", "loading a pack needs no catalog"),
    ("plan", "engine", "a run is planned without an engine"),
];

/// `(part, the only parts it may depend on)`: the parts at the bottom of the house.
const ONLY: &[(&str, &[&str])] = &[
    ("common", &[]),
    ("engine", &["common"]),
    ("version", &[]),
    ("lifecycle", &["engine", "common", "contract"]),
];

/// `(what, the only part whose code may contain it)`: knowledge that lives in one place.
const SOLE: &[(&str, &str, &str)] = &[
    (
        "bollard",
        "engine",
        "only the engine module talks to bollard",
    ),
    (
        "env::var",
        "settings",
        "only settings reads the process environment",
    ),
    (
        "crate::executor::error",
        "executor",
        "stages return their own errors; only the executor gathers them into the top-level one",
    ),
    (
        "crate::Error",
        "executor",
        "stages return their own errors; only the executor gathers them into the top-level one",
    ),
];

/// Where a part may import only one module of another: `(part, other part, the one module)`.
const NARROW: &[(&str, &str, &str)] = &[("lifecycle", "contract", "crate::contract::exit")];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` but unit-test files.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            files.push(path);
        }
    }
    files
}

/// Every part (a folder of `src/`, the library's and the binary's) and its files.
fn parts() -> BTreeMap<String, Vec<PathBuf>> {
    let mut parts = BTreeMap::new();
    for entry in std::fs::read_dir(src()).expect("src") {
        let path = entry.expect("entry").path();
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        parts.insert(name, rust_files(&path));
    }
    parts
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere) and without
/// comments (a doc link is no dependency).
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("readable source");
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names a `crate::` path starts with, grouped imports (`crate::{a, b}`) included.
fn crate_roots(code: &str) -> BTreeSet<String> {
    let ident = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut roots = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            roots.extend(inner.split(',').map(|p| ident(p.trim())));
        } else {
            roots.insert(ident(rest));
        }
    }
    roots
}

/// Each part's dependencies on the other parts; `lib` stands for the library's facade as the
/// binary's parts reach it (`packbox::`).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let parts = parts();
    let names: BTreeSet<String> = parts.keys().cloned().collect();
    parts
        .iter()
        .map(|(name, files)| {
            let mut uses = BTreeSet::new();
            for file in files {
                let code = code_of(file);
                for root in crate_roots(&code) {
                    if names.contains(&root) && &root != name {
                        uses.insert(root);
                    }
                }
                if code.contains("packbox::") {
                    uses.insert("lib".to_string());
                }
            }
            (name.clone(), uses)
        })
        .collect()
}

#[test]
fn only_lib_and_main_stand_at_the_root_of_src() {
    let mut loose = Vec::new();
    for entry in std::fs::read_dir(src()).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_file() && !matches!(name, "lib.rs" | "main.rs") {
            loose.push(name.to_string());
        }
    }
    assert!(
        loose.is_empty(),
        "files at the root of src/ (each part is a folder): {loose:?}"
    );
}

#[test]
fn the_parts_have_no_cycle() {
    let graph = dependencies();
    // Depth-first search; a part met again while still on the path closes a cycle.
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
    assert!(graph.contains_key("cli") && graph.contains_key("serve"));
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_part_depends_on_what_it_must_never_know() {
    let graph = dependencies();
    for (part, never, why) in NEVER {
        let uses = graph
            .get(*part)
            .unwrap_or_else(|| panic!("NEVER names `{part}`, which is no folder of src/"));
        assert!(!uses.contains(*never), "{part} depends on {never}: {why}");
    }
}

#[test]
fn the_bottom_parts_depend_only_on_what_is_below_them() {
    let graph = dependencies();
    for (part, allowed) in ONLY {
        let extra: Vec<&String> = graph
            .get(*part)
            .unwrap_or_else(|| panic!("ONLY names `{part}`, which is no folder of src/"))
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{part} depends on {extra:?}; it may depend on {allowed:?} only"
        );
    }
    for (part, other, module) in NARROW {
        for file in &parts()[*part] {
            let code = code_of(file);
            let prefix = format!("crate::{other}::");
            for (at, _) in code.match_indices(&prefix) {
                assert!(
                    code[at..].starts_with(module),
                    "{} uses {other} beyond {module}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn knowledge_that_lives_in_one_part_stays_there() {
    for (name, files) in parts() {
        for file in files {
            let code = code_of(&file);
            for (what, owner, why) in SOLE {
                assert!(
                    name == *owner || !code.contains(what),
                    "{} contains `{what}`: {why}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_rules_would_catch_what_they_forbid() {
    // The readers above, on code that breaks the rules: a rule that can never fail proves nothing.
    let roots = crate_roots("use crate::{cli::actions, engine};\nuse crate::lifecycle::run;");
    assert_eq!(
        roots,
        ["cli", "engine", "lifecycle"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let graph = dependencies();
    assert!(
        graph["executor"].contains("image"),
        "{:?}",
        graph["executor"]
    );
    assert!(graph["serve"].contains("lib"), "{:?}", graph["serve"]);
}
