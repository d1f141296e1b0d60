//! KWOK node objects: realistic fake worker nodes and one tainted control-plane node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation that makes KWOK manage a node (KWOK runs with
/// `--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake`).
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Value of [`KWOK_ANNOTATION`].
pub const KWOK_ANNOTATION_VALUE: &str = "fake";
/// Zone label key.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Region label key.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The three zones worker nodes are spread over (round robin by index).
pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// Region of every node.
pub const REGION: &str = "local";
/// Control-plane role label / taint key.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";
/// Name of the control-plane node created by `up`.
pub const CONTROL_PLANE_NODE: &str = "control-plane";
/// Label put on the nodes that `up` creates (value `true`), so tests can tell them apart.
pub const CLUSTER_NODE_LABEL: &str = "everynode.dev/cluster-node";

/// Name of the `index`-th worker node created by `up`: `kwok-node-000`, `kwok-node-001`, ...
#[must_use]
pub fn worker_name(index: usize) -> String {
    format!("kwok-node-{index:03}")
}

/// The zone of the `index`-th node of a group.
#[must_use]
pub fn zone_for(index: usize) -> &'static str {
    ZONES[index % ZONES.len()]
}

fn resources() -> BTreeMap<String, Quantity> {
    [
        ("cpu", "32"),
        ("memory", "256Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "1Ti"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect()
}

/// A KWOK-managed worker node: hostname/os/arch/zone/region labels plus `extra_labels`, capacity
/// and allocatable of cpu 32, memory 256Gi, pods 110, no taints.
#[must_use]
pub fn worker(name: &str, zone: &str, extra_labels: &BTreeMap<String, String>) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("type", "kwok"),
        (ZONE_LABEL, zone),
        (REGION_LABEL, REGION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    labels.extend(extra_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                KWOK_ANNOTATION.to_owned(),
                KWOK_ANNOTATION_VALUE.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources()),
            allocatable: Some(resources()),
            ..NodeStatus::default()
        }),
    }
}

/// The control-plane node: like a worker (zone of index 0) plus the control-plane role label and
/// the `node-role.kubernetes.io/control-plane:NoSchedule` taint.
#[must_use]
pub fn control_plane(name: &str, extra_labels: &BTreeMap<String, String>) -> Node {
    let mut extra = extra_labels.clone();
    extra.insert(CONTROL_PLANE_ROLE.to_owned(), String::new());
    let mut node = worker(name, zone_for(0), &extra);
    node.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: CONTROL_PLANE_ROLE.to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Taint::default()
        }]),
        ..NodeSpec::default()
    });
    node
}

/// Whether the node reports `Ready=True` and no longer carries the
/// `node.kubernetes.io/not-ready` taint (i.e. the scheduler will use it).
#[must_use]
pub fn is_ready(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let not_ready_taint = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
    ready && !not_ready_taint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_spread_over_three_zones() {
        let zones: Vec<_> = (0..6).map(zone_for).collect();
        assert_eq!(
            zones,
            ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b", "zone-c"]
        );
    }

    #[test]
    fn worker_has_kwok_annotation_labels_and_capacity() {
        let extra = BTreeMap::from([("g".to_owned(), "1".to_owned())]);
        let n = worker(&worker_name(7), "zone-b", &extra);
        assert_eq!(n.metadata.name.as_deref(), Some("kwok-node-007"));
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "kwok-node-007");
        assert_eq!(labels[ZONE_LABEL], "zone-b");
        assert_eq!(labels["g"], "1");
        assert_eq!(n.metadata.annotations.unwrap()[KWOK_ANNOTATION], "fake");
        assert_eq!(
            n.status.unwrap().allocatable.unwrap()["pods"],
            Quantity("110".to_owned())
        );
    }

    #[test]
    fn control_plane_is_tainted() {
        let n = control_plane(CONTROL_PLANE_NODE, &BTreeMap::new());
        assert!(n.metadata.labels.unwrap().contains_key(CONTROL_PLANE_ROLE));
        let taints = n.spec.unwrap().taints.unwrap();
        assert_eq!(taints[0].key, CONTROL_PLANE_ROLE);
        assert_eq!(taints[0].effect, "NoSchedule");
    }
}
