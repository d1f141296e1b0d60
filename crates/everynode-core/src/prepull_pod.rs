//! The pod that pulls a revision's images on a node ahead of its update
//! (`rollingUpdate.prePull`, planned by the plan's pre-pull step).
//!
//! It is pinned to the node (`spec.nodeName`: no scheduling), tolerates every taint, runs each
//! image with `sh -c 'exit 0'` and is never restarted; it carries the template's image pull
//! secrets and service account (whose pull secrets a kubelet also uses), no token, and a
//! restricted security context. Its owner reference to the set is not a controller reference:
//! the set never adopts it, and it goes with the set.

use std::collections::BTreeMap;

use everynode_api::labels::{PRE_PULL_HASH_LABEL, PRE_PULL_OF_LABEL};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::plan::PrePullCreate;

/// The pre-pull pod `create` asks for, for the set with `owner` (made a plain owner
/// reference) and `uid`, in `namespace`; `template` is the set's (pull secrets, service
/// account).
pub fn pre_pull_pod(
    create: &PrePullCreate,
    namespace: &str,
    set_uid: &str,
    owner: &OwnerReference,
    template: &PodTemplateSpec,
) -> Pod {
    let labels = BTreeMap::from([
        (PRE_PULL_OF_LABEL.to_owned(), set_uid.to_owned()),
        (PRE_PULL_HASH_LABEL.to_owned(), create.hash.clone()),
    ]);
    let owner = OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..owner.clone()
    };
    let pod_spec = template.spec.as_ref();
    let containers = create
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| Container {
            name: format!("pull-{i}"),
            image: Some(image.clone()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), "exit 0".to_owned()]),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    add: None,
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(create.pod_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(create.node.clone()),
            restart_policy: Some("Never".to_owned()),
            termination_grace_period_seconds: Some(0),
            automount_service_account_token: Some(false),
            service_account_name: pod_spec.and_then(|s| s.service_account_name.clone()),
            image_pull_secrets: pod_spec.and_then(|s| s.image_pull_secrets.clone()),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".to_owned()),
                ..Toleration::default()
            }]),
            containers,
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_pinned_tolerates_everything_and_is_not_controlled_by_the_set() {
        let create = PrePullCreate {
            node: "n1".into(),
            pod_name: "agent-pull-abcde".into(),
            hash: "h2".into(),
            images: vec!["agent:v2".into(), "sidecar:v2".into()],
        };
        let owner = OwnerReference {
            api_version: "everynode.dev/v1alpha1".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let pod = pre_pull_pod(&create, "ops", "uid-1", &owner, &PodTemplateSpec::default());
        let meta = &pod.metadata;
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].controller, None);
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[PRE_PULL_OF_LABEL], "uid-1");
        assert_eq!(labels[PRE_PULL_HASH_LABEL], "h2");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let images: Vec<_> = spec
            .containers
            .iter()
            .map(|c| c.image.clone().unwrap())
            .collect();
        assert_eq!(images, ["agent:v2", "sidecar:v2"]);
    }
}
