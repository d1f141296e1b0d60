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
use crate::reason::{CreateReason, Deferred, DeleteReason};
use crate::state::State;

/// Where a node lives in the working state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeRef<'a> {
    Slot(usize),
    Vanished(&'a str),
}

/// A node whose available old pod could be updated under the budget.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub node: NodeRef<'a>,
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
    /// Surge: available old pods on nodes that should no longer run them: `(slot, pod)`.
    pub ineligible: Vec<(usize, usize)>,
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
    /// Collect the per-node deferrals (they only feed `explain`).
    pub explain: bool,
}

/// `findUpdatedPodsOnNode`: the single new and single old non-deleted pod; `None` when the
/// node has two of either kind (manage prunes first).
fn split_pods(state: &State<'_>, pods: &[usize]) -> Option<(Option<usize>, Option<usize>)> {
    if let [pi] = *pods {
        // The common case.
        let pod = &state.pods[pi];
        return Some(match (pod.deleting, pod.updated) {
            (true, _) => (None, None),
            (false, true) => (Some(pi), None),
            (false, false) => (None, Some(pi)),
        });
    }
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

/// Visits the nodes the rolling update looks at: every node with pods (including vanished
/// ones), plus desired nodes without pods (upstream inserts empty entries for them).
fn walk<'a>(state: &State<'a>, mut visit: impl FnMut(NodeRef<'a>, &[usize])) {
    for (i, s) in state.slots.iter().enumerate() {
        if s.elig.should_run || !s.pods.is_empty() {
            visit(NodeRef::Slot(i), s.pods.as_slice());
        }
    }
    for (n, p) in &state.vanished {
        if !p.is_empty() {
            visit(NodeRef::Vanished(n), p);
        }
    }
}

/// Classification without surge (§6.1).
pub(crate) fn classify_unavailable<'a>(state: &State<'a>, _ctx: &RolloutCtx) -> Classification<'a> {
    let mut c = Classification::default();
    walk(state, |node, pods| {
        let Some((new, old)) = split_pods(state, pods) else {
            c.in_use += 1;
            return;
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
                    c.candidates.push(Candidate { node, old_pod: o });
                }
            }
        }
    });
    c
}

/// Classification with surge (§6.2).
pub(crate) fn classify_surge<'a>(
    state: &State<'a>,
    ctx: &RolloutCtx,
    defer: &mut dyn FnMut(usize, Deferred),
) -> Classification<'a> {
    let mut c = Classification::default();
    walk(state, |node, pods| {
        let Some((new, old)) = split_pods(state, pods) else {
            c.in_use += 1;
            return;
        };
        let avail = |i: usize| state.pods[i].available;
        match (old, new) {
            (Some(o), _) if avail(o) => c.available += 1,
            (None, Some(n)) if avail(n) => c.available += 1,
            _ => {}
        }
        let Some(o) = old else { return };
        let slot = match node {
            NodeRef::Slot(i) => i,
            // Upstream fails the whole step on a node missing from the cache; we leave it alone.
            NodeRef::Vanished(_) => return,
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
                if !elig.should_run && elig.excluded.is_some() {
                    c.ineligible.push((slot, o));
                } else {
                    c.candidates.push(Candidate { node, old_pod: o });
                }
            }
            Some(n) => {
                if avail(n) {
                    c.forced_deletes
                        .push((node, o, DeleteReason::NewPodAvailable));
                } else {
                    c.in_use += 1;
                    if ctx.explain {
                        defer(slot, Deferred::WaitingForAvailability);
                    }
                }
            }
        }
    });
    c
}

/// Orders `candidates` and takes up to `room` of them; returns how many are taken (the first
/// ones; the rest are deferred).
pub(crate) fn select<'a>(
    state: &State<'a>,
    candidates: &mut [Candidate<'a>],
    room: i32,
    order: CandidateOrder,
) -> usize {
    match order {
        // The walk visits slots in node-name order, then vanished nodes in name order: the
        // candidates are already sorted unless some are on vanished nodes.
        CandidateOrder::NodeName => {
            if candidates
                .iter()
                .any(|c| matches!(c.node, NodeRef::Vanished(_)))
            {
                let name = |c: &Candidate<'a>| -> &'a str {
                    match c.node {
                        NodeRef::Slot(i) => state.slots[i].node.name.as_str(),
                        NodeRef::Vanished(n) => n,
                    }
                };
                candidates.sort_by(|a, b| name(a).cmp(name(b)));
            }
        }
    }
    usize::try_from(room.max(0))
        .unwrap_or(0)
        .min(candidates.len())
}

/// What the rolling update decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct RolloutOut<'a> {
    pub creates: Vec<(usize, CreateReason)>,
    pub deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
}

/// One rolling-update pass over the working state; with `ctx.explain`, what it defers on a
/// node is reported to `defer` as it goes.
pub(crate) fn rolling_update<'a>(
    state: &State<'a>,
    ctx: &RolloutCtx,
    defer: &mut dyn FnMut(usize, Deferred),
) -> RolloutOut<'a> {
    let mut out = RolloutOut::default();
    if ctx.budget.max_surge == 0 {
        let mut c = classify_unavailable(state, ctx);
        let room = ctx.budget.max_unavailable - c.in_use;
        let taken = select(state, &mut c.candidates, room, CandidateOrder::NodeName);
        out.deletes = c.forced_deletes;
        out.deletes.extend(
            c.candidates[..taken]
                .iter()
                .map(|t| (t.node, t.old_pod, DeleteReason::RollingUpdate)),
        );
        if ctx.explain {
            defer_rest(&c.candidates[taken..], defer);
        }
        return out;
    }
    let mut c = classify_surge(state, ctx, defer);
    out.deletes = c.forced_deletes;
    let deletable = usize::try_from((c.available - ctx.budget.desired).max(0)).unwrap_or(0);
    for (i, &(slot, pod)) in c.ineligible.iter().enumerate() {
        let node = NodeRef::Slot(slot);
        if i < deletable {
            if let Some(why) = state.slots[slot].elig.excluded.as_deref() {
                out.deletes
                    .push((node, pod, DeleteReason::IneligibleAfterSurge(why.clone())));
            }
        } else if ctx.explain {
            defer(slot, Deferred::KeptForAvailability);
        }
    }
    let room = ctx.budget.max_surge - c.in_use;
    let taken = select(state, &mut c.candidates, room, CandidateOrder::NodeName);
    out.creates = c
        .forced_creates
        .into_iter()
        .map(|s| (s, CreateReason::ReplaceUnavailable))
        .collect();
    for t in &c.candidates[..taken] {
        if let NodeRef::Slot(s) = t.node {
            out.creates.push((s, CreateReason::Surge));
        }
    }
    if ctx.explain {
        defer_rest(&c.candidates[taken..], defer);
    }
    out
}

/// Candidates beyond the budget wait for it (nodes missing from the node list are not
/// reported).
fn defer_rest(rest: &[Candidate<'_>], defer: &mut dyn FnMut(usize, Deferred)) {
    for t in rest {
        if let NodeRef::Slot(s) = t.node {
            defer(s, Deferred::UpdateBudgetExhausted);
        }
    }
}
