//! The rollout's conditions: paused, frozen, progressing, failed, available and the kstatus
//! trio (Ready, Reconciling, Stalled).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type: `spec.paused` is in effect.
pub const ROLLOUT_PAUSED_CONDITION: &str = "RolloutPaused";
/// Condition type: `spec.frozen` is in effect.
pub const ROLLOUT_FROZEN_CONDITION: &str = "RolloutFrozen";
/// Condition type: where the rollout stands.
pub const PROGRESSING_CONDITION: &str = "Progressing";
/// Condition type: the update revision's rollout failed (rollout safety).
pub const ROLLOUT_FAILED_CONDITION: &str = "RolloutFailed";
/// Condition type: no more nodes are without an available pod than `maxUnavailable` allows.
pub const AVAILABLE_CONDITION: &str = "Available";
/// Condition type (kstatus, `kubectl wait --for=condition=Ready`): the rollout is complete —
/// every desired node runs an available pod of the update revision, within `maxUnavailable` —
/// and the set is not frozen. Always present, `True` or `False`.
pub const READY_CONDITION: &str = "Ready";
/// Condition type (kstatus): the rollout is under way — not complete, and not failed, paused,
/// frozen, held or refused by the apiserver.
///
/// `Reconciling` and `Stalled` follow kstatus's "abnormal-true" convention: kstatus (cli-utils,
/// kpt, Flux) reads an absent condition as `False`, and Flux removes its own once they turn
/// false. So both are present only while `True` and removed after, not kept as `False`: a
/// settled set carries neither, and the status stays small.
pub const RECONCILING_CONDITION: &str = "Reconciling";
/// Condition type (kstatus): the rollout cannot go on without a change — it failed (rollout
/// safety) or the apiserver refuses the template — and is not complete. Present only while
/// `True` (see [`RECONCILING_CONDITION`]).
pub const STALLED_CONDITION: &str = "Stalled";

/// What the rollout conditions are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutFacts<'a> {
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.frozen`.
    pub frozen: bool,
    /// Every desired node runs an available pod of the update revision.
    pub complete: bool,
    /// The rollout went as far as the controls allow: only held nodes are left.
    pub held: bool,
    /// Desired nodes.
    pub desired: i32,
    /// Desired nodes on the update revision.
    pub updated: i32,
    /// Update revision name.
    pub update_revision: &'a str,
    /// The topology wave in progress.
    pub wave: Option<&'a everynode_api::RolloutWave>,
    /// The failure of the update revision.
    pub failure: Option<&'a everynode_api::RolloutFailure>,
    /// The last automatic rollback.
    pub rollback: Option<&'a everynode_api::RolloutRollback>,
    /// The set's template is of this revision, aborted (`spec.abort` or `failurePolicy:
    /// Abort`): the update revision is the stable one.
    pub aborted: Option<&'a str>,
    /// Nodes skipped by `unavailableNodePolicy: Skip`.
    pub skipped: usize,
    /// The apiserver refuses pods of the update revision's template.
    pub template_rejected: bool,
    /// Desired nodes without an available pod.
    pub unavailable: i32,
    /// The scaled `maxUnavailable` (0 for OnDelete).
    pub max_unavailable: i32,
}

