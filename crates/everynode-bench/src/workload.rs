//! The benchmark workload: the DaemonSet under test, the floor client's pods, and the harness's
//! view of the pods (a watch-fed book) with the convergence test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

/// Name of the DaemonSet under test.
pub const SET_NAME: &str = "bench-ds";
/// Label that selects the set's pods (`app=bench-ds`).
pub const APP_LABEL: &str = "app";
/// Template label the rolling update (S2) changes; tells old pods from new ones.
pub const REV_LABEL: &str = "bench.everynode.dev/rev";
/// Container image (never pulled: KWOK runs no containers).
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The pod template's spec: one container, small requests, only KWOK worker nodes.
fn pod_spec() -> Value {
    json!({
        "nodeSelector": {"type": "kwok"},
        "containers": [{
            "name": "pause",
            "image": IMAGE,
            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}
        }]
    })
}

/// The `spec` of the DaemonSet under test (identical for apps/v1 and everynode.dev/v1alpha1):
/// RollingUpdate with maxUnavailable 10 %, template labelled with `rev`.
#[must_use]
pub fn set_spec(rev: &str) -> Value {
    json!({
        "selector": {"matchLabels": {APP_LABEL: SET_NAME}},
        "template": {
            "metadata": {"labels": {APP_LABEL: SET_NAME, REV_LABEL: rev}},
            "spec": pod_spec()
        },
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
    })
}

/// The whole set object for `api_version` (`apps/v1` or `everynode.dev/v1alpha1`).
#[must_use]
pub fn set_object(api_version: &str, namespace: &str, rev: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "DaemonSet",
        "metadata": {"name": SET_NAME, "namespace": namespace},
        "spec": set_spec(rev)
    })
}

/// A merge patch that changes the template's revision label (S2).
#[must_use]
pub fn rev_patch(rev: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"labels": {REV_LABEL: rev}}}}})
}

/// Name of the floor client's pod for `node` at `rev`.
#[must_use]
pub fn floor_pod_name(node: &str, rev: &str) -> String {
    format!("floor-{node}-r{rev}")
}

/// A pod as a DaemonSet controller makes it for `node` (node affinity on `metadata.name`, the
/// DaemonSet tolerations), for the floor client.
pub fn floor_pod(namespace: &str, node: &str, rev: &str) -> Result<Pod, serde_json::Error> {
    let mut spec = pod_spec();
    spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    }}});
    spec["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
    ]);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": floor_pod_name(node, rev),
            "namespace": namespace,
            "labels": {APP_LABEL: SET_NAME, REV_LABEL: rev}
        },
        "spec": spec
    }))
}

/// The node a daemon pod is for: `spec.nodeName`, else the `metadata.name` match field of its
/// required node affinity (how DaemonSet controllers pin pods before scheduling).
#[must_use]
pub fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// What the harness knows about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Its [`APP_LABEL`]: the set it belongs to.
    pub app: String,
    /// Node it is for.
    pub node: String,
    /// Its [`REV_LABEL`].
    pub rev: String,
    /// Running with `Ready=True`.
    pub ready: bool,
    /// Has a deletion timestamp.
    pub deleting: bool,
}

impl PodInfo {
    /// Reads a pod; `None` for a pod without a node.
    #[must_use]
    pub fn of(pod: &Pod) -> Option<Self> {
        let node = pod_node(pod)?;
        let label = |key| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key).cloned())
                .unwrap_or_default()
        };
        let status = pod.status.as_ref();
        let ready = status.and_then(|s| s.phase.as_deref()) == Some("Running")
            && status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Some(Self {
            app: label(APP_LABEL),
            node,
            rev: label(REV_LABEL),
            ready,
            deleting: pod.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// The taint a node carries from its creation until it reports Ready (added by the API server's
/// `TaintNodesByCondition` admission, removed by the node-lifecycle controller).
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Whether a DaemonSet pod can be placed on `node` as far as the cluster is concerned: it no
/// longer carries the not-ready `NoSchedule` taint, which DaemonSet pods do not tolerate. From
/// then on, a missing pod is the controller's delay.
#[must_use]
pub fn admits_daemon_pods(node: &Node) -> bool {
    !node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == NOT_READY_TAINT && t.effect == "NoSchedule")
        })
}

/// The pods of one namespace as the harness's watch saw them, plus when a pod for each node was
/// first seen.
#[derive(Debug, Default)]
pub struct PodBook {
    /// Pods by name.
    pub pods: BTreeMap<String, PodInfo>,
    /// When the first pod for each node was seen (node-join latency).
    pub first_seen: BTreeMap<String, Instant>,
}

impl PodBook {
    /// Records an added or changed pod.
    pub fn apply(&mut self, pod: &Pod, now: Instant) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        match PodInfo::of(pod) {
            Some(info) => {
                self.first_seen.entry(info.node.clone()).or_insert(now);
                self.pods.insert(name, info);
            }
            None => {
                self.pods.remove(&name);
            }
        }
    }

    /// Records a deleted pod.
    pub fn delete(&mut self, name: &str) {
        self.pods.remove(name);
    }

    /// How far the pods are from "every node in `nodes` runs one ready pod at `rev`, and no
    /// pod at another revision remains on them".
    #[must_use]
    pub fn progress(&self, nodes: &BTreeSet<String>, rev: &str) -> Progress {
        let mut ready_nodes = BTreeSet::new();
        let mut old = 0;
        for p in self.pods.values() {
            if !nodes.contains(&p.node) {
                continue;
            }
            if p.rev != rev {
                old += 1;
            } else if p.ready && !p.deleting {
                ready_nodes.insert(p.node.as_str());
            }
        }
        let missing: Vec<String> = nodes
            .iter()
            .filter(|n| !ready_nodes.contains(n.as_str()))
            .take(5)
            .cloned()
            .collect();
        Progress {
            nodes: nodes.len(),
            ready: ready_nodes.len(),
            old,
            missing,
        }
    }
}

