//! Error type of the benchmark harness.

use std::path::PathBuf;

/// Everything that can stop a benchmark run. Messages name what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local control plane failed (start, stop, extra process).
    #[error(transparent)]
    Cluster(#[from] everynode_cluster::Error),
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A scenario did not converge in time.
    #[error("{what} did not converge within {seconds}s; last observation: {detail}")]
    Timeout {
        /// The scenario and controller.
        what: String,
        /// The timeout.
        seconds: u64,
        /// What the harness saw last.
        detail: String,
    },
    /// A measured process misbehaved (exited, never got ready).
    #[error("{what}: {message}")]
    Process {
        /// The process.
        what: String,
        /// What happened.
        message: String,
    },
    /// Something else (bad option, unparsable output).
    #[error("{0}")]
    Other(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a kube client error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube {
            action,
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with the action and path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
