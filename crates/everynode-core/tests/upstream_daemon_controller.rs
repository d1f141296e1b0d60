//! Planner scenarios of upstream `pkg/controller/daemon/daemon_controller_test.go` (§9.1),
//! named after the upstream tests, with the same expected (creates, deletes, events).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use everynode_core::eligibility::taint_keys;
use everynode_core::{
    DeleteReason, EventReason, NodeExcluded, NodeView, Owner, PodPhase, node_should_run, plan,
};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn required_affinity(key: &str, op: &str, values: &[&str]) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: key.to_owned(),
                        operator: op.to_owned(),
                        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
                    }]),
                    match_fields: None,
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn simple_daemon_set_launches_pods() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 5, Default::default());
        c.expect_sync(5, 0, 0);
    }
}

#[test]
fn simple_daemon_set_schedule_daemon_set_pods_launches_pods() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 5, Default::default());
        let p = c.expect_sync(5, 0, 0);
        let mut nodes: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
        for create in &p.creates {
            // The rendered pod is unbound and pinned by one matchFields term.
            let owner = everynode_core::controller_owner_reference(
                "everynode.dev/v1alpha1",
                "DaemonSet",
                "foo",
                "uid-foo",
            );
            let pod = everynode_core::render_pod(&everynode_core::RenderParams {
                set_name: "foo",
                namespace: "default",
                template: &c.set.spec.template,
                hash: &create.hash,
                template_generation: None,
                owner: &owner,
                node: &create.node,
                pod_name: &create.pod_name,
                extra_tolerations: &[],
            });
            let spec = pod.spec.unwrap();
            assert!(spec.node_name.is_none());
            let terms = spec
                .affinity
                .unwrap()
                .node_affinity
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .unwrap()
                .node_selector_terms;
            assert_eq!(terms.len(), 1);
            let fields = terms[0].match_fields.clone().unwrap();
            assert_eq!(fields.len(), 1);
            assert_eq!(fields[0].key, "metadata.name");
            assert_eq!(fields[0].operator, "In");
            let values = fields[0].values.clone().unwrap();
            assert_eq!(values.len(), 1);
            nodes.retain(|n| *n != values[0]);
            let owner_ref = &pod.metadata.owner_references.unwrap()[0];
            assert_eq!(owner_ref.controller, Some(true));
            assert_eq!(owner_ref.kind, "DaemonSet");
        }
        assert!(nodes.is_empty(), "no pod for {nodes:?}");
    }
}

/// Upstream fakes an API that accepts only 10 creates; here the create budget of one plan is
/// the burst limit and the status reflects the pods actually created.
#[test]
fn simple_daemon_set_pod_create_errors() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.config.burst_replicas = 10;
        c.add_nodes(0, 100, Default::default());
        let p = c.expect_sync(10, 0, 0);
        let st = p.status.unwrap();
        assert_eq!(st.desired_number_scheduled, 100);
        assert_eq!(st.current_number_scheduled, 10);
        assert_eq!(st.updated_number_scheduled, Some(10));
        assert_eq!(
            p.nodes.iter().filter(|n| !n.deferred.is_empty()).count(),
            90
        );
    }
}

#[test]
fn simple_daemon_set_updates_status_after_launching_pods() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 5, Default::default());
        let p = c.expect_sync(5, 0, 0);
        let st = p.status.unwrap();
        assert_eq!(st.current_number_scheduled, 5);
        assert!(p.status_write.is_some());
    }
}

