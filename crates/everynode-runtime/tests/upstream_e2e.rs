//! The scenarios of upstream's e2e suite `test/e2e/apps/daemon_set.go` ("[sig-apps] Daemon
//! set"), for the everynode kind, one test per upstream spec and named after it. For apps/v1
//! the suite itself runs (`cargo xtask conformance`); these hold the everynode kind to the
//! same standard.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, consistently, eventually, pods};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// A namespace with `nodes` nodes and a running controller.
async fn setup(name: &str, nodes: usize) -> (TestEnv, Vec<String>, RunningController) {
    let env = TestEnv::new(name).await;
    let mut names = env.add_nodes(nodes).await;
    names.sort();
    let controller = start_controller(&env, Target::Everynode).await;
    (env, names, controller)
}

async fn create(env: &TestEnv, set: &DaemonSet) {
    env.api::<DaemonSet>()
        .create(&PostParams::default(), set)
        .await
        .expect("create the set");
}

/// Live pod names of the set.
async fn pod_names(env: &TestEnv) -> BTreeSet<String> {
    set_pods(env, "agent")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect()
}

/// `Ok` when the set has no pod.
async fn no_pods(env: &TestEnv) -> Result<(), String> {
    match set_pods(env, "agent").await.len() {
        0 => Ok(()),
        left => Err(format!("{left} pods left")),
    }
}

async fn wait_no_pods(env: &TestEnv) {
    eventually("no pod of the set", TIMEOUT, || no_pods(env)).await;
}

/// The set `agent` restricted further by `extra`, merge-patched into the template's pod spec
/// (its `nodeSelector` keeps the test's node group).
fn set_with_spec(env: &TestEnv, extra: serde_json::Value) -> DaemonSet {
    let mut value =
        serde_json::to_value(set_with(env, json!({"maxUnavailable": 1}))).expect("set as JSON");
    json_patch::merge(&mut value["spec"]["template"]["spec"], &extra);
    serde_json::from_value(value).expect("a valid set")
}

#[tokio::test]
async fn should_run_and_stop_simple_daemon() {
    let (env, nodes, _controller) = setup("e2e-simple", 3).await;
    create(&env, &set_with(&env, json!({"maxUnavailable": 1}))).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    // A daemon pod that is stopped comes back, under a new name.
    let stopped = pod_names(&env).await.into_iter().next().expect("a pod");
    env.api::<Pod>()
        .delete(&stopped, &DeleteParams::default())
        .await
        .expect("delete a pod");
    env.wait_pod_gone(&stopped, TIMEOUT).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    assert!(!pod_names(&env).await.contains(&stopped));

    env.api::<DaemonSet>()
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete the set");
    wait_no_pods(&env).await;
}

/// Upstream's "complex daemon" scenarios: a set that selects nodes by a `color` label runs
/// where the label says, follows a relabelled node, and follows its own selector's change.
async fn complex_daemon(
    env: &TestEnv,
    nodes: &[String],
    placement: impl Fn(&str) -> serde_json::Value,
) {
    create(env, &set_with_spec(env, placement("blue"))).await;
    consistently(
        "no pod on nodes without the color",
        Duration::from_secs(3),
        || no_pods(env),
    )
    .await;

    let node = &nodes[0];
    env.label_node(node, "color", Some("blue")).await;
    wait_one_ready_pod_per_node(env, "agent", std::slice::from_ref(node), "agent:v1").await;

    env.label_node(node, "color", Some("green")).await;
    wait_no_pods(env).await;

    let mut spec = placement("green");
    if spec.get("nodeSelector").is_some() {
        spec["nodeSelector"] = json!({"color": "green"});
    }
    patch_set(
        &env.api(),
        json!({"spec": {"template": {"spec": spec}}}),
        "select green",
    )
    .await;
    wait_one_ready_pod_per_node(env, "agent", std::slice::from_ref(node), "agent:v1").await;
}

#[tokio::test]
async fn should_run_and_stop_complex_daemon() {
    let (env, nodes, _controller) = setup("e2e-complex", 2).await;
    complex_daemon(
        &env,
        &nodes,
        |color| json!({"nodeSelector": {"color": color}}),
    )
    .await;
}

