//! Carrying out a plan: ownership, history, pod deletes, in-place updates and creates (slow start),
//! status and Events — in the order upstream uses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use everynode_api::labels::{CONTROLLER_REVISION_HASH, IN_PLACE_UPDATE_ANNOTATION};
use everynode_core::{Plan, PlanInput, RenderParams, controller_owner_reference, render_pod};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, is_status};
use crate::events::{PodWrite, PodWriteEvents, publish_plan_events, publish_pod_writes};
use crate::key::set_key;
use crate::target::SetResource;

/// Applies `plan` for `set`. Pod writes happen only when the input's expectations were
/// satisfied (the planner plans none otherwise). A failed step does not stop the others (the
/// pods of a joining node are created even when a delete was refused); the failures are
/// returned and the planned status, which counts every planned write as done, is not written.
/// `Ok(Some(wait))`: a status write that only reports progress was held back (see
/// [`crate::pacing`]); reconcile again after `wait`.
pub async fn apply_plan<K: SetResource>(
    ctx: &Context,
    set: &K,
    input: &PlanInput,
    plan: &Plan,
) -> Result<Option<Duration>, Vec<Error>> {
    publish_plan_events(&ctx.recorder, set, &plan.events);
    let mut events = PodWriteEvents::default();
    let failures = apply_writes::<K>(ctx, set, input, plan, &mut events).await;
    publish_pod_writes(&ctx.recorder, &ctx.pod_write_windows, set, events);
    if !failures.is_empty() {
        return Err(failures);
    }
    let Some(write) = plan.status_write else {
        return Ok(None);
    };
    let key = set_key(&input.set.namespace, &input.set.name);
    let now = Instant::now();
    if let Some(wait) = ctx
        .status_pacer
        .wait(&key, now)
        .filter(|_| write.may_wait())
    {
        tracing::debug!(?wait, "status progress held back");
        return Ok(Some(wait));
    }
    write_status(ctx, set, plan).await.map_err(|e| vec![e])?;
    ctx.status_pacer.went(&key, now);
    Ok(None)
}

/// The writes of a plan in upstream's order: ownership, history, deletes, in-place updates,
/// creates. Returns the failures. Only a refused adoption re-check or a revision name collision
/// stops the rest (upstream applies nothing more of such a plan).
async fn apply_writes<K: SetResource>(
    ctx: &Context,
    set: &K,
    input: &PlanInput,
    plan: &Plan,
    events: &mut PodWriteEvents,
) -> Vec<Error> {
    let namespace = input.set.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let revisions: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), namespace);
    let key = set_key(namespace, &input.set.name);
    let mut failures = Vec::new();
    match adopt_and_release::<K>(ctx, input, plan, &pods, &revisions).await {
        Err(err @ Error::AdoptionRecheckFailed { .. }) => return vec![err],
        Err(err) => failures.push(err),
        Ok(()) => {}
    }
    match apply_history(ctx, set, input, plan, &pods, &revisions).await {
        Ok(true) => return failures,
        Ok(false) => {}
        Err(err) => failures.push(err),
    }
    for update in &plan.backoff_updates {
        ctx.backoff.store(
            &input.set.uid,
            update.key_generation,
            &update.node,
            update.entry,
        );
    }
    ctx.expectations.expect(
        &key,
        &input.set.uid,
        plan.creates.iter().map(|c| c.pod_name.clone()),
        plan.deletes
            .iter()
            .filter(|d| !d.uid.is_empty())
            .map(|d| (d.uid.clone(), d.pod.clone())),
        plan.updates.iter().map(|u| (u.pod.clone(), u.hash.clone())),
        Instant::now(),
    );
    let deleted = delete_pods(ctx, &key, plan, &pods, events).await;
    let updated = update_pods_in_place(ctx, set, &key, plan, &pods, events).await;
    let created = create_pods::<K>(ctx, &key, input, plan, &pods, events).await;
    crate::pre_pulls::apply::<K>(&ctx.pre_pull_refusals, &pods, input, plan).await;
    failures.extend(
        [deleted, updated, created]
            .into_iter()
            .filter_map(Result::err),
    );
    failures
}

