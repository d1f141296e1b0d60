//! Rollout safety (everynode only): the progress deadline, failed nodes (crash loops, the
//! pod-ready deadline, the node-health guard) against `maxFailedNodes`, the failure policies
//! (Pause, Rollback, Continue), `unavailableNodePolicy`, the strict budget when a new
//! template supersedes a failed rollout, and the operator's abort and retry.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_api::{RollingUpdateDaemonSet, RolloutAbort, RolloutRetry};
use everynode_core::{Deferred, DeleteReason, EventReason, NodeProblem, Plan, PlanError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::SignedDuration;

fn failure_reason(p: &Plan) -> Option<String> {
    p.status
        .as_ref()
        .and_then(|s| s.failure.as_ref())
        .map(|f| f.reason.clone())
}

fn pods_with_hash(c: &Cluster, hash: &str) -> Vec<String> {
    let mut nodes: Vec<String> = c
        .pods
        .iter()
        .filter(|p| p.labels.get(CONTROLLER_REVISION_HASH).map(String::as_str) == Some(hash))
        .filter_map(|p| p.target_node.clone())
        .collect();
    nodes.sort();
    nodes
}

fn set_trouble(c: &mut Cluster, node: &str, trouble: &str) {
    let hash = c.current_hash();
    for p in &mut c.pods {
        if p.target_node.as_deref() == Some(node)
            && p.labels.get(CONTROLLER_REVISION_HASH) == Some(&hash)
        {
            Arc::make_mut(p).trouble = Some(trouble.to_owned());
        }
    }
}

#[test]
fn progress_deadline_pauses_a_rollout_whose_pods_never_become_ready() {
    let mut c = rolled_out(5, rolling_with(|r| r.progress_deadline_seconds = Some(30)));
    c.set_image("agent:v2");
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    // The deadline is 30 s after the new pod was created: the plan asks to look again then.
    let p = c.plan();
    assert!(
        p.requeue_after
            .is_some_and(|r| r <= Duration::from_secs(31))
    );
    c.advance(Duration::from_secs(20));
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(failure_reason(&p), None);
    assert_eq!(condition(&p, "Progressing").0, "True");
    assert_eq!(
        kstatus(&p),
        ks("False", "RollingOut", Some("RollingOut"), None)
    );
    c.advance(Duration::from_secs(11));
    let p = c.expect_sync(0, 0, 1);
    assert_eq!(p.events[0].reason, EventReason::RolloutFailed);
    assert_eq!(
        failure_reason(&p).as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    assert_eq!(
        condition(&p, "Progressing"),
        ("False".into(), "ProgressDeadlineExceeded".into())
    );
    assert_eq!(
        condition(&p, "RolloutFailed"),
        ("True".into(), "ProgressDeadlineExceeded".into())
    );
    let failed = "ProgressDeadlineExceeded";
    assert_eq!(kstatus(&p), ks("False", failed, None, Some(failed)));
    // Paused: even a pod that becomes ready now does not move the rollout on, and the
    // failure is reported once.
    c.mark_pods_ready();
    c.advance(Duration::from_secs(60));
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(
        failure_reason(&p).as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    c.config.explain = true;
    assert_eq!(deferred(&c.plan(), "node-1"), [Deferred::RolloutFailed]);
    // A new template ends the failure.
    c.set_image("agent:v3");
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(failure_reason(&p), None);
    assert_eq!(
        condition(&p, "RolloutFailed"),
        ("False".into(), "NewRevision".into())
    );
    assert_eq!(
        kstatus(&p),
        ks("False", "RollingOut", Some("RollingOut"), None)
    );
}

#[test]
fn progress_deadline_counts_from_the_last_pod_that_became_available() {
    let mut c = rolled_out(3, rolling_with(|r| r.progress_deadline_seconds = Some(30)));
    c.set_image("agent:v2");
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.advance(Duration::from_secs(25));
    c.mark_pods_ready();
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    // 25 s after node-0's pod became available and node-1's was created: not yet.
    c.advance(Duration::from_secs(25));
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(failure_reason(&p), None);
    c.advance(Duration::from_secs(6));
    let p = c.expect_sync(0, 0, 1);
    assert_eq!(
        failure_reason(&p).as_deref(),
        Some("ProgressDeadlineExceeded")
    );
}

#[test]
fn rollback_puts_the_stable_template_back_and_restarts_no_untouched_pod() {
    let mut c = rolled_out(
        5,
        rolling_with(|r| {
            r.progress_deadline_seconds = Some(30);
            r.failure_policy = Some("Rollback".into());
        }),
    );
    let stable = c.current_hash();
    let untouched: Vec<String> = c.pods.iter().skip(1).map(|p| p.name.clone()).collect();
    c.set_image("agent:v2");
    let failed = c.current_hash();
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.advance(Duration::from_secs(31));
    let p = c.expect_sync(0, 0, 1);
    let rollback = p.rollback.clone().unwrap();
    assert_eq!(rollback.to, format!("agent-{stable}"));
    assert_eq!(rollback.from, format!("agent-{failed}"));
    let note = p.status.as_ref().and_then(|s| s.rollback.clone()).unwrap();
    assert_eq!(note.rolled_back_from, format!("agent-{failed}"));
    assert_eq!(note.rollback_of, format!("agent-{stable}"));
    // The template is the stable one again: only the broken pod is replaced.
    assert_eq!(c.current_hash(), stable);
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-0");
    assert_eq!(p.deletes[0].reason, DeleteReason::OldPodUnavailable);
    assert_eq!(failure_reason(&p), None);
    assert_eq!(
        condition(&p, "RolloutFailed"),
        ("False".into(), "RolledBack".into())
    );
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(condition(&p, "Progressing").1, "RolloutComplete");
    assert_eq!(pods_with_hash(&c, &stable).len(), 5);
    for name in &untouched {
        assert!(
            c.pods.iter().any(|p| &p.name == name),
            "{name} was replaced"
        );
    }
}

#[test]
fn rollback_without_a_stable_revision_pauses() {
    // The first template never became available everywhere: there is no stable revision.
    let mut c = Cluster::with_strategy(
        new_set("agent"),
        rolling_with(|r| {
            r.progress_deadline_seconds = Some(30);
            r.failure_policy = Some("Rollback".into());
        }),
    );
    c.add_nodes(0, 2, BTreeMap::new());
    c.expect_sync(2, 0, 0);
    c.advance(Duration::from_secs(31));
    let p = c.expect_sync(0, 0, 1);
    assert!(p.rollback.is_none());
    assert_eq!(
        failure_reason(&p).as_deref(),
        Some("ProgressDeadlineExceeded")
    );
}

#[test]
fn crash_looping_pods_on_three_nodes_trip_max_failed_nodes_of_two() {
    let mut c = rolled_out(
        6,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(6));
            r.max_failed_nodes = Some(IntOrString::Int(2));
        }),
    );
    c.set_image("agent:v2");
    c.expect_sync(0, 6, 0);
    c.expect_sync(6, 0, 0);
    for node in ["node-0", "node-1"] {
        set_trouble(&mut c, node, "container c: CrashLoopBackOff");
    }
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(
        failure_reason(&p),
        None,
        "2 failed nodes are within the threshold"
    );
    set_trouble(&mut c, "node-2", "container c: ImagePullBackOff");
    let p = c.expect_sync(0, 0, 1);
    let failure = p.status.as_ref().and_then(|s| s.failure.clone()).unwrap();
    assert_eq!(failure.reason, "FailedNodesExceeded");
    assert_eq!(
        failure.failed_nodes,
        [
            "node-0: container c: CrashLoopBackOff",
            "node-1: container c: CrashLoopBackOff",
            "node-2: container c: ImagePullBackOff",
        ]
    );
}

