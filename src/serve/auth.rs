//! Who may use the API, and for what: bearer tokens from the token file, one per line as
//! `NAME:TOKEN [run=GLOB[,GLOB...]] [read=own|all] [admin]` (or a bare `TOKEN`, with the same
//! scopes), and from `PACKBOX_SERVE_TOKEN` (named `env`, every scope).
//!
//! A line without scope words keeps what tokens always could: `run=* read=all admin`. A line
//! with any scope word gets only what it names: no action to run unless `run=`, its own
//! executions only unless `read=all`, no keys, audit or metrics unless `admin`.
//!
//! Tokens are kept as SHA-256 digests and a presented token is compared, digest to digest, with
//! every known one in constant time (`subtle`), so neither the comparison's time nor its length
//! says how much of a guess was right. A token never reaches a log, an error or a record: records
//! hold its name, and a token listed without a name is named by its line (`line-3`), which says
//! nothing about the token itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use packbox::HiddenText;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 1 << 20;
/// Tokens shorter than this are refused: a guessable token is no access control.
pub const MIN_TOKEN_LEN: usize = 16;

/// The tokens cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read (missing, too large, not a regular file).
    #[error("token file {}: cannot read", file.display())]
    Read {
        /// The token file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the token file cannot be used; messages never quote a token.
    #[error("token file {}: line {line}: {message}", file.display())]
    Line {
        /// The token file.
        file: PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// What is wrong with it (too short, a name used twice, ...).
        message: String,
    },
    /// The token in `PACKBOX_SERVE_TOKEN` cannot be used.
    #[error("PACKBOX_SERVE_TOKEN: {message}")]
    Env {
        /// What is wrong with it.
        message: String,
    },
}

/// A known token: its name, the digest of its value and what it may do.
struct Known {
    name: String,
    digest: [u8; 32],
    scope: Scope,
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The actions it may run (globs over `pack.action`); empty: none.
    run: Vec<glob::Pattern>,
    /// Whether it reads every execution, or only those it started.
    read_all: bool,
    /// Keys, audit, metrics, and cancelling anyone's execution.
    admin: bool,
}

impl Scope {
    /// Every scope: a token listed without scope words, the environment's token, or a server
    /// without tokens (loopback only).
    pub fn everything() -> Scope {
        Scope {
            run: glob::Pattern::new("*").into_iter().collect(),
            read_all: true,
            admin: true,
        }
    }

    /// Whether the token may run `action` (`pack.action`).
    pub fn may_run(&self, action: &str) -> bool {
        self.run.iter().any(|glob| glob.matches(action))
    }

    /// Whether the token reads every execution (not only its own).
    pub fn reads_all(&self) -> bool {
        self.read_all
    }

    /// Whether the token holds `admin`: keys, audit, metrics, cancelling any execution.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The `run=` scope as written (`run=hello.*,svc.echo`, or `run=` for none), for refusals.
    pub fn run_text(&self) -> String {
        let globs: Vec<&str> = self.run.iter().map(glob::Pattern::as_str).collect();
        format!("run={}", globs.join(","))
    }

    /// Parses the scope words of a token line; none at all: every scope.
    fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Scope, String> {
        let mut scope = Scope {
            run: Vec::new(),
            read_all: false,
            admin: false,
        };
        let (mut any, mut run_seen, mut read_seen) = (false, false, false);
        for word in words {
            any = true;
            if let Some(globs) = word.strip_prefix("run=") {
                if std::mem::replace(&mut run_seen, true) {
                    return Err(
                        "`run=` is given twice (list the globs once, comma-separated)".into(),
                    );
                }
                for glob in globs.split(',') {
                    let pattern = glob::Pattern::new(glob)
                        .ok()
                        .filter(|_| !glob.is_empty())
                        .ok_or_else(|| {
                            format!(
                                "run=: `{glob}` is not a glob over PACK.ACTION (e.g. `hello.*`)"
                            )
                        })?;
                    scope.run.push(pattern);
                }
            } else if let Some(read) = word.strip_prefix("read=") {
                if std::mem::replace(&mut read_seen, true) {
                    return Err("`read=` is given twice".into());
                }
                scope.read_all = match read {
                    "own" => false,
                    "all" => true,
                    other => return Err(format!("read=`{other}`: expected read=own or read=all")),
                };
            } else if word == "admin" {
                scope.admin = true;
            } else {
                return Err(format!(
                    "`{word}` is not a scope: expected run=GLOB[,GLOB...], read=own|all or admin"
                ));
            }
        }
        Ok(if any { scope } else { Scope::everything() })
    }
}

