//! The `keystore:` section resolved: where the key-encryption key is (never inside the state
//! folder: checked when the key store opens it) and which keys a run receives.

use std::path::PathBuf;

use super::resolve::Resolver;
use super::*;

impl Resolver<'_> {
    /// The `keystore:` settings: the key file (`--key-file`, `keystore.key_file`,
    /// `PACKBOX_KEY_FILE`) and `keystore.inject` (`declared` or `all`).
    pub(super) fn keystore(&mut self) -> Result<KeystoreSettings, SettingsError> {
        let key_file = self.pick(|l| l.keystore.key_file.clone());
        self.show(
            "keystore.key_file",
            key_file.as_ref().map(|p| &p.value),
            key_file.as_ref().map_or(Source::Default, |p| p.source),
        );
        let inject = self.setting(
            "keystore.inject",
            |l| l.keystore.inject.clone(),
            "declared".to_string(),
            |text| KeyInjection::parse(text).map(|_| ()),
        )?;
        Ok(KeystoreSettings {
            key_file: key_file.map(|p| p.value),
            inject: KeyInjection::parse(&inject.value).unwrap_or_default(),
        })
    }
}

/// What the key store runs with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeystoreSettings {
    /// The key-encryption key's file; `None`: the key store is empty and read-only.
    pub key_file: Option<PathBuf>,
    /// Which keys a run receives.
    pub inject: KeyInjection,
}

/// Which keys of the key store a run receives (`keystore.inject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyInjection {
    /// Only keys the action declares as `secret: true` parameters, from any scope.
    #[default]
    Declared,
    /// Those, and every key of the action's pack and action scopes (as Attune does).
    All,
}

impl KeyInjection {
    /// Parses `declared` or `all`.
    pub fn parse(text: &str) -> Result<KeyInjection, String> {
        match text {
            "declared" => Ok(KeyInjection::Declared),
            "all" => Ok(KeyInjection::All),
            other => Err(format!("`{other}`: expected declared or all")),
        }
    }
}
