//! everynode's rollout controls (not in apps/v1): both budgets, partition, canary node
//! selector, node order, `newNodePolicy`, pause and freeze, and the rollout status (with
//! kstatus's `Ready`, `Reconciling` and `Stalled` conditions).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_api::{RollingUpdateDaemonSet, RolloutFailure, RolloutOrder};
use everynode_core::status::{RolloutFacts, rollout_conditions};
use everynode_core::{CreateReason, Deferred, DeleteReason, Plan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn deleted_nodes(p: &Plan) -> Vec<&str> {
    p.deletes.iter().map(|d| d.node.as_str()).collect()
}

/// Pods per hash label.
fn pods_with_hash(c: &Cluster, hash: &str) -> usize {
    c.pods
        .iter()
        .filter(|p| p.labels.get(CONTROLLER_REVISION_HASH).map(String::as_str) == Some(hash))
        .count()
}

#[test]
fn both_budgets_surge_first_then_replace_within_max_unavailable() {
    let mut c = rolled_out(
        10,
        rolling_with(|r| {
            r.max_surge = Some(IntOrString::Int(2));
            r.max_unavailable = Some(IntOrString::Int(3));
        }),
    );
    c.set_image("agent:v2");
    let p = c.expect_sync(2, 3, 0);
    assert!(p.creates.iter().all(|x| x.reason == CreateReason::Surge));
    assert!(
        p.deletes
            .iter()
            .all(|x| x.reason == DeleteReason::RollingUpdate)
    );
    // Surge on the first two nodes by name, replacement on the next three.
    let created: Vec<&str> = p.creates.iter().map(|x| x.node.as_str()).collect();
    assert_eq!(created, ["node-0", "node-1"]);
    assert_eq!(deleted_nodes(&p), ["node-2", "node-3", "node-4"]);
    // Nothing more until something becomes available: 3 nodes are down, 2 surge pods pending.
    c.expect_sync(3, 0, 0);
    c.expect_sync(0, 0, 0);
}

#[test]
fn surge_alone_defaults_max_unavailable_to_zero() {
    let mut c = rolled_out(
        4,
        rolling_with(|r| {
            r.max_unavailable = None;
            r.max_surge = Some(IntOrString::Int(1));
        }),
    );
    c.set_image("agent:v2");
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].reason, CreateReason::Surge);
}

#[test]
fn partition_keeps_the_last_nodes_in_order_on_the_old_revision() {
    let mut c = rolled_out(
        5,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(5));
            r.partition = Some(IntOrString::Int(2));
        }),
    );
    let old = c.current_hash();
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 3, 0);
    assert_eq!(deleted_nodes(&p), ["node-0", "node-1", "node-2"]);
    for node in ["node-3", "node-4"] {
        assert_eq!(
            deferred(&p, node),
            [Deferred::HeldByPartition { partition: 2 }],
            "{node}"
        );
    }
    c.expect_sync(3, 0, 0);
    c.mark_pods_ready();
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(pods_with_hash(&c, &old), 2);
    assert_eq!(condition(&p, "Progressing").1, "RolloutHeld");
    // Held is not done: Ready stays False, and nothing is reconciling either.
    assert_eq!(kstatus(&p), ks("False", "RolloutHeld", None, None));
    let per: Vec<(i32, i32)> = p
        .status
        .unwrap()
        .pods_per_revision
        .unwrap()
        .iter()
        .map(|r| (r.pods, r.available))
        .collect();
    assert_eq!(per, [(3, 3), (2, 2)], "newest revision first");

    // Lowering the partition releases the next batch.
    c.set_strategy(rolling_with(|r| {
        r.max_unavailable = Some(IntOrString::Int(5));
        r.partition = Some(IntOrString::Int(1));
    }));
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(deleted_nodes(&p), ["node-3"]);
    assert_eq!(
        kstatus(&p),
        ks("False", "RollingOut", Some("RollingOut"), None)
    );
}

