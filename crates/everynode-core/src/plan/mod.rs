//! The top level: one [`plan`] = one upstream `syncDaemonSet` as its unit tests observe it.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.
//!
//! Order: selector / deletion guards → claim revisions → history (§5) → claim pods and build
//! the working copy (one pass over the nodes, one over the pods) → `manage` (§4.3) → manage's
//! writes applied to a working copy as observed (created pods: current
//! revision, unscheduled, pinned to the node, not ready; deleted pods: gone — what upstream's
//! fake pod control does) → the `RollingUpdate` step (§6) on that copy → history cleanup →
//! status (§7) of the final copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use everynode_api::labels::{CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION};
use everynode_api::{
    DaemonSetStatus, FailurePolicy, NewNodePolicy, RevisionPods, UpdateStrategyType,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::backoff::BackoffEntry;
use crate::budget::{BudgetError, allows_surge, budget};
use crate::controls::{Controls, ControlsError};
use crate::eligibility::NodeMatcher;
use crate::explain::{self, Deferrals, NodeName};
use crate::inplace::ImageChanges;
use crate::manage::{EventReason, ManageCtx, PlanEvent, manage};
use crate::reason::{CreateReason, Deferred, DeleteReason, NodeExcluded};
use crate::render::generated_pod_name;
use crate::revision::{
    Claim, HistoryPlan, TemplateDigest, claim, cleanup_history, construct_history, rev_hash,
    revision_name, template_from_data,
};
use crate::rollout::{NodeRef, RolloutCtx, rolling_update, updated_nodes};
use crate::safety::MAX_LISTED_NODES;
use crate::selector::{Selector, SelectorError};
use crate::snapshot::{NodeView, PlanInput, PodView, RevisionView, SetView};
use crate::state::{InputPod, PodList, Slot, SlotElig, State};
use crate::status::{RolloutFacts, RolloutStatus, StatusCounts, count, rollout_conditions};
use crate::strs::{self, NameIndex};

/// A pod to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodCreate {
    /// Target node.
    pub node: String,
    /// Name to create the pod with (see [`crate::generated_pod_name`]).
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

/// A pod to update in place (`rollingUpdateType: InPlaceIfPossible`): patch its container
/// images, labels and annotations instead of recreating it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodUpdate {
    /// Pod name.
    pub pod: String,
    /// Pod UID (a patch precondition).
    pub uid: String,
    /// Node the pod runs on.
    pub node: String,
    /// The revision hash the pod gets.
    pub hash: String,
    /// `(container, image)` to set.
    pub images: Vec<(String, String)>,
    /// Template labels to set (with the hash label).
    pub labels: BTreeMap<String, String>,
    /// Template annotations to set.
    pub annotations: BTreeMap<String, String>,
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
    /// Node name (shares one buffer with the other decisions of the plan).
    pub node: NodeName,
    /// A daemon pod should run here.
    pub should_run: bool,
    /// An existing daemon pod may keep running.
    pub should_continue_running: bool,
    /// Why the node is excluded, if it is.
    pub excluded: Option<Box<NodeExcluded>>,
    /// Daemon pods mapped to the node before the plan.
    pub pods: usize,
    /// Things deferred on this node, in order.
    pub deferred: Deferrals,
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
    /// A rollout control is invalid; the rolling update step is skipped.
    #[error(transparent)]
    Controls(#[from] ControlsError),
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
    /// Pod templates of older revisions that `creates` use, by hash (`newNodePolicy: Stable`);
    /// other creates use the set's template.
    #[serde(skip)]
    pub templates: BTreeMap<String, PodTemplateSpec>,
    /// Pods to delete.
    pub deletes: Vec<PodDelete>,
    /// Pods to update in place (apply after the deletes).
    pub updates: Vec<PodUpdate>,
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
    /// `failurePolicy: Rollback` after a failure: put this template back into the spec
    /// (before anything else of the plan; the status records it).
    #[serde(skip)]
    pub rollback: Option<PlannedRollback>,
}

/// An automatic rollback to the stable revision.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRollback {
    /// The failed revision.
    pub from: String,
    /// The stable revision whose template goes back.
    pub to: String,
    /// Its template.
    pub template: PodTemplateSpec,
    /// Why (the failure's reason and message).
    pub reason: String,
}

