//! Helpers of the tests that run `everynode controller` as a process.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::Stdio;

use everynode_testkit::deploy::{controller_account, token_kubeconfig_via};
use everynode_testkit::{TestEnv, eventually, pods};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

/// `everynode controller` for the test's namespace with `kubeconfig`, logging warnings and up to
/// stderr; add arguments and environment, then spawn (killed when dropped).
pub fn controller_command(env: &TestEnv, kubeconfig: &Path) -> tokio::process::Command {
    controller_command_on(env, kubeconfig, 0)
}

/// [`controller_command`] serving `/metrics`, `/livez` and `/readyz` on `http_port` (0: any).
pub fn controller_command_on(
    env: &TestEnv,
    kubeconfig: &Path,
    http_port: u16,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_everynode"));
    command
        .args([
            "controller",
            "--namespace",
            env.namespace(),
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("EVERYNODE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// A port free right now (the replica binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on a controller's HTTP endpoint: (status code, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
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

/// The set `agent` of `api_version` (`apps/v1` or `everynode.dev/v1alpha1`; pods labelled
/// `app=agent`) on the test's nodes, one container `agent` running `image`, default strategy.
pub fn plain_set(env: &TestEnv, api_version: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": api_version, "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": env.group_selector(),
                         "containers": [{"name": "agent", "image": image}]}
            }
        }
    })
}

/// The `everynode.dev/v1alpha1` [`plain_set`] with `maxUnavailable: 10%`, its pods tolerating
/// nodes not ready yet: they go to joining nodes while the node lifecycle controller still lifts
/// the not-ready taint.
pub fn agent_set(env: &TestEnv, image: &str) -> serde_json::Value {
    let mut set = plain_set(env, "everynode.dev/v1alpha1", image);
    set["spec"]["updateStrategy"] = serde_json::json!({"rollingUpdate": {"maxUnavailable": "10%"}});
    set["spec"]["template"]["spec"]["tolerations"] =
        serde_json::json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]);
    set
}

/// Server-side applies `set` (an `everynode.dev/v1alpha1` DaemonSet), retried for a minute: the
/// CRD may take a moment to be served after it is installed.
pub async fn apply_set(env: &TestEnv, set: &serde_json::Value) {
    let name = set["metadata"]["name"].as_str().unwrap_or_default();
    let sets: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client(),
        env.namespace(),
        &kube::api::ApiResource::erase::<everynode_api::DaemonSet>(&()),
    );
    eventually(
        "the set to be applied",
        std::time::Duration::from_secs(60),
        || async {
            sets.patch(
                name,
                &kube::api::PatchParams::apply("everynode-tests").force(),
                &kube::api::Patch::Apply(set),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        },
    )
    .await;
}

/// Sends `signal` (`STOP`, `CONT`, …) to a process.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the process runs");
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Live (not terminating) pods of the set `agent` (label `app=agent`); none when the list fails.
pub async fn live_agent_pods(env: &TestEnv) -> Vec<Pod> {
    env.api::<Pod>()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Live, Ready pods of the set `agent` (label `app=agent`) on `image`.
pub async fn ready_pods_on(env: &TestEnv, image: &str) -> usize {
    live_agent_pods(env)
        .await
        .iter()
        .filter(|p| pods::is_ready(p))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers.first()?.image.as_deref())
                == Some(image)
        })
        .count()
}

/// Waits until exactly `count` live, Ready pods of the set `agent` run `image`.
pub async fn wait_ready_pods(env: &TestEnv, image: &str, count: usize) {
    let what = format!("{count} ready {image} pods");
    eventually(&what, std::time::Duration::from_secs(60), || async {
        match ready_pods_on(env, image).await {
            n if n == count => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
}

// ------------------------------------------------------------------ leader-elected replicas

/// One `everynode controller --leader-elect` process.
pub struct Replica {
    pub identity: String,
    pub http_port: u16,
    pub child: tokio::process::Child,
}

/// Starts `everynode controller --leader-elect` as the test's ServiceAccount `identity` (made
/// with the shipped RBAC), with a Lease of `lease_seconds` in the test's namespace, reaching the
/// apiserver directly or at `server` (a proxy).
pub async fn start_replica(
    env: &TestEnv,
    identity: &str,
    lease_seconds: u64,
    server: Option<&str>,
) -> Replica {
    let account = controller_account(env, identity, |_| {}).await;
    let kubeconfig = token_kubeconfig_via(env, &account, server).await;
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
            &lease_seconds.to_string(),
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--instance",
            identity,
        ])
        .env("KUBECONFIG", kubeconfig)
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

/// The identity holding the controller's Lease in the test's namespace.
pub async fn holder(env: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = env.api();
    leases
        .get_opt("everynode-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Runs `everynode ARGS` against the test's cluster: (exit code, stdout, stderr).
pub async fn everynode(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_everynode"))
        .args(args)
        .env("KUBECONFIG", env.cluster().kubeconfig())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run everynode");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
