//! One plan for a set over 5,000 nodes and 5,000 pods in the middle of a rolling update.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use everynode_api::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use everynode_core::{
    NodeView, Owner, PlanInput, PodPhase, PodView, RevisionView, SetView, Timestamp, hash_template,
    plan, revision_data,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const NODES: usize = 5_000;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[("app", "agent")])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "agent".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            node_selector: Some(labels(&[("kubernetes.io/os", "linux")])),
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("infra".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }]),
            ..Default::default()
        }),
    }
}

fn input() -> PlanInput {
    let old = template("agent:v1");
    let new = template("agent:v2");
    let (old_hash, new_hash) = (hash_template(&old, None), hash_template(&new, None));
    let set = SetView {
        name: "agent".into(),
        namespace: "kube-system".into(),
        uid: "uid-agent".into(),
        generation: Some(2),
        annotations: BTreeMap::new(),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "agent")])),
                match_expressions: None,
            },
            template: new.clone(),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("10%".into())),
                    max_surge: None,
                    ..Default::default()
                }),
            }),
            min_ready_seconds: Some(10),
            revision_history_limit: Some(10),
            ..Default::default()
        },
        template_generation: None,
        deleting: false,
        status: None,
    };
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let ready_since = Timestamp::from_second(1_699_990_000).unwrap();
    let mut nodes = Vec::with_capacity(NODES);
    let mut pods = Vec::with_capacity(NODES);
    // One map per revision, shared by its pods, as the controller's kept pod views share them.
    let revision_labels = |hash: &String| {
        let mut pod_labels = labels(&[("app", "agent")]);
        pod_labels.insert("controller-revision-hash".into(), hash.clone());
        std::sync::Arc::new(pod_labels)
    };
    let (new_labels, old_labels) = (revision_labels(&new_hash), revision_labels(&old_hash));
    for i in 0..NODES {
        let name = format!("node-{i:05}");
        let mut taints = Vec::new();
        if i % 10 == 0 {
            taints.push(Taint {
                key: "dedicated".into(),
                value: Some("infra".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
        nodes.push(std::sync::Arc::new(NodeView {
            name: name.clone(),
            labels: labels(&[
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/hostname", &name),
                ("topology.kubernetes.io/zone", ["a", "b", "c"][i % 3]),
            ]),
            taints,
            unschedulable: false,
            ready: Some(true),
            problem: None,
        }));
        // 40 % updated and available, 5 % updated and not yet ready, 55 % old and available.
        let (pod_labels, ready) = match i % 20 {
            0..=7 => (&new_labels, true),
            8 => (&new_labels, false),
            _ => (&old_labels, true),
        };
        pods.push(PodView {
            name: format!("agent-{i:05}"),
            uid: format!("uid-{i}"),
            labels: pod_labels.clone(),
            owner: Some(Owner::ThisSet),
            node_name: Some(name.clone()),
            target_node: Some(name),
            phase: PodPhase::Running,
            ready,
            ready_since: ready.then_some(ready_since),
            deletion_timestamp: None,
            created: Some(ready_since),
            trouble: None,
            unschedulable: None,
        });
    }
    let rev = |t: &PodTemplateSpec, h: &str, n: i64| RevisionView {
        name: format!("agent-{h}"),
        labels: {
            let mut l = labels(&[("app", "agent")]);
            l.insert("controller-revision-hash".into(), h.into());
            l
        },
        owner: Some(Owner::ThisSet),
        revision: n,
        data: revision_data(t),
        deleting: false,
    };
    let revisions = vec![rev(&old, &old_hash, 1), rev(&new, &new_hash, 2)];
    let mut input = PlanInput::new(set, now);
    input.nodes = nodes;
    input.pods = pods.into_iter().map(Arc::new).collect();
    input.revisions = revisions;
    input
}

/// `input` with its pods and nodes cloned one by one in a shuffled order: as in inputs built
/// from a controller's long-lived caches, objects a plan visits one after another lie far
/// apart on the heap.
fn scattered(input: &PlanInput) -> PlanInput {
    let n = input.pods.len().min(input.nodes.len());
    let mut order: Vec<usize> = (0..n).collect();
    // A fixed xorshift shuffle: the same layout every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut pods = vec![None; n];
    let mut nodes = vec![None; n];
    for &i in &order {
        pods[i] = Some(input.pods[i].clone());
        nodes[i] = Some(input.nodes[i].clone());
    }
    let mut out = input.clone();
    out.pods = pods.into_iter().flatten().collect();
    out.nodes = nodes.into_iter().flatten().collect();
    out
}

fn bench(c: &mut Criterion) {
    let input = input();
    let p = plan(&input);
    assert!(!p.deletes.is_empty(), "the fixture is mid-rollout");
    c.bench_function("plan 5000 nodes / 5000 pods, rolling update", |b| {
        b.iter(|| plan(black_box(&input)))
    });
    let mut quiet = input.clone();
    quiet.config.explain = false;
    c.bench_function(
        "plan 5000 nodes / 5000 pods, rolling update, no explain",
        |b| b.iter(|| plan(black_box(&quiet))),
    );
    let scattered = scattered(&quiet);
    c.bench_function(
        "plan 5000 nodes / 5000 pods, rolling update, no explain, scattered input",
        |b| b.iter(|| plan(black_box(&scattered))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
