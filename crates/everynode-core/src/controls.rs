//! everynode's rollout controls (fields apps/v1 does not have): `spec.paused`, `spec.frozen`,
//! and in `rollingUpdate`: `partition`, `selector` (canary nodes), `newNodePolicy` and `order`.
//!
//! Parsed once per plan from the spec; the rolling update uses them as classification filters
//! (a held node is not a candidate) and as the candidate order. Unset fields give exactly the
//! apps/v1 behaviour.

use std::cmp::Ordering;

use everynode_api::{DaemonSetSpec, NewNodePolicy, RolloutOrderType, UpdateStrategyType};

use crate::budget::{BudgetError, Scaled, scaled_value};
use crate::reason::Deferred;
use crate::selector::{Selector, SelectorError};
use crate::snapshot::NodeView;

/// A rollout control that cannot be interpreted (admission rejects these; a set stored before
/// a rule existed can still carry one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlsError {
    /// `partition` or `maxUnavailablePerDomain` is not a non-negative integer or percentage.
    #[error(transparent)]
    Partition(#[from] BudgetError),
    /// `rollingUpdate.selector` is invalid.
    #[error("spec.updateStrategy.rollingUpdate.selector: {0}")]
    Selector(SelectorError),
    /// `newNodePolicy` is not `Latest` or `Stable`.
    #[error(
        "spec.updateStrategy.rollingUpdate.newNodePolicy: unsupported value {0:?}; use Latest or Stable"
    )]
    NewNodePolicy(String),
    /// `order` is incomplete or of an unknown type.
    #[error("spec.updateStrategy.rollingUpdate.order: {0}")]
    Order(&'static str),
    /// A rollout-safety field is invalid.
    #[error(transparent)]
    Safety(#[from] crate::safety::SafetyError),
}

/// The order in which a rolling update visits nodes (ties by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodeOrder {
    /// By node name.
    #[default]
    Name,
    /// By the position of the node's `label` value in `values`; others last.
    LabelValues {
        /// Node label key.
        label: String,
        /// Values in update order.
        values: Vec<String>,
    },
    /// By the node's `label` value as an integer, highest first; others last.
    Priority {
        /// Node label key.
        label: String,
    },
}

impl NodeOrder {
    /// The rank of `node` (lower goes first); nodes of equal rank go by name.
    pub fn rank(&self, node: &NodeView) -> i64 {
        match self {
            Self::Name => 0,
            Self::LabelValues { label, values } => node
                .labels
                .get(label)
                .and_then(|v| values.iter().position(|x| x == v))
                .map_or(i64::MAX, |i| i64::try_from(i).unwrap_or(i64::MAX)),
            Self::Priority { label } => node
                .labels
                .get(label)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map_or(i64::MAX, |p| p.saturating_neg()),
        }
    }

    /// Compares two nodes in update order.
    pub fn compare(&self, a: &NodeView, b: &NodeView) -> Ordering {
        match self {
            Self::Name => a.name.cmp(&b.name),
            _ => self
                .rank(a)
                .cmp(&self.rank(b))
                .then_with(|| a.name.cmp(&b.name)),
        }
    }

    /// A short description (`everynode plan`).
    pub fn describe(&self) -> String {
        match self {
            Self::Name => "by node name".to_owned(),
            Self::LabelValues { label, values } => {
                format!("by node label {label} in order {}", values.join(", "))
            }
            Self::Priority { label } => format!("by node label {label} (integer, highest first)"),
        }
    }
}

