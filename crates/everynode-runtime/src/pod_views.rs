//! The planner's pod views, kept between reconciles per set: a view is built again only when
//! its pod changed ([`KeptViews`]), so a reconcile of a 5,000-pod set during a rollout builds
//! the views of the pods that moved since the last one, not 5,000 (labels copied each time).
//! Views with equal labels share one map ([`PodLabels`]): the plan reads each distinct map
//! once, and a revision's pods keep one copy of their labels.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use everynode_core::{PodLabels, PodView, SetView};
use k8s_openapi::api::core::v1::Pod;

use crate::kept_views::KeptViews;

/// The views of one set's pods, for the set of `set_uid`.
#[derive(Debug, Default)]
struct SetPods {
    set_uid: String,
    views: KeptViews<Pod, PodView>,
    labels: SharedLabels,
}

/// The distinct label maps of a set's pod views.
#[derive(Debug, Default)]
struct SharedLabels {
    maps: HashSet<PodLabels, foldhash::fast::RandomState>,
}

impl SharedLabels {
    /// The kept map equal to `labels`; `labels` itself when there is none.
    fn share(&mut self, labels: PodLabels) -> PodLabels {
        if let Some(shared) = self.maps.get(labels.as_ref()) {
            return shared.clone();
        }
        self.maps.insert(labels.clone());
        labels
    }

    /// Forgets the maps no view holds any more.
    fn prune(&mut self) {
        self.maps.retain(|map| Arc::strong_count(map) > 1);
    }
}

/// Pod views by set key (`namespace/name`).
#[derive(Debug, Default)]
pub struct PodViews {
    sets: Mutex<HashMap<String, SetPods>>,
}

impl PodViews {
    /// The views of the pods among `pods` that concern `set` ([`PodView::concerns`]), in their
    /// order, reusing those whose pod has not changed and forgetting the pods that are gone.
    pub fn of<'p>(
        &self,
        key: &str,
        set: &SetView,
        pods: impl IntoIterator<Item = &'p Arc<Pod>>,
    ) -> Vec<Arc<PodView>> {
        // Taken out while building: one set's views are never built by two reconciles at once
        // (the controller runs one reconcile per set), and other sets need not wait.
        let mut kept = self.lock().remove(key).unwrap_or_default();
        if kept.set_uid != set.uid {
            kept = SetPods {
                set_uid: set.uid.clone(),
                views: KeptViews::default(),
                labels: SharedLabels::default(),
            };
        }
        let labels = &mut kept.labels;
        let views = kept.views.refresh(pods, |pod| {
            PodView::concerns(pod, set).then(|| {
                let mut view = PodView::from_pod(pod, &set.uid);
                view.labels = labels.share(view.labels);
                view
            })
        });
        kept.labels.prune();
        self.lock().insert(key.to_owned(), kept);
        views
    }

    /// Drops the views of a set that is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SetPods>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn set(uid: &str) -> SetView {
        let mut set = everynode_api::DaemonSet::new("agent", Default::default());
        set.metadata.namespace = Some("ns".into());
        set.metadata.uid = Some(uid.into());
        SetView::from_daemon_set(&set).expect("a set with name, namespace and UID")
    }

    fn pod(name: &str, version: &str, owner: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(version.into()),
                owner_references: Some(vec![OwnerReference {
                    uid: owner.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn a_view_is_built_again_only_when_its_pod_changed() {
        let views = PodViews::default();
        let (a, b) = (pod("a", "1", "s1"), pod("b", "1", "s1"));
        let first = views.of("ns/agent", &set("s1"), &[a.clone(), b]);
        let again = views.of("ns/agent", &set("s1"), &[a, pod("b", "2", "s1")]);
        assert!(
            Arc::ptr_eq(&first[0], &again[0]),
            "unchanged pod: the same view"
        );
        assert!(
            !Arc::ptr_eq(&first[1], &again[1]),
            "changed pod: a new view"
        );
    }

    /// `pod` with the labels `hash=<hash>`.
    fn labelled(pod: Arc<Pod>, hash: &str) -> Arc<Pod> {
        let mut pod = Arc::unwrap_or_clone(pod);
        pod.metadata.labels = Some([("hash".to_owned(), hash.to_owned())].into());
        Arc::new(pod)
    }

    #[test]
    fn views_with_equal_labels_share_one_map() {
        let views = PodViews::default();
        let pods = [
            labelled(pod("a", "1", "s1"), "h1"),
            labelled(pod("b", "1", "s1"), "h1"),
            labelled(pod("c", "1", "s1"), "h2"),
        ];
        let seen = views.of("ns/agent", &set("s1"), &pods);
        assert!(Arc::ptr_eq(&seen[0].labels, &seen[1].labels));
        assert!(!Arc::ptr_eq(&seen[0].labels, &seen[2].labels));
        assert_eq!(seen[2].labels.get("hash").map(String::as_str), Some("h2"));
        // `c` moves to h1: its new view shares h1's map, and h2's map is forgotten.
        let moved = [
            pods[0].clone(),
            pods[1].clone(),
            labelled(pod("c", "2", "s1"), "h1"),
        ];
        let again = views.of("ns/agent", &set("s1"), &moved);
        assert!(Arc::ptr_eq(&again[0].labels, &again[2].labels));
        drop(seen);
        let held = views.of("ns/agent", &set("s1"), &moved);
        assert_eq!(views.lock()["ns/agent"].labels.maps.len(), 1);
        assert!(Arc::ptr_eq(&held[0].labels, &again[0].labels));
    }

    #[test]
    fn pods_of_other_controllers_are_left_out() {
        let views = PodViews::default();
        let seen = views.of(
            "ns/agent",
            &set("s1"),
            &[pod("a", "1", "s1"), pod("b", "1", "x")],
        );
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "a");
    }

    #[test]
    fn a_set_made_again_under_its_name_gets_views_of_its_own() {
        let views = PodViews::default();
        let a = pod("a", "1", "s1");
        let old = views.of("ns/agent", &set("s1"), std::slice::from_ref(&a));
        // The same pod, now an orphan to the new set: the view is built again.
        let new = views.of("ns/agent", &set("s2"), std::slice::from_ref(&a));
        assert!(
            new.is_empty(),
            "owned by the old set: another controller's to the new one"
        );
        let again = views.of("ns/agent", &set("s1"), &[a]);
        assert!(!Arc::ptr_eq(&old[0], &again[0]));
    }

    #[test]
    fn pods_and_sets_that_are_gone_are_forgotten() {
        let views = PodViews::default();
        let b = pod("b", "1", "s1");
        views.of("ns/agent", &set("s1"), &[pod("a", "1", "s1"), b.clone()]);
        views.of("ns/agent", &set("s1"), &[b]);
        assert_eq!(views.lock()["ns/agent"].views.len(), 1);
        views.forget("ns/agent");
        assert!(views.lock().is_empty());
    }
}