#[test]
fn partition_percentage_rounds_up_and_held_unavailable_pods_stay() {
    let mut c = rolled_out(
        10,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(10));
            r.partition = Some(IntOrString::String("25%".to_owned()));
        }),
    );
    // An unavailable old pod on a held node is not replaced (that would cross the partition).
    c.set_image("agent:v2");
    let last = c
        .pods
        .iter_mut()
        .find(|p| p.target_node.as_deref() == Some("node-9"))
        .unwrap();
    Arc::make_mut(last).ready = false;
    let p = c.expect_sync(0, 7, 0);
    assert!(!deleted_nodes(&p).contains(&"node-9"));
    assert_eq!(deleted_nodes(&p).last(), Some(&"node-6"));
}

#[test]
fn canary_selector_updates_only_matching_nodes() {
    let mut c = rolled_out(
        5,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(5));
            r.selector = Some(LabelSelector {
                match_labels: Some(labels(&[("canary", "true")])),
                ..Default::default()
            });
        }),
    );
    for n in ["node-1", "node-3"] {
        c.node_mut(n)
            .labels
            .insert("canary".to_owned(), "true".to_owned());
    }
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 2, 0);
    assert_eq!(deleted_nodes(&p), ["node-1", "node-3"]);
    assert_eq!(deferred(&p, "node-0"), [Deferred::NotSelected]);
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 0, 0);
}

#[test]
fn label_values_order_updates_zone_by_zone() {
    let mut c = Cluster::with_strategy(
        new_set("agent"),
        rolling_with(|r| {
            r.order = Some(RolloutOrder {
                type_: Some("LabelValues".to_owned()),
                label: Some("zone".to_owned()),
                values: Some(vec!["b".to_owned(), "a".to_owned()]),
            });
        }),
    );
    for (i, zone) in ["a", "b", "a", "b"].iter().enumerate() {
        c.nodes.push(Arc::new(node(
            &format!("node-{i}"),
            labels(&[("zone", zone)]),
        )));
    }
    c.expect_sync(4, 0, 0);
    c.mark_pods_ready();
    c.set_image("agent:v2");
    let mut order = Vec::new();
    for _ in 0..4 {
        let p = c.expect_sync(0, 1, 0);
        order.push(p.deletes[0].node.clone());
        c.expect_sync(1, 0, 0);
        c.mark_pods_ready();
    }
    assert_eq!(order, ["node-1", "node-3", "node-0", "node-2"]);
}

#[test]
fn priority_order_goes_highest_first() {
    let mut c = Cluster::with_strategy(
        new_set("agent"),
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(2));
            r.order = Some(RolloutOrder {
                type_: Some("Priority".to_owned()),
                label: Some("prio".to_owned()),
                values: None,
            });
        }),
    );
    for (i, prio) in ["1", "30", "x", "7"].iter().enumerate() {
        c.nodes.push(Arc::new(node(
            &format!("node-{i}"),
            labels(&[("prio", prio)]),
        )));
    }
    c.expect_sync(4, 0, 0);
    c.mark_pods_ready();
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 2, 0);
    assert_eq!(deleted_nodes(&p), ["node-1", "node-3"]);
}

#[test]
fn paused_stops_updates_but_joining_nodes_get_pods() {
    let mut c = rolled_out(3, rolling_with(|_| {}));
    c.set.spec.paused = Some(true);
    c.set_image("agent:v2");
    let new_hash = c.current_hash();
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(deferred(&p, "node-0"), [Deferred::RolloutPaused]);
    assert_eq!(
        condition(&p, "RolloutPaused"),
        ("True".into(), "Paused".into())
    );
    assert_eq!(condition(&p, "Progressing").0, "Unknown");
    assert_eq!(kstatus(&p), ks("False", "RolloutPaused", None, None));

    c.add_nodes(3, 1, BTreeMap::new());
    let p = c.expect_sync(1, 0, 0);
    // Latest (the default): the newest revision.
    assert_eq!(p.creates[0].hash, new_hash);
    assert_eq!(p.creates[0].reason, CreateReason::MissingPod);

    // Resumed: the rollout goes on once the joining node's pod is available.
    c.set.spec.paused = None;
    c.mark_pods_ready();
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(
        condition(&p, "RolloutPaused"),
        ("False".into(), "Resumed".into())
    );
    assert_eq!(
        kstatus(&p),
        ks("False", "RollingOut", Some("RollingOut"), None)
    );
}

