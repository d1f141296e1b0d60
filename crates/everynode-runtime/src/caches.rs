//! The caches of every replica: one watch per kind (sets, Pods, Nodes, ControllerRevisions)
//! feeding a reflector store, so a standby's caches are warm when it takes over; each change
//! turned into reconcile requests for the sets it concerns; readiness while the watches are
//! healthy.

use std::sync::Arc;
use std::time::Duration;

use everynode_core::selector::Selector;
use everynode_core::slim::Slim;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::task::JoinHandle;

use crate::context::ControllerConfig;
use crate::expectations::Expectations;
use crate::http::Readiness;
use crate::key::set_key;
use crate::metrics::Metrics;
use crate::node_routes::NodeRoutes;
use crate::pod_index::PodIndex;
use crate::target::SetResource;
use crate::triggers::Triggers;

/// The caches every replica keeps, and the tasks that fill them.
pub(crate) struct Caches<K: SetResource> {
    /// The sets of the target kind.
    pub(crate) sets: Store<K>,
    /// Every pod (in the watched namespace).
    pub(crate) pods: Store<Pod>,
    /// The pods of each set, and the orphans, kept by the pod watch.
    pub(crate) pod_index: Arc<PodIndex>,
    /// Every node.
    pub(crate) nodes: Store<Node>,
    /// Every ControllerRevision (in the watched namespace).
    pub(crate) revisions: Store<ControllerRevision>,
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
    pub(crate) fn start(
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
        // how it is noticed beside `--target apps/v1`); everything else keeps none. Pods and
        // nodes are decoded slim: what no reader uses is skipped by the JSON decoder.
        let (sets, set_events) =
            cached_watch(scoped::<K>(client, namespace), &watch_config, |mut set| {
                set.managed_fields_mut().retain(crate::builtin::keep_entry);
                set
            });
        let (pods, pod_events) = cached_watch(
            scoped::<Slim<Pod>>(client, namespace),
            &pod_watch_config,
            cached_pod,
        );
        let (revisions, revision_events) = cached_watch(
            scoped::<ControllerRevision>(client, namespace),
            &watch_config,
            |mut revision| {
                revision.managed_fields_mut().clear();
                revision
            },
        );
        let (nodes, node_events) = cached_watch(
            Api::<Slim<Node>>::all(client.clone()),
            &watch_config,
            cached_node,
        );
        // /readyz fails while a watch fails (the watcher backs off and resumes by itself).
        let set_events = set_events.inspect(watch_health("daemonsets", readiness, metrics));
        let pod_index = Arc::new(PodIndex::new(
            &K::kind(&()),
            &K::api_version(&()),
            pods.clone(),
        ));
        let pod_events = pod_events
            .inspect(watch_health("pods", readiness, metrics))
            .inspect(indexed(&pod_index))
            .inspect(created_pods_seen::<K>(expectations));
        let revision_events =
            revision_events.inspect(watch_health("controllerrevisions", readiness, metrics));
        let node_events = node_events.inspect(watch_health("nodes", readiness, metrics));

        let mut node_routes = NodeRoutes::new(sets.clone(), nodes.clone());
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
                node_events,
                move |event| node_routes.route(event),
                triggers,
            ),
        ];
        Self {
            sets,
            pods,
            pod_index,
            nodes,
            revisions,
            tasks,
        }
    }
}

/// What the pod cache keeps of a watched pod: the slim pod (`everynode_core::slim`) with the
/// built-in controller's managed-fields entries.
fn cached_pod(Slim(mut pod): Slim<Pod>) -> Pod {
    pod.managed_fields_mut().retain(crate::builtin::keep_entry);
    pod
}

/// What the node cache keeps of a watched node: the slim node, no managed fields.
fn cached_node(Slim(mut node): Slim<Node>) -> Node {
    node.managed_fields_mut().clear();
    node
}