/// The set's conditions with `RolloutPaused`, `RolloutFrozen` (present once set, `False` after),
/// `Available`, `Progressing` (`Unknown` while paused or frozen, as a paused Deployment; `False`
/// once the rollout failed), `RolloutFailed` (present once a rollout failed, `False` after), and
/// kstatus's `Ready`, `Reconciling` and `Stalled` (the last two only while `True`); `None` when
/// the stored list already says so. Every condition written carries `generation`: one that
/// only lags the generation is written again, as `kubectl wait --for=condition=…` ignores a
/// condition older than the set's generation. `lastTransitionTime` moves only when a status
/// flips.
pub fn rollout_conditions<'a>(
    previous: Option<&[Condition]>,
    facts: &RolloutFacts<'a>,
    now: Timestamp,
    generation: Option<i64>,
) -> Option<Vec<Condition>> {
    let previous = previous.unwrap_or_default();
    let progress = progress_text(facts);
    let stage = Stage::of(facts);
    let available = facts.unavailable <= facts.max_unavailable.max(0);
    let mut wanted = control_conditions(facts, previous);
    wanted.push(available_condition(facts, available));
    wanted.extend(failed_condition(facts, previous));
    wanted.push(Wanted {
        type_: PROGRESSING_CONDITION,
        status: stage.progressing(),
        reason: stage.reason(),
        message: stage.message(&progress),
    });
    wanted.push(ready_condition(facts, stage, &progress, available));
    let mut absent = Vec::new();
    for (type_, condition) in [
        (
            RECONCILING_CONDITION,
            reconciling_condition(stage, &progress),
        ),
        (STALLED_CONDITION, stalled_condition(facts, &progress)),
    ] {
        match condition {
            Some(condition) => wanted.push(condition),
            None => absent.push(type_),
        }
    }
    merge_conditions(previous, wanted, &absent, now, generation)
}

/// A condition as [`rollout_conditions`] wants it.
struct Wanted<'a> {
    type_: &'static str,
    status: &'static str,
    reason: &'a str,
    message: String,
}

/// Where the rollout stands, checked in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage<'a> {
    /// `spec.frozen`.
    Frozen,
    /// Aborted: the set goes back to its stable revision, complete or not.
    Aborted(&'a str),
    /// The update revision's rollout failed and is not complete.
    Failed(&'a everynode_api::RolloutFailure),
    /// The apiserver refuses the template and the rollout is not complete.
    TemplateRejected,
    /// Every desired node runs an available pod of the update revision.
    Complete,
    /// `spec.paused`, with work left.
    Paused,
    /// Only nodes that the partition or the rollout's node selector hold are left.
    Held,
    /// Otherwise: the rollout is under way.
    RollingOut,
}

impl<'a> Stage<'a> {
    fn of(facts: &RolloutFacts<'a>) -> Self {
        if facts.frozen {
            Self::Frozen
        } else if let Some(stalled) = Self::stalled(facts) {
            stalled
        } else if facts.complete {
            Self::Complete
        } else if facts.paused {
            Self::Paused
        } else if facts.held {
            Self::Held
        } else {
            Self::RollingOut
        }
    }

    /// What stops the rollout of the template until something changes (frozen or not): an
    /// abort, or a failure or refused template of an incomplete rollout.
    fn stalled(facts: &RolloutFacts<'a>) -> Option<Self> {
        if let Some(revision) = facts.aborted {
            Some(Self::Aborted(revision))
        } else if facts.complete {
            None
        } else if let Some(failure) = facts.failure {
            Some(Self::Failed(failure))
        } else {
            facts.template_rejected.then_some(Self::TemplateRejected)
        }
    }

    /// The reason of `Progressing` (and of `Ready` when it is not `True`).
    fn reason(self) -> &'a str {
        match self {
            Self::Frozen => "RolloutFrozen",
            Self::Aborted(_) => "RolloutAborted",
            Self::Failed(failure) => failure.reason.as_str(),
            Self::TemplateRejected => "TemplateRejected",
            Self::Complete => "RolloutComplete",
            Self::Paused => "RolloutPaused",
            Self::Held => "RolloutHeld",
            Self::RollingOut => "RollingOut",
        }
    }

    /// The status of `Progressing`: `Unknown` while paused or frozen (as a paused Deployment),
    /// `False` once stalled.
    fn progressing(self) -> &'static str {
        match self {
            Self::Frozen | Self::Paused => "Unknown",
            Self::Aborted(_) | Self::Failed(_) | Self::TemplateRejected => "False",
            Self::Complete | Self::Held | Self::RollingOut => "True",
        }
    }

    /// The progress text with this stage's prefix or suffix.
    fn message(self, progress: &str) -> String {
        match self {
            Self::Frozen => format!("set frozen; {progress}"),
            Self::Aborted(revision) => format!(
                "rollout of {revision} aborted, pods go back to the stable revision \
                 (`everynode rollout retry` resumes it, a new template replaces it); {progress}"
            ),
            Self::Failed(failure) => format!("{}; {progress}", failure.message),
            Self::TemplateRejected => format!(
                "the apiserver refuses pods of the template (see TemplateValid); {progress}"
            ),
            Self::Complete => format!("{progress}, all available"),
            Self::Paused => format!("rollout paused; {progress}"),
            Self::Held => format!("{progress}; partition or node selector hold the rest"),
            Self::RollingOut => progress.to_owned(),
        }
    }
}

