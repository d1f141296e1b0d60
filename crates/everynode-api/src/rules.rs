//! The CEL rules of the CRD. Each message names the field and says how to fix it.

use kube::core::{Reason, Rule};

/// True when an int-or-string value holds a string (an int never equals its decimal string).
const IS_STRING: &str = "string(self) == self";
/// A percentage from 0% to 100%.
const PERCENT: &str = "^0*(100|[1-9]?[0-9])%$";
const LABELS: &str = "self.template.metadata.labels";
const HAS_LABELS: &str = "(has(self.template.metadata) && has(self.template.metadata.labels))";

fn invalid(rule: String, field_path: &str, message: &str) -> Rule {
    Rule::new(rule)
        .message(message)
        .field_path(field_path.to_owned())
        .reason(Reason::FieldValueInvalid)
}

/// `metadata.name` must be a DNS-1123 subdomain (pods are named after it).
pub fn name_is_dns_subdomain() -> Rule {
    Rule::new(
        "size(self.metadata.name) <= 253 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
    )
    .message(
        "metadata.name must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', \
         at most 253 characters), because pods are named after it",
    )
}

/// The selector must select something.
pub fn selector_not_empty() -> Rule {
    invalid(
        "(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || \
         (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)"
            .to_owned(),
        ".selector",
        "spec.selector is empty, which would select every pod in the namespace; set \
         spec.selector.matchLabels to labels that spec.template.metadata.labels carries",
    )
}

/// The pods the template describes must be selected by the selector.
pub fn selector_matches_template() -> Rule {
    let match_labels = format!(
        "(!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, {HAS_LABELS} \
         && k in {LABELS} && {LABELS}[k] == self.selector.matchLabels[k]))"
    );
    let match_expressions = format!(
        "(!has(self.selector.matchExpressions) || self.selector.matchExpressions.all(r, \
         r.operator == 'In' ? ({HAS_LABELS} && r.key in {LABELS} && has(r.values) && {LABELS}[r.key] in r.values) : \
         r.operator == 'NotIn' ? (!{HAS_LABELS} || !(r.key in {LABELS}) || !has(r.values) || !({LABELS}[r.key] in r.values)) : \
         r.operator == 'Exists' ? ({HAS_LABELS} && r.key in {LABELS}) : \
         r.operator == 'DoesNotExist' ? (!{HAS_LABELS} || !(r.key in {LABELS})) : true))"
    );
    invalid(
        format!("{match_labels} && {match_expressions}"),
        ".template.metadata.labels",
        "spec.selector does not match spec.template.metadata.labels, so the set would not \
         select its own pods; make every spec.selector.matchLabels entry and matchExpressions \
         requirement hold for the template's labels",
    )
}

/// Selector requirements use a known operator with the right number of values.
pub fn selector_requirements_valid() -> Rule {
    invalid(
        "!has(self.selector.matchExpressions) || self.selector.matchExpressions.all(r, \
         r.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && \
         ((r.operator == 'In' || r.operator == 'NotIn') == (has(r.values) && size(r.values) > 0)))"
            .to_owned(),
        ".selector.matchExpressions",
        "spec.selector.matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; \
         In and NotIn need at least one value, Exists and DoesNotExist take none",
    )
}

/// The selector cannot change after creation.
pub fn selector_immutable() -> Rule {
    Rule::new("self == oldSelf")
        .message(
            "spec.selector is immutable; to change it, delete the set with \
             --cascade=orphan and create it again (matching pods are adopted)",
        )
        .reason(Reason::FieldValueForbidden)
}

/// A pod template needs a pod spec with at least one container.
pub fn template_has_spec() -> Rule {
    Rule::new("has(self.template.spec) && size(self.template.spec.containers) > 0")
        .message(
            "spec.template.spec.containers: Required value: the pod template needs at least \
             one container",
        )
        .field_path(".template.spec")
        .reason(Reason::FieldValueRequired)
}

/// Daemon pods always restart.
pub fn restart_policy_always() -> Rule {
    Rule::new(
        "!has(self.template.spec) || !has(self.template.spec.restartPolicy) || \
         self.template.spec.restartPolicy == 'Always'",
    )
    .message(
        "spec.template.spec.restartPolicy: Unsupported value: a DaemonSet's pods must restart \
         Always (the only supported value); remove the field or set it to Always",
    )
    .field_path(".template.spec.restartPolicy")
    .reason(Reason::FieldValueInvalid)
}

