//! Revision history (§5): the template hash, revision data and matching, and the history
//! actions of one plan (claim, create, renumber, dedup with pod relabelling, collision
//! detection, cleanup).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.
//!
//! The hash is FNV-1a 32 over a canonical JSON encoding of the normalised template (object
//! keys sorted recursively, `null`s and empty objects/arrays dropped), followed — only when
//! `collisionCount` is set — by the count as u32 little-endian and four zero bytes; the
//! decimal sum is then mapped through upstream's `SafeEncodeString` alphabet. It does not
//! depend on serde_json's map order, Rust or everynode versions.
//!
//! New revisions hold exactly the bytes upstream's controller writes for the same template
//! ([`encode_revision_data`], see [`crate::gojson`]): the built-in controller finds its current
//! revision by comparing bytes, so a set handed back to it keeps its revision and pods.
//!
//! Matching here compares *parsed* revision data after the normalisation, so revisions written
//! by any controller or version (the Go controller's, everynode's earlier normalised ones) match
//! and a takeover keeps their pods: the hash used for pods is always the label of the matching
//! revision, never recomputed.

use std::collections::{BTreeMap, BTreeSet};

use everynode_api::NodeOverride;
use everynode_api::labels::CONTROLLER_REVISION_HASH;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::gojson;
use crate::reason::RevisionDeleteReason;
use crate::snapshot::{Owner, RevisionView};

/// Upstream `SafeEncodeString` alphabet (no vowels, no confusable characters).
pub const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// Recursively drops `null` members and members that are empty objects or empty arrays.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = normalize(v);
                let empty = match &v {
                    Value::Null => true,
                    Value::Object(m) => m.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// Writes `value` as compact JSON with object keys sorted (byte order) at every level, scalars
/// as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    gojson::write_sorted(
        value,
        &gojson::Scalars {
            string: |s, out| out.push_str(&Value::from(s).to_string()),
            other: |v, out| out.push_str(&v.to_string()),
        },
        &mut out,
    );
    out
}

fn template_value(template: &PodTemplateSpec) -> Value {
    // Serialising k8s-openapi types cannot fail (no maps with non-string keys).
    serde_json::to_value(template).unwrap_or(Value::Null)
}

/// FNV-1a 32-bit.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream `SafeEncodeString`: every byte `c` becomes `alphabet[c % 27]`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// Hash of a template value that is already normalised.
fn hash_normalized(normalized: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = canonical_json(normalized).into_bytes();
    if let Some(c) = collision_count {
        // Upstream writes 8 bytes: the count as u32 little-endian, then zeros.
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0]);
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// The revision hash of `template` (see the module doc).
pub fn hash_template(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    hash_normalized(&normalize(&template_value(template)), collision_count)
}

/// Revision name `<set>-<hash>`.
pub fn revision_name(set_name: &str, hash: &str) -> String {
    format!("{set_name}-{hash}")
}

/// The name of the revision of `set`'s template and node overrides (`status.updateRevision`
/// once planned).
pub fn template_revision(set: &crate::snapshot::SetView) -> String {
    let spec = &set.spec;
    let hash =
        TemplateDigest::of_spec(&spec.template, spec.overrides(), set.collision_count()).hash;
    revision_name(&set.name, &hash)
}

/// `{"spec":{"template":{…,"$patch":"replace"}}}`, upstream's `getPatch` shape.
fn data_with_template(template: &Value) -> Value {
    let mut tpl = match template {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    tpl.insert("$patch".to_owned(), Value::String("replace".to_owned()));
    let mut spec = Map::new();
    spec.insert("template".to_owned(), Value::Object(tpl));
    let mut root = Map::new();
    root.insert("spec".to_owned(), Value::Object(spec));
    Value::Object(root)
}

/// Revision data `{"spec":{"template":{…,"$patch":"replace"}}}` as upstream's controller
/// writes it (decoded; [`encode_revision_data`] gives the bytes).
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    data_with_template(&gojson::with_go_nulls(template_value(template)))
}

/// The bytes of [`revision_data`] as upstream's controller writes them (Go's encoding).
pub fn encode_revision_data(template: &PodTemplateSpec) -> String {
    encode_data(template_value(template))
}

fn encode_data(template: Value) -> String {
    gojson::encode(&data_with_template(&gojson::with_go_nulls(template)))
}

