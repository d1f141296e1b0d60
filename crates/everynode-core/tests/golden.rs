//! The planner's output over thousands of randomized but deterministic inputs, held two ways:
//! `tests/golden/decisions.txt`, one reviewable line per plan (pods created, deleted and updated
//! in place with their reasons, history actions, events, status counters and conditions), and a
//! digest of the complete output (`Debug` of every [`Plan`]) that catches what the lines leave
//! out. Every input is planned a second time with the pods of equal labels sharing one map
//! (as the controller gives them), which must not change the plan.
//!
//! The planner's output must not change by accident (e.g. through an optimisation). After an
//! intended behaviour change, `EVERYNODE_UPDATE_GOLDEN=1` rewrites the decisions file — its diff
//! shows which decisions moved — then update [`GOLDEN`]. Set `EVERYNODE_GOLDEN_DUMP=<file>` to
//! write every plan in full, to diff two versions of the planner.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::*;
use everynode_api::labels::{CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION};
use everynode_api::{DaemonSetStatus, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use everynode_core::{
    BackoffEntry, NodeView, Owner, Plan, PlanInput, PodLabels, PodPhase, RevisionView,
    hash_template, plan, revision_data,
};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Number of generated scenarios (each planned up to [`STEPS`] times).
const SCENARIOS: u64 = 2500;
/// Plans per scenario (plan, apply, let time pass, plan again).
const STEPS: usize = 3;
/// Expected `(plans, digest)`. Last changed when everynode allowed both budgets at once: the
/// dumps before and after differed only in scenarios with both `maxSurge` and
/// `maxUnavailable` non-zero (which apps/v1 rejects) and in the new, empty, output fields
/// (again when `status.wave` and `Plan::updates` were added: identical apart from `wave: None`
/// and `updates: []`). Changed again when pod names became upstream's generated names (drawn
/// from the plan's seed) and new revisions Go's bytes: apart from names and revision data, the
/// dumps differed only in scenarios with two nodes of one name, where two creates no longer
/// share a name. Changed again when the rollout's parameters came to be parsed once per plan: an
/// invalid budget is now reported in the 37 plans that wait for earlier writes too (the full
/// dumps differed only in those `errors`), and when per-node decisions gained the node's pod
/// and whether it is updated and available (the dumps differed only in those fields), and when
/// `status_changed` became `status_write` (how to write it: the same plans write), and when a
/// plan came to wake itself when its next ready pod becomes available (321 plans: only
/// `requeue_after` moved), and when the status gained `gatedNodes` (the dumps differed only in
/// its `gated_nodes: None` lines).
const GOLDEN: (usize, u64) = (5764, 6_330_594_955_254_836_192);

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn idx(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap()
    }
    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.idx(items.len())]
    }
}

fn fnv64(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn int_or_pct(r: &mut Rng) -> IntOrString {
    match r.below(6) {
        0 => IntOrString::Int(0),
        1 | 2 => IntOrString::Int(i32::try_from(r.below(4)).unwrap()),
        3 | 4 => IntOrString::String(format!("{}%", r.below(5) * 25)),
        _ => IntOrString::String(["x%", "-5%", "10"][r.idx(3)].to_owned()),
    }
}

fn strategy(r: &mut Rng) -> Option<DaemonSetUpdateStrategy> {
    match r.below(8) {
        0 => None,
        1 => Some(on_delete()),
        2 | 3 => Some(rolling(int_or_pct(r))),
        4 | 5 => Some(surge(int_or_pct(r))),
        6 => Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: r.chance(1, 2).then(|| int_or_pct(r)),
                max_surge: r.chance(1, 2).then(|| int_or_pct(r)),
                ..Default::default()
            }),
        }),
        _ => Some(DaemonSetUpdateStrategy {
            type_: r.chance(1, 2).then(|| "RollingUpdate".to_owned()),
            rolling_update: None,
        }),
    }
}

const NODE_KEYS: &[&str] = &["pool", "zone", "n", "gpu"];
const NODE_VALUES: &[&str] = &["a", "b", "c", "1", "7", "42", "-3", "x"];

