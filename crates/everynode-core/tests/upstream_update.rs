//! Planner scenarios of upstream `pkg/controller/daemon/update_test.go` (§9.2). Each "sync"
//! is one plan applied like upstream's fake pod control; upstream's `clearExpectations`
//! between syncs has no counterpart (the planner keeps no expectations).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use everynode_core::budget::budget;
use everynode_core::{CreateReason, DeleteReason};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn int(n: i32) -> IntOrString {
    IntOrString::Int(n)
}

/// Five ready pods of the first revision, then a new image under `strategy`.
fn rolled_out(
    nodes: usize,
    strategy: everynode_api::DaemonSetUpdateStrategy,
    ready: bool,
) -> Cluster {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, nodes, Default::default());
    c.expect_sync(nodes, 0, 0);
    if ready {
        c.mark_pods_ready();
    }
    c.set_image("foo2/bar2");
    c.set_strategy(strategy);
    c
}

#[test]
fn daemon_set_updates_pods() {
    let mut c = rolled_out(5, rolling(int(2)), true);
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 0, 0);
}

#[test]
fn daemon_set_updates_pods_with_max_surge() {
    let mut c = rolled_out(5, surge(int(2)), true);
    c.expect_sync(2, 0, 0);
    c.expect_sync(0, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(2, 2, 0);
    c.expect_sync(0, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(5 % 2, 2, 0);
    c.expect_sync(0, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 5 % 2, 0);
    c.expect_sync(0, 0, 0);
}

#[test]
fn daemon_set_updates_pods_not_match_tainst_with_max_surge() {
    let mut set = new_set("foo");
    set.spec.update_strategy = Some(surge(int(1)));
    set.spec.template.spec.as_mut().unwrap().tolerations = Some(vec![toleration(
        "node-role.kubernetes.io/control-plane",
        "Exists",
        "",
        "",
    )]);
    let mut c = Cluster::new(set);
    c.add_nodes(0, 5, Default::default());
    c.node_mut("node-0").taints = vec![taint(
        "node-role.kubernetes.io/control-plane",
        "",
        "NoSchedule",
    )];
    c.expect_sync(5, 0, 0);
    c.mark_pods_ready();

    c.update_template(|s| s.tolerations = None);
    let p = c.expect_sync(1, 1, 0);
    assert!(matches!(
        p.deletes[0].reason,
        DeleteReason::IneligibleAfterSurge(_)
    ));
    assert_eq!(p.deletes[0].node, "node-0");
    c.expect_sync(0, 0, 0);
    c.mark_pods_ready();
    for _ in 0..3 {
        c.expect_sync(1, 1, 0);
        c.expect_sync(0, 0, 0);
        c.mark_pods_ready();
    }
    c.expect_sync(0, 1, 0);
    c.expect_sync(0, 0, 0);
}

#[test]
fn daemon_set_updates_when_new_pod_is_not_ready() {
    let mut c = rolled_out(5, rolling(int(3)), true);
    c.expect_sync(0, 3, 0);
    c.expect_sync(3, 0, 0);
    c.expect_sync(0, 0, 0);
    c.expect_sync(0, 0, 0);
}

#[test]
fn daemon_set_updates_some_old_pods_not_ready() {
    let mut c = rolled_out(5, rolling(int(2)), true);
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.expect_sync(0, 0, 0);

    c.set_image("foo2/bar3");
    c.expect_sync(0, 2, 0);
    c.expect_sync(2, 0, 0);
    c.expect_sync(0, 0, 0);
    assert_eq!(c.ready_count(), 5 - 2);
}

#[test]
fn daemon_set_updates_save_old_healthy_pods() {
    let mut c = rolled_out(20, rolling(int(10)), true);
    c.expect_sync(0, 10, 0);
    c.expect_sync(10, 0, 0);
    c.expect_sync(0, 0, 0);
    let old_ready: Vec<String> = c
        .pods
        .iter()
        .filter(|p| p.ready)
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(old_ready.len(), 10);

    // Upstream draws maxUnavailable from [0, 10) at random; a fixed spread of that range here.
    for (i, max_unavailable) in [0, 3, 7, 9, 1, 5, 2, 8, 4, 6].into_iter().enumerate() {
        c.set_strategy(rolling(int(max_unavailable)));
        c.set_image(&format!("foo2/bar3-{i}"));
        c.expect_sync(0, 10, 0);
        c.expect_sync(10, 0, 0);
        c.expect_sync(0, 0, 0);
        for name in &old_ready {
            assert!(c.pod(name).ready, "iteration {i}: ready pod {name} touched");
        }
    }

    c.set_strategy(rolling(int(11)));
    c.set_image("foo2/bar4");
    c.expect_sync(0, 11, 0);
    c.expect_sync(11, 0, 0);
    c.expect_sync(0, 0, 0);
    assert_eq!(c.ready_count(), 9);
}

#[test]
fn daemon_set_updates_all_old_not_ready_pods_and_new_not_ready_pods() {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, 100, Default::default());
    c.expect_sync(100, 0, 0);
    c.mark_pods_ready();
    let hash1 = c.current_hash();

    c.set_image("foo2/bar2");
    c.set_strategy(rolling(int(10)));
    for _ in 0..10 {
        c.expect_sync(0, 10, 0);
        c.expect_sync(10, 0, 0);
        c.mark_pods_ready();
    }
    c.expect_sync(0, 0, 0);

    // 10 available old, 2 unavailable old, 88 unavailable new pods.
    let mut names: Vec<String> = c.pods.iter().map(|p| p.name.clone()).collect();
    names.sort();
    let mut old_unavailable = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let p = Arc::make_mut(c.pods.iter_mut().find(|p| p.name == *name).unwrap());
        if i >= 10 {
            p.ready = false;
        }
        if i < 12 {
            Arc::make_mut(&mut p.labels)
                .insert("controller-revision-hash".to_owned(), hash1.clone());
            if i >= 10 {
                old_unavailable.push(name.clone());
            }
        }
    }
    let p = c.expect_sync(0, 2, 0);
    assert!(p.deletes.iter().all(|d| old_unavailable.contains(&d.pod)));
    assert!(
        p.deletes
            .iter()
            .all(|d| d.reason == DeleteReason::OldPodUnavailable)
    );
    c.expect_sync(2, 0, 0);
    c.expect_sync(0, 0, 0);
    // The deleted old pods are gone; their replacements are of the current revision, and only
    // the 10 available old pods are left of the old one.
    for name in &old_unavailable {
        assert!(c.pods.iter().all(|p| p.name != *name), "{name} is back");
    }
    let old = c
        .pods
        .iter()
        .filter(|p| p.labels.get("controller-revision-hash") == Some(&hash1))
        .count();
    assert_eq!((c.pods.len(), old), (100, 10));
}