#[test]
fn no_nodes_does_nothing() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn one_node_daemon_launches_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.nodes
            .push(Arc::new(node("only-node", Default::default())));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn not_ready_node_daemon_does_launch_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        let mut n = node("not-ready", Default::default());
        n.ready = Some(false);
        c.nodes.push(Arc::new(n));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn network_unavailable_node_daemon_launches_pod() {
    // The NetworkUnavailable condition alone (no taint) is not looked at.
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("simple"), s);
        c.nodes
            .push(Arc::new(node("network-unavailable", Default::default())));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn insufficient_capacity_node_daemon_does_not_unschedule_running_pod() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_name = Some("too-much-mem".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.nodes
            .push(Arc::new(node("too-much-mem", Default::default())));
        // An unrelated pod with the same spec (no labels, no owner) is not ours.
        let mut other = c.new_pod("other-", "too-much-mem", Default::default(), false);
        other.owner = Some(Owner::Orphan);
        c.pods.push(other.into());
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn insufficient_capacity_node_sufficient_capacity_with_node_label_daemon_launch_pod() {
    let mut set = new_set("foo");
    set.spec.template.spec.as_mut().unwrap().node_selector = Some(node_label());
    let mut c = Cluster::new(set);
    c.nodes
        .push(Arc::new(node("not-enough-resource", Default::default())));
    c.nodes
        .push(Arc::new(node("enough-resource", node_label())));
    let p = c.expect_sync(1, 0, 0);
    assert!(p.events.is_empty());
}

#[test]
fn port_conflict_with_same_daemon_pod_does_not_delete_pod() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_name = Some("port-conflict".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.nodes
            .push(Arc::new(node("port-conflict", Default::default())));
        let p = c.new_pod("foo-", "port-conflict", ds_label(), true);
        c.pods.push(p.into());
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn no_port_conflict_node_daemon_launches_pod() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_name = Some("no-port-conflict".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.nodes
            .push(Arc::new(node("no-port-conflict", Default::default())));
        let p = c.new_pod("other-", "no-port-conflict", Default::default(), false);
        c.pods.push(p.into());
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn dont_do_anything_if_being_deleted() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.deleting = true;
        let mut c = Cluster::with_strategy(set, s);
        c.nodes
            .push(Arc::new(node("not-too-much-mem", Default::default())));
        let p = c.expect_sync(0, 0, 0);
        assert!(p.status.is_none(), "no status write while deleting");
    }
}

/// The cached set is not deleted, the live one is: the plan asks to adopt the orphan, and the
/// runtime's uncached re-check of the set before adopting fails, so nothing of the plan is
/// applied (upstream: the claim fails and the sync errors out). With the live copy the planner
/// itself does nothing.
#[test]
fn dont_do_anything_if_being_deleted_race() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 5, Default::default());
        let orphan = c.new_pod("pod1-", "node-0", ds_label(), false);
        c.pods.push(orphan.clone().into());
        let cached = c.plan();
        assert_eq!(
            cached.adopt_pods,
            vec![orphan.name.clone()],
            "adoption must precede any write"
        );
        c.set.deleting = true;
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn pod_is_not_deleted_by_daemonset_with_empty_label_selector() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.selector = LabelSelector::default();
        set.spec.template.spec.as_mut().unwrap().node_selector = Some(labels(&[("foo", "bar")]));
        let mut c = Cluster::with_strategy(set, s);
        c.nodes.push(Arc::new(node("node1", Default::default())));
        let p = c.new_pod("x-", "node1", labels(&[("bang", "boom")]), false);
        c.pods.push(p.into());
        let p = c.expect_sync(0, 0, 1);
        assert_eq!(p.events[0].reason, EventReason::SelectingAll);
        assert!(p.status.is_none());
    }
}

#[test]
fn deals_with_existing_pods() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 5, Default::default());
        c.add_pods("node-1", ds_label(), true, 1);
        c.add_pods("node-2", ds_label(), true, 2);
        c.add_pods("node-3", ds_label(), true, 5);
        c.add_pods("node-4", ds_label2(), true, 2);
        let p = c.expect_sync(2, 5, 0);
        assert_eq!(
            p.release_pods.len(),
            2,
            "owned pods that no longer match are released"
        );
    }
}

#[test]
fn selector_daemon_launches_pods() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_selector = Some(node_label());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 4, Default::default());
        c.add_nodes(4, 3, node_label());
        c.expect_sync(3, 0, 0);
    }
}

#[test]
fn selector_daemon_deletes_unselected_pods() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_selector = Some(node_label());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 5, Default::default());
        c.add_nodes(5, 5, node_label());
        c.add_pods("node-0", ds_label2(), true, 2);
        c.add_pods("node-1", ds_label(), true, 3);
        c.add_pods("node-1", ds_label2(), true, 1);
        c.add_pods("node-4", ds_label(), true, 1);
        let p = c.expect_sync(5, 4, 0);
        assert!(p.deletes.iter().all(|d| matches!(
            d.reason,
            DeleteReason::NodeIneligible(NodeExcluded::NodeSelectorMismatch { .. })
        )));
    }
}

