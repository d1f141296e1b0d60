//! Machine-readable reasons for every planner decision.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.
//!
//! Each reason has a stable `code()` (CamelCase, suitable for logs, metrics labels and JSON
//! output) and a human `Display` text that the CLI prints, e.g.
//! `node excluded: taint dedicated=gpu:NoSchedule not tolerated`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Why a node does not (or no longer) run a daemon pod (§2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum NodeExcluded {
    /// The template's `spec.nodeName` names another node.
    NodeNameMismatch {
        /// The node the template is pinned to.
        node_name: String,
    },
    /// A `spec.nodeSelector` entry does not match the node's labels.
    NodeSelectorMismatch {
        /// The selector key.
        key: String,
        /// The value the selector wants.
        value: String,
    },
    /// No term of the required node affinity matches the node.
    NodeAffinityMismatch,
    /// The node has a `NoSchedule`/`NoExecute` taint that the pod does not tolerate.
    TaintNotTolerated {
        /// Taint key.
        key: String,
        /// Taint value (empty when the taint has none).
        value: String,
        /// Taint effect.
        effect: String,
    },
}

impl NodeExcluded {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NodeNameMismatch { .. } => "NodeNameMismatch",
            Self::NodeSelectorMismatch { .. } => "NodeSelectorMismatch",
            Self::NodeAffinityMismatch => "NodeAffinityMismatch",
            Self::TaintNotTolerated { .. } => "TaintNotTolerated",
        }
    }

    fn detail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeNameMismatch { node_name } => {
                write!(f, "template is pinned to node {node_name}")
            }
            Self::NodeSelectorMismatch { key, value } => {
                write!(f, "nodeSelector {key}={value} does not match")
            }
            Self::NodeAffinityMismatch => write!(f, "required node affinity does not match"),
            Self::TaintNotTolerated { key, value, effect } => {
                if value.is_empty() {
                    write!(f, "taint {key}:{effect} not tolerated")
                } else {
                    write!(f, "taint {key}={value}:{effect} not tolerated")
                }
            }
        }
    }
}

impl fmt::Display for NodeExcluded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node excluded: ")?;
        self.detail(f)
    }
}

/// Why a pod is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum CreateReason {
    /// The node should run a daemon pod and has none (§4.3).
    MissingPod,
    /// Surge mode: the node has no running pod left (only terminating/failed ones) (§4.3).
    NoRunningPod,
    /// Rolling update with surge: the old pod is unavailable, replace it without budget (§6.2).
    ReplaceUnavailable,
    /// Rolling update with surge: a new pod next to an available old one, within `maxSurge`.
    Surge,
    /// The node has no daemon pod and the rollout is held for it (`newNodePolicy: Stable`): it
    /// gets the stable revision.
    MissingPodStable,
}

impl CreateReason {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingPod => "MissingPod",
            Self::NoRunningPod => "NoRunningPod",
            Self::ReplaceUnavailable => "ReplaceUnavailable",
            Self::Surge => "Surge",
            Self::MissingPodStable => "MissingPodStable",
        }
    }
}

impl fmt::Display for CreateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPod => write!(f, "pod created: node has no daemon pod"),
            Self::NoRunningPod => write!(f, "pod created: no running daemon pod left on node"),
            Self::ReplaceUnavailable => {
                write!(
                    f,
                    "pod created: old pod unavailable, replacing it (no surge budget used)"
                )
            }
            Self::Surge => write!(f, "pod created: surge pod for the rolling update"),
            Self::MissingPodStable => write!(
                f,
                "pod created: node has no daemon pod; the rollout is held here, so it gets the \
                 stable revision (newNodePolicy: Stable)"
            ),
        }
    }
}

/// Why a pod is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum DeleteReason {
    /// More than one running pod on the node; all but the oldest are deleted (§4.3).
    ExcessPod,
    /// The pod's phase is `Failed` (§4.5).
    PodFailed,
    /// The pod's phase is `Succeeded` (§4.3).
    PodSucceeded,
    /// The node must not run the pod any more (§4.3).
    NodeIneligible(NodeExcluded),
    /// The pod is unscheduled and pinned to a node that no longer exists (§4.3 step 4).
    NodeGone,
    /// Surge: the old pod is not ready while a new pod exists on the node (§4.3).
    OldPodNotReady,
    /// Surge: the new pod on the node is available, so the old one goes (§4.3, §6.2).
    NewPodAvailable,
    /// Rolling update without surge: old pod replaced within `maxUnavailable` (§6.1).
    RollingUpdate,
    /// Rolling update: the old pod is unavailable and is replaced without budget (§6.1, §6.2).
    OldPodUnavailable,
    /// Surge: old pod on a node that should no longer run it, removed once availability
    /// exceeds the desired count (§6.2).
    IneligibleAfterSurge(NodeExcluded),
}

