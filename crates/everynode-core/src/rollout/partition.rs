//! `partition`: the controls that hold nodes for good, and the shared step that takes held
//! nodes' update starts out of a classification.

use crate::reason::{Deferred, DeleteReason};
use crate::state::State;

use super::classify::Classification;
use super::{NodeRef, RolloutCtx, compare_nodes, defer_on, updated_nodes};
use crate::controls::NodeOrder;

/// Removes the update starts (replacements of unavailable old pods, candidates) on the nodes
/// for which `hold` gives a reason, and reports it; returns how many were removed.
/// `held`: the controls hold these nodes for good (partition), as opposed to for a while
/// (waves).
pub(super) fn hold_starts<'a>(
    c: &mut Classification<'a>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
    held_for_good: bool,
    hold: impl Fn(NodeRef<'a>) -> Option<Deferred>,
) -> usize {
    let mut held = Vec::new();
    c.forced_deletes.retain(|&(node, _, ref reason)| {
        if *reason != DeleteReason::OldPodUnavailable {
            return true;
        }
        hold(node).map(|why| held.push((node, why))).is_none()
    });
    c.forced_creates.retain(|&s| {
        hold(NodeRef::Slot(s))
            .map(|why| held.push((NodeRef::Slot(s), why)))
            .is_none()
    });
    c.candidates
        .retain(|t| hold(t.node).map(|why| held.push((t.node, why))).is_none());
    let n = held.len();
    if held_for_good {
        c.held += n;
    } else {
        c.waiting += n;
    }
    for (node, why) in held {
        defer_on(node, why, ctx, defer);
    }
    n
}

/// Slots the update starts are on, in update order (desired nodes only).
fn starting_slots(state: &State<'_>, c: &Classification<'_>, order: &NodeOrder) -> Vec<usize> {
    let mut slots: Vec<usize> = c
        .forced_deletes
        .iter()
        .filter(|(_, _, reason)| *reason == DeleteReason::OldPodUnavailable)
        .map(|(node, _, _)| *node)
        .chain(c.forced_creates.iter().map(|&s| NodeRef::Slot(s)))
        .chain(c.candidates.iter().map(|t| t.node))
        .filter_map(|node| match node {
            NodeRef::Slot(i) if state.slots[i].elig.should_run => Some(i),
            _ => None,
        })
        .collect();
    slots.sort_by(|a, b| compare_nodes(state, order, NodeRef::Slot(*a), NodeRef::Slot(*b)));
    slots
}

/// `partition`: of the nodes the classification would start updating (replacing an
/// unavailable old pod, or a candidate), only the first in update order until
/// `desired - partition` nodes run the current revision; the others keep their old pod.
/// Returns which slots the partition holds.
pub(super) fn hold_by_partition(
    state: &State<'_>,
    c: &mut Classification<'_>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) -> Vec<bool> {
    let mut held = vec![false; state.slots.len()];
    let partition = ctx.controls.partition;
    if partition <= 0 {
        return held;
    }
    let allowed = ctx.budget.desired - partition - updated_nodes(state);
    let allowed = usize::try_from(allowed.max(0)).unwrap_or(0);
    let starting = starting_slots(state, c, &ctx.controls.order);
    for &slot in starting.iter().skip(allowed) {
        held[slot] = true;
    }
    hold_starts(c, ctx, defer, true, |node| match node {
        NodeRef::Slot(i) if held[i] => Some(Deferred::HeldByPartition { partition }),
        _ => None,
    });
    held
}
