//! Which nodes run a daemon pod (§2): the `NodeShouldRunDaemonPod` predicate.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.
//!
//! The template's node name, node selector, required node affinity and tolerations (with the
//! automatically added ones of §2.2) are compiled once into a [`NodeMatcher`]; evaluating a
//! node is then allocation-free unless it is excluded.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, PodTemplateSpec, Taint, Toleration};

use crate::index::strs;
use crate::reason::NodeExcluded;
use crate::snapshot::NodeView;

/// Taint keys of the default tolerations (§2.2).
pub mod taint_keys {
    /// `node.kubernetes.io/not-ready`.
    pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
    /// `node.kubernetes.io/unreachable`.
    pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    /// `node.kubernetes.io/disk-pressure`.
    pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
    /// `node.kubernetes.io/memory-pressure`.
    pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
    /// `node.kubernetes.io/pid-pressure`.
    pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
    /// `node.kubernetes.io/unschedulable`.
    pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
    /// `node.kubernetes.io/network-unavailable`.
    pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
}

/// Result of the predicate for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eligibility {
    /// A daemon pod should be created on the node.
    pub should_run: bool,
    /// An existing daemon pod may keep running (true whenever `should_run`).
    pub should_continue_running: bool,
    /// Why the node is excluded (`None` when `should_run`).
    pub excluded: Option<NodeExcluded>,
}

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(effect.to_owned()),
        ..Default::default()
    }
}

/// The tolerations the controller adds to every daemon pod, in upstream order (§2.2).
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    use taint_keys::*;
    let mut v = vec![
        exists(NOT_READY, "NoExecute"),
        exists(UNREACHABLE, "NoExecute"),
        exists(DISK_PRESSURE, "NoSchedule"),
        exists(MEMORY_PRESSURE, "NoSchedule"),
        exists(PID_PRESSURE, "NoSchedule"),
        exists(UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        v.push(exists(NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    v
}

fn same_identity(a: &Toleration, b: &Toleration) -> bool {
    a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
}

/// Upstream `AddOrUpdateTolerationInPodSpec`: a toleration with the same key, operator, value
/// and effect is replaced (dropping e.g. its `tolerationSeconds`), an identical one is kept,
/// otherwise the toleration is appended.
pub fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, toleration: &Toleration) {
    let mut updated = false;
    for existing in tolerations.iter_mut() {
        if same_identity(existing, toleration) {
            if existing == toleration {
                return;
            }
            *existing = toleration.clone();
            updated = true;
        }
    }
    if !updated {
        tolerations.push(toleration.clone());
    }
}

/// The template's tolerations with the default ones added or updated.
pub fn effective_tolerations(template: &PodTemplateSpec) -> Vec<Toleration> {
    let spec = template.spec.as_ref();
    let mut tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    for t in default_tolerations(host_network) {
        add_or_update_toleration(&mut tolerations, &t);
    }
    tolerations
}

/// A strict decimal int64 (`-?(0|[1-9][0-9]*)`), as used by numeric toleration operators.
fn parse_decimal(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

/// Whether `toleration` tolerates `taint` (standard rules plus the 1.35 numeric `Gt`/`Lt`
/// operators: the taint value compared against the toleration value as int64).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    let tol_value = toleration.value.as_deref().unwrap_or("");
    let taint_value = taint.value.as_deref().unwrap_or("");
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => tol_value == taint_value,
        "Exists" => true,
        op @ ("Gt" | "Lt") => match (parse_decimal(tol_value), parse_decimal(taint_value)) {
            (Some(t), Some(n)) => {
                if op == "Gt" {
                    n > t
                } else {
                    n < t
                }
            }
            _ => false,
        },
        _ => false,
    }
}

#[derive(Clone, Debug)]
enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
    NameIn(Vec<String>),
    NameNotIn(Vec<String>),
    Never,
}

fn compile_label_req(r: &NodeSelectorRequirement) -> Req {
    let vals = r.values.clone().unwrap_or_default();
    let key = r.key.clone();
    match r.operator.as_str() {
        "In" if !vals.is_empty() => Req::In(key, vals),
        "NotIn" if !vals.is_empty() => Req::NotIn(key, vals),
        "Exists" if vals.is_empty() => Req::Exists(key),
        "DoesNotExist" if vals.is_empty() => Req::DoesNotExist(key),
        "Gt" | "Lt" if vals.len() == 1 => match vals[0].parse::<i64>() {
            Ok(n) if r.operator == "Gt" => Req::Gt(key, n),
            Ok(n) => Req::Lt(key, n),
            Err(_) => Req::Never,
        },
        _ => Req::Never,
    }
}

