//! Where things live: the binary cache (outside the repository) and a cluster's state directory.

use std::path::{Path, PathBuf};

use crate::component::Component;
use crate::versions;

/// Environment variable overriding the cache root (default `$HOME/.cache/everynode/control-plane`).
pub const CACHE_DIR_ENV: &str = "EVERYNODE_CACHE_DIR";
/// Environment variable overriding the location of the Go wrapper modules (default: `tools/` of
/// this repository, found at compile time).
pub const TOOLS_DIR_ENV: &str = "EVERYNODE_TOOLS_DIR";
/// File-name prefix of extra processes' logs and PID files (`extra-<name>.{log,pid}`).
pub const EXTRA_PREFIX: &str = "extra-";
/// Default cluster directory of `cargo xtask cluster up`.
pub const DEFAULT_CLUSTER_DIR: &str = "/tmp/everynode-cluster";

/// The cache root: `$EVERYNODE_CACHE_DIR`, else `$XDG_CACHE_HOME/everynode/control-plane`, else
/// `$HOME/.cache/everynode/control-plane`.
#[must_use]
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("everynode").join("control-plane")
}

/// The Go wrapper modules: `$EVERYNODE_TOOLS_DIR` or `<repo>/tools`.
#[must_use]
pub fn tools_dir() -> PathBuf {
    std::env::var_os(TOOLS_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools"),
            PathBuf::from,
        )
}

/// Layout of one versioned cache entry: `<cache root>/<cache key>/{bin/, kwok.yaml}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache entry for the pinned versions under [`cache_root`].
    #[must_use]
    pub fn pinned() -> Self {
        Self::at(cache_root())
    }

    /// The cache entry for the pinned versions under the given cache root.
    #[must_use]
    pub fn at(cache_root: impl AsRef<Path>) -> Self {
        Self {
            root: cache_root.as_ref().join(versions::cache_key()),
        }
    }

    /// `<entry>/bin`.
    #[must_use]
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// Path of one component's binary.
    #[must_use]
    pub fn binary(&self, component: Component) -> PathBuf {
        self.binary_named(component.name())
    }

    /// Path of a binary by file name (a component's, or `kubectl`).
    #[must_use]
    pub fn binary_named(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// The built binary `name` (e.g. helm, promtool), or [`crate::Error::NotBuilt`] saying how to
    /// build it.
    pub fn tool(&self, name: &str) -> crate::Result<PathBuf> {
        let path = self.binary_named(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(crate::Error::NotBuilt {
                dir: self.bin_dir(),
                detail: format!("{name} is missing"),
            })
        }
    }

    /// Generated KWOK configuration (stages).
    #[must_use]
    pub fn kwok_config(&self) -> PathBuf {
        self.root.join("kwok.yaml")
    }
}

/// Layout of a cluster directory (`--dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDir {
    root: PathBuf,
}

impl ClusterDir {
    /// Wraps a directory path (made absolute against the current directory).
    #[must_use]
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_or_else(|_| root.to_path_buf(), |cwd| cwd.join(root))
        };
        Self { root }
    }

    /// The directory itself.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `cluster.json`: what `up` started (ports, options, data directories).
    #[must_use]
    pub fn state_file(&self) -> PathBuf {
        self.root.join("cluster.json")
    }

    /// Admin kubeconfig.
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// Certificates and keys.
    #[must_use]
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// Component logs.
    #[must_use]
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// One component's log file.
    #[must_use]
    pub fn log(&self, component: Component) -> PathBuf {
        self.logs_dir().join(format!("{}.log", component.name()))
    }

    /// PID files.
    #[must_use]
    pub fn pids_dir(&self) -> PathBuf {
        self.root.join("pids")
    }

    /// One component's PID file.
    #[must_use]
    pub fn pid_file(&self, component: Component) -> PathBuf {
        self.pids_dir().join(format!("{}.pid", component.name()))
    }

    /// Log of an extra process started with [`crate::Cluster::spawn_extra`]: `logs/extra-<name>.log`.
    #[must_use]
    pub fn extra_log(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{EXTRA_PREFIX}{name}.log"))
    }

    /// PID file of an extra process: `pids/extra-<name>.pid` (stopped by `down` too).
    #[must_use]
    pub fn extra_pid_file(&self, name: &str) -> PathBuf {
        self.pids_dir().join(format!("{EXTRA_PREFIX}{name}.pid"))
    }

    /// CoreDNS configuration (see [`crate::flags::corefile`]).
    #[must_use]
    pub fn corefile(&self) -> PathBuf {
        self.root.join("Corefile")
    }

    /// kube-scheduler's configuration (see [`crate::flags::scheduler_config`]).
    #[must_use]
    pub fn scheduler_config(&self) -> PathBuf {
        self.root.join("kube-scheduler.yaml")
    }

    /// KWOK's options in an unthrottled cluster (see [`crate::flags::kwok_options`]).
    #[must_use]
    pub fn kwok_options(&self) -> PathBuf {
        self.root.join("kwok-options.yaml")
    }

    /// Audit policy of the API server in benchmark mode.
    #[must_use]
    pub fn audit_policy(&self) -> PathBuf {
        self.root.join("audit-policy.yaml")
    }

    /// Audit log of the API server in benchmark mode (JSON lines).
    #[must_use]
    pub fn audit_log(&self) -> PathBuf {
        self.logs_dir().join("audit.log")
    }

    /// Kubeconfig of an extra client identity (see [`crate::Cluster::client_kubeconfig`]).
    #[must_use]
    pub fn client_kubeconfig(&self, user: &str) -> PathBuf {
        self.root.join(format!("kubeconfig-{user}"))
    }

    /// Where etcd keeps its data: on `/dev/shm` when it exists (RAM, faster on small CI
    /// machines), else `<dir>/etcd`.
    #[must_use]
    pub fn default_etcd_data_dir(&self) -> PathBuf {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let flat: String = self
                .root
                .to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            shm.join(format!("everynode-etcd{flat}"))
        } else {
            self.root.join("etcd")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_says_how_to_build_it() {
        let root = std::env::temp_dir().join(format!("everynode-tool-{}", std::process::id()));
        let cache = Cache::at(&root);
        let missing = cache.tool("helm").map_err(|e| e.to_string());
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("cargo xtask cluster build")),
            "{missing:?}"
        );
        std::fs::create_dir_all(cache.bin_dir()).expect("bin dir");
        std::fs::write(cache.binary_named("helm"), b"").expect("helm");
        assert_eq!(cache.tool("helm").ok(), Some(cache.binary_named("helm")));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn cluster_dir_paths() {
        let d = ClusterDir::new("/tmp/x");
        assert_eq!(
            d.log(Component::Kwok),
            PathBuf::from("/tmp/x/logs/kwok.log")
        );
        assert_eq!(
            d.pid_file(Component::Etcd),
            PathBuf::from("/tmp/x/pids/etcd.pid")
        );
        let etcd = d.default_etcd_data_dir();
        assert!(
            etcd == Path::new("/dev/shm/everynode-etcd_tmp_x") || etcd == Path::new("/tmp/x/etcd")
        );
    }

    #[test]
    fn cache_entry_is_versioned() {
        let c = Cache::at("/c");
        assert_eq!(
            c.binary(Component::KubeApiserver),
            PathBuf::from("/c/k8s-v1.36.3-etcd-v3.6.16-kwok-v0.8.0/bin/kube-apiserver")
        );
    }
}
