//! Conditions that appear when something goes wrong and say so until it is fixed:
//! `PodsScheduled` (the scheduler cannot place daemon pods), `TemplateValid` (the apiserver
//! refuses pods of the template), `ReconcileSucceeded` (a write of the controller failed) and
//! `BuiltInControllerOff` (the built-in DaemonSet controller writes the set too).
//!
//! A set that never had the problem gets no such condition, so an apps/v1 status stays exactly as
//! upstream writes it; once it had it, the condition turns `True` when the problem is gone.
//! `lastTransitionTime` moves only when the status flips.

use everynode_api::DaemonSetStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// One kind of problem condition: its type, and what it says once the problem is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProblemKind {
    /// Condition type.
    pub type_: &'static str,
    /// Reason once the problem is gone.
    pub ok_reason: &'static str,
    /// Message once the problem is gone.
    pub ok_message: &'static str,
}

/// Whether the scheduler could place every daemon pod.
pub const PODS_SCHEDULED: ProblemKind = ProblemKind {
    type_: "PodsScheduled",
    ok_reason: "AllScheduled",
    ok_message: "every daemon pod is scheduled",
};

/// Whether the apiserver accepts pods of the set's template.
pub const TEMPLATE_VALID: ProblemKind = ProblemKind {
    type_: "TemplateValid",
    ok_reason: "Accepted",
    ok_message: "the apiserver accepts pods of the template",
};

/// Whether every write of the last reconcile succeeded.
pub const RECONCILE_SUCCEEDED: ProblemKind = ProblemKind {
    type_: "ReconcileSucceeded",
    ok_reason: "Reconciled",
    ok_message: "every write of the last reconcile succeeded",
};

/// Whether the built-in DaemonSet controller leaves the set to everynode (`--target apps/v1`).
pub const BUILT_IN_CONTROLLER_OFF: ProblemKind = ProblemKind {
    type_: "BuiltInControllerOff",
    ok_reason: "Quiet",
    ok_message: "the built-in DaemonSet controller has not written this set for the quiet period",
};

/// A problem in force: the condition is `False` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Condition reason (CamelCase).
    pub reason: String,
    /// Condition message (also the Warning Event's, when the problem is new or changed).
    pub message: String,
}

/// The set's conditions after one [`problem_condition`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionUpdate {
    /// The condition type this update is about.
    pub type_: &'static str,
    /// The full condition list to store (others' conditions kept).
    pub conditions: Option<Vec<Condition>>,
    /// Whether it differs from the stored list.
    pub changed: bool,
    /// A Warning Event to publish: the problem is new, or its message changed.
    pub event: Option<String>,
}

impl ConditionUpdate {
    /// Puts this update's condition into `status` (keeping its other conditions); returns
    /// whether that changed it.
    pub fn apply_to_status(&self, status: &mut DaemonSetStatus) -> bool {
        if !self.changed {
            return false;
        }
        let mut conditions: Vec<Condition> = status
            .conditions
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != self.type_)
            .collect();
        conditions.extend(
            self.conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ == self.type_)
                .cloned(),
        );
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        true
    }
}