#[test]
fn selector_daemon_deals_with_existing_pods() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_selector = Some(node_label());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 5, Default::default());
        c.add_nodes(5, 5, node_label());
        c.add_pods("node-0", ds_label(), true, 1);
        c.add_pods("node-1", ds_label(), true, 3);
        c.add_pods("node-1", ds_label2(), true, 2);
        c.add_pods("node-2", ds_label(), true, 4);
        c.add_pods("node-6", ds_label(), true, 13);
        c.add_pods("node-7", ds_label2(), true, 4);
        c.add_pods("node-9", ds_label(), true, 1);
        c.add_pods("node-9", ds_label2(), true, 1);
        c.expect_sync(3, 20, 0);
    }
}

#[test]
fn bad_selector_daemon_does_nothing() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_selector = Some(node_label2());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 4, Default::default());
        c.add_nodes(4, 3, node_label());
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn name_daemon_set_launches_pods() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_name = Some("node-0".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 5, Default::default());
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn bad_name_daemon_set_does_nothing() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().node_name = Some("node-10".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 5, Default::default());
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn name_and_selector_daemon_set_launches_pods() {
    for s in strategies() {
        let mut set = new_set("foo");
        let spec = set.spec.template.spec.as_mut().unwrap();
        spec.node_selector = Some(node_label());
        spec.node_name = Some("node-6".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 4, Default::default());
        c.add_nodes(4, 3, node_label());
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn inconsistent_name_selector_daemon_set_does_nothing() {
    for s in strategies() {
        let mut set = new_set("foo");
        let spec = set.spec.template.spec.as_mut().unwrap();
        spec.node_selector = Some(node_label());
        spec.node_name = Some("node-0".to_owned());
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 4, Default::default());
        c.add_nodes(4, 3, node_label());
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn selector_daemon_set_launches_pods() {
    let mut set = new_set("foo");
    set.spec.template.spec.as_mut().unwrap().node_selector = Some(node_label());
    let mut c = Cluster::new(set);
    c.add_nodes(0, 4, Default::default());
    c.add_nodes(4, 3, node_label());
    c.expect_sync(3, 0, 0);
}

#[test]
fn node_affinity_daemon_launches_pods() {
    for s in strategies() {
        let mut set = new_set("foo");
        set.spec.template.spec.as_mut().unwrap().affinity =
            Some(required_affinity("color", "In", &["blue"]));
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 4, Default::default());
        c.add_nodes(4, 3, node_label());
        c.expect_sync(3, 0, 0);
    }
}

#[test]
fn node_should_run_daemon_pod() {
    struct Case {
        name: &'static str,
        edit: Box<dyn Fn(&mut PodSpec)>,
        unschedulable: bool,
        want: (bool, bool),
    }
    let cases = vec![
        Case {
            name: "ShouldRunDaemonPod",
            edit: Box::new(|_| {}),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "InsufficientResourceError (resources are not checked)",
            edit: Box::new(|_| {}),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "ErrPodNotMatchHostName",
            edit: Box::new(|s| s.node_name = Some("other-node".to_owned())),
            unschedulable: false,
            want: (false, false),
        },
        Case {
            name: "ErrPodNotFitsHostPorts (ports are not checked)",
            edit: Box::new(|_| {}),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "resources and port clash",
            edit: Box::new(|_| {}),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "existing pods",
            edit: Box::new(|_| {}),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "ErrNodeSelectorNotMatch",
            edit: Box::new(|s| s.node_selector = Some(ds_label2())),
            unschedulable: false,
            want: (false, false),
        },
        Case {
            name: "node selector match",
            edit: Box::new(|s| s.node_selector = Some(ds_label())),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "ErrPodAffinityNotMatch",
            edit: Box::new(|s| s.affinity = Some(required_affinity("type", "In", &["test"]))),
            unschedulable: false,
            want: (false, false),
        },
        Case {
            name: "affinity match",
            edit: Box::new(|s| s.affinity = Some(required_affinity("type", "In", &["production"]))),
            unschedulable: false,
            want: (true, true),
        },
        Case {
            name: "ShouldRunDaemonPodOnUnschedulableNode",
            edit: Box::new(|_| {}),
            unschedulable: true,
            want: (true, true),
        },
    ];
    for case in cases {
        for s in strategies() {
            let mut set = new_set("foo");
            set.spec.update_strategy = Some(s);
            (case.edit)(set.spec.template.spec.as_mut().unwrap());
            let mut n: NodeView = node("test-node", ds_label());
            n.unschedulable = case.unschedulable;
            let e = node_should_run(&set.spec.template, &n);
            assert_eq!(
                (e.should_run, e.should_continue_running),
                case.want,
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn get_nodes_to_daemon_pods() {
    for include_deleted_terminal in [false, true] {
        let mut c = Cluster::new(new_set("foo"));
        c.add_nodes(0, 2, Default::default());
        let mut wanted = Vec::new();
        let mut ignored = Vec::new();
        wanted.push(c.new_pod("matching-owned-0-", "node-0", ds_label(), true));
        wanted.push(c.new_pod("matching-orphan-0-", "node-0", ds_label(), false));
        wanted.push(c.new_pod("matching-owned-1-", "node-1", ds_label(), true));
        wanted.push(c.new_pod("matching-orphan-1-", "node-1", ds_label(), false));
        let mut p = c.new_pod(
            "matching-owned-succeeded-pod-0-",
            "node-0",
            ds_label(),
            true,
        );
        p.phase = PodPhase::Succeeded;
        wanted.push(p);
        let mut p = c.new_pod("matching-owned-failed-pod-1-", "node-1", ds_label(), true);
        p.phase = PodPhase::Failed;
        wanted.push(p);
        ignored.push(c.new_pod("non-matching-owned-0-", "node-0", ds_label2(), true));
        ignored.push(c.new_pod("non-matching-orphan-1-", "node-1", ds_label2(), false));
        let mut p = c.new_pod("matching-owned-by-other-0-", "node-0", ds_label(), true);
        p.owner = Some(Owner::Other);
        ignored.push(p);
        let mut p = c.new_pod(
            "matching-owned-succeeded-deleted-pod-0-",
            "node-0",
            ds_label(),
            true,
        );
        p.phase = PodPhase::Succeeded;
        p.deletion_timestamp = Some(c.now);
        ignored.push(p);
        let mut p = c.new_pod(
            "matching-owned-failed-deleted-pod-1-",
            "node-1",
            ds_label(),
            true,
        );
        p.phase = PodPhase::Failed;
        p.deletion_timestamp = Some(c.now);
        if include_deleted_terminal {
            wanted.push(p)
        } else {
            ignored.push(p)
        };
        c.pods.extend(wanted.iter().cloned().map(Arc::new));
        c.pods.extend(ignored.iter().cloned().map(Arc::new));
        let p = c.plan();
        // The grouped pods are what the status counts: 2 nodes with pods, none misscheduled.
        let counts = p.counts.unwrap();
        assert_eq!((counts.desired, counts.current), (2, 2));
        // Orphans matching the selector are adopted; non-matching owned ones released.
        assert_eq!(p.adopt_pods.len(), 2);
        assert_eq!(p.release_pods.len(), 1);
        // "include deleted terminal pods" is the history-cleanup view: their hashes stay live.
        let node0 = p.nodes.iter().find(|n| n.node == "node-0").unwrap();
        assert_eq!(node0.pods, 3, "owned, orphan and succeeded pod on node-0");
        let node1 = p.nodes.iter().find(|n| n.node == "node-1").unwrap();
        assert_eq!(
            node1.pods, 3,
            "owned, orphan and failed pod on node-1; deleted failed pod excluded"
        );
    }
}

#[test]
fn delete_unscheduled_pod_for_not_existing_node() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 1, Default::default());
        c.add_pods("node-0", ds_label(), true, 1);
        c.add_pods("node-1", ds_label(), true, 1);
        let mut pinned = c.new_pod("pod1-node-3", "", ds_label(), true);
        pinned.target_node = Some("node-2".to_owned());
        c.pods.push(pinned.clone().into());
        let p = c.expect_sync(0, 1, 0);
        assert_eq!(p.deletes[0].pod, pinned.name);
        assert_eq!(p.deletes[0].reason, DeleteReason::NodeGone);
    }
}

#[test]
fn number_ready_status() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 2, node_label());
        c.add_pods("node-0", ds_label(), true, 1);
        c.add_pods("node-1", ds_label(), true, 1);
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(p.status.unwrap().number_ready, 0);
        c.mark_pods_ready();
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(p.status.unwrap().number_ready, 2);
    }
}