/// Who sent a request: the token's name (none when the server has no tokens) and its scope.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name, as records hold it.
    pub name: Option<String>,
    /// What it may do.
    pub scope: Scope,
}

impl Caller {
    /// The caller of a server without tokens: anyone on loopback, with every scope.
    pub fn anyone() -> Caller {
        Caller {
            name: None,
            scope: Scope::everything(),
        }
    }

    /// Whether the caller may read an execution started by the token named `owner`.
    pub fn may_read(&self, owner: Option<&str>) -> bool {
        self.scope.read_all || owner == self.name.as_deref()
    }

    /// Whether the caller may cancel an execution started by the token named `owner`: its own,
    /// or any with `admin`.
    pub fn may_cancel(&self, owner: Option<&str>) -> bool {
        self.scope.admin || owner == self.name.as_deref()
    }

    /// The name actions are recorded under (`-` without tokens), for key-change audit.
    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("-")
    }
}

/// The tokens the server accepts.
pub struct Tokens {
    known: Vec<Known>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.known.iter().map(|k| &k.name))
            .finish()
    }
}

/// Why a request was refused access.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is not known.
    Wrong,
}

impl Tokens {
    /// Reads the token file (when set) and the environment's token. A token file every user can
    /// read is accepted with a warning: tokens are credentials.
    pub fn load(file: Option<&Path>, env_token: Option<&HiddenText>) -> Result<Tokens, TokenError> {
        let mut known = Vec::new();
        if let Some(file) = file {
            let read_error = |source| TokenError::Read {
                file: file.to_path_buf(),
                source,
            };
            let bytes = packbox::input::read_regular_file(file, MAX_TOKEN_FILE_BYTES)
                .map_err(read_error)?;
            // Group-readable is how a service's group gets its secrets; everyone is too many.
            if let Ok(meta) = std::fs::metadata(file)
                && meta.permissions().mode() & 0o004 != 0
            {
                tracing::warn!(
                    file = %file.display(),
                    "the token file is readable by every user; make it readable by its owner (chmod 600) or a group (chmod 640)"
                );
            }
            let text = String::from_utf8(bytes).map_err(|e| {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                TokenError::Line {
                    file: file.to_path_buf(),
                    line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
                    message: "not UTF-8 text".into(),
                }
            })?;
            for (index, line) in text.lines().enumerate() {
                let line_error = |message: String| TokenError::Line {
                    file: file.to_path_buf(),
                    line: index + 1,
                    message,
                };
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut words = line.split_whitespace();
                let credential = words.next().unwrap_or_default();
                let (name, token) = match credential.split_once(':') {
                    Some((name, token)) => (name.to_string(), token),
                    None => (anonymous_name(index + 1), credential),
                };
                check_name(&name).map_err(line_error)?;
                check_token(token).map_err(line_error)?;
                let scope = Scope::parse(words).map_err(line_error)?;
                add(&mut known, name, token, scope).map_err(line_error)?;
            }
        }
        if let Some(token) = env_token {
            let env_error = |message| TokenError::Env { message };
            check_token(&token.0).map_err(env_error)?;
            add(&mut known, "env".into(), &token.0, Scope::everything()).map_err(env_error)?;
        }
        Ok(Tokens { known })
    }

