//! `cargo xtask conformance`: upstream's own DaemonSet and ControllerRevision e2e suites
//! (`k8s.io/kubernetes/test/e2e/apps`, the pinned release) against the local cluster, once with
//! the built-in DaemonSet controller and once with everynode as `--target apps/v1`, running as
//! the ServiceAccount and RBAC of `deploy/`. Prints the results side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use everynode_cluster::gobuild::{E2E_APPS, KUBECTL};
use everynode_cluster::{Cache, Cluster};

/// The suites run by default: every spec of "[sig-apps] Daemon set" and "[sig-apps]
/// ControllerRevision" (whose conformance test manages a DaemonSet's revisions).
pub(crate) const DEFAULT_FOCUS: &str = r"\[sig-apps\] (Daemon set|ControllerRevision)";

/// The ServiceAccount of `deploy/rbac.yaml` that everynode runs as.
const SERVICE_ACCOUNT: &str = "system:serviceaccount:everynode-system:everynode";

/// Which controller runs the apps/v1 DaemonSets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Runner {
    /// kube-controller-manager's DaemonSet controller.
    #[value(name = "builtin")]
    Builtin,
    /// `everynode controller --target apps/v1`, the built-in one off.
    #[value(name = "apps/v1")]
    Everynode,
}

impl Runner {
    fn label(self) -> &'static str {
        match self {
            Self::Builtin => "built-in",
            Self::Everynode => "everynode",
        }
    }
}

/// `--target`: one runner or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Targets {
    /// The built-in controller only.
    #[value(name = "builtin")]
    Builtin,
    /// everynode only.
    #[value(name = "apps/v1")]
    Everynode,
    /// Both, one cluster each, one after the other.
    Both,
}