impl Plan {
    /// No pod, revision or ownership action (events, status and requeue aside).
    pub fn is_noop(&self) -> bool {
        let h = &self.history;
        self.adopt_pods.is_empty()
            && self.release_pods.is_empty()
            && self.creates.is_empty()
            && self.deletes.is_empty()
            && self.updates.is_empty()
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
        lines.extend(
            self.updates
                .iter()
                .filter(|u| u.node == node)
                .map(|u| format!("{IN_PLACE_REASON} ({})", u.pod)),
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
        for u in &self.updates {
            writeln!(f, "update {} on {}: {IN_PLACE_REASON}", u.pod, u.node)?;
        }
        for e in &self.events {
            writeln!(f, "event {}: {}", e.reason.as_str(), e.message)?;
        }
        Ok(())
    }
}

/// How many names a create tries before it settles for a taken one (the apiserver then refuses
/// the create, and the next plan draws another seed).
const MAX_NAME_ATTEMPTS: u32 = 16;

/// Why a pod is updated in place.
const IN_PLACE_REASON: &str =
    "pod updated in place: only container images changed (rollingUpdateType: InPlaceIfPossible)";

fn min_requeue(cur: &mut Option<Duration>, d: Duration) {
    *cur = Some(cur.map_or(d, |c| c.min(d)));
}

struct Builder<'a> {
    input: &'a PlanInput,
    plan: Plan,
    state: State<'a>,
    /// Names of the input pods and of the pods this plan creates, gathered at the first create.
    taken_names: Option<BTreeSet<String>>,
    /// With `explain`, one decision per slot (deferrals are added as they happen).
    decisions: Vec<NodeDecision>,
    hash: String,
}

impl<'a> Builder<'a> {
    fn node_name(&self, r: NodeRef<'a>) -> &'a str {
        r.name(&self.state)
    }

    /// The UID of working pod `pod` (empty for pods this plan creates).
    fn uid(&self, pod: usize) -> String {
        self.state.pods[pod]
            .input()
            .map(|i| self.input.pods[i].uid.clone())
            .unwrap_or_default()
    }

    fn delete(&mut self, node: NodeRef<'a>, pod: usize, reason: DeleteReason) {
        let uid = self.uid(pod);
        self.plan.deletes.push(PodDelete {
            pod: self.state.name(pod).to_owned(),
            uid,
            node: self.node_name(node).to_owned(),
            reason,
        });
        match node {
            NodeRef::Slot(s) => self.state.remove(Some(s), None, pod),
            NodeRef::Vanished(n) => self.state.remove(None, Some(n), pod),
        }
    }

    /// Creates a pod of the current revision, or of `older` (a hash) for a held node.
    fn create(&mut self, slot: usize, reason: CreateReason, older: Option<&str>) {
        let input = self.input;
        let node = self.state.slots[slot].node.name.as_str();
        let hash = older.unwrap_or(&self.hash).to_owned();
        let taken = self
            .taken_names
            .get_or_insert_with(|| input.pods.iter().map(|p| p.name.clone()).collect());
        let mut attempt = 0;
        let mut name = generated_pod_name(&input.set.name, input.name_seed, node, &hash, attempt);
        while taken.contains(&name) && attempt < MAX_NAME_ATTEMPTS {
            attempt += 1;
            name = generated_pod_name(&input.set.name, input.name_seed, node, &hash, attempt);
        }
        taken.insert(name.clone());
        self.plan.creates.push(PodCreate {
            node: node.to_owned(),
            pod_name: name.clone(),
            hash,
            reason,
        });
        self.state
            .add_created(slot, name, self.input.now, older.is_none());
    }

    /// Updates `pod` on `slot` in place to the current revision (its containers restart: it
    /// counts as unavailable until Ready on the new images).
    fn update_in_place(&mut self, slot: usize, pod: usize, images: Vec<(String, String)>) {
        let template = &self.input.set.spec.template;
        let meta = template.metadata.as_ref();
        let mut labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH.to_owned(), self.hash.clone());
        let uid = self.uid(pod);
        self.plan.updates.push(PodUpdate {
            pod: self.state.name(pod).to_owned(),
            uid,
            node: self.state.slots[slot].node.name.clone(),
            hash: self.hash.clone(),
            images,
            labels,
            annotations: meta.and_then(|m| m.annotations.clone()).unwrap_or_default(),
        });
        let p = &mut self.state.pods[pod];
        p.current = true;
        p.updated = true;
        p.ready = false;
        p.available = false;
    }

