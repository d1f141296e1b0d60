//! State shared by every reconcile: the client, the caches, the event recorder, metrics,
//! pending writes and the failed-pod backoff table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use everynode_core::BackoffEntry;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::events::PodWriteWindows;
use crate::expectations::Expectations;
use crate::metrics::Metrics;
use crate::pacing::Pacer;
use crate::target::Target;
use crate::triggers::QueueDepth;

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Sets reconciled at once.
    pub workers: u16,
    /// Name of this replica, reported in Events.
    pub instance: Option<String>,
    /// Which DaemonSets to run.
    pub target: Target,
    /// The apiserver's clock: plans run on it (fed by a [`crate::server_clock::ClockLayer`] on
    /// the controller's client; without one it is the local clock).
    pub server_clock: std::sync::Arc<crate::server_clock::ServerClock>,
    /// With `--target apps/v1`: how long after the built-in controller's last write to a set
    /// everynode waits before writing its pods ([`crate::builtin`]).
    pub builtin_quiet_period: std::time::Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            workers: 8,
            instance: None,
            target: Target::default(),
            server_clock: Default::default(),
            builtin_quiet_period: crate::builtin::QUIET_PERIOD,
        }
    }
}

/// Failed-pod backoff entries keyed by `<set uid>/<observedGeneration>/<node>` (upstream's key).
#[derive(Debug, Default)]
pub struct BackoffTable {
    entries: Mutex<HashMap<String, BackoffEntry>>,
}

impl BackoffTable {
    fn key(set_uid: &str, generation: i64, node: &str) -> String {
        format!("{set_uid}/{generation}/{node}")
    }

    /// The entries of one set at one generation, by node.
    pub fn for_set(&self, set_uid: &str, generation: i64) -> BTreeMap<String, BackoffEntry> {
        let prefix = format!("{set_uid}/{generation}/");
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|node| (node.to_owned(), *v)))
            .collect()
    }

    /// Stores an entry.
    pub fn store(&self, set_uid: &str, generation: i64, node: &str, entry: BackoffEntry) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::key(set_uid, generation, node), entry);
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&self, keep: impl Fn(&BackoffEntry) -> bool) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| keep(v));
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Cache of pods (in the watched namespaces).
    pub pods: Store<Pod>,
    /// The pods of each set and the orphans ([`crate::pod_index::PodIndex::with_pods_of`]).
    pub pod_index: std::sync::Arc<crate::pod_index::PodIndex>,
    /// Cache of nodes.
    pub nodes: Store<Node>,
    /// The planner's node views, kept between reconciles and shared by every set.
    pub node_views: crate::node_views::NodeViews,
    /// The planner's pod views, kept between reconciles per set.
    pub pod_views: crate::pod_views::PodViews,
    /// Cache of ControllerRevisions (in the watched namespaces).
    pub revisions: Store<ControllerRevision>,
    /// Publishes Events on sets.
    pub recorder: Recorder,
    /// Pod writes gathered per set for their summary Events.
    pub pod_write_windows: PodWriteWindows,
    /// Metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// Writes not yet seen in the caches.
    pub expectations: std::sync::Arc<Expectations>,
    /// Failed-pod backoff.
    pub backoff: BackoffTable,
    /// Pacing of progress-only status writes ([`crate::pacing::status_progress`]).
    pub status_pacer: Pacer,
    /// Pacing of reconcile starts ([`crate::pacing::reconciles`]).
    pub reconcile_pacer: Pacer,
    /// Where each set's slow start of pod creates begins.
    pub slow_starts: crate::slow_start::SlowStarts,
    /// Consecutive reconcile failures per set (`namespace/name`), for error backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Whether the apiserver accepts pods of each set's template.
    pub template_verdicts: crate::template_verdicts::TemplateVerdicts,
    /// The image pre-pulls the apiserver refused.
    pub pre_pull_refusals: crate::pre_pulls::PrePullRefusals,
    /// Sets waiting for a reconcile.
    pub queue: std::sync::Arc<QueueDepth>,
    /// When this replica began reconciling (the apiserver's clock).
    pub started: everynode_core::Timestamp,
    /// Settings.
    pub config: ControllerConfig,
    /// The gate key each set declared at its last reconcile.
    pub gate_keys: crate::gate_keys::GateKeys,
    /// The everynode set cache (with `--target everynode.dev/v1alpha1`): node readiness gates
    /// look at every set declaring their key.
    pub everynode_sets: Option<Store<everynode_api::DaemonSet>>,
}

impl Context {
    /// The cached pod `name` if the set with `set_uid` reads it: its own (by controller UID)
    /// or an orphan of its namespace ([`crate::pod_index::PodIndex::with_pods_of`]).
    #[must_use]
    pub fn pod_of(
        &self,
        namespace: &str,
        set_uid: &str,
        name: &str,
    ) -> Option<std::sync::Arc<Pod>> {
        self.pod_index.pod_of(namespace, set_uid, name)
    }
}
