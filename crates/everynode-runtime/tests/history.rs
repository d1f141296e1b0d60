//! Revision history and rollouts of upstream's integration suite (§9.4) against the real local
//! control plane: a hash collision, duplicate current revisions, and a surge rollout that moves
//! pods between tainted nodes by changing tolerations.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use everynode_api::DaemonSet;
use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, consistently, eventually, pods};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// A set running `image` on the test's node group (everynode API).
fn agent(env: &TestEnv, name: &str, image: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "everynode.dev/v1alpha1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": env.group_selector(),
                    "containers": [{"name": "daemon", "image": image}]
                }
            }
        }
    }))
    .expect("a valid set")
}

async fn revisions(env: &TestEnv) -> Vec<ControllerRevision> {
    let mut list = env
        .api::<ControllerRevision>()
        .list(&ListParams::default())
        .await
        .expect("list revisions")
        .items;
    list.sort_by_key(ResourceExt::name_any);
    list
}

fn hash_label(obj: &impl Resource) -> Option<String> {
    obj.meta()
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .cloned()
}

#[tokio::test]
async fn a_foreign_revision_under_the_next_name_raises_the_collision_count_once() {
    let env = TestEnv::new("hist-collision").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    sets.create(&PostParams::default(), &agent(&env, "agent", "agent:v1"))
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    // The name the v2 template hashes to is taken by a revision with other content.
    let mut next = sets.get("agent").await.expect("get set").spec.template;
    if let Some(spec) = next.spec.as_mut() {
        spec.containers[0].image = Some("agent:v2".into());
    }
    let taken = format!("agent-{}", everynode_core::hash_template(&next, None));
    let foreign = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(taken.clone()),
            labels: Some(BTreeMap::from([("owner".into(), "someone-else".into())])),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(json!({"spec": {"something": "else"}}))),
        revision: 1,
    };
    env.api::<ControllerRevision>()
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create the foreign revision");

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "daemon", "image": "agent:v2"}]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("update image");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;

    let set = sets.get("agent").await.expect("get set");
    let status = set.status.unwrap_or_default();
    assert_eq!(status.collision_count, Some(1), "{status:?}");
    let current = format!("agent-{}", everynode_core::hash_template(&next, Some(1)));
    let names: Vec<String> = revisions(&env)
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert!(names.contains(&current), "{names:?}");
    let untouched = env
        .api::<ControllerRevision>()
        .get(&taken)
        .await
        .expect("the foreign revision stays");
    assert_eq!(untouched.data, foreign.data);
    assert!(untouched.owner_references().is_empty());
    for pod in set_pods(&env, "agent").await {
        assert_eq!(
            hash_label(&pod).as_deref(),
            current.strip_prefix("agent-"),
            "{}",
            pod.name_any()
        );
    }
}

#[tokio::test]
async fn duplicate_current_revisions_are_deduplicated_and_pods_relabelled_without_restarts() {
    let env = TestEnv::new("hist-dedup").await;
    let mut nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let set = sets
        .create(&PostParams::default(), &agent(&env, "agent", "agent:v1"))
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let uids_before: Vec<Option<String>> = set_pods(&env, "agent")
        .await
        .iter()
        .map(ResourceExt::uid)
        .collect();

    // Inject a second current revision: same data, another hash, a higher number.
    let original = revisions(&env).await.pop().expect("one revision");
    let mut labels = original.labels().clone();
    labels.insert(CONTROLLER_REVISION_HASH.into(), "dupe".into());
    let duplicate = ControllerRevision {
        metadata: ObjectMeta {
            name: Some("agent-dupe".into()),
            labels: Some(labels),
            owner_references: Some(vec![set.controller_owner_ref(&()).expect("set has a uid")]),
            ..ObjectMeta::default()
        },
        data: original.data.clone(),
        revision: original.revision + 1,
    };
    env.api::<ControllerRevision>()
        .create(&PostParams::default(), &duplicate)
        .await
        .expect("create the duplicate");

    // A resync (a node joins): the highest-numbered duplicate survives, the pods carry its hash.
    nodes.extend(env.add_nodes(1).await);
    nodes.sort();
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    eventually(
        "one revision left and every pod relabelled",
        TIMEOUT,
        || async {
            let names: Vec<String> = revisions(&env)
                .await
                .iter()
                .map(ResourceExt::name_any)
                .collect();
            let hashes: Vec<Option<String>> = set_pods(&env, "agent")
                .await
                .iter()
                .map(hash_label)
                .collect();
            if names == ["agent-dupe"] && hashes.iter().all(|h| h.as_deref() == Some("dupe")) {
                Ok(())
            } else {
                Err(format!("revisions {names:?}, pod hashes {hashes:?}"))
            }
        },
    )
    .await;
    let uids_after: Vec<Option<String>> = set_pods(&env, "agent")
        .await
        .iter()
        .map(ResourceExt::uid)
        .collect();
    assert!(
        uids_before.iter().all(|uid| uids_after.contains(uid)),
        "relabelled, not replaced: {uids_before:?} -> {uids_after:?}"
    );
}

