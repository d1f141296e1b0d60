//! `spec.abort` and `spec.retry`, the operator's calls on a rollout that leave the template as
//! it is, and `failurePolicy: Abort`: an aborted revision's set is planned with the stable
//! revision's template, so its pods go back through the same budgets; a retry drops the
//! revision's earlier failure.

use everynode_api::{FailurePolicy, RolloutFailure};
use k8s_openapi::jiff::Timestamp;

use crate::revision::template_revision;
use crate::snapshot::{Owner, PlanInput, SetView};

use super::history::OldRevision;

/// An abort in effect.
pub(super) struct Aborted {
    /// The aborted revision (the template's).
    pub revision: String,
    /// The failure that aborted it (`failurePolicy: Abort`); `None` for `spec.abort`.
    pub failure: Option<RolloutFailure>,
    /// The stable revision (template and node overrides), planned instead.
    pub stable: OldRevision,
}

/// The abort in effect: `spec.abort` names the template's revision, or the revision failed
/// under `failurePolicy: Abort` (and was not retried since), and the set has a stable revision
/// of another name whose template can be read. `None` otherwise (an abort without a stable
/// revision to go back to does nothing).
pub(super) fn aborted(input: &PlanInput) -> Option<Aborted> {
    let set = &input.set;
    if set.spec.abort.is_none() && set.status.as_ref()?.failure.is_none() {
        return None;
    }
    let revision = template_revision(set);
    let failure = set
        .status
        .as_ref()
        .and_then(|s| s.failure.clone())
        .filter(|f| f.revision == revision && f.policy == FailurePolicy::Abort.as_str())
        .filter(|f| retried_at(set, &revision).is_none_or(|at| f.since.0 > at));
    let by_hand = set
        .spec
        .abort
        .as_ref()
        .is_some_and(|a| a.revision == revision);
    if !by_hand && failure.is_none() {
        return None;
    }
    let stable = set.status.as_ref()?.stable_revision.as_deref()?;
    if stable == revision {
        return None;
    }
    let rev = input
        .revisions
        .iter()
        .find(|r| r.name == stable && !r.deleting && r.owner() == Owner::ThisSet)?;
    Some(Aborted {
        revision,
        failure,
        stable: OldRevision::read(rev, set.collision_count())?,
    })
}

/// `input` with the stable revision's template and node overrides in place of the set's.
pub(super) fn stable_input(input: &PlanInput, aborted: &Aborted) -> PlanInput {
    let mut stable = input.clone();
    stable.set.spec.template = aborted.stable.template.clone();
    let overrides = &aborted.stable.overrides;
    stable.set.spec.node_overrides = (!overrides.is_empty()).then(|| overrides.clone());
    stable
}

/// The time of `spec.retry` when it names `revision`.
pub(super) fn retried_at(set: &SetView, revision: &str) -> Option<Timestamp> {
    set.spec
        .retry
        .as_ref()
        .filter(|r| r.revision == revision)
        .map(|r| r.at.0)
}
