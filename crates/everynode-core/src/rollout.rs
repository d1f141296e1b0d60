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
//! everynode's controls ([`Controls`]) plug in here: pause and the canary node selector are
//! classification filters (a held node is neither a candidate nor replaced when unavailable),
//! the partition caps how many nodes the classification may hand on (first in update order),
//! the node order sorts the candidates, and with both budgets set the candidates the surge
//! budget cannot take may still be replaced under `maxUnavailable`. Zone-by-zone waves and
//! pacing become further caps on the selection. Upstream visits nodes in Go map order;
//! candidates taken are therefore arbitrary there and deterministic (first in update order)
//! here.

use crate::budget::Budget;
use crate::controls::{Controls, NodeOrder};
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
    /// Surge: nodes without an available pod (for `maxUnavailable` when both budgets are set).
    pub unavailable: i32,
    /// Nodes whose old pod the controls hold (pause, canary selector, partition).
    pub held: usize,
    /// Deletions taken regardless of budget.
    pub forced_deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
    /// Creations taken regardless of budget (surge, old pod unavailable).
    pub forced_creates: Vec<usize>,
    /// Budgeted candidates, in walk order.
    pub candidates: Vec<Candidate<'a>>,
    /// Surge: available old pods on nodes that should no longer run them: `(slot, pod)`.
    pub ineligible: Vec<(usize, usize)>,
}

/// Inputs shared by classification and selection.
pub(crate) struct RolloutCtx<'c> {
    pub budget: Budget,
    /// Collect the per-node deferrals (they only feed `explain`).
    pub explain: bool,
    /// everynode's rollout controls (all unset: apps/v1 behaviour).
    pub controls: &'c Controls,
}

