//! Property tests of the planner's invariants (modest case counts for 2-core CI machines).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use everynode_api::DaemonSetUpdateStrategy;
use everynode_core::budget::budget;
use everynode_core::status::is_pod_available;
use everynode_core::{NodeInterest, PodPhase, PodView, node_should_run, plan};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct PodSpecGen {
    new: bool,
    ready: bool,
    phase: u8,
    deleting: bool,
    age: i64,
}

#[derive(Clone, Debug)]
struct NodeGen {
    selected: bool,
    taint: u8,
    pods: Vec<PodSpecGen>,
}

fn pod_gen(simple: bool) -> impl Strategy<Value = PodSpecGen> {
    (any::<bool>(), any::<bool>(), 0u8..10, 0u8..10, 0i64..100).prop_map(
        move |(new, ready, phase, del, age)| PodSpecGen {
            new,
            ready,
            phase: if simple { 0 } else { phase },
            deleting: !simple && del == 0,
            age,
        },
    )
}

fn node_gen(simple: bool, max_pods: usize) -> impl Strategy<Value = NodeGen> {
    (
        any::<bool>(),
        0u8..6,
        prop::collection::vec(pod_gen(simple), 0..=max_pods),
    )
        .prop_map(move |(sel, taint, pods)| NodeGen {
            selected: simple || sel || taint > 0,
            taint: if simple { 0 } else { taint },
            pods,
        })
}

fn strategy_gen(allow_on_delete: bool) -> impl Strategy<Value = DaemonSetUpdateStrategy> {
    (0u8..3, 1i32..4, any::<bool>()).prop_map(move |(kind, n, pct)| {
        let v = if pct {
            IntOrString::String(format!("{}%", n * 20))
        } else {
            IntOrString::Int(n)
        };
        match kind {
            0 if allow_on_delete => on_delete(),
            0 | 1 => rolling(v),
            _ => surge(v),
        }
    })
}

/// Builds a cluster: the set selects nodes labelled `pool=a`; taint 1 = untolerated
/// NoSchedule, 2 = untolerated NoExecute, 3 = tolerated NoSchedule.
fn build(nodes: &[NodeGen], strategy: DaemonSetUpdateStrategy) -> Cluster {
    let mut set = new_set("foo");
    let spec = set.spec.template.spec.as_mut().unwrap();
    spec.node_selector = Some(labels(&[("pool", "a")]));
    spec.tolerations = Some(vec![toleration("ok", "Exists", "", "NoSchedule")]);
    set.spec.update_strategy = Some(strategy);
    let mut c = Cluster::new(set);
    let old_hash = "oldhash".to_owned();
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("node-{i:02}");
        let mut view = node(
            &name,
            if n.selected {
                labels(&[("pool", "a")])
            } else {
                Default::default()
            },
        );
        match n.taint {
            1 => view.taints.push(taint("dedicated", "x", "NoSchedule")),
            2 => view.taints.push(taint("dedicated", "x", "NoExecute")),
            3 => view.taints.push(taint("ok", "", "NoSchedule")),
            _ => {}
        }
        c.nodes.push(Arc::new(view));
        for p in &n.pods {
            let mut pod = c.new_pod(&format!("{name}-"), &name, ds_label(), true);
            if !p.new {
                Arc::make_mut(&mut pod.labels)
                    .insert("controller-revision-hash".into(), old_hash.clone());
            }
            pod.ready = p.ready;
            pod.ready_since = p.ready.then(|| t(1_600_000_000));
            pod.phase = match p.phase {
                8 => PodPhase::Failed,
                9 => PodPhase::Succeeded,
                _ => PodPhase::Running,
            };
            if pod.phase != PodPhase::Running {
                pod.ready = false;
            }
            pod.deletion_timestamp = p.deleting.then_some(c.now);
            pod.created = Some(t(1_600_000_000 + p.age));
            c.pods.push(pod.into());
        }
    }
    c
}