/// What the pod cache keeps of a whole pod (the watch decodes the same directly): the fields a
/// reader uses (`everynode_core::slim`) and the built-in controller's managed-fields entries.
pub fn slim_cached_pod(pod: &mut Pod) {
    pod.managed_fields_mut().retain(crate::builtin::keep_entry);
    everynode_core::slim::slim_pod(pod);
}

/// What the node cache keeps of a whole node (the watch decodes the same directly): the fields
/// a reader uses (`everynode_core::slim`), no managed fields.
pub fn slim_cached_node(node: &mut Node) {
    node.managed_fields_mut().clear();
    everynode_core::slim::slim_node(node);
}

/// A watch of `api` feeding a new store of what `into_cached` makes of each object (which
/// drops what no reader uses); the returned stream yields the watch events after the store has
/// applied them.
fn cached_watch<W, T>(
    api: Api<W>,
    config: &watcher::Config,
    into_cached: fn(W) -> T,
) -> (
    Store<T>,
    impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
)
where
    W: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    W::DynamicType: Default,
    T: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    T::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<T>();
    let events = watcher(api, config.clone())
        .default_backoff()
        .map_ok(move |event| cached_event(event, into_cached))
        .reflect(writer);
    (store, events)
}

/// `event` with each object turned into what the cache keeps.
fn cached_event<W, T>(event: watcher::Event<W>, into_cached: fn(W) -> T) -> watcher::Event<T> {
    match event {
        watcher::Event::Apply(obj) => watcher::Event::Apply(into_cached(obj)),
        watcher::Event::Delete(obj) => watcher::Event::Delete(into_cached(obj)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(obj) => watcher::Event::InitApply(into_cached(obj)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
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

/// Keeps `index` in step with the pod store.
fn indexed(
    index: &Arc<PodIndex>,
) -> impl FnMut(&Result<watcher::Event<Pod>, watcher::Error>) + Send + 'static {
    let index = index.clone();
    move |event| {
        if let Ok(event) = event {
            index.observe(event);
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
    mut sets_of: impl FnMut(T) -> Vec<ObjectRef<K>> + Send + 'static,
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

/// The sets a pod or revision concerns: its controller if that is a set of the target kind, or —
/// for an orphan — the set of the target kind it names as a plain owner (a pre-pull pod) and
/// every set in its namespace whose selector matches its labels.
fn owners_of<K: SetResource, O: Resource>(sets: &Store<K>, obj: &O) -> Vec<ObjectRef<K>> {
    let namespace = obj.namespace().unwrap_or_default();
    let of_kind =
        |r: &&OwnerReference| r.kind == K::kind(&()) && r.api_version == K::api_version(&());
    if let Some(owner) = obj
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    {
        if of_kind(&owner) {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    if let Some(owner) = obj.owner_references().iter().find(of_kind) {
        return vec![ObjectRef::new(&owner.name).within(&namespace)];
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

/// Sets readiness once every cache has synced.
pub(crate) async fn mark_ready_when_synced<K: SetResource>(
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

    #[test]
    fn a_watched_pod_or_node_is_cached_as_a_whole_one_slimmed() {
        let mut pod: serde_json::Value =
            serde_json::from_str(include_str!("../benches/fixtures/pod.json")).expect("JSON");
        pod["metadata"]["managedFields"] = serde_json::json!([
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-12-05T01:42:46Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}},
            {"manager": "kwok", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                "time": "2026-12-05T01:42:47Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}
        ]);
        let watched = cached_pod(serde_json::from_value(pod.clone()).expect("slim pod"));
        let mut whole: Pod = serde_json::from_value(pod).expect("pod");
        slim_cached_pod(&mut whole);
        assert_eq!(watched, whole);
        assert_eq!(watched.managed_fields().len(), 1);

        let node: serde_json::Value =
            serde_json::from_str(include_str!("../benches/fixtures/node.json")).expect("JSON");
        let watched = cached_node(serde_json::from_value(node.clone()).expect("slim node"));
        let mut whole: Node = serde_json::from_value(node).expect("node");
        slim_cached_node(&mut whole);
        assert_eq!(watched, whole);
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
}
