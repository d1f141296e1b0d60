//! Project automation for everynode.
//!
//! - `cargo xtask demo`: the whole system on a local cluster, step by step;
//! - `cargo xtask cluster build|up|down|status|logs`: the local control plane
//!   (see `docs/local-cluster.md`);
//! - `cargo xtask ci`: the whole test command (format, lints, control plane, all tests);
//! - `cargo xtask conformance`: upstream's DaemonSet e2e suites, built-in controller and
//!   everynode side by side (see `docs/conformance.md`);
//! - `cargo xtask fuzz`: the cargo-fuzz targets (see `docs/fuzzing.md`);
//! - `cargo xtask chaos`: leader kills, node churn and a memory soak (see `docs/chaos.md`);
//! - `cargo xtask image`: the static binary, a reproducible OCI image and its SBOM;
//! - `cargo xtask release`: every release artefact in one directory;
//! - `cargo xtask bench`: everynode against the built-in DaemonSet controller
//!   (see `docs/benchmarks/README.md`).

mod bench;
mod chaos;
mod ci;
mod conformance;
mod demo;
mod fuzz;
mod image;
mod oci;
mod packages;
mod release;
mod sbom;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use everynode_cluster::{
    Cache, Cluster, ClusterDir, FlagSettings, UpOptions, gobuild, layout, ports,
};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "everynode project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build what is missing, start a local cluster and the controller, and walk through what
    /// a DaemonSet does (nodes join and leave, a label moves, an image rolls out, the set goes),
    /// printing the node grid after each step; stops everything at the end.
    Demo(demo::DemoArgs),
    /// Build, start, stop and inspect the local control plane.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// The project's test command: fmt check, clippy, control plane build + up, `cargo test
    /// --workspace` against it, the demo, and control plane down (always).
    Ci(ci::CiArgs),
    /// Upstream's DaemonSet and ControllerRevision e2e suites (k8s.io/kubernetes test/e2e/apps)
    /// against the local cluster: with the built-in controller, with everynode as
    /// `--target apps/v1` (as the ServiceAccount of deploy/), or both side by side.
    Conformance(conformance::ConformanceArgs),
    /// The cargo-fuzz targets of fuzz/ (manifest and snapshot decoding, the planner's
    /// invariants), each for --seconds, from the committed corpus (see docs/fuzzing.md).
    Fuzz(fuzz::FuzzArgs),
    /// The chaos soak: rolling updates while the leader of three replicas is SIGKILLed again
    /// and again and nodes join and leave, an outside watcher on every pod event, then a soak
    /// sampling the leader's memory; writes docs/chaos.md.
    Chaos(chaos::ChaosArgs),
    /// A static everynode binary, a reproducible OCI image of it (layout directory and an
    /// archive `docker load`, `podman load`, `skopeo` and `kind load image-archive` accept), its
    /// digest and a CycloneDX SBOM.
    Image(image::ImageArgs),
    /// Every release artefact in one directory: binary tarball (with completions) and checksum,
    /// image archive and digest, SBOM, packaged Helm chart, CRD, plain manifests pinned to the
    /// image digest, krew's plugin.yaml, the CHANGELOG section and SHA256SUMS.
    Release(release::ReleaseArgs),
    /// Benchmarks: everynode against the built-in DaemonSet controller on local clusters of
    /// 100 to 5,000 KWOK nodes; writes `docs/benchmarks/results-<sizes>.{json,md}` and
    /// `converge-<sizes>.svg`.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Build the pinned control-plane binaries into the cache (skipped when already built).
    Build,
    /// Start a control plane and create KWOK nodes.
    Up {
        /// Number of KWOK worker nodes (a tainted control-plane node is added on top).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Run kube-controller-manager's built-in DaemonSet controller.
        #[arg(long, value_enum, default_value_t = OnOff::Off)]
        builtin_daemonset_controller: OnOff,
        /// Cluster directory (state, PKI, kubeconfig, logs).
        #[arg(long, default_value = layout::DEFAULT_CLUSTER_DIR)]
        dir: PathBuf,
        /// Base port (kube-apiserver); the next seven ports are used too.
        #[arg(long, default_value_t = ports::DEFAULT_BASE_PORT)]
        base_port: u16,
        /// Benchmark mode: API Priority and Fairness off, no in-flight request limits.
        #[arg(long)]
        benchmark: bool,
        /// The cluster's own clients (kube-scheduler, kube-controller-manager, KWOK) are not
        /// rate-limited.
        #[arg(long)]
        unthrottled: bool,
    },
    /// Stop the control plane started in --dir and remove its state.
    Down {
        /// Cluster directory.
        #[arg(long, default_value = layout::DEFAULT_CLUSTER_DIR)]
        dir: PathBuf,
    },
    /// Show each component: PID, running or not, health.
    Status {
        /// Cluster directory.
        #[arg(long, default_value = layout::DEFAULT_CLUSTER_DIR)]
        dir: PathBuf,
    },
    /// Print the last lines of every component log.
    Logs {
        /// Cluster directory.
        #[arg(long, default_value = layout::DEFAULT_CLUSTER_DIR)]
        dir: PathBuf,
        /// Lines per component.
        #[arg(long, default_value_t = 40)]
        lines: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XTASK_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,kube=off,kube_client=off")
            }),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Demo(args) => demo::run(args).await,
        Cmd::Ci(args) => ci::run(args).await,
        Cmd::Bench(args) => bench::run(args).await,
        Cmd::Conformance(args) => conformance::run(args).await,
        Cmd::Fuzz(args) => fuzz::run(args).await,
        Cmd::Chaos(args) => chaos::run(args).await,
        Cmd::Image(args) => image::run(args).await,
        Cmd::Release(args) => release::run(args).await,
        Cmd::Cluster { command } => cluster(command).await,
    }
}

