//! The working copy (`getNodesToDaemonPods`): the nodes sorted by name with their predicate,
//! and the claimed pods (§4.3 step 1) mapped to their target nodes — one pass over the nodes,
//! one over the pods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use everynode_api::labels::{CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION, PRE_PULL_OF_LABEL};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::eligibility::NodeMatcher;
use crate::explain::{self, Deferrals, SharedName};
use crate::index::NodeIndex;
use crate::index::strs;
use crate::overrides::NodeVariants;
use crate::revision::{Claim, claim};
use crate::selector::Selector;
use crate::snapshot::{NodeView, PlanInput, PodView};
use crate::state::{InputPod, PodList, Slot, SlotElig, State};

use super::label_memo::LabelMemo;
use super::output::{NodeDecision, Plan};

/// The working copy and what building it learned.
pub(super) struct WorkingCopy<'a> {
    pub state: State<'a>,
    /// Hash labels of the claimed pods other than the update revision's (with it, the live
    /// revisions history cleanup keeps).
    pub other_hashes: Vec<&'a str>,
    /// With `explain`, one decision per slot, before anything is deferred.
    pub decisions: Vec<NodeDecision>,
}

/// Claims the pods, recording adoptions, releases, ignored pods and relabels in `out`, and
/// builds the working copy.
pub(super) fn working_copy<'a>(
    input: &'a PlanInput,
    selector: &Selector,
    duplicate_hashes: &BTreeSet<String>,
    variants: &NodeVariants,
    out: &mut Plan,
) -> WorkingCopy<'a> {
    let hash = out.history.hash.clone();
    let relabel = relabelled_pods(input, selector, duplicate_hashes, &hash);
    let facts = PodFacts::new(input, &hash);
    let matcher = NodeMatcher::for_set(&input.set.spec);
    // The plan's biggest output, allocated before the working state: freeing that state at the
    // end then does not leave a large free area on top of the heap, which the allocator may
    // hand back to the system only to ask for it again in the next plan.
    let explain = input.config.explain;
    let mut decisions = Vec::with_capacity(if explain { input.nodes.len() } else { 0 });
    let (slots, index) = build_slots(&input.nodes, &matcher, variants);
    let mut state = State::new(&input.pods, slots);
    let mut hashes = PodHashes::default();
    let mut crowded = Vec::new();
    let mut selected = LabelMemo::new();
    let mut revision = LabelMemo::new();
    for (i, pod) in input.pods.iter().enumerate() {
        let matches = selected.get(&pod.labels, |labels| selects(selector, labels));
        if !record_claim(pod, matches, out) {
            continue;
        }
        // Only for claimed pods: `hashes` collects the hashes history cleanup keeps.
        let by_labels = variants.is_empty().then(|| {
            revision.get(&pod.labels, |labels| {
                let current = strs::label(labels, CONTROLLER_REVISION_HASH)
                    .is_some_and(|h| hashes.is_current(h, &hash));
                (current, facts.generation_matches(labels))
            })
        });
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
        let slot = index.slot(target);
        // With node overrides, the hash a pod should carry depends on its node.
        let (label_is_current, generation_matches) = by_labels.unwrap_or_else(|| {
            let variant = slot.and_then(|s| state.slots[s].variant);
            let expected = variants.hash(variant.map(usize::from), &hash);
            let current = strs::label(&pod.labels, CONTROLLER_REVISION_HASH)
                .is_some_and(|h| hashes.is_current(h, expected));
            (current, facts.generation_matches(&pod.labels))
        });
        let relabelled = !relabel.is_empty()
            && relabel
                .binary_search_by(|(n, _)| n.as_str().cmp(pod.name.as_str()))
                .is_ok();
        // A relabelled pod carries the current hash.
        let current = relabelled || label_is_current;
        let idx = state.add_input(facts.input_pod(i, pod, current, generation_matches));
        match slot {
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
    out.adopt_pods.sort();
    out.release_pods.sort();
    out.ignored_pods.sort();
    out.history.relabel_pods = relabel;
    state.sort_pods(&crowded);
    if explain {
        node_decisions(&state, index, variants, &mut decisions);
    }
    WorkingCopy {
        state,
        other_hashes: hashes.others,
        decisions,
    }
}

/// Claimed pods carrying the hash of a deleted duplicate revision, relabelled to the update
/// revision's hash (§5.3 step 5), sorted by name.
fn relabelled_pods(
    input: &PlanInput,
    selector: &Selector,
    duplicate_hashes: &BTreeSet<String>,
    hash: &str,
) -> Vec<(String, String)> {
    if duplicate_hashes.is_empty() {
        return Vec::new();
    }
    let mut relabel: Vec<(String, String)> = input
        .pods
        .iter()
        .filter(|pod| {
            claims(pod, selector)
                && pod
                    .labels
                    .get(CONTROLLER_REVISION_HASH)
                    .is_some_and(|h| duplicate_hashes.contains(h))
        })
        .map(|pod| (pod.name.clone(), hash.to_owned()))
        .collect();
    relabel.sort();
    relabel
}

/// What the working copy records of each claimed pod, and what it needs to know for that.
struct PodFacts<'h> {
    /// The update revision's hash.
    hash: &'h str,
    /// `spec.templateGeneration` as a label value (legacy updated pods).
    generation: Option<String>,
    /// A pod is available when Ready since strictly before this (`None`: when Ready).
    available_before: Option<Timestamp>,
}

