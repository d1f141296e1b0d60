//! Integration-test kit for everynode, on a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and KWOK; see `docs/local-cluster.md`).
//!
//! - [`shared_cluster`]: the cluster of this test process. With
//!   `EVERYNODE_TEST_CLUSTER_DIR=<dir>` ([`CLUSTER_DIR_ENV`]) tests attach to a cluster started by
//!   `cargo xtask cluster up --dir <dir>` (what `cargo xtask ci` does); otherwise the first test
//!   starts a private one (building the binaries if needed) that a watchdog stops when the test
//!   process exits.
//! - [`TestEnv`]: per-test namespace and node group (label [`GROUP_LABEL`]), node helpers (add,
//!   remove, label, taint, cordon), pod status helpers (ready / unready / failed / succeeded,
//!   through the status subresource as upstream integration tests do), cleanup on drop, and a
//!   dump of component logs when the test panics.
//! - [`eventually()`] / [`consistently`]: polling assertions with explicit timeouts.
//! - [`LocalCluster`]: an extra cluster owned by one test.
//! - [`ledger`]: an outside observer of a set's pods that checks every pod event for duplicates
//!   and the unavailability budget.
//!
//! Helpers panic with descriptive messages on failure, like `assert!`.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let env = everynode_testkit::TestEnv::new("my-test").await;
//! let nodes = env.add_nodes(2).await;
//! let pod = everynode_testkit::pods::pod("p", &Default::default(), Some(&nodes[0]));
//! env.create_pod(&pod).await;
//! env.wait_pod_running("p", Duration::from_secs(30)).await;
//! # }
//! ```

pub mod crd;
pub mod deploy;
pub mod dns;
pub mod env;
pub mod etcd;
pub mod eventually;
pub mod ledger;
pub mod local;
pub mod pods;
pub mod proxy;
pub mod shared;

pub use crd::install_crd;
pub use env::{GROUP_LABEL, TestEnv};
pub use eventually::{consistently, eventually, obs};
pub use everynode_cluster::gobuild::{NEVER_READY, SIMULATE_LABEL};
pub use everynode_cluster::{Component, audit, faketime};
pub use local::LocalCluster;
pub use shared::{CLUSTER_DIR_ENV, ClusterInfo, shared_cluster};
