//! `up`, `down`, `status` and the watchdog: running one local control plane.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::error::{Error, Result};
use crate::flags::{self, FlagContext, FlagSettings};
use crate::health;
use crate::layout::{Cache, ClusterDir};
use crate::nodes;
use crate::pki::{self, Pki};
use crate::ports::Ports;
use crate::process;
use crate::versions;

/// How many log lines a failure report shows.
pub const LOG_TAIL_LINES: usize = 40;

/// Options of [`Cluster::up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOptions {
    /// Cluster directory (state, PKI, kubeconfig, logs, PIDs).
    pub dir: PathBuf,
    /// Base port: kube-apiserver; the others follow (see [`Ports`]).
    pub base_port: u16,
    /// Number of KWOK worker nodes (the control-plane node comes on top).
    pub nodes: usize,
    /// Component flag settings (built-in DaemonSet controller, benchmark mode).
    pub settings: FlagSettings,
    /// Binary cache root (`None`: [`crate::layout::cache_root`]).
    pub cache_root: Option<PathBuf>,
    /// Name of the cluster in the kubeconfig.
    pub name: String,
}

impl Default for UpOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(crate::layout::DEFAULT_CLUSTER_DIR),
            base_port: crate::ports::DEFAULT_BASE_PORT,
            nodes: 3,
            settings: FlagSettings {
                builtin_daemonset_controller: false,
                benchmark: false,
                unthrottled: false,
            },
            cache_root: None,
            name: "everynode".to_owned(),
        }
    }
}

/// What `up` recorded in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Name in the kubeconfig.
    pub name: String,
    /// Ports.
    pub ports: Ports,
    /// Flag settings.
    pub settings: FlagSettings,
    /// Number of worker nodes created by `up`.
    pub nodes: usize,
    /// etcd data directory (removed by `down`).
    pub etcd_data_dir: PathBuf,
    /// Binary of each component, by component name.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Pinned versions, for the record.
    pub versions: BTreeMap<String, String>,
}

/// One component in [`Cluster::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentStatus {
    /// The component.
    pub component: Component,
    /// Recorded PID, if any.
    pub pid: Option<u32>,
    /// Whether the recorded PID is alive and runs the component's binary.
    pub running: bool,
    /// Health endpoint URL.
    pub endpoint: String,
    /// Health check result: the body (trimmed) or the error.
    pub health: Result<String, String>,
}

/// What [`down`] did to one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// The component.
    pub component: Component,
    /// The recorded PID.
    pub pid: Option<u32>,
    /// Outcome, e.g. "terminated", "killed", "not running", "skipped: PID reused by ...".
    pub outcome: String,
}

/// A running (or attached) local control plane.
#[derive(Debug)]
pub struct Cluster {
    dir: ClusterDir,
    state: ClusterState,
    /// Processes started by this process (reaped on [`Cluster::down`]).
    children: Vec<Child>,
}

