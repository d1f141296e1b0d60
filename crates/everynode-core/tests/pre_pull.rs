//! Image pre-pull (`rollingUpdate.prePull`, everynode only): the nodes being updated and the
//! next `nodesAhead` pull the new images first; an old pod goes only once its node pulled them
//! (or the pull failed, was refused or timed out).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use everynode_api::PrePull;
use everynode_api::labels::{CONTROLLER_REVISION_HASH, PRE_PULL_OF_LABEL};
use everynode_core::{Deferred, PodPhase, PodView};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Four nodes on `agent:v1` with `prePull: {nodesAhead: ahead}` and `maxUnavailable: 1`.
fn cluster(ahead: i32) -> Cluster {
    rolled_out(
        4,
        rolling_with(|r| {
            r.pre_pull = Some(PrePull {
                nodes_ahead: Some(ahead),
                timeout_seconds: Some(120),
            })
        }),
    )
}

fn pre_pull_pods(c: &Cluster) -> Vec<String> {
    let mut nodes: Vec<String> = c
        .pods
        .iter()
        .filter(|p| p.labels.contains_key(PRE_PULL_OF_LABEL))
        .filter_map(|p| p.target_node.clone())
        .collect();
    nodes.sort();
    nodes
}

/// The cluster's pre-pull pods, to change.
fn pre_pull_pods_mut(c: &mut Cluster) -> impl Iterator<Item = &mut PodView> {
    c.pods
        .iter_mut()
        .filter(|p| p.labels.contains_key(PRE_PULL_OF_LABEL))
        .map(Arc::make_mut)
}

/// The kubelet pulls and runs every pre-pull pod.
fn pulls_done(c: &mut Cluster) {
    for p in pre_pull_pods_mut(c) {
        p.phase = PodPhase::Running;
    }
}

#[test]
fn the_node_being_updated_pulls_first_and_the_next_pull_ahead() {
    let mut c = cluster(1);
    c.config.explain = true;
    c.set_image("agent:v2");
    let p = c.expect_sync(0, 0, 0);
    let pulls: Vec<(&str, &[String])> = p
        .pre_pull
        .creates
        .iter()
        .map(|x| (x.node.as_str(), x.images.as_slice()))
        .collect();
    assert_eq!(
        pulls,
        [
            ("node-0", &["agent:v2".to_owned()][..]),
            ("node-1", &["agent:v2".to_owned()][..])
        ]
    );
    let pod = p.pre_pull.creates[0].pod_name.clone();
    assert_eq!(
        deferred(&p, "node-0"),
        [Deferred::PrePulling { pod: pod.clone() }]
    );
    let status = p.status.unwrap();
    assert_eq!(
        (status.pre_pulled_nodes, status.pre_pulling_nodes),
        (Some(0), Some(2))
    );
    // Still pulling: nothing more, and no second pre-pull pod.
    let p = c.expect_sync(0, 0, 0);
    assert!(p.pre_pull.creates.is_empty());
    // Pulled: node-0's old pod goes.
    pulls_done(&mut c);
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-0");
    assert_eq!(
        p.status.map(|s| (s.pre_pulled_nodes, s.pre_pulling_nodes)),
        Some((Some(2), Some(0)))
    );
    // Its new pod says who pulled its images, and the pre-pull pod goes.
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].pre_pulled.as_deref(), Some(pod.as_str()));
    assert_eq!(p.pre_pull.deletes.len(), 1);
    assert_eq!(p.pre_pull.deletes[0].0, pod);
    c.mark_pods_ready();
    // node-1 is next and node-2 pulls ahead.
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(p.deletes[0].node, "node-1");
    assert_eq!(p.pre_pull.creates[0].node, "node-2");
}

#[test]
fn a_whole_rollout_creates_every_pod_on_pulled_images_and_cleans_up() {
    let mut c = cluster(2);
    c.set_image("agent:v2");
    for _ in 0..30 {
        let p = c.plan();
        assert!(p.errors.is_empty());
        assert!(p.creates.iter().all(|x| x.pre_pulled.is_some()), "{p}");
        let idle = p.is_noop();
        c.apply(&p);
        pulls_done(&mut c);
        c.mark_pods_ready();
        if idle {
            break;
        }
    }
    assert!(pre_pull_pods(&c).is_empty(), "pre-pull pods left");
    let hash = c.current_hash();
    assert!(
        c.pods
            .iter()
            .all(|p| p.labels.get(CONTROLLER_REVISION_HASH) == Some(&hash))
    );
}

