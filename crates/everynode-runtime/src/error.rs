//! Errors of a reconcile, classified for metrics and retry policy.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the apiserver failed.
    #[error("{action}: {source}")]
    Api {
        /// What the controller was doing, e.g. `creating pod web-x`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The set cannot be planned (missing metadata, or a built-in set that does not fit the
    /// everynode API).
    #[error("DaemonSet {set} cannot be planned: {source}")]
    Snapshot {
        /// `namespace/name`.
        set: String,
        /// What is missing.
        #[source]
        source: everynode_core::SnapshotError,
    },
    /// A set's status cannot be encoded for a status write.
    #[error("DaemonSet {set}: its {field} cannot be encoded: {source}")]
    Convert {
        /// `namespace/name`.
        set: String,
        /// `spec` or `status`.
        field: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A node's taint list cannot be encoded for a patch (node readiness gates).
    #[error("node {node}: its taints cannot be encoded: {source}")]
    Taints {
        /// The node.
        node: String,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Adoption was refused: the set changed or is being deleted (upstream's uncached re-check).
    #[error("DaemonSet {set} changed or is being deleted; not adopting its orphans this time")]
    AdoptionRecheckFailed {
        /// `namespace/name`.
        set: String,
    },
}

impl Error {
    /// Builds an [`Error::Api`] with a description of the action.
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }

    /// The error in one line: for an apiserver answer, the action and the apiserver's message
    /// (for a 403, it names the user, verb, resource and namespace refused).
    pub fn summary(&self) -> String {
        match self {
            Self::Api {
                action,
                source: kube::Error::Api(status),
            } => format!("{action}: {}", status.message),
            other => other.to_string(),
        }
    }

    /// What kind of error this is (the `category` of the error metric).
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Api { source, .. } => match source {
                kube::Error::Api(status) if status.is_conflict() => ErrorCategory::Conflict,
                kube::Error::Api(status) if status.is_forbidden() => ErrorCategory::Forbidden,
                kube::Error::Api(status) if status.is_invalid() => ErrorCategory::Invalid,
                kube::Error::Api(_) => ErrorCategory::Api,
                _ => ErrorCategory::Transport,
            },
            Self::Snapshot { .. } | Self::Convert { .. } | Self::Taints { .. } => {
                ErrorCategory::InvalidObject
            }
            Self::AdoptionRecheckFailed { .. } => ErrorCategory::Adoption,
        }
    }
}

/// A short, bounded classification of errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// 409: someone changed the object meanwhile (routine, retried at once).
    Conflict,
    /// 403: RBAC refused the call.
    Forbidden,
    /// 422: the apiserver refused the object.
    Invalid,
    /// Any other apiserver answer.
    Api,
    /// No answer (connection, TLS, timeout).
    Transport,
    /// A set or pod the controller cannot read.
    InvalidObject,
    /// The re-read before adopting pods failed.
    Adoption,
}

impl ErrorCategory {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::Invalid => "invalid",
            Self::Api => "api",
            Self::Transport => "transport",
            Self::InvalidObject => "invalid_object",
            Self::Adoption => "adoption",
        }
    }
}

/// Whether a client error is an apiserver answer with this HTTP code.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}
