//! Zone-by-zone waves (`topologyKey`): one domain at a time, in update order, each baking
//! before the next starts, within `maxUnavailablePerDomain`.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::budget::Scaled;
use crate::controls::NodeOrder;
use crate::reason::Deferred;
use crate::state::State;

use super::classify::Classification;
use super::partition::hold_starts;
use super::{NodeRef, RolloutCtx, compare_nodes, defer_on};

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
pub(super) fn hold_by_wave(
    state: &State<'_>,
    c: &mut Classification<'_>,
    ctx: &RolloutCtx<'_>,
    partition_held: &[bool],
    defer: &mut dyn FnMut(usize, Deferred),
    requeue: &mut Option<Duration>,
) -> Option<WaveInfo> {
    let topology = ctx.controls.topology.as_ref()?;
    let domains = domains(state, &topology.key, &ctx.controls.order);
    let progress: Vec<Progress> = domains
        .iter()
        .map(|d| progress(state, d, ctx, partition_held))
        .collect();
    let (index, baked_at) = current_wave(&progress, topology.bake_seconds, ctx.now)?;
    if let Some(baked_at) = baked_at {
        let wait = ctx.now.duration_until(baked_at).unsigned_abs();
        *requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
    }
    let domain = &domains[index];
    let mut in_domain = vec![false; state.slots.len()];
    for &s in &domain.slots {
        in_domain[s] = true;
    }
    let baking = baked_at.is_some();
    hold_starts(c, ctx, defer, false, |node| match node {
        NodeRef::Slot(i) if baking || !in_domain[i] => Some(Deferred::WaitingForWave {
            current: domain.value.to_owned(),
        }),
        _ => None,
    });
    if let Some(per_domain) = topology.per_domain {
        limit_in_domain(state, c, ctx, domain, per_domain, defer);
    }
    Some(WaveInfo {
        domain: domain.value.to_owned(),
        index: index + 1,
        domains: domains.len(),
        baked_at,
    })
}

/// One topology domain: the nodes sharing a value of the topology label.
struct Domain<'s> {
    /// The label value (empty: nodes without the label, updated last).
    value: &'s str,
    /// The best update-order rank of its nodes.
    rank: i64,
    /// Its desired nodes' slots, in slot order.
    slots: Vec<usize>,
}

/// The desired nodes' domains in update order: by their first node's rank, then value; nodes
/// without the label last.
fn domains<'s>(state: &State<'s>, key: &str, order: &NodeOrder) -> Vec<Domain<'s>> {
    let mut domains: Vec<Domain<'s>> = Vec::new();
    for (i, slot) in state.slots.iter().enumerate() {
        if !slot.elig.should_run {
            continue;
        }
        let value = slot.node.labels.get(key).map_or("", String::as_str);
        let rank = order.rank(slot.node);
        match domains.iter_mut().find(|d| d.value == value) {
            Some(d) => {
                d.rank = d.rank.min(rank);
                d.slots.push(i);
            }
            None => domains.push(Domain {
                value,
                rank,
                slots: vec![i],
            }),
        }
    }
    domains.sort_by(|a, b| {
        (a.value.is_empty(), a.rank, a.value).cmp(&(b.value.is_empty(), b.rank, b.value))
    });
    domains
}

/// Whether every node of a domain the rollout may touch runs an available new pod, and when
/// the last of them became available.
struct Progress {
    done: bool,
    last_available: Option<Timestamp>,
}

/// The progress of `domain` (nodes held by the partition or the controls do not count).
fn progress(
    state: &State<'_>,
    domain: &Domain<'_>,
    ctx: &RolloutCtx<'_>,
    partition_held: &[bool],
) -> Progress {
    let mut last_available: Option<Timestamp> = None;
    for &slot in &domain.slots {
        if partition_held[slot] || ctx.controls.held(state.slots[slot].node).is_some() {
            continue;
        }
        let updated = state.slots[slot].pods.iter().find(|&&p| {
            let pod = &state.pods[p];
            pod.updated && pod.available && !pod.deleting
        });
        let Some(&p) = updated else {
            return Progress {
                done: false,
                last_available: None,
            };
        };
        if let Some(t) = available_since(state, p, ctx.min_ready) {
            last_available = Some(last_available.map_or(t, |l| l.max(t)));
        }
    }
    Progress {
        done: true,
        last_available,
    }
}

/// The wave's domain and, while it bakes, when it is baked: the first domain not done, unless
/// the latest finished one before it still bakes. `None` when every domain is done (the last
/// one does not bake).
fn current_wave(
    progress: &[Progress],
    bake_seconds: i64,
    now: Timestamp,
) -> Option<(usize, Option<Timestamp>)> {
    let next = progress.iter().position(|p| !p.done)?;
    let baking = (0..next).rev().find_map(|i| {
        let baked_at = progress[i]
            .last_available?
            .checked_add(SignedDuration::from_secs(bake_seconds))
            .ok()?;
        (bake_seconds > 0 && baked_at > now).then_some((i, Some(baked_at)))
    });
    Some(baking.unwrap_or((next, None)))
}

/// `maxUnavailablePerDomain`: no more of the domain's nodes updating (or without an available
/// pod) at once than it allows (at least 1); the other candidates wait.
fn limit_in_domain(
    state: &State<'_>,
    c: &mut Classification<'_>,
    ctx: &RolloutCtx<'_>,
    domain: &Domain<'_>,
    per_domain: Scaled,
    defer: &mut dyn FnMut(usize, Deferred),
) {
    let size = i32::try_from(domain.slots.len()).unwrap_or(i32::MAX);
    let max = per_domain.of(size).max(1);
    let busy = domain.slots.iter().filter(|&&s| busy(state, s)).count();
    let room = usize::try_from(max).unwrap_or(0).saturating_sub(busy);
    let order = &ctx.controls.order;
    c.candidates
        .sort_by(|a, b| compare_nodes(state, order, a.node, b.node));
    let keep = room.min(c.candidates.len());
    for t in c.candidates.drain(keep..) {
        defer_on(t.node, Deferred::UpdateBudgetExhausted, ctx, defer);
    }
}

/// A node without an available pod, or with a new pod not yet available.
fn busy(state: &State<'_>, slot: usize) -> bool {
    let pods = &state.slots[slot].pods;
    let available = pods
        .iter()
        .any(|&p| state.pods[p].available && !state.pods[p].deleting);
    let updating = pods.iter().any(|&p| {
        let pod = &state.pods[p];
        pod.updated && !pod.available && !pod.deleting
    });
    !available || updating
}
