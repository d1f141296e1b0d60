//! [`TestEnv`]: one test's namespace and node group on the shared cluster, with cleanup and a
//! log dump when the test fails.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use everynode_cluster::nodes as cluster_nodes;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::eventually::eventually;
use crate::shared::{ClusterInfo, shared_cluster};

/// Label that marks the nodes of one test's group: `everynode.dev/test-group=<group id>`.
pub const GROUP_LABEL: &str = "everynode.dev/test-group";
/// How many log lines per component a failing test prints.
pub const FAILURE_LOG_LINES: usize = 30;
/// Default timeout for nodes to become Ready.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Makes `s` a valid DNS label fragment (lowercase alphanumerics and `-`), at most `max` chars.
fn dns_fragment(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cut: String = cleaned.chars().take(max).collect();
    cut.trim_matches('-').to_owned()
}

/// One test's slice of a cluster: its own namespace and its own labelled group of KWOK nodes,
/// so tests can run in parallel. Dropping it deletes both (also when the test panics), and a
/// panicking test also prints the tail of every component log.
pub struct TestEnv {
    client: Client,
    info: ClusterInfo,
    namespace: String,
    group: String,
    node_seq: AtomicU32,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("cluster", &self.info.dir.root())
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// Creates a namespace `<name>-<id>` and a node group `<name>-<id>` on the shared cluster
    /// (attached or started on first use, see [`crate::shared`]).
    ///
    /// # Panics
    /// When no cluster is available (with instructions) or the namespace cannot be created.
    pub async fn new(name: &str) -> Self {
        let info = shared_cluster().await;
        Self::on(info, name).await
    }