async fn cluster(cmd: ClusterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Build => {
            build().await?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Up {
            nodes,
            builtin_daemonset_controller,
            dir,
            base_port,
            benchmark,
            unthrottled,
        } => {
            let opts = UpOptions {
                dir,
                base_port,
                nodes,
                settings: FlagSettings {
                    builtin_daemonset_controller: builtin_daemonset_controller == OnOff::On,
                    benchmark,
                    unthrottled,
                },
                ..UpOptions::default()
            };
            let cluster = up(&opts).await?;
            let kc = cluster.kubeconfig();
            println!("kubeconfig: {}", kc.display());
            println!(
                "use it: export KUBECONFIG={} (or EVERYNODE_TEST_CLUSTER_DIR={} cargo test); stop it: cargo xtask cluster down --dir {}",
                kc.display(),
                cluster.dir().root().display(),
                cluster.dir().root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Down { dir } => {
            let t = Instant::now();
            let reports = everynode_cluster::down(&dir).await?;
            if reports.is_empty() {
                println!("no cluster in {}", dir.display());
            }
            for r in reports {
                let pid = r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
                println!("{:<24} pid {:<8} {}", r.component.name(), pid, r.outcome);
            }
            println!("down in {:.1?}", t.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Status { dir } => {
            let cluster = Cluster::attach(&dir)?;
            let st = cluster.state();
            println!(
                "cluster {} in {} (ports {}, builtin DaemonSet controller {}{})",
                st.name,
                cluster.dir().root().display(),
                st.ports.range(),
                if st.settings.builtin_daemonset_controller {
                    "on"
                } else {
                    "off"
                },
                st.settings.modes_note()
            );
            println!("{:<24} {:<8} {:<8} HEALTH", "COMPONENT", "PID", "PROCESS");
            let mut healthy = true;
            for s in cluster.status().await {
                let pid = s.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
                let health = match &s.health {
                    Ok(body) => format!("{} ({})", first_line(body), s.endpoint),
                    Err(e) => format!("DOWN: {} ({})", first_line(e), s.endpoint),
                };
                healthy &= s.running && s.health.is_ok();
                println!(
                    "{:<24} {:<8} {:<8} {}",
                    s.component.name(),
                    pid,
                    if s.running { "running" } else { "stopped" },
                    health
                );
            }
            println!("kubeconfig: {}", cluster.kubeconfig().display());
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ClusterCmd::Logs { dir, lines } => {
            print!(
                "{}",
                everynode_cluster::log_tails(&ClusterDir::new(dir), lines)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// `cluster build`, shared with `ci`.
pub(crate) async fn build() -> anyhow::Result<()> {
    let cache = Cache::pinned();
    let report = tokio::task::spawn_blocking(move || gobuild::build(&cache))
        .await
        .context("build task panicked")??;
    let built = report
        .binaries
        .iter()
        .filter(|(_, o)| matches!(o, gobuild::BuildOutcome::Built(_)))
        .count();
    tracing::info!(
        "control-plane binaries ready in {} ({built} built, {} cached) after {:.1?}",
        Cache::pinned().bin_dir().display(),
        report.binaries.len() - built,
        report.elapsed
    );
    Ok(())
}

/// `cluster up`, shared with `ci`.
/// Options for a 3-worker cluster in `dir` on the first free port block from `first_port`
/// (CI's, the demo's, each conformance side's).
pub(crate) fn three_node_options(
    dir: PathBuf,
    first_port: u16,
    builtin_daemonset_controller: bool,
) -> anyhow::Result<UpOptions> {
    Ok(UpOptions {
        dir,
        base_port: everynode_cluster::Ports::find_free(first_port)?.apiserver,
        nodes: 3,
        settings: FlagSettings {
            builtin_daemonset_controller,
            benchmark: false,
            unthrottled: false,
        },
        ..UpOptions::default()
    })
}

pub(crate) async fn up(opts: &UpOptions) -> anyhow::Result<Cluster> {
    Cluster::up(opts)
        .await
        .with_context(|| format!("cluster up in {}", opts.dir.display()))
}
