//! The control plane shared by every test of one test process: attached to (when
//! [`CLUSTER_DIR_ENV`] is set) or started once, lazily, by the first test that needs it.

use std::path::PathBuf;
use std::sync::Mutex;

use everynode_cluster::{
    Cache, Cluster, ClusterDir, ClusterState, FlagSettings, Ports, UpOptions, Watchdog, gobuild,
};
use tokio::sync::OnceCell;

/// Environment variable naming the directory of a running cluster (made by
/// `cargo xtask cluster up --dir <dir>`, as `cargo xtask ci` does). When set, tests attach to that
/// cluster; when unset, the first test starts a private cluster for the test process (building
/// the binaries first if needed) and a watchdog stops it when the process exits.
pub const CLUSTER_DIR_ENV: &str = "EVERYNODE_TEST_CLUSTER_DIR";

/// First base port tried for clusters started by the test kit (the next free block of eight is
/// used, so parallel test processes and a developer's `cluster up` on 16443 do not collide).
pub const TEST_BASE_PORT: u16 = 18443;

/// What tests need to know about the shared cluster. Cheap to clone; holds no client (a kube
/// client is bound to the tokio runtime that created it, and every `#[tokio::test]` has its own).
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// Cluster directory (kubeconfig, logs).
    pub dir: ClusterDir,
    /// Recorded state (ports, settings).
    pub state: ClusterState,
    /// Whether this test process started the cluster (rather than attaching).
    pub started_here: bool,
}

impl ClusterInfo {
    /// Admin kubeconfig path.
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.kubeconfig()
    }

    /// A fresh client for the current runtime.
    ///
    /// # Panics
    /// When the kubeconfig cannot be loaded.
    pub async fn client(&self) -> kube::Client {
        match everynode_cluster::health::admin_client(&self.dir.kubeconfig()).await {
            Ok(c) => c,
            Err(e) => panic!("cannot create a client for the test cluster: {e}"),
        }
    }

    /// The kubectl built with the cluster's binaries (same Kubernetes version).
    #[must_use]
    pub fn kubectl(&self) -> PathBuf {
        self.state
            .binaries
            .get(everynode_cluster::Component::KubeApiserver.name())
            .map_or_else(
                || Cache::pinned().binary_named(gobuild::KUBECTL),
                |apiserver| apiserver.with_file_name(gobuild::KUBECTL),
            )
    }

    /// Address of the cluster's DNS server (CoreDNS, UDP and TCP on 127.0.0.1).
    #[must_use]
    pub fn dns_server(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.state.ports.dns))
    }

    /// The last `lines` lines of every component log.
    #[must_use]
    pub fn log_tails(&self, lines: usize) -> String {
        everynode_cluster::log_tails(&self.dir, lines)
    }
}

static SHARED: OnceCell<Result<ClusterInfo, String>> = OnceCell::const_new();
/// Keeps the started cluster's process handles and its watchdog alive until the process exits;
/// the watchdog then stops the cluster.
static KEEP_ALIVE: Mutex<Vec<(Cluster, Watchdog)>> = Mutex::new(Vec::new());

/// The shared cluster, attached or started on first use.
///
/// # Panics
/// With instructions when no cluster can be attached to or started.
pub async fn shared_cluster() -> ClusterInfo {
    match SHARED.get_or_init(init).await {
        Ok(info) => info.clone(),
        Err(e) => panic!("{e}"),
    }
}

async fn init() -> Result<ClusterInfo, String> {
    if let Some(dir) = std::env::var_os(CLUSTER_DIR_ENV).filter(|d| !d.is_empty()) {
        let cluster = Cluster::attach(&dir)
            .map_err(|e| format!("{CLUSTER_DIR_ENV}={}: {e}", PathBuf::from(&dir).display()))?;
        let down: Vec<String> = cluster
            .status()
            .await
            .into_iter()
            .filter(|s| !s.running || s.health.is_err())
            .map(|s| {
                format!(
                    "{} ({})",
                    s.component,
                    s.health.err().unwrap_or_else(|| "not running".to_owned())
                )
            })
            .collect();
        if !down.is_empty() {
            return Err(format!(
                "{CLUSTER_DIR_ENV}={}: cluster unhealthy: {}; check `cargo xtask cluster status --dir {}`",
                cluster.dir().root().display(),
                down.join(", "),
                cluster.dir().root().display()
            ));
        }
        return Ok(ClusterInfo {
            dir: cluster.dir().clone(),
            state: cluster.state().clone(),
            started_here: false,
        });
    }
    let (cluster, watchdog) = start_private(0, false, "everynode-test").await?;
    let info = ClusterInfo {
        dir: cluster.dir().clone(),
        state: cluster.state().clone(),
        started_here: true,
    };
    if let Ok(mut keep) = KEEP_ALIVE.lock() {
        keep.push((cluster, watchdog));
    }
    Ok(info)
}

/// Builds the binaries if needed (or explains how), then starts a cluster with a watchdog in a
/// fresh temporary directory on free ports.
pub(crate) async fn start_private(
    nodes: usize,
    builtin_daemonset_controller: bool,
    prefix: &str,
) -> Result<(Cluster, Watchdog), String> {
    // One start at a time per process: choosing free ports and binding them is not atomic.
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = STARTING.lock().await;
    ensure_built().await?;
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{seq}", std::process::id()));
    let ports = Ports::find_free(TEST_BASE_PORT).map_err(|e| e.to_string())?;
    let opts = UpOptions {
        dir,
        base_port: ports.apiserver,
        nodes,
        settings: FlagSettings {
            builtin_daemonset_controller,
            benchmark: false,
            unthrottled: false,
        },
        ..UpOptions::default()
    };
    // The watchdog comes first, so that a test process dying during start-up leaves nothing
    // behind either (it reads the PID files only when it fires).
    let cluster_dir = ClusterDir::new(&opts.dir);
    let watchdog = everynode_cluster::cluster::spawn_watchdog(
        &cluster_dir,
        &cluster_dir.default_etcd_data_dir(),
    )
    .map_err(|e| format!("cannot start the cluster watchdog: {e}"))?;
    let cluster = Cluster::up(&opts)
        .await
        .map_err(|e| format!("starting the test cluster failed: {e}"))?;
    Ok((cluster, watchdog))
}

async fn ensure_built() -> Result<(), String> {
    let cache = Cache::pinned();
    let Err(missing) = gobuild::check_built(&cache) else {
        return Ok(());
    };
    if let Err(go) = gobuild::go_version() {
        return Err(format!(
            "no local control plane for the integration tests: {missing}.\n\
             Either start one and point the tests at it:\n  \
             cargo xtask cluster up --dir /tmp/everynode-cluster && {CLUSTER_DIR_ENV}=/tmp/everynode-cluster cargo test\n\
             or install Go >= 1.26 ({go}) so the tests can build it (`cargo xtask cluster build`, ~20 min cold)."
        ));
    }
    eprintln!(
        "everynode-testkit: {missing}; building the control plane now (one-off, ~20 min cold; `cargo xtask cluster build` does the same)"
    );
    tokio::task::spawn_blocking(move || gobuild::build(&cache))
        .await
        .map_err(|e| format!("build task failed: {e}"))?
        .map(|_| ())
        .map_err(|e| format!("building the control plane failed: {e}"))
}
