//! `everynode plan -f set.yaml`: which nodes get a pod and why, and — by simulating the
//! controller step by step with every new pod becoming available at once — the waves a rollout
//! goes through. Offline on snapshot files (`kubectl get … -o yaml` output as is) or live
//! (read-only) against the cluster.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use everynode_core::{Deferred, PlanInput, PodPhase, PodView, SetView, Timestamp};
use everynode_runtime::target::SetResource;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// UID given to a set read from a file that has none.
const OFFLINE_UID: &str = "offline";

/// The most simulated steps before giving up (a set that never converges).
const MAX_STEPS: usize = 500;

/// The largest manifest or snapshot file read (a `kubectl get pods -o yaml` of 5,000 nodes is
/// about 40 MiB): a bigger one is refused before it is read, so memory stays bounded.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads every object of a YAML file: several documents and/or `List`s, flattened.
pub fn read_objects(path: &Path) -> anyhow::Result<Vec<Value>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{}: {:.1} MiB is more than the {} MiB this command reads; pass only the objects it \
             needs (e.g. `kubectl get pods -n <namespace> -o yaml`)",
            path.display(),
            size as f64 / f64::from(1u32 << 20),
            MAX_FILE_BYTES >> 20
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    parse_objects(&text, &path.display().to_string())
}

/// Every object of a YAML text (`source` names it in errors): several documents and/or `List`s,
/// flattened.
pub fn parse_objects(text: &str, source: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        match value {
            Value::Null => {}
            Value::Object(ref object) if object.contains_key("items") => {
                if let Some(items) = object.get("items").and_then(Value::as_array) {
                    objects.extend(items.iter().cloned());
                }
            }
            other => objects.push(other),
        }
    }
    Ok(objects)
}

/// Decodes the objects of `kind` from a file, naming the file, the item and the problem.
pub fn read_kind<T: DeserializeOwned>(path: &Path, kind: &str) -> anyhow::Result<Vec<T>> {
    kind_from_objects(read_objects(path)?, kind, &path.display().to_string())
}

/// Decodes `objects` as objects of `kind`, naming `source`, the item and the problem.
pub fn kind_from_objects<T: DeserializeOwned>(
    objects: Vec<Value>,
    kind: &str,
    source: &str,
) -> anyhow::Result<Vec<T>> {
    objects
        .into_iter()
        .enumerate()
        .map(|(index, object)| {
            let found = object.get("kind").and_then(Value::as_str).unwrap_or("");
            if found != kind {
                bail!(
                    "{source}: item {} is a {:?}, expected a {kind} (e.g. `kubectl get {}s -o yaml` output)",
                    index + 1,
                    found,
                    kind.to_lowercase()
                );
            }
            serde_json::from_value(object)
                .with_context(|| format!("{source}: item {} is not a valid {kind}", index + 1))
        })
        .collect()
}

/// Reads the set from a manifest: an everynode or an apps/v1 DaemonSet, validated like the
/// apiserver validates everynode sets.
pub fn read_set(path: &Path, namespace: &str) -> anyhow::Result<(SetView, String)> {
    set_from_objects(&read_objects(path)?, namespace, &path.display().to_string())
}

/// The set of a manifest's objects (`source` names it in errors); see [`read_set`].
pub fn set_from_objects(
    objects: &[Value],
    namespace: &str,
    source: &str,
) -> anyhow::Result<(SetView, String)> {
    let [object] = objects else {
        bail!(
            "{source}: expected exactly one DaemonSet, found {} objects",
            objects.len()
        );
    };
    let kind = object["kind"].as_str().unwrap_or_default();
    if kind != "DaemonSet" {
        bail!("{source}: expected a DaemonSet, found kind {kind:?}");
    }
    let mut object = object.clone();
    let metadata = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| serde_json::json!({})))
        .and_then(Value::as_object_mut);
    let Some(metadata) = metadata else {
        bail!("{source}: metadata of the DaemonSet is not an object (name: …, namespace: …)");
    };
    for (field, default) in [("namespace", namespace), ("uid", OFFLINE_UID)] {
        if metadata.get(field).is_none_or(Value::is_null) {
            metadata.insert(field.to_owned(), Value::from(default));
        }
    }
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let view = match api_version.as_str() {
        "everynode.dev/v1alpha1" => {
            let violations = everynode_api::crd::validate(&object, None);
            if !violations.is_empty() {
                let all: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.message))
                    .collect();
                bail!("{source}: invalid DaemonSet: {}", all.join("; "));
            }
            let set: everynode_api::DaemonSet = serde_json::from_value(object)
                .with_context(|| format!("{source}: not a valid DaemonSet"))?;
            set.view()?
        }
        "apps/v1" => {
            let set: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(object)
                .with_context(|| format!("{source}: not a valid apps/v1 DaemonSet"))?;
            set.view()?
        }
        other => bail!(
            "{source}: apiVersion {other:?} is not a DaemonSet API (use everynode.dev/v1alpha1 or apps/v1)"
        ),
    };
    Ok((view, api_version))
}

