//! `cargo xtask demo`: the whole system in a few minutes, on a fresh machine.
//!
//! Builds what is missing (the control plane from its Go modules, the `everynode` binary),
//! starts a local cluster of KWOK nodes, runs the controller, and walks through what a
//! DaemonSet does, printing `everynode status` (counters and the node grid) after each step:
//! the set lands on every selected node; two nodes join and get pods; one leaves and its pod
//! goes; a label change moves a pod; an image update rolls through; a broken image fails its
//! progress deadline and is rolled back; the set is deleted and every pod goes. It ends by
//! stopping everything it started, also on failure or Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use everynode_cluster::{Cluster, nodes};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Namespace of the demo set.
const NAMESPACE: &str = "everynode-demo";
/// Name of the demo set.
const SET: &str = "node-monitor";
/// Node label the demo set selects.
const MONITOR_LABEL: &str = "demo.everynode.dev/monitor";
/// Name of the controller process (`logs/extra-<name>.log` in the cluster directory).
const CONTROLLER: &str = "everynode-controller";
/// How long one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// `progressDeadlineSeconds` of the demo set.
const PROGRESS_DEADLINE_SECONDS: i32 = 10;
/// First base port tried for the demo cluster.
const DEMO_BASE_PORT: u16 = 17443;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Cluster directory (removed at the end).
    #[arg(long, default_value = "/tmp/everynode-demo")]
    pub(crate) dir: PathBuf,
    /// Keep the cluster and the controller running at the end (stop them with
    /// `cargo xtask cluster down --dir DIR`).
    #[arg(long)]
    pub(crate) keep: bool,
    /// Run this everynode binary instead of building one.
    #[arg(long)]
    pub(crate) everynode: Option<PathBuf>,
}

