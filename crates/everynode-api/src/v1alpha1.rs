//! `everynode.dev/v1alpha1` `DaemonSet`: the apps/v1 DaemonSet spec and status.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::rules;

/// Desired state of an everynode DaemonSet: one pod from `template` on every node that the
/// template's node selector, node affinity and tolerations allow.
///
/// Same fields, defaults and validation as apps/v1 `DaemonSetSpec`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "everynode.dev",
    version = "v1alpha1",
    kind = "DaemonSet",
    plural = "daemonsets",
    singular = "daemonset",
    shortname = "evds",
    category = "all",
    category = "everynode",
    namespaced,
    status = "DaemonSetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A DaemonSet run by everynode: one pod from the template on every eligible node.",
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredNumberScheduled", description = "Nodes that should run the daemon pod"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.currentNumberScheduled", description = "Nodes that should run the daemon pod and run at least one"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.numberReady", description = "Nodes whose daemon pod is Ready"),
    printcolumn(name = "Up-to-date", type_ = "integer", json_path = ".status.updatedNumberScheduled", description = "Nodes whose daemon pod runs the current revision"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.numberAvailable", description = "Nodes whose daemon pod has been Ready for minReadySeconds"),
    printcolumn(name = "Node Selector", type_ = "string", json_path = ".spec.template.spec.nodeSelector", description = "The pod template's node selector"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::name_is_dns_subdomain(),
)]
#[x_kube(
    validation = rules::selector_not_empty(),
    validation = rules::selector_matches_template(),
    validation = rules::selector_requirements_valid(),
    validation = rules::template_has_spec(),
    validation = rules::restart_policy_always(),
    validation = rules::no_active_deadline(),
    validation = rules::containers_have_images(),
)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetSpec {
    /// Label query over the pods this set manages. Must match the pod template's labels and may
    /// not be empty. Immutable.
    #[x_kube(validation = rules::selector_immutable())]
    pub selector: LabelSelector,

    /// The pod that runs on every eligible node. `spec.restartPolicy` must be `Always`.
    pub template: PodTemplateSpec,

    /// How existing pods are replaced when the template changes. Defaults to `RollingUpdate`
    /// with `maxUnavailable: 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}))]
    pub update_strategy: Option<DaemonSetUpdateStrategy>,

    /// Seconds a new pod must be Ready, without any container crashing, before it counts as
    /// available. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    #[x_kube(validation = rules::non_negative("spec.minReadySeconds"))]
    pub min_ready_seconds: Option<i32>,

    /// How many old ControllerRevisions to keep for rollback. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 10))]
    #[x_kube(validation = rules::non_negative("spec.revisionHistoryLimit"))]
    pub revision_history_limit: Option<i32>,

    /// Stop updating existing pods; nodes that join still get a pod (of the revision
    /// `rollingUpdate.newNodePolicy` picks). Defaults to false. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// Change no pod at all, not even on nodes that join or leave; existing pods keep running and
    /// the status keeps being reported. Defaults to false. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<bool>,

    /// Set by `everynode rollout abort`: while the template is this revision, pods go back to
    /// `status.stableRevision` through the same budgets, and the template is left as it is (what
    /// a GitOps tool owns is not rewritten). A template of another revision ends it; `everynode
    /// rollout retry` removes it. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<RolloutAbort>,

    /// Set by `everynode rollout retry`: a failure of this revision recorded before `at` is
    /// dropped, and its pods created before `at` no longer count towards a new one. everynode
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RolloutRetry>,

    /// A node readiness gate: nodes join with `taint` (kubelet `--register-with-taints`), the
    /// set's pods tolerate it, and everynode removes it from a node once every set declaring
    /// the same taint key has an available pod there. Unset: no gate. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_readiness: Option<NodeReadiness>,

    /// Per-node overrides: a node gets the template with the container changes of the first
    /// override, in list order, whose `nodeSelector` matches its labels (e.g. more memory on
    /// GPU nodes, another image on arm64 nodes). They are part of the revision: a change rolls
    /// out through the budgets, to the nodes it affects only. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_overrides: Option<Vec<NodeOverride>>,
}

