//! `everynode`: the controller and CLI binary.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use everynode_runtime::http::Readiness;
use everynode_runtime::metrics::Metrics;
use everynode_runtime::{ControllerConfig, Target};

/// Run a daemon on every node of a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "everynode", version, about, propagate_version = true)]
struct Cli {
    /// Path to a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, env = "EVERYNODE_CONTEXT")]
    context: Option<String>,
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, global = true, env = "EVERYNODE_LOG", default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, global = true, env = "EVERYNODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinition of everynode.dev DaemonSets as YAML.
    Crd,
    /// Run the controller.
    Controller(ControllerArgs),
}

#[derive(Debug, clap::Args)]
struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "EVERYNODE_NAMESPACE")]
    namespace: Option<String>,
    /// DaemonSets reconciled at once.
    #[arg(long, env = "EVERYNODE_WORKERS", default_value_t = 8)]
    workers: u16,
    /// Address of the /metrics, /livez and /readyz endpoints.
    #[arg(long, env = "EVERYNODE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Name of this replica, reported in Events and the leader Lease (default: $POD_NAME).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long, env = "EVERYNODE_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, env = "EVERYNODE_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Which DaemonSets to run: everynode's own, or the built-in apps/v1 ones (turn
    /// kube-controller-manager's DaemonSet controller off first:
    /// `--controllers=*,-daemonset-controller`).
    #[arg(long, env = "EVERYNODE_TARGET", value_enum, default_value_t = TargetArg::Everynode)]
    target: TargetArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TargetArg {
    /// `everynode.dev/v1alpha1` DaemonSets.
    #[value(name = "everynode.dev/v1alpha1", alias = "everynode")]
    Everynode,
    /// Built-in `apps/v1` DaemonSets.
    #[value(name = "apps/v1")]
    AppsV1,
}

impl From<TargetArg> for Target {
    fn from(arg: TargetArg) -> Self {
        match arg {
            TargetArg::Everynode => Self::Everynode,
            TargetArg::AppsV1 => Self::AppsV1,
        }
    }
}

/// Name of the leader Lease.
const LEASE_NAME: &str = "everynode-controller";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print_crd(),
        Command::Controller(ref args) => {
            init_tracing(&cli.log, cli.log_format)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run_controller(&cli, args))
        }
    }
}

fn print_crd() -> anyhow::Result<()> {
    let yaml = everynode_api::crd::crd_yaml().context("rendering the CRD as YAML")?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing the CRD to standard output")
}

fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log {filter:?} is not a valid log filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn client(cli: &Cli) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => kube::Config::infer().await.context(
            "no cluster configuration found: set KUBECONFIG or --kubeconfig, or start the local \
             cluster with `cargo xtask cluster up`",
        )?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn run_controller(cli: &Cli, args: &ControllerArgs) -> anyhow::Result<()> {
    let client = client(cli).await?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the apiserver")?;
    tracing::info!(server = %version.git_version, namespace = ?args.namespace, "starting everynode controller");

    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Serve /livez at once; /readyz turns ready once the caches synced (on standbys too: they
    // keep their caches warm for a fast takeover).
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("--http-addr {}: cannot listen", args.http_addr))?;
    let http = tokio::spawn(everynode_runtime::http::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        stopped(stop_rx.clone()),
    ));

    // With leader election, the watches start at once but nothing is written before this
    // replica holds the Lease; losing it ends the process (non-zero) so the replica restarts as
    // a clean standby.
    let mut leadership = None;
    let leading: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = if args.leader_elect {
        let identity = args
            .instance
            .clone()
            .unwrap_or_else(|| format!("everynode-{}", std::process::id()));
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_seconds)
            .with_grace(args.lease_seconds.div_ceil(3).max(1))
            .build()
            .await
            .context("setting up leader election")?;
        let (is_leader, task) = manager.watch().await;
        tracing::info!(%identity, lease = LEASE_NAME, namespace = %args.lease_namespace, "waiting to become leader");
        let mut became_leader = is_leader.clone();
        leadership = Some((is_leader, task));
        Box::pin(async move {
            if became_leader.wait_for(|leader| *leader).await.is_ok() {
                tracing::info!(%identity, "became leader");
            } else {
                // Leader election stopped; the lost-lease branch below ends the process.
                std::future::pending::<()>().await;
            }
        })
    } else {
        Box::pin(std::future::ready(()))
    };

    let config = ControllerConfig {
        namespace: args.namespace.clone(),
        workers: args.workers,
        instance: args.instance.clone(),
        target: args.target.into(),
    };
    let controller = tokio::spawn(everynode_runtime::run(
        client,
        config,
        metrics,
        readiness,
        leading,
        stopped(stop_rx),
    ));

    let lost_lease = async {
        match leadership.as_mut() {
            Some((is_leader, _)) => {
                // Ends when the Lease was held and then lost, or when leader election stopped.
                if is_leader.wait_for(|leader| *leader).await.is_ok() {
                    let _ = is_leader.wait_for(|leader| !*leader).await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    let lost = tokio::select! {
        () = shutdown_signal() => false,
        () = lost_lease => true,
    };
    tracing::info!(lost_lease = lost, "shutting down");
    let _ = stop_tx.send(true);
    controller.await.context("controller task")?;
    http.await.context("http task")?.context("http server")?;
    if let Some((is_leader, task)) = leadership {
        drop(is_leader); // releases the Lease
        let _ = task.await;
    }
    if lost {
        anyhow::bail!("lost the leader Lease {LEASE_NAME}; exiting so a fresh standby takes over");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
