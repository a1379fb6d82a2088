//! Runtime version constraints (`>=3.9 <3.12`, `~3.13`, `3.11.x`, `3.9 || 3.13`) and the choice of
//! the version an action runs on.
//!
//! Kept apart from the catalog and from image probing so that one rule decides everywhere (`pack
//! validate`, `actions list`, `build`, `run` and the library): the highest version that matches
//! wins, and nothing matching is an error, never a fallback to another interpreter.
//!
//! Syntax: alternatives separated by `||`; within one, comparators separated by commas or
//! whitespace must all hold. A comparator is an operator (`=`, `==`, `!=`, `<`, `<=`, `>`, `>=`,
//! `~`, `^`) and a version, or a bare version, which means `~`. Versions have one to three parts
//! and an optional `v`; trailing parts may be wildcards (`x`, `X`, `*`), and `*` alone is any
//! version. A comparator means what the `semver` crate means by it, at the precision it is
//! written: `<=3.11` is `<3.12.0`, `>3.9` is `>=3.10.0`, `=3.11` and `3.11.x` are
//! `>=3.11.0, <3.12.0`.
//!
//! A catalog declares versions at its own precision (`3.11`: the 3.11 line) and probing finds the
//! full version an image holds (`3.11.2`). A comparator no more precise than the declaration
//! gets the same answer from both; a more precise one (`>=3.11.4` against `3.11`) can only be
//! decided by the full version, so without it the answer is [`Verdict::Maybe`].

use std::fmt;

use semver::{Comparator, Op, Prerelease, Version, VersionReq};
use serde::Serialize;

/// A version or constraint that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not a version packbox can compare (a catalog's, a probe's or a pack's).
    #[error(
        "`{text}` is not a version (expected MAJOR[.MINOR[.PATCH]], optionally with a `v` prefix)"
    )]
    BadVersion {
        /// The text as given.
        text: String,
    },
    /// Not a constraint an action's `runtime_version` may state.
    #[error("`{text}` is not a version constraint: {reason}")]
    BadConstraint {
        /// The constraint as written.
        text: String,
        /// Which part of it is wrong.
        reason: String,
    },
}

/// Reads a version leniently: `v3.12` and `3.12` are `3.12.0`, `3` is `3.0.0`; a pre-release or
/// build suffix is kept.
pub fn parse_version(text: &str) -> Result<Version, VersionError> {
    parse_declared(text).map(|(version, _)| version)
}

/// A version and how many numeric parts it was written with (`3.11` is `3.11.0` at 2 parts).
fn parse_declared(text: &str) -> Result<(Version, usize), VersionError> {
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
    let version = Version::parse(&padded).map_err(|_| bad())?;
    Ok((version, parts.len()))
}

/// Whether a version satisfies a constraint, as far as can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The version satisfies the constraint.
    Yes,
    /// The version does not satisfy the constraint.
    No,
    /// Only the full version the image holds can tell (the constraint is more precise than the
    /// catalog's declaration).
    Maybe,
}

impl From<bool> for Verdict {
    fn from(matches: bool) -> Verdict {
        if matches { Verdict::Yes } else { Verdict::No }
    }
}

impl Verdict {
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::No, _) | (_, Verdict::No) => Verdict::No,
            (Verdict::Maybe, _) | (_, Verdict::Maybe) => Verdict::Maybe,
            _ => Verdict::Yes,
        }
    }

    fn or(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Yes, _) | (_, Verdict::Yes) => Verdict::Yes,
            (Verdict::Maybe, _) | (_, Verdict::Maybe) => Verdict::Maybe,
            _ => Verdict::No,
        }
    }
}

/// One comparator: `>=3.9`, `!=3.13`, `3.11.x`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    comparator: Comparator,
    /// `!=`: the version must not match `comparator` (an exact one).
    negated: bool,
    /// The number of numeric parts written (`3.11.x` has 2).
    precision: usize,
}

impl Term {
    /// The answer for a version declared at `precision` parts (its missing parts unknown).
    fn verdict(&self, version: &Version, precision: usize) -> Verdict {
        if self.precision <= precision {
            return Verdict::from(self.comparator.matches(version) != self.negated);
        }
        // Whether some version of the declared line can satisfy the comparator.
        let possible = self.coarsened(precision).matches(version);
        match (self.negated, possible) {
            (false, false) => Verdict::No,
            // The excluded version is not on this line.
            (true, false) => Verdict::Yes,
            (_, true) => Verdict::Maybe,
        }
    }

