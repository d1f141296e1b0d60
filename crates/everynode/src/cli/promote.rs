//! `everynode rollout promote SET [--full] [--step N|P%]`: release the next hold of a held
//! rollout — the pause, then the canary selector, then the partition a step at a time — or
//! all of them with `--full`.

use anyhow::bail;
use everynode_api::{FailurePolicy, RollingUpdateDaemonSet};
use everynode_core::SetView;
use everynode_core::budget::Scaled;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

use super::sets::{self, FoundSet, SetKind};

/// The partition step when `--step` is not given: a quarter of the desired nodes.
pub const DEFAULT_STEP: Scaled = Scaled::Percent(25);

/// Parses `--step`: a node count or a percentage of the desired nodes. For clap.
pub fn parse_step(text: &str) -> Result<Scaled, String> {
    let value = match text.parse::<i32>() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(text.to_owned()),
    };
    match Scaled::parse(&value, "--step") {
        Ok(Scaled::Count(0) | Scaled::Percent(0)) => Err("--step must be more than 0".to_owned()),
        Ok(step) => Ok(step),
        Err(err) => Err(err.to_string()),
    }
}

/// What a promotion writes and says.
#[derive(Clone, Debug, PartialEq)]
pub struct Promotion {
    /// A merge patch of the set's spec.
    pub patch: Value,
    /// What it releases, for the output line.
    pub released: Vec<String>,
}

/// The promotion of `set`: the first hold in the order pause, canary selector, partition
/// (lowered by `step` of the desired nodes), or every hold when `full`. An error says why there
/// is nothing to promote.
pub fn promotion(set: &SetView, full: bool, step: Scaled) -> Result<Promotion, String> {
    if set.spec.is_frozen() {
        return Err("is frozen (no pod changes at all): `everynode rollout unfreeze` first".into());
    }
    if let Some(failure) = failed(set) {
        return Err(format!(
            "cannot be promoted: its rollout of {} failed ({}: {}); change the template, or \
             `everynode rollout undo`",
            failure.revision, failure.reason, failure.message
        ));
    }
    let desired = set
        .status
        .as_ref()
        .map_or(0, |s| s.desired_number_scheduled);
    let rolling = set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let mut spec = Map::new();
    let mut rolling_patch = Map::new();
    let mut released = Vec::new();
    if set.spec.is_paused() {
        spec.insert("paused".into(), Value::Null);
        released.push("resumed (spec.paused cleared)".to_owned());
    }
    if (full || released.is_empty()) && rolling.selector.is_some() {
        rolling_patch.insert("selector".into(), Value::Null);
        released.push("canary selector removed".to_owned());
    }
    if (full || released.is_empty())
        && let Some((value, said)) = lowered_partition(&rolling, desired, full.then_some(0), step)
    {
        rolling_patch.insert("partition".into(), value);
        released.push(said);
    }
    if released.is_empty() {
        return Err(
            "has nothing to promote: its rollout is not held (no spec.paused, canary selector \
             or partition)"
                .into(),
        );
    }
    if !rolling_patch.is_empty() {
        spec.insert(
            "updateStrategy".into(),
            json!({"rollingUpdate": rolling_patch}),
        );
    }
    Ok(Promotion {
        patch: json!({ "spec": spec }),
        released,
    })
}

/// The failure that stops the update revision's rollout, if any.
fn failed(set: &SetView) -> Option<&everynode_api::RolloutFailure> {
    let status = set.status.as_ref()?;
    status
        .failure
        .as_ref()
        .filter(|f| status.update_revision.as_deref() == Some(f.revision.as_str()))
        .filter(|f| f.policy != FailurePolicy::Continue.as_str())
}

