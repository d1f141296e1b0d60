//! The everynode custom resource: `DaemonSet` in API group `everynode.dev`, version `v1alpha1`.
//!
//! The spec and status mirror apps/v1 `DaemonSetSpec` / `DaemonSetStatus` field for field, with the
//! same defaults, so a manifest written for the built-in DaemonSet works after changing
//! `apiVersion`. Validation that apps/v1 performs in the apiserver's Go code is expressed here as
//! OpenAPI schema constraints and CEL rules (`x-kubernetes-validations`) so the apiserver enforces
//! it at admission and tests can evaluate the same rules locally.

#![forbid(unsafe_code)]

pub mod crd;
pub mod labels;
pub(crate) mod rules;
pub mod v1alpha1;

pub use v1alpha1::{
    BlockedNode, ContainerOverride, DaemonSet, DaemonSetSpec, DaemonSetStatus,
    DaemonSetUpdateStrategy, FailurePolicy, GateTaint, NewNodePolicy, NodeOverride, NodeReadiness,
    PrePull, ReasonCount, RevisionPods, RollingUpdateDaemonSet, RolloutAbort, RolloutFailure,
    RolloutOrder, RolloutOrderType, RolloutRetry, RolloutRollback, RolloutWave, UpdateStrategyType,
};