    fn defer(&mut self, slot: usize, d: Deferred) {
        if let Some(decision) = self.decisions.get_mut(slot) {
            decision.deferred.push(d);
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

    // Claim revisions (§5.1) and build history (§5.3). Neither depends on the pods, so the
    // pods are claimed afterwards, in the same pass that maps them to nodes (`plan_pods`).
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
        // Only the pod claims (§4.3 step 1) and the collision count are written this round.
        for pod in &input.pods {
            record_claim(pod, &selector, &mut out);
        }
        out.adopt_pods.sort();
        out.release_pods.sort();
        let mut status = set.status.clone().unwrap_or_default();
        status.collision_count = Some(c);
        out.status = Some(status);
        out.status_changed = true;
        return out;
    }
    plan_pods(
        input,
        out,
        &selector,
        history.old,
        &history.duplicate_hashes,
    )
}

/// Whether the set keeps or adopts `pod` (§4.3 step 1).
fn claims(pod: &PodView, selector: &Selector) -> bool {
    matches!(
        claim(pod.owner(), selector.matches(&pod.labels), pod.deleting()),
        Claim::Keep | Claim::Adopt
    )
}

/// Claims `pod` (§4.3 step 1), recording an adoption or release in `out`; returns whether the
/// set keeps (or adopts) it.
fn record_claim(pod: &PodView, selector: &Selector, out: &mut Plan) -> bool {
    match claim(pod.owner(), selector.matches(&pod.labels), pod.deleting()) {
        Claim::Keep => true,
        Claim::Adopt => {
            out.adopt_pods.push(pod.name.clone());
            true
        }
        Claim::Release => {
            out.release_pods.push(pod.name.clone());
            false
        }
        Claim::Ignore => false,
    }
}

/// The distinct hash labels of the claimed pods other than the current hash (with it, the live
/// revisions for history cleanup).
#[derive(Default)]
struct PodHashes<'a> {
    /// Labels other than the current hash, in first-seen order.
    others: Vec<&'a str>,
}

impl<'a> PodHashes<'a> {
    /// Records `label` and returns whether it is the current hash.
    fn is_current(&mut self, label: &'a str, current: &str) -> bool {
        if strs::eq(label, current) {
            return true;
        }
        if !self.others.iter().any(|l| strs::eq(l, label)) {
            self.others.push(label);
        }
        false
    }
}

/// The node names in slot order, in one buffer: mapping pods to nodes compares each pod's
/// target with this buffer rather than with each node's own (scattered) name string, and
/// `explain` shares it.
struct NodeNames {
    buffer: String,
    /// Name `i` is `buffer[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<u32>,
}

impl NodeNames {
    fn with_capacity(nodes: &[NodeView]) -> Self {
        let mut bounds = Vec::with_capacity(nodes.len() + 1);
        bounds.push(0);
        Self {
            buffer: String::with_capacity(nodes.iter().map(|n| n.name.len()).sum()),
            bounds,
        }
    }

    fn push(&mut self, name: &str) {
        self.buffer.push_str(name);
        self.bounds.push(explain::offset(self.buffer.len()));
    }

    /// `(start, end)` of name `i` in the buffer.
    fn range(&self, i: usize) -> (u32, u32) {
        match self.bounds.get(i..i + 2) {
            Some(&[start, end]) => (start, end),
            _ => (0, 0),
        }
    }

