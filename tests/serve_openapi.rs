//! The OpenAPI document of API v1 (docs/openapi.json) is what the server serves and what it
//! answers: each answer's status is documented for its operation and its body validates against
//! the documented schema.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;
use serde_json::json;

const TOKEN: &str = "openapi-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_one_in_the_repository() {
    require_engine();
    let server = Server::start_with_config("");
    let served = http_client(Duration::from_secs(60))
        .get(server.at("/v1/openapi.json"))
        .send()
        .await
        .expect("served")
        .bytes()
        .await
        .expect("a body");
    let kept = std::fs::read(repo_root().join("docs/openapi.json")).expect("kept");
    assert_eq!(served.as_ref(), kept.as_slice());
    let document = openapi();
    assert_eq!(document["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_document() {
    require_engine();
    let document = openapi();
    let server = Server::start(ServerOptions {
        config: "serve: {max_concurrent: 1, max_queue: 1, max_body: 1k, drain_seconds: 1}\nrun: {grace_seconds: 1}\n"
            .into(),
        env: vec![("PACKBOX_SERVE_TOKEN".into(), TOKEN.into())],
        ..ServerOptions::default()
    });
    let api = Api::new(&server, Some(TOKEN));
    let anonymous = Api::new(&server, None);
    let check = |method: &str, path: &str, answer: &Answer| {
        assert_documented(&document, method, path, answer);
    };

    check("get", "/healthz", &anonymous.get("/healthz").await);
    check(
        "get",
        "/v1/executions",
        &anonymous.get("/v1/executions").await,
    );
    check(
        "get",
        "/v1/openapi.json",
        &api.get("/v1/openapi.json").await,
    );
    check("get", "/v1/actions", &api.get("/v1/actions").await);
    check("get", "/v1/runtimes", &api.get("/v1/runtimes").await);
    check("get", "/readyz", &api.get("/readyz").await);
    check("get", "/readyz", &anonymous.get("/readyz").await);
    check("get", "/metrics", &api.get("/metrics").await);
    check("get", "/metrics", &anonymous.get("/metrics").await);

    let done = api
        .post(
            "/v1/executions",
            &json!({"action": "svc.tell", "parameters": {"label": "a"}, "secrets": {"api_key": "k-123456"}, "wait": true}),
        )
        .await;
    assert_eq!(done.status, 201);
    check("post", "/v1/executions", &done);
    let id = done.body["id"].as_str().expect("id").to_string();
    check(
        "get",
        "/v1/executions/{id}",
        &api.get(&format!("/v1/executions/{id}")).await,
    );
    check(
        "get",
        "/v1/executions/{id}",
        &api.get("/v1/executions/nope").await,
    );
    check(
        "post",
        "/v1/executions/{id}/cancel",
        &api.post(&format!("/v1/executions/{id}/cancel"), &json!({}))
            .await,
    );
    check(
        "post",
        "/v1/executions/{id}/cancel",
        &api.post("/v1/executions/nope/cancel", &json!({})).await,
    );
    let replay_body = json!({"action": "svc.sleep", "parameters": {"seconds": 0}, "wait": true});
    let first = api
        .post_with_key("/v1/executions", &replay_body, "k1")
        .await;
    check("post", "/v1/executions", &first);
    let replayed = api
        .post_with_key("/v1/executions", &replay_body, "k1")
        .await;
    assert_eq!(replayed.status, 200);
    check("post", "/v1/executions", &replayed);
    let reused = api
        .post_with_key("/v1/executions", &json!({"action": "svc.tell"}), "k1")
        .await;
    assert_eq!(reused.status, 422);
    check("post", "/v1/executions", &reused);

    for (body, status) in [
        (json!({"action": "svc.nope"}), 404),
        (
            json!({"action": "svc.tell", "parameters": {"label": 1}}),
            400,
        ),
        (json!({"action": "svc.tell", "surprise": true}), 400),
    ] {
        let answer = api.post("/v1/executions", &body).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        check("post", "/v1/executions", &answer);
    }
    check(
        "post",
        "/v1/executions",
        &api.post_raw("/v1/executions", "text/plain", b"{}".to_vec())
            .await,
    );
    check(
        "post",
        "/v1/executions",
        &api.post_raw("/v1/executions", "application/json", vec![b' '; 2048])
            .await,
    );

    // One runs, one waits, the next is refused.
    let sleep = json!({"action": "svc.sleep", "parameters": {"seconds": 60}});
    let running = api.post("/v1/executions", &sleep).await;
    assert_eq!(running.status, 202);
    check("post", "/v1/executions", &running);
    let queued = api.post("/v1/executions", &sleep).await;
    let busy = api.post("/v1/executions", &sleep).await;
    assert_eq!(busy.status, 429);
    check("post", "/v1/executions", &busy);
    let listed = api.get("/v1/executions?limit=2").await;
    assert!(listed.body["next_cursor"].is_string());
    check("get", "/v1/executions", &listed);
    check(
        "get",
        "/v1/executions",
        &api.get("/v1/executions?limit=9999").await,
    );
    for id in [&running.body["id"], &queued.body["id"]] {
        let id = id.as_str().expect("id");
        let cancelled = api
            .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
            .await;
        check("post", "/v1/executions/{id}/cancel", &cancelled);
        let ended = api.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(ended["status"], "cancelled");
        check(
            "get",
            "/v1/executions/{id}",
            &api.get(&format!("/v1/executions/{id}")).await,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_key_and_audit_answers_match_the_document() {
    require_engine();
    let document = openapi();
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("packbox.kek");
    let made = packbox(&["keys", "generate-kek", &kek.display().to_string()], &[]);
    assert_eq!(made.code(), 0, "{}", made.stderr());
    const TEAM: &str = "team-token-0123456789abcdef";
    const VIEWER: &str = "viewer-token-0123456789abcd";
    let tokens = token_file(
        dir.path(),
        &format!("ops:{TOKEN}\nteam:{TEAM} run=svc.echo read=own\nviewer:{VIEWER} read=all\n"),
    );
    let server = Server::start(ServerOptions {
        args: vec![
            "--token-file".into(),
            tokens.display().to_string(),
            "--key-file".into(),
            kek.display().to_string(),
        ],
        ..ServerOptions::default()
    });
    let ops = Api::new(&server, Some(TOKEN));
    let team = Api::new(&server, Some(TEAM));
    let viewer = Api::new(&server, Some(VIEWER));
    let check = |method: &str, path: &str, answer: &Answer, status: u16| {
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert_documented(&document, method, path, answer);
    };
    let keys = "/v1/keys/{scope}/{name}";
    check(
        "put",
        keys,
        &ops.put("/v1/keys/system/api_key", &json!({"value": "v-0123456"}))
            .await,
        200,
    );
    check(
        "put",
        keys,
        &ops.put("/v1/keys/global/api_key", &json!({"value": "v"}))
            .await,
        400,
    );
    check(
        "put",
        keys,
        &team
            .put("/v1/keys/system/api_key", &json!({"value": "v"}))
            .await,
        403,
    );
    check("get", "/v1/keys", &ops.get("/v1/keys").await, 200);
    check("get", "/v1/keys", &team.get("/v1/keys").await, 403);
    check(
        "delete",
        keys,
        &ops.delete("/v1/keys/system/api_key").await,
        204,
    );
    check(
        "delete",
        keys,
        &ops.delete("/v1/keys/system/api_key").await,
        404,
    );
    check("get", "/v1/audit", &ops.get("/v1/audit?limit=1").await, 200);
    check("get", "/v1/audit", &ops.get("/v1/audit?limit=0").await, 400);
    check("get", "/v1/audit", &viewer.get("/v1/audit").await, 403);
    check("get", "/metrics", &team.get("/metrics").await, 403);
    check(
        "post",
        "/v1/executions",
        &team
            .post("/v1/executions", &json!({"action": "svc.tell"}))
            .await,
        403,
    );
    let echoed = team
        .post(
            "/v1/executions",
            &json!({"action": "svc.echo", "parameters": {"n": 1}, "wait": true}),
        )
        .await;
    check("post", "/v1/executions", &echoed, 201);
    let id = echoed.body["id"].as_str().expect("id");
    check(
        "get",
        "/v1/executions",
        &viewer.get("/v1/executions").await,
        200,
    );
    check(
        "post",
        "/v1/executions/{id}/cancel",
        &viewer
            .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
            .await,
        403,
    );
    let other = Api::new(&server, Some(TEAM));
    let hidden = ops
        .post(
            "/v1/executions",
            &json!({"action": "svc.echo", "parameters": {"n": 2}, "wait": true}),
        )
        .await;
    let hidden_id = hidden.body["id"].as_str().expect("id");
    check(
        "get",
        "/v1/executions/{id}",
        &other.get(&format!("/v1/executions/{hidden_id}")).await,
        404,
    );
}