impl Cluster {
    /// Starts a cluster: checks binaries and ports, generates PKI and kubeconfig, starts etcd,
    /// kube-apiserver, kube-controller-manager, kube-scheduler, KWOK and CoreDNS, waits for each to be
    /// ready, then creates the control-plane node and `nodes` workers and waits until they are
    /// Ready. On failure every started process is stopped again and the error carries the tail of
    /// the failing component's log (the logs stay in `<dir>/logs`).
    pub async fn up(opts: &UpOptions) -> Result<Self> {
        let started = Instant::now();
        let cache = opts
            .cache_root
            .as_ref()
            .map_or_else(Cache::pinned, Cache::at);
        crate::gobuild::check_built(&cache)?;
        let ports = Ports::from_base(opts.base_port)?;
        let dir = ClusterDir::new(&opts.dir);
        prepare_dir(&dir, &ports).await?;

        for d in [dir.pki_dir(), dir.logs_dir(), dir.pids_dir()] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create directory", &d, e))?;
        }
        let etcd_data_dir = dir.default_etcd_data_dir();
        remove_path(&etcd_data_dir)?;
        let pki = Pki::at(dir.pki_dir());
        pki.generate()?;
        std::fs::write(dir.audit_policy(), flags::audit_policy())
            .map_err(|e| Error::io("write", dir.audit_policy(), e))?;
        pki::write_kubeconfig(&dir.kubeconfig(), &pki, ports.apiserver, &opts.name)?;
        std::fs::write(dir.corefile(), flags::corefile(&ports, &dir.kubeconfig()))
            .map_err(|e| Error::io("write", dir.corefile(), e))?;
        let scheduler_config =
            flags::scheduler_config(&dir.kubeconfig(), opts.settings.cluster_client_limits());
        std::fs::write(dir.scheduler_config(), scheduler_config)
            .map_err(|e| Error::io("write", dir.scheduler_config(), e))?;
        std::fs::write(
            dir.kwok_options(),
            flags::kwok_options(flags::UNTHROTTLED_KWOK_WORKERS),
        )
        .map_err(|e| Error::io("write", dir.kwok_options(), e))?;
        let state = ClusterState {
            name: opts.name.clone(),
            ports,
            settings: opts.settings.clone(),
            nodes: opts.nodes,
            etcd_data_dir,
            binaries: Component::ALL
                .iter()
                .map(|c| (c.name().to_owned(), cache.binary(*c)))
                .collect(),
            versions: BTreeMap::from([
                ("etcd".to_owned(), versions::ETCD.to_owned()),
                ("kubernetes".to_owned(), versions::KUBERNETES.to_owned()),
                ("kwok".to_owned(), versions::KWOK.to_owned()),
                ("coredns".to_owned(), versions::COREDNS.to_owned()),
            ]),
        };
        write_state(&dir, &state)?;
        tracing::info!(
            "starting control plane in {} (ports {}, builtin DaemonSet controller {}{})",
            dir.root().display(),
            ports.range(),
            if opts.settings.builtin_daemonset_controller {
                "on"
            } else {
                "off"
            },
            opts.settings.modes_note()
        );

