//! What `packbox config show` prints: each setting, its value and where it came from, with
//! credentials never shown.

use serde::Serialize;

use super::resolve::Resolver;

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The config file.
    File,
    /// An environment variable.
    Env,
    /// packbox's built-in default: nothing else set it.
    Default,
}

/// One setting as `packbox config show` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct ShownSetting {
    /// The setting's key (`sandbox.memory`, `serve.listen`).
    pub key: &'static str,
    /// The value in effect; credentials in URLs and tokens are never shown.
    pub value: serde_json::Value,
    /// Where the value came from.
    pub source: Source,
}

/// A URL with what may be a credential masked, for display: the user information (everything
/// before the last `@` of the authority, also when a password holds a `/`), every query value
/// (`?access_token=...`) and the fragment.
pub(super) fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_query, query) = match rest.find(['?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    // The user information ends at the last `@` that does not start a path segment (an npm
    // scope such as `/@org` is not a credential); a password may hold a `/`.
    let userinfo_end = before_query
        .char_indices()
        .rev()
        .find(|(at, c)| *c == '@' && !before_query[..*at].ends_with('/'))
        .map(|(at, _)| at);
    let mut shown = format!("{scheme}://");
    match userinfo_end {
        Some(at) => {
            shown.push_str("***");
            shown.push_str(&before_query[at..]);
        }
        None => shown.push_str(before_query),
    }
    shown.push_str(&masked_query(query));
    shown
}

/// `?a=1&b=2#frag` as `?a=***&b=***#***`: names stay, values and the fragment go.
fn masked_query(query: &str) -> String {
    let (query, fragment) = match query.split_once('#') {
        Some((query, _)) => (query, Some("#***")),
        None => (query, None),
    };
    let mut shown = String::new();
    if let Some(pairs) = query.strip_prefix('?') {
        let masked: Vec<String> = pairs
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=***"),
                None => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&masked.join("&"));
    }
    shown.push_str(fragment.unwrap_or(""));
    shown
}

impl Resolver<'_> {
    pub(super) fn show(&mut self, key: &'static str, value: impl Serialize, source: Source) {
        self.shown.push(ShownSetting {
            key,
            value: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            source,
        });
    }
}
