//! One reconcile: caches → snapshot → `everynode_core::plan` → writes → status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use everynode_core::{Plan, PlanInput, SetView, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{Instrument, info_span};

use crate::apply::{apply_plan, roll_back, write_status};
use crate::caches::until_ready;
use crate::context::Context;
use crate::error::Error;
use crate::events::publish;
use crate::expectations::CachedPod;
use crate::key::set_key;
use crate::metrics::{SetLabels, SetSeries};
use crate::problems::Problems;
use crate::target::SetResource;
use crate::template_verdicts;

/// Safety net: every set is planned at least this often, even without events (a relist after
/// a watch outage reports no deletions).
pub const RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// How long to wait for the caches before giving up on a reconcile (it is retried).
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(2);

/// Reconciles one set.
pub async fn reconcile<K: SetResource>(set: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let span = info_span!("reconcile", set.namespace = %namespace, set.name = %name);
    reconcile_set(set, ctx).instrument(span).await
}

async fn reconcile_set<K: SetResource>(set: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Never plan on a partial cache: an empty node cache would delete every pod.
    if !caches_synced(&ctx).await {
        tracing::debug!("caches not synced yet");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let view = set.view()?;
    if let Some(evidence) = built_in_at_work(&ctx, set.as_ref(), &view) {
        return stand_aside(&ctx, set.as_ref(), &view, &evidence).await;
    }
    let mut planned = plan_set::<K>(&ctx, view.clone()).await;
    let status_held_for = carry_out(&ctx, set.as_ref(), view, &mut planned).await?;

    let Planned { input, plan, .. } = planned;
    let gate_recheck = sync_gate(&ctx, &input).await;
    if let Some(status) = &plan.status {
        ctx.metrics.observe_set(
            &set_labels(&ctx, &input.set.namespace, &input.set.name),
            &SetSeries::of(status, set.meta().generation),
        );
    }
    let requeue = [plan.requeue_after, status_held_for, gate_recheck]
        .into_iter()
        .flatten()
        .fold(RESYNC_PERIOD, Duration::min);
    Ok(Action::requeue(requeue))
}

/// Registers the set's node readiness gate (or its absence) and syncs the gates it touches;
/// returns when to look again.
async fn sync_gate(ctx: &Context, input: &PlanInput) -> Option<Duration> {
    let key = set_key(&input.set.namespace, &input.set.name);
    let now_key = input
        .set
        .spec
        .node_readiness
        .as_ref()
        .map(|g| g.taint.key.clone());
    let dropped = ctx.gate_keys.register(&key, now_key.as_deref());
    let mut recheck = None;
    for taint_key in now_key.into_iter().chain(dropped) {
        if let Some(wait) = crate::gate::sync(ctx, &taint_key, input.now).await {
            recheck = Some(recheck.map_or(wait, |r: Duration| r.min(wait)));
        }
    }
    recheck
}

/// The labels of a set's metric series.
fn set_labels(ctx: &Context, namespace: &str, name: &str) -> SetLabels {
    SetLabels {
        target: ctx.config.target.into(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// Whether the pod, node and revision caches have synced (waiting up to [`CACHE_SYNC_WAIT`]).
async fn caches_synced(ctx: &Context) -> bool {
    tokio::time::timeout(CACHE_SYNC_WAIT, async {
        until_ready(&ctx.pods).await.is_ok()
            && until_ready(&ctx.nodes).await.is_ok()
            && until_ready(&ctx.revisions).await.is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A plan and what it was made from.
struct Planned {
    input: PlanInput,
    plan: Plan,
    /// The apiserver refuses pods of the update revision's template.
    rejection: Option<template_verdicts::Rejection>,
}

/// Plans the set from the caches: pod writes only once the caches show earlier ones, and none
/// of a template the apiserver refuses.
async fn plan_set<K: SetResource>(ctx: &Context, view: SetView) -> Planned {
    let key = set_key(&view.namespace, &view.name);
    let outstanding = outstanding_writes(ctx, &key, &view.namespace, &view.uid);
    let mut input = snapshot(ctx, view, outstanding == 0, K::ROLLOUT_STATUS);
    let mut plan = everynode_core::plan(&input);
    // A template the apiserver refuses starts no rollout: plan again holding its pods.
    let rejection =
        template_verdicts::rejection::<K>(&ctx.template_verdicts, &ctx.client, &input, &plan).await;
    if let Some(rejection) = &rejection {
        tracing::warn!(hash = %rejection.hash, refused = %rejection.message, "template refused by the apiserver");
        input.rejected_hash = Some(rejection.hash.clone());
        plan = everynode_core::plan(&input);
    }
    for problem in &plan.errors {
        tracing::warn!(%problem, "plan incomplete");
    }
    if outstanding > 0 {
        // The event that shows the last of them reconciles at once (`reconcile_measured`).
        tracing::debug!(outstanding, "waiting for the caches to show earlier writes");
    } else if !plan.is_noop() {
        tracing::info!(
            creates = plan.creates.len(),
            deletes = plan.deletes.len(),
            "carrying out plan"
        );
    }
    Planned {
        input,
        plan,
        rejection,
    }
}

/// Carries the plan out: the rollback first (when one is planned), then every other write,
/// none stopped by another's failure; the status and problem conditions record what happened.
/// `Ok(Some(wait))`: a progress-only status write was held back.
async fn carry_out<K: SetResource>(
    ctx: &Context,
    set: &K,
    view: SetView,
    planned: &mut Planned,
) -> Result<Option<Duration>, Error> {
    let Planned {
        input,
        plan,
        rejection,
    } = planned;
    let mut failures = Vec::new();
    if let Some(rollback) = &plan.rollback {
        // Only the rollback and the status that records it: the next plan (from the new
        // generation) replaces the failed pods. A refused rollback stops nothing else.
        match roll_back(ctx, set, rollback).await {
            Ok(rolled_back) => {
                ctx.metrics.observe_rollback(&set_labels(
                    ctx,
                    &input.set.namespace,
                    &input.set.name,
                ));
                tracing::warn!(from = %rollback.from, to = %rollback.to, reason = %rollback.reason, "rolled back");
                publish(
                    &ctx.recorder,
                    set,
                    EventType::Warning,
                    "RolledBack",
                    "Rollback",
                    format!(
                        "rolled back from {} to {}: {}",
                        rollback.from, rollback.to, rollback.reason
                    ),
                );
                write_status(ctx, &rolled_back, plan).await?;
                return Ok(Some(Duration::from_secs(1)));
            }
            Err(err) => {
                tracing::warn!(error = %err, "automatic rollback failed; the rest of the plan goes on");
                failures.push(err);
            }
        }
    }

    let problems = Problems::assess(ctx, &view, rejection.as_ref(), &failures, None, input.now);
    problems.apply_to(plan, view.status.as_ref());
    match apply_plan(ctx, set, input, plan).await {
        Ok(held_for) => {
            problems.publish(ctx, set);
            match failures.into_iter().next() {
                Some(err) => Err(err),
                None => Ok(held_for),
            }
        }
        Err(errors) => {
            failures.extend(errors);
            write_observed_status(ctx, set, view, rejection.as_ref(), &failures).await;
            Err(failures.remove(0))
        }
    }
}

/// With `--target apps/v1`: the built-in controller's latest write to the set or its pods
/// within the quiet period ([`crate::builtin`]).
fn built_in_at_work<K: SetResource>(
    ctx: &Context,
    set: &K,
    view: &SetView,
) -> Option<(String, Timestamp)> {
    if K::api_version(&()) != "apps/v1" {
        return None;
    }
    // Only the pods it wrote: the index keeps them apart (reading 5,000 pods' managed fields
    // on every reconcile was 4 % of the controller's CPU at 5,000 nodes).
    let written = ctx.pod_index.written_by_built_in(&view.uid);
    crate::builtin::recent_write(
        set.meta(),
        written.iter().map(AsRef::as_ref),
        ctx.started,
        ctx.config.server_clock.now(),
        ctx.config.builtin_quiet_period,
    )
}

/// The built-in controller is at work on the set: write none of its pods, only the condition
/// that says so (and its Event); look again in a while.
async fn stand_aside<K: SetResource>(
    ctx: &Context,
    set: &K,
    view: &SetView,
    evidence: &(String, Timestamp),
) -> Result<Action, Error> {
    tracing::warn!(evidence = %evidence.0, "the built-in DaemonSet controller writes this set; standing aside");
    let now = ctx.config.server_clock.now();
    let mut plan = everynode_core::Plan {
        status: view.status.clone(),
        ..everynode_core::Plan::default()
    };
    let problems = Problems::assess(ctx, view, None, &[], Some(evidence), now);
    problems.apply_to(&mut plan, view.status.as_ref());
    problems.publish(ctx, set);
    write_status(ctx, set, &plan).await?;
    Ok(Action::requeue(
        (ctx.config.builtin_quiet_period / 6).max(Duration::from_secs(1)),
    ))
}

/// After failed writes the planned status (which counts every planned write as done) is wrong:
/// writes the status the caches show instead, as upstream does, with the failures recorded.
async fn write_observed_status<K: SetResource>(
    ctx: &Context,
    set: &K,
    view: SetView,
    rejection: Option<&template_verdicts::Rejection>,
    failures: &[Error],
) {
    let input = snapshot(ctx, view.clone(), false, K::ROLLOUT_STATUS);
    let mut observed = everynode_core::plan(&input);
    // A full sync was attempted, so the status speaks for this generation (upstream too). Its
    // events are not published: they are the failed plan's, which went out already.
    observed.observe_generation(view.generation, view.status.as_ref());
    let problems = Problems::assess(ctx, &view, rejection, failures, None, input.now);
    problems.apply_to(&mut observed, view.status.as_ref());
    problems.publish(ctx, set);
    if let Err(status_err) = write_status(ctx, set, &observed).await {
        tracing::debug!(error = %status_err, "writing the observed status failed too");
    }
}

/// How many of the set's recorded pod writes its caches do not show yet (forgetting those they
/// show, and those recorded for an earlier set of its name).
pub fn outstanding_writes(ctx: &Context, key: &str, namespace: &str, set_uid: &str) -> usize {
    ctx.expectations.claim(key, set_uid);
    let cached = |name: &str| ctx.pod_of(namespace, set_uid, name);
    ctx.expectations.outstanding(
        key,
        Instant::now(),
        |name| cached_state(cached(name).as_deref()),
        |name, uid| {
            let pod = cached(name);
            cached_state(
                pod.as_deref()
                    .filter(|p| p.metadata.uid.as_deref() == Some(uid)),
            )
        },
        |name, hash| {
            cached(name).is_none_or(|pod| {
                pod.labels()
                    .get(everynode_api::labels::CONTROLLER_REVISION_HASH)
                    .is_some_and(|h| h == hash)
            })
        },
    )
}

/// What the set's plan sees of a pod: the pod index, not the store (see
/// [`crate::pod_index::PodIndex::pod_of`]).
fn cached_state(pod: Option<&Pod>) -> CachedPod {
    match pod {
        None => CachedPod::Absent,
        Some(pod) if pod.metadata.deletion_timestamp.is_some() => CachedPod::Terminating,
        Some(_) => CachedPod::Present,
    }
}

/// Builds the planner's input from the caches (`rollout_status`: see
/// [`SetResource::ROLLOUT_STATUS`]).
fn snapshot(
    ctx: &Context,
    set: SetView,
    expectations_satisfied: bool,
    rollout_status: bool,
) -> PlanInput {
    let backoff_generation = set
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    let backoff = ctx.backoff.for_set(&set.uid, backoff_generation);
    let key = set_key(&set.namespace, &set.name);
    let pods = ctx
        .pod_index
        .with_pods_of(&set.namespace, &set.uid, |pods| {
            ctx.pod_views.of(&key, &set, pods)
        });
    let nodes = ctx.node_views.of(&ctx.nodes.state());
    let revisions = ctx.revisions.state();
    let mut input = PlanInput::from_views(
        set,
        nodes,
        pods,
        revisions.iter().map(AsRef::as_ref),
        ctx.config.server_clock.now(),
    );
    input.backoff = backoff;
    input.pre_pull_refused = ctx.pre_pull_refusals.of(&key, &input.set.uid);
    input.expectations_satisfied = expectations_satisfied;
    input.name_seed = fresh_name_seed();
    // Per-node decisions are for the CLI's explain; the controller does not read them.
    input.config.explain = false;
    input.config.rollout_status = rollout_status;
    input
}

/// A seed for the names of the pods one plan creates: random per process (the standard
/// library's hasher keys) and new for every call.
fn fresh_name_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
