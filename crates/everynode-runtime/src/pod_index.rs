//! The cached pods grouped by what they can belong to — a set of the target kind (by the set's
//! UID) or nothing (orphans, by namespace) — kept by the pod watch, so a reconcile reads its
//! set's pods and the orphans it may adopt instead of scanning every cached pod. The index
//! holds the store's own `Arc` of each pod: a reconcile copies pointers and looks nothing up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// A group of pods a set reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Group {
    /// Controlled by the set with this UID.
    Set(String),
    /// Without a controller, in this namespace.
    Orphans(String),
}

/// The pods of each group by name, and each indexed pod's group.
#[derive(Debug, Default)]
struct Groups {
    of_pod: HashMap<(String, String), Group>,
    members: HashMap<Group, HashMap<String, Arc<Pod>>>,
    /// The names of the members the built-in DaemonSet controller wrote (usually none).
    built_in: HashMap<Group, HashSet<String>>,
}

impl Groups {
    /// The groups of every pod in `pods`.
    fn of(pods: Vec<Arc<Pod>>, set_type: &SetType) -> Self {
        let mut groups = Self::default();
        for pod in pods {
            groups.apply(pod, set_type);
        }
        groups
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(group) = self.of_pod.remove(key)
            && let Some(names) = self.members.get_mut(&group)
        {
            names.remove(&key.1);
            if names.is_empty() {
                self.members.remove(&group);
            }
            if let Some(names) = self.built_in.get_mut(&group) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.built_in.remove(&group);
                }
            }
        }
    }

    fn insert(&mut self, key: (String, String), group: Group, pod: Arc<Pod>) {
        if crate::builtin::wrote(&pod.metadata) {
            self.built_in
                .entry(group.clone())
                .or_default()
                .insert(key.1.clone());
        }
        self.members
            .entry(group.clone())
            .or_default()
            .insert(key.1.clone(), pod);
        self.of_pod.insert(key, group);
    }

    fn apply(&mut self, pod: Arc<Pod>, set_type: &SetType) {
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        self.remove(&key);
        if let Some(group) = group_of(&pod, &key.0, set_type) {
            self.insert(key, group, pod);
        }
    }
}

/// The kind and apiVersion of the sets whose pods are indexed.
#[derive(Debug)]
struct SetType {
    kind: String,
    api_version: String,
}

/// The group a pod belongs to, if a set of `set_type` can read it.
fn group_of(pod: &Pod, namespace: &str, set_type: &SetType) -> Option<Group> {
    match pod
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    {
        None => Some(Group::Orphans(namespace.to_owned())),
        Some(owner) if owner.kind == set_type.kind && owner.api_version == set_type.api_version => {
            Some(Group::Set(owner.uid.clone()))
        }
        Some(_) => None,
    }
}

/// The index of one pod store. Reads see the last complete list, like the store: a relist is
/// indexed from the store when it ends.
#[derive(Debug)]
pub struct PodIndex {
    set_type: SetType,
    store: Store<Pod>,
    live: RwLock<Groups>,
}

impl PodIndex {
    /// An empty index of the pods in `store` that the sets of `kind` in `api_version` read.
    pub fn new(kind: &str, api_version: &str, store: Store<Pod>) -> Self {
        Self {
            set_type: SetType {
                kind: kind.to_owned(),
                api_version: api_version.to_owned(),
            },
            store,
            live: RwLock::default(),
        }
    }

