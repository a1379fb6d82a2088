//! pip's inputs of a pack: `requirements.txt` and `meta.python_dependencies` merged into one
//! requirements file, the files it includes (`-r`, `-c`) and the local artifacts it names
//! (wheels, archives, project folders), all of them inside the pack; lines that choose package
//! sources are found, and a package declared twice with different specifiers is refused.
//!
//! In the build the inputs keep their places relative to the pack root, and pip runs there: an
//! include is found relative to the file that includes it, a local artifact relative to the pack
//! root, as pip does.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::files::{
    MAX_ARTIFACT_BYTES, MAX_LOCAL_BYTES, MAX_LOCAL_FILES, MAX_MANIFEST_BYTES, present,
    read_pack_file,
};
use super::{Installer, Manifests, Requirement, problem_at};
use crate::pack::manifest::PackManifest;
use crate::pack::problem::Problem;

/// The requirements file at the pack root, and the merged file's name in the build.
const ROOT: &str = "requirements.txt";
/// How deep includes may nest.
const MAX_INCLUDE_DEPTH: usize = 16;
/// File names pip takes for local archives rather than for project names.
const ARCHIVE_SUFFIXES: &[&str] = &[".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip"];

pub(super) fn read(
    pack_dir: &Path,
    pack: &PackManifest,
) -> Result<Option<Manifests>, Vec<Problem>> {
    let root = pack_dir.join(ROOT);
    let from_file = if present(&root) {
        Some(
            read_pack_file(pack_dir, &root, MAX_MANIFEST_BYTES).map_err(|message| {
                vec![Problem {
                    file: root.clone(),
                    line: None,
                    field: None,
                    message,
                }]
            })?,
        )
    } else {
        None
    };
    if from_file.is_none() && pack.python_dependencies.is_empty() {
        return Ok(None);
    }
    let mut walk = Walk::new(pack_dir);
    let mut including = vec![ROOT.to_string()];
    if let Some(bytes) = &from_file {
        for line in file_lines(ROOT, &String::from_utf8_lossy(bytes)) {
            walk.line(&line, "", Kind::Requirements, &mut including);
        }
    }
    let mut added = Vec::new();
    for declared in &pack.python_dependencies {
        match clash(&walk.requirements, declared) {
            Clash::None => {
                added.push(declared.text.clone());
                walk.line(declared, "", Kind::Requirements, &mut including);
            }
            Clash::Same => {}
            Clash::Conflict(earlier) => {
                let problem = conflict(pack_dir, declared, earlier);
                walk.problems.push(problem);
            }
        }
    }
    if !walk.problems.is_empty() {
        return Err(walk.problems);
    }
    // The file's own bytes stay as they are (comments and all); what pack.yaml adds follows.
    let mut combined = from_file.unwrap_or_default();
    if !added.is_empty() {
        if !combined.is_empty() && !combined.ends_with(b"\n") {
            combined.push(b'\n');
        }
        combined.extend_from_slice(b"# from pack.yaml meta.python_dependencies\n");
        for text in added {
            combined.extend_from_slice(text.as_bytes());
            combined.push(b'\n');
        }
    }
    let mut files = vec![(ROOT.to_string(), combined)];
    files.extend(walk.files);
    Ok(Some(Manifests {
        installer: Installer::Pip,
        files,
        requirements: walk.requirements,
        sources: walk.sources,
        program: None,
    }))
}

/// Whether the lines of a file are requirements or only constraints (`-c`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requirements,
    Constraints,
}

/// What the lines of the requirements (and what they include) add up to.
struct Walk<'a> {
    pack_dir: &'a Path,
    /// Included files and local artifact files, by their path in the pack.
    files: BTreeMap<String, Vec<u8>>,
    requirements: Vec<Requirement>,
    sources: Vec<Requirement>,
    problems: Vec<Problem>,
    local_bytes: u64,
}