fn node_req(r: &mut Rng) -> NodeSelectorRequirement {
    let op = *r.pick(&["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Bogus"]);
    let n_vals = match op {
        "Exists" | "DoesNotExist" => usize::from(r.chance(1, 8)),
        "Gt" | "Lt" => {
            if r.chance(7, 8) {
                1
            } else {
                2
            }
        }
        _ => r.idx(3) + usize::from(r.chance(7, 8)),
    };
    NodeSelectorRequirement {
        key: (*r.pick(NODE_KEYS)).to_owned(),
        operator: op.to_owned(),
        values: (n_vals > 0 || r.chance(1, 2)).then(|| {
            (0..n_vals)
                .map(|_| (*r.pick(NODE_VALUES)).to_owned())
                .collect()
        }),
    }
}

fn field_req(r: &mut Rng, nodes: usize) -> NodeSelectorRequirement {
    let n_vals = if r.chance(7, 8) { 1 } else { r.idx(3) };
    NodeSelectorRequirement {
        key: if r.chance(9, 10) {
            "metadata.name".to_owned()
        } else {
            "metadata.uid".to_owned()
        },
        operator: (*r.pick(&["In", "NotIn", "Exists"])).to_owned(),
        values: Some(
            (0..n_vals)
                .map(|_| format!("node-{}", r.idx(nodes.max(1) + 1)))
                .collect(),
        ),
    }
}

fn template_spec(r: &mut Rng, spec: &mut PodSpec, nodes: usize) {
    if r.chance(1, 2) {
        let mut sel = BTreeMap::new();
        for _ in 0..=r.idx(2) {
            sel.insert(
                (*r.pick(NODE_KEYS)).to_owned(),
                (*r.pick(NODE_VALUES)).to_owned(),
            );
        }
        spec.node_selector = Some(sel);
    }
    if r.chance(1, 3) {
        let terms = (0..r.idx(3))
            .map(|_| NodeSelectorTerm {
                match_expressions: r
                    .chance(3, 4)
                    .then(|| (0..r.idx(3)).map(|_| node_req(r)).collect()),
                match_fields: r
                    .chance(1, 3)
                    .then(|| (0..=r.idx(2)).map(|_| field_req(r, nodes)).collect()),
            })
            .collect();
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        });
    }
    if r.chance(1, 2) {
        let tols = (0..=r.idx(3))
            .map(|_| {
                let op = *r.pick(&["", "Equal", "Exists", "Gt", "Lt", "Bad"]);
                let key = *r.pick(&["", "dedicated", "n", "node.kubernetes.io/unschedulable"]);
                let value = *r.pick(&["", "x", "infra", "5", "05", "-2"]);
                let effect = *r.pick(&["", "NoSchedule", "NoExecute", "PreferNoSchedule"]);
                toleration(key, op, value, effect)
            })
            .collect();
        spec.tolerations = Some(tols);
    }
    if r.chance(1, 12) {
        spec.node_name = Some(format!("node-{}", r.idx(nodes.max(1) + 1)));
    }
    if r.chance(1, 6) {
        spec.host_network = Some(true);
    }
}

fn node_view(r: &mut Rng, name: String) -> NodeView {
    let mut labels = BTreeMap::new();
    for _ in 0..r.idx(5) {
        labels.insert(
            (*r.pick(NODE_KEYS)).to_owned(),
            (*r.pick(NODE_VALUES)).to_owned(),
        );
    }
    if r.chance(2, 3) {
        labels.insert("pool".to_owned(), "a".to_owned());
    }
    let mut n = node(&name, labels);
    for _ in 0..usize::from(r.chance(1, 3)) + usize::from(r.chance(1, 6)) {
        let key = *r.pick(&[
            "dedicated",
            "n",
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/network-unavailable",
        ]);
        let value = *r.pick(&["", "x", "infra", "5", "9", "abc"]);
        let effect = *r.pick(&["NoSchedule", "NoExecute", "PreferNoSchedule"]);
        n.taints.push(taint(key, value, effect));
    }
    n.unschedulable = r.chance(1, 8);
    n.ready = *r.pick(&[Some(true), Some(false), None]);
    n
}

