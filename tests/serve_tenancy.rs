//! Scoped tokens on a real `packbox serve` on loopback: each token runs only the actions its
//! `run=` globs allow, reads only what `read=` allows, and needs `admin` for metrics; an
//! execution it may not read is not found (404), an action it may not run is forbidden (403,
//! naming its scope). A property test drives random scopes and executions through every route
//! and checks that no answer carries a record or a byte of output outside the token's scope.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::server::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

const ALPHA: &str = "alpha-token-0123456789abcdef";
const BETA: &str = "beta-token-0123456789abcdef0";
const AUDITOR: &str = "auditor-token-0123456789abc";
const OPS: &str = "ops-token-0123456789abcdef01";
const BARE: &str = "bare-token-0123456789abcdef0";

fn two_teams(dir: &std::path::Path) -> std::path::PathBuf {
    token_file(
        dir,
        &format!(
            "# two teams, an auditor, the operators, and a bare token\n\
             alpha:{ALPHA} run=alpha.* read=own\n\
             beta:{BETA} run=beta.*,alpha.say read=own\n\
             auditor:{AUDITOR} read=all\n\
             ops:{OPS}\n\
             {BARE} run=beta.say\n"
        ),
    )
}

fn refs(actions: &Value) -> BTreeSet<String> {
    actions["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["ref"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_sees_follows_and_cancels_only_what_its_scope_allows() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(ServerOptions {
        packs: tenancy_packs(),
        args: vec![
            "--token-file".into(),
            two_teams(dir.path()).display().to_string(),
        ],
        ..ServerOptions::default()
    });
    let alpha = Api::new(&server, Some(ALPHA));
    let beta = Api::new(&server, Some(BETA));
    let auditor = Api::new(&server, Some(AUDITOR));
    let ops = Api::new(&server, Some(OPS));
    let bare = Api::new(&server, Some(BARE));

    let said = alpha
        .post(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"label": "alpha-marker-111"}, "wait": true}),
        )
        .await;
    assert_eq!(said.status, 201, "{}", said.body);
    let alpha_said = said.body["id"].as_str().expect("id").to_string();
    let sleeping = alpha
        .post(
            "/v1/executions",
            &json!({"action": "alpha.sleep", "parameters": {"seconds": 120, "label": "alpha-sleeper-333"}}),
        )
        .await;
    assert_eq!(sleeping.status, 202, "{}", sleeping.body);
    let alpha_sleep = sleeping.body["id"].as_str().expect("id").to_string();
    let beta_said = beta
        .post(
            "/v1/executions",
            &json!({"action": "beta.say", "parameters": {"label": "beta-marker-222"}, "wait": true}),
        )
        .await;
    assert_eq!(beta_said.status, 201, "{}", beta_said.body);
    let beta_said = beta_said.body["id"].as_str().expect("id").to_string();

    // Running what the scope does not allow: 403 naming the scope, whether the action exists
    // or not; running what it allows but does not exist: 404.
    for action in ["alpha.sleep", "zzz.none"] {
        let refused = beta
            .post("/v1/executions", &json!({"action": action}))
            .await;
        assert_eq!(refused.status, 403, "{action}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "forbidden");
        let message = refused.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("run=beta.*,alpha.say"), "{message}");
    }
    assert_eq!(
        alpha
            .post("/v1/executions", &json!({"action": "alpha.nope"}))
            .await
            .status,
        404
    );
    let forbidden = auditor
        .post(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"label": "x"}}),
        )
        .await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);

    // Another token's executions do not exist for a token that reads its own.
    for id in [&alpha_said, &alpha_sleep] {
        for path in [
            format!("/v1/executions/{id}"),
            format!("/v1/executions/{id}?wait=1"),
            format!("/v1/executions/{id}/output"),
        ] {
            let (status, text) = beta.get_raw(&path).await;
            assert_eq!(status, 404, "{path}: {text}");
            assert!(!text.contains("alpha-"), "{text}");
        }
        let cancel = beta
            .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
            .await;
        assert_eq!(cancel.status, 404, "{}", cancel.body);
    }
    let missing = beta.get("/v1/executions/no-such-id").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body["error"]["message"], "no execution `no-such-id`",
        "the same answer as for one that exists"
    );
    let listed = beta.get("/v1/executions?limit=500").await;
    let ids: BTreeSet<&str> = listed.body["executions"]
        .as_array()
        .expect("a page")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from([beta_said.as_str()]));

    // The auditor reads everything, cancels nothing.
    let everything = auditor.get("/v1/executions?limit=500").await;
    assert_eq!(
        everything.body["executions"].as_array().map(Vec::len),
        Some(3)
    );
    let read = auditor.get(&format!("/v1/executions/{alpha_said}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["result"], json!({"said": "alpha-marker-111"}));
    let refused = auditor
        .post(&format!("/v1/executions/{alpha_sleep}/cancel"), &json!({}))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // Its owner follows its running execution, then cancels it.
    let mut events = alpha.events(&alpha_sleep, None).await;
    let first = events
        .next(Duration::from_secs(120))
        .await
        .expect("an event");
    assert_eq!(first.event, "stdout");
    assert!(first.text().contains("alpha-sleeper-333"), "{first:?}");
    let cancelled = alpha
        .post(&format!("/v1/executions/{alpha_sleep}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let ended = alpha
        .wait_final(&alpha_sleep, Duration::from_secs(120))
        .await;
    assert_eq!(ended["status"], "cancelled", "{ended}");

    // Actions: only those the token may run; problems and metrics for admin tokens only.
    assert_eq!(
        refs(&alpha.get("/v1/actions").await.body),
        BTreeSet::from(["alpha.flood", "alpha.keys", "alpha.say", "alpha.sleep"].map(String::from))
    );
    assert_eq!(
        refs(&beta.get("/v1/actions").await.body),
        BTreeSet::from(["alpha.say", "beta.env", "beta.say"].map(String::from))
    );
    assert!(refs(&auditor.get("/v1/actions").await.body).is_empty());
    assert_eq!(refs(&ops.get("/v1/actions").await.body).len(), 6);
    let metrics = alpha.get("/metrics").await;
    assert_eq!(metrics.status, 403, "{}", metrics.body);
    assert!(
        metrics.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("admin")
    );
    let (status, text) = ops.get_raw("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("packbox_records_bytes"), "{text}");

    // An idempotency key replayed by another token is that token's own.
    let first = alpha
        .post_with_key(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"label": "alpha-keyed-444"}, "wait": true}),
            "shared-key-1",
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = beta
        .post_with_key(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"label": "beta-keyed-555"}, "wait": true}),
            "shared-key-1",
        )
        .await;
    assert_eq!(second.status, 201, "a new execution: {}", second.body);
    assert_ne!(second.body["id"], first.body["id"]);
    assert_eq!(second.body["token_name"], "beta");
    assert!(!second.body.to_string().contains("alpha-keyed-444"));
    let again = beta
        .post_with_key(
            "/v1/executions",
            &json!({"action": "alpha.say", "parameters": {"label": "beta-keyed-555"}}),
            "shared-key-1",
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["id"], second.body["id"]);

    // A bare token is named by its line, which says nothing about it.
    let by_bare = bare
        .post(
            "/v1/executions",
            &json!({"action": "beta.say", "parameters": {"label": "bare-666"}, "wait": true}),
        )
        .await;
    assert_eq!(by_bare.status, 201, "{}", by_bare.body);
    assert_eq!(by_bare.body["token_name"], "line-6");
    for token in [ALPHA, BETA, AUDITOR, OPS, BARE] {
        assert!(!server.log().contains(token), "a token is in the log");
    }
}

