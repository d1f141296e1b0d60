//! Running the benchmark: one local cluster per size (benchmark mode), the floor client, then
//! each controller in turn through S1, S2, S3, S5 and S4.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use everynode_cluster::nodes as knodes;
use everynode_cluster::{
    BENCH_FLOOR_USER, BENCH_MEASURED_USER, ClientLimits, Cluster, ClusterDir, Component,
    FlagSettings, UpOptions,
};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};

use crate::error::{Error, Result};
use crate::procfs;
use crate::report::{
    ClusterMode, ControllerId, ControllerRun, FleetResult, Load, Machine, Report, Scenario,
    ScenarioResult, SizeResult,
};
use crate::stats::Latency;
use crate::step::{SETTLE, StepMeter, StepOutcome, Who};
use crate::workload::{self, PodBook, SET_NAME};

mod fleet;

pub use fleet::FleetOptions;

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Cluster sizes (KWOK worker nodes).
    pub sizes: Vec<usize>,
    /// Cluster modes; each size runs on a fresh cluster per mode.
    pub modes: Vec<ClusterMode>,
    /// S5 idle window.
    pub idle: Duration,
    /// Root directory for the benchmark clusters (`<root>/n<size>`).
    pub dir: PathBuf,
    /// Base port of the clusters; past the cluster's own ports the bench also uses one for the
    /// DaemonSet-only kube-controller-manager and one for everynode's HTTP endpoint.
    pub base_port: u16,
    /// The `everynode` release binary.
    pub everynode: PathBuf,
    /// Controllers to run (default: all).
    pub controllers: Vec<ControllerId>,
    /// Client limits of the "equal limits" upstream run.
    pub raised_limits: ClientLimits,
    /// Run the many-sets suite instead of the single-set one.
    pub fleet: Option<FleetOptions>,
    /// The command line, for the report.
    pub command: String,
    /// Extra versions for the report (e.g. everynode commit, rustc).
    pub versions: BTreeMap<String, String>,
    /// Runs per size and mode, each on a fresh cluster (the report adds their medians).
    pub repeat: usize,
}

/// Share of nodes that join and leave in S3 (and the update budget of S2).
const CHURN_PERCENT: usize = 10;
/// How often convergence is checked.
const POLL: Duration = Duration::from_millis(50);

/// Runs every size and returns the report. Each size's cluster is stopped, also on failure.
pub async fn run(opts: &BenchOptions) -> Result<Report> {
    let started = jiff::Timestamp::now();
    let mut report = Report {
        date: started
            .round(jiff::Unit::Second)
            .map_or_else(|_| started.to_string(), |t| t.to_string()),
        command: opts.command.clone(),
        machine: machine(),
        versions: opts.versions.clone(),
        idle_seconds: opts.idle.as_secs(),
        sizes: Vec::new(),
        fleets: Vec::new(),
        notes: Vec::new(),
    };
    report.versions.insert(
        "kubernetes".into(),
        everynode_cluster::versions::KUBERNETES.into(),
    );
    report
        .versions
        .insert("etcd".into(), everynode_cluster::versions::ETCD.into());
    report
        .versions
        .insert("kwok".into(), everynode_cluster::versions::KWOK.into());
    for &nodes in &opts.sizes {
        for &mode in &opts.modes {
            for run in 1..=opts.repeat.max(1) {
                tracing::info!("=== {nodes} nodes, {}, run {run} ===", mode.label());
                // Runs are numbered only when there are several.
                let repeat = if opts.repeat > 1 { run } else { 0 };
                match run_size(opts, nodes, mode).await? {
                    Measured::Sizes(size) => report.sizes.push(SizeResult { repeat, ..size }),
                    Measured::Fleet(fleet) => report.fleets.push(FleetResult { repeat, ..fleet }),
                }
            }
        }
    }
    Ok(report)
}

/// What one cluster measured: the single-set suite or the many-sets one.
enum Measured {
    Sizes(SizeResult),
    Fleet(FleetResult),
}

fn read_load() -> Option<Load> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| Load::parse(&s))
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = procfs::parse_status_kb(&meminfo, "MemTotal").unwrap_or(0);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        memory_gib: (mem_kb + 512 * 1024) / (1024 * 1024),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned()),
    }
}

