//! Image pre-pull (`rollingUpdate.prePull`): a node pulls its new images before its old pod is
//! deleted, so it is without its daemon for the container start, not the download.
//!
//! A pre-pull pod runs the node's new images with `sh -c 'exit 0'` and is never selected by the
//! set (its labels are [`PRE_PULL_OF_LABEL`] and [`PRE_PULL_HASH_LABEL`]). Its images are
//! pulled once it runs or has run — Running, Succeeded, or Failed — or once a container waits
//! for a reason that comes after the pull (an image without a shell fails to start, after the
//! pull). Waiting in an image-pull error, it failed: the node's update goes on without it, as it
//! does after `timeoutSeconds`. The pod stays until the node runs the
//! update revision (its creation is annotated
//! [`everynode_api::labels::PRE_PULLED_ANNOTATION`]), then goes.

use std::collections::BTreeSet;

use everynode_api::PrePull;
use everynode_api::labels::{CONTROLLER_REVISION_HASH, PRE_PULL_HASH_LABEL, PRE_PULL_OF_LABEL};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::Timestamp;

use crate::manage::{EventReason, PlanEvent};
use crate::reason::Deferred;
use crate::render::generated_pod_name;
use crate::snapshot::{PlanInput, PodPhase, PodView, RevisionView};

use super::builder::Builder;
use super::output::PrePullCreate;
use super::steps::old_template;

/// How far a node's pull is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PullState {
    /// The images are on the node.
    Pulled,
    /// Pulling, since the pod was created.
    Pulling,
    /// The pull failed or took longer than `timeoutSeconds` (why): the update goes on without
    /// it.
    GaveUp(String),
}

/// What a node being updated does about its pull.
enum Next {
    /// Wait for the pre-pull pod.
    Wait(String),
    /// Go on: pulled, or nothing to pull.
    Go,
    /// Go on without the pull (why).
    GoWithout(String),
}

/// The set's pre-pull pods, and what this plan decides about them.
pub(super) struct PrePulls {
    config: PrePull,
    /// Input pods that pull for the set: `(node, hash, input index)`.
    pods: Vec<(String, String, usize)>,
    /// `(node, hash)` pulls this plan plans.
    planned: BTreeSet<(String, String)>,
}

