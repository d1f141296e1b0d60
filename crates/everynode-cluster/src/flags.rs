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

/// Client limits of the cluster's own clients in an unthrottled cluster: not client-limited
/// (KWOK's `--disable-qps-limits` uses 5,000 / 10,000 to the same end).
pub const UNTHROTTLED_LIMITS: ClientLimits = ClientLimits {
    qps: 100_000.0,
    burst: 100_000,
};

/// KWOK's pod and node stage workers and node-lease workers in an unthrottled cluster (its
/// default is 4 each). KWOK's client has no rate limiter of its own.
pub const UNTHROTTLED_KWOK_WORKERS: u32 = 16;

/// kube-scheduler's configuration file: its kubeconfig, no leader election, and — in an
/// unthrottled cluster — client limits (its defaults are QPS 50, burst 100).
#[must_use]
pub fn scheduler_config(kubeconfig: &Path, limits: Option<ClientLimits>) -> String {
    let mut client = format!("  kubeconfig: {}\n", kubeconfig.display());
    if let Some(l) = limits {
        client.push_str(&format!("  qps: {}\n  burst: {}\n", l.qps, l.burst));
    }
    format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         clientConnection:\n{client}leaderElection:\n  leaderElect: false\n"
    )
}

/// KWOK options for an unthrottled cluster: `workers` stage and lease workers. KWOK applies
/// no defaults to a `KwokConfiguration` it reads, so every defaulted option is spelled out
/// (KWOK v0.8.0's defaults; flags still override them).
#[must_use]
pub fn kwok_options(workers: u32) -> String {
    format!(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n\
         \x20 cidr: {POD_CIDR}\n\
         \x20 manageAllNodes: false\n\
         \x20 enableDebuggingHandlers: true\n\
         \x20 enableContentionProfiling: false\n\
         \x20 enableProfilingHandler: true\n\
         \x20 podPlayStageParallelism: {workers}\n\
         \x20 nodePlayStageParallelism: {workers}\n\
         \x20 nodeLeaseParallelism: {workers}\n\
         \x20 podsOnNodeSyncParallelism: 1\n\
         \x20 enablePodsOnNodeSyncListPager: true\n\
         \x20 enablePodsOnNodeSyncStreamWatch: false\n"
    )
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
    /// The cluster's own clients are not rate-limited: kube-scheduler and
    /// kube-controller-manager get [`UNTHROTTLED_LIMITS`], KWOK [`UNTHROTTLED_KWOK_WORKERS`]
    /// workers. Then what every controller waits for is the API server and etcd, not the
    /// scheduler's client limit. Off: the components' defaults, as on a stock cluster.
    #[serde(default)]
    pub unthrottled: bool,
}

impl FlagSettings {
    /// The client limits of the cluster's own clients (`None`: their defaults).
    #[must_use]
    pub fn cluster_client_limits(&self) -> Option<ClientLimits> {
        self.unthrottled.then_some(UNTHROTTLED_LIMITS)
    }

    /// The modes that are on, for a status line (`", benchmark mode, unthrottled"`).
    #[must_use]
    pub fn modes_note(&self) -> &'static str {
        match (self.benchmark, self.unthrottled) {
            (true, true) => ", benchmark mode, unthrottled",
            (true, false) => ", benchmark mode",
            (false, true) => ", unthrottled",
            (false, false) => "",
        }
    }
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
        Component::KubeControllerManager => {
            let mut v = controller_manager_args(&kc, &pki, ports, cx.settings);
            if let Some(l) = cx.settings.cluster_client_limits() {
                v.push(format!("--kube-api-qps={}", l.qps));
                v.push(format!("--kube-api-burst={}", l.burst));
            }
            v
        }
        Component::KubeScheduler => vec![
            format!("--config={}", p(cx.dir.scheduler_config())),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.scheduler),
            "--v=1".into(),
        ],
        Component::Kwok => {
            let mut v = kwok_args(&kc, cx);
            if cx.settings.unthrottled {
                v.push(format!("--config={}", p(cx.dir.kwok_options())));
            }
            v
        }
        Component::CoreDns => vec!["-conf".into(), p(cx.dir.corefile())],
    };
    a.shrink_to_fit();
    a
}

fn controller_manager_args(
    kc: &str,
    pki: &Pki,
    ports: &Ports,
    settings: &FlagSettings,
) -> Vec<String> {
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", ports.controller_manager),
        "--leader-elect=false".into(),
        if settings.builtin_daemonset_controller {
            "--controllers=*".into()
        } else {
            "--controllers=*,-daemonset-controller".into()
        },
        format!("--root-ca-file={}", p(pki.ca_cert())),
        format!("--service-account-private-key-file={}", p(pki.sa_key())),
        "--node-monitor-period=5s".into(),
        format!(
            "--node-monitor-grace-period={}",
            node_monitor_grace_period(settings)
        ),
        "--v=1".into(),
    ]
}