#[test]
fn stable_policy_gives_held_joining_nodes_the_stable_revision() {
    let mut c = rolled_out(
        3,
        rolling_with(|r| {
            r.partition = Some(IntOrString::String("100%".to_owned()));
            r.new_node_policy = Some("Stable".to_owned());
        }),
    );
    let v1 = c.current_hash();
    let stable = c.set.status.clone().unwrap().stable_revision.unwrap();
    assert_eq!(stable, format!("agent-{v1}"));

    c.set_image("agent:v2");
    c.expect_sync(0, 0, 0);
    c.add_nodes(3, 1, BTreeMap::new());
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].hash, v1);
    assert_eq!(p.creates[0].reason, CreateReason::MissingPodStable);
    let template = p.templates.get(&v1).unwrap();
    let image = template.spec.as_ref().unwrap().containers[0].image.clone();
    let v1_image = c.revisions.iter().find(|r| r.name == stable).unwrap().data["spec"]["template"]
        ["spec"]["containers"][0]["image"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(image, v1_image);
    assert_ne!(image.as_deref(), Some("agent:v2"));
    // The stable revision stays; the new pod counts as old, not updated.
    let status = p.status.unwrap();
    assert_eq!(status.stable_revision.as_deref(), Some(stable.as_str()));
    assert_eq!(status.updated_number_scheduled, Some(0));

    // Latest (default) gives the joining node the newest revision.
    let mut latest = rolled_out(
        3,
        rolling_with(|r| r.partition = Some(IntOrString::String("100%".to_owned()))),
    );
    latest.set_image("agent:v2");
    latest.expect_sync(0, 0, 0);
    latest.add_nodes(3, 1, BTreeMap::new());
    let p = latest.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].hash, latest.current_hash());
}

#[test]
fn frozen_changes_no_pod_at_all() {
    let mut c = rolled_out(3, rolling_with(|_| {}));
    c.set.spec.frozen = Some(true);
    c.set_image("agent:v2");
    c.add_nodes(3, 1, BTreeMap::new());
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(deferred(&p, "node-3"), [Deferred::SetFrozen]);
    assert_eq!(condition(&p, "RolloutFrozen").0, "True");
    assert_eq!(kstatus(&p), ks("False", "RolloutFrozen", None, None));

    // Unfrozen: the joining node gets its pod first (it counts as unavailable until then).
    c.set.spec.frozen = None;
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 1, 0);
}

#[test]
fn a_template_the_apiserver_refuses_replaces_no_pod_and_creates_none() {
    for strategy in [
        rolling_with(|_| {}),
        surge(IntOrString::Int(1)),
        rolling_with(|r| r.max_unavailable = Some(IntOrString::String("100%".to_owned()))),
    ] {
        let mut c = rolled_out(3, strategy);
        c.set_image("agent:v2");
        c.rejected_hash = Some(c.current_hash());
        // The old pods the budget would replace stay.
        let p = c.expect_sync(0, 0, 0);
        assert!(p.updates.is_empty());
        let held: Vec<Vec<Deferred>> = ["node-0", "node-1", "node-2"]
            .iter()
            .map(|node| deferred(&p, node))
            .collect();
        assert!(
            held.iter()
                .flatten()
                .any(|d| *d == Deferred::TemplateRejected),
            "{held:?}"
        );
        assert_eq!(
            condition(&p, "Progressing"),
            ("False".to_owned(), "TemplateRejected".to_owned())
        );
        assert_eq!(
            kstatus(&p),
            ks("False", "TemplateRejected", None, Some("TemplateRejected"))
        );
        // A joining node waits for a template the apiserver accepts.
        c.add_nodes(3, 1, BTreeMap::new());
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(deferred(&p, "node-3"), [Deferred::TemplateRejected]);
        // A failed old pod is still cleaned up: nothing running is lost.
        c.add_failed_pods("node-1", ds_label(), 1);
        let p = c.plan();
        assert!(p.creates.is_empty(), "{:?}", p.creates);

        // Fixed template (a new hash): the rollout starts.
        c.set_image("agent:v3");
        c.pods
            .retain(|pod| pod.phase != everynode_core::PodPhase::Failed);
        let p = c.plan();
        assert!(!p.creates.is_empty() || !p.deletes.is_empty());
        let (_, reconciling, stalled) = kstatus(&p);
        assert_eq!(
            (reconciling.as_deref(), stalled),
            (Some("RollingOut"), None)
        );
    }
}

