//! The plan under construction: the working copy and the writes decided so far. Every write
//! is applied to the working copy as observed (created pods: current revision, unscheduled,
//! pinned to the node, not ready; deleted pods: gone — what upstream's fake pod control does),
//! so later steps see it.

use std::collections::BTreeSet;
use std::time::Duration;

use everynode_api::labels::CONTROLLER_REVISION_HASH;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::overrides::{NodeVariants, Variant};
use crate::reason::{CreateReason, Deferred, DeleteReason};
use crate::render::generated_pod_name;
use crate::rollout::NodeRef;
use crate::snapshot::PlanInput;
use crate::state::State;

use super::output::{NodeDecision, Plan, PodCreate, PodDelete, PodUpdate};
use super::prepull::PrePulls;

/// How many names a create tries before it settles for a taken one (the apiserver then refuses
/// the create, and the next plan draws another seed).
const MAX_NAME_ATTEMPTS: u32 = 16;

/// Lowers `cur` to `d`.
pub(super) fn min_requeue(cur: &mut Option<Duration>, d: Duration) {
    *cur = Some(cur.map_or(d, |c| c.min(d)));
}

/// Deferrals as they happen: per node for `explain`, and those that block a node for
/// `status.blockedNodes`.
pub(super) struct DeferralLog {
    /// With `explain`, one decision per slot (empty otherwise).
    pub decisions: Vec<NodeDecision>,
    /// `(slot, deferral)` that block a node (with `report_blocks`).
    pub blocked_by: Vec<(usize, Deferred)>,
    /// Record blocking deferrals (everynode's rollout status).
    pub report_blocks: bool,
}

impl DeferralLog {
    /// Notes `d` on the node's decision (for `explain`).
    pub fn note(&mut self, slot: usize, d: Deferred) {
        if let Some(decision) = self.decisions.get_mut(slot) {
            decision.deferred.push(d);
        }
    }

    /// Notes `d`, and records it when it blocks the node.
    pub fn block(&mut self, slot: usize, d: Deferred) {
        if self.report_blocks && d.blocks() {
            self.blocked_by.push((slot, d.clone()));
        }
        self.note(slot, d);
    }
}

/// The plan, the working copy it acts on, and the deferrals so far.
pub(super) struct Builder<'a> {
    pub input: &'a PlanInput,
    pub plan: Plan,
    pub state: State<'a>,
    /// Names of the input pods and of the pods this plan creates, gathered at the first create.
    taken_names: Option<BTreeSet<String>>,
    pub log: DeferralLog,
    /// The update revision's hash.
    pub hash: String,
    /// The update revision's node overrides (`spec.nodeOverrides`).
    pub variants: NodeVariants,
    /// The set's image pre-pulls (`rollingUpdate.prePull`).
    pub pre_pulls: Option<PrePulls>,
    /// The set's own template is of this revision, aborted (`spec.abort` or `failurePolicy:
    /// Abort`): this plan is of the stable revision's template.
    pub aborted: Option<String>,
}

impl<'a> Builder<'a> {
    /// A builder over the working copy `state`.
    pub fn new(
        input: &'a PlanInput,
        plan: Plan,
        state: State<'a>,
        log: DeferralLog,
        variants: NodeVariants,
    ) -> Self {
        let hash = plan.history.hash.clone();
        Self {
            input,
            plan,
            state,
            taken_names: None,
            log,
            hash,
            variants,
            pre_pulls: None,
            aborted: None,
        }
    }

    /// The node override of `slot`, if one applies.
    pub fn variant(&self, slot: usize) -> Option<&Variant> {
        let index = self.state.slots[slot].variant?;
        self.variants.get(usize::from(index))
    }

    /// The hash of the update revision's pods on `slot` (its node override's, if any).
    pub fn slot_hash(&self, slot: usize) -> &str {
        let variant = self.state.slots[slot].variant.map(usize::from);
        self.variants.hash(variant, &self.hash)
    }

    /// The template of the update revision's pods on `slot`.
    pub fn slot_template(&self, slot: usize) -> &PodTemplateSpec {
        self.variant(slot)
            .map_or(&self.input.set.spec.template, |v| &v.template)
    }

    /// Plan again after `d` at the latest.
    pub fn requeue_within(&mut self, d: Duration) {
        min_requeue(&mut self.plan.requeue_after, d);
    }

    fn node_name(&self, r: NodeRef<'a>) -> &'a str {
        r.name(&self.state)
    }

    /// The UID of working pod `pod` (empty for pods this plan creates).
    pub fn uid(&self, pod: usize) -> String {
        self.state.pods[pod]
            .input()
            .map(|i| self.input.pods[i].uid.clone())
            .unwrap_or_default()
    }

    pub fn delete(&mut self, node: NodeRef<'a>, pod: usize, reason: DeleteReason) {
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
    pub fn create(&mut self, slot: usize, reason: CreateReason, older: Option<&str>) {
        let input = self.input;
        let node = self.state.slots[slot].node.name.as_str();
        let variant = self.state.slots[slot].variant;
        if older.is_none()
            && let Some(v) = variant.and_then(|i| self.variants.get(usize::from(i)))
        {
            // A node override's pods are made from its template.
            self.plan
                .templates
                .entry(v.hash.clone())
                .or_insert_with(|| v.template.clone());
        }
        let hash = older.unwrap_or(self.slot_hash(slot)).to_owned();
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
        let pre_pulled = self
            .pre_pulls
            .as_ref()
            .and_then(|p| p.pulled_pod(input, node, &hash))
            .map(str::to_owned);
        self.plan.creates.push(PodCreate {
            node: node.to_owned(),
            pod_name: name.clone(),
            hash,
            reason,
            pre_pulled,
        });
        self.state
            .add_created(slot, name, self.input.now, older.is_none());
    }

    /// Updates `pod` on `slot` in place to the current revision (its containers restart: it
    /// counts as unavailable until Ready on the new images).
    pub fn update_in_place(&mut self, slot: usize, pod: usize, images: Vec<(String, String)>) {
        let template = &self.input.set.spec.template;
        let meta = template.metadata.as_ref();
        let mut labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
        let hash = self.slot_hash(slot).to_owned();
        labels.insert(CONTROLLER_REVISION_HASH.to_owned(), hash.clone());
        let uid = self.uid(pod);
        self.plan.updates.push(PodUpdate {
            pod: self.state.name(pod).to_owned(),
            uid,
            node: self.state.slots[slot].node.name.clone(),
            hash,
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

    /// Notes `d` on the node's decision (for `explain`).
    pub fn defer(&mut self, slot: usize, d: Deferred) {
        self.log.note(slot, d);
    }

    /// The finished plan (with `explain`, the per-node decisions).
    pub fn finish(self) -> Plan {
        let mut plan = self.plan;
        plan.nodes = self.log.decisions;
        plan
    }
}