/// The world moves on: terminating pods vanish, every pod becomes ready, time passes.
fn settle(c: &mut Cluster) {
    c.pods.retain(|p| !p.deleting());
    c.advance(Duration::from_secs(60));
    let now = c.now;
    for p in &mut c.pods {
        let p = Arc::make_mut(p);
        if p.phase == PodPhase::Running || p.phase == PodPhase::Pending {
            p.phase = PodPhase::Running;
            if !p.ready {
                p.ready = true;
                p.ready_since = Some(now);
            }
        }
    }
    c.advance(Duration::from_secs(60));
}

fn unavailable_nodes(c: &Cluster) -> usize {
    c.nodes
        .iter()
        .filter(|n| node_should_run(&c.set.spec.template, n).should_run)
        .filter(|n| {
            !c.pods.iter().any(|p| {
                p.target_node.as_deref() == Some(n.name.as_str())
                    && !p.deleting()
                    && is_pod_available(p, 0, c.now)
            })
        })
        .count()
}

fn surging_nodes(c: &Cluster, hash: &str) -> usize {
    c.nodes
        .iter()
        .filter(|n| {
            let pods: Vec<&Arc<PodView>> = c
                .pods
                .iter()
                .filter(|p| p.target_node.as_deref() == Some(n.name.as_str()) && !p.deleting())
                .collect();
            let old_available = pods.iter().any(|p| {
                p.labels.get("controller-revision-hash").map(String::as_str) != Some(hash)
                    && is_pod_available(p, 0, c.now)
            });
            let new_waiting = pods.iter().any(|p| {
                p.labels.get("controller-revision-hash").map(String::as_str) == Some(hash)
                    && !is_pod_available(p, 0, c.now)
            });
            old_available && new_waiting
        })
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// plan → apply → pods ready → re-plan reaches an empty plan within a bounded number of
    /// steps; then every eligible node has exactly one pod (of the current revision unless
    /// OnDelete) and nodes that must not run the pod have none.
    #[test]
    fn converges_to_one_pod_per_eligible_node(
        nodes in prop::collection::vec(node_gen(false, 3), 0..10),
        strategy in strategy_gen(true),
    ) {
        let on_delete = strategy.type_.as_deref() == Some("OnDelete");
        let mut c = build(&nodes, strategy);
        let bound = 6 * nodes.len() + 10;
        let mut steps = 0;
        loop {
            let p = c.plan();
            prop_assert!(p.errors.is_empty());
            if p.is_noop() {
                break;
            }
            c.apply(&p);
            settle(&mut c);
            steps += 1;
            prop_assert!(steps <= bound, "no fixed point after {} steps", bound);
        }
        let hash = c.current_hash();
        for n in &c.nodes {
            let e = node_should_run(&c.set.spec.template, n);
            let pods: Vec<&Arc<PodView>> = c.pods.iter().filter(|p| p.target_node.as_deref() == Some(n.name.as_str())).collect();
            if e.should_run {
                prop_assert_eq!(pods.len(), 1, "node {} pods {:?}", n.name, pods);
                if !on_delete {
                    prop_assert_eq!(pods[0].labels.get("controller-revision-hash"), Some(&hash));
                }
            } else if !e.should_continue_running {
                prop_assert!(pods.is_empty(), "pods on ineligible node {}", n.name);
            } else {
                prop_assert!(pods.len() <= 1);
            }
        }
    }

    /// Without surge, one plan never leaves more desired nodes without an available pod than
    /// max(maxUnavailable, nodes already unavailable).
    #[test]
    fn unavailable_stays_within_budget(
        nodes in prop::collection::vec(node_gen(true, 1), 1..16),
        n in 1i32..4,
    ) {
        let mut c = build(&nodes, rolling(IntOrString::Int(n)));
        c.set_image("foo/v2");
        let before = unavailable_nodes(&c);
        let p = c.plan();
        c.apply(&p);
        let after = unavailable_nodes(&c);
        prop_assert!(after <= before.max(usize::try_from(n).unwrap()), "before {} after {} max {}", before, after, n);
    }

    /// With surge, nodes running a not-yet-available new pod next to an available old pod never
    /// exceed maxSurge (nodes whose old pod is unavailable get a new pod outside the budget and
    /// are not counted).
    #[test]
    fn surge_stays_within_budget(
        nodes in prop::collection::vec(node_gen(true, 2), 1..16),
        n in 1i32..4,
        pct in any::<bool>(),
    ) {
        let v = if pct { IntOrString::String(format!("{}%", n * 20)) } else { IntOrString::Int(n) };
        let mut c = build(&nodes, surge(v.clone()));
        let hash = c.current_hash();
        let before = surging_nodes(&c, &hash);
        let p = c.plan();
        c.apply(&p);
        let desired = i32::try_from(c.nodes.len()).unwrap();
        let max = budget(&surge(v), desired).unwrap().max_surge;
        let after = surging_nodes(&c, &hash);
        prop_assert!(after <= before.max(usize::try_from(max).unwrap()), "before {} after {} max {}", before, after, max);
    }

    /// Shuffled nodes, pods and revisions give the same plan.
    #[test]
    fn shuffled_inputs_give_the_same_plan(
        nodes in prop::collection::vec(node_gen(false, 3), 0..10),
        strategy in strategy_gen(true),
        seed in any::<u64>(),
    ) {
        let mut c = build(&nodes, strategy);
        c.set_image("foo/v2");
        let first = c.plan();
        c.apply(&first);
        c.set_image("foo/v3");
        let input = c.input();
        let expected = plan(&input);
        let mut shuffled = input.clone();
        shuffle(&mut shuffled.nodes, seed);
        shuffle(&mut shuffled.pods, seed.rotate_left(17));
        shuffle(&mut shuffled.revisions, seed.rotate_left(31));
        prop_assert_eq!(plan(&shuffled), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A node change the set's [`NodeInterest`] says does not concern it leaves a converged
    /// set converged, with the same status: waking only the concerned sets loses no work.
    #[test]
    fn a_node_change_that_does_not_concern_the_set_changes_nothing_in_its_plan(
        nodes in prop::collection::vec(node_gen(false, 1), 1..8),
        strategy in strategy_gen(false),
        which in any::<prop::sample::Index>(),
        pool in 0u8..3,
        taint_kind in 0u8..4,
    ) {
        let mut c = build(&nodes, strategy);
        for _ in 0..(6 * nodes.len() + 10) {
            let p = c.plan();
            if p.is_noop() {
                break;
            }
            c.apply(&p);
            settle(&mut c);
        }
        let settled = c.plan();
        prop_assume!(settled.is_noop());
        let interest = NodeInterest::of(&c.set);
        let i = which.index(c.nodes.len());
        let before = (*c.nodes[i]).clone();
        let after = Arc::make_mut(&mut c.nodes[i]);
        after.labels = match pool {
            0 => labels(&[("pool", "a")]),
            1 => labels(&[("pool", "a"), ("zone", "z2")]),
            _ => labels(&[("pool", "b")]),
        };
        after.taints = match taint_kind {
            1 => vec![taint("dedicated", "x", "NoSchedule")],
            2 => vec![taint("dedicated", "x", "NoExecute")],
            3 => vec![taint("ok", "", "NoSchedule")],
            _ => Vec::new(),
        };
        let after = after.clone();
        if !interest.concerns(Some(&before), Some(&after)) {
            let replanned = c.plan();
            prop_assert!(replanned.is_noop(), "{:?} -> {:?}: {:?}", before, after, replanned);
            prop_assert_eq!(replanned.status, settled.status);
        }
    }
}

fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = usize::try_from(seed % (i as u64 + 1)).unwrap();
        v.swap(i, j);
    }
}

