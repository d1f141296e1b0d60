//! The top level: one [`plan`] = one upstream `syncDaemonSet` as its unit tests observe it.
//!
//! Order: selector / deletion guards → claim pods and revisions → history (§5) → `manage`
//! (§4.3) → manage's writes applied to a working copy as observed (created pods: current
//! revision, unscheduled, pinned to the node, not ready; deleted pods: gone — what upstream's
//! fake pod control does) → the `RollingUpdate` step (§6) on that copy → history cleanup →
//! status (§7) of the final copy.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use everynode_api::labels::{CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION};
use everynode_api::{DaemonSetStatus, UpdateStrategyType};
use fnv::FnvHashMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::backoff::BackoffEntry;
use crate::budget::{BudgetError, allows_surge, budget};
use crate::eligibility::NodeMatcher;
use crate::manage::{EventReason, ManageCtx, PlanEvent, manage};
use crate::reason::{CreateReason, Deferred, DeleteReason, NodeExcluded};
use crate::render::pod_name_variant;
use crate::revision::{
    Claim, HistoryPlan, TemplateDigest, claim, cleanup_history, construct_history,
};
use crate::rollout::{NodeRef, RolloutCtx, rolling_update};
use crate::selector::{Selector, SelectorError};
use crate::snapshot::{NodeView, PlanInput, RevisionView};
use crate::state::{PodList, Slot, State, WPod};
use crate::status::{StatusCounts, count};

/// A pod to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodCreate {
    /// Target node.
    pub node: String,
    /// Name to create the pod with (deterministic, see [`crate::deterministic_pod_name`]).
    pub pod_name: String,
    /// Revision hash of the pod.
    pub hash: String,
    /// Why.
    pub reason: CreateReason,
}

/// A pod to delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodDelete {
    /// Pod name.
    pub pod: String,
    /// Pod UID (for a delete precondition), empty when unknown.
    pub uid: String,
    /// Node the pod is mapped to.
    pub node: String,
    /// Why.
    pub reason: DeleteReason,
}

/// A backoff entry to store (key: set UID / `key_generation` / node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackoffUpdate {
    /// Node name.
    pub node: String,
    /// The observedGeneration part of the backoff key.
    pub key_generation: i64,
    /// The new entry.
    pub entry: BackoffEntry,
}

/// What the plan decided about one node (for `explain`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeDecision {
    /// Node name.
    pub node: String,
    /// A daemon pod should run here.
    pub should_run: bool,
    /// An existing daemon pod may keep running.
    pub should_continue_running: bool,
    /// Why the node is excluded, if it is.
    pub excluded: Option<NodeExcluded>,
    /// Daemon pods mapped to the node before the plan.
    pub pods: usize,
    /// Things deferred on this node.
    pub deferred: Vec<Deferred>,
}

/// A non-fatal problem; the runtime should log it and retry with backoff.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The set's selector is invalid; nothing is done.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// The rolling update budget is invalid; the rolling update step is skipped.
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

/// The outcome of one plan. Apply in this order: adopt/release, history, deletes, creates,
/// status, events.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Orphan pods to adopt (after an uncached check that the set is not being deleted and
    /// has the same UID; if that check fails, apply nothing of this plan).
    pub adopt_pods: Vec<String>,
    /// Owned pods whose labels no longer match the selector: remove the owner reference.
    pub release_pods: Vec<String>,
    /// Revision history actions.
    pub history: HistoryPlan,
    /// Pods to create, by node name.
    pub creates: Vec<PodCreate>,
    /// Pods to delete.
    pub deletes: Vec<PodDelete>,
    /// Failed-pod backoff entries to store.
    pub backoff_updates: Vec<BackoffUpdate>,
    /// Events to publish on the set (SuccessfulCreate/Delete are the runtime's own).
    pub events: Vec<PlanEvent>,
    /// The status; `None` when upstream would not write it (set being deleted, empty or
    /// invalid selector).
    #[serde(skip)]
    pub status: Option<DaemonSetStatus>,
    /// The counters of `status`.
    pub counts: Option<StatusCounts>,
    /// The status differs from the stored one (write it).
    pub status_changed: bool,
    /// Plan again after this delay even without events.
    pub requeue_after: Option<Duration>,
    /// Per-node decisions (when `config.explain`).
    pub nodes: Vec<NodeDecision>,
    /// Claimed pods ignored because their target node cannot be determined: `(pod, why)`.
    pub ignored_pods: Vec<(String, String)>,
    /// Problems that stopped part of the plan.
    #[serde(skip)]
    pub errors: Vec<PlanError>,
}

