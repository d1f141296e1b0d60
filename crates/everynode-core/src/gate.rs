//! Node readiness gates (`spec.nodeReadiness`, everynode only): nodes join with a startup
//! taint that keeps other workloads off; it comes off a node once every set declaring the same
//! taint key that should run there has an available pod on it. With `enforce: Continuous` it
//! goes back (as `NoSchedule`) when such a pod has been unavailable for `graceSeconds`, unless
//! that set is rolling out. Pure: the runtime gathers the members and writes the taint.

use std::collections::HashMap;
use std::time::Duration;

use everynode_api::DaemonSetSpec;
use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::snapshot::{Owner, PodView};

/// The toleration a gated set's pods get: the gate's key, any effect (the taint may come
/// back as `NoSchedule`).
pub fn gate_toleration(spec: &DaemonSetSpec) -> Option<Toleration> {
    let gate = spec.node_readiness.as_ref()?;
    Some(Toleration {
        key: Some(gate.taint.key.clone()),
        operator: Some("Exists".to_owned()),
        ..Toleration::default()
    })
}

/// Whether `taints` carry the gate key `key` (any effect).
pub fn tainted(taints: &[Taint], key: &str) -> bool {
    taints.iter().any(|t| t.key == key)
}

/// One set declaring the gate's key, as it stands on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateMember {
    /// `namespace/name` of the set.
    pub set: String,
    /// The set should run a pod on the node.
    pub desired: bool,
    /// It has an available pod there.
    pub available: bool,
    /// Since when its pod there is not available (not Ready since, or created); `None`: no
    /// pod, or one on its way to available.
    pub unavailable_since: Option<Timestamp>,
    /// `enforce: Continuous`, with its grace in seconds.
    pub continuous_grace: Option<i64>,
    /// The set is rolling out (its update revision is not on every desired node yet).
    pub rolling_out: bool,
}

/// What to do with the gate taint of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateAction {
    /// Take the taint off.
    Remove,
    /// Put the taint back, as `NoSchedule`.
    Add,
    /// Leave the node as it is.
    Keep,
}

/// The decision for one node, with what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateDecision {
    /// The action.
    pub action: GateAction,
    /// The sets the node waits for (tainted) or that lost their pod (taint put back).
    pub sets: Vec<String>,
    /// Decide again after this long (a grace period running).
    pub recheck_after: Option<Duration>,
}

/// The gate of one node: `tainted` whether it carries the key now, `members` every set that
/// declares the key.
pub fn decide(tainted: bool, members: &[GateMember], now: Timestamp) -> GateDecision {
    let relevant = members.iter().filter(|m| m.desired);
    if tainted {
        let waiting: Vec<String> = relevant
            .filter(|m| !m.available)
            .map(|m| m.set.clone())
            .collect();
        let action = if waiting.is_empty() {
            GateAction::Remove
        } else {
            GateAction::Keep
        };
        return GateDecision {
            action,
            sets: waiting,
            recheck_after: None,
        };
    }
    let mut lost = Vec::new();
    let mut recheck_after: Option<Duration> = None;
    for member in relevant {
        let (Some(grace), Some(since)) = (member.continuous_grace, member.unavailable_since) else {
            continue;
        };
        if member.available || member.rolling_out {
            continue;
        }
        let at = since
            .checked_add(SignedDuration::from_secs(grace))
            .unwrap_or(Timestamp::MAX);
        if at <= now {
            lost.push(member.set.clone());
        } else {
            // A second late, so the next look sees the grace passed.
            let wait = now.duration_until(at).unsigned_abs() + Duration::from_secs(1);
            recheck_after = Some(recheck_after.map_or(wait, |r| r.min(wait)));
        }
    }
    GateDecision {
        action: if lost.is_empty() {
            GateAction::Keep
        } else {
            GateAction::Add
        },
        sets: lost,
        recheck_after,
    }
}

