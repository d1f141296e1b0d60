//! Extra clusters started by a test (e.g. one with the other DaemonSet-controller setting).

use everynode_cluster::{Cluster, StopReport, Watchdog};

use crate::shared::{ClusterInfo, start_private};

/// A private cluster owned by one test, on its own free ports and in its own directory. A
/// watchdog stops it if the test process dies; dropping it without [`LocalCluster::down`] (e.g.
/// when the test panics) stops it too.
#[derive(Debug)]
pub struct LocalCluster {
    cluster: Option<Cluster>,
    watchdog: Option<Watchdog>,
    info: ClusterInfo,
}

impl LocalCluster {
    /// Starts a cluster with `nodes` worker nodes (plus the control-plane node) and the given
    /// built-in DaemonSet controller setting.
    ///
    /// # Panics
    /// When it cannot be built or started (the message carries the failing component's log).
    pub async fn start(nodes: usize, builtin_daemonset_controller: bool) -> Self {
        match start_private(nodes, builtin_daemonset_controller, "everynode-extra").await {
            Ok((cluster, watchdog)) => {
                let info = ClusterInfo {
                    dir: cluster.dir().clone(),
                    state: cluster.state().clone(),
                    started_here: true,
                };
                Self {
                    cluster: Some(cluster),
                    watchdog: Some(watchdog),
                    info,
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Connection details (for [`crate::TestEnv::on`] or a client).
    #[must_use]
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// Restarts kube-controller-manager with the built-in DaemonSet controller on or off.
    ///
    /// # Panics
    /// When the controller manager does not come back healthy.
    pub async fn set_builtin_daemonset_controller(&mut self, on: bool) {
        let cluster = self.cluster_mut();
        if let Err(e) = cluster.set_builtin_daemonset_controller(on).await {
            panic!("restarting kube-controller-manager: {e}");
        }
        self.info.state = cluster.state().clone();
    }

    /// SIGKILLs one component of the cluster, as a crash would.
    pub async fn kill_component(&mut self, component: everynode_cluster::Component) {
        self.cluster_mut().kill_component(component).await;
    }

    /// Starts a killed component again (same flags, same data) and waits until it is healthy.
    ///
    /// # Panics
    /// When it does not come back healthy.
    pub async fn start_component(&mut self, component: everynode_cluster::Component) {
        if let Err(e) = self.cluster_mut().start_component(component).await {
            panic!("restarting {}: {e}", component.name());
        }
    }

    fn cluster_mut(&mut self) -> &mut Cluster {
        match self.cluster.as_mut() {
            Some(cluster) => cluster,
            None => panic!("the cluster was stopped already"),
        }
    }

    /// Stops the cluster (recorded PIDs only) and removes its directories.
    ///
    /// # Panics
    /// When stopping fails.
    pub async fn down(mut self) -> Vec<StopReport> {
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
        match self.cluster.take() {
            Some(c) => match c.down().await {
                Ok(r) => r,
                Err(e) => panic!("cluster down: {e}"),
            },
            None => Vec::new(),
        }
    }
}
