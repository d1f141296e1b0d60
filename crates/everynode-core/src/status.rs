//! Status (§7): the seven counters, computed over the node list and the pods mapped to it.

use everynode_api::DaemonSetStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::state::State;

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

/// everynode's rollout status (not written for apps/v1 sets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutStatus {
    /// ControllerRevision of the current template.
    pub update_revision: String,
    /// ControllerRevision that most desired nodes run.
    pub current_revision: Option<String>,
    /// Last ControllerRevision available on every desired node.
    pub stable_revision: Option<String>,
    /// Desired nodes per revision, newest first.
    pub pods_per_revision: Vec<everynode_api::RevisionPods>,
    /// The topology wave in progress.
    pub wave: Option<everynode_api::RolloutWave>,
    /// The failure of the update revision.
    pub failure: Option<everynode_api::RolloutFailure>,
    /// The last automatic rollback.
    pub rollback: Option<everynode_api::RolloutRollback>,
    /// Nodes skipped by `unavailableNodePolicy: Skip`.
    pub skipped_nodes: Vec<String>,
    /// Excluded or blocked nodes with their reasons (bounded).
    pub blocked_nodes: Vec<everynode_api::BlockedNode>,
    /// Excluded or blocked nodes per reason.
    pub blocked_totals: Vec<everynode_api::ReasonCount>,
}

impl RolloutStatus {
    /// The rollout status from the desired nodes' pods counted per revision (`(revision
    /// number, counts)`, any order): `update_revision` is the current revision's name; the
    /// stable revision becomes it once every desired node runs an available pod of it, and
    /// stays `stored_stable` otherwise.
    pub fn compute(
        update_revision: &str,
        desired: i32,
        mut per: Vec<(i64, everynode_api::RevisionPods)>,
        stored_stable: Option<&str>,
    ) -> Self {
        per.sort_by(|(na, a), (nb, b)| nb.cmp(na).then_with(|| a.revision.cmp(&b.revision)));
        let current_revision = per
            .iter()
            .max_by(|(na, a), (nb, b)| a.pods.cmp(&b.pods).then_with(|| na.cmp(nb)))
            .map(|(_, r)| r.revision.clone());
        let everywhere = desired > 0
            && per.len() == 1
            && per[0].1.revision == update_revision
            && per[0].1.available == desired;
        let stable_revision = if everywhere {
            Some(update_revision.to_owned())
        } else {
            stored_stable.map(str::to_owned)
        };
        Self {
            update_revision: update_revision.to_owned(),
            current_revision,
            stable_revision,
            pods_per_revision: per.into_iter().map(|(_, r)| r).collect(),
            ..Self::default()
        }
    }

    /// Every desired node runs an available pod of the update revision.
    pub fn complete(&self, desired: i32) -> bool {
        desired == 0
            || (self.pods_per_revision.len() == 1
                && self.pods_per_revision[0].revision == self.update_revision
                && self.pods_per_revision[0].available == desired)
    }

    /// Whether `status` already says this.
    pub fn equals(&self, status: &DaemonSetStatus) -> bool {
        status.update_revision.as_deref() == Some(self.update_revision.as_str())
            && status.current_revision == self.current_revision
            && status.stable_revision == self.stable_revision
            && status.pods_per_revision.as_deref().unwrap_or_default() == self.pods_per_revision
            && status.wave == self.wave
            && status.failure == self.failure
            && status.rollback == self.rollback
            && status.skipped_nodes.as_deref().unwrap_or_default() == self.skipped_nodes
            && status.blocked_nodes.as_deref().unwrap_or_default() == self.blocked_nodes
            && status.blocked_totals.as_deref().unwrap_or_default() == self.blocked_totals
    }

