//! The key store: credentials that live with packbox instead of with every caller, as Attune's
//! key store does. Keys sit at three scopes, `system`, `pack:<ref>` and `action:<pack.action>`;
//! a run receives, in its parameter document and nowhere else, the keys its action's scopes hold,
//! the more specific winning (system, then pack, then action), and the request's own secrets win
//! over all of them.
//!
//! Values are sealed at rest (`cipher.rs`: ChaCha20-Poly1305 under the operator's key-encryption
//! key, which never lives in the state folder); names and scopes are not secret and are kept in
//! the clear so they can be listed and audited. Every change is recorded (who, when, which name
//! and scope) in the state folder's database, beside the execution records (`store.rs`).
//!
//! Without a key-encryption key the store is empty and read-only: nothing is injected, and
//! writes are refused with what to set.

pub mod cipher;
mod store;

use serde::Serialize;

pub use cipher::{KeyEncryptionKey, KeyFileError};
pub use store::{KeyChange, KeyChangesPage, KeyEntry, KeyStore, StoredKey};

/// The database in the state folder that holds the key store (and `packbox serve`'s execution
/// records).
pub const DATABASE_FILE: &str = "executions.sqlite";

/// Where a key applies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyScope {
    /// Every run.
    System,
    /// Every action of one pack (its ref).
    Pack(String),
    /// One action (`pack.action`).
    Action(String),
}

impl KeyScope {
    /// Parses `system`, `pack:<ref>` or `action:<pack.action>`.
    pub fn parse(text: &str) -> Result<KeyScope, KeyStoreError> {
        let bad = || KeyStoreError::BadScope {
            scope: text.chars().take(200).collect(),
        };
        if text == "system" {
            return Ok(KeyScope::System);
        }
        if let Some(pack) = text.strip_prefix("pack:") {
            return crate::pack::safety::is_pack_ref(pack)
                .then(|| KeyScope::Pack(pack.to_string()))
                .ok_or_else(bad);
        }
        if let Some(action) = text.strip_prefix("action:") {
            let valid = action.split_once('.').is_some_and(|(pack, name)| {
                crate::pack::safety::is_pack_ref(pack) && crate::pack::safety::is_action_name(name)
            });
            return valid
                .then(|| KeyScope::Action(action.to_string()))
                .ok_or_else(bad);
        }
        Err(bad())
    }

    /// How specific the scope is: system 0, pack 1, action 2 (the higher wins).
    pub fn rank(&self) -> u8 {
        match self {
            KeyScope::System => 0,
            KeyScope::Pack(_) => 1,
            KeyScope::Action(_) => 2,
        }
    }

    /// The scopes a run of `action_ref` (`pack.action`) gets keys from, least specific first.
    pub fn of_action(action_ref: &str) -> Vec<KeyScope> {
        let pack = action_ref.split('.').next().unwrap_or_default();
        vec![
            KeyScope::System,
            KeyScope::Pack(pack.to_string()),
            KeyScope::Action(action_ref.to_string()),
        ]
    }
}

impl std::fmt::Display for KeyScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyScope::System => f.write_str("system"),
            KeyScope::Pack(pack) => write!(f, "pack:{pack}"),
            KeyScope::Action(action) => write!(f, "action:{action}"),
        }
    }
}

impl Serialize for KeyScope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Checks a key's name: it becomes a key of the parameter document, which actions may `source`
/// (the dotenv rule: letters, digits, `_`, `.`, `-`), at most 128 characters.
pub fn check_name(name: &str) -> Result<(), KeyStoreError> {
    if name.len() <= 128 && crate::contract::delivery::is_dotenv_key(name) {
        Ok(())
    } else {
        Err(KeyStoreError::BadName {
            name: name.chars().take(200).collect(),
        })
    }
}

/// A key a run received: its name and where it came from (`request` when the request's own
/// secret of that name won). Never its value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct KeyUse {
    /// The key's name, as the action sees it in its document.
    pub name: String,
    /// `system`, `pack:<ref>`, `action:<pack.action>` or `request`.
    pub scope: String,
}

/// The key store cannot do what was asked. Messages name scopes, names and files, never a value.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// No key-encryption key is set: the store is read-only and empty.
    #[error(
        "the key store is read-only: no key-encryption key is set (--key-file, keystore.key_file or PACKBOX_KEY_FILE)"
    )]
    NoKey,
    /// The key-encryption key cannot be used.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The key-encryption key is not the one the store's values were sealed with.
    #[error(
        "key-encryption key {}: it does not open the key store in {} (was the store rotated to another key?)",
        file.display(), database.display()
    )]
    WrongKey {
        /// The key file given.
        file: std::path::PathBuf,
        /// The database.
        database: std::path::PathBuf,
    },
    /// A sealed value failed its authentication: changed outside packbox, or moved.
    #[error(
        "key `{name}` at scope {scope}: its sealed value fails authentication (changed outside packbox); set it again"
    )]
    Tampered {
        /// The key's scope.
        scope: String,
        /// The key's name.
        name: String,
    },
    /// A scope that is not `system`, `pack:<ref>` or `action:<pack.action>`.
    #[error("key scope `{scope}`: expected system, pack:<ref> or action:<pack.action>")]
    BadScope {
        /// The scope as given (cut at 200 characters).
        scope: String,
    },
    /// A key name that cannot be a parameter name.
    #[error("key name `{name}`: expected letters, digits, `_`, `.` and `-` (at most 128)")]
    BadName {
        /// The name as given (cut at 200 characters).
        name: String,
    },
    /// A value too large to keep.
    #[error("key `{name}`: the value has {bytes} bytes; at most {max}")]
    TooLarge {
        /// The key's name.
        name: String,
        /// Its size.
        bytes: usize,
        /// The largest value kept.
        max: usize,
    },
    /// No such key.
    #[error("no key `{name}` at scope {scope}")]
    NotFound {
        /// The scope.
        scope: String,
        /// The name.
        name: String,
    },
    /// The database could not be opened, read or written.
    #[error("key store {}: {what}", database.display())]
    Database {
        /// The database.
        database: std::path::PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file or its folder could not be made private.
    #[error("key store {}: cannot prepare the file", database.display())]
    File {
        /// The database.
        database: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl KeyStoreError {
    /// Whether the caller's input is at fault (a scope, a name, a value, the key file given),
    /// rather than the store or the machine.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            KeyStoreError::BadScope { .. }
                | KeyStoreError::BadName { .. }
                | KeyStoreError::TooLarge { .. }
                | KeyStoreError::NotFound { .. }
                | KeyStoreError::NoKey
                | KeyStoreError::KeyFile(_)
                | KeyStoreError::WrongKey { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print_as_written() {
        for text in ["system", "pack:hello", "action:hello.greet_python"] {
            assert_eq!(KeyScope::parse(text).expect(text).to_string(), text);
        }
        for bad in [
            "",
            "System",
            "pack:",
            "pack:Hello",
            "pack:a.b",
            "action:hello",
            "action:hello.",
            "action:../x.y",
            "global",
        ] {
            assert!(KeyScope::parse(bad).is_err(), "{bad}");
        }
        let ranks: Vec<u8> = KeyScope::of_action("p.a")
            .iter()
            .map(KeyScope::rank)
            .collect();
        assert_eq!(ranks, [0, 1, 2]);
    }

    #[test]
    fn names_follow_the_dotenv_rule() {
        assert!(check_name("api_key.v2-x").is_ok());
        for bad in ["", "a b", "a=b", "x\ny", &"n".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
