//! The planner's working copy of the cluster: claimed pods grouped by target node
//! (`getNodesToDaemonPods`), with virtual creates/deletes applied between the manage and
//! rolling-update steps, and the pod predicates shared by those steps (§4.6, §6.0).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::eligibility::{NodeMatcher, Verdict};
use crate::reason::NodeExcluded;
use crate::snapshot::{NodeView, PodPhase, PodView};

/// A pod in the working copy (real or virtually created): a small record (the working copy
/// is walked several times per plan); the name is looked up through [`State::name`].
#[derive(Clone, Debug)]
pub(crate) struct WPod {
    /// Creation time (`Timestamp::UNIX_EPOCH` when unknown, see `has_created`).
    created: Timestamp,
    /// Index of the input pod, or for virtual pods of the name in [`State::created`].
    source: u32,
    /// A virtual pod (created by this plan).
    is_virtual: bool,
    /// `metadata.creationTimestamp` is known.
    has_created: bool,
    pub scheduled: bool,
    pub phase: PodPhase,
    pub ready: bool,
    pub deleting: bool,
    /// The hash label equals the current hash (manage's notion of "new").
    pub current: bool,
    /// `IsPodUpdated` for the current hash and template generation.
    pub updated: bool,
    /// `IsPodAvailable` at the plan's `now`.
    pub available: bool,
}

/// What the working copy records about an input pod.
pub(crate) struct InputPod {
    /// Index in the input pods.
    pub index: usize,
    pub scheduled: bool,
    pub created: Option<Timestamp>,
    pub phase: PodPhase,
    pub ready: bool,
    pub deleting: bool,
    pub current: bool,
    pub updated: bool,
    pub available: bool,
}

impl WPod {
    /// `metadata.creationTimestamp`.
    pub fn created(&self) -> Option<Timestamp> {
        self.has_created.then_some(self.created)
    }

    /// Index of the input pod, `None` for virtual pods.
    pub fn input(&self) -> Option<usize> {
        (!self.is_virtual).then_some(self.source as usize)
    }
}

/// A node's eligibility in the working copy: the flags inline and the (rarely present)
/// reason boxed, which keeps [`Slot`] small — the slot list is walked several times per plan.
#[derive(Clone, Debug)]
pub(crate) struct SlotElig {
    pub should_run: bool,
    pub should_continue_running: bool,
    pub excluded: Option<Box<NodeExcluded>>,
}

impl SlotElig {
    /// The slot record of `verdict` (the reason is only built for excluded nodes).
    pub fn new(verdict: Verdict<'_>, matcher: &NodeMatcher) -> Self {
        Self {
            should_run: verdict.should_run(),
            should_continue_running: verdict.should_continue_running(),
            excluded: match verdict {
                Verdict::Eligible => None,
                v => matcher.reason(v).map(Box::new),
            },
        }
    }
}

/// One node of the node list with its predicate result and pods.
#[derive(Clone, Debug)]
pub(crate) struct Slot<'a> {
    pub node: &'a NodeView,
    pub elig: SlotElig,
    /// The node override the node gets (`spec.nodeOverrides`), by position.
    pub variant: Option<u16>,
    /// Indices into [`State::pods`] of the pods mapped to this node (still present).
    pub pods: PodList,
}

