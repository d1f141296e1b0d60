//! Rollout safety (everynode only): when has a rollout failed, and which nodes are left alone.
//!
//! - **Failed nodes**: desired nodes whose new-revision pod is `Failed`, has a container that
//!   cannot run (crash loop, image pull, config error), is not Ready `podReadyDeadlineSeconds`
//!   after it was created, or whose node turned unhealthy (NotReady, unreachable, pressure, no
//!   network) within `nodeHealthWindowSeconds` after the pod was created.
//! - **Failure**: more failed nodes than `maxFailedNodes`, or no new-revision pod became
//!   available for `progressDeadlineSeconds` while one was pending.
//! - **Skipped nodes** (`unavailableNodePolicy: Skip`): nodes that are down before their turn.
//!
//! Everything is derived from the snapshot and the plan's clock (pod creation and Ready times,
//! node condition times), so a restarted controller reaches the same verdict. The failure
//! itself is recorded in `status.failure` and stays until the template changes.

use std::time::Duration;

use everynode_api::{FailurePolicy, RollingUpdateDaemonSet};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::budget::{BudgetError, scaled_value};
use crate::state::State;

/// `status.failure.reason` when the progress deadline passed.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// `status.failure.reason` when more nodes failed than `maxFailedNodes`.
pub const FAILED_NODES_EXCEEDED: &str = "FailedNodesExceeded";
/// Most failed or skipped nodes listed in the status.
pub const MAX_LISTED_NODES: usize = 50;

/// The parsed safety fields of one set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Safety {
    /// `progressDeadlineSeconds`.
    pub progress_deadline: Option<i64>,
    /// `podReadyDeadlineSeconds`.
    pub pod_ready_deadline: Option<i64>,
    /// `nodeHealthWindowSeconds`.
    pub node_health_window: Option<i64>,
    /// Scaled `maxFailedNodes`.
    pub max_failed_nodes: Option<i32>,
    /// `failurePolicy`.
    pub policy: FailurePolicy,
    /// `unavailableNodePolicy: Skip`.
    pub skip_unavailable_nodes: bool,
}

/// A safety field that cannot be interpreted (admission rejects these).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    /// `maxFailedNodes` is not an integer or percentage.
    #[error(transparent)]
    MaxFailedNodes(#[from] BudgetError),
    /// `failurePolicy` is unknown.
    #[error(
        "spec.updateStrategy.rollingUpdate.failurePolicy: unsupported value {0:?}; use Pause, Rollback, Abort or Continue"
    )]
    FailurePolicy(String),
    /// `unavailableNodePolicy` is unknown.
    #[error(
        "spec.updateStrategy.rollingUpdate.unavailableNodePolicy: unsupported value {0:?}; use Count or Skip"
    )]
    UnavailableNodePolicy(String),
}

impl Safety {
    /// Parses the safety fields of `rolling` for `desired` nodes.
    pub fn from_rolling(
        rolling: &RollingUpdateDaemonSet,
        desired: i32,
    ) -> Result<Self, SafetyError> {
        let seconds = |v: Option<i32>| v.filter(|s| *s > 0).map(i64::from);
        let policy = FailurePolicy::parse(rolling.failure_policy.as_deref()).ok_or_else(|| {
            SafetyError::FailurePolicy(rolling.failure_policy.clone().unwrap_or_default())
        })?;
        let skip_unavailable_nodes = match rolling.unavailable_node_policy.as_deref() {
            None | Some("Count") => false,
            Some("Skip") => true,
            Some(other) => return Err(SafetyError::UnavailableNodePolicy(other.to_owned())),
        };
        let max_failed_nodes = rolling
            .max_failed_nodes
            .as_ref()
            .map(|m| {
                scaled_value(
                    m,
                    desired,
                    "spec.updateStrategy.rollingUpdate.maxFailedNodes",
                )
            })
            .transpose()?;
        Ok(Self {
            progress_deadline: seconds(rolling.progress_deadline_seconds),
            pod_ready_deadline: seconds(rolling.pod_ready_deadline_seconds),
            node_health_window: seconds(rolling.node_health_window_seconds),
            max_failed_nodes,
            policy,
            skip_unavailable_nodes,
        })
    }

    /// Whether anything can fail the rollout.
    pub fn detects_failures(&self) -> bool {
        self.progress_deadline.is_some() || self.max_failed_nodes.is_some()
    }
}

/// A failure found in this plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// [`PROGRESS_DEADLINE_EXCEEDED`] or [`FAILED_NODES_EXCEEDED`].
    pub reason: &'static str,
    /// A sentence.
    pub message: String,
}

/// What [`assess`] found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Assessment {
    /// Failed desired nodes `(slot, why)`, in slot (name) order.
    pub failed_nodes: Vec<(usize, String)>,
    /// The rollout has failed now.
    pub failure: Option<Detected>,
    /// When to look again (a deadline that has not passed yet).
    pub requeue: Option<Duration>,
}

fn after(t: Timestamp, seconds: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    // One second late, so that the next plan sees the deadline passed.
    now.duration_until(t).unsigned_abs() + Duration::from_secs(1)
}

