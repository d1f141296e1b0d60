//! The API calls the controller makes, by API group, resource and verb: exactly what its RBAC
//! must grant. Tests hold `deploy/rbac.yaml` to this table, and the table to the calls the
//! apiserver's audit log shows the deployed ServiceAccount making.

/// Calls on one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiCalls {
    /// API groups (`""` is the core group).
    pub groups: &'static [&'static str],
    /// Resource, with `/subresource` where one is called.
    pub resource: &'static str,
    /// Verbs, in RBAC's words (`list`, `watch`, `create`, ...).
    pub verbs: &'static [&'static str],
    /// What the calls are for.
    pub why: &'static str,
}

/// Both kinds of DaemonSet the controller can run (`--target`).
const SET_GROUPS: &[&str] = &["everynode.dev", "apps"];

/// Cluster-wide calls (the `everynode-controller` ClusterRole).
pub const CLUSTER_CALLS: &[ApiCalls] = &[
    ApiCalls {
        groups: SET_GROUPS,
        resource: "daemonsets",
        verbs: &["get", "list", "watch", "update"],
        why: "watch the sets; re-read one before adopting; update: the automatic rollback",
    },
    ApiCalls {
        groups: SET_GROUPS,
        resource: "daemonsets/status",
        verbs: &["patch"],
        why: "the status and collisionCount",
    },
    ApiCalls {
        groups: SET_GROUPS,
        resource: "daemonsets/finalizers",
        verbs: &["update"],
        why: "not a call: owner references with blockOwnerDeletion need it where \
              OwnerReferencesPermissionEnforcement admission is on",
    },
    ApiCalls {
        groups: &[""],
        resource: "pods",
        verbs: &["list", "watch", "create", "delete", "patch"],
        why: "daemon pods: create (and the dry run of a new template), delete, adopt, release, \
              relabel and update in place; pre-pull pods: create, delete",
    },
    ApiCalls {
        groups: &["apps"],
        resource: "controllerrevisions",
        verbs: &["list", "watch", "create", "patch", "delete"],
        why: "revision history: create, adopt, release, label, renumber, clean up",
    },
    ApiCalls {
        groups: &[""],
        resource: "nodes",
        verbs: &["list", "watch", "patch"],
        why: "placement; node readiness gates add and remove their taint",
    },
    ApiCalls {
        groups: &["events.k8s.io"],
        resource: "events",
        verbs: &["create", "patch"],
        why: "Events on the sets (patch: a repeated Event's series)",
    },
];

/// Calls in the controller's own namespace (the `everynode-leader-election` Role).
pub const LEADER_ELECTION_CALLS: &[ApiCalls] = &[ApiCalls {
    groups: &["coordination.k8s.io"],
    resource: "leases",
    verbs: &["get", "create", "patch"],
    why: "the leader Lease (--leader-elect)",
}];

/// Whether the table allows `verb` on `group`/`resource` (`resource` with `/subresource`).
pub fn allows(calls: &[ApiCalls], group: &str, resource: &str, verb: &str) -> bool {
    calls
        .iter()
        .any(|c| c.groups.contains(&group) && c.resource == resource && c.verbs.contains(&verb))
}
