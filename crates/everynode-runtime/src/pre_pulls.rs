//! The image pre-pulls a plan asks for (`rollingUpdate.prePull`): pre-pull pods created and
//! deleted, and the pulls the apiserver refused, so the planner updates those nodes without
//! waiting for them.

use std::collections::HashMap;
use std::sync::Mutex;

use everynode_core::prepull_pod::pre_pull_pod;
use everynode_core::{Plan, PlanInput, controller_owner_reference};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};

use crate::error::is_status;
use crate::target::SetResource;

/// The pre-pulls the apiserver refused: per set (`namespace/name`, with its UID), each node's
/// revision hash.
#[derive(Debug, Default)]
pub struct PrePullRefusals {
    refused: Mutex<HashMap<String, Refused>>,
}

/// The refused pre-pulls of one set.
#[derive(Debug, Default)]
struct Refused {
    uid: String,
    hash_by_node: HashMap<String, String>,
}

impl PrePullRefusals {
    /// `(node, hash)` of the refused pre-pulls of the set `key` with `uid`.
    pub fn of(&self, key: &str, uid: &str) -> Vec<(String, String)> {
        self.lock()
            .get(key)
            .filter(|r| r.uid == uid)
            .map_or_else(Vec::new, |r| {
                r.hash_by_node
                    .iter()
                    .map(|(node, hash)| (node.clone(), hash.clone()))
                    .collect()
            })
    }

    fn refuse(&self, key: &str, uid: &str, node: &str, hash: &str) {
        let mut refused = self.lock();
        let entry = refused.entry(key.to_owned()).or_default();
        if entry.uid != uid {
            *entry = Refused {
                uid: uid.to_owned(),
                hash_by_node: HashMap::new(),
            };
        }
        entry.hash_by_node.insert(node.to_owned(), hash.to_owned());
    }

    /// Drops what is known about the set `key` (it is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Refused>> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates and deletes the plan's pre-pull pods. A create that exists already is fine; one the
/// apiserver refuses (admission, quota) is recorded in `refusals` and its node is updated
/// without a pull. A failure here fails nothing else: a pull only saves time.
pub async fn apply<K: SetResource>(
    refusals: &PrePullRefusals,
    pods: &Api<Pod>,
    input: &PlanInput,
    plan: &Plan,
) {
    let set = &input.set;
    let owner =
        controller_owner_reference(&K::api_version(&()), &K::kind(&()), &set.name, &set.uid);
    let creates = plan.pre_pull.creates.iter().map(|create| {
        let pod = pre_pull_pod(create, &set.namespace, &set.uid, &owner, &set.spec.template);
        async move { (create, pods.create(&PostParams::default(), &pod).await) }
    });
    for (create, result) in join_all(creates).await {
        match result {
            Ok(_) => {
                tracing::info!(pod = %create.pod_name, node = %create.node, images = ?create.images, "pre-pulling images");
            }
            Err(err) if is_status(&err, 409) => {}
            Err(err) => {
                tracing::warn!(pod = %create.pod_name, node = %create.node, error = %err, "pre-pull refused; the node is updated without it");
                if matches!(&err, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429)
                {
                    let key = crate::key::set_key(&set.namespace, &set.name);
                    refusals.refuse(&key, &set.uid, &create.node, &create.hash);
                }
            }
        }
    }
    let deletes = plan.pre_pull.deletes.iter().map(|(name, uid)| async move {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        (name, pods.delete(name, &params).await)
    });
    for (name, result) in join_all(deletes).await {
        match result {
            Ok(_) => tracing::debug!(pod = %name, "pre-pull pod deleted"),
            Err(err) if is_status(&err, 404) || is_status(&err, 409) => {}
            Err(err) => tracing::warn!(pod = %name, error = %err, "deleting a pre-pull pod failed"),
        }
    }
}
