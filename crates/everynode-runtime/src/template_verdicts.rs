//! Whether the apiserver accepts pods of a set's template: asked once per template, with a
//! server-side dry run of one pod, before the first pod of it is written. A refused template
//! starts no rollout (the planner holds its pods, [`everynode_core::Deferred::TemplateRejected`]),
//! so it never costs a running pod.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use everynode_core::overrides::NodeVariants;
use everynode_core::template_check::template_problems;
use everynode_core::{
    Plan, PlanError, PlanInput, RenderParams, controller_owner_reference, render_pod,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::Api;
use kube::api::PostParams;

use crate::key::set_key;
use crate::target::SetResource;

/// How long a refusal stands before the template is asked about again: an admission webhook or
/// a namespace policy can change without the template changing.
pub const RECHECK_REJECTED: Duration = Duration::from_secs(60);

/// Why the apiserver refuses pods of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The template's revision hash.
    pub hash: String,
    /// The refused fields and the apiserver's words, fields named from the set
    /// (`spec.template.spec.containers[0]...`).
    pub message: String,
}

#[derive(Clone, Debug)]
enum Verdict {
    Accepted,
    Rejected { rejection: Rejection, at: Instant },
}

/// The verdict on each set's latest template, by `namespace/name`.
#[derive(Debug, Default)]
pub struct TemplateVerdicts {
    verdicts: Mutex<HashMap<String, Entry>>,
}

/// A verdict on the template `hash` of the set with `uid`.
#[derive(Clone, Debug)]
struct Entry {
    uid: String,
    hash: String,
    verdict: Verdict,
}

impl TemplateVerdicts {
    fn get(&self, key: &str, uid: &str, hash: &str) -> Option<Verdict> {
        self.lock()
            .get(key)
            .filter(|e| e.uid == uid && e.hash == hash)
            .map(|e| e.verdict.clone())
    }

    fn store(&self, key: &str, uid: &str, hash: &str, verdict: Verdict) {
        let entry = Entry {
            uid: uid.to_owned(),
            hash: hash.to_owned(),
            verdict,
        };
        self.lock().insert(key.to_owned(), entry);
    }