#[test]
fn pods_not_ready_by_the_pod_ready_deadline_count_as_failed_nodes() {
    let mut c = rolled_out(
        4,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(2));
            r.pod_ready_deadline_seconds = Some(10);
            r.max_failed_nodes = Some(IntOrString::String("25%".into()));
        }),
    );
    c.set_image("agent:v2");
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    let p = c.plan();
    assert!(
        p.requeue_after
            .is_some_and(|r| r <= Duration::from_secs(11))
    );
    c.advance(Duration::from_secs(11));
    let p = c.expect_sync(0, 0, 1);
    let failure = p.status.as_ref().and_then(|s| s.failure.clone()).unwrap();
    assert_eq!(failure.reason, "FailedNodesExceeded");
    assert!(failure.failed_nodes[0].ends_with("pod not ready 10s after it was created"));
}

#[test]
fn node_health_guard_counts_nodes_that_break_after_their_update() {
    let strategy = rolling_with(|r| {
        r.max_unavailable = Some(IntOrString::Int(2));
        r.node_health_window_seconds = Some(60);
        r.max_failed_nodes = Some(IntOrString::Int(0));
    });
    let mut c = rolled_out(4, strategy);
    // node-3 was NotReady before the update: not the new revision's doing.
    let before = c.now;
    c.node_mut("node-3").problem = Some(NodeProblem {
        what: "NotReady".into(),
        since: Some(before),
    });
    c.advance(Duration::from_secs(5));
    c.set_image("agent:v2");
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    c.advance(Duration::from_secs(10));
    let p = c.plan();
    assert_eq!(failure_reason(&p), None);
    // node-0 gets a pressure condition 10 s after its new pod started.
    let now = c.now;
    c.node_mut("node-0").problem = Some(NodeProblem {
        what: "MemoryPressure".into(),
        since: Some(now),
    });
    // node-1 turns NotReady, and the lifecycle controller's taint takes it out of the desired
    // nodes: the guard still counts it.
    c.node_mut("node-1").problem = Some(NodeProblem {
        what: "NotReady".into(),
        since: Some(now),
    });
    c.node_mut("node-1")
        .taints
        .push(taint("node.kubernetes.io/not-ready", "", "NoSchedule"));
    let p = c.expect_sync(0, 0, 1);
    let failure = p.status.as_ref().and_then(|s| s.failure.clone()).unwrap();
    assert_eq!(
        failure.failed_nodes,
        [
            "node-0: node turned MemoryPressure within 60s of the update",
            "node-1: node turned NotReady within 60s of the update",
        ]
    );
}

