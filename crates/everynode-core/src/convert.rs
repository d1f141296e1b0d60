//! Kubernetes objects → the planner's views: one way in for the controller and the CLI
//! ([`PlanInput::from_objects`]), and the built-in apps/v1 DaemonSet read as an everynode one
//! (the everynode API is the apps/v1 one plus optional extras).

use std::collections::BTreeMap;
use std::sync::Arc;

use everynode_api::DaemonSet;
use everynode_api::labels::TEMPLATE_GENERATION_ANNOTATION;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use crate::snapshot::{
    NodeProblem, NodeView, Owner, PlanInput, PodPhase, PodView, RevisionView, SetView,
    SnapshotError,
};

impl PlanInput {
    /// The input for `set` from the objects a client sees: every node, the pods of the set's
    /// namespace owned by the set or orphans (pods of other controllers are left out), and the
    /// namespace's revisions. Objects of other namespaces may be passed; they are skipped.
    pub fn from_objects<'o>(
        set: SetView,
        nodes: impl IntoIterator<Item = &'o Node>,
        pods: impl IntoIterator<Item = &'o Pod>,
        revisions: impl IntoIterator<Item = &'o ControllerRevision>,
        now: Timestamp,
    ) -> Self {
        let nodes = nodes
            .into_iter()
            .map(|n| Arc::new(NodeView::from_node(n)))
            .collect();
        // Pods of other controllers are left out before any view is built.
        let pods = pods
            .into_iter()
            .filter(|p| PodView::concerns(p, &set))
            .map(|p| Arc::new(PodView::from_pod(p, &set.uid)))
            .collect();
        Self::from_views(set, nodes, pods, revisions, now)
    }

    /// [`PlanInput::from_objects`] with node and pod views the caller already has (a controller
    /// keeps them between plans; node views are shared across sets). `pods` are the views of
    /// pods for which [`PodView::concerns`] holds.
    pub fn from_views<'o>(
        set: SetView,
        nodes: Vec<Arc<NodeView>>,
        pods: Vec<Arc<PodView>>,
        revisions: impl IntoIterator<Item = &'o ControllerRevision>,
        now: Timestamp,
    ) -> Self {
        let revisions = revisions
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(set.namespace.as_str()))
            .map(|r| RevisionView::from_revision(r, &set.uid))
            .collect();
        let mut input = Self::new(set, now);
        input.nodes = nodes;
        input.pods = pods;
        input.revisions = revisions;
        input
    }
}

impl Owner {
    /// Classifies owner references against the set's UID.
    pub fn from_refs(refs: Option<&Vec<OwnerReference>>, set_uid: &str) -> Self {
        match refs
            .into_iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        {
            None => Self::Orphan,
            Some(r) if r.uid == set_uid => Self::ThisSet,
            Some(_) => Self::Other,
        }
    }
}

impl SetView {
    /// Builds the view of an everynode `DaemonSet`.
    pub fn from_daemon_set(ds: &DaemonSet) -> Result<Self, SnapshotError> {
        let meta = &ds.metadata;
        let req = |v: &Option<String>, field| {
            v.clone().ok_or(SnapshotError::MissingField {
                kind: "DaemonSet",
                field,
            })
        };
        let annotations = meta.annotations.clone().unwrap_or_default();
        let template_generation = annotations
            .get(TEMPLATE_GENERATION_ANNOTATION)
            .and_then(|v| v.parse::<i64>().ok());
        Ok(Self {
            name: req(&meta.name, "name")?,
            namespace: req(&meta.namespace, "namespace")?,
            uid: req(&meta.uid, "uid")?,
            generation: meta.generation,
            annotations,
            spec: ds.spec.clone(),
            template_generation,
            deleting: meta.deletion_timestamp.is_some(),
            status: ds.status.clone(),
        })
    }
}

/// A built-in apps/v1 set read as an everynode one: the same metadata, spec and status
/// converted field by field.
pub fn from_apps_v1(set: &apps::DaemonSet) -> Result<DaemonSet, SnapshotError> {
    let name = set.metadata.name.clone().unwrap_or_default();
    let spec = set
        .spec
        .as_ref()
        .ok_or_else(|| SnapshotError::MissingSpec {
            kind: "DaemonSet",
            name: name.clone(),
        })?;
    let spec = reshape(spec, "spec")?;
    let status = set.status.as_ref().map(status_from_apps_v1).transpose()?;
    let mut converted = DaemonSet::new(&name, spec);
    converted.metadata = set.metadata.clone();
    converted.status = status;
    Ok(converted)
}

/// An everynode status in the apps/v1 shape (conditions as `DaemonSetCondition`, without
/// `observedGeneration`), for a status write to a built-in set.
pub fn status_to_apps_v1(
    status: &everynode_api::DaemonSetStatus,
) -> Result<apps::DaemonSetStatus, SnapshotError> {
    reshape(status, "status")
}

/// A built-in status. apps/v1 conditions have optional reason, message and time, which
/// `metav1.Condition` requires: missing ones read as empty (time: the Unix epoch). apps/v1
/// omits zero counters (`omitempty`): they read as the 0 they are, so that an unchanged status
/// is not written again.
fn status_from_apps_v1(
    status: &apps::DaemonSetStatus,
) -> Result<everynode_api::DaemonSetStatus, SnapshotError> {
    let counters = apps::DaemonSetStatus {
        conditions: None,
        ..status.clone()
    };
    let mut converted: everynode_api::DaemonSetStatus = reshape(&counters, "status")?;
    converted.conditions = status.conditions.as_ref().map(|conditions| {
        conditions
            .iter()
            .map(|c| Condition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
                last_transition_time: c
                    .last_transition_time
                    .clone()
                    .unwrap_or(Time(Timestamp::UNIX_EPOCH)),
                observed_generation: None,
            })
            .collect()
    });
    converted.updated_number_scheduled.get_or_insert(0);
    converted.number_available.get_or_insert(0);
    converted.number_unavailable.get_or_insert(0);
    Ok(converted)
}

