//! `deploy/` applies cleanly: every manifest passes a server-side dry-run against the local
//! cluster (the namespace is created for real so namespaced objects can be checked).

use everynode_testkit::TestEnv;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, ResourceExt};

fn documents(file: &str) -> Vec<DynamicObject> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).expect("yaml document");
            serde_yaml::from_value(value).expect("a Kubernetes object")
        })
        .collect()
}

use serde::Deserialize;

async fn apply(client: &kube::Client, object: &DynamicObject, dry_run: bool) -> Result<(), String> {
    let types = object
        .types
        .clone()
        .ok_or("object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
    let (resource, caps): (ApiResource, _) = pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{gvk:?}: {e}"))?;
    let api: Api<DynamicObject> = match (caps.scope, object.namespace()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("everynode-deploy-test").force();
    params.dry_run = dry_run;
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} {}: {e}", types.kind, object.name_any()))
}

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
            "ClusterRoleBinding/everynode-controller",
            "CustomResourceDefinition/daemonsets.everynode.dev",
            "Deployment/everynode-controller",
            "Role/everynode-leader-election",
            "RoleBinding/everynode-leader-election",
            "ServiceAccount/everynode",
        ]
    );
}