/// 10 nodes, one of them (node-9) down with its old pod unready, and a new template.
fn with_a_down_node(policy: &str) -> Cluster {
    let mut c = rolled_out(
        10,
        rolling_with(|r| r.unavailable_node_policy = Some(policy.into())),
    );
    let now = c.now;
    c.node_mut("node-9").problem = Some(NodeProblem {
        what: "NotReady".into(),
        since: Some(now),
    });
    c.set_pod_readiness(false, 1, |p| p.target_node.as_deref() == Some("node-9"));
    c.set_image("agent:v2");
    c.config.explain = true;
    c
}

#[test]
fn count_lets_a_down_node_use_the_budget() {
    let mut c = with_a_down_node("Count");
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-9");
    assert_eq!(p.deletes[0].reason, DeleteReason::OldPodUnavailable);
    let p = c.expect_sync(1, 0, 0);
    // Its new pod can never become ready: the rollout is stuck behind it.
    assert_eq!(p.creates[0].node, "node-9");
    for _ in 0..3 {
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn skip_leaves_a_down_node_alone_and_lists_it() {
    let mut c = with_a_down_node("Skip");
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-0");
    assert_eq!(deferred(&p, "node-9"), [Deferred::SkippedNodeDown]);
    assert_eq!(
        p.status.as_ref().and_then(|s| s.skipped_nodes.clone()),
        Some(vec!["node-9".to_owned()])
    );
    // The rest rolls through one node at a time.
    for _ in 0..9 {
        c.expect_sync(1, 0, 0);
        let new = c.current_hash();
        c.set_pod_readiness(true, 1, |p| {
            p.labels.get(CONTROLLER_REVISION_HASH) == Some(&new)
        });
        let p = c.plan();
        if p.deletes.is_empty() {
            break;
        }
        c.expect_sync(0, 1, 0);
    }
    assert_eq!(pods_with_hash(&c, &c.current_hash()).len(), 9);
    // Back up: it is updated like any other node.
    c.node_mut("node-9").problem = None;
    c.set_pod_readiness(true, 1, |p| p.target_node.as_deref() == Some("node-9"));
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-9");
}

#[test]
fn continue_reports_the_failure_and_goes_on() {
    let mut c = rolled_out(
        3,
        rolling_with(|r| {
            r.progress_deadline_seconds = Some(30);
            r.failure_policy = Some("Continue".into());
            r.max_unavailable = Some(IntOrString::Int(2));
        }),
    );
    c.set_image("agent:v2");
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.advance(Duration::from_secs(31));
    let p = c.expect_sync(0, 0, 1);
    assert_eq!(
        failure_reason(&p).as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    // Stalled as a Deployment past its deadline, though the rollout goes on.
    let failed = "ProgressDeadlineExceeded";
    assert_eq!(kstatus(&p), ks("False", failed, None, Some(failed)));
    // One pod becomes ready: the next node is updated despite the failure.
    c.set_pod_readiness(true, 1, |p| p.target_node.as_deref() == Some("node-0"));
    c.expect_sync(0, 1, 0);
    // Complete all the same: Ready, no longer stalled; RolloutFailed still tells.
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(kstatus(&p), ks("True", "RolloutComplete", None, None));
    assert_eq!(condition(&p, "RolloutFailed").0, "True");
}

#[test]
fn a_new_template_replaces_the_broken_pods_within_the_budget() {
    let mut c = rolled_out(
        8,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(2));
            r.max_failed_nodes = Some(IntOrString::Int(1));
        }),
    );
    c.set_image("agent:v2");
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    set_trouble(&mut c, "node-0", "container c: CrashLoopBackOff");
    set_trouble(&mut c, "node-1", "container c: CrashLoopBackOff");
    c.expect_sync(0, 0, 1);
    // The fix: the broken pods go first, and no healthy pod is taken down beyond the budget.
    c.set_image("agent:v3");
    let p = c.expect_sync(0, 2, 0);
    let mut nodes: Vec<&str> = p.deletes.iter().map(|d| d.node.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["node-0", "node-1"]);
    assert!(
        p.deletes
            .iter()
            .all(|d| d.reason == DeleteReason::OldPodUnavailable)
    );
    c.expect_sync(2, 0, 0);
    c.expect_sync(0, 0, 0);
}

