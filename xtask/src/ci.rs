//! `cargo xtask ci`: the project's whole test command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use everynode_cluster::Cluster;

/// Environment variable the test kit reads to attach to a running cluster.
const TEST_CLUSTER_ENV: &str = "EVERYNODE_TEST_CLUSTER_DIR";

#[derive(Debug, clap::Args)]
pub(crate) struct CiArgs {
    /// Skip `cargo fmt --check` and `cargo clippy` (quicker local runs).
    #[arg(long)]
    skip_lints: bool,
    /// Extra arguments passed to `cargo test --workspace` (after `--` for the test binaries,
    /// e.g. `-- --test-threads 4`).
    #[arg(last = true)]
    test_args: Vec<String>,
}

struct Phases {
    done: Vec<(&'static str, Duration, bool)>,
}

impl Phases {
    fn record(&mut self, name: &'static str, started: Instant, ok: bool) {
        let took = started.elapsed();
        tracing::info!(
            "== {name}: {} in {:.1?}",
            if ok { "ok" } else { "FAILED" },
            took
        );
        self.done.push((name, took, ok));
    }

    fn summary(&self) {
        eprintln!("\nci phases:");
        for (name, took, ok) in &self.done {
            eprintln!(
                "  {:<14} {:>8.1?}  {}",
                name,
                took,
                if *ok { "ok" } else { "FAILED" }
            );
        }
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) async fn cargo(
    args: &[&str],
    env: &[(&str, &str)],
    extra: &[String],
) -> anyhow::Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    tracing::info!(
        "$ cargo {}",
        args.iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = tokio::process::Command::new(cargo);
    // Own process group, so that on interruption the whole tree (cargo and the test binaries it
    // runs) can be stopped, not only cargo itself.
    cmd.args(args)
        .args(extra)
        .current_dir(workspace_root())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
    let status = child.wait().await?;
    guard.disarm();
    Ok(status.success())
}

/// Sends SIGTERM to a child's process group when dropped before [`GroupGuard::disarm`] (i.e.
/// when the phase is cancelled by Ctrl-C / SIGTERM).
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

pub(crate) async fn run(args: CiArgs) -> anyhow::Result<ExitCode> {
    let mut phases = Phases { done: Vec::new() };
    let total = Instant::now();
    let result = tokio::select! {
        r = run_phases(&args, &mut phases) => r,
        signal = shutdown_signal() => {
            eprintln!("\ninterrupted by {signal}; stopping the CI cluster");
            Ok(false)
        }
    };
    // Whatever happened (including Ctrl-C, which drops the running phase and with it any child
    // cargo process), make sure the CI cluster is gone.
    if let Some(dir) = ci_dir_if_present() {
        let t = Instant::now();
        match everynode_cluster::down(&dir).await {
            Ok(_) => phases.record("cluster down", t, true),
            Err(e) => {
                eprintln!("cluster down failed: {e}");
                phases.record("cluster down", t, false);
            }
        }
    }
    phases.summary();
    eprintln!("  {:<14} {:>8.1?}", "total", total.elapsed());
    match result {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(e) => Err(e),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, naming the signal.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// The `everynode` binary `cargo test` built for the integration tests (`CARGO_BIN_EXE_everynode`).
fn test_built_everynode() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("debug")
        .join("everynode")
}

fn ci_dir() -> PathBuf {
    std::env::temp_dir().join(format!("everynode-ci-{}", std::process::id()))
}

fn ci_dir_if_present() -> Option<PathBuf> {
    let d = ci_dir();
    d.join("cluster.json").exists().then_some(d)
}

async fn run_phases(args: &CiArgs, phases: &mut Phases) -> anyhow::Result<bool> {
    if !args.skip_lints {
        let t = Instant::now();
        let ok = cargo(&["fmt", "--all", "--", "--check"], &[], &[]).await?;
        phases.record("fmt", t, ok);
        if !ok {
            eprintln!("formatting differs: run `cargo fmt --all`");
            return Ok(false);
        }
        let t = Instant::now();
        let ok = cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
            &[],
        )
        .await?;
        phases.record("clippy", t, ok);
        if !ok {
            return Ok(false);
        }
        // The API docs build without a warning (broken links, stray HTML).
        let t = Instant::now();
        let ok = cargo(
            &[
                "doc",
                "--workspace",
                "--no-deps",
                "--document-private-items",
            ],
            &[("RUSTDOCFLAGS", "-D warnings")],
            &[],
        )
        .await?;
        phases.record("doc", t, ok);
        if !ok {
            return Ok(false);
        }
    }

    // Compile every test first, so the cluster does not idle through compilation and a build
    // error stops CI before anything is started.
    let t = Instant::now();
    let ok = cargo(&["test", "--workspace", "--no-run"], &[], &[]).await?;
    phases.record("build tests", t, ok);
    if !ok {
        return Ok(false);
    }

    let t = Instant::now();
    let built = crate::build().await;
    phases.record("cluster build", t, built.is_ok());
    built?;

    let t = Instant::now();
    let installed = match crate::packages::ensure_libfaketime().await {
        Ok(()) => crate::packages::ensure_image_tools().await,
        Err(e) => Err(e),
    };
    phases.record("packages", t, installed.is_ok());
    installed?;

    let t = Instant::now();
    let dir = ci_dir();
    let opts = crate::three_node_options(dir.clone(), 17443, false)?;
    let cluster: Cluster = match crate::up(&opts).await {
        Ok(c) => c,
        Err(e) => {
            phases.record("cluster up", t, false);
            return Err(e);
        }
    };
    phases.record("cluster up", t, true);

    let t = Instant::now();
    let dir_str = dir.display().to_string();
    let ok = cargo(
        &["test", "--workspace"],
        &[(TEST_CLUSTER_ENV, dir_str.as_str())],
        &args.test_args,
    )
    .await?;
    phases.record("cargo test", t, ok);
    if !ok {
        eprintln!(
            "\ntests failed; component logs of the CI cluster:\n{}",
            cluster.log_tails(60)
        );
        return Ok(false);
    }

    // The release artefacts as `cargo xtask release` builds them, checked; then the image among
    // them run from its unpacked root filesystem as its own user against the CI cluster.
    let t = Instant::now();
    let archive = crate::release::build_and_check(&crate::release::ReleaseArgs {
        out: PathBuf::from("target/release-artifacts"),
    })
    .await?;
    phases.record("release", t, true);
    let t = Instant::now();
    let ok = image_check(&dir_str, &archive).await?;
    phases.record("image", t, ok);
    if !ok {
        return Ok(false);
    }

    // Argo CD's health check of deploy/argocd, run by the Lua interpreter Argo CD embeds.
    let t = Instant::now();
    let ok = go_test("tools/argocd-health").await?;
    phases.record("argocd health", t, ok);
    if !ok {
        return Ok(false);
    }

    // Upstream's own DaemonSet e2e suites, built-in controller and everynode side by side, each
    // on a cluster of its own.
    let t = Instant::now();
    let conformance = crate::conformance::run(crate::conformance::ConformanceArgs {
        focus: crate::conformance::DEFAULT_FOCUS.to_owned(),
        target: crate::conformance::Targets::Both,
        everynode: Some(test_built_everynode()),
        dir: std::env::temp_dir().join(format!("everynode-ci-conformance-{}", std::process::id())),
    })
    .await;
    let ok = conformance
        .as_ref()
        .is_ok_and(|code| *code == ExitCode::SUCCESS);
    phases.record("conformance", t, ok);
    if !ok {
        conformance?;
        return Ok(false);
    }

    // The README's first command, on its own cluster: it must keep working on a fresh machine.
    let t = Instant::now();
    // It runs the binary the tests ran: a `cargo build` of its own would resolve features
    // without the dev-dependencies and compile a second copy of most crates.
    let demo = crate::demo::run(crate::demo::DemoArgs {
        dir: std::env::temp_dir().join(format!("everynode-ci-demo-{}", std::process::id())),
        keep: false,
        everynode: Some(test_built_everynode()),
    })
    .await;
    phases.record("demo", t, demo.is_ok());
    if !demo.map(|code| code == ExitCode::SUCCESS)? {
        return Ok(false);
    }

    // Each fuzz target briefly, from the committed corpus (long runs: `cargo xtask fuzz`).
    let t = Instant::now();
    let fuzzed = crate::fuzz::run(crate::fuzz::FuzzArgs {
        seconds: FUZZ_SECONDS,
        target: None,
        grow_corpus: false,
    })
    .await;
    let ok = fuzzed.as_ref().is_ok_and(|code| *code == ExitCode::SUCCESS);
    phases.record("fuzz", t, ok);
    fuzzed.map(|code| code == ExitCode::SUCCESS)
}

/// Runs the ignored image test on `archive` against the cluster in `cluster_dir` (`--workspace`:
/// the features of the test build, so nothing is compiled again).
async fn image_check(cluster_dir: &str, archive: &Path) -> anyhow::Result<bool> {
    let archive = archive.display().to_string();
    cargo(
        &["test", "--workspace", "--test", "image"],
        &[
            (TEST_CLUSTER_ENV, cluster_dir),
            ("EVERYNODE_IMAGE_ARCHIVE", archive.as_str()),
        ],
        &["--".to_owned(), "--ignored".to_owned()],
    )
    .await
}

/// `go test ./...` in a Go module of the repository.
async fn go_test(module: &str) -> anyhow::Result<bool> {
    tracing::info!("$ go test ./... (in {module})");
    let status = tokio::process::Command::new("go")
        .args(["test", "./..."])
        .env("GOTOOLCHAIN", "local")
        .current_dir(workspace_root().join(module))
        .kill_on_drop(true)
        .status()
        .await?;
    Ok(status.success())
}

/// Seconds each fuzz target runs in CI.
const FUZZ_SECONDS: u64 = 20;
