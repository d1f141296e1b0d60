//! Prometheus metrics of the controller, served on `/metrics`.
//!
//! Labels are bounded: per-set series carry `target`, `namespace` and `name` (one series per
//! set), never node or pod names; label values are lower_snake case.

mod api;
mod process;
mod sets;

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use api::{ApiMetricsLayer, ApiSeries, LatencyLabels, RequestLabels, classify};
pub use process::ProcessCollector;
pub use sets::{RolloutState, SetKind, SetLabels, SetSeries, StateLabels};

/// Outcome of one reconcile.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// The reconcile finished without error.
    ok,
    /// The reconcile failed and will be retried with backoff.
    error,
    /// Not started: inside its set's pacing interval, with the set's own pod writes not in
    /// the caches yet (see `pacing`).
    deferred,
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
    /// A short, bounded error category (e.g. `api`, `invalid_object`, `conflict`).
    pub category: String,
}

/// Labels of the API retry counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The HTTP status of the answer that was retried (429, 503 or 504).
    pub code: u16,
}

/// Labels of the watch restart counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The watched resource (`pods`, `nodes`, `daemonsets`, `controllerrevisions`).
    pub resource: String,
}

/// Labels of `everynode_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: String,
    /// The commit built (`EVERYNODE_REVISION` at build time, which `cargo xtask image` sets;
    /// `unknown` otherwise).
    pub revision: String,
    /// The kind of DaemonSet this controller runs.
    pub target: SetKind,
}

/// Gauges of one set, by family (see [`SetSeries`]).
#[derive(Debug, Default)]
pub struct SetFamilies {
    desired: Family<SetLabels, Gauge>,
    current: Family<SetLabels, Gauge>,
    ready: Family<SetLabels, Gauge>,
    available: Family<SetLabels, Gauge>,
    unavailable: Family<SetLabels, Gauge>,
    updated: Family<SetLabels, Gauge>,
    misscheduled: Family<SetLabels, Gauge>,
    observed_generation: Family<SetLabels, Gauge>,
    metadata_generation: Family<SetLabels, Gauge>,
    wave: Family<SetLabels, Gauge>,
    waves: Family<SetLabels, Gauge>,
    failed_nodes: Family<SetLabels, Gauge>,
    skipped_nodes: Family<SetLabels, Gauge>,
    blocked_nodes: Family<SetLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    rollbacks: Family<SetLabels, Counter>,
}

impl SetFamilies {
    /// `(name, help, family)` of every gauge that takes a value of [`SetSeries`].
    fn gauges(&self) -> [(&'static str, &'static str, &Family<SetLabels, Gauge>); 14] {
        [
            (
                "daemonset_desired_number_scheduled",
                "Nodes that should run the set's pod",
                &self.desired,
            ),
            (
                "daemonset_current_number_scheduled",
                "Nodes that should run the set's pod and run one",
                &self.current,
            ),
            (
                "daemonset_number_ready",
                "Nodes whose daemon pod is Ready",
                &self.ready,
            ),
            (
                "daemonset_number_available",
                "Nodes whose daemon pod is available",
                &self.available,
            ),
            (
                "daemonset_number_unavailable",
                "Nodes that should run the set's pod and have no available one",
                &self.unavailable,
            ),
            (
                "daemonset_updated_number_scheduled",
                "Nodes whose daemon pod runs the update revision",
                &self.updated,
            ),
            (
                "daemonset_number_misscheduled",
                "Nodes that run the set's pod but should not",
                &self.misscheduled,
            ),
            (
                "daemonset_observed_generation",
                "The generation the controller last acted on",
                &self.observed_generation,
            ),
            (
                "daemonset_metadata_generation",
                "The set's metadata.generation",
                &self.metadata_generation,
            ),
            (
                "daemonset_rollout_wave",
                "The zone wave in progress, from 1 (0: none)",
                &self.wave,
            ),
            (
                "daemonset_rollout_waves",
                "Zone waves of the rollout (0: no topology waves)",
                &self.waves,
            ),
            (
                "daemonset_failed_nodes",
                "Nodes the failed rollout lists (at most 50)",
                &self.failed_nodes,
            ),
            (
                "daemonset_skipped_nodes",
                "Down nodes the rollout skips (unavailableNodePolicy Skip)",
                &self.skipped_nodes,
            ),
            (
                "daemonset_blocked_nodes",
                "Nodes that will not run an updated, available pod without a change",
                &self.blocked_nodes,
            ),
        ]
    }

