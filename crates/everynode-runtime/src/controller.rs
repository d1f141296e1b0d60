//! Wiring: one watch per kind (sets, Pods, Nodes, ControllerRevisions) feeding reflector stores
//! on every replica, so a standby's caches are warm when it takes over; and, once this replica
//! leads, the kube-rs `Controller` that reconciles sets when any of them changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use everynode_core::selector::Selector;
use futures::{FutureExt, Stream, StreamExt, future};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::task::JoinHandle;

use crate::context::{Context, ControllerConfig};
use crate::error::{Error, ErrorCategory};
use crate::expectations::Expectations;
use crate::http::Readiness;
use crate::key::{key_of, set_key};
use crate::metrics::{Metrics, Outcome, SetLabels};
use crate::pacing::{self, Pacer};
use crate::reconcile::reconcile;
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

/// The caches every replica keeps, and the tasks that fill them.
struct Caches<K: SetResource> {
    sets: Store<K>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    /// Aborted on drop: the watches end with the controller.
    tasks: Vec<JoinHandle<()>>,
}

impl<K: SetResource> Drop for Caches<K> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<K: SetResource> Caches<K> {
    /// Starts one watch per kind. Each change is turned into reconcile requests for the sets it
    /// concerns and handed to `triggers` (which drops them until this replica leads).
    fn start(
        client: &Client,
        config: &ControllerConfig,
        triggers: &Arc<Triggers<K>>,
        readiness: &Arc<Readiness>,
        metrics: &Arc<Metrics>,
        expectations: &Arc<Expectations>,
    ) -> Self {
        let namespace = config.namespace.as_deref();
        let watch_config = watcher::Config::default().any_semantic();
        // Pods are listed with a consistent read: a replica that starts (or relists) after
        // another one created pods sees every one of them, so it creates no duplicate.
        let pod_watch_config = watcher::Config::default();

        // Sets and pods keep the built-in controller's managed-fields entries (its writes are
        // how it is noticed beside `--target apps/v1`); everything else keeps none.
        let builtin = crate::builtin::keep_entry;
        let (sets, set_events) =
            cached_watch(scoped::<K>(client, namespace), &watch_config, builtin);
        let (pods, pod_events) =
            cached_watch(scoped::<Pod>(client, namespace), &pod_watch_config, builtin);
        let (revisions, revision_events) = cached_watch(
            scoped::<ControllerRevision>(client, namespace),
            &watch_config,
            |_| false,
        );
        let (nodes, node_events) =
            cached_watch(Api::<Node>::all(client.clone()), &watch_config, |_| false);
        // /readyz fails while a watch fails (the watcher backs off and resumes by itself).
        let set_events = set_events.inspect(watch_health("daemonsets", readiness, metrics));
        let pod_events = pod_events
            .inspect(watch_health("pods", readiness, metrics))
            .inspect(created_pods_seen::<K>(expectations));
        let revision_events =
            revision_events.inspect(watch_health("controllerrevisions", readiness, metrics));
        let node_events = node_events.inspect(watch_health("nodes", readiness, metrics));

        let every_set = {
            let sets = sets.clone();
            move |_: Node| all_sets(&sets)
        };
        let tasks = vec![
            forward(
                "daemonsets",
                set_events.touched_objects(),
                |set: K| vec![ObjectRef::from_obj(&set)],
                triggers,
            ),
            forward(
                "pods",
                pod_events.filter_map(touched_or_relisted),
                owners_or_all::<K, Pod>(&sets),
                triggers,
            ),
            forward(
                "controllerrevisions",
                revision_events.filter_map(touched_or_relisted),
                owners_or_all::<K, ControllerRevision>(&sets),
                triggers,
            ),
            forward(
                "nodes",
                node_events.filter_map(placement_changes()),
                every_set,
                triggers,
            ),
        ];
        Self {
            sets,
            pods,
            nodes,
            revisions,
            tasks,
        }
    }
}

/// A watch of `api` feeding a new store, with managedFields stripped but the entries `keep`
/// accepts; the returned stream yields the watch events after the store has applied them.
fn cached_watch<T>(
    api: Api<T>,
    config: &watcher::Config,
    keep: fn(&ManagedFieldsEntry) -> bool,
) -> (
    Store<T>,
    impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
)
where
    T: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    T::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<T>();
    let events = watcher(api, config.clone())
        .default_backoff()
        .modify(move |obj| obj.managed_fields_mut().retain(keep))
        .reflect(writer);
    (store, events)
}

/// Reports each watch event's outcome to `readiness`, and each failure (after which the
/// watcher backs off and restarts) to `metrics`.
fn watch_health<E>(
    kind: &'static str,
    readiness: &Arc<Readiness>,
    metrics: &Arc<Metrics>,
) -> impl FnMut(&Result<E, watcher::Error>) + Send + 'static {
    let readiness = readiness.clone();
    let metrics = metrics.clone();
    move |event| {
        readiness.watch_healthy(kind, event.is_ok());
        if event.is_err() {
            metrics.observe_watch_restart(kind);
        }
    }
}