impl Plan {
    /// No pod, revision or ownership action (events, status and requeue aside).
    pub fn is_noop(&self) -> bool {
        let h = &self.history;
        self.adopt_pods.is_empty()
            && self.release_pods.is_empty()
            && self.creates.is_empty()
            && self.deletes.is_empty()
            && h.adopt.is_empty()
            && h.release.is_empty()
            && h.add_hash_label.is_empty()
            && h.create.is_none()
            && h.renumber.is_none()
            && h.relabel_pods.is_empty()
            && h.delete.is_empty()
            && h.collision_count.is_none()
    }

    /// Human lines for one node: eligibility, creates, deletes, deferrals.
    pub fn explain_node(&self, node: &str) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(d) = self.nodes.iter().find(|d| d.node == node) {
            match &d.excluded {
                Some(why) if d.should_continue_running => {
                    lines.push(format!("{why} (existing pods keep running)"));
                }
                Some(why) => lines.push(why.to_string()),
                None => lines.push("node eligible".to_owned()),
            }
            lines.extend(d.deferred.iter().map(ToString::to_string));
        }
        lines.extend(
            self.creates
                .iter()
                .filter(|c| c.node == node)
                .map(|c| format!("{} ({})", c.reason, c.pod_name)),
        );
        lines.extend(
            self.deletes
                .iter()
                .filter(|d| d.node == node)
                .map(|d| format!("{} ({})", d.reason, d.pod)),
        );
        lines
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.creates {
            writeln!(f, "create {} on {}: {}", c.pod_name, c.node, c.reason)?;
        }
        for d in &self.deletes {
            writeln!(f, "delete {} on {}: {}", d.pod, d.node, d.reason)?;
        }
        for e in &self.events {
            writeln!(f, "event {}: {}", e.reason.as_str(), e.message)?;
        }
        Ok(())
    }
}

fn min_requeue(cur: &mut Option<Duration>, d: Duration) {
    *cur = Some(cur.map_or(d, |c| c.min(d)));
}

struct Builder<'a> {
    input: &'a PlanInput,
    plan: Plan,
    state: State<'a>,
    /// Input pods that exist but are not in the working state (terminal and deleting), by node.
    hidden: Vec<(&'a str, usize)>,
    deferred: Vec<(usize, Deferred)>,
    hash: String,
}