    /// Whether no token is known (the server then listens on loopback only).
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The caller an `Authorization` header names: its token's name and scope.
    pub fn check(&self, authorization: Option<&str>) -> Result<Caller, Denied> {
        let header = authorization.ok_or(Denied::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(Denied::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Missing);
        }
        let presented = digest(token.trim());
        let mut matched = None;
        // Every known token is compared, whichever matches.
        for known in &self.known {
            if bool::from(known.digest.ct_eq(&presented)) {
                matched = Some(known);
            }
        }
        matched
            .map(|known| Caller {
                name: Some(known.name.clone()),
                scope: known.scope.clone(),
            })
            .ok_or(Denied::Wrong)
    }
}

fn add(known: &mut Vec<Known>, name: String, token: &str, scope: Scope) -> Result<(), String> {
    let digest = digest(token);
    if known.iter().any(|k| k.name == name) {
        return Err(format!("the name `{name}` is used twice"));
    }
    if known.iter().any(|k| bool::from(k.digest.ct_eq(&digest))) {
        return Err("this token is listed twice".into());
    }
    known.push(Known {
        name,
        digest,
        scope,
    });
    Ok(())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The name of a token listed without one: its line in the token file. It tells tokens apart in
/// records and says nothing about the token (a digest prefix, which other tokens' holders can
/// read in records, would let a weak token be guessed offline).
fn anonymous_name(line: usize) -> String {
    format!("line-{line}")
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err("expected NAME:TOKEN with a name of letters, digits, `_`, `-`, `.` (at most 64)".into())
    }
}

