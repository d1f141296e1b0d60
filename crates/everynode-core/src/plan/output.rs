//! What a plan decides: the writes, events, status and per-node decisions ([`Plan`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use everynode_api::DaemonSetStatus;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Serialize;

use crate::backoff::BackoffEntry;
use crate::budget::BudgetError;
use crate::controls::ControlsError;
use crate::explain::{Deferrals, SharedName};
use crate::manage::PlanEvent;
use crate::problem::ConditionUpdate;
use crate::reason::{CreateReason, DeleteReason, NodeExcluded};
use crate::revision::HistoryPlan;
use crate::selector::SelectorError;
use crate::status::StatusCounts;
use crate::status::pacing::StatusWrite;

/// Why a pod is updated in place.
pub(crate) const IN_PLACE_REASON: &str =
    "pod updated in place: only container images changed (rollingUpdateType: InPlaceIfPossible)";

/// A pod to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodCreate {
    /// Target node.
    pub node: String,
    /// Name to create the pod with (see [`crate::generated_pod_name`]).
    pub pod_name: String,
    /// Revision hash of the pod.
    pub hash: String,
    /// Why.
    pub reason: CreateReason,
    /// The pre-pull pod that pulled the pod's images on the node (`prePull`), if one did.
    pub pre_pulled: Option<String>,
}

/// A short-lived pod that pulls a revision's images on a node (`rollingUpdate.prePull`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrePullCreate {
    /// The node.
    pub node: String,
    /// The pod's name.
    pub pod_name: String,
    /// The revision hash (the node's) whose images it pulls.
    pub hash: String,
    /// The images to pull.
    pub images: Vec<String>,
}

/// Image pre-pulls (`rollingUpdate.prePull`): pods to create and delete, and how far they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrePullPlan {
    /// Pre-pull pods to create.
    pub creates: Vec<PrePullCreate>,
    /// Pre-pull pods whose work is done or moot: `(name, uid)`.
    pub deletes: Vec<(String, String)>,
    /// Desired nodes on an old pod whose new images are pulled.
    pub pulled: i32,
    /// Desired nodes pulling their new images.
    pub pulling: i32,
}

/// A pod to delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodDelete {
    /// Pod name.
    pub pod: String,
    /// Pod UID (for a delete precondition), empty when unknown.
    pub uid: String,
    /// Node the pod is mapped to.
    pub node: String,
    /// Why.
    pub reason: DeleteReason,
}

/// A pod to update in place (`rollingUpdateType: InPlaceIfPossible`): patch its container
/// images, labels and annotations instead of recreating it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodUpdate {
    /// Pod name.
    pub pod: String,
    /// Pod UID (a patch precondition).
    pub uid: String,
    /// Node the pod runs on.
    pub node: String,
    /// The revision hash the pod gets.
    pub hash: String,
    /// `(container, image)` to set.
    pub images: Vec<(String, String)>,
    /// Template labels to set (with the hash label).
    pub labels: BTreeMap<String, String>,
    /// Template annotations to set.
    pub annotations: BTreeMap<String, String>,
}

/// A backoff entry to store (key: set UID / `key_generation` / node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackoffUpdate {
    /// Node name.
    pub node: String,
    /// The observedGeneration part of the backoff key.
    pub key_generation: i64,
    /// The new entry.
    pub entry: BackoffEntry,
}

/// What the plan decided about one node (for `explain`).
#[derive(Clone, PartialEq, Eq)]
pub struct NodeDecision {
    /// Node name (shares one buffer with the other decisions of the plan).
    pub node: SharedName,
    /// A daemon pod should run here.
    pub should_run: bool,
    /// An existing daemon pod may keep running.
    pub should_continue_running: bool,
    /// Why the node is excluded, if it is.
    pub excluded: Option<Box<NodeExcluded>>,
    /// Daemon pods mapped to the node before the plan.
    pub pods: usize,
    /// Where [`NodeDecision::pod`] is in the buffer `node` shares (no second reference count
    /// per node).
    pub(crate) pod_span: Option<(u32, u32)>,
    /// The node's first pod runs the update revision.
    pub updated: bool,
    /// The node's first pod is available (Ready for `minReadySeconds`).
    pub available: bool,
    /// The node override (`spec.nodeOverrides[].name`) the node gets, if one matches.
    pub node_override: Option<String>,
    /// Things deferred on this node, in order.
    pub deferred: Deferrals,
}