/// `spec.nodeOverrides[]`: container changes for the nodes a selector matches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverride {
    /// The override's name, unique in the list (shown by `plan`, `explain` and the status).
    pub name: String,
    /// The nodes it applies to, by their labels.
    #[x_kube(validation = rules::override_selector_valid())]
    pub node_selector: LabelSelector,
    /// Changes to the template's containers (or init containers), by container name.
    pub containers: Vec<ContainerOverride>,
}

/// `spec.nodeOverrides[].containers[]`: what changes in one container. Unset fields keep the
/// template's value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    /// The container's name in `spec.template.spec.containers` or `initContainers`.
    pub name: String,
    /// Replaces the container's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replaces the container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Variables set in the container: each replaces the template's variable of the same
    /// name, or is added after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<k8s_openapi::api::core::v1::EnvVar>>,
    /// Replaces the container's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

/// `spec.nodeReadiness`: no other workload on a node before this set's pod is available.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeReadiness {
    /// The startup taint. Only this key is ever added or removed.
    pub taint: GateTaint,

    /// `Bootstrap` (default): the taint is removed once and never put back. `Continuous`: it
    /// is put back (with effect `NoSchedule`) when the set's pod on the node has been
    /// unavailable for `graceSeconds`, except while the set rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::gate_enforce_known())]
    pub enforce: Option<String>,

    /// With `Continuous`: seconds a pod may be unavailable before the taint goes back.
    /// Defaults to 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive("spec.nodeReadiness.graceSeconds"))]
    pub grace_seconds: Option<i32>,
}

/// The taint of a node readiness gate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GateTaint {
    /// The taint key, a qualified name (e.g. `example.com/agents-not-ready`).
    #[x_kube(validation = rules::taint_key_valid())]
    pub key: String,
    /// `NoSchedule` or `NoExecute`.
    #[x_kube(validation = rules::gate_effect_known())]
    pub effect: String,
}

impl NodeReadiness {
    /// `enforce: Continuous`.
    pub fn continuous(&self) -> bool {
        self.enforce.as_deref() == Some("Continuous")
    }

    /// `graceSeconds` with its default.
    pub fn grace_seconds(&self) -> i64 {
        i64::from(self.grace_seconds.filter(|s| *s > 0).unwrap_or(60))
    }
}

/// `spec.abort`: the rollout of a revision is called off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAbort {
    /// The aborted revision (`status.updateRevision` when it was aborted).
    pub revision: String,
}

/// `spec.retry`: the rollout of a revision starts over its failure detection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRetry {
    /// The retried revision (`status.updateRevision` when it was retried).
    pub revision: String,
    /// When it was retried.
    pub at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// How a DaemonSet replaces pods when its template changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = rules::budget_not_both_zero())]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// `RollingUpdate` (default) replaces pods automatically within the budget of
    /// `rollingUpdate`; `OnDelete` replaces a pod only after someone deletes it.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "RollingUpdate"))]
    #[x_kube(validation = rules::strategy_type_known())]
    pub type_: Option<String>,

    /// Budget of a rolling update. Only used when `type` is `RollingUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub rolling_update: Option<RollingUpdateDaemonSet>,
}

/// The two update strategies of apps/v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpdateStrategyType {
    /// Replace pods automatically, within the rolling update budget.
    RollingUpdate,
    /// Replace a pod only when it is deleted.
    OnDelete,
}

impl UpdateStrategyType {
    /// The API spelling of the strategy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RollingUpdate => "RollingUpdate",
            Self::OnDelete => "OnDelete",
        }
    }
}

