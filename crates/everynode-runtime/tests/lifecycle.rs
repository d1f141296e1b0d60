//! A set's life around its name: deleted with `--cascade=orphan` and created again, it adopts
//! its pods without restarting one; deleted and re-created under the same name while its first
//! pods are still being created, the new set gets exactly one pod per node and the old set's
//! pods go.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, eventually};
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use serde_json::json;

/// Live pods per node: (owner UID, pod UID).
async fn owners_by_node(env: &TestEnv) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for pod in set_pods(env, "agent").await {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let owner = pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.clone())
            .unwrap_or_default();
        if let Some(node) = pinned_node(&pod) {
            out.entry(node)
                .or_default()
                .push((owner, pod.uid().unwrap_or_default()));
        }
    }
    out
}

#[tokio::test]
async fn a_set_deleted_with_orphans_and_created_again_adopts_its_pods_without_a_restart() {
    let env = TestEnv::new("orphan-readopt").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let nodes = env.add_nodes(3).await;
    let sets = env.api::<DaemonSet>();
    sets.create(&PostParams::default(), &set_with(&env, json!({})))
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let before = uids_by_node(&env).await;

    sets.delete(
        "agent",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("delete with orphans");
    eventually("the pods to be orphaned", TIMEOUT, || async {
        let owners = owners_by_node(&env).await;
        let orphans = owners
            .values()
            .flatten()
            .filter(|(o, _)| o.is_empty())
            .count();
        if orphans == nodes.len() {
            Ok(())
        } else {
            Err(format!("{owners:?}"))
        }
    })
    .await;

    eventually("the set to be gone", TIMEOUT, || async {
        match sets.get_opt("agent").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|s| s.map(|s| s.metadata.finalizers))
            )),
        }
    })
    .await;
    let again = sets
        .create(&PostParams::default(), &set_with(&env, json!({})))
        .await
        .expect("create the set again");
    let new_uid = again.uid().unwrap_or_default();
    eventually("the new set to adopt every pod", TIMEOUT, || async {
        let owners = owners_by_node(&env).await;
        let adopted = owners
            .values()
            .flatten()
            .filter(|(o, _)| *o == new_uid)
            .count();
        if adopted == nodes.len() {
            Ok(())
        } else {
            Err(format!("{owners:?}"))
        }
    })
    .await;
    wait_for_set(&env, "the status to count the adopted pods", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.number_ready == 3 && st.updated_number_scheduled == Some(3))
    })
    .await;
    assert_eq!(uids_by_node(&env).await, before, "a pod was replaced");
}

#[tokio::test]
async fn a_set_recreated_under_its_name_while_creating_gets_one_pod_per_node() {
    let env = TestEnv::new("same-name").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let nodes = env.add_nodes(8).await;
    let sets = env.api::<DaemonSet>();
    let first = sets
        .create(&PostParams::default(), &set_with(&env, json!({})))
        .await
        .expect("create set");
    let first_uid = first.uid().unwrap_or_default();
    // While the first pods are being created (slow start: 1, 2, 4, ...).
    tokio::time::sleep(Duration::from_millis(150)).await;
    sets.delete("agent", &DeleteParams::background())
        .await
        .expect("delete set");
    eventually("the first set to be gone", TIMEOUT, || async {
        match sets.get_opt("agent").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let second = sets
        .create(&PostParams::default(), &set_with(&env, json!({})))
        .await
        .expect("create the set again");
    let second_uid = second.uid().unwrap_or_default();
    assert_ne!(first_uid, second_uid);

    eventually(
        "one pod of the new set per node, none of the old",
        TIMEOUT,
        || async {
            let owners = owners_by_node(&env).await;
            let ok = owners.len() == nodes.len()
                && owners
                    .values()
                    .all(|pods| pods.len() == 1 && pods[0].0 == second_uid);
            if ok {
                Ok(())
            } else {
                Err(format!("{owners:?}"))
            }
        },
    )
    .await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
}
