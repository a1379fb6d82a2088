//! Errors as one line of text, for reports that carry an error as a string (a probe's reason,
//! a build report) and for the command line.

/// An error and its causes on one line (`a: b: c`), skipping causes the message already quotes.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_message() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&error), "outer: inner");
    }

    #[test]
    fn a_cause_the_message_quotes_is_not_repeated() {
        let error = Quoting(std::io::Error::other("inner"));
        assert_eq!(chain(&error), "outer: inner");
    }
}
