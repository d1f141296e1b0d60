//! `deploy/` applies cleanly: every manifest passes a server-side dry-run against the local
//! cluster (the namespace is created for real so namespaced objects can be checked).

mod common;

use common::{apply, documents, service_account_client, start_controller_as};
use everynode_runtime::Target;
use everynode_testkit::TestEnv;
use kube::Api;

#[tokio::test]
async fn deploy_manifests_pass_a_server_side_dry_run() {
    let env = TestEnv::new("deploy-dry-run").await;
    let client = env.client();
    for namespace in documents("namespace.yaml") {
        apply(&client, &namespace, false).await.expect("namespace");
    }
    let mut checked = Vec::new();
    for file in [
        "crds/daemonsets.everynode.dev.yaml",
        "rbac.yaml",
        "user-roles.yaml",
        "controller.yaml",
    ] {
        for object in documents(file) {
            apply(&client, &object, true)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            checked.push(format!(
                "{}/{}",
                object.types.map(|t| t.kind).unwrap_or_default(),
                object.metadata.name.unwrap_or_default()
            ));
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "ClusterRole/everynode-controller",
            "ClusterRole/everynode-edit",
            "ClusterRole/everynode-view",
            "ClusterRoleBinding/everynode-controller",
            "CustomResourceDefinition/daemonsets.everynode.dev",
            "Deployment/everynode-controller",
            "PodDisruptionBudget/everynode-controller",
            "Role/everynode-leader-election",
            "RoleBinding/everynode-leader-election",
            "Service/everynode-metrics",
            "ServiceAccount/everynode",
        ]
    );
}

#[tokio::test]
async fn the_controller_works_with_exactly_the_rbac_in_deploy() {
    use everynode_testkit::{eventually, pods};
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{ListParams, PostParams};

    let env = TestEnv::new("rbac").await;
    let admin = env.client();
    for file in [
        "namespace.yaml",
        "crds/daemonsets.everynode.dev.yaml",
        "rbac.yaml",
    ] {
        for object in documents(file) {
            apply(&admin, &object, false)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    let nodes = env.add_nodes(2).await;
    let sa = service_account_client(&env).await;
    let sa_for_apps = sa.clone();

    // nothing on Secrets
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), env.namespace());
    let denied = secrets
        .list(&ListParams::default())
        .await
        .expect_err("secrets must be forbidden");
    assert!(denied.to_string().contains("forbidden"), "{denied}");

    // the controller, running as the ServiceAccount, does its whole job
    let controller = start_controller_as(sa, &env, Target::Everynode).await;
    let set: everynode_api::DaemonSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": env.group_selector(), "containers": [{"name": "c", "image": "agent:v1"}]}
            }
        }
    }))
    .expect("set");
    let sets: Api<everynode_api::DaemonSet> = env.api();
    eventually(
        "the set to be created",
        std::time::Duration::from_secs(30),
        || async {
            sets.create(&PostParams::default(), &set)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
    eventually(
        "pods and status written by the ServiceAccount",
        std::time::Duration::from_secs(60),
        || async {
            let pods = env
                .api::<Pod>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = pods.items.iter().filter(|p| pods::is_ready(p)).count();
            let status = sets
                .get("agent")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if ready == nodes.len()
                && status.number_ready == 2
                && status.observed_generation == Some(1)
            {
                Ok(())
            } else {
                Err(format!("{ready} ready pods, status {status:?}"))
            }
        },
    )
    .await;
    drop(controller);

    // The same ServiceAccount runs the built-in apps/v1 sets with --target apps/v1.
    let _controller = start_controller_as(sa_for_apps, &env, Target::AppsV1).await;
    let built_in: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "builtin", "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": "builtin"}},
            "template": {
                "metadata": {"labels": {"app": "builtin"}},
                "spec": {"nodeSelector": env.group_selector(), "containers": [{"name": "c", "image": "agent:v1"}]}
            }
        }
    }))
    .expect("apps/v1 set");
    let built_in_sets: Api<k8s_openapi::api::apps::v1::DaemonSet> = env.api();
    built_in_sets
        .create(&PostParams::default(), &built_in)
        .await
        .expect("create apps/v1 set");
    eventually(
        "apps/v1 pods and status written by the ServiceAccount",
        std::time::Duration::from_secs(60),
        || async {
            let pods = env
                .api::<Pod>()
                .list(&ListParams::default().labels("app=builtin"))
                .await
                .map_err(|e| e.to_string())?;
            let ready = pods.items.iter().filter(|p| pods::is_ready(p)).count();
            let status = built_in_sets
                .get("builtin")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if ready == nodes.len() && status.number_ready == 2 {
                Ok(())
            } else {
                Err(format!("{ready} ready pods, status {status:?}"))
            }
        },
    )
    .await;
}