/// `U of N node(s) run revision X`, with the wave and the skipped nodes.
fn progress_text(facts: &RolloutFacts<'_>) -> String {
    let mut progress = format!(
        "{} of {} node(s) run revision {}",
        facts.updated, facts.desired, facts.update_revision
    );
    if let Some(w) = facts.wave {
        progress.push_str(&format!(
            "; wave {}/{}: domain {:?}",
            w.index, w.domains, w.domain
        ));
        if w.baked_at.is_some() {
            progress.push_str(" done, baking");
        }
    }
    if facts.skipped > 0 {
        progress.push_str(&format!(
            "; {} node(s) down and skipped (unavailableNodePolicy: Skip)",
            facts.skipped
        ));
    }
    progress
}

/// `RolloutPaused` and `RolloutFrozen`: `True` while the field is set, `False` once it was.
fn control_conditions<'a>(facts: &RolloutFacts<'_>, previous: &[Condition]) -> Vec<Wanted<'a>> {
    let mut wanted = Vec::new();
    for (type_, on, field, set, cleared) in [
        (
            ROLLOUT_PAUSED_CONDITION,
            facts.paused,
            "paused",
            "Paused",
            "Resumed",
        ),
        (
            ROLLOUT_FROZEN_CONDITION,
            facts.frozen,
            "frozen",
            "Frozen",
            "Unfrozen",
        ),
    ] {
        if on {
            wanted.push(Wanted {
                type_,
                status: "True",
                reason: set,
                message: format!("spec.{field} is set"),
            });
        } else if previous.iter().any(|c| c.type_ == type_) {
            wanted.push(Wanted {
                type_,
                status: "False",
                reason: cleared,
                message: format!("spec.{field} is not set"),
            });
        }
    }
    wanted
}

/// `Available`: no more desired nodes without an available pod than `maxUnavailable`.
fn available_condition<'a>(facts: &RolloutFacts<'_>, available: bool) -> Wanted<'a> {
    let (status, reason, within) = if available {
        ("True", "MinimumNodesAvailable", "within")
    } else {
        ("False", "TooManyNodesUnavailable", "more than")
    };
    Wanted {
        type_: AVAILABLE_CONDITION,
        status,
        reason,
        message: format!(
            "{} node(s) without an available pod, {within} maxUnavailable ({})",
            facts.unavailable, facts.max_unavailable
        ),
    }
}

