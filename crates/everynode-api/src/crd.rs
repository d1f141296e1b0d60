//! The CustomResourceDefinition: generation, YAML rendering, and local evaluation of its
//! validation rules (the same schema and CEL rules the apiserver enforces at admission).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use std::sync::OnceLock;

use kube::core::cel::{CompiledSchema, RootContext, Validator, compile_schema};

use crate::v1alpha1::DaemonSet;

/// Path of the committed CRD manifest, relative to the repository root.
pub const CRD_MANIFEST_PATH: &str = "deploy/crds/daemonsets.everynode.dev.yaml";

/// The CRD for `daemonsets.everynode.dev`.
///
/// The pod template's schema is the full core/v1 `PodTemplateSpec` schema (so the apiserver keeps
/// every field a pod accepts); its field descriptions are dropped to keep the CRD small enough for
/// client-side `kubectl apply` (whose last-applied annotation is limited to 256 KiB).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = DaemonSet::crd();
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(template) = property(root, &["spec", "template"]) {
            let description = template.description.take();
            strip_descriptions(template);
            template.description = description;
        }
        bound_for_cel_cost(root);
        key_lists_by_name(root);
        shape_node_overrides(root);
    }
    crd
}

/// Pod-template lists whose items upstream keys by `name` (`+listType=map`): the apiserver then
/// refuses a duplicate name at admission (a pod with two containers of one name would be refused
/// anyway, only later), and server-side apply merges them by name, as for apps/v1.
fn key_lists_by_name(root: &mut JSONSchemaProps) {
    for list in [
        "containers",
        "initContainers",
        "ephemeralContainers",
        "volumes",
    ] {
        if let Some(schema) = property(root, &["spec", "template", "spec", list]) {
            schema.x_kubernetes_list_type = Some("map".to_owned());
            schema.x_kubernetes_list_map_keys = Some(vec!["name".to_owned()]);
        }
    }
}

/// Most overrides a set may have, and most containers one override may change (each node is
/// matched against the overrides in every plan).
const OVERRIDES_MAX: i64 = 32;

/// `spec.nodeOverrides`: overrides and their containers keyed by name (the apiserver refuses a
/// duplicate, naming it), size bounds (also for the CEL cost estimate of the selector rule),
/// and the descriptions of the pod types they reuse dropped, as the template's are. Container
/// names are checked against the template by the planner: a CEL rule over both lists costs more
/// than the apiserver allows.
fn shape_node_overrides(root: &mut JSONSchemaProps) {
    let Some(overrides) = property(root, &["spec", "nodeOverrides"]) else {
        return;
    };
    overrides.x_kubernetes_list_type = Some("map".to_owned());
    overrides.x_kubernetes_list_map_keys = Some(vec!["name".to_owned()]);
    overrides.max_items = Some(OVERRIDES_MAX);
    let Some(JSONSchemaPropsOrArray::Schema(item)) = overrides.items.as_mut() else {
        return;
    };
    if let Some(name) = property(item, &["name"]) {
        name.max_length = Some(LABEL_VALUE_MAX);
    }
    if let Some(expressions) = property(item, &["nodeSelector", "matchExpressions"]) {
        bound_expressions(expressions);
    }
    let Some(containers) = property(item, &["containers"]) else {
        return;
    };
    containers.x_kubernetes_list_type = Some("map".to_owned());
    containers.x_kubernetes_list_map_keys = Some(vec!["name".to_owned()]);
    containers.max_items = Some(OVERRIDES_MAX);
    if let Some(JSONSchemaPropsOrArray::Schema(container)) = containers.items.as_mut() {
        for field in ["resources", "env"] {
            if let Some(schema) = property(container, &[field]) {
                let description = schema.description.take();
                strip_descriptions(schema);
                schema.description = description;
            }
        }
    }
}

/// Largest label value, and largest qualified label key (253-character prefix, '/', 63-character
/// name), that Kubernetes accepts.
const LABEL_VALUE_MAX: i64 = 63;
const LABEL_KEY_MAX: i64 = 317;
/// Upper bound on selector terms. apps/v1 has none; the apiserver needs one to accept the CEL
/// rules that check the selector against the template (their estimated cost scales with it).
const SELECTOR_TERMS_MAX: i64 = 256;

