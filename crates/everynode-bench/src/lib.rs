//! Side-by-side benchmarks of everynode and the built-in DaemonSet controller
//! (`cargo xtask bench`, issue #6).
//!
//! Per cluster size, one local control plane in benchmark mode (no API Priority and Fairness,
//! no in-flight limits, audit log of the benchmark identities) runs, in turn:
//!
//! - the **floor**: a minimal client doing the same pod work (S1–S3), the best the API server,
//!   scheduler and KWOK allow;
//! - the **upstream** DaemonSet controller, as its own kube-controller-manager with
//!   `--controllers=daemonset-controller`, at its default client limits and with raised ones;
//! - **everynode** on apps/v1 DaemonSets (`--target apps/v1`) and on its own
//!   `everynode.dev/v1alpha1` DaemonSets.
//!
//! The cluster's own kube-controller-manager (`*,-daemonset-controller`: garbage collector, pod
//! GC, node lifecycle, …) runs throughout, so each measured process does only DaemonSet work.
//! Each measured process authenticates as [`everynode_cluster::BENCH_MEASURED_USER`], so the
//! audit log attributes its requests exactly; CPU time and peak RSS come from `/proc/<pid>`.
//! See `docs/benchmarks/README.md`.

pub mod error;
pub mod fleet;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod stats;
mod step;
pub mod workload;

pub use error::{Error, Result};
pub use report::{ClusterMode, ControllerId, Report};
pub use runner::{BenchOptions, FleetOptions, run};
