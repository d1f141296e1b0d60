//! Status (§7): the seven counters, computed over the node list and the pods mapped to it.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use everynode_api::DaemonSetStatus;
use k8s_openapi::jiff::Timestamp;

use crate::state::State;

mod conditions;
pub mod pacing;
mod rollout;

pub use conditions::{
    AVAILABLE_CONDITION, PROGRESSING_CONDITION, READY_CONDITION, RECONCILING_CONDITION,
    ROLLOUT_FAILED_CONDITION, ROLLOUT_FROZEN_CONDITION, ROLLOUT_PAUSED_CONDITION, RolloutFacts,
    STALLED_CONDITION, rollout_conditions,
};
pub use rollout::RolloutStatus;

/// The counters of §7.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatusCounts {
    /// `desiredNumberScheduled`.
    pub desired: i32,
    /// `currentNumberScheduled`.
    pub current: i32,
    /// `numberMisscheduled`.
    pub misscheduled: i32,
    /// `numberReady`.
    pub ready: i32,
    /// `updatedNumberScheduled`.
    pub updated: i32,
    /// `numberAvailable`.
    pub available: i32,
    /// `numberUnavailable`.
    pub unavailable: i32,
}

impl StatusCounts {
    /// Whether the counters equal those of `status`.
    pub fn equals(&self, status: &DaemonSetStatus) -> bool {
        self.desired == status.desired_number_scheduled
            && self.current == status.current_number_scheduled
            && self.misscheduled == status.number_misscheduled
            && self.ready == status.number_ready
            && Some(self.updated) == status.updated_number_scheduled
            && Some(self.available) == status.number_available
            && Some(self.unavailable) == status.number_unavailable
    }

    /// `previous` with these counters (and observedGeneration when given); collisionCount and
    /// conditions are carried over.
    pub fn apply_to(
        &self,
        previous: Option<&DaemonSetStatus>,
        observed_generation: Option<i64>,
    ) -> DaemonSetStatus {
        let mut s = previous.cloned().unwrap_or_default();
        s.desired_number_scheduled = self.desired;
        s.current_number_scheduled = self.current;
        s.number_misscheduled = self.misscheduled;
        s.number_ready = self.ready;
        s.updated_number_scheduled = Some(self.updated);
        s.number_available = Some(self.available);
        s.number_unavailable = Some(self.unavailable);
        if observed_generation.is_some() {
            s.observed_generation = observed_generation;
        }
        s
    }
}

pub(crate) fn count(state: &State<'_>) -> StatusCounts {
    let mut c = StatusCounts::default();
    for slot in &state.slots {
        if slot.elig.should_run {
            c.desired += 1;
            if let Some(&first) = slot.pods.first() {
                c.current += 1;
                let pod = &state.pods[first];
                if pod.ready {
                    c.ready += 1;
                    if pod.available {
                        c.available += 1;
                    }
                }
                if pod.updated {
                    c.updated += 1;
                }
            }
        } else if !slot.pods.is_empty() {
            c.misscheduled += 1;
        }
    }
    c.unavailable = c.desired - c.available;
    c
}

/// `IsPodUpdated` (§6.0) on a pod's labels: the hash label equals a non-empty `hash`, or the
/// `pod-template-generation` label equals the set's template generation.
pub fn is_pod_updated(
    labels: &std::collections::BTreeMap<String, String>,
    hash: &str,
    template_generation: Option<i64>,
) -> bool {
    use everynode_api::labels::{CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION};
    (!hash.is_empty()
        && labels
            .get(CONTROLLER_REVISION_HASH)
            .is_some_and(|h| h == hash))
        || template_generation.is_some_and(|g| {
            labels
                .get(POD_TEMPLATE_GENERATION)
                .is_some_and(|v| *v == g.to_string())
        })
}

/// `IsPodAvailable` (§6.0): Ready, and Ready for more than `min_ready_seconds` at `now`.
pub fn is_pod_available(
    pod: &crate::snapshot::PodView,
    min_ready_seconds: i32,
    now: Timestamp,
) -> bool {
    if !pod.ready {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let min_ready = std::time::Duration::from_secs(u64::try_from(min_ready_seconds).unwrap_or(0));
    pod.ready_since
        .is_some_and(|t| crate::backoff::since(now, t) > crate::backoff::signed(min_ready))
}