/// Declares the size bounds the apiserver's CEL cost estimator needs. They are Kubernetes' own
/// limits for label keys and values, plus [`SELECTOR_TERMS_MAX`] selector terms.
fn bound_for_cel_cost(root: &mut JSONSchemaProps) {
    if let Some(labels) = property(root, &["spec", "selector", "matchLabels"]) {
        labels.max_properties = Some(SELECTOR_TERMS_MAX);
        if let Some(JSONSchemaPropsOrBool::Schema(value)) = labels.additional_properties.as_mut() {
            value.max_length = Some(LABEL_VALUE_MAX);
        }
    }
    if let Some(expressions) = property(root, &["spec", "selector", "matchExpressions"]) {
        expressions.max_items = Some(SELECTOR_TERMS_MAX);
        if let Some(JSONSchemaPropsOrArray::Schema(requirement)) = expressions.items.as_mut() {
            if let Some(key) = property(requirement, &["key"]) {
                key.max_length = Some(LABEL_KEY_MAX);
            }
            if let Some(operator) = property(requirement, &["operator"]) {
                operator.max_length = Some(16);
            }
            if let Some(values) = property(requirement, &["values"]) {
                values.max_items = Some(SELECTOR_TERMS_MAX);
                if let Some(JSONSchemaPropsOrArray::Schema(value)) = values.items.as_mut() {
                    value.max_length = Some(LABEL_VALUE_MAX);
                }
            }
        }
    }
    if let Some(labels) = property(root, &["spec", "template", "metadata", "labels"])
        && let Some(JSONSchemaPropsOrBool::Schema(value)) = labels.additional_properties.as_mut()
    {
        value.max_length = Some(LABEL_VALUE_MAX);
    }
    let rolling = ["spec", "updateStrategy", "rollingUpdate"];
    if let Some(order) = property(root, &[&rolling[..], &["order"]].concat()) {
        if let Some(label) = property(order, &["label"]) {
            label.max_length = Some(LABEL_KEY_MAX);
        }
        if let Some(values) = property(order, &["values"]) {
            values.max_items = Some(SELECTOR_TERMS_MAX);
            if let Some(JSONSchemaPropsOrArray::Schema(value)) = values.items.as_mut() {
                value.max_length = Some(LABEL_VALUE_MAX);
            }
        }
        if let Some(type_) = property(order, &["type"]) {
            type_.max_length = Some(16);
        }
    }
    if let Some(policy) = property(root, &[&rolling[..], &["newNodePolicy"]].concat()) {
        policy.max_length = Some(16);
    }
    if let Some(kind) = property(root, &[&rolling[..], &["rollingUpdateType"]].concat()) {
        kind.max_length = Some(32);
    }
    if let Some(key) = property(root, &[&rolling[..], &["topologyKey"]].concat()) {
        key.max_length = Some(LABEL_KEY_MAX);
    }
    if let Some(expressions) = property(
        root,
        &[&rolling[..], &["selector", "matchExpressions"]].concat(),
    ) {
        bound_expressions(expressions);
    }
    for budget in [
        "maxUnavailable",
        "maxSurge",
        "partition",
        "maxUnavailablePerDomain",
    ] {
        let path = ["spec", "updateStrategy", "rollingUpdate", budget];
        if let Some(budget) = property(root, &path) {
            budget.max_length = Some(16);
        }
    }
}

/// Bounds a node selector's `matchExpressions`: terms, operator length, values.
fn bound_expressions(expressions: &mut JSONSchemaProps) {
    expressions.max_items = Some(SELECTOR_TERMS_MAX);
    if let Some(JSONSchemaPropsOrArray::Schema(requirement)) = expressions.items.as_mut() {
        if let Some(operator) = property(requirement, &["operator"]) {
            operator.max_length = Some(16);
        }
        if let Some(values) = property(requirement, &["values"]) {
            values.max_items = Some(SELECTOR_TERMS_MAX);
        }
    }
}

/// The schema of the property at `path` below `schema`.
fn property<'a>(schema: &'a mut JSONSchemaProps, path: &[&str]) -> Option<&'a mut JSONSchemaProps> {
    path.iter().try_fold(schema, |node, name| {
        node.properties.as_mut()?.get_mut(*name)
    })
}

fn strip_descriptions(schema: &mut JSONSchemaProps) {
    schema.description = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_descriptions(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_descriptions(items);
    }
    if let Some(JSONSchemaPropsOrArray::Schemas(items)) = schema.items.as_mut() {
        items.iter_mut().for_each(strip_descriptions);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        strip_descriptions(extra);
    }
    for group in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        group.iter_mut().flatten().for_each(strip_descriptions);
    }
}

/// The CRD as YAML, exactly as committed under [`CRD_MANIFEST_PATH`].
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(&crd())?;
    Ok(format!(
        "# Generated by `everynode crd`; do not edit. A test keeps this file in sync.\n{body}"
    ))
}

/// One rule of the CRD that a manifest breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, e.g. `spec.updateStrategy.rollingUpdate.maxSurge`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Evaluates the CRD's validation rules locally against a DaemonSet given as JSON (as read from
/// a manifest), after applying the schema defaults, as the apiserver does at admission. `old` is
/// the stored object for update checks (immutable selector, status transitions).
///
/// Returns every broken rule, sorted by field path.
pub fn validate(object: &serde_json::Value, old: Option<&serde_json::Value>) -> Vec<Violation> {
    let Some(schema) = compiled_schema() else {
        return vec![Violation {
            field: String::new(),
            message: "internal error: the generated CRD has no openAPIV3Schema".to_owned(),
        }];
    };
    let context = RootContext {
        api_version: "everynode.dev/v1alpha1".to_owned(),
        api_group: "everynode.dev".to_owned(),
        kind: "DaemonSet".to_owned(),
    };
    let mut violations: Vec<Violation> = match Validator::new().validate_compiled_with_context(
        schema,
        object,
        old,
        Some(&context),
    ) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| Violation {
                field: e.field_path.trim_start_matches('.').to_owned(),
                message: e.message,
            })
            .collect(),
    };
    violations.sort_by(|a, b| (&a.field, &a.message).cmp(&(&b.field, &b.message)));
    violations.dedup();
    violations
}

/// The CRD schema with its CEL rules compiled, built once per process.
fn compiled_schema() -> Option<&'static CompiledSchema> {
    static COMPILED: OnceLock<Option<CompiledSchema>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let crd = crd();
            let version = crd.spec.versions.first()?;
            let schema = version.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            Some(compile_schema(&serde_json::to_value(schema).ok()?))
        })
        .as_ref()
}
