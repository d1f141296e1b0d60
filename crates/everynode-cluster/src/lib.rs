//! The local Kubernetes control plane of everynode: the one place that knows how to build it
//! (from pinned Go modules) and how to run it (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and KWOK, all on 127.0.0.1). Used by `cargo xtask cluster ...` and by
//! `everynode-testkit`. See `docs/local-cluster.md`.

pub mod audit;
pub mod cluster;
pub mod component;
pub mod error;
pub mod faketime;
pub mod flags;
pub mod gobuild;
pub mod health;
pub mod layout;
pub mod nodes;
pub mod pki;
pub mod ports;
pub mod process;
pub mod versions;

pub use cluster::{
    Cluster, ClusterState, ComponentStatus, StopReport, UpOptions, Watchdog, down, log_tails,
};
pub use component::Component;
pub use error::{Error, Result};
pub use flags::{BENCH_FLOOR_USER, BENCH_MEASURED_USER, ClientLimits, FlagSettings};
pub use layout::{Cache, ClusterDir};
pub use ports::Ports;
