//! The planner's working copy of the cluster: claimed pods grouped by target node
//! (`getNodesToDaemonPods`), with virtual creates/deletes applied between the manage and
//! rolling-update steps, and the pod predicates shared by those steps (§4.6, §6.0).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::eligibility::Eligibility;
use crate::reason::NodeExcluded;
use crate::snapshot::{NodeView, PodPhase};

/// A pod in the working copy (real or virtually created).
#[derive(Clone, Debug)]
pub(crate) struct WPod<'a> {
    pub name: Cow<'a, str>,
    pub scheduled: bool,
    pub created: Option<Timestamp>,
    pub phase: PodPhase,
    pub ready: bool,
    pub deleting: bool,
    /// Index of the input pod, `None` for virtual pods.
    pub input: Option<usize>,
    /// The hash label equals the current hash (manage's notion of "new").
    pub current: bool,
    /// `IsPodUpdated` for the current hash and template generation.
    pub updated: bool,
    /// `IsPodAvailable` at the plan's `now`.
    pub available: bool,
}

impl WPod<'_> {
    /// Pod ordering (§4.6): scheduled first, then creation time, then name.
    pub fn order(&self, other: &Self) -> Ordering {
        other
            .scheduled
            .cmp(&self.scheduled)
            .then_with(|| self.created.cmp(&other.created))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// A node's [`Eligibility`] in the working copy: the flags inline and the (rarely present)
/// reason boxed, which keeps [`Slot`] small — the slot list is walked several times per plan.
#[derive(Clone, Debug)]
pub(crate) struct SlotElig {
    pub should_run: bool,
    pub should_continue_running: bool,
    pub excluded: Option<Box<NodeExcluded>>,
}

impl From<Eligibility> for SlotElig {
    fn from(e: Eligibility) -> Self {
        Self {
            should_run: e.should_run,
            should_continue_running: e.should_continue_running,
            excluded: e.excluded.map(Box::new),
        }
    }
}

/// One node of the node list with its predicate result and pods.
#[derive(Clone, Debug)]
pub(crate) struct Slot<'a> {
    pub node: &'a NodeView,
    pub elig: SlotElig,
    /// Indices into [`State::pods`] of the pods mapped to this node (still present).
    pub pods: PodList,
}

/// The working copy.
#[derive(Clone, Debug)]
pub(crate) struct State<'a> {
    pub pods: Vec<WPod<'a>>,
    /// Node list sorted by name.
    pub slots: Vec<Slot<'a>>,
    /// Pods whose target node is not in the node list, by node name.
    pub vanished: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> State<'a> {
    /// Sorts every node's pods by the §4.6 ordering.
    pub fn sort_pods(&mut self) {
        let pods = &self.pods;
        for slot in &mut self.slots {
            slot.pods.sort_by(|a, b| pods[*a].order(&pods[*b]));
        }
        for list in self.vanished.values_mut() {
            list.sort_by(|a, b| pods[*a].order(&pods[*b]));
        }
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

    /// Virtually creates a pod of `hash` on slot `slot` (unscheduled, not ready, created `now`).
    pub fn add_created(&mut self, slot: usize, name: String, now: Timestamp) {
        let idx = self.pods.len();
        self.pods.push(WPod {
            name: Cow::Owned(name),
            scheduled: false,
            created: Some(now),
            phase: PodPhase::Pending,
            ready: false,
            deleting: false,
            input: None,
            current: true,
            updated: true,
            available: false,
        });
        // Unscheduled pods sort after scheduled ones and creation `now` is the latest time, so
        // appending keeps the order except against other unscheduled pods created at `now`.
        let pods = &self.pods;
        let list = &mut self.slots[slot].pods;
        let pos = list.partition_point(|p| pods[*p].order(&pods[idx]) == Ordering::Less);
        list.insert(pos, idx);
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
    pub fn as_slice(&self) -> &[usize] {
        match self {
            Self::Empty => &[],
            Self::One(i) => std::slice::from_ref(i),
            Self::Many(v) => v,
        }
    }

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
