//! Runtime version constraints (`>=3.9,<3.12`, `~3.13`, `3.12`) and the choice of the version an
//! action runs on.
//!
//! Kept apart from the catalog and from image probing so that the rule (the highest available
//! version that matches; never a silent fallback) lives in one place and works on any list of
//! available versions, whoever found them.
//!
//! Syntax, as in the seed system: parts separated by commas must all hold; each part is an
//! operator (`=`, `>=`, `<=`, `>`, `<`, `~`, `^`) and a version, or a bare version, which means
//! `~`. Versions may have a `v` prefix and one to three parts; missing parts are zeros, so `3.12`
//! is `~3.12.0`, that is `>=3.12.0, <3.13.0`.

use std::fmt;

use semver::{Comparator, Op, Version, VersionReq};

/// A version or constraint that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "`{text}` is not a version (expected MAJOR[.MINOR[.PATCH]], optionally with a `v` prefix)"
    )]
    BadVersion { text: String },
    #[error("`{text}` is not a version constraint: {reason}")]
    BadConstraint { text: String, reason: String },
}

/// Reads a version leniently: `v3.12` and `3.12` are `3.12.0`, `3` is `3.0.0`; a pre-release or
/// build suffix is kept.
pub fn parse_version(text: &str) -> Result<Version, VersionError> {
    let bad = || VersionError::BadVersion {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    let unprefixed = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
    let core_end = unprefixed.find(['-', '+']).unwrap_or(unprefixed.len());
    let (core, suffix) = unprefixed.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() > 3 || !parts.iter().all(numeric) {
        return Err(bad());
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    padded.push_str(suffix);
    Version::parse(&padded).map_err(|_| bad())
}

/// An action's `runtime_version`: every part must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    text: String,
    req: VersionReq,
}

impl Constraint {
    /// Parses a constraint; an empty one, an empty part or an unknown operator is an error.
    pub fn parse(text: &str) -> Result<Constraint, VersionError> {
        let bad = |reason: String| VersionError::BadConstraint {
            text: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut comparators = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad("a part between commas is empty".into()));
            }
            let (op, rest) = split_operator(part).ok_or_else(|| {
                bad(format!(
                    "`{part}` does not start with a version or one of = >= <= > < ~ ^"
                ))
            })?;
            let version = parse_version(rest).map_err(|e| bad(e.to_string()))?;
            comparators.push(Comparator {
                op,
                major: version.major,
                minor: Some(version.minor),
                patch: Some(version.patch),
                pre: version.pre,
            });
        }
        Ok(Constraint {
            text: text.trim().to_string(),
            req: VersionReq { comparators },
        })
    }

    /// Whether a version satisfies every part.
    pub fn matches(&self, version: &Version) -> bool {
        self.req.matches(version)
    }

    /// The constraint as the pack wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The operator of one part and the text after it; a bare version means `~`.
fn split_operator(part: &str) -> Option<(Op, &str)> {
    const OPERATORS: &[(&str, Op)] = &[
        (">=", Op::GreaterEq),
        ("<=", Op::LessEq),
        (">", Op::Greater),
        ("<", Op::Less),
        ("=", Op::Exact),
        ("~", Op::Tilde),
        ("^", Op::Caret),
    ];
    for (symbol, op) in OPERATORS {
        if let Some(rest) = part.strip_prefix(symbol) {
            return Some((*op, rest));
        }
    }
    part.starts_with(|c: char| c.is_ascii_digit() || c == 'v' || c == 'V')
        .then_some((Op::Tilde, part))
}

