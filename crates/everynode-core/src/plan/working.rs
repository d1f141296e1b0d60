//! The working copy (`getNodesToDaemonPods`): the nodes sorted by name with their predicate,
//! and the claimed pods (§4.3 step 1) mapped to their target nodes — one pass over the nodes,
//! one over the pods.

use std::collections::BTreeSet;
use std::sync::Arc;

use everynode_api::labels::{CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::eligibility::NodeMatcher;
use crate::explain::{self, Deferrals, SharedName};
use crate::revision::{Claim, claim};
use crate::selector::Selector;
use crate::snapshot::{NodeView, PlanInput, PodView};
use crate::state::{InputPod, PodList, Slot, SlotElig, State};
use crate::strs::{self, NameIndex};

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
    out: &mut Plan,
) -> WorkingCopy<'a> {
    let hash = out.history.hash.clone();
    let relabel = relabelled_pods(input, selector, duplicate_hashes, &hash);
    let facts = PodFacts::new(input, &hash);
    let matcher = NodeMatcher::new(&input.set.spec.template);
    // The plan's biggest output, allocated before the working state: freeing that state at the
    // end then does not leave a large free area on top of the heap, which the allocator may
    // hand back to the system only to ask for it again in the next plan.
    let explain = input.config.explain;
    let mut decisions = Vec::with_capacity(if explain { input.nodes.len() } else { 0 });
    let (slots, names, slot_of) = build_slots(&input.nodes, &matcher);
    let mut state = State::new(&input.pods, slots);
    let mut hashes = PodHashes::default();
    let mut crowded = Vec::new();
    for (i, pod) in input.pods.iter().enumerate() {
        if i % WARM_BLOCK == 0 {
            std::hint::black_box(warm_pods(input.pods.get(i..).unwrap_or_default()));
        }
        if !record_claim(pod, selector, out) {
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
        let idx = state.add_input(facts.input_pod(i, pod, relabelled || label_is_current));
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

    /// Input pod `index` (`current`: it carries the update revision's hash).
    fn input_pod(&self, index: usize, pod: &PodView, current: bool) -> InputPod {
        let updated = (current && !self.hash.is_empty())
            || self.generation.as_deref().is_some_and(|g| {
                strs::label(&pod.labels, POD_TEMPLATE_GENERATION).is_some_and(|v| strs::eq(v, g))
            });
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
        claim(pod.owner(), selector.matches(&pod.labels), pod.deleting()),
        Claim::Keep | Claim::Adopt
    )
}

/// Claims `pod` (§4.3 step 1), recording an adoption or release in `out`; returns whether the
/// set keeps (or adopts) it.
pub(super) fn record_claim(pod: &PodView, selector: &Selector, out: &mut Plan) -> bool {
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
fn node_decisions(state: &State<'_>, mut names: NodeNames, out: &mut Vec<NodeDecision>) {
    let mut buffer = std::mem::take(&mut names.buffer);
    // Each node's first pod that is not terminating, its name appended to the node names.
    let first: Vec<Option<(usize, (u32, u32))>> = state
        .slots
        .iter()
        .map(|slot| {
            let p = slot
                .pods
                .iter()
                .copied()
                .find(|&p| !state.pods[p].deleting)?;
            let start = explain::offset(buffer.len());
            buffer.push_str(state.name(p));
            Some((p, (start, explain::offset(buffer.len()))))
        })
        .collect();
    let buffer: Arc<str> = Arc::from(buffer);
    out.extend(
        state
            .slots
            .iter()
            .zip(first)
            .enumerate()
            .map(|(i, (slot, first))| {
                let (start, end) = names.range(i);
                let pod = first.map(|(p, _)| &state.pods[p]);
                NodeDecision {
                    node: SharedName::in_buffer(&buffer, start, end),
                    should_run: slot.elig.should_run,
                    should_continue_running: slot.elig.should_continue_running,
                    excluded: slot.elig.excluded.clone(),
                    pods: slot.pods.len(),
                    pod_span: first.map(|(_, span)| span),
                    updated: pod.is_some_and(|p| p.updated),
                    available: pod.is_some_and(|p| p.available),
                    deferred: Deferrals::new(),
                }
            }),
    );
}
