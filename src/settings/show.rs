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

/// A URL with any `user:password@` removed, for display.
pub(super) fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
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
