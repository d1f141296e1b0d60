//! What `explain` says about a node readiness gate: which sets declaring the taint a node
//! still carries have no available pod there.

use std::collections::HashMap;

use anyhow::Context;
use everynode_core::gate::{pods_on_node, tainted};
use everynode_core::{NodeMatcher, NodeView, PodView, SetView, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// One set declaring the key: its name, placement, `minReadySeconds` and pods by node.
struct GateSet {
    name: String,
    matcher: NodeMatcher,
    min_ready: i64,
    pods: HashMap<String, Vec<PodView>>,
}

/// The sets declaring one taint key, with their pods by node.
pub struct GateSets {
    key: String,
    sets: Vec<GateSet>,
}

impl GateSets {
    /// Reads every everynode set declaring `key` (all namespaces) and its pods.
    pub async fn read(client: &Client, key: &str) -> anyhow::Result<Self> {
        let all: Api<everynode_api::DaemonSet> = Api::all(client.clone());
        let listed = all
            .list(&ListParams::default())
            .await
            .context("listing the everynode DaemonSets of every namespace")?;
        let mut sets = Vec::new();
        for set in listed.items {
            let Ok(view) = SetView::from_daemon_set(&set) else {
                continue;
            };
            if view
                .spec
                .node_readiness
                .as_ref()
                .is_none_or(|g| g.taint.key != key)
            {
                continue;
            }
            let pods: Api<Pod> = Api::namespaced(client.clone(), &view.namespace);
            let listed = pods.list(&ListParams::default()).await?.items;
            let by_node = everynode_core::gate::pods_by_node(&listed, &view.uid);
            sets.push(GateSet {
                name: format!("{}/{}", view.namespace, set.name_any()),
                matcher: NodeMatcher::for_set(&view.spec),
                min_ready: i64::from(view.spec.min_ready_seconds.unwrap_or(0)),
                pods: by_node,
            });
        }
        Ok(Self {
            key: key.to_owned(),
            sets,
        })
    }

    /// The gate line of `node`, when it carries the taint.
    pub fn explain(&self, node: &NodeView, now: Timestamp) -> Option<String> {
        if !tainted(&node.taints, &self.key) {
            return None;
        }
        let waiting: Vec<&str> = self
            .sets
            .iter()
            .filter(|set| set.matcher.evaluate(node).should_run)
            .filter(|set| {
                let pods = set.pods.get(&node.name).into_iter().flatten();
                !pods_on_node(pods, now, set.min_ready).0
            })
            .map(|set| set.name.as_str())
            .collect();
        Some(if waiting.is_empty() {
            format!(
                "taint {} on the node; every set declaring it has an available pod here, so the \
                 controller takes it off",
                self.key
            )
        } else {
            format!(
                "taint {} on the node; waiting for an available pod of {}",
                self.key,
                waiting.join(", ")
            )
        })
    }
}
