//! The planner on arbitrary snapshots — nodes with labels, taints and conditions; pods of the
//! current and older templates in every phase, ready or not, terminating or not; every update
//! strategy and control — checked against its invariants: no panic, the same plan twice, at most
//! one create per node and only on known nodes, deletes and updates only of known pods, nothing
//! written while expectations are pending or the set is frozen, no pod of a template the
//! apiserver refuses, and status counters within bounds.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use everynode_api::DaemonSet;
use everynode_core::{NodeView, PlanInput, PodView, SetView, Timestamp, hash_template, plan};
use k8s_openapi::api::core::v1::{Node, Pod};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const UID: &str = "set-uid";

#[derive(Arbitrary, Debug)]
struct Scenario {
    nodes: Vec<FuzzNode>,
    pods: Vec<FuzzPod>,
    strategy: u8,
    max_unavailable: u8,
    max_surge: u8,
    partition: u8,
    paused: bool,
    frozen: bool,
    image: u8,
    min_ready_seconds: u8,
    expectations_satisfied: bool,
    rejected: bool,
    seed: u64,
}

#[derive(Arbitrary, Debug)]
struct FuzzNode {
    selected: bool,
    taint: u8,
    unschedulable: bool,
    ready: u8,
}

#[derive(Arbitrary, Debug)]
struct FuzzPod {
    node: u8,
    image: u8,
    phase: u8,
    ready: bool,
    deleting: bool,
    age_seconds: u16,
    owned: bool,
}

const NOW: i64 = 1_800_000_000;

fn set(s: &Scenario) -> DaemonSet {
    let strategy = match s.strategy % 3 {
        0 => json!({"type": "OnDelete"}),
        1 => json!({"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": s.max_unavailable % 4, "maxSurge": 0,
            "partition": s.partition % 4,
        }}),
        _ => json!({"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": 0, "maxSurge": 1 + s.max_surge % 3,
        }}),
    };
    let value = json!({
        "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ns", "uid": UID, "generation": 2},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "minReadySeconds": s.min_ready_seconds % 10,
            "paused": s.paused,
            "frozen": s.frozen,
            "updateStrategy": strategy,
            "template": template(s.image),
        }
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("fuzz set: {e}"))
}

fn template(image: u8) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": "agent"}},
        "spec": {
            "nodeSelector": {"pool": "a"},
            "containers": [{"name": "agent", "image": format!("agent:v{}", image % 3)}]
        }
    })
}

fn hash_of(image: u8) -> String {
    let template = serde_json::from_value(template(image)).unwrap_or_default();
    hash_template(&template, None)
}

fn node(i: usize, n: &FuzzNode) -> Node {
    let taints = match n.taint % 3 {
        0 => json!([]),
        1 => json!([{"key": "gpu", "effect": "NoSchedule"}]),
        _ => json!([{"key": "dedicated", "effect": "NoExecute"}]),
    };
    let ready = ["True", "False", "Unknown"][usize::from(n.ready % 3)];
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"),
                     "labels": {"pool": if n.selected { "a" } else { "b" }}},
        "spec": {"taints": taints, "unschedulable": n.unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": ready}]}
    }))
    .unwrap_or_default()
}

fn pod(i: usize, p: &FuzzPod, nodes: usize) -> Pod {
    let node = format!("node-{}", usize::from(p.node) % nodes.max(1));
    let phase = ["Pending", "Running", "Succeeded", "Failed", "Unknown"][usize::from(p.phase % 5)];
    let created = NOW - i64::from(p.age_seconds);
    let stamp = |t: i64| {
        Timestamp::from_second(t)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_string()
    };
    let owner = if p.owned {
        json!([{"apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet", "name": "agent",
                "uid": UID, "controller": true}])
    } else {
        json!([])
    };
    let mut value = json!({
        "metadata": {
            "name": format!("agent-{i}"), "namespace": "ns", "uid": format!("pod-{i}"),
            "labels": {"app": "agent", "controller-revision-hash": hash_of(p.image)},
            "ownerReferences": owner,
            "creationTimestamp": stamp(created),
        },
        "spec": {
            "nodeName": node,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
            "containers": [{"name": "agent", "image": format!("agent:v{}", p.image % 3)}]
        },
        "status": {"phase": phase, "conditions": [{
            "type": "Ready", "status": if p.ready { "True" } else { "False" },
            "lastTransitionTime": stamp(created),
        }]}
    });
    if p.deleting {
        value["metadata"]["deletionTimestamp"] = json!(stamp(NOW));
    }
    serde_json::from_value(value).unwrap_or_default()
}