    /// Like [`TestEnv::new`] but on a given cluster (e.g. one from [`crate::LocalCluster`]).
    ///
    /// # Panics
    /// When the namespace cannot be created.
    pub async fn on(info: ClusterInfo, name: &str) -> Self {
        let client = info.client().await;
        let id = format!(
            "{:x}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let base = dns_fragment(name, 40);
        let namespace = format!("{base}-{id}");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some(BTreeMap::from([(
                    GROUP_LABEL.to_owned(),
                    namespace.clone(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        if let Err(e) = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            panic!("create namespace {namespace}: {e}");
        }
        Self {
            client,
            info,
            group: namespace.clone(),
            namespace,
            node_seq: AtomicU32::new(0),
        }
    }

    /// A client for this test (bound to the test's runtime).
    #[must_use]
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The cluster this environment lives on.
    #[must_use]
    pub fn cluster(&self) -> &ClusterInfo {
        &self.info
    }

    /// This test's namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This test's node group id (value of [`GROUP_LABEL`] on its nodes).
    #[must_use]
    pub fn group(&self) -> &str {
        &self.group
    }

    /// `{GROUP_LABEL: group}`, e.g. for node selectors.
    #[must_use]
    pub fn group_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(GROUP_LABEL.to_owned(), self.group.clone())])
    }

    /// Label selector string for this test's nodes.
    #[must_use]
    pub fn group_label_selector(&self) -> String {
        format!("{GROUP_LABEL}={}", self.group)
    }

    /// Typed API for namespaced objects of this test.
    #[must_use]
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Node API.
    #[must_use]
    pub fn nodes_api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Prints the tail of every component log to stderr (shown by the test harness for failing
    /// tests).
    pub fn dump_logs(&self) {
        eprintln!(
            "=== control plane logs ({}) ===\n{}",
            self.info.dir.root().display(),
            self.info.log_tails(FAILURE_LOG_LINES)
        );
    }

    // ---------------------------------------------------------------- nodes

    /// Adds `count` KWOK worker nodes to this test's group (zones spread round robin) and waits
    /// until they are Ready. Returns their names, sorted.
    ///
    /// # Panics
    /// When a node cannot be created or does not become Ready within [`NODE_READY_TIMEOUT`].
    pub async fn add_nodes(&self, count: usize) -> Vec<String> {
        self.add_nodes_with(count, |_| {}).await
    }

    /// Like [`TestEnv::add_nodes`], letting `customize` change each node before it is created
    /// (extra labels, taints, `unschedulable`, capacity...).
    ///
    /// # Panics
    /// As [`TestEnv::add_nodes`].
    pub async fn add_nodes_with(&self, count: usize, customize: impl Fn(&mut Node)) -> Vec<String> {
        let names = self.create_nodes_with(count, customize).await;
        self.wait_nodes_ready(&names, NODE_READY_TIMEOUT).await;
        names
    }

    /// Like [`TestEnv::add_nodes_with`] without waiting: KWOK marks the nodes Ready at once, but
    /// they keep the `node.kubernetes.io/not-ready:NoSchedule` taint until the node lifecycle
    /// controller lifts it (about 10 nodes a second at its client's default rate).
    ///
    /// # Panics
    /// When a node cannot be created.
    pub async fn create_nodes_with(
        &self,
        count: usize,
        customize: impl Fn(&mut Node),
    ) -> Vec<String> {
        let labels = self.group_selector();
        let objs: Vec<Node> = (0..count)
            .map(|_| {
                let i = self.node_seq.fetch_add(1, Ordering::Relaxed) as usize;
                let mut n = cluster_nodes::worker(
                    &format!("{}-n{i:03}", self.group),
                    cluster_nodes::zone_for(i),
                    &labels,
                );
                customize(&mut n);
                n
            })
            .collect();
        let mut names: Vec<String> = objs
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        names.sort();
        if let Err(e) = everynode_cluster::cluster::create_nodes(&self.nodes_api(), objs).await {
            panic!("add nodes: {e}");
        }
        names
    }

    /// Adds one node of this test's group that no (simulated) kubelet runs: it has no status
    /// until [`TestEnv::set_node_conditions`] writes one, is never Ready by itself (like a node
    /// whose kubelet has not started; after 40 s the node lifecycle controller marks it
    /// unreachable), and pods bound to it stay Pending.
    ///
    /// # Panics
    /// When the node cannot be created.
    pub async fn add_unmanaged_node(&self) -> String {
        let i = self.node_seq.fetch_add(1, Ordering::Relaxed) as usize;
        let mut node = cluster_nodes::worker(
            &format!("{}-n{i:03}", self.group),
            cluster_nodes::zone_for(i),
            &self.group_selector(),
        );
        if let Some(annotations) = node.metadata.annotations.as_mut() {
            annotations.remove(cluster_nodes::KWOK_ANNOTATION);
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Err(e) =
            everynode_cluster::cluster::create_nodes(&self.nodes_api(), vec![node]).await
        {
            panic!("add node {name}: {e}");
        }
        name
    }

    /// Waits until the named nodes are Ready (and free of the not-ready taint).
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_nodes_ready(&self, names: &[String], timeout: Duration) {
        if let Err(e) =
            everynode_cluster::cluster::wait_nodes_ready(&self.client, names, timeout).await
        {
            panic!("{e}");
        }
    }

    /// Names of this test's nodes, sorted.
    ///
    /// # Panics
    /// When the list fails.
    pub async fn node_names(&self) -> Vec<String> {
        let lp = ListParams::default().labels(&self.group_label_selector());
        let list = match self.nodes_api().list(&lp).await {
            Ok(l) => l,
            Err(e) => panic!("list nodes of group {}: {e}", self.group),
        };
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// Deletes a node (its pods are left to the pod garbage collector, as with a real node).
    ///
    /// # Panics
    /// When the delete fails.
    pub async fn remove_node(&self, name: &str) {
        if let Err(e) = self
            .nodes_api()
            .delete(name, &DeleteParams::default())
            .await
        {
            panic!("delete node {name}: {e}");
        }
    }

    async fn patch_node(&self, name: &str, patch: serde_json::Value, what: &str) {
        if let Err(e) = self
            .nodes_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            panic!("{what} node {name}: {e}");
        }
    }

    /// Sets (`Some`) or removes (`None`) a label on a node.
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn label_node(&self, name: &str, key: &str, value: Option<&str>) {
        self.patch_node(name, json!({"metadata": {"labels": {key: value}}}), "label")
            .await;
    }

    /// Marks a node unschedulable (`kubectl cordon`).
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn cordon(&self, name: &str) {
        self.patch_node(name, json!({"spec": {"unschedulable": true}}), "cordon")
            .await;
    }

    /// Marks a node schedulable again (`kubectl uncordon`).
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn uncordon(&self, name: &str) {
        self.patch_node(name, json!({"spec": {"unschedulable": null}}), "uncordon")
            .await;
    }

    /// Adds a taint (replacing one with the same key and effect).
    ///
    /// # Panics
    /// When the update keeps failing.
    pub async fn taint_node(&self, name: &str, key: &str, value: Option<&str>, effect: &str) {
        let taint = Taint {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            effect: effect.to_owned(),
            time_added: None,
        };
        self.update_taints(name, |taints| {
            taints.retain(|t| !(t.key == taint.key && t.effect == taint.effect));
            taints.push(taint.clone());
        })
        .await;
    }

    /// Removes every taint with `key`.
    ///
    /// # Panics
    /// When the update keeps failing.
    pub async fn untaint_node(&self, name: &str, key: &str) {
        self.update_taints(name, |taints| taints.retain(|t| t.key != key))
            .await;
    }

    /// Read-modify-write of a node's taints with optimistic concurrency (the node lifecycle
    /// controller writes taints too), retried on conflicts.
    async fn update_taints(&self, name: &str, change: impl Fn(&mut Vec<Taint>)) {
        let api = self.nodes_api();
        let what = format!("update taints of node {name}");
        eventually(&what, Duration::from_secs(20), || {
            let api = api.clone();
            let change = &change;
            async move {
                let mut node = api.get(name).await.map_err(|e| format!("get: {e}"))?;
                let spec = node.spec.get_or_insert_with(Default::default);
                let mut taints = spec.taints.take().unwrap_or_default();
                change(&mut taints);
                spec.taints = Some(taints);
                api.replace(name, &PostParams::default(), &node)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("replace: {e}"))
            }
        })
        .await;
    }

    // ---------------------------------------------------------------- pods

    /// Creates a pod in this test's namespace.
    ///
    /// # Panics
    /// When the create fails.
    pub async fn create_pod(&self, pod: &Pod) -> Pod {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.api::<Pod>().create(&PostParams::default(), pod).await {
            Ok(p) => p,
            Err(e) => panic!("create pod {name}: {e}"),
        }
    }

    /// Waits until a pod is Running, Ready and has a pod IP (what KWOK does for pods bound to its
    /// nodes) and returns it.
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_pod_running(&self, name: &str, timeout: Duration) -> Pod {
        let api = self.api::<Pod>();
        eventually(
            &format!("pod {name} to be Running and Ready with a pod IP"),
            timeout,
            || {
                let api = api.clone();
                async move {
                    let pod = api.get(name).await.map_err(|e| e.to_string())?;
                    let st = pod.status.clone().unwrap_or_default();
                    let ready = crate::pods::is_ready(&pod);
                    if st.phase.as_deref() == Some("Running") && ready && st.pod_ip.is_some() {
                        Ok(pod)
                    } else {
                        Err(format!(
                            "phase={:?} ready={ready} podIP={:?} node={:?} conditions={}",
                            st.phase,
                            st.pod_ip,
                            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                            crate::pods::conditions_summary(&pod)
                        ))
                    }
                }
            },
        )
        .await
    }

    /// Waits until a pod no longer exists.
    ///
    /// # Panics
    /// On timeout.
    pub async fn wait_pod_gone(&self, name: &str, timeout: Duration) {
        let api = self.api::<Pod>();
        eventually(&format!("pod {name} to be gone"), timeout, || {
            let api = api.clone();
            async move {
                match api.get_opt(name).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(p) => Err(format!(
                        "still there: phase={:?} deletionTimestamp={:?} node={:?}",
                        p.status.and_then(|s| s.phase),
                        p.metadata.deletion_timestamp,
                        p.spec.and_then(|s| s.node_name)
                    )),
                }
            }
        })
        .await;
    }

    /// Writes node conditions (`(type, status)`, heartbeat now) through the status subresource,
    /// as a kubelet would; for nodes from [`TestEnv::add_unmanaged_node`].
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn set_node_conditions(&self, name: &str, conditions: &[(&str, &str)]) {
        let now = crate::pods::now();
        let conditions: Vec<serde_json::Value> = conditions
            .iter()
            .map(|(type_, status)| {
                json!({"type": type_, "status": status, "lastHeartbeatTime": now,
                       "lastTransitionTime": now, "reason": "SetByTest"})
            })
            .collect();
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = self
            .nodes_api()
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            panic!("set conditions of node {name}: {e}");
        }
    }

    async fn patch_pod_status(&self, name: &str, status: serde_json::Value, what: &str) -> Pod {
        match self.try_patch_pod_status(name, status).await {
            Ok(p) => p,
            Err(e) => panic!("mark pod {name} {what}: {e}"),
        }
    }

    async fn try_patch_pod_status(
        &self,
        name: &str,
        status: serde_json::Value,
    ) -> Result<Pod, kube::Error> {
        let patch = json!({ "status": status });
        self.api::<Pod>()
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
    }

    /// Sets Ready and ContainersReady to True (phase Running) through the status subresource,
    /// as a kubelet would.
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn mark_pod_ready(&self, name: &str) -> Pod {
        match self.try_mark_pod_ready(name).await {
            Ok(p) => p,
            Err(e) => panic!("mark pod {name} ready: {e}"),
        }
    }

    /// [`TestEnv::mark_pod_ready`], returning the error (e.g. the pod is gone meanwhile).
    ///
    /// # Errors
    /// When the patch fails.
    pub async fn try_mark_pod_ready(&self, name: &str) -> Result<Pod, kube::Error> {
        let now = crate::pods::now();
        let conds = json!([
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ]);
        self.try_patch_pod_status(name, json!({"phase": "Running", "conditions": conds}))
            .await
    }

    /// Sets Ready and ContainersReady to False (phase unchanged), like a failing readiness probe.
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn mark_pod_unready(&self, name: &str) -> Pod {
        let now = crate::pods::now();
        let conds = json!([
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
        ]);
        self.patch_pod_status(name, json!({"conditions": conds}), "unready")
            .await
    }

    /// Sets phase Failed (Ready False), as a kubelet does when the containers failed.
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn mark_pod_failed(&self, name: &str) -> Pod {
        self.mark_pod_terminal(name, "Failed", "PodFailed").await
    }

    /// Sets phase Succeeded (Ready False), as a kubelet does when the containers completed.
    ///
    /// # Panics
    /// When the patch fails.
    pub async fn mark_pod_succeeded(&self, name: &str) -> Pod {
        self.mark_pod_terminal(name, "Succeeded", "PodCompleted")
            .await
    }

    async fn mark_pod_terminal(&self, name: &str, phase: &str, reason: &str) -> Pod {
        let now = crate::pods::now();
        let conds = json!([
            {"type": "Ready", "status": "False", "reason": reason, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": reason, "lastTransitionTime": now},
        ]);
        self.patch_pod_status(name, json!({"phase": phase, "conditions": conds}), phase)
            .await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Cleanup needs async calls; run them on a private runtime in a helper thread so this
        // works from inside any runtime and during unwinding.
        let kubeconfig = self.info.kubeconfig();
        let namespace = self.namespace.clone();
        let selector = self.group_label_selector();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = everynode_cluster::health::admin_client(&kubeconfig).await else {
                    return;
                };
                let _ = Api::<Namespace>::all(client.clone())
                    .delete(&namespace, &DeleteParams::background())
                    .await;
                let _ = Api::<Node>::all(client)
                    .delete_collection(
                        &DeleteParams::background(),
                        &ListParams::default().labels(&selector),
                    )
                    .await;
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_fragments() {
        assert_eq!(dns_fragment("Pod_GC test", 40), "pod-gc-test");
        assert_eq!(dns_fragment("-x-", 40), "x");
        assert_eq!(dns_fragment(&"a".repeat(60), 40).len(), 40);
    }
}