/// What a token of the property test may do.
#[derive(Clone, Debug)]
struct Scope {
    run: Vec<&'static str>,
    read_all: bool,
    admin: bool,
}

impl Scope {
    fn line(&self, name: &str, token: &str) -> String {
        let mut line = format!("{name}:{token}");
        if !self.run.is_empty() {
            line.push_str(&format!(" run={}", self.run.join(",")));
        }
        line.push_str(if self.read_all {
            " read=all"
        } else {
            " read=own"
        });
        if self.admin {
            line.push_str(" admin");
        }
        line
    }

    fn may_run(&self, action: &str) -> bool {
        self.run
            .iter()
            .any(|glob| glob::Pattern::new(glob).is_ok_and(|pattern| pattern.matches(action)))
    }
}

fn scope() -> impl Strategy<Value = Scope> {
    let globs = prop::sample::subsequence(vec!["alpha.*", "beta.say", "*.say", "alpha.say"], 0..=2);
    (globs, any::<bool>(), any::<bool>()).prop_map(|(run, read_all, admin)| Scope {
        run,
        read_all,
        admin,
    })
}

/// One case: four tokens with random scopes, and which of the two `say` actions each starts.
#[derive(Clone, Debug)]
struct Case {
    scopes: Vec<Scope>,
    starts: Vec<Vec<&'static str>>,
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(
        (
            scope(),
            prop::sample::subsequence(vec!["alpha.say", "beta.say"], 0..=2),
        ),
        4,
    )
    .prop_map(|tokens| Case {
        scopes: tokens.iter().map(|(scope, _)| scope.clone()).collect(),
        starts: tokens.into_iter().map(|(_, starts)| starts).collect(),
    })
}

/// An execution of the case: who started it and the marker its output holds.
struct Started {
    id: String,
    owner: usize,
    marker: String,
}