/// The budget of a rolling update, and which nodes it may touch in which order.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = rules::domain_fields_need_topology_key(),
    validation = rules::in_place_without_surge(),
)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDaemonSet {
    /// How many nodes may be without an available daemon pod during the update, as a number or a
    /// percentage of the desired nodes (rounded up). Defaults to 1, or to 0 when `maxSurge` is
    /// set and not 0. everynode allows both budgets at once (apps/v1 does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::int_or_percent("spec.updateStrategy.rollingUpdate.maxUnavailable"))]
    pub max_unavailable: Option<IntOrString>,

    /// How many nodes with an available old pod may run a new pod next to it during the update,
    /// as a number or a percentage of the desired nodes (rounded up). Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    #[x_kube(validation = rules::int_or_percent("spec.updateStrategy.rollingUpdate.maxSurge"))]
    pub max_surge: Option<IntOrString>,

    /// How many of the desired nodes stay on their old revision, as a number or a percentage
    /// (rounded up); the nodes last in `order` are kept. Lower it step by step for manual
    /// batches. Defaults to 0. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::int_or_percent("spec.updateStrategy.rollingUpdate.partition"))]
    pub partition: Option<IntOrString>,

    /// Only nodes whose labels match are updated (canary nodes); others keep their old pod.
    /// Unset: every node. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::node_selector_valid())]
    pub selector: Option<LabelSelector>,

    /// The revision a node gets while the rollout is held for it (by `partition`, `selector`
    /// or `spec.paused`): `Latest` (default, as apps/v1) or `Stable` (the last revision that
    /// was available on every node). everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::new_node_policy_known())]
    pub new_node_policy: Option<String>,

    /// Which nodes are updated first. Defaults to by node name. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<RolloutOrder>,

    /// Update one topology domain at a time: nodes are grouped by this node label (e.g.
    /// `topology.kubernetes.io/zone`); the next domain starts only when every pod of the
    /// current one is available (and has baked). Domains go in `order` (by their first node),
    /// nodes without the label last. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,

    /// With `topologyKey`: how many nodes of the current domain may be updating at once, as a
    /// number or a percentage of the domain's desired nodes (rounded up). Unset: only the
    /// set-wide budget applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::int_or_percent("spec.updateStrategy.rollingUpdate.maxUnavailablePerDomain"))]
    pub max_unavailable_per_domain: Option<IntOrString>,

    /// With `topologyKey`: seconds every pod of a finished domain must stay available before
    /// the next domain starts. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::non_negative("spec.updateStrategy.rollingUpdate.bakeSeconds"))]
    pub bake_seconds: Option<i32>,

    /// Seconds between the starts of two batches of node updates, however fast pods become
    /// ready. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::non_negative("spec.updateStrategy.rollingUpdate.minSecondsBetweenBatches"))]
    pub min_seconds_between_batches: Option<i32>,

    /// `Recreate` (default): a node's update deletes the old pod and creates a new one.
    /// `InPlaceIfPossible`: when only container images (and template labels/annotations)
    /// changed, patch the running pod instead, so it keeps its name, IP and node; any other
    /// change is recreated. An in-place pod counts as unavailable until its containers run the
    /// new images and it is Ready. Not with `maxSurge`. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::rolling_update_type_known())]
    pub rolling_update_type: Option<String>,

    /// At most this many node updates start in any 60 seconds. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive("spec.updateStrategy.rollingUpdate.maxNodesPerMinute"))]
    pub max_nodes_per_minute: Option<i32>,

    /// The rollout has failed when no new-revision pod becomes available for this many seconds
    /// while one is pending; `failurePolicy` then acts. Unset: no deadline. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive("spec.updateStrategy.rollingUpdate.progressDeadlineSeconds"))]
    pub progress_deadline_seconds: Option<i32>,

    /// A new-revision pod that is not Ready this many seconds after it was created counts as a
    /// failed node (as do crash-looping, image-pull-failing and Failed pods). Unset: only those.
    /// everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive("spec.updateStrategy.rollingUpdate.podReadyDeadlineSeconds"))]
    pub pod_ready_deadline_seconds: Option<i32>,

    /// A node that turns NotReady, gets a pressure taint or loses its network within this many
    /// seconds after its new-revision pod was created counts as a failed node: the new daemon
    /// may be what broke it. Unset: not watched. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive("spec.updateStrategy.rollingUpdate.nodeHealthWindowSeconds"))]
    pub node_health_window_seconds: Option<i32>,

    /// More failed nodes than this (a number, or a percentage of the desired nodes rounded up)
    /// fail the rollout at once. Unset: failed nodes alone never fail it. everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::int_or_percent("spec.updateStrategy.rollingUpdate.maxFailedNodes"))]
    pub max_failed_nodes: Option<IntOrString>,

    /// What a failed rollout does: `Pause` (default: no further node is updated until the
    /// template changes), `Rollback` (the template goes back to `status.stableRevision`),
    /// `Abort` (the pods go back to it, the template stays) or `Continue` (report only).
    /// everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::failure_policy_known())]
    pub failure_policy: Option<String>,

    /// Nodes that are NotReady or unreachable when their turn comes: `Count` (default, as
    /// apps/v1: they use the `maxUnavailable` budget and their pod is replaced) or `Skip` (left
    /// alone and listed in `status.skippedNodes`; updated once they are back). everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::unavailable_node_policy_known())]
    pub unavailable_node_policy: Option<String>,

    /// Pull the new images on a node before its old pod is deleted: the nodes being updated
    /// and the next `nodesAhead` in update order get a short-lived pod of the new images, and
    /// a node's old pod goes only once its images are pulled (or `timeoutSeconds` passed), so
    /// the node is without its daemon for the container start, not the image download.
    /// everynode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_pull: Option<PrePull>,
}

