//! Memory per cached pod and node: fills the caches the controller keeps — the reflector
//! stores, the pod index, the node routes, the node views and the pod views kept per set — with
//! copies of a real pod and node (captured
//! from the local cluster: a daemon pod as KWOK runs it and a KWOK node, slimmed as the
//! watches slim them) and counts the bytes allocated and still live.
//!
//! `cargo bench -p everynode-runtime --bench cache_memory`. The figures size the controller's
//! memory limit (`docs/operations.md`, "Memory").

use std::alloc::System;
use std::sync::Arc;

use everynode_runtime::caches::{slim_cached_node, slim_cached_pod};
use everynode_runtime::node_routes::NodeRoutes;
use everynode_runtime::node_views::NodeViews;
use everynode_runtime::pod_index::PodIndex;
use everynode_runtime::pod_views::PodViews;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const POD: &str = include_str!("fixtures/pod.json");
const NODE: &str = include_str!("fixtures/node.json");

/// Copies of `template`, each with its own name and UID (and node, for pods).
fn copies<T: serde::de::DeserializeOwned>(
    template: &str,
    n: usize,
    rename: impl Fn(&mut T, usize),
) -> Vec<T> {
    let one: serde_json::Value = serde_json::from_str(template).expect("fixture is JSON");
    (0..n)
        .map(|i| {
            let mut obj: T = serde_json::from_value(one.clone()).expect("fixture decodes");
            rename(&mut obj, i);
            obj
        })
        .collect()
}

/// Bytes allocated in `region` and still live.
fn live(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

/// `n` slimmed copies of the fixture pod, each on its own node.
fn pods(n: usize) -> Vec<Pod> {
    copies(POD, n, |p: &mut Pod, i| {
        p.metadata.name = Some(format!("agent-{i:06}"));
        p.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some(format!("kwok-node-{i:05}"));
        }
        slim_cached_pod(p);
    })
}

/// Bytes per pod: the pod store and the pod index, as the pod watch fills them.
fn per_pod(n: usize) -> f64 {
    // Counted from before the copies are decoded: the watch hands each one over and it is
    // dropped once the store holds its own.
    let region = Region::new(GLOBAL);
    let pods = pods(n);
    let (store, mut writer) = reflector::store::<Pod>();
    let index = PodIndex::new("DaemonSet", "apps/v1", store.clone());
    let mut feed = |event: Event<Pod>| {
        writer.apply_watcher_event(&event);
        index.observe(&event);
    };
    feed(Event::Init);
    for pod in pods {
        feed(Event::InitApply(pod));
    }
    feed(Event::InitDone);
    let bytes = live(&region);
    assert_eq!(store.state().len(), n);
    bytes as f64 / n as f64
}

/// Bytes per pod of the planner's pod views, kept between reconciles for the pod's set.
fn per_pod_view(n: usize) -> f64 {
    let pods: Vec<Arc<Pod>> = pods(n).into_iter().map(Arc::new).collect();
    let owner = pods
        .first()
        .and_then(|p| p.metadata.owner_references.as_ref()?.first().cloned())
        .expect("the fixture pod has an owner");
    let mut set = everynode_api::DaemonSet::new(&owner.name, Default::default());
    set.metadata.namespace = pods.first().and_then(|p| p.metadata.namespace.clone());
    set.metadata.uid = Some(owner.uid);
    let set = everynode_core::SetView::from_daemon_set(&set).expect("a set with a UID");
    let region = Region::new(GLOBAL);
    let views = PodViews::default();
    let built = views.of("default/agent", &set, &pods);
    assert_eq!(built.len(), n);
    drop(built);
    live(&region) as f64 / n as f64
}

/// Bytes per node: the node store, the node routes' last-seen map and the kept node views.
fn per_node(n: usize) -> f64 {
    let region = Region::new(GLOBAL);
    let nodes: Vec<Node> = copies(NODE, n, |node: &mut Node, i| {
        node.metadata.name = Some(format!("kwok-node-{i:05}"));
        node.metadata.uid = Some(format!("00000000-0000-0000-0001-{i:012}"));
        slim_cached_node(node);
    });
    let (sets, _set_writer) = reflector::store::<DaemonSet>();
    let (store, mut writer) = reflector::store::<Node>();
    let mut routes = NodeRoutes::new(sets, store.clone());
    let mut feed = |event: Event<Node>| {
        writer.apply_watcher_event(&event);
        routes.route(event);
    };
    feed(Event::Init);
    for node in nodes {
        feed(Event::InitApply(node));
    }
    feed(Event::InitDone);
    // The planner's views, kept between reconciles.
    let views = NodeViews::default();
    views.of(&store.state());
    let bytes = live(&region);
    assert_eq!(store.state().len(), n);
    bytes as f64 / n as f64
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, small.
    let quick = std::env::args().all(|a| a != "--bench");
    let (pods, nodes) = if quick { (100, 100) } else { (20_000, 5_000) };
    let pod = per_pod(pods);
    let view = per_pod_view(pods);
    let node = per_node(nodes);
    println!(
        "cache memory: {pod:.0} bytes per cached pod ({pods} pods) and {view:.0} more for its \
         kept planner view, {node:.0} bytes per cached node ({nodes} nodes)"
    );
    println!(
        "fixtures: pod {} bytes of JSON, node {} bytes of JSON",
        POD.len(),
        NODE.len()
    );
}
