//! Which sets a node watch event wakes: only those whose plan or status the change can move
//! ([`NodeInterest`]). Heartbeats and status updates wake none.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use everynode_core::{NodeInterest, NodeView};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::target::SetResource;

/// Routes node events to sets. Keeps the last seen version of every node — the store's own
/// `Arc`, so nothing is copied — and each set's compiled interest, by UID and generation.
pub struct NodeRoutes<K: SetResource> {
    sets: Store<K>,
    nodes: Store<Node>,
    seen: HashMap<String, Arc<Node>>,
    /// While the watch (re)lists: the names listed so far and the sets they concern, routed
    /// when the list ends (the store shows the list only then).
    relisting: Option<Relisting<K>>,
    interests: HashMap<String, (Option<i64>, Arc<NodeInterest>)>,
}

impl<K: SetResource> NodeRoutes<K> {
    /// Routes to the sets of `sets`, sharing the nodes of `nodes` (the store the node watch
    /// fills before each event is routed).
    pub fn new(sets: Store<K>, nodes: Store<Node>) -> Self {
        Self {
            sets,
            nodes,
            seen: HashMap::new(),
            relisting: None,
            interests: HashMap::new(),
        }
    }

    /// The sets one node watch event (already applied to the node store) concerns.
    pub fn route(&mut self, event: watcher::Event<Node>) -> Vec<ObjectRef<K>> {
        match event {
            watcher::Event::Apply(node) => self.changed(node),
            watcher::Event::InitApply(node) => {
                let name = node.name_any();
                let sets = self.changed(node);
                if let Some(relisting) = self.relisting.as_mut() {
                    relisting.listed.insert(name);
                    relisting.sets.extend(sets);
                }
                Vec::new()
            }
            watcher::Event::Delete(node) => {
                let before = self
                    .seen
                    .remove(&node.name_any())
                    .unwrap_or_else(|| Arc::new(node));
                self.concerned(Some(&before), None)
            }
            watcher::Event::Init => {
                self.relisting = Some(Relisting {
                    listed: HashSet::new(),
                    sets: Vec::new(),
                });
                Vec::new()
            }
            watcher::Event::InitDone => self.relist_done(),
        }
    }

    /// A node added or changed: the sets its placement fields concern, if they changed.
    fn changed(&mut self, node: Node) -> Vec<ObjectRef<K>> {
        let current = self
            .nodes
            .get(&ObjectRef::from_obj(&node))
            .filter(|cached| cached.resource_version() == node.resource_version())
            .unwrap_or_else(|| Arc::new(node));
        let before = self.seen.insert(current.name_any(), current.clone());
        match before {
            Some(before) if same_placement(&before, &current) => Vec::new(),
            before => self.concerned(before.as_deref(), Some(&current)),
        }
    }

    /// After a relist: the sets the listed nodes concern, and those of nodes deleted while
    /// the watch was down (they have no event of their own). The last seen nodes become the
    /// store's copies, which hold the list now.
    fn relist_done(&mut self) -> Vec<ObjectRef<K>> {
        let Some(Relisting { listed, mut sets }) = self.relisting.take() else {
            return Vec::new();
        };
        let gone: Vec<Arc<Node>> = self
            .seen
            .extract_if(|name, _| !listed.contains(name))
            .map(|(_, node)| node)
            .collect();
        for node in &gone {
            sets.extend(self.concerned(Some(node), None));
        }
        for (name, seen) in &mut self.seen {
            if let Some(cached) = self.nodes.get(&ObjectRef::new(name))
                && cached.resource_version() == seen.resource_version()
            {
                *seen = cached;
            }
        }
        sets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        sets.dedup();
        sets
    }

    /// The sets a node going from `before` to `after` concerns.
    fn concerned(&mut self, before: Option<&Node>, after: Option<&Node>) -> Vec<ObjectRef<K>> {
        let before = before.map(NodeView::from_node);
        let after = after.map(NodeView::from_node);
        self.refresh_interests();
        self.sets
            .state()
            .iter()
            .filter(|set| {
                let uid = set.uid().unwrap_or_default();
                self.interests
                    .get(&uid)
                    // A set whose spec cannot be read is woken: its reconcile reports why.
                    .is_none_or(|(_, interest)| interest.concerns(before.as_ref(), after.as_ref()))
            })
            .map(|set| ObjectRef::from_obj(set.as_ref()))
            .collect()
    }

    /// Compiles the interest of sets that are new or have a new generation; forgets the rest.
    fn refresh_interests(&mut self) {
        let mut fresh = HashMap::new();
        for set in self.sets.state() {
            let uid = set.uid().unwrap_or_default();
            let generation = set.meta().generation;
            let interest = match self.interests.remove(&uid) {
                Some((g, interest)) if g == generation => Some(interest),
                _ => set
                    .view()
                    .ok()
                    .map(|view| Arc::new(NodeInterest::of(&view))),
            };
            if let Some(interest) = interest {
                fresh.insert(uid, (generation, interest));
            }
        }
        self.interests = fresh;
    }
}

