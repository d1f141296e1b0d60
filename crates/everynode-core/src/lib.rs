//! everynode's pure planner.
//!
//! Given one set, views of the nodes, the set's pods and revisions, the failed-pod backoff
//! state and `now` ([`PlanInput`]), [`plan()`] decides — exactly like one upstream
//! `syncDaemonSet` — which pods to create and delete, which history actions to take, which
//! events to publish and what the status says ([`Plan`]). Every decision carries a
//! machine-readable reason ([`reason`]).
//!
//! No I/O, no clock, no async runtime, no Kubernetes client: `now` is an input and the output
//! is deterministic (nodes by name, pods by the upstream ordering, `BTreeMap`s), so shuffled
//! inputs give the same plan.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod budget;
pub mod controls;
pub mod convert;
pub mod eligibility;
pub mod explain;
pub mod gate;
pub mod gojson;
mod index;
pub mod inplace;
pub mod interest;
pub mod manage;
pub mod overrides;
pub mod plan;
pub mod prepull_pod;
pub mod problem;
pub mod reason;
pub mod render;
pub mod revision;
pub mod rollout;
pub mod safety;
pub mod selector;
pub mod simulate;
pub mod slim;
pub mod snapshot;
mod state;
pub mod status;

pub mod template_check;

pub use backoff::{BackoffConfig, BackoffEntry};
pub use controls::{Controls, ControlsError, NodeOrder};
pub use eligibility::{Eligibility, NodeMatcher, node_should_run};
pub use explain::{Deferrals, SharedName};
pub use interest::NodeInterest;
pub use manage::{EventReason, PlanEvent};
pub use plan::{
    BackoffUpdate, NodeDecision, Plan, PlanError, PodCreate, PodDelete, PodUpdate, plan,
};
pub use reason::{CreateReason, Deferred, DeleteReason, NodeExcluded, RevisionDeleteReason};
pub use render::{
    RenderParams, controller_owner_reference, generated_pod_name, render_pod, target_node_name,
};
pub use revision::{
    HistoryPlan, NewRevision, data_matches, hash_template, overrides_from_data, revision_data,
    template_from_data, template_revision,
};
pub use snapshot::{
    NodeProblem, NodeView, Owner, PlanConfig, PlanInput, PodLabels, PodPhase, PodView,
    RevisionView, SetView, SnapshotError,
};
pub use status::StatusCounts;
pub use status::pacing::StatusWrite;

/// Re-exported so callers build `now` with the same type.
pub use k8s_openapi::jiff::Timestamp;