#[test]
fn observed_generation() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.set.generation = Some(1);
        c.add_nodes(0, 1, node_label());
        c.add_pods("node-0", ds_label(), true, 1);
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(p.status.unwrap().observed_generation, Some(1));
    }
}

#[test]
fn daemon_kill_failed_pods() {
    let cases = [
        (0, 1, (0, 0, 0), "normal (do nothing)"),
        (0, 0, (1, 0, 0), "no pods (create 1)"),
        (
            1,
            0,
            (0, 1, 1),
            "1 failed pod (kill 1), 0 normal pod (create 0; will create in the next sync)",
        ),
        (
            1,
            3,
            (0, 3, 1),
            "1 failed pod (kill 1), 3 normal pods (kill 2)",
        ),
    ];
    for (failed, normal, (cr, de, ev), name) in cases {
        for s in strategies() {
            let mut c = Cluster::with_strategy(new_set("foo"), s);
            c.add_nodes(0, 1, Default::default());
            c.add_failed_pods("node-0", ds_label(), failed);
            c.add_pods("node-0", ds_label(), true, normal);
            let p = c.plan();
            assert_eq!(
                (p.creates.len(), p.deletes.len(), p.events.len()),
                (cr, de, ev),
                "{name}"
            );
        }
    }
}

#[test]
fn daemon_kill_failed_pods_backoff() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 1, Default::default());
        let mut failed = c.new_pod("node-0-", "node-0", ds_label(), true);
        failed.phase = PodPhase::Failed;
        // Upstream's fake pod control cannot delete pods it did not create: the pod stays
        // across the syncs below (we simply never apply the deletes).
        c.pods.push(failed.into());

        let p = c.plan();
        assert_eq!(
            (p.creates.len(), p.deletes.len(), p.events.len()),
            (0, 1, 1)
        );
        assert_eq!(p.events[0].reason, EventReason::FailedDaemonPod);
        let initial = p.backoff_updates[0].entry.delay;
        assert!(initial > Duration::ZERO);
        c.backoff
            .insert("node-0".to_owned(), p.backoff_updates[0].entry);

        // Immediate second sync is limited by the backoff and does not raise it.
        let p = c.plan();
        assert_eq!(
            (p.creates.len(), p.deletes.len(), p.events.len()),
            (0, 0, 0)
        );
        assert!(p.backoff_updates.is_empty());
        assert_eq!(p.requeue_after, Some(initial));
        assert!(
            p.explain_node("node-0")
                .iter()
                .any(|l| l == "create deferred: backoff 1s")
        );

        let entry = c.backoff["node-0"];
        c.advance(initial - Duration::from_nanos(1));
        assert!(
            entry.in_backoff(c.now, &c.config.backoff),
            "backoff lasts the whole period"
        );
        c.advance(Duration::from_nanos(1));
        assert!(
            !entry.in_backoff(c.now, &c.config.backoff),
            "backoff over at expiry"
        );

        let p = c.plan();
        assert_eq!(
            (p.creates.len(), p.deletes.len(), p.events.len()),
            (0, 1, 1)
        );
        assert_eq!(p.backoff_updates[0].entry.delay, initial * 2);
    }
}