#[test]
fn status_reports_revisions_while_rolling_and_once_complete() {
    let mut c = rolled_out(2, rolling_with(|_| {}));
    let v1 = format!("agent-{}", c.current_hash());
    let status = c.set.status.clone().unwrap();
    assert_eq!(status.update_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(status.stable_revision.as_deref(), Some(v1.as_str()));
    c.set_image("agent:v2");
    let v2 = format!("agent-{}", c.current_hash());
    c.expect_sync(0, 1, 0);
    let p = c.expect_sync(1, 0, 0);
    let status = p.status.clone().unwrap();
    assert_eq!(status.update_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(status.stable_revision.as_deref(), Some(v1.as_str()));
    let per: Vec<(String, i32, i32)> = status
        .pods_per_revision
        .unwrap()
        .into_iter()
        .map(|r| (r.revision, r.pods, r.available))
        .collect();
    assert_eq!(per, [(v2.clone(), 1, 0), (v1.clone(), 1, 1)]);
    assert_eq!(condition(&p, "Progressing").1, "RollingOut");
    assert_eq!(
        kstatus(&p),
        ks("False", "RollingOut", Some("RollingOut"), None)
    );

    c.mark_pods_ready();
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(
        condition(&p, "Progressing"),
        ("True".into(), "RolloutComplete".into())
    );
    assert_eq!(kstatus(&p), ks("True", "RolloutComplete", None, None));
    let status = p.status.unwrap();
    assert_eq!(status.stable_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(status.current_revision.as_deref(), Some(v2.as_str()));
}

#[test]
fn apps_v1_sets_get_no_rollout_status() {
    let mut c = Cluster::new(new_set("agent"));
    c.config.rollout_status = false;
    c.add_nodes(0, 2, BTreeMap::new());
    let p = c.expect_sync(2, 0, 0);
    let status = p.status.unwrap();
    assert_eq!(status.update_revision, None);
    assert_eq!(status.pods_per_revision, None);
    assert_eq!(status.conditions, None);
}

/// Facts of a 3-node set on its way to revision `agent-2`: one node done, one unavailable.
fn rolling_facts() -> RolloutFacts<'static> {
    RolloutFacts {
        paused: false,
        frozen: false,
        complete: false,
        held: false,
        desired: 3,
        updated: 1,
        update_revision: "agent-2",
        wave: None,
        failure: None,
        rollback: None,
        aborted: None,
        skipped: 0,
        template_rejected: false,
        unavailable: 1,
        max_unavailable: 1,
    }
}

/// `facts` changed by `change`.
fn with<'a>(
    mut facts: RolloutFacts<'a>,
    change: impl FnOnce(&mut RolloutFacts<'a>),
) -> RolloutFacts<'a> {
    change(&mut facts);
    facts
}

/// What kstatus reads in a fresh condition list: `Ready=<status> <reason>`, then the reasons of
/// `Reconciling` and `Stalled` when present (they are only ever written as `True`).
fn kstatus_of(facts: &RolloutFacts<'_>) -> String {
    let conditions = rollout_conditions(None, facts, t(100), Some(7)).unwrap();
    assert!(
        conditions.iter().all(|c| c.observed_generation == Some(7)),
        "{conditions:?}"
    );
    let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let ready = find("Ready").unwrap();
    let mut summary = format!("Ready={} {}", ready.status, ready.reason);
    for type_ in ["Reconciling", "Stalled"] {
        if let Some(c) = find(type_) {
            assert_eq!(c.status, "True", "{type_} is only written as True");
            summary.push_str(&format!(", {type_} {}", c.reason));
        }
    }
    summary
}

#[test]
fn kstatus_conditions_per_scenario() {
    let failure = RolloutFailure {
        revision: "agent-2".to_owned(),
        reason: "ProgressDeadlineExceeded".to_owned(),
        message: "no new pod became available for 600 s".to_owned(),
        policy: "Pause".to_owned(),
        since: Time(t(50)),
        failed_nodes: Vec::new(),
    };
    let rolling = rolling_facts();
    let complete = with(rolling, |f| {
        f.complete = true;
        f.updated = 3;
        f.unavailable = 0;
    });
    let failed = with(rolling, |f| f.failure = Some(&failure));
    let table = [
        ("complete", complete, "Ready=True RolloutComplete"),
        (
            "no desired node",
            with(complete, |f| (f.desired, f.updated) = (0, 0)),
            "Ready=True RolloutComplete",
        ),
        (
            "rolling",
            rolling,
            "Ready=False RollingOut, Reconciling RollingOut",
        ),
        (
            "rolling, too many nodes down",
            with(rolling, |f| f.unavailable = 2),
            "Ready=False TooManyNodesUnavailable, Reconciling RollingOut",
        ),
        (
            "paused",
            with(rolling, |f| f.paused = true),
            "Ready=False RolloutPaused",
        ),
        (
            "paused once complete",
            with(complete, |f| f.paused = true),
            "Ready=True RolloutComplete",
        ),
        (
            "frozen",
            with(rolling, |f| f.frozen = true),
            "Ready=False RolloutFrozen",
        ),
        (
            "frozen once complete",
            with(complete, |f| f.frozen = true),
            "Ready=False RolloutFrozen",
        ),
        (
            "failed",
            failed,
            "Ready=False ProgressDeadlineExceeded, Stalled ProgressDeadlineExceeded",
        ),
        (
            "failed and frozen",
            with(failed, |f| f.frozen = true),
            "Ready=False RolloutFrozen, Stalled ProgressDeadlineExceeded",
        ),
        (
            "failed, then complete (failurePolicy Continue)",
            with(complete, |f| f.failure = Some(&failure)),
            "Ready=True RolloutComplete",
        ),
        (
            "aborted, going back",
            with(failed, |f| f.aborted = Some("agent-3")),
            "Ready=False RolloutAborted, Stalled RolloutAborted",
        ),
        (
            "aborted, back on the stable revision",
            with(complete, |f| f.aborted = Some("agent-3")),
            "Ready=False RolloutAborted, Stalled RolloutAborted",
        ),
        (
            "template rejected",
            with(rolling, |f| f.template_rejected = true),
            "Ready=False TemplateRejected, Stalled TemplateRejected",
        ),
        (
            "held by partition",
            with(rolling, |f| (f.held, f.unavailable) = (true, 0)),
            "Ready=False RolloutHeld",
        ),
    ];
    for (scenario, facts, expected) in table {
        assert_eq!(kstatus_of(&facts), expected, "{scenario}");
    }
}

#[test]
fn kstatus_messages_restate_the_progress() {
    let conditions = rollout_conditions(None, &rolling_facts(), t(100), Some(1)).unwrap();
    let message = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.message.clone())
    };
    let progress = "1 of 3 node(s) run revision agent-2";
    assert_eq!(message("Ready").as_deref(), Some(progress));
    assert_eq!(message("Reconciling").as_deref(), Some(progress));
    assert_eq!(message("Progressing").as_deref(), Some(progress));
}

