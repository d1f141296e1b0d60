//! `everynode status`: a kubectl-like summary of a set and a grid with one cell per node, or a
//! table of every set.

use everynode_core::{PlanInput, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde::Serialize;

use super::rollout;
use super::sets::FoundSet;
use super::style::Style;

/// The state of one node for a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeState {
    /// Runs the current revision, available.
    Updated,
    /// Runs the current revision, not available yet.
    Updating,
    /// Runs an older revision, available.
    Old,
    /// Should run the pod but has no available one.
    Unavailable,
    /// Runs a pod but should not.
    Misscheduled,
    /// Does not run the set (selector, affinity or taint).
    Excluded,
}

impl NodeState {
    const ALL: [Self; 6] = [
        Self::Updated,
        Self::Updating,
        Self::Old,
        Self::Unavailable,
        Self::Misscheduled,
        Self::Excluded,
    ];

    fn cell(self, style: Style) -> String {
        match self {
            Self::Updated => style.green("█"),
            Self::Updating => style.yellow("▒"),
            Self::Old => style.blue("▓"),
            Self::Unavailable => style.red("░"),
            Self::Misscheduled => style.magenta("×"),
            Self::Excluded => style.grey("·"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::Updating => "updating",
            Self::Old => "old",
            Self::Unavailable => "unavailable",
            Self::Misscheduled => "misscheduled",
            Self::Excluded => "excluded",
        }
    }
}

/// One node in the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Its state.
    pub state: NodeState,
    /// The set's pod there, if any.
    pub pod: Option<String>,
    /// Why it is excluded, or what holds it back.
    pub reason: Option<String>,
    /// Details for `explain`.
    pub detail: NodeDetail,
}

/// What `explain` says about a node beyond its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDetail {
    /// A daemon pod should run here.
    pub should_run: bool,
    /// An existing pod may keep running (e.g. a NoSchedule taint added later).
    pub should_continue_running: bool,
    /// Why the node is excluded.
    pub excluded: Option<String>,
    /// The pod's `controller-revision-hash`.
    pub revision: Option<String>,
    /// The node override (`spec.nodeOverrides[].name`) the node's pod gets.
    pub node_override: Option<String>,
    /// The pod's phase.
    pub phase: Option<String>,
    /// The pod is Ready.
    pub ready: bool,
    /// The pod has been Ready for `minReadySeconds`.
    pub available: bool,
    /// The scheduler's message when it cannot place the pod.
    pub scheduler: Option<String>,
    /// A container that cannot run (crash loop, image pull…).
    pub trouble: Option<String>,
    /// The controller's `status.blockedNodes` entry for the node: `reason: message`.
    pub blocked: Option<String>,
    /// Why the node failed with the new revision (`status.failure.failedNodes`).
    pub failed: Option<String>,
    /// The node readiness gate's taint on the node, and the sets it waits for.
    pub gate: Option<String>,
    /// What the controller defers here (backoff, budget, availability…).
    pub deferred: Vec<String>,
    /// What the controller would do now (create/delete with the reason).
    pub actions: Vec<String>,
}

/// Everything `status` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetStatus {
    /// `daemonset.everynode.dev/name`.
    pub set: String,
    /// Namespace.
    pub namespace: String,
    /// The stored status.
    pub status: everynode_api::DaemonSetStatus,
    /// The update strategy.
    pub strategy: String,
    /// The current revision: name and number.
    pub revision: Option<(String, i64)>,
    /// kubectl's rollout sentence.
    pub rollout: String,
    /// One entry per node, by name.
    pub nodes: Vec<NodeStatus>,
    /// The current revision's hash.
    pub hash: String,
    /// The names of the set's node overrides, in list order.
    pub overrides: Vec<String>,
}