/// The cluster the plan looks at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Pods of the set's namespace.
    pub pods: Vec<Pod>,
    /// ControllerRevisions of the set's namespace.
    pub revisions: Vec<ControllerRevision>,
}

/// One simulated step of the controller.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Nodes that get a new pod, with the reason.
    pub creates: Vec<(String, String)>,
    /// Nodes whose pod is deleted, with the reason.
    pub deletes: Vec<(String, String)>,
    /// Nodes whose pod is updated in place.
    pub updates: Vec<String>,
    /// Nodes that pull the new images ahead (`prePull`), from this step or the steps since the
    /// last wave that only pulled.
    pub pulls: Vec<String>,
    /// Nodes that should run the pod but have no available one right after the step.
    pub unavailable: usize,
    /// Seconds the rollout waits before this wave (bake time, pacing).
    pub waits_seconds: u64,
}

/// A node in the plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanNode {
    /// Node name.
    pub node: String,
    /// It runs the set's pod.
    pub runs: bool,
    /// Why not.
    pub excluded: Option<String>,
    /// The node override (`spec.nodeOverrides[].name`) its pod gets.
    pub node_override: Option<String>,
}

/// What `plan` found.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// `namespace/name`.
    pub set: String,
    /// Per node: whether it runs the pod, why not, and its node override.
    pub nodes: Vec<PlanNode>,
    /// What the planner refuses in the set (an invalid node override, budget or control).
    pub problems: Vec<String>,
    /// The update strategy.
    pub strategy: String,
    /// The steps until nothing is left to do.
    pub waves: Vec<Wave>,
    /// Pods after the last step.
    pub pods_after: usize,
    /// Whether the simulation converged within its step limit.
    pub converged: bool,
    /// Nodes the rollout controls keep on their revision at the end, with the reason.
    pub held: Vec<(String, String)>,
}

/// Plans `set` against `snapshot` and simulates the rollout: each plan's writes go through
/// ([`PlanInput::apply`]), then every pod runs and becomes available.
pub fn simulate(set: &SetView, snapshot: &Snapshot, start: Timestamp) -> PlanReport {
    let mut input = PlanInput::from_objects(
        set.clone(),
        &snapshot.nodes,
        &snapshot.pods,
        &snapshot.revisions,
        start,
    );
    // Per-node decisions: the first plan's eligibility, and the last one's held nodes.
    input.config.explain = true;
    let mut waves = Vec::new();
    let mut eligibility = None;
    let mut converged = false;
    let mut waits = 0;
    let mut held = Vec::new();
    let mut problems = None;
    let mut pulls_before = Vec::new();
    for _ in 0..MAX_STEPS {
        let plan = everynode_core::plan(&input);
        let eligible = eligibility.get_or_insert_with(|| node_eligibility(&plan));
        problems.get_or_insert_with(|| plan.errors.iter().map(ToString::to_string).collect());
        let history_only = plan.history.collision_count.is_some() || plan.history.create.is_some();
        let pulls = &plan.pre_pull;
        let writes = !(plan.creates.is_empty()
            && plan.deletes.is_empty()
            && plan.updates.is_empty()
            && pulls.creates.is_empty()
            && pulls.deletes.is_empty());
        input.apply(&plan);
        if !writes {
            if history_only {
                continue;
            }
            // A bake time or pacing window: let it pass.
            let rolling = plan.counts.is_some_and(|c| c.updated < c.desired);
            if let Some(wait) = plan.requeue_after.filter(|_| rolling) {
                let seconds = wait.as_secs().max(1);
                waits += seconds;
                input.now = later(input.now, seconds);
                continue;
            }
            held = held_nodes(&plan);
            converged = true;
            break;
        }
        let mut step = wave(&plan, &input, eligible, std::mem::take(&mut waits));
        settle(&mut input, &plan);
        if step.creates.is_empty() && step.deletes.is_empty() && step.updates.is_empty() {
            // Only pulls (or pre-pull pods cleaned up): they belong to the next wave.
            pulls_before.append(&mut step.pulls);
            waits += step.waits_seconds;
            continue;
        }
        pulls_before.append(&mut step.pulls);
        step.pulls = std::mem::take(&mut pulls_before);
        merge_step(&mut waves, step);
    }
    let strategy = input.set.spec.effective_update_strategy();
    PlanReport {
        set: format!("{}/{}", set.namespace, set.name),
        nodes: eligibility.unwrap_or_default(),
        problems: problems.unwrap_or_default(),
        strategy: strategy.type_.unwrap_or_else(|| "RollingUpdate".to_owned()),
        waves,
        pods_after: input.pods.len(),
        converged,
        held,
    }
}