    /// The comparator cut to `precision` parts, satisfied by a line of that precision exactly
    /// when some version of the line satisfies the full comparator.
    fn coarsened(&self, precision: usize) -> Comparator {
        let c = &self.comparator;
        let dropped_are_zero = [c.minor, c.patch]
            .iter()
            .skip(precision.saturating_sub(1))
            .all(|part| part.unwrap_or(0) == 0);
        let op = match c.op {
            // A later version of the line is above it.
            Op::Greater => Op::GreaterEq,
            // `<3.11.0`: no 3.11 release is below it; `<3.11.4`: 3.11.0 is.
            Op::Less if !dropped_are_zero => Op::LessEq,
            op => op,
        };
        Comparator {
            op,
            major: c.major,
            minor: c.minor.filter(|_| precision >= 2),
            patch: None,
            pre: Prerelease::EMPTY,
        }
    }
}

/// Comparators that must all hold.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Alternative {
    terms: Vec<Term>,
}

impl Alternative {
    /// On a full version: exactly the `semver` crate's answer (with `!=` as "not `=`").
    fn matches(&self, version: &Version) -> bool {
        let required = VersionReq {
            comparators: self
                .terms
                .iter()
                .filter(|t| !t.negated)
                .map(|t| t.comparator.clone())
                .collect(),
        };
        required.matches(version)
            && self
                .terms
                .iter()
                .filter(|t| t.negated)
                .all(|t| !t.comparator.matches(version))
    }

    fn verdict(&self, version: &Version, precision: usize) -> Verdict {
        if self.terms.iter().all(|t| t.precision <= precision) {
            return Verdict::from(self.matches(version));
        }
        self.terms.iter().fold(Verdict::Yes, |verdict, t| {
            verdict.and(t.verdict(version, precision))
        })
    }
}

/// An action's `runtime_version`: one of its alternatives must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    text: String,
    alternatives: Vec<Alternative>,
}

/// The operators, longest first so that `>=` is not read as `>`.
const OPERATORS: &[&str] = &["==", "!=", ">=", "<=", "=", ">", "<", "~", "^"];

impl Constraint {
    /// Parses a constraint; an empty one (or empty part), an unknown operator or a version that
    /// cannot be read is an error saying which.
    pub fn parse(text: &str) -> Result<Constraint, VersionError> {
        let bad = |reason: String| VersionError::BadConstraint {
            text: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            if alternative.trim().is_empty() {
                return Err(bad("an alternative next to `||` is empty".into()));
            }
            alternatives.push(parse_alternative(alternative).map_err(bad)?);
        }
        Ok(Constraint {
            text: text.trim().to_string(),
            alternatives,
        })
    }

    /// Whether a full version (`3.11.2`) satisfies the constraint.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|a| a.matches(version))
    }

    /// Whether a candidate satisfies the constraint: decided by its detected full version when
    /// there is one, else at the precision of its declared version. A candidate whose versions
    /// cannot be read never matches.
    pub fn verdict(&self, candidate: Candidate<'_>) -> Verdict {
        if let Some(detected) = candidate.detected {
            return match parse_version(detected) {
                Ok(version) => Verdict::from(self.matches(&version)),
                Err(_) => Verdict::No,
            };
        }
        match parse_declared(candidate.declared) {
            Ok((version, precision)) => self.alternatives.iter().fold(Verdict::No, |verdict, a| {
                verdict.or(a.verdict(&version, precision))
            }),
            Err(_) => Verdict::No,
        }
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

/// The comparators of one alternative, separated by commas or whitespace. An operator may stand
/// apart from its version (`>= 3.9`).
fn parse_alternative(text: &str) -> Result<Alternative, String> {
    let mut terms = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err("a part between commas is empty".into());
        }
        let mut words = part.split_whitespace();
        while let Some(word) = words.next() {
            let (operator, rest) = split_operator(word);
            let version = match (operator, rest) {
                (Some(operator), "") => words
                    .next()
                    .ok_or_else(|| format!("`{operator}` has no version after it"))?,
                (_, rest) => rest,
            };
            if let Some(term) = parse_term(operator, version)? {
                terms.push(term);
            }
        }
    }
    Ok(Alternative { terms })
}

fn split_operator(word: &str) -> (Option<&'static str>, &str) {
    for operator in OPERATORS {
        if let Some(rest) = word.strip_prefix(operator) {
            return (Some(operator), rest);
        }
    }
    (None, word)
}

