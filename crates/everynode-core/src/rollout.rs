//! The `RollingUpdate` strategy (§6): replaces old-revision pods within the budget.
//!
//! The step is split in two so later rollout features plug in without a rewrite:
//!
//! 1. **Classification** ([`classify`]) walks every node that has (or should have) pods and
//!    sorts it into: budget already in use (unavailable nodes, or surge pods waiting to become
//!    available), *forced* actions that upstream takes regardless of budget (replacing
//!    unavailable old pods, deleting old pods whose new pod is available), *candidates* (nodes
//!    with an available old pod that may be updated under the budget) and old pods on
//!    ineligible nodes (surge only).
//! 2. **Selection** ([`select`]) orders the candidates (today: by node name, which is also
//!    the walk order) and takes as many as the remaining budget allows; the rest are reported
//!    as deferred.
//!
//! Partition / canary node selectors / pause / freeze become classification filters (a
//! candidate that is not allowed yet is simply not a candidate); node ordering by label or
//! priority and zone-by-zone waves become a [`CandidateOrder`] plus a cap on the selection;
//! bake time, pacing and progress deadlines become inputs to the budget and the requeue.
//! Upstream visits nodes in Go map order; candidates taken are therefore arbitrary there and
//! deterministic (first by name) here.

use crate::budget::Budget;
use crate::reason::{CreateReason, Deferred, DeleteReason, NodeExcluded};
use crate::state::State;

/// Where a node lives in the working state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeRef<'a> {
    Slot(usize),
    Vanished(&'a str),
}

/// A node whose available old pod could be updated under the budget.
#[derive(Clone, Debug)]
pub(crate) struct Candidate<'a> {
    pub node: NodeRef<'a>,
    pub node_name: &'a str,
    pub old_pod: usize,
}

/// The classification of all nodes for one rolling-update pass.
#[derive(Clone, Debug, Default)]
pub(crate) struct Classification<'a> {
    /// Budget in use: unavailable nodes (no surge) or surge pods not yet available (surge).
    pub in_use: i32,
    /// Nodes counted available (surge: for the ineligible-node rule).
    pub available: i32,
    /// Deletions taken regardless of budget.
    pub forced_deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
    /// Creations taken regardless of budget (surge, old pod unavailable).
    pub forced_creates: Vec<usize>,
    /// Budgeted candidates, in walk order.
    pub candidates: Vec<Candidate<'a>>,
    /// Surge: available old pods on nodes that should no longer run them.
    pub ineligible: Vec<(NodeRef<'a>, usize, NodeExcluded)>,
    /// Per-node notes for `explain`.
    pub deferred: Vec<(usize, Deferred)>,
}

/// Order in which candidates are taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CandidateOrder {
    /// By node name (the classification walk order).
    #[default]
    NodeName,
}

/// Inputs shared by classification and selection.
pub(crate) struct RolloutCtx {
    pub budget: Budget,
}

/// `findUpdatedPodsOnNode`: the single new and single old non-deleted pod; `None` when the
/// node has two of either kind (manage prunes first).
fn split_pods(state: &State<'_>, pods: &[usize]) -> Option<(Option<usize>, Option<usize>)> {
    let (mut new, mut old) = (None, None);
    for &pi in pods {
        let pod = &state.pods[pi];
        if pod.deleting {
            continue;
        }
        let slot = if pod.updated { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pi);
    }
    Some((new, old))
}

/// Nodes the rolling update looks at: every node with pods (including vanished ones), plus
/// desired nodes without pods (upstream inserts empty entries for them).
fn walk<'s, 'a>(
    state: &'s State<'a>,
) -> impl Iterator<Item = (NodeRef<'a>, &'a str, &'s [usize])> + 's {
    let slots = state.slots.iter().enumerate().filter_map(|(i, s)| {
        (s.elig.should_run || !s.pods.is_empty()).then_some((
            NodeRef::Slot(i),
            s.node.name.as_str(),
            s.pods.as_slice(),
        ))
    });
    let vanished = state
        .vanished
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(n, p)| (NodeRef::Vanished(n), *n, p.as_slice()));
    slots.chain(vanished)
}

/// Classification without surge (§6.1).
pub(crate) fn classify_unavailable<'a>(state: &State<'a>, _ctx: &RolloutCtx) -> Classification<'a> {
    let mut c = Classification::default();
    for (node, name, pods) in walk(state) {
        let Some((new, old)) = split_pods(state, pods) else {
            c.in_use += 1;
            continue;
        };
        match (new, old) {
            (None, None) | (Some(_), Some(_)) => c.in_use += 1,
            (Some(n), None) => {
                if !state.pods[n].available {
                    c.in_use += 1;
                }
            }
            (None, Some(o)) => {
                if !state.pods[o].available {
                    c.forced_deletes
                        .push((node, o, DeleteReason::OldPodUnavailable));
                    c.in_use += 1;
                } else {
                    c.candidates.push(Candidate {
                        node,
                        node_name: name,
                        old_pod: o,
                    });
                }
            }
        }
    }
    c
}