/// Per node: whether it runs the pod, why not, and its node override.
fn node_eligibility(plan: &everynode_core::Plan) -> Vec<PlanNode> {
    plan.nodes
        .iter()
        .map(|d| {
            let node: &str = &d.node;
            PlanNode {
                node: node.to_owned(),
                runs: d.should_run,
                excluded: d.excluded.as_ref().map(ToString::to_string),
                node_override: d.node_override.clone(),
            }
        })
        .collect()
}

/// One step of the simulation, once its writes went through.
fn wave(
    plan: &everynode_core::Plan,
    after: &PlanInput,
    eligibility: &[PlanNode],
    waits_seconds: u64,
) -> Wave {
    let min_ready = after.set.spec.min_ready_seconds.unwrap_or_default();
    let unavailable = eligibility
        .iter()
        .filter(|n| n.runs)
        .filter(|n| {
            !after.pods.iter().any(|p| {
                p.target_node.as_deref() == Some(n.node.as_str())
                    && everynode_core::status::is_pod_available(p, min_ready, after.now)
            })
        })
        .count();
    Wave {
        creates: plan
            .creates
            .iter()
            .map(|c| (c.node.clone(), c.reason.to_string()))
            .collect(),
        deletes: plan
            .deletes
            .iter()
            .map(|d| (d.node.clone(), d.reason.to_string()))
            .collect(),
        updates: plan.updates.iter().map(|u| u.node.clone()).collect(),
        pulls: plan
            .pre_pull
            .creates
            .iter()
            .map(|c| c.node.clone())
            .collect(),
        unavailable,
        waits_seconds,
    }
}

/// Time passes: the scheduler binds every new pod, and new pods and pods updated in place
/// run and become available (ready for longer than `minReadySeconds`).
fn settle(input: &mut PlanInput, plan: &everynode_core::Plan) {
    let min_ready =
        u64::try_from(input.set.spec.min_ready_seconds.unwrap_or_default().max(0)).unwrap_or(0);
    input.now = later(input.now, min_ready + 10);
    let ready_since = input
        .now
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(
            i64::try_from(min_ready + 5).unwrap_or(i64::MAX),
        ))
        .unwrap_or(input.now);
    let restarted = |p: &PodView| plan.updates.iter().any(|u| u.pod == p.name);
    for pod in input
        .pods
        .iter_mut()
        .filter(|p| p.phase == PodPhase::Pending || restarted(p))
    {
        let pod = std::sync::Arc::make_mut(pod);
        pod.node_name = pod.target_node.clone();
        pod.phase = PodPhase::Running;
        pod.ready = true;
        pod.ready_since = Some(ready_since);
    }
}

/// `now` plus `seconds`.
fn later(now: Timestamp, seconds: u64) -> Timestamp {
    now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
        i64::try_from(seconds).unwrap_or(i64::MAX),
    ))
    .unwrap_or(now)
}

/// Adds a step to the waves: a step that only finishes the previous wave's nodes (the create
/// after a delete, or the delete after a surge create) belongs to that wave.
/// Nodes that the rollout controls hold (partition, selector, pause, freeze), with the reason.
fn held_nodes(plan: &everynode_core::Plan) -> Vec<(String, String)> {
    plan.nodes
        .iter()
        .filter_map(|d| {
            let why = d.deferred.iter().find(|x| {
                matches!(
                    x,
                    Deferred::HeldByPartition { .. }
                        | Deferred::NotSelected
                        | Deferred::RolloutPaused
                        | Deferred::SetFrozen
                )
            })?;
            let node: &str = &d.node;
            Some((node.to_owned(), why.to_string()))
        })
        .collect()
}

fn merge_step(waves: &mut Vec<Wave>, step: Wave) {
    if let Some(last) = waves.last_mut() {
        let nodes_of = |w: &Wave| -> std::collections::BTreeSet<String> {
            w.creates
                .iter()
                .chain(&w.deletes)
                .map(|(n, _)| n.clone())
                .chain(w.updates.iter().cloned())
                .collect()
        };
        if step.waits_seconds == 0 && nodes_of(&step).is_subset(&nodes_of(last)) {
            last.creates.extend(step.creates);
            last.deletes.extend(step.deletes);
            last.updates.extend(step.updates);
            last.pulls.extend(step.pulls);
            last.unavailable = last.unavailable.max(step.unavailable);
            return;
        }
    }
    waves.push(step);
}