/// One random cluster.
fn scenario(seed: u64) -> (Cluster, Vec<String>) {
    let mut r = Rng::new(seed);
    let big = seed % 500 == 7;
    let n_nodes = if big { 150 + r.idx(100) } else { r.idx(12) };
    let mut set = new_set(if r.chance(1, 10) {
        "a-very-long-daemon-set-name-that-needs-truncating-for-pod-names-x"
    } else {
        "foo"
    });
    if r.chance(1, 5) {
        set.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: (*r.pick(&["type", "name", "tier"])).to_owned(),
            operator: (*r.pick(&["In", "NotIn", "Exists", "DoesNotExist", "Bad"])).to_owned(),
            values: r.chance(3, 4).then(|| {
                (0..r.idx(3))
                    .map(|_| (*r.pick(&["production", "test", "simple-daemon"])).to_owned())
                    .collect()
            }),
        }]);
    }
    if r.chance(1, 40) {
        set.spec.selector.match_labels = None;
    }
    set.deleting = r.chance(1, 40);
    set.template_generation = r.chance(1, 5).then(|| i64::try_from(r.below(3)).unwrap());
    set.generation = r.chance(9, 10).then(|| i64::try_from(r.below(4)).unwrap());
    set.spec.update_strategy = strategy(&mut r);
    set.spec.min_ready_seconds = *r.pick(&[None, Some(0), Some(10), Some(100)]);
    set.spec.revision_history_limit = *r.pick(&[None, Some(0), Some(1), Some(3)]);
    if r.chance(1, 5) {
        set.annotations
            .insert("note".to_owned(), format!("v{}", r.below(3)));
    }
    template_spec(&mut r, set.spec.template.spec.as_mut().unwrap(), n_nodes);
    let images = ["foo/v1", "foo/v2", "foo/v3"];
    let image = r.idx(3);
    set.spec.template.spec.as_mut().unwrap().containers[0].image = Some(images[image].to_owned());
    if r.chance(1, 3) {
        set.status = Some(DaemonSetStatus {
            collision_count: r.chance(1, 4).then(|| i32::try_from(r.below(3)).unwrap()),
            current_number_scheduled: i32::try_from(r.below(4)).unwrap(),
            desired_number_scheduled: i32::try_from(r.below(4)).unwrap(),
            number_ready: i32::try_from(r.below(4)).unwrap(),
            observed_generation: r.chance(1, 2).then(|| i64::try_from(r.below(4)).unwrap()),
            ..Default::default()
        });
    }
    let mut c = Cluster::new(set);
    c.expectations_satisfied = r.chance(15, 16);
    c.config.explain = r.chance(3, 4);
    // The apps/v1 status shape: the digest predates everynode's rollout status and pins the
    // upstream behaviour (decisions and status) byte for byte.
    c.config.rollout_status = false;
    c.config.burst_replicas = *r.pick(&[250, 250, 1, 2, 5]);

    // Revisions: templates of the three images (with the set's other template fields).
    let mut hashes = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut tpl = c.set.spec.template.clone();
        tpl.spec.as_mut().unwrap().containers[0].image = Some((*img).to_owned());
        let h = hash_template(&tpl, c.set.collision_count());
        hashes.push(h.clone());
        for dup in 0..1 + usize::from(r.chance(1, 6)) {
            if r.chance(1, 3) {
                continue;
            }
            let mut labels = c
                .set
                .spec
                .template
                .metadata
                .clone()
                .unwrap()
                .labels
                .unwrap();
            if r.chance(5, 6) {
                let label = if dup == 0 {
                    h.clone()
                } else {
                    format!("dup{i}")
                };
                labels.insert(CONTROLLER_REVISION_HASH.to_owned(), label);
            }
            if r.chance(1, 10) {
                labels.insert("type".to_owned(), "test".to_owned());
            }
            let name = if dup == 0 {
                format!("{}-{h}", c.set.name)
            } else {
                format!("{}-dup{i}", c.set.name)
            };
            c.revisions.push(RevisionView {
                name,
                labels,
                owner: Some(*r.pick(&[
                    Owner::ThisSet,
                    Owner::ThisSet,
                    Owner::Orphan,
                    Owner::Other,
                ])),
                revision: i64::try_from(r.below(5)).unwrap(),
                data: revision_data(&tpl),
                deleting: r.chance(1, 12),
            });
        }
    }
    if r.chance(1, 15) {
        // A revision taking the current name with other data (hash collision).
        let h = hash_template(&c.set.spec.template, c.set.collision_count());
        let mut other = c.set.spec.template.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("other".to_owned());
        let name = format!("{}-{h}", c.set.name);
        c.revisions.push(RevisionView {
            name,
            labels: BTreeMap::new(),
            owner: Some(Owner::Other),
            revision: 9,
            data: revision_data(&other),
            deleting: false,
        });
    }
    hashes.push("unrelated".to_owned());

    // Nodes (sometimes out of order, sometimes with a duplicate name).
    let mut names: Vec<String> = (0..n_nodes).map(|i| format!("node-{i}")).collect();
    if r.chance(1, 20) && n_nodes > 0 {
        let dup = names[r.idx(n_nodes)].clone();
        names.push(dup);
    }
    for name in &names {
        let n = node_view(&mut r, name.clone());
        c.nodes.push(std::sync::Arc::new(n));
    }
    if r.chance(1, 3) {
        for i in (1..c.nodes.len()).rev() {
            let j = r.idx(i + 1);
            c.nodes.swap(i, j);
        }
    }

    // Pods: on known nodes, vanished nodes, or without a target.
    let n_pods = if big {
        n_nodes + r.idx(20)
    } else {
        r.idx(n_nodes * 2 + 3)
    };
    let base = 1_699_999_000;
    for _ in 0..n_pods {
        let node = match r.below(12) {
            0 => format!("gone-{}", r.below(3)),
            1 => String::new(),
            _ => format!("node-{}", r.idx(n_nodes.max(1))),
        };
        let labels = match r.below(10) {
            0 => ds_label2(),
            1 => BTreeMap::new(),
            _ => ds_label(),
        };
        let owned = r.chance(3, 4);
        let mut p = c.new_pod(&format!("{node}-"), &node, labels, owned);
        let labels = Arc::make_mut(&mut p.labels);
        match r.below(6) {
            0 => {
                labels.remove(CONTROLLER_REVISION_HASH);
            }
            1..=3 => {
                let h = r.pick(&hashes).clone();
                labels.insert(CONTROLLER_REVISION_HASH.to_owned(), h);
            }
            4 => {
                let h = format!("dup{}", r.below(3));
                labels.insert(CONTROLLER_REVISION_HASH.to_owned(), h);
            }
            _ => {}
        }
        if r.chance(1, 5) {
            let g = r.below(3).to_string();
            labels.insert(POD_TEMPLATE_GENERATION.to_owned(), g);
        }
        p.owner = *r.pick(&[
            Some(Owner::ThisSet),
            Some(Owner::ThisSet),
            Some(Owner::ThisSet),
            Some(Owner::Orphan),
            Some(Owner::Other),
            None,
        ]);
        if r.chance(1, 10) {
            // Pinned by affinity, not bound yet.
            p.node_name = None;
        }
        if r.chance(1, 12) {
            p.target_node = None;
        }
        p.phase = *r.pick(&[
            PodPhase::Running,
            PodPhase::Running,
            PodPhase::Running,
            PodPhase::Pending,
            PodPhase::Failed,
            PodPhase::Succeeded,
            PodPhase::Unknown,
        ]);
        p.ready = p.phase == PodPhase::Running && r.chance(3, 4);
        p.ready_since =
            (p.ready || r.chance(1, 10)).then(|| t(base + i64::try_from(r.below(1200)).unwrap()));
        p.deletion_timestamp = r.chance(1, 10).then(|| t(base));
        p.created = r
            .chance(9, 10)
            .then(|| t(base - i64::try_from(r.below(4)).unwrap()));
        c.pods.push(p.into());
    }
    if r.chance(1, 3) {
        for i in (1..c.pods.len()).rev() {
            let j = r.idx(i + 1);
            c.pods.swap(i, j);
        }
    }
    for i in 0..n_nodes {
        if r.chance(1, 6) {
            c.backoff.insert(
                format!("node-{i}"),
                BackoffEntry {
                    delay: Duration::from_secs(*r.pick(&[1, 2, 8, 900])),
                    last_update: t(1_700_000_000 - i64::try_from(r.below(4000)).unwrap()),
                },
            );
        }
    }
    (c, hashes)
}