/// The working copy.
#[derive(Clone, Debug)]
pub(crate) struct State<'a> {
    /// The input pods (for names).
    pub inputs: &'a [Arc<PodView>],
    pub pods: Vec<WPod>,
    /// Names of the virtual pods.
    pub created: Vec<String>,
    /// Node list sorted by name.
    pub slots: Vec<Slot<'a>>,
    /// Pods whose target node is not in the node list, by node name.
    pub vanished: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> State<'a> {
    /// An empty working copy over `inputs` and the node list `slots`.
    pub fn new(inputs: &'a [Arc<PodView>], slots: Vec<Slot<'a>>) -> Self {
        Self {
            inputs,
            pods: Vec::with_capacity(inputs.len()),
            created: Vec::new(),
            slots,
            vanished: BTreeMap::new(),
        }
    }

    /// Adds an input pod; returns its index in the working copy.
    pub fn add_input(&mut self, p: InputPod) -> usize {
        let idx = self.pods.len();
        self.pods.push(WPod {
            created: p.created.unwrap_or(Timestamp::UNIX_EPOCH),
            // Pod counts beyond u32 are far beyond any cluster (and any memory).
            source: p.index as u32,
            is_virtual: false,
            has_created: p.created.is_some(),
            scheduled: p.scheduled,
            phase: p.phase,
            ready: p.ready,
            deleting: p.deleting,
            current: p.current,
            updated: p.updated,
            available: p.available,
        });
        idx
    }

    /// The name of pod `pi`.
    pub fn name(&self, pi: usize) -> &str {
        let pod = &self.pods[pi];
        let source = pod.source as usize;
        if pod.is_virtual {
            self.created.get(source).map_or("", String::as_str)
        } else {
            self.inputs.get(source).map_or("", |p| p.name.as_str())
        }
    }

    /// Pod ordering (§4.6): scheduled first, then creation time, then name.
    pub fn order(&self, a: usize, b: usize) -> Ordering {
        let (x, y) = (&self.pods[a], &self.pods[b]);
        y.scheduled
            .cmp(&x.scheduled)
            .then_with(|| x.created().cmp(&y.created()))
            .then_with(|| self.name(a).cmp(self.name(b)))
    }

    /// Sorts every node's pods by the §4.6 ordering; `crowded` lists the slots with more than
    /// one pod (the others are sorted already).
    pub fn sort_pods(&mut self, crowded: &[usize]) {
        for &s in crowded {
            if let Some(slot) = self.slots.get_mut(s) {
                let mut list = std::mem::take(&mut slot.pods);
                list.sort_by(|a, b| self.order(*a, *b));
                self.slots[s].pods = list;
            }
        }
        let mut vanished = std::mem::take(&mut self.vanished);
        for list in vanished.values_mut() {
            list.sort_by(|a, b| self.order(*a, *b));
        }
        self.vanished = vanished;
    }

    /// Virtually deletes pod `idx` from slot `slot` (or from a vanished node when `None`).
    pub fn remove(&mut self, slot: Option<usize>, vanished_node: Option<&str>, idx: usize) {
        if let Some(s) = slot {
            self.slots[s].pods.retain(|p| *p != idx);
        } else if let Some(n) = vanished_node
            && let Some(list) = self.vanished.get_mut(n)
        {
            list.retain(|p| *p != idx);
        }
    }

    /// Virtually creates a pod on slot `slot` (unscheduled, not ready, created `now`), of the
    /// current revision or (`current: false`) of an older one.
    pub fn add_created(&mut self, slot: usize, name: String, now: Timestamp, current: bool) {
        let idx = self.pods.len();
        self.pods.push(WPod {
            created: now,
            source: self.created.len() as u32,
            is_virtual: true,
            has_created: true,
            scheduled: false,
            phase: PodPhase::Pending,
            ready: false,
            deleting: false,
            current,
            updated: current,
            available: false,
        });
        self.created.push(name);
        // Unscheduled pods sort after scheduled ones and creation `now` is the latest time, so
        // appending keeps the order except against other unscheduled pods created at `now`.
        let list = &self.slots[slot].pods;
        let pos = list.partition_point(|p| self.order(*p, idx) == Ordering::Less);
        self.slots[slot].pods.insert(pos, idx);
    }
}

/// A node's pod indices; most nodes have exactly one pod, which is stored inline so building
/// the state does not allocate per node.
#[derive(Clone, Debug, Default)]
pub(crate) enum PodList {
    #[default]
    Empty,
    One(usize),
    Many(Vec<usize>),
}

impl PodList {
    #[inline]
    pub fn as_slice(&self) -> &[usize] {
        match self {
            Self::Empty => &[],
            Self::One(i) => std::slice::from_ref(i),
            Self::Many(v) => v,
        }
    }

    #[inline]
    pub fn push(&mut self, idx: usize) {
        match self {
            Self::Empty => *self = Self::One(idx),
            Self::One(i) => *self = Self::Many(vec![*i, idx]),
            Self::Many(v) => v.push(idx),
        }
    }

    pub fn insert(&mut self, pos: usize, idx: usize) {
        match self {
            Self::Empty => *self = Self::One(idx),
            Self::One(i) => {
                let v = if pos == 0 {
                    vec![idx, *i]
                } else {
                    vec![*i, idx]
                };
                *self = Self::Many(v);
            }
            Self::Many(v) => v.insert(pos, idx),
        }
    }

    pub fn retain(&mut self, keep: impl Fn(&usize) -> bool) {
        match self {
            Self::Empty => {}
            Self::One(i) => {
                if !keep(i) {
                    *self = Self::Empty;
                }
            }
            Self::Many(v) => v.retain(|x| keep(x)),
        }
    }

    pub fn sort_by(&mut self, cmp: impl FnMut(&usize, &usize) -> Ordering) {
        if let Self::Many(v) = self {
            v.sort_by(cmp);
        }
    }
}

impl std::ops::Deref for PodList {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        self.as_slice()
    }
}

impl<'l> IntoIterator for &'l PodList {
    type Item = &'l usize;
    type IntoIter = std::slice::Iter<'l, usize>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}
