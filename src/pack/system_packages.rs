//! `meta.system_packages`: the Debian packages a pack says its actions need. The pack controls
//! only the names, so each one is checked strictly as a Debian package name before anything else
//! happens: it can never carry an apt option, a shell word or a path.

use serde_json::Value as Json;

/// At most this many packages may be declared.
pub const MAX_SYSTEM_PACKAGES: usize = 64;
/// At most this many bytes in one package name.
pub const MAX_PACKAGE_NAME_BYTES: usize = 100;
/// How much of a refused value an error quotes.
const QUOTED_BYTES: usize = 80;

/// The package names declared in `declared` (the value of `meta.system_packages`), sorted and
/// without repeats, or what is wrong with them (the message names the offending value).
pub fn parse(declared: &Json) -> Result<Vec<String>, String> {
    let items = match declared {
        Json::Null => return Ok(Vec::new()),
        Json::Array(items) => items,
        other => {
            return Err(format!(
                "expected a list of Debian package names like `jq`, found {}",
                kind(other)
            ));
        }
    };
    if items.len() > MAX_SYSTEM_PACKAGES {
        return Err(format!(
            "{} packages declared; at most {MAX_SYSTEM_PACKAGES} are allowed",
            items.len()
        ));
    }
    let mut names = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Json::String(name) = item else {
            return Err(format!(
                "item {}: expected a Debian package name like `jq`, found {}",
                index + 1,
                kind(item)
            ));
        };
        if !is_debian_package_name(name) {
            return Err(format!(
                "item {}: `{}` is not a Debian package name (lowercase letters, digits, `+`, `-` and `.`, starting with a letter or digit, 2 to {MAX_PACKAGE_NAME_BYTES} characters)",
                index + 1,
                quoted(name)
            ));
        }
        names.push(name.clone());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Debian policy 5.6.1: at least two characters from `[a-z0-9+.-]`, the first alphanumeric.
/// Nothing else (no `:arch`, no `=version`, no `/suite`): the name alone.
pub fn is_debian_package_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=MAX_PACKAGE_NAME_BYTES).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(b))
}

/// A refused value as an error may show it: control characters escaped, cut short.
fn quoted(value: &str) -> String {
    let escaped: String = value.escape_debug().collect();
    match escaped.char_indices().nth(QUOTED_BYTES) {
        Some((cut, _)) => format!("{}...", &escaped[..cut]),
        None => escaped,
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debian_names_are_accepted_sorted_and_once() {
        assert_eq!(
            parse(&json!([
                "jq",
                "libxml2-dev",
                "g++",
                "python3.11",
                "jq",
                "0ad"
            ]))
            .unwrap(),
            ["0ad", "g++", "jq", "libxml2-dev", "python3.11"]
        );
        assert_eq!(parse(&Json::Null).unwrap(), Vec::<String>::new());
        assert_eq!(parse(&json!([])).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn anything_but_a_bare_debian_name_is_refused_naming_the_value() {
        for hostile in [
            "jq; rm -rf /",
            "-oAPT::Get::AllowUnauthenticated=true",
            "--allow-unauthenticated",
            "JQ",
            "Jq",
            "jq ",
            " jq",
            "jq\nrm",
            "j",
            "",
            "jq=1.6",
            "jq:amd64",
            "jq/bookworm",
            "../jq",
            "./jq.deb",
            "$(id)",
            "`id`",
            "jq*",
            "+jq",
            ".jq",
            "jq_1",
        ] {
            let err = parse(&json!(["curl", hostile])).expect_err(hostile);
            assert!(err.starts_with("item 2: `"), "{hostile}: {err}");
            assert!(err.contains("is not a Debian package name"), "{err}");
            let shown: String = hostile.escape_debug().collect();
            assert!(err.contains(&format!("`{shown}`")), "{hostile}: {err}");
        }
    }

    #[test]
    fn the_list_and_each_name_are_bounded() {
        let long = "a".repeat(MAX_PACKAGE_NAME_BYTES + 1);
        let err = parse(&json!([long])).unwrap_err();
        assert!(err.contains("..."), "a long value is cut: {err}");
        assert!(err.len() < 400, "{err}");
        assert!(parse(&json!(["a".repeat(MAX_PACKAGE_NAME_BYTES)])).is_ok());
        let many: Vec<String> = (0..=MAX_SYSTEM_PACKAGES).map(|i| format!("p{i}")).collect();
        assert!(
            parse(&json!(many))
                .unwrap_err()
                .contains("at most 64 are allowed")
        );
        assert!(parse(&json!(many[..MAX_SYSTEM_PACKAGES])).is_ok());
    }

    #[test]
    fn other_shapes_are_refused() {
        assert!(parse(&json!("jq")).unwrap_err().contains("found a string"));
        assert!(
            parse(&json!({"jq": 1}))
                .unwrap_err()
                .contains("found a mapping")
        );
        assert!(
            parse(&json!([1]))
                .unwrap_err()
                .contains("item 1: expected a Debian package name like `jq`, found a number")
        );
    }
}