#[test]
fn daemon_set_updates_all_old_pods_not_ready() {
    let mut c = rolled_out(5, rolling(int(3)), false);
    c.expect_sync(0, 5, 0);
    c.expect_sync(5, 0, 0);
    c.expect_sync(0, 0, 0);
}

#[test]
fn daemon_set_updates_all_old_pods_not_ready_max_surge() {
    let mut c = rolled_out(5, surge(int(3)), false);
    c.now = t(100);
    let p = c.expect_sync(5, 0, 0);
    assert!(
        p.creates
            .iter()
            .all(|c| c.reason == CreateReason::ReplaceUnavailable)
    );
    c.now = t(200);
    c.expect_sync(0, 5, 0);

    c.set_pod_readiness(true, 5, |_| true);
    c.set.spec.min_ready_seconds = Some(15);
    c.set_image("foo3/bar3");

    c.now = t(300);
    c.expect_sync(3, 0, 0);
    let hash = c.current_hash();
    let current_nodes: Vec<String> = c
        .pods
        .iter()
        .filter(|p| p.labels.get("controller-revision-hash") == Some(&hash))
        .filter_map(|p| p.target_node.clone())
        .collect();
    // Two updated pods turn ready at 300; one old pod on a node without an updated pod turns
    // unready.
    let h = hash.clone();
    c.set_pod_readiness(true, 2, move |p| {
        p.labels.get("controller-revision-hash") == Some(&h)
    });
    let h = hash.clone();
    c.set_pod_readiness(false, 1, move |p| {
        p.labels.get("controller-revision-hash") != Some(&h)
            && !current_nodes.contains(p.target_node.as_ref().unwrap())
    });

    c.now = t(310);
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].reason, CreateReason::ReplaceUnavailable);
    c.now = t(320);
    c.expect_sync(1, 3, 0);
    let h = hash.clone();
    c.set_pod_readiness(true, 3, move |p| {
        p.labels.get("controller-revision-hash") == Some(&h)
    });
    c.now = t(340);
    c.expect_sync(0, 2, 0);
    c.now = t(350);
    c.expect_sync(0, 0, 0);
}