fuzz_target!(|s: Scenario| {
    let nodes: Vec<Node> = s
        .nodes
        .iter()
        .take(12)
        .enumerate()
        .map(|(i, n)| node(i, n))
        .collect();
    let pods: Vec<Pod> = s
        .pods
        .iter()
        .take(24)
        .enumerate()
        .map(|(i, p)| pod(i, p, nodes.len()))
        .collect();
    let Ok(view) = SetView::from_daemon_set(&set(&s)) else {
        return;
    };
    let now = Timestamp::from_second(NOW).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut input = PlanInput::new(view, now);
    input.nodes = nodes
        .iter()
        .map(|n| std::sync::Arc::new(NodeView::from_node(n)))
        .collect();
    input.pods = pods.iter().map(|p| PodView::from_pod(p, UID).into()).collect();
    input.expectations_satisfied = s.expectations_satisfied;
    input.name_seed = s.seed;
    let current = hash_of(s.image);
    if s.rejected {
        input.rejected_hash = Some(current.clone());
    }

    let first = plan(&input);
    assert_eq!(first, plan(&input), "the same input planned twice differs");

    let node_names: BTreeSet<String> = (0..nodes.len()).map(|i| format!("node-{i}")).collect();
    let mut created_on = BTreeSet::new();
    for create in &first.creates {
        assert!(
            node_names.contains(&create.node),
            "create on unknown node {}",
            create.node
        );
        assert!(
            created_on.insert(create.node.clone()),
            "two creates on {}",
            create.node
        );
    }
    let pod_names: BTreeSet<String> = (0..pods.len()).map(|i| format!("agent-{i}")).collect();
    let mut deleted = BTreeSet::new();
    for delete in &first.deletes {
        assert!(
            pod_names.contains(&delete.pod),
            "delete of unknown pod {}",
            delete.pod
        );
        assert!(
            deleted.insert(delete.pod.clone()),
            "{} deleted twice",
            delete.pod
        );
    }
    for update in &first.updates {
        assert!(
            pod_names.contains(&update.pod),
            "update of unknown pod {}",
            update.pod
        );
        assert!(
            !deleted.contains(&update.pod),
            "{} deleted and updated",
            update.pod
        );
    }
    let writes = first.creates.len() + first.deletes.len() + first.updates.len();
    if !s.expectations_satisfied || s.frozen {
        assert_eq!(
            writes, 0,
            "pod writes while expectations pend or the set is frozen"
        );
    }
    if s.rejected {
        assert!(
            first.creates.iter().all(|c| c.hash != current) && first.updates.is_empty(),
            "a pod of a refused template"
        );
    }
    if let Some(counts) = &first.counts {
        let n = i32::try_from(nodes.len()).unwrap_or(i32::MAX);
        assert!(counts.desired >= 0 && counts.desired <= n, "{counts:?}");
        assert!(
            counts.current >= 0 && counts.current <= counts.desired,
            "{counts:?}"
        );
        assert!(
            counts.ready >= 0 && counts.available <= counts.ready,
            "{counts:?}"
        );
        assert!(
            counts.misscheduled >= 0 && counts.misscheduled <= n,
            "{counts:?}"
        );
    }
});
