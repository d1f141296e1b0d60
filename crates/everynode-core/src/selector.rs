//! Label selector matching (`metav1.LabelSelector`), compiled once per plan.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::index::strs;

/// A selector that cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Unknown operator in a `matchExpressions` entry.
    #[error("invalid label selector: unknown operator {operator:?} for key {key:?}")]
    UnknownOperator {
        /// The requirement key.
        key: String,
        /// The operator.
        operator: String,
    },
    /// `In`/`NotIn` without values, or `Exists`/`DoesNotExist` with values.
    #[error("invalid label selector: operator {operator} for key {key:?} has wrong values")]
    BadValues {
        /// The requirement key.
        key: String,
        /// The operator.
        operator: String,
    },
}

#[derive(Clone, Debug)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl Op {
    /// Whether a label value (`None`: no such label) satisfies the operator.
    fn matches(&self, got: Option<&str>) -> bool {
        match self {
            Op::In(vals) => got.is_some_and(|g| vals.iter().any(|v| v == g)),
            Op::NotIn(vals) => got.is_none_or(|g| vals.iter().all(|v| v != g)),
            Op::Exists => got.is_some(),
            Op::DoesNotExist => got.is_none(),
        }
    }
}

/// A compiled label selector.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    labels: Vec<(String, String)>,
    exprs: Vec<(String, Op)>,
}

impl Selector {
    /// Compiles a selector. An empty selector matches everything (callers must check
    /// [`Selector::is_empty`] where upstream refuses empty selectors).
    pub fn compile(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let labels = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut exprs = Vec::new();
        for req in selector.match_expressions.iter().flatten() {
            let values = req.values.clone().unwrap_or_default();
            let bad = || SelectorError::BadValues {
                key: req.key.clone(),
                operator: req.operator.clone(),
            };
            let op = match req.operator.as_str() {
                "In" if !values.is_empty() => Op::In(values),
                "NotIn" if !values.is_empty() => Op::NotIn(values),
                "In" | "NotIn" => return Err(bad()),
                "Exists" if values.is_empty() => Op::Exists,
                "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
                "Exists" | "DoesNotExist" => return Err(bad()),
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: req.key.clone(),
                        operator: other.to_owned(),
                    });
                }
            };
            exprs.push((req.key.clone(), op));
        }
        Ok(Self { labels, exprs })
    }

    /// True when the selector has no requirement at all (it would select every object).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| strs::label(labels, k).is_some_and(|got| strs::eq(got, v)))
            && self
                .exprs
                .iter()
                .all(|(k, op)| op.matches(strs::label(labels, k).map(String::as_str)))
    }
}