impl<'a> Walk<'a> {
    fn new(pack_dir: &'a Path) -> Walk<'a> {
        Walk {
            pack_dir,
            files: BTreeMap::new(),
            requirements: Vec::new(),
            sources: Vec::new(),
            problems: Vec::new(),
            local_bytes: 0,
        }
    }

    /// One logical line of a file in the pack folder `dir` (`""`: the root).
    fn line(&mut self, line: &Requirement, dir: &str, kind: Kind, including: &mut Vec<String>) {
        let text = line.text.as_str();
        if chooses_source(text) {
            self.sources.push(Requirement {
                text: without_credentials(text),
                source: line.source.clone(),
            });
        } else if let Some((option, target)) = include(text) {
            let kind = if option == "-c" {
                Kind::Constraints
            } else {
                kind
            };
            self.include(line, dir, target, kind, including);
        } else if text.starts_with('-') {
            // Other options (`--pre`, `--require-hashes`, ...) only change how pip installs.
        } else if let Some(path) = local_path(text) {
            self.artifact(line, path);
            if kind == Kind::Requirements {
                self.requirements.push(line.clone());
            }
        } else if kind == Kind::Requirements {
            self.requirements.push(line.clone());
        }
    }

    fn refuse(&mut self, line: &Requirement, message: String) {
        let problem = problem_at(self.pack_dir, line, format!("`{}`: {message}", line.text));
        self.problems.push(problem);
    }

    /// `-r FILE` or `-c FILE`: read like the root file, relative to the including file's folder.
    fn include(
        &mut self,
        line: &Requirement,
        dir: &str,
        target: &str,
        kind: Kind,
        including: &mut Vec<String>,
    ) {
        let relative = match inside_pack(dir, target) {
            Ok(relative) => relative,
            Err(message) => return self.refuse(line, message),
        };
        if including.contains(&relative) {
            let chain = including.join(" -> ");
            return self.refuse(line, format!("{chain} -> {relative} includes itself"));
        }
        if including.len() > MAX_INCLUDE_DEPTH {
            return self.refuse(
                line,
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH}"),
            );
        }
        if self.files.contains_key(&relative) {
            return;
        }
        let bytes = match read_pack_file(
            self.pack_dir,
            &self.pack_dir.join(&relative),
            MAX_MANIFEST_BYTES,
        ) {
            Ok(bytes) => bytes,
            Err(message) => return self.refuse(line, format!("{relative}: {message}")),
        };
        let folder = relative
            .rsplit_once('/')
            .map_or(String::new(), |(folder, _)| folder.to_string());
        including.push(relative.clone());
        for included in file_lines(&relative, &String::from_utf8_lossy(&bytes)) {
            self.line(&included, &folder, kind, including);
        }
        including.pop();
        self.files.insert(relative, bytes);
    }

    /// A local wheel, archive or project folder: every file of it goes into the build.
    fn artifact(&mut self, line: &Requirement, written: &str) {
        let relative = match inside_pack("", written) {
            Ok(relative) => relative,
            Err(message) => return self.refuse(line, message),
        };
        let mut pending = vec![relative];
        while let Some(relative) = pending.pop() {
            let path = self.pack_dir.join(&relative);
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) => return self.refuse(line, format!("{relative}: cannot read: {e}")),
            };
            if metadata.is_dir() {
                let entries = match std::fs::read_dir(&path) {
                    Ok(entries) => entries,
                    Err(e) => return self.refuse(line, format!("{relative}: cannot read: {e}")),
                };
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
                    .collect();
                names.sort_unstable_by(|a, b| b.cmp(a));
                pending.extend(names.into_iter().map(|name| format!("{relative}/{name}")));
                continue;
            }
            if self.files.contains_key(&relative) {
                continue;
            }
            if self.files.len() >= MAX_LOCAL_FILES {
                return self.refuse(
                    line,
                    format!("local artifacts hold more than {MAX_LOCAL_FILES} files"),
                );
            }
            let bytes = match read_pack_file(self.pack_dir, &path, MAX_ARTIFACT_BYTES) {
                Ok(bytes) => bytes,
                Err(message) => return self.refuse(line, format!("{relative}: {message}")),
            };
            self.local_bytes += bytes.len() as u64;
            if self.local_bytes > MAX_LOCAL_BYTES {
                return self.refuse(
                    line,
                    format!("local artifacts add up to more than {MAX_LOCAL_BYTES} bytes"),
                );
            }
            self.files.insert(relative, bytes);
        }
    }
}