    fn register(&self, registry: &mut Registry) {
        for (name, help, family) in self.gauges() {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "daemonset_rollout_state",
            "Where the set's rollout stands: 1 for the current state, 0 for the others",
            self.state.clone(),
        );
        registry.register(
            "daemonset_rollbacks",
            "Automatic rollbacks (failurePolicy Rollback) this process performed",
            self.rollbacks.clone(),
        );
    }

    fn observe(&self, set: &SetLabels, s: &SetSeries) {
        let values = [
            s.desired,
            s.current,
            s.ready,
            s.available,
            s.unavailable,
            s.updated,
            s.misscheduled,
            s.observed_generation,
            s.metadata_generation,
            s.wave.0,
            s.wave.1,
            s.failed_nodes,
            s.skipped_nodes,
            s.blocked_nodes,
        ];
        for ((_, _, family), value) in self.gauges().into_iter().zip(values) {
            family.get_or_create(set).set(value);
        }
        for state in RolloutState::ALL {
            self.state
                .get_or_create(&state_labels(set, state))
                .set(i64::from(state == s.state));
        }
        // From 0, so that `increase()` sees the first rollback.
        let _ = self.rollbacks.get_or_create(set);
    }

    fn forget(&self, set: &SetLabels) {
        for (_, _, family) in self.gauges() {
            family.remove(set);
        }
        for state in RolloutState::ALL {
            self.state.remove(&state_labels(set, state));
        }
        self.rollbacks.remove(set);
    }
}

fn state_labels(set: &SetLabels, state: RolloutState) -> StateLabels {
    StateLabels {
        target: set.target,
        namespace: set.namespace.clone(),
        name: set.name.clone(),
        state,
    }
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
    /// Per-set series.
    sets: SetFamilies,
    /// Sets waiting for a reconcile.
    pub queue_depth: Gauge,
    /// 1 while this replica leads (reconciles), else 0.
    pub leader: Gauge,
    /// Times this replica gained or lost the leader Lease.
    pub leader_transitions: Counter,
    /// API requests sent again after a throttled or unavailable answer, by its code.
    pub api_retries: Family<RetryLabels, Counter>,
    /// API requests and their latency.
    pub api: ApiSeries,
    /// Watches that failed and were restarted, by resource.
    pub watch_restarts: Family<WatchLabels, Counter>,
}

