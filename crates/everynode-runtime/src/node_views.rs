//! The planner's node views, kept between reconciles and shared by every set: a view is built
//! again only when its node changed ([`KeptViews`]), so a reconcile of one set among fifty on
//! 5,000 nodes copies no labels.

use std::sync::{Arc, Mutex};

use everynode_core::NodeView;
use k8s_openapi::api::core::v1::Node;

use crate::kept_views::KeptViews;

/// The kept views of every node.
#[derive(Debug, Default)]
pub struct NodeViews {
    views: Mutex<KeptViews<Node, NodeView>>,
}

impl NodeViews {
    /// The views of `nodes` (in their order), reusing those whose node has not changed and
    /// forgetting nodes that are gone.
    pub fn of(&self, nodes: &[Arc<Node>]) -> Vec<Arc<NodeView>> {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views.refresh(nodes, |node| Some(NodeView::from_node(node)))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, version: &str, zone: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                labels: Some([("zone".to_owned(), zone.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn a_view_is_built_again_only_when_its_node_changed() {
        let views = NodeViews::default();
        let a = node("a", "1", "z1");
        let first = views.of(&[a.clone(), node("b", "1", "z1")]);
        let again = views.of(&[a, node("b", "2", "z2")]);
        assert!(
            Arc::ptr_eq(&first[0], &again[0]),
            "unchanged node: the same view"
        );
        assert!(
            !Arc::ptr_eq(&first[1], &again[1]),
            "changed node: a new view"
        );
        assert_eq!(again[1].labels["zone"], "z2");
    }

    #[test]
    fn nodes_that_are_gone_are_forgotten() {
        let views = NodeViews::default();
        let b = node("b", "1", "z1");
        views.of(&[node("a", "1", "z1"), b.clone()]);
        let left = views.of(&[b]);
        assert_eq!(left.len(), 1);
        let kept = views.views.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(kept.len(), 1);
    }
}