impl RolloutCtx<'_> {
    /// Why the rollout may not touch the old pod on `node`, if it may not.
    fn held(&self, state: &State<'_>, node: NodeRef<'_>) -> Option<Deferred> {
        match node {
            NodeRef::Slot(i) => self.controls.held(state.slots[i].node),
            NodeRef::Vanished(_) => None,
        }
    }
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
pub(crate) fn classify_unavailable<'a>(
    state: &State<'a>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) -> Classification<'a> {
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
                if let Some(why) = ctx.held(state, node) {
                    if !state.pods[o].available {
                        c.in_use += 1;
                    }
                    c.held += 1;
                    defer_on(node, why, ctx, defer);
                } else if !state.pods[o].available {
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
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) -> Classification<'a> {
    let mut c = Classification::default();
    walk(state, |node, pods| {
        let Some((new, old)) = split_pods(state, pods) else {
            c.in_use += 1;
            c.unavailable += 1;
            return;
        };
        let avail = |i: usize| state.pods[i].available;
        match (old, new) {
            (Some(o), _) if avail(o) => c.available += 1,
            (None, Some(n)) if avail(n) => c.available += 1,
            _ => {
                if !matches!(new, Some(n) if avail(n))
                    && matches!(node, NodeRef::Slot(i) if state.slots[i].elig.should_run)
                {
                    c.unavailable += 1;
                }
            }
        }
        let Some(o) = old else { return };
        let slot = match node {
            NodeRef::Slot(i) => i,
            // Upstream fails the whole step on a node missing from the cache; we leave it alone.
            NodeRef::Vanished(_) => return,
        };
        let elig = &state.slots[slot].elig;
        if new.is_none()
            && elig.should_run
            && let Some(why) = ctx.held(state, node)
        {
            c.held += 1;
            defer_on(node, why, ctx, defer);
            return;
        }
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

/// Compares two nodes in update order. By name, nodes missing from the node list sort among
/// the others by name; by a label, they go last (by name).
fn compare_nodes(
    state: &State<'_>,
    order: &NodeOrder,
    a: NodeRef<'_>,
    b: NodeRef<'_>,
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let name = |n: NodeRef<'_>| -> String {
        match n {
            NodeRef::Slot(i) => state.slots[i].node.name.clone(),
            NodeRef::Vanished(v) => v.to_owned(),
        }
    };
    match (a, b) {
        // Slots are sorted by name.
        (NodeRef::Slot(x), NodeRef::Slot(y)) if *order == NodeOrder::Name => x.cmp(&y),
        (NodeRef::Slot(x), NodeRef::Slot(y)) => {
            order.compare(state.slots[x].node, state.slots[y].node)
        }
        _ if *order == NodeOrder::Name => name(a).cmp(&name(b)),
        (NodeRef::Slot(_), NodeRef::Vanished(_)) => Ordering::Less,
        (NodeRef::Vanished(_), NodeRef::Slot(_)) => Ordering::Greater,
        (NodeRef::Vanished(x), NodeRef::Vanished(y)) => x.cmp(y),
    }
}

/// Orders `candidates` (update order) and takes up to `room` of them; returns how many are
/// taken (the first ones; the rest are deferred).
pub(crate) fn select<'a>(
    state: &State<'a>,
    candidates: &mut [Candidate<'a>],
    room: i32,
    order: &NodeOrder,
) -> usize {
    // The walk visits slots in node-name order, then vanished nodes in name order: by name,
    // the candidates are already sorted unless some are on vanished nodes.
    if *order != NodeOrder::Name
        || candidates
            .iter()
            .any(|c| matches!(c.node, NodeRef::Vanished(_)))
    {
        candidates.sort_by(|a, b| compare_nodes(state, order, a.node, b.node));
    }
    usize::try_from(room.max(0))
        .unwrap_or(0)
        .min(candidates.len())
}

/// Desired nodes that already run a (non-terminating) pod of the current revision.
pub(crate) fn updated_nodes(state: &State<'_>) -> i32 {
    let n = state
        .slots
        .iter()
        .filter(|s| s.elig.should_run)
        .filter(|s| {
            s.pods.iter().any(|&p| {
                let pod = &state.pods[p];
                pod.updated && !pod.deleting
            })
        })
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `partition`: of the nodes the classification would start updating (replacing an
/// unavailable old pod, or a candidate), only the first in update order until
/// `desired - partition` nodes run the current revision; the others keep their old pod.
fn hold_by_partition<'a>(
    state: &State<'a>,
    c: &mut Classification<'a>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) {
    let partition = ctx.controls.partition;
    if partition <= 0 {
        return;
    }
    let allowed = ctx.budget.desired - partition - updated_nodes(state);
    let mut starting: Vec<NodeRef<'a>> = c
        .forced_deletes
        .iter()
        .filter(|(_, _, reason)| *reason == DeleteReason::OldPodUnavailable)
        .map(|(node, _, _)| *node)
        .chain(c.forced_creates.iter().map(|&s| NodeRef::Slot(s)))
        .chain(c.candidates.iter().map(|t| t.node))
        .filter(|node| matches!(node, NodeRef::Slot(i) if state.slots[*i].elig.should_run))
        .collect();
    let allowed = usize::try_from(allowed.max(0)).unwrap_or(0);
    if starting.len() <= allowed {
        return;
    }
    starting.sort_by(|a, b| compare_nodes(state, &ctx.controls.order, *a, *b));
    let held = starting.split_off(allowed);
    c.held += held.len();
    let is_held = |node: &NodeRef<'_>| held.contains(node);
    c.forced_deletes
        .retain(|(node, _, reason)| *reason != DeleteReason::OldPodUnavailable || !is_held(node));
    c.forced_creates.retain(|&s| !is_held(&NodeRef::Slot(s)));
    c.candidates.retain(|t| !is_held(&t.node));
    for node in held {
        defer_on(node, Deferred::HeldByPartition { partition }, ctx, defer);
    }
}

/// What the rolling update decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct RolloutOut<'a> {
    pub creates: Vec<(usize, CreateReason)>,
    pub deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
    /// Nothing is in flight or waiting for budget, and the controls hold some nodes: the
    /// rollout went as far as it may.
    pub held_only: bool,
}

impl Classification<'_> {
    /// Only held nodes are left: no candidate, no forced action, nothing in flight.
    fn held_only(&self) -> bool {
        self.held > 0
            && self.candidates.is_empty()
            && self.forced_deletes.is_empty()
            && self.forced_creates.is_empty()
            && self.in_use == 0
    }
}

/// One rolling-update pass over the working state; with `ctx.explain`, what it defers on a
/// node is reported to `defer` as it goes.
pub(crate) fn rolling_update<'a>(
    state: &State<'a>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) -> RolloutOut<'a> {
    let mut out = RolloutOut::default();
    let order = &ctx.controls.order;
    if ctx.budget.max_surge == 0 {
        let mut c = classify_unavailable(state, ctx, defer);
        hold_by_partition(state, &mut c, ctx, defer);
        out.held_only = c.held_only();
        let room = ctx.budget.max_unavailable - c.in_use;
        let taken = select(state, &mut c.candidates, room, order);
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
    hold_by_partition(state, &mut c, ctx, defer);
    out.held_only = c.held_only() && c.ineligible.is_empty();
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
    let taken = select(state, &mut c.candidates, room, order);
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
    // Both budgets (everynode): candidates the surge budget cannot take may lose their pod
    // while fewer than `maxUnavailable` nodes are without an available one.
    let rest = &c.candidates[taken..];
    let unavailable_room =
        usize::try_from((ctx.budget.max_unavailable - c.unavailable).max(0)).unwrap_or(0);
    let replaced = unavailable_room.min(rest.len());
    out.deletes.extend(
        rest[..replaced]
            .iter()
            .map(|t| (t.node, t.old_pod, DeleteReason::RollingUpdate)),
    );
    if ctx.explain {
        defer_rest(&rest[replaced..], defer);
    }
    out
}

/// Reports `why` for `node` (nodes missing from the node list are not reported).
fn defer_on(
    node: NodeRef<'_>,
    why: Deferred,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) {
    if let (true, NodeRef::Slot(s)) = (ctx.explain, node) {
        defer(s, why);
    }
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