    /// Name `i`.
    fn get(&self, i: usize) -> &str {
        let (start, end) = self.range(i);
        self.buffer
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

/// The node list: nodes sorted by name (stable; the input usually already is sorted) with
/// their predicate, their names, and the slot of each name (the last one for duplicates).
fn build_slots<'a>(
    nodes: &'a [NodeView],
    matcher: &NodeMatcher,
) -> (Vec<Slot<'a>>, NodeNames, NameIndex) {
    let mut slots = Vec::with_capacity(nodes.len());
    let mut names = NodeNames::with_capacity(nodes);
    // Built in the same pass while the nodes are sorted (each name is read once), rebuilt
    // after sorting otherwise.
    let mut slot_of = NameIndex::with_capacity(nodes.len());
    let mut sorted = true;
    let mut previous: Option<&str> = None;
    for (i, node) in nodes.iter().enumerate() {
        if i % WARM_BLOCK == 0 {
            std::hint::black_box(warm_nodes(nodes.get(i..).unwrap_or_default()));
        }
        let name = node.name.as_str();
        sorted = sorted && previous.is_none_or(|p| strs::cmp(p, name).is_le());
        previous = Some(name);
        if sorted {
            names.push(name);
            slot_of.insert(name, i, |j| names.get(j));
        }
        slots.push(Slot {
            node,
            elig: SlotElig::new(matcher.check(node), matcher),
            pods: PodList::Empty,
        });
    }
    if !sorted {
        slots.sort_by(|a, b| a.node.name.cmp(&b.node.name));
        names = NodeNames::with_capacity(nodes);
        slot_of = NameIndex::with_capacity(slots.len());
        for (i, slot) in slots.iter().enumerate() {
            names.push(&slot.node.name);
            slot_of.insert(&slot.node.name, i, |j| names.get(j));
        }
    }
    (slots, names, slot_of)
}

/// Nodes and pods read ahead at a time by [`warm_nodes`] and [`warm_pods`].
const WARM_BLOCK: usize = 32;

/// Reads the scattered heap objects that evaluating the next [`WARM_BLOCK`] `nodes` reads
/// (each node's name, label map and labels) in a short loop without dependencies between
/// nodes, so the CPU overlaps the cache and TLB misses; the main loop, long and with each
/// lookup depending on the one before, then finds them in cache instead of waiting for one
/// miss after another. This matters most when the input's strings are scattered over the heap
/// (as in inputs built from a controller's caches). Returns a value derived from what it read.
fn warm_nodes(nodes: &[NodeView]) -> usize {
    nodes
        .iter()
        .take(WARM_BLOCK)
        .map(|node| strs::touch(&node.name) + strs::touch_labels(&node.labels))
        .sum()
}

/// Like [`warm_nodes`] for the next block of `pods`: their label maps and target node names.
fn warm_pods(pods: &[PodView]) -> usize {
    pods.iter()
        .take(WARM_BLOCK)
        .map(|pod| {
            strs::touch_labels(&pod.labels) + pod.target_node.as_deref().map_or(0, strs::touch)
        })
        .sum()
}

/// The per-node decisions for `explain`, before anything is deferred, into `out`.
fn node_decisions(state: &State<'_>, names: NodeNames, out: &mut Vec<NodeDecision>) {
    let buffer: Arc<str> = Arc::from(names.buffer.as_str());
    out.extend(state.slots.iter().enumerate().map(|(i, slot)| {
        let (start, end) = names.range(i);
        NodeDecision {
            node: NodeName::in_buffer(&buffer, start, end),
            should_run: slot.elig.should_run,
            should_continue_running: slot.elig.should_continue_running,
            excluded: slot.elig.excluded.clone(),
            pods: slot.pods.len(),
            deferred: Deferrals::new(),
        }
    }));
}

fn plan_pods(
    input: &PlanInput,
    mut out: Plan,
    selector: &Selector,
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
    let explain = input.config.explain;

    // Pods carrying the hash of a deleted duplicate revision are relabelled (§5.3 step 5).
    let mut relabel: Vec<(String, String)> = Vec::new();
    if !duplicate_hashes.is_empty() {
        for pod in &input.pods {
            if claims(pod, selector)
                && pod
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
    // The plan's biggest output, allocated before the working state: freeing that state at the
    // end then does not leave a large free area on top of the heap, which the allocator may
    // hand back to the system only to ask for it again in the next plan.
    let mut decisions = Vec::with_capacity(if explain { input.nodes.len() } else { 0 });
    let (slots, names, slot_of) = build_slots(&input.nodes, &matcher);
    let mut state = State::new(&input.pods, slots);
    // Claim the pods (§4.3 step 1) and map the claimed ones to their nodes, in one pass.
    let mut hashes = PodHashes::default();
    let mut crowded = Vec::new();
    for (i, pod) in input.pods.iter().enumerate() {
        if i % WARM_BLOCK == 0 {
            std::hint::black_box(warm_pods(input.pods.get(i..).unwrap_or_default()));
        }
        if !record_claim(pod, selector, &mut out) {
            continue;
        }
        let label_is_current = strs::label(&pod.labels, CONTROLLER_REVISION_HASH)
            .is_some_and(|h| hashes.is_current(h, &hash));
        let Some(target) = pod.target_node.as_deref() else {
            out.ignored_pods.push((
                pod.name.clone(),
                "target node cannot be determined".to_owned(),
            ));
            continue;
        };
        if pod.phase.is_terminal() && pod.deleting() {
            continue;
        }
        let relabelled = !relabel.is_empty()
            && relabel
                .binary_search_by(|(n, _)| n.as_str().cmp(pod.name.as_str()))
                .is_ok();
        // A relabelled pod carries the current hash.
        let current = relabelled || label_is_current;
        let updated = (current && !hash.is_empty())
            || generation.is_some_and(|g| {
                strs::label(&pod.labels, POD_TEMPLATE_GENERATION).is_some_and(|v| strs::eq(v, g))
            });
        let available = pod.ready
            && match available_before {
                None => true,
                Some(limit) => pod.ready_since.is_some_and(|t| t < limit),
            };
        let idx = state.add_input(InputPod {
            index: i,
            scheduled: pod.node_name.is_some(),
            created: pod.created,
            phase: pod.phase,
            ready: pod.ready,
            deleting: pod.deleting(),
            current,
            updated,
            available,
        });
        match slot_of.get(target, |i| names.get(i)) {
            Some(s) => {
                let list = &mut state.slots[s].pods;
                if list.len() == 1 {
                    crowded.push(s);
                }
                list.push(idx);
            }
            None => state.vanished.entry(target).or_default().push(idx),
        }
    }
    drop(slot_of);
    out.adopt_pods.sort();
    out.release_pods.sort();
    out.ignored_pods.sort();
    out.history.relabel_pods = relabel;
    state.sort_pods(&crowded);
    if explain {
        node_decisions(&state, names, &mut decisions);
    }

    let mut b = Builder {
        input,
        plan: out,
        state,
        taken_names: None,
        decisions,
        hash: String::new(),
    };
    b.hash = hash;
    let strategy = spec.effective_update_strategy();

    let desired = i32::try_from(b.state.slots.iter().filter(|s| s.elig.should_run).count())
        .unwrap_or(i32::MAX);
    let mut controls = match Controls::from_spec(spec, desired) {
        Ok(c) => Some(c),
        Err(e) => {
            b.plan.errors.push(e.into());
            None
        }
    };
    let frozen = spec.is_frozen();
    let safety = assess_safety(
        &mut b,
        controls.as_mut(),
        &old_revisions,
        i64::from(min_ready),
    );
    // The revision a held node gets under `newNodePolicy: Stable` (when it differs from the
    // current one and its template is known).
    let stable = controls
        .as_ref()
        .filter(|c| c.new_node_policy == NewNodePolicy::Stable && c.can_hold())
        .and_then(|_| stable_revision(set, &old_revisions, &b.hash));

    let mut rollout_held = false;
    let mut rollout_wave = None;
    // Deferrals that block a node, for `status.blockedNodes` (everynode's rollout status).
    let report_blocks = input.config.rollout_status;
    let mut blocked_by: Vec<(usize, Deferred)> = Vec::new();
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
            if report_blocks && d.blocks() {
                blocked_by.push((slot, d.clone()));
            }
            b.defer(slot, d);
        }
        // The `n`th create (or delete) of a step waits when the set is frozen or beyond the
        // per-plan burst limit.
        let burst = input.config.burst_replicas;
        let held_back = |n: usize| {
            if frozen {
                Some(Deferred::SetFrozen)
            } else {
                (n >= burst).then_some(Deferred::BurstLimit)
            }
        };
        // Pods of a template the apiserver refuses are not created, and old pods are not
        // replaced by them.
        let rejected = input.rejected_hash.as_deref() == Some(b.hash.as_str());
        let held_or_rejected =
            |n: usize| held_back(n).or_else(|| rejected.then_some(Deferred::TemplateRejected));
        for (n, (slot, vanished, pod, reason)) in mo.deletes.into_iter().enumerate() {
            let node = match (slot, vanished.as_deref()) {
                (Some(s), _) => NodeRef::Slot(s),
                (None, Some(v)) => match b.state.vanished.get_key_value(v) {
                    Some((k, _)) => NodeRef::Vanished(k),
                    None => continue,
                },
                (None, None) => continue,
            };
            if let Some(why) = held_back(n) {
                if let NodeRef::Slot(s) = node {
                    b.defer(s, why);
                }
                continue;
            }
            b.delete(node, pod, reason);
        }
        // Under a partition, nodes beyond `desired - partition` updated ones are held.
        let mut partition_room = controls.as_ref().map_or(i32::MAX, |c| {
            if c.partition > 0 {
                desired - c.partition - updated_nodes(&b.state)
            } else {
                i32::MAX
            }
        });
        for (n, (slot, reason)) in mo.creates.into_iter().enumerate() {
            if let Some(why) = held_back(n) {
                b.defer(slot, why);
                continue;
            }
            let held = controls
                .as_ref()
                .is_some_and(|c| c.held(b.state.slots[slot].node).is_some() || partition_room <= 0);
            match &stable {
                _ if rejected && !(held && stable.is_some()) => {
                    b.defer(slot, Deferred::TemplateRejected);
                }
                Some((hash, template)) if held => {
                    b.plan
                        .templates
                        .entry(hash.clone())
                        .or_insert_with(|| template.clone());
                    b.create(slot, CreateReason::MissingPodStable, Some(hash));
                }
                _ => {
                    partition_room -= 1;
                    b.create(slot, reason, None);
                }
            }
        }

        // RollingUpdate (§6) on the state with manage's writes observed.
        if strategy.strategy_type() == Some(UpdateStrategyType::RollingUpdate)
            && let Some(controls) = controls.as_ref()
        {
            match budget(&strategy, desired) {
                Err(e) => b.plan.errors.push(e.into()),
                Ok(budget) => {
                    let rctx = RolloutCtx {
                        budget,
                        explain,
                        report_blocks,
                        controls,
                        now,
                        min_ready: i64::from(min_ready),
                    };
                    let decisions = &mut b.decisions;
                    let blocked = &mut blocked_by;
                    let ro = rolling_update(&b.state, &rctx, &mut |slot, d| {
                        if report_blocks && d.blocks() {
                            blocked.push((slot, d.clone()));
                        }
                        if let Some(decision) = decisions.get_mut(slot) {
                            decision.deferred.push(d);
                        }
                    });
                    rollout_held = ro.held_only;
                    rollout_wave = ro.wave;
                    if let Some(r) = ro.requeue {
                        min_requeue(&mut b.plan.requeue_after, r);
                    }
                    let in_place = strategy
                        .rolling_update
                        .as_ref()
                        .is_some_and(|r| r.in_place_if_possible());
                    let mut in_place_templates = InPlaceTemplates::default();
                    for (n, (node, pod, reason)) in ro.deletes.into_iter().enumerate() {
                        if let Some(why) = held_or_rejected(n) {
                            if let NodeRef::Slot(s) = node {
                                b.defer(s, why);
                            }
                            continue;
                        }
                        if in_place
                            && reason == DeleteReason::RollingUpdate
                            && let NodeRef::Slot(slot) = node
                            && let Some(images) =
                                in_place_templates.changes(&b, pod, &old_revisions)
                        {
                            b.update_in_place(slot, pod, images);
                            continue;
                        }
                        b.delete(node, pod, reason);
                    }
                    for (n, (slot, reason)) in ro.creates.into_iter().enumerate() {
                        if let Some(why) = held_or_rejected(n) {
                            b.defer(slot, why);
                            continue;
                        }
                        b.create(slot, reason, None);
                    }
                }
            }
        }

        // History cleanup (§5.5): hashes of every pod that still exists or was just created,
        // and the stable revision (a joining node may need it).
        let mut live: BTreeSet<&str> = hashes.others.iter().copied().collect();
        live.insert(b.hash.as_str());
        if let Some(rev) = stored_stable(set, &old_revisions) {
            live.insert(rev_hash(rev));
        }
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
    let mut status = counts.apply_to(stored, observed);
    let generation_lags = match (set.generation, stored.and_then(|s| s.observed_generation)) {
        (Some(g), Some(o)) => o < g,
        (Some(_), None) => true,
        (None, _) => false,
    };
    b.plan.status_changed = stored.is_none_or(|s| !counts.equals(s))
        || (input.expectations_satisfied && generation_lags);
    if input.config.rollout_status {
        let mut rollout =
            rollout_status(&b, &old_revisions, stable.as_ref().map(|(h, _)| h.as_str()));
        rollout.wave = rollout_wave.map(|w| everynode_api::RolloutWave {
            domain: w.domain,
            index: i32::try_from(w.index).unwrap_or(i32::MAX),
            domains: i32::try_from(w.domains).unwrap_or(i32::MAX),
            baked_at: w
                .baked_at
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        });
        rollout.failure = safety.failure.clone();
        rollout.rollback = b
            .plan
            .rollback
            .as_ref()
            .map(|r| everynode_api::RolloutRollback {
                rolled_back_from: r.from.clone(),
                rollback_of: r.to.clone(),
                reason: r.reason.clone(),
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            })
            .or_else(|| stored.and_then(|s| s.rollback.clone()));
        rollout.skipped_nodes = skipped_nodes(&b, controls.as_ref());
        (rollout.blocked_nodes, rollout.blocked_totals) = blocked_nodes(&b, &blocked_by);
        b.plan.status_changed |= stored.is_none_or(|s| !rollout.equals(s));
        rollout.apply_to(&mut status);
        let facts = RolloutFacts {
            paused: spec.is_paused(),
            frozen,
            complete: rollout.complete(counts.desired),
            held: rollout_held,
            desired: counts.desired,
            updated: counts.updated,
            update_revision: &rollout.update_revision,
            wave: rollout.wave.as_ref(),
            failure: rollout.failure.as_ref(),
            rollback: rollout.rollback.as_ref(),
            skipped: rollout.skipped_nodes.len(),
            template_rejected: input.rejected_hash.as_deref() == Some(b.hash.as_str()),
            unavailable: counts.unavailable,
            max_unavailable: budget(&strategy, desired).map_or(0, |b| b.max_unavailable),
        };
        let previous = stored.and_then(|s| s.conditions.as_deref());
        if let Some(conditions) = rollout_conditions(previous, &facts, now, set.generation) {
            status.conditions = Some(conditions);
            b.plan.status_changed = true;
        }
    }
    if min_ready > 0 && counts.ready != counts.available {
        min_requeue(
            &mut b.plan.requeue_after,
            Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)),
        );
    }
    b.plan.counts = Some(counts);
    b.plan.status = Some(status);

