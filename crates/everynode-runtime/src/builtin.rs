//! Noticing the built-in DaemonSet controller at work beside `--target apps/v1`: two controllers
//! on one set would fight over its pods. The evidence is in the objects' managed fields: the
//! built-in controller (manager `kube-controller-manager`) wrote the set's status, or created one
//! of its pods, after everynode started and within the quiet period (writes before everynode
//! started are a handover's history). While it does, everynode writes none of the set's pods
//! and says so (condition `BuiltInControllerOff=False`, a Warning Event); once it has been quiet
//! for the period, everynode carries on.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The field manager of kube-controller-manager's controllers.
pub const BUILT_IN_MANAGER: &str = "kube-controller-manager";

/// How long after the built-in controller's last write everynode waits before writing the set's
/// pods itself (the default of [`crate::ControllerConfig::builtin_quiet_period`]).
pub const QUIET_PERIOD: Duration = Duration::from_secs(60);

/// Whether the caches keep this managed-fields entry (all others are dropped to save memory).
pub fn keep_entry(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(BUILT_IN_MANAGER)
}

/// Whether the built-in controller wrote the object (a managed-fields entry of its manager).
pub fn wrote(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(keep_entry)
}

/// The latest write of the built-in controller to the set (its status) or to one of its pods
/// (a pod it created) after `started` (when everynode began managing sets: writes before it are
/// a handover's history) and within `quiet` before `now`: `(what, when)`.
pub fn recent_write<'a>(
    set: &ObjectMeta,
    pods: impl IntoIterator<Item = &'a Pod>,
    started: Timestamp,
    now: Timestamp,
    quiet: Duration,
) -> Option<(String, Timestamp)> {
    let since = now
        .checked_sub(SignedDuration::try_from(quiet).ok()?)
        .ok()?
        .max(started);
    let status = last_write(set, Some("status")).map(|t| ("wrote its status".to_owned(), t));
    let pods = pods.into_iter().filter_map(|pod| {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        last_write(&pod.metadata, None).map(|t| (format!("created its pod {name}"), t))
    });
    status
        .into_iter()
        .chain(pods)
        .filter(|(_, at)| *at >= since)
        .max_by_key(|(_, at)| *at)
}

/// When the built-in controller last wrote the object (or the subresource).
fn last_write(meta: &ObjectMeta, subresource: Option<&str>) -> Option<Timestamp> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|e| keep_entry(e) && e.subresource.as_deref() == subresource)
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn written(manager: &str, subresource: Option<&str>, second: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some("agent-x".into()),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some("Update".into()),
                subresource: subresource.map(str::to_owned),
                time: Some(Time(at(second))),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_recent_status_write_or_pod_of_the_built_in_controller_is_evidence() {
        let quiet = Duration::from_secs(60);
        let set = written(BUILT_IN_MANAGER, Some("status"), 1_000);
        assert!(recent_write(&set, [], at(900), at(1_030), quiet).is_some());
        // Written before everynode started: a handover, not a second controller.
        assert!(recent_write(&set, [], at(1_010), at(1_030), quiet).is_none());
        assert!(recent_write(&set, [], at(900), at(1_061), quiet).is_none());
        let pod = Pod {
            metadata: written(BUILT_IN_MANAGER, None, 1_050),
            ..Pod::default()
        };
        let (what, when) =
            recent_write(&set, [&pod], at(900), at(1_070), quiet).unwrap_or_default();
        assert_eq!(
            (what.as_str(), when),
            ("created its pod agent-x", at(1_050))
        );
        // Another manager's writes are not.
        let ours = written("everynode", Some("status"), 1_000);
        assert!(recent_write(&ours, [], at(900), at(1_001), quiet).is_none());
    }
}