impl NodeDecision {
    /// The node's first pod (in upstream's order: oldest first) that is not terminating,
    /// before the plan.
    pub fn pod(&self) -> Option<&str> {
        self.pod_span
            .map(|(start, end)| self.node.in_same_buffer(start, end))
    }
}

impl fmt::Debug for NodeDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeDecision")
            .field("node", &self.node)
            .field("should_run", &self.should_run)
            .field("should_continue_running", &self.should_continue_running)
            .field("excluded", &self.excluded)
            .field("pods", &self.pods)
            .field("pod", &self.pod())
            .field("updated", &self.updated)
            .field("available", &self.available)
            .field("deferred", &self.deferred)
            .finish()
    }
}

impl Serialize for NodeDecision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("NodeDecision", 9)?;
        out.serialize_field("node", &self.node)?;
        out.serialize_field("should_run", &self.should_run)?;
        out.serialize_field("should_continue_running", &self.should_continue_running)?;
        out.serialize_field("excluded", &self.excluded)?;
        out.serialize_field("pods", &self.pods)?;
        out.serialize_field("pod", &self.pod())?;
        out.serialize_field("updated", &self.updated)?;
        out.serialize_field("available", &self.available)?;
        out.serialize_field("deferred", &self.deferred)?;
        out.end()
    }
}

/// A non-fatal problem; the runtime should log it and retry with backoff.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The set's selector is invalid; nothing is done.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// The rolling update budget is invalid; the rolling update step is skipped.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// A rollout control is invalid; the rolling update step is skipped.
    #[error(transparent)]
    Controls(#[from] ControlsError),
    /// A node override cannot be applied; no pod of the update revision is created.
    #[error(transparent)]
    Override(#[from] crate::overrides::OverrideError),
}

/// The outcome of one plan. Apply in this order: adopt/release, history, deletes, creates,
/// status, events.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Orphan pods to adopt (after an uncached check that the set is not being deleted and
    /// has the same UID; if that check fails, apply nothing of this plan).
    pub adopt_pods: Vec<String>,
    /// Owned pods whose labels no longer match the selector: remove the owner reference.
    pub release_pods: Vec<String>,
    /// Revision history actions.
    pub history: HistoryPlan,
    /// Pods to create, by node name.
    pub creates: Vec<PodCreate>,
    /// Pod templates other than the set's that `creates` use, by hash: node overrides', and
    /// older revisions' (`newNodePolicy: Stable`, an abort); other creates use the set's
    /// template.
    #[serde(skip)]
    pub templates: BTreeMap<String, PodTemplateSpec>,
    /// Pods to delete.
    pub deletes: Vec<PodDelete>,
    /// Image pre-pulls (`rollingUpdate.prePull`).
    pub pre_pull: PrePullPlan,
    /// Pods to update in place (apply after the deletes).
    pub updates: Vec<PodUpdate>,
    /// Failed-pod backoff entries to store.
    pub backoff_updates: Vec<BackoffUpdate>,
    /// Events to publish on the set (SuccessfulCreate/Delete are the runtime's own).
    pub events: Vec<PlanEvent>,
    /// The status; `None` when upstream would not write it (set being deleted, empty or
    /// invalid selector).
    #[serde(skip)]
    pub status: Option<DaemonSetStatus>,
    /// The counters of `status`.
    pub counts: Option<StatusCounts>,
    /// How to write `status`, when it differs from the stored one (`None`: no write).
    #[serde(skip)]
    pub status_write: Option<StatusWrite>,
    /// Plan again after this delay even without events.
    pub requeue_after: Option<Duration>,
    /// Per-node decisions (when `config.explain`).
    pub nodes: Vec<NodeDecision>,
    /// Claimed pods ignored because their target node cannot be determined: `(pod, why)`.
    pub ignored_pods: Vec<(String, String)>,
    /// Problems that stopped part of the plan.
    #[serde(skip)]
    pub errors: Vec<PlanError>,
    /// `failurePolicy: Rollback` after a failure: put this template back into the spec
    /// (before anything else of the plan; the status records it).
    #[serde(skip)]
    pub rollback: Option<PlannedRollback>,
}