    if explain {
        b.plan.nodes = std::mem::take(&mut b.decisions);
    }
    b.plan
}

/// What rollout safety decided for this plan.
#[derive(Default)]
struct SafetyOutcome {
    /// The failure of the update revision (stored, or found now).
    failure: Option<everynode_api::RolloutFailure>,
}

/// Rollout safety on the state before this plan's writes: keeps a stored failure of the update
/// revision, or looks for a new one (event), and lets the failure policy act — `Pause` and
/// `Rollback` stop the rollout (`controls.failed`), `Rollback` also plans the template of the
/// stable revision.
fn assess_safety(
    b: &mut Builder<'_>,
    controls: Option<&mut Controls>,
    old: &[&RevisionView],
    min_ready: i64,
) -> SafetyOutcome {
    let set = &b.input.set;
    let now = b.input.now;
    let update_revision = b.plan.history.current.clone();
    let mut out = SafetyOutcome {
        failure: set
            .status
            .as_ref()
            .and_then(|s| s.failure.clone())
            .filter(|f| f.revision == update_revision),
    };
    let Some(controls) = controls else {
        return out;
    };
    let safety = controls.safety.clone();
    if !safety.detects_failures() {
        return out;
    }
    if out.failure.is_none() {
        let found = crate::safety::assess(&b.state, &safety, now, min_ready);
        if let Some(r) = found.requeue {
            min_requeue(&mut b.plan.requeue_after, r);
        }
        if let Some(detected) = found.failure {
            let failed_nodes: Vec<String> = found
                .failed_nodes
                .iter()
                .take(MAX_LISTED_NODES)
                .map(|(slot, why)| format!("{}: {why}", b.state.slots[*slot].node.name))
                .collect();
            b.plan.events.push(PlanEvent {
                reason: EventReason::RolloutFailed,
                message: format!(
                    "rollout of {update_revision} failed: {}; failurePolicy {}",
                    detected.message,
                    safety.policy.as_str()
                ),
            });
            out.failure = Some(everynode_api::RolloutFailure {
                revision: update_revision.clone(),
                reason: detected.reason.to_owned(),
                message: detected.message,
                policy: safety.policy.as_str().to_owned(),
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                failed_nodes,
            });
        }
    }
    let Some(failure) = out.failure.as_ref() else {
        return out;
    };
    if safety.policy == FailurePolicy::Continue {
        return out;
    }
    controls.failed = true;
    if safety.policy == FailurePolicy::Rollback
        && let Some(stable) = stored_stable(set, old)
        && stable.name != update_revision
        && let Some(template) = template_from_data(&stable.data)
    {
        b.plan.rollback = Some(PlannedRollback {
            from: update_revision,
            to: stable.name.clone(),
            template,
            reason: format!("{}: {}", failure.reason, failure.message),
        });
    }
    out
}