/// Tells `expectations` about every pod of a set of the target kind the watch shows, so a
/// created pod counts as seen even when it is gone again by the next plan.
fn created_pods_seen<K: SetResource>(
    expectations: &Arc<Expectations>,
) -> impl FnMut(&Result<watcher::Event<Pod>, watcher::Error>) + Send + 'static {
    let expectations = expectations.clone();
    move |event| {
        if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event
            && let Some(owner) = pod
                .owner_references()
                .iter()
                .find(|r| r.controller == Some(true) && r.kind == K::kind(&()))
        {
            let key = set_key(&pod.namespace().unwrap_or_default(), &owner.name);
            expectations.observed_create(&key, &pod.name_any());
        }
    }
}

/// What a pod or revision watch event asks for.
#[derive(Debug, PartialEq)]
enum Touched<T> {
    /// This object was added, changed or deleted.
    Object(T),
    /// The watch listed everything again: objects deleted meanwhile are gone from the cache
    /// without an event of their own, so every set is looked at.
    Relisted,
}

/// Maps watch events to [`Touched`] (list markers other than the end of a list give nothing).
fn touched_or_relisted<T>(
    event: Result<watcher::Event<T>, watcher::Error>,
) -> future::Ready<Option<Result<Touched<T>, watcher::Error>>> {
    future::ready(match event {
        Ok(
            watcher::Event::Apply(obj)
            | watcher::Event::Delete(obj)
            | watcher::Event::InitApply(obj),
        ) => Some(Ok(Touched::Object(obj))),
        Ok(watcher::Event::InitDone) => Some(Ok(Touched::Relisted)),
        Ok(watcher::Event::Init) => None,
        Err(err) => Some(Err(err)),
    })
}

/// Maps a touched pod or revision to the sets it concerns ([`owners_of`]), and a relist to
/// every set.
fn owners_or_all<K: SetResource, O: Resource>(
    sets: &Store<K>,
) -> impl Fn(Touched<O>) -> Vec<ObjectRef<K>> + Send + 'static {
    let sets = sets.clone();
    move |touched| match touched {
        Touched::Object(obj) => owners_of(&sets, &obj),
        Touched::Relisted => all_sets(&sets),
    }
}

fn all_sets<K: SetResource>(sets: &Store<K>) -> Vec<ObjectRef<K>> {
    sets.state()
        .iter()
        .map(|set| ObjectRef::from_obj(set.as_ref()))
        .collect()
}