/// Renders the report.
pub fn render(report: &PlanReport) -> String {
    let running = report.nodes.iter().filter(|n| n.runs).count();
    let mut out = format!(
        "Plan for {}: a pod on {running} of {} nodes\n",
        report.set,
        report.nodes.len()
    );
    for problem in &report.problems {
        out.push_str(&format!("Problem: {problem}\n"));
    }
    let width = report
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let overrides = report.nodes.iter().any(|n| n.node_override.is_some());
    let override_width = report
        .nodes
        .iter()
        .filter_map(|n| n.node_override.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
        .max(8);
    if overrides {
        out.push_str(&format!(
            "{:<width$}  POD  {:<override_width$}  WHY\n",
            "NODE", "OVERRIDE"
        ));
    } else {
        out.push_str(&format!("{:<width$}  POD  WHY\n", "NODE"));
    }
    for n in &report.nodes {
        let runs = if n.runs { "yes" } else { "no" };
        let why = n.excluded.as_deref().unwrap_or("");
        let line = if overrides {
            let name = n.node_override.as_deref().unwrap_or("-");
            format!(
                "{:<width$}  {runs:<3}  {name:<override_width$}  {why}",
                n.node
            )
        } else {
            format!("{:<width$}  {runs:<3}  {why}", n.node)
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("Strategy: {}\n", report.strategy));
    if report.waves.is_empty() {
        out.push_str("Nothing to do: every node already runs the current revision.\n");
    }
    for (index, wave) in report.waves.iter().enumerate() {
        let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (node, reason) in &wave.deletes {
            by_node
                .entry(node)
                .or_default()
                .push(format!("delete ({reason})"));
        }
        for (node, reason) in &wave.creates {
            by_node
                .entry(node)
                .or_default()
                .push(format!("create ({reason})"));
        }
        for node in &wave.updates {
            by_node
                .entry(node)
                .or_default()
                .push("update in place (only container images changed)".to_owned());
        }

        let waits = match wave.waits_seconds {
            0 => String::new(),
            s => format!(", after waiting {s}s (bake time or pacing)"),
        };
        out.push_str(&format!(
            "Wave {}: {} node(s), at most {} unavailable{waits}\n",
            index + 1,
            by_node.len(),
            wave.unavailable
        ));
        if !wave.pulls.is_empty() {
            out.push_str(&format!(
                "  pulling the new images ahead (prePull): {}\n",
                wave.pulls.join(", ")
            ));
        }
        for (node, actions) in by_node {
            out.push_str(&format!("  {node}: {}\n", actions.join(", ")));
        }
    }
    if !report.held.is_empty() {
        out.push_str(&format!(
            "Held: {} node(s) stay on their revision\n",
            report.held.len()
        ));
        for (node, why) in &report.held {
            out.push_str(&format!("  {node}: {why}\n"));
        }
    }
    if report.converged {
        out.push_str(&format!(
            "Converges after {} wave(s) with {} pod(s) (each new pod assumed available at once).\n",
            report.waves.len(),
            report.pods_after
        ));
    } else {
        out.push_str(&format!(
            "Does not converge within {MAX_STEPS} steps (a set whose pods never settle?).\n"
        ));
    }
    out
}

/// A set read from a file has no UID: take the one its pods' controller reference names (a
/// DaemonSet of the same name), so they count as the set's own.
pub fn adopt_uid(set: &mut SetView, pods: &[Pod]) {
    if set.uid != OFFLINE_UID {
        return;
    }
    let owner = pods.iter().find_map(|pod| {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true) && r.kind == "DaemonSet" && r.name == set.name)
            .map(|r| r.uid.clone())
    });
    if let Some(uid) = owner {
        set.uid = uid;
    }
}

/// Reads the snapshot files.
pub fn read_snapshot(
    nodes: &Path,
    pods: Option<&Path>,
    revisions: Option<&Path>,
) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        nodes: read_kind(nodes, "Node")?,
        pods: pods
            .map(|p| read_kind(p, "Pod"))
            .transpose()?
            .unwrap_or_default(),
        revisions: revisions
            .map(|p| read_kind(p, "ControllerRevision"))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Reads nodes, and the pods and revisions of `namespace`, from the cluster.
pub async fn live_snapshot(client: &kube::Client, namespace: &str) -> anyhow::Result<Snapshot> {
    use kube::Api;
    use kube::api::ListParams;
    let params = ListParams::default();
    Ok(Snapshot {
        nodes: Api::<Node>::all(client.clone())
            .list(&params)
            .await
            .context("listing nodes")?
            .items,
        pods: Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .with_context(|| format!("listing pods in {namespace}"))?
            .items,
        revisions: Api::<ControllerRevision>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .with_context(|| format!("listing ControllerRevisions in {namespace}"))?
            .items,
    })
}