/// A rolling update with everynode's controls: both budgets, a partition, canary nodes.
fn controlled(
    max_unavailable: i32,
    max_surge: i32,
    partition: i32,
    canary_only: bool,
) -> DaemonSetUpdateStrategy {
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(everynode_api::RollingUpdateDaemonSet {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            max_surge: Some(IntOrString::Int(max_surge)),
            partition: Some(IntOrString::Int(partition)),
            selector: canary_only.then(|| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(labels(&[("canary", "yes")])),
                    ..Default::default()
                }
            }),
            ..Default::default()
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Rolling out with a partition and canary nodes: after every plan, at most
    /// `desired - partition` desired nodes run the new revision, none outside the canary
    /// selector does, no more than `maxUnavailable` nodes are without an available pod (all
    /// start available) and no more than `maxSurge` surge; the rollout stops at exactly the
    /// allowed nodes.
    #[test]
    fn partition_selector_and_both_budgets_are_never_crossed(
        canary in prop::collection::vec(any::<bool>(), 1..14),
        max_unavailable in 0i32..3,
        max_surge in 0i32..3,
        partition in 0i32..8,
        canary_only in any::<bool>(),
    ) {
        let max_unavailable = if max_surge == 0 { max_unavailable.max(1) } else { max_unavailable };
        let nodes: Vec<NodeGen> = canary.iter().map(|_| NodeGen { selected: true, taint: 0, pods: Vec::new() }).collect();
        let mut c = build(&nodes, controlled(max_unavailable, max_surge, partition, canary_only));
        for (node, is_canary) in c.nodes.iter_mut().zip(&canary) {
            if *is_canary {
                Arc::make_mut(node).labels.insert("canary".to_owned(), "yes".to_owned());
            }
        }
        // Everything on the first revision and available.
        for _ in 0..3 {
            let p = c.plan();
            c.apply(&p);
            settle(&mut c);
        }
        prop_assert_eq!(unavailable_nodes(&c), 0);
        c.set_image("foo/v2");
        let hash = c.current_hash();
        let desired = c.nodes.len();
        let allowed = desired.saturating_sub(usize::try_from(partition).unwrap());
        for _ in 0..(4 * desired + 6) {
            let p = c.plan();
            prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
            c.apply(&p);
            let updated: Vec<&str> = c
                .pods
                .iter()
                .filter(|p| p.labels.get("controller-revision-hash") == Some(&hash))
                .filter_map(|p| p.target_node.as_deref())
                .collect();
            let mut updated_nodes = updated.clone();
            updated_nodes.sort_unstable();
            updated_nodes.dedup();
            prop_assert!(updated_nodes.len() <= allowed, "{} updated > {} allowed", updated_nodes.len(), allowed);
            if canary_only {
                for n in &updated_nodes {
                    let node = c.nodes.iter().find(|x| x.name == *n).unwrap();
                    prop_assert!(node.labels.contains_key("canary"), "non-canary node {} updated", n);
                }
            }
            prop_assert!(unavailable_nodes(&c) <= usize::try_from(max_unavailable).unwrap());
            prop_assert!(surging_nodes(&c, &hash) <= usize::try_from(max_surge).unwrap());
            if p.is_noop() {
                break;
            }
            settle(&mut c);
        }
        let eligible = if canary_only { canary.iter().filter(|x| **x).count() } else { desired };
        let updated = c
            .pods
            .iter()
            .filter(|p| p.labels.get("controller-revision-hash") == Some(&hash))
            .count();
        prop_assert_eq!(updated, eligible.min(allowed), "rollout stopped early or late");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Zone-by-zone waves and pacing: every update start (an old pod deleted) is in the first
    /// domain that is not fully updated, never more nodes of a domain are updating than
    /// `maxUnavailablePerDomain`, starts in any 60 s never exceed `maxNodesPerMinute`, two
    /// batches are never closer than `minSecondsBetweenBatches`; and the rollout completes.
    #[test]
    fn waves_and_pacing_are_never_crossed(
        zones in prop::collection::vec(0usize..4, 2..10),
        max_unavailable in 1i32..4,
        per_domain in prop::option::of(1i32..3),
        bake in 0i64..2,
        per_minute in prop::option::of(1i32..4),
        min_between in 0i32..2,
        step in 5u64..40,
    ) {
        const ZONES: [&str; 4] = ["z0", "z1", "z2", ""];
        let nodes: Vec<NodeGen> = zones.iter().map(|_| NodeGen { selected: true, taint: 0, pods: Vec::new() }).collect();
        let strategy = DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: Some(everynode_api::RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::Int(max_unavailable)),
                topology_key: Some("zone".to_owned()),
                max_unavailable_per_domain: per_domain.map(IntOrString::Int),
                bake_seconds: Some(i32::try_from(bake * 45).unwrap()),
                max_nodes_per_minute: per_minute,
                min_seconds_between_batches: Some(min_between * 20),
                ..Default::default()
            }),
        };
        let mut c = build(&nodes, strategy);
        for (node, zone) in c.nodes.iter_mut().zip(&zones) {
            if !ZONES[*zone].is_empty() {
                Arc::make_mut(node).labels.insert("zone".to_owned(), ZONES[*zone].to_owned());
            }
        }
        for _ in 0..3 {
            let p = c.plan();
            c.apply(&p);
            settle(&mut c);
        }
        c.set_image("foo/v2");
        let hash = c.current_hash();
        let zone_of = |c: &Cluster, node: &str| -> String {
            c.nodes.iter().find(|n| n.name == node).and_then(|n| n.labels.get("zone").cloned()).unwrap_or_default()
        };
        // Domain order: by value, nodes without the label last.
        let mut order: Vec<String> = c.nodes.iter().map(|n| n.labels.get("zone").cloned().unwrap_or_default()).collect();
        order.sort_by(|a, b| (a.is_empty(), a).cmp(&(b.is_empty(), b)));
        order.dedup();
        let mut starts: Vec<(k8s_openapi::jiff::Timestamp, String)> = Vec::new();
        let mut finished = false;
        for _ in 0..(12 * zones.len() + 40) {
            let p = c.plan();
            prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
            for d in &p.deletes {
                let old = c.pods.iter().find(|x| x.name == d.pod).is_some_and(|x| x.labels.get("controller-revision-hash") != Some(&hash));
                if old {
                    let zone = zone_of(&c, &d.node);
                    // Every earlier domain is fully updated.
                    let position = order.iter().position(|z| *z == zone).unwrap();
                    for earlier in &order[..position] {
                        for n in c.nodes.iter().filter(|n| n.labels.get("zone").cloned().unwrap_or_default() == *earlier) {
                            let updated = c.pods.iter().any(|x| x.target_node.as_deref() == Some(n.name.as_str()) && x.labels.get("controller-revision-hash") == Some(&hash) && x.ready);
                            prop_assert!(updated, "node {} of earlier domain {:?} not updated when {} of {:?} started", n.name, earlier, d.node, zone);
                        }
                    }
                    starts.push((c.now, d.node.clone()));
                }
            }
            c.apply(&p);
            if let Some(max) = per_domain {
                for zone in &order {
                    let busy = c.nodes.iter()
                        .filter(|n| n.labels.get("zone").cloned().unwrap_or_default() == *zone)
                        .filter(|n| !c.pods.iter().any(|x| x.target_node.as_deref() == Some(n.name.as_str()) && x.ready))
                        .count();
                    prop_assert!(busy <= usize::try_from(max).unwrap(), "{} nodes of {:?} updating, max {}", busy, zone, max);
                }
            }
            if p.is_noop() && p.requeue_after.is_none() {
                finished = true;
                break;
            }
            settle(&mut c);
            c.advance(Duration::from_secs(step));
        }
        prop_assert!(finished, "rollout did not finish");
        let updated = c.pods.iter().filter(|x| x.labels.get("controller-revision-hash") == Some(&hash)).count();
        prop_assert_eq!(updated, zones.len());
        for (i, (t, _)) in starts.iter().enumerate() {
            if let Some(max) = per_minute {
                let window = starts[i..].iter().filter(|(u, _)| u.duration_since(*t) < k8s_openapi::jiff::SignedDuration::from_secs(60)).count();
                prop_assert!(window <= usize::try_from(max).unwrap(), "{} starts within 60 s of {}", window, t);
            }
            if let Some((next, _)) = starts[i..].iter().find(|(u, _)| u > t) {
                let gap = next.duration_since(*t);
                prop_assert!(gap >= k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_between * 20)), "batches {} apart", gap);
            }
        }
    }
}
