//! A template the apiserver's pod validation refuses never costs a running pod: the controller
//! asks the apiserver first (a server-side dry run of one pod), starts no rollout, and says so
//! in the `TemplateValid` condition and one Event naming the field; other sets keep working.

use std::time::Duration;

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, consistently, eventually};
use kube::api::PostParams;
use serde_json::json;

/// Waits until `TemplateValid` is `status` with a message containing `field`; returns the message.
async fn wait_template_valid(env: &TestEnv, status: &str, field: &str) -> String {
    let set = wait_for_set(
        env,
        &format!("TemplateValid={status} naming {field}"),
        |s| template_valid(s).is_some_and(|(st, message)| st == status && message.contains(field)),
    )
    .await;
    template_valid(&set).map(|(_, m)| m).unwrap_or_default()
}

fn template_valid(set: &DaemonSet) -> Option<(String, String)> {
    set.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "TemplateValid")
        .map(|c| (c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_template_the_apiserver_refuses_costs_no_running_pod() {
    let env = TestEnv::new("bad-template").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let nodes = env.add_nodes(4).await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &set_with(&env, json!({"maxUnavailable": 1})),
    )
    .await
    .unwrap_or_else(|e| panic!("create set: {e}"));
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let before = uids_by_node(&env).await;

    // A mount of a volume the pod does not have: the apiserver refuses every such pod.
    patch_set(
        &sets,
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "agent", "image": "agent:v2",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]
        }]}}}}),
        "mount a missing volume",
    )
    .await;
    let message = wait_template_valid(
        &env,
        "False",
        "spec.template.spec.containers[0].volumeMounts[0].name",
    )
    .await;
    assert!(message.contains("Not found"), "{message}");
    let set = sets.get("agent").await.expect("get set");
    assert_eq!(
        condition(&set, "Progressing"),
        Some(("False".into(), "TemplateRejected".into()))
    );
    consistently("no pod replaced", Duration::from_secs(5), || async {
        let now = uids_by_node(&env).await;
        if now == before {
            Ok(())
        } else {
            Err(format!("before {before:?}, now {now:?}"))
        }
    })
    .await;
    let invalid = events(&env, "InvalidTemplate").await;
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(events(&env, "FailedCreate").await.is_empty());

    // Other sets keep working meanwhile.
    let mut other = set_with(&env, json!({}));
    other.metadata.name = Some("other".into());
    let labels = labels(&[("app", "other")]);
    other.spec.selector.match_labels = Some(labels.clone());
    if let Some(meta) = other.spec.template.metadata.as_mut() {
        meta.labels = Some(labels);
    }
    sets.create(&PostParams::default(), &other)
        .await
        .unwrap_or_else(|e| panic!("create the other set: {e}"));
    wait_one_ready_pod_per_node(&env, "other", &nodes, "agent:v1").await;

    // A bad quantity: the apiserver's refusal names no field, everynode does.
    patch_set(
        &sets,
        json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "agent", "image": "agent:v2",
                            "resources": {"limits": {"cpu": "lots"}}}]
        }}}}),
        "a bad quantity",
    )
    .await;
    let message = wait_template_valid(
        &env,
        "False",
        "spec.template.spec.containers[0].resources.limits[cpu]",
    )
    .await;
    assert!(message.contains("\"lots\" is not a quantity"), "{message}");
    assert_eq!(uids_by_node(&env).await, before);

    // Fixed: the rollout goes on and the condition clears.
    patch_set(
        &sets,
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "agent", "image": "agent:v2", "resources": {"limits": {"cpu": "100m"}}
        }]}}}}),
        "fix the template",
    )
    .await;
    wait_template_valid(&env, "True", "accepts").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    eventually("the rollout to complete", TIMEOUT, || async {
        let set = sets.get("agent").await.map_err(|e| e.to_string())?;
        match condition(&set, "Progressing") {
            Some((_, reason)) if reason == "RolloutComplete" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn duplicate_container_names_are_refused_at_admission() {
    let env = TestEnv::new("duplicate-names").await;
    everynode_testkit::install_crd(&env.client()).await;
    let mut set = set_with(&env, json!({}));
    if let Some(spec) = set.spec.template.spec.as_mut() {
        let first = spec.containers[0].clone();
        spec.containers.push(first);
    }
    let refused = env
        .api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("spec.template.spec.containers[1]") && refused.contains("Duplicate value"),
        "{refused:?}"
    );
}
