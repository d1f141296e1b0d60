//! Node readiness gates (`spec.nodeReadiness`): after each reconcile of a set that declares a
//! gate, the gate of its taint key is synced over every node — the taint comes off once every
//! cached set declaring the key that should run on the node has an available pod there
//! (`everynode_core::gate::decide`), and with `Continuous` goes back. A node is written with a JSON patch that tests its resourceVersion and replaces only
//! its taint list, with every other taint as it was.

use std::collections::HashMap;
use std::time::Duration;

use everynode_core::gate::{GateAction, GateMember, decide, pods_on_node, tainted};
use everynode_core::{NodeMatcher, PodView, SetView, Timestamp};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::context::Context;
use crate::error::Error;

/// A set that declares a gate, as the set cache shows it.
#[derive(Clone, Debug)]
struct Member {
    /// `namespace/name`.
    set: String,
    /// The set's namespace (its pods in the index).
    namespace: String,
    /// The set's UID.
    uid: String,
    /// Where the set should run.
    matcher: NodeMatcher,
    /// `minReadySeconds`.
    min_ready: i64,
    /// `enforce: Continuous`: the grace in seconds.
    continuous_grace: Option<i64>,
    /// Its stored status shows a rollout in progress.
    rolling_out: bool,
}

impl Member {
    /// The member `set` is for `taint_key`, if it declares that gate.
    fn of(set: &everynode_api::DaemonSet, taint_key: &str) -> Option<Self> {
        let gate = set.spec.node_readiness.as_ref()?;
        if gate.taint.key != taint_key || set.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let view = SetView::from_daemon_set(set).ok()?;
        let rolling_out = view.status.as_ref().is_some_and(|s| {
            s.updated_number_scheduled.unwrap_or(0) < s.desired_number_scheduled
                || s.observed_generation != view.generation
        });
        Some(Self {
            set: format!("{}/{}", view.namespace, view.name),
            namespace: view.namespace.clone(),
            uid: view.uid.clone(),
            matcher: NodeMatcher::for_set(&view.spec),
            min_ready: i64::from(view.spec.min_ready_seconds.unwrap_or(0)),
            continuous_grace: gate.continuous().then(|| gate.grace_seconds()),
            rolling_out,
        })
    }
}

/// The everynode sets that declare `taint_key`, from the set cache (every set counts from the
/// moment it is cached, before its first reconcile).
fn members(ctx: &Context, taint_key: &str) -> Vec<Member> {
    let Some(sets) = &ctx.everynode_sets else {
        return Vec::new();
    };
    let mut members: Vec<Member> = sets
        .state()
        .iter()
        .filter_map(|set| Member::of(set, taint_key))
        .collect();
    members.sort_by(|a, b| a.set.cmp(&b.set));
    members
}

/// Syncs the gate of `taint_key` over every node; returns when to look again (a grace period
/// running). Errors of single nodes are logged and retried at the next sync.
pub async fn sync(ctx: &Context, taint_key: &str, now: Timestamp) -> Option<Duration> {
    let members = members(ctx, taint_key);
    let continuous = members.iter().any(|m| m.continuous_grace.is_some());
    let pods: Vec<HashMap<String, Vec<PodView>>> =
        members.iter().map(|m| pods_by_node(ctx, m)).collect();
    let mut recheck: Option<Duration> = None;
    for node in ctx.nodes.state() {
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !tainted(&taints, taint_key) && !continuous {
            continue;
        }
        let view = everynode_core::NodeView::from_node(&node);
        let states: Vec<GateMember> = members
            .iter()
            .zip(&pods)
            .map(|(member, pods)| member.on(&view, pods.get(&view.name), now))
            .collect();
        let decision = decide(tainted(&taints, taint_key), &states, now);
        if let Some(wait) = decision.recheck_after {
            recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
        }
        let Some(new_taints) = gated_taints(&taints, taint_key, decision.action, now) else {
            continue;
        };
        match write_taints(ctx, &node, new_taints).await {
            Ok(()) => tracing::info!(
                node = %view.name,
                taint = %taint_key,
                action = ?decision.action,
                sets = ?decision.sets,
                "node readiness gate"
            ),
            Err(err) => {
                tracing::warn!(node = %view.name, error = %err.summary(), "node readiness gate not written")
            }
        }
    }
    recheck
}

impl Member {
    /// How the member stands on `node`, with its `pods` there.
    fn on(
        &self,
        node: &everynode_core::NodeView,
        pods: Option<&Vec<PodView>>,
        now: Timestamp,
    ) -> GateMember {
        let (available, unavailable_since) =
            pods_on_node(pods.into_iter().flatten(), now, self.min_ready);
        GateMember {
            set: self.set.clone(),
            desired: self.matcher.evaluate(node).should_run,
            available,
            unavailable_since,
            continuous_grace: self.continuous_grace,
            rolling_out: self.rolling_out,
        }
    }
}

/// The node's taint list after `action` (`None`: unchanged): without the key, or with it back
/// as `NoSchedule`; every other taint as it was.
fn gated_taints(
    taints: &[Taint],
    key: &str,
    action: GateAction,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    match action {
        GateAction::Keep => None,
        GateAction::Remove => Some(taints.iter().filter(|t| t.key != key).cloned().collect()),
        GateAction::Add => {
            let mut with = taints.to_vec();
            with.push(Taint {
                key: key.to_owned(),
                effect: "NoSchedule".to_owned(),
                time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
                value: None,
            });
            Some(with)
        }
    }
}

/// The member's pods by target node, as planner views.
fn pods_by_node(ctx: &Context, m: &Member) -> HashMap<String, Vec<PodView>> {
    ctx.pod_index.with_pods_of(&m.namespace, &m.uid, |pods| {
        everynode_core::gate::pods_by_node(pods.map(|p| &**p), &m.uid)
    })
}

/// Replaces the node's taint list, if its resourceVersion is still the cached one.
async fn write_taints(ctx: &Context, node: &Node, taints: Vec<Taint>) -> Result<(), Error> {
    let name = node.name_any();
    let version = node.resource_version().unwrap_or_default();
    let pointer = |tokens: [&str; 2]| json_patch::jsonptr::PointerBuf::from_tokens(tokens);
    let patch = json_patch::Patch(vec![
        json_patch::PatchOperation::Test(json_patch::TestOperation {
            path: pointer(["metadata", "resourceVersion"]),
            value: serde_json::Value::String(version),
        }),
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: pointer(["spec", "taints"]),
            value: serde_json::to_value(&taints).map_err(|source| Error::Taints {
                node: name.clone(),
                source,
            })?,
        }),
    ]);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    nodes
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(Error::api(format!("updating the taints of node {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.to_owned(),
            effect: effect.to_owned(),
            ..Taint::default()
        }
    }

    #[test]
    fn only_the_gate_key_is_taken_off_or_put_back() {
        let now = Timestamp::UNIX_EPOCH;
        let taints = [taint("gate", "NoExecute"), taint("other", "NoSchedule")];
        assert_eq!(
            gated_taints(&taints, "gate", GateAction::Remove, now),
            Some(vec![taint("other", "NoSchedule")])
        );
        let back = gated_taints(
            &[taint("other", "NoSchedule")],
            "gate",
            GateAction::Add,
            now,
        )
        .unwrap_or_default();
        let keys: Vec<(&str, &str)> = back
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(keys, [("other", "NoSchedule"), ("gate", "NoSchedule")]);
        assert_eq!(gated_taints(&taints, "gate", GateAction::Keep, now), None);
    }
}