impl DeleteReason {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ExcessPod => "ExcessPod",
            Self::PodFailed => "PodFailed",
            Self::PodSucceeded => "PodSucceeded",
            Self::NodeIneligible(_) => "NodeIneligible",
            Self::NodeGone => "NodeGone",
            Self::OldPodNotReady => "OldPodNotReady",
            Self::NewPodAvailable => "NewPodAvailable",
            Self::RollingUpdate => "RollingUpdate",
            Self::OldPodUnavailable => "OldPodUnavailable",
            Self::IneligibleAfterSurge(_) => "IneligibleAfterSurge",
        }
    }
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod deleted: ")?;
        match self {
            Self::ExcessPod => write!(f, "second pod on node"),
            Self::PodFailed => write!(f, "pod failed"),
            Self::PodSucceeded => write!(f, "pod succeeded"),
            Self::NodeIneligible(why) => {
                write!(f, "node no longer eligible (")?;
                why.detail(f)?;
                write!(f, ")")
            }
            Self::NodeGone => write!(f, "target node no longer exists"),
            Self::OldPodNotReady => write!(f, "old pod not ready while a new pod exists"),
            Self::NewPodAvailable => write!(f, "new pod on node is available"),
            Self::RollingUpdate => write!(f, "rolling update within maxUnavailable"),
            Self::OldPodUnavailable => write!(f, "old pod unavailable, replaced without budget"),
            Self::IneligibleAfterSurge(why) => {
                write!(
                    f,
                    "node no longer eligible and enough pods available elsewhere ("
                )?;
                why.detail(f)?;
                write!(f, ")")
            }
        }
    }
}

/// Why something that could happen on a node is not done in this plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum Deferred {
    /// A failed pod is waiting out its backoff before being deleted and replaced.
    Backoff {
        /// Current backoff delay.
        #[serde(with = "duration_secs")]
        delay: Duration,
    },
    /// A replacement waits until the terminating (or failed) pod is gone (§4.3, non-surge).
    WaitingForTermination,
    /// Rolling update: the node's old pod waits for budget (`maxUnavailable`/`maxSurge`).
    UpdateBudgetExhausted,
    /// Rolling update: the node's new pod is not available yet.
    WaitingForAvailability,
    /// More creates/deletes than the per-plan burst limit; picked up by the next plan.
    BurstLimit,
    /// Rolling update: old pod on an ineligible node kept until enough pods are available.
    KeptForAvailability,
    /// Rolling update: `spec.paused` holds the node's old pod.
    RolloutPaused,
    /// `spec.frozen`: no pod is created or deleted.
    SetFrozen,
    /// Rolling update: the node does not match `rollingUpdate.selector`.
    NotSelected,
    /// Rolling update: `rollingUpdate.partition` keeps the node on its old revision.
    HeldByPartition {
        /// The scaled partition (nodes kept on the old revision).
        partition: i32,
    },
    /// Rolling update: the node's topology domain has not started yet.
    WaitingForWave {
        /// The domain being updated (or baking).
        current: String,
    },
    /// Rolling update: `minSecondsBetweenBatches` / `maxNodesPerMinute` hold the start.
    Paced {
        /// Time until another update may start.
        #[serde(with = "duration_secs")]
        wait: Duration,
    },
    /// Rolling update: the rollout failed (`status.failure`) and `failurePolicy` stopped it.
    RolloutFailed,
    /// Rolling update: the node is down (NotReady or unreachable) and
    /// `unavailableNodePolicy: Skip` leaves it until it is back.
    SkippedNodeDown,
    /// The apiserver refuses pods of the update revision's template (`TemplateValid=False`): no
    /// old pod is replaced and no pod of it is created until the template is fixed.
    TemplateRejected,
    /// Rolling update (`prePull`): the node pulls the new images before its old pod goes.
    PrePulling {
        /// The pre-pull pod.
        pod: String,
    },
}