#[tokio::test]
async fn should_run_and_stop_complex_daemon_with_node_affinity() {
    let (env, nodes, _controller) = setup("e2e-affinity", 2).await;
    complex_daemon(&env, &nodes, |color| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "color", "operator": "In", "values": [color]}
            ]}]
        }}}})
    })
    .await;
}

#[tokio::test]
async fn should_retry_creating_failed_daemon_pods() {
    let (env, nodes, _controller) = setup("e2e-retry", 2).await;
    create(&env, &set_with(&env, json!({"maxUnavailable": 1}))).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    let failed = pod_names(&env).await.into_iter().next().expect("a pod");
    env.mark_pod_failed(&failed).await;
    // The failed pod is deleted and replaced by a pod of another name.
    env.wait_pod_gone(&failed, TIMEOUT).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    assert!(!pod_names(&env).await.contains(&failed));
}

#[tokio::test]
async fn should_not_update_pod_when_spec_was_updated_and_update_strategy_is_on_delete() {
    let (env, nodes, _controller) = setup("e2e-on-delete", 2).await;
    let mut set = set_with(&env, json!(null));
    set.spec.update_strategy = serde_json::from_value(json!({"type": "OnDelete"})).ok();
    create(&env, &set).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let before = pod_names(&env).await;

    patch_set(&env.api(), new_image("agent:v2"), "new image").await;
    consistently(
        "OnDelete keeps the old pods",
        Duration::from_secs(4),
        || async {
            let now = pod_names(&env).await;
            if now == before {
                Ok(())
            } else {
                Err(format!("{before:?} -> {now:?}"))
            }
        },
    )
    .await;
    assert_eq!(history_of(&env).await.len(), 2);

    // A pod deleted by hand comes back on the new template.
    let deleted = before.iter().next().expect("a pod");
    env.api::<Pod>()
        .delete(deleted, &DeleteParams::default())
        .await
        .expect("delete a pod");
    eventually("the replacement runs agent:v2", TIMEOUT, || async {
        let pods = set_pods(&env, "agent").await;
        let v2 = pods
            .iter()
            .filter(|p| pods::is_ready(p) && image_of(p).as_deref() == Some("agent:v2"))
            .count();
        if v2 == 1 {
            Ok(())
        } else {
            Err(format!("{v2} ready v2 pods"))
        }
    })
    .await;
}

/// The set's revisions.
async fn history_of(env: &TestEnv) -> Vec<ControllerRevision> {
    env.api::<ControllerRevision>()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("list revisions")
        .items
}

#[tokio::test]
async fn should_update_pod_when_spec_was_updated_and_update_strategy_is_rolling_update() {
    let (env, nodes, _controller) = setup("e2e-rolling", 3).await;
    create(&env, &set_with(&env, json!({"maxUnavailable": 1}))).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    patch_set(&env.api(), new_image("agent:v2"), "new image").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;

    // As upstream checks history: exactly one revision matches the template, and every pod
    // carries its hash.
    let set = env.api::<DaemonSet>().get("agent").await.expect("get set");
    let history = history_of(&env).await;
    let current: Vec<&ControllerRevision> = history
        .iter()
        .filter(|r| {
            r.data
                .as_ref()
                .is_some_and(|d| everynode_core::data_matches(&set.spec.template, &d.0))
        })
        .collect();
    assert_eq!(current.len(), 1, "{history:?}");
    let hash = current[0].labels().get("controller-revision-hash").cloned();
    for pod in set_pods(&env, "agent").await {
        assert_eq!(pod.labels().get("controller-revision-hash"), hash.as_ref());
    }
}

