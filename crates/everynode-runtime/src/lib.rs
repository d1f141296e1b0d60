//! The everynode controller runtime: watches the cluster with kube-rs, turns the caches into a
//! snapshot, asks `everynode-core` for a plan, and carries the plan out.

#![forbid(unsafe_code)]

pub mod expectations;
pub mod http;
pub mod metrics;