async fn adopt_and_release<K: SetResource>(
    ctx: &Context,
    input: &PlanInput,
    plan: &Plan,
    pods: &Api<Pod>,
    revisions: &Api<ControllerRevision>,
) -> Result<(), Error> {
    let adopting = !plan.adopt_pods.is_empty() || !plan.history.adopt.is_empty();
    if adopting {
        // Upstream re-reads the set uncached before adopting: never adopt for a set that is
        // being deleted or was replaced by another of the same name.
        let sets: Api<K> = Api::namespaced(ctx.client.clone(), &input.set.namespace);
        let fresh = sets.get(&input.set.name).await.map_err(Error::api(format!(
            "re-reading DaemonSet {}",
            input.set.name
        )))?;
        if fresh.uid().as_deref() != Some(input.set.uid.as_str())
            || fresh.meta().deletion_timestamp.is_some()
        {
            return Err(Error::AdoptionRecheckFailed {
                set: set_key(&input.set.namespace, &input.set.name),
            });
        }
    }
    let owner = owner_reference::<K>(input);
    let adopt = json!({"metadata": {"ownerReferences": [owner]}});
    let release =
        json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": input.set.uid}]}});
    for name in &plan.adopt_pods {
        patch_unless_gone(pods, name, &Patch::Strategic(&adopt), "adopting pod").await?;
    }
    for name in &plan.release_pods {
        patch_unless_gone(pods, name, &Patch::Strategic(&release), "releasing pod").await?;
    }
    for name in &plan.history.adopt {
        patch_unless_gone(
            revisions,
            name,
            &Patch::Strategic(&adopt),
            "adopting ControllerRevision",
        )
        .await?;
    }
    for name in &plan.history.release {
        patch_unless_gone(
            revisions,
            name,
            &Patch::Strategic(&release),
            "releasing ControllerRevision",
        )
        .await?;
    }
    Ok(())
}

/// Patches an object; an object that is gone meanwhile needs nothing.
async fn patch_unless_gone<K>(
    api: &Api<K>,
    name: &str,
    patch: &Patch<&serde_json::Value>,
    what: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.patch(name, &field_manager(), patch).await {
        Ok(_) => Ok(()),
        Err(err) if is_status(&err, 404) => Ok(()),
        Err(err) => Err(Error::api(format!("{what} {name}"))(err)),
    }
}

