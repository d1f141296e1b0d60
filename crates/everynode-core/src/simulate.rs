//! A plan's writes as the next plan sees them, without an apiserver: what upstream's unit
//! tests get from their fake pod control. Created pods are pending, unscheduled and pinned to
//! their node; deleted pods are gone; revisions, ownership and the status are as written. The
//! CLI's `plan` and the planner's tests step through a rollout with it; they play the
//! scheduler and kubelet themselves.

use std::sync::Arc;

use everynode_api::labels::{CONTROLLER_REVISION_HASH, PRE_PULL_HASH_LABEL, PRE_PULL_OF_LABEL};

use crate::plan::Plan;
use crate::render::pod_labels;
use crate::snapshot::{Owner, PlanInput, PodPhase, PodView, RevisionView};

impl PlanInput {
    /// The input of the next plan once `plan`'s writes are done (the runtime draws a new name
    /// seed for it).
    pub fn apply(&mut self, plan: &Plan) {
        self.name_seed = self.name_seed.wrapping_add(1);
        self.apply_history(plan);
        self.apply_pod_writes(plan);
        for b in &plan.backoff_updates {
            self.backoff.insert(b.node.clone(), b.entry);
        }
        if let Some(s) = &plan.status {
            self.set.status = Some(s.clone());
        }
        // An automatic rollback: the runtime puts the stable template back into the spec.
        if let Some(r) = &plan.rollback {
            self.set.spec.template = r.template.clone();
            self.set.spec.node_overrides = r.node_overrides.clone();
            self.set.generation = self.set.generation.map(|g| g + 1);
        }
    }

    /// Revision ownership, labels, the new revision, renumbering, relabelled pods, deletions
    /// and the collision count.
    fn apply_history(&mut self, plan: &Plan) {
        let h = &plan.history;
        for (names, owner) in [(&h.adopt, Owner::ThisSet), (&h.release, Owner::Orphan)] {
            for name in names {
                if let Some(r) = self.revisions.iter_mut().find(|r| r.name == *name) {
                    r.owner = Some(owner);
                }
            }
        }
        for r in self.revisions.iter_mut() {
            if h.add_hash_label.contains(&r.name) {
                r.labels
                    .insert(CONTROLLER_REVISION_HASH.to_owned(), r.name.clone());
            }
        }
        if let Some(c) = &h.create {
            self.revisions.push(RevisionView {
                name: c.name.clone(),
                labels: c.labels.clone(),
                owner: Some(Owner::ThisSet),
                revision: c.revision,
                data: serde_json::from_str(&c.data).unwrap_or_default(),
                deleting: false,
            });
        }
        if let Some((name, rev)) = &h.renumber
            && let Some(r) = self.revisions.iter_mut().find(|r| r.name == *name)
        {
            r.revision = *rev;
        }
        for (pod, hash) in &h.relabel_pods {
            if let Some(p) = self.pods.iter_mut().find(|p| p.name == *pod) {
                Arc::make_mut(&mut Arc::make_mut(p).labels)
                    .insert(CONTROLLER_REVISION_HASH.to_owned(), hash.clone());
            }
        }
        self.revisions
            .retain(|r| !h.delete.iter().any(|d| d.name == r.name));
        if let Some(c) = h.collision_count {
            self.set
                .status
                .get_or_insert_with(Default::default)
                .collision_count = Some(c);
        }
    }

    /// Pod ownership, deletes, in-place updates and creates.
    fn apply_pod_writes(&mut self, plan: &Plan) {
        for (names, owner) in [
            (&plan.adopt_pods, Owner::ThisSet),
            (&plan.release_pods, Owner::Orphan),
        ] {
            for name in names {
                if let Some(p) = self.pods.iter_mut().find(|p| p.name == *name) {
                    Arc::make_mut(p).owner = Some(owner);
                }
            }
        }
        self.pods.retain(|p| {
            !plan.deletes.iter().any(|d| d.pod == p.name)
                && !plan
                    .pre_pull
                    .deletes
                    .iter()
                    .any(|(name, _)| *name == p.name)
        });
        // An in-place update: new labels; not ready until the containers restart.
        for u in &plan.updates {
            if let Some(p) = self.pods.iter_mut().find(|p| p.name == u.pod) {
                let p = Arc::make_mut(p);
                Arc::make_mut(&mut p.labels).extend(u.labels.clone());
                p.ready = false;
                p.ready_since = None;
            }
        }
        for c in &plan.creates {
            let labels = pod_labels(
                &self.set.spec.template,
                &c.hash,
                self.set.template_generation,
            );
            self.pods.push(Arc::new(PodView {
                name: c.pod_name.clone(),
                uid: format!("uid-{}", c.pod_name),
                labels: Arc::new(labels),
                owner: Some(Owner::ThisSet),
                target_node: Some(c.node.clone()),
                phase: PodPhase::Pending,
                created: Some(self.now),
                ..PodView::default()
            }));
        }
        // A pre-pull pod: not the set's (its labels are its own), pulling on its node.
        for c in &plan.pre_pull.creates {
            let labels = [
                (PRE_PULL_OF_LABEL.to_owned(), self.set.uid.clone()),
                (PRE_PULL_HASH_LABEL.to_owned(), c.hash.clone()),
            ];
            self.pods.push(Arc::new(PodView {
                name: c.pod_name.clone(),
                uid: format!("uid-{}", c.pod_name),
                labels: Arc::new(labels.into_iter().collect()),
                owner: Some(Owner::Orphan),
                node_name: Some(c.node.clone()),
                target_node: Some(c.node.clone()),
                phase: PodPhase::Pending,
                created: Some(self.now),
                ..PodView::default()
            }));
        }
    }
}
