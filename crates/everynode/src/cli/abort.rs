//! `everynode rollout abort | retry SET`: call off the rollout of the template's revision, or
//! start it over, without rewriting the template (`spec.abort`, `spec.retry`).

use anyhow::{Context, bail};
use everynode_api::FailurePolicy;
use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_core::{SetView, Timestamp, template_revision};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::sets::{self, FoundSet, SetKind};

/// The abort of `set`'s template revision: the spec patch and what it does, or why not.
pub fn abort_patch(set: &SetView) -> Result<(Value, String), String> {
    let revision = template_revision(set);
    if set
        .spec
        .abort
        .as_ref()
        .is_some_and(|a| a.revision == revision)
    {
        return Err(format!("has its rollout of {revision} aborted already"));
    }
    let stable = set
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.as_deref());
    let Some(stable) = stable else {
        return Err(
            "has no stable revision to go back to (no revision was available on every node \
             yet); `everynode rollout undo --to-revision N` puts an older template back instead"
                .to_owned(),
        );
    };
    if stable == revision {
        return Err(format!(
            "runs its stable revision {revision}: there is no rollout to abort"
        ));
    }
    Ok((
        json!({"spec": {"abort": {"revision": revision}}}),
        format!(
            "rollout of {revision} aborted: pods go back to the stable revision {stable}; the \
             template is left as it is (`everynode rollout retry` resumes the rollout)"
        ),
    ))
}

/// What a retry of `set`'s template revision does.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// The spec patch.
    pub patch: Value,
    /// The revision.
    pub revision: String,
    /// The revision's rollout had failed: its not-Ready pods start again.
    pub failed: bool,
    /// What it does, for the output line.
    pub said: Vec<String>,
}

/// The retry of `set`'s template revision at `now`: removes its abort, drops its failure; an
/// error when it is neither aborted nor failed.
pub fn retry_patch(set: &SetView, now: Timestamp) -> Result<Retry, String> {
    let revision = template_revision(set);
    let aborted = set
        .spec
        .abort
        .as_ref()
        .is_some_and(|a| a.revision == revision);
    let failed = set
        .status
        .as_ref()
        .and_then(|s| s.failure.as_ref())
        .is_some_and(|f| f.revision == revision && f.policy != FailurePolicy::Continue.as_str());
    let mut spec = serde_json::Map::new();
    let mut said = Vec::new();
    if aborted {
        spec.insert("abort".into(), Value::Null);
        said.push("abort removed".to_owned());
    }
    if failed {
        spec.insert(
            "retry".into(),
            json!({"revision": revision, "at": now.to_string()}),
        );
        said.push("failure dropped".to_owned());
    }
    if said.is_empty() {
        return Err(format!(
            "has nothing to retry: its rollout of {revision} is neither aborted nor failed"
        ));
    }
    Ok(Retry {
        patch: json!({ "spec": spec }),
        revision,
        failed,
        said,
    })
}

fn everynode_only(set: &FoundSet, verb: &str) -> anyhow::Result<()> {
    if set.kind != SetKind::Everynode {
        bail!(
            "{} cannot be {verb}: abort and retry are everynode rollout controls (change its \
             apiVersion to everynode.dev/v1alpha1, or use `everynode rollout undo`)",
            set.display()
        );
    }
    Ok(())
}

/// `rollout abort`.
pub async fn abort(client: &kube::Client, set: &FoundSet) -> anyhow::Result<String> {
    everynode_only(set, "aborted")?;
    let (patch, said) = match abort_patch(&set.view) {
        Ok(found) => found,
        Err(why) => bail!("{} {why}", set.display()),
    };
    sets::patch_as_read(client, set, patch).await?;
    Ok(format!("{} {said}", set.display()))
}

/// `rollout retry`: also deletes the revision's pods that are not Ready after a failure, so
/// they start again (the controller creates them anew).
pub async fn retry(
    client: &kube::Client,
    set: &FoundSet,
    now: Timestamp,
) -> anyhow::Result<String> {
    everynode_only(set, "retried")?;
    let retry = match retry_patch(&set.view, now) {
        Ok(found) => found,
        Err(why) => bail!("{} {why}", set.display()),
    };
    sets::patch_as_read(client, set, retry.patch.clone()).await?;
    let mut said = retry.said.join(", ");
    if retry.failed {
        let restarted = restart_unready_pods(client, set, &retry.revision).await?;
        if !restarted.is_empty() {
            said.push_str(&format!(
                "; {} pod(s) that were not Ready deleted to start again: {}",
                restarted.len(),
                restarted.join(", ")
            ));
        }
    }
    Ok(format!(
        "{} retried: rollout of {} ({said})",
        set.display(),
        retry.revision
    ))
}