fn field_manager() -> PatchParams {
    PatchParams {
        field_manager: Some(everynode_api::labels::CONTROLLER_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// The controller reference every pod and revision of the set carries.
fn owner_reference<K: SetResource>(input: &PlanInput) -> OwnerReference {
    controller_owner_reference(
        &K::api_version(&()),
        &K::kind(&()),
        &input.set.name,
        &input.set.uid,
    )
}

/// Applies the history actions. Returns `true` when the plan stopped at a collision (the
/// collision count was bumped; the next reconcile computes a new hash).
async fn apply_history<K: SetResource>(
    ctx: &Context,
    set: &K,
    input: &PlanInput,
    plan: &Plan,
    pods: &Api<Pod>,
    revisions: &Api<ControllerRevision>,
) -> Result<bool, Error> {
    let history = &plan.history;
    if let Some(count) = history.collision_count {
        let sets: Api<K> = Api::namespaced(ctx.client.clone(), &input.set.namespace);
        let patch = json!({
            "metadata": {"resourceVersion": set.resource_version()},
            "status": {"collisionCount": count},
        });
        sets.patch_status(&input.set.name, &field_manager(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api(format!(
                "raising collisionCount of {}",
                input.set.name
            )))?;
        tracing::info!(count, "revision name collision; collisionCount raised");
        return Ok(true);
    }
    for name in &history.add_hash_label {
        let patch = json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH: name}}});
        patch_unless_gone(
            revisions,
            name,
            &Patch::Merge(&patch),
            "labelling ControllerRevision",
        )
        .await?;
    }
    if let Some(new) = &history.create {
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(new.name.clone()),
                namespace: Some(input.set.namespace.clone()),
                labels: Some(new.labels.clone()),
                annotations: (!new.annotations.is_empty()).then(|| new.annotations.clone()),
                owner_references: Some(vec![owner_reference::<K>(input)]),
                ..ObjectMeta::default()
            },
            data: None,
            revision: new.revision,
        };
        match create_revision(ctx, &input.set.namespace, &revision, &new.data).await {
            Ok(_) => {
                tracing::info!(revision = %new.name, number = new.revision, "created ControllerRevision")
            }
            // Someone (a previous run, or a colliding set) has it; the next plan sees it in the
            // cache and either uses it or raises the collision count.
            Err(err) if is_status(&err, 409) => {
                tracing::debug!(revision = %new.name, "ControllerRevision exists already");
            }
            Err(err) => {
                return Err(Error::api(format!(
                    "creating ControllerRevision {}",
                    new.name
                ))(err));
            }
        }
    }
    if let Some((name, number)) = &history.renumber {
        let patch = json!({"revision": number});
        patch_unless_gone(
            revisions,
            name,
            &Patch::Merge(&patch),
            "renumbering ControllerRevision",
        )
        .await?;
    }
    for (pod, hash) in &history.relabel_pods {
        let patch = json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH: hash}}});
        patch_unless_gone(pods, pod, &Patch::Merge(&patch), "relabelling pod").await?;
    }
    for delete in &history.delete {
        match revisions
            .delete(&delete.name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(revision = %delete.name, reason = %delete.reason, "deleted ControllerRevision")
            }
            Err(err) if is_status(&err, 404) => {}
            Err(err) => {
                return Err(Error::api(format!(
                    "deleting ControllerRevision {}",
                    delete.name
                ))(err));
            }
        }
    }
    Ok(false)
}

