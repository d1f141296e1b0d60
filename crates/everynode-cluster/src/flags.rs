//! Command-line flags of every component, as a pure function of the cluster's settings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::layout::{Cache, ClusterDir};
use crate::pki::Pki;
use crate::ports::Ports;

/// Service CIDR of the API server (labels only: no kube-proxy runs).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Pod CIDR KWOK assigns pod IPs from (labels only: no CNI runs).
pub const POD_CIDR: &str = "10.244.0.0/16";
/// Service-account issuer.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// DNS domain of the cluster, served by CoreDNS.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Client identity of the process a benchmark measures (a controller under test); the API
/// server audits its requests in benchmark mode.
pub const BENCH_MEASURED_USER: &str = "everynode-bench-measured";
/// Client identity of a benchmark's minimal reference client (the "floor"); audited too.
pub const BENCH_FLOOR_USER: &str = "everynode-bench-floor";

/// CoreDNS configuration: the `kubernetes` plugin answers for [`CLUSTER_DOMAIN`] (Services,
/// headless-Service endpoints, and `pods insecure` A records) from the API server, on
/// 127.0.0.1 only; `/ready` turns OK once its caches have synced. Names outside the cluster
/// domain get REFUSED (there is no upstream to forward to).
#[must_use]
pub fn corefile(ports: &Ports, kubeconfig: &Path) -> String {
    format!(
        r#".:{dns} {{
    bind 127.0.0.1
    ready 127.0.0.1:{ready}
    errors
    log . "{{type}} {{name}} {{rcode}}"
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
}}
"#,
        dns = ports.dns,
        ready = ports.dns_ready,
        kubeconfig = kubeconfig.display(),
    )
}

/// Namespace of the controller's ServiceAccount (`deploy/rbac.yaml`); the API server audits the
/// requests of every ServiceAccount there, so tests can compare the controller's calls with its
/// RBAC rules.
pub const CONTROLLER_SERVICE_ACCOUNT_NAMESPACE: &str = "everynode-system";

/// Audit policy: request metadata (verb, resource, user, user agent, response code) of the
/// benchmark identities and of the controller's ServiceAccounts only — every other client (KWOK
/// heartbeats, the scheduler, the harness) is left out, so the log stays small even with
/// thousands of nodes.
#[must_use]
pub fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"ResponseStarted\"]\nrules:\n\
         - level: Metadata\n  users: [\"{BENCH_MEASURED_USER}\", \"{BENCH_FLOOR_USER}\"]\n\
         - level: Metadata\n  userGroups: [\"system:serviceaccounts:{CONTROLLER_SERVICE_ACCOUNT_NAMESPACE}\"]\n\
         - level: None\n"
    )
}

/// Client-side rate limits of a kube-controller-manager (`--kube-api-qps`, `--kube-api-burst`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientLimits {
    /// Sustained requests per second.
    pub qps: f64,
    /// Burst.
    pub burst: u32,
}

/// Flags of an extra kube-controller-manager that runs only the DaemonSet controller
/// (`--controllers=daemonset-controller`), authenticating with `kubeconfig`, serving `/healthz`
/// on `127.0.0.1:<port>`. `limits: None` keeps kube-controller-manager's defaults (QPS 20,
/// burst 30); the log verbosity stays at its default too.
#[must_use]
pub fn daemonset_controller_manager_args(
    kubeconfig: &Path,
    port: u16,
    limits: Option<ClientLimits>,
) -> Vec<String> {
    let kc = kubeconfig.display();
    let mut v = vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--leader-elect=false".into(),
        "--controllers=daemonset-controller".into(),
    ];
    if let Some(l) = limits {
        v.push(format!("--kube-api-qps={}", l.qps));
        v.push(format!("--kube-api-burst={}", l.burst));
    }
    v
}

/// Settings that change component flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSettings {
    /// Run kube-controller-manager's built-in DaemonSet controller (`--controllers=*`) instead of
    /// disabling it (`--controllers=*,-daemonset-controller`, the default: everynode replaces it).
    pub builtin_daemonset_controller: bool,
    /// Benchmark mode: API Priority and Fairness off and no in-flight request limits on the API
    /// server, so the control plane does not throttle the controller under test.
    pub benchmark: bool,
}