/// Lets time pass after a plan was applied: terminating pods go, pods become ready.
fn settle(c: &mut Cluster, r: &mut Rng) {
    if r.chance(1, 2) {
        c.pods.retain(|p| !p.deleting());
    }
    c.advance(Duration::from_secs(*r.pick(&[1, 5, 30, 600])));
    let now = c.now;
    for p in &mut c.pods {
        let p = Arc::make_mut(p);
        if p.phase == PodPhase::Pending && r.chance(1, 2) {
            p.phase = PodPhase::Running;
        }
        if p.phase == PodPhase::Running && !p.ready && r.chance(1, 2) {
            p.ready = true;
            p.ready_since = Some(now);
        }
        if p.node_name.is_none() && r.chance(1, 2) {
            p.node_name = p.target_node.clone();
        }
    }
}

/// `input` with the pods of equal labels sharing one map, as the controller's pod views do
/// (the plan reads a shared map once).
fn with_shared_labels(mut input: PlanInput) -> PlanInput {
    let mut maps: Vec<PodLabels> = Vec::new();
    for pod in &mut input.pods {
        match maps.iter().find(|m| **m == pod.labels) {
            Some(shared) => Arc::make_mut(pod).labels = shared.clone(),
            None => maps.push(pod.labels.clone()),
        }
    }
    input
}

