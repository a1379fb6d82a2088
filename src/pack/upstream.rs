//! What Attune's own loader reads that packbox does not act on: the fields that steer
//! Attune's scheduler, permissions, retention and notifications, and the component folders of a
//! pack (rules, sensors, triggers, ...) that belong to Attune's server. They load without a
//! warning (a published pack is not wrong for carrying them); the fields that would change what
//! happens are listed by `explain`, so nobody believes packbox honours them.

/// Fields of an action file Attune reads, with what Attune does with each; `None`: nothing that
/// changes a run (informational).
pub(crate) const ACTION_FIELDS: &[(&str, Option<&str>)] = &[
    ("name", None),
    ("pack", None),
    ("is_adhoc", None),
    (
        "required_worker_runtimes",
        Some("Attune runs the action only on workers that report these runtimes"),
    ),
    (
        "worker_selector",
        Some("Attune runs the action only on workers whose labels match"),
    ),
    (
        "worker_tolerations",
        Some("Attune lets the action run on workers with these taints"),
    ),
    (
        "worker_affinity",
        Some("Attune prefers or requires workers by these rules"),
    ),
    (
        "accesses_mcp",
        Some("Attune gives the action access to its MCP endpoint"),
    ),
    (
        "default_execution_permission_set_refs",
        Some("Attune grants these permission sets to the execution's API token"),
    ),
    (
        "required_permissions",
        Some("Attune requires these permissions of whoever runs the action"),
    ),
    (
        "reference_visibility",
        Some("Attune limits which packs' rules and workflows may call the action"),
    ),
    (
        "reference_allowed_pack_refs",
        Some("Attune limits which packs' rules and workflows may call the action"),
    ),
    (
        "log_retention_policy",
        Some("Attune keeps the execution's logs by this policy"),
    ),
    (
        "log_retention_limit",
        Some("Attune keeps the execution's logs up to this limit"),
    ),
    (
        "artifact_retention_policy",
        Some("Attune keeps the execution's artifacts by this policy"),
    ),
    (
        "artifact_retention_limit",
        Some("Attune keeps the execution's artifacts up to this limit"),
    ),
    (
        "notify",
        Some("Attune sends notifications when the execution ends"),
    ),
];

/// Fields of `pack.yaml` Attune reads, with what Attune does with each; `None`: informational.
pub(crate) const PACK_FIELDS: &[(&str, Option<&str>)] = &[
    ("system", None),
    ("is_standard", None),
    ("installers", None),
    ("contributors", None),
    ("homepage", None),
    ("repository", None),
    ("website", None),
    ("icon", None),
    (
        "enabled",
        Some("Attune runs no action of a pack with `enabled: false`"),
    ),
    (
        "default_execution_permission_set_refs",
        Some("Attune grants these permission sets to the pack's executions"),
    ),
    (
        "reference_visibility",
        Some("Attune limits which packs may reference this pack's components"),
    ),
    (
        "reference_allowed_pack_refs",
        Some("Attune limits which packs may reference this pack's components"),
    ),
];

/// What packbox does instead, for every field above that changes behaviour in Attune.
pub(crate) const PACKBOX_INSTEAD: &str = "packbox runs it on the engine it is given, with the operator's sandbox and limits, no Attune API token and its own record retention";

/// Folders of a pack that Attune's server loads and packbox does not run: acknowledged, never
/// warned about.
pub(crate) const COMPONENT_DIRS: &[&str] = &[
    "permission_sets",
    "triggers",
    "dashboards",
    "queues",
    "policies",
    "rules",
    "sensors",
    "caches",
    "workflows",
    // A pack's own runtime definitions: the operator's catalog decides runtimes here.
    "runtimes",
];

/// Field names of a table above.
pub(crate) fn names(table: &[(&'static str, Option<&'static str>)]) -> Vec<&'static str> {
    table.iter().map(|(name, _)| *name).collect()
}

/// The fields of a table present in `keys` that change behaviour in Attune, with what Attune
/// does with each, in the table's order.
pub(crate) fn behaviour_changing(
    table: &[(&'static str, Option<&'static str>)],
    keys: &[String],
) -> Vec<UpstreamField> {
    table
        .iter()
        .filter(|(name, _)| keys.iter().any(|key| key == name))
        .filter_map(|(name, upstream)| {
            upstream.map(|upstream| UpstreamField {
                field: name.to_string(),
                upstream: upstream.to_string(),
            })
        })
        .collect()
}

/// A field of the pack or the action that Attune acts on and packbox does not.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamField {
    /// The field, as written (`worker_selector`).
    pub field: String,
    /// What Attune does with it.
    pub upstream: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_present_behaviour_changing_fields_are_listed() {
        let keys = ["name", "worker_selector", "notify", "ref"].map(String::from);
        let found = behaviour_changing(ACTION_FIELDS, &keys);
        let fields: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["worker_selector", "notify"]);
    }
}
