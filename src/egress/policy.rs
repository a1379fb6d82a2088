//! Who may reach what: the operator's network rules (the config file's `network:` list, globs
//! over `PACK.ACTION`, as `isolation:`) and the needs packs declare (`network: {egress: [...]}`
//! in an action's or the pack's YAML), made into the grant of one run.
//!
//! The operator grants; a pack only declares. A run's grant is what the matching rules grant;
//! when the action or its pack declares needs, it is those needs alone (a pack can narrow what
//! it gets, never widen it), each of which a rule must cover, else the run is refused before any
//! container. Pure logic, no engine.

use serde::{Deserialize, Serialize};

use super::destination::Destination;

/// One rule of the operator's policy, as written in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    /// A glob over `PACK.ACTION` (`core.http_*`, `github.*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// What the matching actions may reach.
    pub egress: Vec<Destination>,
}

/// A destination an action or its pack says it needs, and where it says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// The destination.
    pub destination: Destination,
    /// Where it is declared (`network.egress in actions/a.yaml`).
    pub by: String,
}

/// One destination of a run's grant and who granted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Granted {
    /// What the run may reach.
    pub destination: Destination,
    /// The operator's rule that grants it (`config rule match: core.http_*`).
    pub granted_by: String,
    /// Where the action or its pack declared it, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_by: Option<String>,
}

/// What one run may reach, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunGrant {
    /// The destinations, in the order granted (`granted` in JSON, as in an outcome's `egress`).
    #[serde(rename = "granted")]
    pub destinations: Vec<Granted>,
}

impl RunGrant {
    /// The destinations alone, as the proxy takes them.
    pub fn allow(&self) -> Vec<Destination> {
        self.destinations
            .iter()
            .map(|g| g.destination.clone())
            .collect()
    }

    /// A short stable name of the grant, so that runs with the same grant are told apart from
    /// others (the warm pool never hands a container to a run with another grant).
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut allowed: Vec<String> = self.allow().iter().map(|d| d.to_string()).collect();
        allowed.sort();
        hex::encode(&sha2::Sha256::digest(allowed.join("\n").as_bytes())[..8])
    }
}

/// The operator's rules, with their globs compiled.
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    rules: Vec<(glob::Pattern, NetworkRule)>,
}

/// A network rule or a run's needs that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A rule's glob does not parse.
    #[error("network rule {index} (`match: {pattern}`): not a glob ({message})")]
    BadPattern {
        /// The rule's position in the list, counting from 0.
        index: usize,
        /// The glob as written.
        pattern: String,
        /// What the glob parser found wrong.
        message: String,
    },
    /// A need the action or its pack declares that no rule grants.
    #[error(
        "action {action} declares egress to {destination} ({declared_by}), which the operator's network policy does not grant; to allow it, add `network: [{{match: \"{action}\", egress: [\"{destination}\"]}}]` to the config file"
    )]
    NotGranted {
        /// The action's ref.
        action: String,
        /// The destination it needs.
        destination: Destination,
        /// Where it is declared.
        declared_by: String,
    },
}

impl NetworkPolicy {
    /// Compiles the operator's rules; a glob that does not parse is an error naming the rule.
    pub fn new(rules: Vec<NetworkRule>) -> Result<NetworkPolicy, PolicyError> {
        let rules = crate::common::globs::compile(rules, |rule| &rule.pattern).map_err(|bad| {
            PolicyError::BadPattern {
                index: bad.index,
                pattern: bad.pattern,
                message: bad.message,
            }
        })?;
        Ok(NetworkPolicy { rules })
    }

    /// The rules, as written.
    pub fn rules(&self) -> impl Iterator<Item = &NetworkRule> {
        self.rules.iter().map(|(_, rule)| rule)
    }

