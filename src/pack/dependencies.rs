//! A pack's dependencies for one installer, as Attune packs declare them: the manifest files at
//! the pack root (`requirements.txt`; `package.json` with `package-lock.json`) and, for pip, the
//! requirements `pack.yaml` lists in `meta.python_dependencies`. The merged set is what the
//! environment image installs and what its key hashes; a package declared in two places with
//! different specifiers is refused rather than guessed.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::PackManifest;
use super::problem::{Problem, locate};
use crate::envimage::{Installer, Manifests};
use crate::input;

/// One declared dependency and where it was declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// As written: `requests>=2.28.0`, `is-number@^7.0.0`.
    pub text: String,
    /// `requirements.txt:3`, `pack.yaml meta.python_dependencies`, ...
    pub source: String,
}

/// The name of the file pip installs from, in the build context.
const REQUIREMENTS: &str = "requirements.txt";

/// The dependencies of the pack in `pack_dir` (canonical) for `installer`: `None` when it has
/// none (its actions run on the runtime image). Conflicts and unreadable manifests are problems.
pub fn read(
    pack_dir: &Path,
    pack: &PackManifest,
    installer: Installer,
) -> Result<Option<Manifests>, Vec<Problem>> {
    match installer {
        Installer::Pip => read_pip(pack_dir, pack),
        Installer::Npm => read_npm(pack_dir),
    }
}