fn compile_field_req(r: &NodeSelectorRequirement) -> Req {
    let vals = r.values.clone().unwrap_or_default();
    if r.key != everynode_api::labels::NODE_NAME_FIELD {
        return Req::Never;
    }
    match r.operator.as_str() {
        "In" if vals.len() == 1 => Req::NameIn(vals),
        "NotIn" if vals.len() == 1 => Req::NameNotIn(vals),
        // Field selectors accept exactly one value.
        _ => Req::Never,
    }
}

impl Req {
    fn matches(&self, node: &NodeView) -> bool {
        let labels: &BTreeMap<String, String> = &node.labels;
        match self {
            Self::In(k, vals) => labels.get(k).is_some_and(|v| vals.contains(v)),
            Self::NotIn(k, vals) => labels.get(k).is_none_or(|v| !vals.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
            Self::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Self::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
            Self::NameIn(vals) => vals.contains(&node.name),
            Self::NameNotIn(vals) => vals.iter().all(|v| *v != node.name),
            Self::Never => false,
        }
    }
}

/// A toleration compiled for repeated taint checks: the same decision as [`tolerates`] without
/// re-reading the operator and re-parsing the value for every taint.
#[derive(Clone, Debug)]
struct CompiledToleration {
    /// Required taint effect (`None`: any).
    effect: Option<String>,
    /// Required taint key (`None`: any).
    key: Option<String>,
    op: TolerationOp,
}

#[derive(Clone, Debug)]
enum TolerationOp {
    /// `""`/`Equal`: the taint value (empty when absent) equals this one.
    Equal(String),
    Exists,
    /// Numeric `Gt`/`Lt` against a valid int64 toleration value.
    Gt(i64),
    Lt(i64),
    /// Unknown operator, or `Gt`/`Lt` with an invalid value.
    Never,
}

impl CompiledToleration {
    fn new(t: &Toleration) -> Self {
        let value = t.value.as_deref().unwrap_or("");
        let op = match t.operator.as_deref().unwrap_or("") {
            "" | "Equal" => TolerationOp::Equal(value.to_owned()),
            "Exists" => TolerationOp::Exists,
            op @ ("Gt" | "Lt") => match parse_decimal(value) {
                Some(n) if op == "Gt" => TolerationOp::Gt(n),
                Some(n) => TolerationOp::Lt(n),
                None => TolerationOp::Never,
            },
            _ => TolerationOp::Never,
        };
        Self {
            effect: t.effect.clone().filter(|e| !e.is_empty()),
            key: t.key.clone().filter(|k| !k.is_empty()),
            op,
        }
    }

    /// Same result as [`tolerates`] for the toleration this was compiled from.
    fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.as_ref().is_some_and(|e| *e != taint.effect)
            || self.key.as_ref().is_some_and(|k| *k != taint.key)
        {
            return false;
        }
        let taint_value = || taint.value.as_deref().unwrap_or("");
        match &self.op {
            TolerationOp::Equal(v) => v == taint_value(),
            TolerationOp::Exists => true,
            TolerationOp::Gt(t) => parse_decimal(taint_value()).is_some_and(|n| n > *t),
            TolerationOp::Lt(t) => parse_decimal(taint_value()).is_some_and(|n| n < *t),
            TolerationOp::Never => false,
        }
    }
}

/// The predicate's outcome for one node, borrowing what the reason needs: the owned
/// [`NodeExcluded`] is only built for excluded nodes ([`NodeMatcher::reason`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Verdict<'n> {
    /// The node should run a daemon pod.
    Eligible,
    /// The template's `spec.nodeName` names another node.
    NodeName,
    /// Entry `.0` of the node selector does not match.
    Selector(usize),
    /// No required affinity term matches.
    Affinity,
    /// An untolerated taint; existing pods keep running unless it is `NoExecute`.
    Taint {
        /// The reported taint.
        taint: &'n Taint,
        /// `shouldContinueRunning`.
        keep: bool,
    },
}

impl Verdict<'_> {
    /// `shouldRun`.
    pub(crate) fn should_run(self) -> bool {
        matches!(self, Self::Eligible)
    }

    /// `shouldContinueRunning`.
    pub(crate) fn should_continue_running(self) -> bool {
        matches!(self, Self::Eligible | Self::Taint { keep: true, .. })
    }
}

/// The §2.1 predicate, compiled from a pod template.
#[derive(Clone, Debug)]
pub struct NodeMatcher {
    node_name: Option<String>,
    node_selector: Vec<(String, String)>,
    /// `None`: no required affinity (matches all). `Some(terms)`: terms ORed, each ANDed.
    required_terms: Option<Vec<Vec<Req>>>,
    tolerations: Vec<Toleration>,
    compiled_tolerations: Vec<CompiledToleration>,
}