/// The pod template stored in revision `data` (`{"spec":{"template":{…}}}`), or `None` when
/// the data holds no decodable template.
pub fn template_from_data(data: &Value) -> Option<PodTemplateSpec> {
    let mut template = data.get("spec")?.get("template")?.clone();
    if let Value::Object(fields) = &mut template {
        fields.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Whether revision `data` describes `template` (semantic comparison after normalising).
pub fn data_matches(template: &PodTemplateSpec, data: &Value) -> bool {
    TemplateDigest::new(template, None).matches(data)
}

/// The node overrides stored in revision `data` (`{"spec":{"nodeOverrides":[…]}}`): empty
/// when it has none, `None` when they cannot be decoded.
pub fn overrides_from_data(data: &Value) -> Option<Vec<NodeOverride>> {
    match data.get("spec").and_then(|s| s.get("nodeOverrides")) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(overrides) => serde_json::from_value(overrides.clone()).ok(),
    }
}

/// The current template, prepared once per plan.
#[derive(Clone, Debug)]
pub struct TemplateDigest {
    /// Hash with the set's collision count.
    pub hash: String,
    /// Normalised revision data (what [`Self::matches`] compares).
    pub data: Value,
    /// The bytes a new revision holds ([`encode_revision_data`]).
    pub encoded: String,
}

impl TemplateDigest {
    /// Hashes and encodes `template` with `collision_count`.
    pub fn new(template: &PodTemplateSpec, collision_count: Option<i32>) -> Self {
        let value = template_value(template);
        let normalized = normalize(&value);
        Self {
            hash: hash_normalized(&normalized, collision_count),
            data: data_with_template(&normalized),
            encoded: encode_data(value),
        }
    }

    /// The revision of `template` with node `overrides` (everynode only): without overrides
    /// exactly [`Self::new`]; with them the data also holds `spec.nodeOverrides`, and the hash
    /// covers both.
    pub fn of_spec(
        template: &PodTemplateSpec,
        overrides: &[NodeOverride],
        collision_count: Option<i32>,
    ) -> Self {
        if overrides.is_empty() {
            return Self::new(template, collision_count);
        }
        let value = template_value(template);
        let normalized = normalize(&value);
        let overrides = serde_json::to_value(overrides).unwrap_or(Value::Null);
        let normalized_overrides = normalize(&overrides);
        let mut both = Map::new();
        both.insert("nodeOverrides".to_owned(), normalized_overrides.clone());
        both.insert("template".to_owned(), normalized.clone());
        let with_overrides = |mut data: Value, overrides: Value| {
            if let Some(Value::Object(spec)) = data.get_mut("spec") {
                spec.insert("nodeOverrides".to_owned(), overrides);
            }
            data
        };
        Self {
            hash: hash_normalized(&Value::Object(both), collision_count),
            data: with_overrides(data_with_template(&normalized), normalized_overrides),
            encoded: gojson::encode(&with_overrides(
                data_with_template(&gojson::with_go_nulls(value)),
                overrides,
            )),
        }
    }

    /// Whether `data` matches this template.
    pub fn matches(&self, data: &Value) -> bool {
        normalize(data) == self.data
    }
}

/// A revision to create.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewRevision {
    /// `<set>-<hash>`.
    pub name: String,
    /// The hash (label `controller-revision-hash`).
    pub hash: String,
    /// `revision`.
    pub revision: i64,
    /// `data`: the bytes upstream's controller writes for this template.
    #[serde(serialize_with = "as_json")]
    pub data: String,
    /// Template labels plus the hash label.
    pub labels: BTreeMap<String, String>,
    /// Copy of the set's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Writes encoded JSON as the JSON value it holds (plans print revision data as an object).
fn as_json<S: serde::Serializer>(encoded: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<Value>(encoded)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

/// A revision delete.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevisionDelete {
    /// Revision name.
    pub name: String,
    /// Why.
    pub reason: RevisionDeleteReason,
}

/// History actions of one plan, in the order the runtime should apply them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HistoryPlan {
    /// Orphan revisions matching the selector: add the controller reference.
    pub adopt: Vec<String>,
    /// Owned revisions whose labels no longer match the selector: remove the reference.
    pub release: Vec<String>,
    /// Legacy revisions without the hash label: set `controller-revision-hash=<own name>`.
    pub add_hash_label: Vec<String>,
    /// Create the current revision.
    pub create: Option<NewRevision>,
    /// Renumber the current revision: `(name, new revision)`.
    pub renumber: Option<(String, i64)>,
    /// Pods to relabel to the kept duplicate's hash: `(pod name, hash)`.
    pub relabel_pods: Vec<(String, String)>,
    /// Revisions to delete (duplicates, then cleanup).
    pub delete: Vec<RevisionDelete>,
    /// Set `status.collisionCount` to this value: the computed revision name is taken by a
    /// revision with other data. No pod actions are planned in that round.
    pub collision_count: Option<i32>,
    /// Name of the current revision.
    pub current: String,
    /// Hash of the current revision (used for pods).
    pub hash: String,
    /// Number of the current revision.
    pub current_revision: i64,
}

/// Hash label of a revision, falling back to its name (legacy migration).
pub(crate) fn rev_hash(rev: &RevisionView) -> &str {
    rev.labels
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
        .unwrap_or(&rev.name)
}

