//! The controller under the RBAC it ships with: a write the apiserver refuses (403) is recorded
//! in the status and an Event naming the verb, resource and the role to grant it in, and stops
//! no other step — a node that joins still gets its pod.

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, eventually};
use kube::ResourceExt;
use kube::api::{DynamicObject, PostParams};
use serde_json::json;

/// A ServiceAccount bound to the shipped ClusterRole less `update` on daemonsets (what the
/// automatic rollback needs), for this test only. Returns its name.
async fn account_without_set_updates(env: &TestEnv) -> String {
    let admin = env.client();
    install_deploy_rbac(&admin).await;
    let name = format!("everynode-{}", env.namespace());
    let mut role = documents("rbac.yaml")
        .into_iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "ClusterRole"))
        .expect("deploy/rbac.yaml has a ClusterRole");
    role.metadata = Default::default();
    role.metadata.name = Some(name.clone());
    for rule in role.data["rules"].as_array_mut().into_iter().flatten() {
        if rule["resources"] == json!(["daemonsets"]) {
            let verbs = rule["verbs"].as_array_mut().expect("verbs");
            verbs.retain(|v| v != "update");
        }
    }
    let account: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": SERVICE_ACCOUNT_NAMESPACE}
    }))
    .expect("ServiceAccount");
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name,
                      "namespace": SERVICE_ACCOUNT_NAMESPACE}]
    }))
    .expect("ClusterRoleBinding");
    for object in [&account, &role, &binding] {
        apply(&admin, object, false)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", object.name_any()));
    }
    name
}

fn reconcile_condition(set: &DaemonSet) -> Option<(String, String, String)> {
    set.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ReconcileSucceeded")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_refused_rollback_is_recorded_and_a_joining_node_still_gets_its_pod() {
    let env = TestEnv::new("forbidden-rollback").await;
    let account = account_without_set_updates(&env).await;
    let _controller =
        start_controller_as(token_client(&env, &account).await, &env, Target::Everynode).await;
    let nodes = env.add_nodes(3).await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &set_with(
            &env,
            json!({"maxUnavailable": 1, "progressDeadlineSeconds": 5, "failurePolicy": "Rollback"}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("create set: {e}"));
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_for_set(&env, "a stable revision", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.stable_revision.is_some())
    })
    .await;

    patch_set(&sets, bad_revision(), "bad revision").await;
    let refused = wait_for_set(&env, "ReconcileSucceeded=False (Forbidden)", |s| {
        reconcile_condition(s)
            .is_some_and(|(status, reason, _)| status == "False" && reason == "Forbidden")
    })
    .await;
    let (_, _, message) = reconcile_condition(&refused).unwrap_or_default();
    for words in [
        "rolling DaemonSet agent back",
        "cannot update resource \"daemonsets\" in API group \"everynode.dev\"",
        "everynode-controller",
    ] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    eventually(
        "a ReconcileFailed Event naming the refused verb",
        TIMEOUT,
        || async {
            let found = events(&env, "ReconcileFailed").await;
            if found
                .iter()
                .any(|m| m.contains("cannot update resource \"daemonsets\""))
            {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        },
    )
    .await;

    // Nothing else is blocked: a joining node gets its pod and the status counts it.
    let joined = env.add_nodes(1).await;
    eventually("a pod on the joining node", TIMEOUT, || async {
        let pods = set_pods(&env, "agent").await;
        if pods
            .iter()
            .any(|p| pinned_node(p).as_deref() == Some(joined[0].as_str()))
        {
            Ok(())
        } else {
            Err(format!("{} pods, none on {}", pods.len(), joined[0]))
        }
    })
    .await;
    wait_for_set(&env, "4 desired nodes in the status", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.desired_number_scheduled == 4)
    })
    .await;
}