impl Metrics {
    /// The metrics of a controller of `target` sets.
    pub fn new(target: SetKind) -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("everynode");
        registry.register(
            "build",
            "The controller's version and target, value 1",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                revision: option_env!("EVERYNODE_REVISION")
                    .unwrap_or("unknown")
                    .to_owned(),
                target,
            }),
        );
        let metrics = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            errors: Family::default(),
            pods_created: Counter::default(),
            pods_deleted: Counter::default(),
            sets: SetFamilies::default(),
            queue_depth: Gauge::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            api_retries: Family::default(),
            api: ApiSeries::default(),
            watch_restarts: Family::default(),
        };
        metrics.register(registry);
        Self {
            registry: root,
            ..metrics
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "reconciles",
            "Reconciles of DaemonSets, by outcome",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time spent reconciling one DaemonSet",
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconcile errors, by category",
            self.errors.clone(),
        );
        r.register(
            "pods_created",
            "Daemon pods created",
            self.pods_created.clone(),
        );
        r.register(
            "pods_deleted",
            "Daemon pods deleted",
            self.pods_deleted.clone(),
        );
        self.sets.register(r);
        r.register(
            "reconcile_queue_depth",
            "DaemonSets asked to reconcile that have not started yet",
            self.queue_depth.clone(),
        );
        r.register(
            "leader",
            "1 while this replica leads and reconciles, 0 on a standby",
            self.leader.clone(),
        );
        r.register(
            "leader_transitions",
            "Times this replica gained or lost the leader Lease",
            self.leader_transitions.clone(),
        );
        r.register(
            "api_retries",
            "API requests sent again after a 429, 503 or 504 answer, by its code",
            self.api_retries.clone(),
        );
        r.register(
            "api_requests",
            "API requests (every attempt), by verb, resource and HTTP code",
            self.api.requests.clone(),
        );
        r.register(
            "api_request_duration_seconds",
            "Time to an API response's headers (a watch: until it started), by verb and resource",
            self.api.latency.clone(),
        );
        r.register(
            "watch_restarts",
            "Watches that failed and were restarted, by resource",
            self.watch_restarts.clone(),
        );
    }

    /// Records one finished reconcile.
    pub fn observe_reconcile(&self, outcome: Outcome, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { outcome })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Records a reconcile that was deferred (not timed: it did no work).
    pub fn observe_deferred(&self) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                outcome: Outcome::deferred,
            })
            .inc();
    }

    /// Records an error of a category.
    pub fn observe_error(&self, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: category.to_owned(),
            })
            .inc();
    }

    /// Publishes a set's series.
    pub fn observe_set(&self, set: &SetLabels, series: &SetSeries) {
        self.sets.observe(set, series);
    }

    /// Counts an automatic rollback of a set.
    pub fn observe_rollback(&self, set: &SetLabels) {
        self.sets.rollbacks.get_or_create(set).inc();
    }

    /// Records this replica becoming leader (`true`) or standing down.
    pub fn observe_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        self.leader_transitions.inc();
    }

    /// Counts a watch of `resource` that failed and restarts.
    pub fn observe_watch_restart(&self, resource: &str) {
        self.watch_restarts
            .get_or_create(&WatchLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Removes a deleted set's series.
    pub fn forget_set(&self, set: &SetLabels) {
        self.sets.forget(set);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(SetKind::everynode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fluent_bit() -> SetLabels {
        SetLabels {
            target: SetKind::apps_v1,
            namespace: "kube-system".into(),
            name: "fluent-bit".into(),
        }
    }

    fn series() -> SetSeries {
        SetSeries {
            desired: 5,
            current: 5,
            ready: 4,
            available: 3,
            unavailable: 2,
            updated: 3,
            misscheduled: 1,
            observed_generation: 6,
            metadata_generation: 7,
            state: RolloutState::paused,
            wave: (2, 3),
            failed_nodes: 0,
            skipped_nodes: 1,
            blocked_nodes: 2,
        }
    }

    #[test]
    fn renders_counters_and_per_set_series() {
        let m = Metrics::new(SetKind::apps_v1);
        m.observe_reconcile(Outcome::ok, Duration::from_millis(3));
        m.observe_error("api");
        m.pods_created.inc_by(5);
        m.observe_set(&fluent_bit(), &series());
        m.observe_rollback(&fluent_bit());
        let text = m.render().expect("encodes");
        let set = r#"target="apps_v1",namespace="kube-system",name="fluent-bit""#;
        for line in [
            r#"everynode_reconciles_total{outcome="ok"} 1"#.to_owned(),
            r#"everynode_reconcile_errors_total{category="api"} 1"#.to_owned(),
            "everynode_pods_created_total 5".to_owned(),
            format!("everynode_daemonset_number_ready{{{set}}} 4"),
            format!("everynode_daemonset_number_misscheduled{{{set}}} 1"),
            format!("everynode_daemonset_metadata_generation{{{set}}} 7"),
            format!("everynode_daemonset_rollout_wave{{{set}}} 2"),
            format!(r#"everynode_daemonset_rollout_state{{{set},state="paused"}} 1"#),
            format!(r#"everynode_daemonset_rollout_state{{{set},state="complete"}} 0"#),
            format!("everynode_daemonset_rollbacks_total{{{set}}} 1"),
            format!(
                r#"everynode_build_info{{version="{}",revision="{}",target="apps_v1"}} 1"#,
                env!("CARGO_PKG_VERSION"),
                option_env!("EVERYNODE_REVISION").unwrap_or("unknown")
            ),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        m.forget_set(&fluent_bit());
        assert!(!m.render().expect("encodes").contains("fluent-bit"));
    }
}