/// Runs the demo; the cluster is stopped whatever happens (unless `--keep`).
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    banner("Building what is missing: the control plane (Go modules) and the everynode binary");
    crate::build().await?;
    let everynode = match args.everynode.clone() {
        Some(binary) => binary,
        None => build_everynode().await?,
    };

    banner("Starting a local cluster: 3 KWOK worker nodes and a tainted control-plane node");
    let opts = crate::three_node_options(args.dir.clone(), DEMO_BASE_PORT, false)?;
    let mut cluster = crate::up(&opts).await?;
    let outcome = tokio::select! {
        result = walk_through(&mut cluster, &everynode) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if args.keep && outcome.is_ok() {
        println!(
            "\nThe cluster keeps running: export KUBECONFIG={}; stop it with `cargo xtask cluster down --dir {}`.",
            cluster.kubeconfig().display(),
            args.dir.display()
        );
    } else {
        banner("Stopping the controller and the cluster");
        if let Err(e) = cluster.stop_extra(CONTROLLER).await {
            tracing::warn!("stopping the controller: {e}");
        }
        cluster.down().await.context("cluster down")?;
    }
    match outcome {
        Ok(()) => {
            println!("\nDemo complete in {:.0?}.", started.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.context(format!(
            "the demo failed; the controller's log was in {}",
            args.dir.join("logs").display()
        ))),
    }
}

/// `cargo build -p everynode` and the path of the binary it made.
pub(crate) async fn build_everynode() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = tokio::process::Command::new(cargo)
        .args([
            "build",
            "-p",
            "everynode",
            "--bin",
            "everynode",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running cargo build")?;
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if !out.status.success() {
        // The compiler's words travel in the JSON messages, not on stderr.
        for rendered in messages
            .iter()
            .filter(|msg| msg["reason"] == "compiler-message")
            .filter_map(|msg| msg["message"]["rendered"].as_str())
        {
            eprint!("{rendered}");
        }
        bail!("cargo build -p everynode failed ({})", out.status);
    }
    messages
        .iter()
        .filter(|msg| msg["target"]["name"] == "everynode")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo build reported no everynode executable")
}

/// The steps, against a running cluster.
async fn walk_through(cluster: &mut Cluster, everynode: &Path) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let kubeconfig = cluster.kubeconfig();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let workers = worker_names(&nodes).await?;
    let [first, second, third] = workers.as_slice() else {
        bail!("expected 3 worker nodes, found {workers:?}");
    };

    banner("Installing the CRD and starting the controller");
    install_crd(&client).await?;
    let pid = cluster.spawn_extra(
        CONTROLLER,
        everynode,
        &[
            "controller".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--http-addr=127.0.0.1:0".to_owned(),
        ],
    )?;
    println!("everynode controller running (pid {pid})");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("create namespace {NAMESPACE}"))?;
    let status = |title: &'static str| show_status(everynode, &kubeconfig, title);

    banner(&format!(
        "1. A node monitor for the nodes labelled {MONITOR_LABEL}=true: {first} and {second}"
    ));
    for node in [first, second] {
        label(&nodes, node, Some("true")).await?;
    }
    apply_set(&client, "example.com/node-monitor:v1", false).await?;
    wait_pods(&pods, &[first, second], "v1").await?;
    status("One pod per selected node; the third worker and the control-plane node are excluded")
        .await?;

    banner("2. Two nodes join (labelled) and get a pod each");
    let joined = ["kwok-node-demo-a".to_owned(), "kwok-node-demo-b".to_owned()];
    let labels = BTreeMap::from([(MONITOR_LABEL.to_owned(), "true".to_owned())]);
    everynode_cluster::cluster::create_nodes(
        &nodes,
        joined
            .iter()
            .enumerate()
            .map(|(i, n)| nodes::worker(n, nodes::zone_for(i), &labels))
            .collect(),
    )
    .await?;
    everynode_cluster::cluster::wait_nodes_ready(&client, &joined, STEP_TIMEOUT).await?;
    wait_pods(&pods, &[first, second, &joined[0], &joined[1]], "v1").await?;
    status("The joining nodes run the monitor too").await?;

    banner(&format!(
        "3. Node {} leaves (deleted; as upstream, the pod garbage collector removes its pod, within about a minute)",
        joined[1]
    ));
    nodes
        .delete(&joined[1], &DeleteParams::default())
        .await
        .with_context(|| format!("delete node {}", joined[1]))?;
    wait_pods(&pods, &[first, second, &joined[0]], "v1").await?;
    status("Its pod is gone").await?;

    banner(&format!(
        "4. The label moves from {second} to {third}: the pod moves with it"
    ));
    label(&nodes, second, None).await?;
    label(&nodes, third, Some("true")).await?;
    wait_pods(&pods, &[first, third, &joined[0]], "v1").await?;
    status("The pod left the unlabelled node and started on the newly labelled one").await?;

    banner(
        "5. An image update (v1 -> v2) rolls through one node at a time (maxUnavailable 1, minReadySeconds 2)",
    );
    apply_set(&client, "example.com/node-monitor:v2", false).await?;
    follow_rollout(&client, everynode, &kubeconfig).await?;
    wait_pods(&pods, &[first, third, &joined[0]], "v2").await?;
    status("Every pod runs v2").await?;

    banner(&format!(
        "6. A broken image (v3: its pods never become ready): after progressDeadlineSeconds ({PROGRESS_DEADLINE_SECONDS}) the rollout fails and failurePolicy: Rollback puts v2 back"
    ));
    apply_set(&client, "example.com/node-monitor:v3", true).await?;
    let sets: Api<everynode_api::DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    wait_until("the automatic rollback", || async {
        let set = sets.get(SET).await?;
        Ok(set.status.and_then(|s| s.rollback).is_some())
    })
    .await?;
    status("The rollout failed; the template is v2 again (status.rollback says why)").await?;
    wait_pods(&pods, &[first, third, &joined[0]], "v2").await?;
    status("Only the node that got v3 was touched: every pod runs v2 again").await?;

    banner("7. The set is deleted: every pod goes");
    sets.delete(SET, &DeleteParams::foreground())
        .await
        .with_context(|| format!("delete DaemonSet {SET}"))?;
    wait_pods(&pods, &[], "").await?;
    println!("No pod of {SET} is left in namespace {NAMESPACE}.");
    Ok(())
}

/// The worker nodes `cluster up` made, sorted.
async fn worker_names(nodes: &Api<Node>) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = nodes
        .list(&ListParams::default().labels(&format!("{}=true", nodes::CLUSTER_NODE_LABEL)))
        .await
        .context("list nodes")?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| n != nodes::CONTROL_PLANE_NODE)
        .collect();
    names.sort();
    Ok(names)
}

/// Applies the CRD and waits until the API server serves it.
async fn install_crd(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = everynode_api::crd::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("everynode-demo").force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("apply CRD {name}"))?;
    wait_until(&format!("CRD {name} to be established"), || async {
        let crd = crds.get(&name).await?;
        Ok(crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await
}

/// Server-side applies the demo set with `image`.
/// `never_ready`: KWOK runs the pods but never makes them Ready (a broken image).
async fn apply_set(client: &Client, image: &str, never_ready: bool) -> anyhow::Result<()> {
    let mut labels = json!({"app": SET});
    if never_ready {
        labels[everynode_cluster::gobuild::SIMULATE_LABEL] =
            json!(everynode_cluster::gobuild::NEVER_READY);
    }
    let set = json!({
        "apiVersion": "everynode.dev/v1alpha1",
        "kind": "DaemonSet",
        "metadata": {"name": SET, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": SET}},
            "minReadySeconds": 2,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxUnavailable": 1,
                "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
                "failurePolicy": "Rollback",
            }},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {MONITOR_LABEL: "true"},
                    "containers": [{
                        "name": "monitor",
                        "image": image,
                        "ports": [{"name": "metrics", "containerPort": 9100, "hostPort": 9100}],
                    }],
                },
            },
        },
    });
    let sets: Api<everynode_api::DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    sets.patch(
        SET,
        &PatchParams::apply("everynode-demo"),
        &Patch::Apply(&set),
    )
    .await
    .with_context(|| format!("apply DaemonSet {SET} with image {image}"))?;
    println!("applied DaemonSet {NAMESPACE}/{SET} with image {image}");
    Ok(())
}