impl<'a> Builder<'a> {
    fn node_name(&self, r: NodeRef<'a>) -> &'a str {
        match r {
            NodeRef::Slot(i) => self.state.slots[i].node.name.as_str(),
            NodeRef::Vanished(n) => n,
        }
    }

    fn delete(&mut self, node: NodeRef<'a>, pod: usize, reason: DeleteReason) {
        let wp = &self.state.pods[pod];
        let uid = wp
            .input
            .map(|i| self.input.pods[i].uid.clone())
            .unwrap_or_default();
        self.plan.deletes.push(PodDelete {
            pod: wp.name.to_string(),
            uid,
            node: self.node_name(node).to_owned(),
            reason,
        });
        match node {
            NodeRef::Slot(s) => self.state.remove(Some(s), None, pod),
            NodeRef::Vanished(n) => self.state.remove(None, Some(n), pod),
        }
    }

    fn name_taken(&self, slot: usize, name: &str) -> bool {
        let node = self.state.slots[slot].node.name.as_str();
        self.state.slots[slot]
            .pods
            .iter()
            .any(|&p| self.state.pods[p].name == name)
            || self
                .hidden
                .iter()
                .any(|&(n, i)| n == node && self.input.pods[i].name == name)
            || self.plan.deletes.iter().any(|d| d.pod == name)
    }

    fn create(&mut self, slot: usize, reason: CreateReason) {
        let set_name = &self.input.set.name;
        let node = self.state.slots[slot].node.name.as_str();
        let mut variant = 0;
        let mut name = pod_name_variant(set_name, node, &self.hash, variant);
        while self.name_taken(slot, &name) && variant < 16 {
            variant += 1;
            name = pod_name_variant(set_name, node, &self.hash, variant);
        }
        self.plan.creates.push(PodCreate {
            node: node.to_owned(),
            pod_name: name.clone(),
            hash: self.hash.clone(),
            reason,
        });
        self.state.add_created(slot, name, self.input.now);
    }

    fn defer(&mut self, slot: usize, d: Deferred) {
        if self.input.config.explain {
            self.deferred.push((slot, d));
        }
    }
}

/// Plans one sync of one set. Pure and deterministic: shuffled inputs give the same plan.
pub fn plan(input: &PlanInput) -> Plan {
    let set = &input.set;
    let spec = &set.spec;
    let template = &spec.template;
    let mut out = Plan::default();

    let selector = match Selector::compile(&spec.selector) {
        Ok(s) => s,
        Err(e) => {
            out.errors.push(e.into());
            return out;
        }
    };
    if selector.is_empty() {
        out.events.push(PlanEvent {
            reason: EventReason::SelectingAll,
            message: "This daemon set is selecting all pods. A non-empty selector is required."
                .to_owned(),
        });
        return out;
    }
    if set.deleting {
        return out;
    }

    // Claim pods (§4.3 step 1).
    let mut claimed: Vec<usize> = Vec::with_capacity(input.pods.len());
    // Distinct hash labels of claimed pods (live revisions for history cleanup).
    let mut live_hashes: Vec<&str> = Vec::new();
    for (i, pod) in input.pods.iter().enumerate() {
        match claim(pod.owner(), selector.matches(&pod.labels), pod.deleting()) {
            Claim::Keep => claimed.push(i),
            Claim::Adopt => {
                out.adopt_pods.push(pod.name.clone());
                claimed.push(i);
            }
            Claim::Release => {
                out.release_pods.push(pod.name.clone());
                continue;
            }
            Claim::Ignore => continue,
        }
        if let Some(h) = pod.labels.get(CONTROLLER_REVISION_HASH)
            && !live_hashes.contains(&h.as_str())
        {
            live_hashes.push(h.as_str());
        }
    }
    out.adopt_pods.sort();
    out.release_pods.sort();

    // Claim revisions (§5.1) and build history (§5.3).
    let mut claimed_revs: Vec<&RevisionView> = Vec::new();
    let (mut rev_adopt, mut rev_release) = (Vec::new(), Vec::new());
    for rev in &input.revisions {
        match claim(rev.owner(), selector.matches(&rev.labels), rev.deleting) {
            Claim::Keep => claimed_revs.push(rev),
            Claim::Adopt => {
                rev_adopt.push(rev.name.clone());
                claimed_revs.push(rev);
            }
            Claim::Release => rev_release.push(rev.name.clone()),
            Claim::Ignore => {}
        }
    }
    claimed_revs.sort_by(|a, b| a.name.cmp(&b.name));
    let digest = TemplateDigest::new(template, set.collision_count());
    let history = construct_history(
        &set.name,
        &set.annotations,
        template,
        set.collision_count(),
        &digest,
        &claimed_revs,
        &input.revisions,
    );
    out.history = history.plan;
    rev_adopt.sort();
    rev_release.sort();
    out.history.adopt = rev_adopt;
    out.history.release = rev_release;
    if let Some(c) = out.history.collision_count {
        let mut status = set.status.clone().unwrap_or_default();
        status.collision_count = Some(c);
        out.status = Some(status);
        out.status_changed = true;
        return out;
    }
    plan_pods(
        input,
        out,
        &claimed,
        live_hashes,
        history.old,
        &history.duplicate_hashes,
    )
}

fn plan_pods(
    input: &PlanInput,
    mut out: Plan,
    claimed: &[usize],
    live_hashes: Vec<&str>,
    old_revisions: Vec<&RevisionView>,
    duplicate_hashes: &BTreeSet<String>,
) -> Plan {
    let set = &input.set;
    let spec = &set.spec;
    let template = &spec.template;
    let hash = out.history.hash.clone();
    let generation_string = set.template_generation.map(|g| g.to_string());
    let generation = generation_string.as_deref();
    let min_ready = spec.effective_min_ready_seconds();
    let now = input.now;

    // Pods carrying the hash of a deleted duplicate revision are relabelled (§5.3 step 5).
    let mut relabel: Vec<(String, String)> = Vec::new();
    if !duplicate_hashes.is_empty() {
        for &i in claimed {
            let pod = &input.pods[i];
            if pod
                .labels
                .get(CONTROLLER_REVISION_HASH)
                .is_some_and(|h| duplicate_hashes.contains(h))
            {
                relabel.push((pod.name.clone(), hash.clone()));
            }
        }
        relabel.sort();
    }

    // A pod is available when Ready since strictly before `now - minReadySeconds`.
    let available_before = (min_ready > 0).then(|| {
        now.checked_sub(SignedDuration::from_secs(i64::from(min_ready)))
            .unwrap_or(Timestamp::MIN)
    });

    // Working state: nodes sorted by name with the predicate, claimed pods by target node.
    let matcher = NodeMatcher::new(template);
    let mut nodes: Vec<&NodeView> = input.nodes.iter().collect();
    if !nodes.is_sorted_by(|a, b| a.name <= b.name) {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let slot_of: FnvHashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let slots: Vec<Slot<'_>> = nodes
        .iter()
        .map(|n| Slot {
            node: n,
            elig: matcher.evaluate(n),
            pods: PodList::Empty,
        })
        .collect();
    let mut state = State {
        pods: Vec::with_capacity(claimed.len()),
        slots,
        vanished: BTreeMap::new(),
    };
    let mut hidden = Vec::new();
    for &i in claimed {
        let pod = &input.pods[i];
        let Some(target) = pod.target_node.as_deref() else {
            out.ignored_pods.push((
                pod.name.clone(),
                "target node cannot be determined".to_owned(),
            ));
            continue;
        };
        if pod.phase.is_terminal() && pod.deleting() {
            hidden.push((target, i));
            continue;
        }
        let relabelled = !relabel.is_empty()
            && relabel
                .binary_search_by(|(n, _)| n.as_str().cmp(pod.name.as_str()))
                .is_ok();
        let idx = state.pods.len();
        let pod_hash: Option<Cow<'_, str>> = if relabelled {
            Some(Cow::Owned(hash.clone()))
        } else {
            pod.labels
                .get(CONTROLLER_REVISION_HASH)
                .map(|h| Cow::Borrowed(h.as_str()))
        };
        let current = pod_hash.as_deref() == Some(hash.as_str());
        let generation_label = pod.labels.get(POD_TEMPLATE_GENERATION).map(String::as_str);
        let updated = (current && !hash.is_empty())
            || generation.is_some_and(|g| generation_label == Some(g));
        let available = pod.ready
            && match available_before {
                None => true,
                Some(limit) => pod.ready_since.is_some_and(|t| t < limit),
            };
        state.pods.push(WPod {
            name: Cow::Borrowed(pod.name.as_str()),
            current,
            updated,
            available,
            scheduled: pod.node_name.is_some(),
            created: pod.created,
            phase: pod.phase,
            ready: pod.ready,
            deleting: pod.deleting(),
            input: Some(i),
        });
        match slot_of.get(target) {
            Some(&s) => state.slots[s].pods.push(idx),
            None => state.vanished.entry(target).or_default().push(idx),
        }
    }
    out.ignored_pods.sort();
    out.history.relabel_pods = relabel;
    state.sort_pods();
    let pods_before: Vec<usize> = state.slots.iter().map(|s| s.pods.len()).collect();

    let mut b = Builder {
        input,
        plan: out,
        state,
        hidden,
        deferred: Vec::new(),
        hash: String::new(),
    };
    b.hash = hash;
    let strategy = spec.effective_update_strategy();

    if input.expectations_satisfied {
        // manage (§4.3).
        let key_generation = set
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        let ctx = ManageCtx {
            surge: allows_surge(&strategy),
            now,
            backoff: &input.backoff,
            backoff_config: &input.config.backoff,
            namespace: &set.namespace,
        };
        let mo = manage(&b.state, &ctx);
        b.plan.events.extend(mo.events);
        b.plan
            .backoff_updates
            .extend(mo.backoff.into_iter().map(|(node, entry)| BackoffUpdate {
                node,
                key_generation,
                entry,
            }));
        if let Some(r) = mo.requeue {
            min_requeue(&mut b.plan.requeue_after, r);
        }
        for (slot, d) in mo.deferred {
            b.defer(slot, d);
        }
        let burst = input.config.burst_replicas;
        for (n, (slot, vanished, pod, reason)) in mo.deletes.into_iter().enumerate() {
            let node = match (slot, vanished.as_deref()) {
                (Some(s), _) => NodeRef::Slot(s),
                (None, Some(v)) => match b.state.vanished.get_key_value(v) {
                    Some((k, _)) => NodeRef::Vanished(k),
                    None => continue,
                },
                (None, None) => continue,
            };
            if n >= burst {
                if let NodeRef::Slot(s) = node {
                    b.defer(s, Deferred::BurstLimit);
                }
                continue;
            }
            b.delete(node, pod, reason);
        }
        for (n, (slot, reason)) in mo.creates.into_iter().enumerate() {
            if n >= burst {
                b.defer(slot, Deferred::BurstLimit);
                continue;
            }
            b.create(slot, reason);
        }

        // RollingUpdate (§6) on the state with manage's writes observed.
        if strategy.strategy_type() == Some(UpdateStrategyType::RollingUpdate) {
            let desired = b.state.slots.iter().filter(|s| s.elig.should_run).count();
            match budget(&strategy, i32::try_from(desired).unwrap_or(i32::MAX)) {
                Err(e) => b.plan.errors.push(e.into()),
                Ok(budget) => {
                    let rctx = RolloutCtx { budget };
                    let ro = rolling_update(&b.state, &rctx);
                    for (node, d) in ro.deferred {
                        if let NodeRef::Slot(s) = node {
                            b.defer(s, d);
                        }
                    }
                    for (n, (node, pod, reason)) in ro.deletes.into_iter().enumerate() {
                        if n >= burst {
                            if let NodeRef::Slot(s) = node {
                                b.defer(s, Deferred::BurstLimit);
                            }
                            continue;
                        }
                        b.delete(node, pod, reason);
                    }
                    for (n, (slot, reason)) in ro.creates.into_iter().enumerate() {
                        if n >= burst {
                            b.defer(slot, Deferred::BurstLimit);
                            continue;
                        }
                        b.create(slot, reason);
                    }
                }
            }
        }

        // History cleanup (§5.5): hashes of every pod that still exists or was just created.
        let mut live: BTreeSet<&str> = live_hashes.into_iter().collect();
        live.insert(b.hash.as_str());
        let cleanup = cleanup_history(
            &old_revisions,
            spec.effective_revision_history_limit(),
            &live,
        );
        b.plan.history.delete.extend(cleanup);
    }

    // Status (§7) of the final working state.
    let counts = count(&b.state);
    let stored = set.status.as_ref();
    let observed = if input.expectations_satisfied {
        set.generation
    } else {
        None
    };
    let status = counts.apply_to(stored, observed);
    let generation_lags = match (set.generation, stored.and_then(|s| s.observed_generation)) {
        (Some(g), Some(o)) => o < g,
        (Some(_), None) => true,
        (None, _) => false,
    };
    b.plan.status_changed = stored.is_none_or(|s| !counts.equals(s))
        || (input.expectations_satisfied && generation_lags);
    if min_ready > 0 && counts.ready != counts.available {
        min_requeue(
            &mut b.plan.requeue_after,
            Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)),
        );
    }
    b.plan.counts = Some(counts);
    b.plan.status = Some(status);

    if input.config.explain {
        let mut deferred: Vec<Vec<Deferred>> = vec![Vec::new(); b.state.slots.len()];
        for (slot, d) in std::mem::take(&mut b.deferred) {
            deferred[slot].push(d);
        }
        b.plan.nodes = b
            .state
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| NodeDecision {
                node: s.node.name.clone(),
                should_run: s.elig.should_run,
                should_continue_running: s.elig.should_continue_running,
                excluded: s.elig.excluded.clone(),
                pods: pods_before[i],
                deferred: std::mem::take(&mut deferred[i]),
            })
            .collect();
    }
    b.plan
}