/// Desired nodes that `unavailableNodePolicy: Skip` leaves out, sorted, at most
/// [`MAX_LISTED_NODES`].
fn skipped_nodes(b: &Builder<'_>, controls: Option<&Controls>) -> Vec<String> {
    if !controls.is_some_and(|c| c.safety.skip_unavailable_nodes) {
        return Vec::new();
    }
    b.state
        .slots
        .iter()
        .enumerate()
        .filter(|(i, s)| s.elig.should_run && crate::safety::skipped(&b.state, *i))
        .take(MAX_LISTED_NODES)
        .map(|(_, s)| s.node.name.clone())
        .collect()
}

/// Why a node is listed in `status.blockedNodes`; the message is only built for listed nodes.
enum Blocked<'a> {
    Excluded(&'a NodeExcluded),
    Unschedulable(&'a str),
    Trouble(&'a str),
    Deferred(&'a Deferred),
}

impl<'a> Blocked<'a> {
    fn reason(&self) -> &'a str {
        match self {
            Self::Excluded(e) => e.code(),
            Self::Unschedulable(_) => "Unschedulable",
            // `container agent: CrashLoopBackOff` → `CrashLoopBackOff`.
            Self::Trouble(t) => t.rsplit(": ").next().unwrap_or(t),
            Self::Deferred(d) => d.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Excluded(e) => e.to_string(),
            Self::Unschedulable(m) | Self::Trouble(m) => (*m).to_owned(),
            Self::Deferred(d) => d.to_string(),
        }
    }
}

/// Nodes that are excluded or blocked (at most [`MAX_LISTED_NODES`], by name) and the totals
/// per reason: excluded by the template, a pod the scheduler cannot place, a container that
/// cannot run, or a deferral that holds the node (`blocked_by`).
fn blocked_nodes(
    b: &Builder<'_>,
    blocked_by: &[(usize, Deferred)],
) -> (
    Vec<everynode_api::BlockedNode>,
    Vec<everynode_api::ReasonCount>,
) {
    let mut by_slot: Vec<Option<&Deferred>> = vec![None; b.state.slots.len()];
    for (slot, d) in blocked_by {
        if let Some(entry) = by_slot.get_mut(*slot) {
            entry.get_or_insert(d);
        }
    }
    let mut listed = Vec::new();
    let mut totals: BTreeMap<&str, i32> = BTreeMap::new();
    for (i, slot) in b.state.slots.iter().enumerate() {
        let pod = slot
            .pods
            .iter()
            .filter_map(|&p| b.state.pods[p].input())
            .map(|i| &b.input.pods[i])
            .find(|p| !p.deleting());
        let why = if !slot.elig.should_run {
            slot.elig
                .excluded
                .as_deref()
                // A pod that keeps running there (e.g. a NoSchedule taint added later) is not
                // blocked.
                .filter(|_| !(slot.elig.should_continue_running && pod.is_some()))
                .map(Blocked::Excluded)
        } else if let Some(message) = pod.and_then(|p| p.unschedulable.as_deref()) {
            Some(Blocked::Unschedulable(message))
        } else if let Some(trouble) = pod.and_then(|p| p.trouble.as_deref()) {
            Some(Blocked::Trouble(trouble))
        } else {
            by_slot[i].map(Blocked::Deferred)
        };
        let Some(why) = why else {
            continue;
        };
        if listed.len() < MAX_LISTED_NODES {
            listed.push(everynode_api::BlockedNode {
                node: slot.node.name.clone(),
                reason: why.reason().to_owned(),
                message: why.message(),
            });
        }
        *totals.entry(why.reason()).or_default() += 1;
    }
    let totals = totals
        .into_iter()
        .map(|(reason, count)| everynode_api::ReasonCount {
            reason: reason.to_owned(),
            count,
        })
        .collect();
    (listed, totals)
}

/// `status.stableRevision`, when it is one of the set's old revisions.
fn stored_stable<'r>(set: &SetView, old: &[&'r RevisionView]) -> Option<&'r RevisionView> {
    let name = set.status.as_ref()?.stable_revision.as_deref()?;
    old.iter().find(|r| r.name == name).copied()
}

