//! Label, annotation and field names shared by the controller, the CLI and the tests.

/// Pod and ControllerRevision label carrying the revision hash (shared with apps/v1).
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// Legacy pod label carrying the set's template generation (apps/v1 only).
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// apps/v1 annotation in which the apiserver keeps a DaemonSet's template generation.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// Annotation that `kubectl rollout history` shows as the change cause of a revision.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// Field manager used by the controller for its writes.
pub const CONTROLLER_FIELD_MANAGER: &str = "everynode";

/// Node field that daemon pods are pinned to through required node affinity.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// Annotation on a pod updated in place: JSON object of container name → the image its status
/// reported before the patch. The pod counts as unavailable until every listed container
/// reports another image (and the pod is Ready).
pub const IN_PLACE_UPDATE_ANNOTATION: &str = "everynode.dev/in-place-update";

/// Label of a pre-pull pod (`rollingUpdate.prePull`): the UID of the set it pulls for. Not a
/// label a set selects on: the set never adopts such a pod.
pub const PRE_PULL_OF_LABEL: &str = "everynode.dev/pre-pull-of";

/// Label of a pre-pull pod: the revision hash whose images it pulls (its node's hash).
pub const PRE_PULL_HASH_LABEL: &str = "everynode.dev/pre-pull-hash";

/// Annotation on a daemon pod created on a node that pulled its images ahead: the pre-pull
/// pod's name.
pub const PRE_PULLED_ANNOTATION: &str = "everynode.dev/pre-pulled";