        let mut cluster = Self {
            dir,
            state,
            children: Vec::new(),
        };
        match cluster.start_all(&cache).await {
            Ok(()) => {
                tracing::info!("control plane ready in {:.1?}", started.elapsed());
                Ok(cluster)
            }
            Err(e) => {
                cluster.stop_processes().await;
                remove_path(&cluster.state.etcd_data_dir).ok();
                Err(e)
            }
        }
    }

    async fn start_all(&mut self, cache: &Cache) -> Result<()> {
        let settings = self.state.settings.clone();
        let cx = FlagContext {
            dir: &self.dir,
            cache,
            ports: &self.state.ports,
            etcd_data_dir: &self.state.etcd_data_dir,
            settings: &settings,
        };
        let mut args: BTreeMap<Component, Vec<String>> = BTreeMap::new();
        for c in Component::ALL {
            args.insert(c, flags::args(c, &cx));
        }
        let arg = |c: Component| args.get(&c).cloned().unwrap_or_default();

        self.spawn(Component::Etcd, cache, &arg(Component::Etcd))?;
        self.wait_healthy(Component::Etcd, Duration::from_secs(30), |body| {
            body.contains(r#""health":"true""#)
        })
        .await?;

        self.spawn(
            Component::KubeApiserver,
            cache,
            &arg(Component::KubeApiserver),
        )?;
        let kubeconfig = self.dir.kubeconfig();
        let t = Instant::now();
        let client = wait_for(
            Component::KubeApiserver,
            &self.dir,
            self.pid(Component::KubeApiserver),
            Duration::from_secs(120),
            || async {
                let client = health::admin_client(&kubeconfig)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = health::get_text(&client, "/readyz").await?;
                if body.trim() != "ok" {
                    return Err(format!("/readyz: {body}"));
                }
                health::get_text(&client, "/api/v1/namespaces/default").await?;
                Ok(client)
            },
        )
        .await?;
        tracing::info!(
            "{:<24} ready in {:.1?}",
            Component::KubeApiserver.name(),
            t.elapsed()
        );

        let after_apiserver = [
            Component::KubeControllerManager,
            Component::KubeScheduler,
            Component::Kwok,
            Component::CoreDns,
        ];
        for c in after_apiserver {
            self.spawn(c, cache, &arg(c))?;
        }
        for c in after_apiserver {
            // "ok" from the Kubernetes components and KWOK, "OK" from CoreDNS.
            self.wait_healthy(c, Duration::from_secs(60), |body| {
                body.trim().eq_ignore_ascii_case("ok")
            })
            .await?;
        }

        let t = Instant::now();
        let names = create_cluster_nodes(&client, self.state.nodes).await?;
        let timeout =
            Duration::from_secs(60 + u64::try_from(self.state.nodes).unwrap_or(u64::MAX) / 2);
        wait_nodes_ready(&client, &names, timeout)
            .await
            .map_err(|e| self.component_error(Component::Kwok, &e))?;
        tracing::info!("{} nodes Ready in {:.1?}", names.len(), t.elapsed());
        Ok(())
    }

    fn spawn(&mut self, c: Component, cache: &Cache, args: &[String]) -> Result<()> {
        let child = process::spawn(
            c,
            &cache.binary(c),
            args,
            &self.dir.log(c),
            &self.dir.pid_file(c),
        )?;
        self.children.push(child);
        Ok(())
    }

    /// The recorded PID of a component, if it has one.
    #[must_use]
    pub fn pid(&self, c: Component) -> Option<u32> {
        process::read_pid(&self.dir.pid_file(c)).ok().flatten()
    }

    async fn wait_healthy(
        &self,
        c: Component,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let (url, path) = flags::health_endpoint(c, &self.state.ports);
        let t = Instant::now();
        wait_for(c, &self.dir, self.pid(c), timeout, || async {
            let body = health::probe(&url, path).await?;
            if ok(&body) {
                Ok(())
            } else {
                Err(format!("{url}{path}: {}", body.trim()))
            }
        })
        .await?;
        tracing::info!("{:<24} ready in {:.1?}", c.name(), t.elapsed());
        Ok(())
    }

    fn component_error(&self, c: Component, e: &Error) -> Error {
        Error::Component {
            component: c.name(),
            message: e.to_string(),
            log: self.dir.log(c),
            tail: process::tail(&self.dir.log(c), LOG_TAIL_LINES),
        }
    }

    /// Attaches to a cluster started earlier (by `cargo xtask cluster up` or another process).
    pub fn attach(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = ClusterDir::new(dir);
        let state = read_state(&dir)?.ok_or_else(|| Error::Dir {
            dir: dir.root().to_path_buf(),
            message: "no cluster.json: no cluster was started here; start one with `cargo xtask cluster up --dir <dir>`".to_owned(),
        })?;
        Ok(Self {
            dir,
            state,
            children: Vec::new(),
        })
    }

    /// The cluster directory.
    #[must_use]
    pub fn dir(&self) -> &ClusterDir {
        &self.dir
    }

    /// The recorded state.
    #[must_use]
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Path of the admin kubeconfig.
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.kubeconfig()
    }

    /// A new admin client. Create one per tokio runtime (a client must not outlive the runtime
    /// it was created on).
    pub async fn client(&self) -> Result<kube::Client> {
        health::admin_client(&self.dir.kubeconfig()).await
    }

    /// Per-component status: PID, whether it runs, and its health endpoint's answer.
    pub async fn status(&self) -> Vec<ComponentStatus> {
        status(&self.dir, &self.state).await
    }

    /// The last `lines` lines of every component's log, each under a header.
    #[must_use]
    pub fn log_tails(&self, lines: usize) -> String {
        log_tails(&self.dir, lines)
    }

    /// Stops every component (reverse start order) and removes the cluster directory and the
    /// etcd data directory.
    pub async fn down(mut self) -> Result<Vec<StopReport>> {
        let report = down(self.dir.root()).await;
        self.reap();
        report
    }

    async fn stop_processes(&mut self) {
        for c in Component::ALL.into_iter().rev() {
            if let Some(pid) = self.pid(c) {
                process::stop(pid, Duration::from_secs(10)).await;
            }
            remove_path(&self.dir.pid_file(c)).ok();
        }
        self.reap();
    }

    fn reap(&mut self) {
        for mut child in self.children.drain(..) {
            // Already signalled; this only collects the exit status so no zombie is left.
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Restarts kube-controller-manager with the built-in DaemonSet controller on or off and
    /// records the setting in `cluster.json`. Everything else keeps running: this is how a test
    /// hands sets the built-in controller made over to `everynode controller --target apps/v1`.
    pub async fn set_builtin_daemonset_controller(&mut self, on: bool) -> Result<()> {
        let c = Component::KubeControllerManager;
        if let Some(pid) = self.pid(c) {
            process::stop(pid, Duration::from_secs(10)).await;
        }
        self.state.settings.builtin_daemonset_controller = on;
        write_state(&self.dir, &self.state)?;
        self.start_component(c).await
    }

    /// SIGKILLs one component, as a crash would (no grace period). The rest keeps running;
    /// [`Cluster::start_component`] starts it again.
    pub async fn kill_component(&mut self, c: Component) {
        let Some(pid) = self.pid(c) else { return };
        process::kill_now(pid).await;
        // A killed multi-threaded process shows as a zombie while its other threads still exit
        // and hold its sockets; its parent can reap it only once they are all gone. Wait for
        // that, so a restart can bind the same ports.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let reaped = self
                .children
                .iter_mut()
                .find(|child| child.id() == pid)
                .is_none_or(|child| !matches!(child.try_wait(), Ok(None)));
            if reaped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts one component again, with the binary and flags it was started with, and waits until
    /// it is healthy (etcd's data and the API server's state are kept: this is a restart).
    pub async fn start_component(&mut self, c: Component) -> Result<()> {
        let cache = Cache::pinned();
        let args = flags::args(
            c,
            &FlagContext {
                dir: &self.dir,
                cache: &cache,
                ports: &self.state.ports,
                etcd_data_dir: &self.state.etcd_data_dir,
                settings: &self.state.settings,
            },
        );
        let binary = self
            .state
            .binaries
            .get(c.name())
            .cloned()
            .unwrap_or_else(|| cache.binary(c));
        let child = process::spawn(c, &binary, &args, &self.dir.log(c), &self.dir.pid_file(c))?;
        self.children.push(child);
        self.wait_healthy(c, Duration::from_secs(120), |body| {
            body.trim().eq_ignore_ascii_case("ok") || body.contains(r#""health":"true""#)
        })
        .await
    }

    /// Writes (once) a kubeconfig for the client identity `CN=<user>, O=system:masters` and
    /// returns its path (`<dir>/kubeconfig-<user>`). A process given its own identity can be told
    /// apart in the API server's audit log (benchmark mode audits
    /// [`flags::BENCH_MEASURED_USER`] and [`flags::BENCH_FLOOR_USER`]).
    pub fn client_kubeconfig(&self, user: &str) -> Result<PathBuf> {
        let path = self.dir.client_kubeconfig(user);
        if path.exists() {
            return Ok(path);
        }
        let pki = Pki::at(self.dir.pki_dir());
        pki.generate_client(user, "system:masters")?;
        pki::write_kubeconfig_with(
            &path,
            &pki,
            self.state.ports.apiserver,
            &self.state.name,
            &pki.client_cert(user),
            &pki.client_key(user),
        )?;
        Ok(path)
    }

    /// Starts an extra process that belongs to this cluster (e.g. a controller under test):
    /// output to `logs/extra-<name>.log`, PID in `pids/extra-<name>.pid`, own process group.
    /// [`down`] (and the watchdog) stop it too, as long as its command line mentions the cluster
    /// directory. Returns the PID.
    pub fn spawn_extra(&mut self, name: &str, program: &Path, args: &[String]) -> Result<u32> {
        let child = process::spawn_named(
            name,
            program,
            args,
            &self.dir.extra_log(name),
            &self.dir.extra_pid_file(name),
            "",
        )?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Stops the extra process `name` (SIGTERM, then SIGKILL after 10 s) and removes its PID
    /// file. Returns how it ended.
    pub async fn stop_extra(&mut self, name: &str) -> Result<process::Stopped> {
        let pid_file = self.dir.extra_pid_file(name);
        let outcome = match process::read_pid(&pid_file)? {
            Some(pid) => process::stop(pid, Duration::from_secs(10)).await,
            None => process::Stopped::NotRunning,
        };
        remove_path(&pid_file)?;
        for child in &mut self.children {
            // Collects the exit status of the stopped process (no zombie).
            let _ = child.try_wait();
        }
        Ok(outcome)
    }

    /// Starts an extra kube-controller-manager named `name` that runs only the DaemonSet
    /// controller (see [`flags::daemonset_controller_manager_args`]) and waits for its
    /// `/healthz`. Returns the PID; stop it with [`Cluster::stop_extra`].
    pub async fn start_daemonset_controller_manager(
        &mut self,
        name: &str,
        kubeconfig: &Path,
        port: u16,
        limits: Option<flags::ClientLimits>,
    ) -> Result<u32> {
        let c = Component::KubeControllerManager;
        let binary = self
            .state
            .binaries
            .get(c.name())
            .cloned()
            .unwrap_or_else(|| Cache::pinned().binary(c));
        let args = flags::daemonset_controller_manager_args(kubeconfig, port, limits);
        let pid = self.spawn_extra(name, &binary, &args)?;
        let url = format!("https://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            match health::probe(&url, "/healthz").await {
                Ok(body) if body.trim() == "ok" => return Ok(pid),
                Ok(_) | Err(_)
                    if process::is_alive(pid) && start.elapsed() < Duration::from_secs(60) =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                last => {
                    let log = self.dir.extra_log(name);
                    return Err(Error::Component {
                        component: "kube-controller-manager (DaemonSet only)",
                        message: format!("not healthy (last probe: {last:?})"),
                        tail: process::tail(&log, LOG_TAIL_LINES),
                        log,
                    });
                }
            }
        }
    }

    /// Starts a watchdog for this cluster; see [`spawn_watchdog`].
    pub fn spawn_watchdog(&self) -> Result<Watchdog> {
        spawn_watchdog(&self.dir, &self.state.etcd_data_dir)
    }
}

/// Starts a watchdog process that stops the cluster in `dir` and removes `dir` and
/// `etcd_data_dir` as soon as the calling process exits, however it exits (the watchdog waits for
/// EOF on a pipe whose only writer is this process). It reads the PID files only when it fires,
/// so it can be started before [`Cluster::up`] to also cover a start-up that is interrupted. Keep
/// the returned [`Watchdog`] alive for as long as the cluster should live; dropping it fires it;
/// call [`Watchdog::disarm`] when the cluster was stopped normally.
pub fn spawn_watchdog(dir: &ClusterDir, etcd_data_dir: &Path) -> Result<Watchdog> {
    use std::os::unix::process::CommandExt as _;
    let pids: Vec<String> = Component::ALL
        .into_iter()
        .rev()
        .map(|c| dir.pid_file(c).display().to_string())
        .collect();
    let script = r#"
read -r cmd
[ "$cmd" = disarm ] && exit 0
dir=$1; etcd=$2; shift 2
set -- "$dir"/pids/extra-*.pid "$@"
for f in "$@"; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
i=0
while [ $i -lt 50 ]; do
  alive=0
  for f in "$@"; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.2; i=$((i+1))
done
for f in "$@"; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
rm -rf "$dir" "$etcd"
"#;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("everynode-cluster-watchdog")
        .arg(dir.root())
        .arg(etcd_data_dir)
        .args(&pids)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Command {
            command: "/bin/sh (cluster watchdog)".to_owned(),
            message: e.to_string(),
        })?;
    let stdin = child.stdin.take();
    Ok(Watchdog { child, stdin })
}

/// Handle of the watchdog started by [`Cluster::spawn_watchdog`]. Dropping it (or the process
/// exiting) triggers the watchdog; [`Watchdog::disarm`] ends it without touching the cluster.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Ends the watchdog without stopping anything.
    pub fn disarm(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"disarm\n");
        }
        let _ = self.child.wait();
    }
}