    /// Writes the fields into `status`.
    pub fn apply_to(&self, status: &mut DaemonSetStatus) {
        status.update_revision = Some(self.update_revision.clone());
        status.current_revision.clone_from(&self.current_revision);
        status.stable_revision.clone_from(&self.stable_revision);
        status.pods_per_revision = Some(self.pods_per_revision.clone());
        status.wave.clone_from(&self.wave);
        status.failure.clone_from(&self.failure);
        status.rollback.clone_from(&self.rollback);
        status.skipped_nodes = (!self.skipped_nodes.is_empty()).then(|| self.skipped_nodes.clone());
        status.blocked_nodes = (!self.blocked_nodes.is_empty()).then(|| self.blocked_nodes.clone());
        status.blocked_totals =
            (!self.blocked_totals.is_empty()).then(|| self.blocked_totals.clone());
    }
}

/// Condition type: `spec.paused` is in effect.
pub const ROLLOUT_PAUSED_CONDITION: &str = "RolloutPaused";
/// Condition type: `spec.frozen` is in effect.
pub const ROLLOUT_FROZEN_CONDITION: &str = "RolloutFrozen";
/// Condition type: where the rollout stands.
pub const PROGRESSING_CONDITION: &str = "Progressing";
/// Condition type: the update revision's rollout failed (rollout safety).
pub const ROLLOUT_FAILED_CONDITION: &str = "RolloutFailed";
/// Condition type: no more nodes are without an available pod than `maxUnavailable` allows.
pub const AVAILABLE_CONDITION: &str = "Available";