/// Sets (`Some`) or removes (`None`) the monitor label on a node.
async fn label(nodes: &Api<Node>, node: &str, value: Option<&str>) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"labels": {MONITOR_LABEL: value}}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("label node {node}"))?;
    println!(
        "node {node}: {}",
        value.map_or_else(
            || format!("label {MONITOR_LABEL} removed"),
            |v| format!("labelled {MONITOR_LABEL}={v}")
        )
    );
    Ok(())
}

/// Waits until the set's live pods are exactly one Ready pod on each of `expected`, each with an
/// image ending in `:<tag>`, and (while the set exists) its status counts every one of them as
/// updated and available.
async fn wait_pods(pods: &Api<Pod>, expected: &[&String], tag: &str) -> anyhow::Result<()> {
    let mut want: Vec<&str> = expected.iter().map(|n| n.as_str()).collect();
    want.sort_unstable();
    let what = if want.is_empty() {
        "every pod to be gone".to_owned()
    } else {
        format!("one available {tag} pod on each of {}", want.join(", "))
    };
    let sets: Api<everynode_api::DaemonSet> =
        Api::namespaced(pods.clone().into_client(), NAMESPACE);
    wait_until(&what, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={SET}")))
            .await?;
        let mut on: Vec<String> = Vec::new();
        for pod in list.items {
            if pod.metadata.deletion_timestamp.is_some() {
                return Ok(false);
            }
            let spec = pod.spec.unwrap_or_default();
            let image_ok = spec
                .containers
                .first()
                .and_then(|c| c.image.as_deref())
                .is_some_and(|i| i.ends_with(&format!(":{tag}")));
            let ready = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !(image_ok && ready) {
                return Ok(false);
            }
            on.push(spec.node_name.unwrap_or_default());
        }
        on.sort();
        if on != want {
            return Ok(false);
        }
        let Some(set) = sets.get_opt(SET).await? else {
            return Ok(true);
        };
        let status = set.status.unwrap_or_default();
        let count = i32::try_from(want.len()).unwrap_or(i32::MAX);
        Ok(status.observed_generation >= set.metadata.generation
            && status.desired_number_scheduled == count
            && status.updated_number_scheduled == Some(count)
            && status.number_available == Some(count))
    })
    .await
}

/// Polls `check` every 250 ms until it returns `true`, for at most [`STEP_TIMEOUT`].
async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, kube::Error>>,
{
    let start = Instant::now();
    let mut last_error = None;
    while start.elapsed() < STEP_TIMEOUT {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "timed out after {STEP_TIMEOUT:?} waiting for {what}{}",
        last_error.map_or_else(String::new, |e| format!(" (last error: {e})"))
    )
}

/// Prints `everynode status` of the demo set under `title`.
async fn show_status(everynode: &Path, kubeconfig: &Path, title: &str) -> anyhow::Result<()> {
    println!("\n{title}:\n");
    run_cli(everynode, kubeconfig, &["status", SET]).await
}

/// Follows the rollout: prints the status each time the number of updated or available pods
/// changes, until every pod is updated and available.
async fn follow_rollout(
    client: &Client,
    everynode: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<()> {
    let sets: Api<everynode_api::DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let start = Instant::now();
    let mut shown = None;
    while start.elapsed() < STEP_TIMEOUT {
        let set = sets.get(SET).await.with_context(|| format!("get {SET}"))?;
        let status = set.status.unwrap_or_default();
        let observed = status.observed_generation >= set.metadata.generation;
        let desired = status.desired_number_scheduled;
        let updated = status.updated_number_scheduled.unwrap_or(0);
        let available = status.number_available.unwrap_or(0);
        if observed && shown != Some((updated, available)) {
            shown = Some((updated, available));
            if updated == desired && available == desired {
                return Ok(());
            }
            show_status(
                everynode,
                kubeconfig,
                &format!("Rolling: {updated} of {desired} updated, {available} available"),
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out after {STEP_TIMEOUT:?} waiting for the rollout of {SET}")
}

/// Runs an `everynode` CLI command on the demo namespace, its output going to ours.
async fn run_cli(everynode: &Path, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new(everynode)
        .args(args)
        .args(["-n", NAMESPACE])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .env("EVERYNODE_LOG", "warn")
        .status()
        .await
        .with_context(|| format!("running everynode {}", args.join(" ")))?;
    if !status.success() {
        bail!("everynode {} exited with {status}", args.join(" "));
    }
    Ok(())
}

fn banner(text: &str) {
    println!("\n==> {text}");
}
