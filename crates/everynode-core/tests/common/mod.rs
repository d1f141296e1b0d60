//! Shared harness for the upstream-faithful planner tests: builds nodes/pods/sets like
//! upstream's `daemon_controller_test.go` helpers and applies plans like its fake pod control
//! (created pods appear at once — current revision, unscheduled, pinned by affinity, not
//! ready; deleted pods disappear at once).
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
pub use std::sync::Arc;
use std::time::Duration;

use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_api::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use everynode_core::{
    Deferred, NodeView, Owner, Plan, PlanInput, PodPhase, PodView, SetView, Timestamp,
    hash_template, plan,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::SignedDuration;

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `simpleDaemonSetLabel`.
pub fn ds_label() -> BTreeMap<String, String> {
    labels(&[("name", "simple-daemon"), ("type", "production")])
}
/// `simpleDaemonSetLabel2`.
pub fn ds_label2() -> BTreeMap<String, String> {
    labels(&[("name", "simple-daemon"), ("type", "test")])
}
/// `simpleNodeLabel`.
pub fn node_label() -> BTreeMap<String, String> {
    labels(&[("color", "blue"), ("speed", "fast")])
}
/// `simpleNodeLabel2`.
pub fn node_label2() -> BTreeMap<String, String> {
    labels(&[("color", "red"), ("speed", "fast")])
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

/// `newDaemonSet(name)`: OnDelete, revisionHistoryLimit 2, selector = template labels.
pub fn new_set(name: &str) -> SetView {
    SetView {
        name: name.to_owned(),
        namespace: "default".to_owned(),
        uid: format!("uid-{name}"),
        generation: Some(1),
        annotations: BTreeMap::new(),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(ds_label()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ds_label()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".to_owned(),
                        image: Some("foo/bar".to_owned()),
                        termination_message_path: Some("/dev/termination-log".to_owned()),
                        image_pull_policy: Some("IfNotPresent".to_owned()),
                        ..Default::default()
                    }],
                    dns_policy: Some("Default".to_owned()),
                    ..Default::default()
                }),
            },
            update_strategy: Some(on_delete()),
            min_ready_seconds: None,
            revision_history_limit: Some(2),
            ..Default::default()
        },
        template_generation: None,
        deleting: false,
        status: None,
    }
}

pub fn on_delete() -> DaemonSetUpdateStrategy {
    DaemonSetUpdateStrategy {
        type_: Some("OnDelete".to_owned()),
        rolling_update: None,
    }
}

/// `newUpdateUnavailable(n)` (maxSurge left unset).
pub fn rolling(max_unavailable: IntOrString) -> DaemonSetUpdateStrategy {
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable: Some(max_unavailable),
            max_surge: None,
            ..Default::default()
        }),
    }
}

/// `newUpdateSurge(n)`: maxUnavailable 0.
pub fn surge(max_surge: IntOrString) -> DaemonSetUpdateStrategy {
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(max_surge),
            ..Default::default()
        }),
    }
}

/// `updateStrategies()`: OnDelete and RollingUpdate with maxUnavailable 1.
pub fn strategies() -> Vec<DaemonSetUpdateStrategy> {
    vec![on_delete(), rolling(IntOrString::Int(1))]
}

pub fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_owned(),
        value: (!value.is_empty()).then(|| value.to_owned()),
        effect: effect.to_owned(),
        time_added: None,
    }
}

pub fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    Toleration {
        key: (!key.is_empty()).then(|| key.to_owned()),
        operator: (!op.is_empty()).then(|| op.to_owned()),
        value: (!value.is_empty()).then(|| value.to_owned()),
        effect: (!effect.is_empty()).then(|| effect.to_owned()),
        toleration_seconds: None,
    }
}

pub fn node(name: &str, labels: BTreeMap<String, String>) -> NodeView {
    NodeView {
        name: name.to_owned(),
        labels,
        taints: Vec::new(),
        unschedulable: false,
        ready: Some(true),
        problem: None,
    }
}

/// Counts of one sync: (creates, deletes, events).
pub type Counts = (usize, usize, usize);

/// A fake cluster around one set.
pub struct Cluster {
    /// What the next plan sees (its fields read as the cluster's: `c.pods`, `c.set`, ...).
    state: PlanInput,
    counter: usize,
}

impl std::ops::Deref for Cluster {
    type Target = PlanInput;

    fn deref(&self) -> &PlanInput {
        &self.state
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut PlanInput {
        &mut self.state
    }
}

impl Cluster {
    pub fn new(set: SetView) -> Self {
        Self {
            state: PlanInput::new(set, t(1_700_000_000)),
            counter: 0,
        }
    }

