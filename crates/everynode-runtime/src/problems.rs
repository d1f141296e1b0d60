//! The set's problem conditions ([`everynode_core::problem`]) from what this reconcile saw
//! besides the plan's snapshot: a template the apiserver refuses, writes that failed, the
//! built-in controller at work (the plan itself carries `PodsScheduled`). Each new or changed
//! problem is one Warning Event.

use everynode_api::DaemonSetStatus;
use everynode_core::problem::{
    BUILT_IN_CONTROLLER_OFF, ConditionUpdate, Problem, RECONCILE_SUCCEEDED, TEMPLATE_VALID,
    problem_condition,
};
use everynode_core::{Plan, SetView, Timestamp};
use kube::runtime::events::EventType;

use crate::context::Context;
use crate::error::{Error, ErrorCategory};
use crate::events::publish;
use crate::target::SetResource;
use crate::template_verdicts::Rejection;

/// The problem conditions of one reconcile.
pub struct Problems {
    updates: Vec<(ConditionUpdate, &'static str, &'static str)>,
}

impl Problems {
    /// The conditions for `set` given the refused template (if any), the writes that failed and
    /// the built-in controller's latest write (`--target apps/v1`; `(what, when)`).
    pub fn assess(
        ctx: &Context,
        set: &SetView,
        rejection: Option<&Rejection>,
        failures: &[Error],
        built_in: Option<&(String, Timestamp)>,
        now: Timestamp,
    ) -> Self {
        let previous = set.status.as_ref().and_then(|s| s.conditions.as_deref());
        let template = rejection.map(|r| Problem {
            reason: "Invalid".to_owned(),
            message: format!(
                "pods of this template cannot be made (the apiserver refuses them, or a node \
                 override does not apply), so no pod is replaced or created until it is fixed: {}",
                r.message
            ),
        });
        let writes = write_problem(failures);
        let quiet = ctx.config.builtin_quiet_period.as_secs();
        let built_in = built_in.map(|(what, when)| Problem {
            reason: "BuiltInControllerRunning".to_owned(),
            message: format!(
                "the built-in DaemonSet controller (kube-controller-manager) {what} at {when}; \
                 everynode writes none of the set's pods until it has been quiet for {quiet} s: \
                 turn it off (--controllers=*,-daemonset-controller)"
            ),
        });
        Self {
            updates: vec![
                (
                    problem_condition(
                        previous,
                        TEMPLATE_VALID,
                        template.as_ref(),
                        now,
                        set.generation,
                    ),
                    "InvalidTemplate",
                    "Validate",
                ),
                (
                    problem_condition(
                        previous,
                        RECONCILE_SUCCEEDED,
                        writes.as_ref(),
                        now,
                        set.generation,
                    ),
                    "ReconcileFailed",
                    "Reconcile",
                ),
                (
                    problem_condition(
                        previous,
                        BUILT_IN_CONTROLLER_OFF,
                        built_in.as_ref(),
                        now,
                        set.generation,
                    ),
                    "BuiltInControllerRunning",
                    "Reconcile",
                ),
            ],
        }
    }

    /// Puts the conditions into the plan's status (`stored`: the status the set has).
    pub fn apply_to(&self, plan: &mut Plan, stored: Option<&DaemonSetStatus>) {
        for (update, _, _) in &self.updates {
            plan.apply_condition(update, stored);
        }
    }

    /// Publishes one Warning Event per new or changed problem.
    pub fn publish<K: SetResource>(&self, ctx: &Context, set: &K) {
        for (update, reason, action) in &self.updates {
            if let Some(message) = &update.event {
                publish(
                    &ctx.recorder,
                    set,
                    EventType::Warning,
                    reason,
                    action,
                    message.clone(),
                );
            }
        }
    }
}

/// The failed writes as one problem: the first one in full (for a 403: the verb, resource and
/// namespace the apiserver refused, and the role to grant it in), and how many more there were.
/// Conflicts are routine (retried at once) and do not count.
fn write_problem(failures: &[Error]) -> Option<Problem> {
    let counted: Vec<&Error> = failures
        .iter()
        .filter(|e| e.category() != ErrorCategory::Conflict)
        .collect();
    let first = counted.first()?;
    let forbidden = first.category() == ErrorCategory::Forbidden;
    let mut message = first.summary();
    if forbidden {
        message.push_str(
            "; grant this permission to the controller's ServiceAccount (the everynode-controller \
             ClusterRole of deploy/rbac.yaml)",
        );
    }
    if counted.len() > 1 {
        message.push_str(&format!(
            " (and {} more failed write(s))",
            counted.len() - 1
        ));
    }
    Some(Problem {
        reason: if forbidden {
            "Forbidden"
        } else {
            "WriteFailed"
        }
        .to_owned(),
        message,
    })
}