/// `rollingUpdate.prePull`: image pulls ahead of the rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PrePull {
    /// How many nodes beyond those being updated pull ahead. Defaults to 0 (only the nodes
    /// being updated, each waiting for its own pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::non_negative("spec.updateStrategy.rollingUpdate.prePull.nodesAhead"))]
    pub nodes_ahead: Option<i32>,

    /// Seconds a node's pull may take before its update goes on without it. Defaults to 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive("spec.updateStrategy.rollingUpdate.prePull.timeoutSeconds"))]
    pub timeout_seconds: Option<i32>,
}

impl PrePull {
    /// `nodesAhead` with its default.
    pub fn nodes_ahead(&self) -> usize {
        usize::try_from(self.nodes_ahead.unwrap_or(0).max(0)).unwrap_or(0)
    }

    /// `timeoutSeconds` with its default.
    pub fn timeout_seconds(&self) -> i64 {
        i64::from(self.timeout_seconds.filter(|s| *s > 0).unwrap_or(300))
    }
}

/// `failurePolicy` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop updating nodes (the default).
    #[default]
    Pause,
    /// Put the template of `status.stableRevision` back.
    Rollback,
    /// Take the pods back to `status.stableRevision`, leaving the template as it is (what a
    /// GitOps tool owns), as `spec.abort` does.
    Abort,
    /// Report the failure and go on.
    Continue,
}

impl FailurePolicy {
    /// Parses the field (`None` for unknown values).
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("Pause") => Some(Self::Pause),
            Some("Rollback") => Some(Self::Rollback),
            Some("Abort") => Some(Self::Abort),
            Some("Continue") => Some(Self::Continue),
            Some(_) => None,
        }
    }

    /// The field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "Pause",
            Self::Rollback => "Rollback",
            Self::Abort => "Abort",
            Self::Continue => "Continue",
        }
    }
}

/// The order in which a rolling update visits nodes. Deterministic; ties go by node name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = rules::order_fields_match_type())]
#[serde(rename_all = "camelCase")]
pub struct RolloutOrder {
    /// `Name` (default): by node name. `LabelValues`: by the position of the node's `label`
    /// value in `values`. `Priority`: by the node's `label` value as an integer, highest first.
    /// Nodes without the label (or with a value not listed, or not an integer) go last.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,

    /// The node label to order by (`LabelValues`, `Priority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,

    /// The label values in update order (`LabelValues`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// The node orders of a rolling update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RolloutOrderType {
    /// By node name.
    Name,
    /// By the position of a node label's value in a list.
    LabelValues,
    /// By a node label's integer value, highest first.
    Priority,
}

impl RolloutOrder {
    /// The order type with its default (`Name`); unknown values (rejected at admission) yield
    /// `None`.
    pub fn order_type(&self) -> Option<RolloutOrderType> {
        match self.type_.as_deref() {
            None | Some("") | Some("Name") => Some(RolloutOrderType::Name),
            Some("LabelValues") => Some(RolloutOrderType::LabelValues),
            Some("Priority") => Some(RolloutOrderType::Priority),
            Some(_) => None,
        }
    }
}

/// Which revision a node gets while the rollout is held for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NewNodePolicy {
    /// The newest revision (apps/v1 behaviour).
    #[default]
    Latest,
    /// The last revision that was available on every node.
    Stable,
}

