//! `manage` (§4.3–§4.7): one pod per eligible node. Creates on nodes without a pod, deletes
//! excess, failed (with backoff), succeeded pods, pods on nodes that must not run them, and
//! unscheduled pods pinned to vanished nodes.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::backoff::{BackoffConfig, BackoffEntry};
use crate::reason::{CreateReason, Deferred, DeleteReason};
use crate::snapshot::PodPhase;
use crate::state::State;

/// Kind of event the plan asks the runtime to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum EventReason {
    /// Warning: the selector is empty; nothing is done.
    SelectingAll,
    /// Warning: a failed pod is about to be deleted.
    FailedDaemonPod,
    /// Normal: a succeeded pod is about to be deleted.
    SucceededDaemonPod,
    /// Warning: the rollout of the update revision failed (everynode rollout safety).
    RolloutFailed,
    /// Warning: the scheduler cannot place some of the set's pods (new or changed).
    FailedPlacement,
    /// Warning: a node is updated without its new images pulled ahead (`prePull`): the pull
    /// failed, was refused or timed out.
    PrePullSkipped,
}

impl EventReason {
    /// The event `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelectingAll => "SelectingAll",
            Self::FailedDaemonPod => "FailedDaemonPod",
            Self::SucceededDaemonPod => "SucceededDaemonPod",
            Self::RolloutFailed => "RolloutFailed",
            Self::FailedPlacement => "FailedPlacement",
            Self::PrePullSkipped => "PrePullSkipped",
        }
    }

    /// The event `action` field.
    pub fn action(self) -> &'static str {
        match self {
            Self::FailedPlacement => "Scheduling",
            _ => "Reconcile",
        }
    }

    /// `true` for Warning events, `false` for Normal ones.
    pub fn is_warning(self) -> bool {
        !matches!(self, Self::SucceededDaemonPod)
    }
}

/// An event to publish on the set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanEvent {
    /// Reason.
    pub reason: EventReason,
    /// Message.
    pub message: String,
}

/// Output of [`manage`]: indices into the working state.
#[derive(Clone, Debug, Default)]
pub(crate) struct ManageOut {
    /// `(slot, reason)`.
    pub creates: Vec<(usize, CreateReason)>,
    /// `(slot or None for vanished, vanished node name, pod index, reason)`.
    pub deletes: Vec<(Option<usize>, Option<String>, usize, DeleteReason)>,
    pub events: Vec<PlanEvent>,
    /// New backoff entries by node.
    pub backoff: BTreeMap<String, BackoffEntry>,
    pub requeue: Option<Duration>,
    /// `(slot, why)`.
    pub deferred: Vec<(usize, Deferred)>,
}

pub(crate) struct ManageCtx<'c> {
    pub surge: bool,
    pub now: Timestamp,
    pub backoff: &'c BTreeMap<String, BackoffEntry>,
    pub backoff_config: &'c BackoffConfig,
    pub namespace: &'c str,
}

fn min_requeue(cur: &mut Option<Duration>, d: Duration) {
    *cur = Some(cur.map_or(d, |c| c.min(d)));
}

/// `manage` over the working state (does not modify it).
pub(crate) fn manage(state: &State<'_>, ctx: &ManageCtx<'_>) -> ManageOut {
    let mut out = ManageOut::default();
    let mut running: Vec<usize> = Vec::new();
    for (si, slot) in state.slots.iter().enumerate() {
        let elig = &slot.elig;
        if elig.should_run && slot.pods.is_empty() {
            out.creates.push((si, CreateReason::MissingPod));
        } else if elig.should_continue_running {
            if let [pi] = *slot.pods.as_slice() {
                let pod = &state.pods[pi];
                if !pod.deleting && !pod.phase.is_terminal() {
                    // The common case: one running pod, nothing to do.
                    continue;
                }
            }
            let blocked = sweep_finished(state, si, ctx, &mut running, &mut out);
            if ctx.surge {
                prune_with_surge(state, si, &running, &mut out);
            } else {
                prune_without_surge(state, si, &running, blocked, &mut out);
            }
        } else {
            delete_from_ineligible(state, si, &mut out);
        }
    }
    delete_pinned_to_vanished(state, &mut out);
    out
}