    pub fn with_strategy(mut set: SetView, strategy: DaemonSetUpdateStrategy) -> Self {
        set.spec.update_strategy = Some(strategy);
        Self::new(set)
    }

    /// `addNodes(store, start, n, labels)`.
    pub fn add_nodes(&mut self, start: usize, n: usize, labels: BTreeMap<String, String>) {
        for i in start..start + n {
            self.nodes
                .push(Arc::new(node(&format!("node-{i}"), labels.clone())));
        }
    }

    pub fn node_mut(&mut self, name: &str) -> &mut NodeView {
        Arc::make_mut(self.nodes.iter_mut().find(|n| n.name == name).unwrap())
    }

    /// The hash a pod built by upstream `newPod(.., ds)` carries: the current template's.
    pub fn current_hash(&self) -> String {
        // Hash label of the revision matching the template if the set has one, else computed.
        let digest = everynode_core::revision::TemplateDigest::new(
            &self.set.spec.template,
            self.set.collision_count(),
        );
        self.revisions
            .iter()
            .filter(|r| r.owner() == Owner::ThisSet && digest.matches(&r.data))
            .max_by_key(|r| r.revision)
            .and_then(|r| r.labels.get(CONTROLLER_REVISION_HASH).cloned())
            .unwrap_or_else(|| hash_template(&self.set.spec.template, self.set.collision_count()))
    }

    fn next_name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{:05}", self.counter)
    }

    /// `newPod(prefix, node, labels, ds)`: with `owned` the pod gets the current hash label and
    /// an owner reference to the set; `node` empty → unscheduled (no target).
    pub fn new_pod(
        &mut self,
        prefix: &str,
        node: &str,
        labels: BTreeMap<String, String>,
        owned: bool,
    ) -> PodView {
        let mut labels = labels;
        if owned {
            labels.insert(CONTROLLER_REVISION_HASH.to_owned(), self.current_hash());
        }
        let name = self.next_name(prefix);
        PodView {
            uid: format!("uid-{name}"),
            name,
            labels: Arc::new(labels),
            owner: Some(if owned { Owner::ThisSet } else { Owner::Orphan }),
            node_name: (!node.is_empty()).then(|| node.to_owned()),
            target_node: (!node.is_empty()).then(|| node.to_owned()),
            phase: PodPhase::Pending,
            ready: false,
            ready_since: None,
            deletion_timestamp: None,
            created: None,
            trouble: None,
            unschedulable: None,
        }
    }

    /// `addPods(store, node, labels, ds, n)`.
    pub fn add_pods(
        &mut self,
        node: &str,
        labels: BTreeMap<String, String>,
        owned: bool,
        n: usize,
    ) {
        for _ in 0..n {
            let p = self.new_pod(&format!("{node}-"), node, labels.clone(), owned);
            self.pods.push(p.into());
        }
    }

    /// `addFailedPods(store, node, labels, ds, n)`.
    pub fn add_failed_pods(&mut self, node: &str, labels: BTreeMap<String, String>, n: usize) {
        for _ in 0..n {
            let mut p = self.new_pod(&format!("{node}-"), node, labels.clone(), true);
            p.phase = PodPhase::Failed;
            self.pods.push(p.into());
        }
    }

    pub fn input(&self) -> PlanInput {
        self.state.clone()
    }

    /// One `syncDaemonSet`, without applying.
    pub fn plan(&self) -> Plan {
        plan(&self.input())
    }

    /// Applies a plan like upstream's fake pod control and API.
    pub fn apply(&mut self, plan: &Plan) {
        self.state.apply(plan);
    }

    /// Plans, checks (creates, deletes, events) and applies.
    #[track_caller]
    pub fn expect_sync(&mut self, creates: usize, deletes: usize, events: usize) -> Plan {
        let p = self.plan();
        let got = (p.creates.len(), p.deletes.len(), p.events.len());
        assert_eq!(
            got,
            (creates, deletes, events),
            "(creates, deletes, events) mismatch; plan:\n{p}"
        );
        assert!(p.errors.is_empty(), "plan errors: {:?}", p.errors);
        self.apply(&p);
        p
    }

    /// `markPodsReady`: every pod Ready (transition time `now` for pods that were not ready).
    pub fn mark_pods_ready(&mut self) {
        let now = self.now;
        for p in &mut self.pods {
            if !p.ready {
                let p = Arc::make_mut(p);
                p.ready = true;
                p.ready_since = Some(now);
            }
        }
    }