/// The stable revision's hash and template, when it differs from `current_hash` and its
/// template can be read from the revision.
fn stable_revision(
    set: &SetView,
    old: &[&RevisionView],
    current_hash: &str,
) -> Option<(String, PodTemplateSpec)> {
    let rev = stored_stable(set, old)?;
    let hash = rev_hash(rev);
    if hash == current_hash {
        return None;
    }
    Some((hash.to_owned(), template_from_data(&rev.data)?))
}

/// everynode's rollout status of the final working state: the desired nodes' first pods
/// counted per revision.
fn rollout_status(
    b: &Builder<'_>,
    old: &[&RevisionView],
    stable_hash: Option<&str>,
) -> RolloutStatus {
    let set = &b.input.set;
    // (hash, pods, available); few distinct hashes.
    let mut per_hash: Vec<(&str, i32, i32)> = Vec::new();
    let mut desired = 0;
    for slot in b.state.slots.iter().filter(|s| s.elig.should_run) {
        desired += 1;
        let Some(&first) = slot.pods.first() else {
            continue;
        };
        let pod = &b.state.pods[first];
        let hash = if pod.current {
            Some(b.hash.as_str())
        } else if let Some(i) = pod.input() {
            strs::label(&b.input.pods[i].labels, CONTROLLER_REVISION_HASH).map(String::as_str)
        } else {
            stable_hash
        };
        let Some(hash) = hash else { continue };
        match per_hash.iter_mut().find(|(h, _, _)| strs::eq(h, hash)) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += i32::from(pod.available);
            }
            None => per_hash.push((hash, 1, i32::from(pod.available))),
        }
    }
    let number = |hash: &str| -> i64 {
        if hash == b.hash {
            return b.plan.history.current_revision;
        }
        old.iter()
            .find(|r| rev_hash(r) == hash)
            .map_or(0, |r| r.revision)
    };
    let per = per_hash
        .into_iter()
        .map(|(hash, pods, available)| {
            (
                number(hash),
                RevisionPods {
                    revision: revision_name(&set.name, hash),
                    pods,
                    available,
                },
            )
        })
        .collect();
    let stored_stable = set
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.as_deref());
    RolloutStatus::compute(&b.plan.history.current, desired, per, stored_stable)
}

/// Image changes from a pod's revision to the current template, cached per revision hash.
#[derive(Default)]
struct InPlaceTemplates {
    by_hash: Vec<(String, Option<ImageChanges>)>,
}

impl InPlaceTemplates {
    /// The in-place changes for `pod` (`None`: recreate it).
    fn changes(
        &mut self,
        b: &Builder<'_>,
        pod: usize,
        old: &[&RevisionView],
    ) -> Option<ImageChanges> {
        let input = b.state.pods[pod].input()?;
        let hash = strs::label(&b.input.pods[input].labels, CONTROLLER_REVISION_HASH)?;
        if let Some((_, changes)) = self.by_hash.iter().find(|(h, _)| h == hash) {
            return changes.clone();
        }
        let changes = old
            .iter()
            .find(|r| rev_hash(r) == hash)
            .and_then(|r| template_from_data(&r.data))
            .and_then(|t| crate::inplace::in_place_changes(&t, &b.input.set.spec.template));
        self.by_hash.push((hash.clone(), changes.clone()));
        changes
    }
}