#[tokio::test]
async fn should_rollback_without_unnecessary_restarts() {
    let (env, nodes, _controller) = setup("e2e-rollback", 3).await;
    create(&env, &set_with(&env, json!({"maxUnavailable": 1}))).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    // An image that cannot be pulled: the rollout stalls after the first node.
    patch_set(&env.api(), new_image("foo:non-existent"), "a missing image").await;
    eventually("a pod of the missing image", TIMEOUT, || async {
        let pods = set_pods(&env, "agent").await;
        let stuck = pods
            .iter()
            .filter(|p| image_of(p).as_deref() == Some("foo:non-existent"))
            .count();
        if stuck > 0 {
            Ok(())
        } else {
            Err("none yet".to_owned())
        }
    })
    .await;
    let existing: BTreeSet<String> = set_pods(&env, "agent")
        .await
        .iter()
        .filter(|p| image_of(p).as_deref() == Some("agent:v1"))
        .map(ResourceExt::name_any)
        .collect();
    assert!(!existing.is_empty());

    patch_set(&env.api(), new_image("agent:v1"), "roll back").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let after = pod_names(&env).await;
    assert!(
        existing.is_subset(&after),
        "restarted: {existing:?} -> {after:?}"
    );
}

#[tokio::test]
async fn should_surge_pods_onto_nodes_when_spec_was_updated_and_update_strategy_is_rolling_update()
{
    let (env, nodes, _controller) = setup("e2e-surge", 3).await;
    create(
        &env,
        &set_with(&env, json!({"maxSurge": 1, "maxUnavailable": 0})),
    )
    .await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    patch_set(&env.api(), new_image("agent:v2"), "new image").await;
    // Every node keeps a Ready pod throughout: the new pod comes up beside the old one.
    let deadline = Instant::now() + TIMEOUT;
    let mut fewest_covered = nodes.len();
    loop {
        let pods = set_pods(&env, "agent").await;
        let covered: BTreeSet<String> = pods
            .iter()
            .filter(|p| pods::is_ready(p))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        fewest_covered = fewest_covered.min(covered.len());
        let v2 = pods
            .iter()
            .filter(|p| pods::is_ready(p) && image_of(p).as_deref() == Some("agent:v2"))
            .count();
        if v2 == nodes.len() && pods.len() == nodes.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no full surge rollout: {v2} ready v2 pods"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fewest_covered,
        nodes.len(),
        "a node was left without a Ready pod"
    );
}

#[tokio::test]
async fn should_list_and_delete_a_collection_of_daemon_sets() {
    let (env, nodes, _controller) = setup("e2e-collection", 2).await;
    create(&env, &set_with(&env, json!({"maxUnavailable": 1}))).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let sets = env.api::<DaemonSet>();
    let listed = sets.list(&ListParams::default()).await.expect("list sets");
    assert_eq!(listed.items.len(), 1);
    sets.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the collection");
    eventually("no set left", TIMEOUT, || async {
        let left = sets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", left.items.len()))
        }
    })
    .await;
    wait_no_pods(&env).await;
}

#[tokio::test]
async fn should_verify_changes_to_a_daemon_set_status() {
    let (env, nodes, _controller) = setup("e2e-status", 2).await;
    create(&env, &set_with(&env, json!({"maxUnavailable": 1}))).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_for_set(&env, "the status to count every pod", |s| {
        s.status.as_ref().is_some_and(|st| st.number_ready == 2)
    })
    .await;

    // A condition of someone else's, written through the status subresource, is kept.
    let sets = env.api::<DaemonSet>();
    let custom = json!({"type": "StatusUpdate", "status": "True", "reason": "E2E",
        "message": "Set from e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let mut set = sets.get("agent").await.expect("get set");
    let mut conditions = set
        .status
        .clone()
        .unwrap_or_default()
        .conditions
        .unwrap_or_default();
    conditions.push(serde_json::from_value(custom).expect("a condition"));
    set.status.get_or_insert_with(Default::default).conditions = Some(conditions);
    sets.replace_status("agent", &PostParams::default(), &set)
        .await
        .expect("update status");
    let patch = json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True",
        "reason": "E2E", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    // A merge patch replaces the list: the patched condition stands alone until the controller
    // writes its own back beside it.
    sets.patch_status("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch status");
    consistently(
        "the patched condition to stay",
        Duration::from_secs(3),
        || async {
            let set = sets.get("agent").await.map_err(|e| e.to_string())?;
            match condition(&set, "StatusPatched") {
                Some((status, _)) if status == "True" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
