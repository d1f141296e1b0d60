//! Rollout safety on the working copy before this plan's writes: keep a stored failure of the
//! update revision or detect a new one, and let the failure policy act.

use everynode_api::FailurePolicy;

use crate::controls::Controls;
use crate::manage::{EventReason, PlanEvent};
use crate::revision::{overrides_from_data, template_from_data};
use crate::safety::MAX_LISTED_NODES;
use crate::snapshot::RevisionView;

use super::abort::retried_at;
use super::builder::Builder;
use super::history::stored_stable;
use super::output::PlannedRollback;

/// What rollout safety decided for this plan.
#[derive(Default)]
pub(super) struct SafetyOutcome {
    /// The failure of the update revision (stored, or found now).
    pub failure: Option<everynode_api::RolloutFailure>,
}

/// Rollout safety on the state before this plan's writes: keeps a stored failure of the update
/// revision, or looks for a new one (event), and lets the failure policy act — `Pause` and
/// `Rollback` stop the rollout (`controls.failed`), `Rollback` also plans the template of the
/// stable revision.
pub(super) fn assess_safety(
    b: &mut Builder<'_>,
    controls: Option<&mut Controls>,
    old: &[&RevisionView],
    min_ready: i64,
) -> SafetyOutcome {
    let set = &b.input.set;
    let now = b.input.now;
    let update_revision = b.plan.history.current.clone();
    // `spec.retry` drops the revision's earlier failure and the pods it was found on.
    let retried_at = retried_at(set, &update_revision);
    let mut out = SafetyOutcome {
        failure: set
            .status
            .as_ref()
            .and_then(|s| s.failure.clone())
            .filter(|f| f.revision == update_revision)
            .filter(|f| retried_at.is_none_or(|at| f.since.0 > at)),
    };
    let Some(controls) = controls else {
        return out;
    };
    let safety = controls.safety.clone();
    if !safety.detects_failures() {
        return out;
    }
    if out.failure.is_none() {
        let found = crate::safety::assess(&b.state, &safety, now, min_ready, retried_at);
        if let Some(r) = found.requeue {
            b.requeue_within(r);
        }
        if let Some(detected) = found.failure {
            let failed_nodes: Vec<String> = found
                .failed_nodes
                .iter()
                .take(MAX_LISTED_NODES)
                .map(|(slot, why)| format!("{}: {why}", b.state.slots[*slot].node.name))
                .collect();
            b.plan.events.push(PlanEvent {
                reason: EventReason::RolloutFailed,
                message: format!(
                    "rollout of {update_revision} failed: {}; failurePolicy {}",
                    detected.message,
                    safety.policy.as_str()
                ),
            });
            out.failure = Some(everynode_api::RolloutFailure {
                revision: update_revision.clone(),
                reason: detected.reason.to_owned(),
                message: detected.message,
                policy: safety.policy.as_str().to_owned(),
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                failed_nodes,
            });
        }
    }
    let Some(failure) = out.failure.as_ref() else {
        return out;
    };
    if safety.policy == FailurePolicy::Continue {
        return out;
    }
    controls.failed = true;
    if safety.policy == FailurePolicy::Rollback
        && let Some(stable) = stored_stable(set, old)
        && stable.name != update_revision
        && let Some(template) = template_from_data(&stable.data)
        && let Some(overrides) = overrides_from_data(&stable.data)
    {
        b.plan.rollback = Some(PlannedRollback {
            from: update_revision,
            to: stable.name.clone(),
            template,
            node_overrides: (!overrides.is_empty()).then_some(overrides),
            reason: format!("{}: {}", failure.reason, failure.message),
        });
    }
    out
}