/// Everything the flag builders need.
#[derive(Debug, Clone, Copy)]
pub struct FlagContext<'a> {
    /// The cluster directory.
    pub dir: &'a ClusterDir,
    /// The binary cache.
    pub cache: &'a Cache,
    /// Ports.
    pub ports: &'a Ports,
    /// etcd data directory.
    pub etcd_data_dir: &'a Path,
    /// Flag-relevant settings.
    pub settings: &'a FlagSettings,
}

fn p(path: PathBuf) -> String {
    path.display().to_string()
}

/// The flags `component` is started with.
#[must_use]
pub fn args(component: Component, cx: &FlagContext<'_>) -> Vec<String> {
    let pki = Pki::at(cx.dir.pki_dir());
    let kc = p(cx.dir.kubeconfig());
    let ports = cx.ports;
    let mut a: Vec<String> = match component {
        Component::Etcd => {
            let client = format!("http://127.0.0.1:{}", ports.etcd_client);
            let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
            vec![
                "--name=everynode".into(),
                format!("--data-dir={}", cx.etcd_data_dir.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=everynode={peer}"),
                "--initial-cluster-state=new".into(),
                // Test-only: no fsync; the data lives on tmpfs anyway.
                "--unsafe-no-fsync".into(),
                "--quota-backend-bytes=8589934592".into(),
                "--auto-compaction-retention=1".into(),
                "--log-level=warn".into(),
            ]
        }
        Component::KubeApiserver => {
            let mut v = vec![
                format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
                "--advertise-address=127.0.0.1".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.apiserver),
                format!("--tls-cert-file={}", p(pki.apiserver_cert())),
                format!("--tls-private-key-file={}", p(pki.apiserver_key())),
                format!("--client-ca-file={}", p(pki.ca_cert())),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", p(pki.sa_pub())),
                format!("--service-account-signing-key-file={}", p(pki.sa_key())),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                // Pods may be created right after their namespace, before the serviceaccount
                // controller made its `default` ServiceAccount (envtest does the same).
                "--disable-admission-plugins=ServiceAccount".into(),
            ];
            v.extend([
                format!("--audit-policy-file={}", p(cx.dir.audit_policy())),
                format!("--audit-log-path={}", p(cx.dir.audit_log())),
                "--audit-log-format=json".into(),
                "--audit-log-maxsize=0".into(),
                "--audit-log-mode=blocking".into(),
            ]);
            if cx.settings.benchmark {
                v.extend([
                    "--enable-priority-and-fairness=false".into(),
                    "--max-requests-inflight=0".into(),
                    "--max-mutating-requests-inflight=0".into(),
                ]);
            }
            v.push("--v=1".into());
            v
        }
        Component::KubeControllerManager => vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.controller_manager),
            "--leader-elect=false".into(),
            if cx.settings.builtin_daemonset_controller {
                "--controllers=*".into()
            } else {
                "--controllers=*,-daemonset-controller".into()
            },
            format!("--root-ca-file={}", p(pki.ca_cert())),
            format!("--service-account-private-key-file={}", p(pki.sa_key())),
            "--node-monitor-period=5s".into(),
            "--node-monitor-grace-period=40s".into(),
            "--v=1".into(),
        ],
        Component::KubeScheduler => vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.scheduler),
            "--leader-elect=false".into(),
            "--v=1".into(),
        ],
        Component::Kwok => vec![
            format!("--kubeconfig={kc}"),
            format!("--config={}", p(cx.cache.kwok_config())),
            "--manage-all-nodes=false".into(),
            format!(
                "--manage-nodes-with-annotation-selector={}={}",
                crate::nodes::KWOK_ANNOTATION,
                crate::nodes::KWOK_ANNOTATION_VALUE
            ),
            format!("--cidr={POD_CIDR}"),
            "--node-ip=127.0.0.1".into(),
            "--node-name=localhost".into(),
            format!("--node-port={}", ports.kwok),
            format!("--server-address=127.0.0.1:{}", ports.kwok),
            "--node-lease-duration-seconds=40".into(),
        ],
        Component::CoreDns => vec!["-conf".into(), p(cx.dir.corefile())],
    };
    a.shrink_to_fit();
    a
}

