//! The `network` field of an action file or of `pack.yaml`: the destinations the action (or
//! every action of the pack) says it needs, `network: {egress: ["api.github.com:443"]}`. A
//! declaration is a request: the operator's network policy decides what is granted.

use serde_yaml::Value;

use super::doc::Doc;
use super::problem::Problem;
use crate::egress::destination::Destination;

/// Reads `network` from a file; every bad part is a problem naming the field.
pub(crate) fn needs(doc: &Doc, problems: &mut Vec<Problem>) -> Vec<Destination> {
    let Some(value) = doc.get("network").filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let Value::Mapping(map) = value else {
        problems.push(doc.problem(
            "network",
            "expected a mapping like `{egress: [\"api.example.com:443\"]}`",
        ));
        return Vec::new();
    };
    for key in map.keys() {
        if key.as_str() != Some("egress") {
            problems.push(doc.problem(
                "network",
                format!(
                    "unknown field `{}`; expected `egress`",
                    super::fields::key_text(key)
                ),
            ));
        }
    }
    let Some(list) = map.get("egress") else {
        return Vec::new();
    };
    doc.text_list("network.egress", list, problems)
        .iter()
        .filter_map(|text| match Destination::parse(text) {
            Ok(destination) => Some(destination),
            Err(e) => {
                problems.push(doc.problem("network.egress", e.to_string()));
                None
            }
        })
        .collect()
}
