//! The `RollingUpdate` strategy (§6): replaces old-revision pods within the budget.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.
//!
//! The step is split in two so later rollout features plug in without a rewrite:
//!
//! 1. **Classification** (`classify_unavailable`, `classify_surge`) walks every node that has (or should have) pods and
//!    sorts it into: budget already in use (unavailable nodes, or surge pods waiting to become
//!    available), *forced* actions that upstream takes regardless of budget (replacing
//!    unavailable old pods, deleting old pods whose new pod is available), *candidates* (nodes
//!    with an available old pod that may be updated under the budget) and old pods on
//!    ineligible nodes (surge only).
//! 2. **Selection** (`select`) orders the candidates (today: by node name, which is also
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

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::budget::Budget;
use crate::controls::{Controls, NodeOrder};
use crate::reason::{CreateReason, Deferred, DeleteReason};
use crate::state::State;

mod classify;
mod pacing;
mod partition;
mod waves;

use classify::{Candidate, Classification, classify_surge, classify_unavailable};
use pacing::pace;
use partition::hold_by_partition;
pub(crate) use waves::WaveInfo;
use waves::hold_by_wave;

/// Where a node lives in the working state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeRef<'a> {
    Slot(usize),
    Vanished(&'a str),
}

impl<'a> NodeRef<'a> {
    /// The node's name.
    pub fn name(self, state: &State<'a>) -> &'a str {
        match self {
            NodeRef::Slot(i) => state.slots[i].node.name.as_str(),
            NodeRef::Vanished(n) => n,
        }
    }
}

/// Inputs shared by classification and selection.
pub(crate) struct RolloutCtx<'c> {
    pub budget: Budget,
    /// Collect the per-node deferrals (they only feed `explain`).
    pub explain: bool,
    /// Report the deferrals that block a node (see [`Deferred::blocks`]) even without
    /// `explain` (for `status.blockedNodes`).
    pub report_blocks: bool,
    /// everynode's rollout controls (all unset: apps/v1 behaviour).
    pub controls: &'c Controls,
    /// The plan's clock (bake time, pacing).
    pub now: Timestamp,
    /// `minReadySeconds` (when a pod became available).
    pub min_ready: i64,
    /// How many nodes after those taken to report as next in update order
    /// ([`RolloutOut::ahead`], for `prePull`).
    pub ahead: usize,
}

impl RolloutCtx<'_> {
    /// `unavailableNodePolicy: Skip` leaves `node` alone (see [`crate::safety::skipped`]).
    fn skips(&self, state: &State<'_>, node: NodeRef<'_>) -> bool {
        self.controls.safety.skip_unavailable_nodes
            && matches!(node, NodeRef::Slot(i) if crate::safety::skipped(state, i))
    }

    /// Why the rollout may not touch the old pod on `node`, if it may not.
    fn held(&self, state: &State<'_>, node: NodeRef<'_>) -> Option<Deferred> {
        match node {
            NodeRef::Slot(i) => self.controls.held(state.slots[i].node),
            NodeRef::Vanished(_) => None,
        }
    }
}

/// Compares two nodes in update order. By name, nodes missing from the node list sort among
/// the others by name; by a label, they go last (by name).
fn compare_nodes<'a>(
    state: &State<'a>,
    order: &NodeOrder,
    a: NodeRef<'a>,
    b: NodeRef<'a>,
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        // Slots are sorted by name.
        (NodeRef::Slot(x), NodeRef::Slot(y)) if *order == NodeOrder::Name => x.cmp(&y),
        (NodeRef::Slot(x), NodeRef::Slot(y)) => {
            order.compare(state.slots[x].node, state.slots[y].node)
        }
        _ if *order == NodeOrder::Name => a.name(state).cmp(b.name(state)),
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

/// Partition, waves and pacing, in that order, on a classification.
fn apply_controls(
    state: &State<'_>,
    c: &mut Classification<'_>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
    requeue: &mut Option<Duration>,
) -> Option<WaveInfo> {
    let partition_held = hold_by_partition(state, c, ctx, defer);
    let wave = hold_by_wave(state, c, ctx, &partition_held, defer, requeue);
    pace(state, c, ctx, defer, requeue);
    wave
}

/// What the rolling update decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct RolloutOut<'a> {
    pub creates: Vec<(usize, CreateReason)>,
    pub deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
    /// Nothing is in flight or waiting for budget, and the controls hold some nodes: the
    /// rollout went as far as it may.
    pub held_only: bool,
    /// The topology wave (with `topologyKey`).
    pub wave: Option<WaveInfo>,
    /// Plan again after this (bake end, pacing).
    pub requeue: Option<Duration>,
    /// The next [`RolloutCtx::ahead`] nodes in update order after those taken (waiting for
    /// the budget).
    pub ahead: Vec<usize>,
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
        out.wave = apply_controls(state, &mut c, ctx, defer, &mut out.requeue);
        out.held_only = c.held_only();
        let room = ctx.budget.max_unavailable - c.in_use;
        let taken = select(state, &mut c.candidates, room, order);
        out.deletes = c.forced_deletes;
        out.deletes.extend(
            c.candidates[..taken]
                .iter()
                .map(|t| (t.node, t.old_pod, DeleteReason::RollingUpdate)),
        );
        out.ahead = slots_ahead(&c.candidates[taken..], ctx.ahead);
        if ctx.explain {
            defer_rest(&c.candidates[taken..], defer);
        }
        return out;
    }
    let mut c = classify_surge(state, ctx, defer);
    out.wave = apply_controls(state, &mut c, ctx, defer, &mut out.requeue);
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
    out.ahead = slots_ahead(&rest[replaced..], ctx.ahead);
    if ctx.explain {
        defer_rest(&rest[replaced..], defer);
    }
    out
}

/// The slots of the first `n` of `rest` (nodes missing from the node list are skipped).
fn slots_ahead(rest: &[Candidate<'_>], n: usize) -> Vec<usize> {
    rest.iter()
        .filter_map(|t| match t.node {
            NodeRef::Slot(s) => Some(s),
            NodeRef::Vanished(_) => None,
        })
        .take(n)
        .collect()
}

/// Reports `why` for `node` (nodes missing from the node list are not reported).
fn defer_on(
    node: NodeRef<'_>,
    why: Deferred,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) {
    if let NodeRef::Slot(s) = node
        && (ctx.explain || (ctx.report_blocks && why.blocks()))
    {
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
