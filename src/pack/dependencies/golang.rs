//! Go's inputs of one action: the files `go build` reads to compile its entry point (a `.go`
//! file of `package main`, as upstream's `go run` takes it). With a `go.mod` at the pack root
//! the entry point is built inside that module: every `.go` and `.s` file of the pack, `go.mod`,
//! `go.sum` and everything under `vendor/` go into the build (and its key), so the action can
//! import the pack's own packages and vendored modules. Without one, the entry file is built
//! alone (standard library only). Files are read as untrusted input ([`super::files`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::files::{
    MAX_ARTIFACT_BYTES, MAX_LOCAL_BYTES, MAX_LOCAL_FILES, MAX_MANIFEST_BYTES, present,
    read_pack_file,
};
use super::{GoProgram, Installer, Manifests, Requirement};
use crate::pack::problem::Problem;

/// The module file that makes the pack one Go module.
const GO_MOD: &str = "go.mod";
/// What `go mod vendor` writes beside the vendored modules; with it, nothing is downloaded.
pub const VENDOR_MODULES: &str = "vendor/modules.txt";

/// The Go inputs of the action of `pack_ref` whose entry point (relative to `actions/`) is
/// `entry_point`: always an environment, since the action runs only as a compiled binary.
pub(super) fn read(
    pack_dir: &Path,
    pack_ref: &str,
    entry_point: &str,
) -> Result<Manifests, Vec<Problem>> {
    let entry = format!("actions/{}", entry_point.trim_start_matches("./"));
    let problem = |file: &str, message: String| Problem {
        file: pack_dir.join(file),
        line: None,
        field: None,
        message,
    };
    if !entry.ends_with(".go") {
        return Err(vec![problem(
            &entry,
            "a Go action's entry point is a `.go` file of `package main` (compiled into the environment image, as `go run` would take it)".into(),
        )]);
    }
    let mut files = BTreeMap::new();
    let mut requirements = Vec::new();
    if present(&pack_dir.join(GO_MOD)) {
        let go_mod = read_pack_file(pack_dir, &pack_dir.join(GO_MOD), MAX_MANIFEST_BYTES)
            .map_err(|message| vec![problem(GO_MOD, message)])?;
        requirements = module_requirements(&String::from_utf8_lossy(&go_mod));
        files = module_files(pack_dir).map_err(|(file, message)| vec![problem(&file, message)])?;
    } else {
        let bytes = read_pack_file(pack_dir, &pack_dir.join(&entry), MAX_ARTIFACT_BYTES)
            .map_err(|message| vec![problem(&entry, message)])?;
        files.insert(entry.clone(), bytes);
    }
    Ok(Manifests {
        installer: Installer::Go,
        files: files.into_iter().collect(),
        requirements,
        sources: Vec::new(),
        program: Some(GoProgram {
            pack: pack_ref.to_string(),
            entry,
        }),
    })
}

/// Whether a build of these inputs downloads modules: `go.mod` requires some and `vendor/`
/// does not hold them.
pub fn downloads(manifests: &Manifests) -> bool {
    !manifests.requirements.is_empty() && !manifests.has_file(VENDOR_MODULES)
}