    /// Applies one pod watch event (after the store has).
    pub fn observe(&self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                let stored = self.store.get(&ObjectRef::new(&key.1).within(&key.0));
                match stored {
                    Some(stored) => self.write().apply(stored, &self.set_type),
                    None => self.write().remove(&key),
                }
            }
            watcher::Event::Delete(pod) => self
                .write()
                .remove(&(pod.namespace().unwrap_or_default(), pod.name_any())),
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            watcher::Event::InitDone => {
                let groups = Groups::of(self.store.state(), &self.set_type);
                *self.write() = groups;
            }
        }
    }

    /// `read` of the cached pods the set with `uid` in `namespace` reads — its own and the
    /// namespace's orphans — without copying their `Arc`s (each copy writes the pod's reference
    /// count: a cache miss per pod). The index is locked meanwhile: the pod watch waits.
    pub fn with_pods_of<R>(
        &self,
        namespace: &str,
        uid: &str,
        read: impl FnOnce(&mut dyn Iterator<Item = &Arc<Pod>>) -> R,
    ) -> R {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let groups = [
            Group::Set(uid.to_owned()),
            Group::Orphans(namespace.to_owned()),
        ];
        let mut pods = groups
            .iter()
            .filter_map(|group| live.members.get(group))
            .flat_map(HashMap::values);
        read(&mut pods)
    }

    /// The cached pods of the set with `uid` that the built-in DaemonSet controller wrote
    /// ([`crate::builtin::wrote`]).
    pub fn written_by_built_in(&self, uid: &str) -> Vec<Arc<Pod>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let group = Group::Set(uid.to_owned());
        let (Some(names), Some(members)) = (live.built_in.get(&group), live.members.get(&group))
        else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|name| members.get(name).cloned())
            .collect()
    }

    /// The cached pod `name` in `namespace` if the set with `uid` reads it, exactly as
    /// [`Self::with_pods_of`] would list it. The watch applies an event to the store a moment
    /// before the index: a check of a created pod against the store alone could find a pod the
    /// set's plan does not see yet, and the plan would create a second one on the node.
    pub fn pod_of(&self, namespace: &str, uid: &str, name: &str) -> Option<Arc<Pod>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let group = live.of_pod.get(&(namespace.to_owned(), name.to_owned()))?;
        let read_by_set = match group {
            Group::Set(owner) => owner == uid,
            Group::Orphans(_) => true,
        };
        read_by_set
            .then(|| live.members.get(group)?.get(name).cloned())
            .flatten()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Groups> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::reflector;

    use super::*;

    fn pod(namespace: &str, name: &str, owner: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                owner_references: owner.map(|(kind, uid)| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A pod store and an index fed the same events, as the pod watch feeds them.
    struct Indexed {
        store: Store<Pod>,
        writer: reflector::store::Writer<Pod>,
        index: PodIndex,
    }

    impl Indexed {
        fn new() -> Self {
            let (store, writer) = reflector::store::<Pod>();
            let index = PodIndex::new("DaemonSet", "apps/v1", store.clone());
            Self {
                store,
                writer,
                index,
            }
        }

        fn send(&mut self, event: watcher::Event<Pod>) {
            self.writer.apply_watcher_event(&event);
            self.index.observe(&event);
        }

        fn names_of(&self, namespace: &str, uid: &str) -> Vec<String> {
            names(
                self.index
                    .with_pods_of(namespace, uid, |pods| pods.cloned().collect()),
            )
        }
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_set_reads_its_own_pods_and_the_orphans_of_its_namespace_only() {
        let mut x = Indexed::new();
        x.send(watcher::Event::Init);
        for (namespace, name, owner) in [
            ("a", "mine", Some(("DaemonSet", "u1"))),
            ("a", "other-set", Some(("DaemonSet", "u2"))),
            ("a", "replica", Some(("ReplicaSet", "r1"))),
            ("a", "orphan", None),
            ("b", "orphan-elsewhere", None),
        ] {
            x.send(watcher::Event::InitApply(pod(namespace, name, owner)));
        }
        x.send(watcher::Event::InitDone);
        assert_eq!(x.names_of("a", "u1"), ["mine", "orphan"]);
        assert_eq!(x.names_of("b", "u3"), ["orphan-elsewhere"]);
    }

    #[test]
    fn adoption_release_and_deletion_move_a_pod_between_groups() {
        let mut x = Indexed::new();
        x.send(watcher::Event::Init);
        x.send(watcher::Event::InitDone);
        x.send(watcher::Event::Apply(pod("a", "p", None)));
        x.send(watcher::Event::Apply(pod(
            "a",
            "p",
            Some(("DaemonSet", "u1")),
        )));
        assert_eq!(x.names_of("a", "u1"), ["p"]);
        let indexed = x.index.pod_of("a", "u1", "p");
        let stored = x.store.get(&ObjectRef::new("p").within("a"));
        assert!(
            indexed
                .zip(stored)
                .is_some_and(|(i, s)| Arc::ptr_eq(&i, &s)),
            "the index holds the store's own pod"
        );
        assert!(x.names_of("a", "u2").is_empty());
        x.send(watcher::Event::Apply(pod(
            "a",
            "p",
            Some(("ReplicaSet", "r")),
        )));
        assert!(x.names_of("a", "u1").is_empty());
        x.send(watcher::Event::Apply(pod("a", "p", None)));
        assert_eq!(x.names_of("a", "u2"), ["p"]);
        x.send(watcher::Event::Delete(pod("a", "p", None)));
        assert!(x.names_of("a", "u2").is_empty());
        let live = x.index.live.read().unwrap_or_else(|p| p.into_inner());
        assert!(live.of_pod.is_empty() && live.members.is_empty());
    }

    #[test]
    fn the_pods_the_built_in_controller_wrote_are_kept_apart() {
        let mut x = Indexed::new();
        x.send(watcher::Event::Init);
        x.send(watcher::Event::InitDone);
        let mut written = pod("a", "by-upstream", Some(("DaemonSet", "u1")));
        written.metadata.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(crate::builtin::BUILT_IN_MANAGER.into()),
                ..Default::default()
            },
        ]);
        x.send(watcher::Event::Apply(written));
        x.send(watcher::Event::Apply(pod(
            "a",
            "by-everynode",
            Some(("DaemonSet", "u1")),
        )));
        assert_eq!(names(x.index.written_by_built_in("u1")), ["by-upstream"]);
        assert!(x.index.written_by_built_in("u2").is_empty());
        // Replaced by a pod nobody else wrote (the same name): no longer listed.
        x.send(watcher::Event::Apply(pod(
            "a",
            "by-upstream",
            Some(("DaemonSet", "u1")),
        )));
        assert!(x.index.written_by_built_in("u1").is_empty());
        let live = x.index.live.read().unwrap_or_else(|p| p.into_inner());
        assert!(live.built_in.is_empty());
    }

    #[test]
    fn a_created_pod_counts_as_seen_only_once_the_index_shows_it() {
        let mut x = Indexed::new();
        x.send(watcher::Event::Init);
        x.send(watcher::Event::InitDone);
        let created = watcher::Event::Apply(pod("a", "agent-x", Some(("DaemonSet", "u1"))));
        let seen = |x: &Indexed, uid| x.index.pod_of("a", uid, "agent-x").is_some();
        // The watch applies the event to the store first: the store has the pod, the set's
        // plan (read through the index) not yet, so its create is still pending.
        x.writer.apply_watcher_event(&created);
        assert!(
            x.store
                .get(&ObjectRef::new("agent-x").within("a"))
                .is_some()
        );
        assert!(!seen(&x, "u1"));
        x.index.observe(&created);
        assert!(seen(&x, "u1"));
        // Another set does not read it; an orphan is read by every set of its namespace.
        assert!(!seen(&x, "u2"));
        x.send(watcher::Event::Apply(pod("a", "agent-x", None)));
        assert!(seen(&x, "u2"));
        assert_eq!(x.names_of("a", "u2"), ["agent-x"]);
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_ends() {
        let mut x = Indexed::new();
        let owned = |name| pod("a", name, Some(("DaemonSet", "u1")));
        x.send(watcher::Event::Init);
        x.send(watcher::Event::InitApply(owned("gone")));
        x.send(watcher::Event::InitDone);
        // The watch restarts; "gone" was deleted meanwhile and has no event of its own.
        x.send(watcher::Event::Init);
        x.send(watcher::Event::InitApply(owned("new")));
        // Until the list ends, reads see the last complete one (as the store does).
        assert_eq!(x.names_of("a", "u1"), ["gone"]);
        x.send(watcher::Event::InitDone);
        assert_eq!(x.names_of("a", "u1"), ["new"]);
    }
}