impl RollingUpdateDaemonSet {
    /// `rollingUpdateType: InPlaceIfPossible`.
    pub fn in_place_if_possible(&self) -> bool {
        self.rolling_update_type.as_deref() == Some("InPlaceIfPossible")
    }

    /// `newNodePolicy` with its default; unknown values (rejected at admission) yield `None`.
    pub fn new_node_policy(&self) -> Option<NewNodePolicy> {
        match self.new_node_policy.as_deref() {
            None | Some("") | Some("Latest") => Some(NewNodePolicy::Latest),
            Some("Stable") => Some(NewNodePolicy::Stable),
            Some(_) => None,
        }
    }
}

/// The topology domain a rollout is updating.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutWave {
    /// The domain (value of the topology label; empty for nodes without it).
    pub domain: String,
    /// Its position in domain order, from 1.
    pub index: i32,
    /// Number of domains.
    pub domains: i32,
    /// The domain is done and baking until then; the next one starts afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// A failed rollout (everynode only): set when the update revision failed, kept until the
/// template changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutFailure {
    /// The revision whose rollout failed.
    pub revision: String,
    /// `ProgressDeadlineExceeded` or `FailedNodesExceeded`.
    pub reason: String,
    /// What happened, in a sentence.
    pub message: String,
    /// The policy that acted: `Pause`, `Rollback` or `Continue`.
    pub policy: String,
    /// When the failure was detected.
    pub since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// The failed nodes at that time (at most 50, sorted), each `node: why`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_nodes: Vec<String>,
}

/// An automatic rollback (everynode only).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRollback {
    /// The revision that failed and was rolled back.
    pub rolled_back_from: String,
    /// The revision whose template was put back (the stable revision).
    pub rollback_of: String,
    /// Why (the failure's reason and message).
    pub reason: String,
    /// When.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// A node that does not run an updated, available pod and will not without a change, in the
/// status (everynode only).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockedNode {
    /// Node name.
    pub node: String,
    /// Machine-readable reason: `TaintNotTolerated`, `NodeSelectorMismatch`,
    /// `NodeAffinityMismatch`, `NodeNameMismatch`, `Unschedulable`, `CrashLoopBackOff`,
    /// `ImagePullBackOff` (and the kubelet's other container waiting reasons), `Backoff`,
    /// `SkippedNodeDown`, `HeldByPartition`, `NotSelected`, `RolloutPaused` or `RolloutFailed`.
    pub reason: String,
    /// The details (for `Unschedulable`, the scheduler's own words).
    pub message: String,
}

/// How many nodes are blocked for one reason, in the status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReasonCount {
    /// The reason (see [`BlockedNode::reason`]).
    pub reason: String,
    /// Nodes.
    pub count: i32,
}

/// Pods of one revision, in the status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionPods {
    /// ControllerRevision name.
    pub revision: String,
    /// Desired nodes running a pod of this revision.
    pub pods: i32,
    /// Of those, nodes whose pod is available.
    pub available: i32,
}