/// `value` read as the same field of the other API (they share the JSON shape).
fn reshape<From: serde::Serialize, To: serde::de::DeserializeOwned>(
    value: &From,
    field: &'static str,
) -> Result<To, SnapshotError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| SnapshotError::Reshape {
            field,
            message: e.to_string(),
        })
}

/// Node conditions that mean trouble when `True`, and the taints the node lifecycle
/// controller puts on for them.
const PRESSURE: [(&str, &str); 4] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];

/// Whether `condition` is one of the conditions of [`PRESSURE`].
pub(crate) fn is_pressure_condition(condition: &str) -> bool {
    PRESSURE.iter().any(|(c, _)| *c == condition)
}

/// The first problem of a node, from its conditions, else from its taints.
fn node_problem(node: &Node, taints: &[Taint]) -> Option<NodeProblem> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let since = |c: &k8s_openapi::api::core::v1::NodeCondition| {
        c.last_transition_time.as_ref().map(|t| t.0)
    };
    if let Some(c) = conditions.iter().find(|c| c.type_ == "Ready")
        && c.status != "True"
    {
        let what = if c.status == "False" {
            "NotReady"
        } else {
            "Unreachable"
        };
        return Some(NodeProblem {
            what: what.to_owned(),
            since: since(c),
        });
    }
    for (condition, _) in PRESSURE {
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == condition && c.status == "True")
        {
            return Some(NodeProblem {
                what: condition.to_owned(),
                since: since(c),
            });
        }
    }
    let taint_problems = [
        ("NotReady", "node.kubernetes.io/not-ready"),
        ("Unreachable", "node.kubernetes.io/unreachable"),
    ]
    .into_iter()
    .chain(PRESSURE);
    for (what, key) in taint_problems {
        if let Some(t) = taints.iter().find(|t| t.key == key) {
            return Some(NodeProblem {
                what: what.to_owned(),
                since: t.time_added.as_ref().map(|t| t.0),
            });
        }
    }
    None
}

impl NodeView {
    /// Builds the view of a node.
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| match c.status.as_str() {
                "True" => Some(true),
                "False" => Some(false),
                _ => None,
            });
        let taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            problem: node_problem(node, &taints),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready,
        }
    }
}

/// Container waiting reasons that mean the pod will not run without a change.
const FAILING_WAITING_REASONS: [&str; 7] = [
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The first container (init containers first) waiting for a reason that means trouble.
fn pod_trouble(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            FAILING_WAITING_REASONS
                .contains(&reason)
                .then(|| format!("container {}: {reason}", c.name))
        })
}

/// Whether `pod` was updated in place and some container still reports the image it had
/// before (see [`everynode_api::labels::IN_PLACE_UPDATE_ANNOTATION`]).
pub fn in_place_pending(pod: &Pod) -> bool {
    let Some(before) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(everynode_api::labels::IN_PLACE_UPDATE_ANNOTATION))
    else {
        return false;
    };
    // An unreadable record is treated as done rather than blocking the rollout forever.
    let Ok(before) = serde_json::from_str::<BTreeMap<String, String>>(before) else {
        return false;
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    before.iter().any(|(container, old_image)| {
        statuses
            .iter()
            .find(|s| s.name == *container)
            .is_none_or(|s| s.image == *old_image)
    })
}

impl PodView {
    /// Whether a plan of `set` looks at `pod`: it is in the set's namespace and owned by the
    /// set or by no controller.
    pub fn concerns(pod: &Pod, set: &SetView) -> bool {
        pod.metadata.namespace.as_deref() == Some(set.namespace.as_str())
            && Owner::from_refs(pod.metadata.owner_references.as_ref(), &set.uid) != Owner::Other
    }

    /// Builds the view of a pod, classifying its owner against `set_uid`.
    pub fn from_pod(pod: &Pod, set_uid: &str) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let ready_cond = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
            owner: Some(Owner::from_refs(
                pod.metadata.owner_references.as_ref(),
                set_uid,
            )),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_node: crate::render::target_node_name(pod).ok(),
            phase: PodPhase::parse(status.and_then(|s| s.phase.as_deref())),
            // A pod updated in place is not ready until its containers run the new images.
            ready: ready_cond.is_some_and(|c| c.status == "True") && !in_place_pending(pod),
            ready_since: ready_cond
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            deletion_timestamp: pod.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            trouble: pod_trouble(pod),
            unschedulable: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter().find(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
                .map(|c| c.message.clone().unwrap_or_default()),
        }
    }
}

impl RevisionView {
    /// Builds the view of a ControllerRevision.
    pub fn from_revision(rev: &ControllerRevision, set_uid: &str) -> Self {
        let meta: &ObjectMeta = &rev.metadata;
        Self {
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            owner: Some(Owner::from_refs(meta.owner_references.as_ref(), set_uid)),
            revision: rev.revision,
            data: rev
                .data
                .as_ref()
                .map(|d| d.0.clone())
                .unwrap_or(serde_json::Value::Null),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}