/// Reads the set's nodes, pods and revisions and classifies every node.
pub async fn collect(client: &Client, set: &FoundSet, now: Timestamp) -> anyhow::Result<SetStatus> {
    let namespace = &set.view.namespace;
    let super::plan::Snapshot {
        nodes,
        pods,
        revisions,
    } = super::plan::live_snapshot(client, namespace).await?;

    let mut input = PlanInput::from_objects(set.view.clone(), &nodes, &pods, &revisions, now);
    input.config.explain = true;
    let plan = everynode_core::plan(&input);
    let gate = match &set.view.spec.node_readiness {
        Some(g) => Some(super::gate::GateSets::read(client, &g.taint.key).await?),
        None => None,
    };
    let node_views: std::collections::HashMap<&str, &everynode_core::NodeView> = input
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), &**n))
        .collect();

    let unschedulable: std::collections::HashMap<&str, String> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, scheduler_message(p)?)))
        .collect();
    let pods_by_name: std::collections::HashMap<&str, &everynode_core::PodView> =
        input.pods.iter().map(|p| (p.name.as_str(), &**p)).collect();
    let mut statuses = Vec::with_capacity(plan.nodes.len());
    let stored = set.view.status.as_ref();
    for decision in &plan.nodes {
        let node: &str = &decision.node;
        let pod = decision
            .pod()
            .and_then(|name| pods_by_name.get(name).copied());
        let (updated, available) = (decision.updated, decision.available);
        let state = match (decision.should_run, pod.is_some(), updated, available) {
            (true, true, true, true) => NodeState::Updated,
            (true, true, true, false) => NodeState::Updating,
            (true, true, false, true) => NodeState::Old,
            (true, _, _, _) => NodeState::Unavailable,
            (false, true, _, _) => NodeState::Misscheduled,
            (false, false, _, _) => NodeState::Excluded,
        };
        let reason = decision
            .excluded
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| pod.and_then(|p| unschedulable.get(p.name.as_str()).cloned()))
            .or_else(|| pod.and_then(|p| p.trouble.clone()))
            .or_else(|| decision.deferred.first().map(ToString::to_string));
        let adopt = pod.filter(|p| plan.adopt_pods.contains(&p.name));
        let actions = adopt
            .map(|p| {
                format!(
                    "adopt {} (an orphan pod the selector matches: the set takes it over)",
                    p.name
                )
            })
            .into_iter()
            .chain(
                plan.creates
                    .iter()
                    .filter(|c| c.node == node)
                    .map(|c| format!("create {} ({})", c.pod_name, c.reason)),
            )
            .chain(
                plan.deletes
                    .iter()
                    .filter(|d| d.node == node)
                    .map(|d| format!("delete {} ({})", d.pod, d.reason)),
            )
            .collect();
        let detail = NodeDetail {
            should_run: decision.should_run,
            should_continue_running: decision.should_continue_running,
            excluded: decision.excluded.as_ref().map(ToString::to_string),
            revision: pod.and_then(|p| {
                p.labels
                    .get(everynode_api::labels::CONTROLLER_REVISION_HASH)
                    .cloned()
            }),
            node_override: decision.node_override.clone(),
            phase: pod.map(|p| format!("{:?}", p.phase)),
            ready: pod.is_some_and(|p| p.ready),
            available,
            scheduler: pod.and_then(|p| unschedulable.get(p.name.as_str()).cloned()),
            trouble: pod.and_then(|p| p.trouble.clone()),
            blocked: stored
                .and_then(|s| s.blocked_nodes.as_ref())
                .and_then(|list| {
                    list.iter()
                        .find(|b| b.node == node)
                        .map(|b| format!("{}: {}", b.reason, b.message))
                }),
            failed: stored.and_then(|s| s.failure.as_ref()).and_then(|f| {
                let prefix = format!("{node}: ");
                f.failed_nodes
                    .iter()
                    .find_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
            }),
            gate: gate
                .as_ref()
                .and_then(|g| node_views.get(node).and_then(|view| g.explain(view, now))),
            deferred: decision.deferred.iter().map(ToString::to_string).collect(),
            actions,
        };
        statuses.push(NodeStatus {
            node: node.to_owned(),
            state,
            pod: pod.map(|p| p.name.clone()),
            reason,
            detail,
        });
    }
    let strategy = set.view.spec.effective_update_strategy();
    let strategy_text = match (&strategy.type_, &strategy.rolling_update) {
        (Some(t), Some(ru)) if t == "RollingUpdate" => format!(
            "RollingUpdate, maxUnavailable {}, maxSurge {}",
            int_or_string(ru.max_unavailable.as_ref()),
            int_or_string(ru.max_surge.as_ref())
        ),
        (t, _) => t.clone().unwrap_or_else(|| "RollingUpdate".to_owned()),
    };
    Ok(SetStatus {
        set: set.display(),
        namespace: namespace.clone(),
        status: set.view.status.clone().unwrap_or_default(),
        strategy: strategy_text,
        revision: (!plan.history.current.is_empty())
            .then(|| (plan.history.current.clone(), plan.history.current_revision)),
        rollout: rollout::progress(&set.view).message,
        nodes: statuses,
        hash: plan.history.hash.clone(),
        overrides: set
            .view
            .spec
            .overrides()
            .iter()
            .map(|o| o.name.clone())
            .collect(),
    })
}

/// The scheduler's word on a pod it cannot place (`PodScheduled=False`, `Unschedulable`).
pub fn scheduler_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            format!(
                "pod not scheduled ({}): {}",
                c.reason.as_deref().unwrap_or("unknown reason"),
                c.message.as_deref().unwrap_or("")
            )
        })
}

