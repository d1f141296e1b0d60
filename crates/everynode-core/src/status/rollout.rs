//! everynode's rollout status: the update and stable revisions, pods per revision, blocked
//! nodes (not written for apps/v1 sets).

use everynode_api::DaemonSetStatus;

/// everynode's rollout status (not written for apps/v1 sets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutStatus {
    /// ControllerRevision of the current template.
    pub update_revision: String,
    /// ControllerRevision that most desired nodes run.
    pub current_revision: Option<String>,
    /// Last ControllerRevision available on every desired node.
    pub stable_revision: Option<String>,
    /// Desired nodes per revision, newest first.
    pub pods_per_revision: Vec<everynode_api::RevisionPods>,
    /// The topology wave in progress.
    pub wave: Option<everynode_api::RolloutWave>,
    /// The failure of the update revision.
    pub failure: Option<everynode_api::RolloutFailure>,
    /// The last automatic rollback.
    pub rollback: Option<everynode_api::RolloutRollback>,
    /// Nodes skipped by `unavailableNodePolicy: Skip`.
    pub skipped_nodes: Vec<String>,
    /// Excluded or blocked nodes with their reasons (bounded).
    pub blocked_nodes: Vec<everynode_api::BlockedNode>,
    /// Excluded or blocked nodes per reason.
    pub blocked_totals: Vec<everynode_api::ReasonCount>,
    /// Desired nodes carrying the node readiness gate's taint (`None`: no gate).
    pub gated_nodes: Option<i32>,
    /// With `prePull`: desired nodes on an old pod whose new images are pulled, and those
    /// pulling them (`None`: no pre-pull).
    pub pre_pull: Option<(i32, i32)>,
}

impl RolloutStatus {
    /// The rollout status from the desired nodes' pods counted per revision (`(revision
    /// number, counts)`, any order): `update_revision` is the current revision's name; the
    /// stable revision becomes it once every desired node runs an available pod of it, and
    /// stays `stored_stable` otherwise.
    pub fn compute(
        update_revision: &str,
        desired: i32,
        mut per: Vec<(i64, everynode_api::RevisionPods)>,
        stored_stable: Option<&str>,
    ) -> Self {
        per.sort_by(|(na, a), (nb, b)| nb.cmp(na).then_with(|| a.revision.cmp(&b.revision)));
        let current_revision = per
            .iter()
            .max_by(|(na, a), (nb, b)| a.pods.cmp(&b.pods).then_with(|| na.cmp(nb)))
            .map(|(_, r)| r.revision.clone());
        let everywhere = desired > 0
            && per.len() == 1
            && per[0].1.revision == update_revision
            && per[0].1.available == desired;
        let stable_revision = if everywhere {
            Some(update_revision.to_owned())
        } else {
            stored_stable.map(str::to_owned)
        };
        Self {
            update_revision: update_revision.to_owned(),
            current_revision,
            stable_revision,
            pods_per_revision: per.into_iter().map(|(_, r)| r).collect(),
            ..Self::default()
        }
    }

    /// Every desired node runs an available pod of the update revision.
    pub fn complete(&self, desired: i32) -> bool {
        desired == 0
            || (self.pods_per_revision.len() == 1
                && self.pods_per_revision[0].revision == self.update_revision
                && self.pods_per_revision[0].available == desired)
    }

    /// Whether `status` already says this.
    pub fn equals(&self, status: &DaemonSetStatus) -> bool {
        status.update_revision.as_deref() == Some(self.update_revision.as_str())
            && status.current_revision == self.current_revision
            && status.stable_revision == self.stable_revision
            && status.pods_per_revision.as_deref().unwrap_or_default() == self.pods_per_revision
            && status.wave == self.wave
            && status.failure == self.failure
            && status.rollback == self.rollback
            && status.skipped_nodes.as_deref().unwrap_or_default() == self.skipped_nodes
            && status.blocked_nodes.as_deref().unwrap_or_default() == self.blocked_nodes
            && status.blocked_totals.as_deref().unwrap_or_default() == self.blocked_totals
            && status.gated_nodes == self.gated_nodes
            && (status.pre_pulled_nodes, status.pre_pulling_nodes)
                == (self.pre_pull.map(|p| p.0), self.pre_pull.map(|p| p.1))
    }

    /// Writes the fields into `status`.
    pub fn apply_to(&self, status: &mut DaemonSetStatus) {
        status.update_revision = Some(self.update_revision.clone());
        status.current_revision.clone_from(&self.current_revision);
        status.stable_revision.clone_from(&self.stable_revision);
        status.pods_per_revision = Some(self.pods_per_revision.clone());
        status.wave.clone_from(&self.wave);
        status.failure.clone_from(&self.failure);
        status.rollback.clone_from(&self.rollback);
        status.skipped_nodes = (!self.skipped_nodes.is_empty()).then(|| self.skipped_nodes.clone());
        status.blocked_nodes = (!self.blocked_nodes.is_empty()).then(|| self.blocked_nodes.clone());
        status.blocked_totals =
            (!self.blocked_totals.is_empty()).then(|| self.blocked_totals.clone());
        status.gated_nodes = self.gated_nodes;
        status.pre_pulled_nodes = self.pre_pull.map(|p| p.0);
        status.pre_pulling_nodes = self.pre_pull.map(|p| p.1);
    }
}