async fn check_case(case: Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = fresh_state_dir();
    let tokens: Vec<String> = (0..case.scopes.len())
        .map(|n| format!("prop-token-{n}-0123456789abcdef"))
        .collect();
    let lines: Vec<String> = case
        .scopes
        .iter()
        .enumerate()
        .map(|(n, scope)| scope.line(&format!("t{n}"), &tokens[n]))
        .collect();
    let file = token_file(dir.path(), &(lines.join("\n") + "\n"));
    let server = Server::start(ServerOptions {
        packs: tenancy_packs(),
        state: state.path().to_path_buf(),
        args: vec!["--token-file".into(), file.display().to_string()],
        ..ServerOptions::default()
    });
    let apis: Vec<Api> = tokens.iter().map(|t| Api::new(&server, Some(t))).collect();
    let mut started = Vec::new();
    for (owner, actions) in case.starts.iter().enumerate() {
        for action in actions {
            let marker = format!(
                "marker-{owner}-{}-{}",
                action.replace('.', "-"),
                started.len()
            );
            let answer = apis[owner]
                .post_with_key(
                    "/v1/executions",
                    &json!({"action": action, "parameters": {"label": marker}, "wait": true}),
                    &format!("key-{action}"),
                )
                .await;
            if case.scopes[owner].may_run(action) {
                prop_assert_eq!(answer.status, 201, "{}", answer.body);
                prop_assert_eq!(
                    answer.body["token_name"].as_str().map(str::to_string),
                    Some(format!("t{owner}"))
                );
                started.push(Started {
                    id: answer.body["id"].as_str().unwrap_or_default().to_string(),
                    owner,
                    marker,
                });
            } else {
                prop_assert_eq!(answer.status, 403, "{}", answer.body);
            }
        }
    }
    for (n, api) in apis.iter().enumerate() {
        let scope = &case.scopes[n];
        let readable = |s: &Started| scope.read_all || s.owner == n;
        let mut answers: Vec<(String, u16, String)> = Vec::new();
        for path in [
            "/v1/executions?limit=500",
            "/v1/actions",
            "/metrics",
            "/v1/keys",
            "/v1/audit",
        ] {
            let (status, text) = api.get_raw(path).await;
            answers.push((path.to_string(), status, text));
        }
        for s in &started {
            for path in [
                format!("/v1/executions/{}", s.id),
                format!("/v1/executions/{}?wait=1", s.id),
                format!("/v1/executions/{}/output", s.id),
            ] {
                let (status, text) = api.get_raw(&path).await;
                let expected = if readable(s) { 200 } else { 404 };
                prop_assert_eq!(status, expected, "{} {}: {}", n, path, text);
                answers.push((path, status, text));
            }
            let cancel = api
                .post(&format!("/v1/executions/{}/cancel", s.id), &json!({}))
                .await;
            let expected = match (readable(s), scope.admin || s.owner == n) {
                (false, _) => 404,
                (true, false) => 403,
                (true, true) => 409,
            };
            prop_assert_eq!(
                cancel.status,
                expected,
                "{} cancel {}: {}",
                n,
                s.id,
                cancel.body
            );
            answers.push((
                format!("cancel {}", s.id),
                cancel.status,
                cancel.body.to_string(),
            ));
        }
        // Replaying another token's idempotency key never gives its execution.
        for action in ["alpha.say", "beta.say"] {
            let replay = api
                .post_with_key(
                    "/v1/executions",
                    &json!({"action": action, "parameters": {"label": "replayed"}}),
                    &format!("key-{action}"),
                )
                .await;
            if replay.status < 300 {
                prop_assert_eq!(
                    replay.body["token_name"].as_str().map(str::to_string),
                    Some(format!("t{n}"))
                );
            }
            answers.push((
                format!("replay {action}"),
                replay.status,
                replay.body.to_string(),
            ));
        }
        for (path, status, text) in &answers {
            for s in started.iter().filter(|s| !readable(s)) {
                // An id the request named may come back in a refusal; no other may.
                let named = path.contains(&s.id);
                prop_assert!(
                    !text.contains(&s.marker) && (named || !text.contains(&s.id)),
                    "token t{} ({:?}) got {} of t{} from {} ({}): {}",
                    n,
                    scope,
                    s.marker,
                    s.owner,
                    path,
                    status,
                    text
                );
            }
            if (path == "/metrics" || path == "/v1/keys" || path == "/v1/audit") && !scope.admin {
                prop_assert_eq!(*status, 403, "{}: {}", path, text);
            }
        }
        let actions: Value = answers
            .iter()
            .find(|(path, ..)| path == "/v1/actions")
            .and_then(|(_, _, text)| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        for action in refs(&actions) {
            prop_assert!(scope.may_run(&action), "t{} may not run {}", n, action);
        }
    }
    drop(server);
    Ok(())
}

#[test]
fn no_route_leaks_a_record_or_output_outside_a_tokens_scope() {
    require_engine();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Few cases, each a real server and real runs; a fixed seed, so a failure comes back.
    let config = Config {
        cases: 5,
        max_shrink_iters: 4,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&case(), |case| runtime.block_on(check_case(case)));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