fn check_token(token: &str) -> Result<(), String> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(format!(
            "a token must have at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a token may not hold spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(file_text: &str, env: Option<&str>) -> Result<Tokens, TokenError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, file_text).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Tokens::load(Some(&file), env.map(|t| HiddenText(t.to_string())).as_ref())
    }

    fn name_of(t: &Tokens, header: &str) -> Result<String, Denied> {
        t.check(Some(header))
            .map(|caller| caller.name.unwrap_or_default())
    }

    #[test]
    fn named_bare_and_environment_tokens_are_known_by_name() {
        let t = tokens(
            "# CI and ops\nci:0123456789abcdef0123\n\n fedcba9876543210fedc \n",
            Some("environment-token-1234"),
        )
        .expect("valid");
        assert_eq!(name_of(&t, "Bearer 0123456789abcdef0123"), Ok("ci".into()));
        assert_eq!(
            name_of(&t, "bearer  environment-token-1234"),
            Ok("env".into())
        );
        // A bare token is named by its line: nothing about the token itself.
        assert_eq!(
            name_of(&t, "Bearer fedcba9876543210fedc"),
            Ok("line-4".into())
        );
        assert_eq!(
            name_of(&t, "Bearer 0123456789abcdef012"),
            Err(Denied::Wrong)
        );
        assert_eq!(
            name_of(&t, "Basic 0123456789abcdef0123"),
            Err(Denied::Missing)
        );
        assert!(matches!(t.check(None), Err(Denied::Missing)));
    }

    #[test]
    fn a_line_without_scope_words_keeps_every_scope() {
        let t = tokens("ci:0123456789abcdef0123\n", Some("environment-token-1234")).expect("valid");
        for header in [
            "Bearer 0123456789abcdef0123",
            "Bearer environment-token-1234",
        ] {
            let caller = t.check(Some(header)).expect("known");
            assert_eq!(caller.scope, Scope::everything());
            assert!(caller.scope.may_run("any.thing") && caller.may_read(Some("other")));
            assert!(caller.may_cancel(Some("other")) && caller.scope.is_admin());
        }
    }

    #[test]
    fn scope_words_give_only_what_they_name() {
        let t = tokens(
            "team-a:aaaaaaaaaaaaaaaaaaaa run=hello.*,svc.echo\n\
             viewer:bbbbbbbbbbbbbbbbbbbb read=all\n\
             ops:cccccccccccccccccccc run=* read=own admin\n\
             dddddddddddddddddddd run=svc.*\n",
            None,
        )
        .expect("valid");
        let a = t.check(Some("Bearer aaaaaaaaaaaaaaaaaaaa")).expect("known");
        assert!(a.scope.may_run("hello.greet") && a.scope.may_run("svc.echo"));
        assert!(!a.scope.may_run("svc.sleep") && !a.scope.may_run("hellox.greet"));
        assert!(a.may_read(Some("team-a")) && !a.may_read(Some("ops")) && !a.may_read(None));
        assert!(a.may_cancel(Some("team-a")) && !a.may_cancel(Some("ops")));
        assert!(!a.scope.is_admin());
        assert_eq!(a.scope.run_text(), "run=hello.*,svc.echo");
        let viewer = t.check(Some("Bearer bbbbbbbbbbbbbbbbbbbb")).expect("known");
        assert!(!viewer.scope.may_run("hello.greet"));
        assert!(viewer.may_read(Some("team-a")) && !viewer.may_cancel(Some("team-a")));
        assert_eq!(viewer.scope.run_text(), "run=");
        let ops = t.check(Some("Bearer cccccccccccccccccccc")).expect("known");
        assert!(ops.scope.may_run("x.y") && !ops.may_read(Some("team-a")));
        assert!(ops.may_cancel(Some("team-a")) && ops.scope.is_admin());
        let bare = t.check(Some("Bearer dddddddddddddddddddd")).expect("known");
        assert_eq!(bare.name.as_deref(), Some("line-4"));
        assert!(bare.scope.may_run("svc.sleep") && !bare.scope.may_run("hello.greet"));
    }

    #[test]
    fn bad_scope_words_are_refused_naming_the_line() {
        for (text, expected) in [
            ("ci:0123456789abcdef0123 run=\n", "is not a glob"),
            ("ci:0123456789abcdef0123 run=[\n", "is not a glob"),
            (
                "ci:0123456789abcdef0123 read=some\n",
                "expected read=own or read=all",
            ),
            ("ci:0123456789abcdef0123 root\n", "`root` is not a scope"),
            ("ci:0123456789abcdef0123 run=a.* run=b.*\n", "given twice"),
        ] {
            let err = tokens(text, None).expect_err(text).to_string();
            assert!(
                err.contains("line 1") && err.contains(expected),
                "{text}: {err}"
            );
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line_never_the_token() {
        for (text, line) in [
            ("ci:short\n", 1),
            ("# x\nci:0123456789abcdef0123\nci:0123456789abcdef0124\n", 3),
            ("a:0123456789abcdef0123\nb:0123456789abcdef0123\n", 2),
            ("bad name:0123456789abcdef0123\n", 1),
        ] {
            let err = tokens(text, None).expect_err(text).to_string();
            assert!(err.contains(&format!("line {line}")), "{text}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, b"a:0123456789abcdef0123\nb:\xff0123456789abcdef\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = Tokens::load(Some(&file), None)
            .expect_err("not UTF-8")
            .to_string();
        assert!(err.contains("line 2: not UTF-8"), "{err}");
        let err = tokens("", Some("short")).expect_err("short").to_string();
        assert!(
            err.contains("PACKBOX_SERVE_TOKEN") && !err.contains("short:"),
            "{err}"
        );
    }

    #[test]
    fn no_file_and_no_environment_means_no_token() {
        let t = Tokens::load(None, None).expect("empty");
        assert!(t.is_empty());
        assert!(matches!(
            t.check(Some("Bearer anything-at-all-1234")),
            Err(Denied::Wrong)
        ));
    }

    #[test]
    fn debug_shows_names_only() {
        let t = tokens("ci:0123456789abcdef0123\n", None).expect("valid");
        let shown = format!("{t:?}");
        assert!(
            shown.contains("ci") && !shown.contains("0123456789"),
            "{shown}"
        );
    }
}