/// Observed state of an everynode DaemonSet: every apps/v1 `DaemonSetStatus` counter, plus
/// conditions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = rules::collision_count_never_decreases())]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    /// Nodes that should run the daemon pod and run at least one.
    #[x_kube(validation = rules::non_negative("status.currentNumberScheduled"))]
    pub current_number_scheduled: i32,

    /// Nodes that run a daemon pod but should not.
    #[x_kube(validation = rules::non_negative("status.numberMisscheduled"))]
    pub number_misscheduled: i32,

    /// Nodes that should run the daemon pod.
    #[x_kube(validation = rules::non_negative("status.desiredNumberScheduled"))]
    pub desired_number_scheduled: i32,

    /// Nodes that should run the daemon pod and whose pod is Ready.
    #[x_kube(validation = rules::non_negative("status.numberReady"))]
    pub number_ready: i32,

    /// The most recent `metadata.generation` the controller has acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Nodes whose daemon pod runs the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_number_scheduled: Option<i32>,

    /// Nodes whose daemon pod has been Ready for at least `minReadySeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_available: Option<i32>,

    /// Nodes that should run the daemon pod but have no available one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_unavailable: Option<i32>,

    /// Bumped when the revision name computed from the template collides with an existing
    /// revision of other content; part of the revision hash. Never decreases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,

    /// ControllerRevision of the current template (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,

    /// ControllerRevision that most desired nodes run (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,

    /// Last ControllerRevision that was available on every desired node (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,

    /// The topology wave in progress (rollingUpdate.topologyKey; everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<RolloutWave>,

    /// Desired nodes per revision, newest revision first (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_per_revision: Option<Vec<RevisionPods>>,

    /// The failed rollout of the update revision (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RolloutFailure>,

    /// The last automatic rollback (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RolloutRollback>,

    /// Nodes left out of the rollout by `unavailableNodePolicy: Skip` (at most 50, sorted;
    /// everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_nodes: Option<Vec<String>>,

    /// Nodes that will not run an updated, available pod without a change — selected but
    /// tainted, unschedulable, failing, held by a control — each with its reason (at most 50,
    /// by node name; everynode only). `blockedTotals` counts all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_nodes: Option<Vec<BlockedNode>>,

    /// Desired nodes that still carry the taint of `spec.nodeReadiness` (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gated_nodes: Option<i32>,

    /// With `rollingUpdate.prePull`: desired nodes still on an old pod whose new images are
    /// pulled ahead (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_pulled_nodes: Option<i32>,

    /// With `rollingUpdate.prePull`: desired nodes pulling the new images ahead (everynode
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_pulling_nodes: Option<i32>,

    /// Blocked nodes per reason, by reason (everynode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_totals: Option<Vec<ReasonCount>>,

    /// Conditions of the set. The controller keeps conditions written by others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Option<Vec<Condition>>,
}

impl DaemonSetUpdateStrategy {
    /// The strategy type, with the apps/v1 default (`RollingUpdate`) when unset. Unknown values
    /// (rejected at admission) yield `None`.
    pub fn strategy_type(&self) -> Option<UpdateStrategyType> {
        match self.type_.as_deref() {
            None | Some("") | Some("RollingUpdate") => Some(UpdateStrategyType::RollingUpdate),
            Some("OnDelete") => Some(UpdateStrategyType::OnDelete),
            Some(_) => None,
        }
    }
}

impl DaemonSetSpec {
    /// The update strategy with defaulting applied: `RollingUpdate` with `maxUnavailable: 1,
    /// maxSurge: 0` when unset, and the rolling update budget filled in when the type is
    /// `RollingUpdate` (`maxUnavailable` defaults to 0 when `maxSurge` is not 0; every manifest
    /// apps/v1 accepts sets it explicitly in that case, so apps/v1 behaviour is unchanged).
    pub fn effective_update_strategy(&self) -> DaemonSetUpdateStrategy {
        let mut strategy = self.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some(UpdateStrategyType::RollingUpdate.as_str().to_owned());
        }
        if strategy.strategy_type() == Some(UpdateStrategyType::RollingUpdate) {
            let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
            let surge = rolling.max_surge.get_or_insert(IntOrString::Int(0));
            let surges = match surge {
                IntOrString::Int(n) => *n != 0,
                IntOrString::String(s) => s.trim_start_matches('0') != "%",
            };
            rolling
                .max_unavailable
                .get_or_insert(IntOrString::Int(if surges { 0 } else { 1 }));
        }
        strategy
    }

    /// `minReadySeconds` with its default (0).
    pub fn effective_min_ready_seconds(&self) -> i32 {
        self.min_ready_seconds.unwrap_or(0)
    }

    /// `revisionHistoryLimit` with its default (10).
    pub fn effective_revision_history_limit(&self) -> i32 {
        self.revision_history_limit.unwrap_or(10)
    }

    /// `spec.paused` with its default (false).
    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or(false)
    }

    /// `spec.frozen` with its default (false).
    pub fn is_frozen(&self) -> bool {
        self.frozen.unwrap_or(false)
    }

    /// `spec.nodeOverrides`, empty when unset.
    pub fn overrides(&self) -> &[NodeOverride] {
        self.node_overrides.as_deref().unwrap_or_default()
    }
}