async fn run_size(opts: &BenchOptions, nodes: usize, mode: ClusterMode) -> Result<Measured> {
    let dir = opts.dir.join(format!("n{nodes}-{}", mode.slug()));
    let cdir = ClusterDir::new(&dir);
    let watchdog =
        everynode_cluster::cluster::spawn_watchdog(&cdir, &cdir.default_etcd_data_dir())?;
    let t = Instant::now();
    let up = Cluster::up(&UpOptions {
        dir: dir.clone(),
        base_port: opts.base_port,
        nodes,
        settings: FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: true,
            unthrottled: mode == ClusterMode::Unthrottled,
        },
        name: "everynode-bench".into(),
        ..UpOptions::default()
    })
    .await;
    let mut cluster = match up {
        Ok(c) => c,
        Err(e) => {
            drop(watchdog);
            return Err(e.into());
        }
    };
    let cluster_up_seconds = t.elapsed().as_secs_f64();
    let result = run_on_cluster(opts, &mut cluster, (nodes, mode), cluster_up_seconds).await;
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(20));
    }
    let down = cluster.down().await;
    watchdog.disarm();
    let measured = result?;
    down?;
    Ok(measured)
}

/// Harness state for one cluster.
struct Bench<'a> {
    opts: &'a BenchOptions,
    admin: Client,
    measured_kubeconfig: PathBuf,
    floor: Client,
    audit_log: PathBuf,
    /// Current worker nodes (changes in S3).
    nodes: BTreeSet<String>,
    /// Counter for names of joining nodes.
    joined: usize,
    /// The slice of each worker node (many-sets suite).
    slices: BTreeMap<String, usize>,
    ticks_per_second: f64,
    /// The cluster's own processes (name, PID).
    cluster_processes: Vec<(String, u32)>,
}

/// The cluster's own processes that have a PID file, by component name.
fn cluster_processes(cluster: &Cluster) -> Vec<(String, u32)> {
    Component::ALL
        .into_iter()
        .filter_map(|c| Some((c.name().to_owned(), cluster.pid(c)?)))
        .collect()
}

async fn run_on_cluster(
    opts: &BenchOptions,
    cluster: &mut Cluster,
    (nodes, mode): (usize, ClusterMode),
    cluster_up_seconds: f64,
) -> Result<Measured> {
    let admin = cluster.client().await?;
    install_crd(&admin, &opts.everynode).await?;
    let measured_kubeconfig = cluster.client_kubeconfig(BENCH_MEASURED_USER)?;
    let floor_kubeconfig = cluster.client_kubeconfig(BENCH_FLOOR_USER)?;
    let floor = everynode_cluster::health::admin_client(&floor_kubeconfig).await?;
    let mut bench = Bench {
        opts,
        admin,
        measured_kubeconfig,
        floor,
        audit_log: cluster.dir().audit_log(),
        cluster_processes: cluster_processes(cluster),
        nodes: (0..nodes).map(knodes::worker_name).collect(),
        joined: 0,
        slices: BTreeMap::new(),
        ticks_per_second: procfs::clock_ticks_per_second() as f64,
    };
    if let Some(fleet_opts) = opts.fleet {
        let runs = bench.fleet_run(cluster, fleet_opts).await?;
        let result = fleet::result((nodes, mode), fleet_opts, cluster_up_seconds, runs);
        return Ok(Measured::Fleet(result));
    }
    let load_before = read_load();
    tracing::info!("floor (minimal client)");
    let floor_results = bench.floor_run().await?;
    let mut runs = Vec::new();
    for &c in &opts.controllers {
        tracing::info!("controller {}", c.label());
        runs.push(bench.controller_run(cluster, c).await?);
    }
    Ok(Measured::Sizes(SizeResult {
        nodes,
        mode,
        repeat: 0,
        cluster_up_seconds,
        load_before,
        load_after: read_load(),
        floor: floor_results,
        runs,
    }))
}