#[test]
fn a_pull_that_fails_is_refused_or_times_out_does_not_hold_the_node() {
    // Timed out: pending for longer than timeoutSeconds.
    let mut c = cluster(0);
    c.set_image("agent:v2");
    c.expect_sync(0, 0, 0);
    c.advance(Duration::from_secs(119));
    c.expect_sync(0, 0, 0);
    c.advance(Duration::from_secs(1));
    let p = c.expect_sync(0, 1, 1);
    assert_eq!(p.deletes[0].node, "node-0");
    assert_eq!(p.events[0].reason.as_str(), "PrePullSkipped");
    assert!(
        p.events[0]
            .message
            .ends_with("not pulled after timeoutSeconds (120 s)"),
        "{}",
        p.events[0].message
    );
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].pre_pulled, None);

    // Failed: the image cannot be pulled.
    let mut c = cluster(0);
    c.set_image("agent:v2");
    c.expect_sync(0, 0, 0);
    for p in pre_pull_pods_mut(&mut c) {
        p.trouble = Some("container pull-0: ImagePullBackOff".into());
    }
    let p = c.expect_sync(0, 1, 1);
    assert!(
        p.events[0]
            .message
            .ends_with(": container pull-0: ImagePullBackOff"),
        "{}",
        p.events[0].message
    );

    // Refused by the apiserver: no pre-pull pod, the node goes on.
    let mut c = cluster(0);
    c.set_image("agent:v2");
    let hash = c.current_hash();
    c.pre_pull_refused = vec![("node-0".into(), hash)];
    let p = c.expect_sync(0, 1, 1);
    assert_eq!(
        p.events[0].message,
        "node node-0 is updated without its new images pulled ahead: the apiserver refused \
         its pre-pull pod"
    );
    assert!(p.pre_pull.creates.is_empty());
}

#[test]
fn a_change_without_a_new_image_pulls_nothing() {
    let mut c = cluster(1);
    c.update_template(|s| s.host_network = Some(true));
    let p = c.expect_sync(0, 1, 0);
    assert!(p.pre_pull.creates.is_empty());
}

#[test]
fn a_pre_pull_pod_is_never_adopted_even_by_a_selector_that_matches_it() {
    let mut c = cluster(0);
    c.set.spec.selector = LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "unrelated".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
        ]),
    };
    c.set_image("agent:v2");
    c.expect_sync(0, 0, 0);
    assert_eq!(pre_pull_pods(&c), ["node-0"]);
    let p = c.plan();
    assert!(p.adopt_pods.is_empty(), "{:?}", p.adopt_pods);
}

mod properties {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Whatever order pulls finish in, no old pod is deleted while its node pulls (within
        /// the timeout), the budget holds, and the rollout ends with every node updated and no
        /// pre-pull pod left.
        #[test]
        fn no_node_loses_its_pod_while_it_pulls_and_the_rollout_completes(
            nodes in 1usize..9,
            max_unavailable in 1i32..3,
            ahead in 0i32..3,
            finished in prop::collection::vec(prop::collection::vec(any::<bool>(), 9), 40),
        ) {
            let mut c = Cluster::with_strategy(
                new_set("agent"),
                rolling_with(|r| {
                    r.max_unavailable = Some(IntOrString::Int(max_unavailable));
                    r.pre_pull = Some(PrePull { nodes_ahead: Some(ahead), timeout_seconds: Some(120) });
                }),
            );
            c.add_nodes(0, nodes, Default::default());
            c.expect_sync(nodes, 0, 0);
            c.mark_pods_ready();
            c.set_image("agent:v2");
            for step in &finished {
                let p = c.plan();
                prop_assert!(p.errors.is_empty());
                for delete in &p.deletes {
                    let pulling = c.pods.iter().any(|x| {
                        x.labels.contains_key(PRE_PULL_OF_LABEL)
                            && x.target_node.as_deref() == Some(delete.node.as_str())
                            && x.phase == PodPhase::Pending
                    });
                    prop_assert!(!pulling, "{} deleted while its node pulls", delete.node);
                }
                c.apply(&p);
                let ready = c
                    .nodes
                    .iter()
                    .filter(|n| c.pods.iter().any(|x| x.target_node.as_deref() == Some(n.name.as_str()) && x.ready && !x.labels.contains_key(PRE_PULL_OF_LABEL)))
                    .count();
                prop_assert!(nodes - ready <= usize::try_from(max_unavailable).unwrap());
                // Some pulls finish, every daemon pod becomes ready, a second passes.
                for (i, x) in pre_pull_pods_mut(&mut c).enumerate() {
                    if step[i % step.len()] {
                        x.phase = PodPhase::Running;
                    }
                }
                c.mark_pods_ready();
                c.advance(Duration::from_secs(1));
            }
            // Then every pull finishes.
            for _ in 0..(4 * nodes + 4) {
                pulls_done(&mut c);
                let p = c.plan();
                c.apply(&p);
                c.mark_pods_ready();
            }
            let hash = c.current_hash();
            prop_assert!(pre_pull_pods(&c).is_empty());
            prop_assert!(c.pods.iter().all(|x| x.labels.get(CONTROLLER_REVISION_HASH) == Some(&hash)));
            prop_assert_eq!(c.pods.len(), nodes);
        }
    }
}