#[test]
fn reconciling_and_stalled_are_removed_once_false_and_ready_keeps_its_transition_time() {
    let types =
        |list: &[Condition]| -> Vec<String> { list.iter().map(|c| c.type_.clone()).collect() };
    let ready = |list: &[Condition]| list.iter().find(|c| c.type_ == "Ready").unwrap().clone();
    // Refused, then a new template that the apiserver accepts: Stalled goes, Reconciling comes.
    let rolling = rolling_facts();
    let refused = with(rolling, |f| f.template_rejected = true);
    let first = rollout_conditions(None, &refused, t(100), Some(2)).unwrap();
    assert_eq!(
        types(&first),
        ["Available", "Progressing", "Ready", "Stalled"]
    );
    let second = rollout_conditions(Some(&first), &rolling, t(200), Some(3)).unwrap();
    assert_eq!(
        types(&second),
        ["Available", "Progressing", "Ready", "Reconciling"]
    );
    // Ready stayed False: its transition time stays too; progress only moves its message.
    let more = with(rolling, |f| f.updated = 2);
    let third = rollout_conditions(Some(&second), &more, t(300), Some(3)).unwrap();
    assert_eq!(ready(&third).last_transition_time, Time(t(100)));
    assert_eq!(ready(&third).message, "2 of 3 node(s) run revision agent-2");
    // Done: Ready flips, Reconciling goes.
    let complete = with(rolling, |f| {
        (f.complete, f.updated, f.unavailable) = (true, 3, 0)
    });
    let fourth = rollout_conditions(Some(&third), &complete, t(400), Some(3)).unwrap();
    assert_eq!(types(&fourth), ["Available", "Progressing", "Ready"]);
    assert_eq!(ready(&fourth).status, "True");
    assert_eq!(ready(&fourth).last_transition_time, Time(t(400)));
    // Nothing new: nothing to write.
    assert_eq!(
        rollout_conditions(Some(&fourth), &complete, t(500), Some(3)),
        None
    );
}

