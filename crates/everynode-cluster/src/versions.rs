//! Pinned upstream versions: the one place to change when moving to a new Kubernetes release.
//!
//! The Go wrapper modules under `tools/` must require exactly these versions (their `go.mod`
//! files are the source of truth for the build; these constants are what the cache key and the
//! "already built" check compare against).

/// `k8s.io/kubernetes` tag built into kube-apiserver, kube-controller-manager and kube-scheduler.
pub const KUBERNETES: &str = "v1.36.3";
/// Kubernetes minor version (`gitMinor` ldflag).
pub const KUBERNETES_MINOR: &str = "36";
/// Kubernetes major version (`gitMajor` ldflag).
pub const KUBERNETES_MAJOR: &str = "1";
/// `go.etcd.io/etcd/server/v3` version.
pub const ETCD: &str = "v3.6.16";
/// `sigs.k8s.io/kwok` version.
pub const KWOK: &str = "v0.8.0";
/// `github.com/coredns/coredns` version (a build with the local cluster's plugins only).
pub const COREDNS: &str = "v1.15.0";
/// `helm.sh/helm/v4` version (the chart's lint, template and install tests).
pub const HELM: &str = "v4.3.2";
/// `github.com/prometheus/prometheus` module version of promtool (the alert rules' checks).
pub const PROMETHEUS_MODULE: &str = "v0.316.0";
/// The Prometheus release that module is (what `promtool --version` reports).
pub const PROMETHEUS: &str = "3.16.0";
/// Go module path of KWOK (used to locate its stage manifests in the module cache).
pub const KWOK_MODULE: &str = "sigs.k8s.io/kwok";

/// Name of the cache directory for one combination of the Kubernetes, etcd and KWOK pins, e.g.
/// `k8s-v1.36.3-etcd-v3.6.16-kwok-v0.8.0`. CoreDNS is left out of the key: its binary is checked
/// by the version it reports, like every other, so it is built into an existing cache without
/// rebuilding the Kubernetes binaries (and rebuilt alone when its pin changes).
#[must_use]
pub fn cache_key() -> String {
    format!("k8s-{KUBERNETES}-etcd-{ETCD}-kwok-{KWOK}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_names_the_control_plane_pins() {
        assert_eq!(cache_key(), "k8s-v1.36.3-etcd-v3.6.16-kwok-v0.8.0");
    }

    #[test]
    fn minor_matches_tag() {
        assert!(KUBERNETES.starts_with(&format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.")));
    }
}