    /// `setPodReadiness(ready, count, filter)` over non-deleting pods in name order.
    #[track_caller]
    pub fn set_pod_readiness(
        &mut self,
        ready: bool,
        count: usize,
        filter: impl Fn(&PodView) -> bool,
    ) {
        let mut left = count;
        let mut idx: Vec<usize> = (0..self.pods.len()).collect();
        idx.sort_by(|a, b| self.pods[*a].name.cmp(&self.pods[*b].name));
        for i in idx {
            if left == 0 {
                break;
            }
            let p = &self.pods[i];
            if p.deleting() || p.ready == ready || !filter(p) {
                continue;
            }
            let now = self.now;
            let p = Arc::make_mut(&mut self.pods[i]);
            p.ready = ready;
            p.ready_since = Some(now);
            left -= 1;
        }
        assert_eq!(left, 0, "could not mark {count} pods ready={ready}");
    }

    /// Changes the template (the apiserver bumps generation).
    pub fn update_template(&mut self, f: impl FnOnce(&mut PodSpec)) {
        if let Some(spec) = self.set.spec.template.spec.as_mut() {
            f(spec);
        }
        self.set.generation = self.set.generation.map(|g| g + 1);
    }

    pub fn set_image(&mut self, image: &str) {
        self.update_template(|s| s.containers[0].image = Some(image.to_owned()));
    }

    pub fn set_strategy(&mut self, strategy: DaemonSetUpdateStrategy) {
        self.set.spec.update_strategy = Some(strategy);
        self.set.generation = self.set.generation.map(|g| g + 1);
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self
            .now
            .checked_add(SignedDuration::try_from(d).unwrap())
            .unwrap();
    }

    pub fn pod(&self, name: &str) -> &PodView {
        self.pods.iter().find(|p| p.name == name).unwrap()
    }

    pub fn ready_count(&self) -> usize {
        self.pods.iter().filter(|p| p.ready).count()
    }
}

/// A `RollingUpdate` strategy with `maxUnavailable: 1` and whatever `f` sets.
pub fn rolling_with(f: impl FnOnce(&mut RollingUpdateDaemonSet)) -> DaemonSetUpdateStrategy {
    let mut r = RollingUpdateDaemonSet {
        max_unavailable: Some(IntOrString::Int(1)),
        ..Default::default()
    };
    f(&mut r);
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(r),
    }
}

/// `n` nodes (`node-0`..), every one running an available pod of the current template.
pub fn rolled_out(n: usize, strategy: DaemonSetUpdateStrategy) -> Cluster {
    let mut c = Cluster::with_strategy(new_set("agent"), strategy);
    c.add_nodes(0, n, BTreeMap::new());
    c.expect_sync(n, 0, 0);
    c.mark_pods_ready();
    c.expect_sync(0, 0, 0);
    c
}

/// What the plan defers on `node` (with `config.explain`).
pub fn deferred(p: &Plan, node: &str) -> Vec<Deferred> {
    p.nodes
        .iter()
        .find(|d| d.node == node)
        .map(|d| d.deferred.iter().cloned().collect())
        .unwrap_or_default()
}

/// `(status, reason)` of the plan's condition `type_`.
pub fn condition(p: &Plan, type_: &str) -> (String, String) {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.clone());
    let c = conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", p.status));
    (c.status, c.reason)
}

/// `(status, reason)` of the plan's condition `type_`, `None` when it is absent.
pub fn condition_if(p: &Plan, type_: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// kstatus's view of the plan's conditions: `Ready`'s `(status, reason)`, and the reasons of
/// `Reconciling` and `Stalled` (`None` when absent; both are only ever written as `True`).
pub fn kstatus(p: &Plan) -> ((String, String), Option<String>, Option<String>) {
    let true_reason = |type_| {
        condition_if(p, type_).map(|(status, reason)| {
            assert_eq!(status, "True", "{type_} is only written as True");
            reason
        })
    };
    (
        condition(p, "Ready"),
        true_reason("Reconciling"),
        true_reason("Stalled"),
    )
}

/// What [`kstatus`] returns for `Ready=<ready>` (reason `reason`) with these `Reconciling` and
/// `Stalled` reasons.
pub fn ks(
    ready: &str,
    reason: &str,
    reconciling: Option<&str>,
    stalled: Option<&str>,
) -> ((String, String), Option<String>, Option<String>) {
    (
        (ready.to_owned(), reason.to_owned()),
        reconciling.map(str::to_owned),
        stalled.map(str::to_owned),
    )
}