#[test]
fn a_new_generation_is_written_into_unchanged_conditions() {
    // `kubectl wait --for=condition=Ready` ignores a condition whose observedGeneration is
    // below the set's generation: a spec change that leaves Ready as it was (here
    // maxUnavailable) must still stamp the new generation.
    let complete = with(rolling_facts(), |f| {
        (f.complete, f.updated, f.unavailable) = (true, 3, 0);
    });
    let before = rollout_conditions(None, &complete, t(100), Some(2)).unwrap();
    let after = rollout_conditions(Some(&before), &complete, t(200), Some(3)).unwrap();
    assert_eq!(after.len(), before.len());
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.observed_generation, Some(3), "{}", new.type_);
        assert_eq!(new.last_transition_time, old.last_transition_time);
        assert_eq!((&new.status, &new.reason), (&old.status, &old.reason));
    }
}

/// Six nodes over zones a, b, c (two each), rolled out on the first revision.
fn zoned(f: impl FnOnce(&mut RollingUpdateDaemonSet)) -> Cluster {
    let mut c = Cluster::with_strategy(new_set("agent"), rolling_with(f));
    for (i, zone) in ["a", "b", "c", "a", "b", "c"].iter().enumerate() {
        c.nodes.push(Arc::new(node(
            &format!("node-{i}"),
            labels(&[("zone", zone)]),
        )));
    }
    c.expect_sync(6, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 0, 0);
    c
}

#[test]
fn topology_waves_update_one_domain_at_a_time_and_bake() {
    let mut c = zoned(|r| {
        r.max_unavailable = Some(IntOrString::Int(4));
        r.topology_key = Some("zone".to_owned());
        r.bake_seconds = Some(60);
    });
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 2, 0);
    assert_eq!(deleted_nodes(&p), ["node-0", "node-3"], "zone a first");
    assert_eq!(
        deferred(&p, "node-1"),
        [Deferred::WaitingForWave {
            current: "a".to_owned()
        }]
    );
    let wave = p.status.unwrap().wave.unwrap();
    assert_eq!(
        (wave.domain.as_str(), wave.index, wave.domains),
        ("a", 1, 3)
    );
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    // Zone a is done; it bakes for 60 s before zone b starts.
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    assert!(p.status.unwrap().wave.unwrap().baked_at.is_some());
    c.advance(Duration::from_secs(59));
    c.expect_sync(0, 0, 0);
    c.advance(Duration::from_secs(2));
    let p = c.expect_sync(0, 2, 0);
    assert_eq!(deleted_nodes(&p), ["node-1", "node-4"], "then zone b");
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    c.advance(Duration::from_secs(61));
    let p = c.expect_sync(0, 2, 0);
    assert_eq!(deleted_nodes(&p), ["node-2", "node-5"], "then zone c");
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    // The last zone does not bake: the rollout is complete and the wave gone.
    let p = c.expect_sync(0, 0, 0);
    let status = p.status.unwrap();
    assert_eq!(status.wave, None);
    assert_eq!(p.requeue_after, None);
}

#[test]
fn per_domain_budget_limits_each_wave() {
    let mut c = zoned(|r| {
        r.max_unavailable = Some(IntOrString::Int(6));
        r.topology_key = Some("zone".to_owned());
        r.max_unavailable_per_domain = Some(IntOrString::String("50%".to_owned()));
    });
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(deleted_nodes(&p), ["node-0"]);
    assert_eq!(deferred(&p, "node-3"), [Deferred::UpdateBudgetExhausted]);
}