impl NodeMatcher {
    /// Compiles the predicate for `template`.
    pub fn new(template: &PodTemplateSpec) -> Self {
        let spec = template.spec.as_ref();
        let node_name = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let node_selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let required_terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    .map(|term| {
                        let exprs = term
                            .match_expressions
                            .iter()
                            .flatten()
                            .map(compile_label_req);
                        let fields = term.match_fields.iter().flatten().map(compile_field_req);
                        let reqs: Vec<Req> = exprs.chain(fields).collect();
                        // An empty term matches no node.
                        if reqs.is_empty() {
                            vec![Req::Never]
                        } else {
                            reqs
                        }
                    })
                    .collect()
            });
        let tolerations = effective_tolerations(template);
        let compiled_tolerations = tolerations.iter().map(CompiledToleration::new).collect();
        Self {
            node_name,
            node_selector,
            required_terms,
            tolerations,
            compiled_tolerations,
        }
    }

    /// The predicate of a set: its template's, with the toleration of its node readiness gate.
    pub fn for_set(spec: &everynode_api::DaemonSetSpec) -> Self {
        let mut matcher = Self::new(&spec.template);
        if let Some(toleration) = crate::gate::gate_toleration(spec) {
            add_or_update_toleration(&mut matcher.tolerations, &toleration);
            matcher.compiled_tolerations = matcher
                .tolerations
                .iter()
                .map(CompiledToleration::new)
                .collect();
        }
        matcher
    }

    /// The tolerations used for taint checks (template's plus defaults).
    pub fn tolerations(&self) -> &[Toleration] {
        &self.tolerations
    }

    /// `NodeShouldRunDaemonPod(node) → (shouldRun, shouldContinueRunning)` with the reason.
    pub fn evaluate(&self, node: &NodeView) -> Eligibility {
        let verdict = self.check(node);
        Eligibility {
            should_run: verdict.should_run(),
            should_continue_running: verdict.should_continue_running(),
            excluded: self.reason(verdict),
        }
    }

    /// The predicate without building the reason.
    pub(crate) fn check<'n>(&self, node: &'n NodeView) -> Verdict<'n> {
        if let Some(wanted) = &self.node_name
            && *wanted != node.name
        {
            return Verdict::NodeName;
        }
        for (i, (k, v)) in self.node_selector.iter().enumerate() {
            if !strs::label(&node.labels, k).is_some_and(|got| strs::eq(got, v)) {
                return Verdict::Selector(i);
            }
        }
        if let Some(terms) = &self.required_terms
            && !terms
                .iter()
                .any(|reqs| reqs.iter().all(|r| r.matches(node)))
        {
            return Verdict::Affinity;
        }
        if node.taints.is_empty() {
            return Verdict::Eligible;
        }
        let mut first: Option<&Taint> = None;
        let mut no_execute: Option<&Taint> = None;
        for taint in &node.taints {
            if taint.effect != "NoSchedule" && taint.effect != "NoExecute" {
                continue;
            }
            if self.compiled_tolerations.iter().any(|t| t.tolerates(taint)) {
                continue;
            }
            first.get_or_insert(taint);
            if taint.effect == "NoExecute" {
                no_execute = Some(taint);
                break;
            }
        }
        match no_execute.or(first) {
            None => Verdict::Eligible,
            Some(taint) => Verdict::Taint {
                taint,
                keep: no_execute.is_none(),
            },
        }
    }

    /// Why a node with this verdict is excluded (`None` when eligible).
    pub(crate) fn reason(&self, verdict: Verdict<'_>) -> Option<NodeExcluded> {
        Some(match verdict {
            Verdict::Eligible => return None,
            Verdict::NodeName => NodeExcluded::NodeNameMismatch {
                node_name: self.node_name.clone().unwrap_or_default(),
            },
            Verdict::Selector(i) => {
                let (key, value) = self.node_selector.get(i)?;
                NodeExcluded::NodeSelectorMismatch {
                    key: key.clone(),
                    value: value.clone(),
                }
            }
            Verdict::Affinity => NodeExcluded::NodeAffinityMismatch,
            Verdict::Taint { taint: t, .. } => NodeExcluded::TaintNotTolerated {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone(),
            },
        })
    }
}

/// One-shot predicate (compiles the template each call; use [`NodeMatcher`] in loops).
pub fn node_should_run(template: &PodTemplateSpec, node: &NodeView) -> Eligibility {
    NodeMatcher::new(template).evaluate(node)
}