impl PrePulls {
    /// The pre-pull pods of the set in `input`.
    pub fn read(input: &PlanInput, config: &PrePull) -> Self {
        let uid = input.set.uid.as_str();
        let pods = input
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.labels.get(PRE_PULL_OF_LABEL).map(String::as_str) == Some(uid))
            .filter_map(|(i, p)| {
                let hash = p.labels.get(PRE_PULL_HASH_LABEL)?;
                Some((p.target_node.clone()?, hash.clone(), i))
            })
            .collect();
        Self {
            config: config.clone(),
            pods,
            planned: BTreeSet::new(),
        }
    }

    /// The pre-pull pod of `hash` on `node` that is done, if one is.
    pub fn pulled_pod<'i>(&self, input: &'i PlanInput, node: &str, hash: &str) -> Option<&'i str> {
        let (pod, state) = self.find(input, node, hash)?;
        (state == PullState::Pulled).then_some(pod.name.as_str())
    }

    fn find<'i>(
        &self,
        input: &'i PlanInput,
        node: &str,
        hash: &str,
    ) -> Option<(&'i PodView, PullState)> {
        let (_, _, i) = self
            .pods
            .iter()
            .find(|(n, h, i)| n == node && h == hash && !input.pods[*i].deleting())?;
        let pod = &input.pods[*i];
        Some((pod, self.state(pod, input.now)))
    }

    fn state(&self, pod: &PodView, now: Timestamp) -> PullState {
        match (pod.phase, pod.trouble.as_deref()) {
            (PodPhase::Running | PodPhase::Succeeded | PodPhase::Failed, _) => PullState::Pulled,
            (_, Some(trouble)) if is_pull_error(trouble) => PullState::GaveUp(trouble.to_owned()),
            // A container that cannot be created or started was pulled first.
            (_, Some(_)) => PullState::Pulled,
            (_, None) => {
                let age = pod.created.map_or(0, |c| now.duration_since(c).as_secs());
                let timeout = self.config.timeout_seconds();
                if age >= timeout {
                    PullState::GaveUp(format!("not pulled after timeoutSeconds ({timeout} s)"))
                } else {
                    PullState::Pulling
                }
            }
        }
    }

    /// Why the old pod on `slot` waits before it is replaced, if it does: its new images are
    /// not pulled yet (the pre-pull pod is planned when the node has none). A node that goes on
    /// without its pull gets a `PrePullSkipped` event.
    pub fn wait(
        &mut self,
        b: &mut Builder<'_>,
        slot: usize,
        old: &[&RevisionView],
    ) -> Option<Deferred> {
        match self.ensure(b, slot, old) {
            Next::Wait(pod) => Some(Deferred::PrePulling { pod }),
            Next::Go => None,
            Next::GoWithout(why) => {
                let node = &b.state.slots[slot].node.name;
                let message =
                    format!("node {node} is updated without its new images pulled ahead: {why}");
                b.plan.events.push(PlanEvent {
                    reason: EventReason::PrePullSkipped,
                    message,
                });
                None
            }
        }
    }

    /// Plans the pulls of the nodes next in update order.
    pub fn pull_ahead(&mut self, b: &mut Builder<'_>, slots: &[usize], old: &[&RevisionView]) {
        for &slot in slots.iter().take(self.config.nodes_ahead()) {
            self.ensure(b, slot, old);
        }
    }

    /// Makes sure `slot` pulls its new images: wait for its pre-pull pod while it pulls
    /// (planned now if the node has none), or go on.
    fn ensure(&mut self, b: &mut Builder<'_>, slot: usize, old: &[&RevisionView]) -> Next {
        let node = b.state.slots[slot].node.name.clone();
        let hash = b.slot_hash(slot).to_owned();
        if let Some((pod, state)) = self.find(b.input, &node, &hash) {
            return match state {
                PullState::Pulling => Next::Wait(pod.name.clone()),
                PullState::Pulled => Next::Go,
                PullState::GaveUp(why) => {
                    Next::GoWithout(format!("pre-pull pod {}: {why}", pod.name))
                }
            };
        }
        if let Some(existing) = b.plan.pre_pull.creates.iter().find(|c| c.node == node) {
            return Next::Wait(existing.pod_name.clone());
        }
        let refused = &b.input.pre_pull_refused;
        if refused.iter().any(|(n, h)| *n == node && *h == hash) {
            return Next::GoWithout("the apiserver refused its pre-pull pod".to_owned());
        }
        let images = new_images(b, slot, old);
        if images.is_empty() {
            return Next::Go;
        }
        let pod_name = pre_pull_pod_name(&b.input.set.name, &node, &hash);
        self.planned.insert((node.clone(), hash.clone()));
        b.plan.pre_pull.creates.push(PrePullCreate {
            node,
            pod_name: pod_name.clone(),
            hash,
            images,
        });
        Next::Wait(pod_name)
    }

    /// Deletes (with `write`) the pre-pull pods whose node runs the update revision (or has
    /// another hash, or is gone), and counts the nodes that pulled or pull.
    pub fn finish(self, b: &mut Builder<'_>, write: bool) {
        let input = b.input;
        let mut pulled = 0;
        let mut pulling = 0;
        for (node, hash, i) in &self.pods {
            let pod = &input.pods[*i];
            if pod.deleting() {
                continue;
            }
            let slot = b.state.slots.iter().position(|s| s.node.name == *node);
            let waiting = slot.filter(|&s| {
                b.state.slots[s].elig.should_run
                    && b.slot_hash(s) == hash
                    && !b.state.slots[s]
                        .pods
                        .iter()
                        .any(|&p| b.state.pods[p].current)
            });
            match waiting {
                Some(_) => match self.state(pod, input.now) {
                    PullState::Pulled => pulled += 1,
                    PullState::Pulling => pulling += 1,
                    PullState::GaveUp(_) => {}
                },
                None if write => b
                    .plan
                    .pre_pull
                    .deletes
                    .push((pod.name.clone(), pod.uid.clone())),
                None => {}
            }
        }
        b.plan.pre_pull.pulling = pulling + i32::try_from(self.planned.len()).unwrap_or(0);
        b.plan.pre_pull.pulled = pulled;
    }
}

/// The images of `slot`'s update-revision template that its old pod's template does not have
/// (every image when that template is unknown), in container order.
fn new_images(b: &Builder<'_>, slot: usize, old: &[&RevisionView]) -> Vec<String> {
    let set = &b.input.set;
    let old_pod_template = b.state.slots[slot]
        .pods
        .iter()
        .find_map(|&p| b.state.pods[p].input())
        .and_then(|i| b.input.pods[i].labels.get(CONTROLLER_REVISION_HASH))
        .and_then(|hash| {
            b.variants
                .template_of_hash(hash, &set.spec.template)
                .cloned()
                .or_else(|| old_template(old, hash, set.collision_count()))
        });
    let had = old_pod_template.as_ref().map(images_of).unwrap_or_default();
    let mut images = Vec::new();
    for image in images_of(b.slot_template(slot)) {
        if !had.contains(&image) && !images.contains(&image) {
            images.push(image);
        }
    }
    images
}

/// The images of a template's init containers and containers, in that order.
fn images_of(template: &PodTemplateSpec) -> Vec<String> {
    template
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter_map(|c| c.image.clone())
        .collect()
}

/// A container waiting in an image-pull error (`PodView::trouble`).
fn is_pull_error(trouble: &str) -> bool {
    [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    ]
    .iter()
    .any(|reason| trouble.contains(reason))
}

/// The pre-pull pod of `hash` on `node`: the same name every time, so a pod the cache does not
/// show yet is not made twice.
pub fn pre_pull_pod_name(set_name: &str, node: &str, hash: &str) -> String {
    generated_pod_name(&format!("{set_name}-pull"), 0, node, hash, 0)
}