/// Installs everynode's CRD (`everynode crd`, server-side apply) and waits until it is
/// established.
async fn install_crd(client: &Client, everynode: &Path) -> Result<()> {
    let out = tokio::process::Command::new(everynode)
        .arg("crd")
        .output()
        .await
        .map_err(Error::io("run", everynode))?;
    if !out.status.success() {
        return Err(Error::Process {
            what: format!("{} crd", everynode.display()),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let crd: CustomResourceDefinition = serde_yaml_ng::from_slice(&out.stdout)
        .map_err(|e| Error::Other(format!("everynode crd: not a CRD: {e}")))?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("everynode-bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(Error::kube("apply the everynode CRD"))?;
    let start = Instant::now();
    loop {
        let crd = api.get(&name).await.map_err(Error::kube("get the CRD"))?;
        let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(Error::Other(
                "the everynode CRD was not established within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A watch on the pods of one namespace feeding a [`PodBook`]; stopped on drop.
struct PodWatch {
    book: Arc<Mutex<PodBook>>,
    task: tokio::task::JoinHandle<()>,
    namespace: String,
}

impl PodWatch {
    async fn start(client: &Client, namespace: &str) -> Self {
        let book = Arc::new(Mutex::new(PodBook::default()));
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let b = book.clone();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            // With backoff: the API server closes a watch whose reader falls behind ("Forcing
            // watcher close due to unresponsiveness"); the watcher then resumes or re-lists.
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                let Ok(mut book) = b.lock() else { return };
                match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        book.apply(&p, now);
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        if let Some(n) = p.metadata.name.as_deref() {
                            book.delete(n);
                        }
                    }
                    Ok(watcher::Event::Init) => book.pods.clear(),
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(e) => tracing::warn!("pod watch: {e} (retrying)"),
                }
            }
            tracing::warn!("pod watch ended");
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), synced_rx).await;
        Self {
            book,
            task,
            namespace: namespace.to_owned(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&PodBook) -> T) -> Option<T> {
        self.book.lock().ok().map(|b| f(&b))
    }

    /// Replaces the pods of the book by a fresh LIST (keeps the first-seen times): the fallback
    /// when the watch looks stale.
    async fn relist(&self, client: &Client, namespace: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list pods (stale watch fallback)"))?;
        let now = Instant::now();
        let mut book = self
            .book
            .lock()
            .map_err(|_| Error::Other("pod book poisoned".into()))?;
        book.pods.clear();
        for p in &list.items {
            book.apply(p, now);
        }
        Ok(())
    }
}

/// A watch on the nodes recording when each was first seen admitting DaemonSet pods (see
/// [`workload::admits_daemon_pods`]); stopped on drop.
struct NodeWatch {
    admitted: Arc<Mutex<BTreeMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeWatch {
    fn start(client: &Client) -> Self {
        let admitted = Arc::new(Mutex::new(BTreeMap::new()));
        let api: Api<Node> = Api::all(client.clone());
        let a = admitted.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                match ev {
                    Ok(node) if workload::admits_daemon_pods(&node) => {
                        let Ok(mut admitted) = a.lock() else { return };
                        if let Some(name) = node.metadata.name {
                            admitted.entry(name).or_insert(now);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("node watch: {e} (retrying)"),
                }
            }
        });
        Self { admitted, task }
    }

    /// When `node` was first seen admitting DaemonSet pods.
    fn admitted_at(&self, node: &str) -> Option<Instant> {
        self.admitted.lock().ok()?.get(node).copied()
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long convergence may show no change before the pod book is re-listed.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// Tells when the progress a watch-fed book shows has not changed for [`STALE_AFTER`] (the
/// watch may have fallen behind: the book is then re-listed).
struct Staleness<P> {
    last: Option<P>,
    changed: Instant,
}

impl<P> Default for Staleness<P> {
    fn default() -> Self {
        Self {
            last: None,
            changed: Instant::now(),
        }
    }
}

impl<P: PartialEq + Clone> Staleness<P> {
    /// Whether `progress` is unchanged for [`STALE_AFTER`]; the clock restarts when it is.
    fn is_stale(&mut self, progress: &P) -> bool {
        if self.last.as_ref() != Some(progress) {
            self.last = Some(progress.clone());
            self.changed = Instant::now();
            false
        } else if self.changed.elapsed() > STALE_AFTER {
            self.changed = Instant::now();
            true
        } else {
            false
        }
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The measured process of a run.
struct MeasuredProcess {
    pid: u32,
    name: String,
}

impl Bench<'_> {
    fn timeout(&self) -> Duration {
        Duration::from_secs(600) + Duration::from_millis(500 * self.nodes.len() as u64)
    }

    /// A meter of `who`'s scenario steps on this cluster.
    fn step_meter<'w>(&self, who: Who<'w>) -> StepMeter<'w> {
        StepMeter::new(who, &self.audit_log, self.ticks_per_second)
            .with_cluster(self.cluster_processes.clone())
    }

    async fn create_namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.admin.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .map_err(|e| Error::Other(e.to_string()))?;
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(Error::kube(format!("create namespace {name}")))?;
        Ok(())
    }

    async fn delete_namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.admin.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(Error::kube(format!("delete namespace {name}"))(e)),
        }
        let start = Instant::now();
        while api
            .get_opt(name)
            .await
            .map_err(Error::kube("get namespace"))?
            .is_some()
        {
            if start.elapsed() > self.timeout() {
                return Err(Error::Timeout {
                    what: format!("deleting namespace {name}"),
                    seconds: self.timeout().as_secs(),
                    detail: "still there".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Waits until the pods converge to `rev` on the current nodes and `status_ok` holds.
    async fn wait_converged<F, Fut>(
        &self,
        watch: &PodWatch,
        rev: &str,
        what: &str,
        started: Instant,
        mut status_ok: F,
    ) -> Result<f64>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let mut staleness = Staleness::default();
        loop {
            let progress = watch
                .with(|b| b.progress(&self.nodes, rev))
                .ok_or_else(|| Error::Other("pod book poisoned".into()))?;
            if progress.done() && status_ok().await? {
                return Ok(started.elapsed().as_secs_f64());
            }
            if staleness.is_stale(&progress) {
                tracing::warn!(
                    "{what}: no change for {STALE_AFTER:?} ({progress}); re-listing pods"
                );
                watch.relist(&self.admin, &watch.namespace).await?;
            }
            if started.elapsed() > self.timeout() {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    seconds: self.timeout().as_secs(),
                    detail: progress.to_string(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_no_pods(&self, watch: &PodWatch, what: &str, started: Instant) -> Result<f64> {
        loop {
            let left = watch.with(|b| b.pods.len()).unwrap_or(usize::MAX);
            if left == 0 {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > self.timeout() {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    seconds: self.timeout().as_secs(),
                    detail: format!("{left} pods left"),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_orphans_gone(&self, watch: &PodWatch) -> Result<()> {
        let started = Instant::now();
        loop {
            let orphans = watch
                .with(|b| {
                    b.pods
                        .values()
                        .filter(|p| !self.nodes.contains(&p.node))
                        .count()
                })
                .unwrap_or(0);
            if orphans == 0 {
                tracing::info!(
                    "  (pods of departed nodes collected after {:.1} s, not measured)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > self.timeout() {
                return Err(Error::Timeout {
                    what: "pod GC of departed nodes' pods".into(),
                    seconds: self.timeout().as_secs(),
                    detail: format!("{orphans} left"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn churn_count(&self) -> usize {
        (self.nodes.len() * CHURN_PERCENT).div_ceil(100).max(1)
    }

    /// S3's node changes: `k` new nodes join and the first `k` current nodes leave, at the same
    /// time. Returns when each joining node was created. `on_join` runs right after each node
    /// is created (the floor client creates its pod there).
    async fn churn_nodes<F, Fut>(&mut self, on_join: F) -> Result<BTreeMap<String, Instant>>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let k = self.churn_count();
        let leave: Vec<String> = self.nodes.iter().take(k).cloned().collect();
        let join: Vec<String> = (0..k)
            .map(|i| format!("kwok-join-{:05}", self.joined + i))
            .collect();
        self.joined += k;
        let nodes_api: Api<Node> = Api::all(self.admin.clone());
        let marker = BTreeMap::from([(knodes::CLUSTER_NODE_LABEL.to_owned(), "true".to_owned())]);
        for n in &leave {
            self.nodes.remove(n);
        }
        self.nodes.extend(join.iter().cloned());
        let api = &nodes_api;
        let marker = &marker;
        let on_join = &on_join;
        let creates = futures::stream::iter(join.into_iter().enumerate())
            .map(|(i, name)| async move {
                let node = knodes::worker(&name, knodes::zone_for(i), marker);
                api.create(&PostParams::default(), &node)
                    .await
                    .map_err(Error::kube(format!("create node {name}")))?;
                let at = Instant::now();
                on_join(name.clone()).await?;
                Ok::<_, Error>((name, at))
            })
            .buffer_unordered(8)
            .try_collect::<BTreeMap<String, Instant>>();
        let deletes = futures::stream::iter(leave)
            .map(|name| async move {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(Error::kube(format!("delete node {name}")))
                    .map(|_| ())
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>();
        let (joined, deleted) = futures::join!(creates, deletes);
        deleted?;
        joined
    }

    /// The floor: the same pod work as S1–S3, done by a minimal client (slow-start creates like
    /// the controllers, no status, no events), with its own identity.
    async fn floor_run(&mut self) -> Result<Vec<ScenarioResult>> {
        let ns = "bench-floor";
        self.create_namespace(ns).await?;
        let watch = PodWatch::start(&self.admin, ns).await;
        let pods: Api<Pod> = Api::namespaced(self.floor.clone(), ns);
        let meter = self.step_meter(Who::FLOOR);
        let mut out = Vec::new();
        // The floor writes no status: its pods alone decide convergence.
        let pods_only = || async { Ok(true) };

        // S1: create one pod per node in slow-start batches (1, 2, 4, …).
        let s1 = meter.measure(Scenario::S1, async |started| {
            let nodes: Vec<String> = self.nodes.iter().cloned().collect();
            let mut remaining = nodes.as_slice();
            let mut batch = 1;
            while !remaining.is_empty() {
                let (now, rest) = remaining.split_at(batch.min(remaining.len()));
                remaining = rest;
                futures::future::try_join_all(
                    now.iter().map(|n| create_floor_pod(&pods, ns, n, "1")),
                )
                .await?;
                batch *= 2;
            }
            let secs = self
                .wait_converged(&watch, "1", "floor S1", started, pods_only)
                .await?;
            Ok(StepOutcome::converged(secs, nodes.len()))
        });
        out.push(s1.await?);

        // S2: replace every pod, at most 10 % of the nodes without a ready pod at a time.
        let s2 = meter.measure(Scenario::S2, async |started| {
            let secs = self
                .floor_rolling_update(&watch, &pods, ns, started)
                .await?;
            Ok(StepOutcome::converged(secs, self.nodes.len()))
        });
        out.push(s2.await?);

        // S3: nodes join and leave; a pod is created for each joining node right away.
        let s3 = meter.measure(Scenario::S3, async |started| {
            let pods = &pods;
            let joined = self
                .churn_nodes(|node| async move { create_floor_pod(pods, ns, &node, "2").await })
                .await?;
            let secs = self
                .wait_converged(&watch, "2", "floor S3", started, pods_only)
                .await?;
            Ok(StepOutcome::converged(secs, joined.len()))
        });
        out.push(s3.await?);

        // Clean up (not measured).
        delete_watched_pods(&pods, &watch).await?;
        self.wait_no_pods(&watch, "floor clean-up", Instant::now())
            .await?;
        drop(watch);
        self.delete_namespace(ns).await?;
        Ok(out)
    }

    /// The floor's S2 from `started`: deletes each old pod and creates its replacement at once,
    /// at most 10 % of the nodes without a ready new pod at a time, refilling the budget as new
    /// pods become ready. Returns the seconds to convergence.
    async fn floor_rolling_update(
        &self,
        watch: &PodWatch,
        pods: &Api<Pod>,
        ns: &str,
        started: Instant,
    ) -> Result<f64> {
        let budget = self.churn_count();
        let mut started_nodes: BTreeSet<String> = BTreeSet::new();
        let mut inflight = futures::stream::FuturesUnordered::new();
        loop {
            let (ready_new, done) = watch
                .with(|b| {
                    let ready: BTreeSet<String> = b
                        .pods
                        .values()
                        .filter(|p| p.rev == "2" && p.ready && !p.deleting)
                        .map(|p| p.node.clone())
                        .collect();
                    (ready, b.progress(&self.nodes, "2").done())
                })
                .ok_or_else(|| Error::Other("pod book poisoned".into()))?;
            if done {
                return Ok(started.elapsed().as_secs_f64());
            }
            let unavailable = started_nodes.difference(&ready_new).count();
            for node in self
                .nodes
                .iter()
                .filter(|n| !started_nodes.contains(*n))
                .take(budget.saturating_sub(unavailable))
                .cloned()
                .collect::<Vec<_>>()
            {
                started_nodes.insert(node.clone());
                let pods = pods.clone();
                inflight.push(async move {
                    delete_pod(&pods, &workload::floor_pod_name(&node, "1")).await?;
                    create_floor_pod(&pods, ns, &node, "2").await
                });
            }
            // Drive the requests while polling.
            let drive = tokio::time::timeout(POLL, async {
                while let Some(r) = inflight.next().await {
                    r?;
                }
                Ok::<(), Error>(())
            })
            .await;
            if let Ok(r) = drive {
                r?;
            }
            if started.elapsed() > self.timeout() {
                return Err(Error::Timeout {
                    what: "floor S2".into(),
                    seconds: self.timeout().as_secs(),
                    detail: watch
                        .with(|b| b.progress(&self.nodes, "2").to_string())
                        .unwrap_or_default(),
                });
            }
        }
    }

    async fn start_measured(
        &self,
        cluster: &mut Cluster,
        c: ControllerId,
    ) -> Result<MeasuredProcess> {
        let name = c.key().to_owned();
        // The two ports right after the cluster's own.
        let port_kcm = self.opts.base_port + everynode_cluster::ports::PORTS_PER_CLUSTER;
        let port_http = port_kcm + 1;
        let pid = match c {
            ControllerId::UpstreamDefault | ControllerId::UpstreamEqual => {
                let limits = (c == ControllerId::UpstreamEqual).then_some(self.opts.raised_limits);
                cluster
                    .start_daemonset_controller_manager(
                        &name,
                        &self.measured_kubeconfig,
                        port_kcm,
                        limits,
                    )
                    .await?
            }
            ControllerId::EverynodeAppsV1 | ControllerId::EverynodeOwn => {
                let target = if c == ControllerId::EverynodeAppsV1 {
                    "apps/v1"
                } else {
                    "everynode.dev/v1alpha1"
                };
                let args: Vec<String> = [
                    "controller",
                    "--target",
                    target,
                    "--kubeconfig",
                    &self.measured_kubeconfig.display().to_string(),
                    "--http-addr",
                    &format!("127.0.0.1:{port_http}"),
                    "--instance",
                    "everynode-bench",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                let pid = cluster.spawn_extra(&name, &self.opts.everynode, &args)?;
                let url = format!("http://127.0.0.1:{port_http}");
                let start = Instant::now();
                loop {
                    if everynode_cluster::health::probe(&url, "/readyz")
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    if !everynode_cluster::process::is_alive(pid)
                        || start.elapsed() > Duration::from_secs(120)
                    {
                        return Err(Error::Process {
                            what: name,
                            message: format!(
                                "not ready; log:\n{}",
                                everynode_cluster::process::tail(
                                    &cluster.dir().extra_log(c.key()),
                                    30
                                )
                            ),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                pid
            }
        };
        Ok(MeasuredProcess { pid, name })
    }

    /// One controller through S1, S2, S3, S5 and S4, in its own namespace.
    async fn controller_run(
        &mut self,
        cluster: &mut Cluster,
        c: ControllerId,
    ) -> Result<ControllerRun> {
        let ns = format!("bench-{}", c.key());
        let (api_version, ar) = set_resource(c);
        self.create_namespace(&ns).await?;
        let t = Instant::now();
        let measured = self.start_measured(cluster, c).await?;
        let startup_seconds = t.elapsed().as_secs_f64();
        let result = self.scenarios(&ns, api_version, &ar, &measured).await;
        cluster.stop_extra(&measured.name).await?;
        let scenarios = result?;
        self.delete_namespace(&ns).await?;
        Ok(ControllerRun {
            controller: c,
            client_limits: self.client_limits(c),
            startup_seconds,
            scenarios,
        })
    }

    /// How the client of controller `c` is limited (for the report).
    fn client_limits(&self, c: ControllerId) -> String {
        match c {
            ControllerId::UpstreamDefault => {
                "kube-controller-manager defaults: QPS 20, burst 30".into()
            }
            ControllerId::UpstreamEqual => format!(
                "--kube-api-qps={} --kube-api-burst={}",
                self.opts.raised_limits.qps, self.opts.raised_limits.burst
            ),
            _ => "none (kube-rs has no client-side rate limiter)".into(),
        }
    }

    /// The measured controller `m` through S1, S2, S3, S5 and S4 on a set of kind `ar` in `ns`.
    async fn scenarios(
        &mut self,
        ns: &str,
        api_version: &str,
        ar: &ApiResource,
        m: &MeasuredProcess,
    ) -> Result<Vec<ScenarioResult>> {
        let sets: Api<DynamicObject> = Api::namespaced_with(self.admin.clone(), ns, ar);
        let watch = PodWatch::start(&self.admin, ns).await;
        let meter = self.step_meter(Who::measured(m.pid));
        let mut out = Vec::new();
        tokio::time::sleep(SETTLE).await;

        // S1: create the set.
        let s1 = meter.measure(Scenario::S1, async |started| {
            let obj: DynamicObject =
                serde_json::from_value(workload::set_object(api_version, ns, "1"))
                    .map_err(|e| Error::Other(e.to_string()))?;
            sets.create(&PostParams::default(), &obj)
                .await
                .map_err(Error::kube("create the set"))?;
            let what = format!("{} S1", m.name);
            let secs = self
                .wait_set_converged(&watch, &sets, "1", &what, started)
                .await?;
            Ok(StepOutcome::converged(secs, self.nodes.len()))
        });
        out.push(s1.await?);

        // S2: update the set's template.
        let s2 = meter.measure(Scenario::S2, async |started| {
            sets.patch(
                SET_NAME,
                &PatchParams::default(),
                &Patch::Merge(workload::rev_patch("2")),
            )
            .await
            .map_err(Error::kube("update the set's template"))?;
            let what = format!("{} S2", m.name);
            let secs = self
                .wait_set_converged(&watch, &sets, "2", &what, started)
                .await?;
            Ok(StepOutcome::converged(secs, self.nodes.len()))
        });
        out.push(s2.await?);

        out.push(self.controller_churn(&meter, &watch, &sets, m).await?);

        // Not measured: pods of the nodes that left stay (Terminating) until the pod garbage
        // collector of the shared kube-controller-manager removes them (~40 s after the node
        // went); wait for that so S5 is idle and S4 measures the set's own pods.
        self.wait_orphans_gone(&watch).await?;

        // S5: idle with the set in place; only KWOK's node heartbeats happen. The window ends
        // with the step's settling pause.
        let s5 = meter.measure(Scenario::S5, async |started| {
            tokio::time::sleep(self.opts.idle.saturating_sub(SETTLE)).await;
            let secs = started.elapsed().as_secs_f64() + SETTLE.as_secs_f64();
            Ok(StepOutcome::converged(secs, 0))
        });
        out.push(s5.await?);

        // S4: delete the set (background propagation: the garbage collector removes the pods).
        let pods_before = watch.with(|b| b.pods.len()).unwrap_or(0);
        let s4 = meter.measure(Scenario::S4, async |started| {
            sets.delete(SET_NAME, &DeleteParams::background())
                .await
                .map_err(Error::kube("delete the set"))?;
            let what = format!("{} S4", m.name);
            let secs = self.wait_no_pods(&watch, &what, started).await?;
            Ok(StepOutcome::converged(secs, pods_before))
        });
        out.push(s4.await?);
        Ok(out)
    }

    /// S3 of the measured controller `m`: nodes join and leave. Also records how long each
    /// joining node waited for its pod, from its creation and from its admitting daemon pods.
    async fn controller_churn(
        &mut self,
        meter: &StepMeter<'_>,
        watch: &PodWatch,
        sets: &Api<DynamicObject>,
        m: &MeasuredProcess,
    ) -> Result<ScenarioResult> {
        let node_watch = NodeWatch::start(&self.admin);
        let s3 = meter.measure(Scenario::S3, async |started| {
            let joined = self.churn_nodes(|_| async { Ok(()) }).await?;
            let what = format!("{} S3", m.name);
            let secs = self
                .wait_set_converged(watch, sets, "2", &what, started)
                .await?;
            let (join_latency, admitted_latency) = join_latencies(watch, &node_watch, &joined);
            drop(node_watch);
            Ok(StepOutcome {
                join_latency,
                admitted_latency,
                ..StepOutcome::converged(secs, joined.len())
            })
        });
        let s3 = s3.await?;
        if let Some(l) = s3.admitted_latency {
            tracing::info!(
                "  S3 node admits daemon pods → pod created: p50 {:.0} ms p99 {:.0} ms",
                l.p50_ms,
                l.p99_ms
            );
        }
        Ok(s3)
    }

    /// Waits until the pods converge to `rev` on the current nodes and the set's status says
    /// so for every node.
    async fn wait_set_converged(
        &self,
        watch: &PodWatch,
        sets: &Api<DynamicObject>,
        rev: &str,
        what: &str,
        started: Instant,
    ) -> Result<f64> {
        let nodes = self.nodes.len();
        self.wait_converged(watch, rev, what, started, || {
            set_status_converged(sets, nodes)
        })
        .await
    }
}

/// The apiVersion and API resource of the sets controller `c` runs.
fn set_resource(c: ControllerId) -> (&'static str, ApiResource) {
    if c == ControllerId::EverynodeOwn {
        let ar = ApiResource {
            group: "everynode.dev".into(),
            version: "v1alpha1".into(),
            api_version: "everynode.dev/v1alpha1".into(),
            kind: "DaemonSet".into(),
            plural: "daemonsets".into(),
        };
        ("everynode.dev/v1alpha1", ar)
    } else {
        let ar = ApiResource::erase::<k8s_openapi::api::apps::v1::DaemonSet>(&());
        ("apps/v1", ar)
    }
}

/// Whether the status of the set reports `nodes` nodes converged.
async fn set_status_converged(sets: &Api<DynamicObject>, nodes: usize) -> Result<bool> {
    let set = sets
        .get(SET_NAME)
        .await
        .map_err(Error::kube("get the set"))?;
    let value = serde_json::to_value(&set).map_err(|e| Error::Other(e.to_string()))?;
    Ok(workload::status_converged(&value, nodes))
}

/// S3's join latencies, from the harness's watches: each joined node's creation (`joined`), and
/// its admitting daemon pods (the controller's share), to its pod first seen.
fn join_latencies(
    watch: &PodWatch,
    node_watch: &NodeWatch,
    joined: &BTreeMap<String, Instant>,
) -> (Option<Latency>, Option<Latency>) {
    let (from_joined, from_admitted): (Vec<f64>, Vec<f64>) = watch
        .with(|b| {
            let ms = |from: Instant, to: &Instant| {
                to.saturating_duration_since(from).as_secs_f64() * 1000.0
            };
            let joined_ms = joined
                .iter()
                .filter_map(|(node, at)| b.first_seen.get(node).map(|seen| ms(*at, seen)))
                .collect();
            let admitted_ms = joined
                .keys()
                .filter_map(|node| {
                    let seen = b.first_seen.get(node)?;
                    Some(ms(node_watch.admitted_at(node)?, seen))
                })
                .collect();
            (joined_ms, admitted_ms)
        })
        .unwrap_or_default();
    (Latency::of(&from_joined), Latency::of(&from_admitted))
}

async fn create_floor_pod(pods: &Api<Pod>, ns: &str, node: &str, rev: &str) -> Result<()> {
    let pod = workload::floor_pod(ns, node, rev).map_err(|e| Error::Other(e.to_string()))?;
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("create floor pod for {node}"))(e)),
    }
}

/// Deletes every pod `watch` shows, one request each, 32 at a time: one deletecollection of
/// 5,000 pods outlived the API server's request timeout.
async fn delete_watched_pods(pods: &Api<Pod>, watch: &PodWatch) -> Result<()> {
    let names: Vec<String> = watch
        .with(|b| b.pods.keys().cloned().collect())
        .unwrap_or_default();
    futures::stream::iter(names)
        .map(|name| async move { delete_pod(pods, &name).await })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("delete pod {name}"))(e)),
    }
}