/// Deletes the failed (outside their backoff) and succeeded pods of slot `si`, collecting its
/// running pods into `running`; returns whether a pod blocks a new one (terminating, failed or
/// succeeded).
fn sweep_finished(
    state: &State<'_>,
    si: usize,
    ctx: &ManageCtx<'_>,
    running: &mut Vec<usize>,
    out: &mut ManageOut,
) -> bool {
    let slot = &state.slots[si];
    let node = slot.node.name.as_str();
    running.clear();
    let mut blocked = false;
    for &pi in &slot.pods {
        let pod = &state.pods[pi];
        if pod.deleting {
            blocked = true;
            continue;
        }
        match pod.phase {
            PodPhase::Failed => {
                blocked = true;
                let entry = out.backoff.get(node).or_else(|| ctx.backoff.get(node));
                if let Some(e) = entry.filter(|e| e.in_backoff(ctx.now, ctx.backoff_config)) {
                    min_requeue(&mut out.requeue, e.delay);
                    out.deferred
                        .push((si, Deferred::Backoff { delay: e.delay }));
                    continue;
                }
                let next = BackoffEntry::next(entry, ctx.now, ctx.backoff_config);
                out.backoff.insert(node.to_owned(), next);
                out.events.push(PlanEvent {
                    reason: EventReason::FailedDaemonPod,
                    message: format!(
                        "Found failed daemon pod {}/{} on node {}, will try to kill it",
                        ctx.namespace,
                        state.name(pi),
                        node
                    ),
                });
                out.deletes
                    .push((Some(si), None, pi, DeleteReason::PodFailed));
            }
            PodPhase::Succeeded => {
                blocked = true;
                out.events.push(PlanEvent {
                    reason: EventReason::SucceededDaemonPod,
                    message: format!(
                        "Found succeeded daemon pod {}/{} on node {}, will try to delete it",
                        ctx.namespace,
                        state.name(pi),
                        node
                    ),
                });
                out.deletes
                    .push((Some(si), None, pi, DeleteReason::PodSucceeded));
            }
            _ => running.push(pi),
        }
    }
    blocked
}

/// Without surge: keeps the oldest running pod (`running` is sorted) and deletes the others;
/// a desired node whose only pods are on their way out waits for them.
fn prune_without_surge(
    state: &State<'_>,
    si: usize,
    running: &[usize],
    blocked: bool,
    out: &mut ManageOut,
) {
    if let [_, excess @ ..] = running {
        for &pi in excess {
            out.deletes
                .push((Some(si), None, pi, DeleteReason::ExcessPod));
        }
    } else if blocked && state.slots[si].elig.should_run {
        out.deferred.push((si, Deferred::WaitingForTermination));
    }
}

/// With surge: creates a pod on a desired node without a running one; keeps the oldest new and
/// the oldest old pod, and deletes the old one once it is not ready or the new one is
/// available.
fn prune_with_surge(state: &State<'_>, si: usize, running: &[usize], out: &mut ManageOut) {
    if running.len() <= 1 {
        if running.is_empty() && state.slots[si].elig.should_run {
            out.creates.push((si, CreateReason::NoRunningPod));
        }
        return;
    }
    let mut oldest_new: Option<usize> = None;
    let mut oldest_old: Option<usize> = None;
    for &pi in running {
        let keeper = if state.pods[pi].current {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if keeper.is_none() {
            *keeper = Some(pi);
        } else {
            out.deletes
                .push((Some(si), None, pi, DeleteReason::ExcessPod));
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if !state.pods[old].ready {
            out.deletes
                .push((Some(si), None, old, DeleteReason::OldPodNotReady));
        } else if state.pods[new].available {
            out.deletes
                .push((Some(si), None, old, DeleteReason::NewPodAvailable));
        }
    }
}

/// Deletes the (not yet terminating) pods of a node that must not run them.
fn delete_from_ineligible(state: &State<'_>, si: usize, out: &mut ManageOut) {
    let slot = &state.slots[si];
    let why = slot.elig.excluded.as_deref();
    for &pi in &slot.pods {
        if state.pods[pi].deleting {
            continue;
        }
        let reason = match why {
            Some(w) => DeleteReason::NodeIneligible(w.clone()),
            None => DeleteReason::ExcessPod,
        };
        out.deletes.push((Some(si), None, pi, reason));
    }
}

/// Unscheduled pods pinned to nodes that no longer exist (§4.3 step 4). Terminating ones are
/// not deleted again.
fn delete_pinned_to_vanished(state: &State<'_>, out: &mut ManageOut) {
    for (node, pods) in &state.vanished {
        for &pi in pods {
            let pod = &state.pods[pi];
            if !pod.scheduled && !pod.deleting {
                out.deletes
                    .push((None, Some((*node).to_owned()), pi, DeleteReason::NodeGone));
            }
        }
    }
}