fn read_pip(pack_dir: &Path, pack: &PackManifest) -> Result<Option<Manifests>, Vec<Problem>> {
    let file = pack_dir.join(REQUIREMENTS);
    let from_file = if present(&file) {
        Some(read_file(pack_dir, &file)?)
    } else {
        None
    };
    if from_file.is_none() && pack.python_dependencies.is_empty() {
        return Ok(None);
    }
    let file_lines: Vec<Requirement> = from_file
        .as_deref()
        .map(|bytes| file_lines(REQUIREMENTS, &String::from_utf8_lossy(bytes)))
        .unwrap_or_default();
    let mut sources: Vec<Requirement> = file_lines
        .iter()
        .chain(&pack.python_dependencies)
        .filter(|line| chooses_source(&line.text))
        .map(|line| Requirement {
            text: without_credentials(&line.text),
            source: line.source.clone(),
        })
        .collect();
    sources.dedup();
    let mut requirements: Vec<Requirement> = file_lines
        .into_iter()
        .filter(|line| !line.text.starts_with('-'))
        .collect();
    let mut problems = Vec::new();
    let mut added = Vec::new();
    for declared in &pack.python_dependencies {
        match clash(&requirements, declared) {
            Clash::None => {
                added.push(declared.text.clone());
                requirements.push(declared.clone());
            }
            Clash::Same => {}
            Clash::Conflict(earlier) => problems.push(conflict(pack_dir, declared, earlier)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
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
    Ok(Some(Manifests {
        installer: Installer::Pip,
        files: vec![(REQUIREMENTS.to_string(), combined)],
        requirements,
        sources,
    }))
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

fn read_npm(pack_dir: &Path) -> Result<Option<Manifests>, Vec<Problem>> {
    let package_json = pack_dir.join("package.json");
    if !present(&package_json) {
        return Ok(None);
    }
    let bytes = read_file(pack_dir, &package_json)?;
    let requirements = npm_requirements(&package_json, &bytes)?;
    let mut files = vec![("package.json".to_string(), bytes)];
    let lock = pack_dir.join("package-lock.json");
    if present(&lock) {
        files.push(("package-lock.json".to_string(), read_file(pack_dir, &lock)?));
    }
    Ok(Some(Manifests {
        installer: Installer::Npm,
        files,
        requirements,
        sources: Vec::new(),
    }))
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
pub(crate) fn logical_lines(text: &str) -> Vec<(usize, String)> {
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
/// `--opt=value` and `-ovalue` forms) or a URL (`name @ https://...`, `git+https://...`).
pub(crate) fn chooses_source(line: &str) -> bool {
    if line.contains("://") {
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
pub(crate) fn without_credentials(line: &str) -> String {
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

/// The problem a declared line gives, located at its place (`requirements.txt:3`, or the field
/// of `pack.yaml` it came from).
pub(crate) fn problem_at(pack_dir: &Path, declared: &Requirement, message: String) -> Problem {
    if let Some(field) = declared.source.strip_prefix("pack.yaml ") {
        // `meta.python_dependencies.dependencies` -> `meta.python_dependencies`.
        let path: Vec<&str> = field.split([' ', '.']).take(2).collect();
        let file = pack_dir.join("pack.yaml");
        let line = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| locate(&text, &path));
        return Problem {
            file,
            line,
            field: Some(path.join(".")),
            message,
        };
    }
    let (name, line) = match declared.source.rsplit_once(':') {
        Some((name, line)) => (name, line.parse().ok()),
        None => (declared.source.as_str(), None),
    };
    Problem {
        file: pack_dir.join(name),
        line,
        field: None,
        message,
    }
}

/// What the operator has to allow before a pack's requirements may choose package sources.
pub const SOURCES_REFUSED: &str = "pip options that choose package sources (--index-url, --extra-index-url, --trusted-host, --find-links, -e, URLs) are refused in packs unless the operator sets PACKBOX_PIP_ALLOW_PACK_SOURCES=1 (the operator's own index is PACKBOX_PIP_INDEX_URL)";

/// The problems of lines that choose package sources, one per line, unless the operator allows
/// them.
pub fn refused_sources(pack_dir: &Path, manifests: &Manifests, allowed: bool) -> Vec<Problem> {
    if allowed {
        return Vec::new();
    }
    manifests
        .sources
        .iter()
        .map(|line| {
            problem_at(
                pack_dir,
                line,
                format!("`{}`: {SOURCES_REFUSED}", line.text),
            )
        })
        .collect()
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

/// The normalised project name a requirement line names (PEP 503: lower case, runs of `-_.` as
/// one `-`); `None` for options, paths and URLs.
pub(crate) fn project_name(requirement: &str) -> Option<String> {
    let first = requirement.chars().next()?;
    if !first.is_ascii_alphanumeric() {
        return None;
    }
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(requirement.len());
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
        Some(name) => {
            let end = compact
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .unwrap_or(compact.len());
            format!("{name}{}", &compact[end..])
        }
        None => compact,
    }
}

/// `package.json`'s `dependencies`, as `name@spec`; a file that is not a JSON object is a problem
/// (npm would fail on it at build time).
fn npm_requirements(file: &Path, bytes: &[u8]) -> Result<Vec<Requirement>, Vec<Problem>> {
    let problem = |message: String| {
        vec![Problem {
            file: file.to_path_buf(),
            line: None,
            field: None,
            message,
        }]
    };
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| problem(format!("invalid JSON: {e}")))?;
    let Some(object) = document.as_object() else {
        return Err(problem("expected a JSON object".into()));
    };
    let dependencies = match object.get("dependencies") {
        None | Some(serde_json::Value::Null) => BTreeMap::new(),
        Some(serde_json::Value::Object(map)) => map.iter().collect(),
        Some(_) => {
            return Err(vec![Problem {
                file: file.to_path_buf(),
                line: None,
                field: Some("dependencies".into()),
                message: "expected a mapping of package names to versions".into(),
            }]);
        }
    };
    Ok(dependencies
        .into_iter()
        .map(|(name, spec)| Requirement {
            text: match spec.as_str() {
                Some(text) => format!("{name}@{text}"),
                None => format!("{name}@{spec}"),
            },
            source: "package.json dependencies".into(),
        })
        .collect())
}

/// Whether a manifest is there in any form: one that is not a regular file is then refused, not
/// overlooked.
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Manifest files larger than this are refused before they are read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Reads a manifest of the pack; see [`read_pack_file`].
fn read_file(pack_dir: &Path, path: &Path) -> Result<Vec<u8>, Vec<Problem>> {
    read_pack_file(pack_dir, path).map_err(|message| {
        vec![Problem {
            file: path.to_path_buf(),
            line: None,
            field: None,
            message,
        }]
    })
}

/// Reads a file of the pack as untrusted input (packbox may run as root; the pack's author may
/// not): a regular file of at most [`MAX_MANIFEST_BYTES`] (checked before reading and while
/// reading, so FIFOs and devices never block or flood), that resolves inside `pack_dir`
/// (canonical) and has no other hard link (a hard link could hand packbox a file its author
/// cannot read). The error says what is wrong.
pub(crate) fn read_pack_file(pack_dir: &Path, path: &Path) -> Result<Vec<u8>, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot read: {e}"))?;
    if !real.starts_with(pack_dir) {
        return Err(format!("leads outside the pack (to {})", real.display()));
    }
    // An O_PATH handle pins the file that is checked, and the read goes through that handle, so
    // a file swapped in between is never the one read. O_NOFOLLOW: no symlink at the last step.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|e| format!("cannot read: {e}"))?;
    let metadata = handle.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !metadata.is_file() {
        return Err("expected a regular file (not a FIFO, device or folder)".into());
    }
    if metadata.nlink() != 1 {
        return Err(format!(
            "has {} hard links; packbox reads only manifests that belong to the pack alone",
            metadata.nlink()
        ));
    }
    if metadata.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "is {} bytes; manifests may be at most {MAX_MANIFEST_BYTES} bytes",
            metadata.len()
        ));
    }
    let pinned = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    input::read_regular_file(&pinned, MAX_MANIFEST_BYTES).map_err(|e| format!("cannot read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(meta: &[&str]) -> PackManifest {
        PackManifest {
            pack_ref: "p".into(),
            label: "P".into(),
            description: None,
            version: "1.0.0".into(),
            author: None,
            email: None,
            license: None,
            conf_schema: Default::default(),
            config: None,
            meta: None,
            python_dependencies: meta
                .iter()
                .map(|text| Requirement {
                    text: text.to_string(),
                    source: "pack.yaml meta.python_dependencies".into(),
                })
                .collect(),
            tags: Vec::new(),
            runtime_deps: Vec::new(),
            dependencies: Vec::new(),
        }
    }

    fn pip(
        requirements_txt: Option<&str>,
        meta: &[&str],
    ) -> Result<Option<Manifests>, Vec<Problem>> {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(text) = requirements_txt {
            std::fs::write(dir.path().join("requirements.txt"), text).expect("write");
        }
        read(dir.path(), &pack(meta), Installer::Pip)
    }

    fn text(manifests: &Manifests) -> String {
        String::from_utf8_lossy(&manifests.files[0].1).into_owned()
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
    fn project_names_are_read_from_requirement_lines_only() {
        assert_eq!(project_name("requests>=2"), Some("requests".into()));
        assert_eq!(
            project_name("Zope.Interface [x] ; python_version<'3.12'"),
            Some("zope-interface".into())
        );
        assert_eq!(project_name("name @ https://x/y.whl"), Some("name".into()));
        assert_eq!(project_name("./wheels/a.whl"), None);
        assert_eq!(project_name("git+https://example.org/x.git"), None);
        assert_eq!(project_name("-r other.txt"), None);
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

    #[test]
    fn npm_lists_package_json_dependencies() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"dependencies": {"is-number": "^7.0.0"}}"#,
        )
        .expect("write");
        let manifests = read(dir.path(), &pack(&[]), Installer::Npm)
            .expect("valid")
            .expect("deps");
        assert_eq!(manifests.requirements[0].text, "is-number@^7.0.0");
        std::fs::write(dir.path().join("package.json"), "{").expect("write");
        let problems = read(dir.path(), &pack(&[]), Installer::Npm).expect_err("bad JSON");
        assert!(problems[0].message.contains("invalid JSON"), "{problems:?}");
    }

    #[test]
    fn manifests_are_read_as_untrusted_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pack_dir = dir.path().canonicalize().expect("canonical");
        let file = pack_dir.join("requirements.txt");
        std::fs::write(&file, "six\n").expect("write");
        assert_eq!(read_pack_file(&pack_dir, &file), Ok(b"six\n".to_vec()));
        std::fs::hard_link(&file, pack_dir.join("twin.txt")).expect("hard link");
        let err = read_pack_file(&pack_dir, &file).expect_err("two links");
        assert!(err.contains("has 2 hard links"), "{err}");
        std::fs::remove_file(pack_dir.join("twin.txt")).expect("rm");
        let sparse = std::fs::File::create(&file).expect("create");
        sparse.set_len(MAX_MANIFEST_BYTES + 1).expect("sparse");
        let err = read_pack_file(&pack_dir, &file).expect_err("too large");
        assert!(err.contains("at most 1048576 bytes"), "{err}");
        std::fs::remove_file(&file).expect("rm");
        let made = std::process::Command::new("mkfifo")
            .arg(&file)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let err = read_pack_file(&pack_dir, &file).expect_err("fifo");
        assert!(err.contains("regular file"), "{err}");
        std::fs::remove_file(&file).expect("rm");
        let outside = tempfile::NamedTempFile::new().expect("outside");
        std::os::unix::fs::symlink(outside.path(), &file).expect("symlink");
        let err = read_pack_file(&pack_dir, &file).expect_err("outside");
        assert!(err.contains("leads outside the pack"), "{err}");
    }

    #[test]
    fn lines_that_choose_package_sources_are_found_and_refused_unless_allowed() {
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
        ] {
            assert!(!chooses_source(line), "{line}");
        }
        let manifests = pip(
            Some("six\n--index-url https://user:token@pypi.example/simple\n"),
            &["name @ https://x/y.whl"],
        )
        .expect("read")
        .expect("deps");
        assert_eq!(manifests.sources.len(), 2);
        let refused = refused_sources(Path::new("/p"), &manifests, false);
        let shown: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].starts_with("/p/requirements.txt:2: `--index-url https://***@pypi.example/simple`: pip options that choose package sources"),
            "{shown:?}"
        );
        assert!(!shown[0].contains("token"), "{shown:?}");
        assert!(
            shown[1].contains("field `meta.python_dependencies`"),
            "{shown:?}"
        );
        assert!(refused_sources(Path::new("/p"), &manifests, true).is_empty());
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
    fn a_lock_without_package_json_is_no_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("package-lock.json"), "{}").expect("write");
        assert_eq!(read(dir.path(), &pack(&[]), Installer::Npm), Ok(None));
        std::fs::write(dir.path().join("package.json"), "{}").expect("write");
        let found = read(dir.path(), &pack(&[]), Installer::Npm)
            .expect("valid")
            .expect("present");
        assert_eq!(found.files.len(), 2);
    }
}
