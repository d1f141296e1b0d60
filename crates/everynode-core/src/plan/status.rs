//! Status (§7) of the final working copy: the counters, and everynode's rollout status
//! (revisions, wave, failure, rollback, skipped and blocked nodes, conditions).

use std::collections::BTreeMap;
use std::time::Duration;

use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_api::{DaemonSetStatus, RevisionPods};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use crate::controls::Controls;
use crate::index::strs;
use crate::manage::{EventReason, PlanEvent};
use crate::problem::{UnschedulablePod, scheduling_conditions};
use crate::reason::{Deferred, NodeExcluded};
use crate::revision::{rev_hash, revision_name};
use crate::safety::MAX_LISTED_NODES;
use crate::snapshot::{Owner, RevisionView, SetView};
use crate::status::pacing::StatusWrite;
use crate::status::{RolloutFacts, RolloutStatus, StatusCounts, count, rollout_conditions};

use super::builder::Builder;
use super::history::{OldRevision, has_overrides};
use super::label_memo::LabelMemo;
use super::params::RolloutParams;
use super::steps::RolloutOutcome;

/// The status of the final working copy into the plan, and whether it differs from the stored
/// one.
pub(super) fn plan_status(
    b: &mut Builder<'_>,
    params: &RolloutParams,
    old: &[&RevisionView],
    stable_hash: Option<&str>,
    rollout: &RolloutOutcome,
) {
    let input = b.input;
    let set = &input.set;
    let counts = count(&b.state);
    let stored = set.status.as_ref();
    let observed = if input.expectations_satisfied {
        set.generation
    } else {
        None
    };
    let mut status = counts.apply_to(stored, observed);
    let mut changed = stored.is_none_or(|s| !counts.equals(s))
        || (input.expectations_satisfied && generation_lags(set));
    if input.config.rollout_status {
        changed |= rollout_fields(b, params, old, stable_hash, rollout, &counts, &mut status);
    }
    changed |= pods_scheduled(b, &mut status);
    b.plan.status_write = changed.then(|| StatusWrite::classify(stored, &status));
    if params.min_ready > 0 && counts.ready != counts.available {
        b.requeue_within(Duration::from_secs(
            u64::try_from(params.min_ready).unwrap_or(0),
        ));
    }
    if let Some(wait) = next_available(b, params.min_ready) {
        b.requeue_within(wait);
    }
    b.plan.counts = Some(counts);
    b.plan.status = Some(status);
}

/// The `PodsScheduled` condition from the set's pods the scheduler cannot place, into
/// `status` (with a Warning Event when the problem is new or changed); returns whether it
/// changed the status.
fn pods_scheduled(b: &mut Builder<'_>, status: &mut DaemonSetStatus) -> bool {
    let input = b.input;
    let blocked: Vec<UnschedulablePod<'_>> = input
        .pods
        .iter()
        .filter(|p| p.owner() == Owner::ThisSet && !p.deleting())
        .filter_map(|p| {
            Some(UnschedulablePod {
                node: p.target_node.as_deref()?,
                pod: &p.name,
                message: p.unschedulable.as_deref()?,
            })
        })
        .collect();
    let previous = input
        .set
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref());
    let update = scheduling_conditions(previous, &blocked, input.now, input.set.generation);
    if let Some(message) = &update.event {
        b.plan.events.push(PlanEvent {
            reason: EventReason::FailedPlacement,
            message: message.clone(),
        });
    }
    update.apply_to_status(status)
}

/// How long until the next ready pod becomes available (`minReadySeconds` after it turned
/// Ready), plus a second: the counters above see only each node's oldest pod, so a surge pod
/// next to an available old one needs its own wake-up, or its old pod stays until some event.
fn next_available(b: &Builder<'_>, min_ready: i64) -> Option<Duration> {
    if min_ready <= 0 {
        return None;
    }
    let now = b.input.now;
    b.state
        .pods
        .iter()
        .filter(|p| p.ready && !p.available && !p.deleting)
        .filter_map(|p| b.input.pods.get(p.input()?)?.ready_since)
        .filter_map(|since| since.checked_add(SignedDuration::from_secs(min_ready)).ok())
        .map(|at| {
            let until = now.duration_until(at);
            let until = if until.is_negative() {
                Duration::ZERO
            } else {
                until.unsigned_abs()
            };
            until + Duration::from_secs(1)
        })
        .min()
}

