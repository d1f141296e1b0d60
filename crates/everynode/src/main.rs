//! `everynode`: the controller and CLI binary.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use everynode::cli;
use everynode_runtime::http::Readiness;
use everynode_runtime::leader::{Elector, LeaseTiming, WriteGate};
use everynode_runtime::metrics::Metrics;
use everynode_runtime::{ControllerConfig, Target};

/// jemalloc instead of glibc's malloc: the controller decodes every watched object and builds
/// views from them, and with glibc's allocator a quarter of its CPU went to malloc and free.
/// Measured at 1,000 nodes (S1-S4 of `cargo xtask bench`): glibc 2.9-3.4 s CPU in three runs,
/// jemalloc 2.2 s, at the same peak RSS (see docs/benchmarks). Built with one arena (`narenas:1`
/// in `.cargo/config.toml`; jemalloc's default is four per CPU, each keeping its own freed pages)
/// and a background thread returning freed pages to the system (the `background_threads`
/// feature): peak RSS 49-50 MiB against 53-57, CPU 1.6-1.7 s against 1.8-1.9 (two runs each).
/// `_RJEM_MALLOC_CONF` in the environment still overrides both.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Show a set: counters, rollout, and one cell per node; without SET, a table of sets.
    Status(StatusArgs),
    /// Follow, list, undo and restart rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Change a set's template, kubectl style.
    #[command(subcommand)]
    Set(SetCommand),
    /// Turn an apps/v1 DaemonSet into an everynode one without restarting a pod (or back).
    Migrate(MigrateArgs),
    /// Why a node runs the set's pod or not, and what holds it back.
    Explain(ExplainArgs),
    /// Where a set would run and the waves its rollout would take, offline or live (read-only).
    Plan(PlanArgs),
    /// Print a shell completion script (e.g. `source <(everynode completion bash)`).
    Completion {
        /// The shell, or `kubectl-plugin` for `kubectl everynode`.
        #[arg(value_enum)]
        shell: cli::completion::ScriptFor,
    },
    /// Completion candidates for kubectl's plugin completion (`kubectl_complete-everynode`).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `everynode`, the last one being completed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The DaemonSet manifest (everynode.dev/v1alpha1 or apps/v1).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Nodes (`kubectl get nodes -o yaml`); without it, the cluster's nodes, pods and revisions
    /// are read (nothing is written).
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// The set's pods (`kubectl get pods -o yaml`), with --nodes.
    #[arg(long, requires = "nodes")]
    pods: Option<PathBuf>,
    /// The set's ControllerRevisions (`kubectl get controllerrevisions -o yaml`), with --nodes.
    #[arg(long, requires = "nodes")]
    revisions: Option<PathBuf>,
    /// Namespace for a manifest without one (default: the context's, else `default`).
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    target: SetArgs,
    /// Only this node, with every detail.
    #[arg(long)]
    node: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

/// Which set, kubectl style.
#[derive(Debug, clap::Args)]
struct SetArgs {
    /// Name of the DaemonSet (everynode.dev or apps/v1).
    set: String,
    #[command(flatten)]
    scope: ScopeArgs,
}

