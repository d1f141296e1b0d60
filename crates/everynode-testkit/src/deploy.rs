//! The shipped manifests of `deploy/` in tests: apply them, read them, and act as the
//! ServiceAccount they bind, with a token the apiserver issued (as a deployed pod does).

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};

use crate::TestEnv;

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The ServiceAccount `deploy/rbac.yaml` binds.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:everynode-system:everynode";

/// Applies `deploy/namespace.yaml` and `deploy/rbac.yaml` (server-side, idempotent).
pub async fn install_deploy_rbac(admin: &kube::Client) {
    for file in ["namespace.yaml", "rbac.yaml"] {
        for object in documents(file) {
            apply(admin, &object, false)
                .await
                .unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
        }
    }
}

/// The objects of one manifest file under `deploy/`.
pub fn documents(file: &str) -> Vec<DynamicObject> {
    use serde::Deserialize;
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml_ng::Value::deserialize(doc).expect("yaml document");
            serde_yaml_ng::from_value(value).expect("a Kubernetes object")
        })
        .collect()
}

/// Server-side applies `object` (a dry run when `dry_run`).
pub async fn apply(
    client: &kube::Client,
    object: &DynamicObject,
    dry_run: bool,
) -> Result<(), String> {
    let types = object
        .types
        .clone()
        .ok_or("object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
    let (resource, caps): (ApiResource, _) = pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{gvk:?}: {e}"))?;
    let api: kube::Api<DynamicObject> = match (caps.scope, object.namespace()) {
        (Scope::Namespaced, Some(ns)) => kube::Api::namespaced_with(client.clone(), &ns, &resource),
        _ => kube::Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("everynode-deploy-test").force();
    params.dry_run = dry_run;
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} {}: {e}", types.kind, object.name_any()))
}

/// Namespace of the ServiceAccount `deploy/rbac.yaml` binds.
pub const SERVICE_ACCOUNT_NAMESPACE: &str = "everynode-system";
/// Name of the ServiceAccount `deploy/rbac.yaml` binds.
pub const SERVICE_ACCOUNT_NAME: &str = "everynode";

/// A client that authenticates as the controller's ServiceAccount, with a token the apiserver
/// issued for it (TokenRequest), as a deployed pod's projected token does. Nothing of the
/// admin's credentials is kept.
pub async fn service_account_client(env: &TestEnv) -> kube::Client {
    token_client(env, SERVICE_ACCOUNT_NAME).await
}

/// A client with a token of the ServiceAccount `name` in [`SERVICE_ACCOUNT_NAMESPACE`].
pub async fn token_client(env: &TestEnv, name: &str) -> kube::Client {
    let token = service_account_token(env, name).await;
    let kubeconfig =
        kube::config::Kubeconfig::read_from(env.cluster().kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    kube::Client::try_from(config).expect("client")
}

/// A token of the ServiceAccount `name` in [`SERVICE_ACCOUNT_NAMESPACE`] (TokenRequest, an hour).
pub async fn service_account_token(env: &TestEnv, name: &str) -> String {
    service_account_token_in(env, SERVICE_ACCOUNT_NAMESPACE, name).await
}

/// A token of the ServiceAccount `namespace`/`name` (TokenRequest, an hour).
pub async fn service_account_token_in(env: &TestEnv, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(env.client(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &Default::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for ServiceAccount {namespace}/{name}: {e}"))
        .status
        .and_then(|s| s.token)
        .unwrap_or_else(|| panic!("the TokenRequest for {namespace}/{name} returned no token"))
}

/// A kubeconfig file (written next to the cluster's) for the ServiceAccount `name` in
/// [`SERVICE_ACCOUNT_NAMESPACE`], with a fresh token: for controller processes a test starts.
pub async fn token_kubeconfig(env: &TestEnv, name: &str) -> std::path::PathBuf {
    token_kubeconfig_via(env, name, None).await
}

/// [`token_kubeconfig`] with the apiserver reached at `server` (e.g. a
/// [`crate::proxy::FaultProxy`]'s `https://127.0.0.1:<port>`) instead of directly.
pub async fn token_kubeconfig_via(
    env: &TestEnv,
    name: &str,
    server: Option<&str>,
) -> std::path::PathBuf {
    let token = service_account_token(env, name).await;
    token_kubeconfig_with(env, name, &token, server)
}

/// A kubeconfig file for the ServiceAccount `namespace`/`name`, with a fresh token.
pub async fn token_kubeconfig_in(env: &TestEnv, namespace: &str, name: &str) -> std::path::PathBuf {
    let token = service_account_token_in(env, namespace, name).await;
    token_kubeconfig_with(env, name, &token, None)
}

/// The admin kubeconfig with `token` for every user (and `server`, when given), written next
/// to it under a name of this test and `name`.
fn token_kubeconfig_with(
    env: &TestEnv,
    name: &str,
    token: &str,
    server: Option<&str>,
) -> std::path::PathBuf {
    let admin = env.cluster().kubeconfig();
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&admin).expect("kubeconfig");
    if let Some(server) = server {
        for cluster in kubeconfig
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            cluster.server = Some(server.to_owned());
        }
    }
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_owned().into()),
            ..Default::default()
        });
    }
    let path = admin.with_file_name(format!("kubeconfig-{}-{name}", env.namespace()));
    let yaml = serde_yaml_ng::to_string(&kubeconfig).expect("kubeconfig as YAML");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A ServiceAccount of this test (`<namespace>-<suffix>` in [`SERVICE_ACCOUNT_NAMESPACE`]) bound
/// to copies of the shipped ClusterRole, with `edit` applied to each of its rules, and of the
/// shipped leader-election Role in the test's namespace. Returns its name.
pub async fn controller_account(
    env: &TestEnv,
    suffix: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> String {
    let admin = env.client();
    install_deploy_rbac(&admin).await;
    let name = format!("{}-{suffix}", env.namespace());
    let namespace = env.namespace();
    let mut role = shipped("ClusterRole");
    role.metadata = Default::default();
    role.metadata.name = Some(name.clone());
    for rule in role.data["rules"].as_array_mut().into_iter().flatten() {
        edit(rule);
    }
    let mut lease_role = shipped("Role");
    lease_role.metadata = Default::default();
    lease_role.metadata.name = Some(name.clone());
    lease_role.metadata.namespace = Some(namespace.to_owned());
    let subject = serde_json::json!([{"kind": "ServiceAccount", "name": name,
                                      "namespace": SERVICE_ACCOUNT_NAMESPACE}]);
    let objects = [
        serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": SERVICE_ACCOUNT_NAMESPACE}
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subject
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subject
        }),
    ];
    let mut all: Vec<DynamicObject> = objects
        .into_iter()
        .map(|o| serde_json::from_value(o).expect("an RBAC object"))
        .collect();
    all.insert(1, role);
    all.insert(2, lease_role);
    for object in &all {
        apply(&admin, object, false)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", object.name_any()));
    }
    name
}

/// The first object of `kind` in `deploy/rbac.yaml`.
pub fn shipped(kind: &str) -> DynamicObject {
    documents("rbac.yaml")
        .into_iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
        .unwrap_or_else(|| panic!("deploy/rbac.yaml has no {kind}"))
}
