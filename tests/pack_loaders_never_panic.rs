//! Hostile input for the pack loaders: arbitrary bytes and arbitrary YAML documents (built from
//! the real field names) in `pack.yaml` and an action file never make packbox panic; they load or
//! give problems.

use std::path::Path;

use packbox::Catalog;
use packbox::{RunRequest, Settings};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

const FIELDS: &[&str] = &[
    "ref",
    "label",
    "name",
    "description",
    "version",
    "author",
    "email",
    "license",
    "conf_schema",
    "config_schema",
    "config",
    "meta",
    "metadata",
    "tags",
    "keywords",
    "runtime_deps",
    "dependencies",
    "runner_type",
    "entry_point",
    "runtime_version",
    "parameters",
    "output",
    "output_schema",
    "out_schema",
    "parameter_delivery",
    "parameter_format",
    "output_format",
    "timeout_seconds",
    "enabled",
    "type",
    "properties",
    "required",
    "default",
    "secret",
    "enum",
    "minimum",
    "maximum",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            Just("p".to_string()),
            Just("p.a".to_string()),
            Just("a.sh".to_string()),
            Just("../../etc/passwd".to_string()),
            Just("object".to_string()),
            Just(">=3.9,<4".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(|k| Value::String(k.to_string())),
        1 => scalar(),
    ]
}

fn yaml() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Mapping(pairs.into_iter().collect::<Mapping>())),
        ]
    })
}

/// Loads and validates a packs folder holding pack `p` with the given pack.yaml and
/// actions/a.yaml bytes; whether `p.a` loaded.
fn check(pack_yaml: &[u8], action_yaml: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("p");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(pack.join("pack.yaml"), pack_yaml).expect("write");
    std::fs::write(pack.join("actions/a.yaml"), action_yaml).expect("write");
    std::fs::write(pack.join("actions/a.sh"), "echo\n").expect("write");
    let catalog = Catalog::builtin().expect("built-in catalog");
    let settings = Settings::from_env().expect("settings");
    let loaded = match packbox::plan(&settings, &catalog, &RunRequest::new(dir.path(), "p.a")) {
        Ok(_) => true,
        // A plan fails on a pack problem, or on missing required parameters of a good pack.
        Err(e) => !matches!(e, packbox::PlanError::Pack(_)),
    };
    for report in packbox::check_packs(&pack, &catalog, &settings) {
        for problem in &report.problems {
            assert!(!problem.message.is_empty());
        }
    }
    let _ = packbox::check_packs(Path::new(dir.path()), &catalog, &settings);
    loaded
}

const GOOD_PACK: &[u8] = b"ref: p\nlabel: P\nversion: 1.0.0\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_never_panic(pack_bytes in proptest::collection::vec(any::<u8>(), 0..256),
                                   action_bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&pack_bytes, &action_bytes);
        check(GOOD_PACK, &action_bytes);
    }

    #[test]
    fn arbitrary_yaml_never_panics(pack_doc in yaml(), action_doc in yaml()) {
        let pack_text = serde_yaml::to_string(&pack_doc).expect("serialises");
        let action_text = serde_yaml::to_string(&action_doc).expect("serialises");
        check(pack_text.as_bytes(), action_text.as_bytes());
        check(GOOD_PACK, action_text.as_bytes());
    }
}

#[test]
fn a_deeply_nested_document_is_a_problem_not_a_crash() {
    let deep = format!(
        "ref: p.a\nentry_point: a.sh\nparameters: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(!check(GOOD_PACK, deep.as_bytes()));
    let bomb = "ref: p.a\nentry_point: a.sh\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nparameters: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    assert!(!check(GOOD_PACK, bomb.as_bytes()));
}
