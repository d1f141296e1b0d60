//! An outside observer of a set's pods: every pod event from a watch, checked as it comes
//! against the invariants a DaemonSet rollout must hold.
//!
//! - **No duplicate**: no node ever runs two live (not terminating) pods of one revision.
//! - **Budget**, once [`PodLedger::check_budget`] is on: of the given nodes, no more than
//!   `maxUnavailable` are without a live Ready pod.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};

use crate::pods;

/// What the ledger keeps of a live pod.
#[derive(Clone, Debug)]
struct LivePod {
    node: Option<String>,
    revision: String,
    ready: bool,
}

/// The live pods seen so far and the invariant violations among them.
#[derive(Debug, Default)]
pub struct PodLedger {
    live: BTreeMap<String, LivePod>,
    pods_by_node_revision: BTreeMap<(String, String), usize>,
    ready_pods_by_node: BTreeMap<String, usize>,
    budget: Option<(BTreeSet<String>, usize)>,
    events: usize,
    violations: Vec<String>,
}

impl PodLedger {
    /// Records one pod event (`deleted`: the watch said it is gone) and checks the invariants.
    pub fn observe(&mut self, pod: &Pod, deleted: bool) {
        self.events += 1;
        let name = pod.name_any();
        if let Some(old) = self.live.remove(&name) {
            self.forget(&old);
        }
        if !deleted && pod.metadata.deletion_timestamp.is_none() {
            let seen = LivePod {
                node: everynode_core::target_node_name(pod).ok(),
                revision: pod
                    .labels()
                    .get("controller-revision-hash")
                    .cloned()
                    .unwrap_or_default(),
                ready: pods::is_ready(pod),
            };
            self.remember(&seen);
            self.live.insert(name, seen);
        }
        self.check_budget_now();
    }

    /// From now on, checks that at most `max_unavailable` of `nodes` lack a live Ready pod.
    pub fn check_budget(&mut self, nodes: BTreeSet<String>, max_unavailable: usize) {
        self.budget = Some((nodes, max_unavailable));
    }

    /// Stops the budget check (e.g. while nodes are added or removed on purpose).
    pub fn stop_budget_check(&mut self) {
        self.budget = None;
    }

    /// Pod events seen.
    #[must_use]
    pub fn events(&self) -> usize {
        self.events
    }

    /// Every invariant violation seen, in order.
    #[must_use]
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Live pods seen now.
    #[must_use]
    pub fn live_pods(&self) -> usize {
        self.live.len()
    }

    fn remember(&mut self, pod: &LivePod) {
        let Some(node) = &pod.node else { return };
        let count = self
            .pods_by_node_revision
            .entry((node.clone(), pod.revision.clone()))
            .or_default();
        *count += 1;
        if *count > 1 {
            let (count, events) = (*count, self.events);
            self.violations.push(format!(
                "event {events}: {count} live pods of revision {} on {node}",
                pod.revision
            ));
        }
        if pod.ready {
            *self.ready_pods_by_node.entry(node.clone()).or_default() += 1;
        }
    }

    fn forget(&mut self, pod: &LivePod) {
        let Some(node) = &pod.node else { return };
        let key = (node.clone(), pod.revision.clone());
        decrement(&mut self.pods_by_node_revision, key);
        if pod.ready {
            decrement(&mut self.ready_pods_by_node, node.clone());
        }
    }

    fn check_budget_now(&mut self) {
        let Some((nodes, max_unavailable)) = &self.budget else {
            return;
        };
        let unavailable = nodes
            .iter()
            .filter(|n| !self.ready_pods_by_node.contains_key(*n))
            .count();
        if unavailable > *max_unavailable {
            self.violations.push(format!(
                "event {}: {unavailable} nodes without a Ready pod (maxUnavailable {max_unavailable})",
                self.events
            ));
        }
    }
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

/// A [`PodLedger`] fed by a watch of the pods `api` lists with `labels`, until dropped.
#[derive(Debug)]
pub struct WatchedLedger {
    ledger: Arc<Mutex<PodLedger>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchedLedger {
    /// Starts watching (the first events are the pods that exist now).
    #[must_use]
    pub fn start(api: Api<Pod>, labels: &str) -> Self {
        let ledger = Arc::new(Mutex::new(PodLedger::default()));
        let fed = ledger.clone();
        let stream = watcher(api, watcher::Config::default().labels(labels));
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.default_backoff());
            while let Some(event) = stream.next().await {
                let mut ledger = fed.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        ledger.observe(&pod, false);
                    }
                    Ok(watcher::Event::Delete(pod)) => ledger.observe(&pod, true),
                    _ => {}
                }
            }
        });
        Self { ledger, task }
    }

    /// The ledger as of now.
    pub fn lock(&self) -> MutexGuard<'_, PodLedger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for WatchedLedger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, revision: &str, ready: bool) -> Pod {
        let status = if ready { "True" } else { "False" };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"controller-revision-hash": revision}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"conditions": [{"type": "Ready", "status": status}]}
        }))
        .expect("pod")
    }

    #[test]
    fn two_live_pods_of_one_revision_on_a_node_are_a_duplicate() {
        let mut ledger = PodLedger::default();
        ledger.observe(&pod("a", "n1", "r1", true), false);
        ledger.observe(&pod("b", "n1", "r2", false), false);
        assert!(ledger.violations().is_empty());
        ledger.observe(&pod("c", "n1", "r1", false), false);
        assert_eq!(ledger.violations().len(), 1, "{:?}", ledger.violations());
        // An update of a pod is not a second pod.
        let mut ledger = PodLedger::default();
        ledger.observe(&pod("a", "n1", "r1", false), false);
        ledger.observe(&pod("a", "n1", "r1", true), false);
        assert!(ledger.violations().is_empty());
    }

    #[test]
    fn the_budget_counts_nodes_without_a_ready_pod() {
        let mut ledger = PodLedger::default();
        ledger.observe(&pod("a", "n1", "r1", true), false);
        ledger.observe(&pod("b", "n2", "r1", true), false);
        let nodes = BTreeSet::from(["n1".to_owned(), "n2".to_owned()]);
        ledger.check_budget(nodes, 1);
        ledger.observe(&pod("a", "n1", "r1", true), true);
        assert!(ledger.violations().is_empty());
        ledger.observe(&pod("b", "n2", "r1", false), false);
        assert_eq!(ledger.violations().len(), 1, "{:?}", ledger.violations());
        assert_eq!(ledger.events(), 4);
        assert_eq!(ledger.live_pods(), 1);
    }
}
