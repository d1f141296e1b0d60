//! Two `everynode controller --leader-elect` processes against the local cluster: only the
//! leader writes; the standby keeps warm caches (ready, `everynode_leader 0`); when the leader is
//! SIGKILLed the standby takes over within the lease duration plus a few seconds.

use std::process::Stdio;
use std::time::{Duration, Instant};

use everynode_testkit::{TestEnv, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

const LEASE_SECONDS: u64 = 5;
const TIMEOUT: Duration = Duration::from_secs(60);

struct Replica {
    identity: String,
    http_port: u16,
    child: tokio::process::Child,
}

/// A port free right now (the replica binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on a replica's HTTP endpoint: (status code, body).
async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Waits until the replica is ready (caches synced) and reports `everynode_leader <value>`.
async fn wait_ready_with_leader_gauge(replica: &Replica, value: u8) {
    let what = format!(
        "{} to be ready with everynode_leader {value}",
        replica.identity
    );
    eventually(&what, TIMEOUT, || async {
        let (ready, _) = http_get(replica.http_port, "/readyz").await?;
        let (_, metrics) = http_get(replica.http_port, "/metrics").await?;
        let gauge = metrics
            .lines()
            .find(|l| l.starts_with("everynode_leader "))
            .unwrap_or("no everynode_leader line")
            .to_owned();
        if ready == 200 && gauge == format!("everynode_leader {value}") {
            Ok(())
        } else {
            Err(format!("/readyz {ready}, {gauge}"))
        }
    })
    .await;
}

fn start_replica(env: &TestEnv, identity: &str) -> Replica {
    let http_port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_everynode"))
        .args([
            "controller",
            "--leader-elect",
            "--namespace",
            env.namespace(),
            "--lease-namespace",
            env.namespace(),
            "--lease-seconds",
            &LEASE_SECONDS.to_string(),
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--instance",
            identity,
        ])
        .env("KUBECONFIG", env.cluster().kubeconfig())
        .env("EVERYNODE_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start everynode controller");
    Replica {
        identity: identity.to_owned(),
        http_port,
        child,
    }
}

async fn holder(env: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = env.api();
    leases
        .get_opt("everynode-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

async fn pods_on(env: &TestEnv) -> usize {
    env.api::<Pod>()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    let env = TestEnv::new("leader").await;
    let nodes = env.add_nodes(2).await;
    everynode_testkit::install_crd(&env.client()).await;

    let mut replicas = vec![
        start_replica(&env, "replica-a"),
        start_replica(&env, "replica-b"),
    ];
    let leader = eventually("a leader to be elected", TIMEOUT, || async {
        holder(&env).await.ok_or_else(|| "no holder yet".to_owned())
    })
    .await;

    let set = serde_json::json!({
        "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": env.group_selector(), "containers": [{"name": "c", "image": "agent:v1"}]}
            }
        }
    });
    let sets: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client(),
        env.namespace(),
        &kube::api::ApiResource::erase::<everynode_api::DaemonSet>(&()),
    );
    // the CRD may take a moment to be served after it is applied
    eventually("the set to be created", TIMEOUT, || async {
        sets.patch(
            "agent",
            &PatchParams::apply("everynode-tests"),
            &Patch::Apply(&set),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;
    eventually("the leader to create one pod per node", TIMEOUT, || async {
        let n = pods_on(&env).await;
        if n == nodes.len() {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;

    // The standby has warm caches (ready) but does not reconcile; the leader does.
    for replica in &replicas {
        let leading = u8::from(replica.identity == leader);
        wait_ready_with_leader_gauge(replica, leading).await;
    }

    // SIGKILL the leader: no graceful release of the Lease.
    let index = replicas
        .iter()
        .position(|r| r.identity == leader)
        .expect("leader is ours");
    let mut killed = replicas.remove(index);
    killed.child.start_kill().expect("kill leader");
    let _ = killed.child.wait().await;
    let killed_at = Instant::now();

    let standby = replicas[0].identity.clone();
    eventually("the standby to take the Lease", TIMEOUT, || async {
        match holder(&env).await {
            Some(h) if h == standby => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("standby took over {takeover:.1?} after the leader was killed");
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 10),
        "takeover took {takeover:?}, lease is {LEASE_SECONDS}s"
    );

    wait_ready_with_leader_gauge(&replicas[0], 1).await;

    // the new leader acts: a joining node gets its pod
    env.add_nodes(1).await;
    eventually(
        "the new leader to create the new node's pod",
        TIMEOUT,
        || async {
            let n = pods_on(&env).await;
            if n == nodes.len() + 1 {
                Ok(())
            } else {
                Err(format!("{n} pods"))
            }
        },
    )
    .await;
}