#[test]
fn unknown_policies_are_plan_errors_naming_the_field() {
    for (field, f) in [
        (
            "failurePolicy",
            Box::new(|r: &mut RollingUpdateDaemonSet| r.failure_policy = Some("Sometimes".into()))
                as Box<dyn Fn(&mut RollingUpdateDaemonSet)>,
        ),
        (
            "unavailableNodePolicy",
            Box::new(|r: &mut RollingUpdateDaemonSet| {
                r.unavailable_node_policy = Some("Ignore".into());
            }),
        ),
    ] {
        let mut c = Cluster::with_strategy(new_set("agent"), rolling_with(|r| f(r)));
        c.add_nodes(0, 1, BTreeMap::new());
        let p = c.plan();
        let messages: Vec<String> = p.errors.iter().map(PlanError::to_string).collect();
        assert!(
            messages.iter().any(|m| m.contains(field)),
            "{field}: {messages:?}"
        );
    }
}

#[test]
fn blocked_nodes_name_each_reason_and_totals_count_them_all() {
    let mut c = rolled_out(
        8,
        rolling_with(|r| {
            r.partition = Some(IntOrString::Int(2));
            r.unavailable_node_policy = Some("Skip".into());
            r.max_unavailable = Some(IntOrString::Int(3));
        }),
    );
    // Kept out by a taint: node-8 and 60 more selected nodes. Not listed: 5 nodes the node
    // selector leaves out (not the set's business).
    c.add_nodes(8, 1, BTreeMap::new());
    c.node_mut("node-8")
        .taints
        .push(taint("dedicated", "db", "NoSchedule"));
    c.update_template(|s| {
        s.node_selector = Some(BTreeMap::from([("role".to_owned(), "agent".to_owned())]));
    });
    for n in &mut c.nodes {
        Arc::make_mut(n)
            .labels
            .insert("role".into(), "agent".into());
    }
    for i in 0..60 {
        let mut tainted = node(
            &format!("other-{i:02}"),
            BTreeMap::from([("role".to_owned(), "agent".to_owned())]),
        );
        tainted.taints.push(taint("dedicated", "db", "NoSchedule"));
        c.nodes.push(Arc::new(tainted));
    }
    for i in 0..5 {
        c.nodes
            .push(Arc::new(node(&format!("unselected-{i}"), BTreeMap::new())));
    }
    // node-7 is down (skipped); node-0's new pod crash-loops; node-1's cannot be scheduled.
    let now = c.now;
    c.node_mut("node-7").problem = Some(NodeProblem {
        what: "Unreachable".into(),
        since: Some(now),
    });
    c.set_image("agent:v2");
    c.expect_sync(0, 3, 0);
    c.expect_sync(3, 0, 0);
    set_trouble(&mut c, "node-0", "container c: CrashLoopBackOff");
    let hash = c.current_hash();
    for p in &mut c.pods {
        if p.target_node.as_deref() == Some("node-1")
            && p.labels.get(CONTROLLER_REVISION_HASH) == Some(&hash)
        {
            Arc::make_mut(p).unschedulable =
                Some("0/69 nodes are available: 1 node(s) didn't have free ports".into());
        }
    }
    let p = c.plan();
    let status = p.status.clone().unwrap();
    let blocked = status.blocked_nodes.unwrap();
    let by_node: BTreeMap<&str, &str> = blocked
        .iter()
        .map(|b| (b.node.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(by_node["node-0"], "CrashLoopBackOff");
    assert_eq!(by_node["node-1"], "Unschedulable");
    assert_eq!(by_node["node-7"], "SkippedNodeDown");
    assert_eq!(by_node["node-8"], "TaintNotTolerated");
    // Partition 2 of 8 desired: the last two in order (node-6, and node-7 which is skipped
    // first) stay on the old revision.
    assert_eq!(by_node["node-6"], "HeldByPartition");
    let unschedulable = blocked.iter().find(|b| b.node == "node-1").unwrap();
    assert!(unschedulable.message.contains("didn't have free ports"));
    assert_eq!(blocked.len(), 50, "the list is bounded");
    let totals: BTreeMap<String, i32> = status
        .blocked_totals
        .unwrap()
        .into_iter()
        .map(|t| (t.reason, t.count))
        .collect();
    assert_eq!(totals["TaintNotTolerated"], 61);
    assert!(!totals.contains_key("NodeSelectorMismatch"), "{totals:?}");
    assert_eq!(totals["CrashLoopBackOff"], 1);
    assert_eq!(totals["Unschedulable"], 1);
    assert_eq!(totals["SkippedNodeDown"], 1);
}

#[test]
fn abort_takes_the_pods_back_to_the_stable_revision_within_the_budget_and_keeps_the_template() {
    let mut c = rolled_out(4, rolling_with(|_| {}));
    let stable = c.current_hash();
    c.set_image("agent:v2");
    let aborted = c.current_hash();
    for _ in 0..2 {
        c.expect_sync(0, 1, 0);
        c.expect_sync(1, 0, 0);
        c.mark_pods_ready();
    }
    assert_eq!(pods_with_hash(&c, &aborted), ["node-0", "node-1"]);
    c.set.spec.abort = Some(RolloutAbort {
        revision: format!("agent-{aborted}"),
    });
    // One node at a time (maxUnavailable 1), from the stable revision's template.
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-0");
    let status = p.status.clone().unwrap();
    assert_eq!(status.update_revision, Some(format!("agent-{stable}")));
    assert_eq!(
        condition(&p, "Progressing"),
        ("False".into(), "RolloutAborted".into())
    );
    let reason = "RolloutAborted";
    assert_eq!(kstatus(&p), ks("False", reason, None, Some(reason)));
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(
        (p.creates[0].node.as_str(), p.creates[0].hash.as_str()),
        ("node-0", stable.as_str())
    );
    assert!(
        p.templates.contains_key(&stable),
        "creates use the stable template"
    );
    c.mark_pods_ready();
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(pods_with_hash(&c, &stable).len(), 4);
    // Back on the stable revision everywhere, still not Ready: the template is not rolled out.
    assert_eq!(kstatus(&p), ks("False", reason, None, Some(reason)));
    assert_eq!(c.current_hash(), aborted, "the template is left as it is");

    // Removing the abort (`everynode rollout retry`) starts the rollout of the template again.
    c.set.spec.abort = None;
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(condition(&p, "Progressing").1, "RollingOut");
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].hash, aborted);
}

