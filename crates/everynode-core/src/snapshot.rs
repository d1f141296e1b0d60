//! The planner's input: small views of the set, its nodes, pods and revisions, plus `now`
//! and the failed-pod backoff state; and pure conversions from Kubernetes objects.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use std::collections::BTreeMap;

use everynode_api::labels::TEMPLATE_GENERATION_ANNOTATION;
use everynode_api::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::backoff::{BackoffConfig, BackoffEntry};

/// An object that cannot be turned into a view.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A required metadata field is missing.
    #[error("{kind} is missing metadata.{field}")]
    MissingField {
        /// Object kind.
        kind: &'static str,
        /// Missing field.
        field: &'static str,
    },
    /// The object has no spec.
    #[error("{kind} {name} has no spec")]
    MissingSpec {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
    },
}

/// Who controls a pod or revision, relative to the planned set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Owner {
    /// Controller reference to this set (by UID).
    ThisSet,
    /// No controller reference.
    Orphan,
    /// Controlled by another object.
    Other,
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

/// The set being planned.
#[derive(Clone, Debug, PartialEq)]
pub struct SetView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation` (observedGeneration is set to it).
    pub generation: Option<i64>,
    /// `metadata.annotations` (copied onto new revisions).
    pub annotations: BTreeMap<String, String>,
    /// The spec.
    pub spec: DaemonSetSpec,
    /// apps/v1 template generation (annotation `deprecated.daemonset.template.generation`);
    /// `None` for sets that never had one.
    pub template_generation: Option<i64>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The stored status (collisionCount, counters to compare against).
    pub status: Option<DaemonSetStatus>,
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

    /// `status.collisionCount`.
    pub fn collision_count(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| s.collision_count)
    }
}

/// A node, as far as the planner cares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (display only; eligibility looks at taints).
    pub unschedulable: bool,
    /// `Ready` condition (display only): `Some(true)` Ready, `Some(false)` not, `None` unknown.
    pub ready: Option<bool>,
    /// What is wrong with the node, if anything (rollout safety: `unavailableNodePolicy` and
    /// the node-health guard).
    pub problem: Option<NodeProblem>,
}

/// A node that is not healthy: NotReady or unreachable, under memory, disk or PID pressure, or
/// without network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeProblem {
    /// What: `NotReady`, `Unreachable`, `MemoryPressure`, `DiskPressure`, `PIDPressure` or
    /// `NetworkUnavailable`.
    pub what: String,
    /// Since when (the condition's last transition, or the taint's `timeAdded`), if known.
    pub since: Option<Timestamp>,
}

impl NodeProblem {
    /// Whether the node is down (NotReady or unreachable) rather than under pressure.
    pub fn is_down(&self) -> bool {
        matches!(self.what.as_str(), "NotReady" | "Unreachable")
    }
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

/// Pod phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum PodPhase {
    /// `Pending` (also used when the phase is empty).
    #[default]
    Pending,
    /// `Running`.
    Running,
    /// `Succeeded`.
    Succeeded,
    /// `Failed`.
    Failed,
    /// `Unknown` or any other value.
    Unknown,
}

impl PodPhase {
    /// Parses `status.phase`.
    pub fn parse(phase: Option<&str>) -> Self {
        match phase {
            None | Some("") | Some("Pending") => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            Some(_) => Self::Unknown,
        }
    }

    /// `Failed` or `Succeeded`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Succeeded)
    }
}

/// A pod that may belong to the set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Controller relation to the planned set.
    pub owner: Option<Owner>,
    /// `spec.nodeName` when bound.
    pub node_name: Option<String>,
    /// Target node (§2.3 `GetTargetNodeName`): `spec.nodeName`, else the single
    /// `metadata.name In [node]` required affinity value; `None` → ignored by the controller.
    pub target_node: Option<String>,
    /// `status.phase`.
    pub phase: PodPhase,
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// `lastTransitionTime` of the Ready condition.
    pub ready_since: Option<Timestamp>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<Timestamp>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// A container that cannot run, e.g. `container agent: CrashLoopBackOff` (rollout safety
    /// counts the node as failed).
    pub trouble: Option<String>,
    /// The scheduler's message while it cannot place the pod (`PodScheduled=False`, reason
    /// `Unschedulable`).
    pub unschedulable: Option<String>,
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
            labels: pod.metadata.labels.clone().unwrap_or_default(),
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

    /// The owner, `Orphan` when unknown.
    pub fn owner(&self) -> Owner {
        self.owner.unwrap_or(Owner::Orphan)
    }

    /// `metadata.deletionTimestamp` is set.
    pub fn deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// A ControllerRevision that may belong to the set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevisionView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Controller relation to the planned set.
    pub owner: Option<Owner>,
    /// `revision`.
    pub revision: i64,
    /// `data` (raw JSON).
    pub data: serde_json::Value,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
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

    /// The owner, `Orphan` when unknown.
    pub fn owner(&self) -> Owner {
        self.owner.unwrap_or(Owner::Orphan)
    }
}

/// Tunables of the planner (upstream kube-controller-manager values by default).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanConfig {
    /// Failed-pod backoff (1 s doubling to 15 min).
    pub backoff: BackoffConfig,
    /// Maximum creates and maximum deletes per plan (upstream `burstReplicas` = 250).
    pub burst_replicas: usize,
    /// Produce per-node decisions for `explain` (cheap; can be turned off for hot paths).
    pub explain: bool,
    /// Fill in everynode's rollout status (revisions, pods per revision, rollout conditions);
    /// off for apps/v1 sets, whose status stays exactly as upstream writes it.
    pub rollout_status: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            backoff: BackoffConfig::default(),
            burst_replicas: 250,
            explain: true,
            rollout_status: true,
        }
    }
}

/// Everything one plan looks at.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// The set.
    pub set: SetView,
    /// All nodes.
    pub nodes: Vec<NodeView>,
    /// Pods in the set's namespace that are owned by the set or orphans matching its selector
    /// (others are ignored).
    pub pods: Vec<PodView>,
    /// ControllerRevisions in the set's namespace.
    pub revisions: Vec<RevisionView>,
    /// Failed-pod backoff entries of this set's current key (set UID and
    /// `status.observedGeneration`), by node name.
    pub backoff: BTreeMap<String, BackoffEntry>,
    /// The controller's clock.
    pub now: Timestamp,
    /// Seed of the names of the pods this plan creates ([`crate::generated_pod_name`]): the
    /// runtime draws a fresh one for every plan.
    pub name_seed: u64,
    /// The runtime's expectations for this set are satisfied. When false only the status is
    /// computed (without bumping observedGeneration) and no pod is touched (§4.1 step 7).
    pub expectations_satisfied: bool,
    /// Hash of a template the apiserver refuses pods of (the runtime's server-side dry run):
    /// when it is the update revision's, no old pod is replaced and no pod of it is created.
    pub rejected_hash: Option<String>,
    /// Tunables.
    pub config: PlanConfig,
}

impl PlanInput {
    /// An input with no nodes, pods or revisions, satisfied expectations and default config.
    pub fn new(set: SetView, now: Timestamp) -> Self {
        Self {
            set,
            nodes: Vec::new(),
            pods: Vec::new(),
            revisions: Vec::new(),
            backoff: BTreeMap::new(),
            now,
            name_seed: 0,
            expectations_satisfied: true,
            rejected_hash: None,
            config: PlanConfig::default(),
        }
    }
}
