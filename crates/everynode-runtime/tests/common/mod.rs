//! Helpers shared by the controller test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use everynode_api::DaemonSet;
use everynode_runtime::http::Readiness;
use everynode_runtime::metrics::Metrics;
use everynode_runtime::{ControllerConfig, Target};
pub use everynode_testkit::deploy::*;
use everynode_testkit::{NEVER_READY, SIMULATE_LABEL, TestEnv, eventually, pods};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Pod GC needs ~40 s quarantine plus its 20 s loop after a node is deleted.
pub const POD_GC_TIMEOUT: Duration = Duration::from_secs(150);

/// A controller for one test, stopped when dropped.
pub struct RunningController {
    pub readiness: Arc<Readiness>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningController {
    /// Whether the controller task still runs (it ends only when stopped, or on a panic).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Starts a controller for `target` scoped to the test's namespace (installing the CRD first),
/// as deployed: with the ServiceAccount and RBAC of `deploy/`.
pub async fn start_controller(env: &TestEnv, target: Target) -> RunningController {
    install_deploy_rbac(&env.client()).await;
    start_controller_as(service_account_client(env).await, env, target).await
}

/// [`start_controller`] with the controller's own client (e.g. a ServiceAccount's).
pub async fn start_controller_as(
    client: kube::Client,
    env: &TestEnv,
    target: Target,
) -> RunningController {
    start_controller_with(client, env, target, |_| {}).await
}

/// The controller's logs in the test's captured output, printed when the test fails
/// (`EVERYNODE_TEST_LOG`, default `info,kube=warn`).
fn show_controller_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVERYNODE_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
}

/// [`start_controller_as`] with `tweak` applied to the controller's settings.
pub async fn start_controller_with(
    client: kube::Client,
    env: &TestEnv,
    target: Target,
    tweak: impl FnOnce(&mut ControllerConfig),
) -> RunningController {
    show_controller_logs();
    everynode_testkit::install_crd(&env.client()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut config = ControllerConfig {
        namespace: Some(env.namespace().to_owned()),
        workers: 4,
        instance: Some(format!("test-{}", env.namespace())),
        target,
        ..ControllerConfig::default()
    };
    tweak(&mut config);
    let readiness = Arc::new(Readiness::default());
    let task = tokio::spawn(everynode_runtime::run(
        client,
        config,
        Arc::new(Metrics::default()),
        readiness.clone(),
        std::future::ready(()),
        async move {
            let _ = stopped.await;
        },
    ));
    RunningController {
        readiness,
        stop: Some(stop),
        task,
    }
}

/// Waits until the controller's caches synced (its `/readyz`).
pub async fn wait_until_ready(controller: &RunningController) {
    eventually("the controller to report ready", TIMEOUT, || async {
        if controller.readiness.is_ready() {
            Ok(())
        } else {
            Err("not ready".to_owned())
        }
    })
    .await;
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub async fn set_pods(env: &TestEnv, name: &str) -> Vec<Pod> {
    let mut list = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .expect("list pods")
        .items;
    list.sort_by_key(ResourceExt::name_any);
    list
}

pub fn pinned_node(pod: &Pod) -> Option<String> {
    everynode_core::target_node_name(pod).ok()
}

pub fn image_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.containers.first()?.image.clone()
}

/// Waits until every node of `nodes` runs exactly one Ready pod of the set with `image`, and no
/// other node runs one.
pub async fn wait_one_ready_pod_per_node(env: &TestEnv, set: &str, nodes: &[String], image: &str) {
    let what = format!("one Ready {image} pod of {set} on each of {nodes:?}");
    eventually(&what, TIMEOUT, || async {
        let pods: Vec<Pod> = set_pods(env, set)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let mut placed: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        placed.sort();
        let all_ready = pods.iter().all(pods::is_ready);
        let images_ok = pods.iter().all(|p| image_of(p).as_deref() == Some(image));
        if placed == nodes && pods.len() == nodes.len() && all_ready && images_ok {
            Ok(())
        } else {
            Err(format!(
                "{} pods on {placed:?}, all ready: {all_ready}, images ok: {images_ok}",
                pods.len()
            ))
        }
    })
    .await;
}

/// Nodes of the Ready endpoints a Service's EndpointSlices list, sorted.
pub async fn service_ready_nodes(env: &TestEnv, service: &str) -> Result<Vec<String>, String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let list = env
        .api::<EndpointSlice>()
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| e.to_string())?;
    let mut nodes: Vec<String> = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.node_name.clone())
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// The test's everynode set `agent` (image `agent:v1`, on the test's nodes) with this
/// `rollingUpdate`.
pub fn set_with(env: &TestEnv, rolling_update: serde_json::Value) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "everynode.dev/v1alpha1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "nodeSelector": env.group_selector(),
                    "containers": [{"name": "agent", "image": "agent:v1"}]
                }
            },
            "updateStrategy": {"rollingUpdate": rolling_update}
        }
    }))
    .unwrap_or_else(|e| panic!("test set does not decode: {e}"))
}

/// `(status, reason)` of the set's condition `type_`.
pub fn condition(set: &DaemonSet, type_: &str) -> Option<(String, String)> {
    set.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Merge-patches the test's set `agent` (`what` names the change for the failure message).
pub async fn patch_set(sets: &kube::Api<DaemonSet>, patch: serde_json::Value, what: &str) {
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Waits until the test's set `agent` passes `check`; returns it.
pub async fn wait_for_set(
    env: &TestEnv,
    what: &str,
    check: impl Fn(&DaemonSet) -> bool,
) -> DaemonSet {
    let sets = env.api::<DaemonSet>();
    eventually(what, TIMEOUT, || async {
        let s = sets.get("agent").await.map_err(|e| e.to_string())?;
        if check(&s) {
            Ok(s)
        } else {
            Err(format!("{:?}", s.status))
        }
    })
    .await
}

/// A merge patch that sets the agent container's image.
pub fn new_image(image: &str) -> serde_json::Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": image}]}}}})
}

/// Pod UID per node, of the set's live pods.
pub async fn uids_by_node(env: &TestEnv) -> BTreeMap<String, (String, String)> {
    set_pods(env, "agent")
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            Some((
                pinned_node(&p)?,
                (p.uid()?, image_of(&p).unwrap_or_default()),
            ))
        })
        .collect()
}

/// Warning events on the set with `reason`.
pub async fn events(env: &TestEnv, reason: &str) -> Vec<String> {
    env.api::<Event>()
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter(|e| e.involved_object.name.as_deref() == Some("agent"))
                .filter_map(|e| e.message)
                .collect()
        })
        .unwrap_or_default()
}

/// A merge patch to image `agent:v2` whose pods run but never become Ready.
pub fn bad_revision() -> serde_json::Value {
    json!({"spec": {"template": {
        "metadata": {"labels": {SIMULATE_LABEL: NEVER_READY}},
        "spec": {"containers": [{"name": "agent", "image": "agent:v2"}]}
    }}})
}
