//! Which node changes can change a set's plan, so a node event wakes only the sets it concerns
//! (upstream's `nodeUpdate` handler does the same with `shouldRun`/`shouldContinueRunning`).

use crate::eligibility::{NodeMatcher, Verdict};
use crate::snapshot::{NodeView, SetView};

/// What a set's plan reads of a node: its eligibility (§2) and, for rollouts that select,
/// order or group nodes by label and for node overrides, the labels of the nodes it runs on.
#[derive(Clone, Debug)]
pub struct NodeInterest {
    matcher: NodeMatcher,
    reads_labels: bool,
    /// The taint key of the set's node readiness gate (`status.gatedNodes` counts it, and the
    /// gate is synced after the set's reconcile).
    gate_key: Option<String>,
}

impl NodeInterest {
    /// Compiles the interest of `set`.
    #[must_use]
    pub fn of(set: &SetView) -> Self {
        let rolling = set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let reads_labels = !set.spec.overrides().is_empty()
            || rolling.is_some_and(|r| {
                r.selector.is_some()
                    || r.topology_key.is_some()
                    || r.order.as_ref().is_some_and(|o| o.label.is_some())
            });
        Self {
            matcher: NodeMatcher::for_set(&set.spec),
            reads_labels,
            gate_key: set
                .spec
                .node_readiness
                .as_ref()
                .map(|g| g.taint.key.clone()),
        }
    }

    /// Whether a node going from `before` to `after` (`None`: absent) can change the set's
    /// plan or status: its `shouldRun` or `shouldContinueRunning` changes, the taint that keeps
    /// a selected node out changes (`status.blockedNodes`), for a set that reads node labels
    /// the labels of a node it runs on change, or for a gated set the gate's taint comes or
    /// goes on a node it runs on (`status.gatedNodes`). A node that comes or goes matters when
    /// the set should run there or lists it as blocked (its pods bring their own events).
    #[must_use]
    pub fn concerns(&self, before: Option<&NodeView>, after: Option<&NodeView>) -> bool {
        match (before, after) {
            (None, None) => false,
            (Some(node), None) | (None, Some(node)) => self.placement(node).counted(),
            (Some(old), Some(new)) => {
                let (was, is) = (self.placement(old), self.placement(new));
                let gate_moved = self.gate_key.as_ref().is_some_and(|key| {
                    crate::gate::tainted(&old.taints, key) != crate::gate::tainted(&new.taints, key)
                });
                was != is
                    || (self.reads_labels && is.keeps_pod && old.labels != new.labels)
                    || (gate_moved && is.runs_pod)
            }
        }
    }

    fn placement<'n>(&self, node: &'n NodeView) -> Placement<'n> {
        let verdict = self.matcher.check(node);
        Placement {
            runs_pod: verdict.should_run(),
            keeps_pod: verdict.should_continue_running(),
            blocking_taint: match verdict {
                Verdict::Taint { taint, .. } => Some((&taint.key, &taint.value, &taint.effect)),
                _ => None,
            },
        }
    }
}

/// What a set's plan and status make of one node.
#[derive(Debug, PartialEq, Eq)]
struct Placement<'n> {
    /// `shouldRun`.
    runs_pod: bool,
    /// `shouldContinueRunning`.
    keeps_pod: bool,
    /// The untolerated taint of a node the template selects (listed as blocked).
    blocking_taint: Option<(&'n String, &'n Option<String>, &'n String)>,
}