#[test]
fn daemon_set_updates_no_template_changed() {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, 5, Default::default());
    c.expect_sync(5, 0, 0);
    c.set_strategy(rolling(int(3)));
    c.expect_sync(0, 0, 0);
}

#[test]
fn get_unavailable_numbers() {
    use IntOrString::String as Pct;
    // (name, strategy, desired nodes, expected (maxSurge, maxUnavailable, desired), empty nodes)
    let cases = [
        ("No nodes", rolling(int(0)), 0, (0, 0, 0), 0),
        (
            "Two nodes with ready pods",
            rolling(int(1)),
            2,
            (0, 1, 2),
            0,
        ),
        (
            "Two nodes, one node without pods",
            rolling(int(0)),
            2,
            (0, 1, 2),
            1,
        ),
        (
            "Two nodes, one node without pods, surge",
            surge(int(0)),
            2,
            (0, 1, 2),
            1,
        ),
        (
            "Two nodes with pods, MaxUnavailable in percents",
            rolling(Pct("50%".into())),
            2,
            (0, 1, 2),
            0,
        ),
        (
            "Two nodes with pods, MaxUnavailable in percents, surge",
            surge(Pct("50%".into())),
            2,
            (1, 0, 2),
            0,
        ),
        (
            "Two nodes with pods, MaxUnavailable is 100%, surge",
            surge(Pct("100%".into())),
            2,
            (2, 0, 2),
            0,
        ),
        (
            "Two nodes with pods, MaxUnavailable in percents, pod terminating",
            rolling(Pct("50%".into())),
            3,
            (0, 2, 3),
            1,
        ),
    ];
    for (name, strategy, nodes, (want_surge, want_unavailable, want_desired), empty) in cases {
        let b = budget(&strategy, nodes).unwrap();
        assert_eq!(
            (b.max_surge, b.max_unavailable, b.desired),
            (want_surge, want_unavailable, want_desired),
            "{name}"
        );
        // The empty-node insertion: desired nodes without pods count as unavailable nodes in
        // the rolling update; check through the planner with the pods of the upstream case.
        let mut c = Cluster::with_strategy(new_set("x"), strategy);
        c.add_nodes(0, usize::try_from(nodes).unwrap(), Default::default());
        let with_pods = usize::try_from(nodes).unwrap() - empty;
        for i in 0..with_pods.min(2) {
            let mut p = c.new_pod("pod-", &format!("node-{i}"), ds_label(), true);
            p.ready = true;
            if name.ends_with("pod terminating") && i == 1 {
                p.deletion_timestamp = Some(c.now);
            }
            c.pods.push(p.into());
        }
        let p = c.plan();
        let without_pods = p
            .nodes
            .iter()
            .filter(|n| n.should_run && n.pods == 0)
            .count();
        assert_eq!(without_pods, empty, "{name}");
    }
}

#[test]
fn controlled_histories() {
    use everynode_core::{Owner, RevisionView};
    let mut c = Cluster::new(new_set("ds1"));
    let rev = |name: &str, owner| RevisionView {
        name: name.to_owned(),
        labels: ds_label(),
        owner: Some(owner),
        revision: 1,
        data: serde_json::json!({}),
        deleting: false,
    };
    c.revisions.push(rev("ds1-x1", Owner::ThisSet));
    c.revisions.push(rev("ds1-x2", Owner::Orphan));
    let p = c.plan();
    assert_eq!(p.history.adopt, vec!["ds1-x2".to_owned()]);
    assert!(p.history.release.is_empty());
    // A revision in another namespace is never handed to the planner (the runtime lists the
    // set's namespace only), so nothing else is claimed; both claimed ones are old revisions.
    assert_eq!(
        p.history.add_hash_label,
        vec!["ds1-x1".to_owned(), "ds1-x2".to_owned()]
    );
    let _ = Duration::ZERO;
}