impl Targets {
    fn runners(self) -> Vec<Runner> {
        match self {
            Self::Builtin => vec![Runner::Builtin],
            Self::Everynode => vec![Runner::Everynode],
            Self::Both => vec![Runner::Builtin, Runner::Everynode],
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConformanceArgs {
    /// Ginkgo focus: a regular expression over the spec names.
    #[arg(long, default_value = DEFAULT_FOCUS)]
    pub(crate) focus: String,
    /// Which controller runs the suites.
    #[arg(long, value_enum, default_value_t = Targets::Both)]
    pub(crate) target: Targets,
    /// Run this everynode binary instead of building one.
    #[arg(long)]
    pub(crate) everynode: Option<PathBuf>,
    /// Working directory (clusters, controller logs, the suites' JSON reports).
    #[arg(long, default_value = "/tmp/everynode-conformance")]
    pub(crate) dir: PathBuf,
}

/// One spec's outcome on one runner.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    state: String,
    seconds: f64,
    failure: Option<String>,
}

type Results = BTreeMap<String, BTreeMap<Runner, Outcome>>;

pub(crate) async fn run(args: ConformanceArgs) -> anyhow::Result<ExitCode> {
    crate::build().await?;
    let everynode = match (&args.everynode, args.target) {
        (_, Targets::Builtin) => None,
        (Some(path), _) => Some(path.clone()),
        (None, _) => Some(crate::demo::build_everynode().await?),
    };
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let mut results = Results::new();
    for runner in args.target.runners() {
        let t = Instant::now();
        let report = run_suites(&args, runner, everynode.as_deref()).await?;
        let outcomes = read_report(&report)?;
        tracing::info!(
            "{}: {} specs ran in {:.0?}",
            runner.label(),
            outcomes.len(),
            t.elapsed()
        );
        for (name, outcome) in outcomes {
            results.entry(name).or_default().insert(runner, outcome);
        }
    }
    let runners = args.target.runners();
    println!("{}", table(&results, &runners));
    let verdict = verdict(&results, &runners);
    match &verdict {
        Ok(summary) => println!("{summary}"),
        Err(problems) => {
            for problem in problems {
                println!("FAILED: {problem}");
            }
        }
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts a cluster for `runner`, runs the e2e binary against it and returns its JSON report.
async fn run_suites(
    args: &ConformanceArgs,
    runner: Runner,
    everynode: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let name = match runner {
        Runner::Builtin => "builtin",
        Runner::Everynode => "everynode",
    };
    // The cluster directory goes with the cluster; the report and log stay beside it.
    let dir = args.dir.join(format!("{name}-cluster"));
    let report = args.dir.join(format!("{name}-e2e-report.json"));
    let log = args.dir.join(format!("{name}-e2e.log"));
    let _ = std::fs::remove_file(&report);
    if dir.join("cluster.json").exists() {
        everynode_cluster::down(&dir).await?;
    }
    let opts = crate::three_node_options(dir.clone(), 19443, runner == Runner::Builtin)?;
    let mut cluster = crate::up(&opts).await?;
    let result = suites_on(&mut cluster, args, runner, everynode, &report, &log).await;
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(40));
    }
    // The controller's log stays beside the report.
    let controller_log = cluster.dir().extra_log("everynode-controller");
    if controller_log.exists() {
        let kept = args.dir.join(format!("{name}-controller.log"));
        if let Err(err) = std::fs::copy(&controller_log, &kept) {
            eprintln!("keeping {}: {err}", controller_log.display());
        }
    }
    everynode_cluster::down(&dir).await?;
    result.map(|()| report)
}

async fn suites_on(
    cluster: &mut Cluster,
    args: &ConformanceArgs,
    runner: Runner,
    everynode: Option<&Path>,
    report: &Path,
    log: &Path,
) -> anyhow::Result<()> {
    let cache = Cache::pinned();
    let kubectl = cache.binary_named(KUBECTL);
    let admin = cluster.kubeconfig();
    if let (Runner::Everynode, Some(everynode)) = (runner, everynode) {
        let root = crate::ci::workspace_root();
        kubectl_with(
            &kubectl,
            &[
                "apply",
                "--server-side",
                "-f",
                &root.join("deploy/namespace.yaml").display().to_string(),
                "-f",
                &root.join("deploy/rbac.yaml").display().to_string(),
            ],
            &admin,
        )
        .await?;
        let token = kubectl_output(
            &kubectl,
            &[
                "create",
                "token",
                "everynode",
                "--namespace=everynode-system",
                "--duration=2h",
            ],
            &admin,
        )
        .await?;
        let kubeconfig = token_kubeconfig(&admin, cluster.dir().root(), token.trim())?;
        let pid = cluster.spawn_extra(
            "everynode-controller",
            everynode,
            &[
                "controller".to_owned(),
                "--target=apps/v1".to_owned(),
                format!("--kubeconfig={}", kubeconfig.display()),
                "--http-addr=127.0.0.1:0".to_owned(),
            ],
        )?;
        tracing::info!("everynode controller running as {SERVICE_ACCOUNT} (pid {pid})");
    }
    let log_file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    tracing::info!(
        "{}: running upstream's e2e suites (focus {:?}; output in {})",
        runner.label(),
        args.focus,
        log.display()
    );
    let status = tokio::process::Command::new(cache.binary_named(E2E_APPS))
        .arg(format!("--kubeconfig={}", admin.display()))
        .arg("--provider=skeleton")
        .arg(format!("--kubectl-path={}", kubectl.display()))
        .arg(format!("--ginkgo.focus={}", args.focus))
        .arg(format!("--ginkgo.json-report={}", report.display()))
        .arg("--ginkgo.no-color")
        .current_dir(cluster.dir().root())
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .status()
        .await
        .context("run the e2e test binary")?;
    if !report.exists() {
        bail!(
            "the e2e binary wrote no report (exit {status}); see {}",
            log.display()
        );
    }
    Ok(())
}

/// Runs `kubectl args` with `kubeconfig`, failing with its output.
async fn kubectl_with(kubectl: &Path, args: &[&str], kubeconfig: &Path) -> anyhow::Result<()> {
    kubectl_output(kubectl, args, kubeconfig).await.map(drop)
}

/// Runs `kubectl args` with `kubeconfig`; its standard output, or a failure with its errors.
async fn kubectl_output(
    kubectl: &Path,
    args: &[&str],
    kubeconfig: &Path,
) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {}", kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A copy of the admin kubeconfig that authenticates with `token` (the ServiceAccount's, from
/// TokenRequest, as a deployed pod's) instead of the admin's certificate.
fn token_kubeconfig(admin: &Path, dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let mut config = kube::config::Kubeconfig::read_from(admin)
        .with_context(|| format!("read {}", admin.display()))?;
    for named in &mut config.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_owned().into()),
            ..Default::default()
        });
    }
    let path = dir.join("kubeconfig-everynode-serviceaccount");
    // JSON is YAML: every kubeconfig reader takes it.
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The specs of a Ginkgo JSON report that ran (not skipped), by full name.
fn read_report(path: &Path) -> anyhow::Result<BTreeMap<String, Outcome>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    parse_report(&text).with_context(|| format!("parse {}", path.display()))
}