/// How long a node's lease may lag before the node lifecycle controller calls it NotReady and
/// marks its pods NotReady. 40 s; 5 minutes in benchmark mode: KWOK renews every node's lease
/// every 10 s (500 writes a second at 5,000 nodes), on a loaded machine some renewals lag past
/// 40 s, and KWOK never marks the pods Ready again, so no controller could converge.
fn node_monitor_grace_period(settings: &FlagSettings) -> &'static str {
    if settings.benchmark { "5m" } else { "40s" }
}

fn kwok_args(kc: &str, cx: &FlagContext<'_>) -> Vec<String> {
    let ports = cx.ports;
    vec![
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
    ]
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
            unthrottled: false,
        };
        let on = FlagSettings {
            builtin_daemonset_controller: true,
            benchmark: false,
            unthrottled: false,
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
            unthrottled: false,
        };
        let bench = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: true,
            unthrottled: false,
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
    fn a_benchmark_cluster_tolerates_lagging_node_leases() {
        let test = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: false,
            unthrottled: false,
        };
        let bench = FlagSettings {
            benchmark: true,
            ..test.clone()
        };
        let grace = |s| {
            ctx_args(Component::KubeControllerManager, s)
                .into_iter()
                .find(|a| a.starts_with("--node-monitor-grace-period="))
        };
        assert_eq!(
            grace(&test).as_deref(),
            Some("--node-monitor-grace-period=40s")
        );
        assert_eq!(
            grace(&bench).as_deref(),
            Some("--node-monitor-grace-period=5m")
        );
    }

    #[test]
    fn an_unthrottled_cluster_lifts_the_client_limits_of_its_own_components() {
        let stock = FlagSettings {
            builtin_daemonset_controller: false,
            benchmark: true,
            unthrottled: false,
        };
        let unthrottled = FlagSettings {
            unthrottled: true,
            ..stock.clone()
        };
        let kcm = |s| ctx_args(Component::KubeControllerManager, s);
        assert!(!kcm(&stock).iter().any(|a| a.starts_with("--kube-api-qps")));
        let raised = kcm(&unthrottled);
        assert!(raised.contains(&"--kube-api-qps=100000".to_owned()));
        assert!(raised.contains(&"--kube-api-burst=100000".to_owned()));
        // The scheduler reads its limits (and kubeconfig) from its config file in both modes.
        for s in [&stock, &unthrottled] {
            let args = ctx_args(Component::KubeScheduler, s);
            assert!(args.contains(&"--config=/tmp/c/kube-scheduler.yaml".to_owned()));
            assert!(!args.iter().any(|a| a.starts_with("--kubeconfig")));
        }
        // KWOK reads the options file only when unthrottled, after its stages.
        let kwok = |s| ctx_args(Component::Kwok, s);
        let options = "--config=/tmp/c/kwok-options.yaml".to_owned();
        assert!(!kwok(&stock).contains(&options));
        let args = kwok(&unthrottled);
        let stages = args.iter().position(|a| a == "--config=/cache/kwok.yaml");
        assert!(stages < args.iter().position(|a| *a == options));
    }

    #[test]
    fn scheduler_config_names_the_kubeconfig_and_the_limits_when_given() {
        let kc = Path::new("/tmp/c/kubeconfig");
        let stock: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&scheduler_config(kc, None)).unwrap();
        assert_eq!(stock["kind"], "KubeSchedulerConfiguration");
        assert_eq!(stock["clientConnection"]["kubeconfig"], "/tmp/c/kubeconfig");
        assert!(stock["clientConnection"].get("qps").is_none());
        assert_eq!(stock["leaderElection"]["leaderElect"], false);
        let raised: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&scheduler_config(kc, Some(UNTHROTTLED_LIMITS))).unwrap();
        assert_eq!(raised["clientConnection"]["qps"], 100_000);
        assert_eq!(raised["clientConnection"]["burst"], 100_000);
    }

    #[test]
    fn kwok_options_spell_out_every_default_and_raise_the_workers() {
        let options: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kwok_options(16)).unwrap();
        assert_eq!(options["kind"], "KwokConfiguration");
        let o = &options["options"];
        for key in [
            "podPlayStageParallelism",
            "nodePlayStageParallelism",
            "nodeLeaseParallelism",
        ] {
            assert_eq!(o[key], 16, "{key}");
        }
        assert_eq!(o["podsOnNodeSyncParallelism"], 1);
        assert_eq!(o["enablePodsOnNodeSyncListPager"], true);
        assert_eq!(o["cidr"], POD_CIDR);
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
            unthrottled: false,
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