#[test]
fn an_invalid_per_domain_budget_is_an_error_and_starts_no_update() {
    let mut c = zoned(|r| {
        r.max_unavailable = Some(IntOrString::Int(6));
        r.topology_key = Some("zone".to_owned());
    });
    let rolling = c.set.spec.update_strategy.as_mut().unwrap();
    rolling
        .rolling_update
        .as_mut()
        .unwrap()
        .max_unavailable_per_domain = Some(IntOrString::String("half".to_owned()));
    c.set_image("agent:v2");
    let p = c.plan();
    let errors: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "invalid value \"half\" for spec.updateStrategy.rollingUpdate.maxUnavailablePerDomain: \
             must be an integer or a percentage like \"25%\""
        ]
    );
    assert!(p.deletes.is_empty() && p.creates.is_empty(), "{p}");
}

#[test]
fn min_seconds_between_batches_paces_the_rollout() {
    let mut c = rolled_out(
        3,
        rolling_with(|r| r.min_seconds_between_batches = Some(30)),
    );
    c.set_image("agent:v2");
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    // The new pod was created just now: the next batch waits 30 s.
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
    assert!(matches!(
        deferred(&p, "node-1").as_slice(),
        [Deferred::Paced { .. }]
    ));
    c.advance(Duration::from_secs(30));
    c.expect_sync(0, 1, 0);
}

#[test]
fn max_nodes_per_minute_caps_starts_in_any_minute() {
    let mut c = rolled_out(
        5,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(5));
            r.max_nodes_per_minute = Some(2);
        }),
    );
    c.set_image("agent:v2");
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    c.advance(Duration::from_secs(59));
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(1)));
    c.advance(Duration::from_secs(1));
    c.expect_sync(0, 2, 0);
}

#[test]
fn in_place_updates_patch_images_and_recreate_for_other_changes() {
    let mut c = rolled_out(
        3,
        rolling_with(|r| r.rolling_update_type = Some("InPlaceIfPossible".to_owned())),
    );
    let before: Vec<String> = c.pods.iter().map(|p| p.uid.clone()).collect();
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.updates.len(), 1);
    let update = &p.updates[0];
    assert_eq!(update.node, "node-0");
    assert_eq!(update.images, [("c".to_owned(), "agent:v2".to_owned())]);
    assert_eq!(
        update.labels.get(CONTROLLER_REVISION_HASH),
        Some(&c.current_hash())
    );
    let status = p.status.unwrap();
    assert_eq!(status.updated_number_scheduled, Some(1));
    assert_eq!(
        status.number_unavailable,
        Some(1),
        "unavailable until ready again"
    );
    // Not ready yet: the budget (maxUnavailable 1) is used up.
    let p = c.expect_sync(0, 0, 0);
    assert!(p.updates.is_empty());
    c.mark_pods_ready();
    for _ in 0..2 {
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(p.updates.len(), 1);
        c.mark_pods_ready();
    }
    let after: Vec<String> = c.pods.iter().map(|p| p.uid.clone()).collect();
    assert_eq!(before, after, "the same pods, updated in place");
    c.expect_sync(0, 0, 0);

    // A change other than images recreates the pod.
    c.update_template(|s| s.host_network = Some(true));
    let p = c.expect_sync(0, 1, 0);
    assert!(p.updates.is_empty());
}

/// With surge and `minReadySeconds`, a new pod beside an available old one: the counters see
/// only the old one (ready and available), so the plan wakes itself when the new one becomes
/// available, and then deletes the old one (upstream e2e: "should surge pods onto nodes").
#[test]
fn a_surge_pod_becoming_available_wakes_the_plan_that_deletes_its_old_pod() {
    let mut c = rolled_out(
        2,
        rolling_with(|r| {
            r.max_unavailable = Some(IntOrString::Int(0));
            r.max_surge = Some(IntOrString::Int(1));
        }),
    );
    c.set.spec.min_ready_seconds = Some(10);
    c.advance(Duration::from_secs(11));
    c.expect_sync(0, 0, 0);
    c.set_image("agent:v2");
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    c.advance(Duration::from_secs(3));
    let p = c.expect_sync(0, 0, 0);
    let counts = p.counts.unwrap();
    assert_eq!(
        counts.ready, counts.available,
        "the counters see the old pods only"
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(8)));
    c.advance(Duration::from_secs(8));
    let p = c.expect_sync(1, 1, 0);
    assert_eq!(deleted_nodes(&p), ["node-0"]);
}