/// Deletes the set's pods of `revision` that are not Ready; returns their names.
async fn restart_unready_pods(
    client: &kube::Client,
    set: &FoundSet,
    revision: &str,
) -> anyhow::Result<Vec<String>> {
    let hash = revision
        .strip_prefix(&format!("{}-", set.view.name))
        .unwrap_or(revision);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &set.view.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{CONTROLLER_REVISION_HASH}={hash}")))
        .await
        .with_context(|| format!("listing the pods of {revision}"))?;
    let mut deleted = Vec::new();
    for pod in listed
        .items
        .iter()
        .filter(|p| owned_and_unready(p, &set.view.uid))
    {
        let name = pod.name_any();
        pods.delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting pod {name} to start it again"))?;
        deleted.push(name);
    }
    deleted.sort();
    Ok(deleted)
}

fn owned_and_unready(pod: &Pod, set_uid: &str) -> bool {
    let owned = pod
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == set_uid);
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    owned && pod.metadata.deletion_timestamp.is_none() && !ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use everynode_api::{RolloutAbort, RolloutFailure};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn set(stable: Option<&str>) -> SetView {
        let set: everynode_api::DaemonSet = serde_json::from_value(json!({
            "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ops", "uid": "u", "generation": 2},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "c", "image": "agent:v2"}]}}
            },
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                       "numberMisscheduled": 0, "numberReady": 3, "stableRevision": stable}
        }))
        .unwrap();
        SetView::from_daemon_set(&set).unwrap()
    }

    fn failure(revision: &str, policy: &str) -> RolloutFailure {
        RolloutFailure {
            revision: revision.to_owned(),
            reason: "FailedNodesExceeded".to_owned(),
            message: "2 node(s) failed".to_owned(),
            policy: policy.to_owned(),
            since: Time(Timestamp::UNIX_EPOCH),
            failed_nodes: Vec::new(),
        }
    }

    #[test]
    fn abort_names_the_template_revision_and_needs_another_stable_one() {
        let view = set(Some("agent-stable"));
        let revision = template_revision(&view);
        let (patch, said) = abort_patch(&view).unwrap();
        assert_eq!(patch, json!({"spec": {"abort": {"revision": revision}}}));
        assert!(
            said.contains("go back to the stable revision agent-stable"),
            "{said}"
        );

        assert!(
            abort_patch(&set(None))
                .unwrap_err()
                .contains("no stable revision")
        );
        let on_stable = set(Some(&revision));
        assert!(
            abort_patch(&on_stable)
                .unwrap_err()
                .contains("no rollout to abort")
        );
        let mut aborted = view;
        aborted.spec.abort = Some(RolloutAbort { revision });
        assert!(
            abort_patch(&aborted)
                .unwrap_err()
                .contains("aborted already")
        );
    }

    #[test]
    fn retry_removes_the_abort_and_drops_the_failure_of_the_template_revision() {
        let mut view = set(Some("agent-stable"));
        let revision = template_revision(&view);
        assert!(
            retry_patch(&view, Timestamp::UNIX_EPOCH)
                .unwrap_err()
                .contains("neither aborted nor failed")
        );
        view.spec.abort = Some(RolloutAbort {
            revision: revision.clone(),
        });
        let status = view.status.get_or_insert_with(Default::default);
        status.failure = Some(failure(&revision, "Pause"));
        let retry = retry_patch(&view, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(
            retry.patch,
            json!({"spec": {"abort": null, "retry": {"revision": revision, "at": "1970-01-01T00:00:00Z"}}})
        );
        assert!(retry.failed);
        // A failure of another revision, or one that only reported, is nothing to retry.
        view.spec.abort = None;
        for other in [
            failure("agent-old", "Pause"),
            failure(&revision, "Continue"),
        ] {
            view.status.as_mut().unwrap().failure = Some(other);
            assert!(retry_patch(&view, Timestamp::UNIX_EPOCH).is_err());
        }
    }
}