    /// The grant of a run of `action_ref` (`PACK.ACTION`) that declares `declared`: `None` when
    /// it gets none (no network at all).
    pub fn grant_for(
        &self,
        action_ref: &str,
        declared: &[Declared],
    ) -> Result<Option<RunGrant>, PolicyError> {
        let offered: Vec<(&Destination, String)> = self
            .rules
            .iter()
            .filter(|(pattern, _)| pattern.matches(action_ref))
            .flat_map(|(_, rule)| {
                let by = format!("config rule `match: {}`", rule.pattern);
                rule.egress.iter().map(move |d| (d, by.clone()))
            })
            .collect();
        let mut destinations: Vec<Granted> = Vec::new();
        if declared.is_empty() {
            for (destination, by) in offered {
                if !destinations.iter().any(|g| &g.destination == destination) {
                    destinations.push(Granted {
                        destination: destination.clone(),
                        granted_by: by,
                        declared_by: None,
                    });
                }
            }
        } else {
            for need in declared {
                let Some((_, by)) = offered.iter().find(|(g, _)| g.covers(&need.destination))
                else {
                    return Err(PolicyError::NotGranted {
                        action: action_ref.to_string(),
                        destination: need.destination.clone(),
                        declared_by: need.by.clone(),
                    });
                };
                if !destinations
                    .iter()
                    .any(|g| g.destination == need.destination)
                {
                    destinations.push(Granted {
                        destination: need.destination.clone(),
                        granted_by: by.clone(),
                        declared_by: Some(need.by.clone()),
                    });
                }
            }
        }
        Ok((!destinations.is_empty()).then_some(RunGrant { destinations }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(&str, &[&str])]) -> NetworkPolicy {
        NetworkPolicy::new(
            rules
                .iter()
                .map(|(pattern, egress)| NetworkRule {
                    pattern: pattern.to_string(),
                    egress: egress
                        .iter()
                        .map(|d| Destination::parse(d).expect("destination"))
                        .collect(),
                })
                .collect(),
        )
        .expect("valid globs")
    }

    fn declared(text: &str) -> Declared {
        Declared {
            destination: Destination::parse(text).expect("destination"),
            by: "network.egress in actions/a.yaml".into(),
        }
    }

    fn names(grant: &RunGrant) -> Vec<String> {
        grant.allow().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn no_rule_no_grant() {
        assert_eq!(policy(&[]).grant_for("core.http", &[]).expect("ok"), None);
        let rules = policy(&[("github.*", &["api.github.com:443"])]);
        assert_eq!(rules.grant_for("core.http", &[]).expect("ok"), None);
    }

    #[test]
    fn matching_rules_grant_what_they_name_and_say_so() {
        let rules = policy(&[
            ("core.http_*", &["api.github.com:443", "*.example.com:443"]),
            ("core.*", &["api.github.com:443", "pypi.org:443"]),
        ]);
        let grant = rules
            .grant_for("core.http_request", &[])
            .expect("ok")
            .expect("a grant");
        assert_eq!(
            names(&grant),
            ["api.github.com:443", "*.example.com:443", "pypi.org:443"]
        );
        assert_eq!(
            grant.destinations[0].granted_by,
            "config rule `match: core.http_*`"
        );
        assert_eq!(
            grant.destinations[2].granted_by,
            "config rule `match: core.*`"
        );
        assert_eq!(grant.destinations[0].declared_by, None);
    }

    #[test]
    fn declared_needs_narrow_the_grant_and_each_must_be_granted() {
        let rules = policy(&[("core.*", &["*.github.com:443", "pypi.org:443"])]);
        let grant = rules
            .grant_for("core.git", &[declared("api.github.com:443")])
            .expect("granted")
            .expect("a grant");
        assert_eq!(names(&grant), ["api.github.com:443"]);
        assert_eq!(
            grant.destinations[0].declared_by.as_deref(),
            Some("network.egress in actions/a.yaml")
        );
        let err = rules
            .grant_for(
                "core.git",
                &[declared("api.github.com:443"), declared("evil.test:443")],
            )
            .expect_err("not granted");
        let text = err.to_string();
        assert!(text.contains("action core.git"), "{text}");
        assert!(text.contains("evil.test:443"), "{text}");
        assert!(text.contains("network.egress in actions/a.yaml"), "{text}");
        assert!(
            text.contains(r#"network: [{match: "core.git", egress: ["evil.test:443"]}]"#),
            "{text}"
        );
        // Another port of a granted host is not granted.
        assert!(
            rules
                .grant_for("core.git", &[declared("api.github.com:80")])
                .is_err()
        );
        // Without any rule for the action, a declared need is refused.
        assert!(
            policy(&[])
                .grant_for("core.git", &[declared("pypi.org:443")])
                .is_err()
        );
    }

    #[test]
    fn the_digest_depends_on_the_destinations_only() {
        let a = policy(&[("a.*", &["x.test:443", "y.test:80"])]);
        let b = policy(&[("b.*", &["y.test:80", "x.test:443"])]);
        let c = policy(&[("a.*", &["x.test:443"])]);
        let digest = |p: &NetworkPolicy, action: &str| {
            p.grant_for(action, &[])
                .expect("ok")
                .expect("grant")
                .digest()
        };
        assert_eq!(digest(&a, "a.b"), digest(&b, "b.c"));
        assert_ne!(digest(&a, "a.b"), digest(&c, "a.b"));
    }

    #[test]
    fn a_bad_glob_names_its_rule() {
        let err = NetworkPolicy::new(vec![NetworkRule {
            pattern: "[x".into(),
            egress: Vec::new(),
        }])
        .expect_err("bad glob");
        assert!(
            err.to_string().starts_with("network rule 0 (`match: [x`)"),
            "{err}"
        );
    }
}
