//! The swarm backend on a Swarm of three nodes (a manager and two workers, each a
//! Docker-in-Docker engine; see `common::cluster`): runs placed on workers by constraint, their
//! images pulled by digest from a plain and a TLS registry, the node named in the outcome; a
//! worker lost in the middle of a run; a worker that cannot reach its registry. Nothing is left
//! on any node.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::Value;

/// A service cannot carry packbox's syscall profile on this engine's API: swarm runs take the
/// engine's default profile, which is weaker and must be allowed (and is reported).
const ENGINE_PROFILE: [&str; 3] = ["--seccomp", "engine-default", "--allow-weaker-sandbox"];

/// `packbox --backend swarm --registry REGISTRY run --packs PACKS ACTION --json` with placement
/// constraints and more arguments.
fn cluster_args(
    registry: &str,
    placement: &[&str],
    packs: &std::path::Path,
    action: &str,
    args: &[&str],
) -> Vec<String> {
    let mut all: Vec<String> = ["--backend", "swarm", "--registry", registry]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for constraint in placement {
        all.push("--placement".into());
        all.push(constraint.to_string());
    }
    all.extend(
        ["run", "--packs", &packs.to_string_lossy(), action, "--json"]
            .iter()
            .map(|s| s.to_string()),
    );
    all.extend(ENGINE_PROFILE.iter().map(|s| s.to_string()));
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

/// The node an outcome names: (hostname, id).
fn node_of(outcome: &Value) -> (String, String) {
    let node = &outcome["sandbox"]["node"];
    (
        node["hostname"].as_str().unwrap_or_default().to_string(),
        node["id"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn runs_are_placed_on_workers_and_pull_their_image_by_digest_from_either_registry() {
    require_engine();
    let cluster = Cluster::acquire();
    let scratch = tempfile::tempdir().expect("a folder for the pack");
    // A pack no node has seen: each worker that runs it must pull it.
    let packs = fresh_pack(&fixture_packs().join("contract"), scratch.path());
    for registry in [&cluster.registry, &cluster.tls_registry] {
        let run = cluster.packbox(
            &cluster_args(
                registry,
                &["node.role==worker"],
                &packs,
                "contract.emit_text",
                &["-p", "out=hello from a worker", "-p", "err=and its stderr"],
            ),
            &[],
        );
        cluster.assert_no_leftovers(run.pid);
        assert_eq!(run.code(), 0, "{registry}: {}", run.stderr());
        let outcome = run.json();
        assert_eq!(outcome["status"], "succeeded", "{registry}: {outcome}");
        assert_eq!(outcome["stdout"], "hello from a worker");
        assert_eq!(outcome["stderr"], "and its stderr");
        assert_eq!(outcome["sandbox"]["backend"], "swarm");
        let (hostname, id) = node_of(&outcome);
        assert!(
            cluster.workers.contains(&hostname),
            "{registry}: placed on a worker, not {hostname:?}: {outcome}"
        );
        let ids = cluster.docker_ok(None, &["node", "inspect", &hostname, "--format", "{{.ID}}"]);
        assert_eq!(ids, [id], "the outcome names the node's id");
        // The worker started empty: it holds the pack image because it pulled it, by digest.
        let digests = cluster.docker_ok(
            Some(&hostname),
            &[
                "images",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}",
            ],
        );
        let pulled = format!("{registry}/packbox-pack/contract@sha256:");
        assert!(
            digests.iter().any(|d| d.starts_with(&pulled)),
            "{hostname} pulled {pulled}...: {digests:?}"
        );
    }
    // Placement by the node's name: the manager when asked for it.
    let run = cluster.packbox(
        &cluster_args(
            &cluster.registry,
            &["node.role==manager"],
            &packs,
            "contract.emit_text",
            &["-p", "out=on the manager"],
        ),
        &[],
    );
    cluster.assert_no_leftovers(run.pid);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(node_of(&run.json()).0, cluster.manager);
}

#[test]
fn a_constraint_no_node_meets_is_an_engine_error_at_once() {
    require_engine();
    let cluster = Cluster::acquire();
    let run = cluster.packbox(
        &cluster_args(
            &cluster.registry,
            &["node.labels.zone==nowhere"],
            &fixture_packs(),
            "contract.emit_text",
            &["--timeout", "600"],
        ),
        &[],
    );
    cluster.assert_no_leftovers(run.pid);
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "error", "{outcome}");
    assert!(
        outcome["error"]
            .as_str()
            .is_some_and(|e| e.contains("no suitable node")),
        "{outcome}"
    );
}

#[test]
fn a_node_lost_mid_run_ends_the_run_as_an_error_naming_it_and_the_next_run_goes_elsewhere() {
    require_engine();
    let cluster = Cluster::acquire_alone();
    let victim = cluster.workers[0].clone();
    let survivor = cluster.workers[1].clone();
    let mut child = cluster.spawn_packbox(&cluster_args(
        &cluster.registry,
        &[&format!("node.hostname=={victim}")],
        &fixture_packs(),
        "contract.emit_text",
        &["-p", "sleep=600", "--timeout", "900"],
    ));
    let pid = child.id();
    cluster.wait_for_running_service(pid);
    let down = cluster.kill_node(&victim);
    let killed_at = Instant::now();
    // The managers mark the node down after a few missed heartbeats (2 s each here); the run
    // must end soon after, long before the action's timeout.
    wait_until(
        "packbox ends after the node is lost",
        Duration::from_secs(120),
        || child.try_wait().expect("try_wait").is_some(),
    );
    let ended_after = killed_at.elapsed();
    let output = child.wait_with_output().expect("packbox output");
    let outcome: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(output.status.code(), Some(125), "{outcome}");
    assert_eq!(outcome["status"], "error", "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&victim) && error.contains("lost"),
        "the error names the lost node: {error}"
    );
    assert!(
        !error.contains("timed out"),
        "not the action's timeout: {error}"
    );
    eprintln!("the run ended {ended_after:?} after its node was killed");
    assert!(
        cluster.swarm_objects_of(pid).is_empty(),
        "service, secret and network removed: {:?}",
        cluster.swarm_objects_of(pid)
    );

    // The next run that may go to any worker goes to the one that is left.
    let next = cluster.packbox(
        &cluster_args(
            &cluster.registry,
            &["node.role==worker"],
            &fixture_packs(),
            "contract.emit_text",
            &["-p", "out=still here"],
        ),
        &[],
    );
    assert_eq!(next.code(), 0, "{}", next.stderr());
    assert_eq!(node_of(&next.json()).0, survivor);
    cluster.assert_no_leftovers(next.pid);

    // The lost node comes back and removes the task container of the service that is gone.
    drop(down);
    cluster.assert_no_leftovers(pid);
}

#[test]
fn an_image_a_node_cannot_pull_is_an_error_naming_the_node_the_image_and_the_registry() {
    require_engine();
    let cluster = Cluster::acquire_alone();
    let node = cluster.workers[1].clone();
    let scratch = tempfile::tempdir().expect("a folder for the pack");
    // A pack image the node does not hold yet, so that it has to pull it.
    let packs = fresh_pack(&fixture_packs().join("contract"), scratch.path());
    let _cut = cluster.cut_registry(&node);
    let started = Instant::now();
    let run = cluster.packbox(
        &cluster_args(
            &cluster.registry,
            &[&format!("node.hostname=={node}")],
            &packs,
            "contract.emit_text",
            &["--timeout", "600"],
        ),
        &[],
    );
    eprintln!("the run ended after {:?}", started.elapsed());
    cluster.assert_no_leftovers(run.pid);
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["status"], "error", "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    let image = format!("{}/packbox-pack/contract@sha256:", cluster.registry);
    assert!(error.contains(&node), "names the node: {error}");
    assert!(error.contains(&image), "names the image: {error}");
    assert!(
        error.contains(&format!("registry {}", cluster.registry)),
        "names the registry: {error}"
    );
}
