//! Wiring: the caches of every replica ([`crate::caches`]) and, once this replica leads, the
//! kube-rs `Controller` that reconciles sets when any of them changes, with its error policy.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, future};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};

use crate::caches::{Caches, mark_ready_when_synced, until_ready};
use crate::context::{Context, ControllerConfig};
use crate::error::{Error, ErrorCategory};
use crate::expectations::Expectations;
use crate::http::Readiness;
use crate::key::{key_of, set_key};
use crate::metrics::{Metrics, Outcome, SetLabels};
use crate::pacing::{self, OwnWrites, Start};
use crate::reconcile::{outstanding_writes, reconcile};
use crate::target::{SetResource, Target};
use crate::triggers::{QueueDepth, Triggers};

/// Runs the controller until `shutdown` resolves: starts the watches at once (readiness is set
/// when every cache has synced), and reconciles — writes anything — only after `leading`
/// resolves.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    leading: impl Future<Output = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    match config.target {
        Target::Everynode => {
            run_target::<everynode_api::DaemonSet>(
                client, config, metrics, readiness, leading, shutdown,
            )
            .await;
        }
        Target::AppsV1 => {
            run_target::<k8s_openapi::api::apps::v1::DaemonSet>(
                client, config, metrics, readiness, leading, shutdown,
            )
            .await;
        }
    }
}

async fn run_target<K: SetResource>(
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    leading: impl Future<Output = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let queue = Arc::new(QueueDepth::new(metrics.queue_depth.clone()));
    let triggers = Arc::new(Triggers::<K>::new(queue.clone()));
    let expectations = Arc::new(Expectations::default());
    let caches = Caches::<K>::start(
        &client,
        &config,
        &triggers,
        &readiness,
        &metrics,
        &expectations,
    );
    tokio::spawn(mark_ready_when_synced(
        caches.sets.clone(),
        caches.pods.clone(),
        caches.nodes.clone(),
        caches.revisions.clone(),
        readiness,
    ));

    tokio::select! {
        () = leading => {}
        () = shutdown.clone() => return,
    }
    metrics.observe_leading(true);
    tracing::info!(target = ?config.target, "reconciling");

    let reporter = Reporter {
        controller: "everynode".into(),
        instance: config.instance.clone(),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        pods: caches.pods.clone(),
        pod_index: caches.pod_index.clone(),
        nodes: caches.nodes.clone(),
        node_views: Default::default(),
        pod_views: Default::default(),
        revisions: caches.revisions.clone(),
        recorder: Recorder::new(client, reporter),
        pod_write_windows: Default::default(),
        metrics: metrics.clone(),
        expectations,
        backoff: Default::default(),
        status_pacer: pacing::status_progress(),
        reconcile_pacer: pacing::reconciles(),
        slow_starts: Default::default(),
        failures: Default::default(),
        template_verdicts: Default::default(),
        pre_pull_refusals: Default::default(),
        queue,
        started: config.server_clock.now(),
        config: config.clone(),
        gate_keys: Default::default(),
        everynode_sets: (&caches.sets as &dyn std::any::Any)
            .downcast_ref::<kube::runtime::reflector::Store<everynode_api::DaemonSet>>()
            .cloned(),
    });
    tokio::spawn(collect_expired_backoff(context.clone()));

    // Every set once (the caches may have been warm for a long time), then every change.
    let requests = triggers.open();
    if until_ready(&caches.sets).await.is_ok() {
        for set in caches.sets.state() {
            triggers.send(ObjectRef::from_obj(set.as_ref()));
        }
    }

    let ctx_for_cleanup = context.clone();
    Controller::for_stream(
        futures::stream::pending::<Result<K, watcher::Error>>(),
        caches.sets.clone(),
    )
    .reconcile_on(requests)
    .with_config(controller::Config::default().concurrency(config.workers))
    .graceful_shutdown_on(shutdown)
    .run(reconcile_measured::<K>, error_policy::<K>, context)
    .for_each(|result| {
        match result {
            Ok((set, _)) => tracing::trace!(set = %set, "reconciled"),
            Err(controller::Error::ObjectNotFound(set)) => {
                // The set is gone: drop what the controller kept about it.
                tracing::debug!(set = %set, "set gone");
                let namespace = set.namespace.clone().unwrap_or_default();
                let key = set_key(&namespace, &set.name);
                ctx_for_cleanup.queue.started(&key);
                ctx_for_cleanup.expectations.forget(&key);
                ctx_for_cleanup.template_verdicts.forget(&key);
                ctx_for_cleanup.pre_pull_refusals.forget(&key);
                ctx_for_cleanup.pod_views.forget(&key);
                ctx_for_cleanup.slow_starts.forget(&key);
                if let Some(taint_key) = ctx_for_cleanup.gate_keys.register(&key, None) {
                    // Its gate goes with it: the nodes that waited only for it are let go.
                    let ctx = ctx_for_cleanup.clone();
                    tokio::spawn(async move {
                        crate::gate::sync(&ctx, &taint_key, ctx.config.server_clock.now()).await;
                    });
                }
                ctx_for_cleanup
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                ctx_for_cleanup.metrics.forget_set(&SetLabels {
                    target: ctx_for_cleanup.config.target.into(),
                    namespace,
                    name: set.name,
                });
            }
            // error_policy logged it already.
            Err(err) => tracing::debug!(error = %err, "reconcile failed"),
        }
        future::ready(())
    })
    .await;
    metrics.observe_leading(false);
}

