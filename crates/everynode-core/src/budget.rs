//! Rolling-update budgets: `maxUnavailable` / `maxSurge` as an int or a percentage, scaled
//! against the number of desired nodes with rounding up (§1.3, §6.0).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

use everynode_api::{DaemonSetUpdateStrategy, UpdateStrategyType};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A budget value that cannot be interpreted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The string form is not `"<n>%"`.
    #[error("invalid value {value:?} for {field}: must be an integer or a percentage like \"25%\"")]
    InvalidPercent {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// Negative value.
    #[error("invalid value {value} for {field}: must not be negative")]
    Negative {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: i64,
    },
}

/// Scales an int-or-percent against `total`, rounding percentages up (upstream
/// `GetScaledValueFromIntOrPercent(.., roundUp=true)`).
pub fn scaled_value(
    value: &IntOrString,
    total: i32,
    field: &'static str,
) -> Result<i32, BudgetError> {
    Ok(Scaled::parse(value, field)?.of(total))
}

/// A validated int-or-percent, scaled later against a total not known when it is parsed
/// (a topology domain's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaled {
    /// An absolute count.
    Count(i32),
    /// A percentage of the total, rounded up.
    Percent(i64),
}

impl Scaled {
    /// Parses `value` of `field`: a non-negative integer or a percentage like `"25%"`.
    pub fn parse(value: &IntOrString, field: &'static str) -> Result<Self, BudgetError> {
        let (parsed, scaled) = match value {
            IntOrString::Int(n) => (i64::from(*n), Self::Count(*n)),
            IntOrString::String(s) => {
                let p = s
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<i64>().ok())
                    .ok_or_else(|| BudgetError::InvalidPercent {
                        field,
                        value: s.clone(),
                    })?;
                (p, Self::Percent(p))
            }
        };
        if parsed < 0 {
            return Err(BudgetError::Negative {
                field,
                value: parsed,
            });
        }
        Ok(scaled)
    }

    /// The value against `total`.
    pub fn of(self, total: i32) -> i32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) => {
                let scaled = (p * i64::from(total.max(0)) + 99) / 100;
                i32::try_from(scaled).unwrap_or(i32::MAX)
            }
        }
    }
}

/// The effective budget of a rolling update for a given number of desired nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Scaled `maxSurge`.
    pub max_surge: i32,
    /// Scaled `maxUnavailable` (forced to 1 when both are 0 and nodes are desired, as upstream).
    pub max_unavailable: i32,
    /// Number of nodes that should run the pod.
    pub desired: i32,
}

fn rolling(strategy: &DaemonSetUpdateStrategy) -> Option<&everynode_api::RollingUpdateDaemonSet> {
    if strategy.strategy_type() != Some(UpdateStrategyType::RollingUpdate) {
        return None;
    }
    strategy.rolling_update.as_ref()
}

/// `SurgeCount`: 0 unless RollingUpdate with a `maxSurge`; else scaled against `n`.
pub fn surge_count(strategy: &DaemonSetUpdateStrategy, n: i32) -> Result<i32, BudgetError> {
    match rolling(strategy).and_then(|r| r.max_surge.as_ref()) {
        Some(v) => scaled_value(v, n, "spec.updateStrategy.rollingUpdate.maxSurge"),
        None => Ok(0),
    }
}

/// `UnavailableCount`: 0 unless RollingUpdate with a `maxUnavailable`; else scaled against `n`.
pub fn unavailable_count(strategy: &DaemonSetUpdateStrategy, n: i32) -> Result<i32, BudgetError> {
    match rolling(strategy).and_then(|r| r.max_unavailable.as_ref()) {
        Some(v) => scaled_value(v, n, "spec.updateStrategy.rollingUpdate.maxUnavailable"),
        None => Ok(0),
    }
}

/// `AllowsSurge`: any non-zero surge (int or percent). Errors count as no surge, as upstream.
pub fn allows_surge(strategy: &DaemonSetUpdateStrategy) -> bool {
    surge_count(strategy, 1).is_ok_and(|n| n > 0)
}

/// `updatedDesiredNodeCounts` without the map side effect: the budget for `desired` nodes.
pub fn budget(strategy: &DaemonSetUpdateStrategy, desired: i32) -> Result<Budget, BudgetError> {
    let mut max_unavailable = unavailable_count(strategy, desired)?;
    let max_surge = surge_count(strategy, desired)?;
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }
    Ok(Budget {
        max_surge,
        max_unavailable,
        desired,
    })
}