/// The modules `go.mod` requires (`require x v` and `require ( ... )` blocks), for listings and
/// to know whether the build downloads anything.
fn module_requirements(go_mod: &str) -> Vec<Requirement> {
    let mut found = Vec::new();
    let mut in_block = false;
    for (number, line) in go_mod.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("").trim();
        let spec = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("require") {
            let rest = rest.trim();
            if rest == "(" {
                in_block = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        if !spec.is_empty() {
            found.push(Requirement {
                text: spec.split_whitespace().collect::<Vec<_>>().join(" "),
                source: format!("go.mod:{}", number + 1),
            });
        }
    }
    found
}

/// Whether `go build` may read a file of this name in module mode.
fn read_by_go(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    relative.starts_with("vendor/")
        || name.ends_with(".go")
        || name.ends_with(".s")
        || name == GO_MOD
        || name == "go.sum"
}

/// The files of the pack's module that `go build` may read, by path relative to the pack root;
/// folders the go tool ignores (`.x`, `_x`, `testdata`) are skipped. Bounded like pip's local
/// artifacts; an error names the file.
fn module_files(pack_dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, (String, String)> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut pending = vec![String::new()];
    while let Some(relative) = pending.pop() {
        let path = if relative.is_empty() {
            pack_dir.to_path_buf()
        } else {
            pack_dir.join(&relative)
        };
        let metadata = std::fs::symlink_metadata(&path)
            .map_err(|e| (relative.clone(), format!("cannot read: {e}")))?;
        if metadata.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|e| (relative.clone(), format!("cannot read: {e}")))?;
            for entry in entries.filter_map(Result::ok) {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let ignored = name.starts_with('.') || name.starts_with('_') || name == "testdata";
                if ignored && !relative.starts_with("vendor") {
                    continue;
                }
                pending.push(if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                });
            }
            continue;
        }
        if !read_by_go(&relative) {
            continue;
        }
        if files.len() >= MAX_LOCAL_FILES {
            return Err((
                relative,
                format!("the pack's Go module holds more than {MAX_LOCAL_FILES} files"),
            ));
        }
        let bytes = read_pack_file(pack_dir, &path, MAX_ARTIFACT_BYTES)
            .map_err(|message| (relative.clone(), message))?;
        total += bytes.len() as u64;
        if total > MAX_LOCAL_BYTES {
            return Err((
                relative,
                format!("the pack's Go sources add up to more than {MAX_LOCAL_BYTES} bytes"),
            ));
        }
        files.insert(relative, bytes);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let root = dir.path().canonicalize().expect("canonical");
        (dir, root)
    }

    fn names(manifests: &Manifests) -> Vec<&str> {
        manifests.files.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn without_go_mod_the_entry_file_alone_is_built() {
        let (_dir, root) = folder(&[
            ("actions/hello.go", "package main\n"),
            ("actions/other.go", "package main\n"),
        ]);
        let set = read(&root, "gopack", "hello.go").expect("read");
        assert_eq!(names(&set), ["actions/hello.go"]);
        assert_eq!(set.installer, Installer::Go);
        let program = set.program.as_ref().expect("program");
        assert_eq!(program.entry, "actions/hello.go");
        assert_eq!(program.pack, "gopack");
        assert!(!downloads(&set));
    }

    #[test]
    fn with_go_mod_the_module_files_go_in_and_the_rest_stays_out() {
        let (_dir, root) = folder(&[
            (
                "go.mod",
                "module example.com/p\n\ngo 1.19\n\nrequire example.org/shout v1.0.0\n",
            ),
            ("actions/tool.go", "package main\n"),
            ("lib/greet/greet.go", "package greet\n"),
            ("vendor/modules.txt", "# example.org/shout v1.0.0\n"),
            ("vendor/example.org/shout/LICENSE", "x"),
            ("README.md", "docs"),
            ("actions/tool.yaml", "ref: p.tool\n"),
            (".git/x.go", "package x\n"),
            ("lib/testdata/t.go", "package t\n"),
        ]);
        let set = read(&root, "p", "tool.go").expect("read");
        assert_eq!(
            names(&set),
            [
                "actions/tool.go",
                "go.mod",
                "lib/greet/greet.go",
                "vendor/example.org/shout/LICENSE",
                "vendor/modules.txt"
            ]
        );
        assert_eq!(set.requirements[0].text, "example.org/shout v1.0.0");
        assert_eq!(set.requirements[0].source, "go.mod:5");
        assert!(!downloads(&set), "vendored");
    }

    #[test]
    fn required_modules_without_vendor_are_downloaded() {
        let (_dir, root) = folder(&[
            (
                "go.mod",
                "module m\n\nrequire (\n\ta.example/x v1.2.3 // indirect\n\tb.example/y v0.1.0\n)\n",
            ),
            ("go.sum", ""),
            ("actions/a.go", "package main\n"),
        ]);
        let set = read(&root, "p", "a.go").expect("read");
        let texts: Vec<&str> = set.requirements.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["a.example/x v1.2.3", "b.example/y v0.1.0"]);
        assert!(downloads(&set));
    }

    #[test]
    fn every_source_and_the_entry_change_the_key() {
        let (_dir, root) = folder(&[
            ("go.mod", "module m\n"),
            ("actions/a.go", "package main\n"),
            ("actions/b.go", "package main\n"),
            ("lib/l.go", "package l\n"),
        ]);
        let a = read(&root, "p", "a.go").expect("read");
        let b = read(&root, "p", "b.go").expect("read");
        assert_ne!(a.dependency_hash(), b.dependency_hash());
        std::fs::write(root.join("lib/l.go"), "package l\n\nconst X = 1\n").expect("edit");
        let edited = read(&root, "p", "a.go").expect("read");
        assert_ne!(a.dependency_hash(), edited.dependency_hash());
    }

    #[test]
    fn an_entry_that_is_not_go_or_leaves_the_pack_is_a_problem_naming_it() {
        let (_dir, root) = folder(&[("actions/run.sh", "echo\n")]);
        let problems = read(&root, "p", "run.sh").expect_err("not go");
        assert!(problems[0].message.contains("`.go` file"), "{:?}", problems);
        assert!(problems[0].file.ends_with("actions/run.sh"));
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("x.go"), "package main\n").expect("write");
        let (_dir, root) = folder(&[("go.mod", "module m\n")]);
        std::os::unix::fs::symlink(outside.path().join("x.go"), root.join("lib.go")).expect("link");
        let problems = read(&root, "p", "a.go").expect_err("outside");
        assert!(
            problems[0].message.contains("outside the pack"),
            "{:?}",
            problems
        );
    }
}