/// What the rollout conditions are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutFacts<'a> {
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.frozen`.
    pub frozen: bool,
    /// Every desired node runs an available pod of the update revision.
    pub complete: bool,
    /// The rollout went as far as the controls allow: only held nodes are left.
    pub held: bool,
    /// Desired nodes.
    pub desired: i32,
    /// Desired nodes on the update revision.
    pub updated: i32,
    /// Update revision name.
    pub update_revision: &'a str,
    /// The topology wave in progress.
    pub wave: Option<&'a everynode_api::RolloutWave>,
    /// The failure of the update revision.
    pub failure: Option<&'a everynode_api::RolloutFailure>,
    /// The last automatic rollback.
    pub rollback: Option<&'a everynode_api::RolloutRollback>,
    /// Nodes skipped by `unavailableNodePolicy: Skip`.
    pub skipped: usize,
    /// The apiserver refuses pods of the update revision's template.
    pub template_rejected: bool,
    /// Desired nodes without an available pod.
    pub unavailable: i32,
    /// The scaled `maxUnavailable` (0 for OnDelete).
    pub max_unavailable: i32,
}

/// The set's conditions with `RolloutPaused`, `RolloutFrozen` (present once set, `False` after),
/// `Available`, `Progressing` (`Unknown` while paused or frozen, as a paused Deployment; `False`
/// once the rollout failed) and `RolloutFailed` (present once a rollout failed, `False` after);
/// `None` when the stored list already says so. `lastTransitionTime` moves only when a status
/// flips.
pub fn rollout_conditions(
    previous: Option<&[Condition]>,
    facts: &RolloutFacts<'_>,
    now: Timestamp,
    generation: Option<i64>,
) -> Option<Vec<Condition>> {
    let previous = previous.unwrap_or_default();
    let find = |t: &str| previous.iter().find(|c| c.type_ == t);
    let mut wanted: Vec<(&str, &str, &str, String)> = Vec::new();
    for (type_, on, what) in [
        (ROLLOUT_PAUSED_CONDITION, facts.paused, "paused"),
        (ROLLOUT_FROZEN_CONDITION, facts.frozen, "frozen"),
    ] {
        if on {
            wanted.push((
                type_,
                "True",
                if facts.paused && type_ == ROLLOUT_PAUSED_CONDITION {
                    "Paused"
                } else {
                    "Frozen"
                },
                format!("spec.{what} is set"),
            ));
        } else if find(type_).is_some() {
            wanted.push((
                type_,
                "False",
                if type_ == ROLLOUT_PAUSED_CONDITION {
                    "Resumed"
                } else {
                    "Unfrozen"
                },
                format!("spec.{what} is not set"),
            ));
        }
    }
    let mut progress = format!(
        "{} of {} node(s) run revision {}",
        facts.updated, facts.desired, facts.update_revision
    );
    if let Some(w) = facts.wave {
        progress.push_str(&format!(
            "; wave {}/{}: domain {:?}",
            w.index, w.domains, w.domain
        ));
        if w.baked_at.is_some() {
            progress.push_str(" done, baking");
        }
    }
    if facts.skipped > 0 {
        progress.push_str(&format!(
            "; {} node(s) down and skipped (unavailableNodePolicy: Skip)",
            facts.skipped
        ));
    }
    wanted.push(if facts.unavailable <= facts.max_unavailable.max(0) {
        (
            AVAILABLE_CONDITION,
            "True",
            "MinimumNodesAvailable",
            format!(
                "{} node(s) without an available pod, within maxUnavailable ({})",
                facts.unavailable, facts.max_unavailable
            ),
        )
    } else {
        (
            AVAILABLE_CONDITION,
            "False",
            "TooManyNodesUnavailable",
            format!(
                "{} node(s) without an available pod, more than maxUnavailable ({})",
                facts.unavailable, facts.max_unavailable
            ),
        )
    });
    if let Some(failure) = facts.failure {
        let action = match failure.policy.as_str() {
            "Rollback" => "rolling back to the stable revision",
            "Continue" => "continuing (failurePolicy Continue)",
            _ => "paused: change the template (or `everynode rollout undo`) to go on",
        };
        wanted.push((
            ROLLOUT_FAILED_CONDITION,
            "True",
            failure.reason.as_str(),
            format!(
                "revision {}: {}; {action}",
                failure.revision, failure.message
            ),
        ));
    } else if find(ROLLOUT_FAILED_CONDITION).is_some() {
        let (reason, message) = match facts.rollback {
            Some(r) => (
                "RolledBack",
                format!(
                    "rolled back from {} to {} ({})",
                    r.rolled_back_from, r.rollback_of, r.reason
                ),
            ),
            None => (
                "NewRevision",
                format!("revision {} has not failed", facts.update_revision),
            ),
        };
        wanted.push((ROLLOUT_FAILED_CONDITION, "False", reason, message));
    }
    let progressing = if facts.frozen {
        (
            "Unknown",
            "RolloutFrozen",
            format!("set frozen; {progress}"),
        )
    } else if let Some(failure) = facts.failure.filter(|_| !facts.complete) {
        (
            "False",
            failure.reason.as_str(),
            format!("{}; {progress}", failure.message),
        )
    } else if facts.template_rejected && !facts.complete {
        (
            "False",
            "TemplateRejected",
            format!("the apiserver refuses pods of the template (see TemplateValid); {progress}"),
        )
    } else if facts.complete {
        (
            "True",
            "RolloutComplete",
            format!("{progress}, all available"),
        )
    } else if facts.paused {
        (
            "Unknown",
            "RolloutPaused",
            format!("rollout paused; {progress}"),
        )
    } else if facts.held {
        (
            "True",
            "RolloutHeld",
            format!("{progress}; partition or node selector hold the rest"),
        )
    } else {
        ("True", "RollingOut", progress)
    };
    wanted.push((
        PROGRESSING_CONDITION,
        progressing.0,
        progressing.1,
        progressing.2,
    ));

    let mut changed = false;
    let mut conditions: Vec<Condition> = previous.to_vec();
    for (type_, status, reason, message) in wanted {
        let before = find(type_);
        if before.is_some_and(|c| c.status == status && c.reason == reason && c.message == message)
        {
            continue;
        }
        changed = true;
        let last_transition_time = before
            .filter(|c| c.status == status)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        conditions.retain(|c| c.type_ != type_);
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: generation,
        });
    }
    if !changed {
        return None;
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    Some(conditions)
}