/// `RolloutFailed`: `True` with the failure, `False` once a failed rollout is over.
fn failed_condition<'a>(facts: &RolloutFacts<'a>, previous: &[Condition]) -> Option<Wanted<'a>> {
    if let Some(failure) = facts.failure {
        let action = match everynode_api::FailurePolicy::parse(Some(&failure.policy)) {
            Some(everynode_api::FailurePolicy::Rollback) => "rolling back to the stable revision",
            Some(everynode_api::FailurePolicy::Abort) => {
                "aborted: the pods go back to the stable revision, the template stays \
                 (`everynode rollout retry` takes it up again)"
            }
            Some(everynode_api::FailurePolicy::Continue) => "continuing (failurePolicy Continue)",
            Some(everynode_api::FailurePolicy::Pause) | None => {
                "paused: `everynode rollout retry` (after a fix outside the template), a new \
                 template, `everynode rollout undo` or `everynode rollout abort` to go on"
            }
        };
        return Some(Wanted {
            type_: ROLLOUT_FAILED_CONDITION,
            status: "True",
            reason: failure.reason.as_str(),
            message: format!(
                "revision {}: {}; {action}",
                failure.revision, failure.message
            ),
        });
    }
    if !previous.iter().any(|c| c.type_ == ROLLOUT_FAILED_CONDITION) {
        return None;
    }
    let (reason, message) = match facts.rollback {
        Some(r) => (
            "RolledBack",
            format!(
                "rolled back from {} to {} ({})",
                r.rolled_back_from, r.rollback_of, r.reason
            ),
        ),
        None => (
            "NewRevision",
            format!("revision {} has not failed", facts.update_revision),
        ),
    };
    Some(Wanted {
        type_: ROLLOUT_FAILED_CONDITION,
        status: "False",
        reason,
        message,
    })
}

/// `Ready`: `True` once the rollout is complete with `Available` true; otherwise `False` with
/// the stage's reason (or `TooManyNodesUnavailable` when nothing else holds the rollout).
fn ready_condition<'a>(
    facts: &RolloutFacts<'_>,
    stage: Stage<'a>,
    progress: &str,
    available: bool,
) -> Wanted<'a> {
    let (status, reason, message) = match stage {
        Stage::Complete if available => ("True", stage.reason(), stage.message(progress)),
        Stage::Complete | Stage::Held | Stage::RollingOut if !available => (
            "False",
            "TooManyNodesUnavailable",
            format!(
                "{} node(s) without an available pod, more than maxUnavailable ({}); {progress}",
                facts.unavailable, facts.max_unavailable
            ),
        ),
        _ => ("False", stage.reason(), stage.message(progress)),
    };
    Wanted {
        type_: READY_CONDITION,
        status,
        reason,
        message,
    }
}

/// `Reconciling=True` while the rollout is under way; `None` (absent) otherwise.
fn reconciling_condition<'a>(stage: Stage<'a>, progress: &str) -> Option<Wanted<'a>> {
    (stage == Stage::RollingOut).then(|| Wanted {
        type_: RECONCILING_CONDITION,
        status: "True",
        reason: stage.reason(),
        message: stage.message(progress),
    })
}

/// `Stalled=True` while an abort, a failure or a refused template stops the rollout; `None`
/// (absent) otherwise.
fn stalled_condition<'a>(facts: &RolloutFacts<'a>, progress: &str) -> Option<Wanted<'a>> {
    Stage::stalled(facts).map(|stalled| Wanted {
        type_: STALLED_CONDITION,
        status: "True",
        reason: stalled.reason(),
        message: stalled.message(progress),
    })
}

/// `previous` with `wanted` written in (a condition whose status, reason, message and
/// observedGeneration already match is left as it is) and the `absent` types removed, sorted by
/// type; `None` when nothing changed.
fn merge_conditions(
    previous: &[Condition],
    wanted: Vec<Wanted<'_>>,
    absent: &[&str],
    now: Timestamp,
    generation: Option<i64>,
) -> Option<Vec<Condition>> {
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| !absent.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let mut changed = conditions.len() != previous.len();
    for want in wanted {
        let before = previous.iter().find(|c| c.type_ == want.type_);
        if before.is_some_and(|c| {
            c.status == want.status
                && c.reason == want.reason
                && c.message == want.message
                && c.observed_generation == generation
        }) {
            continue;
        }
        changed = true;
        let last_transition_time = before
            .filter(|c| c.status == want.status)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        conditions.retain(|c| c.type_ != want.type_);
        conditions.push(Condition {
            type_: want.type_.to_owned(),
            status: want.status.to_owned(),
            reason: want.reason.to_owned(),
            message: want.message,
            last_transition_time,
            observed_generation: generation,
        });
    }
    if !changed {
        return None;
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    Some(conditions)
}