/// One comparator; `None` for a wildcard that allows any version (`*`, `=x`).
fn parse_term(operator: Option<&str>, version: &str) -> Result<Option<Term>, String> {
    let written = format!("{}{version}", operator.unwrap_or(""));
    if version.starts_with(['=', '!', '<', '>', '~', '^']) {
        return Err(format!(
            "`{written}` has an unknown operator (expected one of = == != < <= > >= ~ ^)"
        ));
    }
    let pattern = parse_pattern(version).map_err(|reason| format!("`{written}`: {reason}"))?;
    let Some(major) = pattern.parts[0] else {
        return match operator {
            None | Some("=") | Some("==") => Ok(None),
            Some(_) => Err(format!(
                "`{written}`: a lone wildcard takes no operator (write `*` for any version)"
            )),
        };
    };
    let has_wildcard = pattern.parts.len() > pattern.precision;
    let (op, negated) = match operator {
        None if has_wildcard => (Op::Exact, false),
        None | Some("~") => (Op::Tilde, false),
        Some("=") | Some("==") => (Op::Exact, false),
        Some("!=") => (Op::Exact, true),
        Some(">") => (Op::Greater, false),
        Some(">=") => (Op::GreaterEq, false),
        Some("<") => (Op::Less, false),
        Some("<=") => (Op::LessEq, false),
        Some(_) => (Op::Caret, false),
    };
    let part = |index: usize| pattern.parts.get(index).copied().flatten();
    Ok(Some(Term {
        comparator: Comparator {
            op,
            major,
            minor: part(1),
            patch: part(2),
            pre: pattern.pre,
        },
        negated,
        precision: pattern.precision,
    }))
}

/// A version as a constraint writes it: parts that may be wildcards (`None`) after the numbers.
struct Pattern {
    parts: Vec<Option<u64>>,
    /// How many leading parts are numbers.
    precision: usize,
    pre: Prerelease,
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    let expected = "expected a version of one to three parts like 3, 3.11 or 3.11.2, optionally with a `v` prefix and wildcards (3.x, 3.11.*)";
    let unprefixed = text.strip_prefix(['v', 'V']).unwrap_or(text);
    if unprefixed.contains('+') {
        return Err("build metadata (`+...`) has no place in a constraint".into());
    }
    let (core, pre) = match unprefixed.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (unprefixed, None),
    };
    let words: Vec<&str> = core.split('.').collect();
    if words.len() > 3 {
        return Err(format!("more than three parts; {expected}"));
    }
    let mut parts = Vec::new();
    for word in &words {
        let part = match *word {
            "x" | "X" | "*" => None,
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => Some(
                digits
                    .parse::<u64>()
                    .map_err(|_| format!("`{digits}` is too large"))?,
            ),
            _ => return Err(expected.into()),
        };
        if part.is_some() && parts.last().is_some_and(Option::is_none) {
            return Err("a number after a wildcard (only trailing parts may be wildcards)".into());
        }
        parts.push(part);
    }
    let precision = parts.iter().take_while(|p| p.is_some()).count();
    let pre = match pre {
        None => Prerelease::EMPTY,
        Some(_) if precision < 3 => {
            return Err("a pre-release needs all three parts (3.14.0-rc.1)".into());
        }
        Some(pre) => {
            Prerelease::new(pre).map_err(|_| format!("`{pre}` is not a pre-release tag"))?
        }
    };
    Ok(Pattern {
        parts,
        precision,
        pre,
    })
}

/// A version a runtime offers: as the catalog declares it (`3.11`) and, once its image has been
/// probed, as the image holds it (`3.11.2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The version as the catalog declares it.
    pub declared: &'a str,
    /// The full version probing found in the image; `None` before a probe.
    pub detected: Option<&'a str>,
}

impl Candidate<'_> {
    /// The version that orders candidates: the detected one when known.
    fn version(&self) -> Option<Version> {
        parse_version(self.detected.unwrap_or(self.declared)).ok()
    }
}

/// The candidate chosen by [`select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Its index among the candidates.
    pub index: usize,
    /// `Yes`, or `Maybe` when only the image's full version can confirm it.
    pub verdict: Verdict,
}

/// Chooses the version to run: with a constraint, the highest candidate that matches (or may,
/// when only its declared version is known); without, the one declared as `default` if offered,
/// else the highest. `None` when nothing fits: the caller says so, since falling back to another
/// version would run the wrong interpreter. Candidates that cannot be read are never chosen.
pub fn select(
    candidates: &[Candidate<'_>],
    constraint: Option<&Constraint>,
    default: Option<&str>,
) -> Option<Selection> {
    let readable = candidates
        .iter()
        .enumerate()
        .filter_map(|(index, candidate)| Some((index, candidate, candidate.version()?)));
    let Some(constraint) = constraint else {
        let mut highest: Option<(usize, Version)> = None;
        for (index, candidate, version) in readable {
            if Some(candidate.declared) == default {
                return Some(Selection {
                    index,
                    verdict: Verdict::Yes,
                });
            }
            if highest.as_ref().is_none_or(|(_, h)| version > *h) {
                highest = Some((index, version));
            }
        }
        return highest.map(|(index, _)| Selection {
            index,
            verdict: Verdict::Yes,
        });
    };
    readable
        .filter_map(
            |(index, candidate, version)| match constraint.verdict(*candidate) {
                Verdict::No => None,
                verdict => Some((version, verdict == Verdict::Yes, index, verdict)),
            },
        )
        .max_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)))
        .map(|(_, _, index, verdict)| Selection { index, verdict })
}

#[cfg(test)]
mod tests;