/// The parsed controls of one set.
#[derive(Clone, Debug, Default)]
pub struct Controls {
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.frozen`.
    pub frozen: bool,
    /// Scaled `partition`: desired nodes kept on the old revision.
    pub partition: i32,
    /// Canary node selector (`None`: every node).
    pub selector: Option<Selector>,
    /// Candidate order.
    pub order: NodeOrder,
    /// Revision for nodes the rollout is held on.
    pub new_node_policy: NewNodePolicy,
    /// Zone-by-zone waves (`topologyKey`).
    pub topology: Option<Topology>,
    /// Rate limits on starting node updates.
    pub pacing: Pacing,
    /// Rollout safety: failure detection and the unavailable-node policy.
    pub safety: crate::safety::Safety,
    /// The rollout failed and the failure policy stops it (set by the plan).
    pub failed: bool,
}

/// The field of the per-domain budget.
const MAX_UNAVAILABLE_PER_DOMAIN: &str =
    "spec.updateStrategy.rollingUpdate.maxUnavailablePerDomain";

/// Update one topology domain at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// The node label that names a node's domain.
    pub key: String,
    /// `maxUnavailablePerDomain` (scaled per domain when used).
    pub per_domain: Option<Scaled>,
    /// `bakeSeconds`.
    pub bake_seconds: i64,
}

/// `minSecondsBetweenBatches` and `maxNodesPerMinute`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pacing {
    /// Seconds between the starts of two batches (0: no limit).
    pub min_seconds_between_batches: i64,
    /// Node updates started in any 60 seconds (`None`: no limit).
    pub max_nodes_per_minute: Option<i32>,
}

impl Pacing {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.min_seconds_between_batches > 0 || self.max_nodes_per_minute.is_some()
    }
}

impl Controls {
    /// Parses the controls of `spec` for `desired` nodes.
    pub fn from_spec(spec: &DaemonSetSpec, desired: i32) -> Result<Self, ControlsError> {
        let mut controls = Self {
            paused: spec.is_paused(),
            frozen: spec.is_frozen(),
            ..Self::default()
        };
        let strategy = spec.effective_update_strategy();
        if strategy.strategy_type() != Some(UpdateStrategyType::RollingUpdate) {
            return Ok(controls);
        }
        let Some(rolling) = strategy.rolling_update.as_ref() else {
            return Ok(controls);
        };
        if let Some(partition) = &rolling.partition {
            controls.partition = scaled_value(
                partition,
                desired,
                "spec.updateStrategy.rollingUpdate.partition",
            )?;
        }
        if let Some(selector) = &rolling.selector {
            let compiled = Selector::compile(selector).map_err(ControlsError::Selector)?;
            controls.selector = (!compiled.is_empty()).then_some(compiled);
        }
        controls.new_node_policy = rolling.new_node_policy().ok_or_else(|| {
            ControlsError::NewNodePolicy(rolling.new_node_policy.clone().unwrap_or_default())
        })?;
        if let Some(key) = rolling.topology_key.as_ref().filter(|k| !k.is_empty()) {
            controls.topology = Some(Topology {
                key: key.clone(),
                per_domain: rolling
                    .max_unavailable_per_domain
                    .as_ref()
                    .map(|v| Scaled::parse(v, MAX_UNAVAILABLE_PER_DOMAIN))
                    .transpose()?,
                bake_seconds: i64::from(rolling.bake_seconds.unwrap_or(0).max(0)),
            });
        }
        controls.safety = crate::safety::Safety::from_rolling(rolling, desired)?;
        controls.pacing = Pacing {
            min_seconds_between_batches: i64::from(
                rolling.min_seconds_between_batches.unwrap_or(0).max(0),
            ),
            max_nodes_per_minute: rolling.max_nodes_per_minute.map(|n| n.max(0)),
        };
        if let Some(order) = &rolling.order {
            let label = order.label.clone().filter(|l| !l.is_empty());
            controls.order = match order.order_type() {
                None => {
                    return Err(ControlsError::Order(
                        "type must be Name, LabelValues or Priority",
                    ));
                }
                Some(RolloutOrderType::Name) => NodeOrder::Name,
                Some(RolloutOrderType::LabelValues) => NodeOrder::LabelValues {
                    label: label.ok_or(ControlsError::Order("LabelValues needs label"))?,
                    values: order
                        .values
                        .clone()
                        .filter(|v| !v.is_empty())
                        .ok_or(ControlsError::Order("LabelValues needs values"))?,
                },
                Some(RolloutOrderType::Priority) => NodeOrder::Priority {
                    label: label.ok_or(ControlsError::Order("Priority needs label"))?,
                },
            };
        }
        Ok(controls)
    }

    /// Why the rollout may not replace the pod on `node` (partition aside), if it may not.
    pub fn held(&self, node: &NodeView) -> Option<Deferred> {
        if self.paused {
            return Some(Deferred::RolloutPaused);
        }
        if self.failed {
            return Some(Deferred::RolloutFailed);
        }
        match &self.selector {
            Some(selector) if !selector.matches(&node.labels) => Some(Deferred::NotSelected),
            _ => None,
        }
    }

    /// Whether any control can hold the rollout on some node.
    pub fn can_hold(&self) -> bool {
        self.paused || self.failed || self.partition > 0 || self.selector.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..NodeView::default()
        }
    }

    #[test]
    fn label_values_order_puts_unlisted_nodes_last_by_name() {
        let order = NodeOrder::LabelValues {
            label: "zone".into(),
            values: vec!["b".into(), "a".into()],
        };
        let mut nodes = [
            node("n1", &[("zone", "a")]),
            node("n2", &[]),
            node("n3", &[("zone", "b")]),
            node("n0", &[("zone", "c")]),
            node("n4", &[("zone", "a")]),
        ];
        nodes.sort_by(|a, b| order.compare(a, b));
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n3", "n1", "n4", "n0", "n2"]);
    }

    #[test]
    fn priority_order_goes_highest_first_and_unparsable_last() {
        let order = NodeOrder::Priority { label: "p".into() };
        let mut nodes = [
            node("a", &[("p", "1")]),
            node("b", &[("p", "10")]),
            node("c", &[("p", "x")]),
            node("d", &[("p", "-3")]),
        ];
        nodes.sort_by(|a, b| order.compare(a, b));
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "d", "c"]);
    }
}