/// The condition of `kind` for `problem`: `False` while there is one, `True` once it is gone
/// (only after it was `False` once), nothing for a set that never had it.
pub fn problem_condition(
    previous: Option<&[Condition]>,
    kind: ProblemKind,
    problem: Option<&Problem>,
    now: Timestamp,
    generation: Option<i64>,
) -> ConditionUpdate {
    let previous_list = previous.map(<[Condition]>::to_vec);
    let before = previous
        .into_iter()
        .flatten()
        .find(|c| c.type_ == kind.type_);
    let unchanged = |conditions| ConditionUpdate {
        type_: kind.type_,
        conditions,
        changed: false,
        event: None,
    };
    let (status, reason, message) = match problem {
        Some(p) => ("False", p.reason.as_str(), p.message.clone()),
        None if before.is_some() => ("True", kind.ok_reason, kind.ok_message.to_owned()),
        None => return unchanged(previous_list),
    };
    if before.is_some_and(|c| c.status == status && c.reason == reason && c.message == message) {
        return unchanged(previous_list);
    }
    let last_transition_time = before
        .filter(|c| c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let mut conditions: Vec<Condition> = previous_list
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != kind.type_)
        .collect();
    conditions.push(Condition {
        type_: kind.type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.clone(),
        last_transition_time,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    ConditionUpdate {
        type_: kind.type_,
        conditions: Some(conditions),
        changed: true,
        event: (status == "False").then_some(message),
    }
}

/// A daemon pod the scheduler cannot place (`PodScheduled=False`, reason `Unschedulable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnschedulablePod<'a> {
    /// The node the pod is pinned to.
    pub node: &'a str,
    /// Pod name.
    pub pod: &'a str,
    /// The scheduler's message, e.g. "0/5 nodes are available: 1 node(s) didn't have free ports…".
    pub message: &'a str,
}

/// The `PodsScheduled` condition: `False` with the first pod's node and the scheduler's words
/// while any pod cannot be placed.
pub fn scheduling_conditions(
    previous: Option<&[Condition]>,
    unschedulable: &[UnschedulablePod<'_>],
    now: Timestamp,
    generation: Option<i64>,
) -> ConditionUpdate {
    let mut sorted = unschedulable.to_vec();
    sorted.sort();
    let problem = sorted.first().map(|first| {
        let more = match sorted.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Problem {
            reason: "Unschedulable".to_owned(),
            message: format!(
                "{} daemon pod(s) cannot be scheduled; {} on node {}: {}{more}",
                sorted.len(),
                first.pod,
                first.node,
                first.message
            ),
        }
    });
    problem_condition(previous, PODS_SCHEDULED, problem.as_ref(), now, generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    const PORTS: &str =
        "0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.";

    #[test]
    fn a_set_without_problems_gets_no_condition() {
        let update = scheduling_conditions(None, &[], at(10), Some(1));
        assert_eq!(update.conditions, None);
        assert!(!update.changed);
        assert_eq!(update.event, None);
        let update = problem_condition(None, RECONCILE_SUCCEEDED, None, at(10), Some(1));
        assert!(!update.changed);
    }

    #[test]
    fn unschedulable_pods_set_false_with_the_scheduler_words_then_true_once_placed() {
        let blocked = [
            UnschedulablePod {
                node: "n2",
                pod: "agent-b",
                message: PORTS,
            },
            UnschedulablePod {
                node: "n1",
                pod: "agent-a",
                message: PORTS,
            },
        ];
        let first = scheduling_conditions(None, &blocked, at(10), Some(3));
        assert!(first.changed);
        let conditions = first.conditions.clone().unwrap();
        let c = &conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("PodsScheduled", "False", "Unschedulable")
        );
        assert_eq!(
            c.message,
            format!(
                "2 daemon pod(s) cannot be scheduled; agent-a on node n1: {PORTS} (and 1 more)"
            )
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(first.event.as_deref(), Some(c.message.as_str()));

        // Same problem later: nothing to write, no new event.
        let again = scheduling_conditions(Some(&conditions), &blocked, at(20), Some(3));
        assert!(!again.changed);
        assert_eq!(again.event, None);

        // Placed: True, transition time moves, no event.
        let fixed = scheduling_conditions(Some(&conditions), &[], at(30), Some(3));
        let c = &fixed.conditions.unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "AllScheduled")
        );
        assert_eq!(c.last_transition_time, Time(at(30)));
        assert_eq!(fixed.event, None);
    }

    #[test]
    fn a_changed_problem_message_is_a_new_event_with_the_same_transition_time() {
        let problem = |message: &str| Problem {
            reason: "Forbidden".to_owned(),
            message: message.to_owned(),
        };
        let first = problem_condition(
            None,
            RECONCILE_SUCCEEDED,
            Some(&problem("cannot create pods")),
            at(10),
            None,
        );
        let conditions = first.conditions.unwrap();
        let second = problem_condition(
            Some(&conditions),
            RECONCILE_SUCCEEDED,
            Some(&problem("cannot delete pods")),
            at(20),
            None,
        );
        assert!(second.changed);
        assert_eq!(second.event.as_deref(), Some("cannot delete pods"));
        let c = &second.conditions.unwrap()[0];
        assert_eq!(c.last_transition_time, Time(at(10)));
    }

    #[test]
    fn other_conditions_are_kept() {
        let theirs = Condition {
            type_: "Audited".into(),
            status: "True".into(),
            reason: "ByTeam".into(),
            message: String::new(),
            last_transition_time: Time(at(1)),
            observed_generation: None,
        };
        let blocked = [UnschedulablePod {
            node: "n1",
            pod: "p",
            message: PORTS,
        }];
        let update =
            scheduling_conditions(Some(std::slice::from_ref(&theirs)), &blocked, at(5), None);
        let types: Vec<String> = update
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(types, ["Audited", "PodsScheduled"]);
    }
}