async fn reconcile_measured<K: SetResource>(
    set: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = key_of(set.as_ref());
    match start(&ctx, set.as_ref(), &key) {
        Start::Now => {}
        // Events that arrive while this waits are seen by this reconcile's snapshot.
        Start::After(wait) => tokio::time::sleep(wait).await,
        Start::Deferred(wait) => {
            ctx.queue.started(&key);
            ctx.metrics.observe_deferred();
            return Ok(Action::requeue(wait));
        }
    }
    ctx.queue.started(&key);
    let started = std::time::Instant::now();
    ctx.reconcile_pacer.went(&key, started);
    let result = reconcile(set, ctx.clone()).await;
    let outcome = if result.is_ok() {
        Outcome::ok
    } else {
        Outcome::error
    };
    ctx.metrics.observe_reconcile(outcome, started.elapsed());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
    result
}

/// When the reconcile of `set` starts ([`pacing::start`]).
fn start<K: SetResource>(ctx: &Context, set: &K, key: &str) -> Start {
    let now = std::time::Instant::now();
    let own_writes = if !ctx.expectations.has_pending(key) {
        OwnWrites::Settled
    } else if awaits_own_writes(ctx, set, key) {
        OwnWrites::Awaited
    } else {
        OwnWrites::Shown
    };
    pacing::start(
        own_writes,
        ctx.reconcile_pacer.wait(key, now),
        ctx.status_pacer.wait(key, now),
        set.observed_generation() != set.meta().generation,
    )
}

/// Whether the caches do not yet show every pod write recorded for the set.
fn awaits_own_writes<K: SetResource>(ctx: &Context, set: &K, key: &str) -> bool {
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.meta().uid.as_deref().unwrap_or_default();
    outstanding_writes(ctx, key, &namespace, uid) > 0
}

/// Drops failed-pod backoff entries idle for longer than twice the maximum delay, every minute
/// (upstream's backoff GC).
async fn collect_expired_backoff(ctx: Arc<Context>) {
    let config = everynode_core::PlanConfig::default().backoff;
    let mut every_minute = tokio::time::interval(Duration::from_secs(60));
    loop {
        every_minute.tick().await;
        let now = ctx.config.server_clock.now();
        ctx.backoff.retain(|entry| !entry.is_expired(now, &config));
    }
}

/// Per-set exponential backoff on errors: 1 s doubling up to 5 minutes, each stretched by a
/// random 1 to 1.5 so that sets failing together (an outage) do not retry in lock-step;
/// conflicts retry fast.
fn error_policy<K: SetResource>(set: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(set.as_ref());
    ctx.metrics.observe_error(err.category().as_str());
    if err.category() == ErrorCategory::Conflict {
        // Someone changed the set or a pod meanwhile: routine, retried at once.
        tracing::debug!(set = %key, error = %err, "reconcile conflict; retrying");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(set = %key, error = %err, "reconcile error");
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures.entry(key).or_insert(0);
    *count = count.saturating_add(1);
    Action::requeue(error_backoff(*count, fastrand::f64()))
}

/// The delay after the `failures`-th error in a row, `jitter` in `[0, 1)`.
fn error_backoff(failures: u32, jitter: f64) -> Duration {
    let seconds = 2u64
        .saturating_pow(failures.saturating_sub(1).min(9))
        .min(300);
    Duration::from_secs(seconds).mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_to_five_minutes_and_spreads_by_half() {
        assert_eq!(error_backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(error_backoff(4, 0.0), Duration::from_secs(8));
        assert_eq!(error_backoff(20, 0.0), Duration::from_secs(300));
        assert_eq!(
            error_backoff(4, 0.999_999),
            Duration::from_secs(8).mul_f64(1.4999995)
        );
        assert!(error_backoff(20, 1.0) <= Duration::from_secs(450));
    }
}