fn int_or_string(
    value: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
) -> String {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match value {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "0".to_owned(),
    }
}

/// Renders the summary, the node grid (`width` cells a line) and the nodes that need a word.
pub fn render(status: &SetStatus, style: Style, width: usize) -> String {
    let s = &status.status;
    let mut out = String::new();
    out.push_str(&format!(
        "{} in {}\n",
        style.bold(&status.set),
        status.namespace
    ));
    out.push_str(&format!("Strategy:   {}\n", status.strategy));
    if let Some((name, number)) = &status.revision {
        out.push_str(&format!("Revision:   {name} (#{number})\n"));
    }
    out.push_str(&format!(
        "Pods:       desired {}  current {}  ready {}  up-to-date {}  available {}  misscheduled {}\n",
        s.desired_number_scheduled,
        s.current_number_scheduled,
        s.number_ready,
        s.updated_number_scheduled.unwrap_or_default(),
        s.number_available.unwrap_or_default(),
        s.number_misscheduled
    ));
    if let Some(gated) = s.gated_nodes {
        out.push_str(&format!(
            "Gated:      {gated} desired node(s) still carry the node readiness taint (`explain --node` says what each waits for)\n"
        ));
    }
    if s.pre_pulled_nodes.is_some() || s.pre_pulling_nodes.is_some() {
        out.push_str(&format!(
            "Pre-pull:   {} node(s) with the new images pulled ahead, {} pulling\n",
            s.pre_pulled_nodes.unwrap_or_default(),
            s.pre_pulling_nodes.unwrap_or_default()
        ));
    }
    if let Some(overrides) = override_counts(status) {
        out.push_str(&format!("Overrides:  {overrides}\n"));
    }
    out.push_str(&format!("Rollout:    {}\n", status.rollout));
    for condition in s.conditions.iter().flatten() {
        out.push_str(&format!(
            "Condition:  {}={} {}: {}\n",
            condition.type_, condition.status, condition.reason, condition.message
        ));
    }
    out.push_str(&format!("Nodes ({}):\n", status.nodes.len()));
    for row in status.nodes.chunks(width.max(1)) {
        let cells: Vec<String> = row.iter().map(|n| n.state.cell(style)).collect();
        out.push_str(&format!("  {}\n", cells.join("")));
    }
    let legend: Vec<String> = NodeState::ALL
        .iter()
        .filter_map(|state| {
            let count = status.nodes.iter().filter(|n| n.state == *state).count();
            (count > 0).then(|| format!("{} {} {count}", state.cell(style), state.label()))
        })
        .collect();
    out.push_str(&format!("  {}\n", legend.join("   ")));
    let notable: Vec<&NodeStatus> = status
        .nodes
        .iter()
        .filter(|n| !matches!(n.state, NodeState::Updated))
        .collect();
    if !notable.is_empty() {
        let name_width = notable.iter().map(|n| n.node.len()).max().unwrap_or(0);
        out.push_str("Nodes without an updated, available pod:\n");
        for n in notable {
            out.push_str(&format!(
                "  {:<name_width$}  {:<12}  {}\n",
                n.node,
                n.state.label(),
                n.reason.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

/// `gpu on 2 node(s), arm64 on 1 node(s)`: the node overrides in use, in list order, with the
/// desired nodes each applies to; `None` when none applies.
fn override_counts(status: &SetStatus) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for n in status.nodes.iter().filter(|n| n.detail.should_run) {
        let Some(name) = n.detail.node_override.as_deref() else {
            continue;
        };
        match counts.iter_mut().find(|(o, _)| *o == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    let spec_order = |name: &str| status.overrides.iter().position(|o| o == name);
    counts.sort_by_key(|(name, _)| spec_order(name));
    let parts: Vec<String> = counts
        .iter()
        .map(|(name, count)| format!("{name} on {count} node(s)"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `explain`: one line per node (state, pod, why), or every detail of one node.
pub fn explain(status: &SetStatus, node: Option<&str>, style: Style) -> anyhow::Result<String> {
    let mut out = String::new();
    if let Some(name) = node {
        let Some(n) = status.nodes.iter().find(|n| n.node == name) else {
            let known: Vec<String> = status.nodes.iter().map(|n| n.node.clone()).collect();
            let similar = super::sets::similar_names(name, &known);
            anyhow::bail!(
                "node \"{name}\" not found{}",
                if similar.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", similar.join(", "))
                }
            );
        };
        let d = &n.detail;
        out.push_str(&format!("{} on node {}\n", style.bold(&status.set), n.node));
        out.push_str(&format!(
            "State:       {} {}\n",
            n.state.cell(style),
            n.state.label()
        ));
        let eligibility = match (&d.excluded, d.should_run, d.should_continue_running) {
            (Some(why), _, true) => format!("{why} (an existing pod may keep running)"),
            (Some(why), _, false) => why.clone(),
            (None, true, _) => "eligible: selector, affinity and taints allow the pod".to_owned(),
            (None, false, _) => "not eligible".to_owned(),
        };
        out.push_str(&format!("Eligibility: {eligibility}\n"));
        match &n.pod {
            Some(pod) => {
                let revision = d.revision.as_deref().unwrap_or("<none>");
                // With node overrides a pod's hash is its override's: ask the plan.
                let current = if matches!(n.state, NodeState::Updated | NodeState::Updating) {
                    "current"
                } else {
                    "old"
                };
                out.push_str(&format!("Pod:         {pod}\n"));
                out.push_str(&format!("Revision:    {revision} ({current})\n"));
                out.push_str(&format!(
                    "Phase:       {}, ready: {}, available: {}\n",
                    d.phase.as_deref().unwrap_or("?"),
                    yes_no(d.ready),
                    yes_no(d.available)
                ));
            }
            None => out.push_str("Pod:         none\n"),
        }
        if let Some(name) = &d.node_override {
            out.push_str(&format!(
                "Override:    {name} (the first of spec.nodeOverrides whose nodeSelector matches)\n"
            ));
        }
        if let Some(scheduler) = &d.scheduler {
            out.push_str(&format!("Scheduler:   {scheduler}\n"));
        }
        if let Some(trouble) = &d.trouble {
            out.push_str(&format!("Container:   {trouble}\n"));
        }
        if let Some(failed) = &d.failed {
            out.push_str(&format!(
                "Failed:      {failed} (counts toward maxFailedNodes)\n"
            ));
        }
        if let Some(blocked) = &d.blocked {
            out.push_str(&format!("Blocked:     {blocked} (status.blockedNodes)\n"));
        }
        if let Some(gate) = &d.gate {
            out.push_str(&format!("Gate:        {gate}\n"));
        }
        for deferred in &d.deferred {
            out.push_str(&format!("Waiting:     {deferred}\n"));
        }
        for action in &d.actions {
            out.push_str(&format!("Next:        {action}\n"));
        }
        return Ok(out);
    }
    let name_width = status
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let pod_width = status
        .nodes
        .iter()
        .filter_map(|n| n.pod.as_ref().map(String::len))
        .max()
        .unwrap_or(3)
        .max(3);
    // An OVERRIDE column when a node override applies anywhere.
    let override_width = status
        .nodes
        .iter()
        .filter_map(|n| n.detail.node_override.as_ref().map(|o| o.len().max(8) + 2))
        .max()
        .unwrap_or(0);
    let override_cell = |name: Option<&str>| -> String {
        match override_width {
            0 => String::new(),
            w => format!("{:<w$}", name.unwrap_or("-")),
        }
    };
    out.push_str(&format!(
        "{:<name_width$}  {:<12}  {:<pod_width$}  {}WHY\n",
        "NODE",
        "STATE",
        "POD",
        override_cell(Some("OVERRIDE"))
    ));
    for n in &status.nodes {
        let why = n.reason.clone().unwrap_or_else(|| match n.state {
            NodeState::Updated => "runs the current revision, available".to_owned(),
            NodeState::Old => "runs an old revision (OnDelete, or waiting for its turn)".to_owned(),
            _ => String::new(),
        });
        let line = format!(
            "{:<name_width$}  {:<12}  {:<pod_width$}  {}{}",
            n.node,
            n.state.label(),
            n.pod.as_deref().unwrap_or("-"),
            override_cell(n.detail.node_override.as_deref()),
            why
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// A kubectl-style table of sets.
pub fn table(sets: &[FoundSet], all_namespaces: bool) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "NAMESPACE",
            "NAME",
            "API",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
        ]
        .iter()
        .map(|h| (*h).to_owned())
        .collect(),
    ];
    for set in sets {
        let s = set.view.status.clone().unwrap_or_default();
        rows.push(vec![
            set.view.namespace.clone(),
            set.view.name.clone(),
            set.kind.api_version().to_owned(),
            s.desired_number_scheduled.to_string(),
            s.current_number_scheduled.to_string(),
            s.number_ready.to_string(),
            s.updated_number_scheduled.unwrap_or_default().to_string(),
            s.number_available.unwrap_or_default().to_string(),
        ]);
    }
    if !all_namespaces {
        for row in &mut rows {
            row.remove(0);
        }
    }
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: NodeState, reason: Option<&str>) -> NodeStatus {
        NodeStatus {
            node: name.to_owned(),
            state,
            pod: None,
            reason: reason.map(str::to_owned),
            detail: NodeDetail::default(),
        }
    }

    #[test]
    fn the_grid_has_one_cell_per_node_and_lists_the_nodes_that_need_a_word() {
        let status = SetStatus {
            set: "daemonset.everynode.dev/agent".into(),
            namespace: "ops".into(),
            status: everynode_api::DaemonSetStatus {
                desired_number_scheduled: 3,
                current_number_scheduled: 3,
                number_ready: 2,
                updated_number_scheduled: Some(2),
                number_available: Some(2),
                ..Default::default()
            },
            strategy: "RollingUpdate, maxUnavailable 1, maxSurge 0".into(),
            revision: Some(("agent-abc".into(), 2)),
            rollout: "Waiting...".into(),
            nodes: vec![
                node("a", NodeState::Updated, None),
                node("b", NodeState::Updated, None),
                node("c", NodeState::Updating, Some("waiting for availability")),
                node("cp", NodeState::Excluded, Some("taint not tolerated")),
            ],
            hash: "abc".into(),
            overrides: Vec::new(),
        };
        let text = render(&status, Style::plain(), 3);
        assert_eq!(
            text,
            "daemonset.everynode.dev/agent in ops\n\
             Strategy:   RollingUpdate, maxUnavailable 1, maxSurge 0\n\
             Revision:   agent-abc (#2)\n\
             Pods:       desired 3  current 3  ready 2  up-to-date 2  available 2  misscheduled 0\n\
             Rollout:    Waiting...\n\
             Nodes (4):\n  ██▒\n  ·\n\
             \x20 █ updated 2   ▒ updating 1   · excluded 1\n\
             Nodes without an updated, available pod:\n\
             \x20 c   updating      waiting for availability\n\
             \x20 cp  excluded      taint not tolerated\n"
        );
        let table = explain(&status, None, Style::plain()).unwrap();
        assert_eq!(
            table,
            "NODE  STATE         POD  WHY\n\
             a     updated       -    runs the current revision, available\n\
             b     updated       -    runs the current revision, available\n\
             c     updating      -    waiting for availability\n\
             cp    excluded      -    taint not tolerated\n"
        );
        let err = explain(&status, Some("cq"), Style::plain())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "node \"cq\" not found; did you mean c, cp?");
    }

    #[test]
    fn status_counts_overrides_and_pre_pulls_and_explain_names_a_nodes_override() {
        let with = |name: &str, state, node_override: Option<&str>| {
            let mut n = node(name, state, None);
            n.detail.should_run = true;
            n.detail.node_override = node_override.map(str::to_owned);
            n
        };
        let status = SetStatus {
            set: "daemonset.everynode.dev/agent".into(),
            namespace: "ops".into(),
            status: everynode_api::DaemonSetStatus::default(),
            strategy: "RollingUpdate".into(),
            revision: None,
            rollout: "done".into(),
            nodes: vec![
                with("a", NodeState::Updated, None),
                with("b", NodeState::Updated, Some("arm64")),
                with("c", NodeState::Updated, Some("gpu")),
                with("d", NodeState::Updated, Some("gpu")),
            ],
            hash: "abc".into(),
            overrides: vec!["gpu".into(), "arm64".into()],
        };
        let text = render(&status, Style::plain(), 4);
        assert!(
            text.contains("Overrides:  gpu on 2 node(s), arm64 on 1 node(s)\n"),
            "{text}"
        );
        let table = explain(&status, None, Style::plain()).unwrap();
        assert_eq!(
            table.lines().take(3).collect::<Vec<_>>(),
            [
                "NODE  STATE         POD  OVERRIDE  WHY",
                "a     updated       -    -         runs the current revision, available",
                "b     updated       -    arm64     runs the current revision, available",
            ]
        );
        let mut pulling = status.clone();
        pulling.status.pre_pulled_nodes = Some(2);
        pulling.status.pre_pulling_nodes = Some(1);
        let text = render(&pulling, Style::plain(), 4);
        assert!(
            text.contains("Pre-pull:   2 node(s) with the new images pulled ahead, 1 pulling\n"),
            "{text}"
        );
        let one = explain(&status, Some("c"), Style::plain()).unwrap();
        assert!(
            one.contains(
                "Override:    gpu (the first of spec.nodeOverrides whose nodeSelector matches)\n"
            ),
            "{one}"
        );
    }
}
