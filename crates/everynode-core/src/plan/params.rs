//! The rollout's parameters, parsed once per plan.

use everynode_api::{DaemonSetSpec, UpdateStrategyType};

use crate::budget::{Budget, allows_surge, budget};
use crate::controls::Controls;

use super::output::PlanError;

/// The update strategy, budget and controls of one plan.
pub(super) struct RolloutParams {
    /// `updateStrategy.type: RollingUpdate`.
    pub rolling: bool,
    /// `maxSurge` allows a second pod on a node (manage keeps an old pod beside a new one).
    pub surge: bool,
    /// `rollingUpdateType: InPlaceIfPossible`.
    pub in_place: bool,
    /// `minReadySeconds`.
    pub min_ready: i64,
    /// Nodes that should run a pod.
    pub desired: i32,
    /// The budget over the desired nodes (`None`: invalid, the rolling update step is skipped).
    pub budget: Option<Budget>,
    /// everynode's controls (`None`: invalid, the rolling update step is skipped).
    pub controls: Option<Controls>,
    /// `rollingUpdate.prePull`.
    pub pre_pull: Option<everynode_api::PrePull>,
}

impl RolloutParams {
    /// Parses the set's strategy and controls for `desired` nodes; invalid values are pushed
    /// to `errors`.
    pub fn parse(spec: &DaemonSetSpec, desired: i32, errors: &mut Vec<PlanError>) -> Self {
        let strategy = spec.effective_update_strategy();
        let rolling = strategy.strategy_type() == Some(UpdateStrategyType::RollingUpdate);
        let controls = Controls::from_spec(spec, desired)
            .map_err(|e| errors.push(e.into()))
            .ok();
        let budget = budget(&strategy, desired)
            .map_err(|e| {
                if rolling && controls.is_some() {
                    errors.push(e.into());
                }
            })
            .ok();
        Self {
            rolling,
            surge: allows_surge(&strategy),
            in_place: strategy
                .rolling_update
                .as_ref()
                .is_some_and(|r| r.in_place_if_possible()),
            min_ready: i64::from(spec.effective_min_ready_seconds()),
            desired,
            budget,
            controls,
            pre_pull: strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.pre_pull.clone())
                .filter(|_| rolling),
        }
    }
}
