//! Port scheme: every port of a cluster is derived from one base port, so two clusters with
//! different base ports never collide.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default base port (= the kube-apiserver port) of `cargo xtask cluster up`.
pub const DEFAULT_BASE_PORT: u16 = 16443;
/// How many consecutive ports one cluster uses, starting at its base port.
pub const PORTS_PER_CLUSTER: u16 = 8;

/// The loopback ports of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// kube-apiserver secure port (base + 0).
    pub apiserver: u16,
    /// etcd client port (base + 1).
    pub etcd_client: u16,
    /// etcd peer port (base + 2).
    pub etcd_peer: u16,
    /// kube-controller-manager secure port, `/healthz` (base + 3).
    pub controller_manager: u16,
    /// kube-scheduler secure port, `/healthz` (base + 4).
    pub scheduler: u16,
    /// KWOK server port: `/healthz`, `/metrics`, node kubelet port (base + 5).
    pub kwok: u16,
    /// CoreDNS cluster DNS, UDP and TCP (base + 6).
    pub dns: u16,
    /// CoreDNS readiness endpoint `/ready` (base + 7).
    pub dns_ready: u16,
}

impl Ports {
    /// Derives all ports from `base`. Fails when the range would pass 65535.
    pub fn from_base(base: u16) -> Result<Self> {
        if base < 1024 || base.checked_add(PORTS_PER_CLUSTER - 1).is_none() {
            return Err(Error::Option {
                flag: "--base-port",
                message: format!(
                    "base port {base} is out of range: it must be between 1024 and {}",
                    u16::MAX - (PORTS_PER_CLUSTER - 1)
                ),
            });
        }
        Ok(Self {
            apiserver: base,
            etcd_client: base + 1,
            etcd_peer: base + 2,
            controller_manager: base + 3,
            scheduler: base + 4,
            kwok: base + 5,
            dns: base + 6,
            dns_ready: base + 7,
        })
    }

    /// `(port, what)` pairs, in port order.
    #[must_use]
    pub fn all(&self) -> [(u16, &'static str); PORTS_PER_CLUSTER as usize] {
        [
            (self.apiserver, "kube-apiserver"),
            (self.etcd_client, "etcd client"),
            (self.etcd_peer, "etcd peer"),
            (self.controller_manager, "kube-controller-manager"),
            (self.scheduler, "kube-scheduler"),
            (self.kwok, "kwok"),
            (self.dns, "coredns"),
            (self.dns_ready, "coredns /ready"),
        ]
    }

    /// Human-readable range, e.g. `16443-16450`.
    #[must_use]
    pub fn range(&self) -> String {
        format!("{}-{}", self.apiserver, self.dns_ready)
    }

    /// Checks that every port can be bound on 127.0.0.1 right now (the DNS port for UDP too).
    pub fn check_free(&self) -> Result<()> {
        for (port, what) in self.all() {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Error::PortInUse {
                    port,
                    what,
                    range: self.range(),
                });
            }
        }
        if std::net::UdpSocket::bind(("127.0.0.1", self.dns)).is_err() {
            return Err(Error::PortInUse {
                port: self.dns,
                what: "coredns (UDP)",
                range: self.range(),
            });
        }
        Ok(())
    }

    /// Finds the first base port at or after `start` (in steps of 10) whose ports are all free.
    pub fn find_free(start: u16) -> Result<Self> {
        let mut base = start;
        loop {
            let ports = Self::from_base(base)?;
            if ports.check_free().is_ok() {
                return Ok(ports);
            }
            base = base.checked_add(10).ok_or_else(|| Error::Option {
                flag: "--base-port",
                message: format!("no free block of {PORTS_PER_CLUSTER} ports at or above {start}"),
            })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_consecutive_and_distinct() {
        let p = Ports::from_base(DEFAULT_BASE_PORT).unwrap();
        let all: Vec<u16> = p.all().iter().map(|(port, _)| *port).collect();
        assert_eq!(all, (16443..16451).collect::<Vec<_>>());
        assert_eq!(p.range(), "16443-16450");
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(Ports::from_base(80).is_err());
        assert!(Ports::from_base(65530).is_err());
        assert!(Ports::from_base(65528).is_ok());
    }
}