/// Why the new-revision pod `pod` on slot `slot` counts as failed, if it does; records the
/// next deadline in `requeue`.
fn failed_pod(
    state: &State<'_>,
    safety: &Safety,
    slot: usize,
    pod: usize,
    now: Timestamp,
    requeue: &mut Option<Duration>,
) -> Option<String> {
    let wpod = &state.pods[pod];
    if wpod.phase == crate::snapshot::PodPhase::Failed {
        return Some("pod failed".to_owned());
    }
    let input = wpod.input().map(|i| &state.inputs[i]);
    if let Some(trouble) = input.and_then(|p| p.trouble.as_deref()) {
        return Some(trouble.to_owned());
    }
    let created = wpod.created()?;
    if let Some(window) = safety.node_health_window
        && let Some(problem) = &state.slots[slot].node.problem
    {
        // Without a transition time, only while the window is open.
        let broke_after_update = match problem.since {
            Some(since) => since >= created && since <= after(created, window),
            None => now <= after(created, window),
        };
        if broke_after_update {
            return Some(format!(
                "node turned {} within {window}s of the update",
                problem.what
            ));
        }
    }
    if let Some(deadline) = safety.pod_ready_deadline
        && !wpod.ready
    {
        let at = after(created, deadline);
        if at <= now {
            return Some(format!("pod not ready {deadline}s after it was created"));
        }
        let wait = until(now, at);
        *requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
    }
    None
}

/// Failed nodes and whether the rollout has failed, on the state before this plan's writes.
/// Pods created before `retried_at` (`spec.retry`) do not count.
pub(crate) fn assess(
    state: &State<'_>,
    safety: &Safety,
    now: Timestamp,
    min_ready: i64,
    retried_at: Option<Timestamp>,
) -> Assessment {
    let mut out = Assessment::default();
    // Creation times are whole seconds: a pod created in the second of the retry is new.
    let retried_at = retried_at.and_then(|at| Timestamp::from_second(at.as_second()).ok());
    // Progress: the newest time a new-revision pod became available, and the oldest creation
    // time of a new-revision pod that is not available yet.
    let mut last_available: Option<Timestamp> = None;
    let mut oldest_pending: Option<Timestamp> = None;
    for (slot, s) in state.slots.iter().enumerate() {
        // A node the new daemon broke may have left the desired nodes already (the lifecycle
        // controller's not-ready taint): the health guard still looks at it.
        let broken = s.node.problem.is_some() && safety.node_health_window.is_some();
        if !s.elig.should_run && !broken {
            continue;
        }
        for &p in s.pods.iter() {
            let pod = &state.pods[p];
            if !pod.updated || pod.deleting {
                continue;
            }
            if let (Some(at), Some(created)) = (retried_at, pod.created())
                && created < at
            {
                continue;
            }
            // Progress is measured on the desired nodes only.
            if s.elig.should_run {
                if pod.available {
                    let since = pod
                        .input()
                        .and_then(|i| state.inputs[i].ready_since)
                        .map(|t| after(t, min_ready));
                    if let Some(t) = since {
                        last_available = Some(last_available.map_or(t, |l| l.max(t)));
                    }
                } else if let Some(created) = pod.created() {
                    oldest_pending = Some(oldest_pending.map_or(created, |o| o.min(created)));
                }
            }
            if let Some(why) = failed_pod(state, safety, slot, p, now, &mut out.requeue) {
                out.failed_nodes.push((slot, why));
            }
        }
    }
    if let Some(max) = safety.max_failed_nodes
        && i32::try_from(out.failed_nodes.len()).unwrap_or(i32::MAX) > max
    {
        out.failure = Some(Detected {
            reason: FAILED_NODES_EXCEEDED,
            message: format!(
                "{} node(s) failed with the new revision, more than maxFailedNodes ({max})",
                out.failed_nodes.len()
            ),
        });
        return out;
    }
    if let (Some(deadline), Some(pending)) = (safety.progress_deadline, oldest_pending) {
        let stuck_since = last_available.map_or(pending, |l| l.max(pending));
        let at = after(stuck_since, deadline);
        if at <= now {
            out.failure = Some(Detected {
                reason: PROGRESS_DEADLINE_EXCEEDED,
                message: format!(
                    "no pod of the new revision became available for {deadline}s (progressDeadlineSeconds)"
                ),
            });
        } else {
            let wait = until(now, at);
            out.requeue = Some(out.requeue.map_or(wait, |r| r.min(wait)));
        }
    }
    out
}

/// Whether `unavailableNodePolicy: Skip` leaves the node of `slot` alone: it is down, and none
/// of its (non-terminating) pods is of the current revision, so it was down before its turn.
pub(crate) fn skipped(state: &State<'_>, slot: usize) -> bool {
    let s = &state.slots[slot];
    s.node
        .problem
        .as_ref()
        .is_some_and(crate::snapshot::NodeProblem::is_down)
        && s.pods
            .iter()
            .all(|&p| !state.pods[p].updated || state.pods[p].deleting)
}
