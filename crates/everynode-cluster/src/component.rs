//! The six processes of the local control plane.

use std::fmt;

/// One control-plane process. [`Component::ALL`] is the start order; stopping goes in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// etcd, the API server's storage.
    Etcd,
    /// kube-apiserver.
    KubeApiserver,
    /// kube-controller-manager (garbage collector, pod GC, node lifecycle, EndpointSlices, ...).
    KubeControllerManager,
    /// kube-scheduler.
    KubeScheduler,
    /// KWOK controller: plays the kubelet for fake nodes and their pods.
    Kwok,
    /// CoreDNS: cluster DNS for Services and pods (`cluster.local`) on 127.0.0.1.
    CoreDns,
}

impl Component {
    /// All components in start order.
    pub const ALL: [Self; 6] = [
        Self::Etcd,
        Self::KubeApiserver,
        Self::KubeControllerManager,
        Self::KubeScheduler,
        Self::Kwok,
        Self::CoreDns,
    ];

    /// Name used for the binary, the log file (`logs/<name>.log`) and the PID file.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::KubeApiserver => "kube-apiserver",
            Self::KubeControllerManager => "kube-controller-manager",
            Self::KubeScheduler => "kube-scheduler",
            Self::Kwok => "kwok",
            Self::CoreDns => "coredns",
        }
    }

    /// Parses a component name as printed by [`Component::name`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Component::ALL {
            assert_eq!(Component::from_name(c.name()), Some(c));
        }
        assert_eq!(Component::from_name("kubelet"), None);
    }
}
