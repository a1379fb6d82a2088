//! Constraint syntax and the selection rule, case by case.

use super::*;
use proptest::prelude::*;

fn v(text: &str) -> Version {
    parse_version(text).expect("valid version")
}

fn c(text: &str) -> Constraint {
    Constraint::parse(text).expect("valid constraint")
}

fn declared(text: &str) -> Candidate<'_> {
    Candidate {
        declared: text,
        detected: None,
    }
}

fn probed<'a>(declared: &'a str, detected: &'a str) -> Candidate<'a> {
    Candidate {
        declared,
        detected: Some(detected),
    }
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

/// The table: Python declared `3.11`, detected 3.11.2.
#[test]
fn a_declared_line_satisfies_constraints_at_its_precision() {
    for constraint in [
        "<=3.11",
        "=3.11",
        "==3.11",
        "3.11",
        "3.11.x",
        "3.11.*",
        "~3.11",
        ">3.9",
        "<3.12",
        "v3.11",
        "^3.11",
        ">=3.9 <3.12",
        ">=3.9, <3.12",
        "3.x",
        "*",
        "!=3.13",
        "3.9 || 3.11",
        ">= 3.11",
    ] {
        let constraint = c(constraint);
        assert_eq!(
            constraint.verdict(declared("3.11")),
            Verdict::Yes,
            "{constraint} on declared 3.11"
        );
        assert_eq!(
            constraint.verdict(probed("3.11", "3.11.2")),
            Verdict::Yes,
            "{constraint} on detected 3.11.2"
        );
    }
    for constraint in [
        "<3.11",
        ">3.11",
        "=3.12",
        "3.9",
        "!=3.11",
        "~3.13 || <3.10",
        "4.x",
    ] {
        let constraint = c(constraint);
        assert_eq!(
            constraint.verdict(declared("3.11")),
            Verdict::No,
            "{constraint}"
        );
        assert_eq!(
            constraint.verdict(probed("3.11", "3.11.2")),
            Verdict::No,
            "{constraint}"
        );
    }
}

#[test]
fn more_precision_than_declared_is_decided_by_the_detected_version() {
    for (constraint, on_line, on_detected) in [
        (">=3.11.1", Verdict::Maybe, Verdict::Yes),
        (">=3.11.4", Verdict::Maybe, Verdict::No),
        ("=3.11.2", Verdict::Maybe, Verdict::Yes),
        ("<3.11.0", Verdict::No, Verdict::No),
        ("<3.11.4", Verdict::Maybe, Verdict::Yes),
        (">3.11.0", Verdict::Maybe, Verdict::Yes),
        (">=3.12.1", Verdict::No, Verdict::No),
        ("!=3.11.2", Verdict::Maybe, Verdict::No),
        ("!=3.9.1", Verdict::Yes, Verdict::Yes),
        ("~3.11.4 || <3.10", Verdict::Maybe, Verdict::No),
        (">=3.11.1, <3.12", Verdict::Maybe, Verdict::Yes),
        (">=3.11.1, <3.11", Verdict::No, Verdict::No),
    ] {
        let constraint = c(constraint);
        assert_eq!(
            constraint.verdict(declared("3.11")),
            on_line,
            "{constraint}"
        );
        assert_eq!(
            constraint.verdict(probed("3.11", "3.11.2")),
            on_detected,
            "{constraint}"
        );
    }
}

#[test]
fn every_operator_means_what_it_says_on_full_versions() {
    let cases = [
        ("=3.12", "3.12.0", true),
        ("=3.12", "3.12.1", true),
        ("=3.12.0", "3.12.1", false),
        (">=3.12", "3.12.0", true),
        (">=3.12", "3.11.9", false),
        ("<=3.12", "3.12.9", true),
        ("<=3.12", "3.13.0", false),
        (">3.12", "3.12.9", false),
        (">3.12", "3.13.0", true),
        ("<3.10", "3.9.2", true),
        ("<3.10", "3.10.0", false),
        ("~3.13", "3.13.5", true),
        ("~3.13", "3.14.0", false),
        ("^3.9", "3.13.0", true),
        ("^3.9", "4.0.0", false),
        ("^3.9", "3.8.0", false),
        ("!=3.13", "3.13.5", false),
        ("!=3.13", "3.11.2", true),
        ("3.12", "3.12.9", true),
        ("3.12", "3.13.0", false),
        ("3", "3.1.0", true),
        ("3", "4.0.0", false),
        ("3.x", "3.13.5", true),
        ("3.x", "4.0.0", false),
        ("*", "0.1.0", true),
        (">=3.9 <3.12", "3.12.0", false),
        ("3.9 || 3.13", "3.11.2", false),
        ("3.9 || 3.13", "3.13.5", true),
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
fn invalid_constraints_say_why() {
    for (text, reason) in [
        ("", "empty"),
        ("  ", "empty"),
        (">=3.9,", "between commas is empty"),
        ("3.9 ||", "next to `||` is empty"),
        ("=>3.9", "unknown operator"),
        ("~>3.9", "unknown operator"),
        (">=three", "expected a version"),
        ("3.9.1.2", "more than three parts"),
        ("3.x.1", "after a wildcard"),
        (">=*", "lone wildcard"),
        (">=", "no version after it"),
        ("3.11-rc1", "needs all three parts"),
        ("3.11.0+build", "build metadata"),
        ("99999999999999999999999", "too large"),
    ] {
        let err = Constraint::parse(text).expect_err(text);
        assert!(err.to_string().contains(reason), "{text:?}: {err}");
    }
}

#[test]
fn selection_takes_the_highest_match() {
    let available = [declared("3.9"), declared("3.13"), declared("3.11")];
    let pick = |constraint: &str| {
        select(&available, Some(&c(constraint)), None).map(|s| available[s.index].declared)
    };
    assert_eq!(pick("<3.10"), Some("3.9"));
    assert_eq!(pick(">=3.9"), Some("3.13"));
    assert_eq!(pick("<=3.11"), Some("3.11"));
    assert_eq!(pick("=3.11"), Some("3.11"));
    assert_eq!(pick("!=3.13"), Some("3.11"));
    assert_eq!(pick("3.9 || 3.13"), Some("3.13"));
    assert_eq!(pick(">=3.14"), None);
}

#[test]
fn a_maybe_is_chosen_as_such_and_detected_versions_settle_it() {
    let lines = [declared("3.9"), declared("3.11")];
    let constraint = c(">=3.11.4 || <3.10");
    assert_eq!(
        select(&lines, Some(&constraint), None),
        Some(Selection {
            index: 1,
            verdict: Verdict::Maybe
        })
    );
    let probed_lines = [probed("3.9", "3.9.2"), probed("3.11", "3.11.2")];
    assert_eq!(
        select(&probed_lines, Some(&constraint), None),
        Some(Selection {
            index: 0,
            verdict: Verdict::Yes
        })
    );
}

#[test]
fn without_a_constraint_the_default_wins_else_the_highest() {
    let available = [declared("3.9"), declared("3.11"), declared("3.13")];
    let pick = |default| select(&available, None, default).map(|s| s.index);
    assert_eq!(pick(Some("3.11")), Some(1));
    assert_eq!(pick(Some("3.12")), Some(2));
    assert_eq!(pick(None), Some(2));
    assert_eq!(select(&[], None, Some("3.11")), None);
}

#[test]
fn unreadable_candidates_are_never_chosen() {
    let available = [declared("latest"), declared("3.9")];
    assert_eq!(select(&available, None, None).map(|s| s.index), Some(1));
    assert_eq!(
        select(&available, None, Some("latest")).map(|s| s.index),
        Some(1)
    );
    let garbled = [probed("3.11", "garbage")];
    assert_eq!(select(&garbled, Some(&c("*")), None), None);
}

#[test]
fn pre_releases_match_only_when_named() {
    assert!(!c(">=3.13").matches(&v("3.14.0-rc.1")));
    assert!(c(">=3.14.0-rc.1").matches(&v("3.14.0-rc.2")));
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

fn full_version() -> impl Strategy<Value = Version> {
    (0u64..6, 0u64..15, 0u64..4).prop_map(|(a, b, c)| Version::new(a, b, c))
}

/// A comparator both packbox and the `semver` crate read, as (packbox text, semver text).
/// A bare version is `~` for packbox and `^` for semver, so it is written out for semver.
fn comparator_text() -> impl Strategy<Value = (String, String)> {
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
    let wildcard = prop_oneof![Just(""), Just(".x"), Just(".*")];
    (op, version_text(), wildcard).prop_map(|(op, version, wildcard)| {
        let version = match (op, version.matches('.').count()) {
            // Only trailing parts may be wildcards, and only where a part is missing.
            ("" | "=", parts) if parts < 2 => format!("{version}{wildcard}"),
            _ => version,
        };
        let semver_op = match (op, version.contains(['x', '*'])) {
            ("", false) => "~",
            ("", true) => "",
            (op, _) => op,
        };
        (format!("{op}{version}"), format!("{semver_op}{version}"))
    })
}

proptest! {
    /// On full versions the selector's matching is the `semver` crate's, for every form both
    /// read; `!=` is "not `=`" and `||` is "either".
    #[test]
    fn on_full_versions_matching_agrees_with_semver(
        left in proptest::collection::vec(comparator_text(), 1..4),
        right in proptest::collection::vec(comparator_text(), 1..3),
        excluded in version_text(),
        separator in prop_oneof![Just(", "), Just(" "), Just(",")],
        version in full_version(),
    ) {
        let ours = |parts: &[(String, String)]| {
            parts.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(separator)
        };
        let theirs = |parts: &[(String, String)]| {
            let text = parts.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join(", ");
            VersionReq::parse(&text).expect("semver reads it")
        };
        let (left_req, right_req) = (theirs(&left), theirs(&right));
        prop_assert_eq!(c(&ours(&left)).matches(&version), left_req.matches(&version));
        let either = c(&format!("{} || {}", ours(&left), ours(&right)));
        prop_assert_eq!(
            either.matches(&version),
            left_req.matches(&version) || right_req.matches(&version)
        );
        let not = c(&format!("{} != {excluded}", ours(&left)));
        let exact = VersionReq::parse(&format!("={excluded}")).expect("semver reads it");
        prop_assert_eq!(
            not.matches(&version),
            left_req.matches(&version) && !exact.matches(&version)
        );
    }

    /// A constraint's verdict on a declared line never contradicts the version its image holds.
    #[test]
    fn a_declared_verdict_never_contradicts_the_detected_one(
        parts in proptest::collection::vec(comparator_text(), 1..3),
        (major, minor, patch) in (0u64..6, 0u64..15, 0u64..4),
        precision in 1usize..=3,
    ) {
        let text = parts.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(" ");
        let constraint = c(&text);
        let full = format!("{major}.{minor}.{patch}");
        let line = [major, minor, patch][..precision]
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        let on_line = constraint.verdict(declared(&line));
        let on_full = constraint.verdict(probed(&line, &full));
        prop_assert!(on_line == Verdict::Maybe || on_line == on_full, "{} on {} vs {}", text, line, full);
    }

    #[test]
    fn selection_returns_only_the_highest_matching_candidate(
        available in proptest::collection::vec(version_text(), 0..8),
        parts in proptest::collection::vec(comparator_text(), 1..3),
    ) {
        let text = parts.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(",");
        let constraint = c(&text);
        let candidates: Vec<Candidate> = available.iter().map(|a| probed(a, a)).collect();
        let matching: Vec<Version> = available
            .iter()
            .map(|a| v(a))
            .filter(|version| constraint.matches(version))
            .collect();
        match select(&candidates, Some(&constraint), None) {
            Some(chosen) => {
                let chosen = v(&available[chosen.index]);
                prop_assert!(constraint.matches(&chosen));
                prop_assert!(matching.iter().all(|m| *m <= chosen));
            }
            None => prop_assert!(matching.is_empty()),
        }
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,40}") {
        let _ = Constraint::parse(&text);
        let _ = parse_version(&text);
    }
}