/// Result of [`construct_history`].
#[derive(Clone, Debug)]
pub struct ConstructedHistory<'a> {
    /// The planned actions.
    pub plan: HistoryPlan,
    /// Old (non-matching) claimed revisions, for cleanup.
    pub old: Vec<&'a RevisionView>,
    /// Hashes of deleted duplicates: pods carrying them are relabelled to `plan.hash`.
    pub duplicate_hashes: BTreeSet<String>,
}

/// `constructHistory` (§5.3/§5.4) over the claimed revisions.
///
/// `claimed` are the revisions owned by (or adopted into) the set; `all` every revision in the
/// namespace (for name collisions).
pub fn construct_history<'a>(
    set_name: &str,
    set_annotations: &BTreeMap<String, String>,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    digest: &TemplateDigest,
    claimed: &[&'a RevisionView],
    all: &'a [RevisionView],
) -> ConstructedHistory<'a> {
    let mut plan = HistoryPlan::default();
    let mut current: Vec<&RevisionView> = Vec::new();
    let mut old: Vec<&RevisionView> = Vec::new();
    for rev in claimed {
        if !rev.labels.contains_key(CONTROLLER_REVISION_HASH) {
            plan.add_hash_label.push(rev.name.clone());
        }
        if digest.matches(&rev.data) {
            current.push(rev);
        } else {
            old.push(rev);
        }
    }
    let next_revision = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let mut duplicate_hashes = BTreeSet::new();
    if current.is_empty() {
        let name = revision_name(set_name, &digest.hash);
        match all.iter().find(|r| r.name == name) {
            Some(existing) if digest.matches(&existing.data) => {
                // Upstream: AlreadyExists with matching data → use it as is.
                plan.current = name;
                plan.hash = rev_hash(existing).to_owned();
                plan.current_revision = existing.revision;
            }
            Some(_) => {
                plan.collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
                plan.current = name;
                plan.hash = digest.hash.clone();
            }
            None => {
                let mut labels = template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                labels.insert(CONTROLLER_REVISION_HASH.to_owned(), digest.hash.clone());
                plan.create = Some(NewRevision {
                    name: name.clone(),
                    hash: digest.hash.clone(),
                    revision: next_revision,
                    data: digest.encoded.clone(),
                    labels,
                    annotations: set_annotations.clone(),
                });
                plan.current = name;
                plan.hash = digest.hash.clone();
                plan.current_revision = next_revision;
            }
        }
    } else {
        // Keep the highest revision number; ties go to the later one in (revision, name) order.
        current.sort_by(|a, b| {
            a.revision
                .cmp(&b.revision)
                .then_with(|| a.name.cmp(&b.name))
        });
        let keep = current[current.len() - 1];
        let keep_hash = rev_hash(keep).to_owned();
        for dup in &current[..current.len() - 1] {
            let h = rev_hash(dup);
            if h != keep_hash {
                duplicate_hashes.insert(h.to_owned());
            }
            plan.delete.push(RevisionDelete {
                name: dup.name.clone(),
                reason: RevisionDeleteReason::Duplicate {
                    kept: keep.name.clone(),
                },
            });
        }
        plan.current = keep.name.clone();
        plan.hash = keep_hash;
        plan.current_revision = keep.revision;
        if keep.revision < next_revision {
            plan.renumber = Some((keep.name.clone(), next_revision));
            plan.current_revision = next_revision;
        }
    }
    ConstructedHistory {
        plan,
        old,
        duplicate_hashes,
    }
}

/// `cleanupHistory` (§5.5): delete the oldest old revisions beyond `limit` whose hash no pod
/// carries.
pub fn cleanup_history(
    old: &[&RevisionView],
    limit: i32,
    live_hashes: &BTreeSet<&str>,
) -> Vec<RevisionDelete> {
    let excess = i64::try_from(old.len()).unwrap_or(i64::MAX) - i64::from(limit.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&RevisionView> = old.to_vec();
    sorted.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut out = Vec::new();
    for rev in sorted {
        if i64::try_from(out.len()).unwrap_or(i64::MAX) >= excess {
            break;
        }
        if live_hashes.contains(rev_hash(rev)) {
            continue;
        }
        out.push(RevisionDelete {
            name: rev.name.clone(),
            reason: RevisionDeleteReason::HistoryLimit { limit },
        });
    }
    out
}

/// Claim decision for an object with `owner` and labels matching or not.
pub(crate) fn claim(owner: Owner, matches: bool, deleting: bool) -> Claim {
    match owner {
        Owner::Other => Claim::Ignore,
        Owner::ThisSet if matches => Claim::Keep,
        Owner::ThisSet => Claim::Release,
        Owner::Orphan if matches && !deleting => Claim::Adopt,
        Owner::Orphan => Claim::Ignore,
    }
}

/// Outcome of the controller-ref manager for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    Keep,
    Adopt,
    Release,
    Ignore,
}
