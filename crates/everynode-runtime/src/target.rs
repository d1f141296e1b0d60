//! The DaemonSet kinds the controller can run: everynode's own `everynode.dev/v1alpha1` sets, or
//! the built-in `apps/v1` sets on clusters whose kube-controller-manager runs without its
//! DaemonSet controller. The same engine runs both; this module is the only place that knows
//! which kind it is.

use everynode_core::SetView;
use everynode_core::plan::PlannedRollback;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;

/// Which DaemonSets the controller runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// `everynode.dev/v1alpha1` DaemonSets.
    #[default]
    Everynode,
    /// The built-in `apps/v1` DaemonSets (kube-controller-manager's DaemonSet controller must be
    /// off: `--controllers=*,-daemonset-controller`).
    AppsV1,
}

impl Target {
    /// `apiVersion` of the target's sets.
    pub fn api_version(self) -> String {
        match self {
            Self::Everynode => everynode_api::DaemonSet::api_version(&()).into_owned(),
            Self::AppsV1 => apps::DaemonSet::api_version(&()).into_owned(),
        }
    }
}

/// A DaemonSet kind the controller can run.
pub trait SetResource:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// `spec.selector`, when there is a spec.
    fn selector(&self) -> Option<&LabelSelector>;

    /// The planner's view of the set.
    fn view(&self) -> Result<SetView, Error>;

    /// `status.observedGeneration`.
    fn observed_generation(&self) -> Option<i64>;

    /// `status` as this kind stores it, for a status patch.
    fn status_json(&self, status: &everynode_api::DaemonSetStatus) -> Result<Value, Error>;

    /// Whether the kind's status carries everynode's rollout status (revisions, pods per
    /// revision, rollout conditions); apps/v1 keeps upstream's status exactly.
    const ROLLOUT_STATUS: bool;

    /// The set with the rollback's template (and node overrides, on the everynode kind), for a
    /// replace that keeps this object's resourceVersion as its precondition.
    fn with_revision(&self, rollback: &PlannedRollback) -> Self;
}

fn key(meta: &impl ResourceExt) -> String {
    format!(
        "{}/{}",
        meta.namespace().unwrap_or_default(),
        meta.name_any()
    )
}

impl SetResource for everynode_api::DaemonSet {
    const ROLLOUT_STATUS: bool = true;

    fn selector(&self) -> Option<&LabelSelector> {
        Some(&self.spec.selector)
    }

    fn view(&self) -> Result<SetView, Error> {
        let mut view = SetView::from_daemon_set(self).map_err(|source| Error::Snapshot {
            set: key(self),
            source,
        })?;
        // Nothing bumps `deprecated.daemonset.template.generation` on an everynode set when its
        // template changes (apps/v1's apiserver does): one copied from an apps/v1 manifest
        // would make every pod of that generation look up to date. Pods match by hash alone.
        view.template_generation = None;
        Ok(view)
    }

    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref()?.observed_generation
    }

    /// The status as a merge patch: fields that can go away (the wave once the rollout is past
    /// it, the current revision of a set without pods, the failure of an earlier template,
    /// skipped nodes that came back) are sent as `null` when unset, since a merge patch keeps
    /// what it does not mention.
    fn status_json(&self, status: &everynode_api::DaemonSetStatus) -> Result<Value, Error> {
        let mut value = serde_json::to_value(status).map_err(|source| Error::Convert {
            set: key(self),
            field: "status",
            source,
        })?;
        if let Some(fields) = value.as_object_mut() {
            for clearable in [
                "wave",
                "currentRevision",
                "failure",
                "skippedNodes",
                "blockedNodes",
                "blockedTotals",
                "gatedNodes",
            ] {
                fields.entry(clearable).or_insert(Value::Null);
            }
        }
        Ok(value)
    }

    fn with_revision(&self, rollback: &PlannedRollback) -> Self {
        let mut set = self.clone();
        set.spec.template = rollback.template.clone();
        set.spec.node_overrides = rollback.node_overrides.clone();
        set
    }
}