fn record(out: &mut String, seed: u64, step: usize, p: &Plan) {
    writeln!(out, "# scenario {seed} step {step}").unwrap();
    writeln!(out, "{p:#?}").unwrap();
}

/// One line of the decisions file: what the plan does, with reasons.
fn decisions(out: &mut String, seed: u64, step: usize, p: &Plan) {
    let _ = write!(out, "{seed}.{step}");
    for c in &p.creates {
        let _ = write!(out, " +{}:{:?}", c.node, c.reason);
    }
    for d in &p.deletes {
        let _ = write!(out, " -{}@{}:{:?}", d.pod, d.node, d.reason);
    }
    for u in &p.updates {
        let _ = write!(out, " ~{}@{}:{}", u.pod, u.node, u.hash);
    }
    let h = &p.history;
    if !(h.adopt.is_empty() && h.release.is_empty() && h.create.is_none() && h.delete.is_empty()) {
        let _ = write!(
            out,
            " history(adopt {:?} release {:?} create {} delete {:?})",
            h.adopt,
            h.release,
            h.create.is_some(),
            h.delete
        );
    }
    for e in &p.events {
        let _ = write!(out, " event:{:?}", e.reason);
    }
    if let Some(s) = &p.status {
        let _ = write!(
            out,
            " status {}/{}/{}/{}/{}/{} mis {}",
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.updated_number_scheduled.unwrap_or(-1),
            s.number_available.unwrap_or(-1),
            s.number_unavailable.unwrap_or(-1),
            s.number_misscheduled,
        );
        for c in s.conditions.iter().flatten() {
            let _ = write!(out, " {}={}:{}", c.type_, c.status, c.reason);
        }
    }
    if let Some(after) = p.requeue_after {
        let _ = write!(out, " requeue {}s", after.as_secs());
    }
    if !p.errors.is_empty() {
        let _ = write!(out, " errors {}", p.errors.len());
    }
    out.push('\n');
}

#[test]
fn plans_match_the_golden_decisions_and_digest() {
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    let mut plans = 0;
    let dump = std::env::var_os("EVERYNODE_GOLDEN_DUMP");
    let mut text = String::new();
    let mut all = String::new();
    let mut lines = String::from(
        "# seed.step, then: +node:create reason, -pod@node:delete reason, ~pod@node:hash (in\n\
         # place), history, events, status desired/current/ready/updated/available/unavailable,\n\
         # misscheduled, conditions. Rewrite: EVERYNODE_UPDATE_GOLDEN=1 cargo test -p \
         everynode-core --test golden\n",
    );
    for seed in 0..SCENARIOS {
        let (mut c, _) = scenario(seed);
        let mut r = Rng::new(seed ^ 0xdead_beef);
        for step in 0..STEPS {
            let input = c.input();
            let p = plan(&input);
            assert_eq!(
                plan(&with_shared_labels(input)),
                p,
                "scenario {seed} step {step}: pods sharing their label maps changed the plan"
            );
            text.clear();
            record(&mut text, seed, step, &p);
            fnv64(&mut digest, text.as_bytes());
            decisions(&mut lines, seed, step, &p);
            if dump.is_some() {
                all.push_str(&text);
            }
            plans += 1;
            if p.is_noop() && step > 0 {
                break;
            }
            c.apply(&p);
            settle(&mut c, &mut r);
        }
    }
    if let Some(path) = dump {
        std::fs::write(path, all).unwrap();
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/decisions.txt");
    if std::env::var_os("EVERYNODE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &lines).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != lines {
        let moved: Vec<_> = committed
            .lines()
            .zip(lines.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        panic!(
            "the planner's decisions changed; first differing lines (committed, now): {moved:#?}\n\
             review them, then EVERYNODE_UPDATE_GOLDEN=1 cargo test -p everynode-core --test golden"
        );
    }
    assert_eq!(
        (plans, digest),
        GOLDEN,
        "the planner's output changed (see the module doc)"
    );
}
