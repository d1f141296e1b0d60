//! The top level: one [`plan`] = one upstream `syncDaemonSet` as its unit tests observe it.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`. [`plan`] reads as the pipeline, one
//! named phase per module:
//!
//! 1. guards — an invalid or empty selector, or a set being deleted, stop here;
//! 2. `history` — claim the revisions (§5.1) and plan the history (§5.3);
//! 3. `working` — claim the pods (§4.3 step 1) and build the working copy: nodes with their
//!    predicate, pods by target node;
//! 4. `params` and `safety` — the rollout's parameters, parsed once, and rollout safety;
//! 5. `steps` — manage (§4.3), then the `RollingUpdate` step (§6) on the working copy with
//!    manage's writes observed (`builder`), then history cleanup (§5.5);
//! 6. `status` — the status (§7) of the final working copy.
//!
//! The result is a [`Plan`] (`output`): the runtime carries it out, adding only the problem
//! conditions a snapshot cannot know (a refused template, failed writes).

mod abort;
mod builder;
mod history;
mod label_memo;
mod output;
mod params;
mod prepull;
mod safety;
mod status;
mod steps;
mod working;

use everynode_api::NewNodePolicy;

use crate::manage::{EventReason, PlanEvent};
use crate::overrides::NodeVariants;
use crate::selector::Selector;
use crate::snapshot::PlanInput;

use builder::{Builder, DeferralLog};
use history::{collision_only, plan_history, stable_revision};
pub use output::{
    BackoffUpdate, NodeDecision, Plan, PlanError, PlannedRollback, PodCreate, PodDelete, PodUpdate,
    PrePullCreate, PrePullPlan,
};
use params::RolloutParams;
use prepull::PrePulls;
pub use prepull::pre_pull_pod_name;
use safety::assess_safety;
use status::plan_status;
use steps::{Gates, RolloutOutcome, apply_manage, apply_rolling_update, clean_up_history};
use working::working_copy;

/// Plans one sync of one set. Pure and deterministic: shuffled inputs give the same plan.
pub fn plan(input: &PlanInput) -> Plan {
    let Some(aborted) = abort::aborted(input) else {
        return plan_set(input, None, None);
    };
    // An aborted rollout is planned as a rollout of the stable revision; its pods are created
    // from the stable revision's template.
    let stable = abort::stable_input(input, &aborted);
    let mut plan = plan_set(&stable, Some(aborted.revision), aborted.failure);
    let stable = aborted.stable;
    if !stable.variants.is_empty() {
        // The pods of nodes no override matches carry the template's own hash.
        plan.templates
            .insert(stable.variants.base_hash.clone(), stable.template.clone());
    }
    plan.templates.insert(stable.hash, stable.template);
    plan
}

/// [`plan`] of `input` as it is; `aborted`: the revision of the set's own template, aborted
/// (by `failure`, under `failurePolicy: Abort`, which the status keeps).
fn plan_set(
    input: &PlanInput,
    aborted: Option<String>,
    failure: Option<everynode_api::RolloutFailure>,
) -> Plan {
    let mut out = Plan::default();
    let Some(selector) = guards(input, &mut out) else {
        return out;
    };
    let history = plan_history(input, &selector, &mut out);
    if let Some(count) = out.history.collision_count {
        collision_only(input, &selector, count, &mut out);
        return out;
    }
    let spec = &input.set.spec;
    let variants = NodeVariants::new(
        &spec.template,
        spec.overrides(),
        input.set.collision_count(),
    );
    let invalid_overrides = variants.is_err();
    let variants = variants.unwrap_or_else(|e| {
        out.errors.push(e.into());
        NodeVariants::default()
    });
    let working = working_copy(
        input,
        &selector,
        &history.duplicate_hashes,
        &variants,
        &mut out,
    );
    let desired = working
        .state
        .slots
        .iter()
        .filter(|s| s.elig.should_run)
        .count();
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let mut params = RolloutParams::parse(&input.set.spec, desired, &mut out.errors);
    let log = DeferralLog {
        decisions: working.decisions,
        blocked_by: Vec::new(),
        report_blocks: input.config.rollout_status,
    };
    let mut b = Builder::new(input, out, working.state, log, variants);
    b.pre_pulls = params.pre_pull.as_ref().map(|c| PrePulls::read(input, c));
    b.aborted = aborted;
    let safety = assess_safety(
        &mut b,
        params.controls.as_mut(),
        &history.old,
        params.min_ready,
    );
    // The revision a held node gets under `newNodePolicy: Stable` (when it differs from the
    // current one and its template is known).
    let stable = params
        .controls
        .as_ref()
        .filter(|c| c.new_node_policy == NewNodePolicy::Stable && c.can_hold())
        .and_then(|_| stable_revision(&input.set, &history.old, &b.hash));
    let mut rollout = RolloutOutcome::default();
    if input.expectations_satisfied {
        let gates = Gates {
            frozen: input.set.spec.is_frozen(),
            burst: input.config.burst_replicas,
            // Pods of invalid overrides are held as those of a refused template (the runtime's
            // template check reports them).
            rejected: invalid_overrides || input.rejected_hash.as_deref() == Some(b.hash.as_str()),
        };
        apply_manage(&mut b, &params, stable.as_ref(), &gates);
        rollout = apply_rolling_update(&mut b, &params, &history.old, &gates);
        clean_up_history(&mut b, &history.old, &working.other_hashes);
    }
    if let Some(pulls) = b.pre_pulls.take() {
        pulls.finish(&mut b, input.expectations_satisfied);
    }
    rollout.failure = safety.failure.or(failure);
    let stable_hash = stable.as_ref().map(|s| s.hash.as_str());
    plan_status(&mut b, &params, &history.old, stable_hash, &rollout);
    b.finish()
}

/// The selector, unless the plan stops here: an invalid selector (an error), an empty one (an
/// event: upstream refuses to select every pod) or a set being deleted.
fn guards(input: &PlanInput, out: &mut Plan) -> Option<Selector> {
    let selector = match Selector::compile(&input.set.spec.selector) {
        Ok(s) => s,
        Err(e) => {
            out.errors.push(e.into());
            return None;
        }
    };
    if selector.is_empty() {
        out.events.push(PlanEvent {
            reason: EventReason::SelectingAll,
            message: "This daemon set is selecting all pods. A non-empty selector is required."
                .to_owned(),
        });
        return None;
    }
    (!input.set.deleting).then_some(selector)
}