/// Classification with surge (§6.2).
pub(crate) fn classify_surge<'a>(state: &State<'a>, _ctx: &RolloutCtx) -> Classification<'a> {
    let mut c = Classification::default();
    for (node, name, pods) in walk(state) {
        let Some((new, old)) = split_pods(state, pods) else {
            c.in_use += 1;
            continue;
        };
        let avail = |i: usize| state.pods[i].available;
        match (old, new) {
            (Some(o), _) if avail(o) => c.available += 1,
            (None, Some(n)) if avail(n) => c.available += 1,
            _ => {}
        }
        let Some(o) = old else { continue };
        let slot = match node {
            NodeRef::Slot(i) => i,
            // Upstream fails the whole step on a node missing from the cache; we leave it alone.
            NodeRef::Vanished(_) => continue,
        };
        let elig = &state.slots[slot].elig;
        match new {
            None if !avail(o) => {
                if elig.should_run {
                    c.forced_creates.push(slot);
                } else {
                    c.forced_deletes
                        .push((node, o, DeleteReason::OldPodUnavailable));
                }
            }
            None => {
                if let Some(why) = elig.excluded.as_deref().filter(|_| !elig.should_run) {
                    c.ineligible.push((node, o, why.clone()));
                } else {
                    c.candidates.push(Candidate {
                        node,
                        node_name: name,
                        old_pod: o,
                    });
                }
            }
            Some(n) => {
                if avail(n) {
                    c.forced_deletes
                        .push((node, o, DeleteReason::NewPodAvailable));
                } else {
                    c.in_use += 1;
                    c.deferred.push((slot, Deferred::WaitingForAvailability));
                }
            }
        }
    }
    c
}

/// Takes up to `room` candidates in `order`; returns `(taken, deferred)`.
pub(crate) fn select<'a>(
    mut candidates: Vec<Candidate<'a>>,
    room: i32,
    order: CandidateOrder,
) -> (Vec<Candidate<'a>>, Vec<Candidate<'a>>) {
    match order {
        // The walk visits slots in node-name order, then vanished nodes in name order: the
        // candidates are already sorted unless some are on vanished nodes.
        CandidateOrder::NodeName => {
            if candidates
                .iter()
                .any(|c| matches!(c.node, NodeRef::Vanished(_)))
            {
                candidates.sort_by(|a, b| a.node_name.cmp(b.node_name));
            }
        }
    }
    let room = usize::try_from(room.max(0))
        .unwrap_or(0)
        .min(candidates.len());
    let rest = candidates.split_off(room);
    (candidates, rest)
}

/// What the rolling update decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct RolloutOut<'a> {
    pub creates: Vec<(usize, CreateReason)>,
    pub deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
    pub deferred: Vec<(NodeRef<'a>, Deferred)>,
}

/// One rolling-update pass over the working state.
pub(crate) fn rolling_update<'a>(state: &State<'a>, ctx: &RolloutCtx) -> RolloutOut<'a> {
    let mut out = RolloutOut::default();
    if ctx.budget.max_surge == 0 {
        let c = classify_unavailable(state, ctx);
        let room = ctx.budget.max_unavailable - c.in_use;
        let (taken, rest) = select(c.candidates, room, CandidateOrder::NodeName);
        out.deletes = c.forced_deletes;
        out.deletes.extend(
            taken
                .into_iter()
                .map(|t| (t.node, t.old_pod, DeleteReason::RollingUpdate)),
        );
        out.deferred.extend(
            rest.into_iter()
                .map(|t| (t.node, Deferred::UpdateBudgetExhausted)),
        );
        return out;
    }
    let c = classify_surge(state, ctx);
    out.deferred.extend(
        c.deferred
            .iter()
            .map(|(s, d)| (NodeRef::Slot(*s), d.clone())),
    );
    out.deletes = c.forced_deletes;
    let deletable = usize::try_from((c.available - ctx.budget.desired).max(0)).unwrap_or(0);
    for (i, (node, pod, why)) in c.ineligible.into_iter().enumerate() {
        if i < deletable {
            out.deletes
                .push((node, pod, DeleteReason::IneligibleAfterSurge(why)));
        } else {
            out.deferred.push((node, Deferred::KeptForAvailability));
        }
    }
    let room = ctx.budget.max_surge - c.in_use;
    let (taken, rest) = select(c.candidates, room, CandidateOrder::NodeName);
    out.creates = c
        .forced_creates
        .into_iter()
        .map(|s| (s, CreateReason::ReplaceUnavailable))
        .collect();
    for t in taken {
        if let NodeRef::Slot(s) = t.node {
            out.creates.push((s, CreateReason::Surge));
        }
    }
    out.deferred.extend(
        rest.into_iter()
            .map(|t| (t.node, Deferred::UpdateBudgetExhausted)),
    );
    out
}