/// `-r FILE`, `--requirement FILE` (or `=FILE`) and the `-c` forms: the option and the file.
fn include(text: &str) -> Option<(&'static str, &str)> {
    for (long, short) in [("--requirement", "-r"), ("--constraint", "-c")] {
        let value = if let Some(rest) = text.strip_prefix(long) {
            rest.strip_prefix('=')
                .or_else(|| rest.starts_with(char::is_whitespace).then_some(rest))
        } else {
            text.strip_prefix(short)
        };
        if let Some(value) = value {
            return Some((short, value.trim()));
        }
    }
    None
}

/// The path a requirement line names when it names a local artifact rather than a project:
/// pip's rule, a path (`./x`, `x/y`) or an archive's file name (`x-1.0-py3-none-any.whl`).
fn local_path(text: &str) -> Option<&str> {
    let token = text.split([' ', '\t', ';']).next()?;
    let token = token.split('[').next()?;
    let is_path = token.starts_with('.')
        || token.starts_with('/')
        || token.contains('/')
        || ARCHIVE_SUFFIXES
            .iter()
            .any(|suffix| token.ends_with(suffix));
    is_path.then_some(token)
}

/// A path as written in a file of the pack folder `dir`, as a path in the pack (`a/b`); one
/// that is absolute, climbs out or names the whole pack is refused, saying so.
fn inside_pack(dir: &str, written: &str) -> Result<String, String> {
    let path = Path::new(written);
    if written.is_empty() {
        return Err("names no file".into());
    }
    if path.is_absolute() {
        return Err("an absolute path; only files inside the pack reach the build".into());
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                parts.push(part.to_str().ok_or("a path that is not UTF-8")?);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("leads outside the pack".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute path; only files inside the pack reach the build".into());
            }
        }
    }
    if parts.is_empty() {
        return Err("names the whole pack; name a wheel, archive or project folder in it".into());
    }
    Ok(parts.join("/"))
}

/// The lines of a requirements file (continuations joined, comments left out), each with its
/// place.
fn file_lines(name: &str, text: &str) -> Vec<Requirement> {
    logical_lines(text)
        .into_iter()
        .map(|(number, line)| Requirement {
            text: line,
            source: format!("{name}:{number}"),
        })
        .collect()
}

/// pip's logical lines: a trailing `\` joins the next line, ` #` starts a comment; blank lines
/// go. Each keeps the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let (number, mut line) = pending.take().unwrap_or((index + 1, String::new()));
        if let Some(continued) = raw.strip_suffix('\\') {
            line.push_str(continued);
            pending = Some((number, line));
            continue;
        }
        line.push_str(raw);
        let without_comment = match line.find('#') {
            Some(0) => "",
            Some(at) if line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => &line,
        };
        let trimmed = without_comment.trim();
        if !trimmed.is_empty() {
            lines.push((number, trimmed.to_string()));
        }
    }
    if let Some((number, line)) = pending {
        let trimmed = line.trim();
        if !trimmed.is_empty() {
            lines.push((number, trimmed.to_string()));
        }
    }
    lines
}

/// pip options that choose where packages come from, or weaken how their origin is checked.
const SOURCE_OPTIONS: &[&str] = &[
    "-i",
    "--index-url",
    "--extra-index-url",
    "--trusted-host",
    "-f",
    "--find-links",
    "-e",
    "--editable",
];

/// Whether a requirements line chooses a package source: one of [`SOURCE_OPTIONS`] (also in
/// `--opt=value` and `-ovalue` forms) or a URL (`name @ https://...`, `git+https://...`,
/// `file:...`).
fn chooses_source(line: &str) -> bool {
    if line.contains("://") || line.starts_with("file:") {
        return true;
    }
    let option = if line.starts_with("--") {
        line.split(['=', ' ', '\t']).next().unwrap_or(line)
    } else if line.starts_with('-') {
        line.get(..2).unwrap_or(line)
    } else {
        return false;
    };
    SOURCE_OPTIONS.contains(&option)
}

/// A line with the credentials of its URLs masked (`https://user:token@host` ->
/// `https://***@host`), so that refusing it does not print them.
fn without_credentials(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', ' ', '\t']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&tail[user_end..authority_end]);
            }
            None => out.push_str(&tail[..authority_end]),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// How a new requirement relates to those already declared.
