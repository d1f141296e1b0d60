//! Prometheus metrics of the controller, served on `/metrics`.
//!
//! Labels are bounded: per-set gauges carry `namespace` and `name` (one series per set), never
//! node or pod names.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome of one reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// The reconcile finished without error.
    Ok,
    /// The reconcile failed and will be retried with backoff.
    Error,
}

/// Labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// How the reconcile ended.
    pub outcome: Outcome,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// A short, bounded error category (e.g. `api`, `invalid-spec`, `conflict`).
    pub category: String,
}

/// Labels of per-set gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SetLabels {
    /// Namespace of the set.
    pub namespace: String,
    /// Name of the set.
    pub name: String,
}

/// Labels of the API retry counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The HTTP status of the answer that was retried (429, 503 or 504).
    pub code: u16,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by outcome.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// Reconcile errors by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Pods the controller created.
    pub pods_created: Counter,
    /// Pods the controller deleted.
    pub pods_deleted: Counter,
    /// Nodes that should run each set's pod.
    pub desired: Family<SetLabels, Gauge>,
    /// Nodes whose pod of each set is Ready.
    pub ready: Family<SetLabels, Gauge>,
    /// Nodes whose pod of each set runs the current revision.
    pub updated: Family<SetLabels, Gauge>,
    /// Nodes whose pod of each set is available.
    pub available: Family<SetLabels, Gauge>,
    /// Sets waiting for a reconcile.
    pub queue_depth: Gauge,
    /// 1 while this replica leads (reconciles), else 0.
    pub leader: Gauge,
    /// API requests sent again after a throttled or unavailable answer, by its code.
    pub api_retries: Family<RetryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("everynode");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of DaemonSets, by outcome",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent reconciling one DaemonSet",
            reconcile_duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors, by category",
            errors.clone(),
        );
        let pods_created = Counter::default();
        registry.register("pods_created", "Daemon pods created", pods_created.clone());
        let pods_deleted = Counter::default();
        registry.register("pods_deleted", "Daemon pods deleted", pods_deleted.clone());
        let desired = Family::<SetLabels, Gauge>::default();
        registry.register(
            "daemonset_desired_nodes",
            "Nodes that should run the set's pod",
            desired.clone(),
        );
        let ready = Family::<SetLabels, Gauge>::default();
        registry.register(
            "daemonset_ready_nodes",
            "Nodes whose daemon pod is Ready",
            ready.clone(),
        );
        let updated = Family::<SetLabels, Gauge>::default();
        registry.register(
            "daemonset_updated_nodes",
            "Nodes whose daemon pod runs the current revision",
            updated.clone(),
        );
        let available = Family::<SetLabels, Gauge>::default();
        registry.register(
            "daemonset_available_nodes",
            "Nodes whose daemon pod is available",
            available.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "reconcile_queue_depth",
            "DaemonSets asked to reconcile that have not started yet",
            queue_depth.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads and reconciles, 0 on a standby",
            leader.clone(),
        );
        let api_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "api_retries",
            "API requests sent again after a 429, 503 or 504 answer, by its code",
            api_retries.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            pods_created,
            pods_deleted,
            desired,
            ready,
            updated,
            available,
            queue_depth,
            leader,
            api_retries,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile.
    pub fn observe_reconcile(&self, outcome: Outcome, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { outcome })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Records an error of a category.
    pub fn observe_error(&self, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: category.to_owned(),
            })
            .inc();
    }

    /// Publishes a set's counters.
    pub fn observe_set(
        &self,
        set: SetLabels,
        desired: i32,
        ready: i32,
        updated: i32,
        available: i32,
    ) {
        self.desired.get_or_create(&set).set(desired.into());
        self.ready.get_or_create(&set).set(ready.into());
        self.updated.get_or_create(&set).set(updated.into());
        self.available.get_or_create(&set).set(available.into());
    }

    /// Removes a deleted set's series.
    pub fn forget_set(&self, set: &SetLabels) {
        self.desired.remove(set);
        self.ready.remove(set);
        self.updated.remove(set);
        self.available.remove(set);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_per_set_gauges() {
        let m = Metrics::default();
        m.observe_reconcile(Outcome::Ok, Duration::from_millis(3));
        m.observe_error("api");
        m.pods_created.inc_by(5);
        let set = SetLabels {
            namespace: "kube-system".into(),
            name: "fluent-bit".into(),
        };
        m.observe_set(set.clone(), 5, 4, 3, 2);
        let text = m.render().expect("encodes");
        assert!(
            text.contains("everynode_reconciles_total{outcome=\"Ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("everynode_reconcile_errors_total{category=\"api\"} 1"),
            "{text}"
        );
        assert!(text.contains("everynode_pods_created_total 5"), "{text}");
        assert!(
            text.contains(
                "everynode_daemonset_ready_nodes{namespace=\"kube-system\",name=\"fluent-bit\"} 4"
            ),
            "{text}"
        );
        m.forget_set(&set);
        assert!(!m.render().expect("encodes").contains("fluent-bit"));
    }
}