/// The partition lowered by `step` (or to `to`), and how to say it; `None` when it holds no
/// node. A percentage lowered by a percentage stays one.
fn lowered_partition(
    rolling: &RollingUpdateDaemonSet,
    desired: i32,
    to: Option<i32>,
    step: Scaled,
) -> Option<(Value, String)> {
    let current = rolling.partition.as_ref()?;
    let scaled = Scaled::parse(current, "partition").ok()?;
    let count = scaled.of(desired);
    if count == 0 {
        return None;
    }
    let (value, shown) = match (to, scaled, step) {
        (Some(to), ..) => (json!(to), to.to_string()),
        (None, Scaled::Percent(p), Scaled::Percent(s)) => {
            let lowered = format!("{}%", (p - s).max(0));
            (json!(lowered), lowered)
        }
        (None, ..) => {
            let lowered = (count - step.of(desired)).max(0);
            (json!(lowered), lowered.to_string())
        }
    };
    let before = match current {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    Some((
        value,
        format!("partition {before} -> {shown} ({count} of {desired} node(s) held before)"),
    ))
}

/// `rollout promote`: writes the promotion under the set's resourceVersion.
pub async fn promote(
    client: &kube::Client,
    set: &FoundSet,
    full: bool,
    step: Scaled,
) -> anyhow::Result<String> {
    if set.kind != SetKind::Everynode {
        bail!(
            "{} has no rollout holds to promote: partition, canary selector and pause are \
             everynode rollout controls (change its apiVersion to everynode.dev/v1alpha1)",
            set.display()
        );
    }
    let promotion = match promotion(&set.view, full, step) {
        Ok(p) => p,
        Err(why) => bail!("{} {why}", set.display()),
    };
    sets::patch_as_read(client, set, promotion.patch).await?;
    Ok(format!(
        "{} promoted: {}",
        set.display(),
        promotion.released.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(spec_extra: Value, desired: i32) -> SetView {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "c", "image": "agent:v1"}]}}
        });
        json_patch::merge(&mut spec, &spec_extra);
        let set: everynode_api::DaemonSet = serde_json::from_value(json!({
            "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ops", "uid": "u", "generation": 2},
            "spec": spec,
            "status": {"desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                       "numberMisscheduled": 0, "numberReady": desired}
        }))
        .unwrap();
        SetView::from_daemon_set(&set).unwrap()
    }

    fn rolling(fields: Value) -> Value {
        json!({"updateStrategy": {"rollingUpdate": fields}})
    }

    #[test]
    fn holds_are_released_one_at_a_time_pause_first() {
        let held = set(
            json!({"paused": true, "updateStrategy": {"rollingUpdate": {
                "selector": {"matchLabels": {"canary": "true"}}, "partition": "75%"}}}),
            8,
        );
        let first = promotion(&held, false, DEFAULT_STEP).unwrap();
        assert_eq!(first.patch, json!({"spec": {"paused": null}}));
        assert_eq!(first.released, ["resumed (spec.paused cleared)"]);

        let canary = set(
            rolling(json!({"selector": {"matchLabels": {"canary": "true"}}, "partition": "75%"})),
            8,
        );
        let second = promotion(&canary, false, DEFAULT_STEP).unwrap();
        assert_eq!(
            second.patch,
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"selector": null}}}})
        );
    }

    #[test]
    fn a_percent_partition_steps_down_by_a_quarter() {
        let promoted = promotion(
            &set(rolling(json!({"partition": "75%"})), 8),
            false,
            DEFAULT_STEP,
        )
        .unwrap();
        assert_eq!(
            promoted.patch,
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": "50%"}}}})
        );
        assert_eq!(
            promoted.released,
            ["partition 75% -> 50% (6 of 8 node(s) held before)"]
        );
    }

    #[test]
    fn a_count_partition_steps_down_by_the_step_and_stops_at_zero() {
        let held = set(rolling(json!({"partition": 6})), 10);
        let by_quarter = promotion(&held, false, DEFAULT_STEP).unwrap();
        // 25% of 10 nodes, rounded up: 3.
        assert_eq!(
            by_quarter.patch,
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 3}}}})
        );
        let by_ten = promotion(&held, false, Scaled::Count(10)).unwrap();
        assert_eq!(
            by_ten.patch,
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})
        );
    }

    #[test]
    fn full_releases_every_hold_at_once() {
        let held = set(
            json!({"paused": true, "updateStrategy": {"rollingUpdate": {
                "selector": {"matchLabels": {"canary": "true"}}, "partition": 5}}}),
            8,
        );
        let promoted = promotion(&held, true, DEFAULT_STEP).unwrap();
        assert_eq!(
            promoted.patch,
            json!({"spec": {"paused": null, "updateStrategy": {"rollingUpdate": {
                "selector": null, "partition": 0}}}})
        );
        assert_eq!(promoted.released.len(), 3);
    }

    #[test]
    fn nothing_held_frozen_or_failed_is_refused_with_the_reason() {
        let free = set(rolling(json!({"partition": 0})), 8);
        assert!(
            promotion(&free, false, DEFAULT_STEP)
                .unwrap_err()
                .contains("nothing to promote")
        );
        let frozen = set(json!({"frozen": true, "paused": true}), 8);
        assert!(
            promotion(&frozen, true, DEFAULT_STEP)
                .unwrap_err()
                .contains("rollout unfreeze")
        );
        let mut failed = set(rolling(json!({"partition": 4})), 8);
        let status = failed.status.get_or_insert_with(Default::default);
        status.update_revision = Some("agent-abc".into());
        status.failure = Some(everynode_api::RolloutFailure {
            revision: "agent-abc".into(),
            reason: "FailedNodesExceeded".into(),
            message: "3 node(s) failed".into(),
            policy: "Pause".into(),
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                everynode_core::Timestamp::UNIX_EPOCH,
            ),
            failed_nodes: Vec::new(),
        });
        assert!(
            promotion(&failed, false, DEFAULT_STEP)
                .unwrap_err()
                .contains("FailedNodesExceeded")
        );
    }

    #[test]
    fn a_step_is_a_positive_count_or_percentage() {
        assert_eq!(parse_step("2"), Ok(Scaled::Count(2)));
        assert_eq!(parse_step("10%"), Ok(Scaled::Percent(10)));
        assert!(parse_step("0").is_err());
        assert!(parse_step("-1").is_err());
        assert!(parse_step("half").is_err());
    }
}