/// The stored status speaks for an older generation.
fn generation_lags(set: &SetView) -> bool {
    match (
        set.generation,
        set.status.as_ref().and_then(|s| s.observed_generation),
    ) {
        (Some(g), Some(o)) => o < g,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// everynode's rollout status into `status`; returns whether it differs from the stored one.
fn rollout_fields(
    b: &Builder<'_>,
    params: &RolloutParams,
    old: &[&RevisionView],
    stable_hash: Option<&str>,
    outcome: &RolloutOutcome,
    counts: &StatusCounts,
    status: &mut DaemonSetStatus,
) -> bool {
    let set = &b.input.set;
    let now = b.input.now;
    let stored = set.status.as_ref();
    let mut rollout = rollout_status(b, old, stable_hash);
    rollout.wave = outcome.wave.as_ref().map(|w| everynode_api::RolloutWave {
        domain: w.domain.clone(),
        index: i32::try_from(w.index).unwrap_or(i32::MAX),
        domains: i32::try_from(w.domains).unwrap_or(i32::MAX),
        baked_at: w.baked_at.map(Time),
    });
    rollout.failure = outcome.failure.clone();
    rollout.rollback = b
        .plan
        .rollback
        .as_ref()
        .map(|r| everynode_api::RolloutRollback {
            rolled_back_from: r.from.clone(),
            rollback_of: r.to.clone(),
            reason: r.reason.clone(),
            time: Time(now),
        })
        .or_else(|| stored.and_then(|s| s.rollback.clone()));
    rollout.skipped_nodes = skipped_nodes(b, params.controls.as_ref());
    rollout.gated_nodes = gated_nodes(b);
    rollout.pre_pull = params
        .pre_pull
        .as_ref()
        .map(|_| (b.plan.pre_pull.pulled, b.plan.pre_pull.pulling));
    (rollout.blocked_nodes, rollout.blocked_totals) = blocked_nodes(b, &b.log.blocked_by);
    let mut changed = stored.is_none_or(|s| !rollout.equals(s));
    rollout.apply_to(status);
    let facts = RolloutFacts {
        paused: set.spec.is_paused(),
        frozen: set.spec.is_frozen(),
        complete: rollout.complete(counts.desired),
        held: outcome.held,
        desired: counts.desired,
        updated: counts.updated,
        update_revision: &rollout.update_revision,
        wave: rollout.wave.as_ref(),
        failure: rollout.failure.as_ref(),
        rollback: rollout.rollback.as_ref(),
        aborted: b.aborted.as_deref(),
        skipped: rollout.skipped_nodes.len(),
        template_rejected: b.input.rejected_hash.as_deref() == Some(b.hash.as_str()),
        unavailable: counts.unavailable,
        max_unavailable: params.budget.map_or(0, |b| b.max_unavailable),
    };
    let previous = stored.and_then(|s| s.conditions.as_deref());
    if let Some(conditions) = rollout_conditions(previous, &facts, now, set.generation) {
        status.conditions = Some(conditions);
        changed = true;
    }
    changed
}

/// Desired nodes that still carry the node readiness gate's taint.
fn gated_nodes(b: &Builder<'_>) -> Option<i32> {
    let key = &b.input.set.spec.node_readiness.as_ref()?.taint.key;
    let gated = b
        .state
        .slots
        .iter()
        .filter(|s| s.elig.should_run && crate::gate::tainted(&s.node.taints, key))
        .count();
    Some(i32::try_from(gated).unwrap_or(i32::MAX))
}

/// Desired nodes that `unavailableNodePolicy: Skip` leaves out, sorted, at most
/// [`MAX_LISTED_NODES`].
fn skipped_nodes(b: &Builder<'_>, controls: Option<&Controls>) -> Vec<String> {
    if !controls.is_some_and(|c| c.safety.skip_unavailable_nodes) {
        return Vec::new();
    }
    b.state
        .slots
        .iter()
        .enumerate()
        .filter(|(i, s)| s.elig.should_run && crate::safety::skipped(&b.state, *i))
        .take(MAX_LISTED_NODES)
        .map(|(_, s)| s.node.name.clone())
        .collect()
}

/// Why a node is listed in `status.blockedNodes`; the message is only built for listed nodes.
enum Blocked<'a> {
    Excluded(&'a NodeExcluded),
    Unschedulable(&'a str),
    Trouble(&'a str),
    Deferred(&'a Deferred),
}

impl<'a> Blocked<'a> {
    fn reason(&self) -> &'a str {
        match self {
            Self::Excluded(e) => e.code(),
            Self::Unschedulable(_) => "Unschedulable",
            // `container agent: CrashLoopBackOff` → `CrashLoopBackOff`.
            Self::Trouble(t) => t.rsplit(": ").next().unwrap_or(t),
            Self::Deferred(d) => d.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Excluded(e) => e.to_string(),
            Self::Unschedulable(m) | Self::Trouble(m) => (*m).to_owned(),
            Self::Deferred(d) => d.to_string(),
        }
    }
}

/// Nodes that are excluded or blocked (at most [`MAX_LISTED_NODES`], by name) and the totals
/// per reason: excluded by the template, a pod the scheduler cannot place, a container that
/// cannot run, or a deferral that holds the node (`blocked_by`).
fn blocked_nodes(
    b: &Builder<'_>,
    blocked_by: &[(usize, Deferred)],
) -> (
    Vec<everynode_api::BlockedNode>,
    Vec<everynode_api::ReasonCount>,
) {
    let mut by_slot: Vec<Option<&Deferred>> = vec![None; b.state.slots.len()];
    for (slot, d) in blocked_by {
        if let Some(entry) = by_slot.get_mut(*slot) {
            entry.get_or_insert(d);
        }
    }
    let mut listed = Vec::new();
    let mut totals: BTreeMap<&str, i32> = BTreeMap::new();
    for (i, slot) in b.state.slots.iter().enumerate() {
        let pod = slot
            .pods
            .iter()
            .filter_map(|&p| b.state.pods[p].input())
            .map(|i| &b.input.pods[i])
            .find(|p| !p.deleting());
        let why = if !slot.elig.should_run {
            slot.elig
                .excluded
                .as_deref()
                // Only a taint keeps a node the template selects out; nodes it does not select
                // are not the set's business. A pod that keeps running there (e.g. a NoSchedule
                // taint added later) is not blocked.
                .filter(|e| matches!(e, NodeExcluded::TaintNotTolerated { .. }))
                .filter(|_| !(slot.elig.should_continue_running && pod.is_some()))
                .map(Blocked::Excluded)
        } else if let Some(message) = pod.and_then(|p| p.unschedulable.as_deref()) {
            Some(Blocked::Unschedulable(message))
        } else if let Some(trouble) = pod.and_then(|p| p.trouble.as_deref()) {
            Some(Blocked::Trouble(trouble))
        } else {
            by_slot[i].map(Blocked::Deferred)
        };
        let Some(why) = why else {
            continue;
        };
        if listed.len() < MAX_LISTED_NODES {
            listed.push(everynode_api::BlockedNode {
                node: slot.node.name.clone(),
                reason: why.reason().to_owned(),
                message: why.message(),
            });
        }
        *totals.entry(why.reason()).or_default() += 1;
    }
    let totals = totals
        .into_iter()
        .map(|(reason, count)| everynode_api::ReasonCount {
            reason: reason.to_owned(),
            count,
        })
        .collect();
    (listed, totals)
}

/// The number and name of the revision whose pods carry `hash`: the update revision (or one of
/// its node overrides), an old revision (or one of its node overrides), else a revision of that
/// hash that is gone (number 0).
fn revision_of_hash(b: &Builder<'_>, old: &[&RevisionView], hash: &str) -> (i64, String) {
    let history = &b.plan.history;
    if hash == b.hash || b.variants.has_hash(hash) {
        return (history.current_revision, history.current.clone());
    }
    let set = &b.input.set;
    let found = old.iter().find(|r| rev_hash(r) == hash).or_else(|| {
        old.iter()
            .filter(|r| {
                has_overrides(r)
                    && OldRevision::read(r, set.collision_count())
                        .is_some_and(|read| read.variants.has_hash(hash))
            })
            .max_by_key(|r| r.revision)
    });
    match found {
        Some(rev) => (rev.revision, rev.name.clone()),
        None => (0, revision_name(&set.name, hash)),
    }
}

/// everynode's rollout status of the final working state: the desired nodes' first pods
/// counted per revision.
fn rollout_status(
    b: &Builder<'_>,
    old: &[&RevisionView],
    stable_hash: Option<&str>,
) -> RolloutStatus {
    let set = &b.input.set;
    // (hash, pods, available); few distinct hashes.
    let mut per_hash: Vec<(&str, i32, i32)> = Vec::new();
    let mut hashes = LabelMemo::new();
    let mut desired = 0;
    for slot in b.state.slots.iter().filter(|s| s.elig.should_run) {
        desired += 1;
        let Some(&first) = slot.pods.first() else {
            continue;
        };
        let pod = &b.state.pods[first];
        let hash = if pod.current {
            Some(b.hash.as_str())
        } else if let Some(i) = pod.input() {
            hashes.get(&b.input.pods[i].labels, |labels| {
                strs::label(labels, CONTROLLER_REVISION_HASH).map(String::as_str)
            })
        } else {
            stable_hash
        };
        let Some(hash) = hash else { continue };
        match per_hash.iter_mut().find(|(h, _, _)| strs::eq(h, hash)) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += i32::from(pod.available);
            }
            None => per_hash.push((hash, 1, i32::from(pod.available))),
        }
    }
    let per = per_hash
        .into_iter()
        .map(|(hash, pods, available)| {
            let (number, revision) = revision_of_hash(b, old, hash);
            (
                number,
                RevisionPods {
                    revision,
                    pods,
                    available,
                },
            )
        })
        .collect();
    let stored_stable = set
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.as_deref());
    RolloutStatus::compute(&b.plan.history.current, desired, per, stored_stable)
}
