//! History (§5): claim the revisions (§5.1), find or create the update revision and renumber,
//! relabel or delete duplicates (§5.3); the stable revision `newNodePolicy: Stable` and
//! rollbacks fall back to.

use everynode_api::NodeOverride;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::overrides::NodeVariants;
use crate::revision::{
    Claim, TemplateDigest, claim, construct_history, overrides_from_data, rev_hash,
    template_from_data,
};
use crate::selector::Selector;
use crate::snapshot::{NodeView, PlanInput, RevisionView, SetView};
use crate::status::pacing::StatusWrite;

use super::output::Plan;
use super::working::{record_claim, selects};

/// What the history step leaves for the later steps.
pub(super) struct History<'a> {
    /// The claimed revisions other than the update revision.
    pub old: Vec<&'a RevisionView>,
    /// Hashes of the duplicates of the update revision that are deleted (their pods are
    /// relabelled).
    pub duplicate_hashes: std::collections::BTreeSet<String>,
}

/// Claims the revisions and plans the history into `out.history`. Neither depends on the
/// pods, so the pods are claimed later, in the pass that maps them to nodes.
pub(super) fn plan_history<'a>(
    input: &'a PlanInput,
    selector: &Selector,
    out: &mut Plan,
) -> History<'a> {
    let set = &input.set;
    let mut claimed: Vec<&RevisionView> = Vec::new();
    let (mut adopt, mut release) = (Vec::new(), Vec::new());
    for rev in &input.revisions {
        match claim(rev.owner(), selector.matches(&rev.labels), rev.deleting) {
            Claim::Keep => claimed.push(rev),
            Claim::Adopt => {
                adopt.push(rev.name.clone());
                claimed.push(rev);
            }
            Claim::Release => release.push(rev.name.clone()),
            Claim::Ignore => {}
        }
    }
    claimed.sort_by(|a, b| a.name.cmp(&b.name));
    let template = &set.spec.template;
    let digest = TemplateDigest::of_spec(template, set.spec.overrides(), set.collision_count());
    let history = construct_history(
        &set.name,
        &set.annotations,
        template,
        set.collision_count(),
        &digest,
        &claimed,
        &input.revisions,
    );
    out.history = history.plan;
    adopt.sort();
    release.sort();
    out.history.adopt = adopt;
    out.history.release = release;
    History {
        old: history.old,
        duplicate_hashes: history.duplicate_hashes,
    }
}

/// A hash collision: only the pod claims (§4.3 step 1) and the new collision count are
/// written this round.
pub(super) fn collision_only(input: &PlanInput, selector: &Selector, count: i32, out: &mut Plan) {
    for pod in &input.pods {
        record_claim(pod, selects(selector, &pod.labels), out);
    }
    out.adopt_pods.sort();
    out.release_pods.sort();
    let stored = input.set.status.as_ref();
    let mut status = stored.cloned().unwrap_or_default();
    status.collision_count = Some(count);
    out.status_write = Some(StatusWrite::classify(stored, &status));
    out.status = Some(status);
}

/// `status.stableRevision`, when it is one of the set's old revisions.
pub(super) fn stored_stable<'r>(
    set: &SetView,
    old: &[&'r RevisionView],
) -> Option<&'r RevisionView> {
    let name = set.status.as_ref()?.stable_revision.as_deref()?;
    old.iter().find(|r| r.name == name).copied()
}

/// An old revision's template and node overrides, read from its data.
pub(super) struct OldRevision {
    /// The revision's hash.
    pub hash: String,
    /// Its template.
    pub template: PodTemplateSpec,
    /// Its node overrides.
    pub overrides: Vec<NodeOverride>,
    /// Its node overrides, ready to match nodes.
    pub variants: NodeVariants,
}

impl OldRevision {
    /// `rev`'s template and overrides (hashed with `collision_count`), when they can be read.
    pub fn read(rev: &RevisionView, collision_count: Option<i32>) -> Option<Self> {
        let template = template_from_data(&rev.data)?;
        let overrides = overrides_from_data(&rev.data)?;
        let variants = NodeVariants::new(&template, &overrides, collision_count).ok()?;
        Some(Self {
            hash: rev_hash(rev).to_owned(),
            template,
            overrides,
            variants,
        })
    }

    /// The hash and template of this revision's pods on `node`.
    pub fn for_node(&self, node: &NodeView) -> (&str, &PodTemplateSpec) {
        let variant = self.variants.of_node(&node.labels);
        let template = variant
            .and_then(|v| self.variants.get(v))
            .map_or(&self.template, |v| &v.template);
        (self.variants.hash(variant, &self.hash), template)
    }
}

/// Whether revision `rev` records node overrides.
pub(super) fn has_overrides(rev: &RevisionView) -> bool {
    rev.data
        .get("spec")
        .is_some_and(|s| s.get("nodeOverrides").is_some())
}

/// The stable revision, when it differs from `current_hash` and its template can be read.
pub(super) fn stable_revision(
    set: &SetView,
    old: &[&RevisionView],
    current_hash: &str,
) -> Option<OldRevision> {
    let rev = stored_stable(set, old)?;
    if rev_hash(rev) == current_hash {
        return None;
    }
    OldRevision::read(rev, set.collision_count())
}