#[test]
fn daemon_set_respects_termination() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("foo"), s);
        c.add_nodes(0, 1, node_label());
        let mut p = c.new_pod("node-0-", "node-0", ds_label(), true);
        p.deletion_timestamp = Some(c.now);
        c.pods.push(p.into());
        c.expect_sync(0, 0, 0);
    }
}

#[test]
fn no_schedule_tainted_doesnt_evicit_running_intolerant_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("intolerant"), s);
        let mut n = node("tainted", Default::default());
        n.taints = vec![taint("dedicated", "user1", "NoSchedule")];
        c.nodes.push(Arc::new(n));
        let p = c.new_pod("keep-running-me", "tainted", ds_label(), true);
        c.pods.push(p.into());
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(p.status.unwrap().number_misscheduled, 1);
    }
}

#[test]
fn no_execute_tainted_does_evicit_running_intolerant_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("intolerant"), s);
        let mut n = node("tainted", Default::default());
        n.taints = vec![taint("dedicated", "user1", "NoExecute")];
        c.nodes.push(Arc::new(n));
        let p = c.new_pod("stop-running-me", "tainted", ds_label(), true);
        c.pods.push(p.into());
        let p = c.expect_sync(0, 1, 0);
        assert_eq!(
            p.deletes[0].reason.to_string(),
            "pod deleted: node no longer eligible (taint dedicated=user1:NoExecute not tolerated)"
        );
    }
}

