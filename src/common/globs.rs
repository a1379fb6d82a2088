//! Operator rules keyed by a glob over `PACK.ACTION` (isolation levels, network grants): compiled
//! once, each bad glob named by its place in the list.

/// A rule whose glob does not parse: which one (0-based), as written, and why.
#[derive(Debug)]
pub struct BadGlob {
    /// Its place in the list.
    pub index: usize,
    /// The glob as written.
    pub pattern: String,
    /// What the glob parser said.
    pub message: String,
}

/// Compiles the glob of each rule (`pattern_of` says where it is), keeping the rule beside it.
pub fn compile<R>(
    rules: Vec<R>,
    pattern_of: impl Fn(&R) -> &str,
) -> Result<Vec<(glob::Pattern, R)>, BadGlob> {
    rules
        .into_iter()
        .enumerate()
        .map(
            |(index, rule)| match glob::Pattern::new(pattern_of(&rule)) {
                Ok(pattern) => Ok((pattern, rule)),
                Err(e) => Err(BadGlob {
                    index,
                    pattern: pattern_of(&rule).to_string(),
                    message: e.msg.to_string(),
                }),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_glob_is_named_by_its_place() {
        let compiled = compile(vec!["core.*", "x.[a"], |r| r).expect_err("bad");
        assert_eq!(compiled.index, 1);
        assert_eq!(compiled.pattern, "x.[a");
        let good = compile(vec!["core.*"], |r| r).expect("good");
        assert!(good[0].0.matches("core.http"));
    }
}
