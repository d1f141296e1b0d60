//! The planner's input: small views of the set, its nodes, pods and revisions, plus `now`
//! and the failed-pod backoff state (`convert.rs` builds them from Kubernetes objects).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use everynode_api::{DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::jiff::Timestamp;

use crate::backoff::{BackoffConfig, BackoffEntry};

/// A pod's labels. Pods may share one map: a plan computes what it reads from a shared map
/// (selector match, revision hash) once, telling maps apart by address.
pub type PodLabels = Arc<BTreeMap<String, String>>;

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
    /// A built-in apps/v1 field does not fit the everynode API, or back (it should always fit:
    /// the everynode API is the apps/v1 one).
    #[error("its {field} cannot be read as the apps/v1 DaemonSet {field}: {message}")]
    Reshape {
        /// `spec` or `status`.
        field: &'static str,
        /// The decoding error.
        message: String,
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
    /// `metadata.labels`, shared: the runtime gives pods with equal labels (every pod of a
    /// revision) one map, and a plan reads each distinct map once (see [`PodLabels`]).
    pub labels: PodLabels,
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

impl PodView {
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
    /// All nodes (shared: a caller may keep the views between plans and across sets).
    pub nodes: Vec<Arc<NodeView>>,
    /// Pods in the set's namespace that are owned by the set or orphans matching its selector
    /// (others are ignored). Shared: a caller may keep the views between plans.
    pub pods: Vec<Arc<PodView>>,
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
    /// `(node, hash)` of pre-pull pods the apiserver refused to create (`prePull`): those
    /// nodes are updated without waiting for a pull.
    pub pre_pull_refused: Vec<(String, String)>,
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
            pre_pull_refused: Vec::new(),
            config: PlanConfig::default(),
        }
    }
}
