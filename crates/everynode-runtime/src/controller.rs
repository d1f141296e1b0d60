//! Wiring: one watch per kind (DaemonSets, Pods, Nodes, ControllerRevisions) feeding reflector
//! stores, and the kube-rs `Controller` that reconciles sets when any of them changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use everynode_api::DaemonSet;
use everynode_core::selector::Selector;
use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::context::{Context, ControllerConfig};
use crate::error::Error;
use crate::http::Readiness;
use crate::metrics::{Metrics, Outcome, SetLabels};
use crate::reconcile::reconcile;

/// API version of the sets this controller runs.
pub const SET_API_VERSION: &str = "everynode.dev/v1alpha1";

/// Runs the controller until `shutdown` resolves. Readiness is set once every cache has synced.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let sets_api: Api<DaemonSet> = scoped(&client, config.namespace.as_deref());
    let watch_config = watcher::Config::default().any_semantic();

    let controller = Controller::new(sets_api, watch_config.clone());
    let sets = controller.store();

    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_events = watcher(
        scoped::<Pod>(&client, config.namespace.as_deref()),
        watch_config.clone(),
    )
    .default_backoff()
    .modify(|pod| pod.managed_fields_mut().clear())
    .reflect(pod_writer)
    .touched_objects();

    let (revisions, revision_writer) = reflector::store::<ControllerRevision>();
    let revision_events = watcher(
        scoped::<ControllerRevision>(&client, config.namespace.as_deref()),
        watch_config.clone(),
    )
    .default_backoff()
    .modify(|rev| rev.managed_fields_mut().clear())
    .reflect(revision_writer)
    .touched_objects();

    let (nodes, node_writer) = reflector::store::<Node>();
    let node_events = watcher(Api::<Node>::all(client.clone()), watch_config)
        .default_backoff()
        .modify(|node| node.managed_fields_mut().clear())
        .reflect(node_writer)
        .filter_map(placement_changes());

    let reporter = Reporter {
        controller: "everynode".into(),
        instance: config.instance.clone(),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        revisions: revisions.clone(),
        recorder: Recorder::new(client, reporter),
        metrics: metrics.clone(),
        expectations: Default::default(),
        backoff: Default::default(),
        failures: Default::default(),
        config: config.clone(),
    });

    tokio::spawn(mark_ready_when_synced(pods, nodes, revisions, readiness));

    tokio::spawn(collect_expired_backoff(context.clone()));
    let ctx_for_cleanup = context.clone();
    let sets_for_pods = sets.clone();
    let sets_for_revisions = sets.clone();
    let sets_for_nodes = sets;
    controller
        .watches_stream(pod_events, move |pod: Pod| owners_of(&sets_for_pods, &pod))
        .watches_stream(revision_events, move |rev: ControllerRevision| {
            owners_of(&sets_for_revisions, &rev)
        })
        .watches_stream(node_events, move |_node: Node| {
            sets_for_nodes
                .state()
                .iter()
                .map(|set| ObjectRef::from_obj(set.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(controller::Config::default().concurrency(config.workers))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_measured, error_policy, context)
        .for_each(|result| {
            match result {
                Ok((set, _)) => tracing::trace!(set = %set, "reconciled"),
                Err(controller::Error::ObjectNotFound(set)) => {
                    // The set is gone: drop what the controller kept about it.
                    tracing::debug!(set = %set, "set gone");
                    let namespace = set.namespace.clone().unwrap_or_default();
                    ctx_for_cleanup
                        .expectations
                        .forget(&format!("{namespace}/{}", set.name));
                    ctx_for_cleanup.metrics.forget_set(&SetLabels {
                        namespace,
                        name: set.name,
                    });
                }
                Err(err) => tracing::warn!(error = %err, "reconcile failed"),
            }
            future::ready(())
        })
        .await;
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

async fn reconcile_measured(set: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile(set.clone(), ctx.clone()).await;
    let outcome = if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    ctx.metrics.observe_reconcile(outcome, started.elapsed());
    let key = ObjectRef::from_obj(set.as_ref());
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
        let now = everynode_core::Timestamp::now();
        ctx.backoff.retain(|entry| !entry.is_expired(now, &config));
    }
}

/// Per-set exponential backoff on errors: 1 s doubling up to 5 minutes; conflicts retry fast.
fn error_policy(set: Arc<DaemonSet>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.observe_error(err.category());
    tracing::warn!(set = %ObjectRef::from_obj(set.as_ref()), error = %err, "reconcile error");
    if err.category() == "conflict" {
        return Action::requeue(Duration::from_millis(200));
    }
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures
        .entry(ObjectRef::from_obj(set.as_ref()))
        .or_insert(0);
    *count = count.saturating_add(1);
    let seconds = 2u64
        .saturating_pow((*count).saturating_sub(1).min(9))
        .min(300);
    Action::requeue(Duration::from_secs(seconds))
}

/// The sets a pod or revision concerns: its controller if that is an everynode DaemonSet, or —
/// for an orphan — every set in its namespace whose selector matches its labels.
fn owners_of<K: Resource>(sets: &Store<DaemonSet>, obj: &K) -> Vec<ObjectRef<DaemonSet>> {
    let namespace = obj.namespace().unwrap_or_default();
    if let Some(owner) = obj
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    {
        if owner.kind == "DaemonSet" && owner.api_version == SET_API_VERSION {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    let labels = obj.labels();
    sets.state()
        .iter()
        .filter(|set| set.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|set| {
            Selector::compile(&set.spec.selector).is_ok_and(|s| !s.is_empty() && s.matches(labels))
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

/// Sets readiness once the caches the planner reads have synced. (The DaemonSet cache is the
/// controller's own: kube-runtime holds every reconcile until it is ready.)
async fn mark_ready_when_synced(
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    readiness: Arc<Readiness>,
) {
    let synced = async {
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
