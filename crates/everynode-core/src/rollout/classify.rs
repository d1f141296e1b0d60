//! Classification (§6.1, §6.2): every node the rolling update looks at, sorted into budget in
//! use, forced actions, candidates and (surge) old pods on ineligible nodes.

use crate::reason::{Deferred, DeleteReason};
use crate::state::State;

use super::{NodeRef, RolloutCtx, defer_on};

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
    /// Nodes whose update waits for its wave or for pacing.
    pub waiting: usize,
    /// Nodes left alone because they are down (`unavailableNodePolicy: Skip`).
    pub skipped: usize,
    /// Deletions taken regardless of budget.
    pub forced_deletes: Vec<(NodeRef<'a>, usize, DeleteReason)>,
    /// Creations taken regardless of budget (surge, old pod unavailable).
    pub forced_creates: Vec<usize>,
    /// Budgeted candidates, in walk order.
    pub candidates: Vec<Candidate<'a>>,
    /// Surge: available old pods on nodes that should no longer run them: `(slot, pod)`.
    pub ineligible: Vec<(usize, usize)>,
}

impl Classification<'_> {
    /// Only held nodes are left: no candidate, no forced action, nothing in flight.
    pub(super) fn held_only(&self) -> bool {
        self.held > 0
            && self.waiting == 0
            && self.candidates.is_empty()
            && self.forced_deletes.is_empty()
            && self.forced_creates.is_empty()
            && self.in_use == 0
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

/// Like [`walk`], leaving out (counted and reported) the nodes `unavailableNodePolicy: Skip`
/// leaves alone.
fn walk_unskipped<'a>(
    state: &State<'a>,
    ctx: &RolloutCtx<'_>,
    c: &mut Classification<'a>,
    defer: &mut dyn FnMut(usize, Deferred),
    mut visit: impl FnMut(
        &mut Classification<'a>,
        NodeRef<'a>,
        &[usize],
        &mut dyn FnMut(usize, Deferred),
    ),
) {
    walk(state, |node, pods| {
        if ctx.skips(state, node) {
            c.skipped += 1;
            defer_on(node, Deferred::SkippedNodeDown, ctx, defer);
        } else {
            visit(c, node, pods, defer);
        }
    });
}

/// Classification without surge (§6.1).
pub(crate) fn classify_unavailable<'a>(
    state: &State<'a>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
) -> Classification<'a> {
    let mut c = Classification::default();
    walk_unskipped(state, ctx, &mut c, defer, |c, node, pods, defer| {
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
    walk_unskipped(state, ctx, &mut c, defer, |c, node, pods, defer| {
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