/// The views of the pods the set with `set_uid` controls, by target node.
pub fn pods_by_node<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    set_uid: &str,
) -> HashMap<String, Vec<PodView>> {
    let mut by_node: HashMap<String, Vec<PodView>> = HashMap::new();
    for pod in pods {
        let view = PodView::from_pod(pod, set_uid);
        if view.owner() != Owner::ThisSet {
            continue;
        }
        if let Some(node) = view.target_node.clone() {
            by_node.entry(node).or_default().push(view);
        }
    }
    by_node
}

/// How a set stands on a node from its pods there: `(available, unavailable_since)`, with
/// `min_ready` seconds for availability.
pub fn pods_on_node<'a>(
    pods: impl IntoIterator<Item = &'a PodView>,
    now: Timestamp,
    min_ready: i64,
) -> (bool, Option<Timestamp>) {
    let mut unavailable_since: Option<Timestamp> = None;
    for pod in pods.into_iter().filter(|p| p.deletion_timestamp.is_none()) {
        if pod.ready {
            let ready_at = pod
                .ready_since
                .and_then(|t| t.checked_add(SignedDuration::from_secs(min_ready)).ok());
            if ready_at.is_none_or(|at| at <= now) {
                return (true, None);
            }
        } else if let Some(since) = pod.ready_since.or(pod.created) {
            unavailable_since = Some(unavailable_since.map_or(since, |u| u.max(since)));
        }
    }
    (false, unavailable_since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn member(set: &str, desired: bool, available: bool) -> GateMember {
        GateMember {
            set: set.to_owned(),
            desired,
            available,
            unavailable_since: None,
            continuous_grace: None,
            rolling_out: false,
        }
    }

    #[test]
    fn the_taint_comes_off_only_when_every_set_that_runs_there_is_available() {
        let both = [
            member("ops/agent", true, true),
            member("ops/csi", true, false),
        ];
        let decision = decide(true, &both, t(0));
        assert_eq!(decision.action, GateAction::Keep);
        assert_eq!(decision.sets, ["ops/csi"]);
        let ready = [
            member("ops/agent", true, true),
            member("ops/csi", true, true),
        ];
        assert_eq!(decide(true, &ready, t(0)).action, GateAction::Remove);
        // A set that does not run on the node does not hold it.
        let elsewhere = [
            member("ops/agent", true, true),
            member("ops/csi", false, false),
        ];
        assert_eq!(decide(true, &elsewhere, t(0)).action, GateAction::Remove);
        // No set runs there at all (the node no longer matches): the taint comes off.
        assert_eq!(decide(true, &[], t(0)).action, GateAction::Remove);
    }

    #[test]
    fn bootstrap_never_puts_the_taint_back() {
        let mut lost = member("ops/agent", true, false);
        lost.unavailable_since = Some(t(0));
        assert_eq!(decide(false, &[lost], t(3_600)).action, GateAction::Keep);
    }

    #[test]
    fn continuous_puts_it_back_after_the_grace_unless_the_set_rolls_out() {
        let mut lost = member("ops/agent", true, false);
        lost.unavailable_since = Some(t(0));
        lost.continuous_grace = Some(60);
        let early = decide(false, std::slice::from_ref(&lost), t(30));
        assert_eq!(early.action, GateAction::Keep);
        assert_eq!(early.recheck_after, Some(Duration::from_secs(31)));
        let late = decide(false, std::slice::from_ref(&lost), t(60));
        assert_eq!(
            (late.action, late.sets.clone()),
            (GateAction::Add, vec!["ops/agent".to_owned()])
        );
        lost.rolling_out = true;
        assert_eq!(decide(false, &[lost], t(600)).action, GateAction::Keep);
    }

    #[test]
    fn a_pod_is_available_after_min_ready_seconds_and_unavailable_since_its_readiness_flip() {
        let pod = |ready: bool, since: i64| PodView {
            ready,
            ready_since: Some(t(since)),
            created: Some(t(-100)),
            ..PodView::default()
        };
        assert_eq!(pods_on_node([&pod(true, 0)], t(5), 10), (false, None));
        assert_eq!(pods_on_node([&pod(true, 0)], t(10), 10), (true, None));
        assert_eq!(
            pods_on_node([&pod(false, 7)], t(10), 0),
            (false, Some(t(7)))
        );
        assert_eq!(pods_on_node([], t(10), 0), (false, None));
    }
}