impl Placement<'_> {
    /// Whether the node counts for the set at all: desired, or listed as blocked.
    fn counted(&self) -> bool {
        self.runs_pod || self.blocking_taint.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use everynode_api::v1alpha1::{DaemonSetUpdateStrategy, RollingUpdateDaemonSet, RolloutOrder};
    use k8s_openapi::api::core::v1::{PodSpec, Taint, Toleration};

    use super::*;

    fn set(node_selector: &[(&str, &str)], tolerations: Vec<Toleration>) -> SetView {
        let mut set = SetView {
            name: "s".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            generation: Some(1),
            annotations: BTreeMap::new(),
            spec: everynode_api::v1alpha1::DaemonSetSpec::default(),
            template_generation: None,
            deleting: false,
            status: None,
        };
        set.spec.template.spec = Some(PodSpec {
            node_selector: (!node_selector.is_empty()).then(|| {
                node_selector
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            tolerations: Some(tolerations),
            ..Default::default()
        });
        set
    }

    fn node(labels: &[(&str, &str)], taints: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: "n1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            taints: taints
                .iter()
                .map(|(key, effect)| Taint {
                    key: (*key).to_owned(),
                    effect: (*effect).to_owned(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_gate_taint_leaving_a_node_concerns_the_gated_set_it_runs() {
        let mut gated = set(&[], vec![]);
        gated.spec.node_readiness = Some(everynode_api::NodeReadiness {
            taint: everynode_api::GateTaint {
                key: "example.com/agents".into(),
                effect: "NoSchedule".into(),
            },
            enforce: None,
            grace_seconds: None,
        });
        let gated = NodeInterest::of(&gated);
        let plain = NodeInterest::of(&set(&[], vec![]));
        let waiting = node(&[], &[("example.com/agents", "NoSchedule")]);
        let open = node(&[], &[]);
        // The gated set tolerates its own taint: it runs on the node either way.
        assert!(gated.concerns(None, Some(&waiting)));
        assert!(gated.concerns(Some(&waiting), Some(&open)));
        assert!(plain.concerns(Some(&waiting), Some(&open)));
        assert!(!plain.concerns(Some(&open), Some(&open)));
        assert!(!gated.concerns(Some(&open), Some(&open)));
    }

    #[test]
    fn a_new_node_concerns_only_the_sets_that_would_run_on_it() {
        let gpu = NodeInterest::of(&set(&[("gpu", "true")], vec![]));
        let any = NodeInterest::of(&set(&[], vec![]));
        let plain = node(&[("zone", "a")], &[]);
        assert!(!gpu.concerns(None, Some(&plain)));
        assert!(any.concerns(None, Some(&plain)));
        // and its deletion likewise
        assert!(!gpu.concerns(Some(&plain), None));
        assert!(any.concerns(Some(&plain), None));
    }

    #[test]
    fn a_label_change_concerns_the_sets_whose_selector_it_flips() {
        let gpu = NodeInterest::of(&set(&[("gpu", "true")], vec![]));
        let any = NodeInterest::of(&set(&[], vec![]));
        let before = node(&[("zone", "a")], &[]);
        let labelled = node(&[("zone", "a"), ("gpu", "true")], &[]);
        assert!(gpu.concerns(Some(&before), Some(&labelled)));
        assert!(gpu.concerns(Some(&labelled), Some(&before)));
        // the set on every node keeps running there: nothing to do
        assert!(!any.concerns(Some(&before), Some(&labelled)));
        // a label no one selects on
        let zone_b = node(&[("zone", "b"), ("gpu", "true")], &[]);
        assert!(!gpu.concerns(Some(&labelled), Some(&zone_b)));
    }

    #[test]
    fn a_no_schedule_taint_concerns_the_set_though_its_pod_may_stay() {
        // shouldRun flips, shouldContinueRunning does not: desiredNumberScheduled changes.
        let any = NodeInterest::of(&set(&[], vec![]));
        let tainted = node(&[], &[("dedicated", "NoSchedule")]);
        assert!(any.concerns(Some(&node(&[], &[])), Some(&tainted)));
        // tolerated: no change
        let tolerant = NodeInterest::of(&set(
            &[],
            vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }],
        ));
        assert!(!tolerant.concerns(Some(&node(&[], &[])), Some(&tainted)));
    }

    #[test]
    fn the_not_ready_taint_of_a_joining_node_is_concerning_when_it_goes() {
        let any = NodeInterest::of(&set(&[], vec![]));
        let joining = node(&[], &[("node.kubernetes.io/not-ready", "NoSchedule")]);
        // listed as blocked while the taint is there, desired once it goes
        assert!(any.concerns(None, Some(&joining)));
        assert!(any.concerns(Some(&joining), Some(&node(&[], &[]))));
        assert!(any.concerns(Some(&joining), None));
        // a set that does not select the node has nothing to say about it
        let gpu = NodeInterest::of(&set(&[("gpu", "true")], vec![]));
        assert!(!gpu.concerns(None, Some(&joining)));
    }

    #[test]
    fn a_rollout_that_orders_nodes_by_label_reads_the_labels_of_its_nodes() {
        let mut ordered = set(&[], vec![]);
        ordered.spec.update_strategy = Some(DaemonSetUpdateStrategy {
            rolling_update: Some(RollingUpdateDaemonSet {
                order: Some(RolloutOrder {
                    label: Some("priority".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let ordered = NodeInterest::of(&ordered);
        let before = node(&[("priority", "1")], &[]);
        let after = node(&[("priority", "2")], &[]);
        assert!(ordered.concerns(Some(&before), Some(&after)));
        // a node the set does not run on is still none of its business
        let tainted = |p| node(&[("priority", p)], &[("x", "NoExecute")]);
        assert!(!ordered.concerns(Some(&tainted("1")), Some(&tainted("2"))));
    }

    #[test]
    fn a_set_with_node_overrides_reads_the_labels_of_its_nodes() {
        let mut overridden = set(&[], vec![]);
        overridden.spec.node_overrides = Some(vec![everynode_api::NodeOverride {
            name: "gpu".into(),
            ..Default::default()
        }]);
        let overridden = NodeInterest::of(&overridden);
        let plain = node(&[], &[]);
        let gpu = node(&[("gpu", "true")], &[]);
        assert!(overridden.concerns(Some(&plain), Some(&gpu)));
        assert!(!NodeInterest::of(&set(&[], vec![])).concerns(Some(&plain), Some(&gpu)));
    }
}