/// Daemon pods run until their node leaves, so they may not have a deadline.
pub fn no_active_deadline() -> Rule {
    Rule::new("!has(self.template.spec) || !has(self.template.spec.activeDeadlineSeconds)")
        .message(
            "spec.template.spec.activeDeadlineSeconds: Forbidden: a daemon pod runs until its \
         node leaves; remove activeDeadlineSeconds",
        )
        .field_path(".template.spec.activeDeadlineSeconds")
        .reason(Reason::FieldValueForbidden)
}

/// Every container names an image.
pub fn containers_have_images() -> Rule {
    Rule::new(
        "!has(self.template.spec) || self.template.spec.containers.all(c, has(c.image) && size(c.image) > 0)",
    )
    .message(
        "spec.template.spec.containers[].image: Required value: every container needs an \
         image",
    )
    .field_path(".template.spec.containers")
    .reason(Reason::FieldValueRequired)
}

/// The strategy type is one apps/v1 knows.
pub fn strategy_type_known() -> Rule {
    Rule::new("self == 'RollingUpdate' || self == 'OnDelete'")
        .message(
            "spec.updateStrategy.type: Unsupported value: use RollingUpdate (replace pods \
             automatically) or OnDelete (replace a pod when it is deleted)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// A non-negative integer or a percentage between 0% and 100%.
pub fn int_or_percent(field: &str) -> Rule {
    Rule::new(format!(
        "{IS_STRING} ? self.matches('{PERCENT}') : string(self).matches('^[0-9]+$')"
    ))
    .message(
        format!(
            "{field}: must be a non-negative integer or a percentage from 0% to 100%, such as \
             1 or \"25%\""
        )
        .as_str(),
    )
}

fn is_zero(field: &str) -> String {
    format!("string(self.rollingUpdate.{field}).matches('^0+%?$')")
}

fn rolling_update_with(condition: &str) -> String {
    format!(
        "!has(self.type) || self.type != 'RollingUpdate' || !has(self.rollingUpdate) || \
         !has(self.rollingUpdate.maxUnavailable) || !has(self.rollingUpdate.maxSurge) || \
         !({condition})"
    )
}

/// apps/v1: both budgets zero would make no progress.
pub fn budget_not_both_zero() -> Rule {
    let rule = rolling_update_with(&format!(
        "{} && {}",
        is_zero("maxUnavailable"),
        is_zero("maxSurge")
    ));
    invalid(
        rule,
        ".rollingUpdate.maxUnavailable",
        "spec.updateStrategy.rollingUpdate.maxUnavailable: cannot be 0 when maxSurge is 0, \
         the rollout could never proceed; set maxUnavailable (e.g. 1), or maxSurge with \
         maxUnavailable: 0",
    )
}

/// The canary node selector uses known operators with the right number of values.
pub fn node_selector_valid() -> Rule {
    selector_expressions_valid("spec.updateStrategy.rollingUpdate.selector")
}

/// An override's node selector uses known operators with the right number of values.
pub fn override_selector_valid() -> Rule {
    selector_expressions_valid("spec.nodeOverrides[].nodeSelector")
}

/// The label selector at `field` uses known operators with the right number of values.
fn selector_expressions_valid(field: &str) -> Rule {
    invalid(
        "!has(self.matchExpressions) || self.matchExpressions.all(r, \
         r.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && \
         ((r.operator == 'In' || r.operator == 'NotIn') == (has(r.values) && size(r.values) > 0)))"
            .to_owned(),
        ".matchExpressions",
        &format!(
            "{field}.matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In \
             and NotIn need at least one value, Exists and DoesNotExist take none"
        ),
    )
}

/// `newNodePolicy` is `Latest` or `Stable`.
pub fn new_node_policy_known() -> Rule {
    Rule::new("self == 'Latest' || self == 'Stable'")
        .message(
            "spec.updateStrategy.rollingUpdate.newNodePolicy: Unsupported value: use Latest \
             (a joining node gets the newest revision) or Stable (it gets the last revision \
             that was available everywhere)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// `failurePolicy`: Pause, Rollback, Abort or Continue.
pub fn failure_policy_known() -> Rule {
    Rule::new("self in ['Pause', 'Rollback', 'Abort', 'Continue']")
        .message(
            "spec.updateStrategy.rollingUpdate.failurePolicy: Unsupported value: use Pause \
             (stop updating nodes), Rollback (put the stable revision's template back), Abort \
             (take the pods back to the stable revision, keep the template) or Continue \
             (report only)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// `nodeReadiness.enforce`: Bootstrap or Continuous.
pub fn gate_enforce_known() -> Rule {
    Rule::new("self == 'Bootstrap' || self == 'Continuous'")
        .message(
            "spec.nodeReadiness.enforce: Unsupported value: use Bootstrap (remove the taint once) \
             or Continuous (put it back when the pod is unavailable for graceSeconds)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// `nodeReadiness.taint.effect`: NoSchedule or NoExecute.
pub fn gate_effect_known() -> Rule {
    Rule::new("self == 'NoSchedule' || self == 'NoExecute'")
        .message(
            "spec.nodeReadiness.taint.effect: Unsupported value: use NoSchedule or NoExecute (a \
             PreferNoSchedule taint keeps no workload off)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// `nodeReadiness.taint.key`: a qualified name, as a taint key must be.
pub fn taint_key_valid() -> Rule {
    Rule::new(
        "size(self) <= 316 && self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",
    )
    .message(
        "spec.nodeReadiness.taint.key: must be a qualified name such as \
         example.com/agents-not-ready (an optional DNS prefix and '/', then letters, digits, \
         '-', '_' and '.')",
    )
    .reason(Reason::FieldValueInvalid)
}

/// `unavailableNodePolicy`: Count or Skip.
pub fn unavailable_node_policy_known() -> Rule {
    Rule::new("self == 'Count' || self == 'Skip'")
        .message(
            "spec.updateStrategy.rollingUpdate.unavailableNodePolicy: Unsupported value: use \
             Count (NotReady nodes use the maxUnavailable budget, as apps/v1) or Skip (they \
             are left alone and revisited when they are back)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// `order`: a known type, with `label` exactly when ordering by a label, and `values`
/// exactly for `LabelValues`.
pub fn order_fields_match_type() -> Rule {
    let by_label = "(has(self.type) && (self.type == 'LabelValues' || self.type == 'Priority'))";
    invalid(
        format!(
            "(!has(self.type) || self.type in ['Name', 'LabelValues', 'Priority']) && \
             ({by_label} == (has(self.label) && size(self.label) > 0)) && \
             ((has(self.type) && self.type == 'LabelValues') == (has(self.values) && size(self.values) > 0))"
        ),
        ".type",
        "spec.updateStrategy.rollingUpdate.order: type must be Name (by node name, the \
         default), LabelValues (set label and values: the label's values in update order) or \
         Priority (set label: a node label holding an integer, highest first); label and \
         values are only allowed with the types that use them",
    )
}

/// A counter or setting that cannot be negative.
pub fn non_negative(field: &str) -> Rule {
    Rule::new("self >= 0").message(format!("{field}: must be greater than or equal to 0").as_str())
}

/// `rollingUpdateType` is `Recreate` or `InPlaceIfPossible`.
pub fn rolling_update_type_known() -> Rule {
    Rule::new("self == 'Recreate' || self == 'InPlaceIfPossible'")
        .message(
            "spec.updateStrategy.rollingUpdate.rollingUpdateType: Unsupported value: use \
             Recreate (delete the old pod, create a new one) or InPlaceIfPossible (patch the \
             images of the running pod when only images changed)",
        )
        .reason(Reason::FieldValueInvalid)
}

/// In-place updates keep the pod, so there is no old pod to surge next to.
pub fn in_place_without_surge() -> Rule {
    invalid(
        "!has(self.rollingUpdateType) || self.rollingUpdateType != 'InPlaceIfPossible' || \
         !has(self.maxSurge) || string(self.maxSurge).matches('^0+%?$')"
            .to_owned(),
        ".maxSurge",
        "spec.updateStrategy.rollingUpdate.maxSurge: Forbidden: an in-place update keeps the \
         pod, so there is no old pod to start a new one next to; set maxSurge: 0 (and use \
         maxUnavailable), or rollingUpdateType: Recreate",
    )
}

/// A positive integer setting.
pub fn positive(field: &str) -> Rule {
    Rule::new("self > 0").message(format!("{field}: must be greater than 0").as_str())
}

/// The per-domain fields only mean something with `topologyKey`.
pub fn domain_fields_need_topology_key() -> Rule {
    invalid(
        "(has(self.topologyKey) && size(self.topologyKey) > 0) || \
         (!has(self.maxUnavailablePerDomain) && !has(self.bakeSeconds))"
            .to_owned(),
        ".topologyKey",
        "spec.updateStrategy.rollingUpdate.topologyKey: Required value: \
         maxUnavailablePerDomain and bakeSeconds apply to topology domains; set topologyKey \
         (e.g. topology.kubernetes.io/zone) or remove them",
    )
}

/// `status.collisionCount` only ever grows.
pub fn collision_count_never_decreases() -> Rule {
    invalid(
        "!has(oldSelf.collisionCount) || (has(self.collisionCount) && \
         self.collisionCount >= oldSelf.collisionCount)"
            .to_owned(),
        ".collisionCount",
        "status.collisionCount may not decrease (or be removed); it is part of the revision hash",
    )
}
