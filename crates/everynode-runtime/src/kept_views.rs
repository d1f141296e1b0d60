//! Views kept between reconciles by object id: a view is built again only when its object's
//! resourceVersion changed, and dropped once its object is no longer among those asked for.
//! [`crate::node_views`] keeps one for every node, [`crate::pod_views`] one per set.

use std::collections::HashMap;
use std::sync::Arc;

use kube::Resource;

/// One object's view, the resourceVersion it was built from and the last refresh that saw it.
#[derive(Debug)]
struct Kept<V> {
    resource_version: String,
    view: Arc<V>,
    seen: u64,
}

/// Views by object id (a node's name, a pod's UID).
#[derive(Debug)]
pub struct KeptViews<V> {
    by_id: HashMap<String, Kept<V>>,
    refreshes: u64,
}

impl<V> Default for KeptViews<V> {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            refreshes: 0,
        }
    }
}

impl<V> KeptViews<V> {
    /// The views of `objects` in their order: kept where the object's resourceVersion is the
    /// one its view was built from, built with `build` otherwise (and always for an object
    /// without an id); the views of objects not among `objects` are dropped.
    pub fn refresh<'a, O: Resource + 'a>(
        &mut self,
        objects: impl IntoIterator<Item = &'a O>,
        id: impl Fn(&O) -> Option<&str>,
        build: impl Fn(&O) -> V,
    ) -> Vec<Arc<V>> {
        self.refreshes += 1;
        let now = self.refreshes;
        let views: Vec<Arc<V>> = objects
            .into_iter()
            .map(|object| {
                let Some(id) = id(object) else {
                    return Arc::new(build(object));
                };
                let version = object
                    .meta()
                    .resource_version
                    .as_deref()
                    .unwrap_or_default();
                match self.by_id.get_mut(id) {
                    Some(kept) if kept.resource_version == version => {
                        kept.seen = now;
                        kept.view.clone()
                    }
                    _ => {
                        let view = Arc::new(build(object));
                        let kept = Kept {
                            resource_version: version.to_owned(),
                            view: view.clone(),
                            seen: now,
                        };
                        self.by_id.insert(id.to_owned(), kept);
                        view
                    }
                }
            })
            .collect();
        if self.by_id.len() > views.len() {
            self.by_id.retain(|_, kept| kept.seen == now);
        }
        views
    }

    /// The ids whose views are kept, in no order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: Option<&str>, version: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: name.map(str::to_owned),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn refresh(kept: &mut KeptViews<String>, nodes: &[Node]) -> Vec<Arc<String>> {
        kept.refresh(
            nodes,
            |n| n.metadata.name.as_deref(),
            |n| format!("{:?}@{:?}", n.metadata.name, n.metadata.resource_version),
        )
    }

    #[test]
    fn views_are_kept_per_version_and_dropped_with_their_object() {
        let mut kept = KeptViews::default();
        let first = refresh(&mut kept, &[node(Some("a"), "1"), node(Some("b"), "1")]);
        let second = refresh(&mut kept, &[node(Some("b"), "2"), node(Some("a"), "1")]);
        assert!(Arc::ptr_eq(&first[0], &second[1]), "a unchanged: kept");
        assert!(
            !Arc::ptr_eq(&first[1], &second[0]),
            "b changed: built again"
        );
        refresh(&mut kept, &[node(Some("b"), "2")]);
        assert_eq!(kept.ids().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn an_object_without_an_id_gets_a_view_that_is_not_kept() {
        let mut kept = KeptViews::default();
        let views = refresh(&mut kept, &[node(None, "1"), node(Some("a"), "1")]);
        assert_eq!(views.len(), 2);
        assert_eq!(kept.ids().collect::<Vec<_>>(), ["a"]);
    }
}