enum Clash<'a> {
    None,
    /// The same package with the same specifier: nothing to add.
    Same,
    /// The same package with another specifier.
    Conflict(&'a Requirement),
}

fn clash<'a>(declared: &'a [Requirement], new: &Requirement) -> Clash<'a> {
    let Some(name) = project_name(&new.text) else {
        return Clash::None;
    };
    let spelled = normalized_requirement(&new.text);
    for earlier in declared {
        if project_name(&earlier.text).as_deref() == Some(name.as_str()) {
            return if normalized_requirement(&earlier.text) == spelled {
                Clash::Same
            } else {
                Clash::Conflict(earlier)
            };
        }
    }
    Clash::None
}

/// A package `pack.yaml` declares again with another specifier.
fn conflict(pack_dir: &Path, declared: &Requirement, earlier: &Requirement) -> Problem {
    problem_at(
        pack_dir,
        declared,
        format!(
            "`{}` ({}) conflicts with `{}` ({}): declare each package once, with one specifier",
            declared.text, declared.source, earlier.text, earlier.source
        ),
    )
}

/// The end of the name at the start of a requirement.
fn name_end(requirement: &str) -> usize {
    requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(requirement.len())
}

/// The normalised project name a requirement line names (PEP 503: lower case, runs of `-_.` as
/// one `-`); `None` for options, paths, archives and URLs.
fn project_name(requirement: &str) -> Option<String> {
    let first = requirement.chars().next()?;
    if !first.is_ascii_alphanumeric() || local_path(requirement).is_some() {
        return None;
    }
    let end = name_end(requirement);
    let rest = requirement[end..].trim_start();
    let follows_a_name =
        rest.is_empty() || rest.starts_with(['[', '<', '>', '=', '!', '~', ';', '@', '(', ',']);
    if !follows_a_name {
        return None;
    }
    let mut name = String::new();
    for c in requirement[..end].chars() {
        if matches!(c, '-' | '_' | '.') {
            if !name.ends_with('-') {
                name.push('-');
            }
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    Some(name)
}

/// A requirement without whitespace and with its name normalised, for comparison.
fn normalized_requirement(requirement: &str) -> String {
    let compact: String = requirement.split_whitespace().collect();
    match project_name(&compact) {
        Some(name) => format!("{name}{}", &compact[name_end(&compact)..]),
        None => compact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::dependencies::tests::pack;

    /// A pack folder with the given files, and its canonical path.
    fn folder(files: &[(&str, &[u8])]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        for (name, bytes) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        (dir, root)
    }

    fn pip(
        requirements_txt: Option<&str>,
        meta: &[&str],
    ) -> Result<Option<Manifests>, Vec<Problem>> {
        let files: Vec<(&str, &[u8])> = requirements_txt
            .map(|text| ("requirements.txt", text.as_bytes()))
            .into_iter()
            .collect();
        let (_dir, root) = folder(&files);
        read(&root, &pack(meta))
    }

    fn text(manifests: &Manifests) -> String {
        String::from_utf8_lossy(&manifests.files[0].1).into_owned()
    }

    fn names(manifests: &Manifests) -> Vec<&str> {
        manifests
            .files
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    #[test]
    fn no_file_and_no_meta_is_no_environment() {
        assert_eq!(pip(None, &[]), Ok(None));
    }

    #[test]
    fn meta_alone_becomes_the_requirements() {
        let manifests = pip(None, &["requests>=2.28.0", "croniter>=1.4.0"])
            .expect("valid")
            .expect("has dependencies");
        assert_eq!(
            text(&manifests),
            "# from pack.yaml meta.python_dependencies\nrequests>=2.28.0\ncroniter>=1.4.0\n"
        );
        assert_eq!(manifests.requirements.len(), 2);
    }

    #[test]
    fn meta_is_merged_after_the_file_which_stays_as_written() {
        let manifests = pip(
            Some("# pinned\nsix==1.16.0"),
            &["idna==3.7", "Six == 1.16.0"],
        )
        .expect("valid")
        .expect("has dependencies");
        assert_eq!(
            text(&manifests),
            "# pinned\nsix==1.16.0\n# from pack.yaml meta.python_dependencies\nidna==3.7\n"
        );
        let sources: Vec<&str> = manifests
            .requirements
            .iter()
            .map(|r| r.source.as_str())
            .collect();
        assert_eq!(
            sources,
            ["requirements.txt:2", "pack.yaml meta.python_dependencies"]
        );
    }

    #[test]
    fn the_merged_set_changes_the_key() {
        let a = pip(Some("six==1.16.0\n"), &[])
            .expect("valid")
            .expect("deps");
        let b = pip(Some("six==1.16.0\n"), &["idna==3.7"])
            .expect("valid")
            .expect("deps");
        assert_ne!(a.dependency_hash(), b.dependency_hash());
    }

    #[test]
    fn a_package_declared_twice_differently_names_both_places() {
        let problems = pip(Some("requests==2.28.0\n"), &["requests>=2.31"]).expect_err("conflict");
        assert_eq!(problems.len(), 1);
        let problem = problems[0].to_string();
        assert!(
            problem.contains("field `meta.python_dependencies`: `requests>=2.31` (pack.yaml meta.python_dependencies) conflicts with `requests==2.28.0` (requirements.txt:1)"),
            "{problem}"
        );
        // PEP 503 names: `Requests_OAuthlib` and `requests-oauthlib` are one project.
        assert!(pip(Some("requests-oauthlib==1\n"), &["Requests_OAuthlib==2"]).is_err());
    }

    #[test]
    fn includes_and_local_artifacts_reach_the_build_with_their_places() {
        let (_dir, root) = folder(&[
            ("requirements.txt", b"-r reqs/base.txt\n--constraint=constraints.txt\n./wheels/a-1.0-py3-none-any.whl\nlocal/\n"),
            ("reqs/base.txt", b"six\n-r more.txt\n"),
            ("reqs/more.txt", b"idna\n"),
            ("constraints.txt", b"six==1.16.0\n"),
            ("wheels/a-1.0-py3-none-any.whl", b"zip"),
            ("local/pyproject.toml", b"[project]\n"),
            ("local/src/local/__init__.py", b""),
        ]);
        let manifests = read(&root, &pack(&[])).expect("valid").expect("deps");
        assert_eq!(
            names(&manifests),
            [
                "requirements.txt",
                "constraints.txt",
                "local/pyproject.toml",
                "local/src/local/__init__.py",
                "reqs/base.txt",
                "reqs/more.txt",
                "wheels/a-1.0-py3-none-any.whl",
            ]
        );
        let listed: Vec<(&str, &str)> = manifests
            .requirements
            .iter()
            .map(|r| (r.text.as_str(), r.source.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("six", "reqs/base.txt:1"),
                ("idna", "reqs/more.txt:1"),
                ("./wheels/a-1.0-py3-none-any.whl", "requirements.txt:3"),
                ("local/", "requirements.txt:4"),
            ],
            "constraints are not requirements"
        );
        // An edit in an included file is a new environment.
        std::fs::write(root.join("reqs/more.txt"), "idna==3.7\n").expect("write");
        let edited = read(&root, &pack(&[])).expect("valid").expect("deps");
        assert_ne!(manifests.dependency_hash(), edited.dependency_hash());
    }

    #[test]
    fn includes_and_artifacts_may_not_leave_the_pack() {
        let outside = tempfile::NamedTempFile::new().expect("outside");
        for (line, expected) in [
            ("-r ../outside.txt", "leads outside the pack"),
            ("-r /etc/passwd", "an absolute path"),
            ("-c reqs/../../x.txt", "leads outside the pack"),
            ("./../x.whl", "leads outside the pack"),
            ("/tmp/x.whl", "an absolute path"),
            (".", "names the whole pack"),
            ("-r missing.txt", "missing.txt: cannot read"),
            (
                "-r self.txt",
                "requirements.txt -> self.txt -> self.txt includes itself",
            ),
            ("-r link.txt", "link.txt: leads outside the pack"),
        ] {
            let (_dir, root) = folder(&[
                ("requirements.txt", format!("{line}\n").as_bytes()),
                ("self.txt", b"-r self.txt\n"),
            ]);
            std::os::unix::fs::symlink(outside.path(), root.join("link.txt")).expect("symlink");
            let problems = read(&root, &pack(&[])).expect_err(line);
            let shown = problems[0].to_string();
            assert!(shown.contains(expected), "{line}: {shown}");
            assert!(
                shown.contains("requirements.txt:1") || shown.contains("self.txt:1"),
                "{shown}"
            );
        }
    }

    #[test]
    fn included_files_follow_the_same_rules_as_the_root_file() {
        let (_dir, root) = folder(&[
            ("requirements.txt", b"-r other.txt\n"),
            (
                "other.txt",
                b"--index-url https://u:p@x.example/simple\nsix\n",
            ),
        ]);
        let manifests = read(&root, &pack(&[])).expect("valid").expect("deps");
        assert_eq!(
            manifests.sources,
            [Requirement {
                text: "--index-url https://***@x.example/simple".into(),
                source: "other.txt:1".into()
            }]
        );
        let secret = root.join("secret");
        std::fs::write(&secret, "x").expect("write");
        std::fs::remove_file(root.join("other.txt")).expect("rm");
        std::fs::hard_link(&secret, root.join("other.txt")).expect("link");
        let problems = read(&root, &pack(&[])).expect_err("hard link");
        assert!(
            problems[0].to_string().contains("has 2 hard links"),
            "{problems:?}"
        );
    }

    #[test]
    fn lines_that_choose_package_sources_are_found() {
        for line in [
            "--index-url https://pypi.example/simple",
            "--index-url=https://x/simple",
            "-i https://x/simple",
            "-ihttps://x/simple",
            "--extra-index-url http://x",
            "--trusted-host x.example",
            "--find-links ./wheels",
            "-f ./wheels",
            "-e .",
            "--editable=git+https://x/y.git",
            "name @ https://x/y.whl",
            "git+https://example.org/x.git",
            "https://example.org/x-1.0.tar.gz",
            "file:./x",
        ] {
            assert!(chooses_source(line), "{line}");
        }
        for line in [
            "requests>=2",
            "--hash=sha256:abc",
            "--require-hashes",
            "--pre",
            "-r other.txt",
            "--no-binary=:all:",
            "./wheels/x.whl",
        ] {
            assert!(!chooses_source(line), "{line}");
        }
    }

    #[test]
    fn credentials_are_masked_in_every_url_of_a_line() {
        assert_eq!(
            without_credentials("-i https://u:p@a.example/s --extra-index-url=http://t@b/x"),
            "-i https://***@a.example/s --extra-index-url=http://***@b/x"
        );
        assert_eq!(
            without_credentials("https://a.example/x"),
            "https://a.example/x"
        );
    }

    #[test]
    fn lines_are_told_apart() {
        assert_eq!(include("-r a.txt"), Some(("-r", "a.txt")));
        assert_eq!(include("-ra.txt"), Some(("-r", "a.txt")));
        assert_eq!(include("--requirement=a.txt"), Some(("-r", "a.txt")));
        assert_eq!(include("--constraint a.txt"), Some(("-c", "a.txt")));
        assert_eq!(include("--requirements a.txt"), None);
        assert_eq!(local_path("./x.whl --hash=sha256:1"), Some("./x.whl"));
        assert_eq!(
            local_path("x-1.0-py3-none-any.whl"),
            Some("x-1.0-py3-none-any.whl")
        );
        assert_eq!(
            local_path("pkg/[extra] ; python_version > '3'"),
            Some("pkg/")
        );
        assert_eq!(local_path("requests[socks]>=2"), None);
        assert_eq!(project_name("requests>=2"), Some("requests".into()));
        assert_eq!(
            project_name("Zope.Interface [x] ; python_version<'3.12'"),
            Some("zope-interface".into())
        );
        assert_eq!(project_name("name @ https://x/y.whl"), Some("name".into()));
        assert_eq!(project_name("a-1.0-py3-none-any.whl"), None);
        assert_eq!(project_name("./wheels/a.whl"), None);
        assert_eq!(project_name("git+https://example.org/x.git"), None);
    }

    #[test]
    fn logical_lines_join_continuations_and_drop_comments() {
        let lines = logical_lines("a==1 \\\n  --hash=sha256:x\n# c\n\nb#c ok\nc  # comment\n");
        assert_eq!(
            lines,
            [
                (1, "a==1   --hash=sha256:x".to_string()),
                (5, "b#c ok".to_string()),
                (6, "c".to_string())
            ]
        );
    }
}
