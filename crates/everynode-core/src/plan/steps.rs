//! The writing steps on the working copy, in upstream's order: manage (§4.3), the rolling
//! update (§6) on the copy with manage's writes observed, and history cleanup (§5.5).

use std::collections::BTreeSet;

use everynode_api::labels::CONTROLLER_REVISION_HASH;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::index::strs;
use crate::inplace::ImageChanges;
use crate::manage::{ManageCtx, manage};
use crate::reason::{CreateReason, Deferred, DeleteReason};
use crate::revision::{cleanup_history, rev_hash, template_from_data};
use crate::rollout::{NodeRef, RolloutCtx, WaveInfo, rolling_update, updated_nodes};
use crate::snapshot::RevisionView;

use super::builder::Builder;
use super::history::{OldRevision, has_overrides, stored_stable};
use super::output::BackoffUpdate;
use super::params::RolloutParams;

/// What holds back the `n`th create or delete of a step: a frozen set, the per-plan burst
/// limit, and (rolling update only) a template the apiserver refuses.
pub(super) struct Gates {
    pub frozen: bool,
    pub burst: usize,
    /// The apiserver refuses pods of the update revision's template.
    pub rejected: bool,
}

impl Gates {
    /// Why the `n`th write of a step waits: frozen, or beyond the burst limit.
    fn held_back(&self, n: usize) -> Option<Deferred> {
        if self.frozen {
            Some(Deferred::SetFrozen)
        } else {
            (n >= self.burst).then_some(Deferred::BurstLimit)
        }
    }

    /// Like [`Gates::held_back`], or because the template is refused (pods of a refused
    /// template are not created, and old pods are not replaced by them).
    fn held_or_rejected(&self, n: usize) -> Option<Deferred> {
        self.held_back(n)
            .or_else(|| self.rejected.then_some(Deferred::TemplateRejected))
    }
}

/// manage (§4.3): its events, backoff entries and deferrals, then its deletes and creates.
pub(super) fn apply_manage(
    b: &mut Builder<'_>,
    params: &RolloutParams,
    stable: Option<&OldRevision>,
    gates: &Gates,
) {
    let set = &b.input.set;
    let key_generation = set
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    let ctx = ManageCtx {
        surge: params.surge,
        now: b.input.now,
        backoff: &b.input.backoff,
        backoff_config: &b.input.config.backoff,
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
        b.requeue_within(r);
    }
    for (slot, d) in mo.deferred {
        b.log.block(slot, d);
    }
    for (n, (slot, vanished, pod, reason)) in mo.deletes.into_iter().enumerate() {
        let node = match (slot, vanished.as_deref()) {
            (Some(s), _) => NodeRef::Slot(s),
            (None, Some(v)) => match b.state.vanished.get_key_value(v) {
                Some((k, _)) => NodeRef::Vanished(k),
                None => continue,
            },
            (None, None) => continue,
        };
        if let Some(why) = gates.held_back(n) {
            if let NodeRef::Slot(s) = node {
                b.defer(s, why);
            }
            continue;
        }
        b.delete(node, pod, reason);
    }
    create_missing(b, params, stable, gates, mo.creates);
}

/// manage's creates: held nodes get the stable revision (`newNodePolicy: Stable`), and under
/// a partition nodes beyond `desired - partition` updated ones are held.
fn create_missing(
    b: &mut Builder<'_>,
    params: &RolloutParams,
    stable: Option<&OldRevision>,
    gates: &Gates,
    creates: Vec<(usize, CreateReason)>,
) {
    let controls = params.controls.as_ref();
    let mut partition_room = controls.map_or(i32::MAX, |c| {
        if c.partition > 0 {
            params.desired - c.partition - updated_nodes(&b.state)
        } else {
            i32::MAX
        }
    });
    for (n, (slot, reason)) in creates.into_iter().enumerate() {
        if let Some(why) = gates.held_back(n) {
            b.defer(slot, why);
            continue;
        }
        let held = controls
            .is_some_and(|c| c.held(b.state.slots[slot].node).is_some() || partition_room <= 0);
        match stable {
            _ if gates.rejected && !(held && stable.is_some()) => {
                b.defer(slot, Deferred::TemplateRejected);
            }
            Some(stable) if held => {
                let (hash, template) = stable.for_node(b.state.slots[slot].node);
                b.plan
                    .templates
                    .entry(hash.to_owned())
                    .or_insert_with(|| template.clone());
                b.create(slot, CreateReason::MissingPodStable, Some(hash));
            }
            _ => {
                partition_room -= 1;
                b.create(slot, reason, None);
            }
        }
    }
}

/// What the rolling update step found.
#[derive(Default)]
pub(super) struct RolloutOutcome {
    /// Only nodes the controls hold are left.
    pub held: bool,
    /// The topology wave.
    pub wave: Option<WaveInfo>,
    /// The update revision's failure (rollout safety: stored, or found by this plan).
    pub failure: Option<everynode_api::RolloutFailure>,
}

