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

use k8s_openapi::jiff::{SignedDuration, Timestamp};

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

impl<'a> NodeRef<'a> {
    /// The node's name.
    pub fn name(self, state: &State<'a>) -> &'a str {
        match self {
            NodeRef::Slot(i) => state.slots[i].node.name.as_str(),
            NodeRef::Vanished(n) => n,
        }
    }
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
        if ctx.skips(state, node) {
            c.skipped += 1;
            defer_on(node, Deferred::SkippedNodeDown, ctx, defer);
            return;
        }
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
        if ctx.skips(state, node) {
            c.skipped += 1;
            defer_on(node, Deferred::SkippedNodeDown, ctx, defer);
            return;
        }
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

/// Removes the update starts (replacements of unavailable old pods, candidates) on the nodes
/// for which `hold` gives a reason, and reports it; returns how many were removed.
/// `held`: the controls hold these nodes for good (partition), as opposed to for a while
/// (waves).
fn hold_starts<'a>(
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
fn hold_by_partition(
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

/// The topology wave of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WaveInfo {
    pub domain: String,
    /// From 1.
    pub index: usize,
    pub domains: usize,
    /// The domain is done and bakes until then.
    pub baked_at: Option<Timestamp>,
}

/// When the pod became available (Ready since + minReadySeconds), for a scheduled input pod.
fn available_since(state: &State<'_>, pod: usize, min_ready: i64) -> Option<Timestamp> {
    let input = state.pods[pod].input()?;
    let ready = state.inputs[input].ready_since?;
    ready.checked_add(SignedDuration::from_secs(min_ready)).ok()
}

/// Zone-by-zone waves: only the first domain (in update order) that is not done — or done
/// but still baking — may start updates, within `maxUnavailablePerDomain`.
fn hold_by_wave(
    state: &State<'_>,
    c: &mut Classification<'_>,
    ctx: &RolloutCtx<'_>,
    partition_held: &[bool],
    defer: &mut dyn FnMut(usize, Deferred),
    requeue: &mut Option<Duration>,
) -> Option<WaveInfo> {
    let topology = ctx.controls.topology.as_ref()?;
    let order = &ctx.controls.order;
    let domain_of = |i: usize| -> &str {
        state.slots[i]
            .node
            .labels
            .get(&topology.key)
            .map_or("", String::as_str)
    };
    // Domains: (value, best rank, slots in update order).
    let mut domains: Vec<(&str, i64, Vec<usize>)> = Vec::new();
    for (i, slot) in state.slots.iter().enumerate() {
        if !slot.elig.should_run {
            continue;
        }
        let d = domain_of(i);
        let rank = order.rank(slot.node);
        match domains.iter_mut().find(|(v, _, _)| *v == d) {
            Some(entry) => {
                entry.1 = entry.1.min(rank);
                entry.2.push(i);
            }
            None => domains.push((d, rank, vec![i])),
        }
    }
    domains.sort_by(|a, b| (a.0.is_empty(), a.1, a.0).cmp(&(b.0.is_empty(), b.1, b.0)));
    let now = ctx.now;
    // Per domain: every node the rollout may touch runs an available new pod, and when the
    // last of them became available.
    let progress: Vec<(bool, Option<Timestamp>)> = domains
        .iter()
        .map(|(_, _, slots)| {
            let mut last_available: Option<Timestamp> = None;
            for &slot in slots {
                if partition_held[slot] || ctx.controls.held(state.slots[slot].node).is_some() {
                    continue;
                }
                let updated = state.slots[slot].pods.iter().find(|&&p| {
                    let pod = &state.pods[p];
                    pod.updated && pod.available && !pod.deleting
                });
                let Some(&p) = updated else {
                    return (false, None);
                };
                if let Some(t) = available_since(state, p, ctx.min_ready) {
                    last_available = Some(last_available.map_or(t, |l| l.max(t)));
                }
            }
            (true, last_available)
        })
        .collect();
    // No domain left to update: no wave (the last domain does not bake).
    let next = progress.iter().position(|(done, _)| !done)?;
    // The latest finished domain before it that is still baking holds it back.
    let baking = (0..next).rev().find_map(|i| {
        let baked_at = progress[i]
            .1?
            .checked_add(SignedDuration::from_secs(topology.bake_seconds))
            .ok()?;
        (topology.bake_seconds > 0 && baked_at > now).then_some((i, baked_at))
    });
    if let Some((_, baked_at)) = baking {
        let wait = now.duration_until(baked_at).unsigned_abs();
        *requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
    }
    let current = match baking {
        Some((i, baked_at)) => Some((i, domains[i].0, Some(baked_at))),
        None => Some((next, domains[next].0, None)),
    };
    let (index, value, baked_at) = current?;
    let in_domain: Vec<bool> = {
        let mut v = vec![false; state.slots.len()];
        for &s in &domains[index].2 {
            v[s] = true;
        }
        v
    };
    let baking = baked_at.is_some();
    hold_starts(c, ctx, defer, false, |node| match node {
        NodeRef::Slot(i) if baking || !in_domain[i] => Some(Deferred::WaitingForWave {
            current: value.to_owned(),
        }),
        _ => None,
    });
    // The per-domain budget: nodes of the domain updating at once.
    if let Some(per_domain) = &topology.per_domain {
        let size = i32::try_from(domains[index].2.len()).unwrap_or(i32::MAX);
        let max = crate::budget::scaled_value(
            per_domain,
            size,
            "spec.updateStrategy.rollingUpdate.maxUnavailablePerDomain",
        )
        .unwrap_or(0)
        .max(1);
        let busy = domains[index]
            .2
            .iter()
            .filter(|&&s| {
                let pods = &state.slots[s].pods;
                let available = pods
                    .iter()
                    .any(|&p| state.pods[p].available && !state.pods[p].deleting);
                let updating = pods.iter().any(|&p| {
                    let pod = &state.pods[p];
                    pod.updated && !pod.available && !pod.deleting
                });
                !available || updating
            })
            .count();
        let room = usize::try_from(max).unwrap_or(0).saturating_sub(busy);
        let mut candidates = std::mem::take(&mut c.candidates);
        candidates.sort_by(|a, b| compare_nodes(state, order, a.node, b.node));
        for t in candidates.drain(room.min(candidates.len())..) {
            defer_on(t.node, Deferred::UpdateBudgetExhausted, ctx, defer);
        }
        c.candidates = candidates;
    }
    Some(WaveInfo {
        domain: value.to_owned(),
        index: index + 1,
        domains: domains.len(),
        baked_at,
    })
}

/// Pacing: no new update starts within `minSecondsBetweenBatches` of the newest pod of the
/// current revision, and no more than `maxNodesPerMinute` pods of it created in the last 60
/// seconds (the pods' creation times are the record, so a restarted controller keeps pace).
/// Replacements of unavailable old pods are repairs and not paced.
fn pace(
    state: &State<'_>,
    c: &mut Classification<'_>,
    ctx: &RolloutCtx<'_>,
    defer: &mut dyn FnMut(usize, Deferred),
    requeue: &mut Option<Duration>,
) {
    let pacing = ctx.controls.pacing;
    if !pacing.is_set() || c.candidates.is_empty() {
        return;
    }
    let now = ctx.now;
    let created: Vec<Timestamp> = state
        .slots
        .iter()
        .flat_map(|s| s.pods.iter())
        .map(|&p| &state.pods[p])
        .filter(|pod| pod.updated && !pod.deleting)
        .map(|pod| pod.created().unwrap_or(now))
        .collect();
    let mut allowed = c.candidates.len();
    let mut wait: Option<Duration> = None;
    let mut hold_for = |d: Duration| wait = Some(wait.map_or(d, |w| w.max(d)));
    if pacing.min_seconds_between_batches > 0
        && let Some(newest) = created.iter().max()
        && let Ok(next) = newest.checked_add(SignedDuration::from_secs(
            pacing.min_seconds_between_batches,
        ))
        && next > now
    {
        allowed = 0;
        hold_for(now.duration_until(next).unsigned_abs());
    }
    if let Some(per_minute) = pacing.max_nodes_per_minute {
        let minute_ago = now
            .checked_sub(SignedDuration::from_secs(60))
            .unwrap_or(Timestamp::MIN);
        let mut recent: Vec<Timestamp> = created.into_iter().filter(|t| *t > minute_ago).collect();
        recent.sort();
        let room = usize::try_from(per_minute)
            .unwrap_or(0)
            .saturating_sub(recent.len());
        if room < allowed {
            allowed = room;
            if let Some(oldest) = recent.first()
                && let Ok(frees) = oldest.checked_add(SignedDuration::from_secs(60))
            {
                hold_for(now.duration_until(frees).unsigned_abs());
            }
        }
    }
    if allowed >= c.candidates.len() {
        return;
    }
    // Starts of this round are not pods yet: a minute is the longest they can hold the rate.
    let wait = wait.unwrap_or(Duration::from_secs(60));
    *requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
    let order = &ctx.controls.order;
    c.candidates
        .sort_by(|a, b| compare_nodes(state, order, a.node, b.node));
    let rest = c.candidates.split_off(allowed);
    c.waiting += rest.len();
    for t in rest {
        defer_on(t.node, Deferred::Paced { wait }, ctx, defer);
    }
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
}

impl Classification<'_> {
    /// Only held nodes are left: no candidate, no forced action, nothing in flight.
    fn held_only(&self) -> bool {
        self.held > 0
            && self.waiting == 0
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