#[derive(Debug, clap::Args)]
struct ScopeArgs {
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Look only at this API (default: everynode.dev first, then apps/v1).
    #[arg(long, value_enum)]
    kind: Option<cli::sets::SetKind>,
    /// No colours (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    no_color: bool,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Name of the DaemonSet; omit to list sets.
    set: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// List sets of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Node cells per line of the grid.
    #[arg(long, default_value_t = 50)]
    grid_width: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Show the rollout's progress; exits 0 once complete, non-zero on timeout.
    Status {
        #[command(flatten)]
        target: SetArgs,
        /// Follow the rollout until it completes.
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long: a duration like 90s, 5m or 1h30m, or seconds (0: never).
        #[arg(long, default_value = "0", value_parser = cli::duration::parse)]
        timeout: std::time::Duration,
    },
    /// List the set's revisions, or show one.
    History {
        #[command(flatten)]
        target: SetArgs,
        /// Show the template of this revision.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Roll the template back to an earlier revision.
    Undo {
        #[command(flatten)]
        target: SetArgs,
        /// Revision to roll back to (default: the one before the current).
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Replace every pod, within the update strategy.
    Restart {
        #[command(flatten)]
        target: SetArgs,
    },
    /// Stop updating existing pods (spec.paused); joining nodes still get a pod.
    Pause {
        #[command(flatten)]
        target: SetArgs,
    },
    /// Clear spec.paused: the rollout goes on.
    Resume {
        #[command(flatten)]
        target: SetArgs,
    },
    /// Change no pod at all, not even on joining or leaving nodes (spec.frozen).
    Freeze {
        #[command(flatten)]
        target: SetArgs,
    },
    /// Clear spec.frozen.
    Unfreeze {
        #[command(flatten)]
        target: SetArgs,
    },
    /// Release the next hold: the pause, then the canary selector, then the partition by a step.
    Promote {
        #[command(flatten)]
        target: SetArgs,
        /// Release every hold at once (pause, canary selector and partition).
        #[arg(long)]
        full: bool,
        /// How far to lower the partition: nodes, or a percentage of the desired nodes.
        #[arg(long, default_value = "25%", value_parser = cli::promote::parse_step)]
        step: everynode_core::budget::Scaled,
    },
    /// Call off the rollout: pods go back to the stable revision, the template stays as it is.
    Abort {
        #[command(flatten)]
        target: SetArgs,
    },
    /// Start an aborted or failed rollout again (the template's revision).
    Retry {
        #[command(flatten)]
        target: SetArgs,
    },
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The set: `daemonset/NAME`, `ds/NAME` or `NAME`.
    #[arg(value_parser = cli::migrate::set_name)]
    set: String,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Go back: the everynode set becomes an apps/v1 one again (also finishes a stopped undo).
    #[arg(long)]
    undo: bool,
    /// Print the steps from where things stand; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for a deletion or an adoption: 90s, 5m, 1h.
    #[arg(long, default_value = "5m", value_parser = cli::duration::parse)]
    timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
enum SetCommand {
    /// Set container images: `everynode set image SET CONTAINER=IMAGE…` (`*=IMAGE`: every
    /// container).
    Image {
        #[command(flatten)]
        target: SetArgs,
        /// `CONTAINER=IMAGE`, one or more.
        #[arg(required = true, value_parser = cli::set_image::parse_request)]
        images: Vec<cli::set_image::ImageRequest>,
    },
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
    /// With `--target apps/v1`: seconds the built-in DaemonSet controller must have been quiet on
    /// a set before everynode writes its pods (it stands aside while the built-in one runs).
    #[arg(long, env = "EVERYNODE_BUILTIN_QUIET_SECONDS", default_value_t = 60)]
    builtin_quiet_seconds: u64,
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

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}`: the message and its causes on one line, no backtrace.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => print_crd(),
        Command::Completion { shell } => {
            cli::completion::script(&mut Cli::command(), shell, &mut std::io::stdout().lock())
                .context("writing the completion script")
        }
        Command::Complete { ref args } => cli::completion::candidates(
            &mut Cli::command(),
            args.clone(),
            &mut std::io::stdout().lock(),
        )
        .context("writing completions"),
        Command::Status(ref args) => run_cli(&cli, |client| cli_status(client, args)),
        Command::Rollout(ref command) => run_cli(&cli, |client| cli_rollout(client, command)),
        Command::Set(SetCommand::Image {
            ref target,
            ref images,
        }) => run_cli(&cli, |client| async move {
            let namespace = namespace_of(&client, &target.scope);
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            println!(
                "{}",
                cli::set_image::set_image(&client, &set, images).await?
            );
            Ok(())
        }),
        Command::Explain(ref args) => run_cli(&cli, |client| cli_explain(client, args)),
        Command::Migrate(ref args) => run_cli(&cli, |client| async move {
            let migration = cli::migrate::Migration {
                namespace: args
                    .namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_owned()),
                client,
                name: args.set.clone(),
                direction: if args.undo {
                    cli::migrate::plan::Direction::Undo
                } else {
                    cli::migrate::plan::Direction::Forward
                },
                timeout: args.timeout,
            };
            if args.dry_run {
                print!("{}", migration.dry_run().await?);
                Ok(())
            } else {
                migration.run().await
            }
        }),
        Command::Plan(ref args) => cli_plan(&cli, args),
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

/// Runs a CLI command on a fresh client (logs only on request: warnings and up).
fn run_cli<F, Fut>(cli: &Cli, command: F) -> anyhow::Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_cli_value(cli, command)
}

/// [`run_cli`] for a command that returns a value.
fn run_cli_value<T, F, Fut>(cli: &Cli, command: F) -> anyhow::Result<T>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let filter = if cli.log == "info" { "warn" } else { &cli.log };
    init_tracing(filter, cli.log_format)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let client = client(cli).await?;
            command(client).await
        })
}

fn namespace_of(client: &kube::Client, scope: &ScopeArgs) -> String {
    scope
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned())
}

async fn cli_status(client: kube::Client, args: &StatusArgs) -> anyhow::Result<()> {
    let style = cli::style::Style::detect(args.scope.no_color);
    let namespace = namespace_of(&client, &args.scope);
    let Some(name) = &args.set else {
        let scope = (!args.all_namespaces).then_some(namespace.as_str());
        let sets = cli::sets::list(&client, scope).await?;
        if sets.is_empty() {
            println!(
                "No DaemonSets found{}.",
                scope
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default()
            );
        } else {
            print!("{}", cli::status::table(&sets, args.all_namespaces));
        }
        return Ok(());
    };
    let set = cli::sets::find(&client, &namespace, name, args.scope.kind).await?;
    let status = cli::status::collect(&client, &set, everynode_core::Timestamp::now()).await?;
    match args.output {
        OutputFormat::Text => print!("{}", cli::status::render(&status, style, args.grid_width)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(&status)?),
    }
    Ok(())
}

fn cli_plan(cli: &Cli, args: &PlanArgs) -> anyhow::Result<()> {
    let now = everynode_core::Timestamp::now();
    let report = if let Some(nodes) = &args.nodes {
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let (mut set, _) = cli::plan::read_set(&args.file, &namespace)?;
        let snapshot =
            cli::plan::read_snapshot(nodes, args.pods.as_deref(), args.revisions.as_deref())?;
        cli::plan::adopt_uid(&mut set, &snapshot.pods);
        cli::plan::simulate(&set, &snapshot, now)
    } else {
        run_cli_value(cli, |client| async move {
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let (mut set, api_version) = cli::plan::read_set(&args.file, &namespace)?;
            let kind = cli::sets::SetKind::of_api_version(&api_version);
            // An existing set of the name: its pods, revisions and status count.
            if let Ok(existing) =
                cli::sets::find(&client, &set.namespace, &set.name, Some(kind)).await
            {
                set.uid = existing.view.uid;
                set.status = existing.view.status;
            }
            let snapshot = cli::plan::live_snapshot(&client, &set.namespace).await?;
            Ok(cli::plan::simulate(&set, &snapshot, now))
        })?
    };
    match args.output {
        OutputFormat::Text => print!("{}", cli::plan::render(&report)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(&report)?),
    }
    Ok(())
}

async fn cli_explain(client: kube::Client, args: &ExplainArgs) -> anyhow::Result<()> {
    let style = cli::style::Style::detect(args.target.scope.no_color);
    let namespace = namespace_of(&client, &args.target.scope);
    let set = cli::sets::find(
        &client,
        &namespace,
        &args.target.set,
        args.target.scope.kind,
    )
    .await?;
    let status = cli::status::collect(&client, &set, everynode_core::Timestamp::now()).await?;
    let nodes: Vec<&cli::status::NodeStatus> = status
        .nodes
        .iter()
        .filter(|n| args.node.as_deref().is_none_or(|name| n.node == name))
        .collect();
    match args.output {
        OutputFormat::Text => print!(
            "{}",
            cli::status::explain(&status, args.node.as_deref(), style)?
        ),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(&nodes)?),
    }
    Ok(())
}

async fn cli_rollout(client: kube::Client, command: &RolloutCommand) -> anyhow::Result<()> {
    let (RolloutCommand::Status { target, .. }
    | RolloutCommand::History { target, .. }
    | RolloutCommand::Undo { target, .. }
    | RolloutCommand::Restart { target }
    | RolloutCommand::Pause { target }
    | RolloutCommand::Resume { target }
    | RolloutCommand::Freeze { target }
    | RolloutCommand::Unfreeze { target }
    | RolloutCommand::Promote { target, .. }
    | RolloutCommand::Abort { target }
    | RolloutCommand::Retry { target }) = command;
    let namespace = namespace_of(&client, &target.scope);
    let style = cli::style::Style::detect(target.scope.no_color);
    match command {
        RolloutCommand::Status { watch, timeout, .. } => {
            let timeout = (!timeout.is_zero()).then_some(*timeout);
            cli::rollout::status(
                &client,
                &namespace,
                &target.set,
                target.scope.kind,
                *watch,
                timeout,
            )
            .await?;
        }
        RolloutCommand::History { revision, .. } => {
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            print!(
                "{}",
                cli::rollout::history(&client, &set, *revision, style).await?
            );
        }
        RolloutCommand::Undo { to_revision, .. } => {
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            println!("{}", cli::rollout::undo(&client, &set, *to_revision).await?);
        }
        RolloutCommand::Restart { .. } => {
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            let now = everynode_core::Timestamp::now();
            println!("{}", cli::rollout::restart(&client, &set, now).await?);
        }
        RolloutCommand::Pause { .. }
        | RolloutCommand::Resume { .. }
        | RolloutCommand::Freeze { .. }
        | RolloutCommand::Unfreeze { .. } => {
            let (hold, on) = match command {
                RolloutCommand::Pause { .. } => (cli::rollout::Hold::Paused, true),
                RolloutCommand::Resume { .. } => (cli::rollout::Hold::Paused, false),
                RolloutCommand::Freeze { .. } => (cli::rollout::Hold::Frozen, true),
                _ => (cli::rollout::Hold::Frozen, false),
            };
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            println!("{}", cli::rollout::hold(&client, &set, hold, on).await?);
        }
        RolloutCommand::Promote { full, step, .. } => {
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            println!(
                "{}",
                cli::promote::promote(&client, &set, *full, *step).await?
            );
        }
        RolloutCommand::Abort { .. } => {
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            println!("{}", cli::abort::abort(&client, &set).await?);
        }
        RolloutCommand::Retry { .. } => {
            let set = cli::sets::find(&client, &namespace, &target.set, target.scope.kind).await?;
            let now = everynode_core::Timestamp::now();
            println!("{}", cli::abort::retry(&client, &set, now).await?);
        }
    }
    Ok(())
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
    Ok(kube::Client::try_from(config(cli).await?)?)
}

async fn config(cli: &Cli) -> anyhow::Result<kube::Config> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)
        }
        None => kube::Config::infer().await.context(
            "no cluster configuration found: set KUBECONFIG or --kubeconfig, or start the local \
             cluster with `cargo xtask cluster up`",
        ),
    }
}

/// Leader election of this replica: the elector task, and the gate its controller writes through.
struct Leadership {
    gate: Arc<WriteGate>,
    leading: tokio::sync::watch::Receiver<bool>,
    leases: kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    identity: String,
    elector: tokio::task::JoinHandle<()>,
}

impl Leadership {
    fn start(client: kube::Client, args: &ControllerArgs) -> Self {
        let identity = args
            .instance
            .clone()
            .unwrap_or_else(|| format!("everynode-{}", std::process::id()));
        let timing = LeaseTiming::for_lease(std::time::Duration::from_secs(args.lease_seconds));
        let gate = WriteGate::closed(timing.renew_deadline);
        let elector = Elector::new(
            client,
            &args.lease_namespace,
            LEASE_NAME,
            &identity,
            timing,
            gate.clone(),
        );
        let leases = elector.leases();
        let (tx, leading) = tokio::sync::watch::channel(false);
        tracing::info!(%identity, lease = LEASE_NAME, namespace = %args.lease_namespace, ?timing, "waiting to become leader");
        Self {
            gate,
            leading,
            leases,
            identity,
            elector: tokio::spawn(elector.run(tx)),
        }
    }

    /// Resolves once this replica leads.
    fn became_leader(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut leading = self.leading.clone();
        async move {
            if leading.wait_for(|l| *l).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once this replica led and lost it.
    async fn lost(&mut self) {
        if self.leading.wait_for(|l| *l).await.is_ok() {
            let _ = self.leading.wait_for(|l| !*l).await;
        }
    }
}

async fn run_controller(cli: &Cli, args: &ControllerArgs) -> anyhow::Result<()> {
    let config = config(cli).await?;
    let plain = kube::Client::try_from(config.clone())?;
    let version = plain
        .apiserver_version()
        .await
        .context("cannot reach the apiserver")?;
    tracing::info!(server = %version.git_version, namespace = ?args.namespace, "starting everynode controller");

    let metrics = Arc::new(Metrics::new(Target::from(args.target).into()));
    let readiness = Arc::new(Readiness::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Serve /livez at once; /readyz turns ready once the caches synced (on standbys too: they
    // keep their caches warm for a fast takeover) and while every watch is healthy.
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
    // replica holds the Lease, and every write goes through the gate that closes at the renew
    // deadline; losing the Lease ends the process at once (non-zero) so the replica restarts as
    // a clean standby.
    let mut leadership = args
        .leader_elect
        .then(|| Leadership::start(plain.clone(), args));
    let leading: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match &leadership {
        Some(l) => Box::pin(l.became_leader()),
        None => Box::pin(std::future::ready(())),
    };
    // Plans run on the apiserver's clock, read from every response of the controller's client.
    let server_clock = Arc::new(everynode_runtime::server_clock::ServerClock::default());
    let client = everynode_runtime::client::controller_client(
        config,
        server_clock.clone(),
        leadership.as_ref().map(|l| l.gate.clone()),
        metrics.api_retries.clone(),
        metrics.api.clone(),
    )?;

    let controller_config = ControllerConfig {
        namespace: args.namespace.clone(),
        workers: args.workers,
        instance: args.instance.clone(),
        target: args.target.into(),
        server_clock,
        builtin_quiet_period: std::time::Duration::from_secs(args.builtin_quiet_seconds),
    };
    let mut controller = tokio::spawn(everynode_runtime::run(
        client,
        controller_config,
        metrics,
        readiness,
        leading,
        stopped(stop_rx),
    ));

    let lost_lease = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = shutdown_signal() => {}
        () = lost_lease => {
            // Abort in-flight reconciles: not one more write.
            controller.abort();
            anyhow::bail!("lost the leader Lease {LEASE_NAME}; exiting so a fresh standby takes over");
        }
        ended = &mut controller => {
            let why = match ended {
                Ok(()) => "ended".to_owned(),
                Err(err) => format!("failed: {err}"),
            };
            anyhow::bail!("the controller task {why}; exiting so the replica restarts");
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    controller.await.context("controller task")?;
    http.await.context("http task")?.context("http server")?;
    if let Some(l) = leadership {
        l.elector.abort();
        Elector::release(&l.leases, LEASE_NAME, &l.identity, &l.gate).await;
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