#[test]
fn an_abort_of_another_revision_or_without_a_stable_one_changes_nothing() {
    let mut c = rolled_out(3, rolling_with(|_| {}));
    c.set_image("agent:v2");
    c.set.spec.abort = Some(RolloutAbort {
        revision: "agent-someotherhash".to_owned(),
    });
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(condition(&p, "Progressing").1, "RollingOut");

    let mut fresh = Cluster::with_strategy(new_set("agent"), rolling_with(|_| {}));
    fresh.add_nodes(0, 2, BTreeMap::new());
    let revision = format!("agent-{}", fresh.current_hash());
    fresh.set.spec.abort = Some(RolloutAbort { revision });
    fresh.expect_sync(2, 0, 0);
}

#[test]
fn retry_drops_the_failure_and_counts_only_pods_created_after_it() {
    let mut c = rolled_out(
        6,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(6));
            r.max_failed_nodes = Some(IntOrString::Int(2));
        }),
    );
    c.set_image("agent:v2");
    let revision = format!("agent-{}", c.current_hash());
    c.expect_sync(0, 6, 0);
    c.expect_sync(6, 0, 0);
    let crashing = ["node-0", "node-1", "node-2"];
    for node in crashing {
        set_trouble(&mut c, node, "container c: ImagePullBackOff");
    }
    c.expect_sync(0, 0, 1);
    // The image is pushed after all: retry (at a clock reading within a second).
    c.advance(Duration::from_secs(10));
    c.set.spec.retry = Some(RolloutRetry {
        revision: revision.clone(),
        at: Time(c.now + SignedDuration::from_millis(500)),
    });
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(failure_reason(&p), None);
    assert_eq!(condition(&p, "Progressing").1, "RollingOut");
    // The pods that failed before the retry start again (the CLI deletes them): their new
    // pods count — creation times are whole seconds, so also those of the retry's second —
    // and fail the rollout again if they fail too.
    c.pods
        .retain(|p| !crashing.contains(&p.target_node.as_deref().unwrap_or_default()));
    c.expect_sync(3, 0, 0);
    for node in crashing {
        set_trouble(&mut c, node, "container c: ImagePullBackOff");
    }
    let p = c.expect_sync(0, 0, 1);
    let failure = p.status.as_ref().and_then(|s| s.failure.clone()).unwrap();
    assert_eq!((failure.revision, failure.since.0), (revision, c.now));
}