/// An automatic rollback to the stable revision.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRollback {
    /// The failed revision.
    pub from: String,
    /// The stable revision whose template goes back.
    pub to: String,
    /// Its template.
    pub template: PodTemplateSpec,
    /// Its node overrides (`None`: it has none).
    pub node_overrides: Option<Vec<everynode_api::NodeOverride>>,
    /// Why (the failure's reason and message).
    pub reason: String,
}

impl Plan {
    /// After failed writes: the status speaks for `generation` all the same, since a full sync
    /// was attempted (upstream does the same).
    pub fn observe_generation(
        &mut self,
        generation: Option<i64>,
        stored: Option<&DaemonSetStatus>,
    ) {
        if let Some(status) = self.status.as_mut()
            && status.observed_generation < generation
        {
            status.observed_generation = generation;
            self.status_write = Some(StatusWrite::classify(stored, status));
        }
    }

    /// Puts a problem condition's update into the status, and the status write into the plan
    /// when it changes the status (`stored`: the status the set has).
    pub fn apply_condition(&mut self, update: &ConditionUpdate, stored: Option<&DaemonSetStatus>) {
        if let Some(status) = self.status.as_mut()
            && update.apply_to_status(status)
        {
            self.status_write = Some(StatusWrite::classify(stored, status));
        }
    }

    /// No pod, revision or ownership action (events, status and requeue aside).
    pub fn is_noop(&self) -> bool {
        let h = &self.history;
        self.adopt_pods.is_empty()
            && self.release_pods.is_empty()
            && self.creates.is_empty()
            && self.deletes.is_empty()
            && self.updates.is_empty()
            && self.pre_pull.creates.is_empty()
            && self.pre_pull.deletes.is_empty()
            && h.adopt.is_empty()
            && h.release.is_empty()
            && h.add_hash_label.is_empty()
            && h.create.is_none()
            && h.renumber.is_none()
            && h.relabel_pods.is_empty()
            && h.delete.is_empty()
            && h.collision_count.is_none()
    }

    /// Human lines for one node: eligibility, creates, deletes, deferrals.
    pub fn explain_node(&self, node: &str) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(d) = self.nodes.iter().find(|d| d.node == node) {
            match &d.excluded {
                Some(why) if d.should_continue_running => {
                    lines.push(format!("{why} (existing pods keep running)"));
                }
                Some(why) => lines.push(why.to_string()),
                None => lines.push("node eligible".to_owned()),
            }
            lines.extend(d.deferred.iter().map(ToString::to_string));
        }
        lines.extend(
            self.creates
                .iter()
                .filter(|c| c.node == node)
                .map(|c| format!("{} ({})", c.reason, c.pod_name)),
        );
        lines.extend(
            self.deletes
                .iter()
                .filter(|d| d.node == node)
                .map(|d| format!("{} ({})", d.reason, d.pod)),
        );
        lines.extend(
            self.updates
                .iter()
                .filter(|u| u.node == node)
                .map(|u| format!("{IN_PLACE_REASON} ({})", u.pod)),
        );
        lines
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.creates {
            writeln!(f, "create {} on {}: {}", c.pod_name, c.node, c.reason)?;
        }
        for d in &self.deletes {
            writeln!(f, "delete {} on {}: {}", d.pod, d.node, d.reason)?;
        }
        for u in &self.updates {
            writeln!(f, "update {} on {}: {IN_PLACE_REASON}", u.pod, u.node)?;
        }
        for e in &self.events {
            writeln!(f, "event {}: {}", e.reason.as_str(), e.message)?;
        }
        Ok(())
    }
}
