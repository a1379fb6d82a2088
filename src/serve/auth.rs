//! Who may use the API: bearer tokens from the token file (one `NAME:TOKEN`, or a bare `TOKEN`,
//! per line) and from `PACKBOX_SERVE_TOKEN` (named `env`).
//!
//! Tokens are kept as SHA-256 digests and a presented token is compared, digest to digest, with
//! every known one in constant time (`subtle`), so neither the comparison's time nor its length
//! says how much of a guess was right. A token never reaches a log, an error or a record: records
//! hold its name.

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

/// A known token: its name and the digest of its value.
struct Known {
    name: String,
    digest: [u8; 32],
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
                let (name, token) = match line.split_once(':') {
                    Some((name, token)) => (name.trim().to_string(), token.trim()),
                    None => (anonymous_name(line), line),
                };
                check_name(&name).map_err(line_error)?;
                check_token(token).map_err(line_error)?;
                add(&mut known, name, token).map_err(line_error)?;
            }
        }
        if let Some(token) = env_token {
            let env_error = |message| TokenError::Env { message };
            check_token(&token.0).map_err(env_error)?;
            add(&mut known, "env".into(), &token.0).map_err(env_error)?;
        }
        Ok(Tokens { known })
    }

    /// Whether no token is known (the server then listens on loopback only).
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The name of the token an `Authorization` header carries.
    pub fn check(&self, authorization: Option<&str>) -> Result<&str, Denied> {
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
                matched = Some(known.name.as_str());
            }
        }
        matched.ok_or(Denied::Wrong)
    }
}

fn add(known: &mut Vec<Known>, name: String, token: &str) -> Result<(), String> {
    let digest = digest(token);
    if known.iter().any(|k| k.name == name) {
        return Err(format!("the name `{name}` is used twice"));
    }
    if known.iter().any(|k| bool::from(k.digest.ct_eq(&digest))) {
        return Err("this token is listed twice".into());
    }
    known.push(Known { name, digest });
    Ok(())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The name of a token listed without one: a short prefix of its digest, which tells tokens
/// apart in records without revealing them.
fn anonymous_name(token: &str) -> String {
    format!("sha256:{}", &hex::encode(digest(token))[..12])
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
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

    #[test]
    fn named_bare_and_environment_tokens_are_known_by_name() {
        let t = tokens(
            "# CI and ops\nci:0123456789abcdef0123\n\n fedcba9876543210fedc \n",
            Some("environment-token-1234"),
        )
        .expect("valid");
        assert_eq!(t.check(Some("Bearer 0123456789abcdef0123")), Ok("ci"));
        assert_eq!(t.check(Some("bearer  environment-token-1234")), Ok("env"));
        let anonymous = t.check(Some("Bearer fedcba9876543210fedc")).expect("known");
        assert!(anonymous.starts_with("sha256:") && !anonymous.contains("fedcba"));
        assert_eq!(
            t.check(Some("Bearer 0123456789abcdef012")),
            Err(Denied::Wrong)
        );
        assert_eq!(
            t.check(Some("Basic 0123456789abcdef0123")),
            Err(Denied::Missing)
        );
        assert_eq!(t.check(None), Err(Denied::Missing));
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
        assert_eq!(
            t.check(Some("Bearer anything-at-all-1234")),
            Err(Denied::Wrong)
        );
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
