//! The network rules (the config file's `network:` list, globs over `PACK.ACTION` granting
//! destinations) and the `egress:` section (how grants are enforced), resolved and shown.

use super::resolve::Resolver;
use super::*;
use crate::egress::config::EgressSettings;
use crate::egress::policy::NetworkPolicy;

impl Resolver<'_> {
    /// The network rules (config file only) and the `egress:` section, checked and shown.
    pub(super) fn network(&mut self) -> Result<(NetworkPolicy, EgressSettings), SettingsError> {
        let rules = self.pick(|l| l.network.clone());
        let network = match &rules {
            Some(picked) => {
                NetworkPolicy::new(picked.value.clone()).map_err(|e| SettingsError::Value {
                    setting: "network".into(),
                    source_name: self.source_name(picked.source),
                    message: e.to_string(),
                })?
            }
            None => NetworkPolicy::default(),
        };
        let shown_rules: Vec<String> = network
            .rules()
            .map(|rule| {
                let egress: Vec<String> = rule.egress.iter().map(|d| d.to_string()).collect();
                format!("{} -> {}", rule.pattern, egress.join(" "))
            })
            .collect();
        self.show(
            "network",
            shown_rules,
            rules.as_ref().map_or(Source::Default, |p| p.source),
        );
        let source = if !self.file.egress.is_empty() {
            Source::File
        } else if !self.env.egress.is_empty() {
            Source::Env
        } else {
            Source::Default
        };
        let layers = [&self.flags.egress, &self.file.egress, &self.env.egress];
        let egress = crate::egress::config::resolve(&layers).map_err(|(setting, message)| {
            SettingsError::Value {
                setting: setting.into(),
                source_name: self.source_name(source),
                message,
            }
        })?;
        self.show("egress", &egress, source);
        Ok((network, egress))
    }
}
