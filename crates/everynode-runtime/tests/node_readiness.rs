//! Node readiness gates (`spec.nodeReadiness`) on the local cluster, with the shipped RBAC:
//! nodes join with the gate's taint and another one; the taint comes off a node only when every
//! set declaring it that runs there has an available pod; the other taint stays; deleting the
//! set a node waits for lets the node go.

mod common;

use std::time::Duration;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, consistently, eventually};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

/// The taints of `node`, as `key:effect`, sorted.
async fn taints_of(env: &TestEnv, node: &str) -> Vec<String> {
    let node = kube::Api::<Node>::all(env.client())
        .get(node)
        .await
        .expect("read node");
    let mut taints: Vec<String> = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    taints.sort();
    taints
}

/// `status.gatedNodes` of set `name` once it is `want`.
async fn wait_gated(env: &TestEnv, name: &str, want: i32) {
    let sets = env.api::<DaemonSet>();
    eventually(
        &format!("{name} counts {want} gated node(s)"),
        Duration::from_secs(30),
        || async {
            let set = sets.get(name).await.map_err(|e| e.to_string())?;
            let gated = set.status.and_then(|s| s.gated_nodes);
            (gated == Some(want))
                .then_some(())
                .ok_or(format!("{gated:?}"))
        },
    )
    .await;
}

fn gated_set(env: &TestEnv, name: &str, key: &str, node_selector: serde_json::Value) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "nodeReadiness": {"taint": {"key": key, "effect": "NoSchedule"}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": node_selector,
                         "containers": [{"name": "c", "image": format!("{name}:v1")}]}
            }
        }
    }))
    .expect("the test set decodes")
}

#[tokio::test]
async fn the_gate_opens_when_every_set_declaring_it_is_available_and_touches_no_other_taint() {
    let env = TestEnv::new("gate").await;
    let key = format!("gate.everynode.dev/{}", env.namespace());
    let keep = "keep.example.com/other";
    let gate_key = key.clone();
    let nodes = env
        .add_nodes_with(3, move |node: &mut Node| {
            node.spec.get_or_insert_default().taints = Some(vec![
                Taint {
                    key: gate_key.clone(),
                    effect: "NoSchedule".into(),
                    ..Taint::default()
                },
                Taint {
                    key: keep.into(),
                    effect: "PreferNoSchedule".into(),
                    ..Taint::default()
                },
            ]);
        })
        .await;
    env.label_node(&nodes[0], "role", Some("storage")).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &gated_set(&env, "agent", &key, json!(env.group_selector())),
    )
    .await
    .expect("create agent");
    // `csi` runs on node 0 only, and its pods never become ready.
    let mut csi_selector = json!(env.group_selector());
    csi_selector["role"] = json!("storage");
    let mut csi = gated_set(&env, "csi", &key, csi_selector);
    csi.spec
        .template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(
            everynode_testkit::SIMULATE_LABEL.into(),
            everynode_testkit::NEVER_READY.into(),
        );
    sets.create(&PostParams::default(), &csi)
        .await
        .expect("create csi");

    let open = vec![format!("{keep}:PreferNoSchedule")];
    let gated = vec![
        format!("{key}:NoSchedule"),
        format!("{keep}:PreferNoSchedule"),
    ];
    eventually(
        "nodes 1 and 2 let go, the other taint kept",
        Duration::from_secs(60),
        || async {
            let now = [
                taints_of(&env, &nodes[1]).await,
                taints_of(&env, &nodes[2]).await,
            ];
            (now[0] == open && now[1] == open)
                .then_some(())
                .ok_or(format!("{now:?}"))
        },
    )
    .await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    consistently("node 0 waits for csi", Duration::from_secs(3), || async {
        let now = taints_of(&env, &nodes[0]).await;
        (now == gated).then_some(()).ok_or(format!("{now:?}"))
    })
    .await;

    wait_gated(&env, "agent", 1).await;

    // The set node 0 waits for goes: its gate goes with it.
    sets.delete("csi", &DeleteParams::default())
        .await
        .expect("delete csi");
    eventually(
        "node 0 let go once csi is gone",
        Duration::from_secs(60),
        || async {
            let now = taints_of(&env, &nodes[0]).await;
            (now == open).then_some(()).ok_or(format!("{now:?}"))
        },
    )
    .await;
    wait_gated(&env, "agent", 0).await;
}

/// Sets the Ready condition of `pod` as a kubelet would.
async fn set_ready(env: &TestEnv, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"conditions": [{
        "type": "Ready", "status": status,
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()
    }]}});
    env.api::<k8s_openapi::api::core::v1::Pod>()
        .patch_status(
            pod,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .expect("patch pod status");
}

#[tokio::test]
async fn continuous_puts_the_taint_back_when_the_pod_stays_unavailable() {
    let env = TestEnv::new("gate-cont").await;
    let key = format!("gate.everynode.dev/{}", env.namespace());
    let gate_key = key.clone();
    let nodes = env
        .add_nodes_with(1, move |node: &mut Node| {
            node.spec.get_or_insert_default().taints = Some(vec![Taint {
                key: gate_key.clone(),
                effect: "NoExecute".into(),
                ..Taint::default()
            }]);
        })
        .await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let mut set = gated_set(&env, "agent", &key, json!(env.group_selector()));
    let gate = set.spec.node_readiness.as_mut().expect("a gate");
    gate.enforce = Some("Continuous".into());
    gate.grace_seconds = Some(2);
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .expect("create agent");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let node = &nodes[0];
    eventually("the node let go", Duration::from_secs(60), || async {
        let now = taints_of(&env, node).await;
        now.is_empty().then_some(()).ok_or(format!("{now:?}"))
    })
    .await;

    // The pod stops being ready: after the grace the taint is back, as NoSchedule.
    let pod = set_pods(&env, "agent").await[0]
        .metadata
        .name
        .clone()
        .unwrap_or_default();
    set_ready(&env, &pod, false).await;
    let back = vec![format!("{key}:NoSchedule")];
    eventually(
        "the taint back after the grace",
        Duration::from_secs(30),
        || async {
            let now = taints_of(&env, node).await;
            (now == back).then_some(()).ok_or(format!("{now:?}"))
        },
    )
    .await;
    set_ready(&env, &pod, true).await;
    eventually("the node let go again", Duration::from_secs(30), || async {
        let now = taints_of(&env, node).await;
        now.is_empty().then_some(()).ok_or(format!("{now:?}"))
    })
    .await;
}
