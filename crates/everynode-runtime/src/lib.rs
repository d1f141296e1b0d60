//! The everynode controller runtime: watches the cluster with kube-rs, turns the caches into a
//! snapshot, asks `everynode-core` for a plan, and carries the plan out.

#![forbid(unsafe_code)]

pub mod apply;
pub mod builtin;
pub mod caches;
pub mod client;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
pub mod expectations;
pub mod gate;
pub mod gate_keys;
pub mod http;
pub mod kept_views;
pub mod key;
pub mod leader;
pub mod metrics;
pub mod node_routes;
pub mod node_views;
pub mod pacing;
pub mod permissions;
pub mod pod_index;
pub mod pod_views;
pub mod pre_pulls;
pub mod problems;
pub mod reconcile;
pub mod retry;
pub mod server_clock;
pub mod slow_start;
pub mod target;
pub mod template_verdicts;
pub mod triggers;

pub use context::ControllerConfig;
pub use controller::run;
pub use error::Error;
pub use target::Target;
