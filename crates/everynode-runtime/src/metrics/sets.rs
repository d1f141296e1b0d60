//! Per-set series: kube-state-metrics' DaemonSet gauges (`everynode_daemonset_*`, the same
//! counters under the same names) and what only everynode knows — rollout state, wave, failed,
//! skipped and blocked nodes.

use everynode_api::DaemonSetStatus;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

/// Which kind of DaemonSet a series is about.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SetKind {
    /// `everynode.dev/v1alpha1`.
    everynode,
    /// `apps/v1`.
    apps_v1,
}

impl From<crate::Target> for SetKind {
    fn from(target: crate::Target) -> Self {
        match target {
            crate::Target::Everynode => Self::everynode,
            crate::Target::AppsV1 => Self::apps_v1,
        }
    }
}

/// Labels of per-set series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SetLabels {
    /// The set's kind.
    pub target: SetKind,
    /// Namespace of the set.
    pub namespace: String,
    /// Name of the set.
    pub name: String,
}

/// Where a set's rollout stands (`everynode_daemonset_rollout_state`, one series per state).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RolloutState {
    /// Every desired node runs an available pod of the update revision.
    complete,
    /// The rollout is under way.
    rolling_out,
    /// Only nodes a partition or canary selector holds are left.
    held,
    /// `spec.paused`.
    paused,
    /// `spec.frozen`.
    frozen,
    /// The rollout failed (progress deadline or failed nodes).
    failed,
    /// The apiserver refuses pods of the template.
    template_rejected,
}

impl RolloutState {
    /// Every state, in the order the series are written.
    pub const ALL: [Self; 7] = [
        Self::complete,
        Self::rolling_out,
        Self::held,
        Self::paused,
        Self::frozen,
        Self::failed,
        Self::template_rejected,
    ];

    /// The state the `Progressing` condition's reason names (everynode kind).
    fn from_progressing_reason(reason: &str) -> Self {
        match reason {
            "RolloutComplete" => Self::complete,
            "RolloutHeld" => Self::held,
            "RolloutPaused" => Self::paused,
            "RolloutFrozen" => Self::frozen,
            "TemplateRejected" => Self::template_rejected,
            "RollingOut" => Self::rolling_out,
            _ => Self::failed,
        }
    }
}

/// Labels of the rollout state set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct StateLabels {
    /// The set's kind.
    pub target: SetKind,
    /// Namespace of the set.
    pub namespace: String,
    /// Name of the set.
    pub name: String,
    /// The state.
    pub state: RolloutState,
}

/// The values of one set's series, read from the status the controller wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSeries {
    /// `desiredNumberScheduled`.
    pub desired: i64,
    /// `currentNumberScheduled`.
    pub current: i64,
    /// `numberReady`.
    pub ready: i64,
    /// `numberAvailable`.
    pub available: i64,
    /// `numberUnavailable`.
    pub unavailable: i64,
    /// `updatedNumberScheduled`.
    pub updated: i64,
    /// `numberMisscheduled`.
    pub misscheduled: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// `metadata.generation`.
    pub metadata_generation: i64,
    /// Where the rollout stands.
    pub state: RolloutState,
    /// The wave in progress (1-based; 0 when none) and the number of waves.
    pub wave: (i64, i64),
    /// Nodes the failed rollout lists (at most 50, as the status).
    pub failed_nodes: i64,
    /// Nodes skipped because they are down.
    pub skipped_nodes: i64,
    /// Nodes that will not run an updated, available pod without a change.
    pub blocked_nodes: i64,
}

impl SetSeries {
    /// The series of a set whose status is `status` and generation `generation`.
    pub fn of(status: &DaemonSetStatus, generation: Option<i64>) -> Self {
        let desired = i64::from(status.desired_number_scheduled);
        let updated = i64::from(status.updated_number_scheduled.unwrap_or_default());
        let available = i64::from(status.number_available.unwrap_or_default());
        let progressing = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == everynode_core::status::PROGRESSING_CONDITION);
        let state = match progressing {
            Some(c) => RolloutState::from_progressing_reason(&c.reason),
            // apps/v1 has no rollout conditions: complete or under way.
            None if updated >= desired && available >= desired => RolloutState::complete,
            None => RolloutState::rolling_out,
        };
        let wave = status
            .wave
            .as_ref()
            .map_or((0, 0), |w| (i64::from(w.index), i64::from(w.domains)));
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            desired,
            current: i64::from(status.current_number_scheduled),
            ready: i64::from(status.number_ready),
            available,
            unavailable: i64::from(status.number_unavailable.unwrap_or_default()),
            updated,
            misscheduled: i64::from(status.number_misscheduled),
            observed_generation: status.observed_generation.unwrap_or_default(),
            metadata_generation: generation.unwrap_or_default(),
            state,
            wave,
            failed_nodes: count(status.failure.as_ref().map_or(0, |f| f.failed_nodes.len())),
            skipped_nodes: count(status.skipped_nodes.as_ref().map_or(0, Vec::len)),
            blocked_nodes: status
                .blocked_totals
                .iter()
                .flatten()
                .map(|t| i64::from(t.count))
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn progressing(reason: &str) -> Condition {
        Condition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(Default::default()),
            observed_generation: None,
        }
    }

    #[test]
    fn the_state_follows_the_progressing_reason() {
        for (reason, state) in [
            ("RolloutComplete", RolloutState::complete),
            ("RollingOut", RolloutState::rolling_out),
            ("RolloutHeld", RolloutState::held),
            ("RolloutPaused", RolloutState::paused),
            ("RolloutFrozen", RolloutState::frozen),
            ("TemplateRejected", RolloutState::template_rejected),
            ("ProgressDeadlineExceeded", RolloutState::failed),
            ("FailedNodesExceeded", RolloutState::failed),
        ] {
            let status = DaemonSetStatus {
                conditions: Some(vec![progressing(reason)]),
                ..Default::default()
            };
            assert_eq!(SetSeries::of(&status, Some(1)).state, state, "{reason}");
        }
    }

    #[test]
    fn an_apps_v1_set_is_complete_when_every_node_is_updated_and_available() {
        let mut status = DaemonSetStatus {
            desired_number_scheduled: 3,
            updated_number_scheduled: Some(3),
            number_available: Some(2),
            observed_generation: Some(4),
            ..Default::default()
        };
        let series = SetSeries::of(&status, Some(5));
        assert_eq!(series.state, RolloutState::rolling_out);
        assert_eq!(
            (series.observed_generation, series.metadata_generation),
            (4, 5)
        );
        status.number_available = Some(3);
        assert_eq!(
            SetSeries::of(&status, Some(5)).state,
            RolloutState::complete
        );
    }
}
