//! `--target apps/v1`: the same engine on the built-in DaemonSets, against the real local control
//! plane (whose kube-controller-manager runs without its DaemonSet controller), and a takeover of
//! sets the built-in controller made, on a private cluster that starts with it on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use everynode_runtime::Target;
use everynode_testkit::{LocalCluster, TestEnv, consistently, eventually};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

/// A built-in set running `image` on the test's node group, one node at a time.
fn built_in_set(env: &TestEnv, name: &str, image: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": env.group_selector(),
                    "containers": [{"name": "daemon", "image": image}]
                }
            }
        }
    }))
    .expect("a valid apps/v1 DaemonSet")
}

/// desired/current/ready/updated/available/misscheduled, as apps/v1 stores them (zeros omitted).
fn counters(status: &DaemonSetStatus) -> [i32; 6] {
    [
        status.desired_number_scheduled,
        status.current_number_scheduled,
        status.number_ready,
        status.updated_number_scheduled.unwrap_or_default(),
        status.number_available.unwrap_or_default(),
        status.number_misscheduled,
    ]
}

async fn wait_built_in_status(env: &TestEnv, name: &str, expected: [i32; 6]) -> DaemonSet {
    let sets = env.api::<DaemonSet>();
    let what = format!("status of apps/v1 {name} to be {expected:?}, observed");
    eventually(&what, TIMEOUT, || async {
        let set = sets.get(name).await.map_err(|e| e.to_string())?;
        let status = set.status.clone().unwrap_or_default();
        let observed = status.observed_generation >= set.metadata.generation;
        if counters(&status) == expected && observed {
            Ok(set)
        } else {
            Err(format!("{:?}, observed: {observed}", counters(&status)))
        }
    })
    .await
}

async fn revisions_of(env: &TestEnv, name: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .api::<ControllerRevision>()
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .expect("list revisions")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// Pod name → UID of the set's live pods.
async fn pod_uids(env: &TestEnv, name: &str) -> BTreeMap<String, String> {
    set_pods(env, name)
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

async fn set_image(env: &TestEnv, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "daemon", "image": image}]}}}});
    env.api::<DaemonSet>()
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch image");
}

#[tokio::test]
async fn built_in_sets_launch_follow_nodes_roll_out_and_cascade() {
    let env = TestEnv::new("apps-v1").await;
    let mut nodes = env.add_nodes(3).await;
    let controller = start_controller(&env, Target::AppsV1).await;
    wait_until_ready(&controller).await;

    let set = env
        .api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &built_in_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create apps/v1 set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let stored = wait_built_in_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    let status = stored.status.clone().unwrap_or_default();
    // apps/v1 semantics: zero counters are absent, collisionCount untouched.
    assert_eq!(status.number_unavailable, None, "{status:?}");
    assert_eq!(status.collision_count, None, "{status:?}");

    for pod in set_pods(&env, "agent").await {
        let owner = pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .cloned()
            .expect("a controller reference");
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            ("apps/v1", "DaemonSet")
        );
        assert_eq!(Some(owner.uid), set.uid());
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(
            pinned_node(&pod),
            pod.spec.as_ref().and_then(|s| s.node_name.clone())
        );
    }

    // A node joins: everynode (the only DaemonSet controller here) gives it its pod.
    nodes.extend(env.add_nodes(1).await);
    nodes.sort();
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;

    // A rolling update through the built-in API.
    set_image(&env, "agent", "agent:v2").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
    assert_eq!(revisions_of(&env, "agent").await.len(), 2);

    // Foreground deletion: pods and revisions go, then the set.
    env.api::<DaemonSet>()
        .delete(
            "agent",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete set");
    eventually(
        "the set, its pods and revisions to be gone",
        TIMEOUT,
        || async {
            let pods = set_pods(&env, "agent").await.len();
            let revisions = revisions_of(&env, "agent").await.len();
            let set = env
                .api::<DaemonSet>()
                .get_opt("agent")
                .await
                .map_err(|e| e.to_string())?;
            if pods == 0 && revisions == 0 && set.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "{pods} pods, {revisions} revisions, set present: {}",
                    set.is_some()
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn sets_of_the_built_in_controller_are_taken_over_without_restarting_a_pod() {
    let mut cluster = LocalCluster::start(1, true).await;
    let env = TestEnv::on(cluster.info().clone(), "takeover").await;
    let mut nodes = env.add_nodes(3).await;

    // The built-in controller runs the set first.
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &built_in_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create apps/v1 set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let before = wait_built_in_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    let pods_before = pod_uids(&env, "agent").await;
    let revisions_before = revisions_of(&env, "agent").await;
    assert_eq!(revisions_before.len(), 1, "{revisions_before:?}");

    // Hand over: the built-in controller off, everynode on.
    cluster.set_builtin_daemonset_controller(false).await;
    let controller = start_controller(&env, Target::AppsV1).await;
    wait_until_ready(&controller).await;

    // everynode recognises the built-in revision and pods as current: nothing restarts, no
    // revision is added, and the status stays exactly what the built-in controller wrote.
    consistently(
        "the built-in pods, revision and status to stay as they are",
        Duration::from_secs(8),
        || async {
            let pods = pod_uids(&env, "agent").await;
            let revisions = revisions_of(&env, "agent").await;
            let set = env
                .api::<DaemonSet>()
                .get("agent")
                .await
                .map_err(|e| e.to_string())?;
            if pods != pods_before {
                return Err(format!("pods changed: {pods_before:?} -> {pods:?}"));
            }
            if revisions != revisions_before {
                return Err(format!(
                    "revisions changed: {revisions_before:?} -> {revisions:?}"
                ));
            }
            if set.status != before.status {
                return Err(format!(
                    "status changed: {:?} -> {:?}",
                    before.status, set.status
                ));
            }
            Ok(())
        },
    )
    .await;

    // everynode now runs the set: a new node gets its pod, the old pods stay.
    nodes.extend(env.add_nodes(1).await);
    nodes.sort();
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
    let pods_now = pod_uids(&env, "agent").await;
    assert!(
        pods_before
            .iter()
            .all(|(name, uid)| pods_now.get(name) == Some(uid)),
        "the built-in controller's pods were kept: {pods_before:?} -> {pods_now:?}"
    );

    // And rolls it out, keeping the built-in revision as history.
    set_image(&env, "agent", "agent:v2").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
    let revisions = revisions_of(&env, "agent").await;
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert!(revisions.contains(&revisions_before[0]), "{revisions:?}");
    let replaced = set_pods(&env, "agent").await;
    assert!(
        replaced
            .iter()
            .all(|p: &Pod| !pods_before.contains_key(&p.name_any())),
        "every old pod was replaced"
    );

    drop(controller);
    cluster.down().await;
}