/// Retries `check` every 250 ms until it succeeds or `timeout` passes; fails early when the
/// component's process exits. Errors carry the tail of the component's log.
async fn wait_for<T, F, Fut>(
    c: Component,
    dir: &ClusterDir,
    pid: Option<u32>,
    timeout: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let exited = pid.is_some_and(|p| !process::is_alive(p));
        if exited || start.elapsed() > timeout {
            let message = if exited {
                format!("exited during start-up (last probe: {last})")
            } else {
                format!(
                    "not ready after {}s (last probe: {last})",
                    timeout.as_secs()
                )
            };
            return Err(Error::Component {
                component: c.name(),
                message,
                log: dir.log(c),
                tail: process::tail(&dir.log(c), LOG_TAIL_LINES),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates the control-plane node and `workers` worker nodes; returns all names, sorted.
async fn create_cluster_nodes(client: &kube::Client, workers: usize) -> Result<Vec<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let marker = BTreeMap::from([(nodes::CLUSTER_NODE_LABEL.to_owned(), "true".to_owned())]);
    let mut objs = vec![nodes::control_plane(nodes::CONTROL_PLANE_NODE, &marker)];
    objs.extend(
        (0..workers).map(|i| nodes::worker(&nodes::worker_name(i), nodes::zone_for(i), &marker)),
    );
    let names: Vec<String> = objs
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    create_nodes(&api, objs).await?;
    let mut names = names;
    names.sort();
    Ok(names)
}

/// Creates nodes, 8 at a time.
pub async fn create_nodes(api: &Api<Node>, objs: Vec<Node>) -> Result<()> {
    futures::stream::iter(objs)
        .map(|n| async move {
            let name = n.metadata.name.clone().unwrap_or_default();
            api.create(&PostParams::default(), &n)
                .await
                .map_err(|e| Error::kube(format!("create node {name}"), e))
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
}

/// Waits until every named node is Ready and schedulable-ready (see [`nodes::is_ready`]).
pub async fn wait_nodes_ready(
    client: &kube::Client,
    names: &[String],
    timeout: Duration,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("list nodes", e))?;
        let ready: std::collections::BTreeSet<String> = list
            .items
            .iter()
            .filter(|n| nodes::is_ready(n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let missing: Vec<&String> = names.iter().filter(|n| !ready.contains(*n)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!(
                    "{} nodes to become Ready (kwok marks them, node-lifecycle removes the not-ready taint)",
                    names.len()
                ),
                seconds: timeout.as_secs(),
                detail: format!(
                    "; not ready: {}",
                    missing
                        .iter()
                        .take(10)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn read_state(dir: &ClusterDir) -> Result<Option<ClusterState>> {
    let path = dir.state_file();
    match std::fs::read_to_string(&path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| Error::Format {
                path,
                message: format!("unreadable cluster state ({e}); remove the directory"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn remove_path(path: &Path) -> Result<()> {
    let res = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn recorded_running(dir: &ClusterDir, state: &ClusterState) -> Vec<(Component, u32)> {
    Component::ALL
        .into_iter()
        .filter_map(|c| {
            let pid = process::read_pid(&dir.pid_file(c)).ok().flatten()?;
            let bin = state.binaries.get(c.name())?;
            (process::is_alive(pid) && process::runs_program(pid, bin)).then_some((c, pid))
        })
        .collect()
}

/// Makes `dir` ready for a new cluster: refuses when a cluster recorded there still runs or when
/// it is a non-empty directory that is not a cluster directory; clears a stale one.
async fn prepare_dir(dir: &ClusterDir, ports: &Ports) -> Result<()> {
    let state = read_state(dir)?;
    if let Some(state) = &state {
        let running = recorded_running(dir, state);
        if !running.is_empty() {
            return Err(Error::Dir {
                dir: dir.root().to_path_buf(),
                message: format!(
                    "a cluster is already running here ({}); stop it with `cargo xtask cluster down --dir {}` or use another --dir and --base-port",
                    running
                        .iter()
                        .map(|(c, p)| format!("{c} pid {p}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    dir.root().display()
                ),
            });
        }
    }
    // Before touching anything on disk.
    ports.check_free()?;
    if state.is_some() {
        tracing::info!("removing stale cluster state in {}", dir.root().display());
        down(dir.root()).await?;
    } else if dir.root().exists() {
        let non_empty = std::fs::read_dir(dir.root())
            .map_err(|e| Error::io("read directory", dir.root(), e))?
            .next()
            .is_some();
        if non_empty {
            return Err(Error::Dir {
                dir: dir.root().to_path_buf(),
                message: "exists, is not empty and holds no cluster.json; refusing to use it (pick an empty or new --dir)".to_owned(),
            });
        }
    }
    std::fs::create_dir_all(dir.root()).map_err(|e| Error::io("create directory", dir.root(), e))
}

/// Records `state` in `cluster.json`.
fn write_state(dir: &ClusterDir, state: &ClusterState) -> Result<()> {
    let json = serde_json::to_string_pretty(state).map_err(|e| Error::Format {
        path: dir.state_file(),
        message: e.to_string(),
    })?;
    std::fs::write(dir.state_file(), json + "\n")
        .map_err(|e| Error::io("write", dir.state_file(), e))
}

/// Stops the cluster recorded in `dir` — exactly the recorded PIDs, and only while they still
/// run the recorded binaries — then removes `dir` and the etcd data directory. A directory
/// without a cluster is left alone.
pub async fn down(dir: impl AsRef<Path>) -> Result<Vec<StopReport>> {
    let dir = ClusterDir::new(dir);
    let Some(state) = read_state(&dir)? else {
        if dir.root().exists() {
            return Err(Error::Dir {
                dir: dir.root().to_path_buf(),
                message: "holds no cluster.json, so nothing of ours to stop; not touching it"
                    .to_owned(),
            });
        }
        return Ok(Vec::new());
    };
    stop_extras(&dir).await;
    let mut reports = Vec::new();
    for c in Component::ALL.into_iter().rev() {
        let pid = process::read_pid(&dir.pid_file(c))?;
        let outcome = match pid {
            None => "no PID recorded".to_owned(),
            Some(pid) if !process::is_alive(pid) => "not running".to_owned(),
            Some(pid) => {
                let bin = state.binaries.get(c.name()).cloned().unwrap_or_default();
                if process::runs_program(pid, &bin) {
                    match process::stop(pid, Duration::from_secs(10)).await {
                        process::Stopped::NotRunning => "not running".to_owned(),
                        process::Stopped::Terminated => "terminated".to_owned(),
                        process::Stopped::Killed => {
                            "killed (did not exit within 10s of SIGTERM)".to_owned()
                        }
                    }
                } else {
                    format!(
                        "skipped: PID {pid} now runs something else ({})",
                        process::cmdline(pid).unwrap_or_default().join(" ")
                    )
                }
            }
        };
        reports.push(StopReport {
            component: c,
            pid,
            outcome,
        });
    }
    remove_path(&state.etcd_data_dir)?;
    remove_path(dir.root())?;
    Ok(reports)
}

/// Stops the extra processes recorded in `pids/extra-*.pid` whose command line still mentions
/// the cluster directory (PID reuse guard).
async fn stop_extras(dir: &ClusterDir) {
    let Ok(entries) = std::fs::read_dir(dir.pids_dir()) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(crate::layout::EXTRA_PREFIX))
        })
        .collect();
    files.sort();
    let needle = dir.root().display().to_string();
    for file in files {
        if let Ok(Some(pid)) = process::read_pid(&file)
            && process::cmdline(pid).is_some_and(|c| c.iter().any(|a| a.contains(&needle)))
        {
            process::stop(pid, Duration::from_secs(10)).await;
        }
        remove_path(&file).ok();
    }
}

async fn status(dir: &ClusterDir, state: &ClusterState) -> Vec<ComponentStatus> {
    let mut out = Vec::new();
    let client = health::admin_client(&dir.kubeconfig()).await.ok();
    for c in Component::ALL {
        let pid = process::read_pid(&dir.pid_file(c)).ok().flatten();
        let running = pid.is_some_and(|p| {
            process::is_alive(p)
                && state
                    .binaries
                    .get(c.name())
                    .is_some_and(|b| process::runs_program(p, b))
        });
        let (url, path) = flags::health_endpoint(c, &state.ports);
        let health = match (c, &client) {
            (Component::KubeApiserver, Some(client)) => health::get_text(client, path).await,
            (Component::KubeApiserver, None) => Err("cannot read kubeconfig".to_owned()),
            _ => health::probe(&url, path).await,
        }
        .map(|b| b.trim().to_owned());
        out.push(ComponentStatus {
            component: c,
            pid,
            running,
            endpoint: format!("{url}{path}"),
            health,
        });
    }
    out
}

/// The last `lines` lines of every component log in `dir`, each under a `--- <file> ---` header,
/// in start order.
#[must_use]
pub fn log_tails(dir: &ClusterDir, lines: usize) -> String {
    let mut out = String::new();
    for c in Component::ALL {
        let log = dir.log(c);
        out.push_str(&format!(
            "--- last {lines} lines of {} ---\n",
            log.display()
        ));
        out.push_str(&process::tail(&log, lines));
        out.push('\n');
    }
    out
}
