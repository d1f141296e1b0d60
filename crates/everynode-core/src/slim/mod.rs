//! The fields of a cached pod or node that anyone reads: [`slim_pod`] and [`slim_node`] drop
//! the rest of a whole object, and the watches decode [`Slim`] objects that never had it, so
//! the controller's memory and decoding work grow with what it plans on, not with pod specs,
//! node status and managed-fields trees.
//!
//! Readers: [`PodView::from_pod`](crate::PodView::from_pod) (name, namespace, UID, labels,
//! owner references, creation and deletion timestamps, the in-place update annotation,
//! `spec.nodeName`, the `metadata.name` match fields of the required node affinity, phase, the
//! `Ready` and `PodScheduled` conditions, the container statuses' names, images and waiting
//! reasons); the runtime's pod index (owner references), its in-place updates (container
//! statuses' images) and its built-in controller check (the managed-fields entries the watch
//! keeps). Of a node: [`NodeView::from_node`](crate::NodeView::from_node) and the runtime's
//! node routes read its name, labels, taints, `spec.unschedulable` and the Ready and pressure
//! conditions (and the built-in controller check its managed-fields entries' manager, time and
//! subresource). Tests check that the view of a slimmed object equals the view of the whole
//! one, and that the slim decoder gives what slimming the whole object gives.

use std::collections::BTreeMap;

