//! `cargo xtask bench`: everynode against the built-in DaemonSet controller, side by side
//! (see `docs/benchmarks/README.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use everynode_bench::fleet::Slicing;
use everynode_bench::{BenchOptions, ClusterMode, ControllerId, FleetOptions};
use everynode_cluster::ClientLimits;

use crate::ci::workspace_root;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ControllerArg {
    UpstreamDefault,
    UpstreamEqual,
    EverynodeApps,
    EverynodeOwn,
}

impl From<ControllerArg> for ControllerId {
    fn from(c: ControllerArg) -> Self {
        match c {
            ControllerArg::UpstreamDefault => Self::UpstreamDefault,
            ControllerArg::UpstreamEqual => Self::UpstreamEqual,
            ControllerArg::EverynodeApps => Self::EverynodeAppsV1,
            ControllerArg::EverynodeOwn => Self::EverynodeOwn,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Unthrottled,
    Defaults,
}

impl From<ModeArg> for ClusterMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Unthrottled => Self::Unthrottled,
            ModeArg::Defaults => Self::Defaults,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Cluster sizes (KWOK worker nodes), comma-separated; one fresh cluster each.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
    nodes: Vec<usize>,
    /// Length of the S5 idle window in seconds (the figure is 600; shorter for quick
    /// runs — the report says which was used).
    #[arg(long, default_value_t = 600)]
    idle_seconds: u64,
    /// Cluster modes, each on a fresh cluster: `unthrottled` (the cluster's scheduler,
    /// controller-manager and KWOK not rate-limited; the targets apply) and `defaults` (their
    /// stock limits, what a user sees).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ModeArg::Unthrottled, ModeArg::Defaults])]
    modes: Vec<ModeArg>,
    /// Runs per size and mode, each on a fresh cluster; the report decides the targets by the
    /// median of the runs' ratios (a single run on this machine spreads by ±25 %).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Run the many-sets suite with this many sets per controller instead of the single-set
    /// one (F1 create all, F2 roll all, F3 node moves, F4 joins; see docs/benchmarks).
    #[arg(long)]
    sets: Option<usize>,
    /// Many-sets suite: nodes moved to the next slice in F3, one after another.
    #[arg(long, default_value_t = 10)]
    relabels: usize,
    /// Many-sets suite: nodes joining at once in F4.
    #[arg(long, default_value_t = 10)]
    joins: usize,
    /// Many-sets suite: node slices (round robin by a node label).
    #[arg(long, default_value_t = Slicing::default().slices)]
    slices: usize,
    /// Many-sets suite: consecutive slices each set selects.
    #[arg(long, default_value_t = Slicing::default().window)]
    window: usize,
    /// Controllers to run (default: all four; with --sets, all but upstream at QPS 20, which
    /// needs over 20 minutes per step for 20,000 pods).
    #[arg(long, value_enum, value_delimiter = ',')]
    controllers: Vec<ControllerArg>,
    /// Client QPS and burst of the "equal limits" upstream run (high enough not to limit it).
    #[arg(long, default_value_t = 100_000)]
    raised_qps: u32,
    /// Directory for the benchmark clusters (`<dir>/n<size>`, removed afterwards).
    #[arg(long, default_value = "/tmp/everynode-bench")]
    dir: PathBuf,
    /// Base port; the bench uses the cluster's ports from here, and two more after them.
    #[arg(long, default_value_t = 19443)]
    base_port: u16,
    /// Use this everynode binary instead of building `target/release/everynode`.
    #[arg(long)]
    everynode: Option<PathBuf>,
    /// What the report names as the everynode version (default: `git describe --always
    /// --dirty` of this checkout); set it when --everynode is a binary built elsewhere.
    #[arg(long)]
    everynode_version: Option<String>,
    /// Only render the tables and chart again from a results JSON written earlier (no
    /// cluster is started).
    #[arg(long)]
    render: Option<PathBuf>,
    /// Where `results-<sizes>.{json,md}` and `converge-<sizes>.svg` go.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        workspace_root().join(&args.out)
    };
    if let Some(json) = &args.render {
        let report = everynode_bench::report::read_json(json)?;
        for path in everynode_bench::report::write_files(&report, &out)? {
            println!("wrote {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(!args.nodes.is_empty(), "--nodes: give at least one size");
    anyhow::ensure!(!args.modes.is_empty(), "--modes: give at least one mode");
    anyhow::ensure!(args.repeat >= 1, "--repeat: give at least 1 run");
    crate::build().await?;
    let everynode = match &args.everynode {
        Some(path) => path.clone(),
        None => {
            tracing::info!("$ cargo build --release -p everynode");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = tokio::process::Command::new(cargo)
                .args(["build", "--release", "-p", "everynode"])
                .current_dir(workspace_root())
                .status()
                .await
                .context("running cargo build")?;
            anyhow::ensure!(
                status.success(),
                "cargo build --release -p everynode failed"
            );
            workspace_root().join("target/release/everynode")
        }
    };

    let mut versions = BTreeMap::new();
    if let Some(v) = args
        .everynode_version
        .clone()
        .or_else(|| command_output("git", &["describe", "--always", "--dirty"]))
    {
        versions.insert("everynode".to_owned(), v);
    }
    if let Some(v) = command_output("rustc", &["--version"]) {
        versions.insert("rustc".to_owned(), v);
    }
    let slicing = Slicing {
        slices: args.slices,
        window: args.window,
    }
    .validate()
    .map_err(anyhow::Error::msg)?;
    let controllers: Vec<ControllerId> = if args.controllers.is_empty() {
        ControllerId::ALL
            .into_iter()
            .filter(|c| args.sets.is_none() || *c != ControllerId::UpstreamDefault)
            .collect()
    } else {
        args.controllers.iter().map(|c| (*c).into()).collect()
    };
    let command = std::env::args()
        .skip(1)
        .fold("cargo xtask".to_owned(), |acc, a| acc + " " + &a);
    let opts = BenchOptions {
        sizes: args.nodes.clone(),
        modes: args.modes.iter().map(|m| (*m).into()).collect(),
        idle: Duration::from_secs(args.idle_seconds),
        dir: args.dir.clone(),
        base_port: args.base_port,
        everynode,
        controllers,
        fleet: args.sets.map(|sets| FleetOptions {
            sets,
            relabels: args.relabels,
            joins: args.joins,
            slicing,
        }),
        raised_limits: ClientLimits {
            qps: f64::from(args.raised_qps),
            burst: args.raised_qps,
        },
        command,
        versions,
        repeat: args.repeat,
    };
    let report = everynode_bench::run(&opts).await?;
    for path in everynode_bench::report::write_files(&report, &out)? {
        println!("wrote {}", path.display());
    }
    print!("{}", everynode_bench::report::markdown(&report));
    Ok(ExitCode::SUCCESS)
}
