//! One kind of set made from the other, for a migration (pure).

use anyhow::{Context, bail};
use everynode_api::labels::TEMPLATE_GENERATION_ANNOTATION;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

/// Marks an everynode set a migration created and has not finished.
pub const MIGRATION_ANNOTATION: &str = "everynode.dev/migrating-from";

/// kubectl's record of the last applied manifest: it describes the other kind, so it is not
/// carried over.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The name of the ConfigMap an undo keeps the apps/v1 manifest in.
pub fn record_name(set: &str) -> String {
    format!("{set}.everynode-migration")
}

/// The metadata a new set of the other kind gets: name, namespace, labels and annotations
/// (without kubectl's last-applied record, the migration mark and the apps/v1 template
/// generation, which the apiserver keeps for apps/v1 sets only).
fn carried_metadata(meta: &ObjectMeta) -> ObjectMeta {
    let annotations = meta.annotations.clone().map(|mut all| {
        all.remove(LAST_APPLIED);
        all.remove(MIGRATION_ANNOTATION);
        all.remove(TEMPLATE_GENERATION_ANNOTATION);
        all
    });
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        annotations: annotations.filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    }
}

/// The everynode set a migration creates from `built_in`: the same spec (the template as the
/// apiserver stored it, so its revision hash is the same), frozen, marked as migrating.
pub fn everynode_from(built_in: &apps::DaemonSet) -> anyhow::Result<everynode_api::DaemonSet> {
    let spec = built_in
        .spec
        .as_ref()
        .context("the apps/v1 DaemonSet has no spec")?;
    let mut spec: everynode_api::DaemonSetSpec =
        serde_json::from_value(serde_json::to_value(spec)?)
            .context("the apps/v1 spec does not fit the everynode kind")?;
    spec.frozen = Some(true);
    let mut metadata = carried_metadata(&built_in.metadata);
    metadata
        .annotations
        .get_or_insert_default()
        .insert(MIGRATION_ANNOTATION.to_owned(), "apps/v1".to_owned());
    Ok(everynode_api::DaemonSet {
        metadata,
        spec,
        status: None,
    })
}

/// Fields of an everynode spec that apps/v1 lacks, by JSON path.
const EVERYNODE_ONLY: [&str; 4] = ["paused", "frozen", "abort", "retry"];
/// The only `rollingUpdate` fields apps/v1 has.
const APPS_ROLLING_UPDATE: [&str; 2] = ["maxUnavailable", "maxSurge"];

/// The apps/v1 set an undo creates from `set`, and the everynode-only fields it leaves out
/// (`spec.frozen`, which the undo itself sets, is not listed).
pub fn built_in_from(
    set: &everynode_api::DaemonSet,
) -> anyhow::Result<(apps::DaemonSet, Vec<String>)> {
    let mut spec = serde_json::to_value(&set.spec)?;
    let mut dropped = Vec::new();
    let Value::Object(fields) = &mut spec else {
        bail!("the everynode spec is not an object");
    };
    for field in EVERYNODE_ONLY {
        if fields.remove(field).is_some_and(|v| !v.is_null()) && field != "frozen" {
            dropped.push(format!("spec.{field}"));
        }
    }
    if let Some(Value::Object(rolling)) = fields
        .get_mut("updateStrategy")
        .and_then(|s| s.get_mut("rollingUpdate"))
    {
        let extra: Vec<String> = rolling
            .keys()
            .filter(|k| !APPS_ROLLING_UPDATE.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in extra {
            rolling.remove(&key);
            dropped.push(format!("spec.updateStrategy.rollingUpdate.{key}"));
        }
    }
    let spec: apps::DaemonSetSpec =
        serde_json::from_value(spec).context("the everynode spec does not fit apps/v1")?;
    let built_in = apps::DaemonSet {
        metadata: carried_metadata(&set.metadata),
        spec: Some(spec),
        status: None,
    };
    Ok((built_in, dropped))
}

/// `selector` as a label selector string for a list.
pub fn selector_string(selector: &LabelSelector) -> anyhow::Result<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            "DoesNotExist" => format!("!{}", expression.key),
            other => bail!("unknown selector operator {other:?}"),
        });
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn built_in() -> apps::DaemonSet {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ops", "uid": "u1", "resourceVersion": "7",
                         "labels": {"team": "infra"},
                         "annotations": {"deprecated.daemonset.template.generation": "2",
                                         LAST_APPLIED: "{}"}},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": {"type": "RollingUpdate",
                                   "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "revisionHistoryLimit": 10,
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "c", "image": "agent:v1",
                                                      "imagePullPolicy": "IfNotPresent"}]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_everynode_set_has_the_same_template_and_starts_frozen_and_marked() {
        let set = everynode_from(&built_in()).unwrap();
        let original = built_in().spec.unwrap();
        assert_eq!(
            serde_json::to_value(&set.spec.template).unwrap(),
            serde_json::to_value(&original.template).unwrap()
        );
        assert_eq!(set.spec.frozen, Some(true));
        let annotations = set.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[MIGRATION_ANNOTATION], "apps/v1");
        assert!(!annotations.contains_key(TEMPLATE_GENERATION_ANNOTATION));
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(
            (set.metadata.uid, set.metadata.resource_version),
            (None, None)
        );
    }

    #[test]
    fn back_to_apps_v1_the_everynode_only_fields_are_named_and_left_out() {
        let mut set = everynode_from(&built_in()).unwrap();
        let rolling = set
            .spec
            .update_strategy
            .as_mut()
            .and_then(|s| s.rolling_update.as_mut())
            .unwrap();
        rolling.partition = Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2));
        set.spec.paused = Some(true);
        let (back, dropped) = built_in_from(&set).unwrap();
        assert_eq!(
            dropped,
            ["spec.paused", "spec.updateStrategy.rollingUpdate.partition"]
        );
        assert_eq!(
            serde_json::to_value(back.spec.unwrap()).unwrap(),
            serde_json::to_value(built_in().spec.unwrap()).unwrap()
        );
        assert_eq!(
            back.metadata.annotations, None,
            "the migration mark is left behind"
        );
        assert_eq!(back.metadata.labels, built_in().metadata.labels);
    }

    #[test]
    fn selectors_read_as_list_selectors() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "agent"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&selector).unwrap(),
            "app=agent,tier in (a,b),!canary"
        );
    }
}