use everynode_api::labels::IN_PLACE_UPDATE_ANNOTATION;
use k8s_openapi::api::core::v1::{
    Affinity, ContainerState, ContainerStateWaiting, ContainerStatus, Node, NodeAffinity,
    NodeCondition, NodeSelector, NodeSelectorTerm, NodeSpec, NodeStatus, Pod, PodCondition,
    PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

mod decode;

pub use decode::{Slim, SlimDecode};

/// Drops every field of `pod` that no reader of the controller's cache uses (see the module
/// documentation); keeps `resourceVersion` and the managed-fields entries (without their
/// `fieldsV1`).
pub fn slim_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    slim_meta(meta);
    meta.annotations = meta.annotations.take().and_then(|mut all| {
        let kept: BTreeMap<String, String> = all
            .remove_entry(IN_PLACE_UPDATE_ANNOTATION)
            .into_iter()
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
    pod.spec = pod.spec.take().map(slim_spec);
    pod.status = pod.status.take().map(slim_status);
}

/// Drops every field of `node` that no reader of the controller's cache uses (see the module
/// documentation); keeps `resourceVersion` and the managed-fields entries (without their
/// `fieldsV1`).
pub fn slim_node(node: &mut Node) {
    slim_meta(&mut node.metadata);
    node.metadata.annotations = None;
    node.spec = node.spec.take().map(|spec| NodeSpec {
        taints: spec.taints,
        unschedulable: spec.unschedulable,
        ..NodeSpec::default()
    });
    node.status = node.status.take().map(|status| NodeStatus {
        conditions: status.conditions.map(slim_node_conditions),
        ..NodeStatus::default()
    });
}

/// The metadata fields no reader uses, pods and nodes alike.
fn slim_meta(meta: &mut ObjectMeta) {
    meta.generate_name = None;
    meta.finalizers = None;
    for entry in meta.managed_fields.iter_mut().flatten() {
        entry.fields_v1 = None;
    }
}

/// The Ready and pressure conditions, without heartbeat, message and reason.
fn slim_node_conditions(all: Vec<NodeCondition>) -> Vec<NodeCondition> {
    all.into_iter()
        .filter(|c| c.type_ == "Ready" || crate::convert::is_pressure_condition(&c.type_))
        .map(|c| NodeCondition {
            last_heartbeat_time: None,
            message: None,
            reason: None,
            ..c
        })
        .collect()
}

/// The Ready and PodScheduled conditions, without the last probe time.
fn slim_pod_conditions(all: Vec<PodCondition>) -> Vec<PodCondition> {
    all.into_iter()
        .filter(|c| c.type_ == "Ready" || c.type_ == "PodScheduled")
        .map(|c| PodCondition {
            last_probe_time: None,
            ..c
        })
        .collect()
}

/// A container status of a name, an image and, when the container waits, why.
fn container_status(
    name: String,
    image: String,
    waiting: Option<Option<String>>,
) -> ContainerStatus {
    ContainerStatus {
        name,
        image,
        state: waiting.map(|reason| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason,
                message: None,
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn slim_spec(spec: PodSpec) -> PodSpec {
    let affinity = spec
        .affinity
        .and_then(|a| a.node_affinity)
        .and_then(|na| na.required_during_scheduling_ignored_during_execution)
        .map(|required| Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: required
                        .node_selector_terms
                        .into_iter()
                        .map(|term| NodeSelectorTerm {
                            match_fields: term.match_fields,
                            match_expressions: None,
                        })
                        .collect(),
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        });
    PodSpec {
        node_name: spec.node_name,
        affinity,
        ..PodSpec::default()
    }
}

fn slim_status(status: PodStatus) -> PodStatus {
    PodStatus {
        phase: status.phase,
        conditions: status.conditions.map(slim_pod_conditions),
        container_statuses: status.container_statuses.map(slim_container_statuses),
        init_container_statuses: status.init_container_statuses.map(slim_container_statuses),
        ..PodStatus::default()
    }
}

fn slim_container_statuses(statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses
        .into_iter()
        .map(|s| {
            let waiting = s.state.and_then(|state| state.waiting).map(|w| w.reason);
            container_status(s.name, s.image, waiting)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeView, PodView};

    /// A daemon pod as the API returns it, with every field a reader uses set, and others.
    fn whole_pod() -> Pod {
        serde_json::from_value(whole_pod_json()).expect("test pod decodes")
    }

    fn whole_pod_json() -> serde_json::Value {
        serde_json::json!({
            "metadata": {
                "name": "agent-x1", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                "generateName": "agent-",
                "labels": {"app": "agent", "controller-revision-hash": "abc"},
                "annotations": {IN_PLACE_UPDATE_ANNOTATION: "{\"agent\":\"old:1\"}", "other": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                    "uid": "set-1", "controller": true}],
                "creationTimestamp": "2026-12-05T01:00:00Z",
                "deletionTimestamp": "2026-12-05T01:05:00Z",
                "finalizers": ["example.com/keep"]
            },
            "spec": {
                "nodeName": "node-1",
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{
                        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}],
                        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]
                    }]
                }}},
                "containers": [{"name": "agent", "image": "new:2", "env": [{"name": "A", "value": "b"}]}],
                "tolerations": [{"operator": "Exists"}]
            },
            "status": {
                "phase": "Running",
                "hostIP": "10.0.0.1",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-05T01:01:00Z"},
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available"}
                ],
                "initContainerStatuses": [{"name": "init", "image": "init:1", "imageID": "", "ready": false,
                    "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}],
                "containerStatuses": [{"name": "agent", "image": "old:1", "imageID": "sha", "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": "2026-12-05T01:01:00Z"}}}]
            }
        })
    }

    #[test]
    fn a_slim_pod_has_the_same_view_as_the_whole_pod() {
        let whole = whole_pod();
        let mut slim = whole.clone();
        slim_pod(&mut slim);
        for set_uid in ["set-1", "other"] {
            assert_eq!(
                PodView::from_pod(&slim, set_uid),
                PodView::from_pod(&whole, set_uid)
            );
        }
        let view = PodView::from_pod(&slim, "set-1");
        assert_eq!(view.target_node.as_deref(), Some("node-1"));
        assert!(view.trouble.is_some() && view.unschedulable.is_some());
        assert!(view.ready_since.is_some() && view.deletion_timestamp.is_some());
    }

    #[test]
    fn slimming_drops_what_no_reader_uses() {
        let mut pod = whole_pod();
        slim_pod(&mut pod);
        let spec = pod.spec.as_ref().expect("spec kept");
        assert!(spec.containers.is_empty() && spec.tolerations.is_none());
        let annotations = pod
            .metadata
            .annotations
            .as_ref()
            .expect("in-place record kept");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [IN_PLACE_UPDATE_ANNOTATION]
        );
        let status = pod.status.as_ref().expect("status kept");
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(2));
        assert_eq!(status.host_ip, None);
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn a_slim_node_has_the_same_view_as_the_whole_node() {
        let condition = |type_: &str, status: &str| {
            serde_json::json!({"type": type_, "status": status, "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-12-05T01:02:00Z",
                "lastTransitionTime": "2026-12-05T01:00:00Z"})
        };
        let whole_node = |ready: &str, disk: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "node-1", "uid": "n-1", "resourceVersion": "9",
                    "labels": {"zone": "a"}, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {"podCIDR": "10.0.0.0/24", "unschedulable": true,
                    "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
                "status": {
                    "conditions": [condition("Ready", ready), condition("DiskPressure", disk),
                        condition("MemoryPressure", "False")],
                    "capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"},
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                    "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b",
                        "kernelVersion": "6", "osImage": "d", "containerRuntimeVersion": "c",
                        "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux",
                        "architecture": "amd64"}
                }
            }))
            .expect("test node decodes")
        };
        for (ready, disk) in [
            ("True", "False"),
            ("True", "True"),
            ("False", "False"),
            ("Unknown", "True"),
        ] {
            let whole = whole_node(ready, disk);
            let mut slim = whole.clone();
            slim_node(&mut slim);
            assert_eq!(NodeView::from_node(&slim), NodeView::from_node(&whole));
            let status = slim.status.as_ref().expect("status kept");
            assert!(status.capacity.is_none() && status.node_info.is_none());
            assert_eq!(slim.metadata.annotations, None);
        }
    }

    #[test]
    fn a_pod_without_annotations_or_affinity_stays_without() {
        let mut pod = Pod::default();
        slim_pod(&mut pod);
        assert_eq!(pod, Pod::default());
    }

    /// `json` decoded by the slim decoder, and decoded whole then slimmed by `slim`.
    fn both_ways<T>(json: &serde_json::Value, slim: fn(&mut T)) -> (T, T)
    where
        T: SlimDecode + serde::de::DeserializeOwned,
    {
        let text = json.to_string();
        let decoded: Slim<T> = serde_json::from_str(&text).expect("slim decoder reads it");
        let mut whole: T = serde_json::from_str(&text).expect("whole object decodes");
        slim(&mut whole);
        (decoded.0, whole)
    }

    fn fixture(text: &str) -> serde_json::Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    #[test]
    fn the_slim_decoder_gives_the_slimmed_pod() {
        let captured = fixture(include_str!("../../tests/fixtures/pod-kwok.json"));
        let mut terminating = captured.clone();
        terminating["metadata"]["deletionTimestamp"] = "2026-12-05T01:05:00Z".into();
        terminating["metadata"]["deletionGracePeriodSeconds"] = 30.into();
        let nulls = serde_json::json!({"metadata": {"name": "p", "labels": null,
            "annotations": null, "managedFields": null}, "spec": null, "status": {"conditions": null}});
        let no_record = serde_json::json!({"metadata": {"annotations": {"other": "x"}},
            "spec": {"affinity": {"podAntiAffinity": {}}}});
        for json in [
            captured,
            terminating,
            whole_pod_json(),
            nulls,
            no_record,
            serde_json::json!({}),
        ] {
            let (decoded, slimmed) = both_ways::<Pod>(&json, slim_pod);
            assert_eq!(decoded, slimmed, "{json}");
        }
    }

    #[test]
    fn the_slim_decoder_gives_the_slimmed_node() {
        let captured = fixture(include_str!("../../tests/fixtures/node-kwok.json"));
        let mut cordoned = captured.clone();
        cordoned["spec"]["unschedulable"] = true.into();
        cordoned["spec"]["taints"] = serde_json::json!([{"key": "k", "effect": "NoSchedule"}]);
        for json in [
            captured,
            cordoned,
            serde_json::json!({"metadata": {"name": "n"}}),
        ] {
            let (decoded, slimmed) = both_ways::<Node>(&json, slim_node);
            assert_eq!(decoded, slimmed, "{json}");
        }
    }

    #[test]
    fn the_slim_decoder_keeps_what_readers_use_of_a_captured_pod() {
        let json = fixture(include_str!("../../tests/fixtures/pod-kwok.json"));
        let decoded: Slim<Pod> = serde_json::from_value(json.clone()).expect("decodes");
        let whole: Pod = serde_json::from_value(json).expect("decodes");
        assert_eq!(
            PodView::from_pod(&decoded.0, "any"),
            PodView::from_pod(&whole, "any")
        );
        let managers: Vec<_> = decoded.0.metadata.managed_fields.iter().flatten().collect();
        assert_eq!(managers.len(), 2);
        assert!(
            managers
                .iter()
                .all(|e| e.fields_v1.is_none() && e.time.is_some())
        );
        assert!(decoded.0.spec.is_some_and(|s| s.node_name.is_some()));
    }
}