    /// Drops what is known about the set `namespace/name` (it is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The refusal of the update revision's template, if any: a known verdict, or — when `plan`
/// writes a pod and the template was not asked about yet (or its refusal is older than
/// [`RECHECK_REJECTED`]) — a dry run now. An answer that is not about the template (the
/// apiserver unreachable, a quota) counts as no refusal: the writes themselves then fail as
/// they would have.
pub async fn rejection<K: SetResource>(
    verdicts: &TemplateVerdicts,
    client: &kube::Client,
    input: &PlanInput,
    plan: &Plan,
) -> Option<Rejection> {
    let key = set_key(&input.set.namespace, &input.set.name);
    let (uid, hash) = (&input.set.uid, &plan.history.hash);
    let known = verdicts.get(&key, uid, hash);
    let recheck = match &known {
        // Invalid node overrides hold every pod write: ask, to report them.
        None => {
            writes_pods(plan)
                || plan
                    .errors
                    .iter()
                    .any(|e| matches!(e, PlanError::Override(_)))
        }
        Some(Verdict::Rejected { at, .. }) => at.elapsed() >= RECHECK_REJECTED,
        Some(Verdict::Accepted) => false,
    };
    if !recheck {
        return match known {
            Some(Verdict::Rejected { rejection, .. }) => Some(rejection),
            _ => None,
        };
    }
    let verdict = ask::<K>(client, input, plan).await?;
    verdicts.store(&key, uid, hash, verdict.clone());
    match verdict {
        Verdict::Rejected { rejection, .. } => Some(rejection),
        Verdict::Accepted => None,
    }
}

/// Whether the plan creates, deletes or updates a pod.
fn writes_pods(plan: &Plan) -> bool {
    !(plan.creates.is_empty() && plan.deletes.is_empty() && plan.updates.is_empty())
}

/// The verdict on the update revision: local checks first (node overrides that cannot be
/// applied, and what the apiserver refuses without naming the field), then a server-side dry
/// run of one pod of the template and of each node override. `None`: no verdict this time.
async fn ask<K: SetResource>(
    client: &kube::Client,
    input: &PlanInput,
    plan: &Plan,
) -> Option<Verdict> {
    let hash = plan.history.hash.clone();
    let spec = &input.set.spec;
    let variants = match NodeVariants::new(&spec.template, spec.overrides(), None) {
        Ok(variants) => variants,
        Err(e) => return Some(rejected(hash, e.to_string())),
    };
    let templates: Vec<(Option<&str>, &PodTemplateSpec)> = std::iter::once((None, &spec.template))
        .chain(
            variants
                .iter()
                .map(|v| (Some(v.name.as_str()), &v.template)),
        )
        .collect();
    let problems: Vec<String> = templates
        .iter()
        .flat_map(|(name, template)| {
            template_problems(template)
                .into_iter()
                .map(move |p| with_override(*name, p.to_string()))
        })
        .collect();
    if !problems.is_empty() {
        return Some(rejected(hash, problems.join("; ")));
    }
    for (name, template) in templates {
        match dry_run::<K>(client, input, plan, template).await? {
            Verdict::Accepted => {}
            Verdict::Rejected { rejection, .. } => {
                return Some(rejected(hash, with_override(name, rejection.message)));
            }
        }
    }
    Some(Verdict::Accepted)
}

/// `message` about the template of node override `name` (the template itself when `None`).
fn with_override(name: Option<&str>, message: String) -> String {
    match name {
        Some(name) => format!("with spec.nodeOverrides[{name}]: {message}"),
        None => message,
    }
}

/// A server-side dry run of one pod of `template`, on the node of the plan's first pod write.
async fn dry_run<K: SetResource>(
    client: &kube::Client,
    input: &PlanInput,
    plan: &Plan,
    template: &PodTemplateSpec,
) -> Option<Verdict> {
    let hash = plan.history.hash.clone();
    let node = plan
        .creates
        .first()
        .map(|c| c.node.as_str())
        .or_else(|| plan.deletes.first().map(|d| d.node.as_str()))
        .or_else(|| plan.updates.first().map(|u| u.node.as_str()))
        .unwrap_or_default();
    let owner = controller_owner_reference(
        &K::api_version(&()),
        &K::kind(&()),
        &input.set.name,
        &input.set.uid,
    );
    let mut pod = render_pod(&RenderParams {
        set_name: &input.set.name,
        namespace: &input.set.namespace,
        template,
        hash: &hash,
        template_generation: input.set.template_generation,
        owner: &owner,
        node,
        pod_name: "",
        extra_tolerations: &everynode_core::gate::gate_toleration(&input.set.spec)
            .into_iter()
            .collect::<Vec<_>>(),
    });
    pod.metadata.name = None;
    pod.metadata.generate_name = Some(format!("{}-", input.set.name));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &input.set.namespace);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match pods.create(&params, &pod).await {
        Ok(_) => Some(Verdict::Accepted),
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
            Some(rejected(hash, refused_fields(&status)))
        }
        Err(err) => {
            tracing::debug!(error = %err, "dry run of the template gave no verdict");
            None
        }
    }
}

fn rejected(hash: String, message: String) -> Verdict {
    Verdict::Rejected {
        rejection: Rejection { hash, message },
        at: Instant::now(),
    }
}

/// The refused fields of a 422 answer, named from the set; the message itself otherwise.
fn refused_fields(status: &kube::core::Status) -> String {
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|cause| {
            if cause.field.is_empty() {
                cause.message.clone()
            } else {
                format!("{}: {}", field_of_set(&cause.field), cause.message)
            }
        })
        .collect();
    if causes.is_empty() {
        status.message.clone()
    } else {
        causes.join("; ")
    }
}

/// A pod field as the set's template field: `spec.containers[0]` is
/// `spec.template.spec.containers[0]`.
fn field_of_set(pod_field: &str) -> String {
    if pod_field.starts_with("spec.") || pod_field.starts_with("metadata.") {
        format!("spec.template.{pod_field}")
    } else {
        pod_field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn refused_pod_fields_are_named_as_template_fields() {
        // The apiserver's answer to a pod with a mount of a missing volume and a duplicate name.
        let status: Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
            "reason": "Invalid", "message": "Pod \"x\" is invalid: ...",
            "details": {"kind": "Pod", "causes": [
                {"reason": "FieldValueNotFound", "message": "Not found: \"data\"",
                 "field": "spec.containers[0].volumeMounts[0].name"},
                {"reason": "FieldValueDuplicate", "message": "Duplicate value: \"a\"",
                 "field": "spec.containers[1].name"}
            ]}
        }))
        .unwrap_or_default();
        assert_eq!(
            refused_fields(&status),
            "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"data\"; \
             spec.template.spec.containers[1].name: Duplicate value: \"a\""
        );
        let bare = Status {
            code: 400,
            message: "cannot be handled".to_owned(),
            ..Status::default()
        };
        assert_eq!(refused_fields(&bare), "cannot be handled");
    }
}