impl SetResource for apps::DaemonSet {
    const ROLLOUT_STATUS: bool = false;

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|spec| &spec.selector)
    }

    fn view(&self) -> Result<SetView, Error> {
        everynode_core::convert::from_apps_v1(self)
            .and_then(|set| SetView::from_daemon_set(&set))
            .map_err(|source| Error::Snapshot {
                set: key(self),
                source,
            })
    }

    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref()?.observed_generation
    }

    fn with_revision(&self, rollback: &PlannedRollback) -> Self {
        let mut set = self.clone();
        if let Some(spec) = set.spec.as_mut() {
            spec.template = rollback.template.clone();
        }
        set
    }

    /// The apps/v1 shape: conditions as `DaemonSetCondition` (no `observedGeneration`).
    fn status_json(&self, status: &everynode_api::DaemonSetStatus) -> Result<Value, Error> {
        let apps_status = everynode_core::convert::status_to_apps_v1(status).map_err(|source| {
            Error::Snapshot {
                set: key(self),
                source,
            }
        })?;
        serde_json::to_value(apps_status).map_err(|source| Error::Convert {
            set: key(self),
            field: "status",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn built_in(status: Option<serde_json::Value>) -> apps::DaemonSet {
        let mut value = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {
                "name": "agent", "namespace": "ops", "uid": "u-1", "generation": 3,
                "annotations": {"deprecated.daemonset.template.generation": "2"}
            },
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "agent", "image": "agent:v1"}]}
                },
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "revisionHistoryLimit": 10
            }
        });
        if let Some(status) = status {
            value["status"] = status;
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_everynode_status_patch_clears_the_wave_once_it_is_gone() {
        let set = everynode_api::DaemonSet::new("agent", everynode_api::DaemonSetSpec::default());
        let written = set
            .status_json(&everynode_api::DaemonSetStatus::default())
            .unwrap();
        assert_eq!(written["wave"], Value::Null);
        assert!(written.as_object().unwrap().contains_key("wave"));
    }

    #[test]
    fn a_built_in_set_gives_the_same_view_as_the_everynode_set_with_its_spec() {
        let view = built_in(None).view().unwrap();
        assert_eq!(view.name, "agent");
        assert_eq!(view.namespace, "ops");
        assert_eq!(view.uid, "u-1");
        assert_eq!(view.generation, Some(3));
        assert_eq!(view.template_generation, Some(2));
        assert_eq!(view.spec.revision_history_limit, Some(10));
        let strategy = view.spec.update_strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    }

    #[test]
    fn omitted_zero_counters_of_a_built_in_status_read_as_zero() {
        let set = built_in(Some(serde_json::json!({
            "currentNumberScheduled": 2, "desiredNumberScheduled": 2,
            "numberMisscheduled": 0, "numberReady": 2, "observedGeneration": 3,
            "numberAvailable": 2
        })));
        let status = set.view().unwrap().status.unwrap();
        assert_eq!(status.number_available, Some(2));
        assert_eq!(status.number_unavailable, Some(0));
        assert_eq!(status.updated_number_scheduled, Some(0));
    }

    #[test]
    fn built_in_conditions_without_reason_or_time_are_read_and_written_back_in_apps_shape() {
        let set = built_in(Some(serde_json::json!({
            "currentNumberScheduled": 1, "desiredNumberScheduled": 1,
            "numberMisscheduled": 0, "numberReady": 1,
            "conditions": [{"type": "Custom", "status": "True"}]
        })));
        let status = set.view().unwrap().status.unwrap();
        let conditions = status.conditions.clone().unwrap();
        assert_eq!(conditions[0].type_, "Custom");
        assert_eq!(conditions[0].reason, "");
        let written = set.status_json(&status).unwrap();
        assert_eq!(written["conditions"][0]["type"], "Custom");
        assert!(written["conditions"][0].get("observedGeneration").is_none());
        assert_eq!(written["numberReady"], 1);
    }

    #[test]
    fn a_built_in_set_without_spec_is_a_snapshot_error_naming_it() {
        let set = apps::DaemonSet {
            metadata: ObjectMeta {
                name: Some("bare".into()),
                namespace: Some("ops".into()),
                ..ObjectMeta::default()
            },
            ..apps::DaemonSet::default()
        };
        let err = set.view().unwrap_err().to_string();
        assert!(err.contains("ops/bare"), "{err}");
        assert!(err.contains("no spec"), "{err}");
    }
}