impl<'h> PodFacts<'h> {
    fn new(input: &PlanInput, hash: &'h str) -> Self {
        let min_ready = input.set.spec.effective_min_ready_seconds();
        Self {
            hash,
            generation: input.set.template_generation.map(|g| g.to_string()),
            available_before: (min_ready > 0).then(|| {
                input
                    .now
                    .checked_sub(SignedDuration::from_secs(i64::from(min_ready)))
                    .unwrap_or(Timestamp::MIN)
            }),
        }
    }

    /// Whether `labels` carry the set's template generation (a legacy updated pod).
    fn generation_matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.generation.as_deref().is_some_and(|g| {
            strs::label(labels, POD_TEMPLATE_GENERATION).is_some_and(|v| strs::eq(v, g))
        })
    }

    /// Input pod `index` (`current`: it carries the update revision's hash;
    /// `generation_matches`: see [`Self::generation_matches`]).
    fn input_pod(
        &self,
        index: usize,
        pod: &PodView,
        current: bool,
        generation_matches: bool,
    ) -> InputPod {
        let updated = (current && !self.hash.is_empty()) || generation_matches;
        let available = pod.ready
            && match self.available_before {
                None => true,
                Some(limit) => pod.ready_since.is_some_and(|t| t < limit),
            };
        InputPod {
            index,
            scheduled: pod.node_name.is_some(),
            created: pod.created,
            phase: pod.phase,
            ready: pod.ready,
            deleting: pod.deleting(),
            current,
            updated,
            available,
        }
    }
}

/// Whether the set keeps or adopts `pod` (§4.3 step 1).
fn claims(pod: &PodView, selector: &Selector) -> bool {
    matches!(
        claim(pod.owner(), selects(selector, &pod.labels), pod.deleting()),
        Claim::Keep | Claim::Adopt
    )
}

/// Whether `selector` selects a pod with `labels`: a pre-pull pod (`prePull`) never is, whatever
/// the selector.
pub(super) fn selects(selector: &Selector, labels: &BTreeMap<String, String>) -> bool {
    selector.matches(labels) && !labels.contains_key(PRE_PULL_OF_LABEL)
}

/// Claims `pod` (§4.3 step 1; `matches`: the set's selector matches its labels), recording an
/// adoption or release in `out`; returns whether the set keeps (or adopts) it.
pub(super) fn record_claim(pod: &PodView, matches: bool, out: &mut Plan) -> bool {
    match claim(pod.owner(), matches, pod.deleting()) {
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

/// The node list: nodes sorted by name (stable; the input usually already is sorted) with
/// their predicate, and the index of their names.
fn build_slots<'a>(
    nodes: &'a [Arc<NodeView>],
    matcher: &NodeMatcher,
    variants: &NodeVariants,
) -> (Vec<Slot<'a>>, NodeIndex) {
    let mut slots = Vec::with_capacity(nodes.len());
    // Built in the same pass while the nodes are sorted (each name is read once), rebuilt
    // after sorting otherwise.
    let mut index = NodeIndex::with_capacity(nodes);
    let mut sorted = true;
    let mut previous: Option<&str> = None;
    for node in nodes {
        let name = node.name.as_str();
        sorted = sorted && previous.is_none_or(|p| strs::cmp(p, name).is_le());
        previous = Some(name);
        if sorted {
            index.push(name);
        }
        slots.push(Slot {
            node,
            elig: SlotElig::new(matcher.check(node), matcher),
            // Overrides are bounded far below u16 (the CRD allows 32).
            variant: variants
                .of_node(&node.labels)
                .and_then(|v| u16::try_from(v).ok()),
            pods: PodList::Empty,
        });
    }
    if !sorted {
        slots.sort_by(|a, b| a.node.name.cmp(&b.node.name));
        index = NodeIndex::with_capacity(nodes);
        for slot in &slots {
            index.push(&slot.node.name);
        }
    }
    (slots, index)
}

/// The per-node decisions for `explain`, before anything is deferred, into `out`.
fn node_decisions(
    state: &State<'_>,
    mut index: NodeIndex,
    variants: &NodeVariants,
    out: &mut Vec<NodeDecision>,
) {
    let first_pod = |slot: &Slot<'_>| slot.pods.iter().copied().find(|&p| !state.pods[p].deleting);
    // Each node's first pod that is not terminating: its name goes after the node names.
    let mut buffer = index.take_buffer();
    let mut at = buffer.len();
    // Pod names are node names plus a short prefix: no reallocation on the way.
    buffer.reserve(buffer.len() + 16 * state.slots.len());
    for slot in &state.slots {
        if let Some(p) = first_pod(slot) {
            buffer.push_str(state.name(p));
        }
    }
    let buffer: Arc<str> = Arc::from(buffer);
    for (i, slot) in state.slots.iter().enumerate() {
        let (start, end) = index.range(i);
        let pod = first_pod(slot);
        let pod_span = pod.map(|p| {
            let start = at;
            at += state.name(p).len();
            (explain::offset(start), explain::offset(at))
        });
        let pod = pod.map(|p| &state.pods[p]);
        out.push(NodeDecision {
            node: SharedName::in_buffer(&buffer, start, end),
            should_run: slot.elig.should_run,
            should_continue_running: slot.elig.should_continue_running,
            excluded: slot.elig.excluded.clone(),
            pods: slot.pods.len(),
            pod_span,
            updated: pod.is_some_and(|p| p.updated),
            available: pod.is_some_and(|p| p.available),
            node_override: slot
                .variant
                .and_then(|v| variants.get(usize::from(v)))
                .map(|v| v.name.clone()),
            deferred: Deferrals::new(),
        });
    }
}