/// The `RollingUpdate` step (§6) on the working copy with manage's writes observed; its
/// deletes become in-place updates where only images change (`InPlaceIfPossible`).
pub(super) fn apply_rolling_update(
    b: &mut Builder<'_>,
    params: &RolloutParams,
    old: &[&RevisionView],
    gates: &Gates,
) -> RolloutOutcome {
    let (Some(controls), Some(budget)) = (params.controls.as_ref(), params.budget) else {
        return RolloutOutcome::default();
    };
    if !params.rolling {
        return RolloutOutcome::default();
    }
    let rctx = RolloutCtx {
        budget,
        explain: b.input.config.explain,
        report_blocks: b.log.report_blocks,
        controls,
        now: b.input.now,
        min_ready: params.min_ready,
        ahead: params.pre_pull.as_ref().map_or(0, |p| p.nodes_ahead()),
    };
    let log = &mut b.log;
    let ro = rolling_update(&b.state, &rctx, &mut |slot, d| log.block(slot, d));
    if let Some(r) = ro.requeue {
        b.requeue_within(r);
    }
    let mut in_place_templates = InPlaceTemplates::default();
    // The pulls are taken out of the builder while they plan on it.
    let mut pulls = b.pre_pulls.take();
    for (n, (node, pod, reason)) in ro.deletes.into_iter().enumerate() {
        if let Some(why) = gates.held_or_rejected(n) {
            if let NodeRef::Slot(s) = node {
                b.defer(s, why);
            }
            continue;
        }
        if reason == DeleteReason::RollingUpdate
            && let NodeRef::Slot(slot) = node
            && let Some(why) = pulls.as_mut().and_then(|p| p.wait(b, slot, old))
        {
            b.defer(slot, why);
            continue;
        }
        if params.in_place
            && reason == DeleteReason::RollingUpdate
            && let NodeRef::Slot(slot) = node
            && let Some(images) = in_place_templates.changes(b, slot, pod, old)
        {
            b.update_in_place(slot, pod, images);
            continue;
        }
        b.delete(node, pod, reason);
    }
    if let Some(pulls) = pulls.as_mut()
        && !gates.rejected
    {
        pulls.pull_ahead(b, &ro.ahead, old);
    }
    b.pre_pulls = pulls;
    for (n, (slot, reason)) in ro.creates.into_iter().enumerate() {
        if let Some(why) = gates.held_or_rejected(n) {
            b.defer(slot, why);
            continue;
        }
        b.create(slot, reason, None);
    }
    RolloutOutcome {
        held: ro.held_only,
        wave: ro.wave,
        failure: None,
    }
}

/// History cleanup (§5.5): keeps the revisions of every pod that still exists or was just
/// created, and the stable revision (a joining node may need it). A revision with node
/// overrides is kept while a pod carries the hash of one of its variants.
pub(super) fn clean_up_history(b: &mut Builder<'_>, old: &[&RevisionView], other_hashes: &[&str]) {
    let set = &b.input.set;
    let mut live: BTreeSet<&str> = other_hashes.iter().copied().collect();
    live.insert(b.hash.as_str());
    if let Some(rev) = stored_stable(set, old) {
        live.insert(rev_hash(rev));
    }
    let mut variant_hashes = Vec::new();
    for rev in old.iter().filter(|r| has_overrides(r)) {
        let Some(read) = OldRevision::read(rev, set.collision_count()) else {
            continue;
        };
        if other_hashes.iter().any(|h| read.variants.has_hash(h)) {
            variant_hashes.push(read.hash);
        }
    }
    live.extend(variant_hashes.iter().map(String::as_str));
    let cleanup = cleanup_history(old, set.spec.effective_revision_history_limit(), &live);
    b.plan.history.delete.extend(cleanup);
}

/// The template of an old revision whose pods carry `hash` (its own, or one of its node
/// overrides').
pub(super) fn old_template(
    old: &[&RevisionView],
    hash: &str,
    collision_count: Option<i32>,
) -> Option<PodTemplateSpec> {
    if let Some(rev) = old.iter().find(|r| rev_hash(r) == hash) {
        return template_from_data(&rev.data);
    }
    old.iter()
        .filter(|r| has_overrides(r))
        .filter_map(|r| OldRevision::read(r, collision_count))
        .find_map(|read| {
            read.variants
                .template_of_hash(hash, &read.template)
                .cloned()
        })
}

/// Image changes from a pod's revision to the update revision's template of its node, cached
/// per pair of hashes.
#[derive(Default)]
struct InPlaceTemplates {
    by_hash: Vec<((String, String), Option<ImageChanges>)>,
}

impl InPlaceTemplates {
    /// The in-place changes for `pod` on `slot` (`None`: recreate it).
    fn changes(
        &mut self,
        b: &Builder<'_>,
        slot: usize,
        pod: usize,
        old: &[&RevisionView],
    ) -> Option<ImageChanges> {
        let input = b.state.pods[pod].input()?;
        let hash = strs::label(&b.input.pods[input].labels, CONTROLLER_REVISION_HASH)?;
        let target = b.slot_hash(slot);
        if let Some((_, changes)) = self
            .by_hash
            .iter()
            .find(|((from, to), _)| from == hash && to == target)
        {
            return changes.clone();
        }
        // The pod's template: a variant of the update revision (its node's labels changed) or
        // an old revision's.
        let set = &b.input.set;
        let changes = b
            .variants
            .template_of_hash(hash, &set.spec.template)
            .cloned()
            .or_else(|| old_template(old, hash, set.collision_count()))
            .and_then(|t| crate::inplace::in_place_changes(&t, b.slot_template(slot)));
        self.by_hash
            .push(((hash.clone(), target.to_owned()), changes.clone()));
        changes
    }
}