/// Base URL and path of the component's health endpoint (all on 127.0.0.1).
#[must_use]
pub fn health_endpoint(component: Component, ports: &Ports) -> (String, &'static str) {
    match component {
        Component::Etcd => (format!("http://127.0.0.1:{}", ports.etcd_client), "/health"),
        Component::KubeApiserver => (format!("https://127.0.0.1:{}", ports.apiserver), "/readyz"),
        Component::KubeControllerManager => (
            format!("https://127.0.0.1:{}", ports.controller_manager),
            "/healthz",
        ),
        Component::KubeScheduler => (format!("https://127.0.0.1:{}", ports.scheduler), "/healthz"),
        Component::Kwok => (format!("http://127.0.0.1:{}", ports.kwok), "/healthz"),
        Component::CoreDns => (format!("http://127.0.0.1:{}", ports.dns_ready), "/ready"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_args(component: Component, settings: &FlagSettings) -> Vec<String> {
        let dir = ClusterDir::new("/tmp/c");
        let cache = Cache::at("/cache");
        let ports = Ports::from_base(20000).unwrap();
        args(
            component,
            &FlagContext {
                dir: &dir,
                cache: &cache,
                ports: &ports,
                etcd_data_dir: Path::new("/dev/shm/e"),
                settings,
            },
        )
    }

    #[test]
    fn daemonset_controller_switch() {
        let off = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: false,
        };
        let on = FlagSettings {
            builtin_daemonset_controller: true,
            benchmark: false,
        };
        assert!(
            ctx_args(Component::KubeControllerManager, &off)
                .contains(&"--controllers=*,-daemonset-controller".to_owned())
        );
        assert!(
            ctx_args(Component::KubeControllerManager, &on).contains(&"--controllers=*".to_owned())
        );
    }

    #[test]
    fn benchmark_flags_only_in_benchmark_mode_and_auditing_in_both() {
        let normal = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: false,
        };
        let bench = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: true,
        };
        let flag = "--enable-priority-and-fairness=false".to_owned();
        assert!(!ctx_args(Component::KubeApiserver, &normal).contains(&flag));
        let b = ctx_args(Component::KubeApiserver, &bench);
        assert!(b.contains(&flag));
        assert!(b.contains(&"--max-requests-inflight=0".to_owned()));
        assert!(b.contains(&"--max-mutating-requests-inflight=0".to_owned()));
        // Auditing is on in both modes.
        for args in [b, ctx_args(Component::KubeApiserver, &normal)] {
            assert!(args.contains(&"--audit-policy-file=/tmp/c/audit-policy.yaml".to_owned()));
            assert!(args.contains(&"--audit-log-path=/tmp/c/logs/audit.log".to_owned()));
        }
    }

    #[test]
    fn audit_policy_names_the_benchmark_users_and_the_controller_accounts_and_drops_the_rest() {
        let policy: serde_yaml_ng::Value = serde_yaml_ng::from_str(&audit_policy()).unwrap();
        let rules = policy["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["level"], "Metadata");
        let users: Vec<&str> = rules[0]["users"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert_eq!(users, [BENCH_MEASURED_USER, BENCH_FLOOR_USER]);
        assert_eq!(
            rules[1]["userGroups"][0],
            "system:serviceaccounts:everynode-system"
        );
        assert_eq!(rules[2]["level"], "None");
    }

    #[test]
    fn daemonset_only_controller_manager() {
        let kc = Path::new("/tmp/c/kubeconfig-x");
        let d = daemonset_controller_manager_args(kc, 17450, None);
        assert!(d.contains(&"--controllers=daemonset-controller".to_owned()));
        assert!(d.contains(&"--kubeconfig=/tmp/c/kubeconfig-x".to_owned()));
        assert!(!d.iter().any(|a| a.starts_with("--kube-api-qps")));
        let raised = daemonset_controller_manager_args(
            kc,
            17450,
            Some(ClientLimits {
                qps: 5000.0,
                burst: 10000,
            }),
        );
        assert!(raised.contains(&"--kube-api-qps=5000".to_owned()));
        assert!(raised.contains(&"--kube-api-burst=10000".to_owned()));
    }

    #[test]
    fn everything_binds_to_loopback() {
        let s = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: true,
        };
        for c in Component::ALL {
            for a in ctx_args(c, &s) {
                assert!(!a.contains("0.0.0.0"), "{c}: {a}");
                if a.contains("://") && !a.contains("kubernetes.default") {
                    assert!(a.contains("127.0.0.1"), "{c}: {a}");
                }
            }
        }
    }
}
