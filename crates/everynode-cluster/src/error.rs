//! Error type of the cluster crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, starting, inspecting or stopping the local
/// control plane. Messages name the component, file or flag involved and, where there is one,
/// the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command could not be started or failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line (program and the interesting arguments).
        command: String,
        /// What went wrong, including the fix when known.
        message: String,
    },
    /// The Go toolchain is missing or unusable.
    #[error("{0}")]
    Go(String),
    /// The control-plane binaries are not in the cache.
    #[error(
        "control-plane binaries missing or stale in {dir}: {detail}; build them with `cargo xtask cluster build`"
    )]
    NotBuilt {
        /// The cache `bin` directory.
        dir: PathBuf,
        /// Which binary is missing or reports the wrong version.
        detail: String,
    },
    /// A port needed by the cluster is already in use.
    #[error(
        "port {port} ({what}) on 127.0.0.1 is already in use; pick another base port with `--base-port` (ports used: {range})"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// Which component wanted it.
        what: &'static str,
        /// The whole port range of this cluster, for the message.
        range: String,
    },
    /// An option has an unusable value.
    #[error("{flag}: {message}")]
    Option {
        /// The option (e.g. `--base-port`).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The cluster directory is in a state that forbids the operation.
    #[error("cluster directory {dir}: {message}")]
    Dir {
        /// The cluster directory.
        dir: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A component exited or did not become ready in time.
    #[error("{component}: {message}\n--- last lines of {log} ---\n{tail}")]
    Component {
        /// The component name.
        component: &'static str,
        /// What happened.
        message: String,
        /// Its log file.
        log: PathBuf,
        /// The tail of its log file.
        tail: String,
    },
    /// Generating keys or certificates failed.
    #[error("PKI: {0}")]
    Pki(#[from] rcgen::Error),
    /// (De)serialising a state or config file failed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Something did not happen within its timeout.
    #[error("timed out after {seconds}s waiting for {what}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        seconds: u64,
        /// The last observation, prefixed with "; last observation: " when present.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the action and path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Wraps a kube client error with what was being done.
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }
}