impl Deferred {
    /// Whether the node stays as it is until something changes (a control, the template, the
    /// node): the reasons listed in `status.blockedNodes`.
    pub fn blocks(&self) -> bool {
        matches!(
            self,
            Self::RolloutPaused
                | Self::RolloutFailed
                | Self::NotSelected
                | Self::HeldByPartition { .. }
                | Self::SkippedNodeDown
                | Self::Backoff { .. }
                | Self::TemplateRejected
        )
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Backoff { .. } => "Backoff",
            Self::WaitingForTermination => "WaitingForTermination",
            Self::UpdateBudgetExhausted => "UpdateBudgetExhausted",
            Self::WaitingForAvailability => "WaitingForAvailability",
            Self::BurstLimit => "BurstLimit",
            Self::KeptForAvailability => "KeptForAvailability",
            Self::RolloutPaused => "RolloutPaused",
            Self::SetFrozen => "SetFrozen",
            Self::NotSelected => "NotSelected",
            Self::HeldByPartition { .. } => "HeldByPartition",
            Self::WaitingForWave { .. } => "WaitingForWave",
            Self::Paced { .. } => "Paced",
            Self::RolloutFailed => "RolloutFailed",
            Self::SkippedNodeDown => "SkippedNodeDown",
            Self::TemplateRejected => "TemplateRejected",
            Self::PrePulling { .. } => "PrePulling",
        }
    }
}

impl fmt::Display for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backoff { delay } => {
                write!(f, "create deferred: backoff {}", HumanDuration(*delay))
            }
            Self::WaitingForTermination => {
                write!(f, "create deferred: waiting for the old pod to terminate")
            }
            Self::UpdateBudgetExhausted => {
                write!(f, "update deferred: rolling update budget used up")
            }
            Self::WaitingForAvailability => {
                write!(f, "update deferred: new pod not available yet")
            }
            Self::BurstLimit => write!(f, "deferred: burst limit reached for this round"),
            Self::KeptForAvailability => {
                write!(
                    f,
                    "delete deferred: kept until enough pods are available elsewhere"
                )
            }
            Self::RolloutPaused => write!(f, "update deferred: rollout paused (spec.paused)"),
            Self::SetFrozen => write!(f, "deferred: set frozen (spec.frozen), no pod is changed"),
            Self::NotSelected => write!(
                f,
                "update deferred: node does not match spec.updateStrategy.rollingUpdate.selector"
            ),
            Self::HeldByPartition { partition } => write!(
                f,
                "update deferred: held on the old revision by partition ({partition} node(s) stay)"
            ),
            Self::WaitingForWave { current } => write!(
                f,
                "update deferred: waiting for its topology domain; domain {current:?} goes first"
            ),
            Self::Paced { wait } => write!(
                f,
                "update deferred: rollout pacing, next start in {}",
                HumanDuration(*wait)
            ),
            Self::RolloutFailed => write!(
                f,
                "update deferred: the rollout failed (see status.failure); change the template to go on"
            ),
            Self::SkippedNodeDown => write!(
                f,
                "update deferred: node is down, skipped by unavailableNodePolicy: Skip until it is back"
            ),
            Self::TemplateRejected => write!(
                f,
                "deferred: the apiserver refuses pods of the template (see the TemplateValid \
                 condition); fix the template to go on"
            ),
            Self::PrePulling { pod } => write!(
                f,
                "update deferred: the node pulls the new images first (pre-pull pod {pod})"
            ),
        }
    }
}

/// Why a revision is deleted during history cleanup (§5.3, §5.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum RevisionDeleteReason {
    /// Old revision beyond `revisionHistoryLimit`, not used by any pod.
    HistoryLimit {
        /// The limit in force.
        limit: i32,
    },
    /// Another revision with identical data and a higher number is kept.
    Duplicate {
        /// Name of the kept revision.
        kept: String,
    },
}

impl RevisionDeleteReason {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HistoryLimit { .. } => "HistoryLimit",
            Self::Duplicate { .. } => "Duplicate",
        }
    }
}

impl fmt::Display for RevisionDeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HistoryLimit { limit } => {
                write!(
                    f,
                    "revision deleted: beyond revisionHistoryLimit {limit} and unused"
                )
            }
            Self::Duplicate { kept } => write!(f, "revision deleted: duplicate of {kept}"),
        }
    }
}

/// Formats a duration the way Go prints short durations: `4s`, `1m30s`, `15m0s`, `500ms`.
#[derive(Clone, Copy, Debug)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if secs == 0 {
            let ms = d.subsec_millis();
            if ms > 0 {
                return write!(f, "{ms}ms");
            }
            return write!(f, "{}ns", d.subsec_nanos());
        }
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let ms = d.subsec_millis();
        let sec_text = if ms > 0 {
            format!("{s}.{ms:03}s")
        } else {
            format!("{s}s")
        };
        match (h, m) {
            (0, 0) => write!(f, "{sec_text}"),
            (0, m) => write!(f, "{m}m{sec_text}"),
            (h, m) => write!(f, "{h}h{m}m{sec_text}"),
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
