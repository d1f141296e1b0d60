//! Rendering a daemon pod from the template (§2.2, §2.3, §4.4), generated pod names and
//! the reverse lookup of a pod's target node (`GetTargetNodeName`).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use std::collections::BTreeMap;

use everynode_api::labels::{CONTROLLER_REVISION_HASH, NODE_NAME_FIELD, POD_TEMPLATE_GENERATION};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::eligibility::effective_tolerations;
use crate::revision::SAFE_ALPHABET;

/// Why a pod's target node cannot be determined (the controller then ignores the pod).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetNodeError {
    /// No `spec.nodeName` and no required node affinity.
    #[error("pod has no spec.nodeName and no required node affinity")]
    NoAffinity,
    /// Required node affinity without terms.
    #[error("pod's required node affinity has no terms")]
    NoTerms,
    /// The `metadata.name In` requirement has zero or several values.
    #[error("pod's metadata.name node affinity does not name exactly one node")]
    NotUnique,
    /// No `metadata.name In` requirement in any term.
    #[error("pod's node affinity does not pin it to a node")]
    NoNodeName,
}

/// `GetTargetNodeName`: `spec.nodeName` if set, else the single value of the first required
/// `matchFields` requirement `metadata.name In [..]`.
pub fn target_node_name(pod: &Pod) -> Result<String, TargetNodeError> {
    let spec = pod.spec.as_ref();
    if let Some(n) = spec
        .and_then(|s| s.node_name.as_ref())
        .filter(|n| !n.is_empty())
    {
        return Ok(n.clone());
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .ok_or(TargetNodeError::NoAffinity)?;
    if required.node_selector_terms.is_empty() {
        return Err(TargetNodeError::NoTerms);
    }
    for term in &required.node_selector_terms {
        for req in term.match_fields.iter().flatten() {
            if req.key == NODE_NAME_FIELD && req.operator == "In" {
                return match req.values.as_deref() {
                    Some([one]) => Ok(one.clone()),
                    _ => Err(TargetNodeError::NotUnique),
                };
            }
        }
    }
    Err(TargetNodeError::NoNodeName)
}

fn pin_term(node: &str) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: NODE_NAME_FIELD.to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![node.to_owned()]),
        }]),
        match_expressions: None,
    }
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node affinity becomes exactly one
/// term `metadata.name In [node]`; preferred terms, pod (anti-)affinity are kept.
pub fn replace_node_name_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    required.node_selector_terms = vec![pin_term(node)];
    affinity
}

/// Labels of a new pod: template labels, `pod-template-generation` when the set has a template
/// generation, `controller-revision-hash` when `hash` is non-empty (`CreatePodTemplate`).
pub fn pod_labels(
    template: &PodTemplateSpec,
    hash: &str,
    template_generation: Option<i64>,
) -> BTreeMap<String, String> {
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(g) = template_generation {
        labels.insert(POD_TEMPLATE_GENERATION.to_owned(), g.to_string());
    }
    if !hash.is_empty() {
        labels.insert(CONTROLLER_REVISION_HASH.to_owned(), hash.to_owned());
    }
    labels
}

/// `CreatePodTemplate`: template with default tolerations and the hash/generation labels
/// (node affinity not yet pinned).
pub fn pod_template(
    template: &PodTemplateSpec,
    hash: &str,
    template_generation: Option<i64>,
) -> PodTemplateSpec {
    let mut out = template.clone();
    let labels = pod_labels(template, hash, template_generation);
    out.metadata.get_or_insert_with(ObjectMeta::default).labels = Some(labels);
    let tolerations = effective_tolerations(template);
    out.spec.get_or_insert_with(Default::default).tolerations = Some(tolerations);
    out
}

/// A controller owner reference (`controller: true`, `blockOwnerDeletion: true`).
pub fn controller_owner_reference(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What [`render_pod`] needs.
#[derive(Clone, Copy, Debug)]
pub struct RenderParams<'a> {
    /// Set name (name prefix).
    pub set_name: &'a str,
    /// Namespace of the pod.
    pub namespace: &'a str,
    /// The set's pod template.
    pub template: &'a PodTemplateSpec,
    /// Revision hash (label `controller-revision-hash`).
    pub hash: &'a str,
    /// apps/v1 template generation, if any (label `pod-template-generation`).
    pub template_generation: Option<i64>,
    /// Controller owner reference to the set.
    pub owner: &'a OwnerReference,
    /// The node the pod is pinned to.
    pub node: &'a str,
    /// Pod name (normally from [`generated_pod_name`]).
    pub pod_name: &'a str,
    /// Tolerations added to the template's and the default ones (the node readiness gate's,
    /// [`crate::gate::gate_toleration`]).
    pub extra_tolerations: &'a [Toleration],
}

/// Builds the full pod for one node: labels, annotations and finalizers from the template,
/// the owner reference, default tolerations, and required node affinity pinned to the node.
pub fn render_pod(p: &RenderParams<'_>) -> Pod {
    let tpl = pod_template(p.template, p.hash, p.template_generation);
    let tmeta = tpl.metadata.unwrap_or_default();
    let mut spec = tpl.spec.unwrap_or_default();
    if !p.extra_tolerations.is_empty() {
        let tolerations = spec.tolerations.get_or_insert_default();
        for toleration in p.extra_tolerations {
            crate::eligibility::add_or_update_toleration(tolerations, toleration);
        }
    }
    spec.affinity = Some(replace_node_name_affinity(spec.affinity.take(), p.node));
    Pod {
        metadata: ObjectMeta {
            name: Some(p.pod_name.to_owned()),
            namespace: Some(p.namespace.to_owned()),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![p.owner.clone()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv64a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV64_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV64_PRIME);
        }
    }
    h
}

/// Length of the random part of a pod name (upstream: `generateName`'s five characters).
pub const POD_NAME_SUFFIX_LEN: usize = 5;
/// Maximum length of a pod name's prefix `<set>-` (upstream: 63 less the suffix).
pub const POD_NAME_MAX_PREFIX_LEN: usize = 63 - POD_NAME_SUFFIX_LEN;

/// A pod name as upstream's `generateName: <set>-` gives: the prefix `<set>-` cut to 58 bytes,
/// then five characters of the safe alphabet — drawn here from `seed` (fresh for every plan),
/// the node, the revision hash and `attempt` (raised while a name is taken), so a new pod does
/// not take the name of a pod that existed before it and the planner stays deterministic.
pub fn generated_pod_name(
    set_name: &str,
    seed: u64,
    node_name: &str,
    revision_hash: &str,
    attempt: u32,
) -> String {
    let mut h = fnv64a(&[
        &seed.to_le_bytes(),
        node_name.as_bytes(),
        b"/",
        revision_hash.as_bytes(),
        b"/",
        &attempt.to_le_bytes(),
    ]);
    let mut name = String::with_capacity(POD_NAME_MAX_PREFIX_LEN + POD_NAME_SUFFIX_LEN);
    name.push_str(set_name);
    name.push('-');
    let mut cut = name.len().min(POD_NAME_MAX_PREFIX_LEN);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name.truncate(cut);
    for _ in 0..POD_NAME_SUFFIX_LEN {
        name.push(char::from(SAFE_ALPHABET[(h % 27) as usize]));
        h /= 27;
    }
    name
}
