//! Which status writes may wait. While pods come up one after another, every reconcile moves a
//! counter; writing each step would cost one status write per reconcile (on 1,000 nodes, more
//! writes than pods). The controller paces writes that only report such progress and writes at
//! once everything a reader acts on: the first status, a new observed generation, a condition,
//! a revision, a wave, a failure or rollback, and the settled end state.

use everynode_api::DaemonSetStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Why a status write goes out at once, or that it may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// The set has no status yet.
    First,
    /// Every pod is scheduled, updated, ready and available, and none is misscheduled.
    Settled,
    /// Something besides the pod counters changed (generation, a condition's status or reason,
    /// revisions, wave, failure, rollback, skipped nodes, collision count).
    Changed,
    /// Only counters, pods per revision, blocked nodes and condition messages moved, toward a
    /// state not yet reached: the write may be paced.
    Progress,
}

impl StatusWrite {
    /// Classifies the write of `new` over `stored`.
    pub fn classify(stored: Option<&DaemonSetStatus>, new: &DaemonSetStatus) -> Self {
        let Some(stored) = stored else {
            return Self::First;
        };
        if is_settled(new) {
            return Self::Settled;
        }
        let progress_masked = DaemonSetStatus {
            current_number_scheduled: stored.current_number_scheduled,
            number_misscheduled: stored.number_misscheduled,
            desired_number_scheduled: stored.desired_number_scheduled,
            number_ready: stored.number_ready,
            updated_number_scheduled: stored.updated_number_scheduled,
            number_available: stored.number_available,
            number_unavailable: stored.number_unavailable,
            pods_per_revision: stored.pods_per_revision.clone(),
            blocked_nodes: stored.blocked_nodes.clone(),
            blocked_totals: stored.blocked_totals.clone(),
            conditions: conditions_with_stored_messages(stored, new),
            ..new.clone()
        };
        if progress_masked == *stored {
            Self::Progress
        } else {
            Self::Changed
        }
    }

    /// Whether the write may wait for the pacing interval.
    pub fn may_wait(self) -> bool {
        self == Self::Progress
    }
}

/// `new`'s conditions, each with the stored one's message (and time) where type, status and
/// reason are unchanged: messages such as "412 of 1000 node(s) run revision …" restate the
/// counters, so a message alone changing is progress too.
fn conditions_with_stored_messages(
    stored: &DaemonSetStatus,
    new: &DaemonSetStatus,
) -> Option<Vec<Condition>> {
    let stored_conditions = stored.conditions.as_deref().unwrap_or_default();
    new.conditions.as_ref().map(|conditions| {
        conditions
            .iter()
            .map(|condition| {
                stored_conditions
                    .iter()
                    .find(|old| {
                        old.type_ == condition.type_
                            && old.status == condition.status
                            && old.reason == condition.reason
                            && old.observed_generation == condition.observed_generation
                    })
                    .unwrap_or(condition)
                    .clone()
            })
            .collect()
    })
}

/// Every desired pod scheduled, updated, ready and available; none misscheduled.
fn is_settled(status: &DaemonSetStatus) -> bool {
    let desired = status.desired_number_scheduled;
    status.current_number_scheduled == desired
        && status.number_ready == desired
        && status.updated_number_scheduled.unwrap_or(0) == desired
        && status.number_available.unwrap_or(0) == desired
        && status.number_unavailable.unwrap_or(0) == 0
        && status.number_misscheduled == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn progressing(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Progressing".to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        }
    }

    /// `ready` of `desired` pods up and updated, at generation 1.
    fn status(desired: i32, ready: i32) -> DaemonSetStatus {
        DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: Some(desired),
            number_available: Some(ready),
            number_unavailable: Some(desired - ready),
            observed_generation: Some(1),
            ..DaemonSetStatus::default()
        }
    }

    #[test]
    fn the_first_status_is_written_at_once() {
        assert_eq!(
            StatusWrite::classify(None, &status(3, 0)),
            StatusWrite::First
        );
    }

    #[test]
    fn pods_coming_up_one_by_one_is_progress_that_may_wait() {
        let write = StatusWrite::classify(Some(&status(1000, 10)), &status(1000, 11));
        assert_eq!(write, StatusWrite::Progress);
        assert!(write.may_wait());
        let mut more = status(1000, 11);
        more.blocked_totals = Some(Vec::new());
        assert_eq!(
            StatusWrite::classify(Some(&status(1000, 10)), &more),
            StatusWrite::Progress
        );
    }

    #[test]
    fn the_settled_status_is_written_at_once() {
        let write = StatusWrite::classify(Some(&status(3, 2)), &status(3, 3));
        assert_eq!(write, StatusWrite::Settled);
        assert!(!write.may_wait());
        // A set on no node is settled too.
        assert_eq!(
            StatusWrite::classify(Some(&status(3, 3)), &status(0, 0)),
            StatusWrite::Settled
        );
        // A misscheduled pod keeps it unsettled.
        let mut misscheduled = status(3, 3);
        misscheduled.number_misscheduled = 1;
        assert_eq!(
            StatusWrite::classify(Some(&status(3, 3)), &misscheduled),
            StatusWrite::Progress
        );
    }

    #[test]
    fn a_new_generation_condition_or_revision_is_written_at_once() {
        let stored = status(10, 4);
        let mut generation = status(10, 5);
        generation.observed_generation = Some(2);
        let mut condition = status(10, 4);
        condition.conditions = Some(vec![progressing("True", "RollingUpdate", "")]);
        let mut revision = status(10, 4);
        revision.update_revision = Some("abc".to_owned());
        for new in [generation, condition, revision] {
            let write = StatusWrite::classify(Some(&stored), &new);
            assert_eq!(write, StatusWrite::Changed, "{new:?}");
            assert!(!write.may_wait());
        }
    }

    #[test]
    fn a_condition_whose_message_alone_moves_is_progress_but_a_new_reason_is_not() {
        let mut stored = status(1000, 10);
        stored.conditions = Some(vec![progressing(
            "True",
            "RollingUpdate",
            "10 of 1000 node(s) run revision abc",
        )]);
        let mut counted = status(1000, 11);
        counted.conditions = Some(vec![progressing(
            "True",
            "RollingUpdate",
            "11 of 1000 node(s) run revision abc",
        )]);
        assert_eq!(
            StatusWrite::classify(Some(&stored), &counted),
            StatusWrite::Progress
        );
        let mut stalled = status(1000, 11);
        stalled.conditions = Some(vec![progressing(
            "False",
            "ProgressDeadlineExceeded",
            "11 of 1000 node(s) run revision abc",
        )]);
        assert_eq!(
            StatusWrite::classify(Some(&stored), &stalled),
            StatusWrite::Changed
        );
    }
}
