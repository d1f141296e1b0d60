//! Pod builders and predicates for tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Image name used by test pods. Nothing pulls images here (KWOK plays the kubelet), so it
/// deliberately points at a reserved domain.
pub const TEST_IMAGE: &str = "registry.invalid/everynode/pause:never-pulled";

/// A one-container pod with `labels`; `node` pins it through a `kubernetes.io/hostname` node
/// selector (so the scheduler still places it), `None` leaves placement to the scheduler.
#[must_use]
pub fn pod(name: &str, labels: &BTreeMap<String, String>, node: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some(TEST_IMAGE.to_owned()),
                ..Container::default()
            }],
            node_selector: node
                .map(|n| BTreeMap::from([("kubernetes.io/hostname".to_owned(), n.to_owned())])),
            termination_grace_period_seconds: Some(0),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Adds a container port (and optionally a host port) to the pod's first container.
#[must_use]
pub fn with_port(mut pod: Pod, container_port: i32, host_port: Option<i32>) -> Pod {
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.ports.get_or_insert_with(Vec::new).push(ContainerPort {
            container_port,
            host_port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        });
    }
    pod
}

/// Whether the pod's Ready condition is True.
#[must_use]
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|(status, _, _)| status == "True")
}

/// `(status, reason, message)` of a pod condition.
#[must_use]
pub fn condition(pod: &Pod, type_: &str) -> Option<(String, String, String)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// `Type=Status` of every condition, sorted, for failure messages.
#[must_use]
pub fn conditions_summary(pod: &Pod) -> String {
    let mut v: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| format!("{}={}", c.type_, c.status))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    format!("[{}]", v.join(","))
}

/// The current time as an RFC 3339 string (for condition timestamps).
#[must_use]
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(
            |_| k8s_openapi::jiff::Timestamp::now().to_string(),
            |t| t.to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_pod_has_hostname_selector_and_host_port() {
        let p = with_port(pod("a", &BTreeMap::new(), Some("n1")), 80, Some(8080));
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()["kubernetes.io/hostname"], "n1");
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].host_port,
            Some(8080)
        );
    }

    #[test]
    fn now_is_rfc3339() {
        let n = now();
        assert!(n.ends_with('Z') && n.contains('T'), "{n}");
    }
}