/// Polls one watch for ever (keeping its store current) and hands the sets each change concerns
/// to `triggers`.
fn forward<T, K>(
    kind: &'static str,
    events: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    sets_of: impl Fn(T) -> Vec<ObjectRef<K>> + Send + 'static,
    triggers: &Arc<Triggers<K>>,
) -> JoinHandle<()>
where
    T: Send + 'static,
    K: SetResource,
{
    let triggers = triggers.clone();
    tokio::spawn(events.for_each(move |event| {
        match event {
            Ok(obj) => sets_of(obj).into_iter().for_each(|set| triggers.send(set)),
            // The watcher backs off and resumes by itself.
            Err(err) => tracing::warn!(kind, error = %err, "watch failed; retrying"),
        }
        future::ready(())
    }))
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
        nodes: caches.nodes.clone(),
        revisions: caches.revisions.clone(),
        recorder: Recorder::new(client, reporter),
        pod_write_windows: Default::default(),
        metrics: metrics.clone(),
        expectations,
        backoff: Default::default(),
        status_pacer: Pacer::new(pacing::STATUS_INTERVAL),
        reconcile_pacer: Pacer::new(pacing::RECONCILE_INTERVAL),
        failures: Default::default(),
        template_verdicts: Default::default(),
        queue,
        started: config.server_clock.now(),
        config: config.clone(),
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

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn reconcile_measured<K: SetResource>(
    set: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = key_of(set.as_ref());
    // Events that arrive while this waits are seen by this reconcile's snapshot.
    if let Some(wait) = ctx.reconcile_pacer.wait(&key, std::time::Instant::now()) {
        tokio::time::sleep(wait).await;
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

/// The sets a pod or revision concerns: its controller if that is a set of the target kind, or —
/// for an orphan — every set in its namespace whose selector matches its labels.
fn owners_of<K: SetResource, O: Resource>(sets: &Store<K>, obj: &O) -> Vec<ObjectRef<K>> {
    let namespace = obj.namespace().unwrap_or_default();
    if let Some(owner) = obj
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    {
        if owner.kind == K::kind(&()) && owner.api_version == K::api_version(&()) {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    let labels = obj.labels();
    sets.state()
        .iter()
        .filter(|set| set.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|set| {
            set.selector().is_some_and(|selector| {
                Selector::compile(selector).is_ok_and(|s| !s.is_empty() && s.matches(labels))
            })
        })
        .map(|set| ObjectRef::from_obj(set.as_ref()))
        .collect()
}

/// The node fields placement depends on (labels and taints), hashed. Heartbeats and status
/// updates do not change it.
fn placement_fingerprint(node: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.labels().hash(&mut hasher);
    if let Some(spec) = &node.spec {
        spec.unschedulable.hash(&mut hasher);
        for taint in spec.taints.iter().flatten() {
            (&taint.key, &taint.value, &taint.effect).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// Passes node events that can change placement — new nodes, label or taint changes, deletions —
/// and drops the rest (heartbeats and status updates).
/// A node watch event, and what the trigger stream makes of it.
type NodeEvent = Result<watcher::Event<Node>, watcher::Error>;
type NodeTrigger = future::Ready<Option<Result<Node, watcher::Error>>>;

fn placement_changes() -> impl FnMut(NodeEvent) -> NodeTrigger {
    let mut seen: HashMap<String, u64> = HashMap::new();
    move |event| {
        future::ready(match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                let fingerprint = placement_fingerprint(&node);
                let changed = seen.insert(node.name_any(), fingerprint) != Some(fingerprint);
                changed.then_some(Ok(node))
            }
            Ok(watcher::Event::Delete(node)) => {
                seen.remove(&node.name_any());
                Some(Ok(node))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(err) => Some(Err(err)),
        })
    }
}

/// Sets readiness once every cache has synced.
async fn mark_ready_when_synced<K: SetResource>(
    sets: Store<K>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    readiness: Arc<Readiness>,
) {
    let synced = async {
        until_ready(&sets).await?;
        until_ready(&pods).await?;
        until_ready(&nodes).await?;
        until_ready(&revisions).await
    };
    match synced.await {
        Ok(()) => {
            tracing::info!("caches synced");
            readiness.set(true);
        }
        Err(err) => tracing::error!(error = %err, "a cache stopped before it synced"),
    }
}

/// Waits for a store to be ready. kube-runtime's readiness future wakes only the task that polled
/// it last, so with several waiters (this task and the reconciles) it is polled again every
/// 200 ms rather than awaited once.
pub(crate) async fn until_ready<K>(store: &Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await
        {
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

    fn node(name: &str, zone: &str, taint: Option<&str>, heartbeat: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("zone".to_owned(), zone.to_owned())].into()),
                resource_version: Some(heartbeat.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|key| {
                    vec![Taint {
                        key: key.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus::default()),
        }
    }

    #[test]
    fn a_relist_of_pods_or_revisions_touches_every_set() {
        let decode = |event| {
            touched_or_relisted::<Pod>(Ok(event))
                .now_or_never()
                .flatten()
        };
        let pod = Pod::default();
        assert!(matches!(
            decode(watcher::Event::Delete(pod.clone())),
            Some(Ok(Touched::Object(_)))
        ));
        assert!(matches!(
            decode(watcher::Event::InitApply(pod)),
            Some(Ok(Touched::Object(_)))
        ));
        assert!(decode(watcher::Event::Init).is_none());
        // Pods deleted while the watch relisted have no event: every set gets a look instead.
        assert!(matches!(
            decode(watcher::Event::InitDone),
            Some(Ok(Touched::Relisted))
        ));
    }

    fn passes(
        filter: &mut impl FnMut(NodeEvent) -> NodeTrigger,
        event: watcher::Event<Node>,
    ) -> bool {
        filter(Ok(event)).now_or_never().flatten().is_some()
    }

    #[test]
    fn node_filter_drops_heartbeats_and_keeps_placement_changes_and_deletions() {
        let mut filter = placement_changes();
        assert!(passes(
            &mut filter,
            watcher::Event::InitApply(node("a", "z1", None, "1"))
        ));
        assert!(!passes(&mut filter, watcher::Event::InitDone));
        // a heartbeat: only the resourceVersion/status changed
        assert!(!passes(
            &mut filter,
            watcher::Event::Apply(node("a", "z1", None, "2"))
        ));
        // a label change and a taint change matter
        assert!(passes(
            &mut filter,
            watcher::Event::Apply(node("a", "z2", None, "3"))
        ));
        assert!(passes(
            &mut filter,
            watcher::Event::Apply(node("a", "z2", Some("gpu"), "4"))
        ));
        assert!(!passes(
            &mut filter,
            watcher::Event::Apply(node("a", "z2", Some("gpu"), "5"))
        ));
        // a deletion always passes, even with unchanged labels and taints
        assert!(passes(
            &mut filter,
            watcher::Event::Delete(node("a", "z2", Some("gpu"), "6"))
        ));
        // and a node that comes back under the same name is new again
        assert!(passes(
            &mut filter,
            watcher::Event::Apply(node("a", "z2", Some("gpu"), "7"))
        ));
        // a watch error is passed on (the controller logs it and the watcher backs off)
        let error = watcher::Error::NoResourceVersion;
        assert!(
            filter(Err(error))
                .now_or_never()
                .flatten()
                .is_some_and(|r| r.is_err())
        );
    }
}