fn parse_report(text: &str) -> anyhow::Result<BTreeMap<String, Outcome>> {
    let suites: serde_json::Value = serde_json::from_str(text)?;
    let mut out = BTreeMap::new();
    for suite in suites.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            let leaf = spec["LeafNodeText"].as_str().unwrap_or_default();
            let state = spec["State"].as_str().unwrap_or_default();
            // Suite set-up and tear-down nodes have no text; skipped specs did not run.
            if leaf.is_empty() || state == "skipped" {
                continue;
            }
            let mut name: Vec<&str> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .collect();
            name.push(leaf);
            let failure = spec["Failure"]["Message"].as_str().map(|message| {
                let location = &spec["Failure"]["Location"];
                format!(
                    "{} ({}:{})",
                    message.lines().next().unwrap_or_default().trim(),
                    location["FileName"]
                        .as_str()
                        .and_then(|f| f.rsplit('/').next())
                        .unwrap_or_default(),
                    location["LineNumber"]
                )
            });
            out.insert(
                name.join(" "),
                Outcome {
                    state: state.to_owned(),
                    seconds: spec["RunTime"].as_f64().unwrap_or_default() / 1e9,
                    failure,
                },
            );
        }
    }
    Ok(out)
}

/// The side-by-side table (Markdown).
fn table(results: &Results, runners: &[Runner]) -> String {
    let mut out = String::from("| test |");
    for runner in runners {
        out.push_str(&format!(" {} |", runner.label()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(runners.len()));
    out.push('\n');
    for (name, by_runner) in results {
        out.push_str(&format!("| {name} |"));
        for runner in runners {
            let cell = by_runner.get(runner).map_or_else(
                || "not run".to_owned(),
                |o| format!("{} ({:.1} s)", o.state, o.seconds),
            );
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    for (name, by_runner) in results {
        for (runner, outcome) in by_runner {
            if let Some(failure) = &outcome.failure {
                out.push_str(&format!("\n{} failed {name}: {failure}", runner.label()));
            }
        }
    }
    out
}

/// `Ok(summary)` when every runner ran specs and everynode passed every spec the built-in
/// controller passed (with one runner: every spec passed); otherwise the problems.
fn verdict(results: &Results, runners: &[Runner]) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let mut passed = BTreeMap::new();
    for runner in runners {
        let ran = results.values().filter(|r| r.contains_key(runner)).count();
        if ran == 0 {
            problems.push(format!("no spec ran for {}", runner.label()));
        }
        let ok = results
            .values()
            .filter(|r| r.get(runner).is_some_and(|o| o.state == "passed"))
            .count();
        passed.insert(*runner, (ok, ran));
    }
    for (name, by_runner) in results {
        let state = |runner| by_runner.get(&runner).map(|o| o.state.as_str());
        let required = if runners.contains(&Runner::Builtin) {
            state(Runner::Builtin) == Some("passed")
        } else {
            true
        };
        for runner in runners {
            let failed = state(*runner) != Some("passed");
            let must_pass = *runner == Runner::Everynode && required || runners.len() == 1;
            if failed && must_pass {
                problems.push(format!(
                    "{} did not pass {name:?}{}",
                    runner.label(),
                    if runners.len() > 1 {
                        " (the built-in controller passed it)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(passed
        .iter()
        .map(|(runner, (ok, ran))| format!("{}: {ok} of {ran} passed", runner.label()))
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"[{"SpecReports": [
        {"LeafNodeText": "", "State": "passed", "RunTime": 1},
        {"ContainerHierarchyTexts": ["[sig-apps] Daemon set [Serial]"],
         "LeafNodeText": "should run and stop simple daemon", "State": "passed", "RunTime": 500000000},
        {"ContainerHierarchyTexts": ["[sig-apps] Daemon set [Serial]"],
         "LeafNodeText": "should rollback without unnecessary restarts", "State": "failed",
         "RunTime": 1400000000,
         "Failure": {"Message": "Expected\n  nil", "Location": {"FileName": "k8s.io/kubernetes/test/e2e/apps/daemon_set.go", "LineNumber": 494}}},
        {"ContainerHierarchyTexts": ["[sig-apps] Job"], "LeafNodeText": "other", "State": "skipped", "RunTime": 0}
    ]}]"#;

    fn results(builtin: &[(&str, &str)], everynode: &[(&str, &str)]) -> Results {
        let mut out = Results::new();
        for (runner, specs) in [(Runner::Builtin, builtin), (Runner::Everynode, everynode)] {
            for (name, state) in specs {
                out.entry((*name).to_owned()).or_default().insert(
                    runner,
                    Outcome {
                        state: (*state).to_owned(),
                        seconds: 1.0,
                        failure: None,
                    },
                );
            }
        }
        out
    }

    #[test]
    fn a_report_gives_the_specs_that_ran_with_their_failure() {
        let specs = parse_report(REPORT).unwrap();
        assert_eq!(specs.len(), 2);
        let failed =
            &specs["[sig-apps] Daemon set [Serial] should rollback without unnecessary restarts"];
        assert_eq!(failed.state, "failed");
        assert_eq!(
            failed.failure.as_deref(),
            Some("Expected (daemon_set.go:494)")
        );
        assert!((failed.seconds - 1.4).abs() < 1e-9);
    }

    #[test]
    fn everynode_must_pass_what_the_builtin_passes() {
        let both = [Runner::Builtin, Runner::Everynode];
        let ok = results(
            &[("a", "passed"), ("b", "failed")],
            &[("a", "passed"), ("b", "failed")],
        );
        assert_eq!(
            verdict(&ok, &both),
            Ok("built-in: 1 of 2 passed; everynode: 1 of 2 passed".to_owned())
        );
        let worse = results(&[("a", "passed")], &[("a", "failed")]);
        assert!(verdict(&worse, &both).is_err());
        let missing = results(&[("a", "passed")], &[]);
        assert!(verdict(&missing, &both).is_err());
    }

    #[test]
    fn a_run_without_specs_fails() {
        assert!(verdict(&Results::new(), &[Runner::Everynode]).is_err());
        let one = results(&[], &[("a", "failed")]);
        assert!(verdict(&one, &[Runner::Everynode]).is_err());
    }

    #[test]
    fn the_table_has_a_column_per_runner() {
        let table = table(
            &results(&[("a", "passed")], &[("a", "passed")]),
            &[Runner::Builtin, Runner::Everynode],
        );
        assert!(table.starts_with("| test | built-in | everynode |\n|---|---|---|\n"));
        assert!(table.contains("| a | passed (1.0 s) | passed (1.0 s) |"));
    }
}