async fn delete_pods(
    ctx: &Context,
    key: &str,
    plan: &Plan,
    pods: &Api<Pod>,
    events: &mut PodWriteEvents,
) -> Result<(), Error> {
    let results = join_all(plan.deletes.iter().map(|delete| async move {
        let params = DeleteParams {
            preconditions: (!delete.uid.is_empty()).then(|| Preconditions {
                uid: Some(delete.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        (delete, pods.delete(&delete.pod, &params).await)
    }))
    .await;
    let mut first_error = None;
    for (delete, result) in results {
        match result {
            Ok(_) => {
                ctx.metrics.pods_deleted.inc();
                tracing::info!(pod = %delete.pod, node = %delete.node, reason = %delete.reason, "deleted pod");
                events.record(PodWrite::Deleted, &delete.pod, delete.reason.to_string());
            }
            // Already gone (or replaced by a pod with another UID): nothing to wait for.
            Err(err) if is_status(&err, 404) || is_status(&err, 409) => {
                ctx.expectations.write_failed(key, None, Some(&delete.uid));
            }
            Err(err) => {
                ctx.expectations.write_failed(key, None, Some(&delete.uid));
                events.record(PodWrite::DeleteFailed, &delete.pod, err.to_string());
                first_error.get_or_insert(Error::api(format!("deleting pod {}", delete.pod))(err));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Patches pods updated in place: new container images, the template's labels (with the new
/// hash) and annotations, and [`IN_PLACE_UPDATE_ANNOTATION`] recording the images the
/// containers reported before, so the pod counts as unavailable until they restart on the new
/// ones. The pod's UID is a precondition.
async fn update_pods_in_place<K: SetResource>(
    ctx: &Context,
    set: &K,
    key: &str,
    plan: &Plan,
    pods: &Api<Pod>,
    events: &mut PodWriteEvents,
) -> Result<(), Error> {
    let namespace = set.namespace().unwrap_or_default();
    let results = join_all(plan.updates.iter().map(|update| {
        let cached = ctx
            .pods
            .get(&ObjectRef::new(&update.pod).within(&namespace));
        let before: BTreeMap<&str, String> = update
            .images
            .iter()
            .map(|(container, _)| {
                let reported = cached
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|statuses| statuses.iter().find(|s| s.name == *container))
                    .map(|s| s.image.clone())
                    .unwrap_or_default();
                (container.as_str(), reported)
            })
            .collect();
        let mut annotations = serde_json::to_value(&update.annotations).unwrap_or_default();
        if let Some(map) = annotations.as_object_mut() {
            map.insert(
                IN_PLACE_UPDATE_ANNOTATION.to_owned(),
                serde_json::Value::String(serde_json::to_string(&before).unwrap_or_default()),
            );
        }
        let containers: Vec<serde_json::Value> = update
            .images
            .iter()
            .map(|(name, image)| json!({"name": name, "image": image}))
            .collect();
        let patch = json!({
            "metadata": {"uid": update.uid, "labels": update.labels, "annotations": annotations},
            "spec": {"containers": containers},
        });
        async move {
            let params = field_manager();
            (
                update,
                pods.patch(&update.pod, &params, &Patch::Strategic(patch))
                    .await,
            )
        }
    }))
    .await;
    let mut first_error = None;
    for (update, result) in results {
        match result {
            Ok(_) => {
                tracing::info!(pod = %update.pod, node = %update.node, "updated pod in place");
                let images: Vec<String> = update
                    .images
                    .iter()
                    .map(|(c, i)| format!("{c}={i}"))
                    .collect();
                events.record(PodWrite::UpdatedInPlace, &update.pod, images.join(", "));
            }
            // Gone or replaced: the next plan sees it.
            Err(err) if is_status(&err, 404) || is_status(&err, 409) => {
                ctx.expectations.update_failed(key, &update.pod);
            }
            Err(err) => {
                ctx.expectations.update_failed(key, &update.pod);
                events.record(PodWrite::UpdateFailed, &update.pod, err.to_string());
                first_error.get_or_insert(Error::api(format!("updating pod {}", update.pod))(err));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Creates `revision` with `data` as its exact bytes. The apiserver stores `data` as sent, and
/// upstream's controller compares those bytes with its own encoding of the template: a typed
/// create would re-encode them (`<` instead of Go's `\u003c`, for one).
async fn create_revision(
    ctx: &Context,
    namespace: &str,
    revision: &ControllerRevision,
    data: &str,
) -> kube::Result<ControllerRevision> {
    let mut body = serde_json::to_string(revision).map_err(kube::Error::SerdeError)?;
    body.pop(); // the closing brace: `data` goes last
    body.push_str(",\"data\":");
    body.push_str(data);
    body.push('}');
    let request = kube::core::Request::new(ControllerRevision::url_path(&(), Some(namespace)))
        .create(&PostParams::default(), body.into_bytes())
        .map_err(kube::Error::BuildRequest)?;
    ctx.client.request(request).await
}

/// Creates pods in slow-start batches (1, 2, 4, …, or from where the set's last successful
/// round got to: [`crate::slow_start`]): after a batch with a failure the rest is left for a
/// later reconcile, so a rejecting admission webhook or quota costs a few calls, not hundreds.
async fn create_pods<K: SetResource>(
    ctx: &Context,
    key: &str,
    input: &PlanInput,
    plan: &Plan,
    pods: &Api<Pod>,
    events: &mut PodWriteEvents,
) -> Result<(), Error> {
    let owner = owner_reference::<K>(input);
    let mut remaining = plan.creates.as_slice();
    let gate: Vec<_> = everynode_core::gate::gate_toleration(&input.set.spec)
        .into_iter()
        .collect();
    let mut batch_size = ctx.slow_starts.first_batch(key, Instant::now());
    // The size of the last batch made in full, until one fails.
    let mut reached = None;
    let mut any_failed = false;
    let mut first_error = None;
    while !remaining.is_empty() {
        let (batch, rest) = remaining.split_at(batch_size.min(remaining.len()));
        remaining = rest;
        let results = join_all(batch.iter().map(|create| {
            // A held node may get an older revision (`newNodePolicy: Stable`): its template,
            // and no template-generation label (that would mark the pod current).
            let older = plan.templates.get(&create.hash);
            let mut pod = render_pod(&RenderParams {
                set_name: &input.set.name,
                namespace: &input.set.namespace,
                template: older.unwrap_or(&input.set.spec.template),
                hash: &create.hash,
                template_generation: input.set.template_generation.filter(|_| older.is_none()),
                owner: &owner,
                node: &create.node,
                pod_name: &create.pod_name,
                extra_tolerations: &gate,
            });
            if let Some(pulled_by) = &create.pre_pulled {
                pod.metadata.annotations.get_or_insert_default().insert(
                    everynode_api::labels::PRE_PULLED_ANNOTATION.to_owned(),
                    pulled_by.clone(),
                );
            }
            async move { (create, pods.create(&PostParams::default(), &pod).await) }
        }))
        .await;
        let mut failed = false;
        for (create, result) in results {
            match result {
                Ok(_) => {
                    ctx.metrics.pods_created.inc();
                    tracing::info!(pod = %create.pod_name, node = %create.node, reason = %create.reason, "created pod");
                    events.record(PodWrite::Created, &create.pod_name, String::new());
                }
                // A pod of that name exists (the five random characters collided with a pod
                // the plan could not see). Nothing is made; the cache shows that pod, so the next
                // plan draws another name for the node.
                Err(err) if is_status(&err, 409) => {
                    tracing::debug!(pod = %create.pod_name, "pod exists already");
                }
                Err(err) => {
                    failed = true;
                    ctx.expectations
                        .write_failed(key, Some(&create.pod_name), None);
                    if !is_namespace_terminating(&err) {
                        events.record(PodWrite::CreateFailed, &create.pod_name, err.to_string());
                        first_error.get_or_insert(Error::api(format!(
                            "creating pod {} on node {}",
                            create.pod_name, create.node
                        ))(err));
                    }
                }
            }
        }
        if failed {
            any_failed = true;
            for skipped in remaining {
                ctx.expectations
                    .write_failed(key, Some(&skipped.pod_name), None);
            }
            if !remaining.is_empty() {
                tracing::info!(
                    skipped = remaining.len(),
                    "pod creation failed; the rest waits for the next reconcile"
                );
            }
            break;
        }
        reached = Some(batch_size);
        batch_size = batch_size.saturating_mul(2);
    }
    if any_failed {
        ctx.slow_starts.forget(key);
    } else if let Some(size) = reached {
        ctx.slow_starts.succeeded(key, size, Instant::now());
    }
    first_error.map_or(Ok(()), Err)
}

/// An automatic rollback: replaces the set with the stable revision's template and node
/// overrides (the cached
/// object's resourceVersion is the precondition: a set changed meanwhile is planned again).
/// Returns the set as stored.
pub(crate) async fn roll_back<K: SetResource>(
    ctx: &Context,
    set: &K,
    rollback: &everynode_core::plan::PlannedRollback,
) -> Result<K, Error> {
    let name = set.name_any();
    let sets: Api<K> = Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    sets.replace(
        &name,
        &PostParams {
            field_manager: Some(everynode_api::labels::CONTROLLER_FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        },
        &set.with_revision(rollback),
    )
    .await
    .map_err(Error::api(format!(
        "rolling DaemonSet {name} back from {} to {}",
        rollback.from, rollback.to
    )))
}

/// Writes the status when it changed, with the set's resourceVersion as a precondition.
pub(crate) async fn write_status<K: SetResource>(
    ctx: &Context,
    set: &K,
    plan: &Plan,
) -> Result<(), Error> {
    let Some(status) = plan.status.as_ref().filter(|_| plan.status_write.is_some()) else {
        return Ok(());
    };
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let sets: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "metadata": {"resourceVersion": set.resource_version()},
        "status": set.status_json(status)?,
    });
    sets.patch_status(&name, &field_manager(), &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(Error::api(format!("updating status of DaemonSet {name}")))
}

/// Whether the apiserver refused a create because the namespace is being deleted (the
/// `NamespaceTerminating` cause upstream checks too): nothing to report, the set goes with it.
fn is_namespace_terminating(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}
