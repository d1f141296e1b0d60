//! Pacing (`minSecondsBetweenBatches`, `maxNodesPerMinute`), recorded by the pods' creation
//! times so a restarted controller keeps pace.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::reason::Deferred;
use crate::state::State;

use super::classify::Classification;
use super::{RolloutCtx, compare_nodes, defer_on};

/// Pacing: no new update starts within `minSecondsBetweenBatches` of the newest pod of the
/// current revision, and no more than `maxNodesPerMinute` pods of it created in the last 60
/// seconds (the pods' creation times are the record, so a restarted controller keeps pace).
/// Replacements of unavailable old pods are repairs and not paced.
pub(super) fn pace(
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