/// Chooses the version to run from the available ones: with a constraint, the highest that
/// matches; without, `default` if it is available, else the highest. `None` when nothing fits;
/// the caller says so, since falling back to another version would run the wrong interpreter.
/// Available versions that cannot be read are never chosen.
pub fn select<'a, T: AsRef<str>>(
    available: &'a [T],
    constraint: Option<&Constraint>,
    default: Option<&str>,
) -> Option<&'a T> {
    let parsed = available
        .iter()
        .filter_map(|candidate| Some((candidate, parse_version(candidate.as_ref()).ok()?)));
    match constraint {
        Some(constraint) => parsed
            .filter(|(_, version)| constraint.matches(version))
            .max_by(|a, b| a.1.cmp(&b.1))
            .map(|(candidate, _)| candidate),
        None => {
            let default = default.and_then(|d| parse_version(d).ok());
            let mut highest: Option<(&T, Version)> = None;
            for (candidate, version) in parsed {
                if Some(&version) == default.as_ref() {
                    return Some(candidate);
                }
                if highest.as_ref().is_none_or(|(_, h)| version > *h) {
                    highest = Some((candidate, version));
                }
            }
            highest.map(|(candidate, _)| candidate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(text: &str) -> Version {
        parse_version(text).expect("valid version")
    }

    fn c(text: &str) -> Constraint {
        Constraint::parse(text).expect("valid constraint")
    }

    #[test]
    fn versions_are_padded_and_may_have_a_v_prefix() {
        assert_eq!(v("3"), Version::new(3, 0, 0));
        assert_eq!(v("3.12"), Version::new(3, 12, 0));
        assert_eq!(v("v3.12.1"), Version::new(3, 12, 1));
        assert_eq!(v(" V20 "), Version::new(20, 0, 0));
        assert_eq!(v("3.13.0-rc.1").pre.as_str(), "rc.1");
        for bad in ["", "v", "3.", "3.x", "1.2.3.4", "abc", "-1", "3..1"] {
            assert!(parse_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_version_means_tilde() {
        let bare = c("3.12");
        assert!(bare.matches(&v("3.12.0")));
        assert!(bare.matches(&v("3.12.9")));
        assert!(!bare.matches(&v("3.13.0")));
        assert!(!bare.matches(&v("3.11.9")));
        assert!(c("v3.12").matches(&v("3.12.4")));
        // One part is padded too: `3` is `~3.0.0`.
        assert!(c("3").matches(&v("3.0.5")));
        assert!(!c("3").matches(&v("3.1.0")));
    }

    #[test]
    fn every_operator_means_what_it_says() {
        let cases = [
            ("=3.12", "3.12.0", true),
            ("=3.12", "3.12.1", false),
            (">=3.12", "3.12.0", true),
            (">=3.12", "3.11.9", false),
            ("<=3.12", "3.12.0", true),
            ("<=3.12", "3.12.1", false),
            (">3.12", "3.12.1", true),
            (">3.12", "3.12.0", false),
            ("<3.10", "3.9.2", true),
            ("<3.10", "3.10.0", false),
            ("~3.13", "3.13.5", true),
            ("~3.13", "3.14.0", false),
            ("^3.9", "3.13.0", true),
            ("^3.9", "4.0.0", false),
            ("^3.9", "3.8.0", false),
            (">= 3.9", "3.9.0", true),
        ];
        for (constraint, version, expected) in cases {
            assert_eq!(
                c(constraint).matches(&v(version)),
                expected,
                "{constraint} on {version}"
            );
        }
    }

    #[test]
    fn commas_mean_and() {
        let range = c(">=3.9, <3.12");
        assert!(range.matches(&v("3.9")));
        assert!(range.matches(&v("3.11")));
        assert!(!range.matches(&v("3.12")));
        assert!(!range.matches(&v("3.8")));
        assert_eq!(range.as_str(), ">=3.9, <3.12");
    }

    #[test]
    fn invalid_constraints_say_why() {
        for (text, reason) in [
            ("", "empty"),
            ("  ", "empty"),
            (">=3.9,", "empty"),
            ("!=3.9", "does not start with"),
            ("==3.9", "is not a version"),
            (">=three", "is not a version"),
            ("3.9.1.2", "is not a version"),
            ("*", "does not start with"),
        ] {
            let err = Constraint::parse(text).expect_err(text);
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn selection_takes_the_highest_match() {
        let available = ["3.9", "3.13", "3.11"];
        assert_eq!(select(&available, Some(&c("<3.10")), None), Some(&"3.9"));
        assert_eq!(select(&available, Some(&c(">=3.9")), None), Some(&"3.13"));
        assert_eq!(select(&available, Some(&c("~3.13")), None), Some(&"3.13"));
        assert_eq!(select(&available, Some(&c("3.11")), None), Some(&"3.11"));
        assert_eq!(select(&available, Some(&c(">=3.14")), None), None);
    }

    #[test]
    fn without_a_constraint_the_default_wins_else_the_highest() {
        let available = ["3.9", "3.11", "3.13"];
        assert_eq!(select(&available, None, Some("3.11")), Some(&"3.11"));
        assert_eq!(select(&available, None, Some("3.12")), Some(&"3.13"));
        assert_eq!(select(&available, None, None), Some(&"3.13"));
        let none: [&str; 0] = [];
        assert_eq!(select(&none, None, Some("3.11")), None);
    }

    #[test]
    fn unreadable_available_versions_are_never_chosen() {
        let available = ["latest", "3.9"];
        assert_eq!(select(&available, None, None), Some(&"3.9"));
        assert_eq!(select(&available, None, Some("latest")), Some(&"3.9"));
    }

    fn version_text() -> impl Strategy<Value = String> {
        (
            0u64..6,
            proptest::option::of(0u64..15),
            proptest::option::of(0u64..4),
        )
            .prop_map(|(major, minor, patch)| match (minor, patch) {
                (Some(minor), Some(patch)) => format!("{major}.{minor}.{patch}"),
                (Some(minor), None) => format!("{major}.{minor}"),
                _ => major.to_string(),
            })
    }

    fn constraint_text() -> impl Strategy<Value = String> {
        let op = prop_oneof![
            Just(""),
            Just("="),
            Just(">="),
            Just("<="),
            Just(">"),
            Just("<"),
            Just("~"),
            Just("^")
        ];
        proptest::collection::vec((op, version_text()), 1..3).prop_map(|parts| {
            parts
                .iter()
                .map(|(op, version)| format!("{op}{version}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    proptest! {
        #[test]
        fn selection_returns_only_the_highest_matching_available_version(
            available in proptest::collection::vec(version_text(), 0..8),
            constraint in constraint_text(),
        ) {
            let constraint = Constraint::parse(&constraint).expect("generated constraints are valid");
            let matching: Vec<Version> = available
                .iter()
                .map(|a| v(a))
                .filter(|version| constraint.matches(version))
                .collect();
            match select(&available, Some(&constraint), None) {
                Some(chosen) => {
                    prop_assert!(available.contains(chosen));
                    let chosen = v(chosen);
                    prop_assert!(constraint.matches(&chosen));
                    prop_assert!(matching.iter().all(|m| *m <= chosen));
                }
                None => prop_assert!(matching.is_empty()),
            }
        }

        #[test]
        fn without_a_constraint_selection_is_the_available_default_or_the_highest(
            available in proptest::collection::vec(version_text(), 0..8),
            default in version_text(),
        ) {
            let chosen = select(&available, None, Some(&default)).map(|c| v(c));
            let highest = available.iter().map(|a| v(a)).max();
            if available.iter().any(|a| v(a) == v(&default)) {
                prop_assert_eq!(chosen, Some(v(&default)));
            } else {
                prop_assert_eq!(chosen, highest);
            }
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = Constraint::parse(&text);
            let _ = parse_version(&text);
        }
    }
}