/// See [`PodBook::progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Nodes that should run a pod.
    pub nodes: usize,
    /// Nodes with a ready pod at the wanted revision.
    pub ready: usize,
    /// Pods at another revision on those nodes.
    pub old: usize,
    /// Up to five nodes still lacking a ready pod.
    pub missing: Vec<String>,
}

impl Progress {
    /// Converged.
    #[must_use]
    pub fn done(&self) -> bool {
        self.ready == self.nodes && self.old == 0
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} nodes with a ready pod, {} old pods; e.g. missing {:?}",
            self.ready, self.nodes, self.old, self.missing
        )
    }
}

/// Whether a set's status (JSON of the object) reports every one of `nodes` scheduled, updated
/// and available for the current generation, none misscheduled.
#[must_use]
pub fn status_converged(set: &Value, nodes: usize) -> bool {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let status = &set["status"];
    let generation = n(&set["metadata"]["generation"]);
    let nodes = nodes as u64;
    n(&status["observedGeneration"]) >= generation
        && n(&status["desiredNumberScheduled"]) == nodes
        && n(&status["currentNumberScheduled"]) == nodes
        && n(&status["updatedNumberScheduled"]) == nodes
        && n(&status["numberAvailable"]) == nodes
        && n(&status["numberReady"]) == nodes
        && n(&status["numberMisscheduled"]) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_admits_daemon_pods_once_the_not_ready_no_schedule_taint_is_gone() {
        use k8s_openapi::api::core::v1::{NodeSpec, Taint};
        let node = |taints: Vec<(&str, &str)>| Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .into_iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_owned(),
                            effect: effect.to_owned(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        assert!(!admits_daemon_pods(&node(vec![(
            NOT_READY_TAINT,
            "NoSchedule"
        )])));
        assert!(admits_daemon_pods(&node(vec![(
            NOT_READY_TAINT,
            "NoExecute"
        )])));
        assert!(admits_daemon_pods(&node(vec![])));
        assert!(admits_daemon_pods(&Node::default()));
    }

    use super::*;

    fn pod(name: &str, node: &str, rev: &str, ready: bool, via_affinity: bool) -> Pod {
        let mut p = floor_pod("ns", node, rev).unwrap();
        p.metadata.name = Some(name.into());
        if !via_affinity {
            let spec = p.spec.as_mut().unwrap();
            spec.affinity = None;
            spec.node_name = Some(node.into());
        }
        p.status = Some(
            serde_json::from_value(json!({
                "phase": if ready { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }))
            .unwrap(),
        );
        p
    }

    #[test]
    fn node_from_affinity_or_node_name() {
        assert_eq!(
            pod_node(&pod("a", "n1", "1", true, true)).as_deref(),
            Some("n1")
        );
        assert_eq!(
            pod_node(&pod("a", "n2", "1", true, false)).as_deref(),
            Some("n2")
        );
    }

    #[test]
    fn progress_counts_ready_current_pods_and_old_ones() {
        let nodes: BTreeSet<String> = ["n1", "n2"].into_iter().map(String::from).collect();
        let now = Instant::now();
        let mut b = PodBook::default();
        b.apply(&pod("a", "n1", "1", true, true), now);
        b.apply(&pod("b", "n2", "1", false, true), now);
        b.apply(&pod("gone-node", "n9", "0", true, true), now);
        let p = b.progress(&nodes, "1");
        assert_eq!((p.ready, p.old, p.done()), (1, 0, false));
        assert_eq!(p.missing, ["n2"]);
        b.apply(&pod("b", "n2", "1", true, true), now);
        assert!(b.progress(&nodes, "1").done());
        // Rolling update: old pods keep it from converging until deleted.
        b.apply(&pod("c", "n1", "2", true, true), now);
        let p = b.progress(&nodes, "2");
        assert_eq!((p.ready, p.old), (1, 2));
        b.delete("a");
        b.delete("b");
        b.apply(&pod("d", "n2", "2", true, true), now);
        assert!(b.progress(&nodes, "2").done());
        assert!(b.first_seen.contains_key("n9"));
    }

    #[test]
    fn status_convergence() {
        let mut set = json!({"metadata": {"generation": 2}, "status": {
            "observedGeneration": 2, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3
        }});
        assert!(status_converged(&set, 3));
        assert!(!status_converged(&set, 4));
        set["status"]["observedGeneration"] = json!(1);
        assert!(!status_converged(&set, 3));
    }

    #[test]
    fn set_objects_share_the_spec() {
        let a = set_object("apps/v1", "x", "1");
        let e = set_object("everynode.dev/v1alpha1", "x", "1");
        assert_eq!(a["spec"], e["spec"]);
        assert_eq!(
            a["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            "10%"
        );
        assert_eq!(
            rev_patch("2")["spec"]["template"]["metadata"]["labels"][REV_LABEL],
            "2"
        );
    }
}