#[test]
fn tainted_node_daemon_does_not_launch_intolerant_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("intolerant"), s);
        let mut n = node("tainted", Default::default());
        n.taints = vec![taint("dedicated", "user1", "NoSchedule")];
        c.nodes.push(Arc::new(n));
        let p = c.expect_sync(0, 0, 0);
        assert_eq!(
            p.nodes[0].excluded.as_ref().unwrap().to_string(),
            "node excluded: taint dedicated=user1:NoSchedule not tolerated"
        );
    }
}

#[test]
fn tainted_node_daemon_launches_tolerate_pod() {
    for s in strategies() {
        let mut set = new_set("tolerate");
        set.spec.template.spec.as_mut().unwrap().tolerations =
            Some(vec![toleration("dedicated", "", "user1", "NoSchedule")]);
        let mut c = Cluster::with_strategy(set, s);
        let mut n = node("tainted", Default::default());
        n.taints = vec![taint("dedicated", "user1", "NoSchedule")];
        c.nodes.push(Arc::new(n));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn node_daemon_launches_tolerate_pod() {
    for s in strategies() {
        let mut set = new_set("tolerate");
        set.spec.template.spec.as_mut().unwrap().tolerations =
            Some(vec![toleration("dedicated", "", "user1", "NoSchedule")]);
        let mut c = Cluster::with_strategy(set, s);
        c.add_nodes(0, 1, Default::default());
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn not_ready_node_daemon_launches_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("simple"), s);
        let mut n = node("tainted", Default::default());
        n.taints = vec![taint(taint_keys::NOT_READY, "", "NoExecute")];
        n.ready = Some(false);
        c.nodes.push(Arc::new(n));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn unreachable_node_daemon_launches_pod() {
    for s in strategies() {
        let mut c = Cluster::with_strategy(new_set("simple"), s);
        let mut n = node("tainted", Default::default());
        n.taints = vec![taint(taint_keys::UNREACHABLE, "", "NoExecute")];
        n.ready = None;
        c.nodes.push(Arc::new(n));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn taint_pressure_node_daemon_launches_pod() {
    for s in strategies() {
        let mut set = new_set("critical");
        set.namespace = "kube-system".to_owned();
        set.spec.template.spec.as_mut().unwrap().priority = Some(2_000_000_000);
        let mut c = Cluster::with_strategy(set, s);
        let mut n = node("resources-pressure", Default::default());
        n.taints = vec![
            taint(taint_keys::DISK_PRESSURE, "", "NoSchedule"),
            taint(taint_keys::MEMORY_PRESSURE, "", "NoSchedule"),
            taint(taint_keys::PID_PRESSURE, "", "NoSchedule"),
        ];
        c.nodes.push(Arc::new(n));
        c.expect_sync(1, 0, 0);
    }
}

#[test]
fn surge_deals_with_existing_pods() {
    let mut c = Cluster::with_strategy(new_set("foo"), surge(IntOrString::Int(1)));
    c.add_nodes(0, 5, Default::default());
    c.add_pods("node-1", ds_label(), true, 1);
    c.add_pods("node-2", ds_label(), true, 2);
    c.add_pods("node-3", ds_label(), true, 5);
    c.add_pods("node-4", ds_label2(), true, 2);
    c.expect_sync(2, 5, 0);
}

/// Adds an old-revision pod (no hash label) on `node`.
fn old_pod(c: &mut Cluster, prefix: &str, node: &str, created: i64, ready: Option<bool>) -> String {
    let mut p = c.new_pod(prefix, node, ds_label(), true);
    Arc::make_mut(&mut p.labels).remove("controller-revision-hash");
    p.created = Some(t(created));
    if let Some(r) = ready {
        p.ready = r;
    }
    let name = p.name.clone();
    c.pods.push(p.into());
    name
}

fn new_pod_at(c: &mut Cluster, prefix: &str, node: &str, created: i64) -> String {
    let mut p = c.new_pod(prefix, node, ds_label(), true);
    p.created = Some(t(created));
    let name = p.name.clone();
    c.pods.push(p.into());
    name
}

#[test]
fn surge_preserves_ready_old_pods() {
    let mut c = Cluster::with_strategy(new_set("foo"), surge(IntOrString::Int(1)));
    c.add_nodes(0, 5, Default::default());
    new_pod_at(&mut c, "node-1-", "node-1", 100);
    old_pod(&mut c, "node-1-old-", "node-1", 50, Some(true));
    let delete = old_pod(&mut c, "node-1-delete-", "node-1", 60, Some(true));
    c.add_pods("node-2", ds_label(), true, 1);
    let p = c.expect_sync(3, 1, 0);
    assert_eq!(p.deletes[0].pod, delete);
}

#[test]
fn surge_creates_new_pod_when_at_max_surge_and_old_pod_deleted() {
    let mut c = Cluster::with_strategy(new_set("foo"), surge(IntOrString::Int(1)));
    c.add_nodes(0, 5, Default::default());
    let name = new_pod_at(&mut c, "node-0-", "node-0", 100);
    Arc::make_mut(c.pods.iter_mut().find(|p| p.name == name).unwrap()).ready = false;
    old_pod(&mut c, "node-0-old-ready-", "node-0", 50, Some(true));
    for i in 1..5 {
        let name = old_pod(
            &mut c,
            &format!("node-{i}-preserve-"),
            &format!("node-{i}"),
            1,
            Some(true),
        );
        if i == 4 {
            Arc::make_mut(c.pods.iter_mut().find(|p| p.name == name).unwrap()).deletion_timestamp =
                Some(t(31));
        }
    }
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].node, "node-4");
}

#[test]
fn surge_deletes_unready_old_pods() {
    let mut c = Cluster::with_strategy(new_set("foo"), surge(IntOrString::Int(1)));
    c.add_nodes(0, 5, Default::default());
    new_pod_at(&mut c, "node-1-", "node-1", 100);
    let unready = old_pod(&mut c, "node-1-old-unready-", "node-1", 50, Some(false));
    let ready = old_pod(&mut c, "node-1-delete-", "node-1", 60, Some(true));
    c.add_pods("node-2", ds_label(), true, 1);
    let p = c.expect_sync(3, 2, 0);
    let mut got: Vec<&str> = p.deletes.iter().map(|d| d.pod.as_str()).collect();
    got.sort();
    let mut want = vec![unready.as_str(), ready.as_str()];
    want.sort();
    assert_eq!(got, want);
}

fn surge_min_ready_case(
    clock: i64,
    expected: (usize, usize),
) -> (everynode_core::Plan, String, String) {
    let mut set = new_set("foo");
    set.spec.min_ready_seconds = Some(15);
    let mut c = Cluster::with_strategy(set, surge(IntOrString::Int(1)));
    c.add_nodes(0, 5, Default::default());
    c.now = t(clock);
    let name = new_pod_at(&mut c, "node-1-", "node-1", 100);
    let p = Arc::make_mut(c.pods.iter_mut().find(|p| p.name == name).unwrap());
    p.ready = true;
    p.ready_since = Some(t(50));
    let old_ready = old_pod(&mut c, "node-1-old-ready-", "node-1", 50, Some(true));
    let excess = old_pod(&mut c, "node-1-delete-", "node-1", 60, Some(true));
    c.add_pods("node-2", ds_label(), true, 1);
    let p = c.expect_sync(expected.0, expected.1, 0);
    (p, old_ready, excess)
}

#[test]
fn surge_preserves_old_ready_with_unsatisfied_min_ready() {
    let (p, _, excess) = surge_min_ready_case(50 + 10, (3, 1));
    assert_eq!(p.deletes[0].pod, excess);
}

#[test]
fn surge_deletes_old_ready_with_unsatisfied_min_ready() {
    let (p, old_ready, excess) = surge_min_ready_case(50 + 20, (3, 2));
    let mut got: Vec<String> = p.deletes.iter().map(|d| d.pod.clone()).collect();
    got.sort();
    let mut want = vec![old_ready, excess];
    want.sort();
    assert_eq!(got, want);
}

/// Upstream's TestDaemonKillFailedPodsBackoff deletes through a fake that cannot remove
/// pre-existing pods; this checks the same thing end to end with the pod removed.
#[test]
fn failed_pod_replaced_on_next_sync() {
    let mut c = Cluster::with_strategy(new_set("foo"), rolling(IntOrString::Int(1)));
    c.add_nodes(0, 1, Default::default());
    c.add_failed_pods("node-0", ds_label(), 1);
    c.expect_sync(0, 1, 1);
    c.expect_sync(1, 0, 0);
    assert!(plan(&c.input()).is_noop());
}