fn tolerate(zones: &[&str]) -> serde_json::Value {
    let tolerations: Vec<Toleration> = zones
        .iter()
        .map(|zone| Toleration {
            key: Some(format!("zone-{zone}")),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        })
        .collect();
    json!({"spec": {"template": {"spec": {"tolerations": tolerations}}}})
}

/// Live (not terminating) pods of the set: (node, Ready).
async fn live_pods(env: &TestEnv, set: &str) -> Vec<(String, bool)> {
    set_pods(env, set)
        .await
        .iter()
        .filter(|p: &&Pod| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = pinned_node(p).unwrap_or_default();
            (node, pods::is_ready(p))
        })
        .collect()
}

#[tokio::test]
async fn a_surge_rollout_moves_pods_between_tainted_nodes_by_tolerations() {
    let env = TestEnv::new("hist-tolerations").await;
    let mut zone_nodes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for zone in ["y", "z", "common"] {
        let names = env
            .add_nodes_with(2, |node| {
                node.spec.get_or_insert_default().taints = Some(vec![Taint {
                    key: format!("zone-{zone}"),
                    effect: "NoSchedule".into(),
                    ..Taint::default()
                }]);
            })
            .await;
        zone_nodes.insert(zone, names);
    }
    let nodes_of = |zones: &[&str]| {
        let mut names: Vec<String> = zones
            .iter()
            .flat_map(|z| zone_nodes[z].iter().cloned())
            .collect();
        names.sort();
        names
    };
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let mut set = agent(&env, "agent", "agent:v1");
    set.spec.update_strategy = Some(everynode_api::DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(everynode_api::RollingUpdateDaemonSet {
            max_surge: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            max_unavailable: Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0),
            ),
            ..Default::default()
        }),
    });
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create set");
    let apply_tolerations = |zones: &'static [&'static str]| {
        let sets = sets.clone();
        async move {
            sets.patch(
                "agent",
                &PatchParams::default(),
                &Patch::Merge(&tolerate(zones)),
            )
            .await
            .expect("patch tolerations");
        }
    };

    apply_tolerations(&["y", "common"]).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes_of(&["y", "common"]), "agent:v1").await;

    // y+common → z+common: z nodes get new pods, common nodes surge one at a time, y pods go.
    apply_tolerations(&["z", "common"]).await;
    let during = async {
        consistently(
            "at most 7 live pods during the rollout (4 old/new + 2 new on z + 1 surge)",
            Duration::from_secs(6),
            || async {
                let live = live_pods(&env, "agent").await.len();
                if live <= 7 {
                    Ok(())
                } else {
                    Err(format!("{live} live pods"))
                }
            },
        )
        .await;
    };
    during.await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes_of(&["z", "common"]), "agent:v1").await;
    let status = sets
        .get("agent")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    assert_eq!(
        (
            status.desired_number_scheduled,
            status.updated_number_scheduled
        ),
        (4, Some(4)),
        "{status:?}"
    );

    apply_tolerations(&["y", "z", "common"]).await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes_of(&["y", "z", "common"]), "agent:v1").await;

    apply_tolerations(&[]).await;
    eventually("no pod left", TIMEOUT, || async {
        let live = live_pods(&env, "agent").await;
        if live.is_empty() {
            Ok(())
        } else {
            Err(format!("{live:?}"))
        }
    })
    .await;
}
