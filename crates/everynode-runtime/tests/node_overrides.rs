//! Per-node overrides (`spec.nodeOverrides`) on the local cluster, with the shipped RBAC: the
//! nodes an override matches run its image and resources; a change to the override replaces
//! their pods only; a node that gains the override's label gets its pod; the apiserver refuses
//! a duplicate override or container, naming it; an override that names no container of the
//! template, or whose pods the apiserver refuses, holds the whole revision and says why.

mod common;

use std::collections::BTreeMap;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::json;

const GPU: &str = "example.com/gpu";

/// The override `gpu`: on nodes labelled `example.com/gpu=true`, `container` gets `change`.
fn gpu_override(container: &str, change: serde_json::Value) -> serde_json::Value {
    let mut entry = change;
    entry["name"] = json!(container);
    json!([{
        "name": "gpu",
        "nodeSelector": {"matchLabels": {GPU: "true"}},
        "containers": [entry]
    }])
}

/// The memory limit of a pod's first container.
fn memory_limit(pod: &Pod) -> Option<String> {
    let container = pod.spec.as_ref()?.containers.first()?;
    let limits = container.resources.as_ref()?.limits.as_ref()?;
    limits.get("memory").map(|q| q.0.clone())
}

/// Waits until every node in `want` runs one Ready pod with that image (and memory limit).
async fn wait_pods(env: &TestEnv, want: &BTreeMap<String, (&str, Option<&str>)>) {
    eventually(&format!("pods {want:?}"), TIMEOUT, || async {
        let pods: Vec<Pod> = set_pods(env, "agent")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let got: BTreeMap<String, (String, Option<String>, bool)> = pods
            .iter()
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                let ready = everynode_testkit::pods::is_ready(p);
                Some((node, (image_of(p)?, memory_limit(p), ready)))
            })
            .collect();
        let matches = pods.len() == want.len()
            && want.iter().all(|(node, (image, memory))| {
                got.get(node)
                    .is_some_and(|(i, m, ready)| i == image && m.as_deref() == *memory && *ready)
            });
        matches.then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
}

/// The message of the set's `TemplateValid` condition once it is `False` and mentions `what`.
async fn wait_template_invalid(env: &TestEnv, what: &str) -> String {
    let set = wait_for_set(env, &format!("TemplateValid=False naming {what}"), |s| {
        template_valid(s)
            .is_some_and(|(status, message)| status == "False" && message.contains(what))
    })
    .await;
    template_valid(&set).map(|(_, m)| m).unwrap_or_default()
}

fn template_valid(set: &DaemonSet) -> Option<(String, String)> {
    let conditions = set.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == "TemplateValid")?;
    Some((c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn an_override_changes_its_nodes_only_and_a_bad_one_holds_the_revision() {
    let env = TestEnv::new("overrides").await;
    let nodes = env.add_nodes(4).await;
    for gpu in &nodes[2..] {
        env.label_node(gpu, GPU, Some("true")).await;
    }
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let mut set = set_with(&env, json!({"maxUnavailable": 1}));
    set.spec.node_overrides = serde_json::from_value(gpu_override(
        "agent",
        json!({"image": "agent:gpu-1", "resources": {"limits": {"memory": "2Gi"}}}),
    ))
    .expect("override decodes");
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create the set");
    let plain = |image: &'static str| (image, None);
    let gpu = |image: &'static str| (image, Some("2Gi"));
    let want = |a, b| -> BTreeMap<String, (&str, Option<&str>)> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), if i < 2 { a } else { b }))
            .collect()
    };
    wait_pods(&env, &want(plain("agent:v1"), gpu("agent:gpu-1"))).await;
    let before = uids_by_node(&env).await;

    // A new override image: the GPU nodes' pods are replaced, the others stay.
    let change = json!({"image": "agent:gpu-2", "resources": {"limits": {"memory": "2Gi"}}});
    patch_set(
        &sets,
        json!({"spec": {"nodeOverrides": gpu_override("agent", change)}}),
        "new override image",
    )
    .await;
    wait_pods(&env, &want(plain("agent:v1"), gpu("agent:gpu-2"))).await;
    wait_for_set(&env, "rollout complete", |s| {
        let st = s.status.as_ref();
        st.and_then(|s| s.updated_number_scheduled) == Some(4)
            && st.and_then(|s| s.number_available) == Some(4)
            && st.and_then(|s| s.observed_generation) == s.metadata.generation
    })
    .await;
    let after = uids_by_node(&env).await;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            before[node].0 == after[node].0,
            i < 2,
            "node {node}: only the GPU nodes' pods are replaced ({before:?} → {after:?})"
        );
    }

    // A node that gains the GPU label gets the override's pod.
    env.label_node(&nodes[1], GPU, Some("true")).await;
    let mut relabelled = want(plain("agent:v1"), gpu("agent:gpu-2"));
    relabelled.insert(nodes[1].clone(), gpu("agent:gpu-2"));
    wait_pods(&env, &relabelled).await;
    let after = uids_by_node(&env).await;

    // A new image with an override of a container the template lacks: nothing is replaced.
    let mut patch = new_image("agent:v2");
    patch["spec"]["nodeOverrides"] = gpu_override("agnet", json!({"image": "agent:gpu-3"}));
    patch_set(&sets, patch, "override of an unknown container").await;
    let message = wait_template_invalid(&env, "agnet").await;
    assert!(
        message.contains("spec.nodeOverrides[gpu].containers[agnet]")
            && message.contains("use one of: agent"),
        "{message}"
    );
    assert_eq!(uids_by_node(&env).await, after, "no pod replaced");

    // An override whose pods the apiserver refuses (requests above limits): held as well.
    let refused =
        json!({"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "1Gi"}}});
    patch_set(
        &sets,
        json!({"spec": {"nodeOverrides": gpu_override("agent", refused)}}),
        "override the apiserver refuses",
    )
    .await;
    let message = wait_template_invalid(&env, "with spec.nodeOverrides[gpu]").await;
    assert!(message.contains("resources.requests"), "{message}");
    assert_eq!(uids_by_node(&env).await, after, "no pod replaced");
}

#[tokio::test]
async fn the_apiserver_names_a_duplicate_override_or_container() {
    let env = TestEnv::new("overrides-dup").await;
    everynode_testkit::install_crd(&env.client()).await;
    let sets = env.api::<DaemonSet>();
    let mut twice = gpu_override("agent", json!({"image": "a:1"}));
    if let Some(containers) = twice[0]["containers"].as_array_mut() {
        containers.push(json!({"name": "agent", "image": "a:2"}));
    }
    let mut two_gpus = gpu_override("agent", json!({"image": "a:1"}));
    let first = two_gpus[0].clone();
    if let Some(list) = two_gpus.as_array_mut() {
        list.push(first);
    }
    for (overrides, field) in [
        (twice, "spec.nodeOverrides[0].containers[1]"),
        (two_gpus, "spec.nodeOverrides[1]"),
    ] {
        let mut set = set_with(&env, json!({"maxUnavailable": 1}));
        set.spec.node_overrides = serde_json::from_value(overrides).expect("decodes");
        let err = sets
            .create(&PostParams::default(), &set)
            .await
            .expect_err("a duplicate is refused");
        let message = err.to_string();
        assert!(
            message.contains(field) && message.contains("Duplicate value"),
            "{message}"
        );
    }
}