/// A relist in progress.
struct Relisting<K: SetResource> {
    listed: HashSet<String>,
    sets: Vec<ObjectRef<K>>,
}

/// Whether two versions of a node agree on everything placement reads: labels, taints and
/// `spec.unschedulable`.
fn same_placement(a: &Node, b: &Node) -> bool {
    fn spec(
        n: &Node,
    ) -> Option<(
        Option<bool>,
        Option<&Vec<k8s_openapi::api::core::v1::Taint>>,
    )> {
        n.spec
            .as_ref()
            .map(|s| (s.unschedulable, s.taints.as_ref()))
    }
    a.metadata.labels == b.metadata.labels && spec(a) == spec(b)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, PodTemplateSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::reflector::{self, store::Writer};

    use super::*;

    fn set(name: &str, node_selector: Option<(&str, &str)>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        node_selector: node_selector
                            .map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())])),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(version: &str, labels: &[(&str, &str)], taint: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some(version.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
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
            status: None,
        }
    }

    struct Fixture {
        routes: NodeRoutes<DaemonSet>,
        nodes: Writer<Node>,
    }

    impl Fixture {
        fn new() -> Self {
            let (sets, mut set_writer) = reflector::store::<DaemonSet>();
            for s in [set("any", None), set("gpu", Some(("gpu", "true")))] {
                set_writer.apply_watcher_event(&watcher::Event::Apply(s));
            }
            let (store, nodes) = reflector::store::<Node>();
            std::mem::forget(set_writer);
            Self {
                routes: NodeRoutes::new(sets, store),
                nodes,
            }
        }

        /// Applies `event` to the node store, then routes it (as the node watch does).
        fn send(&mut self, event: watcher::Event<Node>) -> Vec<String> {
            self.nodes.apply_watcher_event(&event);
            let mut names: Vec<String> = self
                .routes
                .route(event)
                .into_iter()
                .map(|r| r.name)
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn node_events_wake_only_the_sets_they_concern() {
        let mut f = Fixture::new();
        assert!(f.send(watcher::Event::Init).is_empty());
        assert!(f.send(watcher::Event::InitDone).is_empty());
        // a joining node, not ready yet: listed as blocked by the set that selects it
        let joining = node("1", &[("zone", "a")], Some("node.kubernetes.io/not-ready"));
        assert_eq!(f.send(watcher::Event::Apply(joining)), ["any"]);
        // ready: the set that runs everywhere gets its pod
        assert_eq!(
            f.send(watcher::Event::Apply(node("2", &[("zone", "a")], None))),
            ["any"]
        );
        // a heartbeat (new resourceVersion, same placement) wakes no one
        assert!(
            f.send(watcher::Event::Apply(node("3", &[("zone", "a")], None)))
                .is_empty()
        );
        // a label no set reads wakes no one; one that flips a selector wakes that set
        assert!(
            f.send(watcher::Event::Apply(node("4", &[("zone", "b")], None)))
                .is_empty()
        );
        let gpu = [("zone", "b"), ("gpu", "true")];
        assert_eq!(
            f.send(watcher::Event::Apply(node("5", &gpu, None))),
            ["gpu"]
        );
        // deletion: every set that ran there
        assert_eq!(
            f.send(watcher::Event::Delete(node("6", &gpu, None))),
            ["any", "gpu"]
        );
    }

    #[test]
    fn a_node_deleted_while_the_watch_was_down_is_routed_when_the_relist_ends() {
        let mut f = Fixture::new();
        f.send(watcher::Event::Init);
        f.send(watcher::Event::InitApply(node(
            "1",
            &[("gpu", "true")],
            None,
        )));
        assert_eq!(f.send(watcher::Event::InitDone), ["any", "gpu"]);
        // The watch restarts and the node is not listed again: it is gone.
        assert!(f.send(watcher::Event::Init).is_empty());
        assert_eq!(f.send(watcher::Event::InitDone), ["any", "gpu"]);
        assert!(f.routes.seen.is_empty());
    }

    #[test]
    fn the_last_seen_node_is_the_stores_own_copy() {
        let mut f = Fixture::new();
        let same_as_store = |f: &Fixture| {
            let cached = f
                .routes
                .nodes
                .get(&ObjectRef::new("n1"))
                .unwrap_or_else(|| panic!("n1 cached"));
            Arc::ptr_eq(&cached, &f.routes.seen["n1"])
        };
        // after a list (the store shows it only when the list ends) ...
        f.send(watcher::Event::Init);
        f.send(watcher::Event::InitApply(node("1", &[], None)));
        f.send(watcher::Event::InitDone);
        assert!(same_as_store(&f));
        // ... and after each change
        f.send(watcher::Event::Apply(node("2", &[], None)));
        assert!(same_as_store(&f));
    }
}