#[test]
fn failure_policy_abort_takes_the_pods_back_and_keeps_the_template_and_the_failure() {
    let mut c = rolled_out(
        3,
        rolling_with(|r| {
            r.progress_deadline_seconds = Some(30);
            r.failure_policy = Some("Abort".into());
        }),
    );
    let stable = c.current_hash();
    c.set_image("agent:v2");
    let failed = c.current_hash();
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.advance(Duration::from_secs(31));
    let p = c.expect_sync(0, 0, 1);
    assert!(
        p.events[0].message.contains("failurePolicy Abort"),
        "{}",
        p.events[0].message
    );
    assert!(p.rollback.is_none(), "Abort does not rewrite the template");
    // The next plans take node-0 back to the stable revision, within the budget.
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-0");
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].hash, stable);
    assert_eq!(
        condition(&p, "RolloutFailed"),
        ("True".into(), "ProgressDeadlineExceeded".into())
    );
    assert_eq!(condition(&p, "Progressing").1, "RolloutAborted");
    c.mark_pods_ready();
    for _ in 0..3 {
        let p = c.expect_sync(0, 0, 0);
        let failure = p.status.as_ref().and_then(|s| s.failure.clone()).unwrap();
        assert_eq!(
            failure.revision,
            format!("agent-{failed}"),
            "the failure is kept"
        );
        c.advance(Duration::from_secs(60));
    }
    assert_eq!(pods_with_hash(&c, &stable).len(), 3);
    assert_eq!(c.current_hash(), failed, "the template is left as it is");

    // A retry takes the template's rollout up again.
    c.set.spec.retry = Some(RolloutRetry {
        revision: format!("agent-{failed}"),
        at: Time(c.now),
    });
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(condition(&p, "Progressing").1, "RollingOut");
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].hash, failed);
}
