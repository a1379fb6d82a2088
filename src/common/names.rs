//! The names an engine accepts for what packbox names after an operator's setting (a network to
//! join, a label prefix, an engine's name): one rule, so every setting refuses the same names.

/// Whether `name` is one the engine takes: a letter or digit, then letters, digits, `_`, `.`
/// and `-`, at most 128 characters.
pub fn is_engine_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_start_alphanumeric_and_hold_no_separator() {
        for good in ["a", "packbox-egress", "team_1.net", &"x".repeat(128)] {
            assert!(is_engine_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "a:b", "ä", &"x".repeat(129)] {
            assert!(!is_engine_name(bad), "{bad}");
        }
    }
}
